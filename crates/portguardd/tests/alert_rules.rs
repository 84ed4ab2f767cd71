//! The Prometheus files the package ships (packaging/prometheus/): promtool
//! accepts the alerting rules and passes their unit tests, every query of
//! the fleet dashboard is valid PromQL (checked as a recording rule), and
//! every `portguard_*` metric the rules and the dashboard use is one the
//! daemon exposes, so a renamed metric breaks a test here.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde_json::Value;

const RULES: &str = "packaging/prometheus/portguard.rules.yml";
const RULE_TESTS: &str = "packaging/prometheus/portguard.rules.test.yml";
const DASHBOARD: &str = "packaging/prometheus/portguard-fleet.dashboard.json";
const METRICS_SOURCES: &str = "crates/portguardd/src/metrics";

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read(relative: &str) -> String {
    let path = workspace().join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Runs promtool in the workspace (the paths above are relative to it).
fn promtool(args: &[&str]) -> String {
    portguard_testkit::promtool::promtool(&workspace(), args, b"")
}

#[test]
fn the_shipped_alerting_rules_pass_promtool_check_rules() {
    let out = promtool(&["check", "rules", RULES]);
    assert!(out.contains("SUCCESS"), "{out}");
}

#[test]
fn the_shipped_alerting_rules_pass_their_promtool_unit_tests() {
    let out = promtool(&["test", "rules", RULE_TESTS]);
    assert!(out.contains("SUCCESS"), "{out}");
}

/// The names after `- alert:` in the rules file.
fn alert_names(rules: &str) -> Vec<String> {
    rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert:"))
        .map(|name| name.trim().to_string())
        .collect()
}

#[test]
fn every_alert_has_unit_tests_that_fire_it_and_a_line_in_operations_md() {
    let rules = read(RULES);
    let tests = read(RULE_TESTS);
    let operations = read("docs/operations.md");
    let alerts = alert_names(&rules);
    assert!(alerts.len() >= 9, "too few alerts found: {alerts:?}");
    for alert in &alerts {
        // An alert_rule_test that expects the alert to fire has exp_labels
        // after its alertname line; one that expects silence has `[]`.
        let cases: Vec<&str> = tests
            .split("alertname: ")
            .skip(1)
            .filter(|case| case.starts_with(&format!("{alert}\n")))
            .collect();
        assert!(
            cases.iter().any(|c| c.contains("exp_labels:")),
            "{alert}: no test in {RULE_TESTS} expects it to fire"
        );
        assert!(
            cases.iter().any(|c| c.contains("exp_alerts: []")),
            "{alert}: no test in {RULE_TESTS} expects it to stay quiet"
        );
        assert!(
            operations.contains(&format!("`{alert}`")),
            "{alert} is not described in docs/operations.md"
        );
    }
}

/// Every `expr` of a dashboard's panel targets, rows' panels included.
fn target_exprs(panel: &Value, found: &mut Vec<String>) {
    if let Some(targets) = panel.get("targets").and_then(Value::as_array) {
        for target in targets {
            if let Some(expr) = target.get("expr").and_then(Value::as_str) {
                found.push(expr.to_string());
            }
        }
    }
    if let Some(panels) = panel.get("panels").and_then(Value::as_array) {
        for inner in panels {
            target_exprs(inner, found);
        }
    }
}

/// The selectors of the dashboard's `label_values(selector, label)`
/// variables: Grafana's function, not PromQL, but its selector is.
fn variable_selectors(dashboard: &Value) -> Vec<String> {
    let empty = Vec::new();
    let variables = dashboard
        .pointer("/templating/list")
        .and_then(Value::as_array)
        .unwrap_or(&empty);
    variables
        .iter()
        .filter_map(|v| {
            v.pointer("/query/query")
                .or_else(|| v.get("query"))
                .and_then(Value::as_str)
        })
        .filter_map(|q| q.trim().strip_prefix("label_values("))
        .filter_map(|args| args.rsplit_once(','))
        .map(|(selector, _label)| selector.trim().to_string())
        .collect()
}

/// The query as Prometheus would see it once Grafana has filled in its
/// variables: the interval variables become a duration, any other variable
/// (the dashboard's `$instance`, used only inside `=~"..."`) a regular
/// expression matching everything.
fn as_promql(expr: &str) -> String {
    let mut text = expr.to_string();
    for interval in ["__rate_interval", "__interval", "__range"] {
        text = text
            .replace(&format!("${{{interval}}}"), "5m")
            .replace(&format!("${interval}"), "5m");
    }
    let mut out = String::new();
    let mut rest = text.as_str();
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let (name_len, skip) = match after.strip_prefix('{') {
            Some(braced) => (braced.find('}').unwrap_or(braced.len()), 2),
            None => (
                after
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(after.len()),
                0,
            ),
        };
        assert!(name_len > 0, "a lone $ in {expr:?}");
        out.push_str(".*");
        rest = &after[(name_len + skip).min(after.len())..];
    }
    out.push_str(rest);
    out
}

fn dashboard_queries() -> Vec<String> {
    let dashboard: Value = serde_json::from_str(&read(DASHBOARD)).expect("the dashboard is JSON");
    let mut exprs = Vec::new();
    target_exprs(&dashboard, &mut exprs);
    exprs.extend(variable_selectors(&dashboard));
    exprs
}

#[test]
fn every_dashboard_query_passes_promtool_check_rules() {
    let queries = dashboard_queries();
    assert!(queries.len() >= 20, "too few queries found: {queries:?}");
    // One recording rule per query; a JSON string is a valid YAML
    // double-quoted scalar, so every expression is quoted as JSON.
    let mut rules = String::from("groups:\n  - name: portguard_dashboard\n    rules:\n");
    for (n, query) in queries.iter().enumerate() {
        let promql = as_promql(query);
        assert!(!promql.contains('$'), "a variable left in {promql:?}");
        let quoted = serde_json::to_string(&promql).expect("a string serializes");
        rules.push_str(&format!(
            "      - record: portguard_dashboard:query_{n}\n        expr: {quoted}\n"
        ));
    }
    let dir = tempfile::tempdir().expect("a temporary directory");
    let file = dir.path().join("dashboard.rules.yml");
    std::fs::write(&file, &rules).expect("writing the dashboard's rules");
    let out = promtool(&["check", "rules", file.to_str().expect("a UTF-8 path")]);
    assert!(
        out.contains(&format!("SUCCESS: {} rules found", queries.len())),
        "{out}\n{rules}"
    );
}

/// Every `portguard_[a-z0-9_]+` word in the text.
fn portguard_names(text: &str) -> BTreeSet<String> {
    let is_name_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_';
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("portguard_") {
        let starts_a_word = rest[..at]
            .chars()
            .next_back()
            .is_none_or(|c| !(c.is_ascii_alphanumeric() || c == '_'));
        let after = &rest[at..];
        let len = after.find(|c| !is_name_char(c)).unwrap_or(after.len());
        if starts_a_word {
            names.insert(after[..len].to_string());
        }
        rest = &after[len..];
    }
    names
}

/// The names the daemon's metrics code writes (its exposition tests keep
/// them true).
fn exposed_names() -> BTreeSet<String> {
    let dir = workspace().join(METRICS_SOURCES);
    let mut names = BTreeSet::new();
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("a directory entry").path();
        if path.extension().is_some_and(|e| e == "rs") {
            let source = std::fs::read_to_string(&path).expect("a metrics source file");
            names.extend(portguard_names(&source));
        }
    }
    names
}

#[test]
fn every_portguard_metric_in_the_rules_their_tests_and_the_dashboard_is_exposed() {
    let exposed = exposed_names();
    for file in [RULES, RULE_TESTS, DASHBOARD] {
        let used = portguard_names(&read(file));
        assert!(!used.is_empty(), "{file} names no portguard_ metric");
        let unknown: Vec<&String> = used.difference(&exposed).collect();
        assert!(
            unknown.is_empty(),
            "{file} uses metrics the daemon does not expose: {unknown:?}\nexposed: {exposed:?}"
        );
    }
}

#[test]
fn grafana_variables_become_promql() {
    assert_eq!(
        as_promql(r#"rate(x{instance=~"$instance"}[$__rate_interval])"#),
        r#"rate(x{instance=~".*"}[5m])"#
    );
    assert_eq!(
        as_promql(r#"x{instance=~"${instance}",a="$b"}[${__interval}]"#),
        r#"x{instance=~".*",a=".*"}[5m]"#
    );
}

#[test]
fn metric_names_are_found_as_whole_words() {
    let names = portguard_names(
        "a{x=\"1\"} portguard_up == 0 and my_portguard_x or portguard_published_port{v}",
    );
    let want: BTreeSet<String> = ["portguard_up", "portguard_published_port"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(names, want);
}
