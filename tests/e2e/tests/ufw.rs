//! ufw beside Docker: "ufw says deny, Docker's port is open anyway".
//!
//! ufw runs inside the test's host namespace only, so it writes that
//! namespace's iptables rules. Its state (/etc/ufw, /etc/default/ufw,
//! /lib/ufw) would still be the machine's files, so every ufw call runs in
//! a private mount namespace with a per-test copy of them bind-mounted in
//! their place: the machine's ufw configuration is never edited.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use portguard_e2e::{DockerLab, Env, NetNs, docker_lab, tcp_server, until};

/// ufw confined to one network namespace and a private copy of its state.
struct Ufw {
    ns_path: String,
    state: tempfile::TempDir,
}

impl Ufw {
    /// A copy of the machine's (untouched, package-default) ufw state for
    /// `ns`. The copy's sysctl file is emptied and its module list cleared:
    /// ufw would otherwise load kernel modules and set sysctls, and module
    /// loading is not confined to a namespace.
    fn new(ns: &NetNs) -> Ufw {
        assert!(
            Path::new("/usr/sbin/ufw").exists(),
            "ufw is installed (scripts/install-deps)"
        );
        let state = tempfile::tempdir().unwrap();
        let s = state.path().display();
        portguard_testkit::sh(&format!(
            "cp -a /etc/ufw {s}/etc-ufw && cp -a /lib/ufw {s}/lib-ufw && cp /etc/default/ufw {s}/default-ufw \
             && : >{s}/etc-ufw/sysctl.conf \
             && sed -i 's/^IPT_MODULES=.*/IPT_MODULES=\"\"/' {s}/default-ufw"
        ));
        Ufw {
            ns_path: ns.path(),
            state,
        }
    }

    /// Runs `ufw ARGS` in the namespace on the private state; returns stdout.
    fn run(&self, args: &str) -> String {
        let s = self.state.path().display();
        let script = format!(
            "mount --bind {s}/etc-ufw /etc/ufw && mount --bind {s}/lib-ufw /lib/ufw \
             && mount --bind {s}/default-ufw /etc/default/ufw && ufw {args}"
        );
        let out = Command::new("nsenter")
            .arg(format!("--net={}", self.ns_path))
            .args(["unshare", "--mount", "--propagation", "private", "sh", "-c"])
            .arg(&script)
            .output()
            .expect("nsenter/unshare");
        assert!(
            out.status.success(),
            "ufw {args}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// The lab with ufw enabled on the host before Docker starts, as on a real
/// host: `default deny incoming`, ssh (22) allowed, telnet (23) denied, and
/// listeners on both so ufw's own rules can be checked.
fn ufw_host() -> (DockerLab, Ufw) {
    let lab = docker_lab();
    let ufw = Ufw::new(&lab.host);
    ufw.run("default deny incoming");
    ufw.run("allow 22/tcp");
    ufw.run("deny 23/tcp");
    ufw.run("--force enable");
    assert!(
        ufw.run("status").contains("Status: active"),
        "ufw is active in the host namespace"
    );
    tcp_server(&lab.host, 22, "ssh\n");
    tcp_server(&lab.host, 23, "telnet\n");
    (lab, ufw)
}

/// ufw's rules for the host's own services: 22 open, 23 closed, both
/// address families.
fn assert_ufw_host_rules_hold(env: &Env, when: &str) {
    for (addr, family) in [("10.77.0.1", "IPv4"), ("[fd00:77::1]", "IPv6")] {
        assert!(
            env.open_from_wan(&format!("{addr}:22")),
            "{when}: ufw allows 22/tcp to the host, {family}"
        );
        assert!(
            !env.open_from_wan(&format!("{addr}:23")),
            "{when}: ufw denies 23/tcp to the host, {family}"
        );
    }
}

#[test]
fn ufw_default_deny_incoming_without_the_guard_a_published_port_bypasses_it() {
    let (lab, _ufw) = ufw_host();
    let env = Env::on(lab);
    env.web("db", &["27017:80"], "");
    assert_ufw_host_rules_hold(&env, "ufw on, Docker running");
    // Docker's DNAT forwards around ufw's INPUT rules; on Docker 29's
    // nftables backend ufw's FORWARD policy of drop (its own base chain,
    // where a drop is final) happens to close it instead.
    let bypass = env.open_from_wan("10.77.0.1:27017");
    if portguard_testkit::engine().nftables_backend() {
        assert!(
            !bypass,
            "Docker 29 (nftables): ufw's forward drop closes published ports"
        );
    } else {
        assert!(
            bypass,
            "the hole: ufw says deny incoming, Docker's published port is open anyway"
        );
    }
}

#[test]
fn ufw_with_the_guard_unlisted_closed_listed_open_across_ufw_reload_and_reenable() {
    let (lab, ufw) = ufw_host();
    let mut env = Env::on(lab);
    env.start_guard("[[allow]]\nport = 8080\n");
    env.web("web", &["8080:80"], "");
    env.web("db", &["27017:80"], "");
    assert_eq!(env.verdict(8080), "allowed");
    assert_eq!(env.verdict(27017), "blocked");
    let check = |when: &str| {
        assert!(
            !env.open_from_wan("10.77.0.1:27017"),
            "{when}: unlisted port, IPv4"
        );
        assert!(
            !env.open_from_wan("[fd00:77::1]:27017"),
            "{when}: unlisted port, IPv6"
        );
        // Docker 29 (nftables) leaves ufw's FORWARD chain alone, and its
        // policy of drop is final: the listed port needs `ufw route allow`
        // too. Docker 20.10-28 jump to their own chains ahead of ufw's.
        let listed_open = !portguard_testkit::engine().nftables_backend();
        assert_eq!(
            env.open_from_wan("10.77.0.1:8080"),
            listed_open,
            "{when}: allowlisted port, IPv4 (open unless ufw's forward drop closes it)"
        );
        assert_ufw_host_rules_hold(&env, when);
    };
    check("ufw on, guard on");
    ufw.run("reload");
    check("after ufw reload");
    ufw.run("disable");
    ufw.run("--force enable");
    check("after ufw disable && ufw enable");
}

/// With ufw on, an allowlisted port is open over IPv4 but IPv6 reaches the
/// (IPv4-only) container through docker-proxy on the INPUT path, where
/// ufw's `default deny incoming` drops it. `ports` and `explain` say so;
/// `ufw allow PORT/tcp` opens it.
#[test]
fn ufw_ipv6_to_an_allowlisted_port_is_dropped_by_ufw_and_ports_explain_say_so() {
    let (lab, ufw) = ufw_host();
    let mut env = Env::on(lab);
    env.start_guard("[[allow]]\nport = 8080\n");
    env.web("web", &["8080:80"], "");
    assert_eq!(env.verdict(8080), "allowed");
    assert!(
        !env.open_from_wan("[fd00:77::1]:8080"),
        "ufw's INPUT drops IPv6 to the allowlisted port (docker-proxy path)"
    );
    let ports = env.daemon().guardctl_json(&["ports"]);
    let v6 = ports
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["host_port"] == 8080 && p["host_ip"] != "0.0.0.0")
        .unwrap_or_else(|| panic!("an IPv6 binding of 8080: {ports:#}"));
    assert_eq!(v6["verdict"], "allowed", "{v6:#}");
    let warning = v6["warnings"][0].as_str().unwrap_or_default();
    assert!(
        warning.contains("drops IPv6") && warning.contains("ufw allow 8080/tcp"),
        "{v6:#}"
    );
    let explained = env.daemon().guardctl_json(&["explain", "8080"]);
    assert_eq!(explained["answer"], "open", "{explained:#}");
    assert!(
        explained["warnings"][0]
            .as_str()
            .is_some_and(|w| w.contains("ufw allow 8080/tcp")),
        "{explained:#}"
    );
    let text = String::from_utf8_lossy(&env.daemon().guardctl(&["ports"]).stdout).into_owned();
    assert!(
        text.contains("[1] warning, [::]:8080/tcp: ") && text.contains("ufw allow 8080/tcp"),
        "{text}"
    );
    // Nothing unlisted gets a warning, and no warning without ufw's drop.
    env.web("db", &["27017:80"], "");
    let db = env.daemon().guardctl_json(&["ports"]);
    assert!(
        db.as_array()
            .unwrap()
            .iter()
            .filter(|p| p["host_port"] == 27017)
            .all(|p| p.get("warnings").is_none()),
        "{db:#}"
    );

    ufw.run("allow 8080/tcp");
    assert!(
        env.open_from_wan("[fd00:77::1]:8080"),
        "after ufw allow 8080/tcp the IPv6 connection works"
    );
    assert!(
        !env.open_from_wan("[fd00:77::1]:27017"),
        "unlisted stays closed over IPv6"
    );
}

/// ufw's routed policy: `DEFAULT_FORWARD_POLICY="DROP"` (the package
/// default) sets the IPv6 FORWARD policy to drop, which is the
/// administrator's and not Docker's. Issue 18: the guard set it to accept
/// at start and after every change, so routed IPv6 to a service on
/// another network of the host (here a plain listener in `wan2`, not a
/// container) went from closed to open. It stays closed with the guard
/// running and after `ufw reload`, and status says whose drop it is.
#[test]
fn ufw_routed_ipv6_drop_stays_with_the_guard_running_and_after_ufw_reload() {
    let (lab, ufw) = ufw_host();
    tcp_server(&lab.wan2, 7001, "routed\n");
    let mut env = Env::on(lab);
    let routed = |env: &Env| env.open_from_wan("[fd00:76::2]:7001");
    assert!(!routed(&env), "ufw's routed policy drops it");
    env.start_guard("");
    assert!(
        !routed(&env),
        "with the guard running: ufw's routed IPv6 drop was set to accept"
    );
    let status = env.status();
    assert_eq!(status["ipv6_forward_policy"], "drop", "{status:#}");
    let drop = &status["ipv6_forward_drops"][0];
    assert_eq!(drop["set_by"]["kind"], "before-start", "{status:#}");
    assert_eq!(drop["left_alone"], true, "{status:#}");

    ufw.run("reload");
    // The reload sets the policy again, heard this time: named (ufw-init's
    // ip6tables-restore), or gone before it could be (left all the same).
    let mut status = serde_json::Value::Null;
    until(
        "status names who set the drop after ufw reload",
        Duration::from_secs(10),
        || {
            status = env.status();
            status["ipv6_forward_drops"][0]["set_by"]["kind"] != "before-start"
        },
    );
    let drop = &status["ipv6_forward_drops"][0];
    eprintln!("after ufw reload, set by: {}", drop["set_by"]);
    assert_eq!(drop["left_alone"], true, "{status:#}");
    match drop["set_by"]["kind"].as_str() {
        Some("process") => assert_eq!(drop["set_by"]["parent"], "ufw-init", "{status:#}"),
        kind => assert_eq!(kind, Some("gone"), "{status:#}"),
    }
    assert!(!routed(&env), "after ufw reload");
    assert_eq!(env.status()["ipv6_policy_restores"], 0);
    let text = String::from_utf8_lossy(&env.daemon().guardctl(&["status"]).stdout).into_owned();
    assert!(
        text.contains("leaves it alone") && text.contains("ufw route allow"),
        "{text}"
    );
}
