//! Reading one of our tables back from the kernel, in a canonical form that
//! the comparison (`compare`) checks against the desired ruleset (which
//! `compare::expected_state` puts in the same form by walking our own
//! encoded messages with the same functions). Only our table is dumped,
//! so rules other programs write elsewhere never reach the parser; a
//! message in our table that cannot be decoded counts as a difference,
//! never as a failure.

use netlink_packet_core::{Emitable, NLA_TYPE_MASK, Nla, NlasIterator};
use netlink_packet_netfilter::NetfilterProtoFamily;
use netlink_packet_netfilter::nftables::{
    ChainAttribute, ChainMessage, Hook, NfTablesMessage, RuleAttribute, RuleMessage, SetAttribute,
    SetDescription, SetElementList, SetElementMessage, SetMessage, TableAttribute,
};

use crate::error::NftError;
use crate::kernel_constants::{
    NFTA_BITWISE_OP, NFTA_DYNSET_EXPR, NFTA_DYNSET_FLAGS, NFTA_DYNSET_TIMEOUT, NFTA_EXPR_DATA,
    NFTA_EXPR_NAME, NFTA_IMMEDIATE_DATA, NFTA_LOOKUP_FLAGS, NFTA_RULE_CHAIN, NFTA_RULE_EXPRESSIONS,
    NFTA_RULE_TABLE, NFTA_SET_ELEM_LIST_ELEMENTS,
};
use crate::messages::table_msg;
use crate::model::{
    Attrs, BaseState, ChainState, ExprState, SetState, TableState, c_string, canonical,
    counter_packets,
};
use crate::socket::{NfSocket, decode_nft, payload};

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
/// between the first and the last (see `GuardTable`, in `table`).
pub(crate) fn read_table(sock: &mut NfSocket, name: &str) -> Result<Option<TableState>, NftError> {
    let inet = NetfilterProtoFamily::Inet;
    let Some(NfTablesMessage::NewTable(table)) =
        sock.request(inet, NfTablesMessage::GetTable(table_msg(name, 0)))?
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
