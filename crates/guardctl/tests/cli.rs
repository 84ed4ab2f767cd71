//! guardctl's offline commands, run as a user would.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;

fn guardctl(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_guardctl"))
        .args(args)
        .output()
        .unwrap()
}

fn example() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../config/portguard.toml")
        .to_string_lossy()
        .into_owned()
}

#[test]
fn plan_of_the_shipped_example_has_our_priority_and_pre_dnat_match() {
    let out = guardctl(&["plan", "--config", &example()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.starts_with("table inet portguard {"), "{text}");
    assert!(
        text.contains("type filter hook forward priority filter - 1; policy drop;"),
        "{text}"
    );
    assert!(
        text.contains("meta l4proto tcp ct status dnat ct original proto-dst @allow_tcp ct mark set ct mark | 0x01000000 accept"),
        "{text}"
    );
    assert!(text.contains("elements = { 80, 443 }"), "{text}");
}

#[test]
fn check_accepts_the_example() {
    let out = guardctl(&["check", "--config", &example()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains(": OK (1 file, 3 allow entries)"));
}

#[test]
fn check_and_plan_reject_a_bad_file_with_its_position() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("portguard.toml");
    std::fs::write(
        &path,
        "[guard]\nscope = \"containers\"\n\n[[allow]]\nport = \"443-80\"\n",
    )
    .unwrap();
    for command in ["check", "plan"] {
        let out = guardctl(&[command, "--config", path.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(1), "{command}");
        assert!(
            out.stdout.is_empty(),
            "{command} printed a ruleset for a bad file"
        );
        let err = String::from_utf8(out.stderr).unwrap();
        assert_eq!(
            err.trim_end(),
            format!(
                "{}:5:8: port range `443-80` is reversed: expected \"low-high\" with low <= high",
                path.display()
            )
        );
    }
}

#[test]
fn missing_file_is_reported() {
    let out = guardctl(&["check", "--config", "/nonexistent/pg.toml"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).starts_with("/nonexistent/pg.toml: No such file"));
}

fn write_config(dir: &Path, text: &str) -> String {
    let path = dir.join("portguard.toml");
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
}

#[test]
fn check_refuses_a_control_group_that_does_not_exist_with_its_position() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(
        dir.path(),
        "[control]\nsocket = \"/run/pg.sock\"\ngroup = \"pg-no-such-group\"\n",
    );
    let out = guardctl(&["check", "--config", &path]);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim_end(),
        format!(
            "{path}:3:9: group `pg-no-such-group` does not exist: create it (groupadd pg-no-such-group) or remove `group`"
        )
    );
}

#[test]
fn check_accepts_a_control_group_that_exists() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), "[control]\ngroup = \"root\"\n");
    let out = guardctl(&["check", "--config", &path]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn check_refuses_a_world_writable_file_naming_path_and_mode() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), "[[allow]]\nport = \"1-65535\"\n");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
    let out = guardctl(&["check", "--config", &path]);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with(&format!(
            "{path}: refusing a file writable by others (mode 0666) owned by root"
        )),
        "{err}"
    );
}

#[test]
fn check_refuses_what_the_daemon_would_refuse_in_drop_ins() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), "[[allow]]\nport = 80\n");
    std::fs::create_dir(dir.path().join("conf.d")).unwrap();
    let dangling = dir.path().join("conf.d/50-narrow.toml");
    std::os::unix::fs::symlink("/nonexistent/pg-narrow.toml", &dangling).unwrap();
    let out = guardctl(&["check", "--config", &path]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with(&format!(
            "{}: drop-in symlink cannot be followed",
            dangling.display()
        )),
        "{err}"
    );
}

/// Usage errors exit 2, as clap's own do, before the daemon is asked
/// (the socket here does not exist: asking would exit 3). `explain 99999`
/// and `explain abc` used to exit 1.
#[test]
fn usage_errors_exit_2_everywhere() {
    for (args, says) in [
        (
            &["explain", "99999"][..],
            "`99999` is not a port number (1-65535)",
        ),
        (&["explain", "abc"], "`abc` is not a port number (1-65535)"),
        (&["explain", "0"], "`0` is not a port number (1-65535)"),
        (&["explain", "-1"], "unexpected argument"),
        (
            &["explain", "80/sctp"],
            "`sctp` is not a protocol: expected tcp or udp",
        ),
        (
            &["explain", "80", "--from", "example.com"],
            "invalid value 'example.com'",
        ),
        (&["explain"], "required"),
        (&["status", "--jsn"], "unexpected argument '--jsn'"),
        (&["stauts"], "unrecognized subcommand 'stauts'"),
        (&[], "Usage"),
    ] {
        let mut all = vec!["--socket", "/nonexistent/pg.sock"];
        all.extend_from_slice(args);
        let out = guardctl(&all);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "guardctl {args:?}: {err}");
        assert!(err.contains(says), "guardctl {args:?}: {err}");
    }
}

/// `guardctl --help` says how to switch the guard off in an emergency.
#[test]
fn help_says_how_to_switch_the_guard_off() {
    let out = guardctl(&["--help"]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("Emergency off"), "{help}");
    assert!(
        help.contains("systemctl stop portguard && portguardd --remove-rules"),
        "{help}"
    );
    assert!(help.contains("Exit status:"), "{help}");
}

/// `check` lists every mistake of the file at once, in line order.
#[test]
fn check_lists_every_mistake_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(
        dir.path(),
        "[guard]\nmode = \"block\"\n\nmodee = \"audit\"\n\n[[allow]]\nport = 0\n",
    );
    let out = guardctl(&["check", "--config", &path]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!(
            "{path}:2:8: unknown variant `block`, expected `enforce` or `audit`\n\
             {path}:4:1: unknown key `modee` in [guard]: did you mean `mode`?\n\
             {path}:7:8: port 0 is out of range: expected a number from 1 to 65535\n"
        )
    );
}

/// A network namespace of the test's own, deleted on drop.
struct Netns(String);

impl Netns {
    fn new() -> Netns {
        let name = format!("pgctl-{}", std::process::id());
        let ok = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .unwrap();
        assert!(ok.success(), "ip netns add {name}");
        Netns(name)
    }

    /// `sh -c SCRIPT` in the namespace, with guardctl as `$GUARDCTL`.
    fn sh(&self, script: &str) -> std::process::Output {
        Command::new("ip")
            .args(["netns", "exec", &self.0, "sh", "-c", script])
            .env("GUARDCTL", env!("CARGO_BIN_EXE_guardctl"))
            .output()
            .unwrap()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// Issue 22: with the daemon down, `status` said only "portguardd is not
/// running" (exit 3) although the kernel table still filters.
#[test]
fn status_with_the_daemon_down_says_what_the_kernel_still_enforces() {
    let ns = Netns::new();
    let down = r#""$GUARDCTL" --socket /nonexistent/control.sock status"#;
    let out = ns.sh(down);
    assert_eq!(out.status.code(), Some(3));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("the kernel holds no guard table"),
        "{stderr}"
    );
    // The table a stopped daemon left: one port allowed to any source.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("portguard.toml");
    std::fs::write(&config, "[[allow]]\nport = 8080\n").unwrap();
    let planned = dir.path().join("plan.nft");
    let load = format!(
        r#""$GUARDCTL" plan --config {} > {planned} && nft -f {planned}"#,
        config.display(),
        planned = planned.display()
    );
    let loaded = ns.sh(&load);
    assert!(
        loaded.status.success(),
        "{}",
        String::from_utf8_lossy(&loaded.stderr)
    );
    let out = ns.sh(down);
    assert_eq!(out.status.code(), Some(3));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("portguardd is not running") || stderr.contains("not running"),
        "{stderr}"
    );
    assert!(
        stderr.contains("the kernel still holds the guard's table (inet portguard)")
            && stderr.contains("1 TCP and 0 UDP ports allowed to any source")
            && stderr.contains("portguardd --remove-rules"),
        "{stderr}"
    );
}
