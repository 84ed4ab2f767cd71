//! The Prometheus text exposition format (0.0.4) of the values one
//! rendering shows: what `guardctl metrics` prints and node_exporter's
//! textfile collector reads.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use portguard_core::L4Proto;
use portguard_core::control::{ConfigSource, ProtectionTier};
use portguard_core::docker_api::DockerApiScan;
use portguard_core::verdict::Verdict;

use super::inventory::{Inventory, MAX_SERIES};
use crate::counters::{BUCKETS, Histogram};

/// Everything one rendering shows.
#[derive(Debug, Clone, PartialEq)]
pub struct Values {
    pub up: bool,
    pub tier: ProtectionTier,
    pub ruleset_installed: bool,
    pub restores: u64,
    pub ipv6_policy_restores: u64,
    pub ended_connections: u64,
    pub blocked: BTreeMap<(L4Proto, u16), u64>,
    /// Published ports per verdict.
    pub published: [(Verdict, usize); 5],
    /// Each published port (bounded).
    pub inventory: Inventory,
    /// The mode in force: in audit mode nothing is dropped.
    pub mode: portguard_config::Mode,
    pub docker_connected: bool,
    /// The Docker Engine's version while connected.
    pub docker_engine: Option<String>,
    /// TCP ports dockerd listens on beyond loopback (the Docker API):
    /// address, port, plain (2375, no TLS), and whether the guard closes it
    /// to untrusted interfaces.
    pub docker_api: Vec<(std::net::IpAddr, u16, bool, bool)>,
    /// How the latest look at dockerd's listeners told them apart; none
    /// before the first look.
    pub docker_api_scan: Option<DockerApiScan>,
    pub config_error: bool,
    /// What the guard guards with: the files, or a fallback.
    pub config_source: ConfigSource,
    pub reconcile_seconds: Histogram,
    pub last_verify: Option<SystemTime>,
}

pub const VERDICTS: [Verdict; 5] = [
    Verdict::Allowed,
    Verdict::Blocked,
    Verdict::OpenInAudit,
    Verdict::LocalOnly,
    Verdict::HostNetwork,
];

fn tier_name(tier: ProtectionTier) -> &'static str {
    match tier {
        ProtectionTier::OwnedPersistent => "owned-persistent",
        ProtectionTier::OwnedStandby => "owned-standby",
        ProtectionTier::Twin => "twin",
    }
}

fn source_name(source: ConfigSource) -> &'static str {
    match source {
        ConfigSource::Files => "files",
        ConfigSource::LastGood => "last-good",
        ConfigSource::Closed => "closed",
    }
}

/// A label value as the text format wants it (backslash, quote and newline
/// escaped).
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn gauge(out: &mut String, name: &str, help: &str, value: impl std::fmt::Display) {
    header(out, name, "gauge", help);
    let _ = writeln!(out, "{name} {value}");
}

fn counter(out: &mut String, name: &str, help: &str, value: u64) {
    header(out, name, "counter", help);
    let _ = writeln!(out, "{name} {value}");
}

/// An info metric: one series, always 1, whose one label carries the
/// value; only the header while there is no value.
fn info(out: &mut String, (name, label_name): (&str, &str), help: &str, value: Option<&str>) {
    header(out, name, "gauge", help);
    if let Some(value) = value {
        let _ = writeln!(out, "{name}{{{label_name}=\"{}\"}} 1", label(value));
    }
}

/// One series per published port, and how many were left out.
fn render_inventory(out: &mut String, inventory: &Inventory) {
    header(
        out,
        "portguard_published_port",
        "gauge",
        &format!(
            "1 for each published container port binding (a row of guardctl ports): host address, host port, protocol, container (compose project/service when known), verdict. At most {MAX_SERIES} series; see portguard_published_port_series_omitted."
        ),
    );
    for s in &inventory.series {
        let _ = writeln!(
            out,
            "portguard_published_port{{host_ip=\"{}\",port=\"{}\",proto=\"{}\",container=\"{}\",verdict=\"{}\"}} 1",
            label(&s.host_ip),
            s.port,
            label(s.proto.name()),
            label(&s.container),
            label(s.verdict.as_str())
        );
    }
    gauge(
        out,
        "portguard_published_port_series_omitted",
        &format!(
            "Published port bindings left out of portguard_published_port, which shows at most {MAX_SERIES} (blocked and open-in-audit rows are kept first, then allowed); 0 normally."
        ),
        inventory.omitted,
    );
}

/// The Prometheus text exposition format (0.0.4), what node_exporter's
/// textfile collector reads. Written by hand: a dozen metrics whose label
/// values come from fixed sets, port numbers, addresses and names (the
/// names are external input, every value goes through [`label`]) do not
/// need a registry, and client crates emit OpenMetrics (`# EOF`) or need a
/// global registry.
pub fn render(v: &Values) -> String {
    let mut out = String::new();
    gauge(
        &mut out,
        "portguard_up",
        "1 while portguardd runs; 0 is written when it stops cleanly.",
        u8::from(v.up),
    );
    info(
        &mut out,
        ("portguard_protection_tier_info", "tier"),
        "The protection tier in force (label tier), always 1.",
        Some(tier_name(v.tier)),
    );
    info(
        &mut out,
        ("portguard_mode_info", "mode"),
        "The mode in force (label mode: enforce, or audit, where nothing is dropped), always 1.",
        Some(match v.mode {
            portguard_config::Mode::Enforce => "enforce",
            portguard_config::Mode::Audit => "audit",
        }),
    );
    gauge(
        &mut out,
        "portguard_ruleset_installed",
        "1 if the guard's table is installed and was last verified to hold the desired ruleset.",
        u8::from(v.ruleset_installed),
    );
    counter(
        &mut out,
        "portguard_restores_total",
        "Times the guard's table was found missing or changed by somebody else and restored.",
        v.restores,
    );
    counter(
        &mut out,
        "portguard_ipv6_policy_restores_total",
        "Times the IPv6 FORWARD policy was found drop and set back to accept.",
        v.ipv6_policy_restores,
    );
    counter(
        &mut out,
        "portguard_ended_connections_total",
        "Live connections ended because the allowlist stopped admitting them.",
        v.ended_connections,
    );
    header(
        &mut out,
        "portguard_blocked_attempts_total",
        "counter",
        "New connections blocked (in audit mode: that would have been), by original destination host port and protocol, counted in the kernel.",
    );
    for ((proto, port), count) in &v.blocked {
        let _ = writeln!(
            out,
            "portguard_blocked_attempts_total{{port=\"{port}\",proto=\"{}\"}} {count}",
            label(proto.name())
        );
    }
    header(
        &mut out,
        "portguard_published_ports",
        "gauge",
        "Published container port bindings (the rows of guardctl ports), by verdict (allowed, blocked, local-only, host-network).",
    );
    for (verdict, count) in &v.published {
        let _ = writeln!(
            out,
            "portguard_published_ports{{verdict=\"{}\"}} {count}",
            label(verdict.as_str())
        );
    }
    render_inventory(&mut out, &v.inventory);
    gauge(
        &mut out,
        "portguard_docker_connected",
        "1 while portguardd is connected to the Docker Engine API.",
        u8::from(v.docker_connected),
    );
    info(
        &mut out,
        ("portguard_docker_engine_info", "version"),
        "The Docker Engine's version (label version) while portguardd is connected to it, always 1; absent while not connected.",
        v.docker_engine.as_deref(),
    );
    header(
        &mut out,
        "portguard_docker_api_exposed",
        "gauge",
        "1 for each TCP address dockerd listens on beyond loopback (the Docker API: root on this host to whoever reaches it); plain=\"true\" on 2375 (no TLS); closed=\"true\" while the guard drops it from untrusted interfaces (false in audit mode).",
    );
    for (addr, port, plain, closed) in &v.docker_api {
        let _ = writeln!(
            out,
            "portguard_docker_api_exposed{{address=\"{}\",port=\"{port}\",plain=\"{plain}\",closed=\"{closed}\"}} 1",
            label(&addr.to_string())
        );
    }
    info(
        &mut out,
        ("portguard_docker_api_scan_info", "method"),
        "How the daemon tells dockerd's TCP listeners from other programs' (label method: cgroup, file-descriptors, no-dockerd; blind, it cannot, and a Docker API on a port other than 2375 and 2376 is not seen), always 1; absent before the first look.",
        v.docker_api_scan.as_ref().map(DockerApiScan::method),
    );
    gauge(
        &mut out,
        "portguard_config_error",
        "1 if the configuration files are not in force (the last reload, or the start, found an error; see guardctl status).",
        u8::from(v.config_error),
    );
    info(
        &mut out,
        ("portguard_config_source_info", "source"),
        "What the guard guards with (label source: files; last-good, the files were refused at start and the last good configuration is in force; closed, refused with none kept, every published port closed), always 1.",
        Some(source_name(v.config_source)),
    );
    header(
        &mut out,
        "portguard_reconcile_duration_seconds",
        "histogram",
        "Time one reconcile took (verify, and apply or restore when needed).",
    );
    let mut cumulative = 0;
    for (i, le) in BUCKETS.iter().enumerate() {
        cumulative += v.reconcile_seconds.buckets.get(i).copied().unwrap_or(0);
        let _ = writeln!(
            out,
            "portguard_reconcile_duration_seconds_bucket{{le=\"{le}\"}} {cumulative}"
        );
    }
    let h = &v.reconcile_seconds;
    let _ = writeln!(
        out,
        "portguard_reconcile_duration_seconds_bucket{{le=\"+Inf\"}} {}",
        h.count
    );
    let _ = writeln!(out, "portguard_reconcile_duration_seconds_sum {}", h.sum);
    let _ = writeln!(
        out,
        "portguard_reconcile_duration_seconds_count {}",
        h.count
    );
    if let Some(at) = v.last_verify {
        gauge(
            &mut out,
            "portguard_last_verify_timestamp_seconds",
            "When the kernel's table was last verified to hold exactly the desired ruleset (Unix time).",
            at.duration_since(UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64()),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::super::inventory::PortSeries;
    use super::*;
    use std::time::Duration;

    fn series(port: u16, container: &str, verdict: Verdict) -> PortSeries {
        PortSeries {
            host_ip: "0.0.0.0".into(),
            port,
            proto: L4Proto::Tcp,
            container: container.into(),
            verdict,
        }
    }

    fn values() -> Values {
        let mut h = Histogram::default();
        h.observe(0.0003);
        h.observe(0.002);
        h.observe(7.0);
        Values {
            up: true,
            tier: ProtectionTier::OwnedPersistent,
            mode: portguard_config::Mode::Enforce,
            ruleset_installed: true,
            restores: 2,
            ipv6_policy_restores: 1,
            ended_connections: 4,
            blocked: [((L4Proto::Tcp, 8081), 3), ((L4Proto::Udp, 5353), 1)]
                .into_iter()
                .collect(),
            published: [
                (Verdict::Allowed, 1),
                (Verdict::Blocked, 2),
                (Verdict::OpenInAudit, 0),
                (Verdict::LocalOnly, 0),
                (Verdict::HostNetwork, 0),
            ],
            inventory: Inventory {
                series: vec![
                    series(8080, "shop/web", Verdict::Allowed),
                    series(8081, "db", Verdict::Blocked),
                    PortSeries {
                        host_ip: "::".into(),
                        ..series(8081, "db", Verdict::Blocked)
                    },
                ],
                omitted: 0,
            },
            docker_connected: true,
            docker_engine: Some("28.1.1".into()),
            docker_api: vec![("0.0.0.0".parse().unwrap(), 2375, true, true)],
            docker_api_scan: Some(DockerApiScan::Cgroup),
            config_error: false,
            config_source: ConfigSource::Files,
            reconcile_seconds: h,
            last_verify: Some(UNIX_EPOCH + Duration::from_millis(1_795_376_401_250)),
        }
    }

    #[test]
    fn text_format_names_types_and_labels() {
        let text = render(&values());
        for line in [
            "# TYPE portguard_up gauge",
            "portguard_up 1",
            "portguard_protection_tier_info{tier=\"owned-persistent\"} 1",
            "portguard_mode_info{mode=\"enforce\"} 1",
            "portguard_ruleset_installed 1",
            "# TYPE portguard_restores_total counter",
            "portguard_restores_total 2",
            "portguard_ipv6_policy_restores_total 1",
            "portguard_ended_connections_total 4",
            "# TYPE portguard_blocked_attempts_total counter",
            "portguard_blocked_attempts_total{port=\"8081\",proto=\"tcp\"} 3",
            "portguard_blocked_attempts_total{port=\"5353\",proto=\"udp\"} 1",
            "portguard_docker_api_exposed{address=\"0.0.0.0\",port=\"2375\",plain=\"true\",closed=\"true\"} 1",
            "# TYPE portguard_docker_api_scan_info gauge",
            "portguard_docker_api_scan_info{method=\"cgroup\"} 1",
            "portguard_published_ports{verdict=\"allowed\"} 1",
            "portguard_published_ports{verdict=\"blocked\"} 2",
            "portguard_published_ports{verdict=\"open-in-audit\"} 0",
            "portguard_published_ports{verdict=\"local-only\"} 0",
            "portguard_published_ports{verdict=\"host-network\"} 0",
            "# TYPE portguard_published_port gauge",
            "portguard_published_port{host_ip=\"0.0.0.0\",port=\"8080\",proto=\"tcp\",container=\"shop/web\",verdict=\"allowed\"} 1",
            "portguard_published_port{host_ip=\"0.0.0.0\",port=\"8081\",proto=\"tcp\",container=\"db\",verdict=\"blocked\"} 1",
            "portguard_published_port{host_ip=\"::\",port=\"8081\",proto=\"tcp\",container=\"db\",verdict=\"blocked\"} 1",
            "# TYPE portguard_published_port_series_omitted gauge",
            "portguard_published_port_series_omitted 0",
            "portguard_docker_connected 1",
            "# TYPE portguard_docker_engine_info gauge",
            "portguard_docker_engine_info{version=\"28.1.1\"} 1",
            "portguard_config_error 0",
            "# TYPE portguard_config_source_info gauge",
            "portguard_config_source_info{source=\"files\"} 1",
            "# TYPE portguard_reconcile_duration_seconds histogram",
            "portguard_reconcile_duration_seconds_bucket{le=\"0.0005\"} 1",
            "portguard_reconcile_duration_seconds_bucket{le=\"0.001\"} 1",
            "portguard_reconcile_duration_seconds_bucket{le=\"0.0025\"} 2",
            "portguard_reconcile_duration_seconds_bucket{le=\"5\"} 2",
            "portguard_reconcile_duration_seconds_bucket{le=\"+Inf\"} 3",
            "portguard_reconcile_duration_seconds_count 3",
            "portguard_last_verify_timestamp_seconds 1795376401.25",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line:?} missing in\n{text}"
            );
        }
        // Every sample has HELP and TYPE before it, once per family.
        let families: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .map(|l| l.split(' ').next().unwrap())
            .collect();
        let mut unique = families.clone();
        unique.dedup();
        assert_eq!(families, unique);
        assert_eq!(
            text.matches("# HELP ").count(),
            families.len(),
            "one HELP per family"
        );
        assert!(text.ends_with('\n'));
    }

    #[test]
    fn promtool_accepts_the_text() {
        let mut stopped = values();
        stopped.up = false;
        stopped.last_verify = None;
        stopped.blocked.clear();
        stopped.inventory = Inventory::default();
        stopped.docker_engine = None;
        let mut hostile = values();
        hostile.inventory.series[0].container = "a\"b\\c\nd\re\tf".into();
        hostile.docker_engine = Some("27.0\"\n\\".into());
        for v in [values(), stopped, hostile] {
            let text = render(&v);
            portguard_testkit::promtool::promtool(
                std::path::Path::new("."),
                &["check", "metrics"],
                text.as_bytes(),
            );
        }
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }

    /// A container name is external input: whoever may create containers
    /// names them (compose labels are free text). Quote, backslash and
    /// newline must not end the label or the line.
    #[test]
    fn a_hostile_container_name_stays_inside_its_label() {
        let mut v = values();
        v.inventory.series = vec![series(27017, "x\"} 1\nportguard_up 0\\", Verdict::Blocked)];
        let text = render(&v);
        let line = "portguard_published_port{host_ip=\"0.0.0.0\",port=\"27017\",proto=\"tcp\",container=\"x\\\"} 1\\nportguard_up 0\\\\\",verdict=\"blocked\"} 1";
        assert!(
            text.lines().any(|l| l == line),
            "{line:?} missing in\n{text}"
        );
        assert_eq!(
            text.lines()
                .filter(|l| l.starts_with("portguard_up "))
                .count(),
            1
        );
    }

    /// The source label follows what guards; the engine's version is shown
    /// only while Docker answers; rows beyond the bound are counted.
    #[test]
    fn config_source_engine_and_omitted_rows() {
        for (source, name) in [
            (ConfigSource::Files, "files"),
            (ConfigSource::LastGood, "last-good"),
            (ConfigSource::Closed, "closed"),
        ] {
            let mut v = values();
            v.config_source = source;
            let text = render(&v);
            let sources: Vec<&str> = text
                .lines()
                .filter(|l| l.starts_with("portguard_config_source_info{"))
                .collect();
            assert_eq!(
                sources,
                [format!(
                    "portguard_config_source_info{{source=\"{name}\"}} 1"
                )]
            );
        }
        let mut v = values();
        v.docker_engine = None;
        v.docker_connected = false;
        v.inventory.omitted = 88;
        let text = render(&v);
        assert!(text.contains("# TYPE portguard_docker_engine_info gauge\n"));
        assert!(!text.contains("portguard_docker_engine_info{"), "{text}");
        assert!(
            text.lines()
                .any(|l| l == "portguard_published_port_series_omitted 88")
        );
    }
}
