//! Exposure and latency (issue 11, item 4), against a bare portguardd (no
//! Docker; its socket points at nothing) in the host namespace of
//! testkit's `lab()`, whose DNAT publishes `db` on 8081, listed nowhere:
//!
//! * per protection tier (`[guard] protection`), a deletion storm: 40
//!   `nft delete table` at 150 ms intervals (alternating with the standby
//!   where the tier has one) while the outside namespace knocks on 8081
//!   about every 2 ms; the twin tier also at 50 and 20 ms (its copies
//!   are both gone if one is not back before the other is deleted). Prints connections that got through, and the restore
//!   latency (p50 / p99) from nf_tables' own notifications: the deleting
//!   commit to the next commit by another process touching that table;
//! * reload to the kernel: SIGHUP after a one-entry change of the
//!   configuration (10 and 10,000 entries), to the commit in the kernel.
//!
//! Prints; asserts only what makes the numbers meaningful (the guard is up,
//! the unlisted port closed before the storm).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use common::{Scratch, allow_toml, load, median_p99, ms};
use portguard_core::ruleset::TABLE_NAME;
use portguard_nft::{Monitor, MonitorEvent};
use portguard_testkit::daemon::{Daemon, wait_notify, write_config};
use portguard_testkit::{NetNs, Prober, lab, tcp_probe};

const PRIMARY: &str = TABLE_NAME;
const STANDBY: &str = "portguard_standby";
const WEB: &str = "10.99.0.1:8080";
const DB: &str = "10.99.0.1:8081";

const DELETIONS: usize = 40;
const DELETION_INTERVAL: Duration = Duration::from_millis(150);
/// Tighter storms for the twin tier, the one whose copies anybody may delete.
const TWIN_INTERVALS: [Duration; 2] = [Duration::from_millis(50), Duration::from_millis(20)];

/// A portguardd in `host` with a configuration of its own.
struct Guard {
    daemon: Daemon,
    config: PathBuf,
    no_docker: PathBuf,
    _notify: UnixDatagram,
    _scratch: Scratch,
}

impl Guard {
    fn start(host: &NetNs, role: &str, body: &str) -> Guard {
        let scratch = Scratch::new(role);
        let config = scratch.path().join("portguard.toml");
        let no_docker = scratch.path().join("no-docker.sock");
        write_config(&config, body, &no_docker);
        let notify_path = scratch.path().join("notify.sock");
        let notify = UnixDatagram::bind(&notify_path).unwrap();
        let daemon = Daemon::start(host, &config, Some(&notify_path), &[]);
        wait_notify(&notify, "READY=1", Duration::from_secs(20));
        Guard {
            daemon,
            config,
            no_docker,
            _notify: notify,
            _scratch: scratch,
        }
    }

    fn rewrite(&self, body: &str) {
        write_config(&self.config, body, &self.no_docker);
    }
}

/// Every nf_tables commit in `ns`, with the time it was received.
fn monitor(ns: &NetNs) -> Receiver<(Instant, portguard_nft::Change)> {
    let (tx, rx) = std::sync::mpsc::channel();
    let mut monitor = ns.enter(|| Monitor::open().unwrap());
    // Ends at the first event after the receiver is gone.
    std::thread::spawn(move || {
        while let Ok(event) = monitor.next_event() {
            match event {
                MonitorEvent::Change(change) => {
                    if tx.send((Instant::now(), change)).is_err() {
                        return;
                    }
                }
                MonitorEvent::Overflow { .. } => eprintln!("exposure: monitor overflowed"),
            }
        }
    });
    rx
}

/// Restore latencies: for each commit by `nft` touching a table, the time
/// to the next commit by anyone else touching that table.
fn restores(events: &[(Instant, portguard_nft::Change)]) -> (Vec<Duration>, usize) {
    let mut latencies = Vec::new();
    let mut unrestored = 0;
    for (i, (at, change)) in events.iter().enumerate() {
        if change.process != "nft" {
            continue;
        }
        for table in &change.tables {
            match events[i + 1..]
                .iter()
                .find(|(_, c)| c.process != "nft" && c.tables.contains(table))
            {
                Some((restored, _)) => latencies.push(*restored - *at),
                None => unrestored += 1,
            }
        }
    }
    (latencies, unrestored)
}

fn storm(tier: &str, interval: Duration, quick: bool) {
    let lab = lab();
    let guard = Guard::start(
        &lab.host,
        "storm",
        &format!("[guard]\nprotection = \"{tier}\"\n[[allow]]\nport = 8080\n"),
    );
    let open = |t: &str| tcp_probe(&lab.wan, t.parse().unwrap(), Duration::from_millis(500));
    assert!(open(WEB), "{tier}: the allowed port answers");
    assert!(
        !open(DB),
        "{tier}: the unlisted port is closed before the storm"
    );
    let tables: &[&str] = if tier == "owned-persistent" {
        &[PRIMARY]
    } else {
        &[PRIMARY, STANDBY]
    };
    let events = monitor(&lab.host);
    let prober = Prober::start(&lab.wan, DB.parse().unwrap());
    let deletions = if quick { 4 } else { DELETIONS };
    let tables_owned: Vec<String> = tables.iter().map(|t| t.to_string()).collect();
    let refused = lab
        .host
        .spawn(move || {
            let started = Instant::now();
            let mut refused = 0;
            for i in 0..deletions {
                let due = started + interval * i as u32;
                std::thread::sleep(due.saturating_duration_since(Instant::now()));
                let table = &tables_owned[i % tables_owned.len()];
                let ok = std::process::Command::new("nft")
                    .args(["delete", "table", "inet", table])
                    .output()
                    .unwrap()
                    .status
                    .success();
                refused += usize::from(!ok);
            }
            refused
        })
        .join()
        .unwrap();
    // A restore after the last deletion is probed too.
    std::thread::sleep(Duration::from_millis(300));
    let (attempts, connected) = prober.finish();
    let seen: Vec<_> = events.try_iter().collect();
    let (latencies, unrestored) = restores(&seen);
    let deleted = latencies.len() + unrestored;
    let (p50, p99) = if latencies.is_empty() {
        ("-".into(), "-".into())
    } else {
        let (a, b) = median_p99(latencies);
        (ms(a), ms(b))
    };
    println!(
        "{tier:<17} {:>8} {deletions:>9} {refused:>8} {deleted:>8} {unrestored:>11} {p50:>9} {p99:>9} {attempts:>9} {connected:>9}",
        interval.as_millis()
    );
    if connected > 0 && interval == DELETION_INTERVAL {
        eprintln!("daemon log:\n{}", guard.daemon.log());
    }
}

/// SIGHUP after a one-entry change of an `n`-entry configuration, to the
/// commit touching the guard's table; `rounds` times.
fn reload_latency(n: usize, rounds: usize) -> (Duration, Duration) {
    let host = NetNs::new("breload");
    let configs = [allow_toml(n, 8080, false), allow_toml(n, 8080, true)];
    let guard = Guard::start(&host, "reload", &configs[0]);
    let events = monitor(&host);
    let table = format!("inet {PRIMARY}");
    let mut samples = Vec::new();
    for i in 0..rounds {
        guard.rewrite(&configs[(i + 1) % 2]);
        let _ = events.try_iter().count();
        let started = Instant::now();
        guard.daemon.signal("HUP");
        let deadline = started + Duration::from_secs(20);
        loop {
            let (at, change) = events
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .unwrap_or_else(|_| panic!("no commit after reload:\n{}", guard.daemon.log()));
            if change.tables.contains(&table) {
                samples.push(at - started);
                break;
            }
        }
        // Let the daemon settle (verify, standby) before the next change.
        std::thread::sleep(Duration::from_millis(200));
        let _ = events.try_iter().count();
    }
    median_p99(samples)
}

fn main() {
    let quick = !std::env::args().any(|a| a == "--bench");
    println!(
        "exposure: deletion storm, {DELETIONS} deletions every {DELETION_INTERVAL:?} (twin also tighter), outside host knocking on an unlisted published port every ~2 ms"
    );
    println!("({})", load());
    println!(
        "{:<17} {:>8} {:>9} {:>8} {:>8} {:>11} {:>9} {:>9} {:>9} {:>9}",
        "tier",
        "every ms",
        "attempted",
        "refused",
        "deleted",
        "unrestored",
        "p50 ms",
        "p99 ms",
        "knocks",
        "through"
    );
    for tier in ["owned-persistent", "owned-standby", "twin"] {
        storm(tier, DELETION_INTERVAL, quick);
    }
    for interval in TWIN_INTERVALS {
        storm("twin", interval, quick);
    }
    println!(
        "refused: the kernel refused the deletion (owned table); restore latency: deleting commit"
    );
    println!("to the guard's next commit touching that table, from nf_tables notifications.");
    if std::env::args().any(|a| a == "storm-only") {
        return;
    }
    println!();
    println!("reload to the kernel: SIGHUP after a one-entry change, to the commit (ms)");
    println!("({})", load());
    println!(
        "{:>8} {:>7} {:>9} {:>9}",
        "entries", "rounds", "median", "p99"
    );
    for n in [10usize, 10_000] {
        let rounds = match (quick, n) {
            (true, _) => 2,
            (_, 10) => 21,
            _ => 9,
        };
        let (m, p) = reload_latency(n, rounds);
        println!("{n:>8} {rounds:>7} {:>9} {:>9}", ms(m), ms(p));
    }
}
