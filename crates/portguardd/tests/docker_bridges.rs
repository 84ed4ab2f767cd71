//! A Docker network that names an outside interface as its bridge must not
//! make that interface trusted: a real Docker Engine and portguardd in the
//! `host` namespace of a docker_lab, probes from the outside.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::Duration;

use portguard_testkit::daemon::{Daemon, until, write_config};
use portguard_testkit::{BUSYBOX_IMAGE, Dockerd, docker_lab, tcp_probe};

const PROBE: Duration = Duration::from_millis(700);

#[test]
fn a_network_naming_an_outside_veth_as_its_bridge_does_not_open_published_ports() {
    let lab = docker_lab();
    let dockerd = Dockerd::start(&lab.host);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("portguard.toml");
    write_config(&config, "", &dockerd.socket());
    dockerd.docker(&format!(
        "run -d --name db -p 8081:80 {BUSYBOX_IMAGE} /bin/httpd -f -p 80 -h /www"
    ));
    let target: SocketAddr = "10.76.0.1:8081".parse().unwrap();
    until(
        "published port reachable without the guard",
        Duration::from_secs(10),
        || tcp_probe(&lab.wan2, target, PROBE),
    );
    let daemon = Daemon::start(&lab.host, &config, None, &[]);
    until("db seen and blocked", Duration::from_secs(20), || {
        let out = daemon.guardctl(&["ports", "--json"]);
        String::from_utf8_lossy(&out.stdout).contains("\"blocked\"")
    });
    assert!(!tcp_probe(&lab.wan2, target, PROBE), "closed from eth1");

    // Anyone who may use the Docker socket can name a network's bridge.
    // Docker refuses an existing interface that is not a bridge ("existing
    // interface eth1 is not a bridge"), but its word outlives the bridge:
    // here the bridge goes and the outside veth takes its name.
    dockerd.docker("network create -o com.docker.network.bridge.name=outside0 evil");
    until("Docker's bridge seen", Duration::from_secs(20), || {
        lab.host
            .sh("nft list set inet portguard docker_bridges")
            .contains("\"outside0\"")
    });
    lab.host.sh(
        "ip link del outside0 && ip link set eth1 down && ip link set eth1 name outside0 && \
         ip link set outside0 up",
    );
    until(
        "the renamed veth no longer trusted as a Docker bridge",
        Duration::from_secs(20),
        || {
            !lab.host
                .sh("nft list set inet portguard docker_bridges")
                .contains("\"outside0\"")
        },
    );
    until("the veth judged (log)", Duration::from_secs(20), || {
        daemon
            .log()
            .contains("bridge \"outside0\" of network evil: it is a veth, not a bridge")
    });
    let set = lab.host.sh("nft list set inet portguard docker_bridges");
    assert!(!set.contains("\"outside0\""), "{set}");
    until("route back to wan2", Duration::from_secs(5), || {
        lab.host
            .sh("ip route")
            .contains("10.76.0.0/24 dev outside0")
    });
    assert!(
        !tcp_probe(&lab.wan2, target, PROBE),
        "the published port opened to the outside through the renamed veth"
    );
}

/// The kernel's `docker_bridges` set, as nft lists it.
fn trusted_bridges(lab: &portguard_testkit::DockerLab) -> String {
    let out = lab.host.run("nft list set inet portguard docker_bridges");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_docker_bridge_that_turns_into_an_uplink_is_no_longer_trusted_and_trusted_again_when_it_is_not()
{
    let lab = docker_lab();
    let dockerd = Dockerd::start(&lab.host);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("portguard.toml");
    write_config(&config, "", &dockerd.socket());
    dockerd.docker(
        "network create -o com.docker.network.bridge.name=custom0 --subnet 172.31.0.0/24 shop",
    );
    dockerd.docker(&format!(
        "run -d --name web --network shop -p 8081:80 {BUSYBOX_IMAGE} /bin/httpd -f -p 80 -h /www"
    ));
    let daemon = Daemon::start(&lab.host, &config, None, &[]);
    let trusted = |wanted: bool, what: &str| {
        until(what, Duration::from_secs(20), || {
            trusted_bridges(&lab).contains("\"custom0\"") == wanted
        });
    };
    trusted(true, "Docker's bridge trusted as Docker made it");
    let untrusted =
        || -> String { daemon.guardctl_json(&["status"])["untrusted_claims"].to_string() };
    assert_eq!(untrusted(), "[]");

    // Each sign of an uplink, alone, then gone again: the kernel's
    // notifications make the guard judge again, without Docker doing anything.
    let signs = [
        (
            "ip addr add 192.0.2.1/24 dev custom0",
            "ip addr del 192.0.2.1/24 dev custom0",
            "192.0.2.1/24",
        ),
        (
            "ip tuntap add pg-tap0 mode tap && ip link set pg-tap0 master custom0",
            "ip link set pg-tap0 nomaster",
            "pg-tap0",
        ),
        (
            "ip route add default via 172.31.0.254 dev custom0",
            "ip route del default via 172.31.0.254 dev custom0",
            "\"ipv4\"",
        ),
        // Any routing table, not only main.
        (
            "ip -6 route add default via fe80::99 dev custom0 table 100",
            "ip -6 route del default via fe80::99 dev custom0 table 100",
            "\"ipv6\"",
        ),
    ];
    for (make, unmake, named) in signs {
        lab.host.sh(make);
        trusted(false, &format!("refused after `{make}`"));
        let why = untrusted();
        assert!(why.contains(named), "`{make}`: {why}");
        lab.host.sh(unmake);
        trusted(true, &format!("trusted again after `{unmake}`"));
        assert_eq!(untrusted(), "[]", "after `{unmake}`");
    }
}
