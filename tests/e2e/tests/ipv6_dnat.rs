//! IPv6 published through Docker's ip6tables DNAT (or Docker 29's ip6
//! nftables DNAT), not through docker-proxy: an `--ipv6` network with a
//! ULA subnet, and dockerd with `--userland-proxy=false`, so that an IPv6
//! connection can only have crossed FORWARD after DNAT.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use portguard_e2e::{BUSYBOX_IMAGE, DockerdOptions, Env, docker_lab, until};
use portguard_testkit::engine;

/// ip6tables is experimental before Engine 27 and on by default since.
fn options() -> DockerdOptions {
    let mut args = vec!["--userland-proxy=false".to_string()];
    if engine().major < 27 {
        args.extend(["--experimental".into(), "--ip6tables".into()]);
    }
    DockerdOptions {
        args,
        ..Default::default()
    }
}

#[test]
fn ipv6_dnat_p1_unlisted_closed_listed_open_over_ipv6() {
    let mut env = Env::with_dockerd(docker_lab(), options());
    env.dockerd
        .docker("network create --ipv6 --subnet fd00:d0c::/64 v6net");
    for (name, port) in [("web", 8080), ("db", 27017)] {
        env.dockerd.docker(&format!(
            "run -d --name {name} --network v6net -p {port}:80 {BUSYBOX_IMAGE} /bin/httpd -f -p 80 -h /www"
        ));
    }
    let inspect = env
        .dockerd
        .docker("inspect -f '{{range .NetworkSettings.Networks}}{{.GlobalIPv6Address}}{{end}}' db");
    assert!(
        inspect.trim().starts_with("fd00:d0c:"),
        "db has an IPv6 address: {inspect}"
    );
    until(
        "without the guard 27017 answers over IPv6 (DNAT, no proxy)",
        Duration::from_secs(10),
        || env.open_from_wan("[fd00:77::1]:27017"),
    );
    env.start_guard("[[allow]]\nport = 8080\n");
    env.wait_published("db");
    assert!(
        env.open_from_wan("[fd00:77::1]:8080"),
        "allowlisted port, IPv6 DNAT"
    );
    assert!(
        !env.open_from_wan("[fd00:77::1]:27017"),
        "unlisted port, IPv6 DNAT"
    );
    assert!(
        env.open_from_wan("10.77.0.1:8080"),
        "allowlisted port, IPv4"
    );
    assert!(!env.open_from_wan("10.77.0.1:27017"), "unlisted port, IPv4");
    // accept, or none: Docker 29's nftables backend has no ip6 filter table.
    assert_ne!(
        env.status()["ipv6_forward_policy"],
        "drop",
        "IPv6 routing is not left dropped"
    );
}
