//! Which of the interfaces Docker names as bridges the guard may treat as
//! Docker's bridges. Traffic from a Docker bridge is trusted, so Docker's
//! word is not enough: anyone who may create Docker networks could set
//! `com.docker.network.bridge.name` to the host's uplink (or a veth to the
//! outside) and open every port.
//!
//! A claimed name counts only if it is a valid interface name and the
//! kernel (asked over rtnetlink, in the daemon's network namespace, see
//! [`crate::kernel`]) has a bridge of that name that looks like one Docker
//! made:
//!
//! - it carries no default route, IPv4 or IPv6, in any routing table: on
//!   KVM, Proxmox or LXD hosts the uplink itself is a bridge, and
//!   `docker network create -o com.docker.network.bridge.name=<it>
//!   --subnet <the LAN> --gateway <the host>` makes Docker reuse it;
//! - every address it holds is inside the network's IPAM subnets (Docker
//!   gives a bridge only its gateways), IPv6 link-local ones aside;
//! - every port enslaved to it is a veth (Docker attaches only veths; an
//!   uplink has a NIC, a bond, a VLAN, a tap, ...).
//!
//! A refused bridge is left out (its traffic is judged like any outside
//! interface's) and reported in `guardctl status`; the observer judges
//! again whenever a link, an address or a default route changes (see
//! [`crate::kernel::Watched`]). A claimed bridge that does not exist yet
//! carries no traffic; it is refused the same way until it appears.

use std::collections::BTreeSet;
use std::net::IpAddr;

use portguard_core::{BridgeFault, UntrustedClaim};

#[cfg(test)]
use crate::kernel::Port;
use crate::kernel::{BridgeFacts, LinkKind};
use crate::snapshot::{BridgeClaim, check_ifname};

/// IPv6 link-local (`fe80::/10`): every IPv6 interface has one, and
/// Docker gives its bridges `fe80::1`.
fn is_link_local(ip: IpAddr) -> bool {
    matches!(ip, IpAddr::V6(v6) if v6.segments()[0] & 0xffc0 == 0xfe80)
}

/// Every reason not to trust `claim`, given what the kernel says of the
/// name (`Err`: it could not be asked). Empty: trusted. Pure, so that
/// every case is unit-tested.
pub fn judge(claim: &BridgeClaim, facts: Result<&BridgeFacts, &str>) -> Vec<BridgeFault> {
    if let Err(why) = check_ifname(&claim.ifname) {
        return vec![BridgeFault::BadName { why }];
    }
    let facts = match facts {
        Ok(facts) => facts,
        Err(error) => {
            return vec![BridgeFault::Unknown {
                error: error.to_string(),
            }];
        }
    };
    match &facts.kind {
        LinkKind::Bridge => {}
        LinkKind::Other(kind) => return vec![BridgeFault::NotABridge { kind: kind.clone() }],
        LinkKind::Missing => return vec![BridgeFault::Missing],
    }
    let mut faults: Vec<BridgeFault> = facts
        .default_routes
        .iter()
        .map(|&family| BridgeFault::DefaultRoute { family })
        .collect();
    faults.extend(
        facts
            .addresses
            .iter()
            .filter(|(ip, _)| !is_link_local(*ip) && !claim.subnets.iter().any(|s| s.contains(*ip)))
            .map(|(ip, prefix)| BridgeFault::AddressOutsideSubnets {
                address: format!("{ip}/{prefix}"),
            }),
    );
    faults.extend(
        facts
            .ports
            .iter()
            .filter(|port| !matches!(&port.kind, LinkKind::Other(k) if k == "veth"))
            .map(|port| BridgeFault::ForeignPort {
                port: port.name.clone(),
                kind: match &port.kind {
                    LinkKind::Other(k) => k.clone(),
                    LinkKind::Bridge => "bridge".into(),
                    LinkKind::Missing => "vanished link".into(),
                },
            }),
    );
    faults
}

/// The verified bridges, and the refused claims with their reasons.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Verified {
    pub bridges: BTreeSet<String>,
    pub refused: Vec<UntrustedClaim>,
}

/// Judges every claim against what the kernel says (`facts` of each claim,
/// in order).
pub fn verify<'a>(
    claims: &[BridgeClaim],
    facts: impl IntoIterator<Item = Result<&'a BridgeFacts, &'a str>>,
) -> Verified {
    let mut verified = Verified::default();
    for (claim, facts) in claims.iter().zip(facts) {
        let faults = judge(claim, facts);
        if faults.is_empty() {
            verified.bridges.insert(claim.ifname.clone());
        } else {
            verified.refused.push(UntrustedClaim::Bridge {
                network: claim.network.clone(),
                ifname: claim.ifname.clone(),
                faults,
            });
        }
    }
    // Docker lists networks in no promised order.
    verified.refused.sort();
    verified
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use portguard_core::IpFamily;

    fn families(v4: bool, v6: bool) -> BTreeSet<IpFamily> {
        [(v4, IpFamily::Ipv4), (v6, IpFamily::Ipv6)]
            .into_iter()
            .filter(|(on, _)| *on)
            .map(|(_, f)| f)
            .collect()
    }

    fn port(name: &str, kind: LinkKind) -> Port {
        Port {
            index: 0,
            name: name.into(),
            kind,
        }
    }

    fn claim(ifname: &str, subnets: &[&str]) -> BridgeClaim {
        BridgeClaim {
            network: "evil".into(),
            ifname: ifname.into(),
            subnets: subnets.iter().map(|s| s.parse().unwrap()).collect(),
        }
    }

    fn bridge() -> BridgeFacts {
        BridgeFacts {
            kind: LinkKind::Bridge,
            ..BridgeFacts::default()
        }
    }

    fn veth() -> LinkKind {
        LinkKind::Other("veth".into())
    }

    /// The bridge of a Docker network as Docker leaves it: its gateways,
    /// link-local addresses, containers' veths.
    fn docker_bridge() -> BridgeFacts {
        BridgeFacts {
            addresses: vec![
                ("172.18.0.1".parse().unwrap(), 16),
                ("fd00:d0c::1".parse().unwrap(), 64),
                ("fe80::1".parse().unwrap(), 64),
                ("fe80::a8c1:abff:fe12:3456".parse().unwrap(), 64),
            ],
            ports: vec![port("veth1a2b3c4", veth()), port("veth5d6e7f8", veth())],
            ..bridge()
        }
    }

    const SUBNETS: &[&str] = &["172.18.0.0/16", "fd00:d0c::/64"];

    #[test]
    fn a_bridge_as_docker_makes_it_is_trusted() {
        assert_eq!(
            judge(&claim("br-3f2a9c1d7e00", SUBNETS), Ok(&docker_bridge())),
            []
        );
        assert_eq!(judge(&claim("shopnet", &[]), Ok(&bridge())), []);
        let verified = verify(&[claim("shopnet", SUBNETS)], [Ok(&docker_bridge())]);
        assert_eq!(verified.bridges, BTreeSet::from(["shopnet".to_string()]));
        assert!(verified.refused.is_empty());
    }

    #[test]
    fn an_uplink_bridge_is_refused_for_every_sign_of_one() {
        // What `docker network create -o com.docker.network.bridge.name=br0
        // --subnet <the LAN> --gateway <the host>` finds on a Proxmox host.
        let uplink = BridgeFacts {
            default_routes: families(true, true),
            addresses: vec![
                ("192.168.1.10".parse().unwrap(), 24),
                ("2001:db8:1::10".parse().unwrap(), 64),
                ("fe80::1".parse().unwrap(), 64),
            ],
            ports: vec![
                port("enp1s0", LinkKind::Other("device".into())),
                port("bond0", LinkKind::Other("bond".into())),
                port("tap100i0", LinkKind::Other("tun".into())),
                port("vmbr0.10", LinkKind::Other("vlan".into())),
                port("veth100i0", veth()),
            ],
            ..bridge()
        };
        let faults = judge(&claim("vmbr0", &["192.168.1.0/24"]), Ok(&uplink));
        assert_eq!(
            faults,
            [
                BridgeFault::DefaultRoute {
                    family: IpFamily::Ipv4
                },
                BridgeFault::DefaultRoute {
                    family: IpFamily::Ipv6
                },
                BridgeFault::AddressOutsideSubnets {
                    address: "2001:db8:1::10/64".into()
                },
                BridgeFault::ForeignPort {
                    port: "enp1s0".into(),
                    kind: "device".into()
                },
                BridgeFault::ForeignPort {
                    port: "bond0".into(),
                    kind: "bond".into()
                },
                BridgeFault::ForeignPort {
                    port: "tap100i0".into(),
                    kind: "tun".into()
                },
                BridgeFault::ForeignPort {
                    port: "vmbr0.10".into(),
                    kind: "vlan".into()
                },
            ]
        );
        // Each sign alone is enough.
        let alone = [
            BridgeFacts {
                default_routes: families(false, true),
                ..docker_bridge()
            },
            BridgeFacts {
                addresses: vec![("10.0.0.5".parse().unwrap(), 8)],
                ..docker_bridge()
            },
            BridgeFacts {
                ports: vec![port("eth0", LinkKind::Other("device".into()))],
                ..docker_bridge()
            },
            BridgeFacts {
                ports: vec![port("br1", LinkKind::Bridge)],
                ..docker_bridge()
            },
        ];
        for facts in alone {
            let faults = judge(&claim("shopnet", SUBNETS), Ok(&facts));
            assert_eq!(faults.len(), 1, "{facts:?}: {faults:?}");
        }
        let verified = verify(&[claim("vmbr0", &["192.168.1.0/24"])], [Ok(&uplink)]);
        assert!(verified.bridges.is_empty());
        assert!(
            matches!(&verified.refused[0], UntrustedClaim::Bridge { ifname, faults, .. } if ifname == "vmbr0" && faults.len() == 7)
        );
    }

    #[test]
    fn only_valid_names_of_real_bridges_are_trusted() {
        let table: &[(&str, Result<BridgeFacts, &str>, BridgeFault)] = &[
            (
                "veth-outside",
                Ok(BridgeFacts {
                    kind: veth(),
                    ..BridgeFacts::default()
                }),
                BridgeFault::NotABridge {
                    kind: "veth".into(),
                },
            ),
            (
                "eth0",
                Ok(BridgeFacts {
                    kind: LinkKind::Other("device".into()),
                    ..BridgeFacts::default()
                }),
                BridgeFault::NotABridge {
                    kind: "device".into(),
                },
            ),
            ("newnet", Ok(BridgeFacts::default()), BridgeFault::Missing),
            (
                "shopnet",
                Err("netlink: EPERM"),
                BridgeFault::Unknown {
                    error: "netlink: EPERM".into(),
                },
            ),
        ];
        for (name, facts, wanted) in table {
            let faults = judge(&claim(name, &[]), facts.as_ref().map_err(|e| *e));
            assert_eq!(faults, std::slice::from_ref(wanted), "{name}");
        }
        for (name, wanted) in [
            ("a-very-long-bridge-name", "longer than 15 bytes"),
            ("eth0:0", "':' is not allowed"),
            ("web\u{1b}]0;x", "'\\u{1b}' is not allowed"),
        ] {
            let faults = judge(&claim(name, &[]), Ok(&bridge()));
            assert!(
                matches!(&faults[..], [BridgeFault::BadName { why }] if why.contains(wanted)),
                "{name}: {faults:?}"
            );
        }
    }

    #[test]
    fn link_local_is_fe80_slash_10() {
        assert!(is_link_local("fe80::1".parse().unwrap()));
        assert!(is_link_local("febf::1".parse().unwrap()));
        assert!(!is_link_local("fec0::1".parse().unwrap()));
        assert!(!is_link_local("169.254.0.1".parse().unwrap()));
    }
}
