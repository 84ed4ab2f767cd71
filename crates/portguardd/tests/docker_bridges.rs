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
            .contains("\"outside0\" is a veth, not a bridge")
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
