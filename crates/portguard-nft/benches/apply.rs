//! Apply and verify costs by allowlist size, in a throwaway network
//! namespace. Prints medians; asserts nothing. `cargo bench -p portguard-nft`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use portguard_config::Config;
use portguard_core::ruleset::TABLE_NAME;
use portguard_core::{Ruleset, Snapshot, plan};
use portguard_nft::{GuardTable, Ownership, TableOutcome, TableSpec};
use portguard_testkit::NetNs;

/// `n` allow entries on non-adjacent ports (so nothing merges), with
/// `shift` moving the last one, so that two rulesets differ in exactly one
/// element (the "one-element" column measures what it says).
fn ruleset(n: usize, shift: u16) -> Ruleset {
    let mut toml = String::new();
    for i in 0..n {
        let port = 1000 + 3 * i as u32 + u32::from(if i == n - 1 { shift } else { 0 });
        toml.push_str(&format!("[[allow]]\nport = {port}\n"));
    }
    plan(&Config::from_toml_str(&toml).unwrap(), &Snapshot::default())
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn main() {
    let ns = NetNs::new("bench");
    let mut table = ns.enter(|| {
        GuardTable::open(TableSpec {
            name: TABLE_NAME.into(),
            ownership: Ownership::Unowned,
        })
        .unwrap()
    });
    println!(
        "{:>8} {:>12} {:>12} {:>12} {:>12} {:>12}",
        "entries", "full", "one-element", "verify-after", "unchanged", "read"
    );
    for n in [10usize, 1_000, 10_000] {
        let rounds = if n >= 10_000 { 7 } else { 21 };
        let (a, b) = (ruleset(n, 0), ruleset(n, 1));
        let mut full = Vec::new();
        let mut one_element = Vec::new();
        let mut verify_after = Vec::new();
        let mut unchanged = Vec::new();
        let mut read = Vec::new();
        for _ in 0..rounds {
            table.remove().unwrap();
            table.reconcile(&a).unwrap();
            full.push(table.last_stats().commit);
            let outcome = table.reconcile(&b).unwrap();
            assert!(matches!(outcome, TableOutcome::Repaired(_)), "{outcome:?}");
            one_element.push(table.last_stats().commit);
            verify_after.push(table.last_stats().verify);
            let t = Instant::now();
            assert_eq!(table.reconcile(&b).unwrap(), TableOutcome::Unchanged);
            unchanged.push(t.elapsed());
            let t = Instant::now();
            table.read().unwrap();
            read.push(t.elapsed());
        }
        println!(
            "{n:>8} {:>12?} {:>12?} {:>12?} {:>12?} {:>12?}",
            median(full),
            median(one_element),
            median(verify_after),
            median(unchanged),
            median(read)
        );
    }
    println!("full: create the whole table in one transaction (commit only);");
    println!("one-element: the in-place repair when one allow entry changes (commit only);");
    println!("verify-after: the exact read-back and comparison after it; unchanged: reconcile");
    println!("when nothing changed (one generation check); read: a consistent full dump");
}
