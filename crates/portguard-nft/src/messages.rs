//! The nf_tables messages that describe the guard's objects: a table, a
//! set's definition, a chain, a rule (its expressions come from
//! [`crate::expressions`]). The batch module puts them together into
//! transactions; the comparison walks the same messages into read-back
//! form (`compare::expected_state`), so what is sent and what is compared
//! are one encoding.

use netlink_packet_core::DefaultNla;
use netlink_packet_netfilter::nftables::{
    ChainAttribute, ChainMessage, Hook, HookNumber, InetHookNumber, ListAttribute, RuleAttribute,
    RuleMessage, SetAttribute, SetDescription, SetFlags, SetMessage, TableAttribute, TableFlags,
    TableMessage,
};
use portguard_core::ruleset::{BaseChain, Chain, Hook as ChainHook, Policy, Rule, Set, SetKey};

use crate::expressions::{nested, rule_expressions};
use crate::kernel_constants::{
    BYTEORDER_HOST_ENDIAN, IFNAMSIZ, NF_ACCEPT, NF_DROP, NFTA_LIST_ELEM, NFTA_SET_FIELD_LEN,
    NFTNL_UDATA_SET_KEYBYTEORDER, TYPE_BITS, TYPE_IFNAME, TYPE_INET_SERVICE, TYPE_IP6ADDR,
    TYPE_IPADDR,
};

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
    let exprs = rule_expressions(rule);
    RuleMessage {
        attributes: vec![
            RuleAttribute::Table(table.into()),
            RuleAttribute::Chain(chain.into()),
            RuleAttribute::Expressions(exprs.into_iter().map(ListAttribute::from).collect()),
        ],
    }
}
