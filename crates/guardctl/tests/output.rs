//! guardctl's human output against answers carrying terminal control
//! sequences (container names and compose labels come from Docker, the
//! engine version from whoever runs the Docker socket): a fake portguardd
//! on a unix socket in a tempdir answers one request each.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::process::Command;

use portguard_core::L4Proto;
use portguard_core::control::{
    BlockedPort, BlockedReport, ConfigStatus, DockerStatus, PROTOCOL_VERSION, ReconcileRecord,
    Response, ResponseBody, RulesetStatus, SourceAttempts, Status,
};
use portguard_core::verdict::{Explanation, PortReport, Verdict};

const EVIL: &str = "web\x1b]0;pwned\x07\x1b[2J";
const SHOWN: &str = "web\\x1b]0;pwned\\x07\\x1b[2J";

/// Serves one answer on `socket`, then runs guardctl with `args` against it.
fn guardctl_against(socket: &Path, body: ResponseBody, args: &[&str]) -> std::process::Output {
    let _ = std::fs::remove_file(socket);
    let listener = UnixListener::bind(socket).unwrap();
    let server = std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let mut request = String::new();
        BufReader::new(&stream).read_line(&mut request).unwrap();
        let response = Response {
            version: PROTOCOL_VERSION,
            ok: !matches!(body, ResponseBody::Error(_)),
            body,
        };
        let mut line = serde_json::to_string(&response).unwrap();
        line.push('\n');
        (&stream).write_all(line.as_bytes()).unwrap();
    });
    let out = Command::new(env!("CARGO_BIN_EXE_guardctl"))
        .arg("--socket")
        .arg(socket)
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    server.join().unwrap();
    out
}

fn port() -> PortReport {
    PortReport {
        host_ip: "0.0.0.0".into(),
        host_port: 8080,
        proto: L4Proto::Tcp,
        container: EVIL.into(),
        compose: Some(format!("{EVIL}/{EVIL}")),
        service: None,
        container_port: 80,
        verdict: Verdict::Allowed,
        allowed_by: Some(format!(
            "container {EVIL} at /etc/portguard/portguard.toml:3"
        )),
        warnings: vec![format!("IPv6 INPUT drop {EVIL}")],
    }
}

fn status() -> Status {
    Status {
        mode: "enforce".into(),
        protection: portguard_core::control::ProtectionTier::OwnedPersistent,
        scope: "containers".into(),
        ruleset: RulesetStatus {
            installed: true,
            verified_at: Some("2026-11-22T19:40:01Z".into()),
        },
        last_reconcile: Some(ReconcileRecord {
            trigger: format!("netfilter change by {EVIL} (pid 42)"),
            at: "2026-11-22T19:40:01Z".into(),
            duration_ms: 1.0,
            outcome: "applied".into(),
        }),
        docker: DockerStatus {
            connected: true,
            socket: "/var/run/docker.sock".into(),
            engine: Some(EVIL.into()),
            error: None,
        },
        ipv6_forward_policy: "accept".into(),
        restores: 0,
        last_restore_ms: None,
        ipv6_policy_restores: 0,
        blocked_packets: 0,
        ended_connections: 0,
        blocked_last_hour: vec![],
        config: ConfigStatus {
            path: "/etc/portguard/portguard.toml".into(),
            in_force: portguard_core::control::ConfigSource::Files,
            allow_entries: 1,
            error: Some(format!("conf.d/{EVIL}.toml:1:1: bad")),
        },
        published: vec![port()],
        firewall: None,
    }
}

fn assert_escaped(out: &std::process::Output, what: &str) {
    for (stream, text) in [("stdout", &out.stdout), ("stderr", &out.stderr)] {
        let text = String::from_utf8_lossy(text);
        assert!(
            !text.contains('\x1b') && !text.contains('\x07'),
            "{what}: raw control characters on {stream}: {text:?}"
        );
    }
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(all.contains(SHOWN), "{what}: {all}");
}

#[test]
fn control_characters_from_docker_and_the_daemon_are_printed_escaped() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("control.sock");

    let out = guardctl_against(
        &socket,
        ResponseBody::Status(Box::new(status())),
        &["status"],
    );
    assert!(out.status.success());
    assert_escaped(&out, "status");
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(shown.contains(&format!("Engine {SHOWN}")), "{shown}");
    assert!(
        shown.contains(&format!("{SHOWN} ({SHOWN}/{SHOWN})")),
        "{shown}"
    );

    let mut disconnected = status();
    disconnected.docker.connected = false;
    disconnected.docker.error = Some(EVIL.into());
    let out = guardctl_against(
        &socket,
        ResponseBody::Status(Box::new(disconnected)),
        &["status"],
    );
    assert_escaped(&out, "status, Docker not connected");

    let out = guardctl_against(&socket, ResponseBody::Ports(vec![port()]), &["ports"]);
    assert_escaped(&out, "ports");

    let out = guardctl_against(
        &socket,
        ResponseBody::Explain(Explanation {
            answer: "open".into(),
            reasons: vec![format!("allowed by container {EVIL}")],
            warnings: vec![format!("IPv6 INPUT drop {EVIL}")],
        }),
        &["explain", "8080"],
    );
    assert_escaped(&out, "explain");

    let out = guardctl_against(&socket, ResponseBody::Error(EVIL.into()), &["status"]);
    assert_eq!(out.status.code(), Some(1));
    assert_escaped(&out, "an error answer");

    // JSON stays JSON: serde escapes control characters itself.
    let out = guardctl_against(
        &socket,
        ResponseBody::Ports(vec![port()]),
        &["ports", "--json"],
    );
    let ports: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(ports[0]["container"], EVIL);
    assert!(!String::from_utf8_lossy(&out.stdout).contains('\x1b'));
}

fn blocked_port(port: u16, attempts: u64, error: u64) -> BlockedPort {
    BlockedPort {
        port,
        proto: L4Proto::Udp,
        attempts,
        distinct_sources: 3,
        top_sources: vec![
            SourceAttempts {
                source: "203.0.113.9".parse().unwrap(),
                attempts: attempts - 2,
            },
            SourceAttempts {
                source: "2001:db8::7".parse().unwrap(),
                attempts: 1,
            },
        ],
        top_sources_error: error,
    }
}

#[test]
fn blocked_prints_a_table_and_status_the_top_ports() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("control.sock");
    let report = BlockedReport {
        audit: false,
        window_minutes: 60,
        listening: false,
        error: Some(EVIL.into()),
        report_limit_per_second: 250,
        ports: vec![blocked_port(5353, 1200, 4), blocked_port(8081, 12, 0)],
        untracked_attempts: 0,
        lost_reports: 2,
    };
    let out = guardctl_against(&socket, ResponseBody::Blocked(report.clone()), &["blocked"]);
    assert!(out.status.success());
    assert_escaped(&out, "blocked");
    let shown = String::from_utf8_lossy(&out.stdout);
    let expected = [
        "Blocked new connections in the last 60 minutes, as the kernel reported them (at most 250 a second per protocol and chain):",
        &format!("not following blocked attempts: {SHOWN}"),
        "PORT      ATTEMPTS  SOURCES  TOP SOURCES",
        "5353/udp  1200      3        203.0.113.9 (≥1198), 2001:db8::7 (≥1)",
        "8081/udp  12        3        203.0.113.9 (10), 2001:db8::7 (1)",
        "2 reports lost since the start: the daemon could not keep up",
    ];
    assert_eq!(shown.lines().collect::<Vec<_>>(), expected, "{shown}");

    let out = guardctl_against(
        &socket,
        ResponseBody::Blocked(report),
        &["blocked", "--json"],
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["ports"][0]["port"], 5353);
    assert_eq!(json["ports"][0]["top_sources"][0]["source"], "203.0.113.9");

    let mut with_blocked = status();
    with_blocked.blocked_last_hour = vec![blocked_port(5353, 1200, 4)];
    let out = guardctl_against(
        &socket,
        ResponseBody::Status(Box::new(with_blocked)),
        &["status"],
    );
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(
        shown.contains(
            "  last hour: 5353/udp 1200 attempts from 3 sources (most: 203.0.113.9 (≥1198), 2001:db8::7 (≥1))"
        ),
        "{shown}"
    );
}

/// Docker 28.5 with DOCKER_FIREWALL_BACKEND=nftables: both sides and the
/// mismatch are shown, and the IPv6 INPUT drop with the ports' warnings.
#[test]
fn status_shows_what_docker_says_and_what_the_kernel_holds() {
    use portguard_core::hostfw::{
        DockerFirewall, HookKind, NetfilterInventory, NfFamily, NftChain, assess,
    };
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("control.sock");
    let chain = |family, table: &str, name: &str, hook, policy_drop| NftChain {
        family,
        table: table.into(),
        name: name.into(),
        hook,
        policy_drop,
    };
    let inventory = NetfilterInventory {
        chains: vec![
            chain(NfFamily::Ip, "filter", "DOCKER-FORWARD", None, false),
            chain(
                NfFamily::Ip6,
                "filter",
                "INPUT",
                Some(HookKind::Input),
                true,
            ),
            chain(NfFamily::Ip6, "filter", "ufw6-user-input", None, false),
        ],
        ..Default::default()
    };
    let mut status = status();
    status.config.error = None;
    status.firewall = Some(assess(
        Some(DockerFirewall::from_driver(Some("nftables"))),
        &inventory,
    ));
    let out = guardctl_against(&socket, ResponseBody::Status(Box::new(status)), &["status"]);
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(
        shown.contains("firewall:  Docker says nftables; the kernel holds iptables-nft"),
        "{shown}"
    );
    assert!(shown.contains("(MISMATCH)"), "{shown}");
    assert!(
        shown.contains("ip6 filter INPUT (policy drop), ufw"),
        "{shown}"
    );
    assert!(
        shown.contains("warning: 0.0.0.0:8080/tcp: IPv6 INPUT drop"),
        "{shown}"
    );
}
