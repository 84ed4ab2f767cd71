//! Blocked attempts in the last hour, per host port: a bounded summary fed
//! by the kernel's nflog reports (see `portguard_nft::Nflog`), for
//! `guardctl blocked` and the top three in `guardctl status`.
//!
//! Bounded whatever arrives:
//! * time: per port, one bucket per minute, the last 60 kept (a sliding
//!   hour that moves a minute at a time);
//! * sources: per bucket, distinct sources in a HyperLogLog++ sketch
//!   (Cloudflare's `cardinality-estimator`, 2^10 registers: about 3%
//!   standard error, exact below a few dozen sources, at most ~800 bytes)
//!   and the top sources in a Space-Saving summary of [`TOP_K`] counters
//!   (a source with more than 1/[`TOP_K`] of a minute's attempts is always
//!   in it); buckets merge when asked;
//! * ports: at most [`MAX_PORTS`]; attempts at further ports are counted
//!   apart, per minute too (a port quiet for an hour makes room).
//!
//! Worst case, every port full for the whole hour: [`MAX_PORTS`] x 60
//! buckets of about 1.5 KiB, some 6 MiB (the test
//! `memory_stays_bounded_whatever_arrives` measures it).
//!
//! The reports arrive on a thread of their own and through a bounded
//! queue, so the reconcile loop never waits for them; what does not fit is
//! counted as lost.

use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use cardinality_estimator::CardinalityEstimator;
use portguard_core::L4Proto;
use portguard_core::control::{BlockedPort, BlockedReport, SourceAttempts};
use portguard_core::plan::{NFLOG_GROUP, NFLOG_RATE_PER_SECOND};
use portguard_nft::{Attempt, Nflog};

/// Minutes in the sliding window.
pub const WINDOW_MINUTES: u64 = 60;
/// How long reports of one TCP connection count as one attempt: Linux
/// sends a refused SYN again after 1, 3, 7, ... s, for up to 127 s
/// (`tcp_syn_retries` = 6).
const CONNECTION_WINDOW: std::time::Duration = std::time::Duration::from_secs(130);
/// Connections remembered at most (a flood of spoofed sources: the oldest
/// are forgotten first, and count again if they come back).
const CONNECTIONS_REMEMBERED: usize = 16_384;
/// Host ports (with protocol) kept apart.
pub const MAX_PORTS: usize = 64;
/// Space-Saving counters per port and minute.
pub const TOP_K: usize = 16;
/// Top sources per port in `guardctl blocked`.
const SOURCES_SHOWN: usize = 5;
/// Attempts waiting between the nflog reader and the summary. The kernel
/// sends at most a few hundred a second, so this only fills when the
/// machine is starved; then attempts are dropped and counted.
const QUEUE: usize = 4096;

/// Distinct sources: HyperLogLog++ with 2^10 registers of 6 bits. SipHash
/// with fixed keys (the default hasher) keeps estimates reproducible.
type Distinct = CardinalityEstimator<IpAddr, DefaultHasher, 10, 6>;

/// The Space-Saving heavy-hitter summary (Metwally et al. 2005): `k`
/// counters; a source not counted takes over the smallest counter, and
/// that counter's value becomes its possible overestimate.
#[derive(Debug, Clone, Default)]
struct SpaceSaving {
    /// (source, count, overestimate at most)
    counters: Vec<(IpAddr, u64, u64)>,
}

impl SpaceSaving {
    fn add(&mut self, source: IpAddr, k: usize) {
        if let Some(c) = self.counters.iter_mut().find(|c| c.0 == source) {
            c.1 += 1;
        } else if self.counters.len() < k {
            self.counters.push((source, 1, 0));
        } else if let Some(smallest) = self.counters.iter_mut().min_by_key(|c| c.1) {
            *smallest = (source, smallest.1 + 1, smallest.1);
        }
    }

    /// What a source missing from a full summary may have had at most.
    fn floor(&self, k: usize) -> u64 {
        if self.counters.len() < k {
            0
        } else {
            self.counters.iter().map(|c| c.1).min().unwrap_or(0)
        }
    }
}

/// One minute of one port.
struct Minute {
    minute: u64,
    attempts: u64,
    distinct: Distinct,
    top: SpaceSaving,
}

#[derive(Default)]
struct PortStats {
    /// Oldest first; never more than [`WINDOW_MINUTES`].
    minutes: VecDeque<Minute>,
}

impl PortStats {
    fn expire(&mut self, now: u64) {
        while self
            .minutes
            .front()
            .is_some_and(|m| m.minute + WINDOW_MINUTES <= now)
        {
            self.minutes.pop_front();
        }
    }

    fn record(&mut self, source: IpAddr, now: u64) {
        self.expire(now);
        if self.minutes.back().is_none_or(|m| m.minute != now) {
            self.minutes.push_back(Minute {
                minute: now,
                attempts: 0,
                distinct: Distinct::new(),
                top: SpaceSaving::default(),
            });
        }
        if let Some(m) = self.minutes.back_mut() {
            m.attempts += 1;
            m.distinct.insert(&source);
            m.top.add(source, TOP_K);
        }
    }

    fn in_window(&self, now: u64) -> impl Iterator<Item = &Minute> {
        self.minutes
            .iter()
            .filter(move |m| m.minute + WINDOW_MINUTES > now && m.minute <= now)
    }

    fn attempts(&self, now: u64) -> u64 {
        self.in_window(now).map(|m| m.attempts).sum()
    }

    fn report(&self, port: u16, proto: L4Proto, now: u64, top: usize) -> BlockedPort {
        let mut distinct = Distinct::new();
        let mut counts: HashMap<IpAddr, u64> = HashMap::new();
        let mut error = 0;
        for m in self.in_window(now) {
            distinct.merge(&m.distinct);
            // What each source surely had: its count less what it may have
            // inherited with the counter. Ranking by that keeps sources
            // that only took over a counter (a flood's random ones) from
            // being named.
            for &(source, count, over) in &m.top.counters {
                *counts.entry(source).or_default() += count - over;
            }
            // A source may have had this much more in this minute, whether
            // it kept a counter or lost it.
            error += m.top.floor(TOP_K);
        }
        let mut top_sources: Vec<SourceAttempts> = counts
            .into_iter()
            .map(|(source, attempts)| SourceAttempts { source, attempts })
            .collect();
        top_sources.sort_by(|a, b| b.attempts.cmp(&a.attempts).then(a.source.cmp(&b.source)));
        top_sources.truncate(top);
        BlockedPort {
            port,
            proto,
            attempts: self.attempts(now),
            distinct_sources: distinct.estimate() as u64,
            top_sources,
            top_sources_error: error,
        }
    }
}

/// The bounded summary. Pure: the caller says what minute it is.
#[derive(Default)]
pub struct Summary {
    ports: HashMap<(L4Proto, u16), PortStats>,
    /// Attempts at ports beyond [`MAX_PORTS`], per minute: (minute, count).
    untracked: VecDeque<(u64, u64)>,
    /// The minute quiet ports were last looked for: once a minute is
    /// enough (a port goes quiet a minute at a time), and a scan of many
    /// ports then costs no walk over every bucket per attempt.
    pruned_at: Option<u64>,
}

impl Summary {
    pub fn record(&mut self, attempt: &Attempt, now: u64) {
        let key = (attempt.proto, attempt.port);
        if !self.ports.contains_key(&key)
            && self.ports.len() >= MAX_PORTS
            && self.pruned_at != Some(now)
        {
            // Make room from ports quiet for the whole window, if any.
            self.ports.retain(|_, stats| stats.attempts(now) > 0);
            self.pruned_at = Some(now);
        }
        if self.ports.contains_key(&key) || self.ports.len() < MAX_PORTS {
            self.ports
                .entry(key)
                .or_default()
                .record(attempt.source, now);
            return;
        }
        while self
            .untracked
            .front()
            .is_some_and(|(m, _)| m + WINDOW_MINUTES <= now)
        {
            self.untracked.pop_front();
        }
        match self.untracked.back_mut() {
            Some((m, count)) if *m == now => *count += 1,
            _ => self.untracked.push_back((now, 1)),
        }
    }

    /// Ports with attempts in the window, most attempts first, each with
    /// its `top` sources.
    pub fn ports(&self, now: u64, top: usize) -> Vec<BlockedPort> {
        let mut ports: Vec<BlockedPort> = self
            .ports
            .iter()
            .filter(|(_, stats)| stats.attempts(now) > 0)
            .map(|(&(proto, port), stats)| stats.report(port, proto, now, top))
            .collect();
        ports.sort_by(|a, b| {
            b.attempts
                .cmp(&a.attempts)
                .then(a.port.cmp(&b.port))
                .then(a.proto.cmp(&b.proto))
        });
        ports
    }

    pub fn untracked_attempts(&self, now: u64) -> u64 {
        self.untracked
            .iter()
            .filter(|(m, _)| m + WINDOW_MINUTES > now && *m <= now)
            .map(|(_, count)| count)
            .sum()
    }

    /// Heap bytes held, roughly (what the bound above is about).
    #[cfg(test)]
    fn heap_bytes(&self) -> usize {
        let per_minute = |m: &Minute| {
            std::mem::size_of::<Minute>()
                + m.distinct.size_of()
                + m.top.counters.capacity() * std::mem::size_of::<(IpAddr, u64, u64)>()
        };
        self.ports
            .values()
            .map(|p| {
                std::mem::size_of::<((L4Proto, u16), PortStats)>()
                    + p.minutes.iter().map(per_minute).sum::<usize>()
                    + (p.minutes.capacity() - p.minutes.len()) * std::mem::size_of::<Minute>()
            })
            .sum::<usize>()
            + self.untracked.capacity() * 16
    }
}

/// The summary as the daemon shares it between the reader, the summary
/// thread and the reconcile loop (which only reads it, briefly).
pub struct Blocked {
    summary: Mutex<Summary>,
    started: Instant,
    lost: AtomicU64,
    /// Why no reports arrive, when they do not.
    error: Mutex<Option<String>>,
}

impl Blocked {
    /// A summary nothing feeds yet.
    pub fn new() -> Blocked {
        Blocked {
            summary: Mutex::new(Summary::default()),
            started: Instant::now(),
            lost: AtomicU64::new(0),
            error: Mutex::new(None),
        }
    }

    fn minute(&self) -> u64 {
        self.started.elapsed().as_secs() / 60
    }

    fn set_error(&self, error: String) {
        if let Ok(mut slot) = self.error.lock() {
            *slot = Some(error);
        }
    }

    /// The answer to `guardctl blocked`.
    pub fn report(&self, audit: bool) -> BlockedReport {
        let now = self.minute();
        let (ports, untracked_attempts) = match self.summary.lock() {
            Ok(summary) => (
                summary.ports(now, SOURCES_SHOWN),
                summary.untracked_attempts(now),
            ),
            Err(_) => (Vec::new(), 0),
        };
        let error = self.error.lock().ok().and_then(|e| e.clone());
        BlockedReport {
            audit,
            window_minutes: (now + 1).min(WINDOW_MINUTES) as u32,
            listening: error.is_none(),
            error,
            report_limit_per_second: NFLOG_RATE_PER_SECOND,
            ports,
            untracked_attempts,
            lost_reports: self.lost.load(Ordering::Relaxed),
        }
    }

    /// The three ports with the most attempts, three sources each.
    pub fn top_three(&self) -> Vec<BlockedPort> {
        let now = self.minute();
        let mut ports = match self.summary.lock() {
            Ok(summary) => summary.ports(now, 3),
            Err(_) => Vec::new(),
        };
        ports.truncate(3);
        ports
    }
}

/// Binds the judge chains' nflog group in the calling thread's network
/// namespace and follows it on threads of its own. Never fails: without
/// reports (another program holds the group, say) the summary stays empty
/// and says why.
pub fn spawn() -> Arc<Blocked> {
    let shared = Arc::new(Blocked::new());
    let mut nflog = match Nflog::bind(NFLOG_GROUP) {
        Ok(nflog) => nflog,
        Err(e) => {
            tracing::error!(error = %e, group = NFLOG_GROUP, "blocked attempts cannot be followed");
            shared.set_error(format!("cannot follow nflog group {NFLOG_GROUP}: {e}"));
            return shared;
        }
    };
    if !nflog.conntrack {
        tracing::info!(
            "the kernel attaches no conntrack data to nflog reports: the host port of a forwarded attempt is taken from the reported packet (enforce mode) or looked up in conntrack (audit mode)"
        );
    }
    let (tx, rx) = sync_channel::<Attempt>(QUEUE);
    let reader = Arc::clone(&shared);
    let spawned = std::thread::Builder::new()
        .name("nflog".into())
        .spawn(move || {
            crate::triggers::background_priority();
            loop {
                let reports = match nflog.next_reports() {
                    Ok(reports) => reports,
                    Err(e) => {
                        tracing::error!(error = %e, "nflog reader failed; blocked attempts are no longer followed");
                        reader.set_error(format!("the nflog reader failed: {e}"));
                        return;
                    }
                };
                if reports.overflowed {
                    reader.lost.fetch_add(1, Ordering::Relaxed);
                }
                if reports.unreadable > 0 {
                    tracing::debug!(
                        unreadable = reports.unreadable,
                        "nflog reports that are not ours or carry no TCP/UDP port"
                    );
                }
                for attempt in reports.attempts {
                    match tx.try_send(attempt) {
                        Ok(()) => {}
                        Err(TrySendError::Full(_)) => {
                            reader.lost.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(TrySendError::Disconnected(_)) => return,
                    }
                }
            }
        })
        .and_then(|_| {
            let summary = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("blocked".into())
                .spawn(move || {
                    crate::triggers::background_priority();
                    summarize(&summary, &rx)
                })
        });
    if let Err(e) = spawned {
        shared.set_error(format!("cannot start the nflog threads: {e}"));
    }
    shared
}

/// Which ports had an attempt written to the log this minute: the first
/// attempt per port and minute goes to the journal (`PORTGUARD_EVENT=blocked`
/// with port and source), the rest is only counted, so a flood writes at
/// most [`JOURNAL_PORTS_PER_MINUTE`] lines a minute.
/// The TCP attempts already counted: `guardctl blocked` counts
/// connections, not packets. A retransmitted SYN has the same source
/// address and port, host port and mode as the first. Each UDP datagram
/// stays an attempt of its own: UDP has no retransmission of its own, and
/// a flood from one socket is what the top sources are there to show.
#[derive(Default)]
struct Connections {
    seen: HashMap<ConnectionKey, Instant>,
    order: VecDeque<(Instant, ConnectionKey)>,
}

type ConnectionKey = (IpAddr, u16, L4Proto, u16, bool);

impl Connections {
    /// Whether `attempt` starts a connection not seen in the window
    /// (every UDP datagram does).
    fn is_new(&mut self, attempt: &Attempt, now: Instant) -> bool {
        if attempt.proto != L4Proto::Tcp {
            return true;
        }
        while let Some((at, key)) = self.order.front() {
            let expired = now.duration_since(*at) >= CONNECTION_WINDOW;
            if !expired && self.order.len() < CONNECTIONS_REMEMBERED {
                break;
            }
            if self.seen.get(key) == Some(at) {
                self.seen.remove(key);
            }
            self.order.pop_front();
        }
        let key = (
            attempt.source,
            attempt.source_port,
            attempt.proto,
            attempt.port,
            attempt.audit,
        );
        if self.seen.contains_key(&key) {
            return false;
        }
        self.seen.insert(key, now);
        self.order.push_back((now, key));
        true
    }
}

#[derive(Default)]
struct JournalPace {
    minute: u64,
    ports: std::collections::BTreeSet<(L4Proto, u16)>,
}

/// Blocked-attempt lines per minute at most (one per port).
const JOURNAL_PORTS_PER_MINUTE: usize = 64;

impl JournalPace {
    /// Whether `attempt` is the first at its port this minute (and the
    /// minute still has room).
    fn first(&mut self, attempt: &Attempt, now: u64) -> bool {
        if self.minute != now {
            self.minute = now;
            self.ports.clear();
        }
        self.ports.len() < JOURNAL_PORTS_PER_MINUTE
            && self.ports.insert((attempt.proto, attempt.port))
    }
}

fn journal(attempt: &Attempt) {
    let verb = if attempt.audit {
        "would have blocked (audit mode)"
    } else {
        "blocked"
    };
    tracing::info!(
        portguard_event = crate::logging::event::BLOCKED,
        port = attempt.port,
        proto = %attempt.proto,
        source = %attempt.source,
        audit = attempt.audit,
        "{verb} a new connection from {} to port {}/{}; further attempts at this port this minute are only counted (guardctl blocked)",
        attempt.source,
        attempt.port,
        attempt.proto
    );
}

/// Takes attempts off the queue into the summary, a burst per lock.
fn summarize(shared: &Blocked, rx: &Receiver<Attempt>) {
    let mut pace = JournalPace::default();
    let mut connections = Connections::default();
    while let Ok(first) = rx.recv() {
        let now = shared.minute();
        let mut to_journal = Vec::new();
        {
            let Ok(mut summary) = shared.summary.lock() else {
                return;
            };
            let arrived = Instant::now();
            let mut take = |attempt: Attempt| {
                if !connections.is_new(&attempt, arrived) {
                    return;
                }
                summary.record(&attempt, now);
                if pace.first(&attempt, now) {
                    to_journal.push(attempt);
                }
            };
            take(first);
            for _ in 0..QUEUE {
                match rx.try_recv() {
                    Ok(attempt) => take(attempt),
                    Err(_) => break,
                }
            }
        }
        // Logged outside the lock: `guardctl blocked` never waits on it.
        to_journal.iter().for_each(journal);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use proptest::prelude::*;
    use std::net::Ipv4Addr;

    #[test]
    fn the_journal_gets_the_first_attempt_per_port_and_minute_and_at_most_64_lines() {
        let mut pace = JournalPace::default();
        let a = attempt(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 7)), 8081);
        assert!(pace.first(&a, 5));
        assert!(!pace.first(&a, 5));
        assert!(pace.first(&attempt(a.source, 8082), 5));
        assert!(pace.first(&a, 6), "a new minute");
        let flood = (0..1000u16)
            .filter(|p| pace.first(&attempt(a.source, 10_000 + p), 7))
            .count();
        assert_eq!(flood, JOURNAL_PORTS_PER_MINUTE);
    }

    #[test]
    fn a_retransmitted_syn_is_the_same_attempt_and_a_new_source_port_another() {
        let mut connections = Connections::default();
        let start = Instant::now();
        let a = attempt(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 7)), 8081);
        assert!(connections.is_new(&a, start));
        for later in [1, 3, 7, 15, 31, 63, 127] {
            let at = start + std::time::Duration::from_secs(later);
            assert!(!connections.is_new(&a, at), "retransmit after {later} s");
        }
        let udp = Attempt {
            proto: L4Proto::Udp,
            ..a
        };
        assert!(connections.is_new(&udp, start) && connections.is_new(&udp, start));
        let other_port = Attempt {
            source_port: 40001,
            ..a
        };
        assert!(connections.is_new(&other_port, start));
        let audited = Attempt { audit: true, ..a };
        assert!(connections.is_new(&audited, start), "audit counts apart");
        assert!(
            connections.is_new(&a, start + CONNECTION_WINDOW),
            "a new connection once the window passed"
        );
        // Bounded: a flood forgets the oldest.
        for n in 0..2 * CONNECTIONS_REMEMBERED as u32 {
            connections.is_new(&attempt(v4(n), 9), start);
        }
        assert!(connections.seen.len() <= CONNECTIONS_REMEMBERED);
        assert!(connections.order.len() <= CONNECTIONS_REMEMBERED);
    }

    fn attempt(source: IpAddr, port: u16) -> Attempt {
        Attempt {
            source,
            source_port: 40000,
            proto: L4Proto::Tcp,
            port,
            audit: false,
        }
    }

    fn v4(n: u32) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from(n))
    }

    #[test]
    fn counts_attempts_sources_and_the_top_source_per_port() {
        let mut s = Summary::default();
        for i in 0..10 {
            s.record(&attempt(v4(i), 8081), 0);
        }
        for _ in 0..25 {
            s.record(&attempt(v4(7), 8081), 0);
        }
        s.record(&attempt(v4(1), 5432), 0);
        let ports = s.ports(0, 3);
        assert_eq!(ports.len(), 2);
        assert_eq!((ports[0].port, ports[0].attempts), (8081, 35));
        assert_eq!(ports[0].distinct_sources, 10);
        assert_eq!(ports[0].top_sources[0].source, v4(7));
        assert_eq!(ports[0].top_sources[0].attempts, 26);
        assert_eq!(
            ports[0].top_sources_error, 0,
            "10 sources fit in the counters"
        );
        assert_eq!((ports[1].port, ports[1].attempts), (5432, 1));
    }

    #[test]
    fn the_hour_slides_a_minute_at_a_time() {
        let mut s = Summary::default();
        s.record(&attempt(v4(1), 80), 0);
        s.record(&attempt(v4(2), 80), 30);
        s.record(&attempt(v4(3), 80), 59);
        assert_eq!(s.ports(59, 3)[0].attempts, 3);
        // At minute 60 the attempt of minute 0 is more than an hour old.
        assert_eq!(s.ports(60, 3)[0].attempts, 2);
        assert_eq!(s.ports(60, 3)[0].distinct_sources, 2);
        assert_eq!(s.ports(89, 3)[0].attempts, 2);
        assert_eq!(s.ports(90, 3)[0].attempts, 1);
        assert!(s.ports(119, 3).is_empty());
    }

    #[test]
    fn ports_beyond_the_cap_are_counted_apart_and_quiet_ports_make_room() {
        let mut s = Summary::default();
        for port in 0..MAX_PORTS as u16 {
            s.record(&attempt(v4(1), 1000 + port), 0);
        }
        s.record(&attempt(v4(1), 9999), 1);
        assert_eq!(s.ports(1, 1).len(), MAX_PORTS);
        assert_eq!(s.untracked_attempts(1), 1);
        // An hour later every tracked port is quiet: a new one gets a place.
        s.record(&attempt(v4(1), 9999), 61);
        assert_eq!(s.ports(61, 1).len(), 1);
        assert_eq!(s.untracked_attempts(61), 0);
    }

    #[test]
    fn memory_stays_bounded_whatever_arrives() {
        // The worst case: every port, every minute, many distinct sources.
        let mut s = Summary::default();
        let mut n = 0u32;
        for minute in 0..WINDOW_MINUTES + 5 {
            for port in 0..(MAX_PORTS as u16 + 10) {
                // Past 128 sources a sketch takes its full (HyperLogLog) size.
                for _ in 0..160 {
                    n = n.wrapping_mul(2_654_435_761).wrapping_add(1);
                    s.record(&attempt(v4(n), port), minute);
                }
            }
        }
        let bytes = s.heap_bytes();
        println!("worst-case summary: {bytes} bytes");
        assert!(bytes < 8 << 20, "{bytes} bytes");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Whatever the stream: attempts add up, every named source's count
        /// is a lower bound within the stated error of the truth, and a
        /// source ahead of every other by more than the error is named
        /// first.
        #[test]
        fn top_sources_are_right_within_the_stated_error(
            noise in prop::collection::vec((0u32..3000, 0u64..3), 0..3000),
            heavy_every in 2usize..10,
        ) {
            let mut s = Summary::default();
            let heavy = v4(u32::MAX);
            let mut truth: HashMap<IpAddr, u64> = HashMap::new();
            for (i, &(source, minute)) in noise.iter().enumerate() {
                s.record(&attempt(v4(source), 443), minute);
                *truth.entry(v4(source)).or_default() += 1;
                if i % heavy_every == 0 {
                    s.record(&attempt(heavy, 443), minute);
                    *truth.entry(heavy).or_default() += 1;
                }
            }
            let ports = s.ports(2, 5);
            let total: u64 = truth.values().sum();
            if total == 0 {
                prop_assert!(ports.is_empty());
                return Ok(());
            }
            let port = &ports[0];
            prop_assert_eq!(port.attempts, total);
            let error = port.top_sources_error;
            for named in &port.top_sources {
                let real = truth[&named.source];
                prop_assert!(named.attempts <= real && real <= named.attempts + error, "{named:?} real {real} error {error}");
            }
            let heavy_true = truth[&heavy];
            let other_max = truth.iter().filter(|(k, _)| **k != heavy).map(|(_, v)| *v).max().unwrap_or(0);
            if heavy_true > other_max + error {
                prop_assert_eq!(port.top_sources[0].source, heavy);
            }
            let distinct = truth.len() as f64;
            prop_assert!((port.distinct_sources as f64 - distinct).abs() <= distinct * 0.15 + 1.0);
        }
    }
}
