//! What a table found in the kernel judged: the elements of its bridge,
//! published-port and Docker API sets, read back so that a starting
//! daemon keeps judging them until Docker answers (see
//! [`portguard_core::Judged`]). Whatever cannot be read as such an
//! element is skipped: this only ever adds to what is judged.

use netlink_packet_core::{NLA_TYPE_MASK, NlasIterator};
use portguard_core::plan::names;
use portguard_core::{Judged, L4Proto};

use crate::kernel_constants::{
    NFT_SET_ELEM_INTERVAL_END, NFTA_DATA_VALUE, NFTA_SET_ELEM_FLAGS, NFTA_SET_ELEM_KEY,
};
use crate::model::{SetState, TableState};

impl SetState {
    /// Each element's key as bytes (interval end markers left out).
    pub fn keys(&self) -> Vec<Vec<u8>> {
        self.elements
            .iter()
            .filter(|element| {
                !element.iter().any(|(kind, value)| {
                    *kind == NFTA_SET_ELEM_FLAGS
                        && <[u8; 4]>::try_from(value.as_slice())
                            .is_ok_and(|f| u32::from_be_bytes(f) & NFT_SET_ELEM_INTERVAL_END != 0)
                })
            })
            .filter_map(|element| {
                let (_, key) = element
                    .iter()
                    .find(|(kind, _)| *kind == NFTA_SET_ELEM_KEY)?;
                NlasIterator::new(key.as_slice())
                    .filter_map(Result::ok)
                    .find(|a| a.kind() & NLA_TYPE_MASK == NFTA_DATA_VALUE)
                    .map(|a| a.value().to_vec())
            })
            .collect()
    }

    /// The elements of a set of interface names.
    fn ifnames(&self) -> impl Iterator<Item = String> + '_ {
        self.keys().into_iter().filter_map(|key| {
            let name = key.split(|&b| b == 0).next().unwrap_or_default();
            std::str::from_utf8(name)
                .ok()
                .filter(|n| !n.is_empty())
                .map(str::to_string)
        })
    }

    /// The elements of a set of single ports.
    fn ports(&self) -> impl Iterator<Item = u16> + '_ {
        self.keys()
            .into_iter()
            .filter_map(|key| <[u8; 2]>::try_from(key.as_slice()).ok())
            .map(u16::from_be_bytes)
    }
}

impl TableState {
    fn set_named(&self, name: &str) -> Option<&SetState> {
        self.sets.iter().find(|s| s.name == name)
    }

    /// What this table judged: its bridges (trusted or only judged), the
    /// published ports of each protocol and the Docker API ports.
    pub fn judged(&self) -> Judged {
        let mut judged = Judged::default();
        for set in [names::DOCKER_BRIDGES, names::JUDGED_BRIDGES] {
            if let Some(set) = self.set_named(set) {
                judged.bridges.extend(set.ifnames());
            }
        }
        for proto in L4Proto::ALL {
            if let Some(set) = self.set_named(&names::published(proto)) {
                judged.ports_mut(proto).extend(set.ports());
            }
        }
        if let Some(set) = self.set_named(names::DOCKER_API_TCP) {
            judged.docker_api.extend(set.ports());
        }
        judged
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use crate::compare::expected_state;
    use crate::model::{Ownership, TableSpec};
    use portguard_config::Config;
    use portguard_core::ruleset::TABLE_NAME;
    use portguard_core::{Snapshot, plan};

    /// The elements read back are the ones the planner put in: the
    /// encoding a table in the kernel has, walked back.
    #[test]
    fn what_a_table_judged_is_read_back_from_its_encoding() {
        let snapshot: Snapshot = serde_json::from_value(serde_json::json!({
            "bridges": ["custom0", "br-0123456789ab"],
            "published": [
                {"host_ip": null, "host_port": 8080, "proto": "tcp", "container_port": 80,
                 "host_network": false, "container": {"id": "a", "name": "a", "compose": null}},
                {"host_ip": "127.0.0.1", "host_port": 9000, "proto": "tcp", "container_port": 80,
                 "host_network": false, "container": {"id": "b", "name": "b", "compose": null}},
                {"host_ip": null, "host_port": 5353, "proto": "udp", "container_port": 53,
                 "host_network": false, "container": {"id": "c", "name": "c", "compose": null}}
            ],
            "docker_api": [{"addr": "0.0.0.0", "port": 4243, "pid": 1}],
            "kept": {"bridges": ["old0"], "tcp": [7000]}
        }))
        .unwrap();
        let config = Config::from_toml_str("[[allow]]\nport = \"8000-8100\"\n").unwrap();
        let spec = TableSpec {
            name: TABLE_NAME.into(),
            ownership: Ownership::Unowned,
        };
        let judged = expected_state(&spec, &plan(&config, &snapshot)).judged();
        fn list<T: Clone>(set: &std::collections::BTreeSet<T>) -> Vec<T> {
            set.iter().cloned().collect()
        }
        assert_eq!(
            list(&judged.bridges),
            ["br-0123456789ab", "custom0", "docker0", "old0"]
        );
        assert_eq!(list(&judged.tcp), [7000, 8080], "127.0.0.1 is not judged");
        assert_eq!(list(&judged.udp), [5353]);
        assert_eq!(list(&judged.docker_api), [2375, 2376, 4243]);
        assert_eq!(judged, {
            let mut again = snapshot.judged();
            again.bridges.insert("docker0".into());
            again.docker_api.extend([2375, 2376]);
            again
        });
    }
}
