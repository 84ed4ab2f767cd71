//! Why the loop wakes up, and the threads that wake it: the nftables
//! monitor, signals, the configuration reader, and the rescanners (the
//! Docker API scan, the netfilter inventory). Anything that may block
//! (reading a file that could be a FIFO or on a hung mount) runs here, off
//! the loop; the loop only ever waits on its channel, with a timeout.

use std::fmt::Display;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc::{RecvTimeoutError, Sender, SyncSender, TrySendError, channel, sync_channel};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use portguard_config::Config;
use portguard_core::DockerApiListener;
use portguard_core::control::{RequestBody, Response};
use portguard_core::hostfw::NetfilterInventory;
use portguard_docker::DockerUpdate;
use portguard_nft::{Change, ForwardPolicySet, Monitor, MonitorEvent, Recreated, Recreation};

/// Where a control request's answer goes (the control socket's task).
pub type ReplyTo = tokio::sync::oneshot::Sender<Response>;

/// Why the loop wakes up.
pub enum Trigger {
    /// Somebody else committed an nf_tables transaction.
    Netfilter(Change, Instant),
    /// Notifications were lost: check everything. Carries the copies the
    /// monitor found missing and recreated.
    Overflow(Vec<Recreated>),
    Docker(DockerUpdate),
    /// The Docker API scanner found other listeners than before.
    DockerApi(Vec<DockerApiListener>),
    /// The netfilter inventory worker read other firewalls' chains anew
    /// (and they changed).
    Inventory(Arc<NetfilterInventory>),
    Control(RequestBody, ReplyTo),
    /// SIGHUP.
    Reload,
    /// The configuration reader finished (a reload's answer).
    ConfigRead(Result<Config, String>),
    Stop,
}

/// Follows nf_tables changes; a deleted copy of the guard's table is
/// recreated on this thread from what `recreation` keeps ready, before the
/// loop hears of it (see [`portguard_nft::Recreation`]).
pub fn spawn_monitor(tx: Sender<Trigger>, recreation: Recreation) -> anyhow::Result<()> {
    let mut monitor = Monitor::open()
        .and_then(|m| m.recreating(recreation))
        .context("subscribing to nftables changes")?;
    std::thread::Builder::new()
        // Its recreations are committed under this name (nf_tables names
        // the committing thread): `nft monitor` shows `portguardd-mon`,
        // never something that reads like the `nft` tool.
        .name("portguardd-mon".into())
        .spawn(move || {
            loop {
                let trigger = match monitor.next_event() {
                    Ok(MonitorEvent::Change(change)) if change.ours => continue,
                    Ok(MonitorEvent::Change(change)) => Trigger::Netfilter(change, Instant::now()),
                    Ok(MonitorEvent::Overflow { recreated }) => Trigger::Overflow(recreated),
                    Err(e) => {
                        tracing::error!(
                            "nftables monitor failed ({e}); relying on periodic verification"
                        );
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

pub fn spawn_signals(tx: Sender<Trigger>) -> anyhow::Result<()> {
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

/// Reads the configuration on a thread of its own; the answer comes back
/// as [`Trigger::ConfigRead`]. A reader that never returns (a FIFO nobody
/// writes to) costs one thread, never the loop.
pub fn read_config(path: PathBuf, tx: Sender<Trigger>) {
    let spawned = std::thread::Builder::new()
        .name("config-reader".into())
        .spawn(move || {
            let result = Config::load(&path).map_err(|e| e.to_string());
            let _ = tx.send(Trigger::ConfigRead(result));
        });
    if let Err(e) = spawned {
        tracing::error!("could not start the configuration reader: {e}");
    }
}

/// Reads the configuration at start, waiting at most `timeout`: a boot
/// must install protection whatever the file does.
pub fn read_config_at_start(path: PathBuf, timeout: Duration) -> Result<Config, String> {
    let (tx, rx) = channel();
    read_config(path, tx);
    match rx.recv_timeout(timeout) {
        Ok(Trigger::ConfigRead(result)) => result,
        _ => Err(format!(
            "reading the configuration did not finish within {} s",
            timeout.as_secs()
        )),
    }
}

/// How often the other firewalls' chains are read without being asked.
const INVENTORY_INTERVAL: Duration = Duration::from_secs(30);
/// Least time between two inventory reads: with tens of thousands of
/// chains (kube-proxy on iptables-nft) one read takes seconds, and such a
/// host changes netfilter all the time.
const INVENTORY_MIN_GAP: Duration = Duration::from_secs(1);

/// Starts the netfilter inventory worker: every chain of every table is
/// dumped here, never on the loop (a dump of 100,000 chains took 5 s);
/// `status`, `ports` and `explain` answer from the latest one it sent.
pub fn spawn_inventory(tx: Sender<Trigger>) -> std::io::Result<Poke> {
    spawn_rescanner(
        "netfilter-inventory",
        "read the host's other firewall chains",
        INVENTORY_MIN_GAP,
        INVENTORY_INTERVAL,
        portguard_nft::netfilter_inventory,
        move |inventory| tx.send(Trigger::Inventory(inventory)).is_ok(),
    )
}

/// Starts a thread that calls `look` at once, then every `interval` and
/// whenever poked, but never twice within `min_gap` (a storm of pokes
/// costs one look per `min_gap`). `report` gets each result that differs
/// from the last one (false: stop). A failed look is logged once and the
/// last result stays: it proves nothing either way. Returns the poke.
pub fn spawn_rescanner<T, E>(
    name: &str,
    what: &'static str,
    min_gap: Duration,
    interval: Duration,
    mut look: impl FnMut() -> Result<T, E> + Send + 'static,
    report: impl Fn(Arc<T>) -> bool + Send + 'static,
) -> std::io::Result<Poke>
where
    T: PartialEq + Send + Sync + 'static,
    E: Display,
{
    let (tx, rx) = sync_channel(1);
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            background_priority();
            let mut last: Option<Arc<T>> = None;
            let mut failing = false;
            loop {
                let started = Instant::now();
                let result = look();
                tracing::debug!(
                    elapsed_ms = %format!("{:.2}", started.elapsed().as_secs_f64() * 1000.0),
                    ok = result.is_ok(),
                    "{what}"
                );
                match result {
                    Ok(found) => {
                        failing = false;
                        if last.as_deref() != Some(&found) {
                            let found = Arc::new(found);
                            last = Some(Arc::clone(&found));
                            if !report(found) {
                                return;
                            }
                        }
                    }
                    Err(e) if !failing => {
                        failing = true;
                        tracing::error!("could not {what}: {e}; the last result stays");
                    }
                    Err(_) => {}
                }
                std::thread::sleep(min_gap);
                if let Err(RecvTimeoutError::Disconnected) =
                    rx.recv_timeout(interval.saturating_sub(min_gap))
                {
                    return;
                }
            }
        })?;
    Ok(Poke(tx))
}

/// Asks a rescanner to look again, without ever waiting for it.
#[derive(Clone)]
pub struct Poke(SyncSender<()>);

impl Poke {
    /// A poke no thread answers: the test holds the receiving end, which
    /// keeps every poke (a rescanner keeps one).
    #[cfg(test)]
    pub fn detached() -> (Poke, std::sync::mpsc::Receiver<()>) {
        let (tx, rx) = sync_channel(1024);
        (Poke(tx), rx)
    }

    pub fn now(&self) {
        // Full: a look is already due, which is as good.
        if let Err(TrySendError::Disconnected(())) = self.0.try_send(()) {
            tracing::warn!("a rescanner has stopped");
        }
    }
}

/// Why the loop looks at the IPv6 FORWARD policy (see
/// [`crate::guard::Guard::restore_ip6_policy`]): who set a drop decides
/// whether it is undone, and only the monitor can tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ip6Check {
    /// The daemon starts: a drop found now was set before it.
    Start,
    /// Docker (re)connected: on iptables-legacy, which sends no
    /// notifications, the only sign of a dockerd start.
    DockerConnected,
    /// Docker went away: the policies are looked at as Docker left them,
    /// before the loop hears that it left (the loop looks at the IPv6
    /// policy before it takes Docker's updates), so that a legacy drop
    /// already there is not taken for the one a new dockerd sets.
    DockerGone,
    PeriodicVerify,
    /// nf_tables changed `ip6 filter`, or notifications were lost.
    Netfilter {
        why: String,
        /// What the changes did to the policy, in order, each drop with
        /// its setter.
        heard: Vec<ForwardPolicySet>,
        /// Notifications were lost: a drop may have been set unheard.
        lost: bool,
    },
}

impl Ip6Check {
    /// For the log.
    pub fn why(&self) -> &str {
        match self {
            Ip6Check::Start => "start",
            Ip6Check::DockerConnected => "Docker (re)connected",
            Ip6Check::DockerGone => "Docker went away",
            Ip6Check::PeriodicVerify => "periodic verify",
            Ip6Check::Netfilter { why, .. } => why,
        }
    }

    /// Adds to a pending check what one more change heard.
    fn heard(check: &mut Option<Ip6Check>, why: String, set: Option<ForwardPolicySet>, lost: bool) {
        match check {
            Some(Ip6Check::Netfilter {
                why: last,
                heard,
                lost: was_lost,
            }) => {
                *last = why;
                heard.extend(set);
                *was_lost |= lost;
            }
            _ => {
                *check = Some(Ip6Check::Netfilter {
                    why,
                    heard: set.into_iter().collect(),
                    lost,
                })
            }
        }
    }
}

/// What a burst of triggers asks for, merged.
#[derive(Default)]
pub struct Pending {
    pub check_table: Option<(String, Instant)>,
    /// Copies the monitor already recreated (each one a restore).
    pub recreated: Vec<Recreated>,
    pub check_ip6: Option<Ip6Check>,
    pub docker: Vec<DockerUpdate>,
    /// Somebody else changed netfilter (dockerd starting writes its rules
    /// right after it opened its `-H` listeners): worth a Docker API look.
    pub netfilter_changed: bool,
    /// The latest Docker API scan, if one came.
    pub docker_api: Option<Vec<DockerApiListener>>,
    /// The latest netfilter inventory, if one came.
    pub inventory: Option<Arc<NetfilterInventory>>,
    pub control: Vec<(RequestBody, ReplyTo)>,
    /// A reload was asked for (SIGHUP).
    pub reload: bool,
    pub config_read: Option<Result<Config, String>>,
    pub stop: bool,
}

impl Pending {
    pub fn add(&mut self, trigger: Trigger) {
        match trigger {
            Trigger::Netfilter(mut change, at) => {
                let why = format!(
                    "netfilter change by {} (pid {})",
                    change.process, change.pid
                );
                tracing::debug!(why, tables = ?change.tables, "netfilter changed");
                self.recreated.append(&mut change.recreated);
                self.netfilter_changed = true;
                if change.may_touch_our_table() && self.check_table.is_none() {
                    self.check_table = Some((why.clone(), at));
                }
                if change.may_touch_ip6_filter() {
                    Ip6Check::heard(&mut self.check_ip6, why, change.ip6_forward, false);
                }
            }
            Trigger::Overflow(mut recreated) => {
                self.recreated.append(&mut recreated);
                self.check_table
                    .get_or_insert(("monitor overflow".into(), Instant::now()));
                Ip6Check::heard(&mut self.check_ip6, "monitor overflow".into(), None, true);
            }
            Trigger::Docker(update) => {
                if matches!(update, DockerUpdate::Disconnected { .. }) {
                    self.check_ip6.get_or_insert(Ip6Check::DockerGone);
                }
                self.docker.push(update)
            }
            Trigger::DockerApi(listeners) => self.docker_api = Some(listeners),
            Trigger::Inventory(inventory) => self.inventory = Some(inventory),
            Trigger::Control(RequestBody::Reload, reply) => {
                self.reload = true;
                self.control.push((RequestBody::Reload, reply));
            }
            Trigger::Control(request, reply) => self.control.push((request, reply)),
            Trigger::Reload => self.reload = true,
            Trigger::ConfigRead(result) => self.config_read = Some(result),
            Trigger::Stop => self.stop = true,
        }
    }
}

/// Lowers the calling thread's CPU priority to nice 10. The daemon's
/// helpers (scans, nflog reports, the metrics file) may wait; a restore on
/// the loop must not wait for them on a busy host. Linux keeps the nice
/// value per thread: this touches only the calling thread.
pub fn background_priority() {
    if rustix::process::nice(10).is_err() {
        tracing::debug!("could not lower a helper thread's priority");
    }
}

#[cfg(test)]
mod priority_tests {
    #![allow(clippy::unwrap_used)]

    /// The nice value of the calling thread (field 19 of its stat line).
    fn own_nice() -> i32 {
        let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
        let after_name = &stat[stat.rfind(')').unwrap() + 2..];
        after_name.split(' ').nth(16).unwrap().parse().unwrap()
    }

    #[test]
    fn a_helper_thread_is_lowered_and_the_loop_thread_is_not() {
        let before = own_nice();
        let helper = std::thread::spawn(|| {
            super::background_priority();
            own_nice()
        })
        .join()
        .unwrap();
        assert_eq!(helper, (before + 10).min(19));
        assert_eq!(own_nice(), before, "the calling thread's priority moved");
    }
}

#[cfg(test)]
mod pending_tests {
    use super::*;

    /// Copies the monitor recreated after an overflow reach the loop like
    /// those of a heard deletion: the loop counts them as restores (their
    /// kernel counters started anew) and checks the tables.
    #[test]
    fn copies_recreated_after_an_overflow_reach_the_loop_with_a_table_check() {
        let mut pending = Pending::default();
        let copy = Recreated {
            table: portguard_nft::STANDBY_TABLE.into(),
            found: portguard_nft::Found::Missing,
            took: std::time::Duration::from_millis(2),
        };
        pending.add(Trigger::Overflow(vec![copy.clone()]));
        assert_eq!(pending.recreated, vec![copy]);
        assert!(pending.check_table.is_some());
    }

    /// Docker going away is a look at the IPv6 policy, taken before the
    /// loop learns of it: a legacy drop already there then is not the one
    /// a new dockerd sets.
    #[test]
    fn docker_going_away_asks_for_a_look_at_the_ip6_policy() {
        let mut pending = Pending::default();
        pending.add(Trigger::Docker(DockerUpdate::Disconnected {
            error: "gone".into(),
        }));
        assert_eq!(pending.check_ip6, Some(Ip6Check::DockerGone));
        assert_eq!(pending.docker.len(), 1);
    }

    /// Every policy change of a burst reaches the IPv6 check, in order,
    /// and a lost notification among them is not forgotten.
    #[test]
    fn a_burst_keeps_every_ip6_policy_change_in_order_and_any_loss() {
        use portguard_nft::{DropSetter, ForwardPolicy};
        let change = |pid, policy: Option<ForwardPolicy>| Change {
            pid,
            process: "ip6tables".into(),
            tables: ["ip6 filter".to_string()].into(),
            ip6_forward: policy.map(|policy| ForwardPolicySet {
                policy,
                setter: Some(DropSetter::Unheard),
            }),
            ..Change::default()
        };
        let mut pending = Pending::default();
        let now = Instant::now();
        pending.add(Trigger::Netfilter(
            change(1, Some(ForwardPolicy::Drop)),
            now,
        ));
        pending.add(Trigger::Netfilter(change(2, None), now));
        pending.add(Trigger::Overflow(Vec::new()));
        pending.add(Trigger::Netfilter(
            change(3, Some(ForwardPolicy::Accept)),
            now,
        ));
        let Some(Ip6Check::Netfilter { why, heard, lost }) = pending.check_ip6 else {
            panic!("no IPv6 check: {:?}", pending.check_ip6);
        };
        let policies: Vec<_> = heard.iter().map(|s| s.policy).collect();
        assert_eq!(policies, vec![ForwardPolicy::Drop, ForwardPolicy::Accept]);
        assert!(lost);
        assert_eq!(why, "netfilter change by ip6tables (pid 3)");
    }
}
