//! The daemon's start: the configuration to guard with, the tier, the
//! guard's table before anything else, then the threads that feed the
//! reconcile loop ([`crate::event_loop`]), which runs until a stop.

use std::path::PathBuf;
use std::sync::mpsc::channel;
use std::time::Duration;

use anyhow::Context as _;
use portguard_config::Config;
use portguard_core::control::{ConfigSource, DockerStatus, ProtectionTier};

use crate::backend::{Kernel, choose_tier};
use crate::event_loop::{
    Effects, Rescanners, Triggers, VERIFY_INTERVAL, event_loop, refresh_metrics,
};
use crate::guard::{Guard, Setup};
use crate::logging::event;
use crate::metrics::Metrics;
use crate::triggers::Trigger;
use crate::{api_scan, blocked_log, control_socket, lastgood, notify, triggers};

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
    let (config, config_source, config_error) = starting_config(&options);
    // A kernel without nf_tables: one clear sentence naming the module.
    crate::nf_tables::require()?;
    let (tx, rx) = channel();
    // Subscribe before the first apply so that no change after it is missed.
    let recreation = portguard_nft::Recreation::new();
    triggers::spawn_monitor(tx.clone(), recreation.clone())?;
    triggers::spawn_signals(tx.clone())?;
    let tier = tier_in_force(config.guard.protection)?;
    let backend = Kernel::open(tier, &recreation)
        .context("opening nf_tables (portguardd needs CAP_NET_ADMIN)")?;
    let docker_socket = config.docker.socket.clone();
    let control_socket = options
        .socket
        .clone()
        .unwrap_or_else(|| config.control.socket.clone());
    let control_group = config.control.group.clone();
    let nflog_available = nflog_available()?;
    let mut guard = Guard::new(
        Setup {
            config_path: options.config_path.clone(),
            state_dir: options.state_dir.clone(),
            config,
            config_source,
            config_error,
            docker: DockerStatus {
                connected: false,
                socket: docker_socket.display().to_string(),
                engine: None,
                error: Some("not connected yet".into()),
            },
            nflog_available,
        },
        backend,
    );
    // Protection first, before Docker is even asked (P5), then READY.
    guard.start()?;
    // The judge chains' nflog rule is in place: follow what it reports.
    let blocked = blocked_log::spawn();
    control_socket::spawn(&control_socket, control_group.as_deref(), tx.clone())?;
    {
        let tx = tx.clone();
        portguard_docker::spawn(docker_socket, move |update| {
            tx.send(Trigger::Docker(update)).is_ok()
        })?;
    }
    // After Docker: the scanner's first look may find dockerd's listeners.
    let docker_api_scan = {
        let tx = tx.clone();
        api_scan::spawn(move |listeners| tx.send(Trigger::DockerApi(listeners)).is_ok())?
    };
    // Other firewalls' chains, for status/ports/explain: read off the loop.
    let inventory_scan = triggers::spawn_inventory(tx.clone())?;
    guard.notify_status();
    let mut effects = Effects {
        metrics: Metrics::start(options.metrics_file.clone(), &options.state_dir),
        blocked,
        rescan: Rescanners {
            docker_api: docker_api_scan,
            inventory: inventory_scan,
        },
        read_config: Box::new(triggers::read_config),
    };
    refresh_metrics(&mut guard, &mut effects.metrics, Duration::ZERO);
    notify::notify("READY=1\n");
    tracing::info!(control = %control_socket.display(), "guard ready");
    event_loop(
        &mut guard,
        &mut effects,
        &Triggers {
            rx,
            tx,
            verify_every: VERIFY_INTERVAL,
        },
    );
    notify::notify("STOPPING=1\n");
    effects.metrics.stop(&guard.view());
    let _ = std::fs::remove_file(&control_socket);
    tracing::info!(
        portguard_event = event::STOP,
        "stopping; the guard table stays in place"
    );
    Ok(())
}

/// The tier the configuration asks for, or, when this kernel lacks it,
/// the strongest one it has: a missing tier must not leave the host
/// unguarded.
fn tier_in_force(setting: portguard_config::Protection) -> anyhow::Result<ProtectionTier> {
    let kernel_can = portguard_nft::probe_ownership()
        .context("probing nf_tables (portguardd needs CAP_NET_ADMIN)")?;
    match choose_tier(setting, kernel_can) {
        Ok(tier) => Ok(tier),
        Err(e) => {
            tracing::error!(
                error = %e,
                "falling back to the strongest protection this kernel has"
            );
            Ok(choose_tier(portguard_config::Protection::Auto, kernel_can)?)
        }
    }
}

/// A kernel that cannot load nfnetlink_log would refuse the whole ruleset
/// because of the reporting rule: the guard then plans without the
/// reports (and says so), never without protection.
fn nflog_available() -> anyhow::Result<bool> {
    let available = portguard_nft::probe_nflog()
        .context("probing nf_tables (portguardd needs CAP_NET_ADMIN)")?;
    if !available {
        tracing::error!(
            "the kernel refuses nflog rules (nfnetlink_log is missing or cannot be loaded): blocked attempts are not reported to guardctl blocked; protection is unaffected"
        );
    }
    Ok(available)
}
