//! Why the loop wakes up, and the threads that wake it: the nftables
//! monitor, signals, and the configuration reader. Anything that may block
//! (reading a file that could be a FIFO or on a hung mount) runs here, off
//! the loop; the loop only ever waits on its channel, with a timeout.

use std::path::PathBuf;
use std::sync::mpsc::{Sender, channel};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use portguard_config::Config;
use portguard_core::DockerApiListener;
use portguard_core::control::{RequestBody, Response};
use portguard_docker::DockerUpdate;
use portguard_nft::{Change, Monitor, MonitorEvent};

/// Where a control request's answer goes (the control socket's task).
pub type ReplyTo = tokio::sync::oneshot::Sender<Response>;

/// Why the loop wakes up.
pub enum Trigger {
    /// Somebody else committed an nf_tables transaction.
    Netfilter(Change, Instant),
    /// Notifications were lost: check everything.
    Overflow,
    Docker(DockerUpdate),
    /// The Docker API scanner found other listeners than before.
    DockerApi(Vec<DockerApiListener>),
    Control(RequestBody, ReplyTo),
    /// SIGHUP.
    Reload,
    /// The configuration reader finished (a reload's answer).
    ConfigRead(Result<Config, String>),
    Stop,
}

pub fn spawn_monitor(tx: Sender<Trigger>) -> anyhow::Result<()> {
    let mut monitor = Monitor::open().context("subscribing to nftables changes")?;
    std::thread::Builder::new()
        .name("nft-monitor".into())
        .spawn(move || {
            loop {
                let trigger = match monitor.next_event() {
                    Ok(MonitorEvent::Change(change)) if change.ours => continue,
                    Ok(MonitorEvent::Change(change)) => Trigger::Netfilter(change, Instant::now()),
                    Ok(MonitorEvent::Overflow) => Trigger::Overflow,
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

/// What a burst of triggers asks for, merged.
#[derive(Default)]
pub struct Pending {
    pub check_table: Option<(String, Instant)>,
    pub check_ip6: Option<String>,
    pub docker: Vec<DockerUpdate>,
    /// Somebody else changed netfilter (dockerd starting writes its rules
    /// right after it opened its `-H` listeners): worth a Docker API look.
    pub netfilter_changed: bool,
    /// The latest Docker API scan, if one came.
    pub docker_api: Option<Vec<DockerApiListener>>,
    pub control: Vec<(RequestBody, ReplyTo)>,
    /// A reload was asked for (SIGHUP).
    pub reload: bool,
    pub config_read: Option<Result<Config, String>>,
    pub stop: bool,
}

impl Pending {
    pub fn add(&mut self, trigger: Trigger) {
        match trigger {
            Trigger::Netfilter(change, at) => {
                let why = format!(
                    "netfilter change by {} (pid {})",
                    change.process, change.pid
                );
                tracing::debug!(why, tables = ?change.tables, "netfilter changed");
                self.netfilter_changed = true;
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
            Trigger::DockerApi(listeners) => self.docker_api = Some(listeners),
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
