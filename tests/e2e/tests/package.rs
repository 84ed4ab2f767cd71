//! The Debian package: what it installs, that its binaries run from it,
//! and that removing it removes the guard's table.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;

use portguard_testkit::NetNs;

#[test]
fn the_deb_installs_the_daemon_cli_unit_and_config_and_its_removal_cleans_up() {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = tempfile::tempdir().unwrap();
    let build = Command::new(workspace.join("packaging/build-deb"))
        .args(["--profile", "debug", "--out"])
        .arg(out.path())
        .output()
        .unwrap();
    assert!(
        build.status.success(),
        "{}",
        String::from_utf8_lossy(&build.stderr)
    );
    let deb = String::from_utf8(build.stdout).unwrap().trim().to_string();

    let contents = Command::new("dpkg-deb")
        .args(["--contents", &deb])
        .output()
        .unwrap();
    let contents = String::from_utf8_lossy(&contents.stdout);
    for path in [
        "./usr/sbin/portguardd",
        "./usr/bin/guardctl",
        "./lib/systemd/system/portguardd.service",
        "./etc/portguard/portguard.toml",
        "./etc/portguard/conf.d/",
        "./usr/share/doc/portguard/configuration.md",
    ] {
        assert!(
            contents.contains(path),
            "{path} missing from the package:\n{contents}"
        );
    }
    let conffiles = Command::new("dpkg-deb")
        .args(["--info", &deb, "conffiles"])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&conffiles.stdout).trim(),
        "/etc/portguard/portguard.toml"
    );

    // Unpack it and use what it ships.
    let root = tempfile::tempdir().unwrap();
    let control = root.path().join("DEBIAN");
    assert!(
        Command::new("dpkg-deb")
            .args(["-x", &deb])
            .arg(root.path())
            .status()
            .unwrap()
            .success()
    );
    assert!(
        Command::new("dpkg-deb")
            .args(["-e", &deb])
            .arg(&control)
            .status()
            .unwrap()
            .success()
    );
    let check = Command::new(root.path().join("usr/bin/guardctl"))
        .arg("check")
        .arg("--config")
        .arg(root.path().join("etc/portguard/portguard.toml"))
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );

    // prerm on removal deletes the table the daemon left behind (P5 keeps
    // it while installed; uninstalling leaves nothing and needs no reboot).
    let ns = NetNs::new("pkg");
    ns.sh("nft add table inet portguard && nft add table ip keepme");
    let path = format!(
        "{}:{}",
        root.path().join("usr/sbin").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    ns.sh(&format!(
        "PATH={path} {} remove",
        control.join("prerm").display()
    ));
    let tables = ns.sh("nft list tables");
    assert!(!tables.contains("portguard"), "{tables}");
    assert!(tables.contains("keepme"), "{tables}");
}
