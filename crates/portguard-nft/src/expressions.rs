//! A rule's statements as nf_tables expressions. Expressions the library
//! types (meta, cmp, bitwise, lookup, payload, immediate) use its types;
//! ct, fib, limit, log, counter and dynset are built from their name and
//! raw attributes, as the kernel's `nf_tables.h` defines them.

use netlink_packet_core::{DefaultNla, Emitable, NLA_F_NESTED};
use netlink_packet_netfilter::nftables::{
    Bitwise, ChecksumFlags, ChecksumType, Cmp, DataAttribute, Expressions, Immediate, Lookup, Meta,
    MetaKey, Operator, Payload, Register, Verdict, VerdictAttribute,
};
use portguard_core::L4Proto;
use portguard_core::ruleset::{CtStates, IfMatch, Rule, Stmt};

use crate::kernel_constants::{
    CT_STATE_ESTABLISHED, CT_STATE_NEW, CT_STATE_RELATED, IFNAMSIZ, IP_CT_DIR_ORIGINAL,
    IPS_DST_NAT, LOGLEVEL_INFO, NF_ACCEPT, NF_DROP, NFPROTO_IPV4, NFPROTO_IPV6, NFT_CT_MARK,
    NFT_CT_PROTO_DST, NFT_CT_STATE, NFT_CT_STATUS, NFT_DYNSET_OP_UPDATE, NFT_FIB_RESULT_ADDRTYPE,
    NFT_LOOKUP_F_INV, NFT_PAYLOAD_NETWORK_HEADER, NFT_PAYLOAD_TRANSPORT_HEADER, NFTA_COUNTER_BYTES,
    NFTA_COUNTER_PACKETS, NFTA_CT_DIRECTION, NFTA_CT_DREG, NFTA_CT_KEY, NFTA_CT_SREG,
    NFTA_DYNSET_EXPR, NFTA_DYNSET_OP, NFTA_DYNSET_SET_NAME, NFTA_DYNSET_SREG_KEY, NFTA_EXPR_DATA,
    NFTA_EXPR_NAME, NFTA_FIB_DREG, NFTA_FIB_F_DADDR, NFTA_FIB_FLAGS, NFTA_FIB_RESULT,
    NFTA_LIMIT_BURST, NFTA_LIMIT_FLAGS, NFTA_LIMIT_RATE, NFTA_LIMIT_TYPE, NFTA_LIMIT_UNIT,
    NFTA_LOG_GROUP, NFTA_LOG_LEVEL, NFTA_LOG_PREFIX, NFTA_LOG_SNAPLEN, RTN_LOCAL,
};

/// The burst of `limit rate N/minute`, as nft writes it by default.
const LIMIT_BURST: u32 = 5;

/// `rule`'s statements, one after the other, as expressions.
pub(crate) fn rule_expressions(rule: &Rule) -> Vec<Expressions> {
    let mut exprs = Vec::new();
    for stmt in &rule.stmts {
        stmt_exprs(stmt, &mut exprs);
    }
    exprs
}

/// A nested attribute made of `inner` attributes.
pub(crate) fn nested(kind: u16, inner: &[DefaultNla]) -> DefaultNla {
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
                u32_be(NFTA_LOG_LEVEL, LOGLEVEL_INFO),
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
