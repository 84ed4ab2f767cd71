//! The Debian package in a booted Debian 12: systemd as PID 1 under
//! systemd-nspawn, in the container's own network namespace. What an
//! administrator does (install, status, man, completion, reload, upgrade,
//! a broken configuration and a reboot, remove, purge) and what the guard's
//! table does meanwhile.
//!
//! The root filesystem is built once with mmdebstrap and cached as a
//! tarball in /var/cache/portguard-tests (delete it to rebuild); each test
//! unpacks its own copy. The host's PID 1 need not be systemd: nspawn runs
//! with `--register=no --keep-unit` in a cgroup of the test's own, which
//! `Drop` kills and removes, also when the test fails.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const CACHE: &str = "/var/cache/portguard-tests";
/// Bump when the package list changes, so a stale tarball is not reused.
const ROOTFS: &str = "bookworm-systemd-v2.tar";
/// iptables only for its ip6tables-legacy (a host still on the legacy
/// tables); the package itself does not depend on it.
const ROOTFS_PACKAGES: &str = "systemd,systemd-sysv,dbus,iproute2,man-db,bash-completion,iptables";

const BASE_VERSION: &str = env!("CARGO_PKG_VERSION");
/// The rebuilt package an upgrade goes to (dpkg sorts `+` after the end).
fn upgrade_version() -> String {
    format!("{BASE_VERSION}+rebuild1")
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The root filesystem tarball, built on first use (about 45 s), shared by
/// every later run; a lock keeps two test processes from building it twice.
fn rootfs() -> PathBuf {
    let tar = Path::new(CACHE).join(ROOTFS);
    std::fs::create_dir_all(CACHE).unwrap();
    // The same Debian mirror as the host's apt.
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
         --include={ROOTFS_PACKAGES} \
         --aptopt='Acquire::Check-Valid-Until \"false\"' --aptopt='Acquire::Check-Date \"false\"' \
         --customize-hook='echo pgtest > \"$1/etc/hostname\"' \
         bookworm {tar}.tmp 'deb {mirror} bookworm main' > {CACHE}/mmdebstrap.log 2>&1 \
         && mv {tar}.tmp {tar}; }}",
        tar = tar.display()
    );
    let started = Instant::now();
    run(Command::new("flock")
        .arg(format!("{CACHE}/.lock"))
        .args(["sh", "-c", &script]));
    eprintln!("rootfs ready in {:.1}s", started.elapsed().as_secs_f64());
    tar
}

/// Both packages (the current version and a higher rebuild), built once
/// per test process; returns their directory.
fn debs() -> &'static Path {
    static DEBS: OnceLock<PathBuf> = OnceLock::new();
    DEBS.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("systemd-test-debs");
        let _ = std::fs::remove_dir_all(&dir);
        for version in [BASE_VERSION.to_string(), upgrade_version()] {
            let started = Instant::now();
            run(Command::new(workspace().join("packaging/build-deb"))
                .args([
                    "--profile",
                    "debug",
                    "--fast",
                    "--version",
                    &version,
                    "--out",
                ])
                .arg(&dir));
            eprintln!("built {version} in {:.1}s", started.elapsed().as_secs_f64());
        }
        dir
    })
}

fn deb_name(version: &str) -> String {
    let arch =
        String::from_utf8(run(Command::new("dpkg").arg("--print-architecture")).stdout).unwrap();
    format!("/debs/portguard_{version}_{}.deb", arch.trim())
}

/// A Debian root filesystem booted with systemd as PID 1 in its own
/// network namespace. Dropping it stops the container, kills whatever is
/// left in its cgroup and removes cgroups and files.
struct Booted {
    name: String,
    dir: PathBuf,
    cgroups: Vec<PathBuf>,
    nspawn: Option<Child>,
    leader: u32,
    boots: usize,
}

impl Booted {
    fn new(role: &str) -> Booted {
        let tar = rootfs();
        let debs = debs();
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
        };
        let root = booted.dir.join("root");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::create_dir_all(booted.dir.join("debs")).unwrap();
        let started = Instant::now();
        run(Command::new("tar")
            .arg("-C")
            .arg(&root)
            .args(["--numeric-owner", "-xpf"])
            .arg(&tar));
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
             --bind-ro={debs}:/debs -b",
            cgroup_procs.join(" && "),
            root = self.dir.join("root").display(),
            debs = self.dir.join("debs").display(),
            name = self.name,
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

    fn console(&self) -> String {
        std::fs::read_to_string(self.dir.join(format!("console{}.log", self.boots)))
            .unwrap_or_default()
    }

    /// Runs `script` with sh in all of the container's namespaces, with a
    /// clean environment.
    fn exec(&self, script: &str) -> Output {
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
    fn sh(&self, script: &str) -> String {
        let out = self.exec(script);
        assert!(
            out.status.success(),
            "in the container: {script}\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Whether the guard's table (or, on kernels without the persist flag,
    /// its standby copy) is in the container's network namespace, read
    /// with the host's nft.
    fn guarded(&self) -> bool {
        let out = Command::new("nsenter")
            .args([
                "-t",
                &self.leader.to_string(),
                "-n",
                "nft",
                "list",
                "tables",
            ])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).lines().any(|l| {
            matches!(
                l.trim(),
                "table inet portguard" | "table inet portguard_standby"
            )
        })
    }

    /// Watches the guard's table from the container's network namespace as
    /// fast as nft can list it, until `during` returns; returns `during`'s
    /// result, how many times the table was seen and how many times it was
    /// missing.
    fn watch_table<T>(&self, during: impl FnOnce() -> T) -> (T, usize, usize) {
        let stop = self.dir.join("stop-watch");
        let _ = std::fs::remove_file(&stop);
        let mut watcher = Command::new("nsenter")
            .args(["-t", &self.leader.to_string(), "-n", "sh", "-c"])
            .arg(format!(
                "while [ ! -e {stop} ]; do \
                 if nft list tables | grep -qE '^table inet portguard(_standby)?$'; \
                 then echo present; else echo MISSING; fi; done",
                stop = stop.display()
            ))
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let lines = BufReader::new(watcher.stdout.take().unwrap());
        let counter = std::thread::spawn(move || {
            let (mut present, mut missing) = (0, 0);
            for line in lines.lines() {
                match line.unwrap().as_str() {
                    "present" => present += 1,
                    _ => missing += 1,
                }
            }
            (present, missing)
        });
        // Let the watcher take its first looks before anything happens.
        std::thread::sleep(Duration::from_millis(300));
        let result = during();
        std::thread::sleep(Duration::from_millis(300));
        std::fs::write(&stop, "").unwrap();
        let _ = watcher.wait();
        let (present, missing) = counter.join().unwrap();
        (result, present, missing)
    }

    fn status_json(&self) -> serde_json::Value {
        // Exit 1 means "ruleset not installed"; the JSON is still printed.
        let out = self.exec("guardctl status --json");
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "guardctl status --json: {e}\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        })
    }

    fn main_pid(&self) -> String {
        self.sh("systemctl show -p MainPID --value portguard.service")
            .trim()
            .to_string()
    }

    /// Powers the container off cleanly and boots the same root again.
    fn reboot(&mut self) {
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
            let _ = send_signal(child.id(), "TERM");
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

fn send_signal(pid: u32, signal: &str) -> std::io::Result<std::process::ExitStatus> {
    Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status()
}

fn install(c: &Booted, version: &str) -> String {
    let deb = deb_name(version);
    c.sh(&format!("apt-get install -y -q {deb} 2>&1"))
}

#[test]
fn installed_package_guards_reloads_upgrades_without_a_gap_and_removes_cleanly() {
    let total = Instant::now();
    let mut c = Booted::new("life");

    let started = Instant::now();
    install(&c, BASE_VERSION);
    eprintln!("apt-get install: {:.1}s", started.elapsed().as_secs_f64());
    assert_eq!(
        c.sh("systemctl is-active portguard.service").trim(),
        "active"
    );
    assert_eq!(
        c.sh("systemctl is-enabled portguard.service").trim(),
        "enabled"
    );
    // Docker (once installed) wants the guard and is ordered after it.
    assert!(
        c.sh("ls /etc/systemd/system/docker.service.wants/")
            .contains("portguard.service")
    );
    assert!(c.guarded(), "no guard table after install");
    let status = c.sh("guardctl status");
    eprintln!("guardctl status:\n{status}");
    let json = c.status_json();
    assert_eq!(json["ruleset"]["installed"], true, "{json}");

    // The administrator's documentation and tab completion.
    let man = c.sh("man -P cat guardctl 2>&1");
    assert!(man.contains("reload"), "man guardctl:\n{man}");
    let man5 = c.sh("man -P cat 5 portguard.toml 2>&1");
    assert!(
        man5.contains("trusted_interfaces"),
        "man 5 portguard.toml:\n{man5}"
    );
    assert!(
        c.sh("man -P cat portguardd 2>&1")
            .contains("--remove-rules")
    );
    let completion = c.sh("bash -c '. /usr/share/bash-completion/bash_completion; \
         _completion_loader guardctl; \
         COMP_WORDS=(guardctl st); COMP_CWORD=1; COMP_LINE=\"guardctl st\"; \
         COMP_POINT=${#COMP_LINE}; \
         $(complete -p guardctl | sed -n \"s/.*-F \\([^ ]*\\).*/\\1/p\") guardctl st guardctl; \
         echo \"${COMPREPLY[@]}\"'");
    assert_eq!(
        completion.trim(),
        "status",
        "bash completion of `guardctl st`"
    );

    // In the running systemd, too (the offline score is in package.rs).
    let security = c.sh("systemd-analyze security portguard.service --no-pager 2>&1 | tail -1");
    eprintln!(
        "systemd-analyze security in the booted container: {}",
        security.trim()
    );

    // systemctl reload goes through guardctl reload.
    c.sh("systemctl reload portguard.service");

    // `[control] group`: the daemon gives the socket that group (it keeps
    // CAP_CHOWN for this), and a member who is not root can ask.
    let restart = c.exec(
        "printf '[control]\\ngroup = \"adm\"\\n' > /etc/portguard/conf.d/50-group.toml \
         && systemctl restart portguard.service",
    );
    assert!(
        restart.status.success(),
        "restart with [control] group failed:\n{}",
        c.sh("journalctl -u portguard --no-pager -o cat | tail -8")
    );
    assert_eq!(
        c.sh("stat -c '%G %a' /run/portguard/control.sock").trim(),
        "adm 660"
    );
    c.sh("useradd -M -G adm pgadmin && setpriv --reuid pgadmin --regid pgadmin --init-groups guardctl status");

    // A host still on legacy ip6tables, where Docker set the IPv6 FORWARD
    // policy to drop: the sandboxed daemon restores it at start through
    // ip6tables-legacy (CAP_NET_RAW, AF_INET6, /run/xtables.lock).
    c.sh("ip6tables-legacy -w -P FORWARD DROP && systemctl restart portguard.service");
    let policy = c.sh("ip6tables-legacy -w -S FORWARD");
    assert!(
        policy.contains("-P FORWARD ACCEPT"),
        "the sandboxed daemon did not restore the legacy IPv6 FORWARD policy:\n{policy}\n{}",
        c.sh("journalctl -u portguard --no-pager -o cat | tail -5")
    );

    // Upgrade to a rebuilt, higher version: the table never goes away.
    let before = c.main_pid();
    let started = Instant::now();
    let (out, present, missing) = c.watch_table(|| install(&c, &upgrade_version()));
    eprintln!(
        "upgrade: {:.1}s, table checked {present} times, missing {missing} times",
        started.elapsed().as_secs_f64()
    );
    assert!(out.contains(&upgrade_version()), "{out}");
    assert_ne!(
        c.main_pid(),
        before,
        "the upgrade did not restart the daemon"
    );
    assert_eq!(
        c.sh("systemctl is-active portguard.service").trim(),
        "active"
    );
    assert!(present > 20, "the watcher looked only {present} times");
    assert_eq!(
        missing, 0,
        "the guard's table was missing during the upgrade"
    );

    let journal = c.sh("journalctl -u portguard --no-pager -o cat");
    eprintln!("journalctl -u portguard:\n{journal}");
    assert!(journal.contains("Started portguard.service"), "{journal}");
    assert!(journal.contains("Reloaded portguard.service"), "{journal}");
    assert!(
        journal.contains("IPv6 FORWARD policy was drop; set it back to accept"),
        "{journal}"
    );
    // Structured fields (docs/operations.md): events found by name.
    let restored =
        c.sh("journalctl -u portguard PORTGUARD_EVENT=ipv6_policy_restore --no-pager -o cat");
    assert!(
        restored.contains("IPv6 FORWARD policy was drop"),
        "PORTGUARD_EVENT=ipv6_policy_restore: {restored}"
    );
    let started = c.sh("journalctl -u portguard PORTGUARD_EVENT=start --no-pager -o cat");
    assert!(
        started.contains("guard table installed"),
        "PORTGUARD_EVENT=start: {started}"
    );

    // A reboot: the unit is enabled and the guard is up, in a fresh
    // network namespace, without anybody starting it; and a stand-in for
    // Docker, started at boot, finds it already active (READY, so the
    // table is installed) when it starts.
    c.sh(
        "printf '%s\\n' '[Unit]' 'Description=stand-in for Docker' '[Service]' \
         'Type=oneshot' 'RemainAfterExit=yes' \
         'ExecStart=/bin/sh -c \"systemctl is-active portguard.service > /run/guard-when-docker-started\"' \
         '[Install]' 'WantedBy=multi-user.target' > /etc/systemd/system/docker.service \
         && systemctl daemon-reload && systemctl enable docker.service",
    );
    c.reboot();
    assert_eq!(
        c.sh("systemctl is-active portguard.service").trim(),
        "active"
    );
    assert!(c.guarded(), "no guard table after a reboot");
    assert_eq!(
        c.sh("cat /run/guard-when-docker-started").trim(),
        "active",
        "Docker started before the guard was ready"
    );

    // Remove: daemon stopped, table gone, no daemon log on the terminal,
    // the configuration kept. Purge: configuration and state gone.
    assert!(c.exec("test -d /var/lib/portguard").status.success());
    let removal = c.sh("apt-get remove -y -q portguard 2>&1");
    eprintln!("apt-get remove:\n{removal}");
    assert!(
        !removal.contains("INFO") && !removal.contains("guard's table"),
        "daemon log on the terminal during remove:\n{removal}"
    );
    assert!(!c.guarded(), "the guard's table outlived the package");
    assert!(
        !c.exec("systemctl is-active portguard.service")
            .status
            .success()
    );
    assert!(
        c.exec("test -f /etc/portguard/portguard.toml")
            .status
            .success()
    );
    c.sh("apt-get purge -y -q portguard 2>&1");
    assert!(
        !c.exec("test -e /etc/portguard").status.success(),
        "/etc/portguard survived purge"
    );
    assert!(
        !c.exec("test -e /var/lib/portguard").status.success(),
        "/var/lib/portguard survived purge"
    );
    eprintln!("whole test: {:.1}s", total.elapsed().as_secs_f64());
}

#[test]
fn broken_configuration_at_restart_and_reboot_keeps_the_guard_running_and_reports_it() {
    let total = Instant::now();
    let mut c = Booted::new("broken");
    install(&c, BASE_VERSION);
    assert!(c.guarded());

    // One bad line: reload is refused, visibly, and the guard stays.
    c.sh("sed -i '1i this_key_does_not_exist = 1' /etc/portguard/portguard.toml");
    let reload = c.exec("systemctl reload portguard.service");
    assert!(
        !reload.status.success(),
        "systemctl reload accepted a broken file"
    );
    assert!(c.guarded());

    // A restart with the broken file: the daemon runs and guards.
    let restart = c.exec("systemctl restart portguard.service");
    assert!(
        restart.status.success(),
        "restart with a broken file failed:\n{}",
        c.sh("journalctl -u portguard --no-pager -o cat | tail -20")
    );
    assert_eq!(
        c.sh("systemctl is-active portguard.service").trim(),
        "active"
    );

    // A reboot with the broken file: a new network namespace with no
    // table at all until the daemon installs one.
    c.reboot();
    assert_eq!(
        c.sh("systemctl is-active portguard.service").trim(),
        "active",
        "{}",
        c.sh("journalctl -b -u portguard --no-pager -o cat | tail -20")
    );
    assert!(
        c.guarded(),
        "no guard table after a reboot with a broken file"
    );
    let json = c.status_json();
    assert!(
        json["config"]["error"].is_string(),
        "status does not show the configuration error: {json}"
    );
    eprintln!(
        "status after the reboot: config.error = {}",
        json["config"]["error"]
    );
    let journal = c.sh("journalctl -b -u portguard --no-pager -o cat");
    assert!(journal.contains("this_key_does_not_exist"), "{journal}");
    let errors = c.sh("journalctl -b -u portguard PORTGUARD_EVENT=config_error --no-pager -o cat");
    assert!(
        errors.contains("this_key_does_not_exist"),
        "PORTGUARD_EVENT=config_error: {errors}"
    );

    // A good file again: reload succeeds and the error is gone.
    c.sh("sed -i '1d' /etc/portguard/portguard.toml && systemctl reload portguard.service");
    assert!(c.status_json()["config"]["error"].is_null());
    eprintln!("whole test: {:.1}s", total.elapsed().as_secs_f64());
}
