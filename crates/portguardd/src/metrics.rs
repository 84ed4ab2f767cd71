//! Prometheus metrics: the text `guardctl metrics` prints and the daemon
//! writes to node_exporter's textfile directory.
//!
//! Counters never go backwards, not across a replace of the guard's table
//! nor across a restart of the daemon:
//!
//! * blocked attempts are counted in the kernel, per port, in the
//!   `blocked_tcp`/`blocked_udp` sets (one counter per element). A table
//!   that is recreated starts them from zero, so for every table, protocol
//!   and port the daemon keeps the last value it read and a `base` (what
//!   earlier lives of the table had counted); it exports `base + last`.
//!   When the table is replaced, or a value is found lower than the last
//!   one read (or gone), `last` is folded into `base`. Attempts counted
//!   after the last read and before the table disappeared are lost (at most
//!   one read interval's worth), never counted twice;
//! * restores, IPv6 policy restores, ended connections and the reconcile
//!   histogram are the daemon's own: the totals of earlier runs are kept in
//!   the state directory and added.
//!
//! Both files are written by a thread of their own (latest text wins), so a
//! hung file system never stalls the reconcile loop.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use portguard_core::L4Proto;
use portguard_core::control::{ProtectionTier, ReconcileOutcome};
use portguard_core::docker_api::{DockerApiVerdict, docker_api_reports};
use portguard_core::verdict::{Verdict, port_reports};
use serde::{Deserialize, Serialize};

use crate::backend::{Backend, tables_of};
use crate::guard::Guard;
use crate::lastgood;

/// In the state directory: the totals of earlier runs.
const STATE_FILE: &str = "metrics.json";
/// The kernel's counters are read at least this often (and more often
/// when `guardctl metrics` asks): a read is a dump of the guard's tables.
const READ_INTERVAL: Duration = Duration::from_secs(10);
/// `guardctl metrics` has the counters read again when the last read is
/// older than this; requests within it get the text already made. So any
/// number of clients cost the loop at most one dump of the tables a
/// second, and what they see is never older than this.
const CLIENT_READ_GAP: Duration = Duration::from_secs(1);
/// The file is rewritten at least this often, changed or not, so that its
/// age tells a stalled daemon apart (node_textfile_mtime_seconds).
const WRITE_INTERVAL: Duration = Duration::from_secs(60);
/// The least time between two writes of the metrics files.
const MIN_WRITE_GAP: Duration = Duration::from_secs(1);
/// How long a clean stop waits for its last write (`portguard_up 0`).
const STOP_FLUSH: Duration = Duration::from_secs(2);
/// Upper bounds (seconds) of the reconcile duration histogram: a fast-path
/// verify is well under a millisecond, a full replace a few milliseconds,
/// a large ruleset or a slow kernel up to seconds.
pub const BUCKETS: [f64; 13] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// A Prometheus histogram: per-bucket counts (not cumulative), the count
/// and the sum.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Histogram {
    pub buckets: Vec<u64>,
    pub count: u64,
    pub sum: f64,
}

impl Histogram {
    pub fn observe(&mut self, seconds: f64) {
        if self.buckets.len() != BUCKETS.len() {
            self.buckets.resize(BUCKETS.len(), 0);
        }
        if let Some(i) = BUCKETS.iter().position(|&le| seconds <= le) {
            self.buckets[i] += 1;
        }
        self.count += 1;
        self.sum += seconds;
    }

    /// `self + other`.
    fn plus(&self, other: &Histogram) -> Histogram {
        let bucket = |h: &Histogram, i: usize| h.buckets.get(i).copied().unwrap_or(0);
        Histogram {
            buckets: (0..BUCKETS.len())
                .map(|i| bucket(self, i) + bucket(other, i))
                .collect(),
            count: self.count + other.count,
            sum: self.sum + other.sum,
        }
    }
}

/// One kernel counter, carried across the lives of its table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Carried {
    /// What earlier lives of the table counted.
    pub base: u64,
    /// The last value read from the kernel.
    pub last: u64,
}

impl Carried {
    pub fn total(self) -> u64 {
        self.base.saturating_add(self.last)
    }

    /// A new reading: lower than the last one means the counter started
    /// again from zero (its table or element was recreated).
    pub fn read(&mut self, value: u64) {
        if value < self.last {
            self.fold();
        }
        self.last = value;
    }

    /// The counter is known to start again from zero.
    pub fn fold(&mut self) {
        self.base = self.total();
        self.last = 0;
    }
}

/// What is kept in the state directory.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Persisted {
    restores: u64,
    ipv6_policy_restores: u64,
    ended_connections: u64,
    reconcile_seconds: Histogram,
    blocked: Vec<PersistedBlocked>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct PersistedBlocked {
    table: String,
    proto: L4Proto,
    port: u16,
    base: u64,
    last: u64,
}

/// Blocked-attempt counters by table, protocol and port.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BlockedCounters(BTreeMap<(String, L4Proto, u16), Carried>);

impl BlockedCounters {
    /// Table `table` was recreated: every counter it had starts from zero.
    pub fn fold_table(&mut self, table: &str) {
        for ((name, _, _), carried) in self.0.iter_mut() {
            if name == table {
                carried.fold();
            }
        }
    }

    /// A reading of every counter table `table` has now; a counter it no
    /// longer has reads as zero.
    pub fn read_table(&mut self, table: &str, counters: &[(L4Proto, u16, u64)]) {
        for ((name, proto, port), carried) in self.0.iter_mut() {
            if name == table && !counters.iter().any(|(p, n, _)| p == proto && n == port) {
                carried.read(0);
            }
        }
        for &(proto, port, packets) in counters {
            self.0
                .entry((table.to_string(), proto, port))
                .or_default()
                .read(packets);
        }
    }

    /// Totals per protocol and port, summed over the tables (in the tiers
    /// with two copies, whichever copy judged the packet counted it).
    pub fn totals(&self) -> BTreeMap<(L4Proto, u16), u64> {
        let mut out: BTreeMap<(L4Proto, u16), u64> = BTreeMap::new();
        for ((_, proto, port), carried) in &self.0 {
            let total = out.entry((*proto, *port)).or_default();
            *total = total.saturating_add(carried.total());
        }
        out
    }
}

/// Everything one rendering shows.
#[derive(Debug, Clone, PartialEq)]
pub struct Values {
    pub up: bool,
    pub tier: ProtectionTier,
    pub ruleset_installed: bool,
    pub restores: u64,
    pub ipv6_policy_restores: u64,
    pub ended_connections: u64,
    pub blocked: BTreeMap<(L4Proto, u16), u64>,
    /// Published ports per verdict.
    pub published: [(Verdict, usize); 5],
    /// The mode in force: in audit mode nothing is dropped.
    pub mode: portguard_config::Mode,
    pub docker_connected: bool,
    /// TCP ports dockerd listens on beyond loopback (the Docker API):
    /// address, port, plain (2375, no TLS), and whether the guard closes it
    /// to untrusted interfaces.
    pub docker_api: Vec<(std::net::IpAddr, u16, bool, bool)>,
    pub config_error: bool,
    pub reconcile_seconds: Histogram,
    pub last_verify: Option<SystemTime>,
}

const VERDICTS: [Verdict; 5] = [
    Verdict::Allowed,
    Verdict::Blocked,
    Verdict::OpenInAudit,
    Verdict::LocalOnly,
    Verdict::HostNetwork,
];

fn tier_name(tier: ProtectionTier) -> &'static str {
    match tier {
        ProtectionTier::OwnedPersistent => "owned-persistent",
        ProtectionTier::OwnedStandby => "owned-standby",
        ProtectionTier::Twin => "twin",
    }
}

/// A label value as the text format wants it (backslash, quote and newline
/// escaped).
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn gauge(out: &mut String, name: &str, help: &str, value: impl std::fmt::Display) {
    header(out, name, "gauge", help);
    let _ = writeln!(out, "{name} {value}");
}

fn counter(out: &mut String, name: &str, help: &str, value: u64) {
    header(out, name, "counter", help);
    let _ = writeln!(out, "{name} {value}");
}

/// The Prometheus text exposition format (0.0.4), what node_exporter's
/// textfile collector reads. Written by hand: a dozen metrics whose label
/// values come from fixed sets and port numbers do not need a registry,
/// and client crates emit OpenMetrics (`# EOF`) or need a global registry.
pub fn render(v: &Values) -> String {
    let mut out = String::new();
    gauge(
        &mut out,
        "portguard_up",
        "1 while portguardd runs; 0 is written when it stops cleanly.",
        u8::from(v.up),
    );
    header(
        &mut out,
        "portguard_protection_tier_info",
        "gauge",
        "The protection tier in force (label tier), always 1.",
    );
    let _ = writeln!(
        out,
        "portguard_protection_tier_info{{tier=\"{}\"}} 1",
        label(tier_name(v.tier))
    );
    header(
        &mut out,
        "portguard_mode_info",
        "gauge",
        "The mode in force (label mode: enforce, or audit, where nothing is dropped), always 1.",
    );
    let _ = writeln!(
        out,
        "portguard_mode_info{{mode=\"{}\"}} 1",
        match v.mode {
            portguard_config::Mode::Enforce => "enforce",
            portguard_config::Mode::Audit => "audit",
        }
    );
    gauge(
        &mut out,
        "portguard_ruleset_installed",
        "1 if the guard's table is installed and was last verified to hold the desired ruleset.",
        u8::from(v.ruleset_installed),
    );
    counter(
        &mut out,
        "portguard_restores_total",
        "Times the guard's table was found missing or changed by somebody else and restored.",
        v.restores,
    );
    counter(
        &mut out,
        "portguard_ipv6_policy_restores_total",
        "Times the IPv6 FORWARD policy was found drop and set back to accept.",
        v.ipv6_policy_restores,
    );
    counter(
        &mut out,
        "portguard_ended_connections_total",
        "Live connections ended because the allowlist stopped admitting them.",
        v.ended_connections,
    );
    header(
        &mut out,
        "portguard_blocked_attempts_total",
        "counter",
        "New connections blocked (in audit mode: that would have been), by original destination host port and protocol, counted in the kernel.",
    );
    for ((proto, port), count) in &v.blocked {
        let _ = writeln!(
            out,
            "portguard_blocked_attempts_total{{port=\"{port}\",proto=\"{}\"}} {count}",
            label(proto.name())
        );
    }
    header(
        &mut out,
        "portguard_published_ports",
        "gauge",
        "Published container port bindings (the rows of guardctl ports), by verdict (allowed, blocked, local-only, host-network).",
    );
    for (verdict, count) in &v.published {
        let _ = writeln!(
            out,
            "portguard_published_ports{{verdict=\"{}\"}} {count}",
            label(verdict.as_str())
        );
    }
    gauge(
        &mut out,
        "portguard_docker_connected",
        "1 while portguardd is connected to the Docker Engine API.",
        u8::from(v.docker_connected),
    );
    header(
        &mut out,
        "portguard_docker_api_exposed",
        "gauge",
        "1 for each TCP address dockerd listens on beyond loopback (the Docker API: root on this host to whoever reaches it); plain=\"true\" on 2375 (no TLS); closed=\"true\" while the guard drops it from untrusted interfaces (false in audit mode).",
    );
    for (addr, port, plain, closed) in &v.docker_api {
        let _ = writeln!(
            out,
            "portguard_docker_api_exposed{{address=\"{}\",port=\"{port}\",plain=\"{plain}\",closed=\"{closed}\"}} 1",
            label(&addr.to_string())
        );
    }
    gauge(
        &mut out,
        "portguard_config_error",
        "1 if the configuration files are not in force (the last reload, or the start, found an error; see guardctl status).",
        u8::from(v.config_error),
    );
    header(
        &mut out,
        "portguard_reconcile_duration_seconds",
        "histogram",
        "Time one reconcile took (verify, and apply or restore when needed).",
    );
    let mut cumulative = 0;
    for (i, le) in BUCKETS.iter().enumerate() {
        cumulative += v.reconcile_seconds.buckets.get(i).copied().unwrap_or(0);
        let _ = writeln!(
            out,
            "portguard_reconcile_duration_seconds_bucket{{le=\"{le}\"}} {cumulative}"
        );
    }
    let h = &v.reconcile_seconds;
    let _ = writeln!(
        out,
        "portguard_reconcile_duration_seconds_bucket{{le=\"+Inf\"}} {}",
        h.count
    );
    let _ = writeln!(out, "portguard_reconcile_duration_seconds_sum {}", h.sum);
    let _ = writeln!(
        out,
        "portguard_reconcile_duration_seconds_count {}",
        h.count
    );
    if let Some(at) = v.last_verify {
        gauge(
            &mut out,
            "portguard_last_verify_timestamp_seconds",
            "When the kernel's table was last verified to hold exactly the desired ruleset (Unix time).",
            at.duration_since(UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64()),
        );
    }
    out
}

/// The metrics of one daemon run.
pub struct Metrics {
    textfile: Option<PathBuf>,
    state_file: PathBuf,
    /// Totals of earlier runs.
    earlier: Persisted,
    blocked: BlockedCounters,
    /// `Guard::tables_replaced` as last seen.
    replaced_seen: Vec<u64>,
    /// Whether the last read found the primary table.
    primary_present: bool,
    /// Reconciles (the histogram's count) when the kernel was last read.
    reconciles_at_read: u64,
    last_read: Option<Instant>,
    read_error_logged: bool,
    last_write: Option<Instant>,
    /// The latest text made, and the latest one handed to the writer.
    last_text: String,
    text_written: String,
    writer: Writer,
}

impl Metrics {
    /// `textfile`: where to write (`None`: nowhere); the totals of earlier
    /// runs are read from `state_dir`.
    pub fn start(textfile: Option<PathBuf>, state_dir: &Path) -> Metrics {
        let state_file = state_dir.join(STATE_FILE);
        let earlier = load(&state_file);
        let mut blocked = BlockedCounters::default();
        for b in &earlier.blocked {
            blocked.0.insert(
                (b.table.clone(), b.proto, b.port),
                Carried {
                    base: b.base,
                    last: b.last,
                },
            );
        }
        Metrics {
            textfile,
            state_file,
            earlier,
            blocked,
            replaced_seen: Vec::new(),
            primary_present: false,
            reconciles_at_read: 0,
            last_read: None,
            read_error_logged: false,
            last_write: None,
            last_text: String::new(),
            text_written: String::new(),
            writer: Writer::spawn(),
        }
    }

    /// Brings the values up to date (reading the kernel's counters when
    /// `read_kernel` or when the last read is old) and hands the files to
    /// the writer if the text changed or the last write is old. Returns the
    /// text.
    pub fn update<B: Backend>(&mut self, guard: &mut Guard<B>, read_kernel: bool) -> String {
        self.fold_replaced(guard);
        if read_kernel || self.last_read.is_none_or(|t| t.elapsed() >= READ_INTERVAL) {
            self.read_kernel(guard);
        }
        let text = render(&self.values(guard, true));
        let since_write = self.last_write.map(|t| t.elapsed());
        let stale = since_write.is_none_or(|e| e >= WRITE_INTERVAL);
        // At most one write a second: under a tampering storm every
        // reconcile changes the histogram, and two fsyncs per restore would
        // only compete with the restores. A change held back here is
        // written on the loop's next pass after the gap.
        let paced = since_write.is_none_or(|e| e >= MIN_WRITE_GAP);
        if (text != self.text_written && paced) || stale {
            self.writer.submit(self.files(&text, guard));
            self.last_write = Some(Instant::now());
            self.text_written.clone_from(&text);
        }
        self.last_text.clone_from(&text);
        text
    }

    /// The text for `guardctl metrics`: the kernel's counters as read at
    /// most [`CLIENT_READ_GAP`] ago, the rest as of the loop's last pass
    /// (the text [`Metrics::update`] made then). Reads the counters only
    /// when the last read is older than that.
    pub fn for_client<B: Backend>(&mut self, guard: &mut Guard<B>) -> String {
        let read_lately = self
            .last_read
            .is_some_and(|at| at.elapsed() < CLIENT_READ_GAP);
        if read_lately && !self.last_text.is_empty() {
            return self.last_text.clone();
        }
        self.update(guard, true)
    }

    /// When a change held back by the write pacing is due to be written
    /// (the loop wakes then), if one is held back.
    pub fn write_due(&self) -> Option<Duration> {
        let held = self.text_written != self.last_text;
        held.then(|| {
            MIN_WRITE_GAP.saturating_sub(self.last_write.map_or(MIN_WRITE_GAP, |t| t.elapsed()))
        })
    }

    /// A clean stop: the file says `portguard_up 0`, and the totals are
    /// kept. Waits a little for the writer, never long.
    pub fn stop<B: Backend>(&mut self, guard: &mut Guard<B>) {
        self.fold_replaced(guard);
        let text = render(&self.values(guard, false));
        self.writer.submit(self.files(&text, guard));
        if !self.writer.flush(STOP_FLUSH) {
            tracing::warn!("the last metrics write did not finish in time");
        }
    }

    /// A table the guard recreated starts its counters from zero.
    fn fold_replaced<B: Backend>(&mut self, guard: &Guard<B>) {
        let (primary, standby) = tables_of(guard.backend.protection());
        let names = [Some(primary.name), standby.map(|s| s.name)];
        for (index, &count) in guard.tables_replaced.iter().enumerate() {
            if self.replaced_seen.len() <= index {
                self.replaced_seen.resize(index + 1, 0);
            }
            if self.replaced_seen[index] != count {
                self.replaced_seen[index] = count;
                if let Some(Some(name)) = names.get(index) {
                    self.blocked.fold_table(name);
                }
            }
        }
    }

    fn read_kernel<B: Backend>(&mut self, guard: &mut Guard<B>) {
        self.last_read = Some(Instant::now());
        self.reconciles_at_read = guard.reconcile_seconds.count;
        match guard.backend.blocked_per_port() {
            Ok(tables) => {
                // The tests count these: each read is a dump of every
                // guard table, on the reconcile loop.
                tracing::debug!(
                    tables = tables.len(),
                    "read the kernel's blocked-attempt counters"
                );
                self.read_error_logged = false;
                for (index, (table, counters)) in tables.iter().enumerate() {
                    if index == 0 {
                        self.primary_present = counters.is_some();
                    }
                    // A missing table has no counters to read; the restore
                    // that recreates it folds what it had.
                    if let Some(counters) = counters {
                        self.blocked.read_table(table, counters);
                    }
                }
            }
            Err(e) => {
                if !self.read_error_logged {
                    tracing::warn!(error = %e, "could not read the kernel's blocked-attempt counters");
                    self.read_error_logged = true;
                }
            }
        }
    }

    fn values<B: Backend>(&self, guard: &Guard<B>, up: bool) -> Values {
        let reports = port_reports(&guard.config, &guard.snapshot);
        let published = VERDICTS.map(|v| (v, reports.iter().filter(|r| r.verdict == v).count()));
        let failed = guard
            .last_reconcile
            .as_ref()
            .is_some_and(|r| matches!(r.outcome, ReconcileOutcome::Failed(_)));
        // A successful reconcile after the last read proves the table as
        // well as a read does.
        let reconciled_since_read = guard.reconcile_seconds.count != self.reconciles_at_read;
        Values {
            up,
            tier: guard.backend.protection(),
            mode: guard.config.guard.mode,
            ruleset_installed: guard.applied.is_some()
                && !failed
                && (self.primary_present || reconciled_since_read),
            restores: self.earlier.restores + guard.restores,
            ipv6_policy_restores: self.earlier.ipv6_policy_restores + guard.ip6_restores,
            ended_connections: self.earlier.ended_connections + guard.ended_connections,
            blocked: self.blocked.totals(),
            published,
            docker_connected: guard.docker.connected,
            docker_api: docker_api_reports(&guard.config, &guard.snapshot)
                .into_iter()
                .filter(|r| r.verdict != DockerApiVerdict::LocalOnly)
                .map(|r| {
                    (
                        r.addr,
                        r.port,
                        r.plain,
                        r.verdict == DockerApiVerdict::Closed,
                    )
                })
                .collect(),
            config_error: guard.config_error.is_some(),
            reconcile_seconds: self
                .earlier
                .reconcile_seconds
                .plus(&guard.reconcile_seconds),
            last_verify: guard.verified_at,
        }
    }

    fn persisted<B: Backend>(&self, guard: &Guard<B>) -> Persisted {
        Persisted {
            restores: self.earlier.restores + guard.restores,
            ipv6_policy_restores: self.earlier.ipv6_policy_restores + guard.ip6_restores,
            ended_connections: self.earlier.ended_connections + guard.ended_connections,
            reconcile_seconds: self
                .earlier
                .reconcile_seconds
                .plus(&guard.reconcile_seconds),
            blocked: self
                .blocked
                .0
                .iter()
                .map(|((table, proto, port), c)| PersistedBlocked {
                    table: table.clone(),
                    proto: *proto,
                    port: *port,
                    base: c.base,
                    last: c.last,
                })
                .collect(),
        }
    }

    fn files<B: Backend>(&self, text: &str, guard: &Guard<B>) -> Job {
        let state = serde_json::to_string(&self.persisted(guard)).unwrap_or_default();
        Job {
            textfile: self.textfile.clone().map(|path| (path, text.to_string())),
            state: (self.state_file.clone(), state),
        }
    }
}

/// The totals of earlier runs; none if there is no file or it is unreadable
/// (said in the log: the counters then start again, which Prometheus'
/// `rate()` reads as a reset, not as a negative rate).
fn load(path: &Path) -> Persisted {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Persisted::default(),
        Err(e) => {
            tracing::warn!(file = %path.display(), error = %e, "could not read the metrics kept by the last run; counting from zero");
            return Persisted::default();
        }
    };
    serde_json::from_str(&text).unwrap_or_else(|e| {
        tracing::warn!(file = %path.display(), error = %e, "the metrics kept by the last run are unreadable; counting from zero");
        Persisted::default()
    })
}

/// One write: the textfile (if any) and the state file.
struct Job {
    textfile: Option<(PathBuf, String)>,
    state: (PathBuf, String),
}

#[derive(Default)]
struct Slot {
    job: Option<Job>,
    submitted: u64,
    done: u64,
}

/// The writer thread: holds the latest job only; the loop never waits for
/// it (the lock is held just to swap a job in or out).
struct Writer {
    shared: Arc<(Mutex<Slot>, Condvar)>,
}

impl Writer {
    fn spawn() -> Writer {
        let shared = Arc::new((Mutex::new(Slot::default()), Condvar::new()));
        let theirs = Arc::clone(&shared);
        let spawned = std::thread::Builder::new()
            .name("metrics-writer".into())
            .spawn(move || {
                crate::triggers::background_priority();
                write_forever(&theirs)
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "could not start the metrics writer; no metrics file");
        }
        Writer { shared }
    }

    fn submit(&self, job: Job) {
        let (lock, wake) = &*self.shared;
        if let Ok(mut slot) = lock.lock() {
            slot.job = Some(job);
            slot.submitted += 1;
            wake.notify_all();
        }
    }

    /// Waits up to `timeout` for every submitted job; whether they were.
    fn flush(&self, timeout: Duration) -> bool {
        let (lock, wake) = &*self.shared;
        let Ok(slot) = lock.lock() else {
            return false;
        };
        match wake.wait_timeout_while(slot, timeout, |s| s.done < s.submitted) {
            Ok((slot, _)) => slot.done >= slot.submitted,
            Err(_) => false,
        }
    }
}

fn write_forever(shared: &(Mutex<Slot>, Condvar)) {
    let (lock, wake) = shared;
    let mut textfile_dir_missing = false;
    loop {
        let (job, seq) = {
            let Ok(guard) = lock.lock() else { return };
            let Ok(mut slot) = wake.wait_while(guard, |s| s.job.is_none()) else {
                return;
            };
            let seq = slot.submitted;
            (slot.job.take(), seq)
        };
        let Some(job) = job else { continue };
        if let Some((path, text)) = &job.textfile {
            write_textfile(path, text, &mut textfile_dir_missing);
        }
        let (state_path, state) = &job.state;
        if let Some(dir) = state_path.parent()
            && let Err(e) = lastgood::ensure_state_dir(dir)
                .and_then(|()| lastgood::write_atomically(state_path, state.as_bytes(), 0o600))
        {
            tracing::warn!(
                error = format!("{e:#}"),
                "could not keep the metrics totals"
            );
        }
        if let Ok(mut slot) = lock.lock() {
            slot.done = slot.done.max(seq);
            wake.notify_all();
        }
    }
}

/// Writes the textfile if its directory exists. The directory belongs to
/// prometheus-node-exporter (which creates it); without it nobody collects
/// the file, so it is not created: that is said once, and again when it
/// appears.
fn write_textfile(path: &Path, text: &str, dir_missing: &mut bool) {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    if !dir.is_dir() {
        if !*dir_missing {
            tracing::warn!(
                directory = %dir.display(),
                "the metrics textfile directory does not exist (is prometheus-node-exporter installed?); \
                 not writing metrics there until it does; guardctl metrics shows them"
            );
            *dir_missing = true;
        }
        return;
    }
    if *dir_missing {
        tracing::info!(directory = %dir.display(), "the metrics textfile directory exists now; writing metrics there");
        *dir_missing = false;
    }
    // Readable by node_exporter, which does not run as root.
    if let Err(e) = lastgood::write_atomically(path, text.as_bytes(), 0o644) {
        tracing::warn!(error = format!("{e:#}"), "could not write the metrics file");
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use portguard_nft::TableOutcome;
    use proptest::prelude::*;

    fn values() -> Values {
        let mut h = Histogram::default();
        h.observe(0.0003);
        h.observe(0.002);
        h.observe(7.0);
        Values {
            up: true,
            tier: ProtectionTier::OwnedPersistent,
            mode: portguard_config::Mode::Enforce,
            ruleset_installed: true,
            restores: 2,
            ipv6_policy_restores: 1,
            ended_connections: 4,
            blocked: [((L4Proto::Tcp, 8081), 3), ((L4Proto::Udp, 5353), 1)]
                .into_iter()
                .collect(),
            published: [
                (Verdict::Allowed, 1),
                (Verdict::Blocked, 2),
                (Verdict::OpenInAudit, 0),
                (Verdict::LocalOnly, 0),
                (Verdict::HostNetwork, 0),
            ],
            docker_connected: true,
            docker_api: vec![("0.0.0.0".parse().unwrap(), 2375, true, true)],
            config_error: false,
            reconcile_seconds: h,
            last_verify: Some(UNIX_EPOCH + Duration::from_millis(1_795_376_401_250)),
        }
    }

    #[test]
    fn text_format_names_types_and_labels() {
        let text = render(&values());
        for line in [
            "# TYPE portguard_up gauge",
            "portguard_up 1",
            "portguard_protection_tier_info{tier=\"owned-persistent\"} 1",
            "portguard_mode_info{mode=\"enforce\"} 1",
            "portguard_ruleset_installed 1",
            "# TYPE portguard_restores_total counter",
            "portguard_restores_total 2",
            "portguard_ipv6_policy_restores_total 1",
            "portguard_ended_connections_total 4",
            "# TYPE portguard_blocked_attempts_total counter",
            "portguard_blocked_attempts_total{port=\"8081\",proto=\"tcp\"} 3",
            "portguard_blocked_attempts_total{port=\"5353\",proto=\"udp\"} 1",
            "portguard_docker_api_exposed{address=\"0.0.0.0\",port=\"2375\",plain=\"true\",closed=\"true\"} 1",
            "portguard_published_ports{verdict=\"allowed\"} 1",
            "portguard_published_ports{verdict=\"blocked\"} 2",
            "portguard_published_ports{verdict=\"open-in-audit\"} 0",
            "portguard_published_ports{verdict=\"local-only\"} 0",
            "portguard_published_ports{verdict=\"host-network\"} 0",
            "portguard_docker_connected 1",
            "portguard_config_error 0",
            "# TYPE portguard_reconcile_duration_seconds histogram",
            "portguard_reconcile_duration_seconds_bucket{le=\"0.0005\"} 1",
            "portguard_reconcile_duration_seconds_bucket{le=\"0.001\"} 1",
            "portguard_reconcile_duration_seconds_bucket{le=\"0.0025\"} 2",
            "portguard_reconcile_duration_seconds_bucket{le=\"5\"} 2",
            "portguard_reconcile_duration_seconds_bucket{le=\"+Inf\"} 3",
            "portguard_reconcile_duration_seconds_count 3",
            "portguard_last_verify_timestamp_seconds 1795376401.25",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line:?} missing in\n{text}"
            );
        }
        // Every sample has HELP and TYPE before it, once per family.
        let families: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .map(|l| l.split(' ').next().unwrap())
            .collect();
        let mut unique = families.clone();
        unique.dedup();
        assert_eq!(families, unique);
        assert_eq!(
            text.matches("# HELP ").count(),
            families.len(),
            "one HELP per family"
        );
        assert!(text.ends_with('\n'));
    }

    #[test]
    fn promtool_accepts_the_text() {
        let mut stopped = values();
        stopped.up = false;
        stopped.last_verify = None;
        stopped.blocked.clear();
        for v in [values(), stopped] {
            let text = render(&v);
            let mut child = std::process::Command::new("promtool")
                .args(["check", "metrics"])
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect(
                    "promtool (Debian package prometheus) must be installed: scripts/install-deps",
                );
            use std::io::Write as _;
            child
                .stdin
                .take()
                .unwrap()
                .write_all(text.as_bytes())
                .unwrap();
            let out = child.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "promtool check metrics:\n{}{}\n{text}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }

    #[test]
    fn a_replaced_table_and_a_lower_reading_fold_into_the_base() {
        let mut c = BlockedCounters::default();
        let t = "portguard";
        c.read_table(t, &[(L4Proto::Tcp, 8081, 5)]);
        c.read_table(t, &[(L4Proto::Tcp, 8081, 7)]);
        assert_eq!(c.totals()[&(L4Proto::Tcp, 8081)], 7);
        // The table was recreated; its new element has counted 9 already:
        // without the fold this would read as 9, losing the earlier 7.
        c.fold_table(t);
        c.read_table(t, &[(L4Proto::Tcp, 8081, 9)]);
        assert_eq!(c.totals()[&(L4Proto::Tcp, 8081)], 16);
        // Somebody flushed the set: the element is gone, then back.
        c.read_table(t, &[]);
        assert_eq!(c.totals()[&(L4Proto::Tcp, 8081)], 16);
        c.read_table(t, &[(L4Proto::Tcp, 8081, 2)]);
        assert_eq!(c.totals()[&(L4Proto::Tcp, 8081)], 18);
        // Another table's fold leaves this one alone.
        c.fold_table("portguard_standby");
        c.read_table(t, &[(L4Proto::Tcp, 8081, 2)]);
        assert_eq!(c.totals()[&(L4Proto::Tcp, 8081)], 18);
        // Both copies count; the totals add up.
        c.read_table("portguard_standby", &[(L4Proto::Tcp, 8081, 4)]);
        assert_eq!(c.totals()[&(L4Proto::Tcp, 8081)], 22);
    }

    proptest! {
        /// Whatever the kernel does (counting, recreating tables, losing
        /// elements), the exported totals never go backwards.
        #[test]
        fn totals_never_go_backwards(steps in prop::collection::vec((0u8..4, 0u16..3, 0u64..50), 1..200)) {
            let mut c = BlockedCounters::default();
            let mut kernel: BTreeMap<u16, u64> = BTreeMap::new();
            let mut previous: BTreeMap<(L4Proto, u16), u64> = BTreeMap::new();
            for (action, port, n) in steps {
                match action {
                    0 => *kernel.entry(port).or_default() += n,
                    1 => { kernel.clear(); c.fold_table("t"); }
                    2 => { kernel.remove(&port); }
                    _ => {}
                }
                let reading: Vec<_> = kernel.iter().map(|(p, v)| (L4Proto::Tcp, *p, *v)).collect();
                c.read_table("t", &reading);
                let totals = c.totals();
                for (key, before) in &previous {
                    prop_assert!(totals.get(key).copied().unwrap_or(0) >= *before);
                }
                previous = totals;
            }
        }
    }

    /// A kernel whose next reconcile outcome and counters the test sets.
    struct Scripted {
        next: TableOutcome,
        counters: Vec<(L4Proto, u16, u64)>,
        /// Reads of the counters (each a dump of the tables in the kernel).
        reads: usize,
    }

    impl Backend for Scripted {
        fn protection(&self) -> ProtectionTier {
            ProtectionTier::OwnedPersistent
        }
        fn reconcile(
            &mut self,
            _: &portguard_core::Ruleset,
        ) -> Result<Vec<TableOutcome>, portguard_nft::NftError> {
            Ok(vec![std::mem::replace(
                &mut self.next,
                TableOutcome::Unchanged,
            )])
        }
        fn blocked_packets(&mut self) -> Result<Option<u64>, portguard_nft::NftError> {
            Ok(Some(0))
        }
        fn blocked_per_port(
            &mut self,
        ) -> Result<Vec<crate::backend::TableCounters>, portguard_nft::NftError> {
            self.reads += 1;
            Ok(vec![("portguard".into(), Some(self.counters.clone()))])
        }
        fn ip6_forward_policy(
            &mut self,
        ) -> Result<portguard_nft::ForwardPolicy, portguard_nft::NftError> {
            Ok(portguard_nft::ForwardPolicy::Accept)
        }
        fn restore_ip6_forward_policy(
            &mut self,
            _: portguard_nft::Look,
            _: bool,
        ) -> Result<Vec<portguard_nft::PolicyRestore>, portguard_nft::NftError> {
            Ok(Vec::new())
        }
        fn end_connections(
            &mut self,
            _: u32,
            _: &dyn Fn(&portguard_nft::Flow) -> bool,
        ) -> Result<portguard_nft::SweepStats, portguard_nft::NftError> {
            Ok(portguard_nft::SweepStats::default())
        }
        fn judged_by_tables(&mut self) -> Result<portguard_core::Judged, portguard_nft::NftError> {
            Ok(portguard_core::Judged::default())
        }
    }

    fn guard(counters: u64) -> Guard<Scripted> {
        Guard::new(
            PathBuf::from("/nonexistent/portguard.toml"),
            PathBuf::from("/nonexistent"),
            portguard_config::Config::default(),
            portguard_core::control::ConfigSource::Files,
            Scripted {
                next: TableOutcome::Replaced(vec![portguard_nft::Difference::TableMissing]),
                counters: vec![(L4Proto::Tcp, 8081, counters)],
                reads: 0,
            },
            portguard_core::control::DockerStatus {
                connected: false,
                socket: String::new(),
                engine: None,
                error: None,
            },
        )
    }

    fn exported(text: &str, series: &str) -> String {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .unwrap_or("absent")
            .to_string()
    }

    /// The daemon's wiring: a replace the guard did folds the table's
    /// counters even when the new table has already counted more than the
    /// old one had (no lower reading to give it away), and a restart
    /// carries every total through the state directory.
    #[test]
    fn replaces_and_restarts_never_lose_or_repeat_counts() {
        let state = tempfile::tempdir().unwrap();
        let blocked = "portguard_blocked_attempts_total{port=\"8081\",proto=\"tcp\"}";
        let mut g = guard(7);
        g.reconcile("start", Instant::now());
        let mut m = Metrics::start(None, state.path());
        assert_eq!(exported(&m.update(&mut g, true), blocked), "7");

        // Somebody deletes the table; the guard recreates it, and before
        // the next read the new table counts 9.
        g.backend.next = TableOutcome::Replaced(vec![portguard_nft::Difference::TableMissing]);
        g.reconcile("netfilter change", Instant::now());
        g.backend.counters = vec![(L4Proto::Tcp, 8081, 9)];
        let text = m.update(&mut g, true);
        assert_eq!(exported(&text, blocked), "16");
        assert_eq!(exported(&text, "portguard_restores_total"), "1");
        g.backend.counters = vec![(L4Proto::Tcp, 8081, 12)];
        assert_eq!(exported(&m.update(&mut g, true), blocked), "19");
        m.stop(&mut g);

        // A restart: the table stayed (unchanged), the totals come back.
        let mut g = guard(12);
        g.backend.next = TableOutcome::Unchanged;
        g.reconcile("start", Instant::now());
        let mut m = Metrics::start(None, state.path());
        let text = m.update(&mut g, true);
        assert_eq!(exported(&text, blocked), "19");
        assert_eq!(exported(&text, "portguard_restores_total"), "1");
        assert_eq!(
            exported(&text, "portguard_reconcile_duration_seconds_count"),
            "3"
        );
        // A restart whose start recreated the table (owned tables go with
        // their daemon): what the kernel had is folded, not lost.
        m.stop(&mut g);
        let mut g = guard(2);
        g.reconcile("start", Instant::now());
        let mut m = Metrics::start(None, state.path());
        assert_eq!(exported(&m.update(&mut g, true), blocked), "21");
    }

    /// 32 clients asking at once cost at most one read of the kernel, and
    /// still see what the kernel counted up to the last read.
    #[test]
    fn clients_asking_together_share_one_read_of_the_counters() {
        let state = tempfile::tempdir().unwrap();
        let blocked = "portguard_blocked_attempts_total{port=\"8081\",proto=\"tcp\"}";
        let mut g = guard(3);
        g.reconcile("start", Instant::now());
        let mut m = Metrics::start(None, state.path());
        // The start reads once, as the daemon's does.
        m.update(&mut g, true);
        g.backend.counters = vec![(L4Proto::Tcp, 8081, 5)];
        std::thread::sleep(CLIENT_READ_GAP);
        let reads = g.backend.reads;
        let texts: Vec<String> = (0..32).map(|_| m.for_client(&mut g)).collect();
        assert_eq!(g.backend.reads - reads, 1, "one read for 32 clients");
        assert!(texts.iter().all(|t| exported(t, blocked) == "5"));
        // Within the gap the loop's own pass does not read either.
        m.update(&mut g, false);
        m.for_client(&mut g);
        assert_eq!(g.backend.reads - reads, 1);
    }

    #[test]
    fn totals_survive_a_restart_through_the_state_file() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join(STATE_FILE);
        let mut kept = Persisted {
            restores: 3,
            ..Persisted::default()
        };
        kept.reconcile_seconds.observe(0.01);
        kept.blocked.push(PersistedBlocked {
            table: "portguard".into(),
            proto: L4Proto::Udp,
            port: 53,
            base: 10,
            last: 4,
        });
        std::fs::write(&state, serde_json::to_string(&kept).unwrap()).unwrap();
        assert_eq!(load(&state), kept);
        std::fs::write(&state, "{not json").unwrap();
        assert_eq!(load(&state), Persisted::default());
    }
}
