//! What `/proc` and the cgroup file system say of dockerd: its open
//! sockets where they may be read, else its cgroup and what runs there.
//! Reads only; parsers are pure functions below.

use std::collections::HashSet;
use std::net::IpAddr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::identify::{Cgroup, Dockerd, Member};

/// The process name dockerd runs under (`/proc/PID/comm`).
const DOCKERD_COMM: &str = "dockerd";
/// docker-proxy's, which serves a published port on the host.
const PROXY_COMM: &str = "docker-proxy";

/// One look at `/proc`.
#[derive(Debug, Default)]
pub struct ProcView {
    pub dockerds: Vec<Dockerd>,
    /// The socket inodes docker-proxy processes hold, where their open
    /// files are readable (they are wherever dockerd's are).
    pub proxy_sockets: HashSet<u64>,
    /// `/proc`'s `hidepid=` when it hides processes (the unit's
    /// `ProtectProc=invisible` does).
    pub hidden: Option<String>,
    /// Every permission error met, for the log.
    pub denied: Vec<String>,
}

/// dockerd's processes under `proc` (`/proc`), with the socket inodes
/// each holds or, where those are unreadable, its cgroup. The processes
/// in a cgroup are read only when it is among `listening_in` (the cgroups
/// that opened a listener here): on a host without a service manager
/// dockerd's cgroup may hold every process. Processes that end meanwhile
/// are skipped.
pub fn look(proc: &Path, listening_in: &HashSet<u64>) -> std::io::Result<ProcView> {
    let mountinfo = std::fs::read_to_string(proc.join("self/mountinfo"))?;
    let mut view = ProcView {
        hidden: hidden(&mountinfo, proc, in_group),
        ..ProcView::default()
    };
    let cgroup2 = cgroup2_mounts(&mountinfo);
    for entry in std::fs::read_dir(proc)?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        match comm(proc, pid).as_deref() {
            Some(DOCKERD_COMM) => {}
            Some(PROXY_COMM) => {
                // Unreadable (no ptrace rights) or ended: dockerd's files
                // are then unreadable too, and the cgroup tells apart.
                if let Ok(inodes) = socket_inodes(&entry.path().join("fd")) {
                    view.proxy_sockets.extend(inodes);
                }
                continue;
            }
            _ => continue,
        }
        let sockets = match socket_inodes(&entry.path().join("fd")) {
            Ok(inodes) => Ok(inodes),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                let message = format!("{}: {e}", entry.path().join("fd").display());
                if e.kind() == std::io::ErrorKind::PermissionDenied {
                    view.denied.push(message.clone());
                }
                Err(message)
            }
        };
        let cgroup = sockets
            .is_err()
            .then(|| cgroup_of(proc, pid, &cgroup2, listening_in, &mut view.denied));
        view.dockerds.push(Dockerd {
            pid,
            sockets,
            cgroup,
        });
    }
    Ok(view)
}

fn comm(proc: &Path, pid: u32) -> Option<String> {
    std::fs::read_to_string(proc.join(pid.to_string()).join("comm"))
        .ok()
        .map(|c| c.trim_end().to_string())
}

/// The socket inodes among the links in `fd_dir`. Root may list the
/// directory of another root process, but reading a link takes ptrace
/// rights: that error is the answer, not a link to skip (the old scanner
/// skipped it and saw no sockets at all). A link that vanishes meanwhile
/// (a closed file) is skipped.
fn socket_inodes(fd_dir: &Path) -> std::io::Result<HashSet<u64>> {
    let mut inodes = HashSet::new();
    for fd in std::fs::read_dir(fd_dir)?.flatten() {
        match std::fs::read_link(fd.path()) {
            Ok(target) => inodes.extend(target.to_str().and_then(socket_inode)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(inodes)
}

/// The inode of a `/proc/PID/fd/N` link target such as `socket:[12345]`.
pub fn socket_inode(link: &str) -> Option<u64> {
    link.strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// dockerd's cgroup (v2): its id (the inode of its directory) and, if it
/// is among `listening_in`, every process in it. Neither needs more than
/// reading: `/proc/PID/cgroup`, `comm`, `stat` and `cmdline` are readable
/// without ptrace rights, and `cgroup.procs` through the read-only cgroup
/// file system.
fn cgroup_of(
    proc: &Path,
    pid: u32,
    mounts: &[(String, PathBuf)],
    listening_in: &HashSet<u64>,
    denied: &mut Vec<String>,
) -> Result<Cgroup, String> {
    let mut read = |path: PathBuf| {
        std::fs::read(&path).map_err(|e| {
            let message = format!("{}: {e}", path.display());
            if e.kind() == std::io::ErrorKind::PermissionDenied {
                denied.push(message.clone());
            }
            message
        })
    };
    let text = read(proc.join(pid.to_string()).join("cgroup"))?;
    let path = unified_cgroup(&String::from_utf8_lossy(&text))
        .ok_or("dockerd is in no cgroup v2 (a host on cgroup v1 only)")?
        .to_string();
    let dir = mounts
        .iter()
        .filter_map(|(root, point)| cgroup_dir(root, point, &path))
        .find(|dir| dir.is_dir())
        .ok_or_else(|| format!("cgroup {path} not found under any cgroup2 mount"))?;
    let id = std::fs::metadata(&dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .ino();
    if !listening_in.contains(&id) {
        return Ok(Cgroup {
            id,
            path,
            members: Vec::new(),
        });
    }
    let procs = read(dir.join("cgroup.procs"))?;
    let members = String::from_utf8_lossy(&procs)
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .map(|pid| member(proc, pid))
        .collect();
    Ok(Cgroup { id, path, members })
}

fn member(proc: &Path, pid: u32) -> Member {
    let dir = proc.join(pid.to_string());
    let comm = comm(proc, pid);
    let proxies = if comm.as_deref() == Some(PROXY_COMM) {
        std::fs::read(dir.join("cmdline"))
            .ok()
            .and_then(|c| proxy_binding(&c))
    } else {
        None
    };
    Member {
        pid,
        ppid: std::fs::read_to_string(dir.join("stat"))
            .ok()
            .and_then(|s| stat_ppid(&s)),
        comm,
        proxies,
    }
}

/// The directory of cgroup `path` under a cgroup2 mount of hierarchy
/// subtree `root` at `point`; `None` when the mount does not reach it.
fn cgroup_dir(root: &str, point: &Path, path: &str) -> Option<PathBuf> {
    let rest = if root == "/" {
        path
    } else {
        path.strip_prefix(root)
            .filter(|r| r.is_empty() || r.starts_with('/'))?
    };
    Some(point.join(rest.trim_start_matches('/')))
}

/// The cgroup v2 path in a `/proc/PID/cgroup` (the `0::` line).
pub fn unified_cgroup(text: &str) -> Option<&str> {
    text.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(str::trim_end)
}

/// The parent pid in a `/proc/PID/stat` (after the command name, which
/// may hold spaces and parentheses).
pub fn stat_ppid(text: &str) -> Option<u32> {
    text.get(text.rfind(')')? + 1..)?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// The TCP address and port a docker-proxy serves, from its command line
/// (`-proto tcp -host-ip 0.0.0.0 -host-port 8080 ...`, NUL-separated;
/// Go's flags also take `--flag` and `-flag=value`). `None` for UDP/SCTP.
pub fn proxy_binding(cmdline: &[u8]) -> Option<(IpAddr, u16)> {
    let text = String::from_utf8_lossy(cmdline);
    let args: Vec<&str> = text.split('\0').collect();
    let flag = |name: &str| -> Option<&str> {
        args.iter().enumerate().find_map(|(i, arg)| {
            let bare = arg.trim_start_matches('-');
            if !arg.starts_with('-') {
                return None;
            }
            if bare == name {
                args.get(i + 1).copied()
            } else {
                bare.strip_prefix(name)?.strip_prefix('=')
            }
        })
    };
    if flag("proto").unwrap_or("tcp") != "tcp" {
        return None;
    }
    Some((
        flag("host-ip")?.parse().ok()?,
        flag("host-port")?.parse().ok()?,
    ))
}

/// `/proc`'s `hidepid=` value (from `/proc/self/mountinfo`, the last
/// mount on `proc`) when it hides processes from this process. `noaccess`
/// and `invisible` (the unit's `ProtectProc=invisible`) spare members of
/// the mount's `gid=` group, root's group by default: to a daemon running
/// as root they hide nothing. `ptraceable` spares nobody.
pub fn hidden(mountinfo: &str, proc: &Path, in_group: impl Fn(u32) -> bool) -> Option<String> {
    let mount = mountinfo
        .lines()
        .filter_map(parse_mountinfo)
        .rfind(|m| m.fstype == "proc" && Path::new(&m.point) == proc)?;
    let option = |name: &str| {
        mount
            .superopts
            .split(',')
            .find_map(|o| o.strip_prefix(name)?.strip_prefix('='))
    };
    let how = option("hidepid")?;
    let gid = option("gid").and_then(|g| g.parse().ok()).unwrap_or(0);
    match how {
        "off" | "0" => None,
        "ptraceable" | "4" => Some(how.to_string()),
        _ if in_group(gid) => None,
        _ => Some(how.to_string()),
    }
}

/// Whether this process is in group `gid` (its own or a supplementary).
fn in_group(gid: u32) -> bool {
    let gid = nix::unistd::Gid::from_raw(gid);
    nix::unistd::getegid() == gid || nix::unistd::getgroups().is_ok_and(|g| g.contains(&gid))
}

/// Every cgroup2 mount: (the hierarchy subtree it shows, where).
pub fn cgroup2_mounts(mountinfo: &str) -> Vec<(String, PathBuf)> {
    mountinfo
        .lines()
        .filter_map(parse_mountinfo)
        .filter(|m| m.fstype == "cgroup2")
        .map(|m| (m.root, PathBuf::from(m.point)))
        .collect()
}

struct Mount {
    root: String,
    point: String,
    fstype: String,
    superopts: String,
}

/// One line of `/proc/PID/mountinfo`: `ID PARENT MAJ:MIN ROOT POINT OPTS
/// [OPTIONAL...] - FSTYPE SOURCE SUPEROPTS`.
fn parse_mountinfo(line: &str) -> Option<Mount> {
    let (before, after) = line.split_once(" - ")?;
    let mut fields = before.split(' ');
    let root = unescape(fields.nth(3)?);
    let point = unescape(fields.next()?);
    let mut after = after.split(' ');
    let fstype = after.next()?.to_string();
    let superopts = after.nth(1).unwrap_or_default().to_string();
    Some(Mount {
        root,
        point,
        fstype,
        superopts,
    })
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).and_then(|d| {
            std::str::from_utf8(d)
                .ok()
                .and_then(|d| u8::from_str_radix(d, 8).ok())
        });
        match (bytes[i], octal) {
            (b'\\', Some(byte)) => {
                out.push(byte);
                i += 4;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// Docker 29: dockerd opens a published port's socket and hands it to
    /// docker-proxy; both hold it for a while. The look keeps what the
    /// proxy holds, and the socket is not taken for the Docker API.
    #[test]
    fn a_socket_dockerd_handed_to_docker_proxy_is_not_the_api() {
        use super::super::identify::{Listening, identify};
        let proc = tempfile::tempdir().unwrap();
        let process = |pid: u32, comm: &str, sockets: &[u64]| {
            let dir = proc.path().join(pid.to_string());
            std::fs::create_dir_all(dir.join("fd")).unwrap();
            std::fs::write(dir.join("comm"), format!("{comm}\n")).unwrap();
            for (fd, inode) in sockets.iter().enumerate() {
                std::os::unix::fs::symlink(
                    format!("socket:[{inode}]"),
                    dir.join("fd").join(fd.to_string()),
                )
                .unwrap();
            }
        };
        std::fs::create_dir_all(proc.path().join("self")).unwrap();
        std::fs::write(proc.path().join("self/mountinfo"), "").unwrap();
        process(100, "dockerd", &[10, 11]);
        process(200, "docker-proxy", &[11]);
        process(300, "sshd", &[12]);
        let view = look(proc.path(), &HashSet::new()).unwrap();
        assert_eq!(view.proxy_sockets, HashSet::from([11]));
        assert_eq!(view.dockerds.len(), 1);
        let any: IpAddr = "0.0.0.0".parse().unwrap();
        let listening = |port, inode| Listening {
            addr: any,
            port,
            inode,
            cgroup: None,
        };
        let found = identify(
            &[listening(4243, 10), listening(8080, 11), listening(22, 12)],
            &view.dockerds,
            &view.proxy_sockets,
            view.hidden.as_deref(),
        );
        let ports: Vec<u16> = found.listeners.iter().map(|l| l.port).collect();
        assert_eq!(ports, vec![4243], "{found:?}");
    }

    #[test]
    fn socket_links_name_their_inode() {
        assert_eq!(socket_inode("socket:[4026]"), Some(4026));
        assert_eq!(socket_inode("pipe:[4026]"), None);
        assert_eq!(socket_inode("/dev/null"), None);
        assert_eq!(socket_inode("socket:[x]"), None);
    }

    const MOUNTINFO: &str = "\
22 1 0:21 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw
25 1 0:23 / /sys/fs/cgroup ro,nosuid shared:9 - cgroup2 cgroup2 rw,nsdelegate
31 22 0:21 / /proc rw,nosuid - proc proc rw,hidepid=invisible,subset=pid
40 1 0:30 /system.slice /mnt/my\\040cg rw - cgroup2 cgroup2 rw
";

    #[test]
    fn the_last_proc_mount_says_whether_processes_are_hidden_from_us() {
        let proc = Path::new("/proc");
        let not_root = |gid: u32| gid == 1000;
        let root = |gid: u32| gid == 0;
        assert_eq!(
            hidden(MOUNTINFO, proc, not_root).as_deref(),
            Some("invisible")
        );
        // ProtectProc=invisible sets no gid=: root's group sees all.
        assert_eq!(hidden(MOUNTINFO, proc, root), None);
        let ptraceable = MOUNTINFO.replace("hidepid=invisible", "hidepid=ptraceable");
        assert_eq!(
            hidden(&ptraceable, proc, root).as_deref(),
            Some("ptraceable")
        );
        let with_gid = MOUNTINFO.replace("subset=pid", "gid=1000,subset=pid");
        assert_eq!(hidden(&with_gid, proc, not_root), None);
        assert_eq!(hidden(&with_gid, proc, root).as_deref(), Some("invisible"));
        let open = MOUNTINFO.replace("hidepid=invisible", "hidepid=off");
        assert_eq!(hidden(&open, proc, not_root), None);
        let first_only: String = MOUNTINFO.lines().take(2).collect::<Vec<_>>().join("\n");
        assert_eq!(hidden(&first_only, proc, not_root), None);
    }

    #[test]
    fn cgroup2_mounts_map_a_cgroup_path_to_its_directory() {
        let mounts = cgroup2_mounts(MOUNTINFO);
        assert_eq!(
            mounts,
            vec![
                ("/".to_string(), PathBuf::from("/sys/fs/cgroup")),
                ("/system.slice".to_string(), PathBuf::from("/mnt/my cg")),
            ]
        );
        let path = "/system.slice/docker.service";
        assert_eq!(
            cgroup_dir(&mounts[0].0, &mounts[0].1, path),
            Some(PathBuf::from("/sys/fs/cgroup/system.slice/docker.service"))
        );
        assert_eq!(
            cgroup_dir(&mounts[1].0, &mounts[1].1, path),
            Some(PathBuf::from("/mnt/my cg/docker.service"))
        );
        assert_eq!(
            cgroup_dir("/system.slice", Path::new("/x"), "/user.slice"),
            None
        );
        assert_eq!(
            cgroup_dir("/system", Path::new("/x"), "/system.slice/a"),
            None
        );
    }

    #[test]
    fn proc_files_are_parsed_as_the_kernel_writes_them() {
        assert_eq!(
            unified_cgroup("12:pids:/x\n0::/system.slice/docker.service\n"),
            Some("/system.slice/docker.service")
        );
        assert_eq!(unified_cgroup("12:pids:/x\n"), None);
        assert_eq!(stat_ppid("4242 (a) b)) S 77 4242 4242 0"), Some(77));
        assert_eq!(stat_ppid("garbage"), None);
    }

    /// A command line as `/proc/PID/cmdline` holds it.
    fn cmdline(args: &[&str]) -> Vec<u8> {
        args.iter().flat_map(|a| a.bytes().chain([0])).collect()
    }

    #[test]
    fn docker_proxy_command_lines_name_the_published_tcp_address() {
        let any: IpAddr = "0.0.0.0".parse().unwrap();
        let six: IpAddr = "::".parse().unwrap();
        let published = cmdline(&[
            "/usr/sbin/docker-proxy",
            "-proto",
            "tcp",
            "-host-ip",
            "0.0.0.0",
            "-host-port",
            "8080",
            "-container-ip",
            "172.17.0.2",
            "-container-port",
            "80",
        ]);
        assert_eq!(proxy_binding(&published), Some((any, 8080)));
        let go_style = cmdline(&[
            "docker-proxy",
            "--host-ip=::",
            "-host-port=9000",
            "-use-listen-fd",
        ]);
        assert_eq!(proxy_binding(&go_style), Some((six, 9000)));
        let udp = cmdline(&[
            "docker-proxy",
            "-proto",
            "udp",
            "-host-ip",
            "0.0.0.0",
            "-host-port",
            "53",
        ]);
        assert_eq!(proxy_binding(&udp), None);
        assert_eq!(
            proxy_binding(&cmdline(&["docker-proxy", "-host-ip", "nonsense"])),
            None
        );
    }

    /// The real `/proc`: this process, its cgroup and itself as a member.
    #[test]
    fn this_process_s_cgroup_lists_this_process() {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let mounts = cgroup2_mounts(&mountinfo);
        if mounts.is_empty() {
            return; // cgroup v1 only
        }
        let me = std::process::id();
        let mut denied = Vec::new();
        let unknown = HashSet::new();
        let cgroup = cgroup_of(Path::new("/proc"), me, &mounts, &unknown, &mut denied).unwrap();
        assert!(cgroup.id > 0);
        assert!(
            cgroup.members.is_empty(),
            "read though no listener is there"
        );
        let listening_in = HashSet::from([cgroup.id]);
        let cgroup =
            cgroup_of(Path::new("/proc"), me, &mounts, &listening_in, &mut denied).unwrap();
        assert!(cgroup.members.iter().any(|m| m.pid == me), "{cgroup:?}");
        assert!(denied.is_empty(), "{denied:?}");
    }
}
