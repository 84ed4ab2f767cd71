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
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use portguard_testkit::booted::{
    BASE_VERSION, Booted, base_and_upgrade_debs, deb_in_container, rootfs, upgrade_version,
};

/// Bump when the package list changes, so a stale tarball is not reused.
const ROOTFS: &str = "bookworm-systemd-v2.tar";
/// iptables only for its ip6tables-legacy (a host still on the legacy
/// tables); the package itself does not depend on it.
const ROOTFS_PACKAGES: &str = "systemd,systemd-sysv,dbus,iproute2,man-db,bash-completion,iptables";

/// Both packages (the current version and a higher rebuild).
fn debs() -> &'static Path {
    base_and_upgrade_debs()
}

/// A booted Debian 12 with both packages in `/debs`.
fn container(role: &str) -> Booted {
    Booted::new(role, &rootfs(ROOTFS, ROOTFS_PACKAGES), debs(), &[])
}

/// What these tests ask of the container about the guard.
trait GuardChecks {
    fn host_nft(&self) -> Command;
    fn guarded(&self) -> bool;
    fn watch_table<T>(&self, during: impl FnOnce() -> T) -> (T, usize, usize);
    fn watch_commits<T>(&self, during: impl FnOnce() -> T) -> (T, Vec<portguard_nft::Change>);
    fn status_json(&self) -> serde_json::Value;
    fn main_pid(&self) -> String;
}

impl GuardChecks for Booted {
    /// The host's nft in the container's network namespace (the container
    /// has no nft of its own).
    fn host_nft(&self) -> Command {
        let mut nft = Command::new("nsenter");
        nft.args(["-t", &self.leader().to_string(), "-n", "nft"]);
        nft
    }

    /// Whether the guard's table (or, on kernels without the persist flag,
    /// its standby copy) is in the container's network namespace, read
    /// with the host's nft.
    fn guarded(&self) -> bool {
        let out = self.host_nft().args(["list", "tables"]).output().unwrap();
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
        let stop = self.dir().join("stop-watch");
        let _ = std::fs::remove_file(&stop);
        let mut watcher = Command::new("nsenter")
            .args(["-t", &self.leader().to_string(), "-n", "sh", "-c"])
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

    /// Every nf_tables transaction committed in the container's network
    /// namespace while `during` runs, from the kernel's own notifications:
    /// unlike polling, a deletion cannot fall between two looks.
    fn watch_commits<T>(&self, during: impl FnOnce() -> T) -> (T, Vec<portguard_nft::Change>) {
        const END: &str = "portguard_test_watch_end";
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let watcher = portguard_testkit::spawn_in_netns(
            &format!("/proc/{}/ns/net", self.leader()),
            move || {
                let mut monitor = portguard_nft::Monitor::open().unwrap();
                ready_tx.send(()).unwrap();
                let mut changes = Vec::new();
                loop {
                    match monitor.next_event().unwrap() {
                        portguard_nft::MonitorEvent::Change(c)
                            if c.tables.contains(&format!("ip {END}")) =>
                        {
                            return changes;
                        }
                        portguard_nft::MonitorEvent::Change(c) => changes.push(c),
                        portguard_nft::MonitorEvent::Overflow { .. } => {
                            panic!("notifications lost while watching")
                        }
                    }
                }
            },
        );
        ready_rx.recv().unwrap();
        let result = during();
        // A marker transaction (the host's nft in the container's network
        // namespace) ends the watch.
        let marked = self
            .host_nft()
            .arg(format!("add table ip {END}; delete table ip {END}"))
            .status()
            .unwrap();
        assert!(marked.success());
        (result, watcher.join().unwrap())
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
}

fn install(c: &Booted, version: &str) -> String {
    let deb = deb_in_container(version);
    c.sh(&format!("apt-get install -y -q {deb} 2>&1"))
}

#[test]
fn installed_package_guards_reloads_upgrades_without_a_gap_and_removes_cleanly() {
    let total = Instant::now();
    let mut c = container("life");

    let started = Instant::now();
    let installed = install(&c, BASE_VERSION);
    eprintln!("apt-get install: {:.1}s", started.elapsed().as_secs_f64());
    // The install says what it did (issue 22): the mode, what is closed.
    // No Docker in this container: it says so.
    assert!(
        installed.contains("portguard: enforcing: 0 published ports closed to the outside")
            && installed.contains("Docker is not connected yet"),
        "{installed}"
    );
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

    // A host still on legacy ip6tables whose IPv6 FORWARD policy is drop
    // when the daemon starts: the sandboxed daemon reads it through
    // ip6tables-legacy (CAP_NET_RAW, AF_INET6, /run/xtables.lock), and
    // leaves it, since whose it is cannot be known (only a drop that
    // appears while Docker is away and is there when Docker comes back is
    // taken for Docker's; there is no Docker here).
    c.sh("ip6tables-legacy -w -P FORWARD DROP && systemctl restart portguard.service");
    let policy = c.sh("ip6tables-legacy -w -S FORWARD");
    assert!(
        policy.contains("-P FORWARD DROP"),
        "the sandboxed daemon set a legacy IPv6 FORWARD drop of unknown origin to accept:\n{policy}"
    );
    let status = c.sh("guardctl status --json");
    assert!(
        status.contains("\"iptables-legacy\"") && status.contains("\"before-start\""),
        "the sandboxed daemon did not read the legacy IPv6 FORWARD policy:\n{status}\n{}",
        c.sh("journalctl -u portguard --no-pager -o cat | tail -5")
    );
    c.sh("ip6tables-legacy -w -P FORWARD ACCEPT");

    // Upgrade to a rebuilt, higher version: the table never goes away.
    let before = c.main_pid();
    let started = Instant::now();
    let ((out, present, missing), commits) =
        c.watch_commits(|| c.watch_table(|| install(&c, &upgrade_version())));
    let guard_tables = ["inet portguard", "inet portguard_standby"];
    let deletions: Vec<_> = commits
        .iter()
        .filter(|t| guard_tables.iter().any(|g| t.deleted.contains(*g)))
        .collect();
    eprintln!(
        "upgrade: {:.1}s, table checked {present} times, missing {missing} times; \
         {} nf_tables transactions, {} touching the guard's table, {} leaving it deleted",
        started.elapsed().as_secs_f64(),
        commits.len(),
        commits
            .iter()
            .filter(|t| guard_tables.iter().any(|g| t.tables.contains(*g)))
            .count(),
        deletions.len()
    );
    // Exact, where the polling above could miss a short absence: no
    // transaction left the table deleted (the new daemon's adoption
    // replaces it within one atomic transaction), so packets never met
    // its absence: 0 ms.
    assert!(
        deletions.is_empty(),
        "the upgrade deleted the guard's table: {deletions:?}"
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
        journal.contains("IPv6 FORWARD policy is drop, set by somebody before the guard started"),
        "{journal}"
    );
    // Structured fields (docs/operations.md): events found by name.
    let left = c.sh("journalctl -u portguard PORTGUARD_EVENT=ipv6_policy_left --no-pager -o cat");
    assert!(
        left.contains("IPv6 FORWARD policy is drop") && left.contains("left alone"),
        "PORTGUARD_EVENT=ipv6_policy_left: {left}"
    );
    let started = c.sh("journalctl -u portguard PORTGUARD_EVENT=start --no-pager -o cat");
    assert!(
        started.contains("protection in place ("),
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
    let mut c = container("broken");
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
