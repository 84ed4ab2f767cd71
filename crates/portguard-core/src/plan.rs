//! The planner: configuration + snapshot -> desired ruleset. Pure.
//!
//! Packet path (see docs/how-it-works.md):
//!
//! * `forward` (hook forward, priority filter - 1): established/related,
//!   loopback, Docker bridges and trusted interfaces pass; with
//!   `external_interfaces` everything else but those passes. What remains
//!   came from an untrusted interface. In scope `containers` it is judged
//!   by `published_forward` when Docker's DNAT translated it (a published
//!   host port, whatever interface it leaves by) or when it heads into a
//!   judged bridge; in scope `all` always. Trusted bridges
//!   (`docker_bridges`, traffic from them passes) and judged ones
//!   (`judged_bridges`, traffic into them is judged) are separate sets:
//!   the second also holds bridges kept from before a start
//!   ([`Snapshot::kept`]), which are never trusted on that word.
//! * `input` (hook input, priority filter - 1): the same gate, then new
//!   connections to a published host port (the userland-proxy path, which
//!   never crosses FORWARD) are judged by `published_input`.
//! * `input` also sends new TCP connections to Docker's API ports (2375,
//!   2376, and any other port dockerd itself is seen listening on with
//!   `-H tcp://...`) to `docker_api_input`,
//!   which admits only allow entries that name a source (`from`): an
//!   unsourced `port = 2375` would hand root on this host to the whole
//!   network, so it does not open the Docker API.
//! * `published_*`: allow entries match the original (pre-DNAT)
//!   destination port in per-protocol sets: single ports in a hash set
//!   (`allow_tcp`), real ranges in an interval set (`allow_tcp_ranges`),
//!   and the source address via concatenated sets; anything else that is
//!   new is counted per port (`blocked_tcp`), logged (rate-limited),
//!   reported to the daemon over nflog (rate-limited, see [`NFLOG_GROUP`])
//!   and dropped, or only counted in audit mode.

use std::collections::BTreeSet;

use portguard_config::{AllowTarget, Config, Mode, PortRange, Scope};

use crate::intervals::{AddrPorts, disjoint_addr_ports, split_singles_and_ranges};
use crate::ruleset::{
    BaseChain, Chain, CtStates, Element, Hook, IfMatch, PRIORITY_FILTER, Policy, Rule, Ruleset,
    Set, SetKey, Stmt,
};
use crate::snapshot::{DOCKER_API_PORTS, L4Proto, Snapshot};

/// Names of the sets and chains, shared with the kernel backend and tests.
pub mod names {
    /// Docker's bridges, verified: traffic from them is trusted.
    pub const DOCKER_BRIDGES: &str = "docker_bridges";
    /// Bridges new connections are judged on the way into: the trusted
    /// ones, and those kept from before a start.
    pub const JUDGED_BRIDGES: &str = "judged_bridges";
    pub const TRUSTED_IFACES: &str = "trusted_ifaces";
    pub const EXTERNAL_IFACES: &str = "external_ifaces";
    pub const FORWARD: &str = "forward";
    pub const INPUT: &str = "input";
    pub const PUBLISHED_FORWARD: &str = "published_forward";
    pub const PUBLISHED_INPUT: &str = "published_input";
    pub const DOCKER_API_INPUT: &str = "docker_api_input";
    /// TCP ports dockerd listens on (the Docker API).
    pub const DOCKER_API_TCP: &str = "docker_api_tcp";

    /// Single ports (hash set).
    pub fn allow(proto: crate::L4Proto) -> String {
        format!("allow_{proto}")
    }

    /// Port ranges (interval set).
    pub fn allow_ranges(proto: crate::L4Proto) -> String {
        format!("allow_{proto}_ranges")
    }

    pub fn allow_from_v4(proto: crate::L4Proto) -> String {
        format!("allow_{proto}_v4")
    }

    pub fn allow_from_v6(proto: crate::L4Proto) -> String {
        format!("allow_{proto}_v6")
    }

    /// Source networks or address ranges, or port ranges (interval set).
    pub fn allow_from_v4_ranges(proto: crate::L4Proto) -> String {
        format!("allow_{proto}_v4_ranges")
    }

    pub fn allow_from_v6_ranges(proto: crate::L4Proto) -> String {
        format!("allow_{proto}_v6_ranges")
    }

    pub fn published(proto: crate::L4Proto) -> String {
        format!("published_{proto}")
    }

    /// Blocked new connections per original destination port (metrics).
    pub fn blocked(proto: crate::L4Proto) -> String {
        format!("blocked_{proto}")
    }
}

/// Docker's default bridge, always judged even before Docker is seen.
pub const DEFAULT_BRIDGE: &str = "docker0";
/// Prefix of bridges Docker creates for user-defined networks. Only used
/// to decide what is *judged* (more is safer), never what is trusted.
pub const USER_BRIDGE_PREFIX: &str = "br-";
/// Kernel log prefix of blocked attempts.
pub const LOG_PREFIX_BLOCKED: &str = "portguard blocked: ";
/// Kernel log prefix in audit mode (would have been blocked).
pub const LOG_PREFIX_AUDIT: &str = "portguard audit: ";
/// Conntrack mark bit set on every connection an allow entry admitted from
/// an untrusted interface, so that a reload which removes the entry can
/// find and end exactly those connections (P10). Other bits of the mark
/// are left as they are.
pub const CT_MARK_ADMITTED: u32 = 0x0100_0000;
/// Log lines per minute at most (a burst of 5 first).
pub const LOG_RATE_PER_MINUTE: u32 = 10;
/// Ports per protocol the kernel counts blocked attempts for (the size of
/// the `blocked_*` sets). The judge chains see published ports (and, in
/// scope `all`, whatever is forwarded), so this is far more than a host
/// publishes, and it bounds what a port scan can add to the metrics.
pub const BLOCKED_PORTS_COUNTED: u32 = 4096;
/// The nflog group blocked attempts are sent to; portguardd binds it (one
/// listener per group and network namespace) for `guardctl blocked`.
/// Chosen away from the small numbers ulogd and hand-written rules use.
pub const NFLOG_GROUP: u16 = 7427;
/// Blocked attempts reported to the daemon per second, protocol and judge
/// chain at most, after a burst of [`NFLOG_BURST`]: enough to see every attempt of
/// ordinary scanning, while a flood costs the daemon a few hundred small
/// messages a second however fast it comes (the kernel's counter still
/// counts every packet).
pub const NFLOG_RATE_PER_SECOND: u32 = 250;
pub const NFLOG_BURST: u32 = 500;
/// Bytes of each reported packet: the IPv4 header with options (60) or the
/// IPv6 header (40), plus the ports. Nothing of the payload.
pub const NFLOG_SNAPLEN: u32 = 80;

/// Builds the ruleset the kernel should hold.
pub fn plan(config: &Config, snapshot: &Snapshot) -> Ruleset {
    let mut sets = interface_sets(config, snapshot);
    for proto in L4Proto::ALL {
        sets.extend(allow_sets(config, snapshot, proto));
    }
    for proto in L4Proto::ALL {
        sets.push(published_set(snapshot, proto));
    }
    for proto in L4Proto::ALL {
        sets.push(Set {
            name: names::blocked(proto),
            key: SetKey::PortCounters {
                size: BLOCKED_PORTS_COUNTED,
            },
            elements: Vec::new(),
        });
    }
    sets.push(docker_api_set(snapshot));
    let chains = vec![
        forward_chain(config),
        input_chain(config),
        judge_chain(
            names::PUBLISHED_FORWARD,
            config,
            config.guard.scope == Scope::Containers,
        ),
        judge_chain(names::PUBLISHED_INPUT, config, false),
        docker_api_chain(config),
    ];
    Ruleset { sets, chains }
}

fn ifname_set(name: &str, names: impl IntoIterator<Item = String>) -> Set {
    let unique: BTreeSet<String> = names.into_iter().collect();
    Set {
        name: name.to_string(),
        key: SetKey::Ifname,
        elements: unique.into_iter().map(Element::Ifname).collect(),
    }
}

fn interface_sets(config: &Config, snapshot: &Snapshot) -> Vec<Set> {
    // `docker0` is trusted before Docker is seen (it is Docker's default
    // bridge), unless the observer refused it: a host's uplink may carry
    // that name too.
    let docker0_refused = snapshot.untrusted_claims.iter().any(|claim| {
        matches!(claim, crate::UntrustedClaim::Bridge { ifname, .. } if ifname == DEFAULT_BRIDGE)
    });
    let trusted = || {
        snapshot
            .bridges
            .iter()
            .cloned()
            .chain((!docker0_refused).then(|| DEFAULT_BRIDGE.to_string()))
    };
    let trusted_exact = config
        .guard
        .trusted_interfaces
        .iter()
        .filter(|n| n.wildcard_prefix().is_none())
        .map(|n| n.as_str().to_string());
    let mut sets = vec![
        ifname_set(names::DOCKER_BRIDGES, trusted()),
        ifname_set(
            names::JUDGED_BRIDGES,
            trusted()
                .chain([DEFAULT_BRIDGE.to_string()])
                .chain(snapshot.kept.bridges.iter().cloned()),
        ),
        ifname_set(names::TRUSTED_IFACES, trusted_exact),
    ];
    if let Some(external) = &config.guard.external_interfaces {
        sets.push(ifname_set(
            names::EXTERNAL_IFACES,
            external.iter().map(|n| n.as_str().to_string()),
        ));
    }
    sets
}

/// The host ports an entry opens for `proto`: its range, or the host
/// ports its container publishes now.
fn entry_ports(target: &AllowTarget, proto: L4Proto, snapshot: &Snapshot) -> Vec<PortRange> {
    match target {
        AllowTarget::Ports(range) => vec![*range],
        AllowTarget::Container(name) => snapshot
            .published
            .iter()
            .filter(|p| p.proto == proto && !p.host_network && p.container.is_named(name))
            .filter_map(|p| PortRange::single(p.host_port))
            .collect(),
    }
}

/// The allow sets of `proto`, in this order: single ports (hash), port
/// ranges (interval), then the source-restricted concatenations, IPv4 and
/// IPv6, each as one address . one port (hash) and the rest (interval,
/// pipapo: its commit copies the whole set, 125 ms for one element of
/// 10,000). The range sets exist even when empty, so that the table's
/// structure does not depend on the configuration's shape and a first
/// range arriving is an element change, applied in place like any other.
fn allow_sets(config: &Config, snapshot: &Snapshot, proto: L4Proto) -> [Set; 6] {
    let mut any_source = Vec::new();
    let mut from_v4 = Vec::new();
    let mut from_v6 = Vec::new();
    for entry in config.allow.iter().filter(|e| proto.covered_by(e.proto)) {
        let ports = entry_ports(&entry.target, proto, snapshot);
        if entry.from.is_empty() {
            any_source.extend(ports);
            continue;
        }
        for cidr in &entry.from {
            let rects = if cidr.is_ipv4() {
                &mut from_v4
            } else {
                &mut from_v6
            };
            rects.extend(ports.iter().map(|&ports| AddrPorts {
                addrs: cidr.bounds(),
                ports,
            }));
        }
    }
    let (singles, ranges) = split_singles_and_ranges(any_source);
    [
        Set {
            name: names::allow(proto),
            key: SetKey::Port,
            elements: singles.into_iter().map(Element::Port).collect(),
        },
        Set {
            name: names::allow_ranges(proto),
            key: SetKey::PortInterval,
            elements: ranges.into_iter().map(Element::Port).collect(),
        },
    ]
    .into_iter()
    .chain(sourced_sets(
        &from_v4,
        [
            names::allow_from_v4(proto),
            names::allow_from_v4_ranges(proto),
        ],
        [SetKey::Ipv4Port, SetKey::Ipv4PortInterval],
        |r| Element::Ipv4Port {
            // IPv4 bounds come from 32-bit addresses.
            addrs: (r.addrs.0 as u32, r.addrs.1.min(u128::from(u32::MAX)) as u32),
            ports: r.ports,
        },
    ))
    .chain(sourced_sets(
        &from_v6,
        [
            names::allow_from_v6(proto),
            names::allow_from_v6_ranges(proto),
        ],
        [SetKey::Ipv6Port, SetKey::Ipv6PortInterval],
        |r| Element::Ipv6Port {
            addrs: r.addrs,
            ports: r.ports,
        },
    ))
    .collect::<Vec<_>>()
    .try_into()
    .unwrap_or_else(|_| unreachable!("two port sets and two pairs of sourced sets"))
}

/// The hash set (one address . one port) and the interval set (the rest)
/// of one address family: the disjoint cover of `rects`, split.
fn sourced_sets(
    rects: &[AddrPorts],
    [hash_name, interval_name]: [String; 2],
    [hash_key, interval_key]: [SetKey; 2],
    element: impl Fn(AddrPorts) -> Element,
) -> [Set; 2] {
    let (points, rest): (Vec<AddrPorts>, Vec<AddrPorts>) = disjoint_addr_ports(rects)
        .into_iter()
        .partition(|r| r.addrs.0 == r.addrs.1 && r.ports.start() == r.ports.end());
    [
        Set {
            name: hash_name,
            key: hash_key,
            elements: points.into_iter().map(&element).collect(),
        },
        Set {
            name: interval_name,
            key: interval_key,
            elements: rest.into_iter().map(&element).collect(),
        },
    ]
}

/// Docker publishes a range as one binding per port, so the published
/// ports are single ports: a hash set. Ports kept from before a start
/// are judged too.
fn published_set(snapshot: &Snapshot, proto: L4Proto) -> Set {
    port_hash_set(
        names::published(proto),
        snapshot
            .published
            .iter()
            .filter(|p| p.proto == proto && p.is_exposed())
            .map(|p| p.host_port)
            .chain(snapshot.kept.ports(proto).iter().copied()),
    )
}

/// Docker's registered API ports, and any other port dockerd is seen
/// listening on beyond loopback.
fn docker_api_set(snapshot: &Snapshot) -> Set {
    port_hash_set(
        names::DOCKER_API_TCP.to_string(),
        snapshot
            .docker_api()
            .filter(|l| !l.is_local_only())
            .map(|l| l.port)
            .chain(snapshot.kept.docker_api.iter().copied())
            .chain(DOCKER_API_PORTS),
    )
}

/// A hash set of single ports: one element per port, sorted and unique,
/// never merged into a range (2375 and 2376 stay two elements).
fn port_hash_set(name: String, ports: impl IntoIterator<Item = u16>) -> Set {
    let ports: BTreeSet<u16> = ports.into_iter().collect();
    Set {
        name,
        key: SetKey::Port,
        elements: ports
            .into_iter()
            .filter_map(PortRange::single)
            .map(Element::Port)
            .collect(),
    }
}

/// Rules that accept everything not from an untrusted interface.
fn trust_gate(config: &Config) -> Vec<Rule> {
    let mut rules = vec![
        Rule::new([Stmt::CtState(CtStates::ESTABLISHED_RELATED), Stmt::Accept]),
        Rule::new([Stmt::Iifname(IfMatch::Exact("lo".into())), Stmt::Accept]),
        Rule::new([
            Stmt::Iifname(IfMatch::InSet(names::DOCKER_BRIDGES.into())),
            Stmt::Accept,
        ]),
        Rule::new([
            Stmt::Iifname(IfMatch::InSet(names::TRUSTED_IFACES.into())),
            Stmt::Accept,
        ]),
    ];
    for prefix in config
        .guard
        .trusted_interfaces
        .iter()
        .filter_map(|n| n.wildcard_prefix())
    {
        rules.push(Rule::new([
            Stmt::Iifname(IfMatch::Prefix(prefix.into())),
            Stmt::Accept,
        ]));
    }
    if config.guard.external_interfaces.is_some() {
        rules.push(Rule::new([
            Stmt::Iifname(IfMatch::NotInSet(names::EXTERNAL_IFACES.into())),
            Stmt::Accept,
        ]));
    }
    rules
}

/// Base chains run at `filter - 1`, before every chain Docker writes.
///
/// The forward chain fails closed: policy `drop` and an explicit final
/// `accept`. The kernel hooks a new base chain while it processes the
/// batch, but the chain's rules become visible only at commit; a commit
/// that has to wait (for the cleanup of the transaction that deleted the
/// table, say) leaves packets meeting an empty chain, and with policy
/// `accept` they passed unjudged. With `drop` they wait for a
/// retransmission instead. The input chain keeps policy `accept`: with
/// `drop`, anyone flushing its rules while the daemon is down would lock
/// the administrator out of SSH; see docs/how-it-works.md for the
/// trade-off.
fn base(hook: Hook) -> Option<BaseChain> {
    Some(BaseChain {
        hook,
        priority: PRIORITY_FILTER - 1,
        policy: match hook {
            Hook::Forward => Policy::Drop,
            Hook::Input => Policy::Accept,
        },
    })
}

fn forward_chain(config: &Config) -> Chain {
    let mut rules = trust_gate(config);
    let judge = || Stmt::Jump(names::PUBLISHED_FORWARD.into());
    match config.guard.scope {
        Scope::Containers => {
            // What Docker's DNAT translated is judged whatever interface
            // it leaves by: a bridge Docker named (`bridge.name`) that the
            // guard does not know yet, or one it refused to trust. Only
            // published ports: other DNAT on the host (a router's port
            // forwards) is not ours to judge in this scope (P4).
            for proto in L4Proto::ALL {
                rules.push(Rule::new([
                    Stmt::L4Proto(proto),
                    Stmt::CtStatusDnat,
                    Stmt::CtOriginalDportInSet(names::published(proto)),
                    judge(),
                ]));
            }
            rules.push(Rule::new([
                Stmt::Oifname(IfMatch::InSet(names::JUDGED_BRIDGES.into())),
                judge(),
            ]));
            rules.push(Rule::new([
                Stmt::Oifname(IfMatch::Prefix(USER_BRIDGE_PREFIX.into())),
                judge(),
            ]));
        }
        Scope::All => rules.push(Rule::new([judge()])),
    }
    // What the judge let through, and what is not ours to judge, goes on
    // to the chains after ours (the policy is drop, see `base`).
    rules.push(Rule::new([Stmt::Accept]));
    Chain {
        name: names::FORWARD.into(),
        base: base(Hook::Forward),
        rules,
    }
}

fn input_chain(config: &Config) -> Chain {
    let mut rules = trust_gate(config);
    rules.push(Rule::new([
        Stmt::FibDaddrLocal,
        Stmt::L4Proto(L4Proto::Tcp),
        Stmt::DportInSet(names::DOCKER_API_TCP.into()),
        Stmt::Jump(names::DOCKER_API_INPUT.into()),
    ]));
    for proto in L4Proto::ALL {
        rules.push(Rule::new([
            Stmt::FibDaddrLocal,
            Stmt::L4Proto(proto),
            Stmt::DportInSet(names::published(proto)),
            Stmt::Jump(names::PUBLISHED_INPUT.into()),
        ]));
    }
    Chain {
        name: names::INPUT.into(),
        base: base(Hook::Input),
        rules,
    }
}

/// Allow rules, then log and drop (or count) what is new. `require_dnat`
/// makes allow entries match published (DNATed) connections only, so a
/// packet routed straight to a container address cannot borrow an
/// allowlisted port number.
fn judge_chain(name: &str, config: &Config, require_dnat: bool) -> Chain {
    let mut rules = Vec::new();
    let dnat = || require_dnat.then_some(Stmt::CtStatusDnat);
    // Single ports first: the usual case is decided by one hash lookup.
    for proto in L4Proto::ALL {
        for set in [names::allow(proto), names::allow_ranges(proto)] {
            rules.push(Rule::new(
                [Stmt::L4Proto(proto)].into_iter().chain(dnat()).chain([
                    Stmt::CtOriginalDportInSet(set),
                    Stmt::CtMarkOr(CT_MARK_ADMITTED),
                    Stmt::Accept,
                ]),
            ));
        }
    }
    for proto in L4Proto::ALL {
        let sourced = [
            Stmt::Ipv4SaddrCtOriginalDportInSet(names::allow_from_v4(proto)),
            Stmt::Ipv4SaddrCtOriginalDportInSet(names::allow_from_v4_ranges(proto)),
            Stmt::Ipv6SaddrCtOriginalDportInSet(names::allow_from_v6(proto)),
            Stmt::Ipv6SaddrCtOriginalDportInSet(names::allow_from_v6_ranges(proto)),
        ];
        for lookup in sourced {
            rules.push(Rule::new(
                [Stmt::L4Proto(proto)].into_iter().chain(dnat()).chain([
                    lookup,
                    Stmt::CtMarkOr(CT_MARK_ADMITTED),
                    Stmt::Accept,
                ]),
            ));
        }
    }
    rules.extend(log_and_drop_new(config));
    Chain {
        name: name.into(),
        base: None,
        rules,
    }
}

/// The Docker API on the input path: only allow entries with a source
/// (`from`) open it; see the module documentation.
fn docker_api_chain(config: &Config) -> Chain {
    let tcp = L4Proto::Tcp;
    // Every sourced set: an entry whose `from` is a network (or whose
    // port is a range) lands in the `_ranges` sets, and opens the API to
    // exactly those sources, as `guardctl explain` says.
    let sourced = [
        Stmt::Ipv4SaddrCtOriginalDportInSet(names::allow_from_v4(tcp)),
        Stmt::Ipv4SaddrCtOriginalDportInSet(names::allow_from_v4_ranges(tcp)),
        Stmt::Ipv6SaddrCtOriginalDportInSet(names::allow_from_v6(tcp)),
        Stmt::Ipv6SaddrCtOriginalDportInSet(names::allow_from_v6_ranges(tcp)),
    ];
    let mut rules: Vec<Rule> = sourced
        .into_iter()
        .map(|lookup| {
            Rule::new([
                Stmt::L4Proto(tcp),
                lookup,
                Stmt::CtMarkOr(CT_MARK_ADMITTED),
                Stmt::Accept,
            ])
        })
        .collect();
    rules.extend(log_and_drop_new(config));
    Chain {
        name: names::DOCKER_API_INPUT.into(),
        base: None,
        rules,
    }
}

/// The end of every judging chain: what is new and was not admitted is
/// logged (rate-limited) and dropped, or only counted in audit mode.
fn log_and_drop_new(config: &Config) -> Vec<Rule> {
    let mut rules = Vec::new();
    let audit = config.guard.mode == Mode::Audit;
    if config.guard.log_blocked {
        rules.push(Rule::new([
            Stmt::CtState(CtStates::NEW),
            Stmt::LimitPerMinute(LOG_RATE_PER_MINUTE),
            Stmt::Log {
                prefix: log_prefix(audit).into(),
            },
        ]));
    }
    // Per-port counters in the kernel, for the metrics: they survive the
    // daemon, and the daemon carries them across a replace.
    for proto in L4Proto::ALL {
        rules.push(Rule::new([
            Stmt::L4Proto(proto),
            Stmt::CtState(CtStates::NEW),
            Stmt::CountCtOriginalDport(names::blocked(proto)),
        ]));
    }
    // Whatever `log_blocked` says (it is about the kernel log), blocked
    // attempts also go to the daemon over nflog, for `guardctl blocked`;
    // the prefix tells it whether they were blocked or only audited.
    let report = |stmts: &[Stmt]| {
        let mut rule = vec![Stmt::CtState(CtStates::NEW)];
        rule.extend_from_slice(stmts);
        rule.push(Stmt::LimitPerSecond {
            rate: NFLOG_RATE_PER_SECOND,
            burst: NFLOG_BURST,
        });
        Rule::new(rule)
    };
    let nflog = Stmt::Nflog {
        prefix: log_prefix(audit).into(),
        group: NFLOG_GROUP,
        snaplen: NFLOG_SNAPLEN,
    };
    if audit {
        // The packet goes on: it is reported as it is.
        let mut rule = report(&[]);
        rule.stmts.push(nflog);
        rules.push(rule);
    } else {
        // The packet is dropped by the next rule, so its copy may carry
        // the host port in place of the container's (see
        // `Stmt::DportSetCtOriginal`).
        for proto in L4Proto::ALL {
            let mut rule = report(&[Stmt::L4Proto(proto)]);
            rule.stmts
                .extend([Stmt::DportSetCtOriginal(proto), nflog.clone()]);
            rules.push(rule);
        }
    }
    let mut verdict = vec![Stmt::CtState(CtStates::NEW), Stmt::Counter];
    if !audit {
        verdict.push(Stmt::Drop);
    }
    rules.push(Rule::new(verdict));
    // Judged once: what a judge did not drop goes on to the chains after
    // ours (the base chains end with the same accept, or its policy).
    // Returning instead would let the next rule that jumps here judge
    // the packet again, and in audit mode count it twice.
    rules.push(Rule::new([Stmt::Accept]));
    rules
}

/// Removes the rules that report blocked attempts over nflog. For a
/// kernel that cannot load nfnetlink_log (`CONFIG_NETFILTER_NETLINK_LOG`
/// off, or module loading disabled): it refuses a whole transaction that
/// holds a `log group` rule, and protection must not depend on a report.
/// Every other rule, the counting and the drop included, stays.
pub fn without_nflog(ruleset: &mut Ruleset) {
    for chain in &mut ruleset.chains {
        chain
            .rules
            .retain(|rule| !rule.stmts.iter().any(|s| matches!(s, Stmt::Nflog { .. })));
    }
}

/// The log prefix of a blocked attempt, or in audit mode of one that
/// would have been blocked.
fn log_prefix(audit: bool) -> &'static str {
    if audit {
        LOG_PREFIX_AUDIT
    } else {
        LOG_PREFIX_BLOCKED
    }
}

/// Whether a connection from `source` to host port `port`/`proto` would be
/// admitted by `entry` (ignoring interfaces): used by verdicts and explain.
pub fn entry_admits(
    entry: &portguard_config::AllowEntry,
    snapshot: &Snapshot,
    port: u16,
    proto: L4Proto,
    source: Option<std::net::IpAddr>,
) -> bool {
    proto.covered_by(entry.proto)
        && entry_ports(&entry.target, proto, snapshot)
            .iter()
            .any(|r| r.contains(port))
        && entry.admits_source(source)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::render::render_element;

    fn elements(ruleset: &Ruleset, name: &str) -> (SetKey, Vec<String>) {
        let set = ruleset.set(name).unwrap();
        (set.key, set.elements.iter().map(render_element).collect())
    }

    #[test]
    fn single_ports_go_in_the_hash_set_and_ranges_in_the_range_set() {
        let config = Config::from_toml_str(
            "[[allow]]\nport = 8080\n[[allow]]\nport = 8081\n\
             [[allow]]\nport = \"9000-9010\"\n[[allow]]\nport = 9005\n\
             [[allow]]\nport = \"5000-5001\"\nproto = \"udp\"\n",
        )
        .unwrap();
        let ruleset = plan(&config, &Snapshot::default());
        assert_eq!(
            elements(&ruleset, "allow_tcp"),
            (SetKey::Port, vec!["8080".into(), "8081".into()])
        );
        assert_eq!(
            elements(&ruleset, "allow_tcp_ranges"),
            (SetKey::PortInterval, vec!["9000-9010".into()])
        );
        assert_eq!(elements(&ruleset, "allow_udp"), (SetKey::Port, vec![]));
        assert_eq!(
            elements(&ruleset, "allow_udp_ranges"),
            (SetKey::PortInterval, vec!["5000-5001".into()])
        );
        assert!(!SetKey::Port.is_interval() && SetKey::PortInterval.is_interval());
        assert!(SetKey::Port.is_dynamic() && !SetKey::PortInterval.is_dynamic());
        // Both sets are judged, single ports first, in both judge chains.
        for chain in [names::PUBLISHED_FORWARD, names::PUBLISHED_INPUT] {
            let lookups: Vec<&str> = ruleset
                .chain(chain)
                .unwrap()
                .rules
                .iter()
                .flat_map(|r| &r.stmts)
                .filter_map(|s| match s {
                    Stmt::CtOriginalDportInSet(set) => Some(set.as_str()),
                    _ => None,
                })
                .collect();
            assert_eq!(
                lookups,
                [
                    "allow_tcp",
                    "allow_tcp_ranges",
                    "allow_udp",
                    "allow_udp_ranges"
                ]
            );
        }
    }

    #[test]
    fn one_address_and_one_port_go_in_the_sourced_hash_sets() {
        let config = Config::from_toml_str(
            "[[allow]]\nport = 22\nfrom = [\"192.0.2.7/32\", \"198.51.100.0/24\", \"2001:db8::7/128\"]\n\
             [[allow]]\nport = \"6000-6001\"\nfrom = [\"192.0.2.8/32\"]\n",
        )
        .unwrap();
        let ruleset = plan(&config, &Snapshot::default());
        assert_eq!(
            elements(&ruleset, "allow_tcp_v4"),
            (SetKey::Ipv4Port, vec!["192.0.2.7 . 22".into()])
        );
        assert_eq!(
            elements(&ruleset, "allow_tcp_v4_ranges"),
            (
                SetKey::Ipv4PortInterval,
                vec![
                    "192.0.2.8 . 6000-6001".into(),
                    "198.51.100.0/24 . 22".into()
                ]
            )
        );
        assert_eq!(
            elements(&ruleset, "allow_tcp_v6"),
            (SetKey::Ipv6Port, vec!["2001:db8::7 . 22".into()])
        );
        assert_eq!(
            elements(&ruleset, "allow_tcp_v6_ranges"),
            (SetKey::Ipv6PortInterval, vec![])
        );
        assert!(!SetKey::Ipv4Port.is_interval() && SetKey::Ipv4PortInterval.is_interval());
    }

    /// The uplink may be called docker0 too: refused, it is judged, not
    /// trusted; kept bridges are judged, never trusted.
    #[test]
    fn refused_and_kept_bridges_are_judged_never_trusted() {
        let mut snapshot: Snapshot = serde_json::from_value(serde_json::json!({
            "bridges": ["shopnet"],
            "published": [],
            "untrusted_claims": [{"claim": "bridge", "network": "bridge", "ifname": "docker0",
                                  "faults": [{"fault": "default_route", "family": "ipv4"}]}],
            "kept": {"bridges": ["old0"]}
        }))
        .unwrap();
        let config = Config::default();
        let names = |ruleset: &Ruleset, set: &str| elements(ruleset, set).1;
        let ruleset = plan(&config, &snapshot);
        assert_eq!(names(&ruleset, names::DOCKER_BRIDGES), ["\"shopnet\""]);
        assert_eq!(
            names(&ruleset, names::JUDGED_BRIDGES),
            ["\"docker0\"", "\"old0\"", "\"shopnet\""]
        );
        snapshot.untrusted_claims.clear();
        let ruleset = plan(&config, &snapshot);
        assert_eq!(
            names(&ruleset, names::DOCKER_BRIDGES),
            ["\"docker0\"", "\"shopnet\""]
        );
    }

    #[test]
    fn the_range_sets_exist_without_ranges_so_the_structure_stays() {
        let singles = Config::from_toml_str("[[allow]]\nport = 8080\n").unwrap();
        let ranged =
            Config::from_toml_str("[[allow]]\nport = 8080\n[[allow]]\nport = \"1-2\"\n").unwrap();
        let (a, b) = (
            plan(&singles, &Snapshot::default()),
            plan(&ranged, &Snapshot::default()),
        );
        // Same chains, same set names: a first range is an element change.
        assert_eq!(a.chains, b.chains);
        let names = |r: &Ruleset| r.sets.iter().map(|s| s.name.clone()).collect::<Vec<_>>();
        assert_eq!(names(&a), names(&b));
    }
}
