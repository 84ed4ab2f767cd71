//! The reconcile loop: the one place that decides what the kernel holds.
//! Triggers (nftables changes by others, Docker updates, signals, control
//! requests, configuration reads, the periodic verify) arrive on one
//! channel; bursts are merged. The loop never blocks but on that channel,
//! with a timeout, so `WATCHDOG=1` is sent only while it really turns.

use std::path::PathBuf;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use portguard_config::Config;
use portguard_core::control::{ConfigSource, DockerStatus, RequestBody, ResponseBody};

use crate::backend::{Backend, Kernel, choose_tier};
use crate::blocked::{self, Blocked};
use crate::guard::Guard;
use crate::logging::event;
use crate::metrics::Metrics;
use crate::triggers::{Pending, Poke, ReplyTo, Trigger};
use crate::{control, docker_api, lastgood, notify, status, triggers};

/// How often the table is verified even when nothing was heard.
const VERIFY_INTERVAL: Duration = Duration::from_secs(30);
/// How long a start waits for the configuration before it guards with the
/// fallback.
const START_READ_TIMEOUT: Duration = Duration::from_secs(5);

/// What the daemon was started with.
pub struct Options {
    pub config_path: PathBuf,
    pub socket: Option<PathBuf>,
    pub state_dir: PathBuf,
    /// Where the Prometheus metrics are written (`None`: nowhere).
    pub metrics_file: Option<PathBuf>,
}

/// The configuration to guard with at start: the files; else the last good
/// configuration kept in the state directory; else a closed ruleset (the
/// default configuration: empty allowlist, every published port closed).
/// Never refuses to start: a host with a broken file is still guarded (P7).
fn starting_config(options: &Options) -> (Config, ConfigSource, Option<String>) {
    match triggers::read_config_at_start(options.config_path.clone(), START_READ_TIMEOUT) {
        Ok(config) => (config, ConfigSource::Files, None),
        Err(error) => match lastgood::load(&options.state_dir).unwrap_or_else(|e| {
            tracing::error!("the kept last good configuration is unreadable too: {e}");
            None
        }) {
            Some(config) => {
                tracing::error!(portguard_event = event::CONFIG_ERROR, kept = %lastgood::path(&options.state_dir).display(), "invalid configuration at start ({error}); guarding with the last good one");
                (config, ConfigSource::LastGood, Some(error))
            }
            None => {
                tracing::error!(
                    portguard_event = event::CONFIG_ERROR,
                    "invalid configuration at start ({error}) and no last good one; every published port is closed"
                );
                (Config::default(), ConfigSource::Closed, Some(error))
            }
        },
    }
}

pub fn run(options: Options) -> anyhow::Result<()> {
    let (config, source, error) = starting_config(&options);
    // A kernel without nf_tables: one clear sentence naming the module.
    crate::nf_tables::require()?;
    let (tx, rx) = channel();
    // Subscribe before the first apply so that no change after it is missed.
    let recreation = portguard_nft::Recreation::new();
    triggers::spawn_monitor(tx.clone(), recreation.clone())?;
    triggers::spawn_signals(tx.clone())?;
    let kernel_can = portguard_nft::probe_ownership()
        .context("probing nf_tables (portguardd needs CAP_NET_ADMIN)")?;
    let tier = match choose_tier(config.guard.protection, kernel_can) {
        Ok(tier) => tier,
        // A tier this kernel lacks must not leave the host unguarded:
        // guard with the strongest one it has, and say so.
        Err(e) => {
            tracing::error!(
                error = %e,
                "falling back to the strongest protection this kernel has"
            );
            choose_tier(portguard_config::Protection::Auto, kernel_can)?
        }
    };
    let backend = Kernel::open(tier, &recreation)
        .context("opening nf_tables (portguardd needs CAP_NET_ADMIN)")?;
    let docker_socket = config.docker.socket.clone();
    let control_socket = options
        .socket
        .clone()
        .unwrap_or_else(|| config.control.socket.clone());
    let control_group = config.control.group.clone();
    let mut guard = Guard::new(
        options.config_path.clone(),
        options.state_dir.clone(),
        config,
        source,
        backend,
        DockerStatus {
            connected: false,
            socket: docker_socket.display().to_string(),
            engine: None,
            error: Some("not connected yet".into()),
        },
    );
    guard.config_error = error;
    // A kernel that cannot load nfnetlink_log would refuse the whole
    // ruleset because of the reporting rule: guard without the reports.
    guard.nflog_available = portguard_nft::probe_nflog()
        .context("probing nf_tables (portguardd needs CAP_NET_ADMIN)")?;
    if !guard.nflog_available {
        tracing::error!(
            "the kernel refuses nflog rules (nfnetlink_log is missing or cannot be loaded): blocked attempts are not reported to guardctl blocked; protection is unaffected"
        );
    }
    // Protection first, before Docker is even asked (P5), then READY;
    // judging no less than the table this start found.
    guard.keep_judging_what_was_judged();
    let outcome = guard.reconcile("start", Instant::now());
    if let crate::guard::Outcome::Failed(e) = &outcome {
        anyhow::bail!("could not install the guard's table: {e}");
    }
    guard.keep_last_good();
    guard.restore_ip6_policy(&crate::triggers::Ip6Check::Start);
    tracing::info!(
        portguard_event = event::START,
        protection = %tier,
        "protection in place ({tier}): the guard's table is installed, before Docker is asked"
    );
    // The judge chains' nflog rule is in place: follow what it reports.
    let blocked = blocked::spawn();
    control::spawn(&control_socket, control_group.as_deref(), tx.clone())?;
    {
        let tx = tx.clone();
        portguard_docker::spawn(docker_socket, move |update| {
            tx.send(Trigger::Docker(update)).is_ok()
        })?;
    }
    // After Docker: the scanner's first look may find dockerd's listeners.
    let docker_api_scan = {
        let tx = tx.clone();
        docker_api::spawn(move |listeners| tx.send(Trigger::DockerApi(listeners)).is_ok())?
    };
    // Other firewalls' chains, for status/ports/explain: read off the loop.
    let inventory_scan = triggers::spawn_inventory(tx.clone())?;
    guard.notify_status();
    let mut metrics = Metrics::start(options.metrics_file.clone(), &options.state_dir);
    metrics.update(&mut guard, true);
    notify::notify("READY=1\n");
    tracing::info!(control = %control_socket.display(), "guard ready");
    event_loop(
        &mut guard,
        &mut metrics,
        &rx,
        &tx,
        &blocked,
        &Rescanners {
            docker_api: docker_api_scan,
            inventory: inventory_scan,
        },
    )?;
    notify::notify("STOPPING=1\n");
    metrics.stop(&mut guard);
    let _ = std::fs::remove_file(&control_socket);
    tracing::info!(
        portguard_event = event::STOP,
        "stopping; the guard table stays in place"
    );
    Ok(())
}

/// Reloads in progress: a read started for the waiters of `reading`;
/// requests that came after it started wait for the next read.
#[derive(Default)]
struct Reloads {
    in_flight: bool,
    reading: Vec<Option<ReplyTo>>,
    next: Vec<Option<ReplyTo>>,
}

/// The threads that look again when the loop pokes them.
struct Rescanners {
    docker_api: Poke,
    inventory: Poke,
}

fn event_loop<B: Backend>(
    guard: &mut Guard<B>,
    metrics: &mut Metrics,
    rx: &Receiver<Trigger>,
    tx: &Sender<Trigger>,
    blocked: &Blocked,
    rescan: &Rescanners,
) -> anyhow::Result<()> {
    let watchdog = sd_notify::watchdog_enabled().map(|d| d / 2);
    let tick = watchdog.map_or(VERIFY_INTERVAL, |w| w.min(VERIFY_INTERVAL));
    let mut last_verify = Instant::now();
    let mut reloads = Reloads::default();
    loop {
        let mut pending = Pending::default();
        // A metrics write held back by its pacing is due soon: wake for it.
        let wait = metrics.write_due().map_or(tick, |due| due.min(tick));
        match rx.recv_timeout(wait) {
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
                rescan.docker_api.now();
                rescan.inventory.now();
            }
            guard.on_docker(update);
        }
        if pending.netfilter_changed {
            rescan.docker_api.now();
            rescan.inventory.now();
        }
        if let Some(inventory) = pending.inventory.take() {
            guard.netfilter = Some(inventory);
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
                    status.blocked_last_hour = blocked.top_three();
                    control::ok(ResponseBody::Status(Box::new(status)))
                }
                RequestBody::Blocked => control::ok(ResponseBody::Blocked(
                    blocked.report(guard.config.guard.mode == portguard_config::Mode::Audit),
                )),
                RequestBody::Ports => control::ok(ResponseBody::Ports(status::ports(guard))),
                RequestBody::Explain { port, proto, from } => control::ok(ResponseBody::Explain(
                    status::explained(guard, port, proto, from),
                )),
                RequestBody::Metrics => {
                    control::ok(ResponseBody::Metrics(metrics.for_client(guard)))
                }
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
                let _ = reply.send(control::ok(ResponseBody::Reload(outcome.clone())));
            }
            reloads.in_flight = false;
            notify::notify("READY=1\n");
        }
        if !reloads.in_flight && !reloads.next.is_empty() {
            notify::reloading();
            reloads.reading = std::mem::take(&mut reloads.next);
            reloads.in_flight = true;
            triggers::read_config(guard.config_path.clone(), tx.clone());
        }
        if pending.stop {
            return Ok(());
        }
        if last_verify.elapsed() >= VERIFY_INTERVAL {
            guard.reconcile("periodic verify", Instant::now());
            guard.restore_ip6_policy(&crate::triggers::Ip6Check::PeriodicVerify);
            last_verify = Instant::now();
        }
        guard.notify_status();
        metrics.update(guard, false);
    }
}
