//! The Docker observer: builds the [`Snapshot`] the planner needs (Docker's
//! bridges and published ports) from the Engine API and keeps it current by
//! following the event stream. A dockerd restart shows as the stream
//! ending: the observer backs off, reconnects and resyncs everything.
//!
//! Nothing in Docker's answers is trusted to be present: every field is
//! optional, unknown values are skipped, and a container that vanishes
//! between list and inspect is simply not in the snapshot.

mod snapshot;

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use bollard::Docker;
use bollard::query_parameters::{EventsOptions, InspectContainerOptions, ListContainersOptions};
use futures_util::{FutureExt, StreamExt};
use portguard_core::Snapshot;

pub use snapshot::{bridges_of, published_ports_of};

/// What the observer reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DockerUpdate {
    /// (Re)connected; a full resync.
    Connected { snapshot: Snapshot, engine: String },
    /// Something changed; the new full snapshot.
    Snapshot(Snapshot),
    /// The Engine cannot be reached (not running, restarting, socket gone).
    Disconnected { error: String },
}

const BACKOFF_START: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

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
            Err(e) => e.to_string(),
        };
        if connected {
            backoff = BACKOFF_START;
        }
        if connected || was_connected {
            tracing::warn!(socket = %socket.display(), error, "Docker not reachable; retrying with backoff");
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
) -> Result<Flow, bollard::errors::Error> {
    let path = socket.to_string_lossy();
    let docker = Docker::connect_with_unix(&path, 60, bollard::API_DEFAULT_VERSION)?
        .negotiate_version()
        .await?;
    // Subscribe before the first snapshot, so that no change falls between.
    let filters = HashMap::from([(
        "type".to_string(),
        vec!["container".to_string(), "network".to_string()],
    )]);
    let mut events = docker.events(Some(EventsOptions {
        filters: Some(filters),
        ..Default::default()
    }));
    let engine = docker
        .version()
        .await
        .ok()
        .and_then(|v| v.version)
        .unwrap_or_else(|| "unknown".into());
    let snapshot = full_snapshot(&docker).await?;
    *connected = true;
    tracing::info!(
        engine,
        containers = snapshot.published.len(),
        "connected to Docker"
    );
    if !report(DockerUpdate::Connected { snapshot, engine }) {
        return Ok(Flow::Stop);
    }
    loop {
        let Some(event) = events.next().await else {
            return Ok(Flow::StreamEnded);
        };
        let mut relevant = is_relevant(&event?);
        // A burst (compose up, dockerd start) is merged into one resync.
        while let Some(next) = events.next().now_or_never() {
            match next {
                None => return Ok(Flow::StreamEnded),
                Some(event) => relevant |= is_relevant(&event?),
            }
        }
        if relevant {
            let snapshot = full_snapshot(&docker).await?;
            if !report(DockerUpdate::Snapshot(snapshot)) {
                return Ok(Flow::Stop);
            }
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

async fn full_snapshot(docker: &Docker) -> Result<Snapshot, bollard::errors::Error> {
    let containers = docker
        .list_containers(Some(ListContainersOptions::default()))
        .await?;
    let mut published = Vec::new();
    for summary in containers {
        let Some(id) = summary.id else { continue };
        match docker
            .inspect_container(&id, None::<InspectContainerOptions>)
            .await
        {
            Ok(inspect) => published.extend(published_ports_of(&inspect)),
            // Gone between list and inspect: not published any more.
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => {}
            Err(e) => return Err(e),
        }
    }
    let networks = docker.list_networks(None).await?;
    published.sort();
    published.dedup();
    Ok(Snapshot {
        bridges: bridges_of(&networks),
        published,
    })
}
