//! Each kind of configuration mistake gives `file:line:column: message`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use portguard_config::{AllowTarget, Config, ConfigError, Mode, Proto};

fn error_of(text: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("portguard.toml");
    std::fs::write(&path, text).unwrap();
    let err = Config::load(&path).unwrap_err();
    let shown = err.to_string();
    let prefix = format!("{}:", path.display());
    assert!(
        shown.starts_with(&prefix),
        "error does not name the file: {shown}"
    );
    shown[prefix.len()..].to_string()
}

#[test]
fn unknown_key_names_line_column_and_the_nearest_key() {
    let e = error_of("[guard]\nmode = \"enforce\"\nmodee = \"audit\"\n");
    assert_eq!(
        e,
        "3:1: unknown key `modee` in [guard]: did you mean `mode`?"
    );
    let e = error_of("[[allow]]\ncontianer = \"web\"\n");
    assert!(
        e.starts_with("2:1: unknown key `contianer` in [[allow]]: did you mean `container`?"),
        "{e}"
    );
}

/// A key nothing is near lists the keys there are, and only those: a key
/// that was removed (`lock_table`) is not offered.
#[test]
fn unknown_key_lists_the_keys_without_removed_ones() {
    let e = error_of("[guard]\nenabled = true\n");
    assert_eq!(
        e,
        "2:1: unknown key `enabled` in [guard]: expected `mode`, `scope`, `trusted_interfaces`, \
         `external_interfaces`, `log_blocked` or `protection`"
    );
    let e = error_of("[guard]\nlock_table = true\n");
    assert!(
        e.starts_with("2:1: `lock_table` was replaced by `protection`"),
        "{e}"
    );
}

#[test]
fn unknown_section_offers_the_nearest() {
    let e = error_of("[gaurd]\n");
    assert_eq!(e, "1:2: unknown section [gaurd]: did you mean [guard]?");
    let e = error_of("[[alow]]\nport = 80\n");
    assert_eq!(e, "1:3: unknown section [[alow]]: did you mean [[allow]]?");
    let e = error_of("[firewall]\n");
    assert_eq!(
        e,
        "1:2: unknown section [firewall]: the sections are [guard], [ipv6], [docker], [control], [[allow]]"
    );
}

/// Keys in the wrong place say where they belong.
#[test]
fn a_key_of_another_section_says_where_it_belongs() {
    let e = error_of("[control]\nmode = \"audit\"\n");
    assert_eq!(
        e,
        "2:1: `mode` is not a key of [control]: it belongs in [guard]"
    );
    let e = error_of("mode = \"audit\"\n[guard]\n");
    assert_eq!(
        e,
        "1:1: `mode` is outside any section: write it below [guard]"
    );
    let e = error_of("[guard]\nsocket = \"/run/x.sock\"\n");
    assert_eq!(
        e,
        "2:1: `socket` is not a key of [guard]: it belongs in [docker] or [control]"
    );
    let e = error_of("[allow]\nport = 80\n");
    assert!(
        e.starts_with("1:2: write [[allow]], with two brackets"),
        "{e}"
    );
}

/// Issue 22: a file with mistakes on lines 2, 4 and 7 took three rounds
/// of `check` (4, then 2, then 7). All three now come at once, in order.
#[test]
fn every_mistake_of_a_file_at_once_in_line_order() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("portguard.toml");
    std::fs::write(
        &path,
        "[guard]\nmode = \"block\"\nscope = \"all\"\nlog_blokced = false\n\n[[allow]]\nport = 70000\nfrom = [\"10.0.0.1/8\", \"10.1.0.0/16\", \"fe80::1/10\"]\n",
    )
    .unwrap();
    let err = Config::load(&path).unwrap_err();
    let p = path.display();
    assert_eq!(
        err.to_string(),
        format!(
            "{p}:2:8: unknown variant `block`, expected `enforce` or `audit`\n\
             {p}:4:1: unknown key `log_blokced` in [guard]: did you mean `log_blocked`?\n\
             {p}:7:8: port 70000 is out of range: expected a number from 1 to 65535\n\
             {p}:8:9: `10.0.0.1/8` has host bits set: did you mean 10.0.0.0/8?\n\
             {p}:8:38: `fe80::1/10` has host bits set: did you mean fe80::/10?"
        )
    );
    assert_eq!(err.errors().len(), 5);
    assert!(matches!(
        err.errors()[2],
        ConfigError::Invalid {
            line: 7,
            column: 8,
            ..
        }
    ));
}

/// The main file's mistakes, then each drop-in's, in the order they apply.
#[test]
fn mistakes_of_every_file_in_file_order() {
    let dir = tempfile::tempdir().unwrap();
    let main = dir.path().join("portguard.toml");
    std::fs::write(&main, "[[allow]]\nport = 0\n").unwrap();
    std::fs::create_dir(dir.path().join("conf.d")).unwrap();
    let a = dir.path().join("conf.d/10-a.toml");
    let b = dir.path().join("conf.d/20-b.toml");
    std::fs::write(&b, "[ipv6]\nrestore_forward_policy = \"yes\"\n").unwrap();
    std::fs::write(&a, "[docker]\nsockett = \"/run/d.sock\"\n").unwrap();
    let err = Config::load(&main).unwrap_err();
    let places: Vec<String> = err
        .errors()
        .iter()
        .map(|e| e.to_string().split(": ").next().unwrap().to_string())
        .collect();
    assert_eq!(
        places,
        [
            format!("{}:2:8", main.display()),
            format!("{}:2:1", a.display()),
            format!("{}:2:26", b.display()),
        ]
    );
}

/// Every syntax error is listed; other mistakes only up to the first one,
/// since what follows it was read by guesswork.
#[test]
fn syntax_errors_and_the_mistakes_before_them() {
    let e = error_of(
        "[guard]\nmod = \"audit\"\nscope = all\n[[allow]]\nport = 80\ncomment = \"x\ncontainr = \"web\"\n",
    );
    let lines: Vec<&str> = e.lines().collect();
    assert_eq!(lines.len(), 3, "{e}");
    assert!(
        lines[0].starts_with("2:1: unknown key `mod` in [guard]: did you mean `mode`?"),
        "{e}"
    );
    assert!(lines[1].contains(":3:9: "), "{e}");
    assert!(lines[2].contains(":6:"), "{e}");
    assert!(!e.contains("containr"), "{e}");

    // A list written one element a line, cut by the syntax error: the
    // lines before the list are still judged, the list is not guessed at.
    let e = error_of("[guard]\nmod = \"audit\"\ntrusted_interfaces = [\n  \"wg0\",\n  wg1,\n]\n");
    let lines: Vec<&str> = e.lines().collect();
    assert_eq!(lines.len(), 2, "{e}");
    assert!(lines[0].starts_with("2:1: unknown key `mod`"), "{e}");
    assert!(lines[1].contains(":5:3: "), "{e}");

    // A broken section header: one error, nothing guessed after it.
    let e = error_of("[guard\nmode = 1\n[[allow]]\nport = 80\n");
    assert_eq!(e.lines().count(), 1, "{e}");
    assert!(e.starts_with("1:7: "), "{e}");
}

#[test]
fn a_long_list_of_mistakes_is_cut_and_counted() {
    let text: String = (0..30)
        .map(|i| format!("[[allow]]\nport = {}\n", 70_000 + i))
        .collect();
    let e = error_of(&text);
    let lines: Vec<&str> = e.lines().collect();
    assert_eq!(lines.len(), 21, "{e}");
    assert_eq!(lines[20], "... and 10 more mistakes");
    let err = Config::from_toml_str(&text).unwrap_err();
    assert_eq!(err.errors().len(), 30);
}

#[test]
fn bad_enum_value_lists_choices() {
    let e = error_of("[guard]\nmode = \"block\"\n");
    assert!(
        e.starts_with("2:8: unknown variant `block`, expected `enforce` or `audit`"),
        "{e}"
    );
}

#[test]
fn port_zero_too_large_and_reversed() {
    let e = error_of("[[allow]]\nport = 0\n");
    assert_eq!(
        e,
        "2:8: port 0 is out of range: expected a number from 1 to 65535"
    );
    let e = error_of("[[allow]]\nport = 70000\n");
    assert_eq!(
        e,
        "2:8: port 70000 is out of range: expected a number from 1 to 65535"
    );
    let e = error_of("[[allow]]\nport = \"9000-8000\"\n");
    assert_eq!(
        e,
        "2:8: port range `9000-8000` is reversed: expected \"low-high\" with low <= high"
    );
    let e = error_of("[[allow]]\nport = \"80-http\"\n");
    assert_eq!(
        e,
        "2:8: `80-http` is not a port or port range: write \"N\" or \"N-M\" with digits only (no spaces, signs or other characters)"
    );
}

#[test]
fn bad_cidrs() {
    let e = error_of("[[allow]]\nport = 1\nfrom = [\"10.0.0.0/8\", \"10.0.0.1/8\"]\n");
    assert_eq!(
        e,
        "3:23: `10.0.0.1/8` has host bits set: did you mean 10.0.0.0/8?"
    );
    let e = error_of("[[allow]]\nport = 1\nfrom = [\"2001:db8::/129\"]\n");
    assert_eq!(
        e,
        "3:9: `2001:db8::/129`: prefix length 129 is longer than 128 bits"
    );
    let e = error_of("[[allow]]\nport = 1\nfrom = [\"example.com\"]\n");
    assert_eq!(
        e,
        "3:9: `example.com` is not an IPv4 or IPv6 address or CIDR network"
    );
    let e = error_of("[[allow]]\nport = 1\nfrom = []\n");
    assert_eq!(
        e,
        "3:8: `from` must not be empty: omit it to allow any source"
    );
}

#[test]
fn port_and_container_both_or_neither() {
    let e = error_of("[guard]\n\n[[allow]]\nport = 80\ncontainer = \"web\"\n");
    assert!(
        e.starts_with("5:13: an [[allow]] entry takes either `port` or `container`, not both"),
        "{e}"
    );
    let e = error_of("[[allow]]\ncomment = \"nothing\"\n");
    assert!(e.starts_with("1:1: an [[allow]] entry needs `port`"), "{e}");
}

#[test]
fn bad_interface_and_container_names() {
    let e = error_of("[guard]\ntrusted_interfaces = [\"wg0\", \"my vpn\"]\n");
    assert!(
        e.starts_with("2:30: interface name `my vpn` contains ' '"),
        "{e}"
    );
    let e = error_of("[[allow]]\ncontainer = \"a/b/c\"\n");
    assert!(
        e.starts_with("2:13: `a/b/c` is not a container name"),
        "{e}"
    );
}

#[test]
fn syntax_errors_point_at_the_problem() {
    let e = error_of("[guard]\nmode = enforce\n");
    assert!(e.starts_with("2:8: "), "{e}");
    let e = error_of("[[allow]]\nport = 80\nproto = \"sctp\"\n");
    assert!(
        e.starts_with("3:9: unknown variant `sctp`, expected one of `tcp`, `udp`, `both`"),
        "{e}"
    );
}

#[test]
fn drop_in_errors_name_the_drop_in() {
    let dir = tempfile::tempdir().unwrap();
    let main = dir.path().join("portguard.toml");
    std::fs::write(&main, "[[allow]]\nport = 80\n").unwrap();
    std::fs::create_dir(dir.path().join("conf.d")).unwrap();
    let bad = dir.path().join("conf.d/20-bad.toml");
    std::fs::write(
        dir.path().join("conf.d/10-ok.toml"),
        "[[allow]]\nport = 443\n",
    )
    .unwrap();
    std::fs::write(&bad, "\n[[allow]]\nport = 99999\n").unwrap();
    let err = Config::load(&main).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "{}:3:8: port 99999 is out of range: expected a number from 1 to 65535",
            bad.display()
        )
    );
    assert!(matches!(
        err,
        ConfigError::Invalid {
            line: 3,
            column: 8,
            ..
        }
    ));
}

#[test]
fn drop_ins_merge_in_name_order() {
    let dir = tempfile::tempdir().unwrap();
    let main = dir.path().join("portguard.toml");
    std::fs::write(
        &main,
        "[guard]\nmode = \"audit\"\nlog_blocked = false\n[[allow]]\nport = 80\n",
    )
    .unwrap();
    std::fs::create_dir(dir.path().join("conf.d")).unwrap();
    std::fs::write(
        dir.path().join("conf.d/20-b.toml"),
        "[guard]\nmode = \"enforce\"\n[[allow]]\nport = 2\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("conf.d/10-a.toml"),
        "[[allow]]\nport = 1\nproto = \"udp\"\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("conf.d/ignored.conf"), "garbage").unwrap();
    let config = Config::load(&main).unwrap();
    assert_eq!(config.guard.mode, Mode::Enforce);
    assert!(
        !config.guard.log_blocked,
        "a value a later file does not set is kept"
    );
    let ports: Vec<String> = config
        .allow
        .iter()
        .map(|a| match &a.target {
            AllowTarget::Ports(r) => r.to_string(),
            AllowTarget::Container(c) => c.clone(),
        })
        .collect();
    assert_eq!(ports, ["80", "1", "2"]);
    assert_eq!(config.allow[1].proto, Proto::Udp);
    assert!(config.allow[1].origin.file.ends_with("conf.d/10-a.toml"));
    assert_eq!(config.allow[1].origin.line, 1);
}

#[test]
fn missing_main_file_is_an_error_naming_it() {
    let err = Config::load(Path::new("/nonexistent/portguard.toml")).unwrap_err();
    assert!(
        err.to_string().starts_with("/nonexistent/portguard.toml: "),
        "{err}"
    );
}

#[test]
fn shipped_example_is_valid() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/portguard.toml");
    let config = Config::load(&path).unwrap();
    assert!(!config.allow.is_empty());
}

#[test]
fn every_key_is_documented_in_the_reference() {
    let doc = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/configuration.md"),
    )
    .unwrap();
    for key in [
        "mode",
        "scope",
        "trusted_interfaces",
        "external_interfaces",
        "log_blocked",
        "protection",
        "restore_forward_policy",
        "socket",
        "group",
        "port",
        "container",
        "proto",
        "from",
        "comment",
    ] {
        assert!(
            doc.contains(&format!("| `{key}` |")),
            "docs/configuration.md lacks `{key}`"
        );
        // The key really is part of the schema: a file using it parses or
        // fails for its value, never as an unknown key.
        let section = match key {
            "restore_forward_policy" => "[ipv6]",
            "socket" | "group" => "[control]",
            "port" | "container" | "proto" | "from" | "comment" => "[[allow]]",
            _ => "[guard]",
        };
        if let Err(e) = Config::from_toml_str(&format!("{section}\n{key} = 1\n")) {
            let shown = e.to_string();
            assert!(
                !shown.contains("unknown") && !shown.contains("not a key"),
                "{key}: {e}"
            );
        }
    }
}
