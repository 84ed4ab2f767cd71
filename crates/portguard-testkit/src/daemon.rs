//! A portguardd process under test, guardctl against it, and sd_notify.

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::NetNs;

/// A running portguardd, killed (by its pid) when dropped.
pub struct Daemon {
    pub child: Child,
    pub log: PathBuf,
    pub socket: PathBuf,
}

impl Daemon {
    /// Starts portguardd in `ns` with `config`; its control socket is
    /// `control.sock` beside the config file.
    pub fn start(ns: &NetNs, config: &Path, notify: Option<&Path>, env: &[(&str, &str)]) -> Daemon {
        Daemon::start_binary(&binaries().0, ns, config, notify, env)
    }

    /// Like [`Daemon::start`] with an explicit portguardd binary.
    pub fn start_binary(
        binary: &Path,
        ns: &NetNs,
        config: &Path,
        notify: Option<&Path>,
        env: &[(&str, &str)],
    ) -> Daemon {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net={}", ns.path())).arg(binary);
        Daemon::spawn(cmd, config, notify, env)
    }

    /// Like [`Daemon::start`], under the shipped unit's limits that need
    /// no systemd (capability bounding set, `NoNewPrivileges=`,
    /// `ProtectProc=`, `ProcSubset=`, `ProtectSystem=strict`; see
    /// [`crate::sandbox`]), read from systemd/portguard.service. Only the
    /// directory of `config` (socket, state, metrics file) is writable.
    pub fn start_sandboxed(
        ns: &NetNs,
        config: &Path,
        notify: Option<&Path>,
        env: &[(&str, &str)],
    ) -> Daemon {
        let dir = config.parent().expect("config in a directory");
        let mut writable = vec![dir];
        writable.extend(notify.and_then(Path::parent));
        let script = crate::sandbox::UnitLimits::shipped().script(&writable);
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net={}", ns.path()))
            .args(["unshare", "--mount", "--propagation", "private", "--"])
            .args(["sh", "-c", &script, "sh"])
            .arg(binaries().0);
        Daemon::spawn(cmd, config, notify, env)
    }

    /// Runs `launcher` (which ends in the portguardd binary) with the
    /// arguments and environment every test daemon gets.
    fn spawn(
        mut cmd: Command,
        config: &Path,
        notify: Option<&Path>,
        env: &[(&str, &str)],
    ) -> Daemon {
        let log = config.with_extension("log");
        let socket = config.with_file_name("control.sock");
        cmd.arg("--config")
            .arg(config)
            .arg("--socket")
            .arg(&socket)
            .arg("--state-dir")
            .arg(config.with_file_name("state"))
            // Never the machine's own node_exporter directory.
            .arg("--metrics-file")
            .arg(config.with_file_name("portguard.prom"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC");
        if let Some(socket) = notify {
            cmd.env("NOTIFY_SOCKET", socket);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        Daemon {
            child: cmd.spawn().unwrap(),
            log,
            socket,
        }
    }

    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args(["-s", signal, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits for `wanted` among sd_notify datagrams; returns all seen.
pub fn wait_notify(socket: &UnixDatagram, wanted: &str, timeout: Duration) -> Vec<String> {
    let deadline = Instant::now() + timeout;
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        socket
            .set_read_timeout(Some(deadline - Instant::now()))
            .unwrap();
        match socket.recv(&mut buf) {
            Ok(n) => {
                let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                let done = text.lines().any(|l| l == wanted);
                seen.push(text);
                if done {
                    return seen;
                }
            }
            Err(_) => break,
        }
    }
    panic!("no {wanted} within {timeout:?}; got {seen:?}");
}

/// Polls until `check` holds; returns how long it took.
pub fn until(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while started.elapsed() < timeout {
        if check() {
            return started.elapsed();
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    panic!("{what}: not within {timeout:?}");
}

impl Daemon {
    /// Runs `guardctl --socket <ours> ARGS`.
    pub fn guardctl(&self, args: &[&str]) -> std::process::Output {
        Command::new(binaries().1)
            .arg("--socket")
            .arg(&self.socket)
            .args(args)
            .output()
            .unwrap()
    }

    /// `guardctl ARGS --json`, parsed.
    pub fn guardctl_json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = args.to_vec();
        all.push("--json");
        let out = self.guardctl(&all);
        assert!(
            out.status.success(),
            "guardctl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }
}

/// A configuration file whose `[docker] socket` points at `docker_socket`
/// (never at the machine's own Docker).
pub fn write_config(path: &Path, body: &str, docker_socket: &Path) {
    std::fs::write(
        path,
        format!(
            "{body}\n[docker]\nsocket = \"{}\"\n",
            docker_socket.display()
        ),
    )
    .unwrap();
}

/// Paths of portguardd and guardctl, freshly built (see [`crate::built`]).
pub fn binaries() -> (PathBuf, PathBuf) {
    static BUILT: std::sync::Once = std::sync::Once::new();
    let dir = crate::built(&BUILT, &["-p", "portguardd", "-p", "guardctl"]);
    (dir.join("portguardd"), dir.join("guardctl"))
}
