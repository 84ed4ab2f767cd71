//! The kernel backend against a real kernel, each test in network
//! namespaces of its own.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use portguard_config::Config;
use portguard_core::ruleset::TABLE_NAME;
use portguard_core::{Ruleset, Snapshot, plan, render};
use portguard_nft::{Difference, GuardTable, Ownership, TableOutcome, TableSpec};
use portguard_testkit::NetNs;

fn ruleset(toml: &str) -> Ruleset {
    plan(&Config::from_toml_str(toml).unwrap(), &Snapshot::default())
}

fn table_in(ns: &NetNs, name: &str, ownership: Ownership) -> GuardTable {
    let spec = TableSpec {
        name: name.into(),
        ownership,
    };
    ns.enter(move || GuardTable::open(spec).unwrap())
}

fn nft_in(ns: &NetNs) -> GuardTable {
    table_in(ns, TABLE_NAME, Ownership::Unowned)
}

/// A monitor opened in `ns` (with a socket receive buffer of `bytes`, or
/// the default) that recreates deleted copies from `recreation`.
fn recreating_monitor(
    ns: &NetNs,
    recreation: &portguard_nft::Recreation,
    bytes: Option<usize>,
) -> portguard_nft::Monitor {
    let recreation = recreation.clone();
    ns.enter(move || {
        let monitor = match bytes {
            Some(bytes) => portguard_nft::Monitor::with_receive_buffer(bytes),
            None => portguard_nft::Monitor::open(),
        };
        monitor.unwrap().recreating(recreation).unwrap()
    })
}

/// Reads `monitor` on a thread of its own (so that a test waits with a
/// timeout instead of hanging); its events, until the receiver goes.
fn follow(
    mut monitor: portguard_nft::Monitor,
) -> std::sync::mpsc::Receiver<portguard_nft::MonitorEvent> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        while let Ok(event) = monitor.next_event() {
            if tx.send(event).is_err() {
                return;
            }
        }
    });
    rx
}

const CONFIGS: &[&str] = &[
    "",
    "[[allow]]\nport = 8086\n",
    "[[allow]]\nport = \"40000-40100\"\nproto = \"both\"\n[[allow]]\nport = 65535\n",
    "[[allow]]\nport = 8086\nfrom = [\"203.0.113.0/24\", \"2001:db8::/32\", \"10.0.0.0/8\"]\n[[allow]]\nport = 9000\nfrom = [\"10.1.0.0/16\"]\n",
    "[[allow]]\nport = 22\nfrom = [\"192.0.2.7/32\", \"2001:db8::7/128\", \"198.51.100.0/24\"]\n[[allow]]\nport = \"6000-6001\"\nfrom = [\"192.0.2.8/32\"]\n[[allow]]\nport = 8080\n[[allow]]\nport = \"9000-9100\"\nproto = \"udp\"\n",
    "[guard]\nmode = \"audit\"\nscope = \"all\"\ntrusted_interfaces = [\"wg0\", \"tun*\"]\nexternal_interfaces = [\"eth0\"]\n[[allow]]\nport = 1\n",
];

#[test]
fn applied_ruleset_lists_exactly_as_rendered() {
    let ns = NetNs::new("golden");
    let mut nft = nft_in(&ns);
    for config in CONFIGS {
        let ruleset = ruleset(config);
        nft.reconcile(&ruleset)
            .unwrap_or_else(|e| panic!("{config}: {e}"));
        let listed = ns.sh("nft list table inet portguard");
        assert_eq!(
            render::normalize_listing(&listed),
            render::normalize_listing(&render::render(&ruleset)),
            "config:\n{config}"
        );
        assert_eq!(nft.check(&ruleset).unwrap(), vec![], "config:\n{config}");
        assert_eq!(nft.reconcile(&ruleset).unwrap(), TableOutcome::Unchanged);
    }
}

/// `nft -f` of the rendering builds exactly the table the guard would:
/// same set flags and types (hash or interval, as planned), same elements,
/// same rules, compared attribute for attribute.
#[test]
fn nft_builds_from_the_rendering_exactly_what_the_guard_would() {
    let ns = NetNs::new("nftbuild");
    let mut nft = nft_in(&ns);
    let file = std::env::temp_dir().join(format!("pg-nftbuild-{}.nft", std::process::id()));
    for config in CONFIGS {
        let ruleset = ruleset(config);
        std::fs::write(&file, render::render(&ruleset)).unwrap();
        ns.sh(&format!(
            "nft delete table inet portguard 2>/dev/null; nft -f {}",
            file.display()
        ));
        assert_eq!(nft.check(&ruleset).unwrap(), vec![], "config:\n{config}");
    }
    let _ = std::fs::remove_file(&file);
}

#[test]
fn every_foreign_change_is_found_exactly_and_put_right_in_place() {
    let ns = NetNs::new("verify");
    let mut nft = nft_in(&ns);
    let ruleset =
        ruleset("[[allow]]\nport = 1111\n[[allow]]\nport = 8080\nfrom = [\"10.0.0.0/8\"]\n");
    assert_eq!(nft.check(&ruleset).unwrap(), vec![Difference::TableMissing]);
    assert!(matches!(
        nft.reconcile(&ruleset).unwrap(),
        TableOutcome::Replaced(_)
    ));
    assert_eq!(nft.check(&ruleset).unwrap(), vec![]);

    // A change elsewhere moves the generation but leaves us intact.
    ns.sh("nft add table ip somebody_else");
    assert_eq!(nft.reconcile(&ruleset).unwrap(), TableOutcome::Unchanged);

    // The race of issue 8: an element somebody adds is found (it was kept
    // before, because the read-back became the baseline) and removed, in
    // place, leaving exactly what is wanted.
    for tamper in [
        "nft add element inet portguard allow_tcp { 27017 }",
        "nft add element inet portguard allow_tcp_ranges { 2000-3000 }",
        "nft add element inet portguard allow_tcp_v4 { 192.0.2.1 . 22 }",
        "nft delete element inet portguard allow_tcp { 1111 }",
        "nft add element inet portguard trusted_ifaces { \"eth0\" }",
        "nft add rule inet portguard forward accept",
        "nft insert rule inet portguard published_forward accept",
        "nft flush chain inet portguard published_forward",
    ] {
        ns.sh(tamper);
        let found = nft.check(&ruleset).unwrap();
        assert!(!found.is_empty(), "`{tamper}` went unnoticed");
        assert!(
            found.iter().all(Difference::in_place),
            "`{tamper}`: {found:?}"
        );
        assert!(
            matches!(nft.reconcile(&ruleset).unwrap(), TableOutcome::Repaired(_)),
            "`{tamper}`"
        );
        assert_eq!(
            nft.check(&ruleset).unwrap(),
            vec![],
            "after undoing `{tamper}`"
        );
        let listed = ns.sh("nft list table inet portguard");
        assert_eq!(
            render::normalize_listing(&listed),
            render::normalize_listing(&render::render(&ruleset)),
            "after undoing `{tamper}`"
        );
    }

    // Structural changes are replaced whole.
    for tamper in [
        "nft delete table inet portguard",
        "nft add chain inet portguard extra",
        "nft add set inet portguard extra '{ type ipv4_addr; }'",
        "nft chain inet portguard forward '{ policy accept; }'",
    ] {
        ns.sh(tamper);
        assert!(
            !nft.check(&ruleset).unwrap().is_empty(),
            "`{tamper}` went unnoticed"
        );
        assert!(
            matches!(nft.reconcile(&ruleset).unwrap(), TableOutcome::Replaced(_)),
            "`{tamper}`"
        );
        assert_eq!(
            nft.check(&ruleset).unwrap(),
            vec![],
            "after undoing `{tamper}`"
        );
    }

    // Rules other programs write in their own tables, with expressions we
    // do not model, do not disturb the read-back.
    ns.sh("nft add table ip other; nft add chain ip other c; nft add rule ip other c ct helper set \"ftp\" 2>/dev/null || nft add rule ip other c ct mark set 7 quota 10 mbytes");
    ns.sh("iptables-nft -A FORWARD -m conntrack --ctstate NEW -m comment --comment x -j ACCEPT");
    assert_eq!(nft.reconcile(&ruleset).unwrap(), TableOutcome::Unchanged);
}

#[test]
fn a_one_element_change_touches_only_that_element() {
    let ns = NetNs::new("elemdiff");
    let mut nft = nft_in(&ns);
    let many: String = (0..2000)
        .map(|i| format!("[[allow]]\nport = {}\n", 10000 + 2 * i))
        .collect();
    nft.reconcile(&ruleset(&many)).unwrap();
    let one_more = format!("{many}[[allow]]\nport = 9000\n");
    let outcome = nft.reconcile(&ruleset(&one_more)).unwrap();
    let TableOutcome::Repaired(differences) = outcome else {
        panic!("expected an in-place repair, got {outcome:?}");
    };
    assert!(
        matches!(&differences[..], [Difference::Elements { missing, foreign, .. }] if missing.len() + foreign.len() <= 4),
        "{differences:?}"
    );
    assert!(nft.last_stats().messages <= 4, "{:?}", nft.last_stats());
    assert_eq!(nft.check(&ruleset(&one_more)).unwrap(), vec![]);
}

#[test]
fn remove_deletes_only_our_table() {
    let ns = NetNs::new("remove");
    let mut nft = nft_in(&ns);
    ns.sh("nft add table ip keepme");
    nft.reconcile(&ruleset("")).unwrap();
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
    let err = nft.reconcile(&bad).unwrap_err().to_string();
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
    let monitor = ns.enter(|| portguard_nft::Monitor::with_receive_buffer(4096).unwrap());
    // Hundreds of notifications while nobody reads: the socket overflows.
    let script: String = (0..400).map(|i| format!("add table ip t{i}\n")).collect();
    ns.sh(&format!("nft -f - <<'EOF'\n{script}EOF"));
    // Read on a thread of its own, so that a kernel that did not overflow
    // fails this test instead of hanging it.
    let rx = follow(monitor);
    let mut saw_overflow = false;
    while let Ok(event) = rx.recv_timeout(Duration::from_secs(5)) {
        if matches!(event, portguard_nft::MonitorEvent::Overflow { .. }) {
            saw_overflow = true;
            break;
        }
    }
    assert!(saw_overflow, "lost notifications must be reported");
}

#[test]
fn an_owned_persistent_table_refuses_everybody_else_outlives_its_owner_and_is_adopted() {
    let ns = NetNs::new("locked");
    let mut owner = table_in(&ns, TABLE_NAME, Ownership::OwnedPersistent);
    let rules = ruleset("[[allow]]\nport = 8080\n");
    owner.reconcile(&rules).unwrap();
    for tamper in [
        "nft delete table inet portguard",
        "nft add rule inet portguard forward accept",
        "nft add element inet portguard allow_tcp { 22 }",
    ] {
        let out = ns.run(tamper);
        assert!(
            !out.status.success(),
            "`{tamper}` was allowed on an owned table"
        );
        assert!(String::from_utf8_lossy(&out.stderr).contains("Operation not permitted"));
    }
    ns.sh("nft flush ruleset");
    assert!(
        ns.sh("nft list tables").contains("table inet portguard"),
        "flush ruleset skips it"
    );
    // What `systemctl restart nftables` does on Debian: exits 0.
    ns.sh("printf 'flush ruleset\ntable inet filter {\n chain input { type filter hook input priority 0; }\n}\n' > /tmp/pg-flush-$$.nft && nft -f /tmp/pg-flush-$$.nft; rm -f /tmp/pg-flush-$$.nft");
    assert!(ns.sh("nft list tables").contains("table inet portguard"));
    assert_eq!(owner.reconcile(&rules).unwrap(), TableOutcome::Unchanged);
    // The owner may still change it, in place.
    assert!(matches!(
        owner
            .reconcile(&ruleset("[[allow]]\nport = 8081\n"))
            .unwrap(),
        TableOutcome::Repaired(_)
    ));

    // Owner gone (daemon killed): the table stays ...
    drop(owner);
    assert!(ns.sh("nft list tables").contains("table inet portguard"));
    // ... and the next daemon adopts it with its first reconcile.
    let mut next = table_in(&ns, TABLE_NAME, Ownership::OwnedPersistent);
    next.reconcile(&rules).unwrap();
    assert!(
        !ns.run("nft delete table inet portguard").status.success(),
        "owned again"
    );
    // While it is held, `portguardd --remove-rules` is refused plainly ...
    let mut other = table_in(&ns, TABLE_NAME, Ownership::OwnedPersistent);
    let err = other.remove().unwrap_err();
    assert!(
        matches!(&err, portguard_nft::NftError::OwnedByRunningDaemon { table } if table == "portguard"),
        "{err:?}"
    );
    let err = err.to_string();
    assert!(err.contains("owned by a running portguardd"), "{err}");
    // ... once the daemon stopped (the package's prerm), it removes it.
    drop(next);
    assert!(other.remove().unwrap());
    assert!(!ns.sh("nft list tables").contains("portguard"));
}

#[test]
fn an_owned_table_without_persist_goes_with_its_owner_and_a_twin_copy_can_be_deleted() {
    let ns = NetNs::new("owned");
    let rules = ruleset("[[allow]]\nport = 8080\n");
    let mut owned = table_in(&ns, TABLE_NAME, Ownership::Owned);
    let mut standby = table_in(&ns, portguard_nft::STANDBY_TABLE, Ownership::Unowned);
    owned.reconcile(&rules).unwrap();
    standby.reconcile(&rules).unwrap();
    assert!(!ns.run("nft delete table inet portguard").status.success());
    ns.sh("nft delete table inet portguard_standby");
    assert_eq!(
        standby.check(&rules).unwrap(),
        vec![Difference::TableMissing]
    );
    standby.reconcile(&rules).unwrap();
    drop(owned);
    let tables = ns.sh("nft list tables");
    assert!(!tables.contains("table inet portguard\n"), "{tables}");
    assert!(tables.contains("table inet portguard_standby"), "{tables}");
}

#[test]
fn the_probe_finds_owned_persistent_tables_on_this_kernel_and_leaves_nothing() {
    let ns = NetNs::new("probe");
    let found = ns.enter(|| portguard_nft::probe_ownership().unwrap());
    // This suite runs on Linux 6.9+ (owner and persist flags).
    assert_eq!(found, Ownership::OwnedPersistent);
    assert_eq!(ns.sh("nft list tables").trim(), "");
}

#[test]
fn the_nflog_probe_finds_nfnetlink_log_on_this_kernel_and_leaves_nothing() {
    let ns = NetNs::new("nflogprobe");
    // This kernel has nfnetlink_log (built in): the judge chains report.
    assert!(ns.enter(|| portguard_nft::probe_nflog().unwrap()));
    assert_eq!(ns.sh("nft list tables").trim(), "");
}

/// Twin tier: a deleted or otherwise changed copy is recreated by the
/// monitor's own thread, exactly as last reconciled, before anybody
/// reconciles (the loop may be busy with something else); owned tables
/// are never recreated by it (the monitor's socket would own them).
#[test]
fn the_monitor_recreates_a_deleted_or_changed_unowned_copy_exactly_and_nothing_else() {
    let ns = NetNs::new("recreate");
    let recreation = portguard_nft::Recreation::new();
    let mut twin = table_in(&ns, TABLE_NAME, Ownership::Unowned).recreated_by(&recreation);
    let mut owned = table_in(&ns, "portguard_owned", Ownership::Owned).recreated_by(&recreation);
    let rules = ruleset("[[allow]]\nport = 8080\n[[allow]]\nport = 9000\nproto = \"udp\"\n");
    twin.reconcile(&rules).unwrap();
    owned.reconcile(&rules).unwrap();
    assert_eq!(recreation.tables(), vec!["portguard".to_string()]);
    let rx = follow(recreating_monitor(&ns, &recreation, None));
    let next_foreign_change = || loop {
        match rx.recv_timeout(Duration::from_secs(5)).expect("a change") {
            portguard_nft::MonitorEvent::Change(c) if !c.ours => break c,
            _ => continue,
        }
    };
    for round in 0..5 {
        ns.sh("nft delete table inet portguard");
        let change = next_foreign_change();
        assert!(change.deleted.contains("inet portguard"), "{change:?}");
        assert_eq!(
            change
                .recreated
                .iter()
                .map(|r| r.table.as_str())
                .collect::<Vec<_>>(),
            vec!["portguard"],
            "round {round}: {change:?}"
        );
        println!(
            "round {round}: recreated {:?} after the deletion was heard",
            change.recreated[0].took
        );
        // Nobody called reconcile: the kernel holds exactly the ruleset.
        assert_eq!(twin.check(&rules).unwrap(), vec![], "round {round}");
    }
    // Any other change to a copy is undone the same way, whole and at
    // once: its rules flushed (the input chain would accept everything),
    // the table made dormant (as good as deleted for packets), a foreign
    // element, a foreign rule, and a copy replaced by an empty table of
    // the same name in one transaction (never absent: not a deletion).
    for tamper in [
        "nft flush table inet portguard",
        "nft add table inet portguard '{ flags dormant; }'",
        "nft add element inet portguard allow_tcp '{ 22 }'",
        "nft insert rule inet portguard forward accept",
        "nft 'delete table inet portguard; add table inet portguard'",
    ] {
        ns.sh(tamper);
        let change = next_foreign_change();
        assert!(change.deleted.is_empty(), "{tamper}: {change:?}");
        assert_eq!(
            change
                .recreated
                .iter()
                .map(|r| (r.table.as_str(), r.found))
                .collect::<Vec<_>>(),
            vec![("portguard", portguard_nft::Found::Changed)],
            "{tamper}: {change:?}"
        );
        assert_eq!(twin.check(&rules).unwrap(), vec![], "{tamper}");
    }
    // The loop's reconcile then finds the table as it should be.
    assert!(matches!(
        twin.reconcile(&rules).unwrap(),
        TableOutcome::Unchanged
    ));
}

/// A deletion whose notifications were lost in an overflow (a flood of
/// other changes while the monitor was busy) is still undone by the
/// monitor itself: on an overflow it puts back every kept copy that is
/// missing, instead of leaving the host on one copy until the loop's
/// slower restore. A copy that exists is left as it is.
#[test]
fn after_an_overflow_the_monitor_recreates_a_copy_whose_deletion_it_did_not_hear() {
    let ns = NetNs::new("recreate-ovf");
    let recreation = portguard_nft::Recreation::new();
    let mut primary = table_in(&ns, TABLE_NAME, Ownership::Unowned).recreated_by(&recreation);
    let mut standby =
        table_in(&ns, "portguard_standby", Ownership::Unowned).recreated_by(&recreation);
    let rules = ruleset("[[allow]]\nport = 8080\n");
    primary.reconcile(&rules).unwrap();
    standby.reconcile(&rules).unwrap();
    let monitor = recreating_monitor(&ns, &recreation, Some(4096));
    // Hundreds of notifications fill the socket while nobody reads; the
    // deletion's are dropped.
    let script: String = (0..400).map(|i| format!("add table ip t{i}\n")).collect();
    ns.sh(&format!("nft -f - <<'EOF'\n{script}EOF"));
    ns.sh("nft delete table inet portguard_standby");
    let rx = follow(monitor);
    let recreated = loop {
        match rx
            .recv_timeout(Duration::from_secs(5))
            .expect("an overflow")
        {
            portguard_nft::MonitorEvent::Overflow { recreated } => break recreated,
            portguard_nft::MonitorEvent::Change(c) => {
                assert!(c.deleted.is_empty(), "the deletion was heard: {c:?}")
            }
        }
    };
    assert_eq!(
        recreated
            .iter()
            .map(|r| r.table.as_str())
            .collect::<Vec<_>>(),
        vec!["portguard_standby"]
    );
    assert_eq!(standby.check(&rules).unwrap(), vec![]);
    assert_eq!(primary.check(&rules).unwrap(), vec![]);
}

/// A change of the ruleset (a reload) racing a deletion storm, the monitor
/// recreating each deleted copy. A batch that meets a table the reconcile
/// did not read (deleted since: `delete table` refused; recreated by the
/// monitor since: the new table's sets clash with it) is a race, not a
/// refusal: the reconcile reads again. A failed reconcile makes the daemon
/// refuse a good configuration and roll back. What is left is the storm's
/// own doing: a change right after the last round's commit, which the
/// final read sees before the monitor has put the copy back (printed).
#[test]
fn a_ruleset_change_racing_deletions_and_the_monitors_recreations_is_applied() {
    let ns = NetNs::new("recreate-race");
    let recreation = portguard_nft::Recreation::new();
    let mut twin = table_in(&ns, TABLE_NAME, Ownership::Unowned).recreated_by(&recreation);
    let single = ruleset("[[allow]]\nport = 8080\n");
    let range = ruleset("[[allow]]\nport = \"8000-8010\"\n");
    twin.reconcile(&single).unwrap();
    // Followed (kept until the test ends) so that it keeps recreating.
    let _events = follow(recreating_monitor(&ns, &recreation, None));
    // Another process deletes the copy every 10 ms or so (a storm the
    // monitor keeps up with: the copy is back within a millisecond).
    let mut deleter = std::process::Command::new("nsenter")
        .arg(format!("--net={}", ns.path()))
        .args([
            "sh",
            "-c",
            "while :; do nft delete table inet portguard 2>/dev/null; sleep 0.01; done",
        ])
        .spawn()
        .unwrap();
    let mut failures = Vec::new();
    for round in 0..300 {
        let desired = if round % 2 == 0 { &range } else { &single };
        if let Err(e) = twin.reconcile(desired) {
            failures.push(format!("round {round}: {e}"));
        }
    }
    deleter.kill().unwrap();
    deleter.wait().unwrap();
    println!("{} of 300 reconciles failed: {failures:#?}", failures.len());
    let refused: Vec<_> = failures
        .iter()
        .filter(|f| f.contains("kernel refused"))
        .collect();
    assert!(refused.is_empty(), "{refused:#?}");
}
