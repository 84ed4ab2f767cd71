//! A Debian 12 root filesystem booted with systemd as PID 1 under
//! systemd-nspawn, in a network namespace of its own: for what needs a
//! real init and D-Bus (the Debian package's unit, firewalld, a Docker
//! started by systemd).
//!
//! Root filesystems are built once with mmdebstrap and cached as tarballs
//! in [`CACHE`] (delete one to rebuild it); each container unpacks its own
//! copy. The host's PID 1 need not be systemd: nspawn runs with
//! `--register=no --keep-unit` in a cgroup of the container's own, which
//! `Drop` kills and removes, also when the test fails.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::COUNTER;

/// Where root filesystem tarballs are kept between runs.
pub const CACHE: &str = "/var/cache/portguard-tests";

/// Runs `cmd`, panicking with its output unless it succeeds.
pub fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The tarball `file` in [`CACHE`]: Debian 12 (minbase) with `packages`
/// (comma-separated) installed, built on first use from the host's Debian
/// mirror; a lock keeps two test processes from building it twice. Name a
/// new file when the package list changes, so a stale one is not reused.
pub fn rootfs(file: &str, packages: &str) -> PathBuf {
    let tar = Path::new(CACHE).join(file);
    std::fs::create_dir_all(CACHE).unwrap();
    let mirror = std::fs::read_to_string("/etc/apt/sources.list.d/debian.sources")
        .ok()
        .and_then(|s| {
            s.lines()
                .filter_map(|l| l.strip_prefix("URIs:"))
                .map(str::trim)
                .find(|u| !u.contains("security"))
                .map(str::to_string)
        })
        .unwrap_or_else(|| "http://deb.debian.org/debian".into());
    let script = format!(
        "test -s {tar} || {{ mmdebstrap --mode=root --format=tar --variant=minbase \
         --include={packages} \
         --aptopt='Acquire::Check-Valid-Until \"false\"' --aptopt='Acquire::Check-Date \"false\"' \
         --customize-hook='echo pgtest > \"$1/etc/hostname\"' \
         bookworm {tar}.tmp 'deb {mirror} bookworm main' > {CACHE}/mmdebstrap-{file}.log 2>&1 \
         && mv {tar}.tmp {tar}; }}",
        tar = tar.display()
    );
    let started = Instant::now();
    run(Command::new("flock")
        .arg(format!("{CACHE}/.lock"))
        .args(["sh", "-c", &script]));
    eprintln!(
        "rootfs {file} ready in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    tar
}

/// The workspace this testkit belongs to.
fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Builds the workspace's Debian package (debug profile, gzip) once for
/// each of `versions` into `dir`, emptied first: what [`Booted::new`]
/// copies to `/debs`.
pub fn build_debs(dir: &Path, versions: &[&str]) {
    let _ = std::fs::remove_dir_all(dir);
    for version in versions {
        let started = Instant::now();
        run(Command::new(workspace().join("packaging/build-deb"))
            .args([
                "--profile",
                "debug",
                "--fast",
                "--version",
                version,
                "--out",
            ])
            .arg(dir));
        eprintln!("built {version} in {:.1}s", started.elapsed().as_secs_f64());
    }
}

/// The version the workspace builds.
pub const BASE_VERSION: &str = env!("CARGO_PKG_VERSION");

/// The rebuilt package an upgrade goes to (dpkg sorts `+` after the end).
pub fn upgrade_version() -> String {
    format!("{BASE_VERSION}+rebuild1")
}

/// The package and a higher rebuild (for upgrades), built once per test
/// process beside the test binaries; returns their directory.
pub fn base_and_upgrade_debs() -> &'static Path {
    static DEBS: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DEBS.get_or_init(|| {
        let exe = std::env::current_exe().unwrap();
        let dir = exe
            .parent()
            .and_then(|d| d.parent())
            .unwrap()
            .join(format!("portguard-test-debs-{}", std::process::id()));
        build_debs(&dir, &[BASE_VERSION, &upgrade_version()]);
        dir
    })
}

/// The path inside a container of the package [`build_debs`] built for
/// `version`.
pub fn deb_in_container(version: &str) -> String {
    let arch =
        String::from_utf8(run(Command::new("dpkg").arg("--print-architecture")).stdout).unwrap();
    format!("/debs/portguard_{version}_{}.deb", arch.trim())
}

/// A booted container. Dropping it powers it off, kills whatever is left
/// in its cgroup and removes cgroups and files.
pub struct Booted {
    name: String,
    dir: PathBuf,
    cgroups: Vec<PathBuf>,
    nspawn: Option<Child>,
    leader: u32,
    boots: usize,
    nspawn_args: Vec<String>,
}

impl Booted {
    /// Unpacks `tar`, copies the files of `debs` to `/debs` (read-only)
    /// and boots it with `nspawn_args` added to the command line.
    pub fn new(role: &str, tar: &Path, debs: &Path, nspawn_args: &[&str]) -> Booted {
        let k = COUNTER.fetch_add(1, Ordering::SeqCst);
        let name = format!("pg{}b{k}{role}", std::process::id());
        let dir = Path::new("/var/tmp/portguard-tests").join(&name);
        // nspawn puts its own cgroups under the launcher's: give every
        // container a private one (hybrid layout: both hierarchies).
        let cgroups = if Path::new("/sys/fs/cgroup/unified").is_dir() {
            vec![
                PathBuf::from("/sys/fs/cgroup/unified").join(&name),
                PathBuf::from("/sys/fs/cgroup/systemd").join(&name),
            ]
        } else {
            vec![PathBuf::from("/sys/fs/cgroup").join(&name)]
        };
        let mut booted = Booted {
            name,
            dir,
            cgroups,
            nspawn: None,
            leader: 0,
            boots: 0,
            nspawn_args: nspawn_args.iter().map(|a| a.to_string()).collect(),
        };
        let root = booted.dir.join("root");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::create_dir_all(booted.dir.join("debs")).unwrap();
        let started = Instant::now();
        run(Command::new("tar")
            .arg("-C")
            .arg(&root)
            .args(["--numeric-owner", "-xpf"])
            .arg(tar));
        for entry in std::fs::read_dir(debs).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(
                entry.path(),
                booted.dir.join("debs").join(entry.file_name()),
            )
            .unwrap();
        }
        eprintln!(
            "[{}] unpacked in {:.1}s",
            booted.name,
            started.elapsed().as_secs_f64()
        );
        booted.boot();
        booted
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The container's PID 1 as the host sees it (for `nsenter -t`, or
    /// `ip link set ... netns`).
    pub fn leader(&self) -> u32 {
        self.leader
    }

    /// Joins the container's network namespace to `outside` with a veth
    /// pair: `outside_if` in `outside`, `inside_if` in the container; both
    /// up, no addresses.
    pub fn link_outside(&self, outside: &crate::NetNs, outside_if: &str, inside_if: &str) {
        outside.sh(&format!(
            "ip link add {outside_if} type veth peer name {inside_if} netns {leader} \
             && ip link set {outside_if} up",
            leader = self.leader
        ));
        self.sh(&format!("ip link set {inside_if} up"));
    }

    /// The container's root directory as the host sees it.
    pub fn root(&self) -> PathBuf {
        self.dir.join("root")
    }

    /// A host directory of this container's own (its root is below it),
    /// removed on drop.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn boot(&mut self) {
        let started = Instant::now();
        self.boots += 1;
        for cg in &self.cgroups {
            std::fs::create_dir_all(cg).unwrap();
        }
        let console =
            std::fs::File::create(self.dir.join(format!("console{}.log", self.boots))).unwrap();
        let cgroup_procs: Vec<String> = self
            .cgroups
            .iter()
            .map(|c| format!("echo $$ > {}/cgroup.procs", c.display()))
            .collect();
        // Host PID 1 is not systemd and there is no machined: --register=no
        // --keep-unit. Pure cgroup v2 inside gives a clean boot.
        let launch = format!(
            "{} && exec systemd-nspawn -D {root} -M {name} --register=no --keep-unit \
             --private-network --link-journal=no --console=read-only \
             --bind-ro={debs}:/debs {extra} -b",
            cgroup_procs.join(" && "),
            root = self.dir.join("root").display(),
            debs = self.dir.join("debs").display(),
            name = self.name,
            extra = self
                .nspawn_args
                .iter()
                .map(|a| format!("'{a}'"))
                .collect::<Vec<_>>()
                .join(" "),
        );
        let child = Command::new("sh")
            .args(["-c", &launch])
            .env("SYSTEMD_NSPAWN_UNIFIED_HIERARCHY", "1")
            .stdin(Stdio::null())
            .stdout(console.try_clone().unwrap())
            .stderr(console)
            .spawn()
            .unwrap();
        let pid = child.id();
        self.nspawn = Some(child);
        self.leader = 0;
        // nspawn's first child is a short-lived helper; the container's
        // PID 1 is the child that runs systemd.
        for _ in 0..200 {
            let out = Command::new("ps")
                .args(["-o", "pid=,comm=", "--ppid", &pid.to_string()])
                .output()
                .unwrap();
            if let Some(p) = String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter_map(|l| l.trim().split_once(char::is_whitespace))
                .find(|(_, comm)| comm.trim() == "systemd")
                .and_then(|(p, _)| p.trim().parse().ok())
            {
                self.leader = p;
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(self.leader != 0, "no container leader:\n{}", self.console());
        let mut state = String::new();
        for _ in 0..240 {
            let out = self.exec("systemctl is-system-running --wait 2>/dev/null || true");
            state = String::from_utf8_lossy(&out.stdout).into_owned();
            if state.trim() == "running" || state.trim() == "degraded" {
                break;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        assert!(
            matches!(state.trim(), "running" | "degraded"),
            "container did not boot ({state}):\n{}",
            self.console()
        );
        if state.trim() == "degraded" {
            eprintln!("degraded: {}", self.sh("systemctl --failed --no-pager"));
        }
        eprintln!(
            "[{}] boot {} to {} in {:.1}s",
            self.name,
            self.boots,
            state.trim(),
            started.elapsed().as_secs_f64()
        );
    }

    /// The console output of the latest boot.
    pub fn console(&self) -> String {
        std::fs::read_to_string(self.dir.join(format!("console{}.log", self.boots)))
            .unwrap_or_default()
    }

    /// Powers the container off cleanly and boots the same root again.
    pub fn reboot(&mut self) {
        let started = Instant::now();
        self.sh("systemctl poweroff --no-block");
        let mut child = self.nspawn.take().unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        while child.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "container did not power off");
            std::thread::sleep(Duration::from_millis(100));
        }
        self.remove_child_cgroups();
        eprintln!(
            "[{}] powered off in {:.1}s",
            self.name,
            started.elapsed().as_secs_f64()
        );
        self.boot();
    }

    /// Runs `script` with sh in all of the container's namespaces, with a
    /// clean environment and a two-minute limit.
    pub fn exec(&self, script: &str) -> Output {
        Command::new("nsenter")
            .args(["-t", &self.leader.to_string(), "-a", "--"])
            .args([
                "/usr/bin/env",
                "-i",
                "PATH=/usr/sbin:/usr/bin:/sbin:/bin",
                "LANG=C.UTF-8",
                "DEBIAN_FRONTEND=noninteractive",
                "TERM=dumb",
                "timeout",
                "120",
                "sh",
                "-c",
                script,
            ])
            .output()
            .unwrap()
    }

    /// Like [`Booted::exec`], panicking unless it succeeds; returns stdout.
    pub fn sh(&self, script: &str) -> String {
        let out = self.exec(script);
        assert!(
            out.status.success(),
            "in the container: {script}\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// nspawn's payload/supervisor cgroups below ours, deepest first, and
    /// the mount propagation directory it leaves behind.
    fn remove_child_cgroups(&self) {
        let _ =
            std::fs::remove_dir_all(Path::new("/run/systemd/nspawn/propagate").join(&self.name));
        for cg in &self.cgroups {
            let _ = Command::new("find")
                .arg(cg)
                .args([
                    "-mindepth",
                    "1",
                    "-depth",
                    "-type",
                    "d",
                    "-exec",
                    "rmdir",
                    "{}",
                    "+",
                ])
                .status();
        }
    }
}

impl Drop for Booted {
    fn drop(&mut self) {
        if let Some(mut child) = self.nspawn.take() {
            // SIGTERM asks nspawn to power the container off.
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let deadline = Instant::now() + Duration::from_secs(20);
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(100));
            }
            // Whatever is left of the container: only our own cgroup.
            for cg in &self.cgroups {
                let _ = std::fs::write(cg.join("cgroup.kill"), "1");
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        self.remove_child_cgroups();
        for cg in &self.cgroups {
            let _ = std::fs::remove_dir(cg);
        }
        if std::thread::panicking() {
            eprintln!("[{}] console:\n{}", self.name, self.console());
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
