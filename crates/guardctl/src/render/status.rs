//! `guardctl status` in plain words: one labelled sentence per line, each
//! readable without knowing the source. A new line is one more
//! [`Lines::push`] in [`render_status`]; the golden files under
//! `tests/golden/` pin the whole text.

use portguard_config::{Mode, Scope, printable};
use portguard_core::control::{
    ConfigSource, Ipv6ForwardPolicy, ProtectionTier, ReconcileOutcome, Status,
};
use portguard_core::docker_api::{DockerApiReport, DockerApiScan, DockerApiVerdict};
use portguard_core::hostfw::{Agreement, DriverSource, FirewallDriver, FirewallStatus};
use portguard_core::ip6_forward::{Ip6Firewall, Ipv6ForwardDrop};

use super::blocked;
use super::style::Style;
use super::text::{plural, printable_lines};

/// Labelled lines, the labels aligned.
#[derive(Default)]
struct Lines(Vec<(&'static str, String)>);

impl Lines {
    fn push(&mut self, label: &'static str, text: String) {
        self.0.push((label, text));
    }

    /// `Label: text`, the texts aligned; a text of several lines has
    /// them indented under its first.
    fn render(&self) -> String {
        let width = self.0.iter().map(|(l, _)| l.len()).max().unwrap_or(0) + 1;
        let indent = format!("\n{:width$} ", "");
        self.0
            .iter()
            .map(|(label, text)| {
                format!(
                    "{:<width$} {}\n",
                    format!("{label}:"),
                    text.replace('\n', &indent)
                )
            })
            .collect()
    }
}

/// What a start kept judging until Docker answers (see
/// `portguard_core::Judged`).
fn kept_line(kept: &portguard_core::Judged) -> String {
    let mut parts = Vec::new();
    if !kept.bridges.is_empty() {
        let names: Vec<String> = kept
            .bridges
            .iter()
            .map(|b| printable(b).into_owned())
            .collect();
        parts.push(format!("bridges {}", names.join(", ")));
    }
    let ports: Vec<String> = kept
        .tcp
        .iter()
        .map(|p| format!("{p}/tcp"))
        .chain(kept.udp.iter().map(|p| format!("{p}/udp")))
        .chain(
            kept.docker_api
                .iter()
                .map(|p| format!("{p}/tcp (Docker API)")),
        )
        .collect();
    if !ports.is_empty() {
        parts.push(format!("ports {}", ports.join(", ")));
    }
    format!(
        "until Docker answers, judging what the guard judged before this start: {}.",
        parts.join("; ")
    )
}

/// `guardctl status --brief`: the mode and what happens to the
/// published ports, in one line (the package prints it on install).
pub fn brief(status: &Status) -> String {
    use portguard_core::verdict::Verdict;
    let count = |verdict: Verdict| {
        status
            .published
            .iter()
            .filter(|p| p.verdict == verdict)
            .count() as u64
    };
    let mut parts = vec![match status.mode {
        Mode::Enforce => format!(
            "enforcing: {} closed to the outside",
            plural(count(Verdict::Blocked), "published port", "published ports")
        ),
        Mode::Audit => format!(
            "audit mode, nothing is dropped: {} open that enforce mode would close",
            plural(
                count(Verdict::OpenInAudit),
                "published port",
                "published ports"
            )
        ),
    }];
    parts.push(format!("{} allowed", count(Verdict::Allowed)));
    let local = count(Verdict::LocalOnly);
    if local > 0 {
        parts.push(format!("{local} local-only"));
    }
    let host = count(Verdict::HostNetwork);
    if host > 0 {
        parts.push(format!("{host} on the host network (not coverable)"));
    }
    let docker = if status.docker.connected {
        "`guardctl ports` lists them"
    } else {
        "Docker is not connected yet: every port it publishes is closed unless listed; `guardctl ports` lists them"
    };
    format!("portguard: {} ({docker}).", parts.join(", "))
}

/// Everything `guardctl status` prints above the table of ports.
pub fn render_status(status: &Status, style: &Style) -> String {
    let mut lines = Lines::default();
    lines.push("Guard", guard_line(status, style));
    lines.push("Ruleset", ruleset_line(status, style));
    lines.push("Tables", tables_line(status.protection).into());
    if let Some(r) = &status.last_reconcile {
        lines.push(
            "Last check",
            format!(
                "at {}, woken by {}, took {:.1} ms: {}.",
                printable(&r.at),
                trigger_words(&r.trigger),
                r.duration_ms,
                outcome_words(&r.outcome)
            ),
        );
    }
    lines.push("Docker", docker_line(status, style));
    if !status.kept.is_empty() {
        lines.push("Kept", kept_line(&status.kept));
    }
    for unmatched in &status.unmatched {
        lines.push(
            "Opens nothing",
            format!("{}.", printable(&unmatched.to_string())),
        );
    }
    for claim in &status.untrusted_claims {
        lines.push("Untrusted", style.paint(&format!("{claim}."), "33"));
    }
    for api in &status.docker_api {
        lines.push("Docker API", docker_api_line(api, style));
    }
    if let Some(DockerApiScan::Blind { reason }) = &status.docker_api_scan {
        lines.push(
            "Docker API",
            style.paint(
                &format!(
                    "WARNING: the guard cannot tell which TCP listeners are dockerd's: {}. \
                     A Docker API on a port other than 2375 and 2376 is not closed.",
                    printable(reason)
                ),
                "31;1",
            ),
        );
    }
    if let Some(firewall) = &status.firewall {
        lines.push("Firewall", firewall_line(firewall, style));
    }
    lines.push("IPv6", ipv6_line(status, style));
    lines.push("Restores", restores_line(status));
    lines.push(
        "Blocked",
        format!(
            "{} {} since the table was last replaced.",
            plural(
                status.blocked_packets,
                "new connection attempt from outside",
                "new connection attempts from outside"
            ),
            match status.mode {
                Mode::Audit => "would have been dropped",
                Mode::Enforce => "dropped",
            }
        ),
    );
    for top in blocked::status_lines(&status.blocked_last_hour) {
        lines.push("Top blocked", top);
    }
    if status.ended_connections > 0 {
        lines.push(
            "Ended",
            format!(
                "{} ended because the allowlist stopped admitting them.",
                plural(
                    status.ended_connections,
                    "live connection was",
                    "live connections were"
                )
            ),
        );
    }
    lines.push("Config", config_line(status, style));
    lines.render()
}

fn guard_line(status: &Status, style: &Style) -> String {
    let scope = match status.scope {
        Scope::All => {
            "every new forwarded connection from outside is dropped unless an allow entry admits it"
        }
        Scope::Containers => {
            "new connections from outside to published container ports are dropped unless an allow entry admits them"
        }
    };
    match (status.ruleset.installed, status.mode) {
        (false, _) => style.paint(
            "NOT PROTECTING: the guard's ruleset is not installed in the kernel.",
            "31;1",
        ),
        (true, Mode::Audit) => format!(
            "{}: nothing is dropped; attempts that would be are counted and logged.",
            style.paint("auditing", "33")
        ),
        (true, Mode::Enforce) => format!("{}: {scope}.", style.paint("enforcing", "32")),
    }
}

fn ruleset_line(status: &Status, style: &Style) -> String {
    match (status.ruleset.installed, &status.ruleset.verified_at) {
        (true, Some(at)) => format!(
            "installed, and found intact in the kernel at {}.",
            printable(at)
        ),
        (true, None) => "installed, not verified yet.".into(),
        (false, _) => style.paint(
            "missing from the kernel; see the daemon's log (journalctl -u portguard).",
            "31",
        ),
    }
}

fn tables_line(tier: ProtectionTier) -> &'static str {
    match tier {
        ProtectionTier::OwnedPersistent => {
            "owned by the daemon and persistent: the kernel refuses changes by anybody else, and the table stays when the daemon stops."
        }
        ProtectionTier::OwnedStandby => {
            "owned by the daemon, with a standby copy that guards while the daemon is stopped."
        }
        ProtectionTier::Twin => {
            "two copies, each put back at once when somebody deletes or changes it. \
             `nft flush ruleset` deletes both, and Docker's NAT rules, at once: until they are \
             back, published ports answer through docker-proxy (about a quarter of attempts \
             during a flush storm on Linux 5.10). A 5.12+ kernel (owned tables) or Docker's \
             \"userland-proxy\": false closes that window."
        }
    }
}

/// What woke the daemon's loop (`start`, `docker`, `netfilter change by
/// nft (pid 42)`, ...), in words.
fn trigger_words(trigger: &str) -> String {
    match trigger {
        "start" => "the daemon's start".into(),
        "docker" => "a change in Docker".into(),
        "docker api" => "a change in what dockerd listens on".into(),
        "reload" => "a configuration reload".into(),
        "reload rollback" => "a reload that had to be rolled back".into(),
        "periodic verify" => "the periodic check".into(),
        "monitor overflow" => "lost change notifications (everything was checked)".into(),
        other if other.starts_with("netfilter change") => format!("a {}", printable(other)),
        other => printable(other).into_owned(),
    }
}

/// The daemon's reconcile outcome in words.
fn outcome_words(outcome: &ReconcileOutcome) -> String {
    match outcome {
        ReconcileOutcome::Unchanged => "the kernel held exactly the wanted ruleset".into(),
        ReconcileOutcome::Applied => "a new ruleset was applied".into(),
        ReconcileOutcome::Restored(what) => format!(
            "somebody else had changed the guard's table ({}); it was put back",
            printable(what)
        ),
        ReconcileOutcome::Failed(error) => format!(
            "applying failed ({}); the next check retries",
            printable(error)
        ),
    }
}

fn docker_line(status: &Status, style: &Style) -> String {
    let d = &status.docker;
    if d.connected {
        format!(
            "connected to Docker Engine {} at {}.",
            printable(d.engine.as_deref().unwrap_or("(version unknown)")),
            printable(&d.socket)
        )
    } else {
        style.paint(
            &format!(
                "not connected to {} ({}); protection stays as last applied.",
                printable(&d.socket),
                printable(d.error.as_deref().unwrap_or("no reason given"))
            ),
            "33",
        )
    }
}

fn docker_api_line(api: &DockerApiReport, style: &Style) -> String {
    let at = format!(
        "dockerd (pid {}) listens on {}",
        api.pid,
        std::net::SocketAddr::new(api.addr, api.port)
    );
    let danger = if api.plain {
        "WITHOUT TLS: whoever reaches it runs containers as root on this host"
    } else {
        "whoever reaches it (with a client certificate, if TLS is on) is root on this host"
    };
    let mut text = match api.verdict {
        DockerApiVerdict::LocalOnly => {
            format!("{at}, on loopback only: not reachable from other hosts.")
        }
        DockerApiVerdict::Audit => style.paint(
            &format!("WARNING: {at}, {danger}. Audit mode: it is NOT closed."),
            "31;1",
        ),
        DockerApiVerdict::Closed => {
            let open = if api.open_to.is_empty() {
                "closed to every untrusted interface".to_string()
            } else {
                format!(
                    "closed except to {}",
                    api.open_to
                        .iter()
                        .map(|e| printable(e).into_owned())
                        .collect::<Vec<_>>()
                        .join("; ")
                )
            };
            let warning = format!("WARNING: {at}, {danger}. The guard keeps it {open}.");
            style.paint(&warning, if api.plain { "31;1" } else { "33" })
        }
    };
    for entry in &api.ignored {
        text.push_str(&format!(
            " The entry {} does not open it: only entries with `from` open the Docker API.",
            printable(entry)
        ));
    }
    text
}

/// What Docker says its firewall backend is, what the kernel holds, and
/// whether the host's IPv6 INPUT path drops what the guard allows.
fn firewall_line(firewall: &FirewallStatus, style: &Style) -> String {
    let says = match firewall.docker_says {
        None => "Docker has not said which firewall backend it uses".to_string(),
        Some(d) => format!(
            "Docker says it uses {}{}{}",
            match d.driver {
                FirewallDriver::Iptables => "iptables",
                FirewallDriver::Nftables => "nftables",
                FirewallDriver::Unknown => "a backend portguard does not know",
            },
            if d.firewalld { " with firewalld" } else { "" },
            match d.source {
                DriverSource::Reported => "",
                DriverSource::Assumed => " (assumed: this engine predates FirewallBackend)",
            }
        ),
    };
    let holds = if firewall.kernel_holds.is_empty() {
        "no Docker rules are visible in the kernel".to_string()
    } else {
        format!(
            "the kernel holds {}",
            firewall
                .kernel_holds
                .iter()
                .map(|k| k.describe())
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    let agreement = match firewall.agreement {
        Agreement::Agrees => "; they agree.".to_string(),
        Agreement::Mismatch => format!("; {}", style.paint("MISMATCH: they disagree.", "31;1")),
        Agreement::Unknown => "; whether they agree cannot be told.".to_string(),
    };
    let mut text = format!("{says}, and {holds}{agreement}");
    for note in &firewall.notes {
        // The notes are sentences without their full stop.
        text.push(' ');
        text.push_str(note.sentence());
        text.push('.');
    }
    if let Some(drop) = &firewall.ipv6_input_drop {
        text.push(' ');
        text.push_str(&style.paint(
            &format!(
                "The host's IPv6 INPUT path drops by default ({}{}): allowed ports that docker-proxy serves over IPv6 may still be dropped there (see guardctl ports).",
                printable(&drop.chains.join(", ")),
                if drop.ufw { ", ufw" } else { "" }
            ),
            "33",
        ));
    }
    text
}

fn ipv6_line(status: &Status, style: &Style) -> String {
    let restores = match status.ipv6_policy_restores {
        0 => String::new(),
        n => format!(
            " The guard has set it back from drop {}.",
            plural(n, "time", "times")
        ),
    };
    // Who set each drop in force (nf_tables' or the legacy one, whatever
    // nf_tables' own policy is).
    if !status.ipv6_forward_drops.is_empty() {
        let drops: Vec<String> = status
            .ipv6_forward_drops
            .iter()
            .map(|drop| ipv6_drop_words(drop, drop.backend != Ip6Firewall::Nftables))
            .collect();
        return style.paint(&format!("{}{restores}", drops.join(" ")), "33");
    }
    match &status.ipv6_forward_policy {
        Ipv6ForwardPolicy::NoChain => {
            "no IPv6 FORWARD chain exists, so nothing blocks routed IPv6 traffic.".into()
        }
        Ipv6ForwardPolicy::Accept => {
            format!("the IPv6 FORWARD policy is accept: routed IPv6 traffic flows.{restores}")
        }
        // An older daemon, which does not say who set it.
        Ipv6ForwardPolicy::Drop => style.paint(
            &format!(
                "the IPv6 FORWARD policy is drop: routed IPv6 traffic is blocked.{}",
                if restores.is_empty() {
                    " Set [ipv6] restore_forward_policy = true to have it set back to accept."
                } else {
                    &restores
                }
            ),
            "33",
        ),
        Ipv6ForwardPolicy::Unreadable(error) => format!(
            "the IPv6 FORWARD policy could not be read: unknown ({}).",
            printable(error)
        ),
    }
}

/// One IPv6 FORWARD drop: who set it and what the guard does about it;
/// `which` names the front end (the legacy one: nf_tables' is the one
/// `ipv6_forward_policy` is about).
fn ipv6_drop_words(drop: &Ipv6ForwardDrop, which: bool) -> String {
    let chain = if which {
        format!("the {} IPv6 FORWARD policy", drop.backend)
    } else {
        "the IPv6 FORWARD policy".to_string()
    };
    let set_by = printable(&drop.set_by.to_string()).into_owned();
    match (&drop.needs, drop.left_alone) {
        (Some(needs), true) => format!(
            "{chain} is drop, set by {set_by}: routed IPv6 traffic is blocked. The guard leaves \
             it alone (only Docker's drop is set back to accept). Routed IPv6 to a published \
             port: {}.",
            printable(needs)
        ),
        _ => format!(
            "{chain} is drop, set by {set_by}: routed IPv6 traffic is blocked until the guard \
             sets it back to accept."
        ),
    }
}

fn restores_line(status: &Status) -> String {
    match (status.restores, status.last_restore_ms) {
        (0, _) => "nobody has changed the guard's table since the daemon started.".into(),
        (n, ms) => format!(
            "the guard's table was changed by somebody else and put back {}{}.",
            plural(n, "time", "times"),
            ms.map(|ms| format!("; the last took {ms:.1} ms"))
                .unwrap_or_default()
        ),
    }
}

fn config_line(status: &Status, style: &Style) -> String {
    let c = &status.config;
    let entries = plural(c.allow_entries as u64, "allow entry", "allow entries");
    match &c.error {
        None => format!("{} is in force, with {entries}.", printable(&c.path)),
        Some(error) => {
            let in_force = match c.in_force {
                ConfigSource::Files => {
                    format!("reload refused; the configuration read before stays in force ({entries})")
                }
                ConfigSource::LastGood => format!(
                    "the files were invalid at start; the last good configuration is in force ({entries})"
                ),
                ConfigSource::Closed => "the files were invalid at start and no good configuration was kept; every published port is closed".into(),
            };
            // Every mistake, one a line (a refused file may have several).
            let error = printable_lines(error);
            let (one, several) = if error.contains('\n') {
                ("Errors:", "\n")
            } else {
                ("Error:", " ")
            };
            style.paint(&format!("{in_force}. {one}{several}{error}"), "31")
        }
    }
}
