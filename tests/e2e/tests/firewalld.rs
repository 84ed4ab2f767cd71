//! firewalld (nftables backend) beside Docker, in a booted Debian 12:
//! systemd as PID 1 under systemd-nspawn with D-Bus, firewalld and Debian's
//! Docker 20.10 started by systemd, in the container's own network
//! namespace. An outside namespace `wan` reaches the container's `eth0`
//! through a veth pair.
//!
//! Without the guard, a container's published port is reachable over IPv4
//! although firewalld's default zone allows nothing: Docker's DNAT sends
//! the connection down the FORWARD path, where firewalld accepts any DNAT'ed
//! connection (`ct status dnat accept` in `inet firewalld filter_FORWARD`)
//! and Docker's own iptables-nft rules accept it too. The guard closes it,
//! also while and after firewalld reloads and restarts.
//!
//! Docker needs two system calls nspawn's default filter refuses:
//! `add_key`/`keyctl` (runc joins a session keyring) and `bpf` (runc's
//! cgroup v2 device filter); `--system-call-filter` adds them.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use portguard_testkit::booted::{Booted, rootfs, run};
use portguard_testkit::daemon::until;
use portguard_testkit::{NetNs, Prober, addr, busybox_tree, tcp_probe};

/// Bump the file name when the package list changes.
const ROOTFS: &str = "bookworm-firewalld-v1.tar";
/// netbase: nftables' Recommends (service names); firewalld pulls in
/// python3-nftables, its nftables backend, which is the default in Debian 12.
const ROOTFS_PACKAGES: &str =
    "systemd,systemd-sysv,dbus,iproute2,netbase,nftables,firewalld,docker.io";
/// What Docker inside nspawn needs beyond nspawn's defaults.
const NSPAWN_ARGS: &[&str] = &["--system-call-filter=add_key keyctl bpf"];

const V4: &str = "10.88.0.1";
const V6: &str = "fd00:88::1";
/// Published and allowlisted.
const LISTED: u16 = 8080;
/// Published and listed nowhere.
const UNLISTED: u16 = 8081;

const CONFIG: &str = "[guard]\nmode = \"enforce\"\n\n[[allow]]\nport = 8080\ncomment = \"the one port firewalld-guarded users publish\"\n";

fn at(ip: &str, port: u16) -> SocketAddr {
    if ip.contains(':') {
        format!("[{ip}]:{port}").parse().unwrap()
    } else {
        format!("{ip}:{port}").parse().unwrap()
    }
}

/// Whether an HTTP request from `wan` to the container's port is answered.
fn open(wan: &NetNs, ip: &str, port: u16) -> bool {
    tcp_probe(wan, at(ip, port), Duration::from_millis(500))
}

/// Which of (IPv4, IPv6) x (listed, unlisted) answer, as a readable line.
fn reachability(wan: &NetNs) -> String {
    let mut seen = Vec::new();
    for ip in [V4, V6] {
        for port in [LISTED, UNLISTED] {
            let state = if open(wan, ip, port) {
                "open"
            } else {
                "closed"
            };
            seen.push(format!(
                "{}:{port} {state}",
                if ip == V4 { "v4" } else { "v6" }
            ));
        }
    }
    seen.join(", ")
}

/// The package built from this tree (debug binaries), once per test process.
fn debs() -> &'static Path {
    static DEBS: OnceLock<PathBuf> = OnceLock::new();
    DEBS.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("firewalld-test-debs");
        let _ = std::fs::remove_dir_all(&dir);
        let started = Instant::now();
        run(
            Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../packaging/build-deb"))
                .args(["--profile", "debug", "--fast", "--out"])
                .arg(&dir),
        );
        eprintln!("built the .deb in {:.1}s", started.elapsed().as_secs_f64());
        dir
    })
}

/// The booted container with firewalld and Docker running, `app`
/// publishing 8080 and 8081 (busybox httpd on 80 and 81), and `wan`
/// outside.
struct Setup {
    c: Booted,
    wan: NetNs,
}

fn setup() -> Setup {
    let tar = rootfs(ROOTFS, ROOTFS_PACKAGES);
    let c = Booted::new("fwd", &tar, debs(), NSPAWN_ARGS);
    assert_eq!(c.sh("firewall-cmd --state").trim(), "running");
    let backend = c.sh("sed -n 's/^FirewallBackend=//p' /etc/firewalld/firewalld.conf");
    assert_eq!(backend.trim(), "nftables", "firewalld's backend");
    assert!(
        c.sh("nft list tables").contains("table inet firewalld"),
        "firewalld wrote no nftables table"
    );
    assert_eq!(c.sh("systemctl is-active docker.service").trim(), "active");
    // Past the harness's capture, as the testkit's dockerd does, so that a
    // passing run names what it ran on: the container's own Docker,
    // whatever PORTGUARD_ENGINE says.
    let line = format!(
        "engine: Docker {} in the booted container, firewalld {} ({} backend)\n",
        c.sh("docker version --format '{{.Server.Version}}'").trim(),
        c.sh("firewall-cmd --version").trim(),
        backend.trim(),
    );
    let _ = std::io::stderr().write_all(line.as_bytes());

    // The default zone allows no service and no port.
    c.sh(
        "firewall-cmd --permanent --zone=public --remove-service=ssh \
          --remove-service=dhcpv6-client && firewall-cmd --reload",
    );
    assert_eq!(c.sh("firewall-cmd --get-default-zone").trim(), "public");
    assert_eq!(
        c.sh("firewall-cmd --zone=public --list-services").trim(),
        ""
    );
    assert_eq!(c.sh("firewall-cmd --zone=public --list-ports").trim(), "");

    // The outside: wan's eth0 -- the container's eth0.
    let wan = NetNs::new("fwwan");
    wan.sh(&format!(
        "ip link add eth0 type veth peer name pgfwext netns {}",
        c.leader()
    ));
    wan.sh("ip link set eth0 up");
    addr(&wan, "eth0", &["10.88.0.2/24", "fd00:88::2/64"]);
    c.sh(&format!(
        "ip link set pgfwext name eth0 && ip addr add {V4}/24 dev eth0 \
         && ip addr add {V6}/64 dev eth0 nodad && ip link set eth0 up"
    ));

    // The image (busybox from the host) and the container.
    busybox_tree(&c.root().join("var/tmp/pgimage"));
    c.sh("tar -C /var/tmp/pgimage -c . | docker import - pgbusybox >/dev/null");
    c.sh(&format!(
        "docker run -d --name app -p {LISTED}:80 -p {UNLISTED}:81 pgbusybox \
         sh -c 'httpd -p 80 -h /www; httpd -p 81 -h /www; exec sleep 1000000' >/dev/null"
    ));
    Setup { c, wan }
}

/// Probes the unlisted port over IPv4 and IPv6 from `wan` (every ~2 ms
/// each) while `during` runs, and for 300 ms after; returns the attempts
/// made and the connections that got through.
fn probed_during(wan: &NetNs, during: impl FnOnce()) -> (usize, usize) {
    let v4 = Prober::start(wan, at(V4, UNLISTED));
    let v6 = Prober::start(wan, at(V6, UNLISTED));
    std::thread::sleep(Duration::from_millis(200));
    during();
    std::thread::sleep(Duration::from_millis(300));
    let (a4, c4) = v4.finish();
    let (a6, c6) = v6.finish();
    (a4 + a6, c4 + c6)
}

/// Runs `command` in the container while `wan` knocks on the unlisted
/// port; not one connection gets through, and afterwards the guard's
/// verdicts are as before.
fn stays_closed_during(c: &Booted, wan: &NetNs, command: &str) {
    let firewalld_table = || c.sh("nft -a list table inet firewalld | head -1");
    let before = firewalld_table();
    let started = Instant::now();
    let (attempts, connected) = probed_during(wan, || {
        c.sh(command);
    });
    // The command did what it is for: firewalld wrote its table anew.
    let after = firewalld_table();
    assert_ne!(before, after, "{command} left firewalld's table as it was");
    eprintln!(
        "{command}: {:.1}s, {attempts} attempts on {UNLISTED} (v4+v6), {connected} got through",
        started.elapsed().as_secs_f64()
    );
    assert!(attempts > 200, "only {attempts} attempts");
    assert_eq!(connected, 0, "connections got through during {command}");
    assert_guarded(wan, &format!("after {command}"));
}

/// The guard's verdicts from outside: listed open and unlisted closed, over
/// IPv4 and IPv6.
fn assert_guarded(wan: &NetNs, when: &str) {
    for ip in [V4, V6] {
        assert!(
            !open(wan, ip, UNLISTED),
            "{when}: unlisted {ip}:{UNLISTED} is reachable ({})",
            reachability(wan)
        );
        assert!(
            open(wan, ip, LISTED),
            "{when}: listed {ip}:{LISTED} is closed ({})",
            reachability(wan)
        );
    }
}

#[test]
fn p1_p5_firewalld_nftables_bypass_closed_by_the_guard_through_firewalld_reload_and_restart() {
    let total = Instant::now();
    let Setup { c, wan } = setup();
    eprintln!(
        "setup (rootfs, boot, firewalld, Docker, app): {:.1}s",
        total.elapsed().as_secs_f64()
    );

    // The bypass: firewalld allows nothing, yet both ports answer over IPv4.
    until(
        "app answers on 8080 over IPv4",
        Duration::from_secs(20),
        || open(&wan, V4, LISTED),
    );
    let before = reachability(&wan);
    eprintln!("without the guard, firewalld allowing nothing: {before}");
    assert!(
        open(&wan, V4, UNLISTED),
        "no bypass to show: {before}\n{}",
        c.sh("nft list ruleset")
    );
    // Over IPv6, Docker 20.10 publishes through docker-proxy on the host
    // (INPUT), where firewalld's zone rejects it.
    assert!(
        !open(&wan, V6, LISTED) && !open(&wan, V6, UNLISTED),
        "{before}"
    );
    // Docker put its bridge in firewalld's `docker` zone (target ACCEPT).
    let zones = c.sh("firewall-cmd --get-active-zones");
    eprintln!("active zones:\n{zones}");
    assert!(zones.contains("docker"), "{zones}");

    // Open both ports in firewalld, so that over IPv6 only the guard can
    // close anything; over IPv4 this changes nothing (FORWARD path).
    c.sh(&format!(
        "firewall-cmd --permanent --zone=public --add-port={LISTED}-{UNLISTED}/tcp \
         && firewall-cmd --reload"
    ));
    until(
        "both ports over IPv6 with the ports open in firewalld",
        Duration::from_secs(10),
        || open(&wan, V6, LISTED) && open(&wan, V6, UNLISTED),
    );
    assert!(open(&wan, V4, UNLISTED), "{}", reachability(&wan));
    eprintln!(
        "without the guard, ports open in firewalld: {}",
        reachability(&wan)
    );

    // The guard, from the package, allowing 8080 only.
    let started = Instant::now();
    let deb = c.sh("ls /debs/*.deb");
    c.sh(&format!(
        "apt-get install -y -q {} >/dev/null 2>&1",
        deb.trim()
    ));
    std::fs::write(c.root().join("etc/portguard/portguard.toml"), CONFIG).unwrap();
    c.sh("systemctl reload portguard.service");
    let took = until(
        "unlisted port closed by the guard",
        Duration::from_secs(15),
        || !open(&wan, V4, UNLISTED),
    );
    eprintln!(
        "install + configure: {:.1}s (closed {:.1}s after reload)",
        started.elapsed().as_secs_f64(),
        took.as_secs_f64()
    );
    assert_guarded(&wan, "with the guard");
    eprintln!("with the guard: {}", reachability(&wan));
    eprintln!("guardctl ports:\n{}", c.sh("guardctl ports"));

    // firewall-cmd --reload: firewalld rebuilds its table, Docker re-adds
    // its zone. systemctl restart firewalld: its table is deleted at stop
    // and written again at start.
    for command in [
        "firewall-cmd --reload",
        "systemctl restart firewalld.service",
    ] {
        stays_closed_during(&c, &wan, command);
    }
    assert_eq!(c.sh("firewall-cmd --state").trim(), "running");

    let status = c.sh("guardctl status --json");
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    eprintln!(
        "guard: restores {}, protection {}",
        status["restores"], status["protection"]
    );
    assert_eq!(status["ruleset"]["installed"], true, "{status}");
    eprintln!("whole test: {:.1}s", total.elapsed().as_secs_f64());
}

/// A kernel without nfnetlink, as far as portguardd can tell: the unit's
/// system call filter answers every `socket()` with EPROTONOSUPPORT, what
/// the kernel answers for `NETLINK_NETFILTER` when nfnetlink is missing
/// (modules cannot be unloaded from the running kernel for a test). The
/// packaged daemon exits at start with a sentence naming the module and how
/// to load it. (The mapping of every such answer is unit-tested in
/// crates/portguardd/src/nf_tables.rs.)
#[test]
fn portguardd_on_a_kernel_without_nfnetlink_exits_naming_nf_tables_and_modprobe() {
    let tar = rootfs(ROOTFS, ROOTFS_PACKAGES);
    let c = Booted::new("nonft", &tar, debs(), NSPAWN_ARGS);
    let deb = c.sh("ls /debs/*.deb");
    c.sh(&format!(
        "apt-get install -y -q {} >/dev/null 2>&1",
        deb.trim()
    ));
    let out = c.exec(
        "systemd-run --quiet --wait --pipe --collect \
         -p SystemCallFilter=~socket -p SystemCallErrorNumber=EPROTONOSUPPORT \
         /usr/sbin/portguardd --socket /run/pgnonft/control.sock --state-dir /run/pgnonft 2>&1",
    );
    let log = String::from_utf8_lossy(&out.stdout);
    eprintln!("portguardd without nfnetlink:\n{log}");
    assert!(!out.status.success(), "portguardd started anyway:\n{log}");
    assert!(log.contains("has no nfnetlink"), "{log}");
    assert!(log.contains("modprobe nf_tables"), "{log}");
    // The installed unit, on the same kernel with nf_tables, is unaffected.
    assert_eq!(
        c.sh("systemctl is-active portguard.service").trim(),
        "active"
    );
}
