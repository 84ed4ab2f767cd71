//! Allow entries that match nothing: a misspelt `container = "datbase"`
//! passed `check`, `reload` and `status` without a word while the
//! database stayed blocked. `status` and the reload's answer list such
//! entries, with the nearest name Docker reports when there is one.

use portguard_config::{AllowEntry, AllowTarget, Config};
use serde::{Deserialize, Serialize};

use crate::snapshot::Snapshot;

/// An allow entry that opens nothing now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unmatched {
    /// The entry as `describe` puts it (`container datbase at FILE:LINE`).
    pub entry: String,
    /// Why it opens nothing.
    pub reason: String,
    /// The nearest container, compose `project/service` or Swarm service
    /// name, for a name that looks misspelt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub did_you_mean: Option<String>,
}

impl std::fmt::Display for Unmatched {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.entry, self.reason)?;
        if let Some(name) = &self.did_you_mean {
            write!(f, "; did you mean \"{name}\"?")?;
        }
        Ok(())
    }
}

/// The entries of `config` that open nothing in `snapshot`. Container
/// entries are judged only once Docker has answered (`docker_known`):
/// before, every name would look unknown.
pub fn unmatched_entries(
    config: &Config,
    snapshot: &Snapshot,
    docker_known: bool,
) -> Vec<Unmatched> {
    config
        .allow
        .iter()
        .filter_map(|entry| unmatched(entry, snapshot, docker_known))
        .collect()
}

fn unmatched(entry: &AllowEntry, snapshot: &Snapshot, docker_known: bool) -> Option<Unmatched> {
    match &entry.target {
        AllowTarget::Container(name) => {
            if !docker_known
                || snapshot
                    .published
                    .iter()
                    .any(|p| p.container.is_named(name))
            {
                return None;
            }
            Some(Unmatched {
                entry: entry.describe(),
                reason:
                    "no container, compose service or Swarm service of that name publishes a port"
                        .into(),
                did_you_mean: nearest(name, snapshot),
            })
        }
        AllowTarget::Ports(range) => {
            let published = snapshot
                .published
                .iter()
                .any(|p| p.proto.covered_by(entry.proto) && range.contains(p.host_port));
            let api = snapshot.docker_api().any(|l| range.contains(l.port))
                || crate::snapshot::DOCKER_API_PORTS
                    .iter()
                    .any(|&p| range.contains(p) && !entry.from.is_empty());
            if !docker_known || published || api {
                return None;
            }
            Some(Unmatched {
                entry: entry.describe(),
                reason: "no container publishes a port in it (yet)".into(),
                did_you_mean: None,
            })
        }
    }
}

/// The name Docker reports that is nearest to `wanted`, if it is near
/// enough to be a slip of the keyboard (as for misspelt keys).
fn nearest(wanted: &str, snapshot: &Snapshot) -> Option<String> {
    let known: Vec<&str> = snapshot
        .published
        .iter()
        .flat_map(|p| {
            [
                Some(&p.container.name),
                p.container.compose.as_ref(),
                p.container.service.as_ref(),
            ]
        })
        .flatten()
        .map(String::as_str)
        .collect();
    portguard_config::nearest(wanted.trim_start_matches('/'), &known).map(str::to_string)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn snapshot() -> Snapshot {
        serde_json::from_value(serde_json::json!({
            "bridges": [],
            "published": [
                {"host_ip": null, "host_port": 5432, "proto": "tcp", "container_port": 5432,
                 "host_network": false,
                 "container": {"id": "a", "name": "database", "compose": "shop/db"}},
                {"host_ip": null, "host_port": 8080, "proto": "tcp", "container_port": 80,
                 "host_network": false,
                 "container": {"id": "b", "name": "web", "compose": null}}
            ]
        }))
        .unwrap()
    }

    fn unmatched_of(config: &str, docker_known: bool) -> Vec<String> {
        let config = Config::from_toml_str(config).unwrap();
        unmatched_entries(&config, &snapshot(), docker_known)
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn a_misspelt_container_is_named_with_the_nearest_name() {
        let found = unmatched_of("[[allow]]\ncontainer = \"datbase\"\n", true);
        assert_eq!(found.len(), 1);
        assert!(found[0].contains("container datbase"), "{found:?}");
        assert!(
            found[0].ends_with("did you mean \"database\"?"),
            "{found:?}"
        );
        let found = unmatched_of("[[allow]]\ncontainer = \"shop/bd\"\n", true);
        assert!(found[0].ends_with("did you mean \"shop/db\"?"), "{found:?}");
        // Nothing near: no guess.
        let found = unmatched_of("[[allow]]\ncontainer = \"zzzzzz\"\n", true);
        assert!(!found[0].contains("did you mean"), "{found:?}");
    }

    #[test]
    fn entries_that_match_are_not_listed_nor_anything_before_docker_answers() {
        let matching = "[[allow]]\ncontainer = \"web\"\n[[allow]]\ncontainer = \"shop/db\"\n\
                        [[allow]]\nport = \"8000-8100\"\n";
        assert!(unmatched_of(matching, true).is_empty());
        assert!(unmatched_of("[[allow]]\ncontainer = \"datbase\"\n", false).is_empty());
        let port = unmatched_of("[[allow]]\nport = 9999\n", true);
        assert_eq!(port.len(), 1);
        assert!(port[0].contains("no container publishes"), "{port:?}");
        // UDP does not match a TCP binding.
        assert_eq!(
            unmatched_of("[[allow]]\nport = 8080\nproto = \"udp\"\n", true).len(),
            1
        );
        // The Docker API, opened to listed sources, is a match.
        assert!(unmatched_of("[[allow]]\nport = 2375\nfrom = [\"10.0.0.0/8\"]\n", true).is_empty());
    }
}
