//! Ending connections the allowlist no longer admits (P10). The kernel has
//! no filtered flush, so: dump the conntrack entries carrying our
//! "admitted" mark bit (the kernel filters the dump by mark), decide each
//! by its original tuple, delete the ones to end.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use netlink_packet_core::{DefaultNla, NLA_F_NESTED, NlasIterator};
use netlink_packet_netfilter::{
    NetfilterHeader, NetfilterMessage, NetfilterMessageInner, NetfilterProtoFamily,
    NetfilterSubsystem,
};

use crate::error::NftError;
use crate::socket::{NfSocket, payload};

const IPCTNL_MSG_CT_GET: u8 = 1;
const IPCTNL_MSG_CT_DELETE: u8 = 2;
const CTA_TUPLE_ORIG: u16 = 1;
const CTA_MARK: u16 = 8;
const CTA_ZONE: u16 = 18;
const CTA_MARK_MASK: u16 = 21;
const CTA_TUPLE_IP: u16 = 1;
const CTA_TUPLE_PROTO: u16 = 2;
const CTA_IP_V4_SRC: u16 = 1;
const CTA_IP_V6_SRC: u16 = 3;
const CTA_PROTO_NUM: u16 = 1;
const CTA_PROTO_DST_PORT: u16 = 3;
const NLA_TYPE_MASK: u16 = 0x3fff;
const ENOENT: i32 = 2;

/// A tracked connection, by its original direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flow {
    pub source: IpAddr,
    /// IANA protocol number (6 tcp, 17 udp).
    pub proto: u8,
    /// The destination port before DNAT: the published host port.
    pub original_dport: u16,
}

/// What a sweep did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SweepStats {
    /// Marked connections looked at.
    pub examined: usize,
    /// Connections ended.
    pub ended: usize,
}

struct Entry {
    flow: Flow,
    tuple: Vec<u8>,
    zone: Option<Vec<u8>>,
}

fn conntrack_message(
    family: NetfilterProtoFamily,
    message_type: u8,
    attributes: Vec<DefaultNla>,
) -> NetfilterMessage {
    NetfilterMessage::new(
        NetfilterHeader::new(family, 0, 0),
        NetfilterMessageInner::Other {
            subsys: NetfilterSubsystem::Conntrack,
            message_type,
            attributes,
        },
    )
}

fn parse_entry(payload: &[u8]) -> Option<Entry> {
    let mut tuple = None;
    let mut zone = None;
    for nla in NlasIterator::new(payload) {
        let nla = nla.ok()?;
        match nla.kind() & NLA_TYPE_MASK {
            CTA_TUPLE_ORIG => tuple = Some(nla.value().to_vec()),
            CTA_ZONE => zone = Some(nla.value().to_vec()),
            _ => {}
        }
    }
    let tuple = tuple?;
    let (mut source, mut proto, mut dport) = (None, None, None);
    for nla in NlasIterator::new(&tuple) {
        let nla = nla.ok()?;
        match nla.kind() & NLA_TYPE_MASK {
            CTA_TUPLE_IP => {
                for ip in NlasIterator::new(nla.value()) {
                    let ip = ip.ok()?;
                    let v = ip.value();
                    match ip.kind() & NLA_TYPE_MASK {
                        CTA_IP_V4_SRC => {
                            source = Some(IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(v).ok()?)))
                        }
                        CTA_IP_V6_SRC => {
                            source = Some(IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(v).ok()?)))
                        }
                        _ => {}
                    }
                }
            }
            CTA_TUPLE_PROTO => {
                for p in NlasIterator::new(nla.value()) {
                    let p = p.ok()?;
                    match p.kind() & NLA_TYPE_MASK {
                        CTA_PROTO_NUM => proto = p.value().first().copied(),
                        CTA_PROTO_DST_PORT => {
                            dport = Some(u16::from_be_bytes(p.value().try_into().ok()?))
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    Some(Entry {
        flow: Flow {
            source: source?,
            proto: proto?,
            original_dport: dport?,
        },
        tuple,
        zone,
    })
}

/// A handle on connection tracking in one network namespace.
pub struct Conntrack {
    sock: NfSocket,
}

impl Conntrack {
    /// Opens a handle in the calling thread's network namespace.
    pub fn open() -> Result<Conntrack, NftError> {
        Ok(Conntrack {
            sock: NfSocket::open()?,
        })
    }

    /// Ends every tracked connection carrying `mark` (all of its bits) for
    /// which `keep` says no. Connections that vanish meanwhile are fine.
    pub fn end_connections(
        &mut self,
        mark: u32,
        keep: impl Fn(&Flow) -> bool,
    ) -> Result<SweepStats, NftError> {
        let dump = conntrack_message(
            NetfilterProtoFamily::Unspec,
            IPCTNL_MSG_CT_GET,
            vec![
                DefaultNla::new(CTA_MARK, mark.to_be_bytes().to_vec()),
                DefaultNla::new(CTA_MARK_MASK, mark.to_be_bytes().to_vec()),
            ],
        );
        let replies = self.sock.dump(dump)?;
        let mut stats = SweepStats::default();
        let mut deletes = Vec::new();
        for raw in &replies {
            let Some(entry) = parse_entry(payload(raw)) else {
                continue;
            };
            stats.examined += 1;
            if keep(&entry.flow) {
                continue;
            }
            let family = match entry.flow.source {
                IpAddr::V4(_) => NetfilterProtoFamily::IPv4,
                IpAddr::V6(_) => NetfilterProtoFamily::IPv6,
            };
            let mut attributes = vec![DefaultNla::new(CTA_TUPLE_ORIG | NLA_F_NESTED, entry.tuple)];
            if let Some(zone) = entry.zone {
                attributes.push(DefaultNla::new(CTA_ZONE, zone));
            }
            deletes.push(conntrack_message(family, IPCTNL_MSG_CT_DELETE, attributes));
        }
        let requested = deletes.len();
        let failed = self.sock.send_acked(deletes)?;
        if let Some((_, errno)) = failed.iter().find(|(_, errno)| *errno != ENOENT) {
            return Err(NftError::Kernel {
                what: "deleting a conntrack entry".into(),
                errno: *errno,
            });
        }
        stats.ended = requested - failed.len();
        Ok(stats)
    }
}
