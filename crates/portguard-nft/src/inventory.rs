//! Every nf_tables chain of every table (one dump, all families) and the
//! legacy x_tables tables in use: what [`portguard_core::hostfw::assess`]
//! needs to tell which firewall writes Docker's rules and whether the
//! host's INPUT path drops by default. Read-only.

use netlink_packet_netfilter::NetfilterProtoFamily;
use netlink_packet_netfilter::nftables::{
    ChainAttribute, ChainMessage, Hook, HookNumber, NfTablesMessage,
};
use portguard_core::hostfw::{HookKind, NetfilterInventory, NfFamily, NftChain};

use crate::error::NftError;
use crate::socket::{NfSocket, decode_nft};

/// Offset of `nfgenmsg.nfgen_family` in a raw reply (after `nlmsghdr`).
const FAMILY_OFFSET: usize = 16;
const NF_DROP: u32 = 0;

/// Reads the calling thread's network namespace.
pub fn netfilter_inventory() -> Result<NetfilterInventory, NftError> {
    let mut sock = NfSocket::open()?;
    let replies = sock.dump_nft(
        NetfilterProtoFamily::Unspec,
        NfTablesMessage::GetChain(ChainMessage {
            attributes: Vec::new(),
        }),
    )?;
    let chains = replies
        .iter()
        .filter_map(|raw| {
            let family = NfFamily::from_number(*raw.get(FAMILY_OFFSET)?);
            match decode_nft(raw)? {
                NfTablesMessage::NewChain(chain) => Some(nft_chain(family, &chain)),
                _ => None,
            }
        })
        .filter(|c| c.table != "portguard" && c.table != crate::STANDBY_TABLE)
        .collect();
    Ok(NetfilterInventory {
        chains,
        legacy_ipv4_tables: legacy_tables("/proc/thread-self/net/ip_tables_names"),
        legacy_ipv6_tables: legacy_tables("/proc/thread-self/net/ip6_tables_names"),
    })
}

fn nft_chain(family: NfFamily, chain: &ChainMessage) -> NftChain {
    let mut out = NftChain {
        family,
        table: String::new(),
        name: String::new(),
        hook: None,
        policy_drop: false,
    };
    for attr in &chain.attributes {
        match attr {
            ChainAttribute::Table(t) => out.table = t.clone(),
            ChainAttribute::Name(n) => out.name = n.clone(),
            ChainAttribute::Policy(p) => out.policy_drop = *p == NF_DROP,
            ChainAttribute::Hook(hooks) => {
                out.hook = Some(
                    hooks
                        .iter()
                        .find_map(|h| match h {
                            Hook::Number(HookNumber::Inet(n)) => {
                                Some(HookKind::from_number(u32::from(*n)))
                            }
                            Hook::Number(_) => Some(HookKind::Other),
                            _ => None,
                        })
                        .unwrap_or(HookKind::Other),
                );
            }
            _ => {}
        }
    }
    out
}

/// The table names in a `/proc/net/ip*_tables_names` file; none when it
/// is absent (no x_tables support) or unreadable.
fn legacy_tables(path: &str) -> Vec<String> {
    std::fs::read_to_string(path)
        .map(|text| {
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(String::from)
                .collect()
        })
        .unwrap_or_default()
}
