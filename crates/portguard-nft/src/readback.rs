//! Reading one of our tables back from the kernel, in a canonical form that
//! [`crate::compare`] checks against the desired ruleset (which
//! [`crate::compare::expected_state`] puts in the same form by walking our
//! own encoded messages with the same functions). Only our table is dumped,
//! so rules other programs write elsewhere never reach the parser; a
//! message in our table that cannot be decoded counts as a difference,
//! never as a failure.

use crate::error::NftError;
use crate::socket::{NfSocket, decode_nft, payload};
use netlink_packet_core::{Emitable, Nla, NlasIterator};
use netlink_packet_netfilter::NetfilterProtoFamily;
use netlink_packet_netfilter::nftables::{
    ChainAttribute, ChainMessage, Hook, NfTablesMessage, RuleAttribute, RuleMessage, SetAttribute,
    SetDescription, SetElementList, SetElementMessage, SetMessage, TableAttribute,
};

const NFTA_COUNTER_PACKETS: u16 = 2;

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
        const NFTA_SET_ELEM_KEY: u16 = 1;
        const NFTA_SET_ELEM_EXPR: u16 = 7;
        const NFTA_SET_ELEM_EXPRESSIONS: u16 = 11;
        const NFTA_DATA_VALUE: u16 = 1;
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
    const NFTA_EXPR_NAME: u16 = 1;
    const NFTA_EXPR_DATA: u16 = 2;
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

/// Attributes as they go on the wire.
fn emit_nlas<T: Nla>(items: &[T]) -> Vec<u8> {
    let mut buf = vec![0; items.buffer_len()];
    items.emit(&mut buf);
    buf
}

/// One rule of a GETRULE dump reply: its table, chain and expressions.
/// Walked by hand (see [`raw_elements`]): decoding rules through the
/// library costs milliseconds per dump.
fn raw_rule(payload: &[u8]) -> Option<(String, String, Vec<ExprState>)> {
    const NFTA_RULE_TABLE: u16 = 1;
    const NFTA_RULE_CHAIN: u16 = 2;
    const NFTA_RULE_EXPRESSIONS: u16 = 4;
    let (mut table, mut chain) = (String::new(), String::new());
    let mut exprs = Vec::new();
    for nla in NlasIterator::new(payload) {
        let nla = nla.ok()?;
        match nla.kind() & NLA_TYPE_MASK {
            NFTA_RULE_TABLE => table = c_string(nla.value()),
            NFTA_RULE_CHAIN => chain = c_string(nla.value()),
            NFTA_RULE_EXPRESSIONS => exprs = raw_expressions(nla.value())?,
            _ => {}
        }
    }
    Some((table, chain, exprs))
}

/// The expressions of a rule (the value of NFTA_RULE_EXPRESSIONS).
pub(crate) fn raw_expressions(list: &[u8]) -> Option<Vec<ExprState>> {
    const NFTA_EXPR_NAME: u16 = 1;
    const NFTA_EXPR_DATA: u16 = 2;
    let mut exprs = Vec::new();
    for element in NlasIterator::new(list) {
        let element = element.ok()?;
        let mut expr = ExprState {
            name: String::new(),
            attrs: Vec::new(),
            packets: None,
        };
        for attr in NlasIterator::new(element.value()) {
            let attr = attr.ok()?;
            match attr.kind() & NLA_TYPE_MASK {
                NFTA_EXPR_NAME => expr.name = c_string(attr.value()),
                NFTA_EXPR_DATA if expr.name == "counter" => {
                    // Counter values change with traffic: keep them apart.
                    expr.packets = counter_packets(attr.value());
                }
                NFTA_EXPR_DATA => expr.attrs = canonical(attr.value())?,
                _ => {}
            }
        }
        kernel_defaults(&mut expr);
        exprs.push(expr);
    }
    Some(exprs)
}

/// What the kernel echoes differently from what it was sent, made equal
/// on both sides, one case at a time (never by guessing at the shape of
/// arbitrary bytes, which could make two different keys look equal):
/// * `bitwise` gains `NFTA_BITWISE_OP` = boolean (0), its default;
/// * `lookup` gains `NFTA_LOOKUP_FLAGS` = 0, its default;
/// * `immediate`'s data holds one nft_data attribute (value or verdict),
///   whose NESTED flag the kernel does not set.
fn kernel_defaults(expr: &mut ExprState) {
    const NFTA_BITWISE_OP: u16 = 6;
    const NFTA_LOOKUP_FLAGS: u16 = 5;
    const NFTA_IMMEDIATE_DATA: u16 = 2;
    let default = |attrs: &mut Attrs, kind: u16| {
        if !attrs.iter().any(|(k, _)| *k == kind) {
            attrs.push((kind, 0u32.to_be_bytes().to_vec()));
            attrs.sort();
        }
    };
    match expr.name.as_str() {
        "dynset" => dynset_defaults(&mut expr.attrs),
        "bitwise" => default(&mut expr.attrs, NFTA_BITWISE_OP),
        "lookup" => default(&mut expr.attrs, NFTA_LOOKUP_FLAGS),
        "immediate" => {
            for (kind, value) in &mut expr.attrs {
                if *kind == NFTA_IMMEDIATE_DATA && value.len() >= 4 {
                    let inner = u16::from_ne_bytes([value[2], value[3]]) & NLA_TYPE_MASK;
                    value[2..4].copy_from_slice(&inner.to_ne_bytes());
                }
            }
        }
        _ => {}
    }
}

/// `dynset` is dumped with a timeout (0: none) and flags (0), which are
/// not sent when they are 0 (a timeout on a set without timeouts is
/// refused), and with its template expression's current data (a counter's
/// values): the expression is compared by its name alone.
fn dynset_defaults(attrs: &mut Attrs) {
    const NFTA_DYNSET_TIMEOUT: u16 = 6;
    const NFTA_DYNSET_EXPR: u16 = 7;
    const NFTA_DYNSET_FLAGS: u16 = 9;
    const NFTA_EXPR_NAME: u16 = 1;
    if !attrs.iter().any(|(k, _)| *k == NFTA_DYNSET_TIMEOUT) {
        attrs.push((NFTA_DYNSET_TIMEOUT, 0u64.to_be_bytes().to_vec()));
    }
    if !attrs.iter().any(|(k, _)| *k == NFTA_DYNSET_FLAGS) {
        attrs.push((NFTA_DYNSET_FLAGS, 0u32.to_be_bytes().to_vec()));
    }
    for (kind, value) in attrs.iter_mut() {
        if *kind == NFTA_DYNSET_EXPR {
            let name = NlasIterator::new(value.as_slice())
                .filter_map(Result::ok)
                .find(|a| a.kind() & NLA_TYPE_MASK == NFTA_EXPR_NAME)
                .map(|a| a.value().to_vec())
                .unwrap_or_default();
            *value = name;
        }
    }
    attrs.sort();
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

fn c_string(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

fn counter_packets(data: &[u8]) -> Option<u64> {
    NlasIterator::new(data)
        .filter_map(Result::ok)
        .find_map(|a| {
            (a.kind() & NLA_TYPE_MASK == NFTA_COUNTER_PACKETS)
                .then(|| a.value().try_into().ok().map(u64::from_be_bytes))
                .flatten()
        })
}

pub(crate) fn chain_state(chain: &ChainMessage) -> ChainState {
    let mut name = String::new();
    let mut hook = None;
    let mut kind = None;
    let mut policy = None;
    for attr in &chain.attributes {
        match attr {
            ChainAttribute::Name(n) => name = n.clone(),
            ChainAttribute::Hook(hooks) => hook = canonical(&emit_nlas::<Hook>(hooks)),
            ChainAttribute::Type(t) => kind = Some(t.clone()),
            ChainAttribute::Policy(p) => policy = Some(*p),
            _ => {}
        }
    }
    ChainState {
        name,
        base: hook.map(|hook| BaseState { hook, kind, policy }),
        rules: Vec::new(),
    }
}

/// Where a set's size goes in [`SetState::definition`] (not an attribute
/// type: the size is nested in NFTA_SET_DESC).
const DEFINITION_SIZE: u16 = 0x1000;

pub(crate) fn set_state(set: &SetMessage) -> SetState {
    let mut name = String::new();
    let mut definition = Vec::new();
    for attr in &set.attributes {
        match attr {
            SetAttribute::Name(n) => name = n.clone(),
            // No flags and flags 0 are the same set; the kernel dumps the
            // attribute only when it is not 0.
            SetAttribute::Flags(flags) if flags.is_empty() => {}
            SetAttribute::Flags(_)
            | SetAttribute::KeyType(_)
            | SetAttribute::KeyLen(_)
            | SetAttribute::DataType(_)
            | SetAttribute::DataLen(_) => definition
                .extend(canonical(&emit_nlas(std::slice::from_ref(attr))).unwrap_or_default()),
            // The size bounds a dynamic set (the kernel dumps it only when
            // one was given); concatenation fields are already in the key.
            SetAttribute::Description(description) => {
                for item in description {
                    if let SetDescription::Size(size) = item {
                        definition.push((DEFINITION_SIZE, size.to_be_bytes().to_vec()));
                    }
                }
            }
            _ => {}
        }
    }
    definition.sort();
    SetState {
        name,
        definition,
        elements: Vec::new(),
        elements_are_counts: false,
    }
}

/// The elements of one NEWSETELEM dump reply, each in canonical form.
/// Walked by hand: the library's decoder formats the whole buffer into
/// every error context it builds, which makes large dumps quadratic.
fn raw_elements(payload: &[u8]) -> Option<Vec<Attrs>> {
    const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
    let mut out = Vec::new();
    for nla in NlasIterator::new(payload) {
        let nla = nla.ok()?;
        if nla.kind() & NLA_TYPE_MASK != NFTA_SET_ELEM_LIST_ELEMENTS {
            continue;
        }
        for element in NlasIterator::new(nla.value()) {
            out.push(canonical(element.ok()?.value())?);
        }
    }
    Some(out)
}

const NLA_TYPE_MASK: u16 = 0x3fff;

/// What a dump walks, which decides what an interrupted one
/// (`NLM_F_DUMP_INTR`: somebody committed between two of its parts) is
/// worth. The kernel resumes a dump by position in what it walks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Walk {
    /// Every chain of every table of the family (the kernel does not
    /// filter chain dumps by table): a commit to another table can shift
    /// the positions, so an interrupted dump may have skipped or repeated
    /// one of ours. Dumped again.
    Family,
    /// Only our table's rules, our table's sets, or one set's elements:
    /// commits elsewhere shift nothing, and a commit to our table is
    /// caught by the caller's witness (`crate::witness`). Kept.
    OurTable,
}

/// Tries of a dump of [`Walk::Family`] before the read is given up (one
/// part, the usual size of a chain dump, is never interrupted).
const FAMILY_DUMP_TRIES: usize = 3;

/// Dumps `request` (inet family), the replies as raw messages.
fn dump(
    sock: &mut NfSocket,
    request: NfTablesMessage,
    walk: Walk,
) -> Result<Vec<Vec<u8>>, NftError> {
    let inet = NetfilterProtoFamily::Inet;
    if walk == Walk::Family {
        for _ in 1..FAMILY_DUMP_TRIES {
            match sock.dump_nft(inet, request.clone()) {
                Err(NftError::Interrupted) => continue,
                other => return other,
            }
        }
        return sock.dump_nft(inet, request);
    }
    Ok(sock.dump_nft_even_interrupted(inet, request)?.0)
}

/// Dumps `request` (inet family) and keeps what `ours` makes of each
/// decoded reply; replies the library cannot decode are counted in
/// `undecodable` (foreign objects in our table, by definition).
fn dump_ours<T>(
    sock: &mut NfSocket,
    request: NfTablesMessage,
    walk: Walk,
    ours: impl Fn(NfTablesMessage) -> Option<T>,
    undecodable: &mut usize,
) -> Result<Vec<T>, NftError> {
    let mut out = Vec::new();
    for raw in dump(sock, request, walk)? {
        match decode_nft(&raw) {
            Some(message) => out.extend(ours(message)),
            None => *undecodable += 1,
        }
    }
    Ok(out)
}

/// Dumps table `inet NAME`. `Ok(None)` when it does not exist. The dumps
/// are several requests: the caller makes sure nobody changed the table
/// between the first and the last (see [`crate::table::GuardTable`]).
pub(crate) fn read_table(sock: &mut NfSocket, name: &str) -> Result<Option<TableState>, NftError> {
    let inet = NetfilterProtoFamily::Inet;
    let Some(NfTablesMessage::NewTable(table)) = sock.request(
        inet,
        NfTablesMessage::GetTable(crate::encode::table_msg(name, 0)),
    )?
    else {
        return Ok(None);
    };
    let flags = table
        .attributes
        .iter()
        .find_map(|a| match a {
            TableAttribute::Flags(f) => Some(f.bits()),
            _ => None,
        })
        .unwrap_or(0);
    let mut state = TableState {
        flags,
        chains: Vec::new(),
        sets: Vec::new(),
        undecodable: 0,
    };
    state.chains = dump_ours(
        sock,
        NfTablesMessage::GetChain(ChainMessage {
            attributes: vec![ChainAttribute::Table(name.into())],
        }),
        Walk::Family,
        |message| match message {
            NfTablesMessage::NewChain(chain)
                if chain
                    .attributes
                    .iter()
                    .any(|a| matches!(a, ChainAttribute::Table(t) if t == name)) =>
            {
                Some(chain_state(&chain))
            }
            _ => None,
        },
        &mut state.undecodable,
    )?;
    for raw in dump(
        sock,
        NfTablesMessage::GetRule(RuleMessage {
            attributes: vec![RuleAttribute::Table(name.into())],
        }),
        Walk::OurTable,
    )? {
        let Some((table, chain, exprs)) = raw_rule(payload(&raw)) else {
            state.undecodable += 1;
            continue;
        };
        if table != name {
            continue;
        }
        match state.chains.iter_mut().find(|c| c.name == chain) {
            Some(c) => c.rules.push(exprs),
            None => state.undecodable += 1,
        }
    }
    state.sets = dump_ours(
        sock,
        NfTablesMessage::GetSet(SetMessage {
            attributes: vec![SetAttribute::Table(name.into())],
        }),
        Walk::OurTable,
        |message| match message {
            NfTablesMessage::NewSet(set)
                if set
                    .attributes
                    .iter()
                    .any(|a| matches!(a, SetAttribute::Table(t) if t == name)) =>
            {
                Some(set_state(&set))
            }
            _ => None,
        },
        &mut state.undecodable,
    )?;
    for set in &mut state.sets {
        for raw in dump(
            sock,
            NfTablesMessage::GetSetElement(SetElementMessage {
                attributes: vec![
                    SetElementList::Table(name.into()),
                    SetElementList::Set(set.name.clone()),
                ],
            }),
            Walk::OurTable,
        )? {
            match raw_elements(payload(&raw)) {
                Some(elements) => set.elements.extend(elements),
                None => state.undecodable += 1,
            }
        }
        set.elements.sort();
    }
    Ok(Some(state))
}
