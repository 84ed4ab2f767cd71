//! portguard's kernel backend: programs nftables over netlink, without
//! shelling out to `nft`. One handle per job, each with its own socket:
//!
//! * [`GuardTable`]: one of the guard's tables. [`GuardTable::reconcile`]
//!   makes the kernel hold exactly the desired ruleset, in one
//!   transaction (P9), and proves it by reading the table back and
//!   comparing it element for element ([`compare`]);
//! * [`Ip6Policy`]: undoes Docker's IPv6 FORWARD drop (P6), and only
//!   Docker's (the monitor names who set a drop), with a bounded
//!   iptables-legacy fallback;
//! * [`Conntrack`]: ends connections the allowlist no longer admits (P10);
//! * [`Monitor`]: every ruleset change, with the process behind it; it
//!   recreates a deleted copy of the guard's table at once ([`Recreation`])
//!   and names who set the IPv6 FORWARD policy to drop;
//! * [`Nflog`]: blocked attempts as the judge chains report them.
//!
//! [`probe_ownership`] finds the strongest table protection the kernel
//! offers. All calls are blocking and act in the network namespace of the
//! calling thread at the time the handle was opened.

pub mod compare;
mod conntrack;
mod encode;
mod error;
mod found;
mod inventory;
mod ip6;
mod monitor;
mod nflog;
mod readback;
mod recreate;
mod socket;
mod table;
mod wire;
mod witness;

pub use compare::Difference;
pub use conntrack::{Conntrack, Flow, SweepStats};
pub use error::NftError;
pub use inventory::netfilter_inventory;
pub use ip6::{DropWitness, ForwardPolicy, ForwardPolicySet, Ip6Policy, Look, PolicyRestore};
pub use monitor::{Change, Monitor, MonitorEvent};
pub use nflog::{Attempt, Nflog, Reports};
pub use portguard_core::ip6_forward::{DropSetter, Ip6Firewall};
pub use readback::TableState;
pub use recreate::{Found, Recreated, Recreation};
pub use table::{
    ApplyStats, GuardTable, Ownership, STANDBY_TABLE, TableOutcome, TableSpec, probe_nflog,
    probe_ownership,
};
