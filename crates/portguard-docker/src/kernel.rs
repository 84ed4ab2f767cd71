//! What the kernel says about a claimed bridge (rtnetlink, in the daemon's
//! network namespace): its kind, the default routes through it, its
//! addresses and its ports; and the kernel's notifications that can change
//! any of those, so that [`crate::bridges`] judges again.
//!
//! Every question is about one interface: a link by name, the links whose
//! master it is, its addresses, the routes through it. With strict checking
//! (`NETLINK_GET_STRICT_CHK`, Linux 4.20) the kernel itself filters the
//! dumps by interface, so a router with a full routing table is not read
//! whole for each bridge; without it the same filters run here.

use std::collections::BTreeSet;
use std::net::IpAddr;

use futures_util::TryStreamExt;
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{InfoKind, LinkAttribute, LinkInfo, LinkMessage};
use netlink_packet_route::route::{RouteAttribute, RouteMessage};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use portguard_core::IpFamily;
use rtnetlink::packet_core::{NetlinkMessage, NetlinkPayload};
use rtnetlink::sys::AsyncSocket as _;

/// What the kernel has under a name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum LinkKind {
    Bridge,
    /// Another kind (`veth`, `vlan`, `bond`, ...), or `device` when none is
    /// given (a physical NIC).
    Other(String),
    #[default]
    Missing,
}

/// What the kernel says about one claimed bridge. Routes, addresses and
/// ports are read only for a bridge.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BridgeFacts {
    pub kind: LinkKind,
    /// Its interface index, for matching notifications (0 if missing).
    pub index: u32,
    /// Families with a default route through it, in any routing table.
    pub default_routes: BTreeSet<IpFamily>,
    /// Its addresses with their prefix lengths.
    pub addresses: Vec<(IpAddr, u8)>,
    /// The links enslaved to it.
    pub ports: Vec<Port>,
}

/// A link enslaved to a bridge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Port {
    pub index: u32,
    pub name: String,
    pub kind: LinkKind,
}

/// Receive buffer for notifications, bytes (a C int for setsockopt; the kernel caps it at
/// `net.core.rmem_max`).
const NOTIFICATION_BUFFER: i32 = 4 << 20;

fn link_name(link: &LinkMessage) -> Option<&str> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfName(name) => Some(name.as_str()),
        _ => None,
    })
}

fn link_master(link: &LinkMessage) -> Option<u32> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::Controller(master) => Some(*master),
        _ => None,
    })
}

fn kind_of(link: &LinkMessage) -> LinkKind {
    let kind = link.attributes.iter().find_map(|a| match a {
        LinkAttribute::LinkInfo(infos) => infos.iter().find_map(|i| match i {
            LinkInfo::Kind(kind) => Some(kind.clone()),
            _ => None,
        }),
        _ => None,
    });
    match kind {
        Some(InfoKind::Bridge) => LinkKind::Bridge,
        Some(other) => LinkKind::Other(other.to_string()),
        None => LinkKind::Other("device".into()),
    }
}

/// An rtnetlink handle for the questions, whether the kernel filters
/// dumps itself, and the notifications about links, addresses and routes.
pub struct Kernel {
    handle: rtnetlink::Handle,
    strict: bool,
}

/// The kernel's notifications about links, addresses and routes.
pub type Notifications = futures_util::stream::BoxStream<
    'static,
    (
        NetlinkMessage<RouteNetlinkMessage>,
        rtnetlink::sys::SocketAddr,
    ),
>;

impl Kernel {
    /// Opens the socket, subscribes to link, address and route changes, and
    /// asks for strict checking (so that dumps are filtered by the kernel).
    pub fn connect() -> std::io::Result<(Kernel, Notifications)> {
        use futures_util::StreamExt as _;
        let (mut connection, handle, messages) = rtnetlink::new_connection()?;
        let socket = connection.socket_mut().socket_mut();
        socket.bind(&rtnetlink::sys::SocketAddr::new(
            0,
            rtnetlink::constants::RTMGRP_LINK
                | rtnetlink::constants::RTMGRP_IPV4_IFADDR
                | rtnetlink::constants::RTMGRP_IPV6_IFADDR
                | rtnetlink::constants::RTMGRP_IPV4_ROUTE
                | rtnetlink::constants::RTMGRP_IPV6_ROUTE,
        ))?;
        // Container churn sends a stream of link and address notifications;
        // room for bursts (what overflows is caught by the periodic
        // judgement, see `REJUDGE_EVERY`).
        if let Err(e) = socket.set_rx_buf_sz(NOTIFICATION_BUFFER) {
            tracing::debug!(error = %e, "cannot enlarge the rtnetlink receive buffer");
        }
        let strict = match socket.set_netlink_get_strict_chk(true) {
            Ok(()) => true,
            Err(e) => {
                tracing::debug!(error = %e, "no strict netlink checking; filtering dumps here");
                false
            }
        };
        tokio::spawn(connection);
        Ok((Kernel { handle, strict }, messages.boxed()))
    }

    /// What the kernel says about the link called `name` (a valid
    /// interface name).
    pub async fn bridge_facts(&self, name: &str) -> Result<BridgeFacts, rtnetlink::Error> {
        let mut answers = self.handle.link().get().match_name(name).execute();
        let link = match answers.try_next().await {
            Ok(Some(link)) => link,
            Ok(None) => return Ok(BridgeFacts::default()),
            Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::ENODEV => {
                return Ok(BridgeFacts::default());
            }
            Err(e) => return Err(e),
        };
        let mut facts = BridgeFacts {
            kind: kind_of(&link),
            index: link.header.index,
            ..BridgeFacts::default()
        };
        if facts.kind != LinkKind::Bridge {
            return Ok(facts);
        }
        facts.ports = self.ports(facts.index).await?;
        facts.addresses = self.addresses(facts.index).await?;
        for (family, ip) in [
            (AddressFamily::Inet, IpFamily::Ipv4),
            (AddressFamily::Inet6, IpFamily::Ipv6),
        ] {
            if self.has_default_route(family, facts.index).await? {
                facts.default_routes.insert(ip);
            }
        }
        Ok(facts)
    }

    /// The links whose master is `index` (`ip link show master`).
    async fn ports(&self, index: u32) -> Result<Vec<Port>, rtnetlink::Error> {
        let mut request = self.handle.link().get();
        request
            .message_mut()
            .attributes
            .push(LinkAttribute::Controller(index));
        let links: Vec<LinkMessage> = request.execute().try_collect().await?;
        Ok(links
            .iter()
            .filter(|l| link_master(l) == Some(index))
            .map(|l| Port {
                index: l.header.index,
                name: link_name(l).unwrap_or("?").to_string(),
                kind: kind_of(l),
            })
            .collect())
    }

    async fn addresses(&self, index: u32) -> Result<Vec<(IpAddr, u8)>, rtnetlink::Error> {
        let mut request = self.handle.address().get().set_link_index_filter(index);
        if self.strict {
            request.message_mut().header.index = index;
        }
        let messages: Vec<AddressMessage> = request.execute().try_collect().await?;
        Ok(messages
            .iter()
            .filter(|m| m.header.index == index)
            .filter_map(|m| {
                let local = m.attributes.iter().find_map(|a| match a {
                    AddressAttribute::Local(ip) => Some(*ip),
                    _ => None,
                });
                let address = m.attributes.iter().find_map(|a| match a {
                    AddressAttribute::Address(ip) => Some(*ip),
                    _ => None,
                });
                Some((local.or(address)?, m.header.prefix_len))
            })
            .collect())
    }

    /// Whether a default route of `family` in any table goes out through
    /// `index` (as its device or one of its multipath hops).
    async fn has_default_route(
        &self,
        family: AddressFamily,
        index: u32,
    ) -> Result<bool, rtnetlink::Error> {
        let mut message = RouteMessage::default();
        message.header.address_family = family;
        if self.strict {
            message.attributes.push(RouteAttribute::Oif(index));
        }
        let routes: Vec<RouteMessage> = self
            .handle
            .route()
            .get(message)
            .execute()
            .try_collect()
            .await?;
        Ok(routes
            .iter()
            .filter(|r| r.header.destination_prefix_length == 0)
            .any(|r| self.strict || uses_device(r, index)))
    }
}

/// Whether `route` leaves through `index`. With strict checking the kernel
/// has already filtered by device (resolving nexthop objects, whose routes
/// may name no device); this is the filter for kernels without it, which
/// have no nexthop objects either.
fn uses_device(route: &RouteMessage, index: u32) -> bool {
    route.attributes.iter().any(|a| match a {
        RouteAttribute::Oif(oif) => *oif == index,
        RouteAttribute::MultiPath(hops) => hops.iter().any(|h| h.interface_index == index),
        _ => false,
    })
}

/// What the last judgement depended on: a notification about any of it
/// calls for judging again.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Watched {
    /// Claimed names (a link of that name appearing, going or renamed).
    pub names: BTreeSet<String>,
    /// Interface indexes of the claimed bridges and of their ports (a port
    /// joining or leaving, an address added or removed).
    pub indexes: BTreeSet<u32>,
}

impl Watched {
    /// Whether `message` may change a judgement.
    pub fn is_relevant(&self, message: &NetlinkMessage<RouteNetlinkMessage>) -> bool {
        let NetlinkPayload::InnerMessage(message) = &message.payload else {
            return false;
        };
        match message {
            RouteNetlinkMessage::NewLink(link) | RouteNetlinkMessage::DelLink(link) => {
                self.indexes.contains(&link.header.index)
                    || link_name(link).is_some_and(|n| self.names.contains(n))
                    || link_master(link).is_some_and(|m| self.indexes.contains(&m))
            }
            RouteNetlinkMessage::NewAddress(address) | RouteNetlinkMessage::DelAddress(address) => {
                self.indexes.contains(&address.header.index)
            }
            // Default routes are few and rarely change; any of them counts.
            RouteNetlinkMessage::NewRoute(route) | RouteNetlinkMessage::DelRoute(route) => {
                route.header.destination_prefix_length == 0
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use netlink_packet_route::route::RouteNextHop;

    fn message(inner: RouteNetlinkMessage) -> NetlinkMessage<RouteNetlinkMessage> {
        NetlinkMessage::from(inner)
    }

    fn link(index: u32, name: &str, master: Option<u32>) -> LinkMessage {
        let mut link = LinkMessage::default();
        link.header.index = index;
        link.attributes.push(LinkAttribute::IfName(name.into()));
        if let Some(master) = master {
            link.attributes.push(LinkAttribute::Controller(master));
        }
        link
    }

    #[test]
    fn notifications_about_what_a_judgement_rests_on_are_relevant() {
        let watched = Watched {
            names: BTreeSet::from(["uplink0".to_string()]),
            indexes: BTreeSet::from([7, 9]),
        };
        let relevant = |m: RouteNetlinkMessage| watched.is_relevant(&message(m));
        // The bridge, a port, a link taking the name, a link joining it.
        assert!(relevant(RouteNetlinkMessage::NewLink(link(
            7, "uplink0", None
        ))));
        assert!(relevant(RouteNetlinkMessage::NewLink(link(
            9, "eth0", None
        ))));
        assert!(relevant(RouteNetlinkMessage::NewLink(link(
            12, "uplink0", None
        ))));
        assert!(relevant(RouteNetlinkMessage::NewLink(link(
            13,
            "enp1s0",
            Some(7)
        ))));
        assert!(relevant(RouteNetlinkMessage::DelLink(link(
            9, "eth0", None
        ))));
        // A container's veth elsewhere, on another bridge.
        assert!(!relevant(RouteNetlinkMessage::NewLink(link(
            14,
            "veth1",
            Some(3)
        ))));
        let mut address = AddressMessage::default();
        address.header.index = 7;
        assert!(relevant(RouteNetlinkMessage::NewAddress(address.clone())));
        address.header.index = 14;
        assert!(!relevant(RouteNetlinkMessage::DelAddress(address)));
        let mut route = RouteMessage::default();
        assert!(relevant(RouteNetlinkMessage::NewRoute(route.clone())));
        route.header.destination_prefix_length = 24;
        assert!(!relevant(RouteNetlinkMessage::DelRoute(route)));
    }

    #[test]
    fn a_route_uses_a_device_directly_or_through_one_of_its_hops() {
        let mut route = RouteMessage::default();
        assert!(!uses_device(&route, 7));
        route.attributes.push(RouteAttribute::Oif(7));
        assert!(uses_device(&route, 7) && !uses_device(&route, 8));
        let mut multipath = RouteMessage::default();
        let hop = |index| {
            let mut hop = RouteNextHop::default();
            hop.interface_index = index;
            hop
        };
        multipath
            .attributes
            .push(RouteAttribute::MultiPath(vec![hop(3), hop(8)]));
        assert!(uses_device(&multipath, 8) && !uses_device(&multipath, 7));
    }
}
