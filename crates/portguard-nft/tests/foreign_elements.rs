//! Elements somebody else adds, with attributes the guard never sends
//! (comments, per-element counters) and in any number, are deleted in
//! place; and the edges of the guard's own element encoding read back
//! exactly. Each test in a namespace of its own.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use portguard_config::Config;
use portguard_core::ruleset::TABLE_NAME;
use portguard_core::{Ruleset, Snapshot, plan, render};
use portguard_nft::{GuardTable, Ownership, TableOutcome, TableSpec};
use portguard_testkit::NetNs;

fn ruleset(toml: &str) -> Ruleset {
    plan(&Config::from_toml_str(toml).unwrap(), &Snapshot::default())
}

/// A namespace named after `role` whose guard table holds `toml`'s ruleset.
fn guarded(role: &str, toml: &str) -> (NetNs, GuardTable, Ruleset) {
    let ns = NetNs::new(role);
    let spec = TableSpec {
        name: TABLE_NAME.into(),
        ownership: Ownership::Unowned,
    };
    let mut nft = ns.enter(move || GuardTable::open(spec).unwrap());
    let ruleset = ruleset(toml);
    nft.reconcile(&ruleset).unwrap();
    (ns, nft, ruleset)
}

const CONFIG: &str = "[[allow]]\nport = 1111\n[[allow]]\nport = \"5000-5010\"\n[[allow]]\nport = 8080\nfrom = [\"10.0.0.0/8\"]\n[[allow]]\nport = 22\nfrom = [\"192.0.2.7/32\"]\n";

fn assert_exactly_wanted(ns: &NetNs, nft: &mut GuardTable, ruleset: &Ruleset, what: &str) {
    assert_eq!(
        nft.check(ruleset).unwrap(),
        vec![],
        "after undoing `{what}`"
    );
    assert_eq!(
        nft.reconcile(ruleset).unwrap(),
        TableOutcome::Unchanged,
        "after undoing `{what}`"
    );
    let listed = ns.sh("nft list table inet portguard");
    assert_eq!(
        render::normalize_listing(&listed),
        render::normalize_listing(&render::render(ruleset)),
        "after undoing `{what}`"
    );
}

/// The kernel's handle of the table: a replace (delete and create) changes it.
fn table_handle(ns: &NetNs) -> String {
    let listed = ns.sh("nft -a list table inet portguard");
    listed
        .lines()
        .find(|l| l.contains("portguard"))
        .and_then(|l| l.split("# handle ").nth(1))
        .unwrap()
        .trim()
        .to_string()
}

#[test]
fn foreign_elements_with_comments_or_counters_are_deleted_in_place() {
    let (ns, mut nft, ruleset) = guarded("fcomment", CONFIG);
    for tamper in [
        "nft add element inet portguard allow_tcp '{ 9999 comment \"x\" }'",
        "nft add element inet portguard allow_tcp '{ 9998 counter }'",
        "nft add element inet portguard allow_tcp '{ 9997 counter comment \"y\" }'",
        "nft add element inet portguard allow_tcp_ranges '{ 7000-7100 comment \"range\" }'",
        "nft add element inet portguard allow_tcp_v4_ranges '{ 172.16.0.0/12 . 443 comment \"net\" }'",
        "nft add element inet portguard allow_tcp_v4 '{ 192.0.2.9 . 22 comment \"one\" }'",
        "nft add element inet portguard docker_bridges '{ \"br-foreign\" comment \"if\" }'",
        // Ours, deleted and added back with a comment: same key, other attributes.
        "nft delete element inet portguard allow_tcp '{ 1111 }' && nft add element inet portguard allow_tcp '{ 1111 comment \"mine now\" }'",
    ] {
        let handle = table_handle(&ns);
        ns.sh(tamper);
        let found = nft.check(&ruleset).unwrap();
        assert!(!found.is_empty(), "`{tamper}` went unnoticed");
        let outcome = nft.reconcile(&ruleset).unwrap();
        assert!(
            matches!(outcome, TableOutcome::Repaired(_)),
            "`{tamper}`: {outcome:?}"
        );
        // A refused repair falls back to a replace that still reports
        // `Repaired`; the table's handle tells them apart.
        assert_eq!(table_handle(&ns), handle, "`{tamper}` replaced the table");
        assert_exactly_wanted(&ns, &mut nft, &ruleset, tamper);
    }
}

/// 600 foreign elements with 128-character comments (anybody with
/// CAP_NET_ADMIN can add them to an unowned copy): 512 of them are more
/// bytes than one netlink attribute can hold, so the deletion goes in
/// more, smaller messages.
#[test]
fn many_foreign_elements_with_long_comments_are_all_deleted() {
    let (ns, mut nft, ruleset) = guarded("fmany", CONFIG);
    let comment = "c".repeat(128);
    let elements: Vec<String> = (0..600)
        .map(|i| format!("{} comment \"{comment}\"", 20000 + i))
        .collect();
    let file = std::env::temp_dir().join(format!("pg-fmany-{}.nft", std::process::id()));
    std::fs::write(
        &file,
        format!(
            "add element inet portguard allow_tcp {{ {} }}\n",
            elements.join(", ")
        ),
    )
    .unwrap();
    ns.sh(&format!("nft -f {}", file.display()));
    let _ = std::fs::remove_file(&file);
    // Before: the deletion batch could not be serialized and the library
    // panicked inside reconcile.
    let outcome = nft.reconcile(&ruleset).unwrap();
    assert!(matches!(outcome, TableOutcome::Repaired(_)), "{outcome:?}");
    assert_exactly_wanted(&ns, &mut nft, &ruleset, "600 commented elements");
}

/// Edges of the element encoding the kernel must dump back exactly: a
/// 15-byte interface name (no room left but the NUL), a range that ends
/// at 65535 (no end marker), a range starting at 1 (leading marker at 0),
/// IPv6 networks with port ranges (pipapo, 20-byte keys).
#[test]
fn edge_elements_read_back_exactly_as_expected() {
    let (ns, mut nft, ruleset) = guarded(
        "fedges",
        "[guard]\ntrusted_interfaces = [\"abcdefghijklmno\", \"a\"]\n[[allow]]\nport = \"1-3\"\n[[allow]]\nport = \"65000-65535\"\nproto = \"both\"\n[[allow]]\nport = \"8000-8100\"\nfrom = [\"2001:db8:1::/64\", \"fd00::1/128\", \"0.0.0.0/0\"]\n",
    );
    assert_exactly_wanted(&ns, &mut nft, &ruleset, "nothing");
}
