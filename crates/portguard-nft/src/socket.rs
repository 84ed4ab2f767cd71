//! A blocking nfnetlink socket: batches with per-message acknowledgements,
//! dumps, and single requests.

use std::time::Duration;

use netlink_packet_core::{
    NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST, NLMSG_DONE, NLMSG_ERROR, NetlinkHeader, NetlinkMessage,
    NetlinkPayload,
};
use netlink_packet_netfilter::conntrack::ConntrackMessage;
use netlink_packet_netfilter::nftables::NfTablesMessage;
use netlink_packet_netfilter::none::ControlMessage;
use netlink_packet_netfilter::{NetfilterHeader, NetfilterMessage, NetfilterProtoFamily};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_NETFILTER};

use nix::sys::socket::{setsockopt, sockopt};

use crate::error::NftError;
use crate::kernel_constants::{
    ENOENT, NFGENMSG_LEN, NFNL_SUBSYS_NFTABLES, NFNLGRP_NFTABLES, NLM_F_DUMP_INTR, NLMSG_HDRLEN,
};

/// Room for large batches (10,000 allow entries are a few MiB).
const SEND_BUFFER: usize = 32 << 20;
const RECV_BUFFER: usize = 8 << 20;
/// A kernel that does not answer within this is treated as an error.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// One message of a batch, and what to call it in an error.
pub(crate) struct BatchItem {
    pub family: NetfilterProtoFamily,
    pub flags: u16,
    pub message: NfTablesMessage,
    pub what: String,
}

pub(crate) struct NfSocket {
    socket: Socket,
    seq: u32,
}

pub(crate) type Message = NetlinkMessage<NetfilterMessage>;

impl NfSocket {
    pub(crate) fn open() -> Result<Self, NftError> {
        let socket = bound_socket()?;
        // Best effort: room for large batches (FORCE needs CAP_NET_ADMIN).
        let _ = setsockopt(&socket, sockopt::SndBufForce, &SEND_BUFFER);
        let timeout = nix::sys::time::TimeVal::new(REPLY_TIMEOUT.as_secs() as i64, 0);
        let _ = setsockopt(&socket, sockopt::ReceiveTimeout, &timeout);
        // Extended acks carry the kernel's own words on errors.
        let _ = socket.set_ext_ack(true);
        Ok(NfSocket {
            socket,
            seq: initial_seq(),
        })
    }

    /// A socket that receives every nf_tables change notification
    /// (`NFNLGRP_NFTABLES`), blocking without a timeout.
    pub(crate) fn open_monitor(receive_buffer: Option<usize>) -> Result<Socket, NftError> {
        let socket = bound_socket()?;
        if let Some(bytes) = receive_buffer {
            let _ = setsockopt(&socket, sockopt::RcvBufForce, &bytes);
        }
        socket
            .add_membership(NFNLGRP_NFTABLES)
            .map_err(NftError::io("join the nftables multicast group"))?;
        Ok(socket)
    }

    /// The next datagram the kernel sends unasked (nflog reports, say),
    /// bounded by the receive timeout (then `WouldBlock`).
    pub(crate) fn receive(&mut self) -> std::io::Result<Vec<u8>> {
        self.socket.recv_from_full().map(|(data, _)| data)
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    fn encode(seq: u32, flags: u16, message: NetfilterMessage, out: &mut Vec<u8>) {
        let mut header = NetlinkHeader::default();
        header.flags = flags;
        header.sequence_number = seq;
        let mut msg = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(message));
        msg.finalize();
        let start = out.len();
        out.resize(start + msg.buffer_len(), 0);
        msg.serialize(&mut out[start..]);
    }

    /// The one place that talks to the kernel: sends `requests` in one
    /// write, each with its own sequence number, and receives until every
    /// request that expects an answer has its acknowledgement, error or
    /// end of dump. Replies to other sequence numbers (a late answer to an
    /// earlier, failed exchange) are skipped. Bounded by the socket's
    /// receive timeout.
    pub(crate) fn transact(&mut self, requests: Vec<Outgoing>) -> Result<Vec<Answer>, NftError> {
        let first = self.seq.wrapping_add(1);
        let mut buf = Vec::with_capacity(requests.len() * 128);
        let mut expects = Vec::with_capacity(requests.len());
        for request in requests {
            let seq = self.next_seq();
            let flags = NLM_F_REQUEST
                | request.flags
                | match request.expect {
                    Expect::Ack => NLM_F_ACK,
                    Expect::Dump => NLM_F_DUMP,
                    Expect::ErrorsOnly => 0,
                };
            Self::encode(seq, flags, request.message, &mut buf);
            expects.push(request.expect);
        }
        let sent = self
            .socket
            .send(&buf, 0)
            .map_err(NftError::io("send to netlink"))?;
        if sent != buf.len() {
            return Err(NftError::Protocol(format!(
                "short netlink send: {sent} of {} bytes",
                buf.len()
            )));
        }
        let mut answers: Vec<Answer> = expects.iter().map(|_| Answer::default()).collect();
        let mut open = expects
            .iter()
            .filter(|e| !matches!(e, Expect::ErrorsOnly))
            .count();
        while open > 0 {
            let (data, _) = self.socket.recv_from_full().map_err(|e| {
                if e.kind() == std::io::ErrorKind::WouldBlock {
                    NftError::Protocol(format!(
                        "the kernel did not answer within {} s",
                        REPLY_TIMEOUT.as_secs()
                    ))
                } else {
                    NftError::Io {
                        what: "receive from netlink",
                        source: e,
                    }
                }
            })?;
            for raw in raw_messages(&data)? {
                let index = raw.seq.wrapping_sub(first) as usize;
                let (Some(expect), Some(answer)) = (expects.get(index), answers.get_mut(index))
                else {
                    continue;
                };
                if answer.done {
                    continue;
                }
                match raw.kind {
                    NLMSG_ERROR => {
                        let code = raw
                            .body
                            .get(..4)
                            .map_or(0, |b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]));
                        if code != 0 {
                            answer.errno = Some(-code);
                        }
                        if matches!(expect, Expect::ErrorsOnly) {
                            // Only a failure answers these: the batch is off.
                            return Err(NftError::Kernel {
                                what: "the batch".into(),
                                errno: -code,
                            });
                        }
                        answer.done = true;
                        open -= 1;
                    }
                    NLMSG_DONE => {
                        answer.done = true;
                        open -= 1;
                    }
                    _ => {
                        answer.interrupted |= raw.flags & NLM_F_DUMP_INTR != 0;
                        answer.replies.push(data[raw.range].to_vec());
                    }
                }
            }
        }
        Ok(answers)
    }

    /// Sends `items` as one transaction and waits for every acknowledgement.
    /// The kernel commits all of them or none; the first refusal is
    /// reported by the name of the item that caused it.
    pub(crate) fn send_batch(&mut self, items: Vec<BatchItem>) -> Result<(), NftError> {
        let control = |inner: ControlMessage| Outgoing {
            message: NetfilterMessage::new(
                NetfilterHeader::new(NetfilterProtoFamily::Unspec, 0, NFNL_SUBSYS_NFTABLES),
                inner,
            ),
            flags: 0,
            expect: Expect::ErrorsOnly,
        };
        let mut requests = Vec::with_capacity(items.len() + 2);
        let mut whats = Vec::with_capacity(items.len());
        requests.push(control(ControlMessage::BatchBegin));
        for item in items {
            requests.push(Outgoing {
                message: NetfilterMessage::new(
                    NetfilterHeader::new(item.family, 0, 0),
                    item.message,
                ),
                flags: item.flags,
                expect: Expect::Ack,
            });
            whats.push(item.what);
        }
        requests.push(control(ControlMessage::BatchEnd));
        let answers = self.transact(requests)?;
        for (answer, what) in answers.iter().skip(1).zip(whats) {
            if let Some(errno) = answer.errno {
                return Err(NftError::Kernel { what, errno });
            }
        }
        Ok(())
    }

    /// A dump request for `message` (of any nfnetlink subsystem); the
    /// replies as raw netlink messages. Fails with `Interrupted` when the
    /// ruleset changed while the kernel was dumping.
    pub(crate) fn dump(&mut self, message: NetfilterMessage) -> Result<Vec<Vec<u8>>, NftError> {
        match self.dump_even_interrupted(message)? {
            (_, true) => Err(NftError::Interrupted),
            (replies, false) => Ok(replies),
        }
    }

    /// A dump request: the replies, and whether the dump was interrupted
    /// (`NLM_F_DUMP_INTR`: somebody committed while the kernel dumped, so
    /// where what it walks moved, a reply may be missing or repeated).
    pub(crate) fn dump_even_interrupted(
        &mut self,
        message: NetfilterMessage,
    ) -> Result<(Vec<Vec<u8>>, bool), NftError> {
        let mut answers = self.transact(vec![Outgoing {
            message,
            flags: 0,
            expect: Expect::Dump,
        }])?;
        let answer = answers.pop().unwrap_or_default();
        if let Some(errno) = answer.errno {
            return Err(NftError::Kernel {
                what: "dump".into(),
                errno,
            });
        }
        Ok((answer.replies, answer.interrupted))
    }

    /// A dump of nf_tables objects of `family`.
    pub(crate) fn dump_nft(
        &mut self,
        family: NetfilterProtoFamily,
        message: NfTablesMessage,
    ) -> Result<Vec<Vec<u8>>, NftError> {
        self.dump(nft_message(family, message))
    }

    /// [`NfSocket::dump_nft`] that keeps what an interrupted dump returned.
    pub(crate) fn dump_nft_even_interrupted(
        &mut self,
        family: NetfilterProtoFamily,
        message: NfTablesMessage,
    ) -> Result<(Vec<Vec<u8>>, bool), NftError> {
        self.dump_even_interrupted(nft_message(family, message))
    }

    /// Sends `messages`, each acknowledged, in one write and returns the
    /// errno of each that failed, by index.
    pub(crate) fn send_acked(
        &mut self,
        messages: Vec<NetfilterMessage>,
    ) -> Result<Vec<(usize, i32)>, NftError> {
        if messages.is_empty() {
            return Ok(Vec::new());
        }
        let requests = messages
            .into_iter()
            .map(|message| Outgoing {
                message,
                flags: 0,
                expect: Expect::Ack,
            })
            .collect();
        Ok(self
            .transact(requests)?
            .iter()
            .enumerate()
            .filter_map(|(i, a)| a.errno.map(|e| (i, e)))
            .collect())
    }

    /// A single request answered by one message (e.g. GETGEN, GETCHAIN);
    /// `None` when the object does not exist.
    pub(crate) fn request(
        &mut self,
        family: NetfilterProtoFamily,
        message: NfTablesMessage,
    ) -> Result<Option<NfTablesMessage>, NftError> {
        let mut answers = self.transact(vec![Outgoing {
            message: NetfilterMessage::new(NetfilterHeader::new(family, 0, 0), message),
            flags: 0,
            expect: Expect::Ack,
        }])?;
        let answer = answers.pop().unwrap_or_default();
        match answer.errno {
            Some(errno) if errno == ENOENT => return Ok(None),
            Some(errno) => {
                return Err(NftError::Kernel {
                    what: "request".into(),
                    errno,
                });
            }
            None => {}
        }
        Ok(answer.replies.iter().rev().find_map(|raw| decode_nft(raw)))
    }
}

fn nft_message(family: NetfilterProtoFamily, message: NfTablesMessage) -> NetfilterMessage {
    NetfilterMessage::new(NetfilterHeader::new(family, 0, 0), message)
}

/// How a request is answered.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Expect {
    /// An acknowledgement or an error (NLM_F_ACK), after any replies.
    Ack,
    /// Replies, then NLMSG_DONE (NLM_F_DUMP).
    Dump,
    /// Nothing unless it fails (batch begin and end).
    ErrorsOnly,
}

pub(crate) struct Outgoing {
    pub message: NetfilterMessage,
    /// Flags besides REQUEST, ACK and DUMP (CREATE, APPEND, ...).
    pub flags: u16,
    pub expect: Expect,
}

/// What the kernel answered to one request.
#[derive(Debug, Default)]
pub(crate) struct Answer {
    pub errno: Option<i32>,
    /// Raw netlink messages (header included).
    pub replies: Vec<Vec<u8>>,
    /// A dump reply carried NLM_F_DUMP_INTR.
    pub interrupted: bool,
    done: bool,
}

pub(crate) struct RawMessage {
    pub kind: u16,
    flags: u16,
    seq: u32,
    /// After the netlink header.
    pub body: Vec<u8>,
    range: std::ops::Range<usize>,
}

/// The messages of one datagram, by their headers only.
pub(crate) fn raw_messages(data: &[u8]) -> Result<Vec<RawMessage>, NftError> {
    let mut out = Vec::new();
    let mut at = 0;
    while data.len() - at >= NLMSG_HDRLEN {
        let rest = &data[at..];
        let len = u32::from_ne_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        if len < NLMSG_HDRLEN || len > rest.len() {
            return Err(NftError::Protocol("truncated netlink message".into()));
        }
        out.push(RawMessage {
            kind: u16::from_ne_bytes([rest[4], rest[5]]),
            flags: u16::from_ne_bytes([rest[6], rest[7]]),
            seq: u32::from_ne_bytes([rest[8], rest[9], rest[10], rest[11]]),
            body: rest[NLMSG_HDRLEN..len].to_vec(),
            range: at..at + len,
        });
        // Messages are 4-byte aligned.
        at = (at + ((len + 3) & !3)).min(data.len());
    }
    Ok(out)
}

/// A raw reply's attributes, after the netlink and nfgenmsg headers.
pub(crate) fn payload(raw: &[u8]) -> &[u8] {
    raw.get(NLMSG_HDRLEN + NFGENMSG_LEN..).unwrap_or(&[])
}

/// A raw reply decoded by the library, if it can.
pub(crate) fn decode_nft(raw: &[u8]) -> Option<NfTablesMessage> {
    match Message::deserialize(raw).ok()?.payload {
        NetlinkPayload::InnerMessage(NetfilterMessage {
            inner: netlink_packet_netfilter::NetfilterMessageInner::NfTables(m),
            ..
        }) => Some(m),
        _ => None,
    }
}

/// A raw conntrack reply decoded by the library, if it can.
pub(crate) fn decode_conntrack(raw: &[u8]) -> Option<ConntrackMessage> {
    match Message::deserialize(raw).ok()?.payload {
        NetlinkPayload::InnerMessage(NetfilterMessage {
            inner: netlink_packet_netfilter::NetfilterMessageInner::Conntrack(m),
            ..
        }) => Some(m),
        _ => None,
    }
}

/// A netfilter netlink socket bound to a kernel-chosen port, with a large
/// receive buffer (dumps and notification bursts).
fn bound_socket() -> Result<Socket, NftError> {
    let mut socket = Socket::new(NETLINK_NETFILTER).map_err(NftError::io("open netlink socket"))?;
    socket
        .bind(&SocketAddr::new(0, 0))
        .map_err(NftError::io("bind netlink socket"))?;
    let _ = setsockopt(&socket, sockopt::RcvBufForce, &RECV_BUFFER);
    Ok(socket)
}

/// Splits a datagram into decoded messages; counts the undecodable ones.
pub(crate) fn split_messages(mut data: &[u8]) -> (Vec<Message>, usize) {
    let mut out = Vec::new();
    let mut bad = 0;
    while data.len() >= 16 {
        let len = u32::from_ne_bytes([data[0], data[1], data[2], data[3]]) as usize;
        if len < 16 || len > data.len() {
            bad += 1;
            break;
        }
        match Message::deserialize(&data[..len]) {
            Ok(msg) => out.push(msg),
            Err(_) => bad += 1,
        }
        // Messages are 4-byte aligned.
        let advance = (len + 3) & !3;
        data = &data[advance.min(data.len())..];
    }
    (out, bad)
}

fn initial_seq() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(1)
}

/// Whether `pid` (as NEWGEN reports it: a thread id) is a thread of ours.
pub(crate) fn is_own_thread(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/self/task/{pid}")).exists()
}
