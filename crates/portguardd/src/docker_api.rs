//! Finds an exposed Docker API: TCP sockets in LISTEN state (sock_diag over
//! netlink, in the daemon's network namespace) whose inode one of dockerd's
//! file descriptors points at (`/proc/PID/fd/N -> socket:[INODE]`).
//!
//! The scan runs on a thread of its own, every [`RESCAN_INTERVAL`] and
//! whenever the loop pokes it: Docker reconnected (dockerd may have
//! restarted with other `-H` flags), or somebody changed netfilter (a
//! starting dockerd opens its listeners, then writes its rules, seconds
//! before it answers on its socket). The loop never waits for it. It
//! reports only when what it found changed.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use netlink_packet_core::{
    NLM_F_DUMP, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_sock_diag::SockDiagMessage;
use netlink_packet_sock_diag::constants::{AF_INET, AF_INET6, IPPROTO_TCP};
use netlink_packet_sock_diag::inet::{ExtensionFlags, InetRequest, SocketId, StateFlags};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_SOCK_DIAG};
use portguard_core::DockerApiListener;

use crate::triggers::Poke;

/// How often dockerd's listeners are looked at without being asked.
pub const RESCAN_INTERVAL: Duration = Duration::from_secs(30);
/// Least time between two looks: a storm of netfilter changes (each one a
/// poke) costs at most one look (about 2 ms) per this.
const MIN_GAP: Duration = Duration::from_millis(100);
/// A kernel that does not answer a dump within this is an error.
const REPLY_TIMEOUT: Duration = Duration::from_secs(5);
/// The process name dockerd runs under (`/proc/PID/comm`).
const DOCKERD_COMM: &str = "dockerd";

/// A listening TCP socket: where it is bound and its inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listening {
    pub addr: IpAddr,
    pub port: u16,
    pub inode: u64,
}

/// The Docker API listeners: the listening sockets whose inode belongs to
/// one of `owners` (pid -> the socket inodes it holds). Pure, for tests.
pub fn match_owners(
    listening: &[Listening],
    owners: &HashMap<u32, HashSet<u64>>,
) -> Vec<DockerApiListener> {
    let found: BTreeSet<DockerApiListener> = listening
        .iter()
        .filter_map(|l| {
            owners
                .iter()
                .find(|(_, inodes)| inodes.contains(&l.inode))
                .map(|(&pid, _)| DockerApiListener {
                    addr: l.addr,
                    port: l.port,
                    pid,
                })
        })
        .collect();
    found.into_iter().collect()
}

/// The inode of a `/proc/PID/fd/N` link target such as `socket:[12345]`.
pub fn socket_inode(link: &str) -> Option<u64> {
    link.strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

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

/// dockerd's processes and the socket inodes each holds, from `proc`
/// (`/proc`). Processes that vanish meanwhile are skipped.
pub fn dockerd_sockets(proc: &Path) -> std::io::Result<HashMap<u32, HashSet<u64>>> {
    let mut owners = HashMap::new();
    for entry in std::fs::read_dir(proc)?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let is_dockerd = std::fs::read_to_string(entry.path().join("comm"))
            .is_ok_and(|comm| comm.trim_end() == DOCKERD_COMM);
        if !is_dockerd {
            continue;
        }
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        let inodes: HashSet<u64> = fds
            .flatten()
            .filter_map(|fd| std::fs::read_link(fd.path()).ok())
            .filter_map(|target| target.to_str().and_then(socket_inode))
            .collect();
        owners.insert(pid, inodes);
    }
    Ok(owners)
}

/// One look: the Docker API listeners in this network namespace.
pub fn scan() -> std::io::Result<Vec<DockerApiListener>> {
    let listening = listening_tcp()?;
    if listening.is_empty() {
        return Ok(Vec::new());
    }
    Ok(match_owners(
        &listening,
        &dockerd_sockets(Path::new("/proc"))?,
    ))
}

/// Starts the scanner; `report` gets each changed result (false: stop).
/// Returns the poke: a non-blocking request to look again now.
pub fn spawn(
    report: impl Fn(Vec<DockerApiListener>) -> bool + Send + 'static,
) -> std::io::Result<Poke> {
    crate::triggers::spawn_rescanner(
        "docker-api-scan",
        "look for an exposed Docker API (sock_diag)",
        MIN_GAP,
        RESCAN_INTERVAL,
        scan,
        // The scanner keeps its own copy to compare with; a few listeners.
        move |found| report(Arc::unwrap_or_clone(found)),
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn socket_links_name_their_inode() {
        assert_eq!(socket_inode("socket:[4026]"), Some(4026));
        assert_eq!(socket_inode("pipe:[4026]"), None);
        assert_eq!(socket_inode("/dev/null"), None);
        assert_eq!(socket_inode("socket:[x]"), None);
    }

    #[test]
    fn only_sockets_dockerd_holds_are_the_docker_api() {
        let any4: IpAddr = "0.0.0.0".parse().unwrap();
        let listening = [
            Listening {
                addr: any4,
                port: 2375,
                inode: 10,
            },
            // sshd's, not dockerd's.
            Listening {
                addr: any4,
                port: 22,
                inode: 11,
            },
        ];
        let owners = HashMap::from([(77, HashSet::from([9, 10]))]);
        assert_eq!(
            match_owners(&listening, &owners),
            vec![DockerApiListener {
                addr: any4,
                port: 2375,
                pid: 77
            }]
        );
        assert!(match_owners(&listening, &HashMap::new()).is_empty());
    }

    /// The real kernel: a listener this test opens is found with its inode.
    #[test]
    fn sock_diag_lists_a_listening_socket_with_its_inode() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let own = dockerd_sockets_of_self();
        let found = listening_tcp().unwrap();
        let ours = found.iter().find(|l| l.port == port).unwrap();
        assert!(own.contains(&ours.inode), "{ours:?} not among {own:?}");
    }

    fn dockerd_sockets_of_self() -> HashSet<u64> {
        std::fs::read_dir("/proc/self/fd")
            .unwrap()
            .flatten()
            .filter_map(|fd| std::fs::read_link(fd.path()).ok())
            .filter_map(|t| t.to_str().and_then(socket_inode))
            .collect()
    }
}
