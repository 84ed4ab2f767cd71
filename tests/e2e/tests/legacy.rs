//! Docker on iptables-legacy: dockerd finds `iptables`/`ip6tables` that
//! are the -legacy tools first on its PATH, so its chains live in x_tables,
//! which nft cannot see. The guard's table hooks the same points and still
//! judges first; status says legacy; Docker's legacy IPv6 FORWARD drop is
//! set back to accept, and nobody else's.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use portguard_e2e::{
    DockerdOptions, Env, IPV6_FORWARDING_OFF, docker_lab, ipv6_bridge_args, until,
};
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

/// iptables-legacy sends no notifications, so nobody can be named: a
/// legacy drop is taken for Docker's only when it came while Docker was
/// away and is there when Docker is back (dockerd sets it while it
/// starts). One found at the guard's start, or set while Docker runs, is
/// left alone, also across a Docker restart.
#[test]
fn legacy_p6_docker_s_legacy_ipv6_drop_is_undone_and_one_set_while_docker_runs_is_left() {
    let Some(args) = ipv6_bridge_args() else {
        eprintln!("Docker 29's nftables backend uses no legacy tables");
        return;
    };
    // Dropped after the `Env`: a restarted dockerd needs the tools.
    let tools = legacy_tools();
    let lab = docker_lab();
    lab.host.sh(IPV6_FORWARDING_OFF);
    let options = DockerdOptions {
        path_first: Some(tools.path().to_path_buf()),
        args,
        ..Default::default()
    };
    let mut env = Env::with_dockerd(lab, options);
    let policy = |env: &Env| env.lab.host.sh("ip6tables-legacy -S FORWARD");
    let restores = |env: &Env| env.status()["ipv6_policy_restores"].as_u64().unwrap();
    assert!(
        policy(&env).contains("-P FORWARD DROP"),
        "Docker sets its drop in the legacy table"
    );
    // Found at start: whose it is cannot be known, so it stays.
    env.start_guard("");
    until("Docker connected", Duration::from_secs(10), || {
        env.status()["docker"]["connected"] == true
    });
    assert!(policy(&env).contains("-P FORWARD DROP"));
    let status = env.status();
    let drop = &status["ipv6_forward_drops"][0];
    assert_eq!(drop["backend"], "iptables-legacy", "{status:#}");
    assert_eq!(drop["set_by"]["kind"], "before-start", "{status:#}");
    assert_eq!(drop["left_alone"], true, "{status:#}");

    // Docker starts again with forwarding off: its drop, undone.
    env.lab.host.sh(&format!(
        "ip6tables-legacy -P FORWARD ACCEPT && {IPV6_FORWARDING_OFF}"
    ));
    env.dockerd.restart();
    until(
        "Docker's legacy ip6 FORWARD drop back to accept",
        Duration::from_secs(15),
        || policy(&env).contains("-P FORWARD ACCEPT"),
    );
    assert_eq!(restores(&env), 1, "status counts the restore");

    // An administrator's drop, set while Docker runs, outlives a restart
    // of Docker (which finds forwarding on and sets nothing).
    env.lab.host.sh("ip6tables-legacy -P FORWARD DROP");
    env.dockerd.restart();
    until("Docker connected again", Duration::from_secs(15), || {
        env.status()["docker"]["connected"] == true
    });
    assert!(policy(&env).contains("-P FORWARD DROP"));
    assert_eq!(restores(&env), 1);
    let status = env.status();
    assert_eq!(
        status["ipv6_forward_drops"][0]["left_alone"], true,
        "{status:#}"
    );
}
