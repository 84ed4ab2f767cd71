//! Every number the kernel's netlink interface defines that this crate
//! uses, each defined once and named as the kernel's headers name it
//! (`include/uapi/linux/...`), so that a value read anywhere in the crate
//! can be looked up there. netlink-packet-netfilter 0.4.0 has types for
//! part of nf_tables only; the rest travels as raw attributes with these
//! numbers. Nothing here depends on any other module of the crate.

// Error numbers (asm-generic/errno-base.h, errno.h), as the kernel
// returns them in netlink acknowledgements.
pub(crate) const EPERM: i32 = nix::errno::Errno::EPERM as i32;
pub(crate) const ENOENT: i32 = nix::errno::Errno::ENOENT as i32;
pub(crate) const EBUSY: i32 = nix::errno::Errno::EBUSY as i32;
pub(crate) const EEXIST: i32 = nix::errno::Errno::EEXIST as i32;
pub(crate) const EINVAL: i32 = nix::errno::Errno::EINVAL as i32;
pub(crate) const EOPNOTSUPP: i32 = nix::errno::Errno::EOPNOTSUPP as i32;
pub(crate) const ENOBUFS: i32 = nix::errno::Errno::ENOBUFS as i32;

// netlink.h
/// `NLMSG_HDRLEN`: the netlink message header.
pub(crate) const NLMSG_HDRLEN: usize = 16;
pub(crate) const NLM_F_DUMP_INTR: u16 = 0x10;

// nfnetlink.h
/// `NFNL_SUBSYS_NFTABLES`: batches address the nftables subsystem; the
/// high byte of an nf_tables message's type.
pub(crate) const NFNL_SUBSYS_NFTABLES: u16 = 10;
/// The multicast group of nf_tables change notifications.
pub(crate) const NFNLGRP_NFTABLES: u32 = 7;
/// `sizeof(struct nfgenmsg)`, the header after the netlink header.
pub(crate) const NFGENMSG_LEN: usize = 4;

// netfilter.h: verdicts and protocol families.
pub(crate) const NF_DROP: u32 = 0;
pub(crate) const NF_ACCEPT: u32 = 1;
pub(crate) const NFPROTO_INET: u8 = 1;
pub(crate) const NFPROTO_IPV4: u8 = 2;
pub(crate) const NFPROTO_ARP: u8 = 3;
pub(crate) const NFPROTO_NETDEV: u8 = 5;
pub(crate) const NFPROTO_BRIDGE: u8 = 7;
pub(crate) const NFPROTO_IPV6: u8 = 10;

// nf_tables.h: message types (`NFT_MSG_*`, the low byte).
pub(crate) const NFT_MSG_NEWTABLE: u16 = 0;
pub(crate) const NFT_MSG_DELTABLE: u16 = 2;
pub(crate) const NFT_MSG_NEWCHAIN: u16 = 3;
pub(crate) const NFT_MSG_DELCHAIN: u16 = 5;
pub(crate) const NFT_MSG_NEWGEN: u16 = 15;
pub(crate) const NFT_MSG_DESTROYTABLE: u16 = 26;
pub(crate) const NFT_MSG_DESTROYCHAIN: u16 = 27;

// nf_tables.h: table flags.
/// `NFT_TABLE_F_OWNER`: only the owning socket may change the table, and
/// it goes when that socket closes (unless persistent).
pub(crate) const NFT_TABLE_F_OWNER: u32 = 2;
/// `NFT_TABLE_F_PERSIST` (Linux 6.9+): an owned table stays when its owner
/// exits, orphaned, until a new owner adopts it.
pub(crate) const NFT_TABLE_F_PERSIST: u32 = 4;

// nf_tables.h: attributes of tables, chains, rules and generations.
/// Every nf_tables object notification (table, chain, rule, set, element
/// list, object, flowtable) names its table in attribute 1
/// (`NFTA_TABLE_NAME`, `NFTA_CHAIN_TABLE`, `NFTA_RULE_TABLE`, ...).
pub(crate) const NFTA_OBJECT_TABLE: u16 = 1;
pub(crate) const NFTA_CHAIN_NAME: u16 = 3;
pub(crate) const NFTA_CHAIN_POLICY: u16 = 5;
pub(crate) const NFTA_RULE_TABLE: u16 = 1;
pub(crate) const NFTA_RULE_CHAIN: u16 = 2;
pub(crate) const NFTA_RULE_EXPRESSIONS: u16 = 4;
pub(crate) const NFTA_GEN_ID: u16 = 1;
pub(crate) const NFTA_GEN_PROC_PID: u16 = 2;
pub(crate) const NFTA_GEN_PROC_NAME: u16 = 3;

// nf_tables.h: sets and their elements.
/// Only tests write a set's definition by hand.
#[cfg(test)]
pub(crate) const NFTA_SET_FLAGS: u16 = 3;
pub(crate) const NFTA_SET_FIELD_LEN: u16 = 1;
pub(crate) const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
pub(crate) const NFTA_SET_ELEM_KEY: u16 = 1;
pub(crate) const NFTA_SET_ELEM_FLAGS: u16 = 3;
pub(crate) const NFTA_SET_ELEM_EXPR: u16 = 7;
pub(crate) const NFTA_SET_ELEM_KEY_END: u16 = 10;
pub(crate) const NFTA_SET_ELEM_EXPRESSIONS: u16 = 11;
pub(crate) const NFT_SET_ELEM_INTERVAL_END: u32 = 1;
pub(crate) const NFTA_LIST_ELEM: u16 = 1;
pub(crate) const NFTA_DATA_VALUE: u16 = 1;

// nf_tables.h: expressions.
pub(crate) const NFTA_EXPR_NAME: u16 = 1;
pub(crate) const NFTA_EXPR_DATA: u16 = 2;
pub(crate) const NFTA_IMMEDIATE_DATA: u16 = 2;
pub(crate) const NFTA_BITWISE_OP: u16 = 6;
pub(crate) const NFTA_LOOKUP_FLAGS: u16 = 5;
pub(crate) const NFT_LOOKUP_F_INV: u32 = 1;
pub(crate) const NFT_PAYLOAD_NETWORK_HEADER: u32 = 1;
pub(crate) const NFT_PAYLOAD_TRANSPORT_HEADER: u32 = 2;
pub(crate) const NFTA_CT_DREG: u16 = 1;
pub(crate) const NFTA_CT_KEY: u16 = 2;
pub(crate) const NFTA_CT_DIRECTION: u16 = 3;
pub(crate) const NFTA_CT_SREG: u16 = 4;
pub(crate) const NFT_CT_STATE: u32 = 0;
pub(crate) const NFT_CT_STATUS: u32 = 2;
pub(crate) const NFT_CT_MARK: u32 = 3;
pub(crate) const NFT_CT_PROTO_DST: u32 = 12;
pub(crate) const NFTA_FIB_DREG: u16 = 1;
pub(crate) const NFTA_FIB_RESULT: u16 = 2;
pub(crate) const NFTA_FIB_FLAGS: u16 = 3;
pub(crate) const NFT_FIB_RESULT_ADDRTYPE: u32 = 3;
pub(crate) const NFTA_FIB_F_DADDR: u32 = 1 << 1;
pub(crate) const NFTA_LIMIT_RATE: u16 = 1;
pub(crate) const NFTA_LIMIT_UNIT: u16 = 2;
pub(crate) const NFTA_LIMIT_BURST: u16 = 3;
pub(crate) const NFTA_LIMIT_TYPE: u16 = 4;
pub(crate) const NFTA_LIMIT_FLAGS: u16 = 5;
pub(crate) const NFTA_LOG_GROUP: u16 = 1;
pub(crate) const NFTA_LOG_PREFIX: u16 = 2;
pub(crate) const NFTA_LOG_SNAPLEN: u16 = 3;
pub(crate) const NFTA_LOG_LEVEL: u16 = 5;
pub(crate) const NFTA_COUNTER_BYTES: u16 = 1;
pub(crate) const NFTA_COUNTER_PACKETS: u16 = 2;
pub(crate) const NFTA_DYNSET_SET_NAME: u16 = 1;
pub(crate) const NFTA_DYNSET_OP: u16 = 3;
pub(crate) const NFTA_DYNSET_SREG_KEY: u16 = 4;
pub(crate) const NFTA_DYNSET_TIMEOUT: u16 = 6;
pub(crate) const NFTA_DYNSET_EXPR: u16 = 7;
pub(crate) const NFTA_DYNSET_FLAGS: u16 = 9;
pub(crate) const NFT_DYNSET_OP_UPDATE: u32 = 1;

// Conntrack (nf_conntrack_common.h, nf_conntrack_tuple_common.h,
// nfnetlink_conntrack.h) and nfnetlink_log.h.
pub(crate) const IP_CT_DIR_ORIGINAL: u8 = 0;
pub(crate) const IPS_DST_NAT: u32 = 1 << 5;
/// `NF_CT_STATE_BIT(IP_CT_ESTABLISHED)`, and so on: ct state as nft
/// matches it.
pub(crate) const CT_STATE_ESTABLISHED: u32 = 1 << 1;
pub(crate) const CT_STATE_RELATED: u32 = 1 << 2;
pub(crate) const CT_STATE_NEW: u32 = 1 << 3;
/// Not typed by netlink-packet-netfilter 0.4.0: `CTA_ZONE` is copied from
/// an entry into its delete request, `CTA_MARK_MASK` filters a dump.
pub(crate) const CTA_ZONE: u16 = 18;
pub(crate) const CTA_MARK_MASK: u16 = 21;
/// `NFULA_CT`: the packet's conntrack entry, as ctnetlink attributes.
/// netlink-packet-netfilter 0.4.0 has no type for it.
pub(crate) const NFULA_CT: u16 = 18;

// Elsewhere in the kernel's headers.
/// `IFNAMSIZ` (if.h): interface names are NUL-padded to it.
pub(crate) const IFNAMSIZ: usize = 16;
/// `RTN_LOCAL` (rtnetlink.h): a fib lookup's address type for a local
/// address.
pub(crate) const RTN_LOCAL: u32 = 2;
/// `LOGLEVEL_INFO` (kern_levels.h).
pub(crate) const LOGLEVEL_INFO: u32 = 6;

// nftables' own numbers (src/datatype.h, libnftnl udata), which the
// kernel stores without reading them and `nft` needs to print a set.
pub(crate) const TYPE_IPADDR: u32 = 7;
pub(crate) const TYPE_IP6ADDR: u32 = 8;
pub(crate) const TYPE_INET_SERVICE: u32 = 13;
pub(crate) const TYPE_IFNAME: u32 = 41;
/// Bits of each datatype in a concatenation's key type.
pub(crate) const TYPE_BITS: u32 = 6;
pub(crate) const NFTNL_UDATA_SET_KEYBYTEORDER: u8 = 0;
pub(crate) const BYTEORDER_HOST_ENDIAN: u32 = 1;
