//! The Docker observer: builds the [`Snapshot`] the planner needs (Docker's
//! bridges and published ports) from the Engine API and keeps it current by
//! following the event stream. A dockerd restart shows as the stream
//! ending: the observer backs off, reconnects and resyncs everything.
//!
//! Nothing in Docker's answers is trusted to be present: every field is
//! optional, unknown values are skipped, and a container that vanishes
//! between list and inspect is simply not in the snapshot. Nothing in them
//! is trusted to be benign either: answers are capped in size
//! ([`transport`]), and a bridge name counts only if the kernel has a
//! bridge of that name ([`bridges`]).

pub mod bridges;
mod snapshot;
pub mod transport;

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::time::Duration;

use bollard::Docker;
use bollard::query_parameters::{EventsOptions, InspectContainerOptions, ListContainersOptions};
use futures_util::{FutureExt, StreamExt};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::link::{LinkAttribute, LinkMessage};
use portguard_core::hostfw::DockerFirewall;
use portguard_core::{PublishedPort, Snapshot};
use rtnetlink::packet_core::{NetlinkMessage, NetlinkPayload};
use rtnetlink::sys::AsyncSocket as _;

pub use snapshot::{
    BridgeClaim, IFNAME_MAX, bridge_claims, check_ifname, published_ports_of,
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
/// A full resync (list, inspect each, networks) must be done by then; a
/// dripping answer would otherwise hold the observer forever (bollard's
/// own timeout covers only the headers).
const SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(60);
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
    let (links, mut link_events) = link_watch()
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
    let snapshot = observed.resync(&docker, &links, &fail).await?;
    *connected = true;
    tracing::info!(
        engine = %portguard_core::control::printable(&engine),
        containers = snapshot.published.len(),
        "connected to Docker"
    );
    if !report(DockerUpdate::Connected {
        snapshot,
        engine,
        firewall,
    }) {
        return Ok(Flow::Stop);
    }
    loop {
        let relevant = tokio::select! {
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
                relevant
            }
            Some((message, _)) = link_events.next() => {
                let mut relevant = observed.is_watched(&message);
                while let Some(Some((message, _))) = link_events.next().now_or_never() {
                    relevant |= observed.is_watched(&message);
                }
                relevant
            }
        };
        if relevant {
            let snapshot = observed.resync(&docker, &links, &fail).await?;
            if !report(DockerUpdate::Snapshot(snapshot)) {
                return Ok(Flow::Stop);
            }
        }
    }
}

/// An rtnetlink handle to look links up, and the kernel's link
/// notifications (so that a claimed bridge is checked again when a link of
/// its name appears, changes or goes).
fn link_watch() -> std::io::Result<(
    rtnetlink::Handle,
    impl futures_util::Stream<
        Item = (
            NetlinkMessage<RouteNetlinkMessage>,
            rtnetlink::sys::SocketAddr,
        ),
    > + Unpin,
)> {
    let (mut connection, handle, messages) = rtnetlink::new_connection()?;
    connection
        .socket_mut()
        .socket_mut()
        .bind(&rtnetlink::sys::SocketAddr::new(
            0,
            rtnetlink::constants::RTMGRP_LINK,
        ))?;
    tokio::spawn(connection);
    Ok((handle, messages))
}

/// What the last resync found about bridges.
#[derive(Default)]
struct Observed {
    /// Claimed names that are, or are awaited as, bridges.
    watched: BTreeSet<String>,
    /// Why claims were refused, as last logged.
    refused: Vec<String>,
}

impl Observed {
    async fn resync(
        &mut self,
        docker: &Docker,
        links: &rtnetlink::Handle,
        fail: &impl Fn(bollard::errors::Error) -> String,
    ) -> Result<Snapshot, String> {
        let (snapshot, verified) =
            match tokio::time::timeout(SNAPSHOT_TIMEOUT, full_snapshot(docker, links)).await {
                Ok(result) => result.map_err(fail)?,
                Err(_) => {
                    return Err(format!(
                        "the Docker Engine did not answer within {} s",
                        SNAPSHOT_TIMEOUT.as_secs()
                    ));
                }
            };
        if verified.refused != self.refused {
            for why in &verified.refused {
                tracing::warn!("Docker bridge not trusted: {why}");
            }
        }
        self.refused = verified.refused;
        self.watched = verified.bridges.union(&verified.missing).cloned().collect();
        Ok(snapshot)
    }

    /// A link event about a name a claim depends on.
    fn is_watched(&self, message: &NetlinkMessage<RouteNetlinkMessage>) -> bool {
        let link: &LinkMessage = match &message.payload {
            NetlinkPayload::InnerMessage(
                RouteNetlinkMessage::NewLink(link) | RouteNetlinkMessage::DelLink(link),
            ) => link,
            _ => return false,
        };
        link.attributes.iter().any(|a| match a {
            LinkAttribute::IfName(name) => self.watched.contains(name),
            _ => false,
        })
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

/// The ports Swarm services publish through the ingress network. Only a
/// manager can list services: elsewhere (no Swarm, a worker, an engine
/// that refuses) the answer is none, which closes rather than opens
/// (unlisted ports are dropped either way; `container = "service"`
/// entries then admit nothing).
async fn swarm_service_ports(docker: &Docker) -> Vec<PublishedPort> {
    match docker
        .list_services(None::<bollard::query_parameters::ListServicesOptions>)
        .await
    {
        Ok(services) => services
            .iter()
            .flat_map(published_ports_of_service)
            .collect(),
        // 503: "This node is not a swarm manager".
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 503, ..
        }) => Vec::new(),
        Err(e) => {
            tracing::debug!(error = %e, "cannot list Swarm services");
            Vec::new()
        }
    }
}

async fn full_snapshot(
    docker: &Docker,
    links: &rtnetlink::Handle,
) -> Result<(Snapshot, bridges::Verified), bollard::errors::Error> {
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
    published.extend(swarm_service_ports(docker).await);
    let networks = docker.list_networks(None).await?;
    published.sort();
    published.dedup();
    let verified = bridges::verify(&bridge_claims(&networks), links).await;
    Ok((
        Snapshot {
            bridges: verified.bridges.clone(),
            published,
            ..Snapshot::default()
        },
        verified,
    ))
}
