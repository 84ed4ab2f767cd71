//! What status says about an exposed Docker API: each listener dockerd
//! holds, whether the guard closes it, and which allow entries open it.
//! (`guardctl explain` on its port is `verdict::explain_docker_api`.)

use std::net::IpAddr;

use portguard_config::{AllowEntry, Config, Mode};
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
    pub verdict: DockerApiVerdict,
    /// Allow entries with a source that open it (their description).
    pub open_to: Vec<String>,
    /// Allow entries without a source that name its port: they do not
    /// open the Docker API (root on this host to the whole network).
    pub ignored: Vec<String>,
}

/// What the guard does to new connections to a Docker API listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DockerApiVerdict {
    /// `closed`: new connections from untrusted interfaces are dropped,
    /// but for `open_to`.
    Closed,
    /// `local-only`: bound to loopback.
    LocalOnly,
    /// `audit`: audit mode, counted and not dropped.
    Audit,
}

/// How the daemon told dockerd's listeners from other programs' at its
/// latest look (`status --json`: `docker_api_scan`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "method", rename_all = "kebab-case")]
pub enum DockerApiScan {
    /// `no-dockerd`: no process named dockerd runs, and `/proc` shows
    /// every process.
    NoDockerd,
    /// `file-descriptors`: each listener's socket is among dockerd's open
    /// files (`/proc/PID/fd`; needs CAP_SYS_PTRACE over dockerd).
    FileDescriptors,
    /// `cgroup`: dockerd's files are not readable (the unit's sandbox),
    /// so a listener is dockerd's when the kernel says its socket was
    /// opened in dockerd's cgroup and no docker-proxy there serves its
    /// port.
    Cgroup,
    /// `blind`: neither way works; `reason` says why. A Docker API on a
    /// port other than 2375 and 2376 is then not closed.
    Blind { reason: String },
}

impl DockerApiScan {
    /// The method's name, as `status --json` and the metrics say it.
    pub fn method(&self) -> &'static str {
        match self {
            DockerApiScan::NoDockerd => "no-dockerd",
            DockerApiScan::FileDescriptors => "file-descriptors",
            DockerApiScan::Cgroup => "cgroup",
            DockerApiScan::Blind { .. } => "blind",
        }
    }
}

pub fn docker_api_reports(config: &Config, snapshot: &Snapshot) -> Vec<DockerApiReport> {
    snapshot
        .docker_api()
        .map(|l| {
            let naming = |sourced: bool| -> Vec<String> {
                config
                    .allow
                    .iter()
                    .filter(|e| e.from.is_empty() != sourced && names_port(e, snapshot, l.port))
                    .map(|e| e.describe())
                    .collect()
            };
            let verdict = if l.is_local_only() {
                DockerApiVerdict::LocalOnly
            } else {
                match config.guard.mode {
                    Mode::Audit => DockerApiVerdict::Audit,
                    Mode::Enforce => DockerApiVerdict::Closed,
                }
            };
            DockerApiReport {
                addr: l.addr,
                port: l.port,
                pid: l.pid,
                plain: l.is_plain(),
                verdict,
                open_to: naming(true),
                ignored: naming(false),
            }
        })
        .collect()
}

/// Whether `entry` opens TCP `port` for some source (a sourced entry is
/// asked about the first address it lists).
pub(crate) fn names_port(entry: &AllowEntry, snapshot: &Snapshot, port: u16) -> bool {
    let source = entry.from.first().map(|c| c.addr());
    entry_admits(entry, snapshot, port, L4Proto::Tcp, source)
}

/// Test helper: dockerd listening on `addr`:2375, and nothing published.
#[cfg(test)]
pub(crate) fn dockerd_on(addr: &str) -> Snapshot {
    #![allow(clippy::unwrap_used)]
    Snapshot {
        dockerd_listeners: vec![crate::snapshot::DockerApiListener {
            addr: addr.parse().unwrap(),
            port: 2375,
            pid: 7,
        }],
        ..Snapshot::default()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// The metrics' `method` label and `status --json`'s `method` are one
    /// name per way of looking.
    #[test]
    fn the_method_name_is_the_one_status_json_uses() {
        for scan in [
            DockerApiScan::NoDockerd,
            DockerApiScan::FileDescriptors,
            DockerApiScan::Cgroup,
            DockerApiScan::Blind { reason: "x".into() },
        ] {
            let json = serde_json::to_value(&scan).unwrap();
            assert_eq!(json["method"], scan.method(), "{json}");
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
        let report = &docker_api_reports(&config, &dockerd_on("0.0.0.0"))[0];
        assert!(report.plain);
        assert_eq!(report.verdict, DockerApiVerdict::Closed);
        assert_eq!(report.open_to.len(), 1, "{report:?}");
        assert!(report.open_to[0].starts_with("port 2000-3000/tcp from 192.0.2.0/24"));
        assert_eq!(report.ignored.len(), 1, "{report:?}");
        assert!(report.ignored[0].starts_with("port 2375/tcp"));
    }

    /// Docker 28 and later open a published port's socket in dockerd and
    /// hand it to docker-proxy once that has started: a look in between
    /// finds dockerd listening on the published port. Judged as the API,
    /// `port = 8080` refused every IPv6 connection over docker-proxy
    /// (issue 19.3). The API cannot share an address and port with a
    /// published binding; a listener elsewhere is still the API.
    #[test]
    fn a_published_ports_socket_in_dockerds_hands_is_not_the_docker_api() {
        use crate::snapshot::{ContainerRef, DockerApiListener, PublishedPort};
        let listener = |addr: &str, port| DockerApiListener {
            addr: addr.parse().unwrap(),
            port,
            pid: 7,
        };
        let published = |host_ip: &str, host_port, proto, host_network| PublishedPort {
            host_ip: Some(host_ip.parse().unwrap()),
            host_port,
            proto,
            container: ContainerRef {
                id: "c0ffee".into(),
                name: "web".into(),
                compose: None,
                service: None,
            },
            container_port: 80,
            host_network,
        };
        let snapshot = Snapshot {
            dockerd_listeners: vec![
                listener("0.0.0.0", 2375),
                listener("0.0.0.0", 8080),
                listener("::", 8080),
                // Published on loopback only: a listener on another
                // address is not that binding's socket.
                listener("192.0.2.1", 8081),
                // Published as UDP, or by a container on the host's
                // network (whose sockets are its own, not dockerd's).
                listener("0.0.0.0", 9000),
                listener("0.0.0.0", 9100),
            ],
            published: vec![
                published("0.0.0.0", 8080, L4Proto::Tcp, false),
                published("::", 8080, L4Proto::Tcp, false),
                published("127.0.0.1", 8081, L4Proto::Tcp, false),
                published("0.0.0.0", 9000, L4Proto::Udp, false),
                published("0.0.0.0", 9100, L4Proto::Tcp, true),
            ],
            ..Snapshot::default()
        };
        let api: Vec<u16> = snapshot.docker_api().map(|l| l.port).collect();
        assert_eq!(api, [2375, 8081, 9000, 9100]);
        let config = Config::from_toml_str("[[allow]]\nport = 8080\n").unwrap();
        let reported: Vec<u16> = docker_api_reports(&config, &snapshot)
            .iter()
            .map(|r| r.port)
            .collect();
        assert_eq!(reported, api);
        let ruleset = crate::plan(&config, &snapshot);
        let set = ruleset.set(crate::plan::names::DOCKER_API_TCP).unwrap();
        let ports: Vec<String> = set
            .elements
            .iter()
            .map(crate::render::render_element)
            .collect();
        assert_eq!(ports, ["2375", "2376", "8081", "9000", "9100"]);
        assert_eq!(
            snapshot.judged().docker_api,
            [2375, 8081, 9000, 9100].into()
        );
    }

    #[test]
    fn docker_api_verdicts_on_the_wire() {
        use crate::wire::{assert_wire, wire_error};
        assert_wire(&DockerApiVerdict::Closed, "closed");
        assert_wire(&DockerApiVerdict::LocalOnly, "local-only");
        assert_wire(&DockerApiVerdict::Audit, "audit");
        let error = wire_error::<DockerApiVerdict>("open");
        assert!(
            error.contains(
                "unknown variant `open`, expected one of `closed`, `local-only`, `audit`"
            ),
            "{error}"
        );
    }

    #[test]
    fn loopback_listeners_are_local_only_and_audit_mode_says_so() {
        let config = Config::default();
        assert_eq!(
            docker_api_reports(&config, &dockerd_on("127.0.0.1"))[0].verdict,
            DockerApiVerdict::LocalOnly
        );
        let audit = Config::from_toml_str("[guard]\nmode = \"audit\"\n").unwrap();
        assert_eq!(
            docker_api_reports(&audit, &dockerd_on("::"))[0].verdict,
            DockerApiVerdict::Audit
        );
    }
}
