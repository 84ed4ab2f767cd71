//! The guard next to a real dockerd (issue 11, items 4 and 5), in testkit's
//! `docker_lab()` namespaces with a Docker Engine of its own:
//!
//! * `docker run -p` to the verdict: for each round a new container
//!   publishing one port; the time from starting `docker run -d` to the
//!   guard's commit that holds the port (from nf_tables' own
//!   notifications), and to the first `guardctl ports --json` listing it
//!   with its verdict (guardctl is polled; one poll, a process start and a
//!   request, is the resolution, printed too);
//! * footprint: with 100 published ports and Docker connected, the
//!   daemon's RSS, CPU time and wake-ups (context switches of all its
//!   threads, from /proc) over 60 s idle.
//!
//! Prints; asserts only what makes the numbers meaningful (the verdict is
//! the expected one, the 100 ports are all seen).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::os::unix::net::UnixDatagram;
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use common::{Scratch, load, median_p99, ms};
use portguard_nft::{Monitor, MonitorEvent};
use portguard_testkit::daemon::{Daemon, wait_notify, write_config};
use portguard_testkit::{BUSYBOX_IMAGE, Dockerd, NetNs, docker_lab};

/// Every commit touching our table in `ns`, with the time it was received.
fn guard_commits(ns: &NetNs) -> Receiver<Instant> {
    let (tx, rx) = std::sync::mpsc::channel();
    let mut monitor = ns.enter(|| Monitor::open().unwrap());
    // Ends at the first event after the receiver is gone.
    std::thread::spawn(move || {
        while let Ok(event) = monitor.next_event() {
            if let MonitorEvent::Change(change) = event
                && change.tables.contains("inet portguard")
                && tx.send(Instant::now()).is_err()
            {
                return;
            }
        }
    });
    rx
}

/// Host ports and verdicts in `guardctl ports --json`.
fn ports(daemon: &Daemon) -> Vec<(u64, String)> {
    daemon
        .guardctl_json(&["ports"])
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["host_port"].as_u64().unwrap_or(0),
                p["verdict"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// Sum of a `/proc/PID/task/*/status` field over the daemon's threads.
fn threads_sum(pid: u32, field: &str) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("status")).ok())
        .flat_map(|status| {
            status
                .lines()
                .filter_map(|l| l.strip_prefix(field))
                .filter_map(|v| v.trim().parse::<u64>().ok())
                .collect::<Vec<_>>()
        })
        .sum()
}

/// (RSS in KiB, CPU time in clock ticks, context switches, threads).
fn sample(pid: u32) -> (u64, u64, u64, usize) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name (which may hold spaces): state is
    // field 3, utime 14 and stime 15.
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<u64> = after
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    let cpu = fields[11] + fields[12];
    let switches = threads_sum(pid, "voluntary_ctxt_switches:")
        + threads_sum(pid, "nonvoluntary_ctxt_switches:");
    let threads = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .count();
    (rss, cpu, switches, threads)
}

fn clock_ticks() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100)
}

fn main() {
    let quick = !std::env::args().any(|a| a == "--bench");
    let lab = docker_lab();
    let dockerd = Dockerd::start(&lab.host);
    let scratch = Scratch::new("docker");
    let config = scratch.path().join("portguard.toml");
    // web0, web1, ... are allowed by name; `idle` is not.
    let allow: String = (0..20)
        .map(|i| format!("[[allow]]\ncontainer = \"web{i}\"\n"))
        .collect();
    write_config(&config, &allow, &dockerd.socket());
    let notify_path = scratch.path().join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    let daemon = Daemon::start(&lab.host, &config, Some(&notify_path), &[]);
    wait_notify(&notify, "READY=1", Duration::from_secs(30));
    let commits = guard_commits(&lab.host);

    println!(
        "docker run -p to the verdict in guardctl ports; ms, median / p99 ({}, Docker {})",
        load(),
        dockerd.version()
    );
    let rounds = if quick { 2 } else { 11 };
    let (mut to_commit, mut to_verdict, mut run_took, mut poll) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    // The same, counted from the moment `docker run` returned (the guard
    // can only be as fast as Docker's start event): 0 if it was earlier.
    let (mut after_commit, mut after_verdict) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        let port = 20_000 + round as u64;
        while commits.try_recv().is_ok() {}
        let started = Instant::now();
        dockerd.docker(&format!(
            "run -d --name web{round} -p {port}:80 {BUSYBOX_IMAGE} /bin/httpd -f -p 80 -h /www"
        ));
        run_took.push(started.elapsed());
        loop {
            let polled = Instant::now();
            let listed = ports(&daemon);
            poll.push(polled.elapsed());
            if let Some((_, verdict)) = listed.iter().find(|(p, _)| *p == port) {
                assert!(verdict.starts_with("allowed"), "web{round}: {verdict}");
                to_verdict.push(started.elapsed());
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "port {port} never listed"
            );
        }
        let committed = commits
            .recv_timeout(Duration::from_secs(10))
            .expect("the guard committed the new port");
        to_commit.push(committed - started);
        let returned = started + *run_took.last().unwrap();
        after_commit.push(committed.saturating_duration_since(returned));
        after_verdict
            .push((started + *to_verdict.last().unwrap()).saturating_duration_since(returned));
        dockerd.docker(&format!("rm -f web{round}"));
        while ports(&daemon).iter().any(|(p, _)| *p == port) {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let row = |what: &str, samples: Vec<Duration>| {
        let (m, p) = median_p99(samples);
        println!("{what:<52} {:>9} / {:>9}", ms(m), ms(p));
    };
    row("docker run -d (the CLI, until it returns)", run_took);
    row(
        "docker run -d started -> guard's commit (kernel)",
        to_commit,
    );
    row(
        "docker run -d started -> verdict in guardctl ports",
        to_verdict,
    );
    row("docker run -d returned -> guard's commit", after_commit);
    row(
        "docker run -d returned -> verdict in guardctl ports",
        after_verdict,
    );
    row("one guardctl ports --json poll (resolution)", poll);

    // Footprint: 100 published ports (a blocked container), Docker connected.
    dockerd.docker(&format!(
        "run -d --name idle -p 21000-21099:21000-21099 {BUSYBOX_IMAGE} /bin/httpd -f -p 80 -h /www"
    ));
    let started = Instant::now();
    loop {
        let seen: std::collections::BTreeSet<u64> = ports(&daemon)
            .into_iter()
            .filter(|(p, v)| (21_000..21_100).contains(p) && v == "blocked")
            .map(|(p, _)| p)
            .collect();
        if seen.len() == 100 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "only {} of 100 ports seen",
            seen.len()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Let the burst of Docker events settle.
    std::thread::sleep(Duration::from_secs(2));
    let status = daemon.guardctl_json(&["status"]);
    assert_eq!(status["docker"]["connected"], true, "{status}");
    let idle = Duration::from_secs(if quick { 5 } else { 60 });
    let pid = daemon.child.id();
    let before = sample(pid);
    let at = Instant::now();
    std::thread::sleep(idle);
    let after = sample(pid);
    let secs = at.elapsed().as_secs_f64();
    let tick_ms = 1000.0 / clock_ticks() as f64;
    println!(
        "footprint over {secs:.0} s idle, 100 published ports, Docker connected ({}):",
        load()
    );
    println!(
        "  RSS {} KiB -> {} KiB; CPU {:.0} ms ({:.3} % of one core); wake-ups (context switches, {} threads) {:.2}/s",
        before.0,
        after.0,
        (after.1 - before.1) as f64 * tick_ms,
        (after.1 - before.1) as f64 * tick_ms / (secs * 10.0),
        after.3,
        (after.2 - before.2) as f64 / secs
    );
    drop(daemon);
    drop(notify);
}
