//! Apply costs through netlink (`GuardTable::reconcile`) next to `nft -f`
//! of the same ruleset (the text `guardctl plan` prints), measured in the
//! same run, in a throwaway network namespace, for 10, 1,000 and 10,000
//! allow entries: a full install, and a change of exactly one element.
//! Prints median and p99; asserts nothing about time.
//!
//! `-- --bench full-only` measures only full installs of 10,000 entries
//! (the loop to profile), then the same with a monitor listening, as the
//! daemon's does, and a deleted copy of 10,000 entries recreated by a
//! recreating monitor (the twin tier's restore).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{Scratch, allow_toml, env_num, guard_table, load, median_p99, ms, ruleset_of};
use portguard_core::ruleset::Element;
use portguard_core::{Ruleset, render};
use portguard_nft::{Monitor, MonitorEvent, TableOutcome};
use portguard_testkit::NetNs;

/// Runs `nft -f FILE` in the calling thread's namespace; its wall time,
/// process start and ruleset parsing included (what an administrator pays).
fn nft_f(file: &std::path::Path) -> Duration {
    let started = Instant::now();
    let out = Command::new("nft").arg("-f").arg(file).output().unwrap();
    let took = started.elapsed();
    assert!(
        out.status.success(),
        "nft -f {}: {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    took
}

fn main() {
    let quick = !std::env::args().any(|a| a == "--bench");
    let ns = NetNs::new("bapply");
    if std::env::args().any(|a| a == "full-only") {
        return full_only(&ns);
    }
    let scratch = Scratch::new("apply");
    let dir = scratch.path().to_path_buf();
    println!("apply: GuardTable (netlink) vs nft -f of the same ruleset; ms, median / p99");
    println!("({})", load());
    println!(
        "{:>8} {:>6} | {:>19} {:>19} | {:>19} {:>19}",
        "entries", "rounds", "full: netlink", "full: nft -f", "1 elem: netlink", "1 elem: nft -f"
    );
    ns.enter(move || {
        let mut table = guard_table();
        for n in [10usize, 1_000, 10_000] {
            let rounds = match (quick, n) {
                (true, _) => 1,
                (_, 10) => 101,
                (_, 1_000) => 31,
                _ => 11,
            };
            let (a, b) = (
                ruleset_of(&allow_toml(n, 8080, false)),
                ruleset_of(&allow_toml(n, 8080, true)),
            );
            let full_file = dir.join(format!("full-{n}.nft"));
            std::fs::write(&full_file, render(&a)).unwrap();
            // The same one-element change as an nft script: one element
            // out, one in, one transaction.
            let (old, new) = (10_000 + 3 * (n as u32 - 1), 9_001);
            let change_file = dir.join(format!("change-{n}.nft"));
            let back_file = dir.join(format!("back-{n}.nft"));
            std::fs::write(
                &change_file,
                format!(
                    "delete element inet portguard allow_tcp {{ {old} }}\nadd element inet portguard allow_tcp {{ {new} }}\n"
                ),
            )
            .unwrap();
            std::fs::write(
                &back_file,
                format!(
                    "delete element inet portguard allow_tcp {{ {new} }}\nadd element inet portguard allow_tcp {{ {old} }}\n"
                ),
            )
            .unwrap();
            let (mut full, mut full_nft, mut one, mut one_nft) =
                (Vec::new(), Vec::new(), Vec::new(), Vec::new());
            for _ in 0..rounds {
                table.remove().unwrap();
                let outcome = table.reconcile(&a).unwrap();
                assert!(matches!(outcome, TableOutcome::Replaced(_)), "{outcome:?}");
                full.push(table.last_stats().commit);
                let outcome = table.reconcile(&b).unwrap();
                assert!(matches!(outcome, TableOutcome::Repaired(_)), "{outcome:?}");
                one.push(table.last_stats().commit);

                table.remove().unwrap();
                full_nft.push(nft_f(&full_file));
                // nft -f built exactly what reconcile would have.
                assert_eq!(table.reconcile(&a).unwrap(), TableOutcome::Unchanged);
                one_nft.push(nft_f(&change_file));
                assert_eq!(table.reconcile(&b).unwrap(), TableOutcome::Unchanged);
                nft_f(&back_file);
            }
            let cell = |s: Vec<Duration>| {
                let (m, p) = median_p99(s);
                format!("{:>9} / {:>7}", ms(m), ms(p))
            };
            println!(
                "{n:>8} {rounds:>6} | {:>19} {:>19} | {:>19} {:>19}",
                cell(full),
                cell(full_nft),
                cell(one),
                cell(one_nft)
            );
        }
    });
    hash_control(&ns);
    sourced_control(&ns);
    println!("netlink: the transaction only (send and every acknowledgement, ApplyStats.commit),");
    println!(
        "  without the read-back that proves it; nft -f: the whole process (start, parse, commit)."
    );
    println!("full: the table created whole; 1 elem: one allow_tcp element replaced by another.");
}

/// Only full installs of 10,000 entries, PG_BENCH_ROUNDS times (default
/// 41): the loop to run under `perf record` (`-- --bench full-only`).
/// Then the same with a [`Monitor`] listening in the namespace, as the
/// daemon's does: the kernel then builds a change notification for every
/// element it commits.
fn full_only(ns: &NetNs) {
    let rounds = env_num("PG_BENCH_ROUNDS", 41) as usize;
    let ruleset = ruleset_of(&allow_toml(10_000, 8080, false));
    let (full, _) = full_and_one_element_rounds(ns, ruleset.clone(), ruleset.clone(), rounds);
    println!(
        "full install of 10000 entries, {rounds} rounds, netlink: {} / {} ms (median / p99; {})",
        ms(full.0),
        ms(full.1),
        load()
    );
    // Opened in the namespace; it only has to exist (and be drained, so
    // that the kernel does not stop building notifications on overflow).
    let mut monitor = ns.enter(Monitor::open).unwrap();
    let overflows = Arc::new(AtomicUsize::new(0));
    let counting = Arc::clone(&overflows);
    let draining = std::thread::spawn(move || {
        while let Ok(event) = monitor.next_event() {
            if matches!(event, MonitorEvent::Overflow { .. }) {
                counting.fetch_add(1, Ordering::Relaxed);
            }
        }
    });
    let (full, _) = full_and_one_element_rounds(ns, ruleset.clone(), ruleset.clone(), rounds);
    println!(
        "the same with a monitor listening (the daemon's case): {} / {} ms; the monitor's socket overflowed {} times",
        ms(full.0),
        ms(full.1),
        overflows.load(Ordering::Relaxed),
    );
    drop(draining);
    recreations(ns, &ruleset, rounds);
}

/// The twin tier's restore with 10,000 entries: a copy somebody deletes
/// (`nft delete table`) is recreated by a recreating monitor's own thread;
/// its `Recreated.took`, from hearing the deletion to the committed
/// recreation. The monitor listens, so the kernel builds a notification
/// per element of the recreation as well.
fn recreations(ns: &NetNs, ruleset: &Ruleset, rounds: usize) {
    let recreation = portguard_nft::Recreation::new();
    let mut table = ns.enter(guard_table).recreated_by(&recreation);
    let ruleset = ruleset.clone();
    ns.enter(move || table.reconcile(&ruleset).map(|_| table))
        .unwrap();
    let keep = recreation.clone();
    let mut monitor = ns
        .enter(move || Monitor::open().and_then(|m| m.recreating(keep)))
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        while let Ok(event) = monitor.next_event() {
            if let MonitorEvent::Change(change) = event
                && !change.recreated.is_empty()
                && tx.send(change.recreated[0].took).is_err()
            {
                return;
            }
        }
    });
    let mut took = Vec::new();
    for _ in 0..rounds {
        ns.sh("nft delete table inet portguard");
        took.push(rx.recv_timeout(Duration::from_secs(5)).unwrap());
        // The next deletion only after the recreation's notifications.
        std::thread::sleep(Duration::from_millis(200));
    }
    let (median, p99) = median_p99(took);
    println!(
        "a deleted copy of 10000 entries recreated by the monitor: {} / {} ms (median / p99)",
        ms(median),
        ms(p99)
    );
}

/// The 10-entry ruleset with `n` interface names in `docker_bridges`.
fn with_bridges(n: usize, last: &str) -> Ruleset {
    let mut ruleset = ruleset_of(&allow_toml(10, 8080, false));
    let set = ruleset
        .sets
        .iter_mut()
        .find(|s| s.name == "docker_bridges")
        .unwrap();
    set.elements = (0..n - 1)
        .map(|i| Element::Ifname(format!("br-{i:08x}")))
        .chain([Element::Ifname(last.into())])
        .collect();
    ruleset
}

/// `n` entries of one port from one address each (`from = [ADDR/32]`),
/// which go in the concatenated hash set `allow_tcp_v4`; `replace_last`
/// moves the last entry to another port.
fn sourced(n: usize, replace_last: bool) -> Ruleset {
    let toml: String = (0..n)
        .map(|i| {
            let port = if replace_last && i == n - 1 {
                9_001
            } else {
                10_000 + 3 * i
            };
            format!(
                "[[allow]]\nport = {port}\nfrom = [\"10.{}.{}.{}/32\"]\n",
                i / 65_536,
                i / 256 % 256,
                i % 256
            )
        })
        .collect();
    ruleset_of(&toml)
}

/// Full installs of `a`, each followed by the one-element change to `b`,
/// through one handle in `ns`: (median, p99) of each, by commit time.
fn full_and_one_element(
    ns: &NetNs,
    a: Ruleset,
    b: Ruleset,
) -> ((Duration, Duration), (Duration, Duration)) {
    let quick = !std::env::args().any(|a| a == "--bench");
    full_and_one_element_rounds(ns, a, b, if quick { 1 } else { 11 })
}

/// [`full_and_one_element`] with the number of rounds given; when `b` is
/// `a`, the second reconcile is `Unchanged` and its time is not a change.
fn full_and_one_element_rounds(
    ns: &NetNs,
    a: Ruleset,
    b: Ruleset,
    rounds: usize,
) -> ((Duration, Duration), (Duration, Duration)) {
    ns.enter(move || {
        let mut table = guard_table();
        let (mut full, mut one) = (Vec::new(), Vec::new());
        for _ in 0..rounds {
            table.remove().unwrap();
            table.reconcile(&a).unwrap();
            full.push(table.last_stats().commit);
            let outcome = table.reconcile(&b).unwrap();
            assert!(
                matches!(outcome, TableOutcome::Repaired(_)) || a == b,
                "{outcome:?}"
            );
            one.push(table.last_stats().commit);
        }
        table.remove().unwrap();
        (median_p99(full), median_p99(one))
    })
}

/// Entries with a source: 10,000 single address . single port elements
/// in their hash set (in an interval/pipapo set, whose commit copies the
/// whole set, one element took 125 ms).
fn sourced_control(ns: &NetNs) {
    let n = 10_000;
    let (full, one) = full_and_one_element(ns, sourced(n, false), sourced(n, true));
    println!(
        "sourced, {n} entries of one address . one port (hash set allow_tcp_v4), netlink: full {} / {}, 1 elem {} / {}",
        ms(full.0),
        ms(full.1),
        ms(one.0),
        ms(one.1)
    );
}

/// A control for where the time of a large set goes: 10,000 elements in
/// the hash set `docker_bridges` (`type ifname`) through the same encoder
/// and transaction, next to 10,000 ports in the hash set `allow_tcp`
/// above.
fn hash_control(ns: &NetNs) {
    let n = 10_000;
    let (full, one) =
        full_and_one_element(ns, with_bridges(n, "docker0"), with_bridges(n, "docker1"));
    println!(
        "control, {n} elements in a hash set (docker_bridges, type ifname), netlink: full {} / {}, 1 elem {} / {}",
        ms(full.0),
        ms(full.1),
        ms(one.0),
        ms(one.1)
    );
}
