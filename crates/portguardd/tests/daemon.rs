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

    lab.host.sh("ip6tables -P FORWARD DROP");
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
