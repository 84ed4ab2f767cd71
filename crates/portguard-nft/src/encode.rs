//! Typed ruleset -> nf_tables netlink messages. Expressions the library
//! types (meta, cmp, bitwise, lookup, payload, immediate) use its types;
//! ct, fib, limit, log and counter are built from their name and raw
//! attributes, as the kernel's `nf_tables.h` defines them.

use netlink_packet_core::{
    DefaultNla, Emitable, NLA_F_NESTED, NLM_F_APPEND, NLM_F_CREATE, NLM_F_EXCL,
};
use netlink_packet_netfilter::NetfilterProtoFamily;
use netlink_packet_netfilter::nftables::{
    Bitwise, ChainAttribute, ChainMessage, ChecksumFlags, ChecksumType, Cmp, DataAttribute,
    Expressions, Hook, HookNumber, Immediate, InetHookNumber, ListAttribute, Lookup, Meta, MetaKey,
    NfTablesMessage, Operator, Payload, Register, RuleAttribute, RuleMessage, SetAttribute,
    SetDescription, SetElementList, SetElementMessage, SetFlags, SetMessage, TableAttribute,
    TableFlags, TableMessage, Verdict, VerdictAttribute,
};
use portguard_core::L4Proto;
use portguard_core::ruleset::{
    BaseChain, Chain, CtStates, Hook as ChainHook, IfMatch, Policy, Rule, Ruleset, Set, SetKey,
    Stmt,
};

use crate::compare::Difference;
use crate::socket::BatchItem;
use crate::table::TableSpec;
use crate::wire::WireElements;

// nf_tables.h / netfilter headers.
const NF_DROP: u32 = 0;
const NF_ACCEPT: u32 = 1;
const NFT_CT_STATE: u32 = 0;
const NFT_CT_STATUS: u32 = 2;
const NFT_CT_PROTO_DST: u32 = 12;
const NFT_CT_MARK: u32 = 3;
const NFTA_CT_SREG: u16 = 4;
const IP_CT_DIR_ORIGINAL: u8 = 0;
const NFTA_CT_DREG: u16 = 1;
const NFTA_CT_KEY: u16 = 2;
const NFTA_CT_DIRECTION: u16 = 3;
const IPS_DST_NAT: u32 = 1 << 5;
const CT_STATE_ESTABLISHED: u32 = 1 << 1;
const CT_STATE_RELATED: u32 = 1 << 2;
const CT_STATE_NEW: u32 = 1 << 3;
const NFTA_FIB_DREG: u16 = 1;
const NFTA_FIB_RESULT: u16 = 2;
const NFTA_FIB_FLAGS: u16 = 3;
const NFT_FIB_RESULT_ADDRTYPE: u32 = 3;
const NFTA_FIB_F_DADDR: u32 = 1 << 1;
const RTN_LOCAL: u32 = 2;
const NFTA_LIMIT_RATE: u16 = 1;
const NFTA_LIMIT_UNIT: u16 = 2;
const NFTA_LIMIT_BURST: u16 = 3;
const NFTA_LIMIT_TYPE: u16 = 4;
const NFTA_LIMIT_FLAGS: u16 = 5;
const LIMIT_BURST: u32 = 5;
const NFTA_LOG_GROUP: u16 = 1;
const NFTA_LOG_PREFIX: u16 = 2;
const NFTA_LOG_SNAPLEN: u16 = 3;
const NFTA_LOG_LEVEL: u16 = 5;
const LOG_LEVEL_INFO: u32 = 6;
const NFTA_COUNTER_BYTES: u16 = 1;
const NFTA_COUNTER_PACKETS: u16 = 2;
const NFTA_DYNSET_SET_NAME: u16 = 1;
const NFTA_DYNSET_OP: u16 = 3;
const NFTA_DYNSET_SREG_KEY: u16 = 4;
const NFTA_DYNSET_EXPR: u16 = 7;
const NFT_DYNSET_OP_UPDATE: u32 = 1;
const NFTA_EXPR_NAME: u16 = 1;
const NFTA_EXPR_DATA: u16 = 2;
const NFT_PAYLOAD_NETWORK_HEADER: u32 = 1;
const NFT_PAYLOAD_TRANSPORT_HEADER: u32 = 2;
const NFPROTO_IPV4: u8 = 2;
const NFPROTO_IPV6: u8 = 10;
const NFT_LOOKUP_F_INV: u32 = 1;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
const NFTA_SET_FIELD_LEN: u16 = 1;
const IFNAMSIZ: usize = 16;
// nftables datatypes (src/datatype.h), used as set key types.
const TYPE_IPADDR: u32 = 7;
const TYPE_IP6ADDR: u32 = 8;
const TYPE_INET_SERVICE: u32 = 13;
const TYPE_IFNAME: u32 = 41;
const TYPE_BITS: u32 = 6;
const NFTNL_UDATA_SET_KEYBYTEORDER: u8 = 0;
const BYTEORDER_HOST_ENDIAN: u32 = 1;
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
        let orphan = flags & FLAG_PERSIST != 0 && flags & FLAG_OWNER == 0;
        if orphan && spec.ownership.flags() & FLAG_PERSIST != 0 {
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
/// differences [`crate::compare::compare`] found, all of which are
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

/// `NFT_TABLE_F_OWNER`: only the owning socket may change the table, and
/// it goes when that socket closes (unless persistent).
pub(crate) const FLAG_OWNER: u32 = 2;
/// `NFT_TABLE_F_PERSIST` (Linux 6.9+): an owned table stays when its owner
/// exits, orphaned, until a new owner adopts it.
pub(crate) const FLAG_PERSIST: u32 = 4;

/// Table `name` with `NFT_TABLE_F_*` `flags` (none: a plain table).
pub(crate) fn table_msg(name: &str, flags: u32) -> TableMessage {
    let mut attributes = vec![TableAttribute::Name(name.into())];
    if flags != 0 {
        attributes.push(TableAttribute::Flags(TableFlags::from_bits_retain(flags)));
    }
    TableMessage { attributes }
}

pub(crate) fn set_msg(table: &str, set: &Set, id: u32) -> SetMessage {
    let (key_type, key_len, fields): (u32, u32, &[u32]) = match set.key {
        SetKey::Ifname => (TYPE_IFNAME, IFNAMSIZ as u32, &[]),
        SetKey::Port | SetKey::PortInterval | SetKey::PortCounters { .. } => {
            (TYPE_INET_SERVICE, 2, &[])
        }
        // Hash sets of concatenations carry no field description and no
        // CONCAT flag: nft (1.0.6) sends them only for interval sets
        // (pipapo), and a set `nft -f` creates must compare equal.
        SetKey::Ipv4Port => ((TYPE_IPADDR << TYPE_BITS) | TYPE_INET_SERVICE, 8, &[]),
        SetKey::Ipv4PortInterval => ((TYPE_IPADDR << TYPE_BITS) | TYPE_INET_SERVICE, 8, &[4, 2]),
        SetKey::Ipv6Port => ((TYPE_IP6ADDR << TYPE_BITS) | TYPE_INET_SERVICE, 20, &[]),
        SetKey::Ipv6PortInterval => (
            (TYPE_IP6ADDR << TYPE_BITS) | TYPE_INET_SERVICE,
            20,
            &[16, 2],
        ),
    };
    let mut flags = SetFlags::empty();
    if set.key.is_interval() {
        flags |= SetFlags::Interval;
    }
    if set.key.is_dynamic() {
        flags |= SetFlags::Eval;
    }
    if !fields.is_empty() {
        flags |= SetFlags::Concat;
    }
    let mut attributes = vec![
        SetAttribute::Table(table.into()),
        SetAttribute::Name(set.name.clone()),
        SetAttribute::Flags(flags),
        SetAttribute::KeyType(key_type),
        SetAttribute::KeyLen(key_len),
        SetAttribute::Id(id),
    ];
    if set.key == SetKey::Ifname {
        // nft's set userdata (libnftnl udata TLV): key byte order = host
        // endian, without which nft prints interface names byte-swapped.
        let mut udata = vec![NFTNL_UDATA_SET_KEYBYTEORDER, 4];
        udata.extend(BYTEORDER_HOST_ENDIAN.to_ne_bytes());
        attributes.push(SetAttribute::UserData(udata));
    }
    if let SetKey::PortCounters { size } = set.key {
        attributes.push(SetAttribute::Description(vec![SetDescription::Size(size)]));
    }
    if !fields.is_empty() {
        let concat = fields
            .iter()
            .map(|len| {
                nested(
                    NFTA_LIST_ELEM,
                    &[DefaultNla::new(
                        NFTA_SET_FIELD_LEN,
                        len.to_be_bytes().to_vec(),
                    )],
                )
            })
            .collect();
        attributes.push(SetAttribute::Description(vec![SetDescription::Concat(
            concat,
        )]));
    }
    SetMessage { attributes }
}

/// A nested attribute made of `inner` attributes.
fn nested(kind: u16, inner: &[DefaultNla]) -> DefaultNla {
    let mut value = vec![0; inner.buffer_len()];
    inner.emit(&mut value);
    DefaultNla::new(kind | NLA_F_NESTED, value)
}

/// An interface name as the kernel compares it: NUL-padded to IFNAMSIZ.
pub(crate) fn ifname_bytes(name: &str) -> Vec<u8> {
    let mut bytes = name.as_bytes().to_vec();
    bytes.resize(IFNAMSIZ, 0);
    bytes
}

pub(crate) fn chain_msg(table: &str, chain: &Chain) -> ChainMessage {
    let mut attributes = vec![
        ChainAttribute::Table(table.into()),
        ChainAttribute::Name(chain.name.clone()),
    ];
    if let Some(BaseChain {
        hook,
        priority,
        policy,
    }) = chain.base
    {
        let number = match hook {
            ChainHook::Input => InetHookNumber::LocalIn,
            ChainHook::Forward => InetHookNumber::Forward,
        };
        attributes.push(ChainAttribute::Hook(vec![
            Hook::Number(HookNumber::Inet(number)),
            // The kernel reads the priority as a signed 32-bit number.
            Hook::Priority(priority as u32),
        ]));
        attributes.push(ChainAttribute::Policy(match policy {
            Policy::Accept => NF_ACCEPT,
            Policy::Drop => NF_DROP,
        }));
        attributes.push(ChainAttribute::Type("filter".into()));
    }
    ChainMessage { attributes }
}

pub(crate) fn rule_msg(table: &str, chain: &str, rule: &Rule) -> RuleMessage {
    let mut exprs = Vec::new();
    for stmt in &rule.stmts {
        stmt_exprs(stmt, &mut exprs);
    }
    RuleMessage {
        attributes: vec![
            RuleAttribute::Table(table.into()),
            RuleAttribute::Chain(chain.into()),
            RuleAttribute::Expressions(exprs.into_iter().map(ListAttribute::from).collect()),
        ],
    }
}

fn u32_be(kind: u16, value: u32) -> DefaultNla {
    DefaultNla::new(kind, value.to_be_bytes().to_vec())
}

fn u64_be(kind: u16, value: u64) -> DefaultNla {
    DefaultNla::new(kind, value.to_be_bytes().to_vec())
}

fn raw(name: &str, attributes: Vec<DefaultNla>) -> Expressions {
    Expressions::Other {
        expression_type: name.into(),
        attributes,
    }
}

fn reg_u32(reg: Register) -> u32 {
    reg.into()
}

fn ct_load(key: u32, dreg: Register, original: bool) -> Expressions {
    let mut attrs = vec![
        u32_be(NFTA_CT_DREG, reg_u32(dreg)),
        u32_be(NFTA_CT_KEY, key),
    ];
    if original {
        attrs.push(DefaultNla::new(NFTA_CT_DIRECTION, vec![IP_CT_DIR_ORIGINAL]));
    }
    raw("ct", attrs)
}

fn meta_load(key: MetaKey) -> Expressions {
    Expressions::Meta(vec![
        Meta::DestinationRegister(Register::Reg1),
        Meta::Key(key),
    ])
}

fn cmp(op: Operator, data: Vec<u8>) -> Expressions {
    Expressions::Cmp(vec![
        Cmp::SourceRegister(Register::Reg1),
        Cmp::Op(op),
        Cmp::Data(DataAttribute::Value(data)),
    ])
}

/// `reg1 & mask != 0`, for ct state and ct status bits (host byte order).
fn any_bit_set(mask: u32, out: &mut Vec<Expressions>) {
    out.push(Expressions::Bitwise(vec![
        Bitwise::SourceRegister(Register::Reg1),
        Bitwise::DestinationRegister(Register::Reg1),
        Bitwise::Length(4),
        Bitwise::Mask(DataAttribute::Value(mask.to_ne_bytes().to_vec())),
        Bitwise::Xor(DataAttribute::Value(0u32.to_ne_bytes().to_vec())),
    ]));
    out.push(cmp(Operator::NotEqual, 0u32.to_ne_bytes().to_vec()));
}

fn lookup(set: &str, inverted: bool) -> Expressions {
    let mut attrs = vec![
        Lookup::Set(set.into()),
        Lookup::SourceRegister(Register::Reg1),
    ];
    if inverted {
        attrs.push(Lookup::Flags(NFT_LOOKUP_F_INV));
    }
    Expressions::Lookup(attrs)
}

/// `update @set { <reg1> counter }`: the key in register 1 is added to
/// `set` if missing, each element with a counter of its own (the template
/// counter given here is cloned into new elements, from zero).
fn dynset_update_counter(set: &str) -> Expressions {
    let mut name = set.as_bytes().to_vec();
    name.push(0);
    let counter = nested(
        NFTA_DYNSET_EXPR,
        &[
            DefaultNla::new(NFTA_EXPR_NAME, b"counter\0".to_vec()),
            nested(
                NFTA_EXPR_DATA,
                &[
                    u64_be(NFTA_COUNTER_BYTES, 0),
                    u64_be(NFTA_COUNTER_PACKETS, 0),
                ],
            ),
        ],
    );
    raw(
        "dynset",
        vec![
            DefaultNla::new(NFTA_DYNSET_SET_NAME, name),
            u32_be(NFTA_DYNSET_OP, NFT_DYNSET_OP_UPDATE),
            u32_be(NFTA_DYNSET_SREG_KEY, reg_u32(Register::Reg1)),
            counter,
        ],
    )
}

fn verdict(code: Verdict, chain: Option<&str>) -> Expressions {
    let mut data = vec![VerdictAttribute::Code(code)];
    if let Some(chain) = chain {
        data.push(VerdictAttribute::Chain(chain.into()));
    }
    Expressions::Immediate(vec![
        Immediate::DestinationRegister(Register::Verdict),
        Immediate::Data(DataAttribute::Verdict(data)),
    ])
}

fn if_match(key: MetaKey, m: &IfMatch, out: &mut Vec<Expressions>) {
    out.push(meta_load(key));
    match m {
        IfMatch::Exact(name) => out.push(cmp(Operator::Equal, ifname_bytes(name))),
        IfMatch::Prefix(prefix) => out.push(cmp(Operator::Equal, prefix.as_bytes().to_vec())),
        IfMatch::InSet(set) => out.push(lookup(set, false)),
        IfMatch::NotInSet(set) => out.push(lookup(set, true)),
    }
}

/// `ip[6] saddr . ct original proto-dst @set`: address in the first
/// 32-bit registers, port right after it, as nft lays out concatenations.
fn saddr_ct_dport(nfproto: u8, set: &str, out: &mut Vec<Expressions>) {
    out.push(meta_load(MetaKey::Nfproto));
    out.push(cmp(Operator::Equal, vec![nfproto]));
    let (offset, len, port_reg) = if nfproto == NFPROTO_IPV4 {
        (12, 4, Register::Reg32_01)
    } else {
        // 32-bit register 4 is 128-bit register 2; the kernel dumps it
        // under that name, so that is the name sent (the read-back must
        // compare equal).
        (8, 16, Register::Reg2)
    };
    out.push(Expressions::Payload(vec![
        Payload::DestinationRegister(Register::Reg1),
        Payload::Base(NFT_PAYLOAD_NETWORK_HEADER),
        Payload::Offset(offset),
        Payload::Len(len),
    ]));
    out.push(ct_load(NFT_CT_PROTO_DST, port_reg, true));
    out.push(lookup(set, false));
}

/// `text` as the kernel's NUL-terminated string attribute.
fn c_text(text: &str) -> Vec<u8> {
    let mut bytes = text.as_bytes().to_vec();
    bytes.push(0);
    bytes
}

fn stmt_exprs(stmt: &Stmt, out: &mut Vec<Expressions>) {
    match stmt {
        Stmt::CtState(CtStates {
            established,
            related,
            new,
        }) => {
            let mut mask = 0;
            if *established {
                mask |= CT_STATE_ESTABLISHED;
            }
            if *related {
                mask |= CT_STATE_RELATED;
            }
            if *new {
                mask |= CT_STATE_NEW;
            }
            out.push(ct_load(NFT_CT_STATE, Register::Reg1, false));
            any_bit_set(mask, out);
        }
        Stmt::CtStatusDnat => {
            out.push(ct_load(NFT_CT_STATUS, Register::Reg1, false));
            any_bit_set(IPS_DST_NAT, out);
        }
        Stmt::L4Proto(proto) => {
            out.push(meta_load(MetaKey::L4Proto));
            out.push(cmp(Operator::Equal, vec![proto.number()]));
        }
        Stmt::Iifname(m) => if_match(MetaKey::Iifname, m, out),
        Stmt::Oifname(m) => if_match(MetaKey::Oifname, m, out),
        Stmt::FibDaddrLocal => {
            out.push(raw(
                "fib",
                vec![
                    u32_be(NFTA_FIB_DREG, reg_u32(Register::Reg1)),
                    u32_be(NFTA_FIB_RESULT, NFT_FIB_RESULT_ADDRTYPE),
                    u32_be(NFTA_FIB_FLAGS, NFTA_FIB_F_DADDR),
                ],
            ));
            out.push(cmp(Operator::Equal, RTN_LOCAL.to_ne_bytes().to_vec()));
        }
        Stmt::DportInSet(set) => {
            out.push(Expressions::Payload(vec![
                Payload::DestinationRegister(Register::Reg1),
                Payload::Base(NFT_PAYLOAD_TRANSPORT_HEADER),
                Payload::Offset(2),
                Payload::Len(2),
            ]));
            out.push(lookup(set, false));
        }
        Stmt::CtOriginalDportInSet(set) => {
            out.push(ct_load(NFT_CT_PROTO_DST, Register::Reg1, true));
            out.push(lookup(set, false));
        }
        Stmt::Ipv4SaddrCtOriginalDportInSet(set) => saddr_ct_dport(NFPROTO_IPV4, set, out),
        Stmt::Ipv6SaddrCtOriginalDportInSet(set) => saddr_ct_dport(NFPROTO_IPV6, set, out),
        Stmt::LimitPerMinute(rate) => out.push(raw(
            "limit",
            vec![
                u64_be(NFTA_LIMIT_RATE, u64::from(*rate)),
                u64_be(NFTA_LIMIT_UNIT, 60),
                u32_be(NFTA_LIMIT_BURST, LIMIT_BURST),
                u32_be(NFTA_LIMIT_TYPE, 0),
                u32_be(NFTA_LIMIT_FLAGS, 0),
            ],
        )),
        Stmt::DportSetCtOriginal(proto) => {
            out.push(ct_load(NFT_CT_PROTO_DST, Register::Reg1, true));
            // As nft writes it: the port at transport header + 2, the
            // checksum fixed up at its place in the TCP or UDP header.
            let checksum_at = match proto {
                L4Proto::Tcp => 16,
                L4Proto::Udp => 6,
            };
            out.push(Expressions::Payload(vec![
                Payload::SourceRegister(Register::Reg1),
                Payload::Base(NFT_PAYLOAD_TRANSPORT_HEADER),
                Payload::Offset(2),
                Payload::Len(2),
                Payload::CsumType(ChecksumType::Inet),
                Payload::CsumOffset(checksum_at),
                Payload::CsumFlags(ChecksumFlags::empty()),
            ]));
        }
        Stmt::LimitPerSecond { rate, burst } => out.push(raw(
            "limit",
            vec![
                u64_be(NFTA_LIMIT_RATE, u64::from(*rate)),
                u64_be(NFTA_LIMIT_UNIT, 1),
                u32_be(NFTA_LIMIT_BURST, *burst),
                u32_be(NFTA_LIMIT_TYPE, 0),
                u32_be(NFTA_LIMIT_FLAGS, 0),
            ],
        )),
        Stmt::Log { prefix } => out.push(raw(
            "log",
            vec![
                DefaultNla::new(NFTA_LOG_PREFIX, c_text(prefix)),
                u32_be(NFTA_LOG_LEVEL, LOG_LEVEL_INFO),
            ],
        )),
        // No queue threshold: the kernel dumps one only when it is not 0,
        // and the read-back must compare equal.
        Stmt::Nflog {
            prefix,
            group,
            snaplen,
        } => out.push(raw(
            "log",
            vec![
                DefaultNla::new(NFTA_LOG_GROUP, group.to_be_bytes().to_vec()),
                DefaultNla::new(NFTA_LOG_PREFIX, c_text(prefix)),
                u32_be(NFTA_LOG_SNAPLEN, *snaplen),
            ],
        )),
        Stmt::CtMarkOr(bits) => {
            out.push(ct_load(NFT_CT_MARK, Register::Reg1, false));
            out.push(Expressions::Bitwise(vec![
                Bitwise::SourceRegister(Register::Reg1),
                Bitwise::DestinationRegister(Register::Reg1),
                Bitwise::Length(4),
                Bitwise::Mask(DataAttribute::Value((!bits).to_ne_bytes().to_vec())),
                Bitwise::Xor(DataAttribute::Value(bits.to_ne_bytes().to_vec())),
            ]));
            out.push(raw(
                "ct",
                vec![
                    u32_be(NFTA_CT_KEY, NFT_CT_MARK),
                    u32_be(NFTA_CT_SREG, reg_u32(Register::Reg1)),
                ],
            ));
        }
        Stmt::Counter => out.push(raw(
            "counter",
            vec![
                u64_be(NFTA_COUNTER_BYTES, 0),
                u64_be(NFTA_COUNTER_PACKETS, 0),
            ],
        )),
        Stmt::CountCtOriginalDport(set) => {
            out.push(ct_load(NFT_CT_PROTO_DST, Register::Reg1, true));
            out.push(dynset_update_counter(set));
        }
        Stmt::Accept => out.push(verdict(Verdict::Other(NF_ACCEPT), None)),
        Stmt::Drop => out.push(verdict(Verdict::Other(NF_DROP), None)),
        Stmt::Jump(chain) => out.push(verdict(Verdict::Jump, Some(chain))),
    }
}
