//! Per-packet cost (issue 11, item 3): forwarded TCP throughput (iperf3)
//! and the new-connection rate (a connect / read / close loop on N threads
//! for a fixed time) from an outside namespace, through a DNAT'ed published
//! port, to a "container" namespace behind a bridge (testkit's `lab()`),
//! for: no guard; the guard with 10 and with 10,000 allow entries (applied
//! through GuardTable); and a linear list of 10,000 `tcp dport N accept`
//! rules in a chain of its own at the same hook, written with `nft -f`.
//! Rounds are interleaved (every variant once per round), medians of the
//! rounds, ratios against "no guard" from this run. Prints; asserts only
//! that each variant really filters (an unlisted port stays closed).
//!
//! Then the guard's variants again as back-to-back pairs with no guard
//! (each pair measured one right after the other, the order alternating):
//! the ratio of each pair, and their median and quartiles. On two shared
//! cores the machine drifts more between rounds than the guard costs
//! (no guard alone ranged 9,899-17,168 conn/s within one earlier run);
//! within a pair the drift falls on both sides.
//!
//! Last, the guard's cost as the CPU sees it, which the timings above
//! cannot resolve: each variant under the connection load (and under
//! iperf3) while `perf record -a -g` samples both cores, and the share of
//! busy samples taken inside `nft_do_chain_inet`, the hook function of
//! `inet` tables, through which the guard's chains (and the linear list,
//! and nothing else here: the lab's DNAT is an `ip` table) judge every
//! packet. On a load that keeps the cores busy, a variant whose chains
//! take a share `s` of the work can keep at most `1 - s` of the rate; the
//! linear list checks that model against its measured ratio. A fifth
//! variant, one chain at the same hook whose only rule accepts
//! established traffic, is the floor any forward filter pays.
//!
//! PG_BENCH_SECONDS (default 3) sets each measurement's duration,
//! PG_BENCH_ROUNDS (default 3) the rounds, PG_BENCH_THREADS (default 2)
//! the client threads, PG_BENCH_PAIRS (default 20) the pairs per variant
//! and PG_BENCH_PAIR_SECONDS (default 2) each side of a pair,
//! PG_BENCH_PROFILE_SECONDS (default 5) each profiled load. `-- --bench
//! profile-only` runs only the profile.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{Scratch, allow_toml, env_num, guard_table, load, median_f64, ruleset_of};
use nix::sys::socket::{setsockopt, sockopt};
use portguard_nft::GuardTable;
use portguard_testkit::{Lab, lab, tcp_probe};

/// Published port of the lab's `web` (greets and closes): the rate target.
const WEB: &str = "10.99.0.1:8080";
/// Published port of the lab's `db`, allowed by no variant.
const DB: &str = "10.99.0.1:8081";
/// Published port this benchmark adds for iperf3 in the container.
const IPERF_PORT: u16 = 8090;
const IPERF_INNER: u16 = 5201;

#[derive(Clone, Copy, PartialEq)]
enum Variant {
    NoGuard,
    Guard(usize),
    Linear(usize),
    /// The least any forward filter costs: a chain at the guard's hook
    /// whose one rule accepts established traffic (it filters nothing).
    Floor,
}

impl Variant {
    fn label(self) -> String {
        match self {
            Variant::NoGuard => "no guard".into(),
            Variant::Guard(n) => format!("portguard, {n} entries"),
            Variant::Linear(n) => format!("linear list, {n} rules"),
            Variant::Floor => "one rule (established)".into(),
        }
    }
}

/// A hand-written allowlist as DOCKER-USER chains and ufw-docker keep
/// one: established traffic first, then one rule per allowed (container)
/// port, the ports in use last, then new connections dropped.
fn linear_ruleset(n: usize) -> String {
    let mut s = String::from(
        "table inet linear {\n chain forward {\n  type filter hook forward priority filter - 1; policy accept;\n  ct state established,related accept\n",
    );
    for i in 0..n - 2 {
        s.push_str(&format!("  tcp dport {} accept\n", 10_000 + 3 * i));
    }
    s.push_str(&format!(
        "  tcp dport 80 accept\n  tcp dport {IPERF_INNER} accept\n  oifname \"docker0\" ct state new drop\n }}\n}}\n"
    ));
    s
}

/// Brings the host's filtering to `variant`, leaving nothing of the others.
fn configure(lab: &Lab, table: &mut Option<GuardTable>, variant: Variant, linear_file: &str) {
    lab.host
        .sh("nft delete table inet linear 2>/dev/null; conntrack -F 2>/dev/null; true");
    if let Some(t) = table.as_mut() {
        t.remove().unwrap();
    }
    match variant {
        Variant::NoGuard => {}
        Variant::Guard(n) => {
            // 8080 (web) and 8090 (iperf3) allowed, n - 2 other ports.
            let mut toml = allow_toml(n - 1, 8080, false);
            toml.push_str(&format!("[[allow]]\nport = {IPERF_PORT}\n"));
            let ruleset = ruleset_of(&toml);
            // The handle's socket lives in the host namespace it was
            // opened in, whichever thread calls.
            table.as_mut().unwrap().reconcile(&ruleset).unwrap();
        }
        Variant::Linear(_) => {
            lab.host.sh(&format!("nft -f {linear_file}"));
        }
        Variant::Floor => {
            lab.host.sh(
                "nft add table inet linear && nft add chain inet linear forward '{ type filter hook forward priority filter - 1; policy accept; }' && nft add rule inet linear forward ct state established,related accept",
            );
        }
    }
    let open = |target: &str| {
        tcp_probe(
            &lab.wan,
            target.parse().unwrap(),
            Duration::from_millis(500),
        )
    };
    assert!(open(WEB), "{}: the web port answers", variant.label());
    assert_eq!(
        open(DB),
        matches!(variant, Variant::NoGuard | Variant::Floor),
        "{}: the unlisted port is closed exactly when something filters",
        variant.label()
    );
}

/// iperf3 from `wan` to the published iperf port; received bits per second.
fn throughput(lab: &Lab, seconds: u64) -> f64 {
    let out = lab.wan.sh(&format!(
        "iperf3 -c 10.99.0.1 -p {IPERF_PORT} -t {seconds} -J"
    ));
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    json["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .unwrap_or_else(|| panic!("iperf3 gave no result: {out}"))
}

/// New connections per second: `threads` loops in `wan`, each connecting,
/// reading the greeting to its end and closing with a reset (no TIME_WAIT
/// to run out of ports with), for `seconds`. Failed attempts are counted
/// apart and not in the rate.
fn connection_rate(lab: &Lab, threads: u64, seconds: u64) -> (f64, u64) {
    let target: SocketAddr = WEB.parse().unwrap();
    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds);
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let (done, failed) = (done.clone(), failed.clone());
            lab.wan.spawn(move || {
                let mut buf = Vec::with_capacity(16);
                while Instant::now() < deadline {
                    let ok = TcpStream::connect_timeout(&target, Duration::from_secs(1))
                        .and_then(|mut s| {
                            s.set_read_timeout(Some(Duration::from_secs(1)))?;
                            buf.clear();
                            s.read_to_end(&mut buf)?;
                            setsockopt(
                                &s,
                                sockopt::Linger,
                                &nix::libc::linger {
                                    l_onoff: 1,
                                    l_linger: 0,
                                },
                            )?;
                            Ok(buf.as_slice() == b"web\n")
                        })
                        .unwrap_or(false);
                    if ok { &done } else { &failed }.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let elapsed = started.elapsed().as_secs_f64();
    (
        done.load(Ordering::Relaxed) as f64 / elapsed,
        failed.load(Ordering::Relaxed),
    )
}

/// `variant` against no guard, `pairs` times, back to back, the order
/// alternating; each pair's ratios (variant / no guard) of throughput and
/// of the new-connection rate.
fn paired_ratios(
    lab: &Lab,
    table: &mut Option<GuardTable>,
    variant: Variant,
    linear_file: &str,
    (pairs, seconds, threads): (u64, u64, u64),
) -> (Vec<f64>, Vec<f64>) {
    let mut measure = |v: Variant| {
        configure(lab, table, v, linear_file);
        (
            throughput(lab, seconds),
            connection_rate(lab, threads, seconds).0,
        )
    };
    let (mut tput, mut rate) = (Vec::new(), Vec::new());
    for i in 0..pairs {
        let (guarded, bare) = if i % 2 == 0 {
            let g = measure(variant);
            (g, measure(Variant::NoGuard))
        } else {
            let b = measure(Variant::NoGuard);
            (measure(variant), b)
        };
        tput.push(guarded.0 / bare.0);
        rate.push(guarded.1 / bare.1);
    }
    (tput, rate)
}

/// Where the machine's CPU went while a load ran, from `perf record -a -g`
/// (the VM has no hardware counters: `cpu-clock` samples).
#[derive(Default)]
struct Profile {
    /// Samples whose innermost frame is not the idle loop.
    busy: u64,
    /// Busy samples with `nft_do_chain_inet` on the stack: inside the
    /// chains of an `inet` table.
    in_inet_chains: u64,
}

/// Sampling frequency per core (Hz).
const PROFILE_HZ: u64 = 2_999;

/// Runs `load` while perf samples every core for `seconds`.
fn profiled<T>(seconds: u64, load: impl FnOnce() -> T) -> (Profile, T) {
    let file = std::env::temp_dir().join(format!("pgbench-{}-perf.data", std::process::id()));
    let mut perf = Command::new("perf")
        .args([
            "record",
            "-q",
            "-a",
            "-g",
            "-F",
            &PROFILE_HZ.to_string(),
            "-o",
        ])
        .arg(&file)
        .args(["--", "sleep", &seconds.to_string()])
        .stdout(Stdio::null())
        .spawn()
        .expect("perf (Debian's linux-perf) runs");
    let result = load();
    assert!(perf.wait().unwrap().success(), "perf record failed");
    let script = Command::new("perf")
        .args(["script", "-F", "comm,tid,ip,sym", "-i"])
        .arg(&file)
        .stderr(Stdio::null())
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&file);
    (profile_of(&String::from_utf8_lossy(&script.stdout)), result)
}

/// Counts `perf script` samples: blocks of a header line and one line per
/// frame, innermost first, separated by blank lines.
fn profile_of(script: &str) -> Profile {
    let mut profile = Profile::default();
    for sample in script.split("\n\n") {
        let mut frames = sample
            .lines()
            .skip(1)
            .filter_map(|l| l.split_whitespace().nth(1));
        let Some(leaf) = frames.next() else { continue };
        if leaf.contains("halt") || leaf.ends_with("idle") || leaf.contains("idle_poll") {
            continue;
        }
        profile.busy += 1;
        if leaf == "nft_do_chain_inet" || frames.any(|f| f == "nft_do_chain_inet") {
            profile.in_inet_chains += 1;
        }
    }
    profile
}

/// The profile table: each variant under the connection load, then under
/// iperf3, with perf sampling.
fn profile_variants(
    lab: &Lab,
    table: &mut Option<GuardTable>,
    linear_file: &str,
    seconds: u64,
    threads: u64,
) {
    let variants = [
        Variant::NoGuard,
        Variant::Guard(10),
        Variant::Guard(10_000),
        Variant::Linear(10_000),
        Variant::Floor,
    ];
    let load_before = load();
    let mut rows = Vec::new();
    for variant in variants {
        configure(lab, table, variant, linear_file);
        let (conn, (rate, _)) = profiled(seconds, || connection_rate(lab, threads, seconds));
        let (bulk, bits) = profiled(seconds, || throughput(lab, seconds));
        rows.push((variant, rate, conn, bits, bulk));
    }
    configure(lab, table, Variant::NoGuard, linear_file);
    println!();
    println!(
        "CPU profile: perf record -a -g at {PROFILE_HZ} Hz per core, {seconds} s per load; share = busy samples inside inet chains (nft_do_chain_inet)"
    );
    println!("(before: {load_before}; after: {})", load());
    println!(
        "{:<28} {:>10} {:>8} {:>8} {:>9} {:>10} {:>9} | {:>8} {:>8} {:>8} {:>9}",
        "variant",
        "conn/s",
        "ratio",
        "busy",
        "in chains",
        "us/conn",
        "share",
        "Gbit/s",
        "busy",
        "in ch.",
        "share"
    );
    let base_rate = rows[0].1;
    for (variant, rate, conn, bits, bulk) in rows {
        let share = |p: &Profile| p.in_inet_chains as f64 / p.busy.max(1) as f64;
        // CPU time inside the chains per completed connection.
        let us_per_conn =
            conn.in_inet_chains as f64 / PROFILE_HZ as f64 / (rate * seconds as f64) * 1e6;
        println!(
            "{:<28} {:>10.0} {:>8.3} {:>8} {:>9} {:>10.2} {:>8.2}% | {:>8.2} {:>8} {:>8} {:>8.2}%",
            variant.label(),
            rate,
            rate / base_rate,
            conn.busy,
            conn.in_inet_chains,
            us_per_conn,
            share(&conn) * 100.0,
            bits / 1e9,
            bulk.busy,
            bulk.in_inet_chains,
            share(&bulk) * 100.0,
        );
    }
    println!(
        "a variant whose chains take share s of a load that keeps the cores busy keeps at most 1 - s of its rate"
    );
}

/// Median, first and third quartile (nearest rank), and the share of
/// `ratios` at or above 0.99.
fn quartiles(mut ratios: Vec<f64>) -> (f64, f64, f64, f64) {
    ratios.sort_by(f64::total_cmp);
    let at = |q: usize| ratios[(ratios.len() * q / 4).min(ratios.len() - 1)];
    let share = ratios.iter().filter(|r| **r >= 0.99).count() as f64 / ratios.len() as f64;
    (at(2), at(1), at(3), share)
}

fn main() {
    let quick = !std::env::args().any(|a| a == "--bench");
    let seconds = if quick {
        1
    } else {
        env_num("PG_BENCH_SECONDS", 3)
    };
    let rounds = if quick {
        1
    } else {
        env_num("PG_BENCH_ROUNDS", 3)
    };
    let threads = env_num("PG_BENCH_THREADS", 2);
    let lab = lab();
    lab.host.sh(&format!(
        "nft add rule ip nat pre tcp dport {IPERF_PORT} dnat to 172.30.0.2:{IPERF_INNER}"
    ));
    // Short conntrack timeouts for closed connections, so a run's
    // leftovers cannot fill the table for the next (per namespace).
    lab.host.sh(
        "sysctl -qw net.netfilter.nf_conntrack_tcp_timeout_close=1 net.netfilter.nf_conntrack_tcp_timeout_time_wait=1",
    );
    lab.wan
        .sh("sysctl -qw net.ipv4.ip_local_port_range='1024 65000'");
    lab.ctr
        .sh(&format!("iperf3 -s -D -p {IPERF_INNER} >/dev/null"));
    // iperf3 daemonizes; wait for its listener.
    let iperf: SocketAddr = format!("172.30.0.2:{IPERF_INNER}").parse().unwrap();
    let up = Instant::now();
    while !lab
        .host
        .enter(move || TcpStream::connect_timeout(&iperf, Duration::from_millis(200)).is_ok())
    {
        assert!(
            up.elapsed() < Duration::from_secs(5),
            "iperf3 server did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let scratch = Scratch::new("packet");
    let linear_file = scratch.path().join("linear.nft");
    std::fs::write(&linear_file, linear_ruleset(10_000)).unwrap();
    let linear_file = linear_file.display().to_string();
    let mut table = Some(lab.host.enter(guard_table));
    let profile_seconds = if quick {
        1
    } else {
        env_num("PG_BENCH_PROFILE_SECONDS", 5)
    };
    if std::env::args().any(|a| a == "profile-only") {
        profile_variants(&lab, &mut table, &linear_file, profile_seconds, threads);
        return;
    }

    let variants = [
        Variant::NoGuard,
        Variant::Guard(10),
        Variant::Guard(10_000),
        Variant::Linear(10_000),
    ];
    let mut tput: Vec<Vec<f64>> = vec![Vec::new(); variants.len()];
    let mut rate: Vec<Vec<f64>> = vec![Vec::new(); variants.len()];
    let mut failures = vec![0u64; variants.len()];
    let load_before = load();
    for _ in 0..rounds {
        for (k, &variant) in variants.iter().enumerate() {
            configure(&lab, &mut table, variant, &linear_file);
            tput[k].push(throughput(&lab, seconds));
            let (r, failed) = connection_rate(&lab, threads, seconds);
            rate[k].push(r);
            failures[k] += failed;
        }
    }
    configure(&lab, &mut table, Variant::NoGuard, &linear_file);
    println!(
        "per-packet cost: {rounds} interleaved rounds of {seconds} s each, medians; {threads} client threads"
    );
    println!("(before: {load_before}; after: {})", load());
    println!(
        "{:<28} {:>12} {:>8} {:>14} {:>8} {:>8}",
        "variant", "Gbit/s", "ratio", "new conn/s", "ratio", "failed"
    );
    let base_t = median_f64(tput[0].clone());
    let base_r = median_f64(rate[0].clone());
    for (k, variant) in variants.iter().enumerate() {
        let (t, r) = (median_f64(tput[k].clone()), median_f64(rate[k].clone()));
        println!(
            "{:<28} {:>12.2} {:>8.3} {:>14.0} {:>8.3} {:>8}",
            variant.label(),
            t / 1e9,
            t / base_t,
            r,
            r / base_r,
            failures[k]
        );
    }
    let pairs = if quick {
        2
    } else {
        env_num("PG_BENCH_PAIRS", 20)
    };
    let pair_seconds = if quick {
        1
    } else {
        env_num("PG_BENCH_PAIR_SECONDS", 2)
    };
    let load_before = load();
    // Per variant: the pairs' throughput ratios and connection-rate ratios.
    type PairRatios = (Vec<f64>, Vec<f64>);
    let paired: Vec<(Variant, PairRatios)> = [Variant::Guard(10_000), Variant::Guard(10)]
        .into_iter()
        .map(|v| {
            let ratios = paired_ratios(
                &lab,
                &mut table,
                v,
                &linear_file,
                (pairs, pair_seconds, threads),
            );
            (v, ratios)
        })
        .collect();
    configure(&lab, &mut table, Variant::NoGuard, &linear_file);
    println!();
    println!(
        "paired with no guard: {pairs} pairs of {pair_seconds} s + {pair_seconds} s, back to back, order alternating; ratio = variant / no guard"
    );
    println!("(before: {load_before}; after: {})", load());
    println!(
        "{:<28} {:>8} {:>14} {:>10} {:>8} {:>14} {:>10}",
        "variant", "Gbit/s", "p25-p75", ">= 0.99", "conn/s", "p25-p75", ">= 0.99"
    );
    for (variant, (tput, rate)) in paired {
        let (tm, t25, t75, ts) = quartiles(tput);
        let (rm, r25, r75, rs) = quartiles(rate);
        println!(
            "{:<28} {tm:>8.3} {:>14} {:>9.0}% {rm:>8.3} {:>14} {:>9.0}%",
            variant.label(),
            format!("{t25:.3}-{t75:.3}"),
            ts * 100.0,
            format!("{r25:.3}-{r75:.3}"),
            rs * 100.0,
        );
    }
    println!();
    println!("each round's figures (Gbit/s | conn/s):");
    for (k, variant) in variants.iter().enumerate() {
        let t: Vec<String> = tput[k].iter().map(|v| format!("{:.2}", v / 1e9)).collect();
        let r: Vec<String> = rate[k].iter().map(|v| format!("{v:.0}")).collect();
        println!(
            "  {:<28} {} | {}",
            variant.label(),
            t.join(" "),
            r.join(" ")
        );
    }
    profile_variants(&lab, &mut table, &linear_file, profile_seconds, threads);
}
