//! Docker's inspect data -> the planner's snapshot. Pure functions, so the
//! awkward corners of the API (null port lists, empty host ports in routed
//! mode, custom bridge names, host networking) are unit-tested on JSON.

use std::net::IpAddr;
use std::str::FromStr;

use bollard::models::{
    ContainerInspectResponse, EndpointPortConfigProtocolEnum, EndpointPortConfigPublishModeEnum,
    Network, Service,
};
use portguard_core::{ContainerRef, L4Proto, PublishedPort};

use crate::identity::Identity;

const BRIDGE_NAME_OPTION: &str = "com.docker.network.bridge.name";

/// An IP network as Docker's IPAM writes it (`172.18.0.0/16`,
/// `fd00:d0c::/64`); host bits are ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subnet {
    addr: IpAddr,
    prefix: u8,
}

impl FromStr for Subnet {
    type Err = ();

    fn from_str(text: &str) -> Result<Self, ()> {
        let (addr, prefix) = text.split_once('/').ok_or(())?;
        let addr: IpAddr = addr.parse().map_err(|_| ())?;
        let prefix: u8 = prefix.parse().map_err(|_| ())?;
        let width = if addr.is_ipv4() { 32 } else { 128 };
        if prefix > width {
            return Err(());
        }
        Ok(Subnet { addr, prefix })
    }
}

impl Subnet {
    pub fn contains(&self, ip: IpAddr) -> bool {
        let (net, ip, width) = match (self.addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                (u128::from(u32::from(n)), u128::from(u32::from(a)), 32)
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => (u128::from(n), u128::from(a), 128),
            _ => return false,
        };
        let host_bits = width - u32::from(self.prefix);
        let mask = u128::MAX.checked_shl(host_bits).unwrap_or(0);
        net & mask == ip & mask
    }
}

/// A bridge network and the interface Docker says carries it. Docker's
/// word is not enough to trust the interface: see [`crate::bridges`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeClaim {
    /// Network name (or id), for messages.
    pub network: String,
    /// The interface name as Docker gives it, unchecked.
    pub ifname: String,
    /// The network's IPAM subnets (`IPAM.Config[].Subnet`), the only
    /// addresses Docker gives its bridge; those that do not parse are left
    /// out (an address inside them is then refused: closed, not open).
    pub subnets: Vec<Subnet>,
}

/// The interfaces Docker's bridge networks claim: the custom
/// `com.docker.network.bridge.name`, `docker0` for the default network,
/// `br-<12 hex of the id>` otherwise.
pub fn bridge_claims(networks: &[Network]) -> Vec<BridgeClaim> {
    networks
        .iter()
        .filter(|n| n.driver.as_deref() == Some("bridge"))
        .filter_map(|n| {
            let network = n
                .name
                .clone()
                .or_else(|| n.id.clone())
                .unwrap_or_else(|| "?".into());
            let ifname = if let Some(name) =
                n.options.as_ref().and_then(|o| o.get(BRIDGE_NAME_OPTION))
                && !name.is_empty()
            {
                name.clone()
            } else {
                match (n.name.as_deref(), n.id.as_deref()) {
                    (Some("bridge"), _) => "docker0".to_string(),
                    (_, Some(id)) => format!("br-{}", id.get(..12)?),
                    _ => return None,
                }
            };
            let subnets = n
                .ipam
                .as_ref()
                .and_then(|ipam| ipam.config.as_ref())
                .into_iter()
                .flatten()
                .filter_map(|c| c.subnet.as_deref()?.parse().ok())
                .collect();
            Some(BridgeClaim {
                network,
                ifname,
                subnets,
            })
        })
        .collect()
}

/// Longest Linux interface name, in bytes (IFNAMSIZ - 1).
pub const IFNAME_MAX: usize = 15;

/// Whether the kernel could have an interface called `name` (the rules of
/// its `dev_valid_name`, plus no control characters): never truncated,
/// never a path.
pub fn check_ifname(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("an empty interface name".into());
    }
    if name.len() > IFNAME_MAX {
        return Err(format!(
            "longer than {IFNAME_MAX} bytes, so no interface can have it"
        ));
    }
    if name == "." || name == ".." {
        return Err("`.` and `..` are not interface names".into());
    }
    if let Some(c) = name
        .chars()
        .find(|&c| c == '/' || c == ':' || c.is_whitespace() || c.is_control())
    {
        return Err(format!(
            "{c:?} is not allowed in an interface name (no `/`, `:`, whitespace or control characters)"
        ));
    }
    Ok(())
}

/// `"80/tcp"` -> (80, tcp); other protocols (sctp) are not ours to judge.
fn parse_port_key(key: &str) -> Option<(u16, L4Proto)> {
    let (port, proto) = key.split_once('/').unwrap_or((key, "tcp"));
    let proto = match proto {
        "tcp" => L4Proto::Tcp,
        "udp" => L4Proto::Udp,
        _ => return None,
    };
    Some((port.parse().ok()?, proto))
}

/// The container's name without Docker's leading `/` (else the short id).
pub fn container_name(inspect: &ContainerInspectResponse) -> String {
    inspect
        .name
        .as_deref()
        .map(|n| n.trim_start_matches('/').to_string())
        .unwrap_or_else(|| {
            inspect
                .id
                .as_deref()
                .unwrap_or("")
                .chars()
                .take(12)
                .collect()
        })
}

/// The published ports of one container, as its inspect data says
/// (`NetworkSettings.Ports`, not the requested `HostConfig.PortBindings`),
/// under the compose and Swarm identity [`crate::identity`] granted it.
pub fn published_ports_of(
    inspect: &ContainerInspectResponse,
    identity: &Identity,
) -> Vec<PublishedPort> {
    let container = ContainerRef {
        id: inspect.id.clone().unwrap_or_default(),
        name: container_name(inspect),
        compose: identity.compose.clone(),
        service: identity.service.clone(),
    };
    let network_mode = inspect
        .host_config
        .as_ref()
        .and_then(|h| h.network_mode.as_deref());
    if network_mode == Some("host") {
        // Nothing is published: the container's listeners are the host's.
        let exposed = inspect
            .config
            .as_ref()
            .and_then(|c| c.exposed_ports.as_ref());
        return exposed
            .into_iter()
            .flatten()
            .filter_map(|key| parse_port_key(key))
            .map(|(port, proto)| PublishedPort {
                host_ip: None,
                host_port: port,
                proto,
                container: container.clone(),
                container_port: port,
                host_network: true,
            })
            .collect();
    }
    let ports = inspect
        .network_settings
        .as_ref()
        .and_then(|n| n.ports.as_ref());
    let mut out = Vec::new();
    for (key, bindings) in ports.into_iter().flatten() {
        let Some((container_port, proto)) = parse_port_key(key) else {
            continue;
        };
        for binding in bindings.iter().flatten() {
            // "" in routed mode: nothing is bound on the host.
            let Some(host_port) = binding
                .host_port
                .as_deref()
                .and_then(|p| p.parse::<u16>().ok())
            else {
                continue;
            };
            if host_port == 0 {
                continue;
            }
            let host_ip = binding
                .host_ip
                .as_deref()
                .filter(|ip| !ip.is_empty())
                .and_then(|ip| ip.parse::<IpAddr>().ok());
            out.push(PublishedPort {
                host_ip,
                host_port,
                proto,
                container: container.clone(),
                container_port,
                host_network: false,
            });
        }
    }
    out.sort();
    out
}

/// The ports a Swarm service publishes through the ingress routing mesh
/// (`Endpoint.Ports`, what Docker did, not `Spec`, what was asked). Every
/// node listens on them on every address; the connection is DNATed into
/// the ingress sandbox over `docker_gwbridge`, so it crosses FORWARD like
/// a container's. Ports in `host` mode are bindings of the task's
/// container and come with it.
pub fn published_ports_of_service(service: &Service) -> Vec<PublishedPort> {
    let id = service.id.clone().unwrap_or_default();
    let name = service
        .spec
        .as_ref()
        .and_then(|s| s.name.clone())
        .unwrap_or_else(|| id.chars().take(12).collect());
    let container = ContainerRef {
        id,
        name: name.clone(),
        compose: None,
        service: Some(name),
    };
    let ports = service.endpoint.as_ref().and_then(|e| e.ports.as_ref());
    let mut out: Vec<PublishedPort> = ports
        .into_iter()
        .flatten()
        .filter(|p| {
            matches!(
                p.publish_mode,
                None | Some(
                    EndpointPortConfigPublishModeEnum::INGRESS
                        | EndpointPortConfigPublishModeEnum::EMPTY
                )
            )
        })
        .filter_map(|p| {
            let proto = match p.protocol {
                None
                | Some(
                    EndpointPortConfigProtocolEnum::TCP | EndpointPortConfigProtocolEnum::EMPTY,
                ) => L4Proto::Tcp,
                Some(EndpointPortConfigProtocolEnum::UDP) => L4Proto::Udp,
                Some(EndpointPortConfigProtocolEnum::SCTP) => return None,
            };
            let host_port = u16::try_from(p.published_port?).ok().filter(|&p| p > 0)?;
            Some(PublishedPort {
                host_ip: None,
                host_port,
                proto,
                container: container.clone(),
                container_port: p
                    .target_port
                    .and_then(|t| u16::try_from(t).ok())
                    .unwrap_or(0),
                host_network: false,
            })
        })
        .collect();
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnets_as_docker_writes_them() {
        let net: Subnet = "172.18.0.0/16".parse().unwrap();
        assert!(net.contains("172.18.255.254".parse().unwrap()));
        assert!(!net.contains("172.19.0.1".parse().unwrap()));
        assert!(!net.contains("::ffff:172.18.0.1".parse().unwrap()));
        let host_bits: Subnet = "10.77.0.1/24".parse().unwrap();
        assert!(host_bits.contains("10.77.0.200".parse().unwrap()));
        let all: Subnet = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("203.0.113.1".parse().unwrap()));
        let v6: Subnet = "fd00:d0c::/64".parse().unwrap();
        assert!(v6.contains("fd00:d0c::2".parse().unwrap()));
        assert!(!v6.contains("fd00:d0d::2".parse().unwrap()));
        let one: Subnet = "fd00::1/128".parse().unwrap();
        assert!(
            one.contains("fd00::1".parse().unwrap()) && !one.contains("fd00::2".parse().unwrap())
        );
        for bad in [
            "",
            "10.0.0.0",
            "10.0.0.0/33",
            "fd00::/129",
            "x/8",
            "10.0.0.0/-1",
        ] {
            assert!(bad.parse::<Subnet>().is_err(), "{bad}");
        }
    }

    fn inspect(json: &str) -> ContainerInspectResponse {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn published_ports_from_inspect_data() {
        let c = inspect(
            r#"{
            "Id": "abc123def4567890", "Name": "/web",
            "Config": {"Labels": {"com.docker.compose.project": "shop", "com.docker.compose.service": "web",
                                  "com.docker.compose.config-hash": "5e1f"},
                       "SomethingNew": {"x": 1}},
            "HostConfig": {"NetworkMode": "bridge"},
            "NetworkSettings": {"Ports": {
                "80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8080"}, {"HostIp": "::", "HostPort": "8080"}],
                "53/udp": [{"HostIp": "127.0.0.1", "HostPort": "5353"}],
                "443/tcp": null,
                "9000/tcp": [{"HostIp": "", "HostPort": ""}],
                "132/sctp": [{"HostIp": "0.0.0.0", "HostPort": "132"}]
            }}
        }"#,
        );
        // Labels set by compose's create call (the image has none).
        let labels = c.config.as_ref().unwrap().labels.clone().unwrap();
        let identity = crate::identity::identity(
            "web",
            &labels,
            Some(&Default::default()),
            &crate::identity::TaskCheck::NotAsked,
        );
        let ports = published_ports_of(&c, &identity);
        let summary: Vec<(Option<String>, u16, L4Proto, u16)> = ports
            .iter()
            .map(|p| {
                (
                    p.host_ip.map(|i| i.to_string()),
                    p.host_port,
                    p.proto,
                    p.container_port,
                )
            })
            .collect();
        assert_eq!(
            summary,
            vec![
                (Some("0.0.0.0".into()), 8080, L4Proto::Tcp, 80),
                (Some("127.0.0.1".into()), 5353, L4Proto::Udp, 53),
                (Some("::".into()), 8080, L4Proto::Tcp, 80),
            ]
        );
        assert_eq!(ports[0].container.name, "web");
        assert_eq!(ports[0].container.compose.as_deref(), Some("shop/web"));
        assert!(ports[1].is_local_only() && !ports[1].is_exposed());
    }

    #[test]
    fn host_network_containers_are_reported_not_guarded() {
        let c = inspect(
            r#"{"Id": "h", "Name": "/prom", "HostConfig": {"NetworkMode": "host"},
                "Config": {"ExposedPorts": {"9090/tcp": {}}}, "NetworkSettings": {"Ports": {}}}"#,
        );
        let ports = published_ports_of(&c, &Identity::default());
        assert_eq!(ports.len(), 1);
        assert!(ports[0].host_network && ports[0].host_port == 9090);
    }

    #[test]
    fn swarm_service_ports_from_the_endpoint_not_the_spec() {
        let service: Service = serde_json::from_str(
            r#"{"ID": "svc0123456789abc", "Spec": {"Name": "websvc",
                 "EndpointSpec": {"Ports": [{"TargetPort": 80, "PublishedPort": 9999}]}},
                "Endpoint": {"Ports": [
                  {"Protocol": "tcp", "TargetPort": 80, "PublishedPort": 8081, "PublishMode": "ingress"},
                  {"Protocol": "udp", "TargetPort": 53, "PublishedPort": 5353},
                  {"Protocol": "tcp", "TargetPort": 443, "PublishedPort": 8443, "PublishMode": "host"},
                  {"Protocol": "sctp", "TargetPort": 1, "PublishedPort": 1},
                  {"Protocol": "tcp", "TargetPort": 2, "PublishedPort": 70000},
                  {"Protocol": "tcp", "TargetPort": 3}
                ]}}"#,
        )
        .unwrap();
        let ports = published_ports_of_service(&service);
        let summary: Vec<(u16, L4Proto, u16)> = ports
            .iter()
            .map(|p| (p.host_port, p.proto, p.container_port))
            .collect();
        assert_eq!(
            summary,
            [(5353, L4Proto::Udp, 53), (8081, L4Proto::Tcp, 80)]
        );
        assert!(
            ports
                .iter()
                .all(|p| p.container.service.as_deref() == Some("websvc")
                    && p.container.name == "websvc")
        );
        assert!(ports.iter().all(|p| p.host_ip.is_none() && p.is_exposed()));
        assert!(published_ports_of_service(&serde_json::from_str("{}").unwrap()).is_empty());
    }

    #[test]
    fn a_swarm_task_container_is_named_by_its_service() {
        let c = inspect(
            r#"{"Id": "t", "Name": "/websvc.1.uuqzoasn8zn3", "HostConfig": {"NetworkMode": "bridge"},
                "Config": {"Labels": {"com.docker.swarm.service.name": "websvc",
                                      "com.docker.swarm.task.id": "uuqzoasn8zn3"}},
                "NetworkSettings": {"Ports": {"80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8081"}]}}}"#,
        );
        let labels = c.config.as_ref().unwrap().labels.clone().unwrap();
        let identity = crate::identity::identity(
            &container_name(&c),
            &labels,
            Some(&Default::default()),
            &crate::identity::TaskCheck::Confirmed,
        );
        let ports = published_ports_of(&c, &identity);
        assert_eq!(ports[0].container.service.as_deref(), Some("websvc"));
        assert!(ports[0].container.is_named("websvc"));
        assert!(!ports[0].container.is_named("websvc.1"));
    }

    #[test]
    fn missing_everything_is_no_ports() {
        let none = Identity::default();
        assert!(published_ports_of(&inspect("{}"), &none).is_empty());
        assert!(published_ports_of(&inspect(r#"{"NetworkSettings": null}"#), &none).is_empty());
    }

    #[test]
    fn bridge_claims_of_networks() {
        let networks: Vec<Network> = serde_json::from_str(
            r#"[
            {"Name": "bridge", "Id": "0123456789abcdef", "Driver": "bridge"},
            {"Name": "shop_default", "Id": "3f2a9c1d7e00ffff", "Driver": "bridge", "Options": {}},
            {"Name": "custom", "Id": "aaaaaaaaaaaaaaaa", "Driver": "bridge",
             "Options": {"com.docker.network.bridge.name": "shopnet"},
             "IPAM": {"Driver": "default", "Config": [
                {"Subnet": "172.19.0.0/16", "Gateway": "172.19.0.1"},
                {"Subnet": "fd00:d0c::/64"}, {"Subnet": "not a subnet"}, {"Gateway": "10.0.0.1"}]}},
            {"Name": "short", "Id": "abc", "Driver": "bridge"},
            {"Name": "host", "Id": "bbbbbbbbbbbbbbbb", "Driver": "host"},
            {"Name": "none", "Id": "cccccccccccccccc", "Driver": "null"}
        ]"#,
        )
        .unwrap();
        let claims = bridge_claims(&networks);
        assert_eq!(
            claims[2].subnets,
            [
                "172.19.0.0/16".parse().unwrap(),
                "fd00:d0c::/64".parse().unwrap()
            ]
        );
        assert!(claims[0].subnets.is_empty());
        let claims: Vec<(String, String)> =
            claims.into_iter().map(|c| (c.network, c.ifname)).collect();
        assert_eq!(
            claims,
            [
                ("bridge".into(), "docker0".into()),
                ("shop_default".into(), "br-3f2a9c1d7e00".into()),
                ("custom".into(), "shopnet".into()),
            ]
        );
    }

    #[test]
    fn interface_names_are_checked_not_truncated() {
        for good in [
            "docker0",
            "br-3f2a9c1d7e00",
            "veth-outside",
            "a",
            "123456789012345",
        ] {
            assert_eq!(check_ifname(good), Ok(()), "{good}");
        }
        let table = [
            ("", "empty"),
            ("1234567890123456", "longer than 15 bytes"),
            (
                "caf\u{e9}caf\u{e9}caf\u{e9}caf\u{e9}",
                "longer than 15 bytes",
            ),
            (".", "not interface names"),
            ("..", "not interface names"),
            ("../eth0", "'/' is not allowed"),
            ("eth0:1", "':' is not allowed"),
            ("br 0", "' ' is not allowed"),
            ("br\t0", "'\\t' is not allowed"),
            ("web\u{1b}]0", "'\\u{1b}' is not allowed"),
        ];
        for (name, wanted) in table {
            let err = check_ifname(name).unwrap_err();
            assert!(err.contains(wanted), "{name:?}: {err}");
        }
    }
}
