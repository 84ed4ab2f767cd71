//! The reconcile loop: the one place that decides what the kernel holds.

use std::path::PathBuf;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use portguard_config::Config;
use portguard_core::{Ruleset, Snapshot, plan};
use portguard_nft::{Change, Monitor, MonitorEvent, Nft, Verification};
use sd_notify::NotifyState;

/// How often the table is verified even when nothing was heard.
const VERIFY_INTERVAL: Duration = Duration::from_secs(30);

/// Why the loop wakes up.
enum Trigger {
    /// Somebody else committed an nf_tables transaction.
    Netfilter(Change, Instant),
    /// Notifications were lost: check everything.
    Overflow,
    Reload,
    Stop,
}

struct Guard {
    config_path: PathBuf,
    config: Config,
    snapshot: Snapshot,
    nft: Nft,
    restores: u64,
    ip6_restores: u64,
}

impl Guard {
    fn desired(&self) -> Ruleset {
        plan(&self.config, &self.snapshot)
    }

    fn apply(&mut self, why: &str) -> anyhow::Result<()> {
        let started = Instant::now();
        let stats = self
            .nft
            .apply(&self.desired())
            .context("applying the ruleset")?;
        tracing::info!(
            why,
            incremental = stats.incremental,
            commit_us = stats.commit.as_micros() as u64,
            total_us = started.elapsed().as_micros() as u64,
            "ruleset applied"
        );
        Ok(())
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
            Verification::Intact => Ok(()),
            state => {
                tracing::warn!(why, ?state, "guard table not intact; restoring");
                self.apply(why)?;
                self.restores += 1;
                tracing::info!(
                    restores = self.restores,
                    restore_ms = %format!("{:.2}", since.elapsed().as_secs_f64() * 1000.0),
                    "guard table restored"
                );
                Ok(())
            }
        }
    }

    fn reload(&mut self) {
        let _ = sd_notify::notify(&[NotifyState::Reloading, monotonic_now()]);
        match Config::load(&self.config_path) {
            Ok(config) => {
                let previous = std::mem::replace(&mut self.config, config);
                match self.apply("reload") {
                    Ok(()) => tracing::info!("configuration reloaded"),
                    Err(e) => {
                        tracing::error!(
                            error = format!("{e:#}"),
                            "new configuration could not be applied; keeping the old one"
                        );
                        self.config = previous;
                        let _ = self.apply("reload rollback");
                    }
                }
            }
            // P7: keep the last good ruleset.
            Err(e) => {
                tracing::error!(error = %e, "invalid configuration on reload; keeping the last good ruleset")
            }
        }
        self.status();
        let _ = sd_notify::notify(&[NotifyState::Ready]);
    }

    fn status(&self) {
        let text = format!(
            "{:?} mode, {} allow entries, {} restores",
            self.config.guard.mode,
            self.config.allow.len(),
            self.restores
        );
        let _ = sd_notify::notify(&[NotifyState::Status(&text)]);
    }
}

fn monotonic_now() -> NotifyState<'static> {
    NotifyState::monotonic_usec_now().unwrap_or(NotifyState::Custom(""))
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

pub fn run(config_path: PathBuf, config: Config) -> anyhow::Result<()> {
    let (tx, rx) = channel();
    // Subscribe before the first apply so that no change after it is missed.
    spawn_monitor(tx.clone())?;
    spawn_signals(tx)?;
    let nft = Nft::open().context("opening nf_tables (portguardd needs CAP_NET_ADMIN)")?;
    let mut guard = Guard {
        config_path,
        config,
        snapshot: Snapshot::default(),
        nft,
        restores: 0,
        ip6_restores: 0,
    };
    // Protection first, then READY (P5: installed before Docker starts).
    guard.apply("start")?;
    guard.restore_ip6_policy("start");
    guard.status();
    let _ = sd_notify::notify(&[NotifyState::Ready]);
    tracing::info!("guard ready");
    event_loop(&mut guard, &rx)?;
    let _ = sd_notify::notify(&[NotifyState::Stopping]);
    tracing::info!("stopping; the guard table stays in place");
    Ok(())
}

fn event_loop(guard: &mut Guard, rx: &Receiver<Trigger>) -> anyhow::Result<()> {
    let watchdog = sd_notify::watchdog_enabled().map(|d| d / 2);
    let tick = watchdog.map_or(VERIFY_INTERVAL, |w| w.min(VERIFY_INTERVAL));
    let mut last_verify = Instant::now();
    loop {
        let trigger = match rx.recv_timeout(tick) {
            Ok(trigger) => Some(trigger),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => return Ok(()),
        };
        if watchdog.is_some() {
            let _ = sd_notify::notify(&[NotifyState::Watchdog]);
        }
        match trigger {
            Some(Trigger::Stop) => return Ok(()),
            Some(Trigger::Reload) => guard.reload(),
            Some(Trigger::Netfilter(change, at)) => {
                // A burst (Docker writes dozens of rules) arrives as many
                // transactions: the first is handled at once, the rest merged.
                let mut touches_us = change.may_touch_our_table();
                let mut touches_ip6 = change.may_touch_ip6_filter();
                let mut stop = false;
                let mut reload = false;
                while let Ok(next) = rx.try_recv() {
                    match next {
                        Trigger::Netfilter(c, _) => {
                            touches_us |= c.may_touch_our_table();
                            touches_ip6 |= c.may_touch_ip6_filter();
                        }
                        Trigger::Overflow => (touches_us, touches_ip6) = (true, true),
                        Trigger::Reload => reload = true,
                        Trigger::Stop => stop = true,
                    }
                }
                tracing::debug!(process = %change.process, pid = change.pid, tables = ?change.tables, "netfilter changed");
                if touches_us {
                    reconcile_or_log(
                        guard,
                        &format!("change by {} (pid {})", change.process, change.pid),
                        at,
                    );
                }
                if touches_ip6 {
                    guard.restore_ip6_policy(&format!("change by {}", change.process));
                }
                if reload {
                    guard.reload();
                }
                if stop {
                    return Ok(());
                }
                last_verify = Instant::now();
            }
            Some(Trigger::Overflow) => {
                reconcile_or_log(guard, "monitor overflow", Instant::now());
                guard.restore_ip6_policy("monitor overflow");
            }
            None => {}
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
    guard.status();
}
