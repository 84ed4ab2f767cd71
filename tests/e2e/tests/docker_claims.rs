//! What Docker claims is not what the guard trusts (issue 18, items 2 and
//! 5): a real dockerd and portguardd in the `host` namespace, an attacker
//! who may use the Docker socket (or publish an image), probes from `wan`.
//!
//! - The uplink-bridge attack: on a host whose uplink is a bridge (KVM,
//!   Proxmox, LXD), a Docker network that names that bridge
//!   (`com.docker.network.bridge.name`) must not make the outside trusted.
//! - The image-label attack: compose and Swarm labels that come from the
//!   image must not make a plain `docker run` a compose service (or a Swarm
//!   task) that an allow entry names.
//!
//! Exposure is counted as connections that got through (a prober knocking
//! every ~2 ms), not only as what `guardctl` says.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use portguard_e2e::{Env, docker_lab, sa, tcp_server, until};
use portguard_testkit::{BUSYBOX_IMAGE, Prober};
use serde_json::Value;

/// The refused claims in `guardctl status --json` naming `what`.
fn untrusted(env: &Env, what: &str) -> Vec<Value> {
    env.status()["untrusted_claims"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|c| c.to_string().contains(what))
        .collect()
}

/// Stops the probers, prints what each counted; returns the targets that
/// let connections through, with the counts.
fn finish_all(probers: Vec<(&str, Prober)>) -> Vec<String> {
    let mut through = Vec::new();
    for (target, prober) in probers {
        let (attempts, connected) = prober.finish();
        println!("{target}: {connected} of {attempts} connection attempts got through");
        assert!(attempts > 100, "{target}: the prober ran ({attempts})");
        if connected > 0 {
            through.push(format!("{target}: {connected} of {attempts}"));
        }
    }
    through
}

/// Whether `check` holds within `timeout` (polled).
fn eventually(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let started = std::time::Instant::now();
    while started.elapsed() < timeout {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

fn status_text(env: &Env) -> String {
    String::from_utf8_lossy(&env.daemon().guardctl(&["status"]).stdout).into_owned()
}

#[test]
fn p1_a_docker_network_that_reuses_the_uplink_bridge_opens_nothing() {
    let lab = docker_lab();
    // The host's uplink is a bridge: the outside veth is its port, and the
    // bridge carries the host's outside addresses and its default routes.
    lab.host.sh(
        "ip addr flush dev eth0 && ip link add uplink0 type bridge && \
         ip link set eth0 master uplink0 && ip link set uplink0 up && \
         ip addr add 10.77.0.1/24 dev uplink0 && ip addr add fd00:77::1/64 dev uplink0 nodad && \
         ip route add default via 10.77.0.2 && ip -6 route add default via fd00:77::2",
    );
    let mut env = Env::on(lab);
    // The host itself answers on the uplink: a probe that fails later
    // fails because of the guard, not because the attack broke the uplink.
    tcp_server(&env.lab.host, 9999, "host\n");
    // An unlisted port on Docker's default network, knocked on from before
    // the attack until after it.
    env.start_guard("");
    env.web("db", &["8095:80"], "");
    for target in ["10.77.0.1:8095", "[fd00:77::1]:8095"] {
        assert!(!env.open_from_wan(target), "{target} closed before");
    }
    let mut probers: Vec<(&str, Prober)> = ["10.77.0.1:8095", "[fd00:77::1]:8095"]
        .into_iter()
        .map(|t| (t, Prober::start(&env.lab.wan, sa(t))))
        .collect();
    // The port of a container about to start on the attacker's network,
    // counted but not asserted: until the guard has seen a new container,
    // its docker-proxy port is in no `published_*` set and the input path
    // lets it through, whatever the bridge (a gap of its own, the same on
    // docker0 over IPv6, that trusting bridges has nothing to do with).
    let new_port = Prober::start(&env.lab.wan, sa("10.77.0.1:8096"));

    // Whoever may use the Docker socket names the uplink as a network's
    // bridge, with the LAN as its subnet and the host as its gateway, so
    // that Docker reuses the bridge and leaves its address in place.
    env.dockerd.docker(
        "network create -o com.docker.network.bridge.name=uplink0 \
         --subnet 10.77.0.0/24 --gateway 10.77.0.1 --ip-range 10.77.0.128/25 \
         --ipv6 --subnet fd00:77::/64 --gateway fd00:77::1 --ip-range fd00:77::8000/113 lan",
    );
    // A container on it: Docker does not DNAT what arrives on the
    // container's own bridge, so from the uplink its port is reached
    // through docker-proxy (the input path).
    env.web("shop", &["8096:80"], "--network lan");
    let (attempts, connected) = new_port.finish();
    for host in ["10.77.0.1:9999", "[fd00:77::1]:9999"] {
        assert!(env.open_from_wan(host), "the uplink still carries {host}");
    }
    println!(
        "10.77.0.1:8096 from `docker run` until the guard saw the container: \
         {connected} of {attempts} connection attempts got through"
    );
    for target in ["10.77.0.1:8096", "[fd00:77::1]:8096"] {
        probers.push((target, Prober::start(&env.lab.wan, sa(target))));
    }
    // Asserted after the count, so that a failure says what got through.
    let refused = eventually(Duration::from_secs(20), || {
        !untrusted(&env, "uplink0").is_empty()
    });
    // Long enough for several resyncs and link events.
    std::thread::sleep(Duration::from_secs(3));
    let through = finish_all(probers);
    let set = env
        .lab
        .host
        .sh("nft list set inet portguard docker_bridges");
    assert!(
        through.is_empty(),
        "connections got through from the outside: {through:?}; docker_bridges: {set}"
    );
    assert!(!set.contains("\"uplink0\""), "{set}");
    assert!(refused, "the uplink named as refused in status");
    let claim = &untrusted(&env, "uplink0")[0];
    let why = claim.to_string();
    assert!(why.contains("default_route"), "{claim:#}");
    // Only the uplink: Docker's own bridge, on the same host with the same
    // default routes (elsewhere), is still Docker's.
    assert_eq!(
        env.status()["untrusted_claims"].as_array().unwrap().len(),
        1,
        "{:#}",
        env.status()["untrusted_claims"]
    );
    let text = status_text(&env);
    assert!(
        text.contains("uplink0") && text.contains("default route"),
        "{text}"
    );
}

#[test]
fn p1_compose_labels_from_an_image_do_not_make_a_plain_docker_run_a_compose_service() {
    let mut env = Env::new();
    // An image whose author forged every label compose sets, and those of
    // a Swarm task: a `docker commit` with LABEL changes needs no registry.
    env.dockerd
        .docker(&format!("create --name base {BUSYBOX_IMAGE} /bin/true"));
    let forged = [
        "com.docker.compose.project=shop",
        "com.docker.compose.service=web",
        "com.docker.compose.config-hash=0123456789abcdef",
        "com.docker.compose.container-number=1",
        "com.docker.compose.oneoff=False",
        "com.docker.swarm.service.name=websvc",
        "com.docker.swarm.service.id=abcdefabcdefabcdefabcdefa",
        "com.docker.swarm.task.id=0123456789abcdefghijklmno",
        "com.docker.swarm.task.name=websvc.1.0123456789abcdefghijklmno",
    ];
    let changes: Vec<String> = forged
        .iter()
        .map(|l| format!("--change 'LABEL {l}'"))
        .collect();
    env.dockerd
        .docker(&format!("commit {} base shopimg", changes.join(" ")));
    env.start_guard(
        "[[allow]]\ncontainer = \"shop/web\"\n[[allow]]\ncontainer = \"websvc\"\n\
         [[allow]]\ncontainer = \"shop/api\"\n",
    );
    // The attack: a plain `docker run` of that image.
    env.dockerd
        .docker("run -d --name pwn -p 15432:80 shopimg /bin/httpd -f -p 80 -h /www");
    // What compose's create call does: the labels come with the request
    // (compose sets them itself, so they are not the image's).
    env.dockerd.docker(
        "run -d --name shop-api-1 -p 15433:80 \
         --label com.docker.compose.project=shop --label com.docker.compose.service=api \
         --label com.docker.compose.config-hash=feedfacefeedface \
         --label com.docker.compose.container-number=1 --label com.docker.compose.oneoff=False \
         shopimg /bin/httpd -f -p 80 -h /www",
    );
    for name in ["pwn", "shop-api-1"] {
        env.wait_serving(name);
        env.wait_published(name);
    }
    let refused = eventually(Duration::from_secs(10), || {
        !untrusted(&env, "pwn").is_empty()
    });
    let probers: Vec<(&str, Prober)> = ["10.77.0.1:15432", "[fd00:77::1]:15432"]
        .iter()
        .map(|t| (*t, Prober::start(&env.lab.wan, sa(t))))
        .collect();
    std::thread::sleep(Duration::from_secs(2));
    let through = finish_all(probers);
    let ports = env.daemon().guardctl_json(&["ports"]);
    let rows: Vec<&Value> = ports
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["container"] == "pwn")
        .collect();
    assert!(
        through.is_empty(),
        "the image's labels opened its port: {through:?}; {rows:#?}"
    );
    assert!(!rows.is_empty());
    for row in &rows {
        assert_eq!(row["verdict"], "blocked", "{row:#}");
        assert!(row["compose"].is_null(), "{row:#}");
        assert!(row["service"].is_null(), "{row:#}");
    }
    let text = String::from_utf8_lossy(&env.daemon().guardctl(&["ports"]).stdout).into_owned();
    assert!(!text.contains("shop/web"), "{text}");
    // The refusal says why.
    assert!(refused, "the forged identity named as refused in status");
    let refused = untrusted(&env, "pwn");
    assert!(
        refused.iter().any(|c| c.to_string().contains("shop/web"))
            && refused.iter().any(|c| c.to_string().contains("websvc")),
        "{refused:#?}"
    );
    assert!(status_text(&env).contains("pwn"));
    // Compose's own labels still count.
    assert_eq!(env.verdict(15433), "allowed");
    assert!(env.open_from_wan("10.77.0.1:15433"), "shop/api over IPv4");
    assert!(
        env.open_from_wan("[fd00:77::1]:15433"),
        "shop/api over IPv6"
    );
}

#[test]
fn p1_on_a_swarm_manager_a_container_claiming_a_task_of_a_service_is_asked_about() {
    let mut env = Env::new();
    if portguard_testkit::engine().nftables_backend() {
        // Docker 29's nftables backend refuses Swarm (see swarm.rs).
        return;
    }
    env.dockerd
        .docker("swarm init --advertise-addr 10.77.0.1 --listen-addr 10.77.0.1:2377");
    env.dockerd.docker(&format!(
        "service create --detach --no-resolve-image --name websvc \
         --publish published=8081,target=80,mode=host {BUSYBOX_IMAGE} /bin/httpd -f -p 80 -h /www"
    ));
    let task = || {
        env.dockerd
            .docker("service ps --filter desired-state=running -q --no-trunc websvc")
            .trim()
            .to_string()
    };
    until("websvc's task running", Duration::from_secs(60), || {
        !task().is_empty()
            && env
                .dockerd
                .docker("service ps --format '{{.CurrentState}}' websvc")
                .contains("Running")
    });
    let service_id = env.dockerd.docker("service inspect -f '{{.ID}}' websvc");
    // Labels set by whoever creates the container (a compose file, say)
    // rather than by the image: only Swarm can tell they are not its task.
    env.dockerd.docker(&format!(
        "run -d --name impostor -p 8082:80 --label com.docker.swarm.service.name=websvc \
         --label com.docker.swarm.service.id={} --label com.docker.swarm.task.id={} \
         {BUSYBOX_IMAGE} /bin/httpd -f -p 80 -h /www",
        service_id.trim(),
        task()
    ));
    env.wait_serving("impostor");
    env.start_guard("[[allow]]\ncontainer = \"websvc\"\n");
    env.wait_published("impostor");
    until("the impostor refused", Duration::from_secs(10), || {
        !untrusted(&env, "impostor").is_empty()
    });
    let why = untrusted(&env, "impostor")[0].to_string();
    assert!(why.contains("the task runs in container"), "{why}");
    assert_eq!(env.verdict(8082), "blocked");
    assert!(!env.open_from_wan("10.77.0.1:8082"), "the impostor, IPv4");
    assert!(
        !env.open_from_wan("[fd00:77::1]:8082"),
        "the impostor, IPv6"
    );
    // The real task still counts.
    assert_eq!(env.verdict(8081), "allowed");
    assert!(env.open_from_wan("10.77.0.1:8081"), "websvc's task, IPv4");
}
