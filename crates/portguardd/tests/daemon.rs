//! portguardd as a process, in a lab of network namespaces.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::os::unix::net::UnixDatagram;
use std::process::Command;
use std::time::Duration;

use portguard_testkit::daemon::{Daemon, until, wait_notify, write_config};

use portguard_nft::{ForwardPolicy, GuardTable, Ip6Policy, Ownership, TableSpec};
use portguard_testkit::{NetNs, lab, tcp_probe};

const PROBE: Duration = Duration::from_millis(700);

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn reader() -> GuardTable {
    GuardTable::open(TableSpec {
        name: "portguard".into(),
        ownership: Ownership::Unowned,
    })
    .unwrap()
}

fn table_exists(nft: &mut GuardTable) -> bool {
    nft.read().unwrap().is_some()
}

#[test]
fn p5_p7_daemon_guards_restores_reloads_and_outlives_itself() {
    let lab = lab();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("portguard.toml");
    // The restore path is what this test is about: the tier whose tables
    // anybody may delete (the owned tiers refuse it, see tests/e2e).
    write_config(
        &config,
        "[guard]\nprotection = \"twin\"\n[[allow]]\nport = 8080\n",
        &dir.path().join("no-docker.sock"),
    );
    let notify_path = dir.path().join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    let mut nft = lab.host.enter(reader);
    let mut ip6 = lab.host.enter(|| Ip6Policy::open().unwrap());
    assert!(
        tcp_probe(&lab.wan, sa("10.99.0.1:8081"), PROBE),
        "the bypass exists without the guard"
    );

    let daemon = Daemon::start(&lab.host, &config, Some(&notify_path), &[]);
    wait_notify(&notify, "READY=1", Duration::from_secs(10));
    // READY=1 comes only after the ruleset is in place.
    assert!(
        table_exists(&mut nft),
        "READY before the table was installed"
    );
    assert!(
        tcp_probe(&lab.wan, sa("10.99.0.1:8080"), PROBE),
        "allowlisted port open"
    );
    assert!(
        !tcp_probe(&lab.wan, sa("10.99.0.1:8081"), PROBE),
        "unlisted port closed"
    );

    // Tampering is undone.
    lab.host.sh("nft delete table inet portguard");
    let took = until(
        "table restored after delete",
        Duration::from_secs(5),
        || table_exists(&mut nft),
    );
    println!("restored after `nft delete table`: seen back after {took:?}");
    // The standby copy guarded meanwhile, and the new forward chain fails
    // closed until its rules are committed: closed at once.
    assert!(!tcp_probe(&lab.wan, sa("10.99.0.1:8081"), PROBE));

    lab.host
        .sh("nft add rule inet portguard forward iifname \"eth0\" accept");
    let took = until("altered table restored", Duration::from_secs(5), || {
        !lab.host
            .sh("nft list chain inet portguard forward")
            .contains("iifname \"eth0\" accept")
    });
    println!("restored after an added accept rule: {took:?}");
    assert!(!tcp_probe(&lab.wan, sa("10.99.0.1:8081"), PROBE));

    // Docker's drop, set by an ip6tables whose parent is named dockerd (a
    // link to sh by that name: the name is all the guard reads of it).
    lab.host.sh(
        "d=$(mktemp -d) && ln -s /bin/sh $d/dockerd && $d/dockerd -c 'ip6tables -P FORWARD DROP; :'; rm -r $d",
    );
    let took = until(
        "ip6 FORWARD policy restored",
        Duration::from_secs(5),
        || ip6.forward_policy().unwrap() == ForwardPolicy::Accept,
    );
    println!("IPv6 FORWARD policy drop undone after {took:?}");

    lab.host.sh("nft flush ruleset");
    let took = until(
        "table restored after flush ruleset",
        Duration::from_secs(5),
        || table_exists(&mut nft),
    );
    println!("restored after `nft flush ruleset`: {took:?}");
    let log = daemon.log();
    assert!(log.contains("guard table restored"), "{log}");
    assert!(log.contains("restore_ms="), "{log}");

    // Put Docker's NAT back for the probes below.
    lab.host.sh(
        "nft add table ip nat && nft 'add chain ip nat pre { type nat hook prerouting priority dstnat; }' && \
         nft add rule ip nat pre tcp dport 8081 dnat to 172.30.0.2:81",
    );

    // Reload with a valid change applies it.
    write_config(
        &config,
        "[guard]\nprotection = \"twin\"\n[[allow]]\nport = 8081\n",
        &dir.path().join("no-docker.sock"),
    );
    daemon.signal("HUP");
    until("reload opened 8081", Duration::from_secs(5), || {
        tcp_probe(&lab.wan, sa("10.99.0.1:8081"), PROBE)
    });
    // A broken file keeps the last good rules and says why.
    std::fs::write(
        &config,
        "[guard]\nprotection = \"twin\"\n[[allow]]\nport = 0\n",
    )
    .unwrap();
    daemon.signal("HUP");
    until("reload error logged", Duration::from_secs(5), || {
        daemon.log().contains("portguard.toml:4:8: port 0")
    });
    assert!(
        tcp_probe(&lab.wan, sa("10.99.0.1:8081"), PROBE),
        "the last good ruleset stays"
    );

    write_config(
        &config,
        "[guard]\nprotection = \"twin\"\n",
        &dir.path().join("no-docker.sock"),
    );
    daemon.signal("HUP");
    until("reload closed 8081", Duration::from_secs(5), || {
        !tcp_probe(&lab.wan, sa("10.99.0.1:8081"), PROBE)
    });

    // SIGKILL: protection does not depend on the daemon (P5).
    daemon.signal("KILL");
    std::thread::sleep(Duration::from_millis(100));
    assert!(table_exists(&mut nft));
    assert!(
        !tcp_probe(&lab.wan, sa("10.99.0.1:8081"), PROBE),
        "closed after SIGKILL"
    );
    drop(daemon);

    // SIGTERM: clean stop, table stays, STOPPING=1 sent.
    let notify_path = dir.path().join("notify2.sock");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    let daemon = Daemon::start(&lab.host, &config, Some(&notify_path), &[]);
    wait_notify(&notify, "READY=1", Duration::from_secs(10));
    daemon.signal("TERM");
    wait_notify(&notify, "STOPPING=1", Duration::from_secs(5));
    let mut daemon = daemon;
    let status = daemon.child.wait().unwrap();
    assert!(status.success(), "SIGTERM is a normal stop: {status}");
    assert!(table_exists(&mut nft));
    assert!(
        !tcp_probe(&lab.wan, sa("10.99.0.1:8081"), PROBE),
        "closed after SIGTERM"
    );

    // --remove-rules deletes the table.
    let out = Command::new("nsenter")
        .arg(format!("--net={}", lab.host.path()))
        .args([env!("CARGO_BIN_EXE_portguardd"), "--remove-rules"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(!table_exists(&mut nft));
}

#[test]
fn watchdog_pings_when_enabled() {
    let ns = NetNs::new("wd");
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("portguard.toml");
    write_config(&config, "", &dir.path().join("no-docker.sock"));
    let notify_path = dir.path().join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    let _daemon = Daemon::start(
        &ns,
        &config,
        Some(&notify_path),
        &[("WATCHDOG_USEC", "200000")],
    );
    wait_notify(&notify, "READY=1", Duration::from_secs(10));
    wait_notify(&notify, "WATCHDOG=1", Duration::from_secs(2));
}

#[test]
fn p7_a_start_with_a_broken_configuration_still_guards() {
    let lab = lab();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("portguard.toml");
    std::fs::write(&config, "[guard]\nmode = \"off\"\n").unwrap();

    // No last good configuration kept: every published port closed.
    let notify_path = dir.path().join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    let daemon = Daemon::start(&lab.host, &config, Some(&notify_path), &[]);
    wait_notify(&notify, "READY=1", Duration::from_secs(10));
    assert!(!tcp_probe(&lab.wan, sa("10.99.0.1:8080"), PROBE), "closed");
    assert!(!tcp_probe(&lab.wan, sa("10.99.0.1:8081"), PROBE), "closed");
    let status = daemon.guardctl_json(&["status"]);
    assert_eq!(status["config"]["in_force"], "closed", "{status}");
    let error = status["config"]["error"].as_str().unwrap_or_default();
    assert!(
        error.contains(&format!("{}:2:8:", config.display())),
        "{status}"
    );
    // A good reload ends it, and is kept as the last good configuration.
    // (Sockets are not changed by a reload; the fallback used the default
    // ones, and so does this file.)
    std::fs::write(&config, "[[allow]]\nport = 8080\n").unwrap();
    let out = daemon.guardctl(&["reload"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(tcp_probe(&lab.wan, sa("10.99.0.1:8080"), PROBE));
    let status = daemon.guardctl_json(&["status"]);
    assert_eq!(status["config"]["in_force"], "files", "{status}");
    assert!(status["config"]["error"].is_null(), "{status}");
    assert!(dir.path().join("state/last-good.toml").exists());
    drop(daemon);

    // A restart (or reboot) with a broken file: the last good one guards.
    std::fs::write(&config, "[[allow]]\nport = \"oops\"\n").unwrap();
    let notify_path = dir.path().join("notify2.sock");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    let daemon = Daemon::start(&lab.host, &config, Some(&notify_path), &[]);
    wait_notify(&notify, "READY=1", Duration::from_secs(10));
    assert!(
        tcp_probe(&lab.wan, sa("10.99.0.1:8080"), PROBE),
        "last good: open"
    );
    assert!(
        !tcp_probe(&lab.wan, sa("10.99.0.1:8081"), PROBE),
        "last good: closed"
    );
    let status = daemon.guardctl_json(&["status"]);
    assert_eq!(status["config"]["in_force"], "last-good", "{status}");
    assert!(status["config"]["error"].as_str().is_some(), "{status}");
    // A refused reload is a failure guardctl reports, not a success.
    let out = daemon.guardctl(&["reload"]);
    assert!(!out.status.success(), "a refused reload must fail visibly");
}

/// Chains in `table ip kube` for the many-chains test: what a host running
/// kube-proxy on iptables-nft holds (tens of thousands).
const MANY_CHAINS: usize = 100_000;

/// `guardctl status` must not stall the guard: the dump of every chain of
/// every table (seconds with this many) happens off the loop, so a deleted
/// table is restored promptly while status requests keep coming, and
/// status still shows what that dump found.
#[test]
fn status_calls_amid_many_chains_do_not_delay_restores() {
    let lab = lab();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("portguard.toml");
    // The tier whose tables anybody may delete: the restore is measured.
    write_config(
        &config,
        "[guard]\nprotection = \"twin\"\n",
        &dir.path().join("no-docker.sock"),
    );
    let notify_path = dir.path().join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    let mut nft = lab.host.enter(reader);
    let daemon = Daemon::start(&lab.host, &config, Some(&notify_path), &[]);
    wait_notify(&notify, "READY=1", Duration::from_secs(10));

    // One transaction: the chains, and an IPv6 INPUT path that drops.
    let mut ruleset = String::from(
        "table ip6 filter {\n chain INPUT { type filter hook input priority 0; policy drop; }\n}\ntable ip kube {\n",
    );
    for i in 0..MANY_CHAINS {
        ruleset.push_str(&format!(" chain KUBE-SVC-{i:06} {{ }}\n"));
    }
    ruleset.push_str("}\n");
    let file = dir.path().join("many-chains.nft");
    std::fs::write(&file, ruleset).unwrap();
    lab.host.sh(&format!("nft -f {}", file.display()));

    // Status shows the assessment of the (new) inventory.
    let took = until(
        "status shows the ip6 INPUT drop",
        Duration::from_secs(60),
        || {
            let status = daemon.guardctl_json(&["status"]);
            status["firewall"]["ipv6_input_drop"]["chains"]
                .as_array()
                .is_some_and(|chains| chains.iter().any(|c| c == "ip6 filter INPUT (policy drop)"))
        },
    );
    println!("{MANY_CHAINS} chains: status showed the ip6 INPUT drop after {took:?}");

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let calls = std::thread::scope(|scope| {
        let caller = scope.spawn(|| {
            let mut calls = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let started = std::time::Instant::now();
                let out = daemon.guardctl(&["status", "--json"]);
                // Exit 1 (not installed) is a right answer while the
                // table is deleted; an answer there must be.
                let status: serde_json::Value =
                    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
                        panic!(
                            "guardctl status: {e}: {}",
                            String::from_utf8_lossy(&out.stderr)
                        )
                    });
                assert!(status["firewall"].is_object(), "{status}");
                calls.push(started.elapsed());
            }
            calls
        });
        let mut worst = Duration::ZERO;
        for round in 0..5 {
            std::thread::sleep(Duration::from_millis(300));
            lab.host.sh("nft delete table inet portguard");
            let took = until(
                "table restored amid status calls",
                Duration::from_secs(30),
                || table_exists(&mut nft),
            );
            println!("round {round}: table restored after {took:?} amid status calls");
            worst = worst.max(took);
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let calls = caller.join().unwrap();
        assert!(
            worst < Duration::from_secs(1),
            "a deleted table took {worst:?} to come back while status was asked"
        );
        calls
    });
    let slowest = calls.iter().max().copied().unwrap_or_default();
    println!(
        "{} status calls meanwhile, slowest {slowest:?}",
        calls.len()
    );
    assert!(!calls.is_empty(), "no status call was made");
    // nsenter execs portguardd: the same pid.
    let peak = std::fs::read_to_string(format!("/proc/{}/status", daemon.child.id()))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmHWM"))
        .map(str::to_string)
        .unwrap_or_default();
    println!("portguardd peak RSS with {MANY_CHAINS} chains: {peak}");
}
