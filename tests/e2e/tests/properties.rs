//! SPEC's security properties, each proved the way an attacker and an
//! administrator see them: a real dockerd publishes ports, portguardd
//! guards them, and an outside namespace connects over IPv4 and IPv6.
//! Test names carry the property they prove.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use portguard_e2e::{
    DockerdOptions, Env, IPV6_FORWARDING_OFF, docker_lab, ipv6_bridge_args, sa, tcp_probe,
    tcp_server, until,
};

#[test]
fn p0_without_the_guard_a_published_port_bypasses_an_input_policy_of_drop() {
    let env = Env::new();
    env.lab.host.sh(
        "nft -f - <<'EOF'
table inet hostfw {
  chain input { type filter hook input priority filter; policy drop; ct state established,related accept; iif lo accept; }
}
EOF",
    );
    env.web("db", &["27017:80"], "");
    assert!(
        env.open_from_wan("10.77.0.1:27017"),
        "the hole portguard exists for: DNAT forwards around INPUT"
    );
}

#[test]
fn p1_only_allowlisted_published_ports_are_reachable_ipv4_and_ipv6() {
    let env = Env::guarded("[[allow]]\nport = 8080\n[[allow]]\nport = \"9000-9001\"\n");
    env.web("web", &["8080:80"], "");
    // A published port is never taken for the Docker API (Docker 28+ open
    // its socket in dockerd and hand it to docker-proxy; dockerd may hold
    // its copy for seconds, and the API's chain would then judge 8080).
    // Each netfilter change makes the guard look at the listeners again.
    for _ in 0..20 {
        env.lab
            .host
            .sh("nft add table inet pgpoke && nft delete table inet pgpoke");
        std::thread::sleep(std::time::Duration::from_millis(150));
        let status = env.status();
        let api = status["docker_api"].as_array().cloned().unwrap_or_default();
        assert!(
            api.iter().all(|l| l["port"] != 8080),
            "8080 taken for the Docker API: {status:#}"
        );
    }
    env.dockerd.docker(&format!(
        "run -d --name ranged -p 9000-9001:80-81 {} /bin/sh -c 'httpd -p 81 -h /www; exec httpd -f -p 80 -h /www'",
        portguard_e2e::BUSYBOX_IMAGE
    ));
    env.wait_published("ranged");
    env.web("db", &["8081:80"], "");
    // Ranges: Docker expands them into one binding per port.
    assert_eq!(env.verdict(9000), "allowed");
    assert_eq!(env.verdict(9001), "allowed");
    assert_eq!(env.verdict(8081), "blocked");
    assert!(
        env.open_from_wan("10.77.0.1:8080"),
        "allowlisted port, IPv4 (DNAT path)"
    );
    assert!(
        !env.open_from_wan("10.77.0.1:8081"),
        "unlisted port, IPv4 (DNAT path)"
    );
    assert!(
        env.open_from_wan("10.77.0.1:9001"),
        "a port of an allowlisted range"
    );
    assert!(
        env.open_from_wan("[fd00:77::1]:8080"),
        "allowlisted port, IPv6 (userland proxy)"
    );
    assert!(
        !env.open_from_wan("[fd00:77::1]:8081"),
        "unlisted port, IPv6 (userland proxy)"
    );
    // Listing the container port opens nothing.
    env.reload("[[allow]]\nport = 80\n");
    assert!(
        !env.open_from_wan("10.77.0.1:8080"),
        "80 listed, 8080 must stay closed"
    );
}

#[test]
fn p1_from_cidrs_admit_only_listed_sources() {
    let env = Env::guarded("[[allow]]\nport = 8080\nfrom = [\"10.77.0.0/24\", \"fd00:76::/64\"]\n");
    env.web("web", &["8080:80"], "");
    assert!(env.open_from_wan("10.77.0.1:8080"), "listed source network");
    assert!(
        !env.open_from_wan2("10.76.0.1:8080"),
        "another source is refused"
    );
    env.assert_listed_source_reaches(
        &env.lab.wan2,
        "fd00:76::2",
        "[fd00:76::1]:8080",
        "listed IPv6 source network",
    );
    assert!(
        !env.open_from_wan("[fd00:77::1]:8080"),
        "unlisted IPv6 source"
    );
}

/// Issue 19.3. Docker 28 and later open a published port's socket in
/// dockerd and hand it to docker-proxy once that has started, which takes
/// seconds on a loaded host. A look at dockerd's listeners in between took
/// the port for the Docker API, whose chain admits only entries with a
/// `from`: a listed port refused IPv6 over docker-proxy until the next
/// look (10 of 10 starts with docker-proxy 1 s late; 16 of 60 on a host at
/// load 8 for `from` entries given as networks, before the API's chain
/// consulted them). Here docker-proxy always starts 1 s late.
#[test]
fn p1_a_published_port_held_by_dockerd_until_docker_proxy_starts_is_not_the_api() {
    let dir = tempfile::tempdir().unwrap();
    let mut env = Env::with_dockerd(
        docker_lab(),
        DockerdOptions {
            args: vec![portguard_e2e::slow_docker_proxy(dir.path(), 1)],
            ..DockerdOptions::default()
        },
    );
    env.start_guard("[[allow]]\nport = 8080\n");
    for start in 0..3 {
        env.web("web", &["8080:80", "8081:80"], "");
        let status = env.status();
        let api = status["docker_api"].as_array().cloned().unwrap_or_default();
        assert!(
            api.iter().all(|l| l["port"] != 8080 && l["port"] != 8081),
            "start {start}: a published port taken for the Docker API: {status:#}"
        );
        assert!(
            env.open_from_wan("[fd00:77::1]:8080"),
            "start {start}: listed port, IPv6 (docker-proxy)"
        );
        assert!(
            !env.open_from_wan("[fd00:77::1]:8081"),
            "start {start}: unlisted port, IPv6 (docker-proxy)"
        );
        env.dockerd.docker("rm -f web");
    }
}

#[test]
fn p1_container_entries_local_only_bindings_and_custom_bridge_names() {
    let env = Env::guarded("[[allow]]\ncontainer = \"shop\"\n");
    env.dockerd
        .docker("network create -o com.docker.network.bridge.name=pgshop0 shopnet");
    env.web("shop", &["8085:80"], "--network shopnet");
    env.web("other", &["8086:80"], "--network shopnet");
    env.web("cache", &["127.0.0.1:8087:80"], "");
    assert_eq!(env.verdict(8085), "allowed");
    assert_eq!(env.verdict(8086), "blocked");
    assert_eq!(env.verdict(8087), "local-only");
    assert!(
        env.open_from_wan("10.77.0.1:8085"),
        "allowed by container name, custom bridge"
    );
    assert!(
        !env.open_from_wan("10.77.0.1:8086"),
        "unlisted container on the custom bridge"
    );
    assert!(!env.open_from_wan("10.77.0.1:8087"), "loopback binding");
    let bridges = env
        .lab
        .host
        .sh("nft list set inet portguard docker_bridges");
    assert!(bridges.contains("\"pgshop0\""), "{bridges}");
    // Issue 22: a misspelt name opened nothing, silently. Now the reload
    // and status say so, with the nearest name.
    env.write_config("[[allow]]\ncontainer = \"shpo\"\n");
    let out = env.daemon().guardctl(&["reload"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("container shpo") && stderr.contains("did you mean \"shop\"?"),
        "{stderr}"
    );
    let status = env.status();
    assert_eq!(status["unmatched"][0]["did_you_mean"], "shop", "{status}");
    assert_eq!(env.verdict(8085), "blocked");
}

#[test]
fn p2_established_connections_and_container_egress_are_untouched() {
    let env = Env::guarded("[[allow]]\nport = 8080\n");
    tcp_server(&env.lab.wan, 7070, "outside\n");
    // Container egress: a container reaches the outside and the reply flows back.
    env.dockerd.docker(&format!(
        "run -d --name client {} /bin/sleep 600",
        portguard_e2e::BUSYBOX_IMAGE
    ));
    let reply = env
        .dockerd
        .docker("exec client /bin/sh -c 'echo | nc -w 2 10.77.0.2 7070'");
    assert_eq!(reply.trim(), "outside", "container egress");
    // An established connection survives a reload that changes nothing for it.
    env.web("web", &["8080:80"], "");
    let stream = env
        .lab
        .wan
        .enter(|| std::net::TcpStream::connect("10.77.0.1:8080").unwrap());
    env.reload("[[allow]]\nport = 8080\n[[allow]]\nport = 9999\n");
    std::io::Write::write_all(&mut &stream, b"GET / HTTP/1.0\r\n\r\n").unwrap();
    let mut answer = String::new();
    std::io::Read::read_to_string(&mut &stream, &mut answer).unwrap();
    assert!(answer.contains("hello from a container"), "{answer}");
}

#[test]
fn p3_the_host_itself_and_trusted_interfaces_are_untouched() {
    let env = Env::guarded("[guard]\ntrusted_interfaces = [\"eth1\"]\n");
    env.web("db", &["8081:80"], "");
    assert!(!env.open_from_wan("10.77.0.1:8081"), "untrusted eth0");
    assert!(env.open_from_wan2("10.76.0.1:8081"), "trusted eth1");
    assert!(
        tcp_probe(&env.lab.host, sa("10.77.0.1:8081"), portguard_e2e::PROBE),
        "from the host itself"
    );
    // Between containers.
    let ip = env
        .dockerd
        .docker("inspect -f '{{.NetworkSettings.IPAddress}}' db");
    env.dockerd.docker(&format!(
        "run -d --name peer {} /bin/sleep 600",
        portguard_e2e::BUSYBOX_IMAGE
    ));
    let page = env.dockerd.docker(&format!(
        "exec peer /bin/sh -c 'printf \"GET / HTTP/1.0\\r\\n\\r\\n\" | nc -w 2 {} 80'",
        ip.trim()
    ));
    assert!(
        page.contains("hello from a container"),
        "container to container: {page}"
    );
}

#[test]
fn p4_scope_containers_leaves_routing_alone_scope_all_does_not() {
    let env = Env::guarded("");
    tcp_server(&env.lab.wan2, 7000, "routed\n");
    assert!(
        env.open_from_wan("10.76.0.2:7000"),
        "scope containers: the host still routes"
    );
    env.reload("[guard]\nscope = \"all\"\n");
    assert!(
        !env.open_from_wan("10.76.0.2:7000"),
        "scope all: unlisted routed connection dropped"
    );
    env.reload("[guard]\nscope = \"all\"\n[[allow]]\nport = 7000\n");
    assert!(
        env.open_from_wan("10.76.0.2:7000"),
        "scope all: allowlisted routed port"
    );
}

#[test]
fn p5_tampering_is_undone_and_the_exposure_window_is_measured() {
    // The tier whose tables anybody may delete: the one that restores.
    let env = Env::guarded("[guard]\nprotection = \"twin\"\n[[allow]]\nport = 8080\n");
    env.web("web", &["8080:80"], "--restart always");
    env.web("db", &["8081:80"], "--restart always");
    let host = &env.lab.host;
    let table_back = || host.run("nft list table inet portguard").status.success();

    // The window is measured from the kernel's own change notifications:
    // from the commit that deleted the table to the one that restored it.
    let (tx, rx) = std::sync::mpsc::channel();
    let mut monitor = host.enter(|| portguard_nft::Monitor::open().unwrap());
    std::thread::spawn(move || {
        while let Ok(event) = monitor.next_event() {
            if tx.send((Instant::now(), event)).is_err() {
                return;
            }
        }
    });
    let mut windows = Vec::new();
    for _ in 0..50 {
        host.sh("nft delete table inet portguard");
        let mut deleted_at = None;
        while let Ok((at, event)) = rx.recv_timeout(Duration::from_secs(5)) {
            let portguard_nft::MonitorEvent::Change(change) = event else {
                continue;
            };
            if !change.may_touch_our_table() {
                continue;
            }
            match (change.process.as_str(), deleted_at) {
                ("nft", None) => deleted_at = Some(at),
                // The daemon's loop, or its monitor thread
                // (`portguardd-mon`) recreating the copy at once.
                (process, Some(t0)) if process.starts_with("portguardd") => {
                    windows.push(at - t0);
                    break;
                }
                _ => {}
            }
        }
        until("table restored", Duration::from_secs(5), table_back);
    }
    assert_eq!(
        windows.len(),
        50,
        "every deletion was followed by a restore"
    );
    windows.sort();
    let pct = |p: usize| windows[(windows.len() * p / 100).min(windows.len() - 1)];
    println!(
        "P5 exposure window, `nft delete table` commit to restore commit (50 runs): median {:?}, p99 {:?}, max {:?}",
        pct(50),
        pct(99),
        windows[windows.len() - 1]
    );
    let status = env.status();
    assert!(status["restores"].as_u64().unwrap() >= 50, "{status}");
    assert!(status["last_restore_ms"].as_f64().is_some(), "{status}");
    // The standby copy guarded while each restore ran, and a recreated
    // forward chain fails closed: closed at once.
    assert!(!env.open_from_wan("10.77.0.1:8081"), "after the restores");

    host.sh("iptables -F");
    assert!(!env.open_from_wan("10.77.0.1:8081"), "after iptables -F");
    assert!(
        env.open_from_wan("10.77.0.1:8080"),
        "allowlisted after iptables -F"
    );

    // The whole ruleset gone, then Docker restarts and writes its rules again.
    host.sh("nft flush ruleset");
    until(
        "table restored after flush ruleset",
        Duration::from_secs(5),
        table_back,
    );
    let mut dockerd = env.dockerd;
    dockerd.restart();
    until("containers back", Duration::from_secs(30), || {
        tcp_probe(&env.lab.wan, sa("10.77.0.1:8080"), portguard_e2e::PROBE)
    });
    assert!(
        !tcp_probe(&env.lab.wan, sa("10.77.0.1:8081"), portguard_e2e::PROBE),
        "unlisted after flush ruleset + dockerd restart"
    );
    drop(env.daemon);
    drop(dockerd);
}

#[test]
fn p5_protection_is_installed_before_docker_and_outlives_the_daemon() {
    let lab = portguard_testkit::docker_lab();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("portguard.toml");
    let docker_socket_of_later = dir.path().join("later-docker.sock");
    portguard_testkit::daemon::write_config(
        &config,
        "[[allow]]\nport = 8080\n",
        &docker_socket_of_later,
    );
    let notify_path = dir.path().join("notify.sock");
    let notify = std::os::unix::net::UnixDatagram::bind(&notify_path).unwrap();
    let daemon =
        portguard_testkit::daemon::Daemon::start(&lab.host, &config, Some(&notify_path), &[]);
    portguard_testkit::daemon::wait_notify(&notify, "READY=1", Duration::from_secs(10));
    assert!(
        lab.host
            .run("nft list table inet portguard")
            .status
            .success(),
        "installed before Docker"
    );
    assert_eq!(
        daemon.guardctl_json(&["status"])["docker"]["connected"],
        false
    );

    // Docker starts later, at the configured socket.
    let dockerd = portguard_testkit::Dockerd::start(&lab.host);
    std::os::unix::fs::symlink(dockerd.socket(), &docker_socket_of_later).unwrap();
    until("docker connected", Duration::from_secs(15), || {
        daemon.guardctl_json(&["status"])["docker"]["connected"] == true
    });
    dockerd.docker(&format!(
        "run -d --name db -p 8081:80 {} /bin/httpd -f -p 80 -h /www",
        portguard_testkit::BUSYBOX_IMAGE
    ));
    assert!(!tcp_probe(
        &lab.wan,
        sa("10.77.0.1:8081"),
        portguard_e2e::PROBE
    ));

    daemon.signal("KILL");
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        !tcp_probe(&lab.wan, sa("10.77.0.1:8081"), portguard_e2e::PROBE),
        "after SIGKILL"
    );
    drop(daemon);
    drop(dockerd);
}

/// The guarded host Docker sets its IPv6 FORWARD drop on: dockerd with an
/// IPv6 bridge, IPv6 forwarding off when it starts (it turns it on, and
/// sets the drop). Docker's first start set it before the guard ran, so
/// it is put back to accept and forwarding off again, as on a host where
/// the guard starts before Docker. `None` on Docker 29 (nftables backend),
/// which sets no such policy.
fn docker_sets_ipv6_drop_on_restart() -> Option<Env> {
    let Some(args) = ipv6_bridge_args() else {
        eprintln!("Docker 29's nftables backend sets no IPv6 FORWARD policy: nothing to undo");
        return None;
    };
    let lab = docker_lab();
    lab.host.sh(IPV6_FORWARDING_OFF);
    let options = DockerdOptions {
        args,
        ..Default::default()
    };
    let mut env = Env::with_dockerd(lab, options);
    assert!(
        env.lab
            .host
            .sh("ip6tables -S FORWARD")
            .contains("-P FORWARD DROP"),
        "Docker sets its IPv6 FORWARD drop"
    );
    env.lab.host.sh(&format!(
        "ip6tables -P FORWARD ACCEPT && {IPV6_FORWARDING_OFF}"
    ));
    env.start_guard("");
    Some(env)
}

#[test]
fn p6_docker_s_ipv6_forward_drop_is_set_back_to_accept_without_opening_containers() {
    let Some(mut env) = docker_sets_ipv6_drop_on_restart() else {
        return;
    };
    tcp_server(&env.lab.wan2, 7001, "v6 routed\n");
    // dockerd restarts (an upgrade, a reboot): it turns IPv6 forwarding on
    // and sets its drop again, by an ip6tables it starts.
    env.dockerd.restart();
    until(
        "Docker's IPv6 FORWARD drop set back to accept",
        Duration::from_secs(15),
        || {
            let status = env.status();
            status["ipv6_forward_policy"] == "accept"
                && status["ipv6_policy_restores"].as_u64() >= Some(1)
        },
    );
    let log = env.daemon().log();
    assert!(log.contains("set by Docker ("), "{log}");
    env.web("db", &["8081:80"], "");
    assert!(
        env.open_from_wan("[fd00:76::2]:7001"),
        "IPv6 routing through the host works again"
    );
    assert!(
        !env.open_from_wan("[fd00:77::1]:8081"),
        "P1 still holds for IPv6"
    );
}

/// How often the monitor names Docker as the setter of its drop (the
/// `ip6tables` dockerd starts commits and exits; it is read from `/proc`
/// before dockerd reaps it). Not a pass/fail test: prints the count.
/// `PG_DOCKER_STARTS` starts (default 20).
#[test]
#[ignore = "measurement: cargo test -p portguard-e2e --test properties -- --ignored --nocapture"]
fn measure_how_often_docker_is_named_as_the_setter_of_its_ipv6_drop() {
    let Some(mut env) = docker_sets_ipv6_drop_on_restart() else {
        return;
    };
    let starts: u64 = std::env::var("PG_DOCKER_STARTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let mut outcomes = std::collections::BTreeMap::<String, u64>::new();
    for i in 0..starts {
        let before = env.status()["ipv6_policy_restores"].as_u64().unwrap();
        env.dockerd.restart();
        let mut outcome = String::new();
        until("the guard decided", Duration::from_secs(20), || {
            let status = env.status();
            if status["ipv6_policy_restores"].as_u64() > Some(before) {
                // The last restore's words say whether it was named.
                let log = env.daemon().log();
                let last = log
                    .lines()
                    .rfind(|l| l.contains("set it back to accept"))
                    .unwrap_or_default();
                outcome = if last.contains("set by Docker (") {
                    "named Docker: undone at once".into()
                } else {
                    "committer gone, came while Docker was away: undone when it was back".into()
                };
            } else if status["docker"]["connected"] == true
                && let Some(drop) = status["ipv6_forward_drops"].get(0)
            {
                outcome = format!("left: {}", drop["set_by"]["kind"]);
            }
            !outcome.is_empty()
        });
        eprintln!("start {}: {outcome}", i + 1);
        *outcomes.entry(outcome).or_default() += 1;
        env.lab.host.sh(&format!(
            "ip6tables -P FORWARD ACCEPT && {IPV6_FORWARDING_OFF}"
        ));
    }
    eprintln!(
        "Docker {} ({starts} starts): {outcomes:?}",
        env.dockerd.version()
    );
}

#[test]
fn audit_mode_drops_nothing_and_counts_what_it_would_have() {
    let env = Env::guarded("[guard]\nmode = \"audit\"\n");
    env.web("db", &["8081:80"], "");
    assert!(
        env.open_from_wan("10.77.0.1:8081"),
        "audit mode drops nothing"
    );
    let status = env.status();
    assert_eq!(status["mode"], "audit");
    assert!(status["blocked_packets"].as_u64().unwrap() >= 1, "{status}");
    // What answers from outside is called open, everywhere (issue 22: it
    // was "closed" and "blocked" on the recommended first install).
    assert_eq!(env.verdict(8081), "open-in-audit");
    let explained = env.daemon().guardctl_json(&["explain", "8081"]);
    assert_eq!(explained["answer"], "open-in-audit", "{explained}");
    assert_eq!(explained["mode"], "audit", "{explained}");
    assert_eq!(
        status["published"][0]["verdict"], "open-in-audit",
        "{status}"
    );
    // One connection counts once, on the default bridge and on a
    // user-defined network (`br-<id>` is in `judged_bridges` and matches
    // `br-*`: before, both jumps judged it, and it counted twice).
    env.dockerd.docker("network create usernet");
    env.web("api", &["9000:80"], "--network usernet");
    let counted = || env.status()["blocked_packets"].as_u64().unwrap();
    for target in ["10.77.0.1:8081", "10.77.0.1:9000"] {
        let before = counted();
        assert!(env.open_from_wan(target), "audit mode drops nothing");
        assert_eq!(counted() - before, 1, "one connection to {target}");
    }
}

#[test]
fn p10_removing_a_port_ends_the_live_connections_it_admitted() {
    use std::io::{Read, Write};
    let env = Env::guarded("[[allow]]\nport = 8090\n[[allow]]\nport = 8091\n");
    for (name, port) in [("gone", 8090), ("kept", 8091)] {
        env.dockerd.docker(&format!(
            "run -d --name {name} -p {port}:80 {} /bin/nc -ll -p 80 -e /bin/cat",
            portguard_e2e::BUSYBOX_IMAGE
        ));
        env.wait_published(name);
    }
    let connect = |target: &'static str| {
        env.lab.wan.enter(move || {
            let s =
                std::net::TcpStream::connect_timeout(&sa(target), portguard_e2e::PROBE).unwrap();
            s.set_read_timeout(Some(portguard_e2e::PROBE)).unwrap();
            s
        })
    };
    let echoes = |mut s: &std::net::TcpStream, text: &[u8]| {
        let mut buf = [0u8; 16];
        s.write_all(text).is_ok() && matches!(s.read(&mut buf), Ok(n) if &buf[..n] == text)
    };
    let gone = connect("10.77.0.1:8090");
    let kept = connect("10.77.0.1:8091");
    assert!(
        echoes(&gone, b"a") && echoes(&kept, b"a"),
        "both connections work"
    );

    env.reload("[[allow]]\nport = 8091\n");
    assert!(
        !echoes(&gone, b"b"),
        "the connection to the removed port was ended"
    );
    assert!(
        echoes(&kept, b"b"),
        "the connection to a still allowed port lives on"
    );
    assert!(
        !env.open_from_wan("10.77.0.1:8090"),
        "and new ones are refused"
    );
    assert!(env.status()["ended_connections"].as_u64().unwrap() >= 1);
}

#[test]
fn p1_udp_is_judged_like_tcp_ipv4_and_ipv6() {
    let mut env = Env::new();
    for (name, port) in [("dns", 5353), ("other", 5354)] {
        env.dockerd.docker(&format!(
            "run -d --name {name} -p {port}:53/udp {} /bin/udp-echo 53",
            portguard_e2e::BUSYBOX_IMAGE
        ));
    }
    let udp = |env: &Env, target: &str| {
        portguard_testkit::udp_probe(&env.lab.wan, sa(target), portguard_e2e::PROBE)
    };
    // The echo server may still be starting (`docker run` returns first).
    until(
        "without the guard the UDP port is open",
        Duration::from_secs(10),
        || udp(&env, "10.77.0.1:5354"),
    );
    env.start_guard("[[allow]]\nport = 5353\nproto = \"udp\"\n");
    env.wait_published("other");
    let udp = |target: &str| udp(&env, target);
    assert!(udp("10.77.0.1:5353"), "allowlisted UDP port, IPv4");
    assert!(!udp("10.77.0.1:5354"), "unlisted UDP port, IPv4");
    assert!(
        udp("[fd00:77::1]:5353"),
        "allowlisted UDP port, IPv6 (userland proxy)"
    );
    assert!(
        !udp("[fd00:77::1]:5354"),
        "unlisted UDP port, IPv6 (userland proxy)"
    );
    assert_eq!(env.verdict(5354), "blocked");
}

#[test]
fn p5_owned_persistent_the_kernel_refuses_tampering_so_there_is_no_window() {
    let env = Env::guarded("[guard]\nprotection = \"owned-persistent\"\n[[allow]]\nport = 8080\n");
    env.web("web", &["8080:80"], "--restart always");
    env.web("db", &["8081:80"], "--restart always");
    let host = &env.lab.host;
    assert!(
        !host.run("nft delete table inet portguard").status.success(),
        "delete refused"
    );
    assert!(
        !host
            .run("nft add rule inet portguard forward accept")
            .status
            .success(),
        "rule refused"
    );
    host.sh("nft flush ruleset");
    assert!(
        host.sh("nft list tables").contains("table inet portguard"),
        "flush ruleset leaves it"
    );
    // `portguardd --remove-rules` from another process is refused while it runs.
    let (daemon_bin, _) = portguard_testkit::daemon::binaries();
    let out = host.run(&format!("{} --remove-rules", daemon_bin.display()));
    assert!(!out.status.success());
    // Docker comes back and rewrites its rules; nothing had to be restored.
    let mut dockerd = env.dockerd;
    dockerd.restart();
    until("web back", Duration::from_secs(30), || {
        tcp_probe(&env.lab.wan, sa("10.77.0.1:8080"), portguard_e2e::PROBE)
    });
    assert!(!tcp_probe(
        &env.lab.wan,
        sa("10.77.0.1:8081"),
        portguard_e2e::PROBE
    ));
    let status = env.daemon.as_ref().unwrap().guardctl_json(&["status"]);
    assert_eq!(status["restores"], 0, "{status}");
    drop(env.daemon);
    drop(dockerd);
}
