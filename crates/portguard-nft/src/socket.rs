//! A blocking nfnetlink socket: batches with per-message acknowledgements,
//! dumps, and single requests.

use std::time::Duration;

use netlink_packet_core::{
    NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_netfilter::nftables::NfTablesMessage;
use netlink_packet_netfilter::none::ControlMessage;
use netlink_packet_netfilter::{NetfilterHeader, NetfilterMessage, NetfilterProtoFamily};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_NETFILTER};

use nix::sys::socket::{setsockopt, sockopt};

use crate::error::NftError;

/// `NFNL_SUBSYS_NFTABLES`: batches address the nftables subsystem.
const NFNL_SUBSYS_NFTABLES: u16 = 10;
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
        const NFNLGRP_NFTABLES: u32 = 7;
        let socket = bound_socket()?;
        if let Some(bytes) = receive_buffer {
            let _ = setsockopt(&socket, sockopt::RcvBufForce, &bytes);
        }
        socket
            .add_membership(NFNLGRP_NFTABLES)
            .map_err(NftError::io("join the nftables multicast group"))?;
        Ok(socket)
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

    /// Sends `items` as one transaction and waits for every acknowledgement.
    /// The kernel commits all of them or none.
    pub(crate) fn send_batch(&mut self, items: Vec<BatchItem>) -> Result<(), NftError> {
        let mut buf = Vec::with_capacity(items.len() * 128);
        let control = |inner: ControlMessage| {
            NetfilterMessage::new(
                NetfilterHeader::new(NetfilterProtoFamily::Unspec, 0, NFNL_SUBSYS_NFTABLES),
                inner,
            )
        };
        let begin_seq = self.next_seq();
        Self::encode(
            begin_seq,
            NLM_F_REQUEST,
            control(ControlMessage::BatchBegin),
            &mut buf,
        );
        let first = self.seq.wrapping_add(1);
        let mut whats = Vec::with_capacity(items.len());
        for item in items {
            let seq = self.next_seq();
            let message =
                NetfilterMessage::new(NetfilterHeader::new(item.family, 0, 0), item.message);
            Self::encode(
                seq,
                NLM_F_REQUEST | NLM_F_ACK | item.flags,
                message,
                &mut buf,
            );
            whats.push(item.what);
        }
        let end_seq = self.next_seq();
        Self::encode(
            end_seq,
            NLM_F_REQUEST,
            control(ControlMessage::BatchEnd),
            &mut buf,
        );
        self.send_all(&buf)?;

        // Every inner message answers with an ack or an error.
        let mut pending = whats.len();
        let mut first_error: Option<NftError> = None;
        while pending > 0 {
            for msg in self.recv_messages()? {
                let seq = msg.header.sequence_number;
                if seq.wrapping_sub(first) as usize >= whats.len() {
                    if let NetlinkPayload::Error(e) = &msg.payload
                        && let Some(code) = e.code
                        && (seq == begin_seq || seq == end_seq)
                    {
                        return Err(NftError::Kernel {
                            what: "the batch".into(),
                            errno: -code.get(),
                        });
                    }
                    continue;
                }
                if let NetlinkPayload::Error(e) = &msg.payload {
                    pending -= 1;
                    if let Some(code) = e.code
                        && first_error.is_none()
                    {
                        let index = seq.wrapping_sub(first) as usize;
                        first_error = Some(NftError::Kernel {
                            what: whats[index].clone(),
                            errno: -code.get(),
                        });
                    }
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn send_all(&self, buf: &[u8]) -> Result<(), NftError> {
        let sent = self
            .socket
            .send(buf, 0)
            .map_err(NftError::io("send to netlink"))?;
        if sent != buf.len() {
            return Err(NftError::Protocol(format!(
                "short netlink send: {sent} of {} bytes",
                buf.len()
            )));
        }
        Ok(())
    }

    /// Receives one datagram and splits it into messages. Messages the
    /// library cannot decode are skipped (they belong to programs whose
    /// expressions we do not know and cannot be ours).
    pub(crate) fn recv_messages(&self) -> Result<Vec<Message>, NftError> {
        let (data, _) = self
            .socket
            .recv_from_full()
            .map_err(NftError::io("receive from netlink"))?;
        Ok(split_messages(&data).0)
    }

    /// A dump request for `message`; returns the decoded replies and how many
    /// replies could not be decoded.
    pub(crate) fn dump(
        &mut self,
        family: NetfilterProtoFamily,
        message: NfTablesMessage,
    ) -> Result<(Vec<NfTablesMessage>, usize), NftError> {
        let seq = self.next_seq();
        let mut buf = Vec::new();
        let msg = NetfilterMessage::new(NetfilterHeader::new(family, 0, 0), message);
        Self::encode(seq, NLM_F_REQUEST | NLM_F_DUMP, msg, &mut buf);
        self.send_all(&buf)?;
        let mut out = Vec::new();
        let mut undecodable = 0;
        loop {
            let (data, _) = self
                .socket
                .recv_from_full()
                .map_err(NftError::io("receive from netlink"))?;
            let (messages, bad) = split_messages(&data);
            undecodable += bad;
            for msg in messages {
                if msg.header.sequence_number != seq {
                    continue;
                }
                match msg.payload {
                    NetlinkPayload::Done(_) => return Ok((out, undecodable)),
                    NetlinkPayload::Error(e) => {
                        return match e.code {
                            Some(code) => Err(NftError::Kernel {
                                what: "dump".into(),
                                errno: -code.get(),
                            }),
                            None => Ok((out, undecodable)),
                        };
                    }
                    NetlinkPayload::InnerMessage(NetfilterMessage {
                        inner: netlink_packet_netfilter::NetfilterMessageInner::NfTables(m),
                        ..
                    }) => out.push(m),
                    _ => {}
                }
            }
        }
    }

    /// Like [`NfSocket::dump`], but returns each reply's payload after the
    /// nfgenmsg header, undecoded: for large dumps (set elements) that are
    /// cheaper to walk by hand than to decode into library types.
    pub(crate) fn dump_raw(
        &mut self,
        family: NetfilterProtoFamily,
        message: NfTablesMessage,
    ) -> Result<Vec<Vec<u8>>, NftError> {
        self.dump_raw_message(NetfilterMessage::new(
            NetfilterHeader::new(family, 0, 0),
            message,
        ))
    }

    /// A dump of any nfnetlink subsystem (conntrack too); payloads after
    /// the nfgenmsg header.
    pub(crate) fn dump_raw_message(
        &mut self,
        msg: NetfilterMessage,
    ) -> Result<Vec<Vec<u8>>, NftError> {
        const NLMSG_HDRLEN: usize = 16;
        const NFGENMSG_LEN: usize = 4;
        const NLMSG_ERROR: u16 = 2;
        const NLMSG_DONE: u16 = 3;
        let seq = self.next_seq();
        let mut buf = Vec::new();
        Self::encode(seq, NLM_F_REQUEST | NLM_F_DUMP, msg, &mut buf);
        self.send_all(&buf)?;
        let mut out = Vec::new();
        loop {
            let (data, _) = self
                .socket
                .recv_from_full()
                .map_err(NftError::io("receive from netlink"))?;
            let mut rest = data.as_slice();
            while rest.len() >= NLMSG_HDRLEN {
                let len = u32::from_ne_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
                if len < NLMSG_HDRLEN || len > rest.len() {
                    return Err(NftError::Protocol(
                        "truncated netlink message in a dump".into(),
                    ));
                }
                let kind = u16::from_ne_bytes([rest[4], rest[5]]);
                let msg_seq = u32::from_ne_bytes([rest[8], rest[9], rest[10], rest[11]]);
                let body = &rest[NLMSG_HDRLEN..len];
                rest = &rest[((len + 3) & !3).min(rest.len())..];
                if msg_seq != seq {
                    continue;
                }
                match kind {
                    NLMSG_DONE => return Ok(out),
                    NLMSG_ERROR => {
                        let code = body
                            .get(..4)
                            .map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
                            .unwrap_or(0);
                        if code != 0 {
                            return Err(NftError::Kernel {
                                what: "dump".into(),
                                errno: -code,
                            });
                        }
                        return Ok(out);
                    }
                    _ if body.len() >= NFGENMSG_LEN => out.push(body[NFGENMSG_LEN..].to_vec()),
                    _ => {}
                }
            }
        }
    }

    /// Sends `messages` (each acknowledged) in one write and returns the
    /// errno of each that failed, by index.
    pub(crate) fn send_acked(
        &mut self,
        messages: Vec<NetfilterMessage>,
    ) -> Result<Vec<(usize, i32)>, NftError> {
        if messages.is_empty() {
            return Ok(Vec::new());
        }
        let mut buf = Vec::new();
        let first = self.seq.wrapping_add(1);
        let count = messages.len();
        for message in messages {
            let seq = self.next_seq();
            Self::encode(seq, NLM_F_REQUEST | NLM_F_ACK, message, &mut buf);
        }
        self.send_all(&buf)?;
        let mut pending = count;
        let mut failed = Vec::new();
        while pending > 0 {
            for msg in self.recv_messages()? {
                let index = msg.header.sequence_number.wrapping_sub(first) as usize;
                if index >= count {
                    continue;
                }
                if let NetlinkPayload::Error(e) = &msg.payload {
                    pending -= 1;
                    if let Some(code) = e.code {
                        failed.push((index, -code.get()));
                    }
                }
            }
        }
        Ok(failed)
    }

    /// A single request answered by one message (e.g. GETGEN, GETCHAIN).
    pub(crate) fn request(
        &mut self,
        family: NetfilterProtoFamily,
        message: NfTablesMessage,
    ) -> Result<Option<NfTablesMessage>, NftError> {
        let seq = self.next_seq();
        let mut buf = Vec::new();
        let msg = NetfilterMessage::new(NetfilterHeader::new(family, 0, 0), message);
        Self::encode(seq, NLM_F_REQUEST | NLM_F_ACK, msg, &mut buf);
        self.send_all(&buf)?;
        let mut reply = None;
        loop {
            for msg in self.recv_messages()? {
                if msg.header.sequence_number != seq {
                    continue;
                }
                match msg.payload {
                    NetlinkPayload::Error(e) => {
                        return match e.code {
                            Some(code) if -code.get() == libc_enoent() => Ok(None),
                            Some(code) => Err(NftError::Kernel {
                                what: "request".into(),
                                errno: -code.get(),
                            }),
                            None => Ok(reply),
                        };
                    }
                    NetlinkPayload::InnerMessage(NetfilterMessage {
                        inner: netlink_packet_netfilter::NetfilterMessageInner::NfTables(m),
                        ..
                    }) => reply = Some(m),
                    _ => {}
                }
            }
        }
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

fn libc_enoent() -> i32 {
    nix::errno::Errno::ENOENT as i32
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
