//! Real packets through a real kernel: a "wan" namespace connects through a
//! "host" namespace (which DNATs published ports, like Docker) to a
//! "container" namespace behind a bridge named docker0.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use portguard_config::Config;
use portguard_core::ruleset::TABLE_NAME;
use portguard_core::{Ruleset, Snapshot, plan};
use portguard_nft::{
    Change, Conntrack, DropSetter, ForwardPolicy, ForwardPolicySet, GuardTable, Ip6Firewall,
    Ip6Policy, Look, MonitorEvent, Ownership, TableOutcome, TableSpec,
};
use portguard_testkit::{NetNs, addr, lab, link, tcp_probe, tcp_probe_here, tcp_server, udp_probe};

const PROBE: Duration = Duration::from_millis(700);

fn ruleset(toml: &str) -> Ruleset {
    plan(&Config::from_toml_str(toml).unwrap(), &Snapshot::default())
}

fn guard_table() -> GuardTable {
    GuardTable::open(TableSpec {
        name: TABLE_NAME.into(),
        ownership: Ownership::Unowned,
    })
    .unwrap()
}

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

#[test]
fn p1_published_ports_are_judged_by_their_original_port() {
    let lab = lab();
    // The bypass exists: with no guard, both ports are reachable.
    assert!(tcp_probe(&lab.wan, sa("10.99.0.1:8080"), PROBE));
    assert!(tcp_probe(&lab.wan, sa("10.99.0.1:8081"), PROBE));
    assert!(tcp_probe(&lab.wan, sa("[fd00:99::1]:8081"), PROBE));
    assert!(udp_probe(&lab.wan, sa("10.99.0.1:5353"), PROBE));

    let mut nft = lab.host.enter(guard_table);
    nft.reconcile(&ruleset("[[allow]]\nport = 8080\n")).unwrap();
    assert!(
        tcp_probe(&lab.wan, sa("10.99.0.1:8080"), PROBE),
        "allowed port over IPv4"
    );
    assert!(
        tcp_probe(&lab.wan, sa("[fd00:99::1]:8080"), PROBE),
        "allowed port over IPv6"
    );
    assert!(
        !tcp_probe(&lab.wan, sa("10.99.0.1:8081"), PROBE),
        "unlisted port over IPv4"
    );
    assert!(
        !tcp_probe(&lab.wan, sa("[fd00:99::1]:8081"), PROBE),
        "unlisted port over IPv6"
    );
    assert!(
        !udp_probe(&lab.wan, sa("10.99.0.1:5353"), PROBE),
        "unlisted UDP port"
    );

    // Listing the container port does not open the published one.
    nft.reconcile(&ruleset("[[allow]]\nport = 80\n[[allow]]\nport = 81\n"))
        .unwrap();
    assert!(
        !tcp_probe(&lab.wan, sa("10.99.0.1:8080"), PROBE),
        "80 listed, 8080 must stay closed"
    );
    assert!(!tcp_probe(&lab.wan, sa("10.99.0.1:8081"), PROBE));
    // ... and a packet routed straight to the container cannot borrow
    // the allowlisted number (it was not DNATed).
    assert!(
        !tcp_probe(&lab.wan, sa("172.30.0.2:80"), PROBE),
        "direct access to the container address"
    );

    nft.reconcile(&ruleset("[[allow]]\nport = 5353\nproto = \"udp\"\n"))
        .unwrap();
    assert!(
        udp_probe(&lab.wan, sa("10.99.0.1:5353"), PROBE),
        "allowed UDP port"
    );
    assert!(
        !tcp_probe(&lab.wan, sa("10.99.0.1:8080"), PROBE),
        "tcp not opened by a udp entry"
    );

    // Source restrictions: wan is 10.99.0.2.
    nft.reconcile(&ruleset("[[allow]]\nport = 8080\nfrom = [\"10.99.0.0/30\"]\n[[allow]]\nport = 8081\nfrom = [\"10.98.0.0/16\", \"fd00:99::2/128\"]\n"))
        .unwrap();
    assert!(
        tcp_probe(&lab.wan, sa("10.99.0.1:8080"), PROBE),
        "source inside from"
    );
    assert!(
        !tcp_probe(&lab.wan, sa("10.99.0.1:8081"), PROBE),
        "source outside from (v4)"
    );
    assert!(
        tcp_probe(&lab.wan, sa("[fd00:99::1]:8081"), PROBE),
        "source inside from (v6)"
    );
    assert!(
        !tcp_probe(&lab.wan, sa("[fd00:99::1]:8080"), PROBE),
        "v4-only from closes v6"
    );

    // Audit mode drops nothing but counts what it would have dropped.
    nft.reconcile(&ruleset("[guard]\nmode = \"audit\"\n"))
        .unwrap();
    assert!(tcp_probe(&lab.wan, sa("10.99.0.1:8081"), PROBE));
    assert!(nft.read().unwrap().unwrap().blocked_packets() >= 1);

    // Protection does not depend on our process: the handle goes away, the
    // table stays.
    nft.reconcile(&ruleset("")).unwrap();
    drop(nft);
    assert!(!tcp_probe(&lab.wan, sa("10.99.0.1:8080"), PROBE));
}

#[test]
fn p2_p3_trusted_interfaces_and_established_connections_pass() {
    let lab = lab();
    let mut nft = lab.host.enter(guard_table);
    // Established before the guard: survives it (P2).
    let established = lab.wan.enter(|| {
        let s = std::net::TcpStream::connect_timeout(&sa("10.99.0.1:8081"), PROBE).unwrap();
        s.set_read_timeout(Some(PROBE)).unwrap();
        s
    });
    nft.reconcile(&ruleset("[guard]\ntrusted_interfaces = [\"eth9\"]\n"))
        .unwrap();
    let mut buf = [0u8; 8];
    assert_eq!(
        std::io::Read::read(&mut &established, &mut buf).unwrap(),
        3,
        "reply on an established connection"
    );
    assert!(!tcp_probe(&lab.wan, sa("10.99.0.1:8081"), PROBE));
    nft.reconcile(&ruleset("[guard]\ntrusted_interfaces = [\"eth*\"]\n"))
        .unwrap();
    assert!(
        tcp_probe(&lab.wan, sa("10.99.0.1:8081"), PROBE),
        "trusted by wildcard"
    );
    nft.reconcile(&ruleset("[guard]\nexternal_interfaces = [\"eth1\"]\n"))
        .unwrap();
    assert!(
        tcp_probe(&lab.wan, sa("10.99.0.1:8081"), PROBE),
        "eth0 is not external"
    );
    nft.reconcile(&ruleset("[guard]\nexternal_interfaces = [\"eth0\"]\n"))
        .unwrap();
    assert!(
        !tcp_probe(&lab.wan, sa("10.99.0.1:8081"), PROBE),
        "eth0 is external"
    );
}

#[test]
fn p9_one_thousand_reapplies_never_open_a_refused_port() {
    let lab = lab();
    let mut nft = lab.host.enter(guard_table);
    let a = ruleset("[[allow]]\nport = 8080\n[[allow]]\nport = 9000\n");
    let b = ruleset("[[allow]]\nport = 8080\n[[allow]]\nport = 9001\n");
    nft.reconcile(&a).unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let leaked = Arc::new(AtomicUsize::new(0));
    let refused = Arc::new(AtomicUsize::new(0));
    let probes = Arc::new(AtomicUsize::new(0));
    let prober = {
        let (stop, leaked, refused, probes) = (
            stop.clone(),
            leaked.clone(),
            refused.clone(),
            probes.clone(),
        );
        lab.wan.spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                if tcp_probe_here(sa("10.99.0.1:8081"), Duration::from_millis(20)) {
                    leaked.fetch_add(1, Ordering::SeqCst);
                }
                if !tcp_probe_here(sa("10.99.0.1:8080"), Duration::from_millis(500)) {
                    refused.fetch_add(1, Ordering::SeqCst);
                }
                probes.fetch_add(2, Ordering::SeqCst);
            }
        })
    };
    let started = std::time::Instant::now();
    // At least 1,000 re-applies, and as many more as it takes for the
    // prober to have tried a few hundred connections during them.
    let mut applies = 0;
    while applies < 1000 || (probes.load(Ordering::SeqCst) < 400 && applies < 100_000) {
        let outcome = nft
            .reconcile(if applies % 2 == 0 { &b } else { &a })
            .unwrap();
        assert!(
            matches!(outcome, TableOutcome::Repaired(_)),
            "an intact table of the same shape is updated in place: {outcome:?}"
        );
        applies += 1;
    }
    let incremental_probes = probes.load(Ordering::SeqCst);
    let incremental_refused = refused.load(Ordering::SeqCst);
    // The full replacement (delete and add back in one transaction) must
    // never open a refused port either: alternate between two shapes. It
    // costs new connections to allowed ports their SYN while the new,
    // fail-closed forward chain is hooked but its rules are not yet
    // committed: that cost is measured and printed here, not asserted.
    let c = ruleset("[guard]\nexternal_interfaces = [\"eth0\"]\n[[allow]]\nport = 8080\n");
    for i in 0..100 {
        let outcome = nft.reconcile(if i % 2 == 0 { &c } else { &a }).unwrap();
        assert!(matches!(outcome, TableOutcome::Replaced(_)), "{outcome:?}");
    }
    let elapsed = started.elapsed();
    stop.store(true, Ordering::SeqCst);
    prober.join().unwrap();
    println!(
        "{applies} incremental + 100 full re-applies in {elapsed:?}; {incremental_probes} probes during the \
         incremental ones, {} in all; allowed port refused {incremental_refused} times during incremental, \
         {} during full re-applies",
        probes.load(Ordering::SeqCst),
        refused.load(Ordering::SeqCst) - incremental_refused
    );
    assert!(incremental_probes >= 400, "the prober barely ran");
    assert_eq!(
        leaked.load(Ordering::SeqCst),
        0,
        "a refused port got through during re-applies"
    );
    assert_eq!(
        incremental_refused, 0,
        "an allowed port was refused during incremental re-applies"
    );
}

#[test]
fn monitor_names_the_process_behind_each_change() {
    let lab = lab();
    let (tx, rx) = std::sync::mpsc::channel();
    let mut monitor = lab.host.enter(|| portguard_nft::Monitor::open().unwrap());
    std::thread::spawn(move || {
        while let Ok(event) = monitor.next_event() {
            if tx.send(event).is_err() {
                break;
            }
        }
    });
    let next_change = || loop {
        match rx
            .recv_timeout(Duration::from_secs(5))
            .expect("a change notification")
        {
            MonitorEvent::Change(c) => break c,
            MonitorEvent::Overflow { .. } => continue,
        }
    };
    let mut nft = lab.host.enter(guard_table);
    nft.reconcile(&ruleset("")).unwrap();
    let ours = next_change();
    assert!(ours.ours, "{ours:?}");
    assert!(ours.may_touch_our_table());

    lab.host.sh("nft add table ip x");
    let c = next_change();
    assert!(!c.ours && c.process == "nft", "{c:?}");
    assert!(
        c.tables.contains("ip x") && !c.may_touch_our_table(),
        "{c:?}"
    );

    lab.host.sh("iptables-nft -A FORWARD -j ACCEPT");
    let c = loop {
        let c = next_change();
        if c.tables.contains("ip filter") {
            break c;
        }
    };
    assert!(!c.ours && c.process.contains("tables"), "{c:?}");

    lab.host.sh("nft flush ruleset");
    let c = next_change();
    assert!(!c.ours && c.process == "nft", "{c:?}");
    assert!(
        c.may_touch_our_table(),
        "flush ruleset deletes our table: {c:?}"
    );
    assert!(c.pid > 0);
}

/// A router `r` between `a` (fd00:a::2) and `b` (fd00:b::2, serving TCP
/// 7000), forwarding IPv6.
fn ipv6_router() -> (NetNs, NetNs, NetNs, SocketAddr) {
    let a = NetNs::new("v6a");
    let r = NetNs::new("v6r");
    let b = NetNs::new("v6b");
    link(&r, "ra", &a, "eth0");
    link(&r, "rb", &b, "eth0");
    addr(&r, "ra", &["fd00:a::1/64"]);
    addr(&r, "rb", &["fd00:b::1/64"]);
    addr(&a, "eth0", &["fd00:a::2/64"]);
    addr(&b, "eth0", &["fd00:b::2/64"]);
    a.sh("ip -6 route add default via fd00:a::1");
    b.sh("ip -6 route add default via fd00:b::1");
    r.sh("sysctl -qw net.ipv6.conf.all.forwarding=1");
    tcp_server(&b, 7000, "v6\n");
    (a, r, b, sa("[fd00:b::2]:7000"))
}

/// Runs `ip6tables ARGS` in `ns` as a child of a process named `parent`
/// (a link to sh by that name: the name is all the guard reads of a
/// process), the way dockerd or ufw run it.
fn ip6tables_from(ns: &NetNs, parent: &str, args: &str) {
    let dir = tempfile_dir();
    let link = dir.join(parent);
    std::os::unix::fs::symlink("/bin/sh", &link).unwrap();
    // `; :` keeps sh from exec'ing ip6tables in its own place.
    ns.sh(&format!("{} -c 'ip6tables {args}; :'", link.display()));
    let _ = std::fs::remove_dir_all(&dir);
}

fn tempfile_dir() -> std::path::PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "pg-traffic-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A monitor in `ns`, followed on a thread of its own: the next change
/// that set the IPv6 FORWARD policy.
fn policy_changes(ns: &NetNs) -> impl FnMut() -> ForwardPolicySet {
    let (tx, rx) = std::sync::mpsc::channel();
    let mut monitor = ns.enter(|| portguard_nft::Monitor::open().unwrap());
    std::thread::spawn(move || {
        while let Ok(event) = monitor.next_event() {
            if tx.send(event).is_err() {
                break;
            }
        }
    });
    move || loop {
        match rx.recv_timeout(Duration::from_secs(5)).expect("a change") {
            MonitorEvent::Change(Change {
                ip6_forward: Some(set),
                ..
            }) => break set,
            _ => continue,
        }
    }
}

const AGAIN: Look = Look::Again {
    docker_connected: true,
};

#[test]
fn p6_the_ipv6_forward_drop_docker_sets_is_undone_and_routing_works_again() {
    let (a, r, _b, target) = ipv6_router();
    assert!(
        tcp_probe(&a, target, PROBE),
        "routing works before Docker's drop"
    );
    let mut heard = policy_changes(&r);
    let mut ip6 = r.enter(|| Ip6Policy::open().unwrap());
    assert_eq!(ip6.forward_policy().unwrap(), ForwardPolicy::NoChain);
    ip6tables_from(&r, "dockerd", "-P FORWARD DROP");
    assert_eq!(ip6.forward_policy().unwrap(), ForwardPolicy::Drop);
    assert!(
        !tcp_probe(&a, target, PROBE),
        "the drop policy breaks routing"
    );

    let set = heard();
    assert_eq!(set.policy, ForwardPolicy::Drop);
    let setter = set.setter.clone().unwrap();
    assert!(
        matches!(&setter, DropSetter::Docker { process, .. } if process == "ip6tables"),
        "{setter:?}"
    );
    ip6.hear(std::slice::from_ref(&set), false);
    let restored = ip6.look(AGAIN, true).unwrap();
    assert_eq!(restored.len(), 1, "{restored:?}");
    assert_eq!(restored[0].backend, Ip6Firewall::Nftables);
    assert_eq!(restored[0].set_by, setter);
    assert_eq!(ip6.forward_policy().unwrap(), ForwardPolicy::Accept);
    assert!(r.sh("ip6tables -S FORWARD").contains("-P FORWARD ACCEPT"));
    assert!(tcp_probe(&a, target, PROBE), "routing works again");
    assert!(
        ip6.look(AGAIN, true).unwrap().is_empty(),
        "nothing to do the second time"
    );
}

#[test]
fn p6_an_ipv6_forward_drop_ufw_or_an_administrator_sets_is_left_and_routing_stays_closed() {
    let (a, r, _b, target) = ipv6_router();
    let mut heard = policy_changes(&r);
    let mut ip6 = r.enter(|| Ip6Policy::open().unwrap());
    for (parent, ufw) in [("ufw-init", true), ("bash", false)] {
        ip6tables_from(&r, parent, "-P FORWARD DROP");
        let set = heard();
        assert_eq!(set.policy, ForwardPolicy::Drop);
        let setter = set.setter.clone().unwrap();
        assert!(!setter.is_docker(), "{setter:?}");
        assert_eq!(setter.is_ufw(), ufw, "{setter:?}");
        ip6.hear(std::slice::from_ref(&set), false);
        for look in [AGAIN, Look::DockerBack, Look::Start] {
            assert_eq!(ip6.look(look, true).unwrap(), vec![], "{look:?}");
        }
        assert_eq!(ip6.drops().unwrap(), vec![(Ip6Firewall::Nftables, setter)]);
        assert!(
            !tcp_probe(&a, target, PROBE),
            "{parent}'s drop stays: routed IPv6 is refused"
        );
        r.sh("ip6tables -P FORWARD ACCEPT");
        assert_eq!(heard().policy, ForwardPolicy::Accept);
    }
}

#[test]
fn a_legacy_ipv6_forward_drop_is_undone_only_when_it_appeared_while_docker_was_away() {
    let ns = NetNs::new("legacy");
    let mut ip6 = ns.enter(|| Ip6Policy::open().unwrap());
    let policy = || ns.sh("ip6tables-legacy -S FORWARD");
    // Found at start: whose it is is not known.
    ns.sh("ip6tables-legacy -P FORWARD DROP");
    // Called from a thread outside the namespace: the handle's namespace counts.
    assert_eq!(ip6.look(Look::Start, true).unwrap(), vec![]);
    assert_eq!(ip6.look(Look::DockerBack, true).unwrap(), vec![]);
    assert!(policy().contains("-P FORWARD DROP"));

    // Set while Docker was away (dockerd starting): Docker's when it is back.
    ns.sh("ip6tables-legacy -P FORWARD ACCEPT");
    assert_eq!(ip6.look(AGAIN, true).unwrap(), vec![]);
    ns.sh("ip6tables-legacy -P FORWARD DROP");
    let away = Look::Again {
        docker_connected: false,
    };
    assert_eq!(ip6.look(away, true).unwrap(), vec![]);
    let restored = ip6.look(Look::DockerBack, true).unwrap();
    assert_eq!(restored.len(), 1, "{restored:?}");
    assert_eq!(restored[0].backend, Ip6Firewall::IptablesLegacy);
    assert_eq!(restored[0].set_by, DropSetter::DockerStart);
    assert!(policy().contains("-P FORWARD ACCEPT"));
    assert!(ip6.look(Look::DockerBack, true).unwrap().is_empty());
}

#[test]
fn p10_connections_a_removed_entry_admitted_are_ended_others_live_on() {
    use std::io::{Read, Write};
    let lab = lab();
    let mut nft = lab.host.enter(guard_table);
    nft.reconcile(&ruleset("[[allow]]\nport = \"8082-8083\"\n"))
        .unwrap();
    let connect = |port: u16| {
        lab.wan.enter(move || {
            let s = std::net::TcpStream::connect_timeout(&sa(&format!("10.99.0.1:{port}")), PROBE)
                .unwrap();
            s.set_read_timeout(Some(PROBE)).unwrap();
            s
        })
    };
    let echoes = |mut s: &std::net::TcpStream, text: &[u8]| {
        let mut buf = [0u8; 16];
        s.write_all(text).is_ok() && matches!(s.read(&mut buf), Ok(n) if &buf[..n] == text)
    };
    let removed = connect(8082);
    let kept = connect(8083);
    assert!(echoes(&removed, b"a") && echoes(&kept, b"a"));

    // The reload removes 8082: new connections are refused at once, but an
    // established one lives on (accepted as established) ...
    nft.reconcile(&ruleset("[[allow]]\nport = 8083\n")).unwrap();
    assert!(
        echoes(&removed, b"b"),
        "without the sweep the old connection survives"
    );
    // ... until the connections the entry admitted are ended.
    let allowed = |flow: &portguard_nft::Flow| flow.original_dport == 8083;
    let mut conntrack = lab.host.enter(|| Conntrack::open().unwrap());
    let stats = conntrack
        .end_connections(portguard_core::plan::CT_MARK_ADMITTED, allowed)
        .unwrap();
    assert_eq!(stats.ended, 1, "{stats:?}");
    assert!(stats.examined >= 2, "{stats:?}");
    assert!(
        !echoes(&removed, b"c"),
        "the connection to the removed port is over"
    );
    assert!(
        echoes(&kept, b"c"),
        "the connection to a still allowed port lives on"
    );
}

#[test]
fn p1_a_bridge_docker_has_not_reported_yet_is_judged_from_the_first_packet() {
    // What a new user-defined Docker network looks like before any event
    // about it reached the guard: a bridge br-<id> nobody told us about.
    let lab = lab();
    let ctr2 = NetNs::new("ctr2");
    lab.host
        .sh("ip link add br-0123456789ab type bridge && ip link set br-0123456789ab up");
    addr(&lab.host, "br-0123456789ab", &["172.31.0.1/24"]);
    link(&lab.host, "vethd", &ctr2, "eth0");
    lab.host.sh("ip link set vethd master br-0123456789ab");
    addr(&ctr2, "eth0", &["172.31.0.2/24"]);
    ctr2.sh("ip route add default via 172.31.0.1");
    lab.host
        .sh("nft add rule ip nat pre tcp dport 8099 dnat to 172.31.0.2:80");
    tcp_server(&ctr2, 80, "new network\n");
    assert!(
        tcp_probe(&lab.wan, sa("10.99.0.1:8099"), PROBE),
        "the bypass exists"
    );

    let mut nft = lab.host.enter(guard_table);
    // The snapshot knows no bridges at all: nothing to wait for.
    nft.reconcile(&ruleset("")).unwrap();
    assert!(
        !tcp_probe(&lab.wan, sa("10.99.0.1:8099"), PROBE),
        "judged without waiting for Docker"
    );
    nft.reconcile(&ruleset("[[allow]]\nport = 8099\n")).unwrap();
    assert!(tcp_probe(&lab.wan, sa("10.99.0.1:8099"), PROBE));
}

/// Metrics: blocked attempts are counted in the kernel per original
/// (pre-DNAT) port and protocol, in dynamic sets whose elements the exact
/// verification leaves alone (they are counts, not desired state) while
/// it still checks the sets' definitions.
#[test]
fn blocked_attempts_are_counted_per_original_port_in_the_kernel() {
    use portguard_core::L4Proto;
    let lab = lab();
    let mut nft = lab.host.enter(guard_table);
    let desired = ruleset("[[allow]]\nport = 8080\n");
    nft.reconcile(&desired).unwrap();
    assert!(nft.read().unwrap().unwrap().blocked_per_port().is_empty());

    assert!(tcp_probe(&lab.wan, sa("10.99.0.1:8080"), PROBE));
    for _ in 0..3 {
        assert!(!tcp_probe(&lab.wan, sa("10.99.0.1:8081"), PROBE));
    }
    assert!(!udp_probe(&lab.wan, sa("10.99.0.1:5353"), PROBE));
    let mut counted = nft.read().unwrap().unwrap().blocked_per_port();
    counted.sort();
    // A refused TCP attempt is retransmitted within the probe's timeout
    // (one new connection, several packets): at least one each.
    assert_eq!(
        counted
            .iter()
            .map(|(proto, port, _)| (*proto, *port))
            .collect::<Vec<_>>(),
        vec![(L4Proto::Tcp, 8081), (L4Proto::Udp, 5353)],
        "{counted:?}"
    );
    assert!(counted[0].2 >= 3, "{counted:?}");
    assert!(counted[1].2 >= 1, "{counted:?}");

    // The counted elements are not a difference: nothing to repair, and
    // the counts stay.
    assert_eq!(nft.check(&desired).unwrap(), vec![]);
    assert!(
        lab.host
            .sh("nft list set inet portguard blocked_tcp")
            .contains("8081 counter packets")
    );

    // The definition still is: a redefined counting set is replaced.
    lab.host.sh(
        "nft delete rule inet portguard published_forward handle $(nft -a list chain inet portguard published_forward | sed -n 's/.*@blocked_tcp.*# handle //p') \
         && nft delete rule inet portguard published_input handle $(nft -a list chain inet portguard published_input | sed -n 's/.*@blocked_tcp.*# handle //p') \
         && nft delete rule inet portguard docker_api_input handle $(nft -a list chain inet portguard docker_api_input | sed -n 's/.*@blocked_tcp.*# handle //p') \
         && nft delete set inet portguard blocked_tcp \
         && nft add set inet portguard blocked_tcp '{ type inet_service; size 8; flags dynamic; }'",
    );
    let differences = nft.check(&desired).unwrap();
    assert!(
        differences.contains(&portguard_nft::Difference::SetDefinition(
            "blocked_tcp".into()
        )),
        "{differences:?}"
    );
    assert!(matches!(
        nft.reconcile(&desired).unwrap(),
        TableOutcome::Replaced(_)
    ));
    assert_eq!(nft.check(&desired).unwrap(), vec![]);
}

#[test]
fn p1_single_ports_in_the_hash_set_and_ranges_in_the_range_set_both_admit() {
    let lab = lab();
    let mut nft = lab.host.enter(guard_table);
    let both = ruleset(
        "[[allow]]\nport = 8080\n[[allow]]\nport = \"8082-8083\"\n\
         [[allow]]\nport = \"5350-5360\"\nproto = \"udp\"\n",
    );
    nft.reconcile(&both).unwrap();
    // The kernel holds single ports in a hash set (`dynamic`: not the
    // bitmap backend) and ranges in an interval set, as planned.
    let single_set = lab.host.sh("nft list set inet portguard allow_tcp");
    assert!(
        single_set.contains("8080")
            && single_set.contains("flags dynamic")
            && !single_set.contains("interval"),
        "{single_set}"
    );
    let range_set = lab.host.sh("nft list set inet portguard allow_tcp_ranges");
    assert!(
        range_set.contains("flags interval") && range_set.contains("8082-8083"),
        "{range_set}"
    );
    assert!(
        tcp_probe(&lab.wan, sa("10.99.0.1:8080"), PROBE),
        "single allowed port (hash set)"
    );
    for port in [8082, 8083] {
        assert!(
            tcp_probe(&lab.wan, sa(&format!("10.99.0.1:{port}")), PROBE),
            "port {port} of an allowed range (interval set)"
        );
    }
    assert!(
        udp_probe(&lab.wan, sa("10.99.0.1:5353"), PROBE),
        "UDP port inside an allowed range"
    );
    assert!(
        !tcp_probe(&lab.wan, sa("10.99.0.1:8081"), PROBE),
        "unlisted port between the single port and the range"
    );
    assert!(
        !tcp_probe(&lab.wan, sa("[fd00:99::1]:8081"), PROBE),
        "unlisted port over IPv6"
    );

    // Dropping the range, and bringing it back, are element changes made
    // in place: the range set stays, empty, in between.
    let single = ruleset("[[allow]]\nport = 8080\n");
    for (rules, range_open) in [(&single, false), (&both, true)] {
        let outcome = nft.reconcile(rules).unwrap();
        assert!(matches!(outcome, TableOutcome::Repaired(_)), "{outcome:?}");
        assert_eq!(
            tcp_probe(&lab.wan, sa("10.99.0.1:8082"), PROBE),
            range_open,
            "port 8082 with the range {}",
            if range_open { "back" } else { "removed" }
        );
        assert!(tcp_probe(&lab.wan, sa("10.99.0.1:8080"), PROBE));
        assert!(!tcp_probe(&lab.wan, sa("10.99.0.1:8081"), PROBE));
    }

    // One address . one port goes in the sourced hash set, a network in
    // the interval one; wan is 10.99.0.2.
    nft.reconcile(&ruleset(
        "[[allow]]\nport = 8081\nfrom = [\"10.99.0.2/32\"]\n\
         [[allow]]\nport = 8080\nfrom = [\"10.99.0.3/32\"]\n\
         [[allow]]\nport = 8082\nfrom = [\"10.99.0.0/30\"]\n",
    ))
    .unwrap();
    let hosts = lab.host.sh("nft list set inet portguard allow_tcp_v4");
    assert!(
        hosts.contains("10.99.0.2 . 8081") && !hosts.contains("interval"),
        "{hosts}"
    );
    assert!(
        tcp_probe(&lab.wan, sa("10.99.0.1:8081"), PROBE),
        "the source's own address . port (hash set)"
    );
    assert!(
        tcp_probe(&lab.wan, sa("10.99.0.1:8082"), PROBE),
        "a network containing the source (interval set)"
    );
    assert!(
        !tcp_probe(&lab.wan, sa("10.99.0.1:8080"), PROBE),
        "another address's port"
    );
}
