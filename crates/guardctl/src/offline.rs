//! What the kernel still enforces while the daemon is down: the guard's
//! table outlives portguardd (P5), so "portguardd is not running" alone
//! would leave an administrator believing nothing filters. Asked of `nft`
//! (root only; without it, or without the right to list, nothing is said).

use std::process::{Command, Stdio};

/// The guard's tables in every tier.
const TABLES: [&str; 2] = ["portguard", "portguard_standby"];

/// One sentence on the guard's tables in the kernel, or `None` when
/// `nft` cannot tell.
pub fn kernel_note() -> Option<String> {
    let present: Vec<&str> = TABLES
        .into_iter()
        .filter(|table| nft(&["list", "table", "inet", table]).is_some())
        .collect();
    let Some(table) = present.first() else {
        // Listing works (we may list), and there is no table: say so.
        nft(&["list", "tables"])?;
        return Some(
            "the kernel holds no guard table: published ports are not judged by portguard".into(),
        );
    };
    let count = |set: &str| {
        nft(&["-j", "list", "set", "inet", table, set])
            .and_then(|json| elements(&json))
            .unwrap_or(0)
    };
    let tables: Vec<String> = present.iter().map(|t| format!("inet {t}")).collect();
    Some(format!(
        "the kernel still holds the guard's table ({}) and keeps judging as last applied: \
         {} published TCP and {} UDP ports, {} TCP and {} UDP ports allowed to any source. \
         Protection does not depend on the daemon; `portguardd --remove-rules` switches it off",
        tables.join(", "),
        count("published_tcp"),
        count("published_udp"),
        count("allow_tcp") + count("allow_tcp_ranges"),
        count("allow_udp") + count("allow_udp_ranges"),
    ))
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
