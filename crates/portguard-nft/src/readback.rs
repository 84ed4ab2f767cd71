//! Reading our table back from the kernel, in a normalized form that can be
//! compared with what we applied. Only `inet portguard` is dumped, so rules
//! other programs write elsewhere never reach the parser; a message in our
//! table that cannot be decoded counts as an alteration, never as a failure.

use netlink_packet_core::{Emitable, Nla, NlasIterator};
use netlink_packet_netfilter::NetfilterProtoFamily;
use netlink_packet_netfilter::nftables::{
    ChainAttribute, ChainMessage, Hook, NfTablesMessage, RuleAttribute, RuleMessage, SetAttribute,
    SetElementList, SetElementMessage, SetMessage,
};
use portguard_core::ruleset::TABLE_NAME;

use crate::error::NftError;
use crate::socket::NfSocket;

const NFTA_COUNTER_PACKETS: u16 = 2;

/// One expression: its name and its attributes as bytes (counter values
/// left out, they change with traffic).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExprState {
    pub name: String,
    pub data: Vec<u8>,
    /// Packets counted, for `counter` expressions.
    pub packets: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainState {
    pub name: String,
    /// Hook attributes and policy as bytes, for base chains.
    pub base: Option<(Vec<u8>, Option<u32>)>,
    pub rules: Vec<Vec<ExprState>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetState {
    pub name: String,
    pub definition: Vec<u8>,
    pub elements: Vec<Vec<u8>>,
}

/// Our table as the kernel holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableState {
    pub chains: Vec<ChainState>,
    pub sets: Vec<SetState>,
    /// Messages in our table that could not be decoded.
    pub undecodable: usize,
}

impl TableState {
    /// Equal but for counter values.
    pub fn same_structure(&self, other: &TableState) -> bool {
        let strip = |t: &TableState| {
            let mut t = t.clone();
            for chain in &mut t.chains {
                for rule in &mut chain.rules {
                    for expr in rule {
                        expr.packets = None;
                    }
                }
            }
            t
        };
        strip(self) == strip(other)
    }

    /// Packets counted by the judge chains' counters: attempts blocked
    /// (or, in audit mode, that would have been).
    pub fn blocked_packets(&self) -> u64 {
        use portguard_core::plan::names;
        self.counted_packets(names::PUBLISHED_FORWARD)
            + self.counted_packets(names::PUBLISHED_INPUT)
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
    const NFTA_EXPR_NAME: u16 = 1;
    const NFTA_EXPR_DATA: u16 = 2;
    let (mut table, mut chain, mut exprs) = (String::new(), String::new(), Vec::new());
    for nla in NlasIterator::new(payload) {
        let nla = nla.ok()?;
        match nla.kind() & NLA_TYPE_MASK {
            NFTA_RULE_TABLE => table = c_string(nla.value()),
            NFTA_RULE_CHAIN => chain = c_string(nla.value()),
            NFTA_RULE_EXPRESSIONS => {
                for element in NlasIterator::new(nla.value()) {
                    let element = element.ok()?;
                    let mut expr = ExprState {
                        name: String::new(),
                        data: Vec::new(),
                        packets: None,
                    };
                    for attr in NlasIterator::new(element.value()) {
                        let attr = attr.ok()?;
                        match attr.kind() & NLA_TYPE_MASK {
                            NFTA_EXPR_NAME => expr.name = c_string(attr.value()),
                            NFTA_EXPR_DATA => expr.data = attr.value().to_vec(),
                            _ => {}
                        }
                    }
                    if expr.name == "counter" {
                        // Counter values change with traffic: keep them apart.
                        expr.packets = counter_packets(&expr.data);
                        expr.data.clear();
                    }
                    exprs.push(expr);
                }
            }
            _ => {}
        }
    }
    Some((table, chain, exprs))
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

fn chain_state(chain: &ChainMessage) -> ChainState {
    let mut name = String::new();
    let mut hook: Option<Vec<u8>> = None;
    let mut policy = None;
    for attr in &chain.attributes {
        match attr {
            ChainAttribute::Name(n) => name = n.clone(),
            ChainAttribute::Hook(hooks) => {
                hook = Some(emit_nlas::<Hook>(hooks));
            }
            ChainAttribute::Policy(p) => policy = Some(*p),
            _ => {}
        }
    }
    ChainState {
        name,
        base: hook.map(|h| (h, policy)),
        rules: Vec::new(),
    }
}

fn set_state(set: &SetMessage) -> SetState {
    let mut name = String::new();
    let mut definition = Vec::new();
    for attr in &set.attributes {
        match attr {
            SetAttribute::Name(n) => name = n.clone(),
            SetAttribute::Flags(_)
            | SetAttribute::KeyType(_)
            | SetAttribute::KeyLen(_)
            | SetAttribute::DataType(_)
            | SetAttribute::DataLen(_) => definition.extend(emit_nlas(std::slice::from_ref(attr))),
            _ => {}
        }
    }
    SetState {
        name,
        definition,
        elements: Vec::new(),
    }
}

/// The elements of one NEWSETELEM dump reply, each as its attribute bytes.
/// Walked by hand: the library's decoder formats the whole buffer into
/// every error context it builds, which makes large dumps quadratic.
fn raw_elements(payload: &[u8]) -> Option<Vec<Vec<u8>>> {
    const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
    let mut out = Vec::new();
    for nla in NlasIterator::new(payload) {
        let nla = nla.ok()?;
        if nla.kind() & NLA_TYPE_MASK != NFTA_SET_ELEM_LIST_ELEMENTS {
            continue;
        }
        for element in NlasIterator::new(nla.value()) {
            out.push(element.ok()?.value().to_vec());
        }
    }
    Some(out)
}

const NLA_TYPE_MASK: u16 = 0x3fff;

/// Dumps our table. `Ok(None)` when it does not exist.
pub(crate) fn read_table(sock: &mut NfSocket) -> Result<Option<TableState>, NftError> {
    let inet = NetfilterProtoFamily::Inet;
    let table_exists = sock
        .request(inet, NfTablesMessage::GetTable(crate::encode::table_msg()))?
        .is_some();
    if !table_exists {
        return Ok(None);
    }
    let (chains, bad_chains) = sock.dump(
        inet,
        NfTablesMessage::GetChain(ChainMessage {
            attributes: vec![ChainAttribute::Table(TABLE_NAME.into())],
        }),
    )?;
    let mut state = TableState {
        chains: Vec::new(),
        sets: Vec::new(),
        undecodable: bad_chains,
    };
    for msg in &chains {
        if let NfTablesMessage::NewChain(chain) = msg
            && belongs_to_us(
                &chain.attributes,
                |a| matches!(a, ChainAttribute::Table(t) if t == TABLE_NAME),
            )
        {
            state.chains.push(chain_state(chain));
        }
    }
    let replies = sock.dump_raw(
        inet,
        NfTablesMessage::GetRule(RuleMessage {
            attributes: vec![RuleAttribute::Table(TABLE_NAME.into())],
        }),
    )?;
    for payload in &replies {
        let Some((table, chain, exprs)) = raw_rule(payload) else {
            state.undecodable += 1;
            continue;
        };
        if table != TABLE_NAME {
            continue;
        }
        match state.chains.iter_mut().find(|c| c.name == chain) {
            Some(c) => c.rules.push(exprs),
            None => state.undecodable += 1,
        }
    }
    let (sets, bad_sets) = sock.dump(
        inet,
        NfTablesMessage::GetSet(SetMessage {
            attributes: vec![SetAttribute::Table(TABLE_NAME.into())],
        }),
    )?;
    state.undecodable += bad_sets;
    for msg in &sets {
        if let NfTablesMessage::NewSet(set) = msg
            && belongs_to_us(
                &set.attributes,
                |a| matches!(a, SetAttribute::Table(t) if t == TABLE_NAME),
            )
        {
            state.sets.push(set_state(set));
        }
    }
    for set in &mut state.sets {
        let replies = sock.dump_raw(
            inet,
            NfTablesMessage::GetSetElement(SetElementMessage {
                attributes: vec![
                    SetElementList::Table(TABLE_NAME.into()),
                    SetElementList::Set(set.name.clone()),
                ],
            }),
        )?;
        for payload in &replies {
            match raw_elements(payload) {
                Some(elements) => set.elements.extend(elements),
                None => state.undecodable += 1,
            }
        }
    }
    Ok(Some(state))
}

fn belongs_to_us<A>(attrs: &[A], is_our_table: impl Fn(&A) -> bool) -> bool {
    attrs.iter().any(is_our_table)
}
