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
fn unknown_key_names_line_column_and_the_key() {
    let e = error_of("[guard]\nmode = \"enforce\"\nmodee = \"audit\"\n");
    assert!(e.starts_with("3:1: unknown field `modee`"), "{e}");
    assert!(e.contains("expected one of"), "{e}");
}

#[test]
fn unknown_section() {
    let e = error_of("[gaurd]\n");
    assert!(e.starts_with("1:2: unknown field `gaurd`"), "{e}");
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
        // fails for its value, never as an unknown field.
        let section = match key {
            "restore_forward_policy" => "[ipv6]",
            "socket" | "group" => "[control]",
            "port" | "container" | "proto" | "from" | "comment" => "[[allow]]",
            _ => "[guard]",
        };
        if let Err(e) = Config::from_toml_str(&format!("{section}\n{key} = 1\n")) {
            assert!(!e.to_string().contains("unknown field"), "{key}: {e}");
        }
    }
}
