//! The reconcile loop: the one place that decides what the kernel holds.
//! Triggers (nftables changes by others, Docker updates, signals, control
//! requests, the periodic verify) arrive on one channel; bursts are merged.

use std::path::PathBuf;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context as _;
use portguard_config::{Config, Mode, Scope};
use portguard_core::control::{
    ConfigStatus, DockerStatus, ReconcileRecord, ReloadOutcome, RequestBody, Response,
    ResponseBody, RulesetStatus, Status, rfc3339,
};
use portguard_core::plan::{CT_MARK_ADMITTED, entry_admits};
use portguard_core::verdict::{explain, port_reports};
use portguard_core::{L4Proto, Ruleset, Snapshot, plan};
use portguard_docker::DockerUpdate;
use portguard_nft::{Change, Monitor, MonitorEvent, Nft, Verification};

use crate::{control, notify};

/// How often the table is verified even when nothing was heard.
const VERIFY_INTERVAL: Duration = Duration::from_secs(30);

/// Why the loop wakes up.
pub enum Trigger {
    /// Somebody else committed an nf_tables transaction.
    Netfilter(Change, Instant),
    /// Notifications were lost: check everything.
    Overflow,
    Docker(DockerUpdate),
    Control(RequestBody, tokio::sync::oneshot::Sender<Response>),
    Reload,
    Stop,
}

struct Guard {
    config_path: PathBuf,
    config: Config,
    config_error: Option<String>,
    snapshot: Snapshot,
    nft: Nft,
    docker: DockerStatus,
    installed: bool,
    verified_at: Option<SystemTime>,
    last_reconcile: Option<ReconcileRecord>,
    restores: u64,
    last_restore_ms: Option<f64>,
    ip6_restores: u64,
    ended_connections: u64,
}

impl Guard {
    fn desired(&self) -> Ruleset {
        plan(&self.config, &self.snapshot)
    }

    fn record(&mut self, trigger: &str, started: Instant, outcome: String) {
        let duration_ms = started.elapsed().as_secs_f64() * 1000.0;
        tracing::info!(trigger, duration_ms = %format!("{duration_ms:.2}"), outcome, "reconcile");
        self.last_reconcile = Some(ReconcileRecord {
            trigger: trigger.to_string(),
            at: rfc3339(SystemTime::now()),
            duration_ms,
            outcome,
        });
    }

    /// Applies the desired ruleset if the kernel does not hold it already.
    fn apply(&mut self, trigger: &str) -> anyhow::Result<()> {
        let started = Instant::now();
        let desired = self.desired();
        let lock = self.config.guard.protection == portguard_config::Protection::OwnedPersistent;
        self.nft.set_lock(lock);
        if self.nft.applied() == Some(&desired)
            && self.nft.applied_lock() == Some(lock)
            && self.nft.verify()? == Verification::Intact
        {
            self.verified_at = Some(SystemTime::now());
            self.record(trigger, started, "unchanged".into());
            return Ok(());
        }
        match self.nft.apply(&desired) {
            Ok(stats) => {
                self.installed = true;
                self.verified_at = Some(SystemTime::now());
                let how = if stats.incremental {
                    "updated in place"
                } else {
                    "replaced"
                };
                self.record(trigger, started, format!("applied ({how})"));
                self.end_disallowed_connections(trigger);
                Ok(())
            }
            Err(e) => {
                self.record(trigger, started, format!("failed: {e}"));
                Err(e).context("applying the ruleset")
            }
        }
    }

    /// P10: connections an allow entry admitted that the current
    /// configuration no longer admits are ended, not left open. (Audit mode
    /// drops nothing, so it ends nothing either.)
    fn end_disallowed_connections(&mut self, trigger: &str) {
        if self.config.guard.mode == Mode::Audit {
            return;
        }
        let (config, snapshot) = (&self.config, &self.snapshot);
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
        match self.nft.end_connections(CT_MARK_ADMITTED, keep) {
            Ok(stats) if stats.ended > 0 => {
                self.ended_connections += stats.ended as u64;
                tracing::info!(
                    trigger,
                    ended = stats.ended,
                    examined = stats.examined,
                    "ended connections the allowlist no longer admits"
                );
            }
            Ok(_) => {}
            Err(e) => {
                tracing::error!(error = %e, "could not end connections the allowlist no longer admits")
            }
        }
    }

    fn restore_ip6_policy(&mut self, why: &str) {
        if !self.config.ipv6.restore_forward_policy {
            return;
        }
        match self.nft.restore_ip6_forward_policy() {
            Ok(restored) => {
                for r in restored {
                    self.ip6_restores += 1;
                    tracing::warn!(why, backend = ?r.backend, "IPv6 FORWARD policy was drop; set it back to accept");
                }
            }
            Err(e) => tracing::error!(error = %e, "could not restore the IPv6 FORWARD policy"),
        }
    }

    /// Puts the table right if it is not intact.
    fn ensure(&mut self, why: &str, since: Instant) -> anyhow::Result<()> {
        match self.nft.verify().context("verifying the ruleset")? {
            Verification::Intact => {
                self.verified_at = Some(SystemTime::now());
                Ok(())
            }
            state => {
                tracing::warn!(why, ?state, "guard table not intact; restoring");
                let started = Instant::now();
                let stats = self
                    .nft
                    .apply(&self.desired())
                    .context("restoring the ruleset")?;
                self.verified_at = Some(SystemTime::now());
                self.installed = true;
                self.restores += 1;
                let ms = since.elapsed().as_secs_f64() * 1000.0;
                self.last_restore_ms = Some(ms);
                tracing::info!(
                    restores = self.restores,
                    restore_ms = %format!("{ms:.2}"),
                    commit_us = stats.commit.as_micros() as u64,
                    "guard table restored"
                );
                self.record(why, started, format!("restored ({state:?})"));
                Ok(())
            }
        }
    }

    fn reload(&mut self) -> ReloadOutcome {
        notify::reloading();
        let outcome = match Config::load(&self.config_path) {
            Ok(config) => {
                let previous = std::mem::replace(&mut self.config, config);
                match self.apply("reload") {
                    Ok(()) => {
                        tracing::info!("configuration reloaded");
                        self.config_error = None;
                        ReloadOutcome {
                            applied: true,
                            error: None,
                        }
                    }
                    Err(e) => {
                        let error = format!("{e:#}");
                        tracing::error!(
                            error,
                            "new configuration could not be applied; keeping the old one"
                        );
                        self.config = previous;
                        let _ = self.apply("reload rollback");
                        self.config_error = Some(error.clone());
                        ReloadOutcome {
                            applied: false,
                            error: Some(error),
                        }
                    }
                }
            }
            // P7: keep the last good ruleset; say why everywhere.
            Err(e) => {
                tracing::error!(error = %e, "invalid configuration on reload; keeping the last good ruleset");
                self.config_error = Some(e.to_string());
                ReloadOutcome {
                    applied: false,
                    error: Some(e.to_string()),
                }
            }
        };
        self.notify_status();
        notify::notify("READY=1\n");
        outcome
    }

    fn on_docker(&mut self, update: DockerUpdate) {
        let snapshot = match update {
            DockerUpdate::Connected { snapshot, engine } => {
                self.docker.connected = true;
                self.docker.engine = Some(engine);
                self.docker.error = None;
                Some(snapshot)
            }
            DockerUpdate::Snapshot(snapshot) => Some(snapshot),
            // P8: protection stays as it was while Docker is away.
            DockerUpdate::Disconnected { error } => {
                self.docker.connected = false;
                self.docker.error = Some(error);
                None
            }
        };
        if let Some(snapshot) = snapshot {
            self.snapshot = snapshot;
            if let Err(e) = self.apply("docker") {
                tracing::error!(error = format!("{e:#}"), "could not apply Docker's changes");
            }
        }
        self.notify_status();
    }

    fn status(&mut self) -> Status {
        let ipv6_forward_policy = self
            .nft
            .ip6_forward_policy()
            .map_or_else(|e| format!("unknown ({e})"), |p| p.as_str().to_string());
        // One read of the table serves both answers.
        let table = self.nft.read_table().ok().flatten();
        let installed = table.is_some();
        let blocked_packets = table.map_or(0, |t| t.blocked_packets());
        Status {
            mode: match self.config.guard.mode {
                Mode::Enforce => "enforce",
                Mode::Audit => "audit",
            }
            .into(),
            scope: match self.config.guard.scope {
                Scope::Containers => "containers",
                Scope::All => "all",
            }
            .into(),
            ruleset: RulesetStatus {
                installed: installed && self.installed,
                verified_at: self.verified_at.map(rfc3339),
            },
            last_reconcile: self.last_reconcile.clone(),
            docker: self.docker.clone(),
            ipv6_forward_policy,
            restores: self.restores,
            last_restore_ms: self.last_restore_ms,
            ipv6_policy_restores: self.ip6_restores,
            blocked_packets,
            ended_connections: self.ended_connections,
            config: ConfigStatus {
                path: self.config_path.display().to_string(),
                allow_entries: self.config.allow.len(),
                error: self.config_error.clone(),
            },
            published: port_reports(&self.config, &self.snapshot),
        }
    }

    fn answer(&mut self, request: RequestBody) -> Response {
        match request {
            RequestBody::Status => control::ok(ResponseBody::Status(Box::new(self.status()))),
            RequestBody::Ports => control::ok(ResponseBody::Ports(port_reports(
                &self.config,
                &self.snapshot,
            ))),
            RequestBody::Explain { port, proto, from } => control::ok(ResponseBody::Explain(
                explain(&self.config, &self.snapshot, port, proto, from),
            )),
            RequestBody::Reload => control::ok(ResponseBody::Reload(self.reload())),
        }
    }

    fn notify_status(&self) {
        let text = format!(
            "{} mode, {} allow entries, {} published ports, Docker {}, {} restores{}",
            match self.config.guard.mode {
                Mode::Enforce => "enforcing",
                Mode::Audit => "audit",
            },
            self.config.allow.len(),
            self.snapshot.published.len(),
            if self.docker.connected {
                "connected"
            } else {
                "not connected"
            },
            self.restores,
            if self.config_error.is_some() {
                ", configuration error (see guardctl status)"
            } else {
                ""
            },
        );
        notify::notify(&format!("STATUS={text}\n"));
    }
}

fn spawn_monitor(tx: Sender<Trigger>) -> anyhow::Result<()> {
    let mut monitor = Monitor::open().context("subscribing to nftables changes")?;
    std::thread::Builder::new().name("nft-monitor".into()).spawn(move || {
        loop {
            let trigger = match monitor.next_event() {
                Ok(MonitorEvent::Change(change)) if change.ours => continue,
                Ok(MonitorEvent::Change(change)) => Trigger::Netfilter(change, Instant::now()),
                Ok(MonitorEvent::Overflow) => Trigger::Overflow,
                Err(e) => {
                    tracing::error!(error = %e, "nftables monitor failed; relying on periodic verification");
                    return;
                }
            };
            if tx.send(trigger).is_err() {
                return;
            }
        }
    })?;
    Ok(())
}

fn spawn_signals(tx: Sender<Trigger>) -> anyhow::Result<()> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGHUP, SIGINT, SIGTERM])?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for signal in signals.forever() {
                let trigger = if signal == SIGHUP {
                    Trigger::Reload
                } else {
                    Trigger::Stop
                };
                if tx.send(trigger).is_err() {
                    return;
                }
            }
        })?;
    Ok(())
}

pub fn run(config_path: PathBuf, config: Config, socket: Option<PathBuf>) -> anyhow::Result<()> {
    let (tx, rx) = channel();
    // Subscribe before the first apply so that no change after it is missed.
    spawn_monitor(tx.clone())?;
    spawn_signals(tx.clone())?;
    let nft = Nft::open().context("opening nf_tables (portguardd needs CAP_NET_ADMIN)")?;
    let docker_socket = config.docker.socket.clone();
    let control_socket = socket.unwrap_or_else(|| config.control.socket.clone());
    let control_group = config.control.group.clone();
    let mut guard = Guard {
        config_path,
        config,
        config_error: None,
        snapshot: Snapshot::default(),
        nft,
        docker: DockerStatus {
            connected: false,
            socket: docker_socket.display().to_string(),
            engine: None,
            error: Some("not connected yet".into()),
        },
        installed: false,
        verified_at: None,
        last_reconcile: None,
        restores: 0,
        last_restore_ms: None,
        ip6_restores: 0,
        ended_connections: 0,
    };
    // Protection first, before Docker is even asked (P5), then READY.
    guard.apply("start")?;
    guard.restore_ip6_policy("start");
    control::spawn(&control_socket, control_group.as_deref(), tx.clone())?;
    {
        let tx = tx.clone();
        portguard_docker::spawn(docker_socket, move |update| {
            tx.send(Trigger::Docker(update)).is_ok()
        })?;
    }
    drop(tx);
    guard.notify_status();
    notify::notify("READY=1\n");
    tracing::info!(control = %control_socket.display(), "guard ready");
    event_loop(&mut guard, &rx)?;
    notify::notify("STOPPING=1\n");
    let _ = std::fs::remove_file(&control_socket);
    tracing::info!("stopping; the guard table stays in place");
    Ok(())
}

/// What a burst of triggers asks for, merged.
#[derive(Default)]
struct Pending {
    check_table: Option<(String, Instant)>,
    check_ip6: Option<String>,
    docker: Vec<DockerUpdate>,
    control: Vec<(RequestBody, tokio::sync::oneshot::Sender<Response>)>,
    reload: bool,
    stop: bool,
}

impl Pending {
    fn add(&mut self, trigger: Trigger) {
        match trigger {
            Trigger::Netfilter(change, at) => {
                let why = format!(
                    "netfilter change by {} (pid {})",
                    change.process, change.pid
                );
                tracing::debug!(why, tables = ?change.tables, "netfilter changed");
                if change.may_touch_our_table() && self.check_table.is_none() {
                    self.check_table = Some((why.clone(), at));
                }
                if change.may_touch_ip6_filter() {
                    self.check_ip6 = Some(why);
                }
            }
            Trigger::Overflow => {
                self.check_table
                    .get_or_insert(("monitor overflow".into(), Instant::now()));
                self.check_ip6 = Some("monitor overflow".into());
            }
            Trigger::Docker(update) => self.docker.push(update),
            Trigger::Control(request, reply) => self.control.push((request, reply)),
            Trigger::Reload => self.reload = true,
            Trigger::Stop => self.stop = true,
        }
    }
}

fn event_loop(guard: &mut Guard, rx: &Receiver<Trigger>) -> anyhow::Result<()> {
    let watchdog = sd_notify::watchdog_enabled().map(|d| d / 2);
    let tick = watchdog.map_or(VERIFY_INTERVAL, |w| w.min(VERIFY_INTERVAL));
    let mut last_verify = Instant::now();
    loop {
        let mut pending = Pending::default();
        match rx.recv_timeout(tick) {
            // The first trigger is handled at once; whatever queued up
            // behind it (a burst) is merged into the same pass.
            Ok(trigger) => {
                pending.add(trigger);
                while let Ok(next) = rx.try_recv() {
                    pending.add(next);
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return Ok(()),
        }
        if watchdog.is_some() {
            notify::notify("WATCHDOG=1\n");
        }
        if let Some((why, at)) = pending.check_table.take() {
            reconcile_or_log(guard, &why, at);
            last_verify = Instant::now();
        }
        if let Some(why) = pending.check_ip6.take() {
            guard.restore_ip6_policy(&why);
        }
        for update in pending.docker.drain(..) {
            guard.on_docker(update);
        }
        if pending.reload {
            guard.reload();
        }
        for (request, reply) in pending.control.drain(..) {
            let _ = reply.send(guard.answer(request));
        }
        if pending.stop {
            return Ok(());
        }
        if last_verify.elapsed() >= VERIFY_INTERVAL {
            reconcile_or_log(guard, "periodic verify", Instant::now());
            guard.restore_ip6_policy("periodic verify");
            last_verify = Instant::now();
        }
    }
}

fn reconcile_or_log(guard: &mut Guard, why: &str, since: Instant) {
    if let Err(e) = guard.ensure(why, since) {
        // Keep running: the next trigger or periodic verify tries again.
        tracing::error!(why, error = format!("{e:#}"), "reconcile failed");
    }
    guard.notify_status();
}
