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

/// Turns IPv6 forwarding off in `ns`, so that the next dockerd started
/// with [`ipv6_bridge_args`] turns it on and sets its drop.
pub const IPV6_FORWARDING_OFF: &str = "sysctl -qw net.ipv6.conf.all.forwarding=0";
