//! portguardd against a real Docker Engine, both inside network namespaces.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use portguard_testkit::daemon::{Daemon, until, wait_notify, write_config};
use portguard_testkit::{BUSYBOX_IMAGE, Dockerd, docker_lab, tcp_probe};

const PROBE: Duration = Duration::from_millis(700);

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn published_ports(daemon: &Daemon) -> Vec<(u64, String, String)> {
    let ports = daemon.guardctl_json(&["ports"]);
    let mut out: Vec<(u64, String, String)> = ports
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["host_port"].as_u64().unwrap(),
                p["container"].as_str().unwrap().to_string(),
                p["verdict"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    out.dedup();
    out
}

fn httpd(port_spec: &str, name: &str, extra: &str) -> String {
    format!(
        "run -d --name {name} {extra} -p {port_spec} {BUSYBOX_IMAGE} /bin/httpd -f -p 80 -h /www"
    )
}

#[test]
fn p1_published_ports_follow_docker_and_only_allowlisted_containers_are_reachable() {
    let lab = docker_lab();
    let dockerd = Dockerd::start(&lab.host);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("portguard.toml");
    write_config(
        &config,
        "[[allow]]\ncontainer = \"web\"\n",
        &dockerd.socket(),
    );
    let notify_path = dir.path().join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    let daemon = Daemon::start(&lab.host, &config, Some(&notify_path), &[]);
    wait_notify(&notify, "READY=1", Duration::from_secs(10));
    until("docker connected", Duration::from_secs(10), || {
        daemon.guardctl_json(&["status"])["docker"]["connected"] == true
    });

    // The control socket is root's alone unless a group is configured.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&daemon.socket)
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600, "control socket mode {mode:o}");

    let started = Instant::now();
    dockerd.docker(&httpd("8080:80", "web", ""));
    let run_took = started.elapsed();
    let seen = until("web in guardctl ports", Duration::from_secs(5), || {
        published_ports(&daemon)
            .iter()
            .any(|(port, name, _)| *port == 8080 && name == "web")
    });
    println!(
        "docker run took {run_took:?}; its port was in `guardctl ports` {seen:?} after it returned"
    );
    dockerd.docker(&httpd("8081:80", "db", ""));
    until("db in guardctl ports", Duration::from_secs(5), || {
        published_ports(&daemon)
            .iter()
            .any(|(port, name, _)| *port == 8081 && name == "db")
    });
    let ports = published_ports(&daemon);
    assert!(
        ports.contains(&(8080, "web".into(), "allowed".into())),
        "{ports:?}"
    );
    assert!(
        ports.contains(&(8081, "db".into(), "blocked".into())),
        "{ports:?}"
    );

    // IPv4 goes through Docker's DNAT (FORWARD), IPv6 through docker-proxy (INPUT).
    assert!(
        tcp_probe(&lab.wan, sa("10.77.0.1:8080"), PROBE),
        "allowlisted container over IPv4"
    );
    assert!(
        !tcp_probe(&lab.wan, sa("10.77.0.1:8081"), PROBE),
        "unlisted container over IPv4"
    );
    assert!(
        tcp_probe(&lab.wan, sa("[fd00:77::1]:8080"), PROBE),
        "allowlisted container over IPv6"
    );
    assert!(
        !tcp_probe(&lab.wan, sa("[fd00:77::1]:8081"), PROBE),
        "unlisted container over IPv6 (userland proxy)"
    );

    // explain and status speak the same language.
    let explained = daemon.guardctl_json(&["explain", "8081/tcp"]);
    assert_eq!(explained["answer"], "closed", "{explained}");
    let status = daemon.guardctl_json(&["status"]);
    for field in [
        "mode",
        "ipv6_forward_policy",
        "restores",
        "last_restore_ms",
        "published",
    ] {
        assert!(
            status.get(field).is_some(),
            "status lacks {field}: {status}"
        );
    }
    assert_eq!(status["ruleset"]["installed"], true);
    assert!(status["ruleset"]["verified_at"].is_string());
    let row = &status["published"][0];
    for field in [
        "host_ip",
        "host_port",
        "proto",
        "container",
        "container_port",
        "verdict",
    ] {
        assert!(
            row.get(field).is_some(),
            "published row lacks {field}: {row}"
        );
    }

    // guardctl reload: open db by adding an entry.
    write_config(
        &config,
        "[[allow]]\ncontainer = \"web\"\n[[allow]]\nport = 8081\n",
        &dockerd.socket(),
    );
    let out = daemon.guardctl(&["reload"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        tcp_probe(&lab.wan, sa("10.77.0.1:8081"), PROBE),
        "reload opened 8081"
    );
    // ... and a broken file is refused, reported, and changes nothing.
    std::fs::write(&config, "[[allow]]\nport = \"8081-80\"\n").unwrap();
    let out = daemon.guardctl(&["reload"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("portguard.toml:2:8: port range `8081-80` is reversed"),
        "{err}"
    );
    let status = daemon.guardctl_json(&["status"]);
    assert!(
        status["config"]["error"]
            .as_str()
            .unwrap()
            .contains(":2:8:"),
        "{status}"
    );
    assert!(
        tcp_probe(&lab.wan, sa("10.77.0.1:8081"), PROBE),
        "the last good ruleset stays"
    );
    let human = daemon.guardctl(&["status"]);
    let text = String::from_utf8_lossy(&human.stdout);
    assert!(
        text.contains("enforcing") && text.contains("reload refused"),
        "{text}"
    );
    assert!(text.contains("VERDICT") && text.contains("web"), "{text}");

    // Removing the container removes its port.
    dockerd.docker("rm -f web");
    until(
        "web gone from guardctl ports",
        Duration::from_secs(5),
        || {
            !published_ports(&daemon)
                .iter()
                .any(|(_, name, _)| name == "web")
        },
    );
}

#[test]
fn p8_dockerd_restart_is_survived_and_resynced() {
    let lab = docker_lab();
    let mut dockerd = Dockerd::start(&lab.host);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("portguard.toml");
    write_config(
        &config,
        "[[allow]]\ncontainer = \"web\"\n",
        &dockerd.socket(),
    );
    dockerd.docker(&httpd("8080:80", "web", "--restart always"));
    dockerd.docker(&httpd("8081:80", "db", "--restart always"));
    let notify_path = dir.path().join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    let daemon = Daemon::start(&lab.host, &config, Some(&notify_path), &[]);
    wait_notify(&notify, "READY=1", Duration::from_secs(10));
    until("both ports seen", Duration::from_secs(10), || {
        published_ports(&daemon).len() >= 2
    });

    dockerd.stop();
    until("docker disconnected", Duration::from_secs(10), || {
        daemon.guardctl_json(&["status"])["docker"]["connected"] == false
    });
    // P8: Docker being down weakens nothing.
    let out = daemon.guardctl(&["status"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("not connected"));
    assert!(daemon.child.id() > 0);

    dockerd.restart();
    until("docker reconnected", Duration::from_secs(20), || {
        daemon.guardctl_json(&["status"])["docker"]["connected"] == true
    });
    until("ports resynced", Duration::from_secs(20), || {
        let ports = published_ports(&daemon);
        ports.contains(&(8080, "web".into(), "allowed".into()))
            && ports.contains(&(8081, "db".into(), "blocked".into()))
    });
    until("web reachable again", Duration::from_secs(10), || {
        tcp_probe(&lab.wan, sa("10.77.0.1:8080"), PROBE)
    });
    assert!(
        !tcp_probe(&lab.wan, sa("10.77.0.1:8081"), PROBE),
        "db closed after the restart"
    );
    let log = daemon.log();
    assert!(log.contains("Docker not reachable"), "{log}");
}

#[test]
fn guardctl_says_plainly_when_the_daemon_is_not_running() {
    let out = std::process::Command::new(portguard_testkit::daemon::binaries().1)
        .args(["--socket", "/nonexistent/portguard.sock", "status"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("portguardd is not running"), "{err}");
}
