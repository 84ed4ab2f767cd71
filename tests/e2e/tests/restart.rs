//! Issue 18: a start never judges less than the table it finds. Every
//! upgrade (`dh_installsystemd --restart-after-upgrade`), every
//! `Restart=on-failure` and every watchdog kill restarts portguardd, and
//! Docker may be slow or hung (here: frozen with SIGSTOP) while its DNAT
//! rules and docker-proxy listeners stay live. Before, the new daemon
//! replaced the table it found with one that knew only `docker0` and no
//! published port until Docker answered: a port published on a bridge
//! named with `com.docker.network.bridge.name` was open over IPv4, and
//! every published port was open over IPv6 through docker-proxy (1,070
//! connections in 6 s on Docker 20.10).
//!
//! Measured the way an attacker sees it: probers knock on each unlisted
//! port every 2 ms across the restart, and every completed connection
//! counts (target: 0).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use portguard_e2e::{Env, sa, until};
use portguard_testkit::Prober;

/// Published on a bridge Docker named `custom0` (not `docker0`, not `br-*`).
const CUSTOM_V4: &str = "10.77.0.1:8080";
/// The same over IPv6: no ip6 NAT rule, so docker-proxy serves it.
const CUSTOM_V6: &str = "[fd00:77::1]:8080";
/// Published on the default bridge, over IPv6 (docker-proxy).
const DEFAULT_V6: &str = "[fd00:77::1]:8081";

/// A guarded host with two unlisted published ports, one on a
/// custom-named bridge; both closed from outside before the test.
fn guarded_host() -> Env {
    let env = Env::guarded("");
    env.dockerd.docker(
        "network create -o com.docker.network.bridge.name=custom0 --subnet 10.99.5.0/24 custnet",
    );
    env.web("custom", &["8080:80"], "--network custnet");
    env.web("plain", &["8081:80"], "");
    for target in [CUSTOM_V4, CUSTOM_V6, DEFAULT_V6] {
        assert!(!env.open_from_wan(target), "{target} before the restart");
    }
    env
}

/// Knocks on every target while `during` runs, then for `after` more;
/// returns `(target, attempts, connected)` for each.
fn knocking(
    env: &mut Env,
    after: Duration,
    during: impl FnOnce(&mut Env),
) -> Vec<(&'static str, usize, usize)> {
    let targets = [CUSTOM_V4, CUSTOM_V6, DEFAULT_V6];
    let probers: Vec<Prober> = targets
        .iter()
        .map(|t| Prober::start(&env.lab.wan, sa(t)))
        .collect();
    during(env);
    std::thread::sleep(after);
    targets
        .into_iter()
        .zip(probers)
        .map(|(target, prober)| {
            let (attempts, connected) = prober.finish();
            (target, attempts, connected)
        })
        .collect()
}

fn assert_none_through(what: &str, counts: &[(&str, usize, usize)]) {
    for (target, attempts, connected) in counts {
        println!("{what}: {target}: {connected} of {attempts} connection attempts got through");
        assert!(
            *attempts > 0,
            "{what}: the prober never knocked on {target}"
        );
    }
    assert!(
        counts.iter().all(|(_, _, connected)| *connected == 0),
        "{what}: unlisted ports answered from outside: {counts:?}"
    );
}

/// Kills the daemon (as a crash or the watchdog would; the table stays)
/// and starts a new one with the same configuration and state directory.
fn restart_guard(env: &mut Env) {
    env.daemon = None;
    env.start_guard("");
}

#[test]
fn p5_a_restart_while_docker_is_hung_lets_no_connection_through() {
    let mut env = guarded_host();
    env.dockerd.freeze();
    let counts = knocking(&mut env, Duration::from_secs(6), restart_guard);
    let status = env.status();
    env.dockerd.thaw();
    assert_none_through("restart, dockerd frozen", &counts);
    assert_eq!(status["docker"]["connected"], false, "{status}");
    assert!(
        status["kept"]["bridges"]
            .as_array()
            .is_some_and(|b| b.iter().any(|n| n == "custom0")),
        "status shows what is judged until Docker answers: {status}"
    );
    // Docker answers again: its word replaces what was kept, and the
    // ports stay closed.
    until(
        "Docker answers the new daemon",
        Duration::from_secs(30),
        || env.status()["docker"]["connected"] == true,
    );
    assert!(env.status().get("kept").is_none());
    for target in [CUSTOM_V4, CUSTOM_V6, DEFAULT_V6] {
        assert!(!env.open_from_wan(target), "{target} after Docker answered");
    }
}

#[test]
fn p5_a_plain_restart_lets_no_connection_through() {
    let mut env = guarded_host();
    let counts = knocking(&mut env, Duration::from_secs(3), restart_guard);
    assert_none_through("plain restart", &counts);
}

/// A boot: no table survived (here deleted while no daemon ran), Docker
/// starts its containers before it answers (here: frozen). The state
/// directory says what the guard judged when it last ran.
#[test]
fn p5_a_start_without_a_table_judges_what_the_state_directory_kept() {
    let mut env = guarded_host();
    env.daemon = None;
    env.lab.host.sh("nft delete table inet portguard");
    env.dockerd.freeze();
    env.start_guard("");
    let counts = knocking(&mut env, Duration::from_secs(3), |_| {});
    env.dockerd.thaw();
    assert_none_through("start without a table, dockerd frozen", &counts);
}
