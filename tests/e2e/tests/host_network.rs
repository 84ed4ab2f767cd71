//! `network_mode: host` containers listen on the host itself: nothing is
//! published, nothing crosses FORWARD, and the guard cannot cover them.
//! `guardctl ports` and `explain` must say so rather than pretend.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use portguard_e2e::{BUSYBOX_IMAGE, Env, until};

#[test]
fn host_network_containers_are_marked_and_not_pretended_guarded() {
    let env = Env::guarded("");
    env.dockerd.docker(&format!(
        "run -d --name prom --network host --expose 9090 {BUSYBOX_IMAGE} /bin/httpd -f -p 9090 -h /www"
    ));
    env.wait_published("prom");
    assert_eq!(env.verdict(9090), "host-network");
    let explained = env.daemon().guardctl_json(&["explain", "9090"]);
    assert_eq!(explained["answer"], "host-network", "{explained:#}");
    let text = String::from_utf8_lossy(&env.daemon().guardctl(&["ports"]).stdout).into_owned();
    assert!(text.contains("host-network (not coverable"), "{text}");
    // An empty allowlist, and yet it answers: only the host's INPUT
    // firewall can close it, which is exactly what the verdict says.
    // (Waited for: the container runs before its httpd listens.)
    until(
        "a host-network listener answers, outside the guard's reach",
        Duration::from_secs(10),
        || env.open_from_wan("10.77.0.1:9090"),
    );
}
