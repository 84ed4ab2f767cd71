//! Shared by the benchmarks: allowlists of a given size, median and p99,
//! the machine's load, and a private scratch directory.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use portguard_config::Config;
use portguard_core::{Ruleset, Snapshot, plan};
use portguard_nft::{GuardTable, Ownership, TableSpec};

/// The configuration text of `n` single-port TCP allow entries on
/// non-adjacent ports (so nothing merges into a range), starting with
/// `first` and then 10000, 10003, ...; `replace_last` swaps the last entry
/// for another port, so that two configurations differ in one element.
pub fn allow_toml(n: usize, first: u16, replace_last: bool) -> String {
    let mut toml = String::new();
    for i in 0..n {
        let port = if i == 0 {
            u32::from(first)
        } else if replace_last && i == n - 1 {
            9_001
        } else {
            10_000 + 3 * i as u32
        };
        toml.push_str(&format!("[[allow]]\nport = {port}\n"));
    }
    toml
}

pub fn ruleset_of(toml: &str) -> Ruleset {
    plan(&Config::from_toml_str(toml).unwrap(), &Snapshot::default())
}

/// The guard's table `inet portguard`, unowned, in the calling thread's
/// network namespace.
pub fn guard_table() -> GuardTable {
    GuardTable::open(TableSpec {
        name: "portguard".into(),
        ownership: Ownership::Unowned,
    })
    .unwrap()
}

/// A benchmark setting from the environment (`PG_BENCH_*`), or `default`.
pub fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Median and p99 (nearest rank) of `samples`.
pub fn median_p99(mut samples: Vec<Duration>) -> (Duration, Duration) {
    samples.sort();
    let n = samples.len();
    let p99 = samples[((n * 99).div_ceil(100)).clamp(1, n) - 1];
    (samples[n / 2], p99)
}

pub fn median_f64(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

pub fn ms(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64() * 1e3)
}

/// `uptime`'s load averages, printed with each table: other engineers
/// compile on the same cores, which shows up as noise.
pub fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().take(3).collect();
            format!("load average {} (cores: {})", f.join(" "), cores())
        })
        .unwrap_or_default()
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(0, |n| n.get())
}

/// A directory only root may write (portguardd refuses configurations in
/// directories others can write), removed on drop.
pub struct Scratch(PathBuf);

impl Scratch {
    pub fn new(role: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("pgbench-{}-{role}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        Scratch(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
