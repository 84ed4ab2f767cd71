//! What the guard has observed of the host: Docker's bridges and the ports
//! its containers publish. Built by the Docker observer, consumed by the
//! planner; plain data so that tests can write one by hand.

use std::collections::BTreeSet;
use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use portguard_config::printable;

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
    /// Compose `project/service`, from the `com.docker.compose.*` labels,
    /// only if they were set when the container was created (not inherited
    /// from its image; see docs/configuration.md).
    pub compose: Option<String>,
    /// The Swarm service this is (ports published through the ingress
    /// routing mesh, `name` is then the service's name) or whose task
    /// this container is (label `com.docker.swarm.service.name`, under the
    /// same condition as `compose`).
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
    /// TCP sockets dockerd itself listens on, as the daemon found them
    /// (sock_diag), not by asking Docker: the Docker API (`-H tcp://...`),
    /// root on this host to whoever reaches it, and for a moment a
    /// published port's socket (Docker 28 and later open it in dockerd,
    /// then hand it to docker-proxy). [`Snapshot::docker_api`] tells the
    /// two apart.
    #[serde(default, alias = "docker_api")]
    pub dockerd_listeners: Vec<DockerApiListener>,
    /// What the guard judged before this start, judged again until
    /// Docker's first complete answer (see [`Judged`]).
    #[serde(default, skip_serializing_if = "Judged::is_empty")]
    pub kept: Judged,
    /// What Docker claims that the guard does not take its word for: bridges
    /// it does not trust, compose and Swarm identities it does not let an
    /// allow entry match. Reported in `guardctl status`.
    #[serde(default)]
    pub untrusted_claims: Vec<UntrustedClaim>,
}

/// A claim Docker made (in a network's options, or a container's labels)
/// that the guard refused, and why. Every string in it comes from Docker
/// (or the kernel) unchecked: [`fmt::Display`] escapes them for terminals.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "claim", rename_all = "snake_case")]
pub enum UntrustedClaim {
    /// A bridge network's interface. Traffic arriving on it is not trusted
    /// (it is judged like any outside interface's).
    Bridge {
        network: String,
        ifname: String,
        /// Every reason found, at least one.
        faults: Vec<BridgeFault>,
    },
    /// A container's compose `project/service` labels: an entry
    /// `container = "project/service"` does not match this container.
    Compose {
        container: String,
        compose: String,
        fault: LabelFault,
    },
    /// A container's Swarm task labels: an entry naming the service does
    /// not match this container.
    SwarmTask {
        container: String,
        service: String,
        fault: LabelFault,
    },
}

/// Why a claimed bridge is not trusted.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "fault", rename_all = "snake_case")]
pub enum BridgeFault {
    /// No interface can have this name.
    BadName { why: String },
    /// The kernel's link of that name is another kind (`veth`, `device`, ...).
    NotABridge { kind: String },
    /// No link of that name (yet).
    Missing,
    /// The kernel could not be asked.
    Unknown { error: String },
    /// The bridge carries a default route: it is an uplink.
    DefaultRoute { family: IpFamily },
    /// The bridge holds an address outside every subnet of the network's
    /// IPAM configuration (Docker gives it only its gateways).
    AddressOutsideSubnets { address: String },
    /// A port of the bridge is not a veth (Docker attaches only veths; an
    /// uplink has a NIC, a bond, a VLAN, a tap, ...).
    ForeignPort { port: String, kind: String },
}

/// Why a container's identity labels are not trusted.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "fault", rename_all = "snake_case")]
pub enum LabelFault {
    /// These labels hold exactly their image's values: the container may
    /// have been started by a plain `docker run` of that image.
    FromImage { labels: Vec<String> },
    /// The container's image could not be inspected, so where its labels
    /// came from is unknown.
    ImageUnknown,
    /// The label that proves the container was created by compose or by a
    /// Swarm task (`com.docker.compose.config-hash`,
    /// `com.docker.swarm.task.id`) is missing.
    Incomplete { missing: String },
    /// Swarm (asked on a manager) does not run this task in this container.
    NotSwarmsTask { why: String },
}

/// IPv4 or IPv6.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IpFamily {
    Ipv4,
    Ipv6,
}

impl fmt::Display for IpFamily {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            IpFamily::Ipv4 => "IPv4",
            IpFamily::Ipv6 => "IPv6",
        })
    }
}

impl fmt::Display for BridgeFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BridgeFault::BadName { why } => write!(f, "not an interface name ({})", printable(why)),
            BridgeFault::NotABridge { kind } => {
                write!(f, "it is a {}, not a bridge", printable(kind))
            }
            BridgeFault::Missing => f.write_str("it does not exist (yet)"),
            BridgeFault::Unknown { error } => {
                write!(f, "the kernel could not be asked ({})", printable(error))
            }
            BridgeFault::DefaultRoute { family } => {
                write!(f, "it carries the {family} default route (an uplink)")
            }
            BridgeFault::AddressOutsideSubnets { address } => write!(
                f,
                "it holds {}, outside the network's subnets",
                printable(address)
            ),
            BridgeFault::ForeignPort { port, kind } => write!(
                f,
                "its port {} is a {}, not a container's veth",
                printable(port),
                printable(kind)
            ),
        }
    }
}

impl fmt::Display for LabelFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LabelFault::FromImage { labels } => write!(
                f,
                "its image sets {} (whoever runs the image inherits them)",
                printable(&labels.join(", "))
            ),
            LabelFault::ImageUnknown => {
                f.write_str("its image cannot be inspected to tell where the labels came from")
            }
            LabelFault::Incomplete { missing } => write!(f, "it has no {}", printable(missing)),
            LabelFault::NotSwarmsTask { why } => write!(f, "Swarm disagrees: {}", printable(why)),
        }
    }
}

impl fmt::Display for UntrustedClaim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UntrustedClaim::Bridge {
                network,
                ifname,
                faults,
            } => {
                let faults: Vec<String> = faults.iter().map(ToString::to_string).collect();
                write!(
                    f,
                    "bridge \"{}\" of network {}: {}; traffic from it is judged as from outside",
                    printable(ifname),
                    printable(network),
                    faults.join("; ")
                )
            }
            UntrustedClaim::Compose {
                container,
                compose,
                fault,
            } => write!(
                f,
                "container {} is not compose service {}: {fault}",
                printable(container),
                printable(compose)
            ),
            UntrustedClaim::SwarmTask {
                container,
                service,
                fault,
            } => write!(
                f,
                "container {} is not a task of Swarm service {}: {fault}",
                printable(container),
                printable(service)
            ),
        }
    }
}

impl Snapshot {
    /// dockerd's listeners that are the Docker API: every one but those
    /// at the address and port of a binding Docker reports as published.
    /// Docker 28 and later open a published port's socket in dockerd and
    /// hand it to docker-proxy once that has started, which takes seconds
    /// on a loaded host; a look in between finds the socket in dockerd's
    /// hands. Judged as the API, the port admitted only entries with a
    /// `from`, so a listed port refused IPv6 (over docker-proxy) until the
    /// next look. The Docker API cannot be that socket: two listeners
    /// cannot share an address and port.
    pub fn docker_api(&self) -> impl Iterator<Item = &DockerApiListener> {
        self.dockerd_listeners
            .iter()
            .filter(|l| !self.is_published_socket(l))
    }

    /// Whether dockerd's listener `l` is the socket of a published port.
    pub fn is_published_socket(&self, l: &DockerApiListener) -> bool {
        self.published.iter().any(|p| {
            p.proto == L4Proto::Tcp
                && !p.host_network
                && p.host_port == l.port
                && p.host_ip.is_none_or(|ip| ip == l.addr)
        })
    }

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
            self.docker_api()
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
