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
