//! What the guard counts as it works, and what it last read of the
//! kernel's own counters: the guard writes them on the reconcile loop,
//! the metrics and `guardctl status` read them. The metrics never reach
//! the kernel: the guard reads its tables' blocked-attempt counters on the
//! loop ([`crate::guard::Guard::read_blocked_counters`]) and keeps the
//! reading here ([`KernelCounters`]), where the metrics fold it into their
//! totals.

use std::time::{Duration, Instant, SystemTime};

use portguard_config::Config;
use portguard_core::Snapshot;
use portguard_core::control::{ConfigSource, ProtectionTier};
use portguard_nft::NftError;
use serde::{Deserialize, Serialize};

use crate::backend::TableCounters;

/// Upper bounds (seconds) of the reconcile duration histogram: a fast-path
/// verify is well under a millisecond, a full replace a few milliseconds,
/// a large ruleset or a slow kernel up to seconds.
pub const BUCKETS: [f64; 13] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// A Prometheus histogram: per-bucket counts (not cumulative), the count
/// and the sum.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Histogram {
    pub buckets: Vec<u64>,
    pub count: u64,
    pub sum: f64,
}

impl Histogram {
    pub fn observe(&mut self, seconds: f64) {
        if self.buckets.len() != BUCKETS.len() {
            self.buckets.resize(BUCKETS.len(), 0);
        }
        if let Some(i) = BUCKETS.iter().position(|&le| seconds <= le) {
            self.buckets[i] += 1;
        }
        self.count += 1;
        self.sum += seconds;
    }

    /// `self + other`.
    pub fn plus(&self, other: &Histogram) -> Histogram {
        let bucket = |h: &Histogram, i: usize| h.buckets.get(i).copied().unwrap_or(0);
        Histogram {
            buckets: (0..BUCKETS.len())
                .map(|i| bucket(self, i) + bucket(other, i))
                .collect(),
            count: self.count + other.count,
            sum: self.sum + other.sum,
        }
    }
}

/// The guard's counters of this daemon run (the metrics add earlier
/// runs' totals).
#[derive(Debug, Clone, Default)]
pub struct Counters {
    /// Times the guard's table was found missing or changed by somebody
    /// else and restored.
    pub restores: u64,
    /// How long the last restore took after it was called for.
    pub last_restore_ms: Option<f64>,
    /// Times Docker's IPv6 FORWARD drop was set back to accept.
    pub ip6_restores: u64,
    /// Live connections ended because the allowlist stopped admitting them.
    pub ended_connections: u64,
    /// How long each reconcile took.
    pub reconcile_seconds: Histogram,
    /// Per table (primary first): times it was created or recreated whole,
    /// which starts its kernel counters from zero (the metrics carry them).
    pub tables_replaced: Vec<u64>,
    /// The kernel's per-port blocked-attempt counters, as last read.
    pub kernel: KernelCounters,
}

/// The latest read of the kernel's per-port blocked-attempt counters
/// (each read is a dump of every guard table, on the loop).
#[derive(Debug, Clone, Default)]
pub struct KernelCounters {
    /// When a read was last tried, whether it worked or not.
    pub read_at: Option<Instant>,
    /// Reconciles (the histogram's count) when a read was last tried.
    pub reconciles_at_read: u64,
    /// Reads that worked so far: the metrics fold each one in once.
    pub reads: u64,
    /// What the last read that worked found, per table, primary first.
    pub tables: Vec<TableCounters>,
    /// A failed read was logged (again only after one works).
    error_logged: bool,
}

impl KernelCounters {
    /// Keeps a read tried after `reconciles` reconciles.
    pub fn record(&mut self, read: Result<Vec<TableCounters>, NftError>, reconciles: u64) {
        self.read_at = Some(Instant::now());
        self.reconciles_at_read = reconciles;
        match read {
            Ok(tables) => {
                // The tests count these: each read is a dump of every
                // guard table, on the reconcile loop.
                tracing::debug!(
                    tables = tables.len(),
                    "read the kernel's blocked-attempt counters"
                );
                self.error_logged = false;
                self.reads += 1;
                self.tables = tables;
            }
            Err(e) => {
                if !self.error_logged {
                    tracing::warn!(error = %e, "could not read the kernel's blocked-attempt counters");
                    self.error_logged = true;
                }
            }
        }
    }

    /// Whether a read was tried less than `age` ago.
    pub fn read_within(&self, age: Duration) -> bool {
        self.read_at.is_some_and(|at| at.elapsed() < age)
    }

    /// Whether the last read that worked found the primary table.
    pub fn primary_present(&self) -> bool {
        self.tables.first().is_some_and(|(_, c)| c.is_some())
    }
}

/// What the metrics read of the guard: its counters and the state their
/// gauges show. Made by [`crate::guard::Guard::view`].
pub struct GuardView<'a> {
    pub counters: &'a Counters,
    pub config: &'a Config,
    pub snapshot: &'a Snapshot,
    pub tier: ProtectionTier,
    /// A ruleset was proven in the kernel (at start or since).
    pub applied: bool,
    /// The last reconcile failed.
    pub last_reconcile_failed: bool,
    pub docker_connected: bool,
    /// The Docker Engine's version, while connected.
    pub docker_engine: Option<&'a str>,
    pub config_error: bool,
    /// What the guard guards with: the files, or a fallback.
    pub config_source: ConfigSource,
    /// When the kernel's table was last proven to hold the desired ruleset.
    pub verified_at: Option<SystemTime>,
}
