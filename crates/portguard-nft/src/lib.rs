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
//!
//! # Layers
//!
//! Dependencies go one way, downwards: a module uses only modules on its
//! own line's right or on lines below it, never one above.
//!
//! ```text
//! table                  GuardTable: reconcile, prove, probes
//! recreate               Recreation: the monitor's instant restore
//! compare                expected_state, compare
//! readback               dumps a table into the model's TableState
//! batch                  whole transactions: replace, create, repair, delete
//! messages  wire         table/set/chain/rule messages; set elements in wire form
//! expressions            a rule's statements as expressions (ifname_bytes)
//! socket  error          netlink I/O; NftError
//! model                  TableSpec, Ownership, TableState, Attrs, Difference
//! kernel_constants       every kernel number, once
//! ```
//!
//! Beside that stack, each on `socket`, `error`, `model` and
//! `kernel_constants`: `inventory`, used by `ip6_forward`, used by `monitor` (which
//! also uses `recreate`), used by `witness`, which `table` uses;
//! `conntrack`, used by `nflog`; `judged`, which reads the model. Tests may
//! reach further down or across (`monitor`'s build batches, `judged`'s
//! compare), never up: no module imports one that imports it back.

mod batch;
pub mod compare;
mod conntrack;
mod error;
mod expressions;
mod inventory;
mod ip6_forward;
mod judged;
mod kernel_constants;
mod messages;
mod model;
mod monitor;
mod nflog;
mod readback;
mod recreate;
mod socket;
mod table;
mod wire;
mod witness;

pub use conntrack::{Conntrack, Flow, SweepStats};
pub use error::NftError;
pub use inventory::netfilter_inventory;
pub use ip6_forward::{
    DropWitness, ForwardPolicy, ForwardPolicySet, Ip6Policy, Look, PolicyRestore,
};
pub use model::{Difference, Ownership, STANDBY_TABLE, TableSpec, TableState};
pub use monitor::{Change, Monitor, MonitorEvent};
pub use nflog::{Attempt, Nflog, Reports};
pub use portguard_core::ip6_forward::{DropSetter, Ip6Firewall};
pub use recreate::{Found, Recreated, Recreation};
pub use table::{ApplyStats, GuardTable, TableOutcome, probe_nflog, probe_ownership};
