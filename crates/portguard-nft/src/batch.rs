//! The transactions the guard sends: a table replaced, created, repaired
//! in place or deleted, and the probes of what the kernel supports. Each
//! is a list of [`BatchItem`]s that [`NfSocket::send_batch`] commits as
//! one transaction; the messages come from [`crate::messages`], set
//! elements from [`crate::wire`].
//!
//! [`NfSocket::send_batch`]: crate::socket::NfSocket::send_batch

use netlink_packet_core::{DefaultNla, NLA_F_NESTED, NLM_F_APPEND, NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_netfilter::NetfilterProtoFamily;
use netlink_packet_netfilter::nftables::{
    NfTablesMessage, RuleAttribute, RuleMessage, SetElementList, SetElementMessage,
};
use portguard_core::ruleset::{Chain, Rule, Ruleset};

use crate::kernel_constants::{
    NFT_TABLE_F_OWNER, NFT_TABLE_F_PERSIST, NFTA_SET_ELEM_LIST_ELEMENTS,
};
use crate::messages::{chain_msg, rule_msg, set_msg, table_msg};
use crate::model::{Difference, TableSpec};
use crate::socket::BatchItem;
use crate::wire::WireElements;

/// Elements per NEWSETELEM message (an attribute is at most 64 KiB).
const ELEMENTS_PER_MESSAGE: usize = 512;

/// The batch that replaces table `spec` with `ruleset`: delete what is
/// there (if anything), then add everything back. Inside one transaction
/// the kernel holds the old table or the new one, never a mix (P9).
///
/// `existing` is the flags of the table the kernel holds now, if any. An
/// orphaned persistent table (its owner exited) is adopted first, so that
/// the deletion is ours to make; anything else of ours is deleted as it is.
pub(crate) fn replace_table(
    spec: &TableSpec,
    existing: Option<u32>,
    ruleset: &Ruleset,
) -> Vec<BatchItem> {
    let name = spec.name.as_str();
    let mut items = Vec::new();
    if let Some(flags) = existing {
        let orphan = flags & NFT_TABLE_F_PERSIST != 0 && flags & NFT_TABLE_F_OWNER == 0;
        if orphan && spec.ownership.flags() & NFT_TABLE_F_PERSIST != 0 {
            items.push(item(
                NfTablesMessage::NewTable(table_msg(name, spec.ownership.flags())),
                NLM_F_CREATE,
                format!("adopt table inet {name}"),
            ));
        }
        items.push(item(
            NfTablesMessage::DeleteTable(table_msg(name, 0)),
            0,
            format!("delete table inet {name}"),
        ));
    }
    items.push(item(
        NfTablesMessage::NewTable(table_msg(name, spec.ownership.flags())),
        NLM_F_CREATE,
        format!("add table inet {name}"),
    ));
    for (id, set) in ruleset.sets.iter().enumerate() {
        items.push(item(
            NfTablesMessage::NewSet(set_msg(name, set, id as u32 + 1)),
            NLM_F_CREATE,
            format!("add set {}", set.name),
        ));
        push_elements(name, &set.name, &WireElements::of(set), &mut items, false);
    }
    for chain in &ruleset.chains {
        items.push(item(
            NfTablesMessage::NewChain(chain_msg(name, chain)),
            NLM_F_CREATE,
            format!("add chain {}", chain.name),
        ));
    }
    for chain in &ruleset.chains {
        push_rules(name, chain, &mut items);
    }
    items
}

/// Adds (or, with `delete`, deletes) `elements` of set `set`, in messages
/// of at most [`ELEMENTS_PER_MESSAGE`].
fn push_elements(
    table: &str,
    set: &str,
    elements: &WireElements,
    items: &mut Vec<BatchItem>,
    delete: bool,
) {
    for (chunk_index, chunk) in elements.chunks(ELEMENTS_PER_MESSAGE).enumerate() {
        let message = SetElementMessage {
            attributes: vec![
                SetElementList::Table(table.into()),
                SetElementList::Set(set.into()),
                SetElementList::Other(DefaultNla::new(
                    NFTA_SET_ELEM_LIST_ELEMENTS | NLA_F_NESTED,
                    chunk.to_vec(),
                )),
            ],
        };
        let (message, flags, verb) = if delete {
            (NfTablesMessage::DeleteSetElement(message), 0, "delete")
        } else {
            (NfTablesMessage::NewSetElement(message), NLM_F_CREATE, "add")
        };
        items.push(item(
            message,
            flags,
            format!("{verb} elements of set {set} (part {})", chunk_index + 1),
        ));
    }
}

fn push_rules(table: &str, chain: &Chain, items: &mut Vec<BatchItem>) {
    for (index, rule) in chain.rules.iter().enumerate() {
        items.push(item(
            NfTablesMessage::NewRule(rule_msg(table, &chain.name, rule)),
            NLM_F_CREATE | NLM_F_APPEND,
            format!(
                "add rule {index} of chain {}: {}",
                chain.name,
                portguard_core::render::render_rule(rule)
            ),
        ));
    }
}

/// A transaction that only creates `spec`'s table with `ruleset`: the
/// kernel refuses it whole (`EEXIST`), changing nothing, if the table
/// exists, so that it cannot add a second set of rules to a copy somebody
/// else recreated first.
pub(crate) fn create_table(spec: &TableSpec, ruleset: &Ruleset) -> Vec<BatchItem> {
    let mut items = replace_table(spec, None, ruleset);
    if let Some(table) = items.first_mut() {
        table.flags |= NLM_F_EXCL;
    }
    items
}

/// The batch that turns table `spec` into `ruleset` in place, given the
/// differences the comparison (`compare::compare`) found, all of which are
/// [`Difference::in_place`]: foreign elements are deleted and missing ones
/// added, one by one, whatever the set's size; chains whose rules differ
/// are flushed and refilled. Base chains stay hooked and keep judging
/// until the commit switches to the new generation.
pub(crate) fn repair_table(
    spec: &TableSpec,
    ruleset: &Ruleset,
    differences: &[Difference],
) -> Vec<BatchItem> {
    let name = spec.name.as_str();
    let mut items = Vec::new();
    for difference in differences {
        match difference {
            Difference::Elements {
                set,
                missing,
                foreign,
            } => {
                // Deletions first: an interval end that is foreign may
                // share its key with a start we are about to add.
                let (foreign, missing) = (
                    WireElements::from_dumped(foreign),
                    WireElements::from_dumped(missing),
                );
                push_elements(name, set, &foreign, &mut items, true);
                push_elements(name, set, &missing, &mut items, false);
            }
            Difference::Rules { chain, .. } => {
                let Some(wanted) = ruleset.chain(chain) else {
                    continue;
                };
                items.push(item(
                    NfTablesMessage::DeleteRule(RuleMessage {
                        attributes: vec![
                            RuleAttribute::Table(name.into()),
                            RuleAttribute::Chain(chain.clone()),
                        ],
                    }),
                    0,
                    format!("flush chain {chain}"),
                ));
                push_rules(name, wanted, &mut items);
            }
            _ => {}
        }
    }
    items
}

/// The batch that deletes table `name` if it exists: created first (a
/// no-op when it does), so that the deletion cannot fail on a missing
/// table. `flags` must be what the table has, or the creation is refused.
pub(crate) fn delete_table(name: &str, flags: u32) -> Vec<BatchItem> {
    vec![
        item(
            NfTablesMessage::NewTable(table_msg(name, flags)),
            NLM_F_CREATE,
            "create table (to delete it)".into(),
        ),
        item(
            NfTablesMessage::DeleteTable(table_msg(name, 0)),
            0,
            format!("delete table inet {name}"),
        ),
    ]
}

/// A batch that creates and at once deletes a table with `flags`: it
/// commits only if the kernel knows those flags.
pub(crate) fn probe_table_flags(name: &str, flags: u32) -> Vec<BatchItem> {
    vec![
        item(
            NfTablesMessage::NewTable(table_msg(name, flags)),
            NLM_F_CREATE | NLM_F_EXCL,
            format!("add probe table inet {name}"),
        ),
        item(
            NfTablesMessage::DeleteTable(table_msg(name, 0)),
            0,
            format!("delete probe table inet {name}"),
        ),
    ]
}

/// A batch that creates a table holding one chain with one `rule`, and at
/// once deletes the table: it commits only if the kernel can hold that
/// rule (its expressions and the modules they need).
pub(crate) fn probe_rule(name: &str, rule: &Rule) -> Vec<BatchItem> {
    let chain = Chain {
        name: "probe".into(),
        base: None,
        rules: Vec::new(),
    };
    vec![
        item(
            NfTablesMessage::NewTable(table_msg(name, 0)),
            NLM_F_CREATE | NLM_F_EXCL,
            format!("add probe table inet {name}"),
        ),
        item(
            NfTablesMessage::NewChain(chain_msg(name, &chain)),
            NLM_F_CREATE,
            format!("add probe chain inet {name} probe"),
        ),
        item(
            NfTablesMessage::NewRule(rule_msg(name, "probe", rule)),
            NLM_F_CREATE | NLM_F_APPEND,
            format!("add probe rule to inet {name} probe"),
        ),
        item(
            NfTablesMessage::DeleteTable(table_msg(name, 0)),
            0,
            format!("delete probe table inet {name}"),
        ),
    ]
}

fn item(message: NfTablesMessage, flags: u16, what: String) -> BatchItem {
    BatchItem {
        family: NetfilterProtoFamily::Inet,
        flags,
        message,
        what,
    }
}

#[cfg(test)]
mod tests {
    //! The element lists of the batches: byte for byte what the library's
    //! typed attributes make, and never longer than an attribute's length
    //! can say.

    use netlink_packet_core::{Emitable, NLA_HEADER_SIZE};
    use portguard_core::ruleset::TABLE_NAME;
    use portguard_core::ruleset::{Element, Set, SetKey};

    use super::*;
    use crate::model::Attrs;
    use netlink_packet_core::Nla;
    use netlink_packet_netfilter::nftables::{NfTablesMessage, SetElementList};
    use portguard_core::Ruleset;

    use crate::model::{Ownership, TableSpec};
    use crate::wire::WireElements;
    use crate::wire::tests::{every_kind_of_set, ports, set, typed_elements};

    fn spec() -> TableSpec {
        TableSpec {
            name: TABLE_NAME.into(),
            ownership: Ownership::Unowned,
        }
    }

    /// Every element list a batch carries, as (attribute length field,
    /// real value length + header).
    fn element_lists(items: &[crate::socket::BatchItem]) -> Vec<(usize, usize)> {
        items
            .iter()
            .filter_map(|item| match &item.message {
                NfTablesMessage::NewSetElement(m) | NfTablesMessage::DeleteSetElement(m) => Some(m),
                _ => None,
            })
            .flat_map(|m| m.attributes.iter())
            .filter(|a| matches!(a, SetElementList::Other(_) | SetElementList::Elements(_)))
            .map(|a| {
                // What `Nla::emit` writes in the length field (emitting the
                // value itself is what panics when it does not fit).
                let field = (a.value_len() as u16).wrapping_add(NLA_HEADER_SIZE as u16);
                (usize::from(field), a.value_len() + NLA_HEADER_SIZE)
            })
            .collect()
    }

    /// One NEWSETELEM message's attributes through the library's types.
    fn typed_message(set: &Set, first: usize, n: usize) -> Vec<u8> {
        let chunk: Vec<_> = typed_elements(set)
            .into_iter()
            .skip(first)
            .take(n)
            .collect();
        let attrs = vec![
            SetElementList::Table(TABLE_NAME.into()),
            SetElementList::Set(set.name.clone()),
            SetElementList::Elements(chunk),
        ];
        let mut bytes = vec![0; attrs.as_slice().buffer_len()];
        attrs.as_slice().emit(&mut bytes);
        bytes
    }

    #[test]
    fn install_messages_are_the_typed_messages_byte_for_byte_at_chunk_boundaries() {
        let mut sets = every_kind_of_set();
        for (i, count) in [0u16, 512, 513].into_iter().enumerate() {
            let mut s = set(SetKey::Port, vec![]);
            s.name = format!("p{i}");
            if count > 0 {
                s.elements = vec![Element::Port(ports(1000, 1000 + count - 1))];
            }
            sets.push(s);
        }
        for (i, s) in sets.iter_mut().enumerate() {
            s.name = format!("s{i}");
        }
        let ruleset = Ruleset {
            sets: sets.clone(),
            chains: vec![],
        };
        let items = replace_table(&spec(), None, &ruleset);
        for s in &sets {
            let messages: Vec<Vec<u8>> = items
                .iter()
                .filter_map(|item| match &item.message {
                    NfTablesMessage::NewSetElement(m)
                        if m.attributes
                            .iter()
                            .any(|a| *a == SetElementList::Set(s.name.clone())) =>
                    {
                        let mut b = vec![0; m.attributes.as_slice().buffer_len()];
                        m.attributes.as_slice().emit(&mut b);
                        Some(b)
                    }
                    _ => None,
                })
                .collect();
            let count = WireElements::of(s).iter().count();
            assert_eq!(messages.len(), count.div_ceil(512), "{}: messages", s.name);
            for (k, message) in messages.iter().enumerate() {
                assert_eq!(
                    *message,
                    typed_message(s, k * 512, 512),
                    "{} part {k}",
                    s.name
                );
            }
        }
    }

    /// The widest element the planner makes (IPv6 . port interval: 60
    /// bytes), 512 to a message: 30,724 bytes, far from the limit.
    #[test]
    fn planned_element_lists_fit_an_attribute_length() {
        let v6_net = (0xfd00_u128 << 112, (0xfd00_u128 << 112) | 0xffff);
        let s = set(
            SetKey::Ipv6PortInterval,
            (0..600u16)
                .map(|i| Element::Ipv6Port {
                    addrs: (
                        v6_net.0 + u128::from(i) * 0x10000,
                        v6_net.1 + u128::from(i) * 0x10000,
                    ),
                    ports: ports(i + 1, i + 1),
                })
                .collect(),
        );
        let ruleset = Ruleset {
            sets: vec![s],
            chains: vec![],
        };
        let lists = element_lists(&replace_table(&spec(), None, &ruleset));
        assert_eq!(lists.len(), 2);
        for (field, real) in lists {
            assert_eq!(field, real);
            assert!(real <= 30_724, "{real}");
        }
    }

    /// 600 foreign port elements with a 128-character comment each, as
    /// the dump gives them (key, userdata): 512 of them in one message
    /// would be 77,824 bytes in an attribute whose length has 16 bits, and
    /// the netlink library panics serializing it (the daemon with it).
    /// Every element list must be able to say its own length.
    #[test]
    fn repairs_of_many_long_foreign_elements_fit_an_attribute_length() {
        let mut userdata = vec![1u8, 129];
        userdata.extend(std::iter::repeat_n(b'c', 128));
        userdata.push(0);
        let foreign: Vec<Attrs> = (0..600u16)
            .map(|i| {
                let port = (20000 + i).to_be_bytes();
                vec![
                    (1, vec![6, 0, 1, 0, port[0], port[1], 0, 0]),
                    (6, userdata.clone()),
                ]
            })
            .collect();
        let differences = [Difference::Elements {
            set: "allow_tcp".into(),
            missing: vec![],
            foreign,
        }];
        let ruleset = Ruleset {
            sets: vec![],
            chains: vec![],
        };
        let items = repair_table(&spec(), &ruleset, &differences);
        for (field, real) in element_lists(&items) {
            assert_eq!(
                field, real,
                "element list of {real} bytes, length field says {field}"
            );
        }
    }
}
