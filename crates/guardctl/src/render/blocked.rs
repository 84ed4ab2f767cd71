//! `guardctl blocked`, and the blocked-attempt lines of `guardctl status`.

use portguard_config::printable;
use portguard_core::control::{BlockedPort, BlockedReport};

use super::table::table;
use super::text::plural;

/// `8081/tcp`
fn port_name(p: &BlockedPort) -> String {
    format!("{}/{}", p.port, p.proto)
}

/// `203.0.113.9 (120), 198.51.100.4 (3)`; `(≥120)` when the counts are
/// lower bounds.
fn sources(p: &BlockedPort) -> String {
    let at_least = if p.top_sources_error > 0 { "≥" } else { "" };
    p.top_sources
        .iter()
        .map(|s| format!("{} ({at_least}{})", s.source, s.attempts))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `guardctl blocked`'s text.
pub fn render_blocked(report: &BlockedReport) -> String {
    let what = if report.audit {
        "New connections that would have been blocked (audit mode)"
    } else {
        "Blocked new connections"
    };
    let mut text = format!(
        "{what} in the last {}, as the kernel reported them (at most {} a second per protocol and chain):\n",
        plural(u64::from(report.window_minutes), "minute", "minutes"),
        report.report_limit_per_second
    );
    if let Some(error) = &report.error {
        text.push_str(&format!(
            "not following blocked attempts: {}\n",
            printable(error)
        ));
    }
    if report.ports.is_empty() {
        text.push_str("none.\n");
    } else {
        let rows: Vec<Vec<String>> = report
            .ports
            .iter()
            .map(|p| {
                vec![
                    port_name(p),
                    p.attempts.to_string(),
                    p.distinct_sources.to_string(),
                    sources(p),
                ]
            })
            .collect();
        text.push_str(&table(
            &["PORT", "ATTEMPTS", "SOURCES", "TOP SOURCES"],
            &rows,
            None,
        ));
    }
    if report.untracked_attempts > 0 {
        text.push_str(&format!(
            "{} at further ports (the daemon keeps {} ports apart)\n",
            plural(report.untracked_attempts, "attempt", "attempts"),
            report.ports.len()
        ));
    }
    if report.lost_reports > 0 {
        text.push_str(&format!(
            "{} lost since the start: the daemon could not keep up\n",
            plural(report.lost_reports, "report", "reports")
        ));
    }
    text
}

/// `guardctl status`'s lines for the last hour's top three ports.
pub fn status_lines(ports: &[BlockedPort]) -> Vec<String> {
    ports
        .iter()
        .map(|p| {
            format!(
                "{}: {} in the last hour, from {} (most: {}).",
                port_name(p),
                plural(p.attempts, "attempt", "attempts"),
                plural(p.distinct_sources, "source", "sources"),
                sources(p)
            )
        })
        .collect()
}
