//! Who set the IPv6 FORWARD policy to drop, and what the guard does about
//! it. Docker sets the `ip6 filter FORWARD` policy to drop when it turns
//! IPv6 forwarding on, which cuts every routed IPv6 connection of the
//! host; the guard sets Docker's drop back to accept (P6). The same policy
//! is how ufw (`DEFAULT_FORWARD_POLICY="DROP"`), firewalld or an
//! administrator close routing: that drop is theirs, and the guard leaves
//! it alone. Who committed a change is named by nf_tables (the NEWGEN
//! notification's pid and process name) and `/proc` (the process's
//! parent); [`classify`] decides from that, without I/O.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Docker's daemon, as `/proc/PID/stat` and nf_tables name it.
pub const DOCKERD: &str = "dockerd";

/// What `/proc/PID/stat` says of a process: its name (`comm`, at most 15
/// bytes) and its parent's pid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessStat {
    pub name: String,
    pub ppid: u32,
}

/// Reads the name and parent pid out of a `/proc/PID/stat` line:
/// `PID (NAME) STATE PPID ...`. The name may hold spaces and parentheses,
/// so it ends at the last `)`.
pub fn parse_stat(text: &str) -> Option<ProcessStat> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let name = text.get(open + 1..close)?;
    let mut rest = text.get(close + 1..)?.split_whitespace();
    let _state = rest.next()?;
    let ppid = rest.next()?.parse().ok()?;
    Some(ProcessStat {
        name: name.to_string(),
        ppid,
    })
}

/// Who set the IPv6 FORWARD policy in force to drop, as far as the guard
/// knows (`set_by` in `guardctl status --json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum DropSetter {
    /// dockerd, or a process dockerd started (`ip6tables`): undone.
    Docker { process: String, pid: u32 },
    /// Anybody else: `ip6tables-restore` started by `ufw`, `ip6tables` in
    /// an administrator's shell. Left alone.
    Process {
        process: String,
        pid: u32,
        /// The parent's name; `None` when it could not be read.
        parent: Option<String>,
    },
    /// The change was heard, but the process had gone (and been reaped)
    /// before `/proc` could say whose it was. Left alone.
    Gone { process: String, pid: u32 },
    /// The policy was already drop when the guard started: who set it is
    /// not known. Left alone.
    BeforeStart,
    /// It became drop without a notification the guard heard (lost in an
    /// overflow of the monitor's socket, or legacy x_tables, which send
    /// none, while Docker was running). Left alone.
    Unheard,
    /// It became drop while Docker was away, and was there when Docker
    /// came back: dockerd sets it while it starts. Said of a drop nobody
    /// could be named for: legacy x_tables (which send no notifications),
    /// or a committer that had exited before `/proc` could tell. Undone,
    /// once, right then.
    DockerStart,
    /// It was drop when the guard started, beside Docker's chains in `ip6
    /// filter` and no other firewall's (ufw's, firewalld's): dockerd sets
    /// it when it starts, and a guard installed on a running Docker host
    /// finds it so. Undone.
    DockerChains,
}

/// Who set a drop found when the guard started, judged by the chains the
/// kernel holds: Docker's when `ip6 filter` has Docker's chains and no
/// other firewall manager's chains are anywhere; not known otherwise.
pub fn found_at_start(chains: &[crate::hostfw::NftChain]) -> DropSetter {
    use crate::hostfw::NfFamily;
    let ip6_filter =
        |c: &&crate::hostfw::NftChain| c.family == NfFamily::Ip6 && c.table == "filter";
    let docker = chains
        .iter()
        .filter(ip6_filter)
        .any(|c| matches!(c.name.as_str(), "DOCKER" | "DOCKER-USER" | "DOCKER-FORWARD"));
    let another = chains.iter().any(|c| {
        c.name.starts_with("ufw6-")
            || c.name.starts_with("ufw-")
            || c.table == "firewalld"
            || c.name.starts_with("FWD_")
    });
    if docker && !another {
        DropSetter::DockerChains
    } else {
        DropSetter::BeforeStart
    }
}

impl DropSetter {
    /// Whether the drop is Docker's, which the guard sets back to accept.
    pub fn is_docker(&self) -> bool {
        matches!(
            self,
            DropSetter::Docker { .. } | DropSetter::DockerStart | DropSetter::DockerChains
        )
    }

    /// Whether ufw set it: ufw's `ufw-init` script sets the policy with
    /// `ip6tables-restore` (`ufw` itself with `ip6tables`).
    pub fn is_ufw(&self) -> bool {
        match self {
            DropSetter::Process {
                process, parent, ..
            } => [Some(process.as_str()), parent.as_deref()]
                .into_iter()
                .flatten()
                .any(|name| name == "ufw" || name == "ufw-init"),
            _ => false,
        }
    }
}

impl fmt::Display for DropSetter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DropSetter::Docker { process, pid } if process == DOCKERD => {
                write!(f, "Docker (dockerd, pid {pid})")
            }
            DropSetter::Docker { process, pid } => {
                write!(f, "Docker ({process}, pid {pid}, started by dockerd)")
            }
            DropSetter::Process {
                process,
                pid,
                parent: Some(parent),
            } => write!(f, "{process} (pid {pid}, started by {parent})"),
            DropSetter::Process {
                process,
                pid,
                parent: None,
            } => write!(f, "{process} (pid {pid})"),
            DropSetter::Gone { process, pid } => write!(
                f,
                "{process} (pid {pid}), which had exited before the guard could see who started it"
            ),
            DropSetter::BeforeStart => {
                f.write_str("somebody before the guard started (who is not known)")
            }
            DropSetter::Unheard => {
                f.write_str("somebody the guard did not hear (who is not known)")
            }
            DropSetter::DockerStart => f.write_str(
                "Docker while it started (it came while Docker was away, with nobody to name)",
            ),
            DropSetter::DockerChains => f.write_str(
                "Docker before the guard started (found beside Docker's chains and no other firewall's)",
            ),
        }
    }
}

/// Who committed a transaction that set the policy to drop. `pid` and
/// `name` are what nf_tables' NEWGEN notification names; `stat` is that
/// pid's `/proc/PID/stat` (`None`: gone), `parent` its parent's (`None`:
/// gone or unreadable). A stat whose name differs from the notification's
/// belongs to a process that took the pid over: the committer is gone.
pub fn classify(
    pid: u32,
    name: &str,
    stat: Option<&ProcessStat>,
    parent: Option<&ProcessStat>,
) -> DropSetter {
    let gone = || DropSetter::Gone {
        process: name.to_string(),
        pid,
    };
    let Some(stat) = stat.filter(|s| s.name == name) else {
        return gone();
    };
    let parent = parent.map(|p| p.name.as_str());
    if stat.name == DOCKERD || parent == Some(DOCKERD) {
        return DropSetter::Docker {
            process: stat.name.clone(),
            pid,
        };
    }
    DropSetter::Process {
        process: stat.name.clone(),
        pid,
        parent: parent.map(str::to_string),
    }
}

/// Which netfilter front end holds the chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Ip6Firewall {
    /// `ip6 filter FORWARD` in nf_tables (iptables-nft).
    Nftables,
    /// The legacy x_tables `filter` table (`ip6tables-legacy`).
    IptablesLegacy,
}

impl fmt::Display for Ip6Firewall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Ip6Firewall::Nftables => "nftables",
            Ip6Firewall::IptablesLegacy => "iptables-legacy",
        })
    }
}

/// An IPv6 FORWARD policy of drop in force, who set it, and what the guard
/// does about it (`ipv6_forward_drops` in `guardctl status --json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ipv6ForwardDrop {
    pub backend: Ip6Firewall,
    pub set_by: DropSetter,
    /// True when the drop is not Docker's: the guard leaves it in place.
    pub left_alone: bool,
    /// When left alone: what routed IPv6 to a published port needs (a
    /// sentence that follows "routed IPv6 to a published port:").
    pub needs: Option<String>,
}

impl Ipv6ForwardDrop {
    /// `undo_docker`: whether the guard sets Docker's drop back to accept
    /// (`[ipv6] restore_forward_policy`).
    pub fn new(backend: Ip6Firewall, set_by: DropSetter, undo_docker: bool) -> Ipv6ForwardDrop {
        let left_alone = !(undo_docker && set_by.is_docker());
        let needs = left_alone.then(|| {
            if set_by.is_docker() {
                "set `[ipv6] restore_forward_policy = true` to have the guard set Docker's drop \
                 back to accept"
                    .to_string()
            } else {
                routed_ipv6_needs(&set_by)
            }
        });
        Ipv6ForwardDrop {
            backend,
            set_by,
            left_alone,
            needs,
        }
    }
}

/// What routed IPv6 to a published port needs while somebody else's drop
/// is in force. Docker's iptables rules (20.10 to 28) accept its published
/// ports in that same chain, ahead of the policy; Docker 29's nftables
/// backend accepts them in a table of its own, after which the drop of
/// this chain still applies. Anything else routed needs an accept rule.
fn routed_ipv6_needs(set_by: &DropSetter) -> String {
    let allow = if set_by.is_ufw() {
        "`ufw route allow proto tcp to CONTAINER-IPV6 port CONTAINER-PORT`"
    } else {
        "an accept rule in that chain (`ip6tables -I FORWARD -d CONTAINER-IPV6 -p tcp --dport CONTAINER-PORT -j ACCEPT`)"
    };
    format!(
        "Docker's iptables rules (Docker 20.10-28) let it through ahead of the policy; with \
         Docker's nftables backend (29), and for anything else routed, add {allow}; if the drop \
         is not wanted: `ip6tables -P FORWARD ACCEPT`"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stat(name: &str, ppid: u32) -> ProcessStat {
        ProcessStat {
            name: name.into(),
            ppid,
        }
    }

    #[test]
    fn a_stat_line_gives_name_and_parent_even_with_spaces_and_parentheses_in_the_name() {
        assert_eq!(
            parse_stat("4242 (ip6tables) S 100 4242 100 0 -1 4194560 112 0 0 0"),
            Some(stat("ip6tables", 100))
        );
        assert_eq!(
            parse_stat("7 (a) b (c)) Z 1 7 7 0 -1"),
            Some(stat("a) b (c)", 1)),
            "a zombie with an awkward name"
        );
        assert_eq!(parse_stat("7 (x) S"), None);
        assert_eq!(parse_stat("garbage"), None);
        assert_eq!(parse_stat("7 (x) S notanumber"), None);
    }

    #[test]
    fn dockerd_or_a_child_of_dockerd_is_docker() {
        let dockerd = stat(DOCKERD, 1);
        assert_eq!(
            classify(
                300,
                "ip6tables",
                Some(&stat("ip6tables", 200)),
                Some(&dockerd)
            ),
            DropSetter::Docker {
                process: "ip6tables".into(),
                pid: 300
            }
        );
        // Docker committing from one of its own threads (nf_tables names
        // the thread, whose name is the process's).
        let setter = classify(201, DOCKERD, Some(&stat(DOCKERD, 1)), None);
        assert!(setter.is_docker(), "{setter:?}");
        assert_eq!(setter.to_string(), "Docker (dockerd, pid 201)");
    }

    #[test]
    fn ufw_and_an_administrator_are_named_and_left_alone() {
        let ufw = classify(
            500,
            "ip6tables-resto",
            Some(&stat("ip6tables-resto", 499)),
            Some(&stat("ufw-init", 498)),
        );
        assert_eq!(
            ufw,
            DropSetter::Process {
                process: "ip6tables-resto".into(),
                pid: 500,
                parent: Some("ufw-init".into())
            }
        );
        assert!(!ufw.is_docker() && ufw.is_ufw());
        assert_eq!(
            ufw.to_string(),
            "ip6tables-resto (pid 500, started by ufw-init)"
        );
        let admin = classify(
            600,
            "ip6tables",
            Some(&stat("ip6tables", 599)),
            Some(&stat("bash", 598)),
        );
        assert!(!admin.is_docker() && !admin.is_ufw(), "{admin:?}");
        // A parent that is gone leaves the committer named, not Docker's.
        let orphan = classify(700, "ip6tables", Some(&stat("ip6tables", 1)), None);
        assert_eq!(
            orphan,
            DropSetter::Process {
                process: "ip6tables".into(),
                pid: 700,
                parent: None
            }
        );
    }

    #[test]
    fn a_committer_that_is_gone_or_whose_pid_was_taken_over_is_nobody_known() {
        let gone = DropSetter::Gone {
            process: "ip6tables".into(),
            pid: 800,
        };
        assert_eq!(classify(800, "ip6tables", None, None), gone);
        // The pid now belongs to another process, even one dockerd started.
        assert_eq!(
            classify(
                800,
                "ip6tables",
                Some(&stat("containerd-shim", 10)),
                Some(&stat(DOCKERD, 1))
            ),
            gone
        );
        assert!(!gone.is_docker());
    }

    #[test]
    fn only_docker_drops_are_undone_and_every_other_one_says_what_routing_needs() {
        let docker = Ipv6ForwardDrop::new(Ip6Firewall::Nftables, DropSetter::DockerStart, true);
        assert!(!docker.left_alone && docker.needs.is_none());
        let kept = Ipv6ForwardDrop::new(Ip6Firewall::Nftables, DropSetter::DockerStart, false);
        assert!(kept.left_alone);
        assert!(
            kept.needs
                .unwrap()
                .contains("restore_forward_policy = true")
        );
        for setter in [
            DropSetter::BeforeStart,
            DropSetter::Unheard,
            DropSetter::Gone {
                process: "ip6tables".into(),
                pid: 1,
            },
        ] {
            let drop = Ipv6ForwardDrop::new(Ip6Firewall::Nftables, setter, true);
            assert!(drop.left_alone);
            assert!(drop.needs.unwrap().contains("ip6tables -I FORWARD"));
        }
        let ufw = Ipv6ForwardDrop::new(
            Ip6Firewall::IptablesLegacy,
            DropSetter::Process {
                process: "ip6tables".into(),
                pid: 2,
                parent: Some("ufw".into()),
            },
            true,
        );
        assert!(ufw.left_alone);
        assert!(ufw.needs.unwrap().contains("ufw route allow"));
    }

    #[test]
    fn the_json_names_the_kind_of_setter() {
        let drop = Ipv6ForwardDrop::new(
            Ip6Firewall::Nftables,
            DropSetter::Process {
                process: "ip6tables".into(),
                pid: 9,
                parent: Some("ufw".into()),
            },
            true,
        );
        let json = serde_json::to_value(&drop).unwrap_or_default();
        assert_eq!(json["backend"], "nftables");
        assert_eq!(json["set_by"]["kind"], "process");
        assert_eq!(json["set_by"]["parent"], "ufw");
        assert_eq!(json["left_alone"], true);
        let back: Ipv6ForwardDrop = serde_json::from_value(json).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back, drop);
    }
}

#[cfg(test)]
mod found_at_start_tests {
    use super::*;
    use crate::hostfw::{NfFamily, NftChain};

    fn chain(family: NfFamily, table: &str, name: &str) -> NftChain {
        NftChain::regular(family, table, name)
    }

    /// A guard installed on a running Docker host (ip6tables on) finds
    /// Docker's drop: it is undone (P6). Beside ufw's or firewalld's
    /// chains, or with no Docker chain, nobody can tell: left alone.
    #[test]
    fn a_drop_found_beside_dockers_chains_alone_is_dockers() {
        let docker = chain(NfFamily::Ip6, "filter", "DOCKER-USER");
        assert_eq!(
            found_at_start(std::slice::from_ref(&docker)),
            DropSetter::DockerChains
        );
        assert!(found_at_start(std::slice::from_ref(&docker)).is_docker());
        for other in [
            chain(NfFamily::Ip6, "filter", "ufw6-before-forward"),
            chain(NfFamily::Ip, "filter", "ufw-user-input"),
            chain(NfFamily::Inet, "firewalld", "filter_FORWARD"),
        ] {
            assert_eq!(
                found_at_start(&[docker.clone(), other]),
                DropSetter::BeforeStart
            );
        }
        assert_eq!(found_at_start(&[]), DropSetter::BeforeStart);
        assert_eq!(
            found_at_start(&[chain(NfFamily::Ip, "filter", "DOCKER-USER")]),
            DropSetter::BeforeStart,
            "Docker's IPv4 chains say nothing of ip6 filter"
        );
    }
}
