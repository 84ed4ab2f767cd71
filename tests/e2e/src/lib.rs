//! The end-to-end environment: an outside world (`wan`, `wan2`), a Docker
//! host running a real dockerd and portguardd, all in network namespaces
//! of this test's own. Everything is torn down on drop, also on failure:
//! the daemon first, then Docker (its containers removed), then the
//! namespaces.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::time::Duration;

pub use portguard_testkit::daemon::{Daemon, until, wait_notify};
pub use portguard_testkit::{
    BUSYBOX_IMAGE, DockerLab, Dockerd, DockerdOptions, NetNs, docker_lab, tcp_probe, tcp_server,
};

/// How long a probe waits for a connection that should succeed; one that
/// should fail costs this much too.
pub const PROBE: Duration = Duration::from_millis(700);

/// Long enough for TCP's first SYN retransmission (after 1 s) to be
/// answered.
pub const RETRANSMITTED: Duration = Duration::from_millis(2500);

pub fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

pub struct Env {
    pub daemon: Option<Daemon>,
    pub dockerd: Dockerd,
    pub lab: DockerLab,
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    notify: Option<UnixDatagram>,
}

impl Env {
    /// Lab and dockerd; no guard yet.
    pub fn new() -> Env {
        Env::on(docker_lab())
    }

    /// Dockerd on a lab the test has prepared (e.g. a host firewall set up
    /// before Docker starts, as on a real host); no guard yet.
    pub fn on(lab: DockerLab) -> Env {
        Env::with_dockerd(lab, DockerdOptions::default())
    }

    /// As [`Env::on`], with a dockerd started with `options` (flags,
    /// environment, PATH).
    pub fn with_dockerd(lab: DockerLab, options: DockerdOptions) -> Env {
        let dockerd = Dockerd::start_with(&lab.host, options);
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("portguard.toml");
        Env {
            daemon: None,
            dockerd,
            lab,
            dir,
            config,
            notify: None,
        }
    }

    /// Lab, dockerd and a guard with `config` (TOML; `[docker] socket` is added).
    pub fn guarded(config: &str) -> Env {
        let mut env = Env::new();
        env.start_guard(config);
        env
    }

    pub fn write_config(&self, body: &str) {
        portguard_testkit::daemon::write_config(&self.config, body, &self.dockerd.socket());
    }

    /// Starts portguardd and waits for READY=1 and Docker's first snapshot.
    pub fn start_guard(&mut self, config: &str) {
        self.write_config(config);
        let notify_path = self
            .dir
            .path()
            .join(format!("notify-{}.sock", std::process::id()));
        let _ = std::fs::remove_file(&notify_path);
        let notify = UnixDatagram::bind(&notify_path).unwrap();
        let daemon = Daemon::start(&self.lab.host, &self.config, Some(&notify_path), &[]);
        wait_notify(&notify, "READY=1", Duration::from_secs(10));
        self.notify = Some(notify);
        self.daemon = Some(daemon);
    }

    pub fn daemon(&self) -> &Daemon {
        self.daemon.as_ref().expect("guard started")
    }

    pub fn status(&self) -> serde_json::Value {
        self.daemon().guardctl_json(&["status"])
    }

    /// Runs a busybox httpd container publishing `ports` (`-p` values) and
    /// waits until the guard has seen every one of them.
    pub fn web(&self, name: &str, ports: &[&str], extra: &str) {
        let publish: Vec<String> = ports.iter().map(|p| format!("-p {p}")).collect();
        self.dockerd.docker(&format!(
            "run -d --name {name} {extra} {} {BUSYBOX_IMAGE} /bin/httpd -f -p 80 -h /www",
            publish.join(" ")
        ));
        self.wait_serving(name);
        if self.daemon.is_some() {
            self.wait_published(name);
        }
    }

    /// Waits until container `name`'s httpd accepts connections (probed
    /// from the host namespace, straight to the container's address), so
    /// that a refused probe later means the guard, not a server still
    /// starting.
    pub fn wait_serving(&self, name: &str) {
        let ip = self.dockerd.docker(&format!(
            "inspect -f '{{{{range .NetworkSettings.Networks}}}}{{{{.IPAddress}}}} {{{{end}}}}' {name}"
        ));
        let Some(addr) = ip
            .split_whitespace()
            .next()
            .map(|ip| sa(&format!("{ip}:80")))
        else {
            return;
        };
        until(
            &format!("{name}'s httpd listening"),
            Duration::from_secs(10),
            || tcp_probe(&self.lab.host, addr, PROBE),
        );
    }

    /// Waits until `guardctl ports` lists a port of container `name`.
    pub fn wait_published(&self, name: &str) {
        until(
            &format!("{name} in guardctl ports"),
            Duration::from_secs(10),
            || {
                self.daemon()
                    .guardctl_json(&["ports"])
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|p| p["container"] == name)
            },
        );
    }

    /// `verdict` of host port `port` in `guardctl ports`.
    pub fn verdict(&self, port: u16) -> String {
        self.daemon()
            .guardctl_json(&["ports"])
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["host_port"] == port)
            .map(|p| p["verdict"].as_str().unwrap().to_string())
            .unwrap_or_else(|| "not-published".into())
    }

    /// Reloads with a new configuration through `guardctl reload`.
    pub fn reload(&self, config: &str) {
        self.write_config(config);
        let out = self.daemon().guardctl(&["reload"]);
        assert!(
            out.status.success(),
            "reload: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Whether `target` answers a TCP connection from `wan`.
    pub fn open_from_wan(&self, target: &str) -> bool {
        tcp_probe(&self.lab.wan, sa(target), PROBE)
    }

    pub fn open_from_wan2(&self, target: &str) -> bool {
        tcp_probe(&self.lab.wan2, sa(target), PROBE)
    }
}

impl Default for Env {
    fn default() -> Self {
        Env::new()
    }
}

/// dockerd flags for an IPv6 default bridge with Docker's ip6tables rules.
/// With IPv6 forwarding off in its namespace, such a dockerd turns it on
/// and sets the `ip6 filter FORWARD` policy to drop, itself (through an
/// `ip6tables` it starts): the drop P6 is about. Docker 20.10 and 26 need
/// `--experimental --ip6tables`; 27 and later have ip6tables on. `None` on
/// Docker 29's nftables backend, which sets no such policy.
pub fn ipv6_bridge_args() -> Option<Vec<String>> {
    let engine = portguard_testkit::engine();
    if engine.nftables_backend() {
        return None;
    }
    let mut args = vec!["--ipv6", "--fixed-cidr-v6", "fd00:d0c::/64"];
    if engine.major < 27 {
        args.extend(["--experimental", "--ip6tables"]);
    }
    Some(args.into_iter().map(String::from).collect())
}

/// Writes into `dir` a docker-proxy that starts `delay_secs` late, as it
/// does on a loaded host, and returns the dockerd flag that uses it.
/// Docker 28 and later open a published port's socket in dockerd and hand
/// it over once docker-proxy has started: dockerd holds it meanwhile.
pub fn slow_docker_proxy(dir: &std::path::Path, delay_secs: u32) -> String {
    use std::os::unix::fs::PermissionsExt;
    let path = portguard_testkit::engine().path_env();
    let real = std::env::split_paths(&path)
        .map(|d| d.join("docker-proxy"))
        .find(|p| p.is_file())
        .expect("docker-proxy on the engine's PATH");
    let wrapper = dir.join("slow-docker-proxy");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nsleep {delay_secs}\nexec {} \"$@\"\n",
            real.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    format!("--userland-proxy-path={}", wrapper.display())
}

/// Turns IPv6 forwarding off in `ns`, so that the next dockerd started
/// with [`ipv6_bridge_args`] turns it on and sets its drop.
pub const IPV6_FORWARDING_OFF: &str = "sysctl -qw net.ipv6.conf.all.forwarding=0";

/// How one TCP probe went: connected after how long, and whether the
/// server answered; or at which step it failed.
#[derive(Debug, Clone)]
pub struct ProbeReport {
    pub ok: bool,
    pub detail: String,
}

/// A probe like [`tcp_probe`] that says where it stopped (connect refused,
/// connect timed out, no answer) and how long each step took.
pub fn tcp_probe_report(ns: &NetNs, target: SocketAddr, timeout: Duration) -> ProbeReport {
    use std::io::{Read, Write};
    ns.enter(move || {
        let started = std::time::Instant::now();
        let mut s = match std::net::TcpStream::connect_timeout(&target, timeout) {
            Ok(s) => s,
            Err(e) => {
                return ProbeReport {
                    ok: false,
                    detail: format!("connect failed after {:?}: {e}", started.elapsed()),
                };
            }
        };
        let connected = started.elapsed();
        let local = s.local_addr().map(|a| a.to_string()).unwrap_or_default();
        s.set_read_timeout(Some(timeout)).ok();
        let _ = s.write_all(b"GET / HTTP/1.0\r\n\r\n");
        let mut buf = [0u8; 64];
        let read = s.read(&mut buf);
        let ok = matches!(read, Ok(n) if n > 0);
        ProbeReport {
            ok,
            detail: format!(
                "from {local}: connected after {connected:?}, read {read:?} after {:?}",
                started.elapsed()
            ),
        }
    })
}

/// Packet counters and an `nft monitor trace` of every packet between the
/// lab's host and `peer` (address `peer_addr`), in a table `inet pgdiag`
/// of each of the two namespaces (the test's own, never the root
/// namespace), for a probe that may fail. Its chains run before (-400)
/// and after (400) every other chain of their hooks.
pub struct PathWatch {
    traces: Vec<(String, std::process::Child, PathBuf)>,
}

impl PathWatch {
    pub fn start(
        lab: &DockerLab,
        peer: &NetNs,
        peer_addr: &str,
        dir: &std::path::Path,
    ) -> PathWatch {
        let (family, nfproto) = if peer_addr.contains(':') {
            ("ip6", "ipv6")
        } else {
            ("ip", "ipv4")
        };
        // Neighbour discovery, for IPv6 (ARP is not seen by inet tables).
        let nd = |dir: &str| {
            if family == "ip6" {
                format!(
                    "{family} {dir} {peer_addr} icmpv6 type nd-neighbor-solicit counter meta nftrace set 1
    {family} {dir} {peer_addr} icmpv6 type nd-neighbor-advert counter meta nftrace set 1"
                )
            } else {
                String::new()
            }
        };
        let (nd_in, nd_out) = (nd("saddr"), nd("daddr"));
        let host_rules = format!(
            "table inet pgdiag {{
  chain pre {{ type filter hook prerouting priority -400; policy accept;
    {family} saddr {peer_addr} tcp flags & (syn | ack) == syn counter meta nftrace set 1
    {nd_in}
    {family} saddr {peer_addr} counter meta nftrace set 1
  }}
  chain in {{ type filter hook input priority 400; policy accept;
    {family} saddr {peer_addr} tcp flags & (syn | ack) == syn counter
    {family} saddr {peer_addr} counter
  }}
  chain out {{ type filter hook output priority -400; policy accept;
    {family} daddr {peer_addr} tcp flags & (syn | ack) == syn | ack counter meta nftrace set 1
    {nd_out}
    {family} daddr {peer_addr} counter meta nftrace set 1
  }}
  chain post {{ type filter hook postrouting priority 400; policy accept;
    {family} daddr {peer_addr} tcp flags & (syn | ack) == syn | ack counter
    {family} daddr {peer_addr} counter
  }}
}}"
        );
        let peer_rules = format!(
            "table inet pgdiag {{
  chain pre {{ type filter hook prerouting priority -400; policy accept;
    meta nfproto {nfproto} tcp flags & (syn | ack) == syn | ack counter meta nftrace set 1
    meta nfproto {nfproto} meta l4proto {{ icmp, ipv6-icmp }} counter meta nftrace set 1
    meta nfproto {nfproto} counter meta nftrace set 1
  }}
  chain in {{ type filter hook input priority 400; policy accept;
    meta nfproto {nfproto} tcp flags & (syn | ack) == syn | ack counter
    meta nfproto {nfproto} counter
  }}
  chain out {{ type filter hook output priority -400; policy accept;
    meta nfproto {nfproto} tcp flags & (syn | ack) == syn counter meta nftrace set 1
    meta nfproto {nfproto} meta l4proto {{ icmp, ipv6-icmp }} counter meta nftrace set 1
    meta nfproto {nfproto} counter meta nftrace set 1
  }}
  chain post {{ type filter hook postrouting priority 400; policy accept;
    meta nfproto {nfproto} tcp flags & (syn | ack) == syn counter
    meta nfproto {nfproto} counter
  }}
}}"
        );
        let mut traces = Vec::new();
        for (role, ns, rules) in [("host", &lab.host, host_rules), ("peer", peer, peer_rules)] {
            ns.sh(&format!("nft -f - <<'EOF'\n{rules}\nEOF"));
            let file = dir.join(format!("trace-{role}.txt"));
            let child = std::process::Command::new("nsenter")
                .arg(format!("--net={}", ns.path()))
                .args(["nft", "monitor", "trace"])
                .stdout(std::fs::File::create(&file).unwrap())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap();
            traces.push((role.to_string(), child, file));
        }
        // `nft monitor` subscribes a moment after it starts.
        std::thread::sleep(Duration::from_millis(200));
        PathWatch { traces }
    }

    /// The traces so far.
    pub fn traces(&self) -> String {
        let mut out = String::new();
        for (role, _, file) in &self.traces {
            let text = std::fs::read_to_string(file).unwrap_or_default();
            out.push_str(&format!("--- nft monitor trace ({role}) ---\n{text}\n"));
        }
        out
    }
}

impl Drop for PathWatch {
    fn drop(&mut self) {
        for (_, child, _) in &mut self.traces {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A counter's packets in `nft list` output: the number after
/// `counter packets` on each line that `pick` selects, summed.
fn counted(listing: &str, pick: impl Fn(&str) -> bool) -> u64 {
    listing
        .lines()
        .filter(|l| pick(l))
        .filter_map(|l| {
            let rest = l.split("counter packets ").nth(1)?;
            rest.split_whitespace().next()?.parse::<u64>().ok()
        })
        .sum()
}

impl PathWatch {
    /// SYNs from the peer seen by the host before any other chain
    /// (prerouting, priority -400) and after every input chain but ours
    /// (input, priority 400): a SYN counted in the first and not the
    /// second was dropped by netfilter in the host, the guard or another.
    pub fn syns(&self, host: &NetNs) -> (u64, u64) {
        let listing = host.sh("nft list table inet pgdiag");
        let mut chain = "";
        let (mut pre, mut input) = (0, 0);
        for line in listing.lines() {
            if let Some(name) = line.trim().strip_prefix("chain ") {
                chain = if name.starts_with("pre ") {
                    "pre"
                } else if name.starts_with("in ") {
                    "in"
                } else {
                    ""
                };
            }
            let syn = counted(line, |l| l.contains("tcp flags syn / syn,ack"));
            match chain {
                "pre" => pre += syn,
                "in" => input += syn,
                _ => {}
            }
        }
        (pre, input)
    }
}

impl Env {
    /// Packets the guard's own rules dropped so far (the `counter ...
    /// drop` of its judge chains; its forward chain's policy drop is not
    /// counted, and is not on the path of a connection to the host).
    pub fn guard_drops(&self) -> u64 {
        let listing = self.lab.host.sh("nft list table inet portguard");
        counted(&listing, |l| l.trim_end().ends_with(" drop"))
    }

    /// Asserts that `peer` (address `peer_addr`), a source an allow entry
    /// lists, connects to `target` through the guard, on a path that ends
    /// in the host itself (docker-proxy's: the guard's input chain).
    ///
    /// The first SYN of a fresh path can be lost before the guard ever
    /// sees it, so a failed first probe is judged by what the host's
    /// netfilter saw: it passes only if no SYN from the peer was dropped
    /// between the host's prerouting and the end of its input chains, the
    /// guard's drop counters did not move, and a second probe, given time
    /// for TCP's SYN retransmission, connects. A guard that drops the
    /// listed source, once or always, fails it. Either way a failed first
    /// probe prints what the host saw (conntrack, neighbours, counters, the
    /// guard's table and log, an nft trace).
    pub fn assert_listed_source_reaches(
        &self,
        peer: &NetNs,
        peer_addr: &str,
        target: &str,
        what: &str,
    ) {
        let target_addr = sa(target);
        // Neighbour discovery both ways, through a port nobody publishes:
        // the guard does not judge it, and the host answers with a reset.
        let knock = std::net::SocketAddr::new(target_addr.ip(), 9);
        let knocked = tcp_probe_report(peer, knock, PROBE);
        let watch = PathWatch::start(&self.lab, peer, peer_addr, self.dir.path());
        let drops_before = self.guard_drops();
        let first = tcp_probe_report(peer, target_addr, PROBE);
        if first.ok {
            return;
        }
        let why = self.explain_failed_probe(peer, peer_addr, target, &first);
        let retry = tcp_probe_report(peer, target_addr, RETRANSMITTED);
        // Trace events are written a moment after the verdicts.
        std::thread::sleep(Duration::from_millis(300));
        let (pre, input) = watch.syns(&self.lab.host);
        // `None`: the counters started again (the table was replaced).
        let dropped_by_guard = self.guard_drops().checked_sub(drops_before);
        let report = format!(
            "{what}: the first probe to {target} failed ({}).\n\
             knock on a closed port before it: {}\n\
             SYNs from {peer_addr}: {pre} at the host's prerouting, {input} past its input chains; \
             packets the guard dropped meanwhile: {dropped_by_guard:?}; \
             a retry with {RETRANSMITTED:?}: {}\n{why}\n{}",
            first.detail,
            knocked.detail,
            retry.detail,
            watch.traces()
        );
        assert!(
            retry.ok && pre == input && dropped_by_guard == Some(0),
            "a listed source was refused: {report}"
        );
        eprintln!("not the guard's drop, the retry connected: {report}");
    }

    /// Everything that tells why `peer` did not reach `target` through the
    /// guarded host: conntrack, neighbours, sockets, counters, the guard's
    /// table and blocked log, and a second probe right after the first.
    pub fn explain_failed_probe(
        &self,
        peer: &NetNs,
        peer_addr: &str,
        target: &str,
        first: &ProbeReport,
    ) -> String {
        let run = |ns: &NetNs, script: &str| {
            let out = ns.run(script);
            format!(
                "--- {} $ {script}\n{}{}",
                ns.name(),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        };
        let host = &self.lab.host;
        let (set, family, conntrack) = if peer_addr.contains(':') {
            ("allow_tcp_v6_ranges", "-6", "ipv6")
        } else {
            ("allow_tcp_v4_ranges", "-4", "ipv4")
        };
        let mut out = format!("first probe: {}\n", first.detail);
        out += &run(host, &format!("conntrack -L -f {conntrack} 2>&1"));
        let routes = format!("ip {family} neigh; ip {family} addr; ip {family} route");
        out += &run(host, &routes);
        out += &run(peer, &routes);
        out += &run(host, "ss -tanpe");
        out += &run(peer, "ss -tane");
        out += &run(host, "nstat -asz | grep -v ' 0 ' ");
        out += &run(peer, "nstat -asz | grep -v ' 0 ' ");
        out += &run(
            host,
            &format!(
                "nft get element inet portguard {set} '{{ {peer_addr} . {} }}'",
                sa(target).port()
            ),
        );
        out += &run(host, "nft -a list ruleset");
        out += &run(peer, "nft list table inet pgdiag");
        if let Some(daemon) = &self.daemon {
            for args in [["blocked", "--json"], ["status", "--json"]] {
                let o = daemon.guardctl(&args);
                out += &format!(
                    "--- guardctl {args:?}\n{}{}\n",
                    String::from_utf8_lossy(&o.stdout),
                    String::from_utf8_lossy(&o.stderr)
                );
            }
            out += &format!("--- portguardd log\n{}\n", daemon.log());
        }
        let second = tcp_probe_report(peer, sa(target), PROBE);
        out += &format!("second probe right after: {}\n", second.detail);
        out += &run(host, "nft list table inet pgdiag");
        out += &run(host, "conntrack -L 2>&1");
        let log = self.dockerd.log();
        let tail: Vec<&str> = log.lines().rev().take(40).collect();
        out += &format!(
            "--- dockerd log (last 40 lines)\n{}\n",
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
        out
    }
}
