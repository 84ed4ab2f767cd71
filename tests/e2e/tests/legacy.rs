//! Docker on iptables-legacy: dockerd finds `iptables`/`ip6tables` that
//! are the -legacy tools first on its PATH, so its chains live in x_tables,
//! which nft cannot see. The guard's table hooks the same points and still
//! judges first; status says legacy; the legacy IPv6 FORWARD policy is set
//! back to accept.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use portguard_e2e::{DockerdOptions, Env, docker_lab, until};
use portguard_testkit::engine;

/// A PATH directory where iptables and ip6tables are the legacy tools.
fn legacy_tools() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, tool) in [
        ("iptables", "/usr/sbin/iptables-legacy"),
        ("ip6tables", "/usr/sbin/ip6tables-legacy"),
        ("iptables-save", "/usr/sbin/iptables-legacy-save"),
        ("iptables-restore", "/usr/sbin/iptables-legacy-restore"),
        ("ip6tables-save", "/usr/sbin/ip6tables-legacy-save"),
        ("ip6tables-restore", "/usr/sbin/ip6tables-legacy-restore"),
    ] {
        std::os::unix::fs::symlink(tool, dir.path().join(name)).unwrap();
    }
    dir
}

/// The lab with a dockerd that runs the legacy tools, and the tools'
/// directory (dropped after the `Env`: a restarted dockerd needs it).
fn legacy_env() -> (Env, tempfile::TempDir) {
    let tools = legacy_tools();
    let options = DockerdOptions {
        path_first: Some(tools.path().to_path_buf()),
        ..Default::default()
    };
    (Env::with_dockerd(docker_lab(), options), tools)
}

#[test]
fn legacy_p1_unlisted_closed_listed_open_ipv4_ipv6_and_status_says_legacy() {
    let (mut env, _tools) = legacy_env();
    env.web("web", &["8080:80"], "");
    env.web("db", &["27017:80"], "");
    let legacy = !engine().nftables_backend();
    if legacy {
        // Docker really wrote x_tables, and nft shows none of it.
        let nat = env.lab.host.sh("iptables-legacy -t nat -S DOCKER");
        assert!(nat.contains("--dport 27017"), "legacy DNAT rule: {nat}");
        let nft = env.lab.host.sh("nft list ruleset");
        assert!(!nft.contains("DOCKER"), "nft sees no Docker chain: {nft}");
    }
    until(
        "without the guard the published port answers (the hole, on legacy too)",
        Duration::from_secs(10),
        || env.open_from_wan("10.77.0.1:27017"),
    );
    env.start_guard("[[allow]]\nport = 8080\n");
    env.wait_published("db");
    for (addr, family) in [("10.77.0.1", "IPv4"), ("[fd00:77::1]", "IPv6")] {
        assert!(
            env.open_from_wan(&format!("{addr}:8080")),
            "allowlisted port, {family}"
        );
        assert!(
            !env.open_from_wan(&format!("{addr}:27017")),
            "unlisted port, {family}"
        );
    }
    let firewall = env.status()["firewall"].clone();
    let text = String::from_utf8_lossy(&env.daemon().guardctl(&["status"]).stdout).into_owned();
    if legacy {
        assert_eq!(
            firewall["kernel_holds"],
            serde_json::json!(["iptables-legacy"]),
            "{firewall:#}"
        );
        assert_eq!(firewall["agreement"], "agrees", "{firewall:#}");
        assert!(text.contains("nft cannot see Docker's chains"), "{text}");
    } else {
        // Docker 29's nftables backend never runs iptables.
        assert_eq!(
            firewall["kernel_holds"],
            serde_json::json!(["nftables"]),
            "{firewall:#}"
        );
    }
}

#[test]
fn legacy_p6_the_legacy_ipv6_forward_drop_is_set_back_to_accept_when_docker_restarts() {
    let (mut env, _tools) = legacy_env();
    env.start_guard("");
    let policy = |env: &Env| env.lab.host.sh("ip6tables-legacy -S FORWARD");
    // What Docker 27 does on every start with ip6tables on (and 28 when it
    // turns forwarding on itself), here done by hand so that every engine
    // shows it; nf_tables sends no notification for x_tables.
    env.lab.host.sh("ip6tables-legacy -P FORWARD DROP");
    assert!(policy(&env).contains("-P FORWARD DROP"));
    env.dockerd.restart();
    until(
        "the legacy ip6 FORWARD policy back to accept",
        Duration::from_secs(15),
        || policy(&env).contains("-P FORWARD ACCEPT"),
    );
    assert!(
        env.status()["ipv6_policy_restores"].as_u64().unwrap() >= 1,
        "status counts the restore"
    );
}
