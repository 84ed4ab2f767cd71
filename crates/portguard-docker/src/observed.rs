//! What the observer knows between updates: Docker's side (published
//! ports, the identities granted, the bridges claimed) from the last
//! resync, and the kernel's judgement of those bridges, which is made again
//! on its own when links, addresses or routes change.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use bollard::Docker;
use bollard::models::{ContainerInspectResponse, Service};
use bollard::query_parameters::{InspectContainerOptions, ListContainersOptions};
use portguard_core::{PublishedPort, Snapshot, UntrustedClaim};

use crate::bridges::{self, Verified};
use crate::identity::{self, Labels, TaskCheck};
use crate::kernel::{BridgeFacts, Kernel, Watched};
use crate::snapshot::{
    BridgeClaim, bridge_claims, check_ifname, container_name, published_ports_of,
    published_ports_of_service,
};

/// A full resync (list, inspect each, networks) must be done by then; a
/// dripping answer would otherwise hold the observer forever (bollard's
/// own timeout covers only the headers).
const SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(60);
/// The kernel answers its questions about bridges in microseconds; this
/// only bounds a kernel that does not (every claim is then refused).
const KERNEL_TIMEOUT: Duration = Duration::from_secs(10);
/// Image labels and confirmed tasks kept at most. Only those of containers
/// seen at the last resync are kept at all.
const CACHE_MAX: usize = 4096;

/// What one resync found on Docker's side.
#[derive(Default)]
struct DockerView {
    published: Vec<PublishedPort>,
    claims: Vec<BridgeClaim>,
    /// Compose and Swarm identities refused.
    refused: Vec<UntrustedClaim>,
}

#[derive(Default)]
pub struct Observed {
    docker: DockerView,
    verified: Verified,
    watched: Watched,
    /// Labels by image id: an id names immutable content.
    images: HashMap<String, Labels>,
    /// Task id -> the container Swarm said runs it (confirmed only).
    tasks: HashMap<String, String>,
}

impl Observed {
    /// Everything again: Docker's answers, then the kernel's judgement.
    pub async fn resync(
        &mut self,
        docker: &Docker,
        kernel: &Kernel,
        fail: &impl Fn(bollard::errors::Error) -> String,
    ) -> Result<Snapshot, String> {
        self.docker = match tokio::time::timeout(SNAPSHOT_TIMEOUT, self.docker_view(docker)).await {
            Ok(result) => result.map_err(fail)?,
            Err(_) => {
                return Err(format!(
                    "the Docker Engine did not answer within {} s",
                    SNAPSHOT_TIMEOUT.as_secs()
                ));
            }
        };
        self.judge_bridges(kernel).await;
        Ok(self.snapshot())
    }

    /// Whether a kernel notification may change the judgement of a bridge.
    pub fn is_watched(
        &self,
        message: &rtnetlink::packet_core::NetlinkMessage<netlink_packet_route::RouteNetlinkMessage>,
    ) -> bool {
        self.watched.is_relevant(message)
    }

    /// The bridges judged again (links, addresses or routes changed); the
    /// new snapshot if the judgement changed.
    pub async fn rejudge(&mut self, kernel: &Kernel) -> Option<Snapshot> {
        let before = self.verified.clone();
        self.judge_bridges(kernel).await;
        (self.verified != before).then(|| self.snapshot())
    }

    fn snapshot(&self) -> Snapshot {
        let mut untrusted_claims = self.verified.refused.clone();
        untrusted_claims.extend(self.docker.refused.iter().cloned());
        // Docker lists in no promised order; an equal state is an equal snapshot.
        untrusted_claims.sort();
        Snapshot {
            bridges: self.verified.bridges.clone(),
            published: self.docker.published.clone(),
            untrusted_claims,
            ..Snapshot::default()
        }
    }

    async fn judge_bridges(&mut self, kernel: &Kernel) {
        let claims = &self.docker.claims;
        let facts = match tokio::time::timeout(KERNEL_TIMEOUT, ask_kernel(claims, kernel)).await {
            Ok(facts) => facts,
            Err(_) => claims
                .iter()
                .map(|_| Err("the kernel did not answer within 10 s".to_string()))
                .collect(),
        };
        let verified = bridges::verify(
            claims,
            facts.iter().map(|f| f.as_ref().map_err(String::as_str)),
        );
        if verified.refused != self.verified.refused {
            for refused in &verified.refused {
                tracing::warn!("Docker bridge not trusted: {refused}");
            }
        }
        self.verified = verified;
        self.watched = Watched {
            names: claims.iter().map(|c| c.ifname.clone()).collect(),
            indexes: facts
                .iter()
                .flatten()
                .flat_map(|f| std::iter::once(f.index).chain(f.ports.iter().map(|p| p.index)))
                .filter(|&index| index != 0)
                .collect(),
        };
    }

    async fn docker_view(&mut self, docker: &Docker) -> Result<DockerView, bollard::errors::Error> {
        let containers = docker
            .list_containers(Some(ListContainersOptions::default()))
            .await?;
        // Only a manager can list services (and so ask about tasks).
        let services = swarm_services(docker).await;
        let mut view = DockerView::default();
        let mut images_used = BTreeSet::new();
        let mut tasks_used = BTreeSet::new();
        for summary in containers {
            let Some(id) = summary.id else { continue };
            let inspect = match docker
                .inspect_container(&id, None::<InspectContainerOptions>)
                .await
            {
                Ok(inspect) => inspect,
                // Gone between list and inspect: not published any more.
                Err(bollard::errors::Error::DockerResponseServerError {
                    status_code: 404, ..
                }) => continue,
                Err(e) => return Err(e),
            };
            let identity = self
                .identity_of(
                    docker,
                    &inspect,
                    services.as_deref(),
                    &mut images_used,
                    &mut tasks_used,
                )
                .await?;
            view.published
                .extend(published_ports_of(&inspect, &identity));
            view.refused.extend(identity.refused);
        }
        self.images.retain(|id, _| images_used.contains(id));
        self.tasks.retain(|id, _| tasks_used.contains(id));
        view.published.extend(
            services
                .iter()
                .flatten()
                .flat_map(published_ports_of_service),
        );
        let networks = docker.list_networks(None).await?;
        view.published.sort();
        view.published.dedup();
        view.claims = bridge_claims(&networks);
        for refused in &view.refused {
            if !self.docker.refused.contains(refused) {
                tracing::warn!("Docker labels not trusted: {refused}");
            }
        }
        Ok(view)
    }

    /// The compose and Swarm identity of one container: its labels against
    /// its image's (inspected once per image id) and, on a manager, its
    /// task against Swarm's record.
    async fn identity_of(
        &mut self,
        docker: &Docker,
        inspect: &ContainerInspectResponse,
        services: Option<&[Service]>,
        images_used: &mut BTreeSet<String>,
        tasks_used: &mut BTreeSet<String>,
    ) -> Result<identity::Identity, bollard::errors::Error> {
        let empty = Labels::new();
        let labels = inspect
            .config
            .as_ref()
            .and_then(|c| c.labels.as_ref())
            .unwrap_or(&empty);
        if !identity::claims_identity(labels) {
            return Ok(identity::Identity::default());
        }
        let image = match inspect.image.as_deref() {
            Some(image_id) => {
                images_used.insert(image_id.to_string());
                self.image_labels(docker, image_id).await?
            }
            None => None,
        };
        let container_id = inspect.id.as_deref().unwrap_or("");
        let task = match (services, identity::claimed_task(labels)) {
            (Some(services), Some(task_id)) => {
                tasks_used.insert(task_id.to_string());
                self.check_task(docker, services, labels, container_id, task_id)
                    .await
            }
            _ => TaskCheck::NotAsked,
        };
        Ok(identity::identity(
            &container_name(inspect),
            labels,
            image.as_ref(),
            &task,
        ))
    }

    /// The labels of image `id` (`None`: it cannot be inspected).
    async fn image_labels(
        &mut self,
        docker: &Docker,
        id: &str,
    ) -> Result<Option<Labels>, bollard::errors::Error> {
        if let Some(labels) = self.images.get(id) {
            return Ok(Some(labels.clone()));
        }
        match docker.inspect_image(id).await {
            Ok(image) => {
                let labels = image.config.and_then(|c| c.labels).unwrap_or_default();
                if self.images.len() < CACHE_MAX {
                    self.images.insert(id.to_string(), labels.clone());
                }
                Ok(Some(labels))
            }
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Swarm's word on `task_id` claimed by container `container_id`.
    async fn check_task(
        &mut self,
        docker: &Docker,
        services: &[Service],
        labels: &Labels,
        container_id: &str,
        task_id: &str,
    ) -> TaskCheck {
        if self.tasks.get(task_id).map(String::as_str) == Some(container_id) {
            return TaskCheck::Confirmed;
        }
        let task = match docker.inspect_task(task_id).await {
            Ok(task) => task,
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => return TaskCheck::Refuted("Swarm has no such task".into()),
            Err(e) => {
                // Not asked, not refuted: the image check still stands.
                tracing::debug!(error = %e, "cannot ask Swarm about a task");
                return TaskCheck::NotAsked;
            }
        };
        let task_container = task
            .status
            .as_ref()
            .and_then(|s| s.container_status.as_ref())
            .and_then(|c| c.container_id.as_deref());
        let service_id = task.service_id.as_deref();
        let service_name = services
            .iter()
            .find(|s| s.id.is_some() && s.id.as_deref() == service_id)
            .and_then(|s| s.spec.as_ref())
            .and_then(|s| s.name.as_deref());
        let check = identity::check_task(
            labels,
            container_id,
            task_container,
            service_id,
            service_name,
        );
        if check == TaskCheck::Confirmed && self.tasks.len() < CACHE_MAX {
            self.tasks
                .insert(task_id.to_string(), container_id.to_string());
        }
        check
    }
}

/// What the kernel says of each claim, in order (`Err`: it could not be
/// asked, or the name is no interface name).
async fn ask_kernel(claims: &[BridgeClaim], kernel: &Kernel) -> Vec<Result<BridgeFacts, String>> {
    let mut facts = Vec::with_capacity(claims.len());
    for claim in claims {
        facts.push(match check_ifname(&claim.ifname) {
            Err(why) => Err(why),
            Ok(()) => kernel.bridge_facts(&claim.ifname).await.map_err(|e| {
                tracing::warn!(name = %claim.ifname, error = %e, "cannot look up a Docker bridge");
                e.to_string()
            }),
        });
    }
    facts
}

/// The Swarm services, when this node is a manager (only a manager can
/// list them). Elsewhere (no Swarm, a worker, an engine that refuses)
/// `None`: their ports are published only through the routing mesh, which
/// then closes rather than opens (unlisted ports are dropped either way;
/// `container = "service"` entries then admit nothing of the mesh).
async fn swarm_services(docker: &Docker) -> Option<Vec<Service>> {
    match docker
        .list_services(None::<bollard::query_parameters::ListServicesOptions>)
        .await
    {
        Ok(services) => Some(services),
        // 503: "This node is not a swarm manager".
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 503, ..
        }) => None,
        Err(e) => {
            tracing::debug!(error = %e, "cannot list Swarm services");
            None
        }
    }
}
