//! `guardctl status` tells the firewall backend Docker says it uses
//! (`GET /info` -> `FirewallBackend.Driver`, absent before Engine 28.1)
//! from what the kernel holds, and flags a mismatch: Docker 28.5 with
//! `DOCKER_FIREWALL_BACKEND=nftables` says nftables but writes iptables.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use portguard_e2e::{DockerdOptions, Env, docker_lab};
use portguard_testkit::engine;
use serde_json::{Value, json};

/// The guard on `env`, 8080 allowed, `web` (8080) and `db` (27017) running.
fn guarded_pair(env: &mut Env) -> Value {
    env.start_guard("[[allow]]\nport = 8080\n");
    env.web("web", &["8080:80"], "");
    env.web("db", &["27017:80"], "");
    assert!(
        env.open_from_wan("10.77.0.1:8080"),
        "allowlisted port, IPv4"
    );
    assert!(!env.open_from_wan("10.77.0.1:27017"), "unlisted port, IPv4");
    assert!(
        !env.open_from_wan("[fd00:77::1]:27017"),
        "unlisted port, IPv6"
    );
    env.status()["firewall"].clone()
}

#[test]
fn status_names_the_backend_docker_says_and_the_one_the_kernel_holds() {
    let mut env = Env::new();
    let firewall = guarded_pair(&mut env);
    let (says, holds) = match engine().major {
        20 | 26 => (
            json!({"driver": "iptables", "firewalld": false, "source": "assumed"}),
            json!(["iptables-nft"]),
        ),
        28 => (
            json!({"driver": "iptables", "firewalld": false, "source": "reported"}),
            json!(["iptables-nft"]),
        ),
        _ => (
            json!({"driver": "nftables", "firewalld": false, "source": "reported"}),
            json!(["nftables"]),
        ),
    };
    assert_eq!(firewall["docker_says"], says, "{firewall:#}");
    assert_eq!(firewall["kernel_holds"], holds, "{firewall:#}");
    assert_eq!(firewall["agreement"], "agrees", "{firewall:#}");
}

#[test]
fn status_flags_docker_saying_nftables_while_the_kernel_holds_iptables() {
    let options = DockerdOptions {
        env: vec![("DOCKER_FIREWALL_BACKEND".into(), "nftables".into())],
        ..Default::default()
    };
    let mut env = Env::with_dockerd(docker_lab(), options);
    let firewall = guarded_pair(&mut env);
    let text = String::from_utf8_lossy(&env.daemon().guardctl(&["status"]).stdout).into_owned();
    match engine().major {
        // The variable is Docker 28's; older engines do not read it.
        20 | 26 => {
            assert_eq!(
                firewall["docker_says"]["driver"], "iptables",
                "{firewall:#}"
            );
            assert_eq!(firewall["agreement"], "agrees", "{firewall:#}");
        }
        // What it is about: Docker says nftables, writes iptables.
        28 => {
            assert_eq!(
                firewall["docker_says"]["driver"], "nftables",
                "{firewall:#}"
            );
            assert_eq!(
                firewall["kernel_holds"],
                json!(["iptables-nft"]),
                "{firewall:#}"
            );
            assert_eq!(firewall["agreement"], "mismatch", "{firewall:#}");
            assert!(
                text.contains("Docker says it uses nftables, and the kernel holds iptables-nft")
                    && text.contains("MISMATCH"),
                "{text}"
            );
        }
        // Docker 29 means it.
        _ => {
            assert_eq!(
                firewall["docker_says"]["driver"], "nftables",
                "{firewall:#}"
            );
            assert_eq!(
                firewall["kernel_holds"],
                json!(["nftables"]),
                "{firewall:#}"
            );
            assert_eq!(firewall["agreement"], "agrees", "{firewall:#}");
        }
    }
}
