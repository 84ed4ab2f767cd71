//! The types every other module shares: which table and how it is held
//! ([`TableSpec`], [`Ownership`]), a table as the kernel holds it in
//! canonical read-back form ([`TableState`]: chains, rules, sets,
//! elements as [`Attrs`]), and one way two such tables differ
//! ([`Difference`]). Plain data and the readers of its values: no I/O, and
//! nothing here uses another module of the crate but the kernel's
//! constants.

use std::fmt;

use netlink_packet_core::{NLA_TYPE_MASK, NlasIterator};

use crate::kernel_constants::{
    NFT_TABLE_F_OWNER, NFT_TABLE_F_PERSIST, NFTA_COUNTER_PACKETS, NFTA_DATA_VALUE, NFTA_EXPR_DATA,
    NFTA_EXPR_NAME, NFTA_SET_ELEM_EXPR, NFTA_SET_ELEM_EXPRESSIONS, NFTA_SET_ELEM_KEY,
};

/// Name of the standby copy, in the tiers that keep one (the primary is
/// [`portguard_core::ruleset::TABLE_NAME`]).
pub const STANDBY_TABLE: &str = portguard_core::ruleset::STANDBY_TABLE_NAME;

/// Who may change a table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ownership {
    /// Anybody with CAP_NET_ADMIN; restored when changed.
    Unowned,
    /// Only the socket that created it, and it goes with that socket
    /// (Linux 5.12+).
    Owned,
    /// Owned, and stays when the owner exits, orphaned until adopted
    /// (Linux 6.9+).
    OwnedPersistent,
}

impl Ownership {
    /// `NFT_TABLE_F_*` flags the table carries.
    pub fn flags(self) -> u32 {
        match self {
            Ownership::Unowned => 0,
            Ownership::Owned => NFT_TABLE_F_OWNER,
            Ownership::OwnedPersistent => NFT_TABLE_F_OWNER | NFT_TABLE_F_PERSIST,
        }
    }
}

/// Which table, and how it is held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableSpec {
    pub name: String,
    pub ownership: Ownership,
}

/// Netlink attributes in canonical form: sorted by type, with the
/// NESTED and BYTEORDER flag bits masked off, values as bytes. Two
/// encodings of the same object compare equal whatever order or flag bits
/// the kernel dumps them with.
pub type Attrs = Vec<(u16, Vec<u8>)>;

/// One expression: its name and its attributes (a counter's values left
/// out, they change with traffic).
#[derive(Debug, Clone)]
pub struct ExprState {
    pub name: String,
    pub attrs: Attrs,
    /// Packets counted, for `counter` expressions.
    pub packets: Option<u64>,
}

impl PartialEq for ExprState {
    /// Counter values are not part of what a rule is.
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name && self.attrs == other.attrs
    }
}

impl Eq for ExprState {}

/// A base chain's hook (number and priority), type and policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseState {
    pub hook: Attrs,
    pub kind: Option<String>,
    pub policy: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainState {
    pub name: String,
    pub base: Option<BaseState>,
    pub rules: Vec<Vec<ExprState>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetState {
    pub name: String,
    /// Flags, key type and length, data type and length.
    pub definition: Attrs,
    /// Each element's attributes (key, key end, flags), sorted.
    pub elements: Vec<Attrs>,
    /// Set on the wanted state only, from the ruleset's
    /// [`SetKey::elements_are_counts`](portguard_core::SetKey::elements_are_counts):
    /// the packet path fills the set, so its elements are not compared.
    /// Never taken from what the kernel says (a `dynamic` flag there must
    /// not make a guard set's elements unverified).
    pub elements_are_counts: bool,
}

impl SetState {
    /// The elements of a counting set: `(port, packets)` for each element
    /// whose key is a port and that carries a counter.
    pub fn port_counters(&self) -> Vec<(u16, u64)> {
        let mut out = Vec::new();
        for element in &self.elements {
            let mut port = None;
            let mut packets = None;
            for (kind, value) in element {
                match *kind {
                    NFTA_SET_ELEM_KEY => {
                        port = NlasIterator::new(value.as_slice())
                            .filter_map(Result::ok)
                            .find(|a| a.kind() & NLA_TYPE_MASK == NFTA_DATA_VALUE)
                            .and_then(|a| <[u8; 2]>::try_from(a.value()).ok())
                            .map(u16::from_be_bytes);
                    }
                    NFTA_SET_ELEM_EXPR => packets = expr_counter_packets(value),
                    NFTA_SET_ELEM_EXPRESSIONS => {
                        packets = NlasIterator::new(value.as_slice())
                            .filter_map(Result::ok)
                            .find_map(|e| expr_counter_packets(e.value()));
                    }
                    _ => {}
                }
            }
            if let (Some(port), Some(packets)) = (port, packets) {
                out.push((port, packets));
            }
        }
        out
    }
}

/// The packets of one expression (name and data) if it is a counter.
fn expr_counter_packets(expr: &[u8]) -> Option<u64> {
    let mut is_counter = false;
    let mut packets = None;
    for attr in NlasIterator::new(expr).filter_map(Result::ok) {
        match attr.kind() & NLA_TYPE_MASK {
            NFTA_EXPR_NAME => is_counter = c_string(attr.value()) == "counter",
            NFTA_EXPR_DATA => packets = counter_packets(attr.value()),
            _ => {}
        }
    }
    packets.filter(|_| is_counter)
}

/// One of our tables as the kernel holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableState {
    /// `NFT_TABLE_F_*`: dormant, owner, persist.
    pub flags: u32,
    pub chains: Vec<ChainState>,
    pub sets: Vec<SetState>,
    /// Messages in our table that could not be decoded.
    pub undecodable: usize,
}

impl TableState {
    /// Packets counted by the judge chains' counters: attempts blocked
    /// (or, in audit mode, that would have been).
    pub fn blocked_packets(&self) -> u64 {
        use portguard_core::plan::names;
        self.counted_packets(names::PUBLISHED_FORWARD)
            + self.counted_packets(names::PUBLISHED_INPUT)
            + self.counted_packets(names::DOCKER_API_INPUT)
    }

    /// Blocked new connections per protocol and original destination
    /// port, from the kernel's per-element counters (`blocked_*` sets).
    pub fn blocked_per_port(&self) -> Vec<(portguard_core::L4Proto, u16, u64)> {
        use portguard_core::plan::names;
        let mut out = Vec::new();
        for proto in portguard_core::L4Proto::ALL {
            let name = names::blocked(proto);
            for set in self.sets.iter().filter(|s| s.name == name) {
                out.extend(
                    set.port_counters()
                        .into_iter()
                        .map(|(port, packets)| (proto, port, packets)),
                );
            }
        }
        out
    }

    /// Packets counted by the counters in `chain`.
    pub fn counted_packets(&self, chain: &str) -> u64 {
        self.chains
            .iter()
            .filter(|c| c.name == chain)
            .flat_map(|c| c.rules.iter().flatten())
            .filter_map(|e| e.packets)
            .sum()
    }
}

/// `bytes` (a sequence of attributes) in canonical form, see [`Attrs`].
pub(crate) fn canonical(bytes: &[u8]) -> Option<Attrs> {
    let mut attrs = Vec::new();
    for nla in NlasIterator::new(bytes) {
        let nla = nla.ok()?;
        attrs.push((nla.kind() & NLA_TYPE_MASK, nla.value().to_vec()));
    }
    attrs.sort();
    Some(attrs)
}

/// A NUL-terminated string attribute's text.
pub(crate) fn c_string(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

/// The packets of a counter expression's data.
pub(crate) fn counter_packets(data: &[u8]) -> Option<u64> {
    NlasIterator::new(data)
        .filter_map(Result::ok)
        .find_map(|a| {
            (a.kind() & NLA_TYPE_MASK == NFTA_COUNTER_PACKETS)
                .then(|| a.value().try_into().ok().map(u64::from_be_bytes))
                .flatten()
        })
}

/// One way in which the kernel's table differs from the desired one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Difference {
    /// The table does not exist.
    TableMissing,
    /// Ownership flags differ: somebody else's table, or one a previous
    /// daemon left in another tier.
    TableFlags {
        want: u32,
        have: u32,
    },
    ChainMissing(String),
    /// A chain the guard does not have.
    ChainForeign(String),
    /// A base chain's hook, priority, type or policy.
    ChainBase(String),
    /// The rules of a chain differ (first differing position given).
    Rules {
        chain: String,
        want: usize,
        have: usize,
        first: usize,
    },
    SetMissing(String),
    SetForeign(String),
    /// A set's flags, key or data type.
    SetDefinition(String),
    /// Elements missing from a set, and elements nobody asked for.
    Elements {
        set: String,
        missing: Vec<Attrs>,
        foreign: Vec<Attrs>,
    },
    /// Messages in our table the guard could not decode: foreign by
    /// definition.
    Undecodable(usize),
}

impl Difference {
    /// Whether a repair in place (`batch::repair_table`) can put this right without
    /// recreating anything (base chains stay hooked).
    pub fn in_place(&self) -> bool {
        matches!(self, Difference::Rules { .. } | Difference::Elements { .. })
    }
}

impl fmt::Display for Difference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Difference::TableMissing => write!(f, "table missing"),
            Difference::TableFlags { want, have } => {
                write!(f, "table flags {have:#x}, expected {want:#x}")
            }
            Difference::ChainMissing(c) => write!(f, "chain {c} missing"),
            Difference::ChainForeign(c) => write!(f, "foreign chain {c}"),
            Difference::ChainBase(c) => write!(f, "chain {c}'s hook, type or policy changed"),
            Difference::Rules {
                chain,
                want,
                have,
                first,
            } => write!(
                f,
                "chain {chain} has {have} rules, expected {want}, first difference at rule {first}"
            ),
            Difference::SetMissing(s) => write!(f, "set {s} missing"),
            Difference::SetForeign(s) => write!(f, "foreign set {s}"),
            Difference::SetDefinition(s) => write!(f, "set {s} was redefined"),
            Difference::Elements {
                set,
                missing,
                foreign,
            } => write!(
                f,
                "set {set}: {} element(s) missing, {} foreign",
                missing.len(),
                foreign.len()
            ),
            Difference::Undecodable(n) => write!(f, "{n} undecodable object(s) in the table"),
        }
    }
}
