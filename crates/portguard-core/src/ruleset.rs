//! The desired ruleset as typed data: one `inet` table with named sets and
//! chains whose rules are lists of typed statements. The renderer turns it
//! into nft syntax, the kernel backend into netlink expressions; neither
//! invents rules of its own.

use portguard_config::PortRange;
use serde::Serialize;

use crate::snapshot::L4Proto;

/// Our table's name. The family is always `inet`.
pub const TABLE_NAME: &str = "portguard";
/// The standby copy's name, in the protection tiers that keep one (same
/// family, same ruleset).
pub const STANDBY_TABLE_NAME: &str = "portguard_standby";
/// Every table of the guard's, in any tier: the primary first. (The sets'
/// and chains' names are in `plan::names`.)
pub const GUARD_TABLES: [&str; 2] = [TABLE_NAME, STANDBY_TABLE_NAME];

/// nftables' `filter` priority; our base chains run at `filter - 1`.
pub const PRIORITY_FILTER: i32 = 0;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Ruleset {
    pub sets: Vec<Set>,
    pub chains: Vec<Chain>,
}

impl Ruleset {
    pub fn set(&self, name: &str) -> Option<&Set> {
        self.sets.iter().find(|s| s.name == name)
    }

    pub fn chain(&self, name: &str) -> Option<&Chain> {
        self.chains.iter().find(|c| c.name == name)
    }
}

/// A named set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Set {
    pub name: String,
    pub key: SetKey,
    pub elements: Vec<Element>,
}

/// What a set's elements are, and so which kernel backend holds them.
///
/// Single ports go in hash sets (`Port`): one key per element, a constant
/// lookup and a constant-time insert or delete whatever the set's size.
/// Only real ranges go in interval sets (`PortInterval`), whose rbtree
/// backend stores two elements per range and whose updates grow with the
/// tree (docs/performance.md measured 1.2-4.4 ms for one element of
/// 10,000, against 0.08 ms in a hash set).
///
/// A port set without flags would not get a hash table: for keys of two
/// bytes the kernel prefers its bitmap backend, whose lookup is one bit
/// test but whose insert and delete search a list of every element (10,000
/// ports: 600 ms to install, 0.7 ms per element). Flag `dynamic`
/// (`NFT_SET_EVAL`) rules the bitmap out and selects the resizable hash
/// (rhash); no rule of ours adds elements from the packet path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum SetKey {
    /// `type ifname`
    Ifname,
    /// `type inet_service; flags dynamic` (hash): every element is one port.
    Port,
    /// `type inet_service; flags interval`
    PortInterval,
    /// `type ipv4_addr . inet_service` (hash): one address . one port.
    Ipv4Port,
    /// `type ipv4_addr . inet_service; flags interval` (pipapo)
    Ipv4PortInterval,
    /// `type ipv6_addr . inet_service` (hash): one address . one port.
    Ipv6Port,
    /// `type ipv6_addr . inet_service; flags interval` (pipapo)
    Ipv6PortInterval,
    /// `type inet_service; size N; flags dynamic`: filled by the packet
    /// path (see [`Stmt::CountCtOriginalDport`]), one counter per port.
    /// Its elements are counts, not desired state: a ruleset always holds
    /// it empty, and verification checks only its definition.
    PortCounters {
        /// Most ports counted (`size`): a scan of every port cannot grow
        /// the set, nor the metrics made from it, without bound.
        size: u32,
    },
}

impl SetKey {
    /// Declared `flags dynamic`: the port hash sets, to get the hash
    /// backend (see [`SetKey`]), and the counting sets, which the packet
    /// path fills.
    pub fn is_dynamic(self) -> bool {
        matches!(self, SetKey::Port | SetKey::PortCounters { .. })
    }

    pub fn is_interval(self) -> bool {
        matches!(
            self,
            SetKey::PortInterval | SetKey::Ipv4PortInterval | SetKey::Ipv6PortInterval
        )
    }

    /// Whether the packet path adds the elements: they are counts, not
    /// desired state, and verification leaves them alone. Only the
    /// counting sets; the hash sets of the allowlist are `flags dynamic`
    /// too (for the backend), and every element of theirs is verified.
    pub fn elements_are_counts(self) -> bool {
        matches!(self, SetKey::PortCounters { .. })
    }
}

/// One set element. Address ranges are inclusive `(first, last)`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum Element {
    Ifname(String),
    Port(PortRange),
    Ipv4Port {
        addrs: (u32, u32),
        ports: PortRange,
    },
    Ipv6Port {
        addrs: (u128, u128),
        ports: PortRange,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Chain {
    pub name: String,
    /// Present for base chains.
    pub base: Option<BaseChain>,
    pub rules: Vec<Rule>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct BaseChain {
    pub hook: Hook,
    pub priority: i32,
    pub policy: Policy,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Hook {
    Input,
    Forward,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Policy {
    Accept,
    Drop,
}

/// A rule: statements evaluated left to right.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rule {
    pub stmts: Vec<Stmt>,
}

impl Rule {
    pub fn new(stmts: impl IntoIterator<Item = Stmt>) -> Self {
        Rule {
            stmts: stmts.into_iter().collect(),
        }
    }
}

/// Connection tracking states, as `ct state` bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct CtStates {
    pub established: bool,
    pub related: bool,
    pub new: bool,
}

impl CtStates {
    pub const ESTABLISHED_RELATED: CtStates = CtStates {
        established: true,
        related: true,
        new: false,
    };
    pub const NEW: CtStates = CtStates {
        established: false,
        related: false,
        new: true,
    };
}

/// How an interface name is matched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum IfMatch {
    /// `iifname "eth0"`
    Exact(String),
    /// `iifname "br-*"`
    Prefix(String),
    /// `iifname @set`
    InSet(String),
    /// `iifname != @set`
    NotInSet(String),
}

/// A typed statement: a match, an action or a verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Stmt {
    /// `ct state established,related` (any of the states).
    CtState(CtStates),
    /// `ct status dnat`: the connection was destination-NATed (published).
    CtStatusDnat,
    /// `meta l4proto tcp`
    L4Proto(L4Proto),
    Iifname(IfMatch),
    Oifname(IfMatch),
    /// `fib daddr type local`: addressed to this host.
    FibDaddrLocal,
    /// `th dport @set` (after an `L4Proto`; on INPUT there is no DNAT, so
    /// this is the host port).
    DportInSet(String),
    /// `ct original proto-dst @set`: the pre-DNAT destination port.
    CtOriginalDportInSet(String),
    /// `ip saddr . ct original proto-dst @set`
    Ipv4SaddrCtOriginalDportInSet(String),
    /// `ip6 saddr . ct original proto-dst @set`
    Ipv6SaddrCtOriginalDportInSet(String),
    /// `limit rate N/minute`: the rest of the rule runs at most N times a minute.
    LimitPerMinute(u32),
    /// `log prefix "..." level info`
    Log {
        prefix: String,
    },
    /// `limit rate N/second burst B packets`: the rest of the rule runs at
    /// most N times a second, after a burst of B.
    LimitPerSecond {
        rate: u32,
        burst: u32,
    },
    /// `tcp dport set ct original proto-dst` (after an `L4Proto`): puts the
    /// host port back into a packet about to be dropped, so that its nflog
    /// copy carries the port as published, not the container's (kernels
    /// without nfnetlink's conntrack glue send no conntrack data).
    DportSetCtOriginal(L4Proto),
    /// `log prefix "..." group N snaplen S`: the packet's first S bytes go
    /// to nflog group N (netlink, read by the daemon), not to the kernel log.
    Nflog {
        prefix: String,
        group: u16,
        snaplen: u32,
    },
    /// `ct mark set ct mark | BITS`: tags the connection (see
    /// [`crate::plan::CT_MARK_ADMITTED`]).
    CtMarkOr(u32),
    /// `counter`
    Counter,
    /// `update @set { ct original proto-dst counter }` (after an
    /// `L4Proto`): counts the packet under its original (pre-DNAT)
    /// destination port in a [`SetKey::PortCounters`] set. Kept in a rule
    /// of its own: when the set is full the kernel ends the rule there.
    CountCtOriginalDport(String),
    Accept,
    Drop,
    Jump(String),
}
