//! The loop reaches the kernel only through [`Backend`], so that it can be
//! tested in-process with a fake one (`fake_kernel.rs`, which the tests of
//! the guard, the metrics and the event loop share), races included, the
//! way netavark tests its firewall drivers.

use portguard_config::Protection;
use portguard_core::control::{ProtectionTier, TierUnavailable};
use portguard_core::{Judged, L4Proto, Ruleset};
use portguard_nft::{
    Conntrack, DropSetter, Flow, ForwardPolicy, ForwardPolicySet, GuardTable, Ip6Firewall,
    Ip6Policy, Look, NftError, Ownership, PolicyRestore, Recreation, STANDBY_TABLE, SweepStats,
    TableOutcome, TableSpec,
};

/// What the reconcile loop asks of the kernel.
pub trait Backend {
    /// The tier in force.
    fn protection(&self) -> ProtectionTier;
    /// Makes every table of the tier hold exactly `desired` and proves it.
    /// One outcome per table, primary first.
    fn reconcile(&mut self, desired: &Ruleset) -> Result<Vec<TableOutcome>, NftError>;
    /// Whether the primary table exists, and its blocked-attempt counters.
    fn blocked_packets(&mut self) -> Result<Option<u64>, NftError>;
    /// The kernel's per-port blocked-attempt counters of every table of
    /// the tier, by table name (`None`: that table does not exist).
    fn blocked_per_port(&mut self) -> Result<Vec<TableCounters>, NftError>;
    fn ip6_forward_policy(&mut self) -> Result<ForwardPolicy, NftError>;
    /// What the monitor heard of the IPv6 FORWARD policy, in order (each
    /// drop with its setter), and whether notifications were lost. A
    /// backend without a monitor (a fake) hears nothing.
    fn ip6_heard(&mut self, _heard: &[ForwardPolicySet], _lost: bool) {}
    /// Looks at the IPv6 FORWARD policies on `look` and, if `restore`,
    /// sets back to accept each drop that is Docker's (see
    /// [`portguard_nft::DropWitness`]); what it set back.
    fn restore_ip6_forward_policy(
        &mut self,
        look: Look,
        restore: bool,
    ) -> Result<Vec<PolicyRestore>, NftError>;
    /// Each IPv6 FORWARD drop in force, and who set it.
    fn ip6_forward_drops(&mut self) -> Result<Vec<(Ip6Firewall, DropSetter)>, NftError> {
        Ok(Vec::new())
    }
    /// Ends tracked connections carrying `mark` that `keep` refuses.
    fn end_connections(
        &mut self,
        mark: u32,
        keep: &dyn Fn(&Flow) -> bool,
    ) -> Result<SweepStats, NftError>;
    /// What the guard's tables in the kernel judge now (any tier's, an
    /// orphaned one's too): read once at start, before the first apply.
    fn judged_by_tables(&mut self) -> Result<Judged, NftError>;
}

/// One table's per-port counters: `(table, [(proto, port, packets)])`.
pub type TableCounters = (String, Option<Vec<(L4Proto, u16, u64)>>);

/// The tier `setting` gives on a kernel whose strongest ownership is
/// `kernel`; an error when the setting asks for more than the kernel has.
pub fn choose_tier(
    setting: Protection,
    kernel: Ownership,
) -> Result<ProtectionTier, TierUnavailable> {
    let strongest = match kernel {
        Ownership::OwnedPersistent => ProtectionTier::OwnedPersistent,
        Ownership::Owned => ProtectionTier::OwnedStandby,
        Ownership::Unowned => ProtectionTier::Twin,
    };
    let wanted = match setting {
        Protection::Auto => return Ok(strongest),
        Protection::OwnedPersistent => ProtectionTier::OwnedPersistent,
        Protection::OwnedStandby => ProtectionTier::OwnedStandby,
        Protection::Twin => ProtectionTier::Twin,
    };
    let rank = |t: ProtectionTier| match t {
        ProtectionTier::Twin => 0,
        ProtectionTier::OwnedStandby => 1,
        ProtectionTier::OwnedPersistent => 2,
    };
    if rank(wanted) > rank(strongest) {
        return Err(TierUnavailable { wanted, strongest });
    }
    Ok(wanted)
}

/// The tables of a tier: the primary, and the standby copy if it has one.
pub fn tables_of(tier: ProtectionTier) -> (TableSpec, Option<TableSpec>) {
    let spec = |name: &str, ownership| TableSpec {
        name: name.into(),
        ownership,
    };
    let primary = portguard_core::ruleset::TABLE_NAME;
    match tier {
        ProtectionTier::OwnedPersistent => (spec(primary, Ownership::OwnedPersistent), None),
        ProtectionTier::OwnedStandby => (
            spec(primary, Ownership::Owned),
            Some(spec(STANDBY_TABLE, Ownership::Unowned)),
        ),
        ProtectionTier::Twin => (
            spec(primary, Ownership::Unowned),
            Some(spec(STANDBY_TABLE, Ownership::Unowned)),
        ),
    }
}

/// The real kernel: one handle per job.
pub struct Kernel {
    tier: ProtectionTier,
    primary: GuardTable,
    standby: Option<GuardTable>,
    /// A standby copy a previous daemon in another tier left, removed once
    /// the primary is in place (its stale rules would refuse what is now
    /// allowed).
    leftover: Option<GuardTable>,
    ip6: Ip6Policy,
    conntrack: Conntrack,
}

impl Kernel {
    /// Opens every handle in the calling thread's network namespace. The
    /// tier's unowned copies keep their proved ruleset in `recreation`.
    pub fn open(tier: ProtectionTier, recreation: &Recreation) -> Result<Kernel, NftError> {
        let (primary, standby) = tables_of(tier);
        let leftover = match standby {
            Some(_) => None,
            None => Some(GuardTable::open(TableSpec {
                name: STANDBY_TABLE.into(),
                ownership: Ownership::Unowned,
            })?),
        };
        Ok(Kernel {
            tier,
            primary: GuardTable::open(primary)?.recreated_by(recreation),
            standby: standby
                .map(|spec| Ok::<_, NftError>(GuardTable::open(spec)?.recreated_by(recreation)))
                .transpose()?,
            leftover,
            ip6: Ip6Policy::open()?,
            conntrack: Conntrack::open()?,
        })
    }
}

impl Backend for Kernel {
    fn protection(&self) -> ProtectionTier {
        self.tier
    }

    fn reconcile(&mut self, desired: &Ruleset) -> Result<Vec<TableOutcome>, NftError> {
        // Each copy in its own transaction: while one is recreated, the
        // other (already whole) keeps judging. A missing copy goes first:
        // until it is back, the host has one copy, and reading the intact
        // one (a full dump) can wait.
        let mut outcomes = Vec::new();
        match &mut self.standby {
            None => outcomes.push(self.primary.reconcile(desired)?),
            Some(standby) => {
                // Usually the standby exists: one request decides.
                let standby_first = !standby.exists()? && self.primary.exists()?;
                if standby_first {
                    let standby_outcome = standby.reconcile(desired)?;
                    outcomes.push(self.primary.reconcile(desired)?);
                    outcomes.push(standby_outcome);
                } else {
                    outcomes.push(self.primary.reconcile(desired)?);
                    outcomes.push(standby.reconcile(desired)?);
                }
            }
        }
        if let Some(mut leftover) = self.leftover.take()
            && let Err(e) = leftover.remove()
        {
            tracing::warn!("could not remove a standby table left by another tier: {e}");
        }
        Ok(outcomes)
    }

    fn blocked_packets(&mut self) -> Result<Option<u64>, NftError> {
        Ok(self.primary.read()?.map(|t| t.blocked_packets()))
    }

    fn blocked_per_port(&mut self) -> Result<Vec<TableCounters>, NftError> {
        let mut out = Vec::new();
        for table in std::iter::once(&mut self.primary).chain(self.standby.as_mut()) {
            let counters = table.read()?.map(|t| t.blocked_per_port());
            out.push((table.spec().name.clone(), counters));
        }
        Ok(out)
    }

    fn ip6_forward_policy(&mut self) -> Result<ForwardPolicy, NftError> {
        self.ip6.forward_policy()
    }

    fn ip6_heard(&mut self, heard: &[ForwardPolicySet], lost: bool) {
        self.ip6.hear(heard, lost);
    }

    fn restore_ip6_forward_policy(
        &mut self,
        look: Look,
        restore: bool,
    ) -> Result<Vec<PolicyRestore>, NftError> {
        self.ip6.look(look, restore)
    }

    fn ip6_forward_drops(&mut self) -> Result<Vec<(Ip6Firewall, DropSetter)>, NftError> {
        self.ip6.drops()
    }

    fn end_connections(
        &mut self,
        mark: u32,
        keep: &dyn Fn(&Flow) -> bool,
    ) -> Result<SweepStats, NftError> {
        self.conntrack.end_connections(mark, keep)
    }

    fn judged_by_tables(&mut self) -> Result<Judged, NftError> {
        let mut judged = Judged::default();
        let tables = std::iter::once(&mut self.primary)
            .chain(self.standby.as_mut())
            .chain(self.leftover.as_mut());
        for table in tables {
            if let Some(state) = table.read()? {
                judged.extend(state.judged());
            }
        }
        Ok(judged)
    }
}

/// Deletes every table the guard may have left, in any tier (the package's
/// postrm). `Ok(true)` if there was one.
pub fn remove_all() -> Result<bool, NftError> {
    let mut removed = false;
    for name in [portguard_core::ruleset::TABLE_NAME, STANDBY_TABLE] {
        let mut table = GuardTable::open(TableSpec {
            name: name.into(),
            ownership: Ownership::Unowned,
        })?;
        removed |= table.remove()?;
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_takes_the_strongest_tier_and_a_weaker_one_may_be_chosen() {
        use ProtectionTier::*;
        assert_eq!(
            choose_tier(Protection::Auto, Ownership::OwnedPersistent),
            Ok(OwnedPersistent)
        );
        assert_eq!(
            choose_tier(Protection::Auto, Ownership::Owned),
            Ok(OwnedStandby)
        );
        assert_eq!(choose_tier(Protection::Auto, Ownership::Unowned), Ok(Twin));
        assert_eq!(
            choose_tier(Protection::Twin, Ownership::OwnedPersistent),
            Ok(Twin)
        );
        assert_eq!(
            choose_tier(Protection::OwnedStandby, Ownership::OwnedPersistent),
            Ok(OwnedStandby)
        );
        assert!(choose_tier(Protection::OwnedPersistent, Ownership::Owned).is_err());
        assert!(choose_tier(Protection::OwnedStandby, Ownership::Unowned).is_err());
    }
}
