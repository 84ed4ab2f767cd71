//! Every nf_tables chain of every table (one dump, all families) and the
//! legacy x_tables tables in use: what [`portguard_core::hostfw::assess`]
//! needs to tell which firewall writes Docker's rules and whether the
//! host's INPUT path drops by default. Read-only.
//!
//! A host running kube-proxy on iptables-nft holds tens of thousands of
//! chains that tell `assess` nothing: only the chains it looks at are kept
//! ([`assessed_chains`]).

use std::collections::HashSet;

use netlink_packet_netfilter::NetfilterProtoFamily;
use netlink_packet_netfilter::nftables::{
    ChainAttribute, ChainMessage, Hook, HookNumber, NfTablesMessage,
};
use portguard_core::hostfw::{HookKind, NetfilterInventory, NfFamily, NftChain};
use portguard_core::ruleset::TABLE_NAME;

use crate::error::NftError;
use crate::kernel_constants::{NF_DROP, NLMSG_HDRLEN};
use crate::model::STANDBY_TABLE;
use crate::socket::{NfSocket, decode_nft};

/// Offset of `nfgenmsg.nfgen_family` in a raw reply (after `nlmsghdr`).
const FAMILY_OFFSET: usize = NLMSG_HDRLEN;

/// Reads the calling thread's network namespace.
pub fn netfilter_inventory() -> Result<NetfilterInventory, NftError> {
    let mut sock = NfSocket::open()?;
    let replies = sock.dump_nft(
        NetfilterProtoFamily::Unspec,
        NfTablesMessage::GetChain(ChainMessage {
            attributes: Vec::new(),
        }),
    )?;
    let chains = assessed_chains(
        replies
            .iter()
            .filter_map(|raw| {
                let family = NfFamily::from_number(*raw.get(FAMILY_OFFSET)?);
                match decode_nft(raw)? {
                    NfTablesMessage::NewChain(chain) => Some(nft_chain(family, &chain)),
                    _ => None,
                }
            })
            .filter(|c| c.table != TABLE_NAME && c.table != STANDBY_TABLE),
    );
    Ok(NetfilterInventory {
        chains,
        legacy_ipv4_tables: legacy_tables("/proc/thread-self/net/ip_tables_names"),
        legacy_ipv6_tables: legacy_tables("/proc/thread-self/net/ip6_tables_names"),
    })
}

/// The chains [`portguard_core::hostfw::assess`] can tell anything from:
/// base chains (hook, policy), Docker's chains (`DOCKER*`) and ufw's
/// (`ufw6-*`) by name; of any other table one chain, for the table's
/// presence (`docker-bridges`). Kube-proxy's `KUBE-*` chains go.
pub fn assessed_chains(chains: impl Iterator<Item = NftChain>) -> Vec<NftChain> {
    let mut tables_seen = HashSet::new();
    chains
        .filter(|c| {
            let first_of_table = tables_seen.insert((c.family.name(), c.table.clone()));
            first_of_table
                || c.hook.is_some()
                || c.name.starts_with("DOCKER")
                || c.name.starts_with("ufw6-")
        })
        .collect()
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

#[cfg(test)]
mod tests {
    use portguard_core::hostfw::{DockerFirewall, assess};

    use super::*;

    fn chain(family: NfFamily, table: &str, name: &str, hook: Option<HookKind>) -> NftChain {
        NftChain {
            family,
            table: table.into(),
            name: name.into(),
            hook,
            policy_drop: hook.is_some(),
        }
    }

    /// Each case: what `assess` says of every chain and of the kept ones
    /// is the same, while kube-proxy's chains go.
    #[test]
    fn assess_says_the_same_of_the_kept_chains() {
        let kube = |family, table: &str| {
            (0..1000)
                .map(move |i| chain(family, table, &format!("KUBE-SVC-{i}"), None))
                .collect::<Vec<_>>()
        };
        let cases: Vec<Vec<NftChain>> = vec![
            // iptables-nft with kube-proxy, ufw and an ip6 INPUT drop.
            [
                kube(NfFamily::Ip, "filter"),
                kube(NfFamily::Ip, "nat"),
                vec![
                    chain(NfFamily::Ip, "nat", "DOCKER", None),
                    chain(NfFamily::Ip, "filter", "DOCKER-USER", None),
                    chain(NfFamily::Ip6, "filter", "INPUT", Some(HookKind::Input)),
                    chain(NfFamily::Ip6, "filter", "ufw6-user-input", None),
                ],
            ]
            .concat(),
            // Docker 29's nftables backend beside kube-proxy.
            [
                kube(NfFamily::Ip, "filter"),
                vec![
                    chain(NfFamily::Ip, "docker-bridges", "filter-forward", None),
                    chain(
                        NfFamily::Inet,
                        "firewalld",
                        "filter_INPUT",
                        Some(HookKind::Input),
                    ),
                ],
            ]
            .concat(),
            kube(NfFamily::Ip, "filter"),
        ];
        for chains in cases {
            let all = NetfilterInventory {
                chains: chains.clone(),
                ..NetfilterInventory::default()
            };
            let kept = NetfilterInventory {
                chains: assessed_chains(chains.into_iter()),
                ..NetfilterInventory::default()
            };
            assert!(kept.chains.len() < 10, "{:?}", kept.chains);
            for docker in [None, Some(DockerFirewall::from_driver(Some("nftables")))] {
                assert_eq!(assess(docker, &kept), assess(docker, &all));
            }
        }
    }
}
