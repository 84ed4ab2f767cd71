//! portguard's kernel backend: programs nftables over netlink, without
//! shelling out to `nft`.
//!
//! * [`Nft::apply`] replaces our table in one transaction (P9) and records
//!   what the kernel then holds;
//! * [`Nft::verify`] tells `Intact`, `Missing` or `Altered`;
//! * [`Monitor`] reports every ruleset change with the process behind it;
//! * [`Nft::ip6_forward_policy`] / [`Nft::restore_ip6_forward_policy`]
//!   undo Docker's IPv6 FORWARD drop (P6), with an iptables-legacy
//!   fallback;
//! * [`Nft::remove`] deletes our table.
//!
//! All calls are blocking and act in the network namespace of the calling
//! thread at the time the handle was opened.

mod conntrack;
mod encode;
mod error;
mod ip6;
mod monitor;
mod readback;
mod socket;

use std::time::{Duration, Instant};

use netlink_packet_netfilter::NetfilterProtoFamily;
use netlink_packet_netfilter::nftables::{GenAttribute, GenMessage, NfTablesMessage};
use portguard_core::Ruleset;

pub use conntrack::{Flow, SweepStats};
pub use error::NftError;
pub use ip6::{ForwardPolicy, Ip6Backend, PolicyRestore};
pub use monitor::{Change, Monitor, MonitorEvent};
pub use readback::TableState;

use socket::NfSocket;

/// What [`Nft::verify`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verification {
    /// The kernel holds exactly what we applied.
    Intact,
    /// Our table is gone.
    Missing,
    /// Our table exists but differs from what we applied.
    Altered(String),
    /// Nothing applied yet through this handle.
    NotApplied,
}

/// Timings of one apply.
#[derive(Debug, Clone, Copy)]
pub struct ApplyStats {
    /// Only what changed was rewritten (see [`Nft::apply`]).
    pub incremental: bool,
    /// The transaction itself (send and every acknowledgement).
    pub commit: Duration,
    /// Reading the table back to record the baseline.
    pub readback: Duration,
    /// Netlink messages in the batch.
    pub messages: usize,
}

struct Applied {
    ruleset: Ruleset,
    state: TableState,
    genid: u32,
    locked: bool,
}

/// A handle on nf_tables in one network namespace.
pub struct Nft {
    sock: NfSocket,
    applied: Option<Applied>,
    netns: ip6::NetnsRef,
    /// The last verification and the generation it was made at: within one
    /// generation the answer cannot change (restores verify, then apply).
    last_verify: Option<(u32, Verification)>,
    /// Apply the table locked (owned by this handle's socket).
    lock: bool,
}

impl Nft {
    pub fn open() -> Result<Nft, NftError> {
        Ok(Nft {
            sock: NfSocket::open()?,
            applied: None,
            netns: ip6::NetnsRef::current()?,
            last_verify: None,
            lock: false,
        })
    }

    /// Whether the next applies create the table locked: owned by this
    /// handle, so that the kernel refuses everybody else's changes to it
    /// (`nft delete table`, added rules, `nft flush ruleset`) while the
    /// handle lives, and persisting when it closes. Linux 6.9+.
    pub fn set_lock(&mut self, lock: bool) {
        self.lock = lock;
    }

    /// Makes the kernel hold `ruleset` in one transaction, then reads it
    /// back and checks that it does.
    ///
    /// When our table is intact and has the same shape (sets, chains) as
    /// last applied, only the sets and chains that changed are flushed and
    /// refilled: base chains stay hooked, so packets never meet a table
    /// being torn down. Otherwise the table is deleted and added back
    /// complete, in the same transaction.
    pub fn apply(&mut self, ruleset: &Ruleset) -> Result<ApplyStats, NftError> {
        let started = Instant::now();
        let incremental = match &self.applied {
            Some(applied)
                if applied.locked == self.lock && encode::same_shape(&applied.ruleset, ruleset) =>
            {
                self.verify()? == Verification::Intact
            }
            _ => false,
        };
        let batch = match (&self.applied, incremental) {
            (Some(applied), true) => encode::update_table(&applied.ruleset, ruleset),
            _ => encode::replace_table(ruleset, self.lock),
        };
        let messages = batch.len() + 2;
        if !batch.is_empty() {
            self.sock.send_batch(batch)?;
        }
        let commit = started.elapsed();
        let read_started = Instant::now();
        let genid = self.genid()?;
        let state = readback::read_table(&mut self.sock)?.ok_or_else(|| {
            NftError::Protocol("our table vanished right after it was committed".into())
        })?;
        if let Some(problem) = structure_mismatch(ruleset, &state) {
            return Err(NftError::Protocol(format!(
                "the kernel holds another ruleset than applied: {problem}"
            )));
        }
        self.applied = Some(Applied {
            ruleset: ruleset.clone(),
            state,
            genid,
            locked: self.lock,
        });
        Ok(ApplyStats {
            incremental,
            commit,
            readback: read_started.elapsed(),
            messages,
        })
    }

    /// Whether the table was last applied locked (see [`Nft::set_lock`]).
    pub fn applied_lock(&self) -> Option<bool> {
        self.applied.as_ref().map(|a| a.locked)
    }

    /// The ruleset last applied through this handle.
    pub fn applied(&self) -> Option<&Ruleset> {
        self.applied.as_ref().map(|a| &a.ruleset)
    }

    /// Compares the kernel's table with what was applied. Cheap when
    /// nothing changed anywhere (one GETGEN round trip).
    pub fn verify(&mut self) -> Result<Verification, NftError> {
        let genid = self.genid()?;
        let Some(applied) = &self.applied else {
            return Ok(Verification::NotApplied);
        };
        if genid == applied.genid {
            return Ok(Verification::Intact);
        }
        if let Some((at, verdict)) = &self.last_verify
            && *at == genid
        {
            return Ok(verdict.clone());
        }
        let verdict = match readback::read_table(&mut self.sock)? {
            None => Verification::Missing,
            Some(state) if state.undecodable > 0 => Verification::Altered(format!(
                "{} foreign object(s) in our table",
                state.undecodable
            )),
            Some(state) if state.same_structure(&applied.state) => Verification::Intact,
            Some(state) => Verification::Altered(describe_difference(&applied.state, &state)),
        };
        if verdict == Verification::Intact
            && let Some(applied) = &mut self.applied
        {
            // Somebody changed another table; ours is fine at this generation.
            applied.genid = genid;
        }
        self.last_verify = Some((genid, verdict.clone()));
        Ok(verdict)
    }

    /// Packets counted by the judge chains' counters: attempts blocked (or,
    /// in audit mode, that would have been).
    pub fn blocked_packets(&mut self) -> Result<u64, NftError> {
        Ok(readback::read_table(&mut self.sock)?.map_or(0, |state| state.blocked_packets()))
    }

    /// Our table as the kernel holds it now, if it exists.
    pub fn read_table(&mut self) -> Result<Option<TableState>, NftError> {
        readback::read_table(&mut self.sock)
    }

    /// Deletes our table; `Ok(false)` if there was none.
    pub fn remove(&mut self) -> Result<bool, NftError> {
        let existed = readback::read_table(&mut self.sock)?.is_some();
        self.sock.send_batch(encode::delete_table(self.lock)).map_err(|e| match e.errno() {
            Some(1) => NftError::Command(
                "the guard's table is locked by a running portguardd (lock_table); stop it first".into(),
            ),
            _ => e,
        })?;
        self.applied = None;
        Ok(existed)
    }

    /// The ruleset generation: it changes with every committed transaction
    /// in this network namespace, by anybody.
    pub fn genid(&mut self) -> Result<u32, NftError> {
        let reply = self.sock.request(
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
}

/// Checks chain names, rule counts, expression names and set names of
/// `state` against the ruleset we sent.
fn structure_mismatch(ruleset: &Ruleset, state: &TableState) -> Option<String> {
    let want_chains: Vec<&str> = ruleset.chains.iter().map(|c| c.name.as_str()).collect();
    let have_chains: Vec<&str> = state.chains.iter().map(|c| c.name.as_str()).collect();
    let (mut want_sorted, mut have_sorted) = (want_chains.clone(), have_chains.clone());
    want_sorted.sort_unstable();
    have_sorted.sort_unstable();
    if want_sorted != have_sorted {
        return Some(format!("chains {have_chains:?}, expected {want_chains:?}"));
    }
    for chain in &ruleset.chains {
        let Some(held) = state.chains.iter().find(|c| c.name == chain.name) else {
            return Some(format!("chain {} missing", chain.name));
        };
        if held.rules.len() != chain.rules.len() {
            return Some(format!(
                "chain {} has {} rules, expected {}",
                chain.name,
                held.rules.len(),
                chain.rules.len()
            ));
        }
        for (index, (rule, exprs)) in chain.rules.iter().zip(&held.rules).enumerate() {
            let want = encode::expression_names(rule);
            let have: Vec<String> = exprs.iter().map(|e| e.name.clone()).collect();
            if want != have {
                return Some(format!(
                    "rule {index} of {} is {have:?}, expected {want:?}",
                    chain.name
                ));
            }
        }
    }
    let mut want_sets: Vec<&str> = ruleset.sets.iter().map(|s| s.name.as_str()).collect();
    let mut have_sets: Vec<&str> = state.sets.iter().map(|s| s.name.as_str()).collect();
    want_sets.sort_unstable();
    have_sets.sort_unstable();
    if want_sets != have_sets {
        return Some(format!("sets {have_sets:?}, expected {want_sets:?}"));
    }
    None
}

fn describe_difference(applied: &TableState, now: &TableState) -> String {
    for chain in &applied.chains {
        match now.chains.iter().find(|c| c.name == chain.name) {
            None => return format!("chain {} was deleted", chain.name),
            Some(c) if c.rules.len() != chain.rules.len() => {
                return format!(
                    "chain {} has {} rules instead of {}",
                    chain.name,
                    c.rules.len(),
                    chain.rules.len()
                );
            }
            Some(c) if c.base != chain.base => {
                return format!("chain {}'s hook or policy changed", chain.name);
            }
            _ => {}
        }
    }
    for chain in &now.chains {
        if !applied.chains.iter().any(|c| c.name == chain.name) {
            return format!("chain {} was added", chain.name);
        }
    }
    for set in &applied.sets {
        match now.sets.iter().find(|s| s.name == set.name) {
            None => return format!("set {} was deleted", set.name),
            Some(s) if s.elements != set.elements => {
                return format!("elements of set {} changed", set.name);
            }
            Some(s) if s.definition != set.definition => {
                return format!("set {} was redefined", set.name);
            }
            _ => {}
        }
    }
    "rules were changed".into()
}
