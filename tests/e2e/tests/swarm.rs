//! Swarm ingress: `docker swarm init` in the host namespace and services
//! published with `-p` through the routing mesh. The connection is DNATed
//! (nat DOCKER-INGRESS) to the ingress sandbox on `docker_gwbridge`, so it
//! crosses FORWARD into a Docker bridge, where the guard judges it. The
//! ports are the service's (`GET /services` -> Endpoint.Ports), not any
//! container's bindings.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use portguard_e2e::{BUSYBOX_IMAGE, Env, until};

/// `docker service create` of a busybox httpd publishing `port` -> 80,
/// waiting until its task runs.
fn service(env: &Env, name: &str, port: u16) {
    env.dockerd.docker(&format!(
        "service create --detach --no-resolve-image --name {name} -p {port}:80 {BUSYBOX_IMAGE} /bin/httpd -f -p 80 -h /www"
    ));
    until(
        &format!("service {name} running"),
        Duration::from_secs(60),
        || {
            env.dockerd
                .docker(&format!("service ps --format '{{{{.CurrentState}}}}' {name}"))
                .contains("Running")
        },
    );
}

#[test]
fn swarm_p1_service_ports_unlisted_closed_listed_open_and_listed_by_service_name() {
    let mut env = Env::new();
    env.dockerd
        .docker("swarm init --advertise-addr 10.77.0.1 --listen-addr 10.77.0.1:2377");
    service(&env, "websvc", 8081);
    service(&env, "dbsvc", 8082);
    until("the routing mesh answers", Duration::from_secs(30), || {
        env.open_from_wan("10.77.0.1:8082")
    });
    // Without the guard: the unlisted service is open (the hole).
    assert!(env.open_from_wan("10.77.0.1:8082"), "without the guard");

    env.start_guard("[[allow]]\ncontainer = \"websvc\"\n");
    env.wait_published("websvc");
    let ports = env.daemon().guardctl_json(&["ports"]);
    let row = |port: u16| {
        ports
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["host_port"] == port)
            .cloned()
            .unwrap_or_else(|| panic!("{port} in guardctl ports: {ports:#}"))
    };
    let web = row(8081);
    assert_eq!(web["container"], "websvc", "{web:#}");
    assert_eq!(web["service"], true, "{web:#}");
    assert_eq!(web["verdict"], "allowed", "{web:#}");
    assert_eq!(web["container_port"], 80, "{web:#}");
    assert_eq!(row(8082)["verdict"], "blocked");
    let text = String::from_utf8_lossy(&env.daemon().guardctl(&["ports"]).stdout).into_owned();
    assert!(text.contains("websvc (service)"), "{text}");

    assert!(
        env.open_from_wan("10.77.0.1:8081"),
        "the listed service (container = \"websvc\")"
    );
    assert!(
        !env.open_from_wan("10.77.0.1:8082"),
        "the unlisted service"
    );
    // Where the traffic goes: DNAT to the ingress sandbox on docker_gwbridge.
    let nat = env.lab.host.sh("iptables-save -t nat 2>/dev/null || true; nft list ruleset");
    assert!(nat.contains("DOCKER-INGRESS"), "{nat}");
    let bridges = env.lab.host.sh("ip -o link show type bridge");
    assert!(bridges.contains("docker_gwbridge"), "{bridges}");
    // Removing the entry closes the listed one too.
    env.reload("");
    assert!(
        !env.open_from_wan("10.77.0.1:8081"),
        "no entry, the service is closed"
    );
}
