//! Every TCP socket in LISTEN state in this network namespace, over
//! sock_diag (netlink): address, port, inode and the cgroup it was opened
//! in.

use std::time::Duration;

use netlink_packet_core::{
    NLM_F_DUMP, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload, Nla,
};
use netlink_packet_sock_diag::SockDiagMessage;
use netlink_packet_sock_diag::constants::{AF_INET, AF_INET6, IPPROTO_TCP};
use netlink_packet_sock_diag::inet::nlas::Nla as InetNla;
use netlink_packet_sock_diag::inet::{ExtensionFlags, InetRequest, SocketId, StateFlags};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_SOCK_DIAG};

use super::identify::Listening;

/// A kernel that does not answer a dump within this is an error.
const REPLY_TIMEOUT: Duration = Duration::from_secs(5);

/// `INET_DIAG_CGROUP_ID` (Linux 5.9+): the id of the cgroup (v2) the
/// socket was opened in, sent with every socket without being asked.
/// netlink-packet-sock-diag 0.5 does not know it; it arrives as an
/// unparsed attribute, a u64 in host byte order.
const INET_DIAG_CGROUP_ID: u16 = 21;

/// Every TCP socket in LISTEN state in this network namespace.
pub fn listening_tcp() -> std::io::Result<Vec<Listening>> {
    let mut socket = Socket::new(NETLINK_SOCK_DIAG)?;
    socket.bind_auto()?;
    socket.connect(&SocketAddr::new(0, 0))?;
    let timeout = nix::sys::time::TimeVal::new(REPLY_TIMEOUT.as_secs() as i64, 0);
    nix::sys::socket::setsockopt(&socket, nix::sys::socket::sockopt::ReceiveTimeout, &timeout)
        .map_err(std::io::Error::from)?;
    let mut out = Vec::new();
    for (family, socket_id) in [
        (AF_INET, SocketId::new_v4()),
        (AF_INET6, SocketId::new_v6()),
    ] {
        dump_family(&socket, family, socket_id, &mut out)?;
    }
    Ok(out)
}

fn dump_family(
    socket: &Socket,
    family: u8,
    socket_id: SocketId,
    out: &mut Vec<Listening>,
) -> std::io::Result<()> {
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_DUMP;
    let mut request = NetlinkMessage::new(
        header,
        SockDiagMessage::InetRequest(InetRequest {
            family,
            protocol: IPPROTO_TCP,
            extensions: ExtensionFlags::empty(),
            states: StateFlags::LISTEN,
            socket_id,
        })
        .into(),
    );
    request.finalize();
    let mut buf = vec![0; request.buffer_len()];
    request.serialize(&mut buf);
    socket.send(&buf, 0)?;
    loop {
        let (data, _) = socket.recv_from_full()?;
        let mut rest = &data[..];
        while !rest.is_empty() {
            let message = NetlinkMessage::<SockDiagMessage>::deserialize(rest)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()))?;
            let len = message.header.length as usize;
            match message.payload {
                NetlinkPayload::InnerMessage(SockDiagMessage::InetResponse(response)) => {
                    let id = &response.header.socket_id;
                    out.push(Listening {
                        addr: id.source_address,
                        port: id.source_port,
                        inode: u64::from(response.header.inode),
                        cgroup: response.nlas.iter().find_map(cgroup_id),
                    });
                }
                NetlinkPayload::Done(_) => return Ok(()),
                NetlinkPayload::Error(e) => {
                    return Err(e.code.map_or_else(std::io::Error::last_os_error, |code| {
                        std::io::Error::from_raw_os_error(-code.get())
                    }));
                }
                _ => {}
            }
            // Messages are 4-byte aligned; a zero length would loop forever.
            let advance = (len + 3) & !3;
            if len == 0 || advance > rest.len() {
                break;
            }
            rest = &rest[advance..];
        }
    }
}

/// The cgroup id in an `INET_DIAG_CGROUP_ID` attribute.
fn cgroup_id(nla: &InetNla) -> Option<u64> {
    let InetNla::Other(attr) = nla else {
        return None;
    };
    if attr.kind() != INET_DIAG_CGROUP_ID || attr.value_len() != 8 {
        return None;
    }
    let mut value = [0u8; 8];
    attr.emit_value(&mut value);
    Some(u64::from_ne_bytes(value))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::collections::HashSet;
    use std::os::unix::fs::MetadataExt;

    use super::super::procfs::{cgroup2_mounts, socket_inode, unified_cgroup};
    use super::*;

    /// The real kernel: a listener this test opens is found with its
    /// inode and with this process's cgroup (the inode of its directory).
    #[test]
    fn sock_diag_lists_a_listening_socket_with_its_inode_and_cgroup() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let own: HashSet<u64> = std::fs::read_dir("/proc/self/fd")
            .unwrap()
            .flatten()
            .filter_map(|fd| std::fs::read_link(fd.path()).ok())
            .filter_map(|t| t.to_str().and_then(socket_inode))
            .collect();
        let found = listening_tcp().unwrap();
        let ours = found.iter().find(|l| l.port == port).unwrap();
        assert!(own.contains(&ours.inode), "{ours:?} not among {own:?}");

        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let cgroup = std::fs::read_to_string("/proc/self/cgroup").unwrap();
        if let (Some((_, point)), Some(path)) =
            (cgroup2_mounts(&mountinfo).first(), unified_cgroup(&cgroup))
        {
            let dir = point.join(path.trim_start_matches('/'));
            let ino = std::fs::metadata(dir).unwrap().ino();
            assert_eq!(ours.cgroup, Some(ino), "{ours:?}");
        }
    }
}
