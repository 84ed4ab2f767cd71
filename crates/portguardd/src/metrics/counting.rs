//! Counter arithmetic: the kernel's blocked-attempt counters carried
//! across the lives of their tables, and the totals kept for the next run.
//!
//! Blocked attempts are counted in the kernel, per port, in the
//! `blocked_tcp`/`blocked_udp` sets (one counter per element). A table
//! that is recreated starts them from zero, so for every table, protocol
//! and port the daemon keeps the last value it read and a `base` (what
//! earlier lives of the table had counted); it exports `base + last`.
//! When the table is replaced, or a value is found lower than the last
//! one read (or gone), `last` is folded into `base`. Attempts counted
//! after the last read and before the table disappeared are lost (at most
//! one read interval's worth), never counted twice.

use std::collections::BTreeMap;

use portguard_core::L4Proto;
use serde::{Deserialize, Serialize};

use crate::counters::Histogram;

/// One kernel counter, carried across the lives of its table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Carried {
    /// What earlier lives of the table counted.
    pub base: u64,
    /// The last value read from the kernel.
    pub last: u64,
}

impl Carried {
    pub fn total(self) -> u64 {
        self.base.saturating_add(self.last)
    }

    /// A new reading: lower than the last one means the counter started
    /// again from zero (its table or element was recreated).
    pub fn read(&mut self, value: u64) {
        if value < self.last {
            self.fold();
        }
        self.last = value;
    }

    /// The counter is known to start again from zero.
    pub fn fold(&mut self) {
        self.base = self.total();
        self.last = 0;
    }
}

/// What is kept in the state directory.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Persisted {
    pub restores: u64,
    pub ipv6_policy_restores: u64,
    pub ended_connections: u64,
    pub reconcile_seconds: Histogram,
    pub blocked: Vec<PersistedBlocked>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PersistedBlocked {
    pub table: String,
    pub proto: L4Proto,
    pub port: u16,
    pub base: u64,
    pub last: u64,
}

/// Blocked-attempt counters by table, protocol and port.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BlockedCounters(BTreeMap<(String, L4Proto, u16), Carried>);

impl BlockedCounters {
    /// The counters an earlier run kept.
    pub fn from_persisted(kept: &[PersistedBlocked]) -> BlockedCounters {
        BlockedCounters(
            kept.iter()
                .map(|b| {
                    (
                        (b.table.clone(), b.proto, b.port),
                        Carried {
                            base: b.base,
                            last: b.last,
                        },
                    )
                })
                .collect(),
        )
    }

    /// The counters to keep for the next run.
    pub fn persisted(&self) -> Vec<PersistedBlocked> {
        self.0
            .iter()
            .map(|((table, proto, port), c)| PersistedBlocked {
                table: table.clone(),
                proto: *proto,
                port: *port,
                base: c.base,
                last: c.last,
            })
            .collect()
    }

    /// Table `table` was recreated: every counter it had starts from zero.
    pub fn fold_table(&mut self, table: &str) {
        for ((name, _, _), carried) in self.0.iter_mut() {
            if name == table {
                carried.fold();
            }
        }
    }

    /// A reading of every counter table `table` has now; a counter it no
    /// longer has reads as zero.
    pub fn read_table(&mut self, table: &str, counters: &[(L4Proto, u16, u64)]) {
        for ((name, proto, port), carried) in self.0.iter_mut() {
            if name == table && !counters.iter().any(|(p, n, _)| p == proto && n == port) {
                carried.read(0);
            }
        }
        for &(proto, port, packets) in counters {
            self.0
                .entry((table.to_string(), proto, port))
                .or_default()
                .read(packets);
        }
    }

    /// Totals per protocol and port, summed over the tables (in the tiers
    /// with two copies, whichever copy judged the packet counted it).
    pub fn totals(&self) -> BTreeMap<(L4Proto, u16), u64> {
        let mut out: BTreeMap<(L4Proto, u16), u64> = BTreeMap::new();
        for ((_, proto, port), carried) in &self.0 {
            let total = out.entry((*proto, *port)).or_default();
            *total = total.saturating_add(carried.total());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_replaced_table_and_a_lower_reading_fold_into_the_base() {
        let mut c = BlockedCounters::default();
        let t = "portguard";
        c.read_table(t, &[(L4Proto::Tcp, 8081, 5)]);
        c.read_table(t, &[(L4Proto::Tcp, 8081, 7)]);
        assert_eq!(c.totals()[&(L4Proto::Tcp, 8081)], 7);
        // The table was recreated; its new element has counted 9 already:
        // without the fold this would read as 9, losing the earlier 7.
        c.fold_table(t);
        c.read_table(t, &[(L4Proto::Tcp, 8081, 9)]);
        assert_eq!(c.totals()[&(L4Proto::Tcp, 8081)], 16);
        // Somebody flushed the set: the element is gone, then back.
        c.read_table(t, &[]);
        assert_eq!(c.totals()[&(L4Proto::Tcp, 8081)], 16);
        c.read_table(t, &[(L4Proto::Tcp, 8081, 2)]);
        assert_eq!(c.totals()[&(L4Proto::Tcp, 8081)], 18);
        // Another table's fold leaves this one alone.
        c.fold_table("portguard_standby");
        c.read_table(t, &[(L4Proto::Tcp, 8081, 2)]);
        assert_eq!(c.totals()[&(L4Proto::Tcp, 8081)], 18);
        // Both copies count; the totals add up.
        c.read_table("portguard_standby", &[(L4Proto::Tcp, 8081, 4)]);
        assert_eq!(c.totals()[&(L4Proto::Tcp, 8081)], 22);
    }

    proptest! {
        /// Whatever the kernel does (counting, recreating tables, losing
        /// elements), the exported totals never go backwards.
        #[test]
        fn totals_never_go_backwards(steps in prop::collection::vec((0u8..4, 0u16..3, 0u64..50), 1..200)) {
            let mut c = BlockedCounters::default();
            let mut kernel: BTreeMap<u16, u64> = BTreeMap::new();
            let mut previous: BTreeMap<(L4Proto, u16), u64> = BTreeMap::new();
            for (action, port, n) in steps {
                match action {
                    0 => *kernel.entry(port).or_default() += n,
                    1 => { kernel.clear(); c.fold_table("t"); }
                    2 => { kernel.remove(&port); }
                    _ => {}
                }
                let reading: Vec<_> = kernel.iter().map(|(p, v)| (L4Proto::Tcp, *p, *v)).collect();
                c.read_table("t", &reading);
                let totals = c.totals();
                for (key, before) in &previous {
                    prop_assert!(totals.get(key).copied().unwrap_or(0) >= *before);
                }
                previous = totals;
            }
        }
    }
}
