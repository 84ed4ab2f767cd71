//! The Debian package as built: what it installs and where, its maintainer
//! scripts (debhelper's), lintian, and the hardened unit's offline
//! `systemd-analyze security` score. Installing, upgrading and removing it
//! in a booted systemd is tests/systemd.rs.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn stdout(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn build_deb(out: &Path) -> String {
    stdout(
        Command::new(workspace().join("packaging/build-deb"))
            .args(["--profile", "debug", "--fast", "--out"])
            .arg(out),
    )
    .trim()
    .to_string()
}

#[test]
fn the_deb_ships_daemon_cli_unit_config_man_pages_and_completions_and_passes_lintian() {
    let out = tempfile::tempdir().unwrap();
    let deb = build_deb(out.path());

    let contents = stdout(Command::new("dpkg-deb").args(["--contents", &deb]));
    for path in [
        "./usr/sbin/portguardd",
        "./usr/bin/guardctl",
        "./lib/systemd/system/portguard.service",
        "./etc/portguard/portguard.toml",
        "./etc/portguard/conf.d/",
        "./usr/lib/tmpfiles.d/portguard.conf",
        "./usr/share/man/man8/portguardd.8.gz",
        "./usr/share/man/man8/guardctl.8.gz",
        "./usr/share/man/man8/guardctl-status.8.gz",
        "./usr/share/man/man5/portguard.toml.5.gz",
        "./usr/share/bash-completion/completions/guardctl",
        "./usr/share/zsh/vendor-completions/_guardctl",
        "./usr/share/fish/vendor_completions.d/guardctl.fish",
        "./usr/share/portguard/portguard.rules.yml",
        "./usr/share/portguard/portguard.rules.test.yml",
        "./usr/share/portguard/portguard-fleet.dashboard.json",
        "./usr/share/doc/portguard/copyright",
        "./usr/share/doc/portguard/operations.md",
        "./usr/share/doc/portguard/configuration.md",
    ] {
        assert!(
            contents.lines().any(|l| l.ends_with(path)),
            "{path} missing from the package:\n{contents}"
        );
    }
    assert_eq!(
        stdout(Command::new("dpkg-deb").args(["--info", &deb, "conffiles"])).trim(),
        "/etc/portguard/portguard.toml"
    );
    let control = stdout(Command::new("dpkg-deb").args(["--field", &deb]));
    // Installing iptables would switch the host's iptables alternatives.
    assert!(!control.contains("iptables"), "{control}");

    // Maintainer scripts are debhelper's: systemd actions go through
    // deb-systemd-invoke (which honours policy-rc.d), never systemctl
    // start/stop/restart directly.
    let scripts = tempfile::tempdir().unwrap();
    stdout(
        Command::new("dpkg-deb")
            .args(["-e", &deb])
            .arg(scripts.path()),
    );
    let postinst = std::fs::read_to_string(scripts.path().join("postinst")).unwrap();
    let prerm = std::fs::read_to_string(scripts.path().join("prerm")).unwrap();
    let postrm = std::fs::read_to_string(scripts.path().join("postrm")).unwrap();
    assert!(postinst.contains("deb-systemd-invoke $_dh_action 'portguard.service'"));
    assert!(postinst.contains("deb-systemd-helper enable 'portguard.service'"));
    assert!(prerm.contains("deb-systemd-invoke stop 'portguard.service'"));
    assert!(prerm.contains("--remove-rules"));
    assert!(postrm.contains("rm -rf /etc/portguard /var/lib/portguard"));
    for script in [&postinst, &prerm, &postrm] {
        for verb in ["start", "stop", "restart"] {
            assert!(!script.contains(&format!("systemctl {verb}")), "{script}");
        }
    }

    let copyright = stdout(Command::new("sh").arg("-c").arg(format!(
        "dpkg-deb --fsys-tarfile {deb} | tar -xO ./usr/share/doc/portguard/copyright"
    )));
    assert!(
        copyright.starts_with(
            "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/"
        )
    );

    // The shipped configuration is valid for the shipped guardctl.
    let root = tempfile::tempdir().unwrap();
    stdout(Command::new("dpkg-deb").args(["-x", &deb]).arg(root.path()));
    stdout(
        Command::new(root.path().join("usr/bin/guardctl"))
            .arg("check")
            .arg("--config")
            .arg(root.path().join("etc/portguard/portguard.toml")),
    );

    // lintian: no errors, no warnings (each override carries its reason in
    // packaging/debian/portguard.lintian-overrides).
    let lint = Command::new("lintian")
        .args(["--pedantic", "--display-info", "--show-overrides", &deb])
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&lint.stdout);
    println!("lintian --pedantic --display-info --show-overrides:\n{report}");
    let bad: Vec<&str> = report
        .lines()
        .filter(|l| l.starts_with("E: ") || l.starts_with("W: "))
        .collect();
    assert!(
        bad.is_empty(),
        "lintian errors or warnings:\n{}",
        bad.join("\n")
    );
    assert!(
        lint.status.success(),
        "lintian failed: {}",
        String::from_utf8_lossy(&lint.stderr)
    );
}

/// The offline `systemd-analyze security` exposure of systemd/portguard.service.
fn offline_exposure() -> String {
    let report = stdout(
        Command::new("systemd-analyze")
            .args(["security", "--offline=true", "--no-pager"])
            .arg(workspace().join("systemd/portguard.service")),
    );
    let last = report
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| panic!("no overall exposure in:\n{report}"));
    println!("systemd-analyze security --offline=true:\n{report}");
    last.split(':')
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .unwrap()
        .to_string()
}

#[test]
fn the_unit_scores_at_most_2_5_offline_and_operations_md_states_that_score() {
    let score = offline_exposure();
    println!("offline exposure of portguard.service: {score}");
    let value: f64 = score.parse().unwrap();
    assert!(value <= 2.5, "offline exposure {score} > 2.5");
    let ops = std::fs::read_to_string(workspace().join("docs/operations.md")).unwrap();
    assert!(
        ops.contains(&format!("**{score}**")),
        "docs/operations.md does not state the measured score **{score}**"
    );
}
