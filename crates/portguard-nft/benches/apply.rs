//! Apply and verify costs by allowlist size, in a throwaway network
//! namespace. Prints medians; asserts nothing. `cargo bench -p portguard-nft`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use portguard_config::Config;
use portguard_core::{Ruleset, Snapshot, plan};
use portguard_nft::Nft;
use portguard_testkit::NetNs;

/// `n` allow entries on non-adjacent ports (so nothing merges), with
/// `shift` moving every other one so that two rulesets differ everywhere.
fn ruleset(n: usize, shift: u16) -> Ruleset {
    let mut toml = String::new();
    for i in 0..n {
        let port = 1000 + 3 * i as u32 + u32::from(if i % 2 == 0 { shift } else { 0 });
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
    let mut nft = ns.enter(|| Nft::open().unwrap());
    println!(
        "{:>8} {:>12} {:>12} {:>12} {:>12} {:>12}",
        "entries", "full", "incremental", "readback", "verify", "verify-dump"
    );
    for n in [10usize, 1_000, 10_000] {
        let rounds = if n >= 10_000 { 7 } else { 21 };
        let (a, b) = (ruleset(n, 0), ruleset(n, 1));
        let mut full = Vec::new();
        let mut incremental = Vec::new();
        let mut readback = Vec::new();
        let mut verify = Vec::new();
        let mut dump = Vec::new();
        for _ in 0..rounds {
            nft.remove().unwrap();
            let t = Instant::now();
            let stats = nft.apply(&a).unwrap();
            full.push(t.elapsed() - stats.readback);
            let stats = nft.apply(&b).unwrap();
            assert!(stats.incremental);
            incremental.push(stats.commit);
            readback.push(stats.readback);
            let t = Instant::now();
            nft.verify().unwrap();
            verify.push(t.elapsed());
            let t = Instant::now();
            nft.read_table().unwrap();
            dump.push(t.elapsed());
        }
        println!(
            "{n:>8} {:>12?} {:>12?} {:>12?} {:>12?} {:>12?}",
            median(full),
            median(incremental),
            median(readback),
            median(verify),
            median(dump)
        );
    }
    println!(
        "full: delete + add the whole table in one transaction; incremental: flush and refill the changed set;"
    );
    println!(
        "readback: dump after apply; verify: generation check when nothing changed; verify-dump: full dump"
    );
}
