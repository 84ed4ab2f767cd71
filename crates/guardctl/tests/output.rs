//! guardctl's human output against answers carrying terminal control
//! sequences (container names and compose labels come from Docker, the
//! engine version from whoever runs the Docker socket): a fake portguardd
//! on a unix socket in a tempdir answers one request each.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::process::{Command, Stdio};

use portguard_config::{Mode, Scope};
use portguard_core::control::{
    BlockedPort, BlockedReport, ConfigSource, ConfigStatus, DockerStatus, Ipv6ForwardPolicy,
    PROTOCOL_VERSION, ProtectionTier, ReconcileOutcome, ReconcileRecord, Request, RequestBody,
    Response, ResponseBody, RulesetStatus, SourceAttempts, Status,
};
use portguard_core::docker_api::{DockerApiReport, DockerApiScan, DockerApiVerdict};
use portguard_core::ip6_forward::{DropSetter, Ip6Firewall, Ipv6ForwardDrop};
use portguard_core::verdict::{ExplainAnswer, Explanation, PortReport, Verdict};
use portguard_core::{BridgeFault, IpFamily, L4Proto, LabelFault, UntrustedClaim};

const EVIL: &str = "web\x1b]0;pwned\x07\x1b[2J";
const SHOWN: &str = "web\\x1b]0;pwned\\x07\\x1b[2J";

/// Serves one answer on `socket`, the same to every request, while
/// guardctl runs with `args` against it.
fn guardctl_against(socket: &Path, body: ResponseBody, args: &[&str]) -> std::process::Output {
    guardctl_served(socket, move |_| body.clone(), args, Stdio::piped())
}

/// A fake portguardd on `socket` answering each request with `answer`
/// while guardctl runs with `args`, its stdout going to `stdout`.
fn guardctl_served(
    socket: &Path,
    answer: impl Fn(RequestBody) -> ResponseBody + Send + 'static,
    args: &[&str],
    stdout: Stdio,
) -> std::process::Output {
    let _ = std::fs::remove_file(socket);
    let listener = UnixListener::bind(socket).unwrap();
    let server = std::thread::spawn(move || {
        loop {
            let (stream, _) = listener.accept().unwrap();
            let mut line = String::new();
            BufReader::new(&stream).read_line(&mut line).unwrap();
            // The test's own empty connection: guardctl has exited.
            if line.is_empty() {
                return;
            }
            let request: Request = serde_json::from_str(&line).unwrap();
            let body = answer(request.body);
            let response = Response {
                version: PROTOCOL_VERSION,
                ok: !matches!(body, ResponseBody::Error(_)),
                body,
            };
            let mut line = serde_json::to_string(&response).unwrap();
            line.push('\n');
            // guardctl may have gone already (a test of it doing so).
            let _ = (&stream).write_all(line.as_bytes());
        }
    });
    let out = Command::new(env!("CARGO_BIN_EXE_guardctl"))
        .arg("--socket")
        .arg(socket)
        .args(args)
        .env("NO_COLOR", "1")
        .stdout(stdout)
        .output()
        .unwrap();
    drop(UnixStream::connect(socket).unwrap());
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
        only_from: Vec::new(),
        warnings: vec![format!("IPv6 INPUT drop {EVIL}")],
    }
}

fn status() -> Status {
    Status {
        mode: Mode::Enforce,
        protection: portguard_core::control::ProtectionTier::OwnedPersistent,
        scope: Scope::Containers,
        ruleset: RulesetStatus {
            installed: true,
            verified_at: Some("2026-11-22T19:40:01Z".into()),
        },
        last_reconcile: Some(ReconcileRecord {
            trigger: format!("netfilter change by {EVIL} (pid 42)"),
            at: "2026-11-22T19:40:01Z".into(),
            duration_ms: 1.0,
            outcome: ReconcileOutcome::Applied,
        }),
        docker: DockerStatus {
            connected: true,
            socket: "/var/run/docker.sock".into(),
            engine: Some(EVIL.into()),
            error: None,
        },
        ipv6_forward_policy: Ipv6ForwardPolicy::Accept,
        restores: 0,
        last_restore_ms: None,
        ipv6_policy_restores: 0,
        ipv6_forward_drops: Vec::new(),
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
        docker_api: Vec::new(),
        kept: Default::default(),
        unmatched: Vec::new(),
        untrusted_claims: vec![
            UntrustedClaim::Bridge {
                network: EVIL.into(),
                ifname: EVIL.into(),
                faults: vec![
                    BridgeFault::AddressOutsideSubnets {
                        address: EVIL.into(),
                    },
                    BridgeFault::ForeignPort {
                        port: EVIL.into(),
                        kind: EVIL.into(),
                    },
                ],
            },
            UntrustedClaim::Compose {
                container: EVIL.into(),
                compose: format!("{EVIL}/{EVIL}"),
                fault: LabelFault::FromImage {
                    labels: vec![EVIL.into()],
                },
            },
        ],
        docker_api_scan: None,
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
            mode: portguard_config::Mode::Enforce,
            answer: ExplainAnswer::Open,
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
            "Top blocked: 5353/udp: 1200 attempts in the last hour, from 3 sources (most: 203.0.113.9 (≥1198), 2001:db8::7 (≥1))."
        ),
        "{shown}"
    );
}

/// Docker 28.5 with DOCKER_FIREWALL_BACKEND=nftables: both sides and the
/// mismatch are shown, and the IPv6 INPUT drop with the ports' warnings.
/// A legacy IPv6 FORWARD drop blocks routing though nf_tables has no such
/// chain: status names it, and whose it is, instead of "nothing blocks".
#[test]
fn status_names_a_legacy_ipv6_forward_drop_and_who_set_it() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("control.sock");
    let mut status = status();
    status.ipv6_forward_policy = Ipv6ForwardPolicy::NoChain;
    status.ipv6_forward_drops = vec![Ipv6ForwardDrop::new(
        Ip6Firewall::IptablesLegacy,
        DropSetter::BeforeStart,
        true,
    )];
    let out = guardctl_against(&socket, ResponseBody::Status(Box::new(status)), &["status"]);
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(
        shown.contains(
            "the iptables-legacy IPv6 FORWARD policy is drop, set by somebody before the guard \
             started (who is not known): routed IPv6 traffic is blocked. The guard leaves it alone"
        ),
        "{shown}"
    );
    assert!(!shown.contains("nothing blocks"), "{shown}");
}

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
        shown.contains("Docker says it uses nftables, and the kernel holds iptables-nft"),
        "{shown}"
    );
    assert!(shown.contains("MISMATCH: they disagree."), "{shown}");
    assert!(
        shown.contains("ip6 filter INPUT (policy drop), ufw"),
        "{shown}"
    );
    assert!(
        shown.contains("[1] warning, 0.0.0.0:8080/tcp: IPv6 INPUT drop"),
        "{shown}"
    );
}

/// A reader that stops reading (`guardctl status | true`, `| head -1`)
/// ends guardctl's output quietly, for every command: it used to panic
/// ("failed printing to stdout: Broken pipe", exit 101). The exit status
/// is the command's own.
#[test]
fn every_command_exits_quietly_when_its_reader_is_gone() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("control.sock");
    let mut enforcing = enforcing_status();
    enforcing.published = (1..=2000)
        .map(|p| plain_port(p, "web", Verdict::Blocked, None))
        .collect();
    let answer = move |request: RequestBody| match request {
        RequestBody::Status => ResponseBody::Status(Box::new(enforcing.clone())),
        RequestBody::Ports => ResponseBody::Ports(enforcing.published.clone()),
        RequestBody::Explain { .. } => ResponseBody::Explain(Explanation {
            mode: portguard_config::Mode::Enforce,
            answer: ExplainAnswer::Closed,
            reasons: vec!["no allow entry admits it".into(); 100],
            warnings: Vec::new(),
        }),
        RequestBody::Blocked => ResponseBody::Blocked(BlockedReport {
            audit: false,
            window_minutes: 60,
            listening: true,
            error: None,
            report_limit_per_second: 250,
            ports: vec![blocked_port(5353, 1200, 4)],
            untracked_attempts: 0,
            lost_reports: 0,
        }),
        RequestBody::Metrics => ResponseBody::Metrics("portguard_up 1\n".repeat(1000)),
        RequestBody::Reload => ResponseBody::Reload(portguard_core::control::ReloadOutcome {
            warnings: Vec::new(),
            applied: true,
            error: None,
        }),
    };
    let answer = std::sync::Arc::new(answer);
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/portguard.toml");
    let example = example.to_str().unwrap();
    for args in [
        &["status"][..],
        &["status", "--json"],
        &["ports"],
        &["ports", "--json"],
        &["explain", "8080"],
        &["explain", "8080/udp", "--json"],
        &["blocked"],
        &["blocked", "--json"],
        &["metrics"],
        &["reload"],
        &["check", "--config", example],
        &["plan", "--config", example],
        &["--help"],
        &["explain", "--help"],
        &["--version"],
    ] {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let answer = answer.clone();
        let out = guardctl_served(&socket, move |r| answer(r), args, writer.into());
        assert_eq!(
            (
                out.status.code(),
                String::from_utf8_lossy(&out.stderr).as_ref()
            ),
            (Some(0), ""),
            "guardctl {args:?} | true"
        );
    }
}

/// `explain PORT` without a protocol looks at TCP and UDP (5353 is
/// mDNS, on UDP) and says which is published; it used to answer for TCP
/// alone, `not-published`, without a word about UDP.
#[test]
fn explain_without_a_protocol_looks_at_both_and_says_which_is_published() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("control.sock");
    let answer = |request: RequestBody| {
        let RequestBody::Explain {
            port: 5353, proto, ..
        } = request
        else {
            return ResponseBody::Error(format!("unexpected {request:?}"));
        };
        ResponseBody::Explain(match proto {
            L4Proto::Tcp => Explanation {
                mode: portguard_config::Mode::Enforce,
                answer: ExplainAnswer::NotPublished,
                reasons: vec!["no container publishes 5353/tcp".into()],
                warnings: Vec::new(),
            },
            L4Proto::Udp => Explanation {
                mode: portguard_config::Mode::Enforce,
                answer: ExplainAnswer::Open,
                reasons: vec!["allowed for any source by port 5353/udp (mDNS)".into()],
                warnings: Vec::new(),
            },
        })
    };
    let out = guardctl_served(&socket, answer, &["explain", "5353"], Stdio::piped());
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "5353/udp: open\n  - allowed for any source by port 5353/udp (mDNS)\n5353/tcp: not-published\n"
    );
    let out = guardctl_served(
        &socket,
        answer,
        &["explain", "5353", "--json"],
        Stdio::piped(),
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (&json["proto"], &json["answer"]),
        (&"udp".into(), &"open".into())
    );
    // Asked for one protocol: the daemon's answer, as it always was.
    let out = guardctl_served(
        &socket,
        answer,
        &["explain", "5353/tcp", "--json"],
        Stdio::piped(),
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        json,
        serde_json::json!({"answer": "not-published", "mode": "enforce", "reasons": ["no container publishes 5353/tcp"]})
    );
}

/// The IPv6 docker-proxy warning (some 300 characters, written by the
/// daemon for every allowed port bound on IPv6) is said once, as a
/// footnote, with `[::]:8080` for the address (it used to follow the
/// table once per port, as `:::8080/tcp`).
#[test]
fn the_ipv6_warning_is_one_footnote_with_bracketed_addresses() {
    use portguard_core::hostfw::{InputDrop, ipv6_input_warning};
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("control.sock");
    let drop = InputDrop {
        chains: vec!["ip6 filter INPUT (policy drop)".into()],
        ufw: true,
    };
    let ports: Vec<PortReport> = [8080, 8443]
        .into_iter()
        .map(|p| {
            let mut port = plain_port(
                p,
                "web",
                Verdict::Allowed,
                Some("container web at pg.toml:3"),
            );
            port.host_ip = "::".into();
            port.warnings = vec![ipv6_input_warning(&drop, p, L4Proto::Tcp)];
            port
        })
        .chain([plain_port(27017, "mongo", Verdict::Blocked, None)])
        .collect();
    let out = guardctl_against(&socket, ResponseBody::Ports(ports), &["ports"]);
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(!shown.contains(":::"), "{shown}");
    assert_eq!(shown.matches("docker-proxy").count(), 1, "{shown}");
    let lines: Vec<&str> = shown.lines().collect();
    assert!(
        lines[1].ends_with("allowed by container web at pg.toml:3 [1]"),
        "{shown}"
    );
    assert!(
        lines[2].ends_with("allowed by container web at pg.toml:3 [1]"),
        "{shown}"
    );
    assert!(lines[3].ends_with("blocked"), "{shown}");
    assert_eq!(lines[4], "");
    assert!(
        lines[5].starts_with(
            "[1] warning, [::]:8080/tcp, [::]:8443/tcp: the host firewall's INPUT (ip6 filter INPUT (policy drop)) drops IPv6 to these ports"
        ),
        "{shown}"
    );
    assert!(lines[5].contains("ufw allow PORT/PROTO"), "{shown}");
    assert_eq!(lines.len(), 6, "{shown}");

    // explain: the answer carries the mark, the warning follows once.
    let out = guardctl_against(
        &socket,
        ResponseBody::Explain(Explanation {
            mode: portguard_config::Mode::Enforce,
            answer: ExplainAnswer::Open,
            reasons: vec!["allowed for any source by container web".into()],
            warnings: vec![ipv6_input_warning(&drop, 8080, L4Proto::Tcp)],
        }),
        &["explain", "8080/tcp"],
    );
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(shown.starts_with("8080/tcp: open [1]\n"), "{shown}");
    assert!(
        shown.contains("\n\n[1] warning, 8080/tcp: the host firewall's INPUT"),
        "{shown}"
    );
    assert!(shown.contains("ufw allow 8080/tcp"), "{shown}");
}

/// A configuration refused with several mistakes: each on its own line
/// under `Config:`, not run together with `\x0a`.
#[test]
fn status_shows_every_configuration_mistake_on_its_own_line() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("control.sock");
    let mut status = enforcing_status();
    status.config.error = Some("pg.toml:2:8: first\npg.toml:4:1: second".into());
    let out = guardctl_against(&socket, ResponseBody::Status(Box::new(status)), &["status"]);
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(
        shown.contains(
            "Config:      reload refused; the configuration read before stays in force (2 allow entries). Errors:\n             pg.toml:2:8: first\n             pg.toml:4:1: second\n"
        ),
        "{shown}"
    );
    // And a refused reload prints them one a line too.
    let out = guardctl_against(
        &socket,
        ResponseBody::Reload(portguard_core::control::ReloadOutcome {
            warnings: Vec::new(),
            applied: false,
            error: Some("pg.toml:2:8: first\npg.toml:4:1: second".into()),
        }),
        &["reload"],
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "pg.toml:2:8: first\npg.toml:4:1: second\nguardctl: reload refused; the last good ruleset stays in force\n"
    );
}

/// `tests/golden/<name>.txt`, or rewritten with `UPDATE_GOLDEN=1`.
fn assert_golden(name: &str, shown: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(format!("{name}.txt"));
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, shown).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_default();
    assert_eq!(
        shown,
        expected,
        "guardctl status differs from {} (UPDATE_GOLDEN=1 rewrites it)",
        path.display()
    );
}

fn plain_port(host_port: u16, container: &str, verdict: Verdict, by: Option<&str>) -> PortReport {
    PortReport {
        host_ip: "0.0.0.0".into(),
        host_port,
        proto: L4Proto::Tcp,
        container: container.into(),
        compose: None,
        service: None,
        container_port: 80,
        verdict,
        allowed_by: by.map(String::from),
        only_from: Vec::new(),
        warnings: Vec::new(),
    }
}

fn docker_api(addr: &str, port: u16, verdict: DockerApiVerdict) -> DockerApiReport {
    DockerApiReport {
        addr: addr.parse().unwrap(),
        port,
        pid: 812,
        plain: port == 2375,
        verdict,
        open_to: Vec::new(),
        ignored: Vec::new(),
    }
}

/// A host as it usually is: enforcing, Docker connected, a table somebody
/// deleted and the guard put back, the Docker API on 2375 closed but to
/// one CI runner, and no IPv6 FORWARD chain at all.
fn enforcing_status() -> Status {
    let mut api = docker_api("0.0.0.0", 2375, DockerApiVerdict::Closed);
    api.open_to = vec![
        "port 2375/tcp from 192.0.2.10/32 (CI runner) at /etc/portguard/portguard.toml:7".into(),
    ];
    Status {
        mode: Mode::Enforce,
        protection: ProtectionTier::OwnedPersistent,
        scope: Scope::Containers,
        ruleset: RulesetStatus {
            installed: true,
            verified_at: Some("2026-11-22T19:40:31Z".into()),
        },
        last_reconcile: Some(ReconcileRecord {
            trigger: "netfilter change by nft (pid 4242)".into(),
            at: "2026-11-22T19:40:01Z".into(),
            duration_ms: 1.25,
            outcome: ReconcileOutcome::Restored("table missing".into()),
        }),
        docker: DockerStatus {
            connected: true,
            socket: "/var/run/docker.sock".into(),
            engine: Some("28.5.2".into()),
            error: None,
        },
        ipv6_forward_policy: Ipv6ForwardPolicy::NoChain,
        restores: 2,
        last_restore_ms: Some(3.4),
        ipv6_policy_restores: 0,
        ipv6_forward_drops: Vec::new(),
        blocked_packets: 17,
        ended_connections: 1,
        config: ConfigStatus {
            path: "/etc/portguard/portguard.toml".into(),
            in_force: ConfigSource::Files,
            allow_entries: 2,
            error: None,
        },
        published: vec![
            plain_port(
                8080,
                "web",
                Verdict::Allowed,
                Some("container web at /etc/portguard/portguard.toml:3"),
            ),
            plain_port(27017, "mongo", Verdict::Blocked, None),
        ],
        docker_api: vec![
            api,
            docker_api("127.0.0.1", 2376, DockerApiVerdict::LocalOnly),
        ],
        firewall: Some(portguard_core::hostfw::assess(
            Some(portguard_core::hostfw::DockerFirewall::from_driver(Some(
                "iptables",
            ))),
            &portguard_core::hostfw::NetfilterInventory {
                chains: vec![portguard_core::hostfw::NftChain {
                    family: portguard_core::hostfw::NfFamily::Ip,
                    table: "filter".into(),
                    name: "DOCKER-FORWARD".into(),
                    hook: None,
                    policy_drop: false,
                }],
                ..Default::default()
            },
        )),
        blocked_last_hour: vec![blocked_port(5353, 1200, 4)],
        kept: Default::default(),
        unmatched: Vec::new(),
        untrusted_claims: Vec::new(),
        docker_api_scan: Some(DockerApiScan::Cgroup),
    }
}

/// Everything going wrong at once: no table, audit mode, Docker away, an
/// invalid file at start, IPv6 FORWARD dropped, the Docker API open.
fn troubled_status() -> Status {
    let mut api = docker_api("::", 2375, DockerApiVerdict::Audit);
    api.ignored = vec!["port 2375/tcp at /etc/portguard/portguard.toml:12".into()];
    Status {
        mode: Mode::Audit,
        protection: ProtectionTier::Twin,
        scope: Scope::All,
        ruleset: RulesetStatus {
            installed: false,
            verified_at: None,
        },
        last_reconcile: Some(ReconcileRecord {
            trigger: "periodic verify".into(),
            at: "2026-11-22T19:41:01Z".into(),
            duration_ms: 0.5,
            outcome: ReconcileOutcome::Failed("Operation not permitted (os error 1)".into()),
        }),
        docker: DockerStatus {
            connected: false,
            socket: "/var/run/docker.sock".into(),
            engine: None,
            error: Some("connection refused".into()),
        },
        ipv6_forward_policy: Ipv6ForwardPolicy::Drop,
        restores: 0,
        last_restore_ms: None,
        ipv6_policy_restores: 1,
        ipv6_forward_drops: vec![Ipv6ForwardDrop::new(
            Ip6Firewall::Nftables,
            DropSetter::Process {
                process: "ip6tables-resto".into(),
                pid: 4242,
                parent: Some("ufw-init".into()),
            },
            true,
        )],
        blocked_packets: 1,
        ended_connections: 0,
        config: ConfigStatus {
            path: "/etc/portguard/portguard.toml".into(),
            in_force: ConfigSource::LastGood,
            allow_entries: 1,
            error: Some(
                "/etc/portguard/portguard.toml:4:1: unknown key `this_key_does_not_exist`".into(),
            ),
        },
        published: Vec::new(),
        docker_api: vec![api],
        kept: Default::default(),
        unmatched: Vec::new(),
        firewall: None,
        blocked_last_hour: vec![],
        untrusted_claims: vec![
            UntrustedClaim::Bridge {
                network: "lan".into(),
                ifname: "uplink0".into(),
                faults: vec![
                    BridgeFault::DefaultRoute {
                        family: IpFamily::Ipv4,
                    },
                    BridgeFault::ForeignPort {
                        port: "enp1s0".into(),
                        kind: "device".into(),
                    },
                ],
            },
            UntrustedClaim::Compose {
                container: "pwn".into(),
                compose: "shop/web".into(),
                fault: LabelFault::FromImage {
                    labels: vec![
                        "com.docker.compose.config-hash".into(),
                        "com.docker.compose.project".into(),
                    ],
                },
            },
            UntrustedClaim::SwarmTask {
                container: "pwn".into(),
                service: "websvc".into(),
                fault: LabelFault::Incomplete {
                    missing: "com.docker.swarm.task.id".into(),
                },
            },
        ],
        docker_api_scan: Some(DockerApiScan::Blind {
            reason: "dockerd's open files are unreadable (/proc/812/fd: Permission denied (os error 13)) \
                     and its cgroup / holds other programs too (sshd (611)), so its listeners \
                     0.0.0.0:22 may be theirs"
                .into(),
        }),
    }
}

#[test]
fn status_reads_as_plain_sentences_golden() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("control.sock");
    for (name, status, code) in [
        ("status_enforcing", enforcing_status(), 0),
        ("status_troubled", troubled_status(), 1),
        ("status_quiet", quiet_status(), 0),
    ] {
        let out = guardctl_against(&socket, ResponseBody::Status(Box::new(status)), &["status"]);
        assert_eq!(out.status.code(), Some(code), "{name}");
        let shown = String::from_utf8(out.stdout).unwrap();
        // No internal names: Debug variants, snake_case keys, bare `none`.
        for internal in [
            "Missing)",
            "OwnedPersistent",
            "policy none",
            "in_force",
            "LastGood",
        ] {
            assert!(
                !shown.contains(internal),
                "{name}: `{internal}` in\n{shown}"
            );
        }
        assert_golden(name, &shown);
    }
}

/// A quiet host with what the other two leave out: nothing to do at the
/// last check, an IPv6 FORWARD policy that could not be read, and the
/// host firewall's notes (Docker says nftables, the kernel holds
/// iptables-legacy).
fn quiet_status() -> Status {
    let mut status = enforcing_status();
    if let Some(r) = status.last_reconcile.as_mut() {
        r.outcome = ReconcileOutcome::Unchanged;
    }
    status.ipv6_forward_policy =
        Ipv6ForwardPolicy::Unreadable("netlink: Operation not permitted (os error 1)".into());
    status.firewall = Some(portguard_core::hostfw::assess(
        Some(portguard_core::hostfw::DockerFirewall::from_driver(Some(
            "nftables",
        ))),
        &portguard_core::hostfw::NetfilterInventory {
            legacy_ipv4_tables: vec!["filter".into(), "nat".into()],
            ..Default::default()
        },
    ));
    status
}

/// `tests/golden/<name>.json` holds `status --json` as the daemon sent it
/// when these fields were still strings: the typed status must write the
/// same bytes, and read them back to the same value.
#[test]
fn status_json_is_the_same_on_the_wire_golden() {
    for (name, status) in [
        ("status_enforcing", enforcing_status()),
        ("status_troubled", troubled_status()),
        ("status_quiet", quiet_status()),
    ] {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/golden")
            .join(format!("{name}.json"));
        let json = serde_json::to_string_pretty(&status).unwrap() + "\n";
        if std::env::var_os("UPDATE_GOLDEN").is_some() {
            std::fs::write(&path, &json).unwrap();
            continue;
        }
        let expected = std::fs::read_to_string(&path).unwrap();
        assert_eq!(json, expected, "{name}: the wire format changed");
        let read: Status = serde_json::from_str(&expected).unwrap();
        assert_eq!(
            read, status,
            "{name}: the golden JSON reads back differently"
        );
    }
}

/// Issue 22: a misspelt container name passed `check` without a word.
/// With a daemon running, `check` judges the file's entries against what
/// the daemon reports Docker publishes, and names the nearest container.
#[test]
fn check_names_the_entries_that_open_nothing_on_this_host() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("control.sock");
    let config = dir.path().join("portguard.toml");
    std::fs::write(
        &config,
        "[[allow]]\ncontainer = \"mongp\"\n[[allow]]\ncontainer = \"web\"\n",
    )
    .unwrap();
    let mut status = enforcing_status();
    status.published = vec![
        plain_port(8080, "web", Verdict::Allowed, None),
        plain_port(27017, "mongo", Verdict::Blocked, None),
    ];
    let out = guardctl_served(
        &socket,
        move |_| ResponseBody::Status(Box::new(status.clone())),
        &["check", "--config", config.to_str().unwrap()],
        Stdio::piped(),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("container mongp at ") && stderr.contains("did you mean \"mongo\"?"),
        "{stderr}"
    );
    assert!(!stderr.contains("container web"), "{stderr}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("OK (1 file, 2 allow entries)"));
}

/// Issue 22: the install was silent about closing every published port;
/// the package prints `guardctl status --brief`.
#[test]
fn status_brief_is_one_line_with_the_mode_and_what_is_closed() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("control.sock");
    let mut status = enforcing_status();
    status.published = vec![
        plain_port(8080, "web", Verdict::Allowed, None),
        plain_port(27017, "mongo", Verdict::Blocked, None),
        plain_port(6379, "redis", Verdict::Blocked, None),
        plain_port(9000, "cache", Verdict::LocalOnly, None),
    ];
    let served = status.clone();
    let out = guardctl_served(
        &socket,
        move |_| ResponseBody::Status(Box::new(served.clone())),
        &["status", "--brief"],
        Stdio::piped(),
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "portguard: enforcing: 2 published ports closed to the outside, 1 allowed, \
         1 local-only (`guardctl ports` lists them).\n"
    );
    status.mode = Mode::Audit;
    for port in &mut status.published {
        if port.verdict == Verdict::Blocked {
            port.verdict = Verdict::OpenInAudit;
        }
    }
    status.docker.connected = false;
    let out = guardctl_served(
        &socket,
        move |_| ResponseBody::Status(Box::new(status.clone())),
        &["status", "--brief"],
        Stdio::piped(),
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with(
            "portguard: audit mode, nothing is dropped: 2 published ports open that enforce mode would close"
        ) && text.contains("Docker is not connected yet"),
        "{text}"
    );
}
