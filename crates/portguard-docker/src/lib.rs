//! The Docker observer: builds the [`Snapshot`] the planner needs (Docker's
//! bridges and published ports) from the Engine API and keeps it current by
//! following the event stream. A dockerd restart shows as the stream
//! ending: the observer backs off, reconnects and resyncs everything.
//!
//! Nothing in Docker's answers is trusted to be present: every field is
//! optional, unknown values are skipped, and a container that vanishes
//! between list and inspect is simply not in the snapshot. Nothing in them
//! is trusted to be benign either: answers are capped in size
//! ([`transport`]), a bridge name counts only if the kernel has a bridge
//! of that name that is not the host's uplink ([`bridges`]), and compose
//! and Swarm labels count only if the image did not supply them
//! ([`identity`]).

pub mod bridges;
pub mod identity;
pub mod kernel;
mod observed;
mod snapshot;
pub mod transport;

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use bollard::query_parameters::EventsOptions;
use futures_util::{FutureExt, StreamExt};
use portguard_core::Snapshot;
use portguard_core::hostfw::DockerFirewall;

use crate::kernel::Kernel;
use crate::observed::Observed;

pub use snapshot::{
    BridgeClaim, IFNAME_MAX, bridge_claims, check_ifname, container_name, published_ports_of,
    published_ports_of_service,
};

/// What the observer reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DockerUpdate {
    /// (Re)connected; a full resync.
    Connected {
        snapshot: Snapshot,
        engine: String,
        /// The firewall backend the engine says it uses (`GET /info`);
        /// `None` when /info did not answer.
        firewall: Option<DockerFirewall>,
    },
    /// Something changed; the new full snapshot.
    Snapshot(Snapshot),
    /// The Engine cannot be reached (not running, restarting, socket gone).
    Disconnected { error: String },
}

const BACKOFF_START: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// The bridges are judged again this often even without a notification:
/// notifications can be lost (a full socket buffer drops them, ENOBUFS).
const REJUDGE_EVERY: Duration = Duration::from_secs(30);
/// `GET /version` and `GET /info` are small answers (the engine's version
/// and the firewall backend for status); the observer does not wait longer
/// for them, since bollard's own timeout covers only the headers.
const INFO_TIMEOUT: Duration = Duration::from_secs(10);

fn no_answer(path: &str) -> String {
    format!(
        "the Docker Engine did not answer {path} within {} s",
        INFO_TIMEOUT.as_secs()
    )
}

/// Runs the observer on its own thread (a single-threaded tokio runtime).
/// `report` is called for every update; returning `false` stops it.
pub fn spawn(
    socket: PathBuf,
    report: impl FnMut(DockerUpdate) -> bool + Send + 'static,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("docker".into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    tracing::error!(error = %e, "cannot start the Docker observer's runtime");
                    return;
                }
            };
            runtime.block_on(observe(socket, report));
        })
}

async fn observe(socket: PathBuf, mut report: impl FnMut(DockerUpdate) -> bool) {
    let mut backoff = BACKOFF_START;
    let mut was_connected = true; // so that the first failure is reported
    loop {
        let mut connected = false;
        let error = match session(&socket, &mut report, &mut connected).await {
            Ok(Flow::Stop) => return,
            Ok(Flow::StreamEnded) => {
                "the Docker event stream ended (dockerd stopped or restarted)".to_string()
            }
            Err(e) => e,
        };
        if connected {
            backoff = BACKOFF_START;
        }
        if connected || was_connected {
            tracing::warn!(socket = %socket.display(), "Docker not reachable ({error}); retrying with backoff");
            if !report(DockerUpdate::Disconnected { error }) {
                return;
            }
        }
        was_connected = connected;
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

enum Flow {
    Stop,
    StreamEnded,
}

async fn session(
    socket: &std::path::Path,
    report: &mut impl FnMut(DockerUpdate) -> bool,
    connected: &mut bool,
) -> Result<Flow, String> {
    let cap = transport::MAX_RESPONSE_BYTES;
    let (docker, cap_hit) = transport::connect(socket, cap).map_err(|e| transport::describe(&e))?;
    let fail = |e: bollard::errors::Error| cap_hit.explain(&e, cap);
    // Bounded like /info below: a silent answer would hold this session,
    // and with it every reconnection, forever.
    let docker = tokio::time::timeout(INFO_TIMEOUT, docker.negotiate_version())
        .await
        .map_err(|_| no_answer("/version"))?
        .map_err(fail)?;
    let (kernel, mut kernel_events) = Kernel::connect()
        .map_err(|e| format!("cannot ask the kernel about Docker's bridges (rtnetlink): {e}"))?;
    // Subscribe before the first snapshot, so that no change falls between.
    let filters = HashMap::from([(
        "type".to_string(),
        vec![
            "container".to_string(),
            "network".to_string(),
            "service".to_string(),
        ],
    )]);
    let mut events = docker.events(Some(EventsOptions {
        filters: Some(filters),
        ..Default::default()
    }));
    let engine = tokio::time::timeout(INFO_TIMEOUT, docker.version())
        .await
        .ok()
        .and_then(Result::ok)
        .and_then(|v| v.version)
        .unwrap_or_else(|| "unknown".into());
    // Engines before 28.1 have no `FirewallBackend` (iptables). /info is
    // only for status: its failure must not keep the guard from Docker.
    // Bounded: bollard's timeout covers only the headers, and an Engine
    // whose storage or plugin driver hangs answers /info slowly or never.
    let firewall = match tokio::time::timeout(INFO_TIMEOUT, docker.info()).await {
        Ok(Ok(info)) => Some(DockerFirewall::from_driver(
            info.firewall_backend
                .and_then(|backend| backend.driver)
                .as_deref(),
        )),
        Ok(Err(e)) => {
            tracing::warn!(error = %fail(e), "Docker's /info did not answer; its firewall backend is unknown");
            None
        }
        Err(_) => {
            tracing::warn!("{}; its firewall backend is unknown", no_answer("/info"));
            None
        }
    };
    let mut observed = Observed::default();
    let snapshot = observed.resync(&docker, &kernel, &fail).await?;
    *connected = true;
    tracing::info!(
        engine = %portguard_core::text::printable(&engine),
        published_ports = snapshot.published.len(),
        "connected to Docker: {} published port bindings",
        snapshot.published.len()
    );
    if !report(DockerUpdate::Connected {
        snapshot,
        engine,
        firewall,
    }) {
        return Ok(Flow::Stop);
    }
    let mut rejudge =
        tokio::time::interval_at(tokio::time::Instant::now() + REJUDGE_EVERY, REJUDGE_EVERY);
    loop {
        let snapshot = tokio::select! {
            event = events.next() => {
                let Some(event) = event else {
                    return Ok(Flow::StreamEnded);
                };
                let mut relevant = is_relevant(&event.map_err(fail)?);
                // A burst (compose up, dockerd start) is merged into one resync.
                while let Some(next) = events.next().now_or_never() {
                    match next {
                        None => return Ok(Flow::StreamEnded),
                        Some(event) => relevant |= is_relevant(&event.map_err(fail)?),
                    }
                }
                if !relevant {
                    continue;
                }
                observed.resync(&docker, &kernel, &fail).await?
            }
            Some((message, _)) = kernel_events.next() => {
                let mut relevant = observed.is_watched(&message);
                while let Some(Some((message, _))) = kernel_events.next().now_or_never() {
                    relevant |= observed.is_watched(&message);
                }
                if !relevant {
                    continue;
                }
                // Only the bridges are judged again: Docker's side is as
                // the last resync found it.
                match observed.rejudge(&kernel).await {
                    Some(snapshot) => snapshot,
                    None => continue,
                }
            }
            _ = rejudge.tick() => match observed.rejudge(&kernel).await {
                Some(snapshot) => snapshot,
                None => continue,
            },
        };
        if !report(DockerUpdate::Snapshot(snapshot)) {
            return Ok(Flow::Stop);
        }
    }
}

/// Events that can change published ports or bridges.
fn is_relevant(event: &bollard::models::EventMessage) -> bool {
    let action = event.action.as_deref().unwrap_or("");
    !(action.starts_with("exec_")
        || action.starts_with("health_status")
        || matches!(
            action,
            "attach" | "detach" | "resize" | "top" | "copy" | "export" | "commit"
        ))
}
