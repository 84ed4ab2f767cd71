//! Swarm: `docker swarm init` in the host namespace and services
//! published with `-p`.
//!
//! Ports in `mode=host` are bindings of the task's container and take the
//! same DNAT/FORWARD path as `docker run -p`: traffic is tried for real.
//! Ports of the ingress routing mesh (the default mode) appear only in
//! `GET /services` (Endpoint.Ports); the mesh itself needs IPVS, which the
//! CI machine's kernel does not have (no CONFIG_IP_VS, no modules), so
//! here the mesh's ports are checked as `guardctl ports` lists and judges
//! them, not with traffic (docs/compatibility.md). Docker 29 with its
//! nftables backend refuses `swarm init`; on that engine the test checks
//! the refusal.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use portguard_e2e::{BUSYBOX_IMAGE, Env, until};
use serde_json::Value;

/// `docker service create` of a busybox httpd with `publish`, waiting
/// until its task runs.
fn service(env: &Env, name: &str, publish: &str) {
    env.dockerd.docker(&format!(
        "service create --detach --no-resolve-image --name {name} --publish {publish} {BUSYBOX_IMAGE} /bin/httpd -f -p 80 -h /www"
    ));
    until(
        &format!("service {name} running"),
        Duration::from_secs(60),
        || {
            env.dockerd
                .docker(&format!(
                    "service ps --format '{{{{.CurrentState}}}}' {name}"
                ))
                .contains("Running")
        },
    );
}

fn rows(env: &Env, port: u16) -> Vec<Value> {
    env.daemon()
        .guardctl_json(&["ports"])
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["host_port"] == port)
        .cloned()
        .collect()
}

#[test]
fn swarm_p1_services_unlisted_closed_listed_open_and_listed_by_service_name() {
    let mut env = Env::new();
    if portguard_testkit::engine().nftables_backend() {
        // Docker 29's nftables backend refuses Swarm: there is no Swarm
        // to guard there, and the engine says so.
        let out = std::process::Command::new("docker")
            .env("PATH", portguard_testkit::engine().path_env())
            .args(["-H", &env.dockerd.host(), "swarm", "init"])
            .args(["--advertise-addr", "10.77.0.1"])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains("incompatible with swarm mode"),
            "Docker 29 with --firewall-backend=nftables: {err}"
        );
        return;
    }
    env.dockerd
        .docker("swarm init --advertise-addr 10.77.0.1 --listen-addr 10.77.0.1:2377");
    service(&env, "websvc", "published=8081,target=80,mode=host");
    service(&env, "dbsvc", "published=8082,target=80,mode=host");
    service(&env, "meshsvc", "8083:80");
    until("dbsvc answers", Duration::from_secs(30), || {
        env.open_from_wan("10.77.0.1:8082")
    });

    env.start_guard("[[allow]]\ncontainer = \"websvc\"\n[[allow]]\ncontainer = \"meshsvc\"\n");
    until(
        "the services in guardctl ports",
        Duration::from_secs(15),
        || {
            [8081, 8082, 8083]
                .iter()
                .all(|&p| !rows(&env, p).is_empty())
        },
    );
    // A task container, named by its service.
    for row in rows(&env, 8081) {
        assert_eq!(row["service"], "websvc", "{row:#}");
        assert!(
            row["container"].as_str().unwrap().starts_with("websvc.1."),
            "{row:#}"
        );
        assert_eq!(row["verdict"], "allowed", "{row:#}");
    }
    for row in rows(&env, 8082) {
        assert_eq!(row["verdict"], "blocked", "{row:#}");
    }
    // The routing mesh's port, from GET /services, under the service's name.
    let mesh = rows(&env, 8083);
    assert_eq!(mesh.len(), 1, "{mesh:#?}");
    assert_eq!(mesh[0]["container"], "meshsvc");
    assert_eq!(mesh[0]["service"], "meshsvc");
    assert_eq!(mesh[0]["container_port"], 80);
    assert_eq!(mesh[0]["verdict"], "allowed");
    let text = String::from_utf8_lossy(&env.daemon().guardctl(&["ports"]).stdout).into_owned();
    assert!(text.contains("meshsvc (service)"), "{text}");
    assert!(text.contains("(service websvc)"), "{text}");

    assert!(
        env.open_from_wan("10.77.0.1:8081"),
        "the listed service (container = \"websvc\"), IPv4"
    );
    assert!(
        !env.open_from_wan("10.77.0.1:8082"),
        "the unlisted service, IPv4"
    );
    assert!(
        !env.open_from_wan("[fd00:77::1]:8082"),
        "the unlisted service, IPv6"
    );
    // The mesh's port closes when its entry goes.
    env.reload("[[allow]]\ncontainer = \"websvc\"\n");
    assert_eq!(rows(&env, 8083)[0]["verdict"], "blocked");
}
