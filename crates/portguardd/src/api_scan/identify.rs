//! Which listening sockets are dockerd's: pure, from what the kernel says
//! of each socket and what `/proc` and the cgroup file system say of
//! dockerd.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::net::IpAddr;

use portguard_core::DockerApiListener;
use portguard_core::docker_api::DockerApiScan;

/// A listening TCP socket: where it is bound, its inode, and the cgroup
/// (v2) of the process that opened it (`None` before Linux 5.9).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listening {
    pub addr: IpAddr,
    pub port: u16,
    pub inode: u64,
    pub cgroup: Option<u64>,
}

/// What could be learnt of one dockerd process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dockerd {
    pub pid: u32,
    /// The socket inodes among its open files (`/proc/PID/fd`), or why
    /// they could not be read (without CAP_SYS_PTRACE over dockerd:
    /// permission denied).
    pub sockets: Result<HashSet<u64>, String>,
    /// Its cgroup and what runs there; read only when `sockets` could not
    /// be, else `None`.
    pub cgroup: Option<Result<Cgroup, String>>,
}

/// A cgroup (v2) and the processes in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cgroup {
    /// The inode of its directory, which is what sock_diag reports.
    pub id: u64,
    /// Its path in the hierarchy, for messages.
    pub path: String,
    pub members: Vec<Member>,
}

/// A process in dockerd's cgroup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub pid: u32,
    /// `/proc/PID/comm`; `None` when `/proc` does not show the process.
    pub comm: Option<String>,
    pub ppid: Option<u32>,
    /// For a docker-proxy: the TCP address and port it serves
    /// (`-host-ip`, `-host-port`), the listener of a published port.
    pub proxies: Option<(IpAddr, u16)>,
}

/// Programs Docker runs in dockerd's cgroup, beside dockerd itself
/// (`comm` is cut to 15 bytes: `containerd-shim-runc-v2` is
/// `containerd-shim`).
const DOCKER_HELPERS: [&str; 5] = [
    "dockerd",
    "docker-proxy",
    "containerd",
    "runc",
    "docker-init",
];

fn is_docker_helper(comm: &str) -> bool {
    DOCKER_HELPERS.contains(&comm) || comm.starts_with("containerd-shim")
}

/// The outcome of one look.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identified {
    pub listeners: Vec<DockerApiListener>,
    pub scan: DockerApiScan,
}

impl Identified {
    /// False when some dockerd could not be looked into: its listeners
    /// found earlier must then stay (a blind look proves nothing).
    pub fn complete(&self) -> bool {
        !matches!(self.scan, DockerApiScan::Blind { .. })
    }
}

/// The Docker API listeners among `listening`. `proxied`: the socket
/// inodes docker-proxy processes hold (where their open files are
/// readable). `hidden`: `/proc` hides other users' or more privileged
/// processes (its `hidepid=` value), so seeing no dockerd proves nothing.
pub fn identify(
    listening: &[Listening],
    dockerds: &[Dockerd],
    proxied: &HashSet<u64>,
    hidden: Option<&str>,
) -> Identified {
    if dockerds.is_empty() {
        let scan = match hidden {
            Some(how) => DockerApiScan::Blind {
                reason: format!(
                    "/proc hides other programs' processes (hidepid={how}, the unit's ProtectProc=), \
                     so dockerd cannot be seen"
                ),
            },
            None => DockerApiScan::NoDockerd,
        };
        return Identified {
            listeners: Vec::new(),
            scan,
        };
    }
    // By socket inode: one socket is one listener, however many dockerd
    // processes hold it or share its cgroup (a dockerd re-executed as a
    // helper, `dockerd libnetwork-setkey` at a container's start, lives
    // there for a moment); the first dockerd found names it.
    let mut found: BTreeMap<u64, DockerApiListener> = BTreeMap::new();
    let mut blind = Vec::new();
    let mut by_cgroup = false;
    for dockerd in dockerds {
        match (&dockerd.sockets, &dockerd.cgroup) {
            // Docker 29 opens a published port's socket in dockerd and
            // hands it to docker-proxy; dockerd may hold its copy for
            // seconds. Held by docker-proxy, it is a published port, not
            // the API (taken for the API, an allow entry without `from`
            // stopped admitting it over docker-proxy).
            (Ok(inodes), _) => {
                for l in listening
                    .iter()
                    .filter(|l| inodes.contains(&l.inode) && !proxied.contains(&l.inode))
                {
                    found
                        .entry(l.inode)
                        .or_insert_with(|| listener(l, dockerd.pid));
                }
            }
            (Err(fds), Some(Ok(cgroup))) => match in_cgroup(listening, dockerd.pid, cgroup, hidden)
            {
                Ok(listeners) => {
                    by_cgroup = true;
                    for (inode, l) in listeners {
                        found.entry(inode).or_insert(l);
                    }
                }
                Err(why) => blind.push(format!(
                    "dockerd's open files are unreadable ({fds}) and {why}"
                )),
            },
            (Err(fds), Some(Err(cgroup))) => blind.push(format!(
                "dockerd's open files are unreadable ({fds}) and so is its cgroup ({cgroup})"
            )),
            (Err(fds), None) => blind.push(format!("dockerd's open files are unreadable ({fds})")),
        }
    }
    let scan = if !blind.is_empty() {
        DockerApiScan::Blind {
            reason: blind.join("; "),
        }
    } else if by_cgroup {
        DockerApiScan::Cgroup
    } else {
        DockerApiScan::FileDescriptors
    };
    Identified {
        listeners: found
            .into_values()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect(),
        scan,
    }
}

fn listener(l: &Listening, pid: u32) -> DockerApiListener {
    DockerApiListener {
        addr: l.addr,
        port: l.port,
        pid,
    }
}

/// The listeners opened in dockerd's cgroup, but for those docker-proxy
/// serves; an error when the cgroup cannot be told to be Docker's alone
/// (a listener of another program there would be taken for the API).
fn in_cgroup(
    listening: &[Listening],
    dockerd: u32,
    cgroup: &Cgroup,
    hidden: Option<&str>,
) -> Result<Vec<(u64, DockerApiListener)>, String> {
    if listening.iter().all(|l| l.cgroup.is_none()) && !listening.is_empty() {
        return Err("the kernel does not report sockets' cgroups (Linux 5.9 and later do)".into());
    }
    let proxied: HashSet<(IpAddr, u16)> = cgroup.members.iter().filter_map(|m| m.proxies).collect();
    let candidates: Vec<&Listening> = listening
        .iter()
        .filter(|l| l.cgroup == Some(cgroup.id) && !proxied.contains(&(l.addr, l.port)))
        .collect();
    // No socket here was opened in that cgroup: nothing to tell apart
    // (a dockerd of another network namespace, for one).
    if candidates.is_empty() {
        return Ok(Vec::new());
    }
    let foreign = foreign_members(cgroup, hidden);
    if !foreign.is_empty() {
        let shown: Vec<String> = candidates
            .iter()
            .map(|l| std::net::SocketAddr::new(l.addr, l.port).to_string())
            .collect();
        return Err(format!(
            "its cgroup {} holds other programs too ({}), so its listeners {} may be theirs",
            cgroup.path,
            abbreviated(&foreign),
            shown.join(", ")
        ));
    }
    Ok(candidates
        .into_iter()
        .map(|l| (l.inode, listener(l, dockerd)))
        .collect())
}

/// The first few of `names`, and how many more.
fn abbreviated(names: &[String]) -> String {
    const SHOWN: usize = 5;
    let mut text = names[..names.len().min(SHOWN)].join(", ");
    if names.len() > SHOWN {
        text.push_str(&format!(" and {} more", names.len() - SHOWN));
    }
    text
}

/// Members of dockerd's cgroup that are neither Docker's programs nor
/// children of them (dockerd runs iptables, for one), by name and pid.
/// A process `/proc` does not show is foreign when `/proc` hides
/// processes, and is taken to have ended otherwise.
fn foreign_members(cgroup: &Cgroup, hidden: Option<&str>) -> Vec<String> {
    let docker: HashSet<u32> = cgroup
        .members
        .iter()
        .filter(|m| m.comm.as_deref().is_some_and(is_docker_helper))
        .map(|m| m.pid)
        .collect();
    cgroup
        .members
        .iter()
        .filter(|m| !docker.contains(&m.pid))
        .filter(|m| !m.ppid.is_some_and(|p| docker.contains(&p)))
        .filter_map(|m| match &m.comm {
            Some(comm) => Some(format!("{comm} ({})", m.pid)),
            None if hidden.is_some() => Some(format!("hidden process {}", m.pid)),
            None => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const DOCKER_CG: u64 = 900;

    fn any4() -> IpAddr {
        "0.0.0.0".parse().unwrap()
    }

    fn l(port: u16, inode: u64, cgroup: u64) -> Listening {
        Listening {
            addr: any4(),
            port,
            inode,
            cgroup: Some(cgroup),
        }
    }

    fn member(pid: u32, comm: &str, ppid: u32) -> Member {
        Member {
            pid,
            comm: Some(comm.into()),
            ppid: Some(ppid),
            proxies: None,
        }
    }

    fn proxy(pid: u32, port: u16) -> Member {
        Member {
            proxies: Some((any4(), port)),
            ..member(pid, "docker-proxy", 77)
        }
    }

    /// dockerd 77 whose files are unreadable, in a cgroup with `members`.
    fn sandboxed(members: Vec<Member>) -> Dockerd {
        Dockerd {
            pid: 77,
            sockets: Err("Permission denied".into()),
            cgroup: Some(Ok(Cgroup {
                id: DOCKER_CG,
                path: "/system.slice/docker.service".into(),
                members,
            })),
        }
    }

    /// The API on 4243 and a published 8080 (docker-proxy) in dockerd's
    /// cgroup, sshd on 22 in another.
    fn host() -> Vec<Listening> {
        vec![l(4243, 10, DOCKER_CG), l(8080, 11, DOCKER_CG), l(22, 12, 5)]
    }

    fn ports(found: &Identified) -> Vec<u16> {
        found.listeners.iter().map(|l| l.port).collect()
    }

    #[test]
    fn open_files_name_dockerd_s_sockets_exactly() {
        let dockerd = Dockerd {
            pid: 77,
            sockets: Ok(HashSet::from([9, 10])),
            cgroup: None,
        };
        let found = identify(&host(), &[dockerd], &HashSet::new(), None);
        assert_eq!(
            found.listeners,
            vec![DockerApiListener {
                addr: any4(),
                port: 4243,
                pid: 77
            }]
        );
        assert_eq!(found.scan, DockerApiScan::FileDescriptors);
        assert!(found.complete());
    }

    /// A dockerd re-executed as a helper (`dockerd libnetwork-setkey`, run
    /// at a container's start) shares dockerd's cgroup for a moment, or a
    /// forked dockerd shares its files: each socket is still one listener.
    #[test]
    fn a_socket_is_one_listener_however_many_dockerds_share_it() {
        let members = vec![
            member(77, "dockerd", 1),
            proxy(80, 8080),
            member(90, "dockerd", 85),
        ];
        let helper = Dockerd {
            pid: 90,
            ..sandboxed(members.clone())
        };
        let found = identify(
            &host(),
            &[sandboxed(members), helper],
            &HashSet::new(),
            None,
        );
        let named: Vec<(u16, u32)> = found.listeners.iter().map(|l| (l.port, l.pid)).collect();
        assert_eq!(named, vec![(4243, 77)], "the first dockerd names it");
        let by_files = |pid| Dockerd {
            pid,
            sockets: Ok(HashSet::from([10])),
            cgroup: None,
        };
        let found = identify(
            &host(),
            &[by_files(77), by_files(90)],
            &HashSet::new(),
            None,
        );
        assert_eq!(ports(&found), vec![4243], "{found:?}");
    }

    #[test]
    fn without_open_files_dockerd_s_cgroup_names_its_sockets_but_not_docker_proxy_s() {
        let found = identify(
            &host(),
            &[sandboxed(vec![
                member(77, "dockerd", 1),
                proxy(80, 8080),
                member(81, "containerd", 77),
                member(82, "iptables", 77),
            ])],
            &HashSet::new(),
            None,
        );
        assert_eq!(ports(&found), vec![4243], "{found:?}");
        assert_eq!(found.scan, DockerApiScan::Cgroup);
        assert!(found.complete());
    }

    #[test]
    fn a_cgroup_shared_with_other_programs_is_blind_not_a_guess() {
        // sshd's listener would be taken for the Docker API and closed.
        let found = identify(
            &[l(4243, 10, DOCKER_CG), l(22, 12, DOCKER_CG)],
            &[sandboxed(vec![
                member(77, "dockerd", 1),
                member(5, "sshd", 1),
            ])],
            &HashSet::new(),
            None,
        );
        assert!(found.listeners.is_empty());
        assert!(!found.complete());
        let DockerApiScan::Blind { reason } = found.scan else {
            panic!("{found:?}");
        };
        assert!(
            reason.contains("Permission denied")
                && reason.contains("sshd (5)")
                && reason.contains("0.0.0.0:22"),
            "{reason}"
        );
    }

    #[test]
    fn a_shared_cgroup_that_opened_no_listener_here_proves_nothing_is_missed() {
        // A dockerd of another network namespace, in the root cgroup.
        let found = identify(
            &[l(4243, 10, DOCKER_CG)],
            &[
                Dockerd {
                    pid: 9,
                    sockets: Err("Permission denied".into()),
                    cgroup: Some(Ok(Cgroup {
                        id: 1,
                        path: "/".into(),
                        members: vec![member(9, "dockerd", 1), member(5, "sshd", 1)],
                    })),
                },
                sandboxed(vec![member(77, "dockerd", 1)]),
            ],
            &HashSet::new(),
            None,
        );
        assert_eq!(ports(&found), vec![4243]);
        assert_eq!(found.scan, DockerApiScan::Cgroup);
    }

    #[test]
    fn a_process_proc_hides_counts_as_foreign_only_when_proc_hides_processes() {
        let unseen = Member {
            comm: None,
            ppid: None,
            ..member(6, "", 0)
        };
        let members = vec![member(77, "dockerd", 1), unseen];
        let ended = identify(
            &host(),
            &[sandboxed(members.clone())],
            &HashSet::new(),
            None,
        );
        assert_eq!(ports(&ended), vec![4243, 8080]);
        let hidden = identify(
            &host(),
            &[sandboxed(members)],
            &HashSet::new(),
            Some("invisible"),
        );
        assert!(!hidden.complete(), "{hidden:?}");
    }

    #[test]
    fn no_dockerd_in_sight_is_blind_when_proc_hides_processes() {
        let none = identify(&host(), &[], &HashSet::new(), None);
        assert_eq!(none.scan, DockerApiScan::NoDockerd);
        assert!(none.complete());
        let hidden = identify(&host(), &[], &HashSet::new(), Some("invisible"));
        assert!(!hidden.complete());
        assert!(
            matches!(&hidden.scan, DockerApiScan::Blind { reason } if reason.contains("hidepid=invisible")),
            "{hidden:?}"
        );
    }

    #[test]
    fn a_kernel_without_socket_cgroups_is_blind() {
        let old_kernel: Vec<Listening> = host()
            .into_iter()
            .map(|l| Listening { cgroup: None, ..l })
            .collect();
        let found = identify(
            &old_kernel,
            &[sandboxed(vec![member(77, "dockerd", 1)])],
            &HashSet::new(),
            None,
        );
        assert!(
            matches!(&found.scan, DockerApiScan::Blind { reason } if reason.contains("5.9")),
            "{found:?}"
        );
    }

    #[test]
    fn an_unreadable_cgroup_is_blind() {
        let dockerd = Dockerd {
            cgroup: Some(Err("no cgroup v2 hierarchy".into())),
            ..sandboxed(Vec::new())
        };
        let found = identify(&host(), &[dockerd], &HashSet::new(), None);
        assert!(
            matches!(&found.scan, DockerApiScan::Blind { reason } if reason.contains("no cgroup v2")),
            "{found:?}"
        );
    }
}
