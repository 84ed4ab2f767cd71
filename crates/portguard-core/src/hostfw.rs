//! What the host's firewall looks like beside the guard: the backend Docker
//! says it uses (`GET /info` -> `FirewallBackend.Driver`) against what the
//! kernel actually holds, and whether the host's INPUT path drops IPv6 that
//! the guard allows (docker-proxy serves IPv6 to IPv4-only containers on
//! the INPUT path, where ufw's `default deny incoming` drops it).
//!
//! Pure: the daemon reads the kernel into a [`NetfilterInventory`] and
//! Docker's answer into a [`DockerFirewall`]; [`assess`] decides.

use serde::{Deserialize, Serialize};

use crate::ruleset::GUARD_TABLES;
use crate::snapshot::L4Proto;
use crate::wire::{UnknownValue, serde_via_str};

/// The driver part of Docker's `FirewallBackend.Driver`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FirewallDriver {
    Iptables,
    Nftables,
    /// A driver this version of portguard does not know.
    Unknown,
}

/// Where Docker's answer came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DriverSource {
    /// `GET /info` carried `FirewallBackend.Driver` (Engine 28.1+).
    Reported,
    /// The engine predates `FirewallBackend` (before 28.1): iptables.
    Assumed,
}

/// The firewall backend Docker says it uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DockerFirewall {
    pub driver: FirewallDriver,
    /// `+firewalld`: Docker also talks to firewalld.
    pub firewalld: bool,
    pub source: DriverSource,
}

impl DockerFirewall {
    /// From `FirewallBackend.Driver` (`iptables`, `nftables`,
    /// `iptables+firewalld`, ...); `None` (an older engine) is iptables.
    pub fn from_driver(driver: Option<&str>) -> DockerFirewall {
        let Some(text) = driver else {
            return DockerFirewall {
                driver: FirewallDriver::Iptables,
                firewalld: false,
                source: DriverSource::Assumed,
            };
        };
        let mut parts = text.split('+').map(str::trim);
        let driver = match parts.next().unwrap_or_default() {
            "iptables" => FirewallDriver::Iptables,
            "nftables" => FirewallDriver::Nftables,
            _ => FirewallDriver::Unknown,
        };
        DockerFirewall {
            driver,
            firewalld: parts.any(|p| p == "firewalld"),
            source: DriverSource::Reported,
        }
    }
}

/// A netfilter family, as nf_tables numbers them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NfFamily {
    Inet,
    Ip,
    Ip6,
    Arp,
    Bridge,
    Netdev,
    Other,
}

impl NfFamily {
    pub fn from_number(n: u8) -> NfFamily {
        match n {
            1 => NfFamily::Inet,
            2 => NfFamily::Ip,
            3 => NfFamily::Arp,
            5 => NfFamily::Netdev,
            7 => NfFamily::Bridge,
            10 => NfFamily::Ip6,
            _ => NfFamily::Other,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            NfFamily::Inet => "inet",
            NfFamily::Ip => "ip",
            NfFamily::Ip6 => "ip6",
            NfFamily::Arp => "arp",
            NfFamily::Bridge => "bridge",
            NfFamily::Netdev => "netdev",
            NfFamily::Other => "?",
        }
    }

    /// Whether IPv6 packets traverse this family's hooks.
    fn sees_ipv6(self) -> bool {
        matches!(self, NfFamily::Inet | NfFamily::Ip6)
    }
}

/// A base chain's hook (the inet hooks; others are `Other`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HookKind {
    Prerouting,
    Input,
    Forward,
    Output,
    Postrouting,
    Other,
}

impl HookKind {
    pub fn from_number(n: u32) -> HookKind {
        match n {
            0 => HookKind::Prerouting,
            1 => HookKind::Input,
            2 => HookKind::Forward,
            3 => HookKind::Output,
            4 => HookKind::Postrouting,
            _ => HookKind::Other,
        }
    }
}

/// One nf_tables chain of any table, as the kernel lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NftChain {
    pub family: NfFamily,
    pub table: String,
    pub name: String,
    /// For base chains: the hook and whether the policy is drop.
    pub hook: Option<HookKind>,
    pub policy_drop: bool,
}

/// What the kernel holds that tells which firewall writes Docker's rules
/// and what the host's INPUT path does.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetfilterInventory {
    /// Every nf_tables chain of every table but the guard's own.
    pub chains: Vec<NftChain>,
    /// Legacy x_tables tables in use (`/proc/net/ip_tables_names`), which
    /// nft cannot look into.
    pub legacy_ipv4_tables: Vec<String>,
    /// `/proc/net/ip6_tables_names`.
    pub legacy_ipv6_tables: Vec<String>,
}

/// Where the kernel shows Docker's firewall rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KernelFirewall {
    /// Docker 29's nftables backend: tables `ip docker-bridges` /
    /// `ip6 docker-bridges`.
    Nftables,
    /// iptables-nft: chains `DOCKER`, `DOCKER-FORWARD` or `DOCKER-USER`
    /// in nf_tables' `ip filter` / `ip nat` tables.
    IptablesNft,
    /// Legacy x_tables are in use (`/proc/net/ip_tables_names` is not
    /// empty) and nft sees no Docker chains: Docker (or something) writes
    /// iptables-legacy, which nft cannot show.
    IptablesLegacy,
}

impl KernelFirewall {
    pub fn describe(self) -> &'static str {
        match self {
            KernelFirewall::Nftables => "nftables (tables ip/ip6 docker-bridges)",
            KernelFirewall::IptablesNft => {
                "iptables-nft (chains DOCKER/DOCKER-FORWARD in ip filter/nat)"
            }
            KernelFirewall::IptablesLegacy => {
                "iptables-legacy (x_tables in use; nft cannot see Docker's chains)"
            }
        }
    }
}

/// Whether what Docker says matches what the kernel holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Agreement {
    Agrees,
    /// Docker says one backend, the kernel holds another's rules (Docker
    /// 28.5 with `DOCKER_FIREWALL_BACKEND=nftables` writes iptables).
    Mismatch,
    /// No Docker rules visible anywhere (no published port yet,
    /// `--iptables=false`), or Docker not connected.
    Unknown,
}

/// A base chain on the INPUT hook that drops what its rules do not accept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputDrop {
    /// `ip6 filter INPUT (policy drop)`, `inet firewalld filter_INPUT`.
    pub chains: Vec<String>,
    /// ufw's chains (`ufw6-*`) are present.
    pub ufw: bool,
}

/// A remark on Docker's firewall beside the kernel's (`firewall.notes`),
/// on the wire as its sentence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FirewallNote {
    /// Docker answered, but no Docker rules are visible.
    NoDockerRules,
    /// Docker 28.x with `DOCKER_FIREWALL_BACKEND=nftables`.
    SaysNftablesHoldsIptables,
    SaysIptablesHoldsNftables,
    /// Docker's chains are in x_tables, where nft cannot look.
    IptablesLegacy,
}

impl FirewallNote {
    const ALL: [FirewallNote; 4] = [
        FirewallNote::NoDockerRules,
        FirewallNote::SaysNftablesHoldsIptables,
        FirewallNote::SaysIptablesHoldsNftables,
        FirewallNote::IptablesLegacy,
    ];

    /// The sentence the administrator reads (and the JSON carries).
    pub fn sentence(self) -> &'static str {
        match self {
            FirewallNote::NoDockerRules => {
                "The kernel shows no Docker firewall rules (nothing published yet, or Docker runs with --iptables=false)"
            }
            FirewallNote::SaysNftablesHoldsIptables => {
                "Docker says nftables but the kernel holds its iptables rules (Docker 28.x with DOCKER_FIREWALL_BACKEND=nftables): the iptables backend is in force"
            }
            FirewallNote::SaysIptablesHoldsNftables => {
                "Docker says iptables but the kernel holds nftables rules (ip docker-bridges)"
            }
            FirewallNote::IptablesLegacy => {
                "The host uses iptables-legacy: nft cannot see Docker's chains there; the guard's table still runs before them (both hook the same points), and the IPv6 FORWARD policy is restored with ip6tables-legacy"
            }
        }
    }
}

impl std::fmt::Display for FirewallNote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.sentence())
    }
}

impl std::str::FromStr for FirewallNote {
    type Err = UnknownValue;

    fn from_str(text: &str) -> Result<Self, UnknownValue> {
        FirewallNote::ALL
            .into_iter()
            .find(|note| note.sentence() == text)
            .ok_or_else(|| UnknownValue {
                field: "firewall note",
                found: text.into(),
                expected: "one of the sentences this version of portguard writes",
            })
    }
}

serde_via_str!(FirewallNote);

/// `status --json` -> `firewall`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FirewallStatus {
    /// `None` until Docker has answered.
    pub docker_says: Option<DockerFirewall>,
    pub kernel_holds: Vec<KernelFirewall>,
    pub agreement: Agreement,
    /// Plain words for the administrator.
    pub notes: Vec<FirewallNote>,
    /// The host's IPv6 INPUT path drops by default (a heuristic: policies
    /// and well-known chain names, not rule by rule).
    pub ipv6_input_drop: Option<InputDrop>,
}

/// Decides what Docker's word and the kernel's state amount to.
pub fn assess(docker: Option<DockerFirewall>, inventory: &NetfilterInventory) -> FirewallStatus {
    let has_chain = |family: NfFamily, table: &str, names: &[&str]| {
        inventory
            .chains
            .iter()
            .any(|c| c.family == family && c.table == table && names.contains(&c.name.as_str()))
    };
    let nftables = inventory
        .chains
        .iter()
        .any(|c| matches!(c.family, NfFamily::Ip | NfFamily::Ip6) && c.table == "docker-bridges");
    let docker_chains = [
        "DOCKER",
        "DOCKER-FORWARD",
        "DOCKER-USER",
        "DOCKER-ISOLATION-STAGE-1",
    ];
    let iptables_nft = [NfFamily::Ip, NfFamily::Ip6]
        .into_iter()
        .any(|f| has_chain(f, "filter", &docker_chains) || has_chain(f, "nat", &["DOCKER"]));
    let legacy = !inventory.legacy_ipv4_tables.is_empty() && !iptables_nft && !nftables;
    let mut kernel_holds = Vec::new();
    if nftables {
        kernel_holds.push(KernelFirewall::Nftables);
    }
    if iptables_nft {
        kernel_holds.push(KernelFirewall::IptablesNft);
    }
    if legacy {
        kernel_holds.push(KernelFirewall::IptablesLegacy);
    }
    let mut notes = Vec::new();
    let agreement = match docker.map(|d| d.driver) {
        None => Agreement::Unknown,
        _ if kernel_holds.is_empty() => {
            notes.push(FirewallNote::NoDockerRules);
            Agreement::Unknown
        }
        Some(FirewallDriver::Nftables) if !nftables => {
            notes.push(FirewallNote::SaysNftablesHoldsIptables);
            Agreement::Mismatch
        }
        Some(FirewallDriver::Iptables) if !iptables_nft && !legacy => {
            notes.push(FirewallNote::SaysIptablesHoldsNftables);
            Agreement::Mismatch
        }
        Some(FirewallDriver::Unknown) => Agreement::Unknown,
        Some(_) => Agreement::Agrees,
    };
    if legacy {
        notes.push(FirewallNote::IptablesLegacy);
    }
    FirewallStatus {
        docker_says: docker,
        kernel_holds,
        agreement,
        notes,
        ipv6_input_drop: ipv6_input_drop(inventory),
    }
}

/// A heuristic: base chains on the input hook that IPv6 traverses, in
/// tables other than the guard's, with a policy of drop, or firewalld's
/// input chain (policy accept, but it rejects what its zone does not
/// allow). Rules inside them (e.g. `ufw allow 8080/tcp`) are not read, so
/// an accepted port still shows here.
pub fn ipv6_input_drop(inventory: &NetfilterInventory) -> Option<InputDrop> {
    let chains: Vec<String> = inventory
        .chains
        .iter()
        .filter(|c| c.family.sees_ipv6() && c.hook == Some(HookKind::Input))
        // The guard's own input chain drops only unlisted published ports.
        .filter(|c| !GUARD_TABLES.contains(&c.table.as_str()))
        .filter(|c| c.policy_drop || (c.family == NfFamily::Inet && c.table == "firewalld"))
        .map(|c| {
            format!(
                "{} {} {}{}",
                c.family.name(),
                c.table,
                c.name,
                if c.policy_drop { " (policy drop)" } else { "" }
            )
        })
        .collect();
    let ufw = inventory
        .chains
        .iter()
        .any(|c| c.family == NfFamily::Ip6 && c.name.starts_with("ufw6-"));
    (!chains.is_empty()).then_some(InputDrop { chains, ufw })
}

/// The warning `ports` and `explain` give for an allowed port bound to an
/// IPv6 address (or to every address) when the host's IPv6 INPUT path
/// drops by default.
pub fn ipv6_input_warning(drop: &InputDrop, port: u16, proto: L4Proto) -> String {
    let fix = if drop.ufw {
        format!("ufw allow {port}/{proto}")
    } else {
        format!("accept {port}/{proto} in the host's INPUT firewall")
    };
    format!(
        "the host firewall's INPUT ({}) drops IPv6 to this port where Docker serves it through docker-proxy (a container without an IPv6 address): {fix}, or enable IPv6 NAT in Docker (an --ipv6 network); a heuristic: rules that already accept the port are not read",
        drop.chains.join(", ")
    )
}

#[cfg(test)]
impl NftChain {
    /// A chain without a hook, for tests.
    pub(crate) fn regular(family: NfFamily, table: &str, name: &str) -> NftChain {
        NftChain {
            family,
            table: table.into(),
            name: name.into(),
            hook: None,
            policy_drop: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(family: NfFamily, table: &str, name: &str) -> NftChain {
        NftChain::regular(family, table, name)
    }

    fn base(family: NfFamily, table: &str, name: &str, hook: HookKind, drop: bool) -> NftChain {
        NftChain {
            hook: Some(hook),
            policy_drop: drop,
            ..chain(family, table, name)
        }
    }

    fn iptables_nft() -> Vec<NftChain> {
        vec![
            base(NfFamily::Ip, "filter", "FORWARD", HookKind::Forward, false),
            chain(NfFamily::Ip, "filter", "DOCKER"),
            chain(NfFamily::Ip, "filter", "DOCKER-FORWARD"),
            chain(NfFamily::Ip, "nat", "DOCKER"),
        ]
    }

    fn docker29() -> Vec<NftChain> {
        vec![
            base(
                NfFamily::Ip,
                "docker-bridges",
                "filter-FORWARD",
                HookKind::Forward,
                false,
            ),
            base(
                NfFamily::Ip6,
                "docker-bridges",
                "filter-FORWARD",
                HookKind::Forward,
                false,
            ),
        ]
    }

    #[test]
    fn docker_driver_strings() {
        let table = [
            (None, FirewallDriver::Iptables, false, DriverSource::Assumed),
            (
                Some("iptables"),
                FirewallDriver::Iptables,
                false,
                DriverSource::Reported,
            ),
            (
                Some("nftables"),
                FirewallDriver::Nftables,
                false,
                DriverSource::Reported,
            ),
            (
                Some("iptables+firewalld"),
                FirewallDriver::Iptables,
                true,
                DriverSource::Reported,
            ),
            (
                Some("nftables+firewalld"),
                FirewallDriver::Nftables,
                true,
                DriverSource::Reported,
            ),
            (
                Some("ebpf"),
                FirewallDriver::Unknown,
                false,
                DriverSource::Reported,
            ),
        ];
        for (text, driver, firewalld, source) in table {
            assert_eq!(
                DockerFirewall::from_driver(text),
                DockerFirewall {
                    driver,
                    firewalld,
                    source
                },
                "{text:?}"
            );
        }
    }

    #[test]
    fn docker_28_saying_nftables_while_writing_iptables_is_a_mismatch() {
        let inventory = NetfilterInventory {
            chains: iptables_nft(),
            ..Default::default()
        };
        let status = assess(
            Some(DockerFirewall::from_driver(Some("nftables"))),
            &inventory,
        );
        assert_eq!(status.kernel_holds, [KernelFirewall::IptablesNft]);
        assert_eq!(status.agreement, Agreement::Mismatch);
        assert_eq!(status.notes, [FirewallNote::SaysNftablesHoldsIptables]);
    }

    #[test]
    fn backends_that_agree() {
        let cases = [
            (
                Some("nftables"),
                docker29(),
                vec![],
                KernelFirewall::Nftables,
            ),
            (
                Some("iptables"),
                iptables_nft(),
                vec![],
                KernelFirewall::IptablesNft,
            ),
            (None, iptables_nft(), vec![], KernelFirewall::IptablesNft),
            (
                None,
                vec![],
                vec!["filter".to_string(), "nat".into()],
                KernelFirewall::IptablesLegacy,
            ),
        ];
        for (driver, chains, legacy, holds) in cases {
            let inventory = NetfilterInventory {
                chains,
                legacy_ipv4_tables: legacy,
                ..Default::default()
            };
            let status = assess(Some(DockerFirewall::from_driver(driver)), &inventory);
            assert_eq!(status.kernel_holds, [holds], "{driver:?}");
            assert_eq!(status.agreement, Agreement::Agrees, "{driver:?}");
        }
    }

    #[test]
    fn legacy_tables_beside_visible_docker_chains_are_not_called_legacy() {
        let inventory = NetfilterInventory {
            chains: iptables_nft(),
            legacy_ipv4_tables: vec!["filter".into()],
            ..Default::default()
        };
        let status = assess(None, &inventory);
        assert_eq!(status.kernel_holds, [KernelFirewall::IptablesNft]);
        assert_eq!(status.agreement, Agreement::Unknown);
    }

    #[test]
    fn nothing_visible_is_unknown_not_agreement() {
        let status = assess(
            Some(DockerFirewall::from_driver(Some("nftables"))),
            &NetfilterInventory::default(),
        );
        assert!(status.kernel_holds.is_empty());
        assert_eq!(status.agreement, Agreement::Unknown);
    }

    #[test]
    fn ufw_default_deny_is_an_ipv6_input_drop_and_the_guard_is_not() {
        let mut chains = iptables_nft();
        chains.push(base(
            NfFamily::Inet,
            crate::ruleset::TABLE_NAME,
            "input",
            HookKind::Input,
            false,
        ));
        chains.push(base(NfFamily::Ip, "filter", "INPUT", HookKind::Input, true));
        let inventory = NetfilterInventory {
            chains: chains.clone(),
            ..Default::default()
        };
        assert_eq!(ipv6_input_drop(&inventory), None, "IPv4 INPUT drop only");
        chains.push(base(
            NfFamily::Ip6,
            "filter",
            "INPUT",
            HookKind::Input,
            true,
        ));
        chains.push(chain(NfFamily::Ip6, "filter", "ufw6-user-input"));
        let drop = ipv6_input_drop(&NetfilterInventory {
            chains,
            ..Default::default()
        })
        .unwrap();
        assert_eq!(drop.chains, ["ip6 filter INPUT (policy drop)"]);
        assert!(drop.ufw);
        let warning = ipv6_input_warning(&drop, 8080, L4Proto::Tcp);
        assert!(warning.contains("ufw allow 8080/tcp"), "{warning}");
        assert!(warning.contains("IPv6 NAT"), "{warning}");
    }

    #[test]
    fn firewalld_input_counts_and_an_accept_policy_does_not() {
        let chains = vec![
            base(NfFamily::Ip6, "filter", "INPUT", HookKind::Input, false),
            base(
                NfFamily::Inet,
                "firewalld",
                "filter_INPUT",
                HookKind::Input,
                false,
            ),
        ];
        let drop = ipv6_input_drop(&NetfilterInventory {
            chains,
            ..Default::default()
        })
        .unwrap();
        assert_eq!(drop.chains, ["inet firewalld filter_INPUT"]);
        assert!(!drop.ufw);
        assert!(ipv6_input_warning(&drop, 53, L4Proto::Udp).contains("accept 53/udp"));
    }

    #[test]
    fn firewall_notes_are_their_sentences_on_the_wire() {
        use crate::wire::{assert_wire, wire_error};
        for note in FirewallNote::ALL {
            assert_wire(&note, note.sentence());
        }
        assert_wire(
            &FirewallNote::SaysIptablesHoldsNftables,
            "Docker says iptables but the kernel holds nftables rules (ip docker-bridges)",
        );
        let error = wire_error::<FirewallNote>("Docker says ebpf");
        assert!(
            error.starts_with("unknown firewall note `Docker says ebpf`"),
            "{error}"
        );
    }

    #[test]
    fn status_json_is_typed() {
        let status = assess(
            Some(DockerFirewall::from_driver(Some("nftables+firewalld"))),
            &NetfilterInventory {
                chains: docker29(),
                ..Default::default()
            },
        );
        let json = serde_json::to_value(&status).unwrap();
        assert_eq!(json["docker_says"]["driver"], "nftables");
        assert_eq!(json["docker_says"]["firewalld"], true);
        assert_eq!(json["docker_says"]["source"], "reported");
        assert_eq!(json["kernel_holds"][0], "nftables");
        assert_eq!(json["agreement"], "agrees");
    }
}
