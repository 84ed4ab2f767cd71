//! The fleet inventory: the rows of `guardctl ports` as one series each
//! (`portguard_published_port{host_ip,port,proto,container,verdict}`), so
//! that a query over many hosts can say which host publishes what, for
//! which container, and whether it is open.
//!
//! The series are bounded: a host with thousands of published ports (a
//! port range, say) must not flood every Prometheus that scrapes the
//! fleet. Above [`MAX_SERIES`] rows, the rows a person must see are kept
//! first (see [`keep_rank`]) and the rest are counted as omitted.

use portguard_core::L4Proto;
use portguard_core::verdict::{PortReport, Verdict};

/// At most this many `portguard_published_port` series per host.
pub const MAX_SERIES: usize = 512;

/// The `container` label's longest value, in characters. A compose
/// project or service name is whatever a label says (free text, from
/// whoever wrote the compose file or built the image); a long one is cut
/// to this, ending in `…`, so that one host cannot make every series it
/// sends kilobytes long. Rows are unique without it: one host address,
/// port and protocol are published once.
pub const MAX_CONTAINER_CHARS: usize = 128;

/// One published port binding as a series' labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortSeries {
    /// As `guardctl ports` prints it (`0.0.0.0`, `::`, `*` for every
    /// address).
    pub host_ip: String,
    pub port: u16,
    pub proto: L4Proto,
    /// Compose `project/service` when known, else the container's name
    /// (the Swarm service's for ports of the routing mesh): the name that
    /// stays the same when the container is recreated.
    pub container: String,
    pub verdict: Verdict,
}

/// The series to show, and how many rows were left out for the bound.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Inventory {
    /// In the order of `guardctl ports` (port, protocol, address).
    pub series: Vec<PortSeries>,
    pub omitted: usize,
}

/// Which rows stay when there are too many: ports that are refused or
/// open without a listing (what an alert or a person looks for) before
/// allowed ones, then those the guard cannot cover (host network), then
/// those only loopback reaches.
fn keep_rank(verdict: Verdict) -> u8 {
    match verdict {
        Verdict::Blocked => 0,
        Verdict::OpenInAudit => 1,
        Verdict::Allowed => 2,
        Verdict::HostNetwork => 3,
        Verdict::LocalOnly => 4,
    }
}

/// The inventory of `reports` (the rows of `guardctl ports`, sorted by
/// port), at most `bound` series.
pub fn inventory(reports: &[PortReport], bound: usize) -> Inventory {
    let mut order: Vec<usize> = (0..reports.len()).collect();
    // Stable: within a verdict, the rows' own order (by port).
    order.sort_by_key(|&i| (keep_rank(reports[i].verdict), reports[i].host_port));
    let omitted = order.len().saturating_sub(bound);
    order.truncate(bound);
    order.sort_unstable();
    Inventory {
        series: order
            .into_iter()
            .map(|i| {
                let r = &reports[i];
                PortSeries {
                    host_ip: r.host_ip.clone(),
                    port: r.host_port,
                    proto: r.proto,
                    container: bounded(r.compose.as_deref().unwrap_or(&r.container)),
                    verdict: r.verdict,
                }
            })
            .collect(),
        omitted,
    }
}

/// `name`, or its first [`MAX_CONTAINER_CHARS`] - 1 characters and `…`.
fn bounded(name: &str) -> String {
    match name.char_indices().nth(MAX_CONTAINER_CHARS) {
        None => name.to_string(),
        Some(_) => {
            let cut = name
                .char_indices()
                .nth(MAX_CONTAINER_CHARS - 1)
                .map_or(name.len(), |(at, _)| at);
            format!("{}…", &name[..cut])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(port: u16, verdict: Verdict) -> PortReport {
        PortReport {
            host_ip: "0.0.0.0".into(),
            host_port: port,
            proto: L4Proto::Tcp,
            container: format!("c{port}"),
            service: None,
            compose: None,
            container_port: 80,
            verdict,
            allowed_by: None,
            only_from: Vec::new(),
            warnings: Vec::new(),
        }
    }

    #[test]
    fn each_row_is_a_series_named_as_compose_knows_it() {
        let mut mongo = report(27017, Verdict::Blocked);
        mongo.container = "shop-mongo-1".into();
        mongo.compose = Some("shop/mongo".into());
        let mut v6 = report(8080, Verdict::Allowed);
        v6.host_ip = "::".into();
        v6.proto = L4Proto::Udp;
        let got = inventory(&[v6, mongo], MAX_SERIES);
        assert_eq!(got.omitted, 0);
        assert_eq!(
            got.series,
            [
                PortSeries {
                    host_ip: "::".into(),
                    port: 8080,
                    proto: L4Proto::Udp,
                    container: "c8080".into(),
                    verdict: Verdict::Allowed,
                },
                PortSeries {
                    host_ip: "0.0.0.0".into(),
                    port: 27017,
                    proto: L4Proto::Tcp,
                    container: "shop/mongo".into(),
                    verdict: Verdict::Blocked,
                },
            ]
        );
    }

    /// 600 rows: 200 allowed on the low ports, 100 blocked on the high
    /// ones, 300 local-only in between. The blocked rows are kept although
    /// their ports come last, then allowed, then local-only by port.
    #[test]
    fn above_the_bound_blocked_rows_are_kept_first() {
        let reports: Vec<PortReport> = (0..600u16)
            .map(|i| {
                let verdict = match i {
                    0..200 => Verdict::Allowed,
                    200..500 => Verdict::LocalOnly,
                    _ => Verdict::Blocked,
                };
                report(1000 + i, verdict)
            })
            .collect();
        let got = inventory(&reports, MAX_SERIES);
        assert_eq!(got.series.len(), 512);
        assert_eq!(got.omitted, 88);
        let count = |v: Verdict| got.series.iter().filter(|s| s.verdict == v).count();
        assert_eq!(count(Verdict::Blocked), 100);
        assert_eq!(count(Verdict::Allowed), 200);
        assert_eq!(count(Verdict::LocalOnly), 212);
        // The local-only rows left out are the highest ports.
        let last_local = got
            .series
            .iter()
            .filter(|s| s.verdict == Verdict::LocalOnly)
            .map(|s| s.port)
            .max();
        assert_eq!(last_local, Some(1000 + 200 + 211));
        // Still in the order of guardctl ports.
        assert!(got.series.windows(2).all(|w| w[0].port < w[1].port));
    }

    #[test]
    fn open_in_audit_comes_before_allowed() {
        let reports = [
            report(1, Verdict::Allowed),
            report(2, Verdict::HostNetwork),
            report(3, Verdict::OpenInAudit),
        ];
        let got = inventory(&reports, 1);
        assert_eq!(got.omitted, 2);
        assert_eq!(got.series[0].verdict, Verdict::OpenInAudit);
        let got = inventory(&reports, 2);
        let ports: Vec<u16> = got.series.iter().map(|s| s.port).collect();
        assert_eq!(ports, [1, 3]);
    }

    #[test]
    fn a_long_compose_name_is_cut_to_the_bound() {
        let mut long = report(8080, Verdict::Blocked);
        long.compose = Some(format!("{}/{}", "p".repeat(100), "é".repeat(100)));
        let mut exact = report(8081, Verdict::Blocked);
        exact.container = "x".repeat(MAX_CONTAINER_CHARS);
        let got = inventory(&[long, exact], MAX_SERIES);
        let cut = &got.series[0].container;
        assert_eq!(cut.chars().count(), MAX_CONTAINER_CHARS);
        assert_eq!(cut, &format!("{}/{}…", "p".repeat(100), "é".repeat(26)));
        assert_eq!(got.series[1].container, "x".repeat(MAX_CONTAINER_CHARS));
    }
}
