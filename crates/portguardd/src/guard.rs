//! The guard's state and the one operation that decides what the kernel
//! holds: [`Guard::reconcile`]. Everything that changes the desired state
//! (a configuration, a Docker snapshot) goes through it; so do restores
//! after tampering and the periodic verify.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use portguard_config::Config;
use portguard_core::control::{
    ConfigSource, DockerStatus, ProtectionTier, ReconcileRecord, ReloadOutcome,
};
use portguard_core::hostfw::{DockerFirewall, NetfilterInventory};
use portguard_core::ip6_forward::Ipv6ForwardDrop;
use portguard_core::plan::{CT_MARK_ADMITTED, entry_admits};
use portguard_core::text::rfc3339;
use portguard_core::{DockerApiListener, Judged, L4Proto, Ruleset, Snapshot, plan};
use portguard_docker::DockerUpdate;
use portguard_nft::{ForwardPolicy, Found, Look, NftError, Recreated, TableOutcome};

use crate::backend::Backend;
use crate::counters::{Counters, GuardView};
use crate::logging::event;
use crate::triggers::Ip6Check;
use crate::{judged_state, lastgood, notify};

/// What one reconcile did: the type `status` reports as
/// `last_reconcile.outcome`.
pub use portguard_core::control::ReconcileOutcome as Outcome;

/// What a guard starts with.
pub struct Setup {
    pub config_path: PathBuf,
    pub state_dir: PathBuf,
    pub config: Config,
    pub config_source: ConfigSource,
    /// Why the configuration files are not in force, when they are not.
    pub config_error: Option<String>,
    pub docker: DockerStatus,
    /// Whether the kernel can hold the nflog rule (see
    /// [`portguard_nft::probe_nflog`]); without it the guard plans
    /// without the reports, never without protection.
    pub nflog_available: bool,
}

/// The guard: what it is told (the configuration, Docker's snapshots, the
/// other firewalls' chains), what the kernel was last proven to hold, and
/// what it counted. Only its own methods change it; the kernel is reached
/// through its [`Backend`] alone.
pub struct Guard<B> {
    config_path: PathBuf,
    state_dir: PathBuf,
    config: Config,
    config_source: ConfigSource,
    config_error: Option<String>,
    snapshot: Snapshot,
    backend: B,
    docker: DockerStatus,
    /// The firewall backend Docker said it uses when it last connected.
    docker_firewall: Option<DockerFirewall>,
    /// The ruleset the kernel was last proven to hold.
    applied: Option<Ruleset>,
    verified_at: Option<SystemTime>,
    last_reconcile: Option<ReconcileRecord>,
    /// What the metrics and `status` count.
    counters: Counters,
    nflog_available: bool,
    /// Other firewalls' chains at the inventory worker's latest read
    /// (`None` until its first): status, ports and explain assess these.
    netfilter: Option<Arc<NetfilterInventory>>,
    /// What the state directory holds as judged (`judged.json`), so that
    /// an unchanged judgement is not written again.
    judged_saved: Option<Judged>,
}

impl<B: Backend> Guard<B> {
    pub fn new(setup: Setup, backend: B) -> Guard<B> {
        Guard {
            config_path: setup.config_path,
            state_dir: setup.state_dir,
            config: setup.config,
            config_source: setup.config_source,
            config_error: setup.config_error,
            snapshot: Snapshot::default(),
            backend,
            docker: setup.docker,
            docker_firewall: None,
            applied: None,
            verified_at: None,
            last_reconcile: None,
            counters: Counters::default(),
            nflog_available: setup.nflog_available,
            netfilter: None,
            judged_saved: None,
        }
    }

    /// Protection first (P5), before Docker is even asked: installs the
    /// guard's table, judging no less than the table this start found,
    /// keeps the configuration as the last good one and looks at the IPv6
    /// FORWARD policy. An error if the table could not be installed.
    pub fn start(&mut self) -> anyhow::Result<()> {
        self.keep_judging_what_was_judged();
        if let Outcome::Failed(e) = self.reconcile("start", Instant::now()) {
            anyhow::bail!("could not install the guard's table: {e}");
        }
        self.keep_last_good();
        self.restore_ip6_policy(&Ip6Check::Start);
        let tier = self.backend.protection();
        tracing::info!(
            portguard_event = event::START,
            protection = %tier,
            "protection in place ({tier}): the guard's table is installed, before Docker is asked"
        );
        Ok(())
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn config_path(&self) -> &std::path::Path {
        &self.config_path
    }

    pub fn config_source(&self) -> ConfigSource {
        self.config_source
    }

    /// Why the configuration files are not in force, when they are not.
    pub fn config_error(&self) -> Option<&str> {
        self.config_error.as_deref()
    }

    pub fn snapshot(&self) -> &Snapshot {
        &self.snapshot
    }

    pub fn docker(&self) -> &DockerStatus {
        &self.docker
    }

    /// The firewall backend Docker said it uses when it last connected.
    pub fn docker_firewall(&self) -> Option<DockerFirewall> {
        self.docker_firewall
    }

    /// Whether a ruleset was proven in the kernel (at start or since).
    pub fn applied(&self) -> bool {
        self.applied.is_some()
    }

    /// When the kernel was last proven to hold the desired ruleset.
    pub fn verified_at(&self) -> Option<SystemTime> {
        self.verified_at
    }

    pub fn last_reconcile(&self) -> Option<&ReconcileRecord> {
        self.last_reconcile.as_ref()
    }

    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    pub fn protection(&self) -> ProtectionTier {
        self.backend.protection()
    }

    /// Other firewalls' chains at the inventory worker's latest read.
    pub fn netfilter(&self) -> Option<&NetfilterInventory> {
        self.netfilter.as_deref()
    }

    /// The inventory worker read other firewalls' chains anew.
    pub fn set_netfilter(&mut self, inventory: Arc<NetfilterInventory>) {
        self.netfilter = Some(inventory);
    }

    /// What the metrics read.
    pub fn view(&self) -> GuardView<'_> {
        GuardView {
            counters: &self.counters,
            config: &self.config,
            snapshot: &self.snapshot,
            tier: self.backend.protection(),
            applied: self.applied.is_some(),
            last_reconcile_failed: self
                .last_reconcile
                .as_ref()
                .is_some_and(|r| matches!(r.outcome, Outcome::Failed(_))),
            docker_connected: self.docker.connected,
            // The version stays in status after Docker goes; a fleet
            // grouping by it must not count a host whose Docker is away.
            docker_engine: self
                .docker
                .engine
                .as_deref()
                .filter(|_| self.docker.connected),
            config_error: self.config_error.is_some(),
            config_source: self.config_source,
            verified_at: self.verified_at,
        }
    }

    /// Reads the kernel's per-port blocked-attempt counters (a dump of
    /// every guard table) and keeps the reading in the counters, for the
    /// metrics.
    pub fn read_blocked_counters(&mut self) {
        let read = self.backend.blocked_per_port();
        let reconciles = self.counters.reconcile_seconds.count;
        self.counters.kernel.record(read, reconciles);
    }

    /// Whether the primary table exists, and its blocked-attempt counters
    /// (one read of the table).
    pub fn blocked_packets(&mut self) -> Result<Option<u64>, NftError> {
        self.backend.blocked_packets()
    }

    pub fn ip6_forward_policy(&mut self) -> Result<ForwardPolicy, NftError> {
        self.backend.ip6_forward_policy()
    }

    /// Each IPv6 FORWARD drop in force: who set it, and whether the guard
    /// leaves it alone (anybody's but Docker's, and Docker's too with
    /// `[ipv6] restore_forward_policy = false`).
    pub fn ip6_forward_drops(&mut self) -> Result<Vec<Ipv6ForwardDrop>, NftError> {
        let undo = self.config.ipv6.restore_forward_policy;
        Ok(self
            .backend
            .ip6_forward_drops()?
            .into_iter()
            .map(|(backend, set_by)| Ipv6ForwardDrop::new(backend, set_by, undo))
            .collect())
    }

    /// At start, before the first apply: keeps judging what the guard's
    /// tables in the kernel judge (a restart, an upgrade: the table
    /// outlived the daemon) and what the state directory says the guard
    /// last judged (a boot: no table survived), until Docker's first
    /// complete answer. Docker may answer late or never (hung, stopped),
    /// while its DNAT rules and docker-proxy listeners are live.
    pub fn keep_judging_what_was_judged(&mut self) {
        let mut kept = match judged_state::load(&self.state_dir) {
            Ok(saved) => {
                self.judged_saved = Some(saved.clone());
                saved
            }
            Err(e) => {
                tracing::error!(
                    error = format!("{e:#}"),
                    "cannot read what the guard judged before; judging what the tables in the kernel judge"
                );
                Judged::default()
            }
        };
        match self.backend.judged_by_tables() {
            Ok(in_kernel) => kept.extend(in_kernel),
            Err(e) => tracing::error!(
                "cannot read the guard's tables left in the kernel ({e}); judging what the state directory kept"
            ),
        }
        if !kept.is_empty() {
            tracing::info!(
                bridges = kept.bridges.len(),
                tcp = kept.tcp.len(),
                udp = kept.udp.len(),
                "until Docker answers, judging the bridges and ports judged before this start"
            );
        }
        self.snapshot.kept = kept;
    }

    /// Keeps what the guard judges now in the state directory, if it
    /// changed (see [`judged_state`]).
    fn save_judged(&mut self) {
        let judged = self.snapshot.judged();
        if self.judged_saved.as_ref() == Some(&judged) {
            return;
        }
        match judged_state::save(&self.state_dir, &judged) {
            Ok(()) => self.judged_saved = Some(judged),
            Err(e) => tracing::warn!(
                error = format!("{e:#}"),
                "could not keep what the guard judges for the next start"
            ),
        }
    }

    pub fn desired(&self) -> Ruleset {
        let mut ruleset = plan(&self.config, &self.snapshot);
        if !self.nflog_available {
            portguard_core::plan::without_nflog(&mut ruleset);
        }
        ruleset
    }

    /// Makes the kernel hold exactly the desired ruleset and proves it.
    /// `since` is when the reason arose (a change notification), for the
    /// restore latency.
    pub fn reconcile(&mut self, reason: &str, since: Instant) -> Outcome {
        let started = Instant::now();
        let desired = self.desired();
        let outcome = match self.backend.reconcile(&desired) {
            Err(e) => Outcome::Failed(e.to_string()),
            Ok(tables) => {
                self.count_replaced(&tables);
                let changed = self.applied.as_ref() != Some(&desired);
                let repaired: Vec<String> = tables
                    .iter()
                    .filter_map(|t| match t {
                        TableOutcome::Unchanged => None,
                        TableOutcome::Repaired(d) | TableOutcome::Replaced(d) => Some(
                            d.iter()
                                .map(ToString::to_string)
                                .collect::<Vec<_>>()
                                .join(", "),
                        ),
                    })
                    .collect();
                let previous = self.applied.replace(desired);
                self.verified_at = Some(SystemTime::now());
                if changed {
                    if let Some(previous) = previous {
                        self.end_unadmitted(reason, &previous);
                    }
                    Outcome::Applied
                } else if repaired.is_empty() {
                    Outcome::Unchanged
                } else {
                    let found = repaired.join("; ");
                    let ms = since.elapsed().as_secs_f64() * 1000.0;
                    self.count_restore(reason, ms, &found, "");
                    Outcome::Restored(found)
                }
            }
        };
        self.counters
            .reconcile_seconds
            .observe(started.elapsed().as_secs_f64());
        let duration_ms = started.elapsed().as_secs_f64() * 1000.0;
        match &outcome {
            Outcome::Failed(error) => {
                tracing::error!(
                    portguard_event = event::RECONCILE_FAILED,
                    reason,
                    "reconcile failed ({error}); the next trigger retries"
                )
            }
            Outcome::Unchanged => tracing::debug!(reason, "reconcile: unchanged"),
            _ => {
                tracing::info!(
                    reason,
                    duration_ms = %format!("{duration_ms:.2}"),
                    %outcome,
                    "guard table checked after {reason} ({duration_ms:.1} ms): {outcome}"
                )
            }
        }
        self.last_reconcile = Some(ReconcileRecord {
            trigger: reason.to_string(),
            at: rfc3339(SystemTime::now()),
            duration_ms,
            outcome: outcome.clone(),
        });
        outcome
    }

    /// Counts and logs the copies the monitor thread recreated at once
    /// after `reason` (the loop's reconcile that follows then usually
    /// finds them intact): each is a restore, and a table created anew,
    /// whose kernel counters start from zero.
    pub fn note_recreated(&mut self, reason: &str, recreated: &[Recreated]) {
        for copy in recreated {
            let index = usize::from(copy.table != portguard_core::ruleset::TABLE_NAME);
            if self.counters.tables_replaced.len() <= index {
                self.counters.tables_replaced.resize(index + 1, 0);
            }
            self.counters.tables_replaced[index] += 1;
            let found = match copy.found {
                Found::Missing => portguard_nft::Difference::TableMissing.to_string(),
                Found::Changed => "table changed".to_string(),
            };
            let how = format!(": inet {} recreated at once by the monitor", copy.table);
            self.count_restore(reason, copy.took.as_secs_f64() * 1000.0, &found, &how);
        }
    }

    /// Counts one restore, `ms` after it was called for, and logs it (the
    /// journal's `restore` event): `found` is what somebody else had done,
    /// `how` how it was undone when not by the loop itself.
    fn count_restore(&mut self, reason: &str, ms: f64, found: &str, how: &str) {
        self.counters.restores += 1;
        self.counters.last_restore_ms = Some(ms);
        tracing::warn!(
            portguard_event = event::RESTORE,
            reason,
            restores = self.counters.restores,
            restore_ms = %format!("{ms:.2}"),
            found = %found,
            "guard table restored after {reason}: somebody else had changed it ({found}{how})"
        );
    }

    fn count_replaced(&mut self, tables: &[TableOutcome]) {
        if self.counters.tables_replaced.len() < tables.len() {
            self.counters.tables_replaced.resize(tables.len(), 0);
        }
        for (count, outcome) in self.counters.tables_replaced.iter_mut().zip(tables) {
            if matches!(outcome, TableOutcome::Replaced(_)) {
                *count += 1;
            }
        }
    }

    /// P10: connections admitted under `previous` that the new ruleset no
    /// longer admits are ended (only ever after the new ruleset is in).
    fn end_unadmitted(&mut self, reason: &str, previous: &Ruleset) {
        if self.applied.as_ref().map(|r| &r.sets) == Some(&previous.sets) {
            return;
        }
        let config = &self.config;
        let snapshot = &self.snapshot;
        let keep = |flow: &portguard_nft::Flow| {
            let proto = match flow.proto {
                6 => L4Proto::Tcp,
                17 => L4Proto::Udp,
                _ => return true,
            };
            config.allow.iter().any(|entry| {
                entry_admits(
                    entry,
                    snapshot,
                    flow.original_dport,
                    proto,
                    Some(flow.source),
                )
            })
        };
        match self.backend.end_connections(CT_MARK_ADMITTED, &keep) {
            Ok(stats) if stats.ended > 0 => {
                self.counters.ended_connections += stats.ended as u64;
                tracing::info!(
                    portguard_event = event::CONNECTIONS_ENDED,
                    reason,
                    ended = stats.ended,
                    examined = stats.examined,
                    "ended connections the allowlist no longer admits"
                );
            }
            Ok(_) => {}
            Err(e) => {
                tracing::error!("could not end connections the allowlist no longer admits: {e}")
            }
        }
    }

    /// Looks at the IPv6 FORWARD policy and sets Docker's drop back to
    /// accept (P6), never anybody else's: ufw's routed policy, firewalld's,
    /// an administrator's, or one whose setter is not known stays, and is
    /// logged once, when it is first seen. Who set a drop is what the
    /// monitor heard (see [`Ip6Check`] and [`portguard_nft::DropWitness`]).
    pub fn restore_ip6_policy(&mut self, check: &Ip6Check) {
        let look = match check {
            Ip6Check::Start => Look::Start,
            Ip6Check::DockerConnected => Look::DockerBack,
            Ip6Check::PeriodicVerify | Ip6Check::DockerGone | Ip6Check::Netfilter { .. } => {
                Look::Again {
                    docker_connected: self.docker.connected,
                }
            }
        };
        let mut first_seen = matches!(check, Ip6Check::Start | Ip6Check::DockerConnected);
        if let Ip6Check::Netfilter { heard, lost, .. } = check {
            self.backend.ip6_heard(heard, *lost);
            first_seen = heard.iter().any(|s| s.policy == ForwardPolicy::Drop);
        }
        let why = check.why();
        let undo = self.config.ipv6.restore_forward_policy;
        match self.backend.restore_ip6_forward_policy(look, undo) {
            Ok(restored) => {
                for r in restored {
                    self.counters.ip6_restores += 1;
                    tracing::warn!(
                        portguard_event = event::IPV6_POLICY_RESTORE,
                        why,
                        backend = %r.backend,
                        set_by = %r.set_by,
                        "the {} IPv6 FORWARD policy was drop, set by {}; set it back to accept",
                        r.backend,
                        r.set_by
                    );
                }
            }
            Err(e) => tracing::error!("could not restore the IPv6 FORWARD policy: {e}"),
        }
        if !first_seen {
            return;
        }
        let drops = self.ip6_forward_drops().unwrap_or_else(|e| {
            tracing::error!("could not read the IPv6 FORWARD policy: {e}");
            Vec::new()
        });
        for drop in drops {
            if let (true, Some(needs)) = (drop.left_alone, &drop.needs) {
                let because = if drop.set_by.is_docker() {
                    "[ipv6] restore_forward_policy = false"
                } else {
                    "only Docker's drop is set back to accept"
                };
                tracing::warn!(
                    portguard_event = event::IPV6_POLICY_LEFT,
                    why,
                    backend = %drop.backend,
                    set_by = %drop.set_by,
                    "the {} IPv6 FORWARD policy is drop, set by {}: left alone ({because}), \
                     routed IPv6 stays blocked. Routed IPv6 to a published port: {needs}",
                    drop.backend,
                    drop.set_by
                );
            }
        }
    }

    /// Puts a newly read configuration in force, or refuses it and keeps
    /// the one in force (P7). Never reports what did not happen.
    pub fn reload(&mut self, loaded: Result<Config, String>) -> ReloadOutcome {
        let refuse = |guard: &mut Self, error: String| {
            tracing::error!(
                portguard_event = event::CONFIG_ERROR,
                "configuration refused ({error}); the one in force stays"
            );
            guard.config_error = Some(error.clone());
            ReloadOutcome {
                applied: false,
                error: Some(error),
                warnings: Vec::new(),
            }
        };
        let config = match loaded {
            Ok(config) => config,
            Err(error) => return refuse(self, error),
        };
        if let Some(error) = needs_restart(&self.config, &config) {
            return refuse(self, error);
        }
        let previous = std::mem::replace(&mut self.config, config);
        match self.reconcile("reload", Instant::now()) {
            Outcome::Failed(error) => {
                self.config = previous;
                self.reconcile("reload rollback", Instant::now());
                refuse(
                    self,
                    format!("the new configuration could not be applied: {error}"),
                )
            }
            _ => {
                self.config_source = ConfigSource::Files;
                self.config_error = None;
                self.keep_last_good();
                tracing::info!(portguard_event = event::RELOAD, "configuration reloaded");
                let warnings: Vec<String> =
                    self.unmatched().iter().map(ToString::to_string).collect();
                for warning in &warnings {
                    tracing::warn!("allow entry opens nothing: {warning}");
                }
                ReloadOutcome {
                    applied: true,
                    error: None,
                    warnings,
                }
            }
        }
    }

    /// Allow entries that open nothing now (container entries once Docker
    /// answered).
    pub fn unmatched(&self) -> Vec<portguard_core::unmatched::Unmatched> {
        portguard_core::unmatched::unmatched_entries(
            &self.config,
            &self.snapshot,
            self.docker.engine.is_some(),
        )
    }

    /// Keeps the configuration in force as the last good one, if it came
    /// from the files (a fallback is never written over the real thing).
    pub fn keep_last_good(&self) {
        if self.config_source != ConfigSource::Files {
            return;
        }
        if let Err(e) = lastgood::save(&self.state_dir, &self.config) {
            tracing::warn!(
                error = format!("{e:#}"),
                "could not keep the last good configuration"
            );
        }
    }

    pub fn on_docker(&mut self, update: DockerUpdate) {
        // Docker sets its IPv6 FORWARD drop while it starts; on
        // iptables-legacy no nf_tables notification says so, and the
        // (re)connection is the first sign of a start.
        let connected = matches!(update, DockerUpdate::Connected { .. });
        let snapshot = match update {
            DockerUpdate::Connected {
                snapshot,
                engine,
                firewall,
            } => {
                tracing::info!(portguard_event = event::DOCKER_CONNECTED, %engine, "connected to Docker (Engine {engine})");
                self.docker_firewall = firewall;
                self.docker.connected = true;
                self.docker.engine = Some(engine);
                self.docker.error = None;
                Some(snapshot)
            }
            DockerUpdate::Snapshot(snapshot) => Some(snapshot),
            // P8: protection stays as it was while Docker is away.
            DockerUpdate::Disconnected { error } => {
                if self.docker.connected {
                    tracing::warn!(
                        portguard_event = event::DOCKER_DISCONNECTED,
                        "lost Docker ({error}); protection stays as last applied"
                    );
                }
                self.docker.connected = false;
                self.docker.error = Some(error);
                None
            }
        };
        if let Some(mut snapshot) = snapshot {
            // Docker does not know what dockerd listens on; the scanner does.
            snapshot.dockerd_listeners = std::mem::take(&mut self.snapshot.dockerd_listeners);
            // What was judged before the start is judged until Docker's
            // first complete answer, which (re)connecting brings.
            if connected {
                if !self.snapshot.kept.is_empty() {
                    tracing::info!(
                        "Docker answered: the bridges and ports judged before this start are judged as Docker reports them"
                    );
                }
            } else {
                snapshot.kept = std::mem::take(&mut self.snapshot.kept);
            }
            self.snapshot = snapshot;
            self.reconcile("docker", Instant::now());
            self.save_judged();
            if connected {
                for unmatched in self.unmatched() {
                    tracing::warn!("allow entry opens nothing: {unmatched}");
                }
            }
        }
        if connected {
            self.restore_ip6_policy(&Ip6Check::DockerConnected);
        }
    }

    /// dockerd's TCP listeners changed: close (or reopen) them, and say so
    /// loudly while any is reachable from outside.
    pub fn on_docker_api(&mut self, listeners: Vec<DockerApiListener>) {
        if listeners == self.snapshot.dockerd_listeners {
            return;
        }
        let was_exposed = self.snapshot.docker_api().any(|l| !l.is_local_only());
        let new = listeners.iter().filter(|l| {
            !l.is_local_only()
                && !self.snapshot.is_published_socket(l)
                && !self.snapshot.dockerd_listeners.contains(l)
        });
        for l in new {
            let how = if l.is_plain() {
                "WITHOUT TLS: whoever reaches it is root on this host"
            } else {
                "whoever reaches it with a client certificate (if TLS is on) is root on this host"
            };
            let guard = match self.config.guard.mode {
                portguard_config::Mode::Enforce => {
                    "closed on untrusted interfaces unless an allow entry with `from` opens it"
                }
                portguard_config::Mode::Audit => "audit mode: NOT closed",
            };
            tracing::warn!(
                portguard_event = event::DOCKER_API_EXPOSED,
                port = l.port,
                address = %l.addr,
                process = "dockerd",
                pid = l.pid,
                plain = l.is_plain(),
                "the Docker API listens on {} (dockerd, pid {}), {how}; {guard}",
                std::net::SocketAddr::new(l.addr, l.port),
                l.pid
            );
        }
        self.snapshot.dockerd_listeners = listeners;
        if was_exposed && self.snapshot.docker_api().all(|l| l.is_local_only()) {
            tracing::info!(
                portguard_event = event::DOCKER_API_GONE,
                "dockerd no longer listens on TCP beyond loopback"
            );
        }
        self.reconcile("docker api", Instant::now());
        self.save_judged();
    }

    pub fn notify_status(&self) {
        let text = format!(
            "{} mode, {} protection, {} allow entries, {} published ports, Docker {}, {} restores{}",
            match self.config.guard.mode {
                portguard_config::Mode::Enforce => "enforcing",
                portguard_config::Mode::Audit => "audit",
            },
            self.backend.protection(),
            self.config.allow.len(),
            self.snapshot.published.len(),
            if self.docker.connected {
                "connected"
            } else {
                "not connected"
            },
            self.counters.restores,
            if self.config_error.is_some() {
                ", configuration error (see guardctl status)"
            } else {
                ""
            },
        );
        notify::notify(&format!("STATUS={text}\n"));
    }
}

/// Settings a running daemon cannot change (the sockets it listens on and
/// connects to, the tier of its tables): a reload that changes them is
/// refused with the reason, rather than reported applied while ignored.
pub fn needs_restart(old: &Config, new: &Config) -> Option<String> {
    let mut changed = Vec::new();
    if old.control.socket != new.control.socket {
        changed.push("[control] socket");
    }
    if old.control.group != new.control.group {
        changed.push("[control] group");
    }
    if old.docker.socket != new.docker.socket {
        changed.push("[docker] socket");
    }
    if old.guard.protection != new.guard.protection {
        changed.push("[guard] protection");
    }
    (!changed.is_empty()).then(|| {
        format!(
            "{} changed: that takes a restart (systemctl restart portguard); nothing was changed",
            changed.join(", ")
        )
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::fake_kernel::{self, FakeKernel};
    use portguard_nft::{DropSetter, ForwardPolicySet};

    fn guard(config: &str) -> (Guard<FakeKernel>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let guard = Guard::new(
            fake_kernel::setup(dir.path(), Config::from_toml_str(config).unwrap()),
            FakeKernel::default(),
        );
        (guard, dir)
    }

    fn docker_connected(snapshot: Snapshot) -> DockerUpdate {
        DockerUpdate::Connected {
            snapshot,
            engine: "20.10".into(),
            firewall: None,
        }
    }

    /// A host with a custom-named bridge (`com.docker.network.bridge.name`)
    /// and ports published on it and through docker-proxy.
    fn docker_host() -> Snapshot {
        serde_json::from_value(serde_json::json!({
            "bridges": ["custom0"],
            "published": [
                {"host_ip": null, "host_port": 8080, "proto": "tcp", "container_port": 80,
                 "host_network": false,
                 "container": {"id": "c1", "name": "db", "compose": null}},
                {"host_ip": null, "host_port": 5353, "proto": "udp", "container_port": 53,
                 "host_network": false,
                 "container": {"id": "c2", "name": "dns", "compose": null}}
            ]
        }))
        .unwrap()
    }

    fn elements(guard: &Guard<FakeKernel>, set: &str) -> Vec<String> {
        guard.backend.state().tables[0]
            .as_ref()
            .unwrap()
            .set(set)
            .unwrap()
            .elements
            .iter()
            .map(portguard_core::render::render_element)
            .collect()
    }

    /// Issue 18: a restart (an upgrade, a crash, the watchdog) with Docker
    /// not answering judged less than the table it replaced: the custom
    /// bridge and the docker-proxy ports were open until Docker answered.
    #[test]
    fn p8_a_start_judges_what_the_table_it_found_judged_until_docker_answers() {
        let (mut before, dir) = guard("");
        before.on_docker(docker_connected(docker_host()));
        let found = before.backend.state().tables.clone();
        // The next daemon finds that table, and no state directory.
        let (mut guard, _dir) = guard("");
        guard.state_dir = dir.path().join("elsewhere");
        guard.backend.state().tables = found;
        guard.keep_judging_what_was_judged();
        assert_eq!(guard.reconcile("start", Instant::now()), Outcome::Applied);
        assert_eq!(
            elements(&guard, "judged_bridges"),
            ["\"custom0\"", "\"docker0\""]
        );
        assert_eq!(elements(&guard, "published_tcp"), ["8080"]);
        assert_eq!(elements(&guard, "published_udp"), ["5353"]);
        // Judged, never trusted on that word.
        assert_eq!(elements(&guard, "docker_bridges"), ["\"docker0\""]);
        // Docker stays away: nothing changes.
        guard.on_docker(DockerUpdate::Disconnected {
            error: "stopped".into(),
        });
        assert_eq!(elements(&guard, "published_tcp"), ["8080"]);
        // Docker's first complete answer ends the kept judgement.
        guard.on_docker(docker_connected(Snapshot::default()));
        assert_eq!(elements(&guard, "judged_bridges"), ["\"docker0\""]);
        assert_eq!(elements(&guard, "published_tcp"), Vec::<String>::new());
    }

    /// A boot: no table survived, and Docker answers after the guard
    /// started. What the guard last judged comes from the state directory.
    #[test]
    fn p8_a_boot_judges_what_the_state_directory_kept() {
        let (mut before, dir) = guard("");
        before.on_docker(docker_connected(docker_host()));
        let (mut guard, _dir2) = guard("");
        guard.state_dir = before.state_dir.clone();
        guard.keep_judging_what_was_judged();
        guard.reconcile("start", Instant::now());
        assert_eq!(
            elements(&guard, "judged_bridges"),
            ["\"custom0\"", "\"docker0\""]
        );
        assert_eq!(elements(&guard, "published_tcp"), ["8080"]);
        drop(dir);
    }

    /// Issue 22: a misspelt container name passed reload without a word.
    #[test]
    fn a_reload_names_the_entries_that_open_nothing() {
        let (mut guard, _dir) = guard("");
        guard.on_docker(docker_connected(docker_host()));
        let outcome = guard.reload(Ok(Config::from_toml_str(
            "[[allow]]\ncontainer = \"dbs\"\n",
        )
        .unwrap()));
        assert!(outcome.applied);
        assert_eq!(outcome.warnings.len(), 1, "{outcome:?}");
        assert!(
            outcome.warnings[0].contains("did you mean \"db\"?"),
            "{outcome:?}"
        );
        let outcome = guard.reload(Ok(
            Config::from_toml_str("[[allow]]\ncontainer = \"db\"\n").unwrap()
        ));
        assert_eq!(outcome.warnings, Vec::<String>::new());
    }

    #[test]
    fn without_nflog_the_kernel_gets_the_ruleset_minus_the_reports() {
        let (mut guard, _dir) = guard("[[allow]]\nport = 8080\n");
        guard.nflog_available = false;
        assert_eq!(guard.reconcile("start", Instant::now()), Outcome::Applied);
        let installed = guard.backend.state().tables[0].clone().unwrap();
        let mut expected = plan(&guard.config, &guard.snapshot);
        assert_ne!(installed, expected, "the nflog rules were installed");
        portguard_core::plan::without_nflog(&mut expected);
        assert_eq!(installed, expected);
    }

    #[test]
    fn a_deleted_table_is_restored_and_counted() {
        let (mut guard, _dir) = guard("[[allow]]\nport = 8080\n");
        assert_eq!(guard.reconcile("start", Instant::now()), Outcome::Applied);
        guard.backend.state().tables[0] = None;
        assert!(matches!(
            guard.reconcile("netfilter change", Instant::now()),
            Outcome::Restored(_)
        ));
        assert_eq!(guard.counters.restores, 1);
        assert_eq!(guard.backend.state().tables[0], Some(guard.desired()));
        assert_eq!(
            guard.reconcile("verify", Instant::now()),
            Outcome::Unchanged
        );
    }

    /// A copy the monitor recreated before the loop looked is a restore
    /// all the same (status and metrics count it; its kernel counters
    /// started anew), though the loop then finds the table intact.
    #[test]
    fn a_copy_the_monitor_recreated_counts_as_a_restore_of_that_table() {
        let (mut guard, _dir) = guard("[[allow]]\nport = 8080\n");
        assert_eq!(guard.reconcile("start", Instant::now()), Outcome::Applied);
        let recreated = Recreated {
            table: portguard_nft::STANDBY_TABLE.into(),
            found: Found::Missing,
            took: std::time::Duration::from_micros(1500),
        };
        guard.note_recreated("netfilter change by nft (pid 7)", &[recreated]);
        assert_eq!(
            guard.reconcile("netfilter change by nft (pid 7)", Instant::now()),
            Outcome::Unchanged
        );
        assert_eq!(guard.counters.restores, 1);
        assert_eq!(guard.counters.last_restore_ms, Some(1.5));
        assert_eq!(
            guard.counters.tables_replaced,
            vec![1, 2],
            "both copies created at start, then the standby anew"
        );
    }

    #[test]
    fn a_change_racing_the_restore_is_not_kept() {
        let (mut guard, _dir) = guard("[[allow]]\nport = 1111\n");
        guard.reconcile("start", Instant::now());
        let mut tampered = guard.desired();
        tampered.sets.clear();
        guard.backend.state().tables[1] = None;
        guard.backend.state().tamper_after_commit = Some(tampered);
        guard.reconcile("netfilter change", Instant::now());
        let desired = guard.desired();
        assert!(
            guard
                .backend
                .state()
                .tables
                .iter()
                .all(|t| t.as_ref() == Some(&desired))
        );
    }

    #[test]
    fn a_failed_reconcile_is_reported_and_the_next_one_retries() {
        let (mut guard, _dir) = guard("");
        guard.backend.state().fail_next = Some("kernel said no".into());
        assert!(
            matches!(guard.reconcile("start", Instant::now()), Outcome::Failed(e) if e.contains("kernel said no"))
        );
        assert!(matches!(
            &guard.last_reconcile.as_ref().unwrap().outcome,
            Outcome::Failed(e) if e.contains("kernel said no")
        ));
        assert_eq!(guard.reconcile("retry", Instant::now()), Outcome::Applied);
    }

    #[test]
    fn a_refused_reload_keeps_the_ruleset_in_force_and_says_why() {
        let (mut guard, _dir) = guard("[[allow]]\nport = 8080\n");
        guard.reconcile("start", Instant::now());
        let before = guard.backend.state().tables.clone();
        let outcome = guard.reload(Err("portguard.toml:3:8: bad".into()));
        assert!(!outcome.applied);
        assert_eq!(
            guard.config_error.as_deref(),
            Some("portguard.toml:3:8: bad")
        );
        assert_eq!(guard.backend.state().tables, before);
        // Settings that take a restart are refused, not silently ignored.
        let moved = Config::from_toml_str("[control]\nsocket = \"/run/elsewhere.sock\"\n").unwrap();
        let outcome = guard.reload(Ok(moved));
        assert!(!outcome.applied);
        assert!(outcome.error.unwrap().contains("[control] socket"));
        // A good one is applied, kept as the last good, and clears the error.
        let good = Config::from_toml_str("[[allow]]\nport = 9090\n").unwrap();
        assert!(guard.reload(Ok(good.clone())).applied);
        assert_eq!(guard.config_error, None);
        assert_eq!(
            guard.backend.state().tables[0],
            Some(plan(&good, &Snapshot::default()))
        );
        assert_eq!(
            lastgood::load(&guard.state_dir)
                .unwrap()
                .unwrap()
                .allow
                .len(),
            1,
            "kept as the last good configuration"
        );
    }

    #[test]
    fn the_docker_api_stays_closed_across_docker_snapshots() {
        use portguard_core::plan::names;
        use portguard_core::ruleset::Element;
        let (mut guard, _dir) = guard("");
        guard.reconcile("start", Instant::now());
        let api_ports = |guard: &Guard<FakeKernel>| {
            guard.backend.state().tables[0]
                .as_ref()
                .unwrap()
                .set(names::DOCKER_API_TCP)
                .unwrap()
                .elements
                .clone()
        };
        let port = |p| Element::Port(portguard_config::PortRange::single(p).unwrap());
        // One element per port (a hash set): never merged into a range.
        let registered = vec![port(2375), port(2376)];
        // Docker's registered ports are closed before dockerd is seen.
        assert_eq!(api_ports(&guard), registered);
        guard.on_docker_api(vec![DockerApiListener {
            addr: "0.0.0.0".parse().unwrap(),
            port: 4243,
            pid: 1,
        }]);
        let found = vec![port(2375), port(2376), port(4243)];
        assert_eq!(api_ports(&guard), found);
        // Docker's snapshots know nothing of dockerd's listeners.
        guard.on_docker(DockerUpdate::Snapshot(Snapshot::default()));
        assert_eq!(api_ports(&guard), found);
        guard.on_docker_api(Vec::new());
        assert_eq!(api_ports(&guard), registered);
    }

    /// What the monitor hands the loop when somebody sets the drop.
    fn drop_heard(guard: &mut Guard<FakeKernel>, setter: DropSetter) -> Ip6Check {
        guard.backend.state().ip6_policy = ForwardPolicy::Drop;
        Ip6Check::Netfilter {
            why: "netfilter change by ip6tables (pid 9)".into(),
            heard: vec![ForwardPolicySet {
                policy: ForwardPolicy::Drop,
                setter: Some(setter),
            }],
            lost: false,
        }
    }

    fn docker() -> DropSetter {
        DropSetter::Docker {
            process: "ip6tables".into(),
            pid: 9,
        }
    }

    #[test]
    fn p6_docker_s_ipv6_forward_drop_is_undone_and_counted() {
        let (mut undoing, _dir) = guard("");
        let check = drop_heard(&mut undoing, docker());
        undoing.restore_ip6_policy(&check);
        assert_eq!(undoing.backend.state().ip6_policy, ForwardPolicy::Accept);
        assert_eq!(undoing.counters.ip6_restores, 1);
        // Not with `[ipv6] restore_forward_policy = false`: status says
        // it is Docker's and left.
        let (mut keeping, _dir) = guard("[ipv6]\nrestore_forward_policy = false\n");
        let check = drop_heard(&mut keeping, docker());
        keeping.restore_ip6_policy(&check);
        assert_eq!(keeping.backend.state().ip6_policy, ForwardPolicy::Drop);
        let status = crate::status::status(&mut keeping);
        assert_eq!(status.ipv6_forward_drops.len(), 1);
        assert!(status.ipv6_forward_drops[0].left_alone);
        assert!(status.ipv6_forward_drops[0].set_by.is_docker());
    }

    /// The drop of issue 18: ufw's routed policy (`DEFAULT_FORWARD_POLICY`
    /// drop) was set to accept at start, on every change and verify.
    #[test]
    fn ufw_s_ipv6_forward_drop_is_left_on_every_occasion_and_status_says_whose_it_is() {
        let ufw = DropSetter::Process {
            process: "ip6tables-resto".into(),
            pid: 9,
            parent: Some("ufw-init".into()),
        };
        let (mut guard, _dir) = guard("");
        // Already drop when the guard starts: whose is not known.
        guard.backend.state().ip6_policy = ForwardPolicy::Drop;
        guard.restore_ip6_policy(&Ip6Check::Start);
        let status = crate::status::status(&mut guard);
        assert_eq!(status.ipv6_forward_drops.len(), 1);
        assert_eq!(status.ipv6_forward_drops[0].set_by, DropSetter::BeforeStart);
        // `ufw reload` sets it again, heard this time.
        let check = drop_heard(&mut guard, ufw.clone());
        for check in [
            check,
            Ip6Check::PeriodicVerify,
            Ip6Check::DockerConnected,
            Ip6Check::Start,
        ] {
            guard.restore_ip6_policy(&check);
            assert_eq!(
                guard.backend.state().ip6_policy,
                ForwardPolicy::Drop,
                "{check:?}"
            );
        }
        assert_eq!(guard.counters.ip6_restores, 0);
        let status = crate::status::status(&mut guard);
        let drop = &status.ipv6_forward_drops[0];
        assert_eq!(drop.set_by, ufw);
        assert!(drop.left_alone);
        assert!(drop.needs.as_deref().unwrap().contains("ufw route allow"));
        assert_eq!(status.ipv6_forward_policy.to_string(), "drop");
    }

    #[test]
    fn a_failed_apply_on_reload_rolls_back() {
        let (mut guard, _dir) = guard("[[allow]]\nport = 8080\n");
        guard.reconcile("start", Instant::now());
        guard.backend.state().fail_next = Some("EINVAL".into());
        let outcome = guard.reload(Ok(
            Config::from_toml_str("[[allow]]\nport = 9090\n").unwrap()
        ));
        assert!(!outcome.applied);
        assert_eq!(guard.config.allow.len(), 1);
        assert_eq!(guard.backend.state().tables[0], Some(guard.desired()));
    }
}
