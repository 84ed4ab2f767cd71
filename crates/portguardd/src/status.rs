//! `guardctl status`, `ports` and `explain`, answered from the guard's
//! state (and small reads of the guard's own table). Other firewalls'
//! chains come from the inventory worker's latest dump, never from a dump
//! here: with tens of thousands of chains it takes seconds, and the loop
//! must not stall on a status request.

use std::net::IpAddr;

use portguard_core::L4Proto;
use portguard_core::control::{ConfigStatus, Ipv6ForwardPolicy, RulesetStatus, Status};
use portguard_core::docker_api::docker_api_reports;
use portguard_core::hostfw::{FirewallStatus, assess};
use portguard_core::text::rfc3339;
use portguard_core::verdict::{
    Explanation, PortReport, explain, port_reports, warn_ipv6_input, warn_ipv6_input_explained,
};
use portguard_nft::ForwardPolicy;

use crate::backend::Backend;
use crate::guard::Guard;

pub fn status<B: Backend>(guard: &mut Guard<B>) -> Status {
    let ipv6_forward_policy = match guard.ip6_forward_policy() {
        Ok(ForwardPolicy::Accept) => Ipv6ForwardPolicy::Accept,
        Ok(ForwardPolicy::Drop) => Ipv6ForwardPolicy::Drop,
        Ok(ForwardPolicy::NoChain) => Ipv6ForwardPolicy::NoChain,
        Err(e) => Ipv6ForwardPolicy::Unreadable(e.to_string()),
    };
    // An unreadable policy is already said in `ipv6_forward_policy`.
    let ipv6_forward_drops = guard.ip6_forward_drops().unwrap_or_default();
    let firewall = host_firewall(guard);
    let published = warned_port_reports(guard, firewall.as_ref());
    // One read of the table serves both answers.
    let blocked = guard.blocked_packets().ok().flatten();
    let counters = guard.counters();
    let config = guard.config();
    let snapshot = guard.snapshot();
    Status {
        mode: config.guard.mode,
        protection: guard.protection(),
        scope: config.guard.scope,
        ruleset: RulesetStatus {
            installed: blocked.is_some() && guard.applied(),
            verified_at: guard.verified_at().map(rfc3339),
        },
        last_reconcile: guard.last_reconcile().cloned(),
        docker: guard.docker().clone(),
        ipv6_forward_policy,
        restores: counters.restores,
        last_restore_ms: counters.last_restore_ms,
        ipv6_policy_restores: counters.ip6_restores,
        ipv6_forward_drops,
        blocked_packets: blocked.unwrap_or(0),
        ended_connections: counters.ended_connections,
        // Filled in by the loop, which holds the blocked-attempts summary.
        blocked_last_hour: Vec::new(),
        config: ConfigStatus {
            path: guard.config_path().display().to_string(),
            in_force: guard.config_source(),
            allow_entries: config.allow.len(),
            error: guard.config_error().map(str::to_string),
        },
        published,
        firewall,
        docker_api: docker_api_reports(config, snapshot),
        kept: snapshot.kept.clone(),
        unmatched: guard.unmatched(),
        untrusted_claims: snapshot.untrusted_claims.clone(),
        docker_api_scan: crate::api_scan::last_scan(),
    }
}

/// What Docker says of its firewall against what the kernel held at the
/// inventory worker's latest read; `None` until it has read once (or while
/// it has never managed to: the error is in the log).
pub fn host_firewall<B: Backend>(guard: &Guard<B>) -> Option<FirewallStatus> {
    guard
        .netfilter()
        .map(|inventory| assess(guard.docker_firewall(), inventory))
}

/// The verdicts, with the host firewall's warnings.
fn warned_port_reports<B: Backend>(
    guard: &Guard<B>,
    firewall: Option<&FirewallStatus>,
) -> Vec<PortReport> {
    let mut reports = port_reports(guard.config(), guard.snapshot());
    warn_ipv6_input(
        &mut reports,
        firewall.and_then(|f| f.ipv6_input_drop.as_ref()),
    );
    reports
}

/// `guardctl ports`.
pub fn ports<B: Backend>(guard: &mut Guard<B>) -> Vec<PortReport> {
    let firewall = host_firewall(guard);
    warned_port_reports(guard, firewall.as_ref())
}

/// `guardctl explain`, with the host firewall's warnings.
pub fn explained<B: Backend>(
    guard: &mut Guard<B>,
    port: u16,
    proto: L4Proto,
    from: Option<IpAddr>,
) -> Explanation {
    let firewall = host_firewall(guard);
    let mut explanation = explain(guard.config(), guard.snapshot(), port, proto, from);
    warn_ipv6_input_explained(
        &mut explanation,
        guard.snapshot(),
        port,
        proto,
        firewall.as_ref().and_then(|f| f.ipv6_input_drop.as_ref()),
    );
    explanation
}
