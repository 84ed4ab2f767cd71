//! A kernel that cannot load nfnetlink_log refuses a ruleset holding a
//! `log group` rule; `without_nflog` takes out exactly those rules, so the
//! guard protects without its reports.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use portguard_config::Config;
use portguard_core::plan::{names, without_nflog};
use portguard_core::ruleset::{Rule, Ruleset, Stmt};
use portguard_core::{Snapshot, plan};

fn reports(rule: &Rule) -> bool {
    rule.stmts.iter().any(|s| matches!(s, Stmt::Nflog { .. }))
}

fn count_reports(ruleset: &Ruleset) -> usize {
    ruleset
        .chains
        .iter()
        .flat_map(|c| &c.rules)
        .filter(|r| reports(r))
        .count()
}

#[test]
fn without_nflog_keeps_every_other_rule_and_the_drop() {
    for mode in ["enforce", "audit"] {
        let config = Config::from_toml_str(&format!(
            "[guard]\nmode = \"{mode}\"\n[[allow]]\nport = 8080\n"
        ))
        .unwrap();
        let planned = plan(&config, &Snapshot::default());
        let mut stripped = planned.clone();
        without_nflog(&mut stripped);
        assert!(count_reports(&planned) > 0, "{mode}");
        assert_eq!(count_reports(&stripped), 0, "{mode}");
        assert_eq!(planned.sets, stripped.sets, "{mode}");
        for chain in &planned.chains {
            let kept = stripped.chain(&chain.name).unwrap();
            let others: Vec<&Rule> = chain.rules.iter().filter(|r| !reports(r)).collect();
            assert_eq!(
                kept.rules.iter().collect::<Vec<_>>(),
                others,
                "{mode} {}",
                chain.name
            );
        }
        if mode == "enforce" {
            // The drop, then the accept that ends every judge chain.
            let judge = stripped.chain(names::PUBLISHED_FORWARD).unwrap();
            let [.., drop, last] = judge.rules.as_slice() else {
                panic!("a judge chain without a drop")
            };
            assert!(drop.stmts.contains(&Stmt::Drop));
            assert_eq!(last.stmts, [Stmt::Accept]);
        }
    }
}
