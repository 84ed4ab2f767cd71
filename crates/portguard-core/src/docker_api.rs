//! What status says about an exposed Docker API: each listener dockerd
//! holds, whether the guard closes it, and which allow entries open it.

use std::net::IpAddr;

use portguard_config::{Config, Mode};
use serde::{Deserialize, Serialize};

use crate::plan::entry_admits;
use crate::snapshot::{L4Proto, Snapshot};

/// One Docker API listener, as `status --json` shows it (`docker_api`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DockerApiReport {
    pub addr: IpAddr,
    pub port: u16,
    /// dockerd's process id.
    pub pid: u32,
    /// On 2375, the port of the API without TLS.
    pub plain: bool,
    /// `closed` (new connections from untrusted interfaces are dropped,
    /// but for `open_to`), `local-only` (bound to loopback) or `audit`
    /// (audit mode: counted, not dropped).
    pub verdict: String,
    /// Allow entries with a source that open it (their description).
    pub open_to: Vec<String>,
    /// Allow entries without a source that name its port: they do not
    /// open the Docker API (root on this host to the whole network).
    pub ignored: Vec<String>,
}

pub fn docker_api_reports(config: &Config, snapshot: &Snapshot) -> Vec<DockerApiReport> {
    snapshot
        .docker_api
        .iter()
        .map(|l| {
            // The entries that name this port, with or without a source
            // (a sourced entry is asked about the first address it lists).
            let naming = |sourced: bool| -> Vec<String> {
                config
                    .allow
                    .iter()
                    .filter(|e| e.from.is_empty() != sourced)
                    .filter(|e| {
                        let source = e.from.first().map(|c| c.addr());
                        entry_admits(e, snapshot, l.port, L4Proto::Tcp, source)
                    })
                    .map(|e| e.describe())
                    .collect()
            };
            let verdict = if l.is_local_only() {
                "local-only"
            } else if config.guard.mode == Mode::Audit {
                "audit"
            } else {
                "closed"
            };
            DockerApiReport {
                addr: l.addr,
                port: l.port,
                pid: l.pid,
                plain: l.is_plain(),
                verdict: verdict.into(),
                open_to: naming(true),
                ignored: naming(false),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::snapshot::DockerApiListener;

    fn snapshot(addr: &str) -> Snapshot {
        Snapshot {
            docker_api: vec![DockerApiListener {
                addr: addr.parse().unwrap(),
                port: 2375,
                pid: 7,
            }],
            ..Snapshot::default()
        }
    }

    #[test]
    fn only_sourced_entries_open_the_docker_api_and_unsourced_ones_are_named() {
        let config = Config::from_toml_str(
            "[[allow]]\nport = 2375\n\
             [[allow]]\nport = \"2000-3000\"\nfrom = [\"192.0.2.0/24\"]\n\
             [[allow]]\nport = 2376\nfrom = [\"192.0.2.9\"]\n\
             [[allow]]\nport = 2375\nproto = \"udp\"\nfrom = [\"192.0.2.9\"]\n",
        )
        .unwrap();
        let report = &docker_api_reports(&config, &snapshot("0.0.0.0"))[0];
        assert!(report.plain);
        assert_eq!(report.verdict, "closed");
        assert_eq!(report.open_to.len(), 1, "{report:?}");
        assert!(report.open_to[0].starts_with("port 2000-3000/tcp from 192.0.2.0/24"));
        assert_eq!(report.ignored.len(), 1, "{report:?}");
        assert!(report.ignored[0].starts_with("port 2375/tcp"));
    }

    #[test]
    fn loopback_listeners_are_local_only_and_audit_mode_says_so() {
        let config = Config::default();
        assert_eq!(
            docker_api_reports(&config, &snapshot("127.0.0.1"))[0].verdict,
            "local-only"
        );
        let audit = Config::from_toml_str("[guard]\nmode = \"audit\"\n").unwrap();
        assert_eq!(
            docker_api_reports(&audit, &snapshot("::"))[0].verdict,
            "audit"
        );
    }
}
