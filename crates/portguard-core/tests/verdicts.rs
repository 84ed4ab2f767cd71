//! Verdicts and explanations for published ports (pure logic).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::IpAddr;

use portguard_config::Config;
use portguard_core::verdict::{ExplainAnswer, Verdict, explain, port_reports};
use portguard_core::{ContainerRef, L4Proto, PublishedPort, Snapshot};

fn port(
    name: &str,
    host_ip: Option<&str>,
    host_port: u16,
    proto: L4Proto,
    host_network: bool,
) -> PublishedPort {
    PublishedPort {
        host_ip: host_ip.map(|ip| ip.parse().unwrap()),
        host_port,
        proto,
        container: ContainerRef {
            id: format!("id-{name}"),
            name: name.into(),
            compose: Some(format!("proj/{name}")),
            service: None,
        },
        container_port: host_port,
        host_network,
    }
}

fn snapshot() -> Snapshot {
    Snapshot {
        bridges: Default::default(),
        published: vec![
            port("web", None, 8080, L4Proto::Tcp, false),
            port("db", Some("0.0.0.0"), 27017, L4Proto::Tcp, false),
            port("cache", Some("127.0.0.1"), 6379, L4Proto::Tcp, false),
            port("prom", None, 9090, L4Proto::Tcp, true),
            port("dns", None, 5353, L4Proto::Udp, false),
            port("tele", None, 8086, L4Proto::Tcp, false),
        ],
        ..Snapshot::default()
    }
}

const CONFIG: &str = r#"
[[allow]]
container = "proj/web"

[[allow]]
port = 5353
proto = "tcp"

[[allow]]
port = 8086
from = ["203.0.113.0/24"]
comment = "Telegraf"
"#;

#[test]
fn every_published_port_gets_the_verdict_an_admin_expects() {
    let config = Config::from_toml_str(CONFIG).unwrap();
    let reports = port_reports(&config, &snapshot());
    let verdicts: Vec<(u16, Verdict)> = reports.iter().map(|r| (r.host_port, r.verdict)).collect();
    assert_eq!(
        verdicts,
        vec![
            (5353, Verdict::Blocked), // allowed for tcp only, published as udp
            (6379, Verdict::LocalOnly),
            (8080, Verdict::Allowed),
            (8086, Verdict::Allowed),
            (9090, Verdict::HostNetwork),
            (27017, Verdict::Blocked),
        ]
    );
    let web = reports.iter().find(|r| r.host_port == 8080).unwrap();
    assert_eq!(
        web.allowed_by.as_deref(),
        Some("container proj/web at <string>:2")
    );
    let tele = reports.iter().find(|r| r.host_port == 8086).unwrap();
    assert!(
        tele.allowed_by
            .as_deref()
            .unwrap()
            .contains("from 203.0.113.0/24 (Telegraf)")
    );
}

#[test]
fn explain_names_the_reason() {
    let config = Config::from_toml_str(CONFIG).unwrap();
    let snap = snapshot();
    let e = explain(&config, &snap, 27017, L4Proto::Tcp, None);
    assert_eq!(e.answer, ExplainAnswer::Closed);
    assert!(
        e.reasons
            .iter()
            .any(|r| r.contains("published by container db")),
        "{e:?}"
    );
    assert!(
        e.reasons
            .iter()
            .any(|r| r.contains("no allow entry admits 27017/tcp")),
        "{e:?}"
    );

    let inside: IpAddr = "203.0.113.5".parse().unwrap();
    let outside: IpAddr = "198.51.100.5".parse().unwrap();
    assert_eq!(
        explain(&config, &snap, 8086, L4Proto::Tcp, Some(inside)).answer,
        ExplainAnswer::Open
    );
    let e = explain(&config, &snap, 8086, L4Proto::Tcp, Some(outside));
    assert_eq!(e.answer, ExplainAnswer::Closed);
    assert!(
        e.reasons
            .iter()
            .any(|r| r.contains("does not admit 198.51.100.5")),
        "{e:?}"
    );

    assert_eq!(
        explain(&config, &snap, 6379, L4Proto::Tcp, None).answer,
        ExplainAnswer::LocalOnly
    );
    assert_eq!(
        explain(&config, &snap, 9090, L4Proto::Tcp, None).answer,
        ExplainAnswer::HostNetwork
    );
    assert_eq!(
        explain(&config, &snap, 1234, L4Proto::Tcp, None).answer,
        ExplainAnswer::NotPublished
    );
}

#[test]
fn container_entries_open_only_that_containers_host_ports() {
    let config = Config::from_toml_str(CONFIG).unwrap();
    let ruleset = portguard_core::plan(&config, &snapshot());
    let allow_tcp = ruleset.set("allow_tcp").unwrap();
    let rendered: Vec<String> = allow_tcp
        .elements
        .iter()
        .map(portguard_core::render::render_element)
        .collect();
    assert_eq!(rendered, ["5353", "8080"]);
    // The container is gone: its ports close.
    let ruleset = portguard_core::plan(&config, &Snapshot::default());
    let rendered: Vec<String> = ruleset
        .set("allow_tcp")
        .unwrap()
        .elements
        .iter()
        .map(portguard_core::render::render_element)
        .collect();
    assert_eq!(rendered, ["5353"]);
    // Only exposed bindings are in the input chain's published sets.
    let ruleset = portguard_core::plan(&config, &snapshot());
    let published: Vec<String> = ruleset
        .set("published_tcp")
        .unwrap()
        .elements
        .iter()
        .map(portguard_core::render::render_element)
        .collect();
    assert_eq!(published, ["8080", "8086", "27017"]);
}

/// ufw's `default deny incoming` on IPv6: allowed ports bound on IPv6 get
/// a warning; blocked, IPv4-only, loopback and host-network ports do not.
#[test]
fn ipv6_input_drop_warns_on_allowed_ipv6_ports_only() {
    use portguard_core::hostfw::InputDrop;
    use portguard_core::verdict::{warn_ipv6_input, warn_ipv6_input_explained};
    let config = Config::from_toml_str(
        "[[allow]]\nport = 8080\n[[allow]]\nport = 27017\n[[allow]]\nport = 6379\n[[allow]]\nport = 9090\n",
    )
    .unwrap();
    let mut snap = snapshot();
    snap.published
        .push(port("web", Some("::"), 8443, L4Proto::Tcp, false));
    let drop = InputDrop {
        chains: vec!["ip6 filter INPUT (policy drop)".into()],
        ufw: true,
    };
    let mut reports = port_reports(&config, &snap);
    warn_ipv6_input(&mut reports, None);
    assert!(reports.iter().all(|r| r.warnings.is_empty()));
    warn_ipv6_input(&mut reports, Some(&drop));
    let warned: Vec<u16> = reports
        .iter()
        .filter(|r| !r.warnings.is_empty())
        .map(|r| r.host_port)
        .collect();
    // 8080 on every address; 8443 on :: is not allowed (no entry).
    assert_eq!(warned, [8080]);
    let web = reports.iter().find(|r| r.host_port == 8080).unwrap();
    assert!(web.warnings[0].contains("ufw allow 8080/tcp"));

    let mut open = explain(&config, &snap, 8080, L4Proto::Tcp, None);
    warn_ipv6_input_explained(&mut open, &snap, 8080, L4Proto::Tcp, Some(&drop));
    assert_eq!(open.warnings.len(), 1, "{open:?}");
    let mut v4_only = explain(&config, &snap, 27017, L4Proto::Tcp, None);
    warn_ipv6_input_explained(&mut v4_only, &snap, 27017, L4Proto::Tcp, Some(&drop));
    assert!(v4_only.warnings.is_empty(), "bound on 0.0.0.0 only");
}

/// Issue 22: in audit mode, the first-install path, `explain 27017`
/// said "closed" and `ports` "blocked" while the port answered from
/// outside. An unlisted port is open in audit mode, and says that
/// enforce mode would block it.
#[test]
fn audit_mode_says_open_and_that_enforce_would_block() {
    let audit = Config::from_toml_str(&format!("[guard]\nmode = \"audit\"\n{CONFIG}")).unwrap();
    let enforce = Config::from_toml_str(CONFIG).unwrap();
    let snap = snapshot();
    let verdict_of = |config: &Config, port: u16| {
        port_reports(config, &snap)
            .into_iter()
            .find(|r| r.host_port == port)
            .unwrap()
            .verdict
    };
    assert_eq!(verdict_of(&enforce, 27017), Verdict::Blocked);
    assert_eq!(verdict_of(&audit, 27017), Verdict::OpenInAudit);
    assert_eq!(
        verdict_of(&audit, 8080),
        Verdict::Allowed,
        "listed: allowed either way"
    );
    assert_eq!(verdict_of(&audit, 6379), Verdict::LocalOnly);
    let e = explain(&audit, &snap, 27017, L4Proto::Tcp, None);
    assert_eq!(e.answer, ExplainAnswer::OpenInAudit);
    assert_eq!(e.mode, portguard_config::Mode::Audit);
    assert!(
        e.reasons
            .iter()
            .any(|r| r.contains("it is OPEN; enforce mode would drop them")),
        "{e:?}"
    );
    assert_eq!(
        explain(&enforce, &snap, 27017, L4Proto::Tcp, None).answer,
        ExplainAnswer::Closed
    );
}

/// Issue 22: `explain 9000` without `--from` said "does not admit any
/// source" and "closed" for a port open to listed sources; an
/// unpublished port got both "the host's own firewall decides" and "new
/// connections are dropped"; `ports` showed a port open to some sources
/// like one open to all.
#[test]
fn a_port_open_to_listed_sources_says_so_and_an_unpublished_one_is_the_hosts() {
    let config = Config::from_toml_str(CONFIG).unwrap();
    let snap = snapshot();
    let e = explain(&config, &snap, 8086, L4Proto::Tcp, None);
    assert_eq!(e.answer, ExplainAnswer::OpenToListedSources, "{e:?}");
    assert!(
        e.reasons.iter().any(|r| r
            .starts_with("open only to the sources it lists: port 8086/tcp from 203.0.113.0/24")),
        "{e:?}"
    );
    assert!(
        e.reasons
            .iter()
            .any(|r| r.contains("from any other source")),
        "{e:?}"
    );
    assert!(
        !e.reasons
            .iter()
            .any(|r| r.contains("does not admit any source")),
        "{e:?}"
    );
    let tele = port_reports(&config, &snap)
        .into_iter()
        .find(|r| r.host_port == 8086)
        .unwrap();
    assert_eq!(tele.verdict, Verdict::Allowed);
    assert_eq!(tele.only_from, ["203.0.113.0/24"]);
    let web = port_reports(&config, &snap)
        .into_iter()
        .find(|r| r.host_port == 8080)
        .unwrap();
    assert!(web.only_from.is_empty(), "open to every source: {web:?}");
    let e = explain(&config, &snap, 1234, L4Proto::Tcp, None);
    assert_eq!(e.answer, ExplainAnswer::NotPublished);
    assert!(!e.reasons.iter().any(|r| r.contains("dropped")), "{e:?}");
}
