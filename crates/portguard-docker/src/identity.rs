//! Which compose service or Swarm task a container is, for allow entries
//! `container = "project/service"` and `container = "service"`. Pure, so
//! that every case is unit-tested on labels.
//!
//! Docker merges the image's labels (`Config.Labels` of the image) into
//! every container made from it, under the labels of the create call. So
//! an image built with `LABEL com.docker.compose.project=shop` and
//! `LABEL com.docker.compose.service=web` makes a plain `docker run` of it
//! look like compose's `shop/web`, and an image's author could open the
//! ports an administrator opened for that service.
//!
//! What the guard trusts instead is the create call: compose always sets
//! `com.docker.compose.config-hash` (a hash of the service's configuration,
//! v1 and v2 alike), Swarm always sets `com.docker.swarm.task.id` (a random
//! id per task). A container counts as compose `project/service` only if
//! it carries project, service and a config hash, and the hash is not its
//! image's (an image can carry one too; the create call's value replaces
//! it, a plain `docker run` inherits it). Project and service may equal
//! the image's: `docker compose build` labels the images it builds with
//! both. The same for Swarm with the task id; on a manager, Swarm is also
//! asked whether that task runs in this very container.
//!
//! Whoever calls `docker run` may set any label; they hold the Docker
//! socket, which is root on this host. The guard protects against the
//! image's author, not against root.

use std::collections::HashMap;

use portguard_core::{LabelFault, UntrustedClaim};

pub const COMPOSE_PROJECT: &str = "com.docker.compose.project";
pub const COMPOSE_SERVICE: &str = "com.docker.compose.service";
/// Set by compose's create call only, never by `docker compose build`.
pub const COMPOSE_CONFIG_HASH: &str = "com.docker.compose.config-hash";
pub const SWARM_SERVICE_NAME: &str = "com.docker.swarm.service.name";
pub const SWARM_SERVICE_ID: &str = "com.docker.swarm.service.id";
/// Set by Swarm's executor when it creates a task's container.
pub const SWARM_TASK_ID: &str = "com.docker.swarm.task.id";

pub type Labels = HashMap<String, String>;

/// The identity a container is granted, and the claims it was refused.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    /// Compose `project/service`.
    pub compose: Option<String>,
    /// Swarm service whose task this container is.
    pub service: Option<String>,
    pub refused: Vec<UntrustedClaim>,
}

/// What Swarm says of a task container's labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskCheck {
    /// Not asked: this node is not a manager, or the container claims no task.
    NotAsked,
    /// The task runs in this container, for the service its labels name.
    Confirmed,
    /// Swarm disagrees, and says how.
    Refuted(String),
}

/// Whether the container claims an identity that needs its image's labels
/// to be judged (so that images are inspected only for those).
pub fn claims_identity(labels: &Labels) -> bool {
    [COMPOSE_PROJECT, COMPOSE_SERVICE, SWARM_SERVICE_NAME]
        .iter()
        .any(|key| labels.contains_key(*key))
}

/// The task id a container claims, to ask Swarm about.
pub fn claimed_task(labels: &Labels) -> Option<&str> {
    labels
        .get(SWARM_TASK_ID)
        .map(String::as_str)
        .filter(|id| !id.is_empty())
}

fn label<'a>(labels: &'a Labels, key: &str) -> Option<&'a str> {
    labels
        .get(key)
        .map(String::as_str)
        .filter(|value| !value.is_empty())
}

/// Of `keys`, those whose value is the image's own.
fn inherited(labels: &Labels, image: &Labels, keys: &[&str]) -> Vec<String> {
    keys.iter()
        .filter(|key| {
            labels
                .get(**key)
                .is_some_and(|v| image.get(**key) == Some(v))
        })
        .map(|key| key.to_string())
        .collect()
}

/// Judges one claim: `None` if trusted, else why not.
fn judge_claim(
    labels: &Labels,
    image: Option<&Labels>,
    proof: &str,
    shown: &[&str],
) -> Option<LabelFault> {
    if label(labels, proof).is_none() {
        return Some(LabelFault::Incomplete {
            missing: proof.to_string(),
        });
    }
    let Some(image) = image else {
        return Some(LabelFault::ImageUnknown);
    };
    if inherited(labels, image, &[proof]).is_empty() {
        return None;
    }
    Some(LabelFault::FromImage {
        labels: inherited(labels, image, shown),
    })
}

/// The identity of container `name` with `labels` (its `Config.Labels`),
/// given its image's labels (`None`: the image could not be inspected)
/// and what Swarm says of its task.
pub fn identity(name: &str, labels: &Labels, image: Option<&Labels>, task: &TaskCheck) -> Identity {
    let mut identity = Identity::default();
    if let (Some(project), Some(service)) = (
        label(labels, COMPOSE_PROJECT),
        label(labels, COMPOSE_SERVICE),
    ) {
        let compose = format!("{project}/{service}");
        match judge_claim(
            labels,
            image,
            COMPOSE_CONFIG_HASH,
            &[COMPOSE_PROJECT, COMPOSE_SERVICE, COMPOSE_CONFIG_HASH],
        ) {
            None => identity.compose = Some(compose),
            Some(fault) => identity.refused.push(UntrustedClaim::Compose {
                container: name.to_string(),
                compose,
                fault,
            }),
        }
    }
    if let Some(service) = label(labels, SWARM_SERVICE_NAME) {
        let fault = judge_claim(
            labels,
            image,
            SWARM_TASK_ID,
            &[SWARM_SERVICE_NAME, SWARM_SERVICE_ID, SWARM_TASK_ID],
        )
        .or_else(|| match task {
            TaskCheck::Refuted(why) => Some(LabelFault::NotSwarmsTask { why: why.clone() }),
            TaskCheck::NotAsked | TaskCheck::Confirmed => None,
        });
        match fault {
            None => identity.service = Some(service.to_string()),
            Some(fault) => identity.refused.push(UntrustedClaim::SwarmTask {
                container: name.to_string(),
                service: service.to_string(),
                fault,
            }),
        }
    }
    identity
}

/// What Swarm's record of a task says of the container claiming it:
/// `container_id` and the service id and name its labels give must be
/// the task's own (`service_name` is the name of the task's service, from
/// the manager's list of services).
pub fn check_task(
    labels: &Labels,
    container_id: &str,
    task_container: Option<&str>,
    task_service_id: Option<&str>,
    service_name: Option<&str>,
) -> TaskCheck {
    if task_container != Some(container_id) {
        return TaskCheck::Refuted(format!(
            "the task runs in container {}",
            task_container.map_or("(none)", |c| c.get(..12).unwrap_or(c))
        ));
    }
    if task_service_id.is_none() || task_service_id != label(labels, SWARM_SERVICE_ID) {
        return TaskCheck::Refuted("the task belongs to another service id".into());
    }
    if service_name.is_none() || service_name != label(labels, SWARM_SERVICE_NAME) {
        return TaskCheck::Refuted(format!(
            "the task's service is called {}",
            service_name.unwrap_or("(unknown)")
        ));
    }
    TaskCheck::Confirmed
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    const FORGED: &[(&str, &str)] = &[
        (COMPOSE_PROJECT, "shop"),
        (COMPOSE_SERVICE, "web"),
        (COMPOSE_CONFIG_HASH, "0123"),
        (SWARM_SERVICE_NAME, "websvc"),
        (SWARM_SERVICE_ID, "svc1"),
        (SWARM_TASK_ID, "task1"),
    ];

    #[test]
    fn labels_a_plain_docker_run_inherits_from_its_image_grant_nothing() {
        // The container holds exactly the image's labels.
        let image = labels(FORGED);
        let id = identity("pwn", &image.clone(), Some(&image), &TaskCheck::NotAsked);
        assert_eq!((id.compose.as_deref(), id.service.as_deref()), (None, None));
        assert_eq!(
            id.refused,
            [
                UntrustedClaim::Compose {
                    container: "pwn".into(),
                    compose: "shop/web".into(),
                    fault: LabelFault::FromImage {
                        labels: vec![
                            COMPOSE_PROJECT.into(),
                            COMPOSE_SERVICE.into(),
                            COMPOSE_CONFIG_HASH.into()
                        ]
                    },
                },
                UntrustedClaim::SwarmTask {
                    container: "pwn".into(),
                    service: "websvc".into(),
                    fault: LabelFault::FromImage {
                        labels: vec![
                            SWARM_SERVICE_NAME.into(),
                            SWARM_SERVICE_ID.into(),
                            SWARM_TASK_ID.into()
                        ]
                    },
                },
            ]
        );
        // Project and service from the image, but no proof at all.
        let image = labels(&FORGED[..2]);
        let id = identity("pwn", &image.clone(), Some(&image), &TaskCheck::NotAsked);
        assert_eq!(id.compose, None);
        assert!(
            matches!(&id.refused[0], UntrustedClaim::Compose { fault: LabelFault::Incomplete { missing }, .. } if missing == COMPOSE_CONFIG_HASH),
            "{:?}",
            id.refused
        );
    }

    #[test]
    fn labels_of_the_create_call_count_even_over_the_images() {
        // Compose's create call over an image built by `docker compose
        // build` (project and service equal) or forged (hash differs).
        let image = labels(FORGED);
        let mut container = image.clone();
        container.insert(COMPOSE_CONFIG_HASH.into(), "feed".into());
        container.insert(SWARM_TASK_ID.into(), "task2".into());
        let id = identity("shop-web-1", &container, Some(&image), &TaskCheck::NotAsked);
        assert_eq!(id.compose.as_deref(), Some("shop/web"));
        assert_eq!(id.service.as_deref(), Some("websvc"));
        assert!(id.refused.is_empty());
        // An image without labels (the usual case).
        let id = identity("c", &image, Some(&Labels::new()), &TaskCheck::Confirmed);
        assert_eq!(id.compose.as_deref(), Some("shop/web"));
        assert_eq!(id.service.as_deref(), Some("websvc"));
    }

    #[test]
    fn an_unknown_image_or_a_refuting_swarm_grants_nothing() {
        let container = labels(FORGED);
        let id = identity("c", &container, None, &TaskCheck::NotAsked);
        assert_eq!((id.compose, id.service), (None, None));
        assert!(id.refused.iter().all(|c| matches!(
            c,
            UntrustedClaim::Compose {
                fault: LabelFault::ImageUnknown,
                ..
            } | UntrustedClaim::SwarmTask {
                fault: LabelFault::ImageUnknown,
                ..
            }
        )));
        let refuted = TaskCheck::Refuted("no such task".into());
        let id = identity("c", &container, Some(&Labels::new()), &refuted);
        assert_eq!(id.compose.as_deref(), Some("shop/web"));
        assert_eq!(id.service, None);
        assert_eq!(
            id.refused,
            [UntrustedClaim::SwarmTask {
                container: "c".into(),
                service: "websvc".into(),
                fault: LabelFault::NotSwarmsTask {
                    why: "no such task".into()
                },
            }]
        );
        // Empty values claim nothing.
        let empty = labels(&[(COMPOSE_PROJECT, ""), (COMPOSE_SERVICE, "web")]);
        assert_eq!(
            identity("c", &empty, None, &TaskCheck::NotAsked),
            Identity::default()
        );
        assert!(claims_identity(&empty) && !claims_identity(&Labels::new()));
    }

    #[test]
    fn swarm_confirms_a_task_only_in_its_own_container_and_service() {
        let container = labels(FORGED);
        let check = |task_container, service_id, service_name| {
            check_task(&container, "c1", task_container, service_id, service_name)
        };
        assert_eq!(
            check(Some("c1"), Some("svc1"), Some("websvc")),
            TaskCheck::Confirmed
        );
        let table = [
            (
                check(Some("c2aaaaaaaaaaaaaaaa"), Some("svc1"), Some("websvc")),
                "runs in container c2aaaaaaaaaa",
            ),
            (check(None, Some("svc1"), Some("websvc")), "(none)"),
            (
                check(Some("c1"), Some("svc2"), Some("websvc")),
                "service id",
            ),
            (check(Some("c1"), None, Some("websvc")), "service id"),
            (check(Some("c1"), Some("svc1"), Some("db")), "called db"),
            (check(Some("c1"), Some("svc1"), None), "(unknown)"),
        ];
        for (got, wanted) in table {
            assert!(
                matches!(&got, TaskCheck::Refuted(why) if why.contains(wanted)),
                "{got:?}: {wanted}"
            );
        }
        assert_eq!(claimed_task(&container), Some("task1"));
    }
}
