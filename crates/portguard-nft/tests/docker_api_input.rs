//! The Docker API on the input path, with real connections: only allow
//! entries with `from` open it, and then for exactly those sources,
//! whether `from` is one address (the hash set) or a network (the
//! `_ranges` set). Issue 18: the chain consulted only the hash sets, so
//! `port = 4243, from = ["10.99.0.0/24"]` kept the API closed while
//! `guardctl explain 4243 --from 10.99.0.2` said "open".

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::Duration;

use portguard_config::Config;
use portguard_core::ruleset::TABLE_NAME;
use portguard_core::verdict::ExplainAnswer;
use portguard_core::{DockerApiListener, Ruleset, Snapshot, plan};
use portguard_nft::{GuardTable, Ownership, TableSpec};
use portguard_testkit::{lab, tcp_probe, tcp_server};

const PROBE: Duration = Duration::from_millis(700);
const API: &str = "10.99.0.1:4243";

fn with_dockerd_on_4243() -> Snapshot {
    Snapshot {
        dockerd_listeners: vec![DockerApiListener {
            addr: "0.0.0.0".parse().unwrap(),
            port: 4243,
            pid: 1,
        }],
        ..Snapshot::default()
    }
}

fn planned(config: &Config) -> Ruleset {
    plan(config, &with_dockerd_on_4243())
}

fn explained_open(config: &Config) -> bool {
    let explanation = portguard_core::verdict::explain_docker_api(
        config,
        &with_dockerd_on_4243(),
        4243,
        portguard_core::L4Proto::Tcp,
        Some("10.99.0.2".parse().unwrap()),
    )
    .unwrap();
    matches!(explanation.answer, ExplainAnswer::Open)
}

#[test]
fn p1_the_docker_api_opens_to_exactly_the_sources_an_entry_lists_and_explain_agrees() {
    let lab = lab();
    tcp_server(&lab.host, 4243, "dockerd\n");
    let mut table = lab.host.enter(|| {
        GuardTable::open(TableSpec {
            name: TABLE_NAME.into(),
            ownership: Ownership::Unowned,
        })
        .unwrap()
    });
    let target: SocketAddr = API.parse().unwrap();
    let cases = [
        ("", false),
        ("[[allow]]\nport = 4243\n", false),
        ("[[allow]]\nport = 4243\nfrom = [\"10.99.0.2/32\"]\n", true),
        ("[[allow]]\nport = 4243\nfrom = [\"10.99.0.0/24\"]\n", true),
        (
            "[[allow]]\nport = \"4000-4300\"\nfrom = [\"10.99.0.2/32\"]\n",
            true,
        ),
        ("[[allow]]\nport = 4243\nfrom = [\"192.0.2.0/24\"]\n", false),
    ];
    for (config, open) in cases {
        let config = Config::from_toml_str(config).unwrap();
        table.reconcile(&planned(&config)).unwrap();
        assert_eq!(
            tcp_probe(&lab.wan, target, PROBE),
            open,
            "the kernel, with {:?}",
            config.allow
        );
        assert_eq!(
            explained_open(&config),
            open,
            "guardctl explain, with {:?}",
            config.allow
        );
    }
}
