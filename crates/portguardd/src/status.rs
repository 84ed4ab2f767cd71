//! `guardctl status`, `ports` and `explain`, answered from the guard's
//! state (and one read of the kernel for what only the kernel knows).

use portguard_config::{Mode, Scope};
use portguard_core::control::{ConfigStatus, RulesetStatus, Status, rfc3339};
use portguard_core::docker_api::docker_api_reports;
use portguard_core::verdict::port_reports;

use crate::backend::Backend;
use crate::guard::Guard;

pub fn status<B: Backend>(guard: &mut Guard<B>) -> Status {
    let ipv6_forward_policy = guard
        .backend
        .ip6_forward_policy()
        .map_or_else(|e| format!("unknown ({e})"), |p| p.as_str().to_string());
    // One read of the table serves both answers.
    let blocked = guard.backend.blocked_packets().ok().flatten();
    Status {
        mode: match guard.config.guard.mode {
            Mode::Enforce => "enforce",
            Mode::Audit => "audit",
        }
        .into(),
        protection: guard.backend.protection(),
        scope: match guard.config.guard.scope {
            Scope::Containers => "containers",
            Scope::All => "all",
        }
        .into(),
        ruleset: RulesetStatus {
            installed: blocked.is_some() && guard.applied.is_some(),
            verified_at: guard.verified_at.map(rfc3339),
        },
        last_reconcile: guard.last_reconcile.clone(),
        docker: guard.docker.clone(),
        ipv6_forward_policy,
        restores: guard.restores,
        last_restore_ms: guard.last_restore_ms,
        ipv6_policy_restores: guard.ip6_restores,
        blocked_packets: blocked.unwrap_or(0),
        ended_connections: guard.ended_connections,
        config: ConfigStatus {
            path: guard.config_path.display().to_string(),
            in_force: guard.config_source,
            allow_entries: guard.config.allow.len(),
            error: guard.config_error.clone(),
        },
        published: port_reports(&guard.config, &guard.snapshot),
        docker_api: docker_api_reports(&guard.config, &guard.snapshot),
    }
}
