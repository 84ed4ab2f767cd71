//! Recreating a deleted (or otherwise changed) copy of the guard's table
//! the moment the change is heard, on the monitor's thread.
//!
//! In the twin tier (and for the standby of the owned-standby tier) the
//! tables are not owned: anybody with CAP_NET_ADMIN can delete one. The
//! host stays guarded while the other copy stands, so a copy must be back
//! before the next deletion. Left to the reconcile loop, the restore waits
//! for whatever the loop is doing (a reload, a status request, a
//! verification dump) and then reads the table back first; on a loaded
//! two-core CI machine that took up to 150 ms, and an attacker deleting the
//! copies in turn every 150 ms got 33 connections through. The monitor
//! hears the deletion first, so it recreates the copy itself from the
//! ruleset the loop last reconciled to, in one transaction that only creates
//! (it fails, changing nothing, if the table exists again). A copy changed
//! any other way (its rules flushed, made dormant: as good as deleted) is
//! deleted and created in one transaction, so it is never absent. The loop
//! still reads, compares and repairs afterwards, as for any change.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use portguard_core::Ruleset;

use crate::batch;
use crate::error::NftError;
use crate::kernel_constants::{EEXIST, ENOENT};
use crate::model::{Ownership, TableSpec};
use crate::socket::NfSocket;

/// The ruleset the loop last reconciled each unowned table to (proved, or
/// being installed), shared between the tables' handles (which keep it
/// current) and the monitor (which recreates from it). Cloning shares.
#[derive(Clone, Default)]
pub struct Recreation {
    ready: Arc<Mutex<BTreeMap<String, Arc<Ruleset>>>>,
}

/// What a foreign transaction did to a kept copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    /// Deleted it.
    Missing,
    /// Changed it (flushed its rules, made it dormant, added an element,
    /// ...): replaced whole, in one transaction, so it is never absent.
    Changed,
}

/// One copy the monitor put back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recreated {
    /// The table's name (family `inet`).
    pub table: String,
    pub found: Found,
    /// From receiving the change's notifications to the committed
    /// recreation.
    pub took: Duration,
}

impl Recreation {
    pub fn new() -> Recreation {
        Recreation::default()
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, Arc<Ruleset>>> {
        // The map holds plain values: a panic elsewhere cannot leave it
        // half-written, so a poisoned lock is still good.
        self.ready.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Keeps `ruleset` ready for `spec`'s table. Owned tables are left
    /// out: nobody else can delete them, and a table created by the
    /// monitor's socket would be owned by that socket.
    pub(crate) fn keep(&self, spec: &TableSpec, ruleset: Arc<Ruleset>) {
        if spec.ownership == Ownership::Unowned {
            self.lock().insert(spec.name.clone(), ruleset);
        }
    }

    /// The tables whose rulesets are kept ready.
    pub fn tables(&self) -> Vec<String> {
        self.lock().keys().cloned().collect()
    }

    /// Recreates `table` (family `inet`) if a ruleset is ready for it:
    /// a missing copy is created, create-only; a changed one is deleted
    /// and created in one transaction (or created, if it went meanwhile).
    /// `Ok(false)`: nothing kept for it, or a missing copy exists again
    /// (somebody, the loop say, was faster; the transaction changed
    /// nothing).
    pub(crate) fn recreate(
        &self,
        sock: &mut NfSocket,
        table: &str,
        found: Found,
    ) -> Result<bool, NftError> {
        let Some(ruleset) = self.lock().get(table).cloned() else {
            return Ok(false);
        };
        let spec = TableSpec {
            name: table.to_string(),
            ownership: Ownership::Unowned,
        };
        if found == Found::Changed {
            match sock.send_batch(batch::replace_table(&spec, Some(0), &ruleset)) {
                Err(NftError::Kernel { errno: ENOENT, .. }) => {}
                other => return other.map(|()| true),
            }
        }
        match sock.send_batch(batch::create_table(&spec, &ruleset)) {
            Ok(()) => Ok(true),
            Err(NftError::Kernel { errno: EEXIST, .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Recreates each of `copies` that is kept ready, as [`Recreated`];
    /// a refusal is logged, and left to the loop's restore.
    pub(crate) fn recreate_all<'a>(
        &self,
        sock: &mut NfSocket,
        copies: impl IntoIterator<Item = (&'a str, Found)>,
        heard: Instant,
    ) -> Vec<Recreated> {
        let mut out = Vec::new();
        for (table, found) in copies {
            match self.recreate(sock, table, found) {
                Ok(true) => out.push(Recreated {
                    table: table.to_string(),
                    found,
                    took: heard.elapsed(),
                }),
                Ok(false) => {}
                Err(e) => tracing::warn!(
                    "could not recreate table inet {table} at once ({e}); the reconcile loop restores it"
                ),
            }
        }
        out
    }
}
