//! What the kernel still enforces while the daemon is down: the guard's
//! table outlives portguardd (P5), so "portguardd is not running" alone
//! would leave an administrator believing nothing filters. Asked of `nft`
//! (root only; without it, or without the right to list, nothing is
//! said); `render::offline` says it.

use std::process::{Command, Stdio};

use portguard_core::L4Proto;
use portguard_core::plan::names;
use portguard_core::ruleset::GUARD_TABLES;

/// The guard's tables in the kernel, as `nft` lists them.
#[derive(Debug, PartialEq, Eq)]
pub enum KernelGuard {
    /// Listing works, and there is no guard table.
    NoTable,
    /// The guard's tables present, the primary first, and what the first
    /// of them holds.
    Tables {
        tables: Vec<&'static str>,
        /// Published ports, TCP and UDP.
        published: (usize, usize),
        /// Ports allowed to any source (single ports and ranges), TCP and
        /// UDP.
        allowed: (usize, usize),
    },
}

/// What the kernel holds of the guard's, or `None` when `nft` cannot tell.
pub fn look() -> Option<KernelGuard> {
    let present: Vec<&'static str> = GUARD_TABLES
        .into_iter()
        .filter(|table| nft(&["list", "table", "inet", table]).is_some())
        .collect();
    let Some(table) = present.first() else {
        // Listing works (we may list), and there is no table: say so.
        nft(&["list", "tables"])?;
        return Some(KernelGuard::NoTable);
    };
    let count = |set: &str| {
        nft(&["-j", "list", "set", "inet", table, set])
            .and_then(|json| elements(&json))
            .unwrap_or(0)
    };
    let allowed = |proto| count(&names::allow(proto)) + count(&names::allow_ranges(proto));
    Some(KernelGuard::Tables {
        published: (
            count(&names::published(L4Proto::Tcp)),
            count(&names::published(L4Proto::Udp)),
        ),
        allowed: (allowed(L4Proto::Tcp), allowed(L4Proto::Udp)),
        tables: present,
    })
}

/// `nft ARGS`'s output, if it succeeded.
fn nft(args: &[&str]) -> Option<String> {
    let out = Command::new("nft")
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The number of elements of the set in `nft -j list set` output.
fn elements(json: &str) -> Option<usize> {
    let value: serde_json::Value = serde_json::from_str(json).ok()?;
    value["nftables"].as_array()?.iter().find_map(|item| {
        let set = item.get("set")?;
        Some(
            set.get("elem")
                .and_then(|e| e.as_array())
                .map_or(0, Vec::len),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elements_are_counted_from_nft_json() {
        let json = r#"{"nftables": [{"metainfo": {"version": "1.0.6"}},
            {"set": {"family": "inet", "name": "published_tcp", "table": "portguard",
                     "type": "inet_service", "handle": 3, "elem": [8080, 8081]}}]}"#;
        assert_eq!(elements(json), Some(2));
        let empty = r#"{"nftables": [{"set": {"name": "published_udp"}}]}"#;
        assert_eq!(elements(empty), Some(0));
        assert_eq!(elements("not json"), None);
    }
}
