//! The daemon as it runs in production: the Debian package's own unit,
//! with its whole sandbox (capability bounding set without
//! CAP_SYS_PTRACE, `ProtectProc=invisible`, `ProcSubset=pid`,
//! `RestrictAddressFamilies=`, `SystemCallFilter=`, `ProtectSystem=strict`
//! and the rest), started by systemd as PID 1 in a booted Debian 12 beside
//! Debian's own docker.io under its own docker.service. An outside
//! namespace (`wan`) reaches the container over a veth, as another host
//! would. The unit under test is the file the package ships, so the test
//! and the unit cannot drift apart.
//!
//! The root filesystem (with docker.io) is built once with mmdebstrap
//! and cached in /var/cache/portguard-tests; see tests/systemd.rs.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use portguard_e2e::{BUSYBOX_IMAGE, NetNs, PROBE, sa, tcp_probe, until};
use portguard_testkit::Prober;
use portguard_testkit::booted::{
    BASE_VERSION, Booted, base_and_upgrade_debs, deb_in_container, rootfs, upgrade_version,
};
use serde_json::Value;

/// Bump when the package list changes, so a stale tarball is not reused.
const ROOTFS: &str = "bookworm-systemd-docker-v1.tar";
const ROOTFS_PACKAGES: &str = "systemd,systemd-sysv,dbus,iproute2,iptables,docker.io";
/// nspawn's own seccomp filter refuses the keyring calls and bpf(2) that
/// runc needs to start a container inside.
const NSPAWN_FOR_DOCKER: [&str; 2] = ["--system-call-filter=@keyring", "--system-call-filter=bpf"];

/// Both packages (the current version and a higher rebuild).
fn debs() -> &'static Path {
    base_and_upgrade_debs()
}

/// A booted Debian 12 with Docker running, joined to an outside host:
/// the container is 10.88.0.1 and fd00:88::1 on its eth0, `wan` is
/// 10.88.0.2 and fd00:88::2.
struct Production {
    c: Booted,
    wan: NetNs,
}

impl Production {
    fn boot(role: &str) -> Production {
        let c = Booted::new(
            role,
            &rootfs(ROOTFS, ROOTFS_PACKAGES),
            debs(),
            &NSPAWN_FOR_DOCKER,
        );
        let wan = NetNs::new("swan");
        c.link_outside(&wan, "eth0", "eth0");
        c.sh("ip addr add 10.88.0.1/24 dev eth0 && ip addr add fd00:88::1/64 dev eth0 nodad");
        wan.sh("ip addr add 10.88.0.2/24 dev eth0 && ip addr add fd00:88::2/64 dev eth0 nodad");
        assert_eq!(c.sh("systemctl is-active docker.service").trim(), "active");
        // The test image, from the host's busybox.
        let image = c.root().join("pgimage");
        portguard_testkit::busybox_tree(&image);
        c.sh(&format!(
            "tar -C /pgimage -c . | docker import - {BUSYBOX_IMAGE} >/dev/null && rm -rf /pgimage"
        ));
        Production { c, wan }
    }

    fn install(&self) {
        let started = Instant::now();
        self.c.sh(&format!(
            "apt-get install -y -q {} 2>&1",
            deb_in_container(BASE_VERSION)
        ));
        eprintln!("apt-get install: {:.1}s", started.elapsed().as_secs_f64());
        assert_eq!(
            self.c.sh("systemctl is-active portguard.service").trim(),
            "active"
        );
    }

    /// Whether a TCP connection from `wan` to `target` completes and gets
    /// an answer.
    fn open_from_wan(&self, target: &str) -> bool {
        tcp_probe(&self.wan, sa(target), PROBE)
    }

    /// Whether a TCP handshake from `wan` to `target` completes within
    /// `timeout`: what an attacker needs.
    fn connects(&self, target: &str, timeout: Duration) -> bool {
        let target = sa(target);
        self.wan
            .enter(move || TcpStream::connect_timeout(&target, timeout).is_ok())
    }

    fn status(&self) -> Value {
        let out = self.c.exec("guardctl status --json");
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "guardctl status --json: {e}\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        })
    }

    fn journal(&self, filter: &str) -> String {
        self.c.sh(&format!(
            "journalctl -u portguard {filter} --no-pager -o cat"
        ))
    }

    /// Writes the allow entries in a drop-in and reloads.
    fn allow(&self, toml: &str) {
        self.c.sh(&format!(
            "printf '%s\\n' '{toml}' > /etc/portguard/conf.d/50-test.toml \
             && systemctl reload portguard.service"
        ));
    }

    /// `docker run -d --name NAME -p PUBLISH IMAGE COMMAND`, then waits
    /// until the guard lists it.
    fn run(&self, name: &str, publish: &str, command: &str) {
        self.c.sh(&format!(
            "docker run -d --name {name} -p {publish} {BUSYBOX_IMAGE} {command} >/dev/null"
        ));
        until(
            &format!("{name} in guardctl ports"),
            Duration::from_secs(15),
            || {
                serde_json::from_str::<Value>(&self.c.sh("guardctl ports --json"))
                    .unwrap()
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|p| p["container"] == name)
            },
        );
    }
}

/// The Docker API listeners `status` shows, as (port, verdict).
fn docker_api(status: &Value) -> Vec<(u64, String)> {
    status["docker_api"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["port"].as_u64().unwrap(),
                l["verdict"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// The docker.service drop-in that makes dockerd listen on TCP 4243,
/// as `-H tcp://0.0.0.0:4243` in an administrator's override would.
const DOCKER_ON_TCP: &str = "[Service]\nExecStart=\nExecStart=/usr/sbin/dockerd -H fd:// \
     -H tcp://0.0.0.0:4243 --tls=false --containerd=/run/containerd/containerd.sock\n";

#[test]
fn docker_api_on_tcp_is_closed_from_outside_under_the_shipped_unit_and_shown_in_status() {
    let total = Instant::now();
    let p = Production::boot("api");
    p.c.sh(&format!(
        "mkdir -p /etc/systemd/system/docker.service.d \
         && printf '{}' > /etc/systemd/system/docker.service.d/tcp.conf \
         && systemctl daemon-reload && systemctl restart docker.service",
        DOCKER_ON_TCP.replace('\n', "\\n")
    ));
    // Without the guard the outside host reaches the API.
    until(
        "the Docker API answers from wan",
        Duration::from_secs(20),
        || p.open_from_wan("10.88.0.1:4243"),
    );

    // The package starts the unit with dockerd already listening.
    p.install();
    let closed_after = until(
        "the Docker API closed from wan under the shipped unit",
        Duration::from_secs(20),
        || !p.connects("10.88.0.1:4243", Duration::from_millis(50)),
    );
    eprintln!(
        "docker api under the unit: closed from wan {:.2} s after apt-get install returned",
        closed_after.as_secs_f64()
    );
    let connect = || p.connects("10.88.0.1:4243", Duration::from_millis(500));
    assert!(!connect(), "a TCP connect from outside still completes");
    let status = p.status();
    assert!(
        docker_api(&status).contains(&(4243, "closed".into())),
        "{status:#}"
    );
    // The unit gives no CAP_SYS_PTRACE, so dockerd's open files are not
    // readable: the cgroup told them apart.
    assert_eq!(status["docker_api_scan"]["method"], "cgroup", "{status:#}");
    // And the fleet sees how (PortguardDockerApiScanBlind pages on "blind").
    let metrics = p.c.sh("guardctl metrics");
    assert!(
        metrics.contains("portguard_docker_api_scan_info{method=\"cgroup\"} 1"),
        "{metrics}"
    );
    let text = p.c.sh("guardctl status");
    assert!(
        text.contains("WARNING: dockerd") && text.contains(":4243"),
        "{text}"
    );
    // The host itself still reaches it.
    p.c.sh("docker -H tcp://127.0.0.1:4243 version >/dev/null");

    // dockerd restarted with one more listener, on 4244, while an outside
    // host knocks on both every 2 ms: the known one stays closed, the new
    // one is closed once the scanner finds it; measured.
    p.c.sh(&format!(
        "printf '{}' > /etc/systemd/system/docker.service.d/tcp.conf && systemctl daemon-reload",
        DOCKER_ON_TCP
            .replace(
                "-H tcp://0.0.0.0:4243",
                "-H tcp://0.0.0.0:4243 -H tcp://0.0.0.0:4244"
            )
            .replace('\n', "\\n")
    ));
    let known = Prober::start(&p.wan, sa("10.88.0.1:4243"));
    let new = Prober::start(&p.wan, sa("10.88.0.1:4244"));
    let started = Instant::now();
    p.c.sh("systemctl restart docker.service");
    let restarted = started.elapsed();
    let found = until(
        "the new listener in status",
        Duration::from_secs(20),
        || docker_api(&p.status()).contains(&(4244, "closed".into())),
    );
    std::thread::sleep(Duration::from_millis(300));
    let (known_attempts, known_through) = known.finish();
    let (new_attempts, new_through) = new.finish();
    eprintln!(
        "docker api under the unit, dockerd restarted with a new listener: `systemctl restart \
         docker` took {:.2} s, the new listener was in status {:.2} s after it returned; through \
         from wan meanwhile: 4243 {known_through} of {known_attempts}, 4244 {new_through} of \
         {new_attempts}",
        restarted.as_secs_f64(),
        found.as_secs_f64()
    );
    assert!(!connect(), "4243 open after dockerd restarted");
    assert!(
        !p.connects("10.88.0.1:4244", Duration::from_millis(500)),
        "the new listener is open from outside"
    );

    // A published port: docker-proxy listens in dockerd's cgroup, but it
    // is not the Docker API (else its IPv6 path, which goes through
    // docker-proxy, would be closed to the unsourced entry below).
    p.allow("[[allow]]\nport = 8080");
    p.run("web", "8080:80", "/bin/httpd -f -p 80 -h /www");
    until(
        "the allowed port answers from wan over IPv4 and IPv6",
        Duration::from_secs(10),
        || p.open_from_wan("10.88.0.1:8080") && p.open_from_wan("[fd00:88::1]:8080"),
    );
    let status = p.status();
    assert_eq!(
        docker_api(&status),
        vec![(4243, "closed".to_string()), (4244, "closed".to_string())],
        "{status:#}"
    );
    assert!(!p.open_from_wan("10.88.0.1:4243"));

    // Each permission error is in the journal, once (scans ran after
    // every netfilter change above, and every 30 s).
    let warnings: Vec<String> = p
        .journal("PORTGUARD_EVENT=docker_api_scan")
        .lines()
        .filter(|l| l.contains("Permission denied"))
        .map(String::from)
        .collect();
    eprintln!("docker api scan warnings:\n{}", warnings.join("\n"));
    assert!(!warnings.is_empty(), "no permission error was logged");
    let distinct: HashSet<&String> = warnings.iter().collect();
    assert_eq!(
        distinct.len(),
        warnings.len(),
        "a permission error was logged more than once"
    );
    let scans = p.journal("PORTGUARD_EVENT=docker_api_scan");
    assert!(scans.contains("told by its cgroup"), "{scans}");
    eprintln!("whole test: {:.1}s", total.elapsed().as_secs_f64());
}

/// Reads what the echo server sends back.
fn echoes(mut s: &TcpStream, text: &[u8]) -> bool {
    let mut buf = [0u8; 16];
    s.write_all(text).is_ok() && matches!(s.read(&mut buf), Ok(n) if &buf[..n] == text)
}

#[test]
fn p10_blocked_attempts_ended_connections_and_the_metrics_file_work_under_the_shipped_unit() {
    let total = Instant::now();
    let p = Production::boot("ops");
    p.install();
    p.allow("[[allow]]\nport = 8090\n[[allow]]\nport = 8091");
    p.run("db", "8081:80", "/bin/httpd -f -p 80 -h /www");
    for (name, port) in [("gone", 8090), ("kept", 8091)] {
        p.run(name, &format!("{port}:80"), "/bin/nc -ll -p 80 -e /bin/cat");
    }

    // nflog: blocked attempts, counted per host port (`guardctl blocked`).
    for target in ["10.88.0.1:8081", "[fd00:88::1]:8081"] {
        assert!(!tcp_probe(&p.wan, sa(target), Duration::from_millis(300)));
    }
    until(
        "guardctl blocked counts the attempts on 8081",
        Duration::from_secs(10),
        || {
            let report: Value = serde_json::from_str(&p.c.sh("guardctl blocked --json")).unwrap();
            report["ports"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["port"] == 8081 && e["proto"] == "tcp" && e["distinct_sources"] == 2)
        },
    );

    // conntrack: a port removed from the allowlist ends its connections.
    let connect = |target: &'static str| {
        p.wan.enter(move || {
            let s = TcpStream::connect_timeout(&sa(target), Duration::from_secs(2)).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            s
        })
    };
    let gone = connect("10.88.0.1:8090");
    let kept = connect("10.88.0.1:8091");
    until("both echo servers answer", Duration::from_secs(10), || {
        echoes(&gone, b"a") && echoes(&kept, b"a")
    });
    p.allow("[[allow]]\nport = 8091");
    assert!(
        !echoes(&gone, b"b"),
        "the connection to the removed port lives on"
    );
    assert!(echoes(&kept, b"b"), "the kept port's connection was ended");
    assert!(p.status()["ended_connections"].as_u64().unwrap() >= 1);

    // The metrics file, in node_exporter's directory once it exists
    // (the unit binds it writable only if it did at start).
    const PROM: &str = "/var/lib/prometheus/node-exporter/portguard.prom";
    p.c.sh("mkdir -p /var/lib/prometheus/node-exporter && systemctl restart portguard.service");
    until("the metrics file written", Duration::from_secs(10), || {
        p.c.exec(&format!("grep -qx 'portguard_up 1' {PROM}"))
            .status
            .success()
    });

    // `--metrics-file ''` turns it off, and the unit starts (it exited 2
    // and systemd restarted it every second).
    p.c.sh(
        "mkdir -p /etc/systemd/system/portguard.service.d \
         && printf '[Service]\\nExecStart=\\nExecStart=/usr/sbin/portguardd --metrics-file \"\"\\n' \
            > /etc/systemd/system/portguard.service.d/metrics-off.conf \
         && systemctl daemon-reload && systemctl stop portguard.service",
    );
    p.c.sh(&format!("rm -f {PROM}"));
    let started = p.c.exec("systemctl start portguard.service");
    assert!(
        started.status.success(),
        "the unit did not start with --metrics-file '':\n{}",
        p.journal("-n 5")
    );
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        p.c.sh("systemctl show -p NRestarts --value portguard.service")
            .trim(),
        "0"
    );
    assert_eq!(
        p.c.sh("systemctl is-active portguard.service").trim(),
        "active"
    );
    assert!(
        !p.c.exec(&format!("test -e {PROM}")).status.success(),
        "--metrics-file '' still wrote the file"
    );
    p.c.sh(
        "rm /etc/systemd/system/portguard.service.d/metrics-off.conf \
         && systemctl daemon-reload && systemctl restart portguard.service",
    );
    until("the metrics file back", Duration::from_secs(10), || {
        p.c.exec(&format!("test -e {PROM}")).status.success()
    });

    // Removing the package takes the file along: a `portguard_up 0` left
    // behind would be exported, and alerted on, forever.
    p.c.sh("apt-get purge -y -q portguard 2>&1");
    assert!(
        !p.c.exec(&format!("test -e {PROM}")).status.success(),
        "the metrics file outlived the package: {}",
        p.c.sh(&format!("cat {PROM}"))
    );
    eprintln!("whole test: {:.1}s", total.elapsed().as_secs_f64());
}

/// Issue 18: every upgrade restarts the daemon
/// (`dh_installsystemd --restart-after-upgrade`), and a restart judged
/// less than the table it found until Docker answered: a port published
/// on a custom-named bridge (IPv4) and every port on the docker-proxy
/// path (IPv6) were open. Here the upgrade runs under the real unit with
/// Docker running, then again with dockerd frozen (a hung Docker), while
/// probers knock on unlisted ports from outside; every completed
/// connection counts.
#[test]
fn p5_a_package_upgrade_lets_no_connection_through_also_with_docker_hung() {
    let p = Production::boot("upgrade");
    p.install();
    p.c.sh(
        "docker network create -o com.docker.network.bridge.name=custom0 --subnet 10.99.7.0/24 custnet >/dev/null",
    );
    p.c.sh(&format!(
        "docker run -d --name custom --network custnet -p 8080:80 {BUSYBOX_IMAGE} /bin/httpd -f -p 80 -h /www >/dev/null"
    ));
    p.run("plain", "8081:80", "/bin/httpd -f -p 80 -h /www");
    until("custom in guardctl ports", Duration::from_secs(15), || {
        p.c.sh("guardctl ports --json").contains("\"custom\"")
    });
    let targets = ["10.88.0.1:8080", "[fd00:88::1]:8080", "[fd00:88::1]:8081"];
    for target in targets {
        assert!(!p.open_from_wan(target), "{target} before the upgrade");
    }
    let knock = |what: &str, during: &dyn Fn()| {
        let probers: Vec<Prober> = targets
            .iter()
            .map(|t| Prober::start(&p.wan, sa(t)))
            .collect();
        during();
        std::thread::sleep(Duration::from_secs(2));
        for (target, prober) in targets.iter().zip(probers) {
            let (attempts, connected) = prober.finish();
            println!("{what}: {target}: {connected} of {attempts} connection attempts got through");
            assert!(attempts > 0);
            assert_eq!(connected, 0, "{what}: {target} answered from outside");
        }
    };
    let install = |version: &str| {
        p.c.sh(&format!(
            "apt-get install -y -q --allow-downgrades {} 2>&1",
            deb_in_container(version)
        ));
    };
    knock("upgrade", &|| install(&upgrade_version()));
    p.c.sh("systemctl kill --kill-who=main -s STOP docker.service");
    knock("downgrade, dockerd frozen", &|| install(BASE_VERSION));
    p.c.sh("systemctl kill --kill-who=main -s CONT docker.service");
    assert_eq!(
        p.c.sh("systemctl is-active portguard.service").trim(),
        "active"
    );
}
