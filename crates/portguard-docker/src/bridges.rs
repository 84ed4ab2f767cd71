//! Which of the interfaces Docker names as bridges the guard may treat as
//! Docker's bridges. Traffic from a Docker bridge is trusted, so Docker's
//! word is not enough: anyone who may create Docker networks could set
//! `com.docker.network.bridge.name` to the host's uplink (or a veth to the
//! outside) and open every port. A claimed name counts only if it is a
//! valid interface name and the kernel has a link of that name whose kind
//! is `bridge` (asked over rtnetlink, in the daemon's network namespace).
//!
//! A claimed bridge that does not exist yet carries no traffic; it is left
//! out (not trusted) and reported, and the observer looks again when a
//! link of that name appears (see [`crate::session`]).

use std::collections::BTreeSet;

use futures_util::TryStreamExt;
use netlink_packet_route::link::{InfoKind, LinkAttribute, LinkInfo, LinkMessage};

use crate::snapshot::{BridgeClaim, check_ifname};

/// What the kernel has under a name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkKind {
    Bridge,
    /// Another kind (`veth`, `dummy`, ...), or none given (a plain device).
    Other(String),
    Missing,
}

/// The kind of the link called `name` (a valid interface name).
pub async fn link_kind(
    links: &rtnetlink::Handle,
    name: &str,
) -> Result<LinkKind, rtnetlink::Error> {
    let mut answers = links.link().get().match_name(name).execute();
    match answers.try_next().await {
        Ok(Some(link)) => Ok(kind_of(&link)),
        Ok(None) => Ok(LinkKind::Missing),
        Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc_enodev() => {
            Ok(LinkKind::Missing)
        }
        Err(e) => Err(e),
    }
}

/// ENODEV, the kernel's answer for an unknown interface name.
const fn libc_enodev() -> i32 {
    19
}

fn kind_of(link: &LinkMessage) -> LinkKind {
    let kind = link.attributes.iter().find_map(|a| match a {
        LinkAttribute::LinkInfo(infos) => infos.iter().find_map(|i| match i {
            LinkInfo::Kind(kind) => Some(kind.clone()),
            _ => None,
        }),
        _ => None,
    });
    match kind {
        Some(InfoKind::Bridge) => LinkKind::Bridge,
        Some(other) => LinkKind::Other(other.to_string()),
        None => LinkKind::Other("device".into()),
    }
}

/// Why a claim is not trusted, or `None` if it is: a pure judgement, so
/// that every case is unit-tested.
pub fn judge(claim: &BridgeClaim, kind: Option<&LinkKind>) -> Option<String> {
    let shown = portguard_core::control::printable(&claim.ifname);
    let network = portguard_core::control::printable(&claim.network);
    if let Err(why) = check_ifname(&claim.ifname) {
        return Some(format!(
            "network {network}: bridge name \"{shown}\" refused: {why}"
        ));
    }
    match kind {
        Some(LinkKind::Bridge) => None,
        Some(LinkKind::Other(kind)) => Some(format!(
            "network {network}: \"{shown}\" is a {kind}, not a bridge; not trusted (published ports stay judged)"
        )),
        Some(LinkKind::Missing) => Some(format!(
            "network {network}: bridge \"{shown}\" does not exist (yet); not trusted until it is a bridge"
        )),
        None => Some(format!(
            "network {network}: cannot tell what \"{shown}\" is; not trusted"
        )),
    }
}

/// The verified bridges, and why each other claim was refused. Names that
/// do not exist yet are returned too (`missing`), so that their appearance
/// can be watched for.
pub struct Verified {
    pub bridges: BTreeSet<String>,
    pub refused: Vec<String>,
    pub missing: BTreeSet<String>,
}

pub async fn verify(claims: &[BridgeClaim], links: &rtnetlink::Handle) -> Verified {
    let mut verified = Verified {
        bridges: BTreeSet::new(),
        refused: Vec::new(),
        missing: BTreeSet::new(),
    };
    for claim in claims {
        let kind = if check_ifname(&claim.ifname).is_ok() {
            match link_kind(links, &claim.ifname).await {
                Ok(kind) => Some(kind),
                Err(e) => {
                    tracing::warn!(name = %claim.ifname, error = %e, "cannot look up a Docker bridge");
                    None
                }
            }
        } else {
            None
        };
        if kind == Some(LinkKind::Missing) {
            verified.missing.insert(claim.ifname.clone());
        }
        match judge(claim, kind.as_ref()) {
            None => {
                verified.bridges.insert(claim.ifname.clone());
            }
            Some(why) => verified.refused.push(why),
        }
    }
    verified
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn claim(ifname: &str) -> BridgeClaim {
        BridgeClaim {
            network: "evil".into(),
            ifname: ifname.into(),
        }
    }

    #[test]
    fn only_valid_names_of_real_bridges_are_trusted() {
        let bridge = Some(&LinkKind::Bridge);
        assert_eq!(judge(&claim("shopnet"), bridge), None);
        let table: &[(&str, Option<&LinkKind>, &str)] = &[
            (
                "veth-outside",
                Some(&LinkKind::Other("veth".into())),
                "is a veth, not a bridge",
            ),
            (
                "eth0",
                Some(&LinkKind::Other("device".into())),
                "is a device, not a bridge",
            ),
            ("newnet", Some(&LinkKind::Missing), "does not exist (yet)"),
            ("shopnet", None, "cannot tell"),
            ("a-very-long-bridge-name", bridge, "longer than 15 bytes"),
            ("eth0:0", bridge, "':' is not allowed"),
            (
                "web\u{1b}]0;x",
                bridge,
                "bridge name \"web\\x1b]0;x\" refused",
            ),
        ];
        for (name, kind, wanted) in table {
            let why = judge(&claim(name), *kind).unwrap();
            assert!(why.contains(wanted), "{name}: {why}");
        }
    }
}
