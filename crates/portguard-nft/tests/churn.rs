//! Reads that finish: the guard's table is read back and compared after
//! every change, and a host where other programs commit to their own
//! tables all the time (fail2ban, crowdsec, a service mesh) must not stall
//! that read, while a change to the guard's own table during the read is
//! still caught. Each test in a network namespace of its own.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use portguard_config::Config;
use portguard_core::ruleset::TABLE_NAME;
use portguard_core::{Ruleset, Snapshot, plan};
use portguard_nft::{GuardTable, Ownership, TableSpec};
use portguard_testkit::NetNs;

fn ruleset(toml: &str) -> Ruleset {
    plan(&Config::from_toml_str(toml).unwrap(), &Snapshot::default())
}

/// `n` single-port allow entries on non-adjacent ports (none merge into a
/// range), the last one `last`.
fn allow_entries(n: usize, last: u16) -> String {
    (0..n)
        .map(|i| {
            let port = if i == n - 1 {
                u32::from(last)
            } else {
                10_000 + 3 * i as u32
            };
            format!("[[allow]]\nport = {port}\n")
        })
        .collect()
}

fn guard_table(ns: &NetNs) -> GuardTable {
    ns.enter(|| {
        GuardTable::open(TableSpec {
            name: TABLE_NAME.into(),
            ownership: Ownership::Unowned,
        })
        .unwrap()
    })
}

/// Another process committing: `nft -i` in the namespace, fed one line
/// (one transaction) at a time, `per_second` times a second, cycling
/// through `lines`, until dropped.
struct Committer {
    child: Child,
    stop: Arc<AtomicBool>,
    writer: Option<JoinHandle<()>>,
    committed: Arc<AtomicUsize>,
}

impl Committer {
    fn start(ns: &NetNs, setup: &str, lines: Vec<String>, per_second: u32) -> Committer {
        if !setup.is_empty() {
            ns.sh(&format!("nft -f - <<'EOF'\n{setup}\nEOF"));
        }
        let mut child = Command::new("nsenter")
            .arg(format!("--net={}", ns.path()))
            .args(["nft", "-i"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nft");
        let mut stdin = child.stdin.take().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let committed = Arc::new(AtomicUsize::new(0));
        let period = Duration::from_secs(1) / per_second;
        let writer = {
            let (stop, committed) = (Arc::clone(&stop), Arc::clone(&committed));
            std::thread::spawn(move || {
                let mut next = Instant::now();
                for line in lines.iter().cycle() {
                    if stop.load(Ordering::Relaxed) || writeln!(stdin, "{line}").is_err() {
                        return;
                    }
                    committed.fetch_add(1, Ordering::Relaxed);
                    next += period;
                    std::thread::sleep(next.saturating_duration_since(Instant::now()));
                }
            })
        };
        Committer {
            child,
            stop,
            writer: Some(writer),
            committed,
        }
    }

    fn committed(&self) -> usize {
        self.committed.load(Ordering::Relaxed)
    }
}

impl Drop for Committer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A ban list in a table of its own, one element added or removed per
/// transaction, 100 times a second: what issue 18 measured (6 of 6
/// reloads of 10,000 entries refused with "kept changing while it was
/// read", a removed entry left in force).
fn unrelated_churn(ns: &NetNs) -> Committer {
    let lines = (0..50)
        .flat_map(|i| {
            [
                format!("add element inet banlist v4 {{ 192.0.2.{i} }}"),
                format!("delete element inet banlist v4 {{ 192.0.2.{i} }}"),
            ]
        })
        .collect();
    Committer::start(
        ns,
        "table inet banlist { set v4 { type ipv4_addr; }; }",
        lines,
        100,
    )
}

#[test]
fn reloads_of_10000_entries_succeed_while_another_table_changes_100_times_a_second() {
    let ns = NetNs::new("churn");
    let mut table = guard_table(&ns);
    let base = ruleset(&allow_entries(10_000, 9_000));
    table.reconcile(&base).unwrap();
    let churn = unrelated_churn(&ns);
    let started = churn.committed();
    let mut refused = Vec::new();
    let reloads: u16 = 6;
    let began = Instant::now();
    for i in 0..reloads {
        // Each reload removes the last entry and adds another: the removed
        // one must be gone from the kernel.
        let next = ruleset(&allow_entries(10_000, 9_001 + i));
        if let Err(e) = table.reconcile(&next) {
            refused.push(e.to_string());
        }
    }
    let took = began.elapsed();
    let commits = churn.committed() - started;
    drop(churn);
    eprintln!(
        "{} of {reloads} reloads succeeded under {commits} unrelated commits in {:.1} s ({:.0}/s)",
        reloads - refused.len() as u16,
        took.as_secs_f64(),
        commits as f64 / took.as_secs_f64()
    );
    assert_eq!(refused, Vec::<String>::new(), "reloads refused");
    let last = ruleset(&allow_entries(10_000, 9_000 + reloads));
    assert_eq!(
        table.check(&last).unwrap(),
        vec![],
        "the kernel holds exactly the last reload"
    );
}

/// A read that overlaps a change of the guard's own table must never
/// combine what it read before the change with what it read after. Two
/// states alternate, neither the desired one: A has a foreign element in
/// `allow_tcp`, B lacks an element of `docker_api_tcp`. A read that took
/// `allow_tcp` from B and `docker_api_tcp` from A would see exactly the
/// desired table, which the kernel never held.
#[test]
fn a_change_to_the_guard_table_during_a_read_is_never_read_as_the_desired_table() {
    let ns = NetNs::new("ownchurn");
    let mut table = guard_table(&ns);
    let desired = ruleset("[[allow]]\nport = 8080\n");
    table.reconcile(&desired).unwrap();
    let to_a = "add element inet portguard allow_tcp { 9999 }; \
                add element inet portguard docker_api_tcp { 2376 }";
    let to_b = "delete element inet portguard allow_tcp { 9999 }; \
                delete element inet portguard docker_api_tcp { 2376 }";
    ns.sh(&format!("nft '{to_a}'"));
    let churn = Committer::start(&ns, "", vec![to_b.into(), to_a.into()], 200);
    let (mut differing, mut refused) = (0, 0);
    let began = Instant::now();
    while began.elapsed() < Duration::from_secs(5) {
        match table.check(&desired) {
            Ok(found) => {
                assert!(
                    !found.is_empty(),
                    "a read combined two states into the desired table, which the kernel never held"
                );
                differing += 1;
            }
            Err(_) => refused += 1,
        }
    }
    let commits = churn.committed();
    drop(churn);
    eprintln!(
        "{differing} reads saw a state the kernel held, {refused} were refused, {commits} changes to the table"
    );
    assert!(commits > 0);
}
