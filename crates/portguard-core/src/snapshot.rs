//! What the guard has observed of the host: Docker's bridges and the ports
//! its containers publish. Built by the Docker observer, consumed by the
//! planner; plain data so that tests can write one by hand.

use std::collections::BTreeSet;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// Transport protocol of a published port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum L4Proto {
    Tcp,
    Udp,
}

impl L4Proto {
    pub const ALL: [L4Proto; 2] = [L4Proto::Tcp, L4Proto::Udp];

    pub fn name(self) -> &'static str {
        match self {
            L4Proto::Tcp => "tcp",
            L4Proto::Udp => "udp",
        }
    }

    /// IANA protocol number, as `meta l4proto` sees it.
    pub fn number(self) -> u8 {
        match self {
            L4Proto::Tcp => 6,
            L4Proto::Udp => 17,
        }
    }

    /// Whether an allow entry's `proto` covers this protocol.
    pub fn covered_by(self, proto: portguard_config::Proto) -> bool {
        match self {
            L4Proto::Tcp => proto.covers_tcp(),
            L4Proto::Udp => proto.covers_udp(),
        }
    }
}

impl std::fmt::Display for L4Proto {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A container as the guard names it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ContainerRef {
    pub id: String,
    /// Name without Docker's leading `/`.
    pub name: String,
    /// Compose `project/service`, from the `com.docker.compose.*` labels.
    pub compose: Option<String>,
    /// The Swarm service this is (ports published through the ingress
    /// routing mesh, `name` is then the service's name) or whose task
    /// this container is (label `com.docker.swarm.service.name`).
    #[serde(default)]
    pub service: Option<String>,
}

impl ContainerRef {
    /// Whether an allow entry's `container = "..."` names this container
    /// (its name, compose `project/service`, or Swarm service).
    pub fn is_named(&self, wanted: &str) -> bool {
        let wanted = wanted.trim_start_matches('/');
        self.name == wanted
            || self.compose.as_deref() == Some(wanted)
            || self.service.as_deref() == Some(wanted)
    }
}

/// One published port binding (one host address, one host port).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PublishedPort {
    /// Host address the port is bound to; `None` for every address.
    pub host_ip: Option<IpAddr>,
    pub host_port: u16,
    pub proto: L4Proto,
    pub container: ContainerRef,
    pub container_port: u16,
    /// The container shares the host's network: its ports never cross
    /// FORWARD and the guard cannot cover them.
    pub host_network: bool,
}

impl PublishedPort {
    /// Bound to a loopback address only: unreachable from outside.
    pub fn is_local_only(&self) -> bool {
        self.host_ip.is_some_and(|ip| ip.is_loopback())
    }

    /// Reachable from other hosts through Docker's NAT or proxy.
    pub fn is_exposed(&self) -> bool {
        !self.host_network && !self.is_local_only()
    }
}

/// Everything the planner needs to know about the host.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Names of Docker's bridge interfaces (`docker0`, `br-<id>`, custom
    /// `com.docker.network.bridge.name` ones).
    pub bridges: BTreeSet<String>,
    pub published: Vec<PublishedPort>,
    /// TCP sockets dockerd itself listens on (`-H tcp://...`): the Docker
    /// API, root on this host to whoever reaches it. Found by the daemon
    /// (sock_diag), not by asking Docker.
    #[serde(default)]
    pub docker_api: Vec<DockerApiListener>,
    /// What the guard judged before this start, judged again until
    /// Docker's first complete answer (see [`Judged`]).
    #[serde(default, skip_serializing_if = "Judged::is_empty")]
    pub kept: Judged,
}

impl Snapshot {
    /// What this snapshot makes the guard judge: the bridges new
    /// connections are judged on the way into, and the host ports judged
    /// on the userland-proxy path and as Docker's DNAT targets. Kept in
    /// the state directory, so that a start before Docker answers judges
    /// no less (see [`Snapshot::kept`]).
    pub fn judged(&self) -> Judged {
        let mut judged = self.kept.clone();
        judged.bridges.extend(self.bridges.iter().cloned());
        for port in self.published.iter().filter(|p| p.is_exposed()) {
            judged.ports_mut(port.proto).insert(port.host_port);
        }
        judged.docker_api.extend(
            self.docker_api
                .iter()
                .filter(|l| !l.is_local_only())
                .map(|l| l.port),
        );
        judged
    }
}

/// Judgement carried across a start. A restarted daemon (an upgrade,
/// `Restart=on-failure`, a watchdog kill) or a boot knows nothing of
/// Docker until Docker answers, which may take long (a hung or stopped
/// dockerd) while Docker's DNAT rules and docker-proxy listeners are
/// already live. Until then the guard keeps judging what the table it
/// found judged, and what it judged when it last ran (the state
/// directory). This only ever adds to what is judged: a kept bridge is
/// judged on the way in, never trusted, and a kept port is judged,
/// never allowed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Judged {
    /// Interfaces judged as Docker's bridges.
    #[serde(default)]
    pub bridges: BTreeSet<String>,
    /// Host ports judged as published, per protocol.
    #[serde(default)]
    pub tcp: BTreeSet<u16>,
    #[serde(default)]
    pub udp: BTreeSet<u16>,
    /// Ports dockerd was seen listening on (the Docker API).
    #[serde(default)]
    pub docker_api: BTreeSet<u16>,
}

impl Judged {
    pub fn is_empty(&self) -> bool {
        self.bridges.is_empty()
            && self.tcp.is_empty()
            && self.udp.is_empty()
            && self.docker_api.is_empty()
    }

    pub fn ports(&self, proto: L4Proto) -> &BTreeSet<u16> {
        match proto {
            L4Proto::Tcp => &self.tcp,
            L4Proto::Udp => &self.udp,
        }
    }

    pub fn ports_mut(&mut self, proto: L4Proto) -> &mut BTreeSet<u16> {
        match proto {
            L4Proto::Tcp => &mut self.tcp,
            L4Proto::Udp => &mut self.udp,
        }
    }

    /// Everything `other` judges, added to this.
    pub fn extend(&mut self, other: Judged) {
        self.bridges.extend(other.bridges);
        self.tcp.extend(other.tcp);
        self.udp.extend(other.udp);
        self.docker_api.extend(other.docker_api);
    }
}

/// A listening TCP socket owned by dockerd.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct DockerApiListener {
    /// The address it is bound to (`0.0.0.0`, `::` for every address).
    pub addr: IpAddr,
    pub port: u16,
    /// dockerd's process id.
    pub pid: u32,
}

/// The port of the Docker API without TLS, by convention (2376 is TLS).
pub const DOCKER_API_PLAIN_PORT: u16 = 2375;
/// Docker's registered ports (IANA): 2375 plain, 2376 TLS. The guard
/// closes them whether or not dockerd is seen listening, so that a dockerd
/// starting with `-H tcp://0.0.0.0:2375` is closed from its first packet
/// rather than from the moment the scanner finds it.
pub const DOCKER_API_PORTS: [u16; 2] = [2375, 2376];

impl DockerApiListener {
    /// Bound to a loopback address only: unreachable from outside.
    pub fn is_local_only(&self) -> bool {
        self.addr.is_loopback()
    }

    /// On 2375, the port of the API without TLS: anybody who reaches it
    /// runs containers as root without a password.
    pub fn is_plain(&self) -> bool {
        self.port == DOCKER_API_PLAIN_PORT
    }
}
