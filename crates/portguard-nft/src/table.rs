//! One of the guard's tables: [`GuardTable::reconcile`] makes the kernel
//! hold exactly the desired ruleset and proves it did.

use std::sync::Arc;
use std::time::{Duration, Instant};

use netlink_packet_netfilter::NetfilterProtoFamily;
use netlink_packet_netfilter::nftables::{GenAttribute, GenMessage, NfTablesMessage};
use portguard_core::Ruleset;

use crate::batch;
use crate::compare::{compare, expected_state};
use crate::error::NftError;
use crate::kernel_constants::{
    EINVAL, ENOENT, EOPNOTSUPP, EPERM, NFT_TABLE_F_OWNER, NFT_TABLE_F_PERSIST,
};
use crate::messages::table_msg;
use crate::model::{Difference, Ownership, TableSpec, TableState};
use crate::readback;
use crate::recreate::Recreation;
use crate::socket::NfSocket;
use crate::witness::ReadWitness;

/// Reads of a table that keep meeting concurrent changes give up after
/// this many tries; the caller reconciles again on the next trigger.
const CONSISTENT_READ_TRIES: usize = 8;
/// Apply, then verify, this many times before calling it a failure (each
/// round can only fail because somebody changed the table in between).
const APPLY_ROUNDS: usize = 3;

/// What [`GuardTable::reconcile`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TableOutcome {
    /// The kernel already held the desired table.
    Unchanged,
    /// Rules or elements were put right in place (base chains stayed
    /// hooked); the differences that were found.
    Repaired(Vec<Difference>),
    /// The table was created or recreated whole.
    Replaced(Vec<Difference>),
}

/// Timings of the last apply, for logs and benchmarks.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApplyStats {
    /// The transaction itself (send and every acknowledgement).
    pub commit: Duration,
    /// Reading the table back and comparing it.
    pub verify: Duration,
    /// Netlink messages in the batch.
    pub messages: usize,
}

/// What the kernel was last proved to hold.
struct Verified {
    genid: u32,
    /// Shared with the [`Recreation`], if any.
    ruleset: Arc<Ruleset>,
    /// `ruleset` encoded and walked into read-back form, kept so that the
    /// next element change encodes only the new ruleset (with 10,000
    /// entries, each encoding costs milliseconds), and a restore of the
    /// same ruleset encodes nothing to compare with.
    state: TableState,
}

/// A handle on one of the guard's tables in one network namespace. Owned
/// tables belong to this handle's socket: keep the handle for as long as
/// the daemon runs, and make every change through it.
pub struct GuardTable {
    sock: NfSocket,
    spec: TableSpec,
    /// The generation at which the kernel was last seen holding exactly
    /// this ruleset: while the generation stays, nothing can have changed.
    verified: Option<Verified>,
    last_stats: ApplyStats,
    /// Where the ruleset this table is reconciled to is kept ready for the
    /// monitor to recreate this table from, should somebody delete it.
    recreation: Option<Recreation>,
    /// Tells whether anybody changed the table while it was read.
    witness: ReadWitness,
}

impl GuardTable {
    /// Opens a handle in the calling thread's network namespace.
    pub fn open(spec: TableSpec) -> Result<GuardTable, NftError> {
        Ok(GuardTable {
            sock: NfSocket::open()?,
            spec,
            verified: None,
            last_stats: ApplyStats::default(),
            recreation: None,
            witness: ReadWitness::open()?,
        })
    }

    /// Keeps each ruleset this table is reconciled to ready in
    /// `recreation` (for an unowned table), so that a monitor made with
    /// [`crate::Monitor::recreating`] can put the table back at once.
    pub fn recreated_by(mut self, recreation: &Recreation) -> GuardTable {
        self.recreation = Some(recreation.clone());
        self
    }

    pub fn spec(&self) -> &TableSpec {
        &self.spec
    }

    /// Timings of the last transaction this handle committed.
    pub fn last_stats(&self) -> ApplyStats {
        self.last_stats
    }

    /// Makes the kernel hold exactly `desired`, and proves it: the table
    /// is read back (consistently, within one generation) and compared
    /// with `desired` element for element; what differs is repaired in
    /// place where it can be, else the table is replaced in one
    /// transaction; then it is read and compared again. A change that
    /// races the repair is caught by that second comparison and repaired
    /// too. Cheap when nothing changed anywhere (one GETGEN).
    pub fn reconcile(&mut self, desired: &Ruleset) -> Result<TableOutcome, NftError> {
        let verified_is_desired = self.verified.as_ref().filter(|v| *v.ruleset == *desired);
        let target = match verified_is_desired {
            Some(verified) => Arc::clone(&verified.ruleset),
            None => Arc::new(desired.clone()),
        };
        // A copy deleted from now on is recreated as this reconcile leaves
        // it, not as it was: the previous ruleset, recreated between our
        // commit and its proof, would undo the commit (under a deletion
        // storm round after round, until the reconcile failed, and a
        // reload with it). The loop reconciles after every recreation, so
        // what was recreated is proved all the same.
        if let Some(recreation) = &self.recreation {
            recreation.keep(&self.spec, Arc::clone(&target));
        }
        let unchanged_at = verified_is_desired.map(|v| v.genid);
        if let Some(genid) = unchanged_at
            && self.genid()? == genid
        {
            return Ok(TableOutcome::Unchanged);
        }
        // After a deletion or a foreign change the wanted ruleset is usually
        // the one last verified, whose read-back form is kept: encoding it
        // again costs milliseconds (tens under load, debug build) on the
        // restore's critical path, while the host may be down to one copy.
        let want = match &self.verified {
            Some(verified) if Arc::ptr_eq(&verified.ruleset, &target) => verified.state.clone(),
            _ => expected_state(&self.spec, desired),
        };
        if let Some(outcome) = self.reconcile_known(&target, &want)? {
            return Ok(outcome);
        }
        let mut outcome = None;
        for _ in 0..APPLY_ROUNDS {
            let (genid, have) = self.read_consistent()?;
            let differences = compare(&want, have.as_ref());
            if differences.is_empty() {
                self.verify_at(genid, Arc::clone(&target), want);
                return Ok(outcome.unwrap_or(TableOutcome::Unchanged));
            }
            self.verified = None;
            let started = Instant::now();
            let in_place = have.is_some() && differences.iter().all(Difference::in_place);
            let replace = || match &have {
                Some(have) => batch::replace_table(&self.spec, Some(have.flags), desired),
                // Create only: a copy somebody put back since the read (the
                // monitor, say) must not get a second set of rules.
                None => batch::create_table(&self.spec, desired),
            };
            let mut batch = if in_place {
                batch::repair_table(&self.spec, desired, &differences)
            } else {
                replace()
            };
            let messages = batch.len() + 2;
            let result = self.sock.send_batch(std::mem::take(&mut batch));
            let result = match result {
                // A repair the kernel refuses (a foreign element it will
                // not delete as dumped, say) becomes a replace.
                Err(NftError::Kernel { .. }) if in_place => self.sock.send_batch(replace()),
                other => other,
            };
            if let Err(e) = result {
                // A refusal with a known cause (another owner, a kernel
                // without ownership) is final. Any other one after somebody
                // committed since the read (deleted the table, or the
                // monitor recreated it) is a race: the batch was made for a
                // table that is no longer there. Read again.
                let e = self.explain_refusal(e, have.as_ref());
                if matches!(e, NftError::Kernel { .. }) && self.genid()? != genid {
                    continue;
                }
                return Err(e);
            }
            self.last_stats = ApplyStats {
                commit: started.elapsed(),
                verify: Duration::ZERO,
                messages,
            };
            let done = if in_place {
                TableOutcome::Repaired(differences)
            } else {
                TableOutcome::Replaced(differences)
            };
            // Exactly one commit since the consistent read, and it was
            // ours: the kernel holds what was read plus our batch, which is
            // `desired`. Anything else is read and compared again.
            let after = self.genid()?;
            if after == genid.wrapping_add(1) {
                self.verify_at(after, Arc::clone(&target), want);
                return Ok(done);
            }
            outcome = Some(done);
        }
        let verify_started = Instant::now();
        let (genid, have) = self.read_consistent()?;
        let differences = compare(&want, have.as_ref());
        self.last_stats.verify = verify_started.elapsed();
        if differences.is_empty() {
            self.verify_at(genid, Arc::clone(&target), want);
            return Ok(outcome.unwrap_or(TableOutcome::Unchanged));
        }
        Err(NftError::NotApplied(
            differences.iter().map(ToString::to_string).collect(),
        ))
    }

    /// The fast path, taken while the generation has not moved since the
    /// last exact comparison: the kernel then holds exactly the verified
    /// ruleset, so the difference to `desired` is computed without a dump,
    /// and if the generation after our commit is exactly one more, nobody
    /// else committed in between: the kernel holds exactly `desired`.
    /// `None` when that cannot be known; the caller reads and compares.
    /// `want` is `desired` in read-back form.
    fn reconcile_known(
        &mut self,
        desired: &Arc<Ruleset>,
        want: &TableState,
    ) -> Result<Option<TableOutcome>, NftError> {
        let Some(verified) = self.verified.take() else {
            return Ok(None);
        };
        let genid = verified.genid;
        if self.genid()? != genid {
            return Ok(None);
        }
        let differences = compare(want, Some(&verified.state));
        if !differences.iter().all(Difference::in_place) {
            return Ok(None);
        }
        let batch = batch::repair_table(&self.spec, desired, &differences);
        let messages = batch.len() + 2;
        let started = Instant::now();
        if self.sock.send_batch(batch).is_err() {
            return Ok(None);
        }
        let commit = started.elapsed();
        let after = self.genid()?;
        if after != genid.wrapping_add(1) {
            return Ok(None);
        }
        self.last_stats = ApplyStats {
            commit,
            verify: Duration::ZERO,
            messages,
        };
        self.verify_at(after, Arc::clone(desired), want.clone());
        Ok(Some(TableOutcome::Repaired(differences)))
    }

    /// Records that the kernel held exactly `ruleset` (in read-back form
    /// `state`) at generation `genid`.
    fn verify_at(&mut self, genid: u32, ruleset: Arc<Ruleset>, state: TableState) {
        self.verified = Some(Verified {
            genid,
            ruleset,
            state,
        });
    }

    /// Whether the table exists (one request): cheap enough to decide
    /// which copy to restore first.
    pub fn exists(&mut self) -> Result<bool, NftError> {
        Ok(self
            .sock
            .request(
                NetfilterProtoFamily::Inet,
                NfTablesMessage::GetTable(table_msg(&self.spec.name, 0)),
            )?
            .is_some())
    }

    /// What differs between the kernel's table and `desired`, without
    /// changing anything.
    pub fn check(&mut self, desired: &Ruleset) -> Result<Vec<Difference>, NftError> {
        let (_, have) = self.read_consistent()?;
        Ok(compare(&expected_state(&self.spec, desired), have.as_ref()))
    }

    /// The table as the kernel holds it now, if it exists.
    pub fn read(&mut self) -> Result<Option<TableState>, NftError> {
        Ok(self.read_consistent()?.1)
    }

    /// Deletes the table; `Ok(false)` if there was none.
    pub fn remove(&mut self) -> Result<bool, NftError> {
        self.verified = None;
        let Some(state) = self.read()? else {
            return Ok(false);
        };
        // An orphaned persistent table is adopted by the creation that
        // precedes the deletion; a table owned by a running daemon is not
        // ours to delete.
        let flags = if state.flags & NFT_TABLE_F_PERSIST != 0 {
            NFT_TABLE_F_OWNER | NFT_TABLE_F_PERSIST
        } else {
            state.flags
        };
        self.sock
            .send_batch(batch::delete_table(&self.spec.name, flags))
            .map_err(|e| match e.errno() {
                Some(EPERM) => NftError::OwnedByRunningDaemon {
                    table: self.spec.name.clone(),
                },
                _ => e,
            })?;
        Ok(true)
    }

    /// The ruleset generation: it changes with every committed transaction
    /// in this network namespace, by anybody.
    pub fn genid(&mut self) -> Result<u32, NftError> {
        genid(&mut self.sock)
    }

    /// The table as the kernel held it at the generation returned: a read
    /// during which a transaction touched this table is repeated, so the
    /// state returned is one the kernel really held, element for element.
    /// Commits to other tables during the read do not matter (see
    /// [`ReadWitness`]): on a busy host they never stop.
    fn read_consistent(&mut self) -> Result<(u32, Option<TableState>), NftError> {
        for _ in 0..CONSISTENT_READ_TRIES {
            // Listening before the first generation is taken: every
            // transaction after it is heard.
            let mut witness = self.witness.listen()?;
            let before = genid(&mut self.sock)?;
            let state = match readback::read_table(&mut self.sock, &self.spec.name) {
                Err(NftError::Interrupted) => continue,
                // The table (or one of its sets) was deleted between two of
                // the dumps: a missing table is answered `None` by the
                // first request, so this is a race like an interrupted
                // dump. Read again at once; failing the whole reconcile
                // would leave the deleted copy unrestored until the next
                // trigger.
                Err(e) if e.errno() == Some(ENOENT) => continue,
                other => other?,
            };
            let after = genid(&mut self.sock)?;
            if after == before || witness.untouched(&self.spec.name, before, after) {
                return Ok((after, state));
            }
        }
        Err(NftError::Protocol(format!(
            "table inet {} kept changing while it was read ({CONSISTENT_READ_TRIES} tries)",
            self.spec.name
        )))
    }

    fn explain_refusal(&self, e: NftError, have: Option<&TableState>) -> NftError {
        match (e.errno(), have) {
            (Some(EPERM), Some(state)) if state.flags & NFT_TABLE_F_OWNER != 0 => {
                NftError::OwnedByAnother {
                    table: self.spec.name.clone(),
                }
            }
            (Some(EOPNOTSUPP), _) if self.spec.ownership != Ownership::Unowned => {
                NftError::OwnershipUnsupported {
                    table: self.spec.name.clone(),
                    ownership: self.spec.ownership,
                }
            }
            _ => e,
        }
    }
}

pub(crate) fn genid(sock: &mut NfSocket) -> Result<u32, NftError> {
    let reply = sock.request(
        NetfilterProtoFamily::Unspec,
        NfTablesMessage::GetGen(GenMessage { attributes: vec![] }),
    )?;
    match reply {
        Some(NfTablesMessage::NewGen(GenMessage { attributes })) => attributes
            .iter()
            .find_map(|a| match a {
                GenAttribute::Id(id) => Some(*id),
                _ => None,
            })
            .ok_or_else(|| NftError::Protocol("NEWGEN without an id".into())),
        other => Err(NftError::Protocol(format!(
            "unexpected reply to GETGEN: {other:?}"
        ))),
    }
}

/// The strongest table ownership this kernel supports, found by creating
/// and deleting a probe table in one transaction (nobody ever sees it).
pub fn probe_ownership() -> Result<Ownership, NftError> {
    let mut sock = NfSocket::open()?;
    for ownership in [Ownership::OwnedPersistent, Ownership::Owned] {
        let name = format!("portguard_probe_{}", std::process::id());
        match sock.send_batch(batch::probe_table_flags(&name, ownership.flags())) {
            Ok(()) => return Ok(ownership),
            // The kernel does not know the flag.
            Err(NftError::Kernel {
                errno: EOPNOTSUPP | EINVAL,
                ..
            }) => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(Ownership::Unowned)
}

/// Whether the kernel can hold the judge chains' nflog rule (`log group`
/// needs nfnetlink_log, which a kernel may lack or be unable to load): a
/// probe table holding such a rule, created and deleted in one
/// transaction. A kernel that refuses it would refuse the guard's whole
/// ruleset, so the daemon then plans without that rule
/// ([`portguard_core::plan::without_nflog`]).
pub fn probe_nflog() -> Result<bool, NftError> {
    use portguard_core::plan::{NFLOG_GROUP, NFLOG_SNAPLEN};
    use portguard_core::ruleset::{Rule, Stmt};
    let mut sock = NfSocket::open()?;
    let name = format!("portguard_probe_nflog_{}", std::process::id());
    let rule = Rule::new([Stmt::Nflog {
        prefix: "probe".into(),
        group: NFLOG_GROUP,
        snaplen: NFLOG_SNAPLEN,
    }]);
    match sock.send_batch(batch::probe_rule(&name, &rule)) {
        Ok(()) => Ok(true),
        Err(NftError::Kernel { .. }) => Ok(false),
        Err(e) => Err(e),
    }
}
