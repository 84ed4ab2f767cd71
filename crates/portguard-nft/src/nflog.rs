//! Blocked attempts as the kernel reports them over nflog: the judge
//! chains' `log group N` rule (see [`portguard_core::plan::NFLOG_GROUP`])
//! sends the headers of each blocked new connection, rate-limited in the
//! kernel, to whoever bound the group. [`Nflog`] binds it and turns each
//! report into an [`Attempt`]: source, protocol and *host* port.
//!
//! On the forward path the packet is already DNATed, so its destination
//! port is the container's. The host port is the connection's original
//! destination port, found in this order:
//! 1. the conntrack data the kernel attaches when asked
//!    (`NFULNL_CFG_F_CONNTRACK`, attribute `NFULA_CT`), on kernels built
//!    with nfnetlink's conntrack glue (Debian's are);
//! 2. in enforce mode, the packet itself: the rule puts the original port
//!    back into the packet before it reports it (it is dropped next; see
//!    `Stmt::DportSetCtOriginal`);
//! 3. in audit mode the packet goes on untouched and its connection is
//!    tracked: looked up by its reply direction;
//! 4. else the packet's destination port (the container's, on the forward
//!    path; the host's on the input path, where there is no DNAT).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use netlink_packet_core::{NLA_TYPE_MASK, NetlinkPayload, Nla, NlasIterator, Parseable};
use netlink_packet_netfilter::conntrack::{ConntrackAttribute, ProtoTuple, Tuple};
use netlink_packet_netfilter::nflog::{
    ConfigCmd, ConfigFlags, ConfigMode, ConfigNla, PacketNla, Timeout, ULogMessage,
};
use netlink_packet_netfilter::{
    NetfilterHeader, NetfilterMessage, NetfilterMessageInner, NetfilterProtoFamily,
};
use portguard_core::L4Proto;
use portguard_core::plan::{LOG_PREFIX_AUDIT, LOG_PREFIX_BLOCKED, NFLOG_SNAPLEN};

use crate::conntrack::{Conntrack, flow_of};
use crate::error::NftError;
use crate::kernel_constants::{ENOBUFS, EOPNOTSUPP, NFULA_CT};
use crate::socket::{NfSocket, split_messages};

/// Reports the kernel gathers into one datagram before sending, and how
/// long it waits for them: one read per burst instead of one per packet.
const QUEUE_THRESHOLD: u32 = 64;
const FLUSH_TIMEOUT_HUNDREDTHS: u32 = 10;
/// The kernel's buffer for one datagram of reports.
const DATAGRAM_BYTES: u32 = 32 * 1024;

/// One blocked (or, in audit mode, would-be-blocked) new connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attempt {
    pub source: IpAddr,
    /// The source port: with the rest, what tells a new connection from
    /// a retransmission of the same one.
    pub source_port: u16,
    pub proto: L4Proto,
    /// The host port, as published (before DNAT).
    pub port: u16,
    /// Reported by the audit-mode rule: it would have been blocked.
    pub audit: bool,
}

/// What one read brought.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Reports {
    pub attempts: Vec<Attempt>,
    /// Reports that were not ours or could not be read (another prefix, no
    /// TCP/UDP header, a truncated packet).
    pub unreadable: usize,
    /// The socket overflowed: the kernel dropped reports (how many it does
    /// not say).
    pub overflowed: bool,
}

/// A bound nflog group in the network namespace it was opened in.
pub struct Nflog {
    sock: NfSocket,
    /// Whether the kernel attaches conntrack data (original ports).
    pub conntrack: bool,
    /// For audit reports without conntrack data.
    lookups: Conntrack,
}

fn config(group: u16, nlas: Vec<ConfigNla>) -> NetfilterMessage {
    NetfilterMessage::new(
        NetfilterHeader::new(NetfilterProtoFamily::Unspec, 0, group),
        ULogMessage::Config(nlas),
    )
}

/// Sends one configuration message for `group`; the kernel's errno if it
/// refused it.
fn configure(
    sock: &mut NfSocket,
    group: u16,
    nlas: Vec<ConfigNla>,
) -> Result<Option<i32>, NftError> {
    let refused = sock.send_acked(vec![config(group, nlas)])?;
    Ok(refused.first().map(|(_, errno)| *errno))
}

impl Nflog {
    /// Binds `group` (only one listener per group and namespace: EBUSY if
    /// taken) with headers-only copies and conntrack data where the kernel
    /// has it.
    pub fn bind(group: u16) -> Result<Nflog, NftError> {
        let mut sock = NfSocket::open()?;
        let refused = |what: &str, errno: i32| NftError::Kernel {
            what: format!("{what} nflog group {group}"),
            errno,
        };
        if let Some(errno) = configure(&mut sock, group, vec![ConfigNla::Cmd(ConfigCmd::Bind)])? {
            return Err(refused("binding", errno));
        }
        let settings = vec![
            ConfigNla::Mode(ConfigMode::new_packet(NFLOG_SNAPLEN)),
            ConfigNla::QThresh(QUEUE_THRESHOLD),
            ConfigNla::Timeout(Timeout::new(FLUSH_TIMEOUT_HUNDREDTHS)),
            ConfigNla::NlBufSiz(DATAGRAM_BYTES),
        ];
        if let Some(errno) = configure(&mut sock, group, settings)? {
            return Err(refused("configuring", errno));
        }
        let flags = vec![ConfigNla::Flags(ConfigFlags::CONNTRACK)];
        let conntrack = match configure(&mut sock, group, flags)? {
            None => true,
            Some(EOPNOTSUPP) => false,
            Some(errno) => return Err(refused("asking for conntrack data on", errno)),
        };
        Ok(Nflog {
            sock,
            conntrack,
            lookups: Conntrack::open()?,
        })
    }

    /// Blocks until the kernel sends reports (or the socket's receive
    /// timeout passes: then nothing).
    pub fn next_reports(&mut self) -> Result<Reports, NftError> {
        let data = match self.sock.receive() {
            Ok(data) => data,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(Reports::default()),
            Err(e) if e.raw_os_error() == Some(ENOBUFS) => {
                return Ok(Reports {
                    overflowed: true,
                    ..Reports::default()
                });
            }
            Err(source) => {
                return Err(NftError::Io {
                    what: "receive nflog reports",
                    source,
                });
            }
        };
        let (messages, bad) = split_messages(&data);
        let mut reports = Reports {
            unreadable: bad,
            ..Reports::default()
        };
        for message in messages {
            let NetlinkPayload::InnerMessage(NetfilterMessage {
                inner: NetfilterMessageInner::ULog(ULogMessage::Packet(nlas)),
                ..
            }) = message.payload
            else {
                continue;
            };
            match parse_report(&nlas) {
                Some(Report::Resolved(attempt)) => reports.attempts.push(attempt),
                Some(Report::Packet(headers, audit)) => {
                    reports.attempts.push(self.resolve(headers, audit));
                }
                None => reports.unreadable += 1,
            }
        }
        Ok(reports)
    }
}

impl Nflog {
    /// The attempt of a report without conntrack data (see the module
    /// documentation for the order).
    fn resolve(&mut self, headers: Headers, audit: bool) -> Attempt {
        let attempt = |port| Attempt {
            source: headers.source,
            source_port: headers.sport,
            proto: headers.proto,
            port,
            audit,
        };
        if !audit {
            return attempt(headers.dport);
        }
        match self.lookups.by_reply(
            headers.proto.number(),
            (headers.dest, headers.dport),
            (headers.source, headers.sport),
        ) {
            Ok(Some(flow)) => attempt(flow.original_dport),
            Ok(None) => attempt(headers.dport),
            Err(e) => {
                tracing::debug!(error = %e, "conntrack lookup for an audit report failed");
                attempt(headers.dport)
            }
        }
    }
}

/// What a report says: the attempt, or only the packet's headers.
#[derive(Debug, PartialEq, Eq)]
pub enum Report {
    Resolved(Attempt),
    Packet(Headers, bool),
}

/// One report; `None` unless it carries one of our prefixes and a TCP or
/// UDP connection.
pub fn parse_report(nlas: &[PacketNla]) -> Option<Report> {
    let (mut audit, mut payload, mut ct) = (None, None, None);
    for nla in nlas {
        match nla {
            PacketNla::Prefix(prefix) => {
                audit = match prefix.to_bytes() {
                    p if p == LOG_PREFIX_BLOCKED.as_bytes() => Some(false),
                    p if p == LOG_PREFIX_AUDIT.as_bytes() => Some(true),
                    _ => None,
                }
            }
            PacketNla::Payload(bytes) => payload = Some(bytes.as_slice()),
            PacketNla::Other(nla) if nla.kind() & NLA_TYPE_MASK == NFULA_CT => {
                let mut value = vec![0; nla.value_len()];
                nla.emit_value(&mut value);
                ct = Some(value);
            }
            _ => {}
        }
    }
    let audit = audit?;
    Some(match ct.as_deref().and_then(original_flow) {
        Some((source, source_port, proto, port)) => Report::Resolved(Attempt {
            source,
            source_port,
            proto,
            port,
            audit,
        }),
        None => Report::Packet(packet_headers(payload?)?, audit),
    })
}

fn l4proto(number: u8) -> Option<L4Proto> {
    L4Proto::ALL.into_iter().find(|p| p.number() == number)
}

/// Source address and port, protocol and original destination port of
/// the conntrack entry in an `NFULA_CT` attribute.
fn original_flow(ct: &[u8]) -> Option<(IpAddr, u16, L4Proto, u16)> {
    for nla in NlasIterator::new(ct) {
        let Ok(buf) = nla else { return None };
        if let Ok(ConntrackAttribute::CtaTupleOrig(tuple)) = ConntrackAttribute::parse(&buf) {
            let flow = flow_of(&tuple)?;
            let source_port = tuple.iter().find_map(|part| match part {
                Tuple::Proto(fields) => fields.iter().find_map(|f| match f {
                    ProtoTuple::SourcePort(p) => Some(*p),
                    _ => None,
                }),
                _ => None,
            })?;
            return Some((
                flow.source,
                source_port,
                l4proto(flow.proto)?,
                flow.original_dport,
            ));
        }
    }
    None
}

/// A packet's addresses, protocol and ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Headers {
    pub source: IpAddr,
    pub dest: IpAddr,
    pub proto: L4Proto,
    pub sport: u16,
    pub dport: u16,
}

/// The headers of a TCP or UDP packet (IPv4 or IPv6 without extension
/// headers).
pub fn packet_headers(packet: &[u8]) -> Option<Headers> {
    let (source, dest, proto, transport) = match packet.first()? >> 4 {
        4 => {
            let header_len = usize::from(packet[0] & 0x0f) * 4;
            let source: [u8; 4] = packet.get(12..16)?.try_into().ok()?;
            let dest: [u8; 4] = packet.get(16..20)?.try_into().ok()?;
            (
                IpAddr::V4(Ipv4Addr::from(source)),
                IpAddr::V4(Ipv4Addr::from(dest)),
                *packet.get(9)?,
                packet.get(header_len.max(20)..)?,
            )
        }
        6 => {
            let source: [u8; 16] = packet.get(8..24)?.try_into().ok()?;
            let dest: [u8; 16] = packet.get(24..40)?.try_into().ok()?;
            (
                IpAddr::V6(Ipv6Addr::from(source)),
                IpAddr::V6(Ipv6Addr::from(dest)),
                *packet.get(6)?,
                packet.get(40..)?,
            )
        }
        _ => return None,
    };
    let port = |at: usize| {
        Some(u16::from_be_bytes([
            *transport.get(at)?,
            *transport.get(at + 1)?,
        ]))
    };
    Some(Headers {
        source,
        dest,
        proto: l4proto(proto)?,
        sport: port(0)?,
        dport: port(2)?,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use std::ffi::CString;

    fn udp_v4(source: [u8; 4], dport: u16) -> Vec<u8> {
        let mut p = vec![0x45, 0, 0, 28, 0, 0, 0, 0, 64, 17, 0, 0];
        p.extend(source);
        p.extend([10, 99, 0, 1]);
        p.extend([0x30, 0x39]);
        p.extend(dport.to_be_bytes());
        p
    }

    #[test]
    fn packet_headers_give_source_protocol_and_port() {
        assert_eq!(
            packet_headers(&udp_v4([198, 18, 0, 7], 5353)),
            Some(Headers {
                source: "198.18.0.7".parse().unwrap(),
                dest: "10.99.0.1".parse().unwrap(),
                proto: L4Proto::Udp,
                sport: 12345,
                dport: 5353
            })
        );
        let mut v6 = vec![0x60, 0, 0, 0, 0, 20, 6, 64];
        v6.extend("fd00:99::2".parse::<Ipv6Addr>().unwrap().octets());
        v6.extend("fd00:99::1".parse::<Ipv6Addr>().unwrap().octets());
        v6.extend([0x30, 0x39, 0x1f, 0x90]);
        let tcp = packet_headers(&v6).unwrap();
        assert_eq!(tcp.source, "fd00:99::2".parse::<IpAddr>().unwrap());
        assert_eq!((tcp.proto, tcp.dport), (L4Proto::Tcp, 8080));
        // ICMP, truncated headers, garbage: no attempt, no panic.
        let mut icmp = udp_v4([1, 2, 3, 4], 1);
        icmp[9] = 1;
        assert_eq!(packet_headers(&icmp), None);
        assert_eq!(packet_headers(&udp_v4([1, 2, 3, 4], 1)[..21]), None);
        assert_eq!(packet_headers(&[]), None);
        assert_eq!(packet_headers(&[0x4f; 30]), None);
    }

    #[test]
    fn conntrack_data_gives_the_original_port() {
        use netlink_packet_core::{DefaultNla, Emitable};
        use netlink_packet_netfilter::conntrack::{IPTuple, ProtoTuple, Tuple};
        // What a kernel with the conntrack glue attaches to a DNATed UDP
        // packet: the original tuple names the host port, 5353.
        let original = ConntrackAttribute::CtaTupleOrig(vec![
            Tuple::Ip(vec![
                IPTuple::SourceAddress("203.0.113.9".parse().unwrap()),
                IPTuple::DestinationAddress("10.99.0.1".parse().unwrap()),
            ]),
            Tuple::Proto(vec![
                ProtoTuple::Protocol(17.into()),
                ProtoTuple::SourcePort(40000),
                ProtoTuple::DestinationPort(5353),
            ]),
        ]);
        let mut ct = vec![0; original.buffer_len()];
        original.emit(&mut ct);
        let report = parse_report(&[
            PacketNla::Prefix(CString::new(LOG_PREFIX_BLOCKED).unwrap()),
            // The packet after DNAT: the container's port, 53.
            PacketNla::Payload(udp_v4([203, 0, 113, 9], 53)),
            PacketNla::Other(DefaultNla::new(NFULA_CT, ct)),
        ]);
        assert_eq!(
            report,
            Some(Report::Resolved(Attempt {
                source: "203.0.113.9".parse().unwrap(),
                source_port: 40000,
                proto: L4Proto::Udp,
                port: 5353,
                audit: false,
            }))
        );
    }

    #[test]
    fn only_our_prefixes_count() {
        let report = |prefix: &str| {
            parse_report(&[
                PacketNla::Prefix(CString::new(prefix).unwrap()),
                PacketNla::Payload(udp_v4([203, 0, 113, 9], 8081)),
            ])
        };
        let Some(Report::Packet(headers, false)) = report(LOG_PREFIX_BLOCKED) else {
            panic!("a blocked report");
        };
        assert_eq!(headers.dport, 8081);
        assert!(matches!(
            report(LOG_PREFIX_AUDIT),
            Some(Report::Packet(_, true))
        ));
        assert_eq!(report("somebody else: "), None);
    }
}
