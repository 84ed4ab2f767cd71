//! What the guard does with each published port, in words an administrator
//! can act on: `guardctl ports` and `guardctl explain`.

use std::net::IpAddr;

use portguard_config::{AllowEntry, Config};
use serde::{Deserialize, Serialize};

use crate::docker_api::names_port;
use crate::hostfw::{InputDrop, ipv6_input_warning};
use crate::plan::entry_admits;
use crate::snapshot::{L4Proto, PublishedPort, Snapshot};

/// The verdict on one published port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// An allow entry opens it (perhaps only for some sources).
    Allowed,
    /// New connections from untrusted interfaces are dropped.
    Blocked,
    /// Audit mode: no allow entry lists it, so it is open (counted and
    /// logged); enforce mode would block it.
    OpenInAudit,
    /// Bound to a loopback address: unreachable from other hosts anyway.
    LocalOnly,
    /// The container uses the host's network: nothing crosses FORWARD, the
    /// guard cannot cover it (the host's INPUT firewall does).
    HostNetwork,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Allowed => "allowed",
            Verdict::Blocked => "blocked",
            Verdict::OpenInAudit => "open-in-audit",
            Verdict::LocalOnly => "local-only",
            Verdict::HostNetwork => "host-network",
        }
    }
}

/// One row of `guardctl ports` (field names are part of the JSON contract).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortReport {
    /// Host address, `0.0.0.0`/`::` style; `*` when bound to every address.
    pub host_ip: String,
    pub host_port: u16,
    pub proto: L4Proto,
    /// Container name (compose `project/service` in `compose` if known),
    /// or a Swarm service's name for ports of the ingress routing mesh.
    pub container: String,
    /// The Swarm service (the ingress port's, or the task container's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    pub compose: Option<String>,
    pub container_port: u16,
    pub verdict: Verdict,
    /// The entry that allows it, for `allowed`.
    pub allowed_by: Option<String>,
    /// For `allowed` by entries that all name sources: those sources,
    /// the only ones it is open to (empty when some entry opens it to
    /// any source).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub only_from: Vec<String>,
    /// What may still stop traffic the guard allows (the host's INPUT
    /// firewall on the docker-proxy path); see [`warn_ipv6_input`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// The entry that opens `port` for any source, else the first one that
/// opens it for some source.
fn allowing_entry<'a>(
    config: &'a Config,
    snapshot: &Snapshot,
    port: &PublishedPort,
) -> Option<&'a AllowEntry> {
    let opens = |e: &&AllowEntry| proto_and_port_match(e, snapshot, port.host_port, port.proto);
    config
        .allow
        .iter()
        .filter(opens)
        .find(|e| e.from.is_empty())
        .or_else(|| config.allow.iter().find(opens))
}

fn proto_and_port_match(
    entry: &AllowEntry,
    snapshot: &Snapshot,
    port: u16,
    proto: L4Proto,
) -> bool {
    let any_source = AllowEntry {
        from: Vec::new(),
        ..entry.clone()
    };
    entry_admits(&any_source, snapshot, port, proto, None)
}

/// Verdict on one published port.
pub fn verdict<'c>(
    config: &'c Config,
    snapshot: &Snapshot,
    port: &PublishedPort,
) -> (Verdict, Option<&'c AllowEntry>) {
    if port.host_network {
        return (Verdict::HostNetwork, None);
    }
    if port.is_local_only() {
        return (Verdict::LocalOnly, None);
    }
    match allowing_entry(config, snapshot, port) {
        Some(entry) => (Verdict::Allowed, Some(entry)),
        None if config.guard.mode == portguard_config::Mode::Audit => (Verdict::OpenInAudit, None),
        None => (Verdict::Blocked, None),
    }
}

/// Verdicts on every published port, sorted by port, protocol, address.
pub fn port_reports(config: &Config, snapshot: &Snapshot) -> Vec<PortReport> {
    let mut ports: Vec<&PublishedPort> = snapshot.published.iter().collect();
    ports.sort_by(|a, b| {
        (a.host_port, a.proto, a.host_ip, &a.container.name).cmp(&(
            b.host_port,
            b.proto,
            b.host_ip,
            &b.container.name,
        ))
    });
    ports
        .into_iter()
        .map(|port| {
            let (verdict, entry) = verdict(config, snapshot, port);
            let only_from = match entry {
                Some(entry) if !entry.from.is_empty() => {
                    listed_sources(config, snapshot, port.host_port, port.proto)
                }
                _ => Vec::new(),
            };
            PortReport {
                host_ip: port
                    .host_ip
                    .map_or_else(|| "*".to_string(), |ip| ip.to_string()),
                host_port: port.host_port,
                proto: port.proto,
                container: port.container.name.clone(),
                compose: port.container.compose.clone(),
                service: port.container.service.clone(),
                container_port: port.container_port,
                verdict,
                allowed_by: entry.map(AllowEntry::describe),
                only_from,
                warnings: Vec::new(),
            }
        })
        .collect()
}

/// The sources every entry that opens `port` lists, in entry order, each
/// once (the entries all name sources).
fn listed_sources(config: &Config, snapshot: &Snapshot, port: u16, proto: L4Proto) -> Vec<String> {
    let mut sources: Vec<String> = Vec::new();
    for entry in config
        .allow
        .iter()
        .filter(|e| proto_and_port_match(e, snapshot, port, proto))
    {
        for cidr in &entry.from {
            let cidr = cidr.to_string();
            if !sources.contains(&cidr) {
                sources.push(cidr);
            }
        }
    }
    sources
}

/// `guardctl explain`'s one-word answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ExplainAnswer {
    /// New connections from the source asked about are let through.
    Open,
    /// New connections from untrusted interfaces are dropped.
    Closed,
    /// Audit mode: no allow entry admits it, so it is open (counted and
    /// logged); enforce mode would drop it.
    OpenInAudit,
    /// Asked about no source: open to the sources allow entries list, and
    /// to no other.
    OpenToListedSources,
    /// No container publishes the port: the host's own firewall decides.
    NotPublished,
    /// Bound to loopback only.
    LocalOnly,
    /// Published by a container on the host network, which the guard
    /// cannot cover.
    HostNetwork,
}

impl ExplainAnswer {
    pub fn as_str(self) -> &'static str {
        match self {
            ExplainAnswer::Open => "open",
            ExplainAnswer::OpenToListedSources => "open-to-listed-sources",
            ExplainAnswer::Closed => "closed",
            ExplainAnswer::OpenInAudit => "open-in-audit",
            ExplainAnswer::NotPublished => "not-published",
            ExplainAnswer::LocalOnly => "local-only",
            ExplainAnswer::HostNetwork => "host-network",
        }
    }
}

/// `guardctl explain PORT[/proto] [--from ADDR]`: the answer and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Explanation {
    pub answer: ExplainAnswer,
    /// The mode the answer holds in (`audit`: nothing is dropped).
    #[serde(default)]
    pub mode: portguard_config::Mode,
    pub reasons: Vec<String>,
    /// As [`PortReport::warnings`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

pub fn explain(
    config: &Config,
    snapshot: &Snapshot,
    port: u16,
    proto: L4Proto,
    from: Option<IpAddr>,
) -> Explanation {
    let mut reasons = Vec::new();
    let published: Vec<&PublishedPort> = snapshot
        .published
        .iter()
        .filter(|p| p.host_port == port && p.proto == proto)
        .collect();
    let target = format!("{port}/{proto}");
    let source = from.map_or_else(|| "any source".to_string(), |ip| ip.to_string());
    if published.is_empty()
        && let Some(api) = explain_docker_api(config, snapshot, port, proto, from)
    {
        return api;
    }
    if published.is_empty() {
        reasons.push(format!(
            "no container publishes {target}; portguard only judges published ports, so the host's own firewall decides"
        ));
    }
    for p in &published {
        let bound = p
            .host_ip
            .map_or_else(|| "every address".to_string(), |ip| ip.to_string());
        reasons.push(format!(
            "{target} is published by {} {} (port {}) on {bound}",
            if p.container.service.as_deref() == Some(p.container.name.as_str()) {
                "Swarm service"
            } else {
                "container"
            },
            p.container.name,
            p.container_port
        ));
    }
    let exposed: Vec<&&PublishedPort> = published.iter().filter(|p| p.is_exposed()).collect();
    if !published.is_empty() && exposed.is_empty() {
        let answer = if published.iter().all(|p| p.host_network) {
            reasons.push("the container uses the host network: traffic never crosses FORWARD and portguard cannot cover it".into());
            ExplainAnswer::HostNetwork
        } else {
            reasons.push("it is bound to loopback only: unreachable from other hosts".into());
            ExplainAnswer::LocalOnly
        };
        return Explanation {
            answer,
            mode: config.guard.mode,
            reasons,
            warnings: Vec::new(),
        };
    }
    let mut open = false;
    let mut some_sources = false;
    for entry in &config.allow {
        if !proto_and_port_match(entry, snapshot, port, proto) {
            continue;
        }
        if entry.admits_source(from) {
            reasons.push(format!("allowed for {source} by {}", entry.describe()));
            open = true;
        } else if from.is_none() {
            // Asked about no source: the entry opens it to the sources it
            // lists, not to every source.
            some_sources = true;
            reasons.push(format!(
                "open only to the sources it lists: {}",
                entry.describe()
            ));
        } else {
            reasons.push(format!("{} does not admit {source}", entry.describe()));
        }
    }
    // An unpublished port is the host firewall's (said above), never
    // "dropped" by the guard.
    if !open && !published.is_empty() {
        let source = if some_sources {
            "any other source".to_string()
        } else {
            source
        };
        reasons.push(not_admitted(
            config.guard.mode,
            "allow entry",
            &target,
            &source,
        ));
    }
    if !config.guard.trusted_interfaces.is_empty() {
        let names: Vec<&str> = config
            .guard
            .trusted_interfaces
            .iter()
            .map(|n| n.as_str())
            .collect();
        reasons.push(format!(
            "traffic arriving on trusted interfaces ({}) is never filtered",
            names.join(", ")
        ));
    }
    let answer = match (published.is_empty(), open, some_sources) {
        (true, _, _) => ExplainAnswer::NotPublished,
        (false, true, _) => ExplainAnswer::Open,
        (false, false, true) => ExplainAnswer::OpenToListedSources,
        (false, false, false) => not_admitted_answer(config.guard.mode),
    };
    Explanation {
        answer,
        mode: config.guard.mode,
        reasons,
        warnings: Vec::new(),
    }
}

/// `guardctl explain` for a port dockerd listens on (and no container
/// publishes): `None` for any other port.
pub fn explain_docker_api(
    config: &Config,
    snapshot: &Snapshot,
    port: u16,
    proto: L4Proto,
    from: Option<IpAddr>,
) -> Option<Explanation> {
    let listeners: Vec<_> = snapshot
        .docker_api()
        .filter(|l| proto == L4Proto::Tcp && l.port == port)
        .collect();
    let first = listeners.first()?;
    let target = format!("{port}/{proto}");
    let mut reasons = vec![format!(
        "dockerd (pid {}) listens on {}: the Docker API{}",
        first.pid,
        std::net::SocketAddr::new(first.addr, port),
        if first.is_plain() {
            ", without TLS: whoever reaches it is root on this host"
        } else {
            ""
        }
    )];
    if listeners.iter().all(|l| l.is_local_only()) {
        reasons.push("it is bound to loopback only: unreachable from other hosts".into());
        return Some(Explanation {
            answer: ExplainAnswer::LocalOnly,
            mode: config.guard.mode,
            reasons,
            warnings: Vec::new(),
        });
    }
    let source = from.map_or_else(|| "any source".to_string(), |ip| ip.to_string());
    let mut open = false;
    for entry in &config.allow {
        if !names_port(entry, snapshot, port) {
            continue;
        }
        if entry.from.is_empty() {
            reasons.push(format!(
                "{} has no `from`, so it does not open the Docker API",
                entry.describe()
            ));
        } else if entry.admits_source(from) {
            reasons.push(format!("allowed for {source} by {}", entry.describe()));
            open = true;
        } else {
            reasons.push(format!("{} does not admit {source}", entry.describe()));
        }
    }
    if !open {
        reasons.push(not_admitted(
            config.guard.mode,
            "allow entry with `from`",
            &target,
            &source,
        ));
    }
    Some(Explanation {
        answer: if open {
            ExplainAnswer::Open
        } else {
            not_admitted_answer(config.guard.mode)
        },
        mode: config.guard.mode,
        reasons,
        warnings: Vec::new(),
    })
}

/// Why no `entries` admits `target` from `source`, in the mode in force.
pub(crate) fn not_admitted(
    mode: portguard_config::Mode,
    entries: &str,
    target: &str,
    source: &str,
) -> String {
    match mode {
        portguard_config::Mode::Enforce => format!(
            "no {entries} admits {target} from {source}: new connections from untrusted interfaces are dropped"
        ),
        portguard_config::Mode::Audit => format!(
            "no {entries} admits {target} from {source}: audit mode only counts and logs new connections, so it is OPEN; enforce mode would drop them"
        ),
    }
}

/// The answer when no entry admits the connection, in the mode in force.
pub(crate) fn not_admitted_answer(mode: portguard_config::Mode) -> ExplainAnswer {
    match mode {
        portguard_config::Mode::Enforce => ExplainAnswer::Closed,
        portguard_config::Mode::Audit => ExplainAnswer::OpenInAudit,
    }
}

/// Whether a binding (`::`, an IPv6 address, or `*` for every address)
/// takes IPv6 connections.
fn bound_on_ipv6(host_ip: &str) -> bool {
    host_ip == "*" || host_ip.parse::<IpAddr>().is_ok_and(|ip| ip.is_ipv6())
}

/// Adds the IPv6 INPUT warning to every allowed port bound on IPv6 when
/// the host's IPv6 INPUT path drops by default (ufw's `default deny
/// incoming`): the guard lets the connection through, the host firewall
/// drops it on the docker-proxy path.
pub fn warn_ipv6_input(reports: &mut [PortReport], drop: Option<&InputDrop>) {
    let Some(drop) = drop else { return };
    for report in reports
        .iter_mut()
        .filter(|r| r.verdict == Verdict::Allowed && bound_on_ipv6(&r.host_ip))
    {
        report
            .warnings
            .push(ipv6_input_warning(drop, report.host_port, report.proto));
    }
}

/// The same warning for `explain`, when the port is open and published on IPv6.
pub fn warn_ipv6_input_explained(
    explanation: &mut Explanation,
    snapshot: &Snapshot,
    port: u16,
    proto: L4Proto,
    drop: Option<&InputDrop>,
) {
    let Some(drop) = drop else { return };
    let on_ipv6 = snapshot.published.iter().any(|p| {
        p.host_port == port
            && p.proto == proto
            && p.is_exposed()
            && p.host_ip.is_none_or(|ip| ip.is_ipv6())
    });
    if explanation.answer == ExplainAnswer::Open && on_ipv6 {
        explanation
            .warnings
            .push(ipv6_input_warning(drop, port, proto));
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::docker_api::dockerd_on;
    use crate::wire::{assert_wire, wire_error};

    #[test]
    fn explain_names_the_docker_api_and_what_opens_it() {
        let config = Config::from_toml_str(
            "[[allow]]\nport = 2375\n[[allow]]\nport = 2375\nfrom = [\"192.0.2.9\"]\n",
        )
        .unwrap();
        let any =
            explain_docker_api(&config, &dockerd_on("0.0.0.0"), 2375, L4Proto::Tcp, None).unwrap();
        assert_eq!(any.answer, ExplainAnswer::Closed, "{any:?}");
        assert!(any.reasons[0].contains("without TLS"), "{any:?}");
        assert!(any.reasons[1].contains("has no `from`"), "{any:?}");
        let ci = "192.0.2.9".parse().ok();
        let ci =
            explain_docker_api(&config, &dockerd_on("0.0.0.0"), 2375, L4Proto::Tcp, ci).unwrap();
        assert_eq!(ci.answer, ExplainAnswer::Open, "{ci:?}");
        assert!(
            explain_docker_api(&config, &dockerd_on("0.0.0.0"), 2375, L4Proto::Udp, None).is_none()
        );
        assert!(
            explain_docker_api(&config, &dockerd_on("0.0.0.0"), 2376, L4Proto::Tcp, None).is_none()
        );
    }

    #[test]
    fn explain_answers_on_the_wire() {
        let table = [
            (ExplainAnswer::Open, "open"),
            (ExplainAnswer::Closed, "closed"),
            (ExplainAnswer::OpenInAudit, "open-in-audit"),
            (ExplainAnswer::OpenToListedSources, "open-to-listed-sources"),
            (ExplainAnswer::NotPublished, "not-published"),
            (ExplainAnswer::LocalOnly, "local-only"),
            (ExplainAnswer::HostNetwork, "host-network"),
        ];
        for (answer, text) in table {
            assert_wire(&answer, text);
            assert_eq!(answer.as_str(), text);
        }
        let error = wire_error::<ExplainAnswer>("allowed");
        assert!(
            error.contains("unknown variant `allowed`, expected one of `open`, `closed`"),
            "{error}"
        );
    }

    /// An answer as the daemon wrote it while `answer` was a string, and
    /// before it said the mode (issue 22: every answer carries it now).
    #[test]
    fn an_explanation_from_the_string_typed_daemon_reads() {
        let json = r#"{"answer":"not-published","reasons":["no container publishes 1234/tcp; portguard only judges published ports, so the host's own firewall decides"]}"#;
        let explanation: Explanation = serde_json::from_str(json).unwrap();
        assert_eq!(explanation.answer, ExplainAnswer::NotPublished);
        assert_eq!(explanation.mode, portguard_config::Mode::Enforce);
        assert_eq!(
            serde_json::to_string(&explanation).unwrap(),
            json.replace(r#""reasons""#, r#""mode":"enforce","reasons""#)
        );
    }
}
