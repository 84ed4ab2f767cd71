//! The kernel backend against a real kernel, each test in network
//! namespaces of its own.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use portguard_config::Config;
use portguard_core::{Ruleset, Snapshot, plan, render};
use portguard_nft::{Nft, Verification};
use portguard_testkit::NetNs;

fn ruleset(toml: &str) -> Ruleset {
    plan(&Config::from_toml_str(toml).unwrap(), &Snapshot::default())
}

fn nft_in(ns: &NetNs) -> Nft {
    ns.enter(|| Nft::open().unwrap())
}

const CONFIGS: &[&str] = &[
    "",
    "[[allow]]\nport = 8086\n",
    "[[allow]]\nport = \"40000-40100\"\nproto = \"both\"\n[[allow]]\nport = 65535\n",
    "[[allow]]\nport = 8086\nfrom = [\"203.0.113.0/24\", \"2001:db8::/32\", \"10.0.0.0/8\"]\n[[allow]]\nport = 9000\nfrom = [\"10.1.0.0/16\"]\n",
    "[guard]\nmode = \"audit\"\nscope = \"all\"\ntrusted_interfaces = [\"wg0\", \"tun*\"]\nexternal_interfaces = [\"eth0\"]\n[[allow]]\nport = 1\n",
];

#[test]
fn applied_ruleset_lists_exactly_as_rendered() {
    let ns = NetNs::new("golden");
    let mut nft = nft_in(&ns);
    for config in CONFIGS {
        let ruleset = ruleset(config);
        nft.apply(&ruleset)
            .unwrap_or_else(|e| panic!("{config}: {e}"));
        let listed = ns.sh("nft list table inet portguard");
        assert_eq!(
            render::normalize_listing(&listed),
            render::normalize_listing(&render::render(&ruleset)),
            "config:\n{config}"
        );
        assert_eq!(nft.verify().unwrap(), Verification::Intact);
    }
}

#[test]
fn verify_tells_intact_missing_and_altered() {
    let ns = NetNs::new("verify");
    let mut nft = nft_in(&ns);
    assert_eq!(nft.verify().unwrap(), Verification::NotApplied);
    let ruleset = ruleset("[[allow]]\nport = 8080\n");
    nft.apply(&ruleset).unwrap();
    assert_eq!(nft.verify().unwrap(), Verification::Intact);

    // A change elsewhere moves the generation but leaves us intact.
    ns.sh("nft add table ip somebody_else");
    assert_eq!(nft.verify().unwrap(), Verification::Intact);

    ns.sh("nft delete table inet portguard");
    assert_eq!(nft.verify().unwrap(), Verification::Missing);

    nft.apply(&ruleset).unwrap();
    ns.sh("nft add rule inet portguard forward accept");
    assert!(matches!(nft.verify().unwrap(), Verification::Altered(why) if why.contains("forward")));

    nft.apply(&ruleset).unwrap();
    ns.sh("nft add element inet portguard allow_tcp { 22 }");
    assert!(
        matches!(nft.verify().unwrap(), Verification::Altered(why) if why.contains("allow_tcp"))
    );

    nft.apply(&ruleset).unwrap();
    ns.sh("nft flush chain inet portguard published_forward");
    assert!(matches!(nft.verify().unwrap(), Verification::Altered(_)));

    // Rules other programs write in their own tables, with expressions we
    // do not model, do not disturb the read-back.
    nft.apply(&ruleset).unwrap();
    ns.sh("nft add table ip other; nft add chain ip other c; nft add rule ip other c ct helper set \"ftp\" 2>/dev/null || nft add rule ip other c ct mark set 7 quota 10 mbytes");
    ns.sh("iptables-nft -A FORWARD -m conntrack --ctstate NEW -m comment --comment x -j ACCEPT");
    assert_eq!(nft.verify().unwrap(), Verification::Intact);
}

#[test]
fn remove_deletes_only_our_table() {
    let ns = NetNs::new("remove");
    let mut nft = nft_in(&ns);
    ns.sh("nft add table ip keepme");
    nft.apply(&ruleset("")).unwrap();
    assert!(nft.remove().unwrap());
    assert!(!nft.remove().unwrap(), "second remove finds nothing");
    let listing = ns.sh("nft list tables");
    assert!(!listing.contains("portguard"), "{listing}");
    assert!(listing.contains("table ip keepme"), "{listing}");
}

#[test]
fn kernel_refusals_name_the_object() {
    let ns = NetNs::new("refuse");
    let mut nft = nft_in(&ns);
    let mut bad = ruleset("");
    // A jump to a chain that does not exist.
    bad.chains[0]
        .rules
        .push(portguard_core::ruleset::Rule::new([
            portguard_core::ruleset::Stmt::Jump("nowhere".into()),
        ]));
    let err = nft.apply(&bad).unwrap_err().to_string();
    assert!(
        err.contains("chain forward") && err.contains("errno"),
        "{err}"
    );
    // Nothing of the failed batch was committed.
    let listing = ns.sh("nft list tables");
    assert!(!listing.contains("portguard"), "{listing}");
}

#[test]
fn monitor_overflow_is_reported_as_resync() {
    let ns = NetNs::new("overflow");
    let mut monitor = ns.enter(|| portguard_nft::Monitor::with_receive_buffer(4096).unwrap());
    // Hundreds of notifications while nobody reads: the socket overflows.
    let script: String = (0..400).map(|i| format!("add table ip t{i}\n")).collect();
    ns.sh(&format!("nft -f - <<'EOF'\n{script}EOF"));
    // Read on a thread of its own, so that a kernel that did not overflow
    // fails this test instead of hanging it.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        while let Ok(event) = monitor.next_event() {
            if tx.send(event).is_err() {
                return;
            }
        }
    });
    let mut saw_overflow = false;
    while let Ok(event) = rx.recv_timeout(Duration::from_secs(5)) {
        if event == portguard_nft::MonitorEvent::Overflow {
            saw_overflow = true;
            break;
        }
    }
    assert!(saw_overflow, "lost notifications must be reported");
}

#[test]
fn a_locked_table_refuses_everybody_else_outlives_its_owner_and_is_taken_over() {
    let ns = NetNs::new("locked");
    let mut owner = nft_in(&ns);
    owner.set_lock(true);
    let rules = ruleset("[[allow]]\nport = 8080\n");
    owner.apply(&rules).unwrap();
    for tamper in [
        "nft delete table inet portguard",
        "nft add rule inet portguard forward accept",
        "nft add element inet portguard allow_tcp { 22 }",
    ] {
        let out = ns.run(tamper);
        assert!(
            !out.status.success(),
            "`{tamper}` was allowed on a locked table"
        );
        assert!(String::from_utf8_lossy(&out.stderr).contains("Operation not permitted"));
    }
    ns.sh("nft flush ruleset");
    assert!(
        ns.sh("nft list tables").contains("table inet portguard"),
        "flush ruleset skips it"
    );
    assert_eq!(owner.verify().unwrap(), Verification::Intact);
    // The owner may still change it, in place.
    assert!(
        owner
            .apply(&ruleset("[[allow]]\nport = 8081\n"))
            .unwrap()
            .incremental
    );

    // Owner gone (daemon killed): the table stays ...
    drop(owner);
    assert!(ns.sh("nft list tables").contains("table inet portguard"));
    // ... and the next daemon takes it over with its first apply.
    let mut next = nft_in(&ns);
    next.set_lock(true);
    next.apply(&rules).unwrap();
    assert!(
        !ns.run("nft delete table inet portguard").status.success(),
        "locked again"
    );
    // While it is held, `portguardd --remove-rules` is refused plainly ...
    let mut other = nft_in(&ns);
    let err = other.remove().unwrap_err().to_string();
    assert!(err.contains("locked by a running portguardd"), "{err}");
    // ... once the daemon stopped (the package's prerm), it removes it.
    drop(next);
    assert!(other.remove().unwrap());
    assert!(!ns.sh("nft list tables").contains("portguard"));
}
