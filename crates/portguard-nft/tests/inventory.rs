//! What the kernel shows of other firewalls, read in network namespaces
//! of the test's own: iptables-nft chains, iptables-legacy tables (which
//! nft cannot show), Docker 29's tables, ufw's IPv6 INPUT drop.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use portguard_core::hostfw::{
    Agreement, DockerFirewall, HookKind, KernelFirewall, NfFamily, assess, ipv6_input_drop,
};
use portguard_nft::netfilter_inventory;
use portguard_testkit::NetNs;

#[test]
fn iptables_nft_chains_and_an_ip6_input_drop_are_seen() {
    let ns = NetNs::new("inv-nft");
    ns.sh("iptables-nft -N DOCKER && iptables-nft -t nat -N DOCKER \
         && ip6tables-nft -N ufw6-user-input && ip6tables-nft -P INPUT DROP");
    let inventory = ns.enter(|| netfilter_inventory().unwrap());
    assert!(
        inventory.chains.iter().any(|c| c.family == NfFamily::Ip6
            && c.table == "filter"
            && c.name == "INPUT"
            && c.hook == Some(HookKind::Input)
            && c.policy_drop),
        "{:?}",
        inventory.chains
    );
    assert!(inventory.legacy_ipv4_tables.is_empty());
    let status = assess(
        Some(DockerFirewall::from_driver(Some("nftables"))),
        &inventory,
    );
    assert_eq!(status.kernel_holds, [KernelFirewall::IptablesNft]);
    assert_eq!(status.agreement, Agreement::Mismatch);
    let drop = ipv6_input_drop(&inventory).expect("ip6 INPUT policy drop");
    assert!(drop.ufw);
}

#[test]
fn iptables_legacy_is_invisible_to_nft_and_said_so() {
    let ns = NetNs::new("inv-legacy");
    ns.sh("iptables-legacy -N DOCKER && iptables-legacy -t nat -N DOCKER");
    let inventory = ns.enter(|| netfilter_inventory().unwrap());
    assert!(inventory.chains.is_empty(), "{:?}", inventory.chains);
    assert!(
        inventory.legacy_ipv4_tables.iter().any(|t| t == "nat"),
        "{:?}",
        inventory.legacy_ipv4_tables
    );
    let status = assess(Some(DockerFirewall::from_driver(None)), &inventory);
    assert_eq!(status.kernel_holds, [KernelFirewall::IptablesLegacy]);
    assert_eq!(status.agreement, Agreement::Agrees);
}

#[test]
fn docker_29_tables_are_seen_and_a_fresh_namespace_shows_nothing() {
    let ns = NetNs::new("inv-29");
    let empty = ns.enter(|| netfilter_inventory().unwrap());
    assert_eq!(empty, Default::default());
    ns.sh(
        "nft add table ip docker-bridges && nft add chain ip docker-bridges filter-FORWARD \
         '{ type filter hook forward priority filter; policy accept; }'",
    );
    let inventory = ns.enter(|| netfilter_inventory().unwrap());
    let status = assess(
        Some(DockerFirewall::from_driver(Some("nftables"))),
        &inventory,
    );
    assert_eq!(status.kernel_holds, [KernelFirewall::Nftables]);
    assert_eq!(status.agreement, Agreement::Agrees);
    assert_eq!(status.ipv6_input_drop, None);
}
