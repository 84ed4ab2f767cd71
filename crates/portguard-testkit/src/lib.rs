//! Test helpers: network namespaces that remove themselves (also when a
//! test panics), code run inside a namespace, and real TCP/UDP probes.
//!
//! Names are unique per process and call (`pg<pid>n<k><role>`), so tests
//! run in parallel and a crashed run cannot poison the next.

#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod booted;
pub mod daemon;
pub mod engine;
mod prober;
pub mod promtool;
pub mod sandbox;

pub use engine::{Engine, engine};
pub use prober::Prober;

use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A named network namespace, deleted (with every process still in it) on drop.
pub struct NetNs {
    name: String,
}

impl NetNs {
    /// Creates `pg<pid>n<k><role>` with loopback up.
    pub fn new(role: &str) -> NetNs {
        let k = COUNTER.fetch_add(1, Ordering::SeqCst);
        let name = format!("pg{}n{k}{role}", std::process::id());
        sh(&format!("ip netns add {name}"));
        let ns = NetNs { name };
        // No duplicate address detection: link-local addresses would stay
        // tentative for a second or two, and IPv6 neighbour discovery and
        // routing with them.
        ns.sh("sysctl -qw net.ipv6.conf.all.accept_dad=0 && sysctl -qw net.ipv6.conf.default.accept_dad=0 && ip link set lo up");
        ns
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Path of the namespace handle, for `nsenter --net=`.
    pub fn path(&self) -> String {
        format!("/run/netns/{}", self.name)
    }

    /// Runs `script` with sh inside the namespace (nsenter, which keeps
    /// /sys as it is).
    pub fn run(&self, script: &str) -> Output {
        Command::new("nsenter")
            .arg(format!("--net={}", self.path()))
            .args(["sh", "-c", script])
            .output()
            .expect("nsenter")
    }

    /// Like [`NetNs::run`], panicking with stderr unless it succeeds; returns stdout.
    pub fn sh(&self, script: &str) -> String {
        let out = self.run(script);
        assert!(
            out.status.success(),
            "in {}: `{script}` failed: {}",
            self.name,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs `f` on a new thread that has entered this namespace; sockets it
    /// opens and processes it spawns live there.
    pub fn spawn<F, R>(&self, f: F) -> JoinHandle<R>
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        spawn_in_netns(&self.path(), f)
    }

    /// Runs `f` inside this namespace and returns its result.
    pub fn enter<F, R>(&self, f: F) -> R
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        self.spawn(f).join().expect("thread in netns panicked")
    }
}

/// Runs `f` on a new thread that has entered the network namespace at
/// `path` (a `/run/netns` name, or `/proc/PID/ns/net` of a container).
pub fn spawn_in_netns<F, R>(path: &str, f: F) -> JoinHandle<R>
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    let file = File::open(path).expect("open netns");
    std::thread::spawn(move || {
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        f()
    })
}

impl Drop for NetNs {
    fn drop(&mut self) {
        // Every process in a namespace we created was started by this test.
        if let Ok(out) = Command::new("ip")
            .args(["netns", "pids", &self.name])
            .output()
        {
            for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                if let Ok(pid) = pid.parse::<i32>() {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Runs a host command, panicking unless it succeeds.
pub fn sh(script: &str) -> String {
    let out = Command::new("sh")
        .args(["-c", script])
        .output()
        .expect("sh");
    assert!(
        out.status.success(),
        "`{script}` failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Joins two namespaces with a veth pair named `a_if` in `a` and `b_if` in `b`.
pub fn link(a: &NetNs, a_if: &str, b: &NetNs, b_if: &str) {
    a.sh(&format!(
        "ip link add {a_if} type veth peer name {b_if} netns {} && ip link set {a_if} up && ip -n {} link set {b_if} up",
        b.name(),
        b.name()
    ));
}

/// Adds addresses (`10.0.0.1/24`, `fd00::1/64`) to `iface`; IPv6 without DAD.
pub fn addr(ns: &NetNs, iface: &str, addrs: &[&str]) {
    for a in addrs {
        let extra = if a.contains(':') { " nodad" } else { "" };
        ns.sh(&format!("ip addr add {a} dev {iface}{extra}"));
    }
}

/// A TCP server in `ns` on `port` (all addresses, v4 and v6) that answers
/// each connection with `reply` and closes it. Runs until the namespace goes.
pub fn tcp_server(ns: &NetNs, port: u16, reply: &'static str) {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    ns.spawn(move || {
        let listener = TcpListener::bind(("::", port)).expect("bind tcp");
        ready_tx.send(()).ok();
        for mut stream in listener.incoming().flatten() {
            let _ = stream.write_all(reply.as_bytes());
        }
    });
    ready_rx
        .recv_timeout(Duration::from_secs(5))
        .expect("tcp server ready");
}

/// A TCP echo server in `ns` on `port` (v4 and v6): each connection gets
/// back what it sends, for as long as it stays open.
pub fn tcp_echo_server(ns: &NetNs, port: u16) {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    ns.spawn(move || {
        let listener = TcpListener::bind(("::", port)).expect("bind tcp");
        ready_tx.send(()).ok();
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut stream = stream;
                let mut buf = [0u8; 1024];
                while let Ok(n) = stream.read(&mut buf) {
                    if n == 0 || stream.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            });
        }
    });
    ready_rx
        .recv_timeout(Duration::from_secs(5))
        .expect("tcp echo server ready");
}

/// A UDP echo server in `ns` on `port` (v4 and v6).
pub fn udp_echo_server(ns: &NetNs, port: u16) {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    ns.spawn(move || {
        let socket = UdpSocket::bind(("::", port)).expect("bind udp");
        ready_tx.send(()).ok();
        let mut buf = [0u8; 1500];
        while let Ok((n, from)) = socket.recv_from(&mut buf) {
            let _ = socket.send_to(&buf[..n], from);
        }
    });
    ready_rx
        .recv_timeout(Duration::from_secs(5))
        .expect("udp server ready");
}

/// Whether a TCP connection from `ns` to `target` completes and reads the
/// server's greeting (or its answer to an HTTP request) within `timeout`.
pub fn tcp_probe(ns: &NetNs, target: SocketAddr, timeout: Duration) -> bool {
    ns.enter(move || tcp_probe_here(target, timeout))
}

/// [`tcp_probe`] from the calling thread's namespace.
pub fn tcp_probe_here(target: SocketAddr, timeout: Duration) -> bool {
    match TcpStream::connect_timeout(&target, timeout) {
        Ok(mut s) => {
            s.set_read_timeout(Some(timeout)).ok();
            // HTTP servers (busybox httpd in containers) speak only when
            // spoken to; the greeting servers above ignore this.
            let _ = s.write_all(b"GET / HTTP/1.0\r\n\r\n");
            let mut buf = [0u8; 64];
            matches!(s.read(&mut buf), Ok(n) if n > 0)
        }
        Err(_) => false,
    }
}

/// Whether a UDP datagram from `ns` to `target` is echoed within `timeout`.
pub fn udp_probe(ns: &NetNs, target: SocketAddr, timeout: Duration) -> bool {
    ns.enter(move || {
        let bind: SocketAddr = if target.is_ipv4() {
            "0.0.0.0:0"
        } else {
            "[::]:0"
        }
        .parse()
        .unwrap();
        let socket = UdpSocket::bind(bind).unwrap();
        socket.set_read_timeout(Some(timeout)).unwrap();
        if socket.send_to(b"ping", target).is_err() {
            return false;
        }
        let mut buf = [0u8; 16];
        matches!(socket.recv_from(&mut buf), Ok((4, _)))
    })
}

/// Three namespaces: `wan` (10.99.0.2, fd00:99::2) -- `host` (eth0
/// 10.99.0.1, fd00:99::1; forwarding; a bridge named docker0 with
/// 172.30.0.1, fd00:30::1) -- `ctr` (172.30.0.2, fd00:30::2), and the DNAT
/// rules Docker writes for `-p 8080:80 -p 8081:81 -p 5353:53/udp` (IPv4 and
/// IPv6 for TCP). `ctr` serves "web" on 80, "db" on 81, UDP echo on 53.
pub struct Lab {
    pub wan: NetNs,
    pub host: NetNs,
    pub ctr: NetNs,
}

pub fn lab() -> Lab {
    let wan = NetNs::new("wan");
    let host = NetNs::new("host");
    let ctr = NetNs::new("ctr");
    link(&host, "eth0", &wan, "eth0");
    addr(&host, "eth0", &["10.99.0.1/24", "fd00:99::1/64"]);
    addr(&wan, "eth0", &["10.99.0.2/24", "fd00:99::2/64"]);
    host.sh("ip link add docker0 type bridge && ip link set docker0 up");
    addr(&host, "docker0", &["172.30.0.1/24", "fd00:30::1/64"]);
    link(&host, "vethc", &ctr, "eth0");
    host.sh("ip link set vethc master docker0");
    addr(&ctr, "eth0", &["172.30.0.2/24", "fd00:30::2/64"]);
    ctr.sh("ip route add default via 172.30.0.1 && ip -6 route add default via fd00:30::1");
    wan.sh(
        "ip route add 172.30.0.0/24 via 10.99.0.1 && ip -6 route add fd00:30::/64 via fd00:99::1",
    );
    host.sh("sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1");
    // What Docker does for -p 8080:80, -p 8081:81, -p 5353:53/udp.
    host.sh("nft -f - <<'EOF'
table ip nat {
  chain pre { type nat hook prerouting priority dstnat; policy accept;
    tcp dport 8080 dnat to 172.30.0.2:80
    tcp dport 8081 dnat to 172.30.0.2:81
    tcp dport { 8082, 8083 } dnat to 172.30.0.2:82
    udp dport 5353 dnat to 172.30.0.2:53
  }
}
table ip6 nat {
  chain pre { type nat hook prerouting priority dstnat; policy accept;
    tcp dport 8080 dnat to [fd00:30::2]:80
    tcp dport 8081 dnat to [fd00:30::2]:81
  }
}
EOF");
    tcp_server(&ctr, 80, "web\n");
    tcp_server(&ctr, 81, "db\n");
    tcp_echo_server(&ctr, 82);
    udp_echo_server(&ctr, 53);
    Lab { wan, host, ctr }
}

/// A Docker Engine of a test's own, running inside a network namespace,
/// with its own data root, exec root, socket and pid file. Dropping it
/// removes its containers, stops it and unmounts and deletes its roots.
pub struct Dockerd {
    ns_path: String,
    root: std::path::PathBuf,
    child: Option<std::process::Child>,
    options: DockerdOptions,
    /// Its own cgroup ([`DockerdOptions::own_cgroup`]), removed on drop.
    cgroup: Option<std::path::PathBuf>,
}

/// How a test's dockerd differs from the engine's defaults.
#[derive(Debug, Clone, Default)]
pub struct DockerdOptions {
    /// Extra dockerd flags (e.g. `--userland-proxy=false`).
    pub args: Vec<String>,
    /// Extra environment (e.g. `DOCKER_FIREWALL_BACKEND=nftables`).
    pub env: Vec<(String, String)>,
    /// A directory put first on dockerd's PATH (e.g. iptables pointing to
    /// iptables-legacy): Docker runs the first `iptables` it finds.
    pub path_first: Option<std::path::PathBuf>,
    /// Runs dockerd in a cgroup (v2) of its own, as docker.service does,
    /// rather than in the test's: a daemon without ptrace rights tells
    /// dockerd's listeners by it.
    pub own_cgroup: bool,
}

/// The image every test container runs: busybox (httpd, nc, sh) imported
/// from Debian's busybox-static, with a page at /www/index.html.
pub const BUSYBOX_IMAGE: &str = "pgbusybox";

impl Dockerd {
    /// Starts dockerd in `ns` and imports [`BUSYBOX_IMAGE`].
    pub fn start(ns: &NetNs) -> Dockerd {
        Dockerd::start_with(ns, DockerdOptions::default())
    }

    /// As [`Dockerd::start`], with more dockerd flags (kept on restart).
    pub fn start_with_args(ns: &NetNs, extra_args: &[&str]) -> Dockerd {
        let args = extra_args.iter().map(|a| a.to_string()).collect();
        Dockerd::start_with(
            ns,
            DockerdOptions {
                args,
                ..Default::default()
            },
        )
    }

    /// As [`Dockerd::start`], with `options`.
    pub fn start_with(ns: &NetNs, options: DockerdOptions) -> Dockerd {
        let k = COUNTER.fetch_add(1, Ordering::SeqCst);
        let root = std::path::PathBuf::from(format!("/tmp/pgdocker-{}-{k}", std::process::id()));
        std::fs::create_dir_all(&root).unwrap();
        let cgroup = options.own_cgroup.then(|| {
            let cgroup = cgroup2_root().join(format!("pg{}d{k}", std::process::id()));
            std::fs::create_dir_all(&cgroup).unwrap();
            cgroup
        });
        let mut dockerd = Dockerd {
            ns_path: ns.path(),
            root,
            child: None,
            options,
            cgroup,
        };
        dockerd.launch();
        let rootfs = dockerd.root.join("rootfs");
        busybox_tree(&rootfs);
        install_with_libraries(&udp_echo_binary(), &rootfs, "bin/udp-echo");
        sh(&format!(
            "{}tar -C {} -c . | docker -H {} import - {BUSYBOX_IMAGE} >/dev/null",
            path_prefix(),
            rootfs.display(),
            dockerd.host()
        ));
        dockerd
    }

    /// `unix:///.../docker.sock`
    pub fn host(&self) -> String {
        format!("unix://{}", self.socket().display())
    }

    pub fn socket(&self) -> std::path::PathBuf {
        self.root.join("docker.sock")
    }

    fn launch(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.root.join("dockerd.log"))
            .unwrap();
        let engine = engine();
        let sysctls = Command::new("nsenter")
            .arg(format!("--net={}", self.ns_path))
            .args(["sh", "-c", engine.namespace_sysctls()])
            .status()
            .expect("nsenter");
        assert!(sysctls.success(), "sysctls for Docker {}", engine.major);
        // `sh` moves itself into dockerd's cgroup and execs nsenter, which
        // execs dockerd: one process, whose pid `child` holds.
        let mut command = Command::new("sh");
        match &self.cgroup {
            Some(cgroup) => command.arg("-c").arg(format!(
                "echo $$ > '{}/cgroup.procs' && exec \"$@\"",
                cgroup.display()
            )),
            None => command.args(["-c", "exec \"$@\""]),
        };
        let child = command
            .args(["sh", "nsenter"])
            .arg(format!("--net={}", self.ns_path))
            .arg("dockerd")
            .args(engine.dockerd_args())
            .arg("--data-root")
            .arg(self.root.join("data"))
            .arg("--exec-root")
            .arg(self.root.join("exec"))
            .arg("--pidfile")
            .arg(self.root.join("docker.pid"))
            .arg("-H")
            .arg(self.host())
            .args(&self.options.args)
            .envs(self.options.env.iter().map(|(k, v)| (k, v)))
            .env("PATH", self.dockerd_path())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("dockerd (docker.io) is installed");
        self.child = Some(child);
        let started = std::time::Instant::now();
        while started.elapsed() < Duration::from_secs(60) {
            if Command::new("docker")
                .env("PATH", engine.path_env())
                .args(["-H", &self.host(), "version"])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
            {
                self.announce();
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("dockerd did not come up: {}", self.log());
    }

    /// The engine's PATH, after [`DockerdOptions::path_first`].
    fn dockerd_path(&self) -> std::ffi::OsString {
        let engine_path = engine().path_env();
        match &self.options.path_first {
            None => engine_path,
            Some(dir) => {
                let mut paths = vec![dir.clone()];
                paths.extend(std::env::split_paths(&engine_path));
                std::env::join_paths(paths).expect("PATH entries without ':'")
            }
        }
    }

    /// Names the engine under test in the suite's output, bypassing the
    /// test harness's capture (which only takes `print!`/`eprint!`), so a
    /// passing run says which engine it passed on.
    fn announce(&self) {
        let backend = self.docker("info --format '{{json .}}'");
        let backend = serde_json::from_str::<serde_json::Value>(&backend)
            .ok()
            .and_then(|info| info["FirewallBackend"]["Driver"].as_str().map(String::from))
            .unwrap_or_else(|| "iptables".into());
        let line = format!("engine: Docker {} ({backend})\n", self.version());
        let _ = std::io::stderr().write_all(line.as_bytes());
    }

    /// The version dockerd reports, e.g. "28.5.2".
    pub fn version(&self) -> String {
        self.docker("version --format '{{.Server.Version}}'")
            .trim()
            .to_string()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.root.join("dockerd.log")).unwrap_or_default()
    }

    /// Runs `docker ARGS` against this engine; panics unless it succeeds.
    pub fn docker(&self, args: &str) -> String {
        sh(&format!(
            "{}docker -H {} {args}",
            path_prefix(),
            self.host()
        ))
    }

    /// Freezes dockerd (SIGSTOP): a hung Docker, whose DNAT rules and
    /// docker-proxy listeners stay live while its API never answers.
    pub fn freeze(&self) {
        self.signal(nix::sys::signal::Signal::SIGSTOP);
    }

    /// Lets a frozen dockerd run again (SIGCONT).
    pub fn thaw(&self) {
        self.signal(nix::sys::signal::Signal::SIGCONT);
    }

    fn signal(&self, signal: nix::sys::signal::Signal) {
        if let Some(child) = &self.child {
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            nix::sys::signal::kill(pid, signal).unwrap();
        }
    }

    /// Stops dockerd (SIGTERM, as `systemctl stop docker` does) and waits.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            // A frozen dockerd would not act on SIGTERM.
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let started = std::time::Instant::now();
            while started.elapsed() < Duration::from_secs(30) {
                if child.try_wait().ok().flatten().is_some() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same roots (containers with a restart policy come back).
    pub fn restart(&mut self) {
        self.stop();
        self.launch();
    }
}

/// Writes the file tree of [`BUSYBOX_IMAGE`] (without the UDP echo
/// helper) to `rootfs`, for `docker import`.
pub fn busybox_tree(rootfs: &std::path::Path) {
    std::fs::create_dir_all(rootfs.join("bin")).unwrap();
    std::fs::create_dir_all(rootfs.join("www")).unwrap();
    std::fs::write(rootfs.join("www/index.html"), "hello from a container\n").unwrap();
    std::fs::copy("/bin/busybox", rootfs.join("bin/busybox")).expect("busybox-static is installed");
    for applet in ["sh", "httpd", "nc", "sleep", "cat", "echo"] {
        std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet)).unwrap();
    }
}

/// `export PATH=...; ` for shell scripts that call the engine's docker CLI.
fn path_prefix() -> String {
    format!("export PATH='{}'; ", engine().path_env().to_string_lossy())
}

/// The `pg-udp-echo` helper of this crate, built once per test process.
fn udp_echo_binary() -> std::path::PathBuf {
    static BUILT: std::sync::Once = std::sync::Once::new();
    built(&BUILT, &["-p", "portguard-testkit", "--bin", "pg-udp-echo"]).join("pg-udp-echo")
}

/// Runs `cargo build -q ARGS` once per test process (per `once`), for the
/// profile the running test was built with, and returns the directory the
/// binaries land in (beside the test binary's `deps/`). Tests thus never
/// run stale binaries; under `cargo test --workspace` it is a no-op.
pub fn built(once: &std::sync::Once, args: &[&str]) -> std::path::PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(|d| d.parent()).unwrap().to_path_buf();
    let release = dir.file_name().is_some_and(|n| n == "release");
    once.call_once(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "-q"]).args(args);
        if release {
            cmd.arg("--release");
        }
        assert!(
            cmd.status().unwrap().success(),
            "cargo build {args:?} for the tests"
        );
    });
    dir
}

/// Copies a dynamically linked `binary` to `rootfs/dest` with the shared
/// libraries `ldd` names, at the same paths, so it runs in a container.
fn install_with_libraries(binary: &std::path::Path, rootfs: &std::path::Path, dest: &str) {
    std::fs::copy(binary, rootfs.join(dest)).unwrap();
    let out = Command::new("ldd").arg(binary).output().expect("ldd");
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or "/lib64/ld-linux-x86-64.so.2 (0x...)"
        let path = line
            .split("=>")
            .last()
            .and_then(|rest| rest.split_whitespace().next())
            .filter(|p| p.starts_with('/'));
        if let Some(path) = path {
            let target = rootfs.join(path.trim_start_matches('/'));
            std::fs::create_dir_all(target.parent().unwrap()).unwrap();
            std::fs::copy(path, &target).unwrap();
        }
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        if self.child.is_some() {
            let _ = Command::new("sh")
                .arg("-c")
                .arg(format!(
                    "{p}ids=$(docker -H {h} ps -aq); [ -z \"$ids\" ] || docker -H {h} rm -f $ids",
                    p = path_prefix(),
                    h = self.host()
                ))
                .output();
        }
        self.stop();
        // Bind mounts (netns handles, overlays) left under our roots.
        if let Ok(mounts) = std::fs::read_to_string("/proc/self/mountinfo") {
            let prefix = self.root.display().to_string();
            let mut points: Vec<&str> = mounts
                .lines()
                .filter_map(|l| l.split_whitespace().nth(4))
                .filter(|p| p.starts_with(&prefix))
                .collect();
            points.sort_by_key(|p| std::cmp::Reverse(p.len()));
            for point in points {
                let _ = Command::new("umount").args(["-l", point]).status();
            }
        }
        let _ = std::fs::remove_dir_all(&self.root);
        // Empty once dockerd and its docker-proxy processes are gone.
        // Whatever is left in it after 2 s is this test's too.
        if let Some(cgroup) = &self.cgroup {
            for attempt in 0..50 {
                if std::fs::remove_dir(cgroup).is_ok() {
                    break;
                }
                if attempt == 20 {
                    let _ = std::fs::write(cgroup.join("cgroup.kill"), "1");
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// Where the cgroup v2 hierarchy is mounted: `/sys/fs/cgroup`, or
/// `/sys/fs/cgroup/unified` on a host with the hybrid layout.
pub fn cgroup2_root() -> std::path::PathBuf {
    let unified = std::path::Path::new("/sys/fs/cgroup/unified");
    if unified.is_dir() {
        unified.to_path_buf()
    } else {
        std::path::PathBuf::from("/sys/fs/cgroup")
    }
}

/// Namespaces for Docker tests: `host`, where a test starts dockerd and
/// portguardd (eth0 10.77.0.1, fd00:77::1; eth1 10.76.0.1, fd00:76::1;
/// forwarding on), and two outside hosts: `wan` (10.77.0.2, fd00:77::2)
/// and `wan2` (10.76.0.2, fd00:76::2), each routing the other's network
/// through `host`.
pub struct DockerLab {
    pub wan: NetNs,
    pub wan2: NetNs,
    pub host: NetNs,
}

pub fn docker_lab() -> DockerLab {
    let wan = NetNs::new("dwan");
    let wan2 = NetNs::new("dwan2");
    let host = NetNs::new("dhost");
    link(&host, "eth0", &wan, "eth0");
    link(&host, "eth1", &wan2, "eth0");
    addr(&host, "eth0", &["10.77.0.1/24", "fd00:77::1/64"]);
    addr(&host, "eth1", &["10.76.0.1/24", "fd00:76::1/64"]);
    addr(&wan, "eth0", &["10.77.0.2/24", "fd00:77::2/64"]);
    addr(&wan2, "eth0", &["10.76.0.2/24", "fd00:76::2/64"]);
    wan.sh(
        "ip route add 10.76.0.0/24 via 10.77.0.1 && ip -6 route add fd00:76::/64 via fd00:77::1",
    );
    wan2.sh(
        "ip route add 10.77.0.0/24 via 10.76.0.1 && ip -6 route add fd00:77::/64 via fd00:76::1",
    );
    host.sh("sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1");
    DockerLab { wan, wan2, host }
}
