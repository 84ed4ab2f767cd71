//! The reconcile loop: the one place that decides what the kernel holds.
//! Triggers (nftables changes by others, Docker updates, signals, control
//! requests, configuration reads, the periodic verify) arrive on one
//! channel; bursts are merged. The loop never blocks but on that channel,
//! with a timeout, so `WATCHDOG=1` is sent only while it really turns.
//!
//! [`event_loop`] takes everything it acts on as arguments (the guard with
//! its backend, the [`Effects`] on the rest of the daemon, the
//! [`Triggers`]), so that tests drive it in-process with a fake kernel and
//! fake triggers.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use portguard_core::control::{RequestBody, ResponseBody};

use crate::backend::Backend;
use crate::blocked_log::Blocked;
use crate::guard::Guard;
use crate::metrics::{self, Metrics};
use crate::triggers::{Ip6Check, Pending, Poke, ReplyTo, Trigger};
use crate::{control_socket, notify, status};

/// How often the table is verified even when nothing was heard.
pub const VERIFY_INTERVAL: Duration = Duration::from_secs(30);

/// Why the loop wakes: its channel, and the periodic verify.
pub struct Triggers {
    pub rx: Receiver<Trigger>,
    /// The loop's own sender: a configuration read answers on it.
    pub tx: Sender<Trigger>,
    /// How often the table is verified even when nothing was heard
    /// ([`VERIFY_INTERVAL`] in the daemon).
    pub verify_every: Duration,
}

/// What the loop acts on besides the guard.
pub struct Effects {
    pub metrics: Metrics,
    /// The blocked-attempts summary `status` and `blocked` answer from.
    pub blocked: Arc<Blocked>,
    pub rescan: Rescanners,
    /// Starts reading the configuration file, never waiting for it: the
    /// answer comes back on the sender as [`Trigger::ConfigRead`] (the
    /// daemon's, [`crate::triggers::read_config`], reads on a thread of
    /// its own; a read that never finishes costs that thread).
    pub read_config: Box<dyn FnMut(PathBuf, Sender<Trigger>) + Send>,
}

/// The threads that look again when the loop pokes them.
pub struct Rescanners {
    pub docker_api: Poke,
    pub inventory: Poke,
}

/// Reloads in progress: a read started for the waiters of `reading`;
/// requests that came after it started wait for the next read.
#[derive(Default)]
struct Reloads {
    in_flight: bool,
    reading: Vec<Option<ReplyTo>>,
    next: Vec<Option<ReplyTo>>,
}

/// Runs until a stop (or until every sender is gone). Each pass takes a
/// burst of triggers as one: the guard's table is checked once for any
/// number of changes heard together.
pub fn event_loop<B: Backend>(guard: &mut Guard<B>, effects: &mut Effects, triggers: &Triggers) {
    let verify_every = triggers.verify_every;
    let watchdog = sd_notify::watchdog_enabled().map(|d| d / 2);
    let tick = watchdog.map_or(verify_every, |w| w.min(verify_every));
    let mut last_verify = Instant::now();
    let mut reloads = Reloads::default();
    loop {
        let mut pending = Pending::default();
        // A metrics write held back by its pacing is due soon: wake for it.
        let wait = effects
            .metrics
            .write_due()
            .map_or(tick, |due| due.min(tick));
        match triggers.rx.recv_timeout(wait) {
            // The first trigger is handled at once; whatever queued up
            // behind it (a burst) is merged into the same pass.
            Ok(trigger) => {
                pending.add(trigger);
                while let Ok(next) = triggers.rx.try_recv() {
                    pending.add(next);
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        if watchdog.is_some() {
            notify::notify("WATCHDOG=1\n");
        }
        if let Some((why, at)) = pending.check_table.take() {
            guard.note_recreated(&why, &pending.recreated);
            guard.reconcile(&why, at);
            last_verify = Instant::now();
        }
        if let Some(why) = pending.check_ip6.take() {
            guard.restore_ip6_policy(&why);
        }
        for update in pending.docker.drain(..) {
            // dockerd (re)started: it may listen on other `-H` addresses.
            // Its firewall driver may have changed too.
            if matches!(update, portguard_docker::DockerUpdate::Connected { .. }) {
                effects.rescan.docker_api.now();
                effects.rescan.inventory.now();
            }
            guard.on_docker(update);
        }
        if pending.netfilter_changed {
            effects.rescan.docker_api.now();
            effects.rescan.inventory.now();
        }
        if let Some(inventory) = pending.inventory.take() {
            guard.set_netfilter(inventory);
        }
        if let Some(listeners) = pending.docker_api.take() {
            guard.on_docker_api(listeners);
        }
        let mut reload_waiters: Vec<Option<ReplyTo>> = Vec::new();
        for (request, reply) in pending.control.drain(..) {
            let response = match request {
                RequestBody::Reload => {
                    reload_waiters.push(Some(reply));
                    continue;
                }
                RequestBody::Status => {
                    let mut status = status::status(guard);
                    status.blocked_last_hour = effects.blocked.top_three();
                    control_socket::ok(ResponseBody::Status(Box::new(status)))
                }
                RequestBody::Blocked => control_socket::ok(ResponseBody::Blocked(
                    effects
                        .blocked
                        .report(guard.config().guard.mode == portguard_config::Mode::Audit),
                )),
                RequestBody::Ports => control_socket::ok(ResponseBody::Ports(status::ports(guard))),
                RequestBody::Explain { port, proto, from } => control_socket::ok(
                    ResponseBody::Explain(status::explained(guard, port, proto, from)),
                ),
                RequestBody::Metrics => control_socket::ok(ResponseBody::Metrics(
                    metrics_for_client(guard, &mut effects.metrics),
                )),
            };
            let _ = reply.send(response);
        }
        if pending.reload && reload_waiters.is_empty() {
            reload_waiters.push(None);
        }
        reloads.next.extend(reload_waiters);
        if let Some(result) = pending.config_read.take() {
            let outcome = guard.reload(result);
            for reply in reloads.reading.drain(..).flatten() {
                let _ = reply.send(control_socket::ok(ResponseBody::Reload(outcome.clone())));
            }
            reloads.in_flight = false;
            notify::notify("READY=1\n");
        }
        if !reloads.in_flight && !reloads.next.is_empty() {
            notify::reloading();
            reloads.reading = std::mem::take(&mut reloads.next);
            reloads.in_flight = true;
            (effects.read_config)(guard.config_path().to_path_buf(), triggers.tx.clone());
        }
        if pending.stop {
            return;
        }
        if last_verify.elapsed() >= verify_every {
            guard.reconcile("periodic verify", Instant::now());
            guard.restore_ip6_policy(&Ip6Check::PeriodicVerify);
            last_verify = Instant::now();
        }
        guard.notify_status();
        refresh_metrics(guard, &mut effects.metrics, metrics::READ_INTERVAL);
    }
}

/// Brings the metrics up to date, the guard reading the kernel's counters
/// first when its last read is `max_age` old or older (`ZERO`: always).
pub fn refresh_metrics<B: Backend>(
    guard: &mut Guard<B>,
    metrics: &mut Metrics,
    max_age: Duration,
) -> String {
    if !guard.counters().kernel.read_within(max_age) {
        guard.read_blocked_counters();
    }
    metrics.update(&guard.view())
}

/// The text for `guardctl metrics`: the kernel's counters as read at most
/// [`metrics::CLIENT_READ_GAP`] ago, the rest as of the loop's last pass
/// (the text made then). The counters are read only when the last read is
/// older than that.
fn metrics_for_client<B: Backend>(guard: &mut Guard<B>, metrics: &mut Metrics) -> String {
    let read_lately = guard
        .counters()
        .kernel
        .read_within(metrics::CLIENT_READ_GAP);
    if read_lately && !metrics.last_text().is_empty() {
        return metrics.last_text().to_string();
    }
    refresh_metrics(guard, metrics, Duration::ZERO)
}

#[cfg(test)]
mod tests;
