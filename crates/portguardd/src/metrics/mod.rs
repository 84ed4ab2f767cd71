//! Prometheus metrics: the text `guardctl metrics` prints and the daemon
//! writes to node_exporter's textfile directory. [`Metrics`] ties the
//! parts together: [`counting`] (the kernel's counters carried across
//! replaced tables and restarts), [`inventory`] (each published port as a
//! series, bounded), [`exposition`] (the text) and [`writer`] (the files,
//! off the loop). What it shows of the guard it
//! reads from a [`GuardView`]: it never reaches the kernel itself (the
//! guard reads the kernel's counters on its loop, see
//! [`crate::counters`]).
//!
//! Counters never go backwards, not across a replace of the guard's table
//! nor across a restart of the daemon:
//!
//! * blocked attempts are counted in the kernel and carried across the
//!   lives of their tables (see [`counting`]);
//! * restores, IPv6 policy restores, ended connections and the reconcile
//!   histogram are the daemon's own: the totals of earlier runs are kept in
//!   the state directory and added.
//!
//! Both files are written by a thread of their own (latest text wins), so a
//! hung file system never stalls the reconcile loop.

pub mod counting;
pub mod exposition;
pub mod inventory;
pub mod writer;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use portguard_core::docker_api::{DockerApiVerdict, docker_api_reports};
use portguard_core::verdict::port_reports;

use crate::backend::tables_of;
use crate::counters::GuardView;
use counting::{BlockedCounters, Persisted};
use exposition::{VERDICTS, Values, render};
use inventory::{MAX_SERIES, inventory};
use writer::{Job, Writer, load};

/// In the state directory: the totals of earlier runs.
const STATE_FILE: &str = "metrics.json";
/// The kernel's counters are read at least this often (and more often
/// when `guardctl metrics` asks): a read is a dump of the guard's tables.
pub const READ_INTERVAL: Duration = Duration::from_secs(10);
/// `guardctl metrics` has the counters read again when the last read is
/// older than this; requests within it get the text already made. So any
/// number of clients cost the loop at most one dump of the tables a
/// second, and what they see is never older than this.
pub const CLIENT_READ_GAP: Duration = Duration::from_secs(1);
/// The file is rewritten at least this often, changed or not, so that its
/// age tells a stalled daemon apart (node_textfile_mtime_seconds).
const WRITE_INTERVAL: Duration = Duration::from_secs(60);
/// The least time between two writes of the metrics files.
const MIN_WRITE_GAP: Duration = Duration::from_secs(1);
/// How long a clean stop waits for its last write (`portguard_up 0`).
const STOP_FLUSH: Duration = Duration::from_secs(2);

/// The metrics of one daemon run.
pub struct Metrics {
    textfile: Option<PathBuf>,
    state_file: PathBuf,
    /// Totals of earlier runs.
    earlier: Persisted,
    blocked: BlockedCounters,
    /// `Counters::tables_replaced` as last seen.
    replaced_seen: Vec<u64>,
    /// `KernelCounters::reads` as last folded in.
    reads_seen: u64,
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
        let blocked = BlockedCounters::from_persisted(&earlier.blocked);
        Metrics {
            textfile,
            state_file,
            earlier,
            blocked,
            replaced_seen: Vec::new(),
            reads_seen: 0,
            last_write: None,
            last_text: String::new(),
            text_written: String::new(),
            writer: Writer::spawn(),
        }
    }

    /// Brings the values up to date with what the guard counted and last
    /// read of the kernel, and hands the files to the writer if the text
    /// changed or the last write is old. Returns the text.
    pub fn update(&mut self, guard: &GuardView) -> String {
        self.take_in(guard);
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

    /// The text the last [`Metrics::update`] made (empty before the
    /// first).
    pub fn last_text(&self) -> &str {
        &self.last_text
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
    pub fn stop(&mut self, guard: &GuardView) {
        self.take_in(guard);
        let text = render(&self.values(guard, false));
        self.writer.submit(self.files(&text, guard));
        if !self.writer.flush(STOP_FLUSH) {
            tracing::warn!("the last metrics write did not finish in time");
        }
    }

    /// Folds in what changed since the last look: a table the guard
    /// recreated starts its counters from zero, then a new reading of the
    /// kernel's counters (each taken once).
    fn take_in(&mut self, guard: &GuardView) {
        let (primary, standby) = tables_of(guard.tier);
        let names = [Some(primary.name), standby.map(|s| s.name)];
        for (index, &count) in guard.counters.tables_replaced.iter().enumerate() {
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
        let kernel = &guard.counters.kernel;
        if kernel.reads != self.reads_seen {
            self.reads_seen = kernel.reads;
            for (table, counters) in &kernel.tables {
                // A missing table has no counters to read; the restore
                // that recreates it folds what it had.
                if let Some(counters) = counters {
                    self.blocked.read_table(table, counters);
                }
            }
        }
    }

    fn values(&self, guard: &GuardView, up: bool) -> Values {
        let counters = guard.counters;
        let reports = port_reports(guard.config, guard.snapshot);
        let published = VERDICTS.map(|v| (v, reports.iter().filter(|r| r.verdict == v).count()));
        // A successful reconcile after the last read proves the table as
        // well as a read does.
        let reconciled_since_read =
            counters.reconcile_seconds.count != counters.kernel.reconciles_at_read;
        Values {
            up,
            tier: guard.tier,
            mode: guard.config.guard.mode,
            ruleset_installed: guard.applied
                && !guard.last_reconcile_failed
                && (counters.kernel.primary_present() || reconciled_since_read),
            restores: self.earlier.restores + counters.restores,
            ipv6_policy_restores: self.earlier.ipv6_policy_restores + counters.ip6_restores,
            ended_connections: self.earlier.ended_connections + counters.ended_connections,
            blocked: self.blocked.totals(),
            published,
            inventory: inventory(&reports, MAX_SERIES),
            docker_connected: guard.docker_connected,
            docker_engine: guard.docker_engine.map(str::to_string),
            docker_api: docker_api_reports(guard.config, guard.snapshot)
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
            docker_api_scan: crate::api_scan::last_scan(),
            config_error: guard.config_error,
            config_source: guard.config_source,
            reconcile_seconds: self
                .earlier
                .reconcile_seconds
                .plus(&counters.reconcile_seconds),
            last_verify: guard.verified_at,
        }
    }

    fn persisted(&self, guard: &GuardView) -> Persisted {
        let counters = guard.counters;
        Persisted {
            restores: self.earlier.restores + counters.restores,
            ipv6_policy_restores: self.earlier.ipv6_policy_restores + counters.ip6_restores,
            ended_connections: self.earlier.ended_connections + counters.ended_connections,
            reconcile_seconds: self
                .earlier
                .reconcile_seconds
                .plus(&counters.reconcile_seconds),
            blocked: self.blocked.persisted(),
        }
    }

    fn files(&self, text: &str, guard: &GuardView) -> Job {
        let state = serde_json::to_string(&self.persisted(guard)).unwrap_or_default();
        Job {
            textfile: self.textfile.clone().map(|path| (path, text.to_string())),
            state: (self.state_file.clone(), state),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::fake_kernel::{self, FakeKernel};
    use crate::guard::Guard;
    use portguard_core::L4Proto;
    use portguard_core::control::ProtectionTier;

    /// A guard of the owned-persistent tier (one table) whose kernel's
    /// primary table has counted `blocked` attempts at port 8081.
    fn guard(blocked: u64) -> (Guard<FakeKernel>, FakeKernel) {
        let kernel = FakeKernel::new(ProtectionTier::OwnedPersistent);
        kernel.state().blocked = vec![(L4Proto::Tcp, 8081, blocked)];
        let guard = Guard::new(
            fake_kernel::setup(
                Path::new("/nonexistent"),
                portguard_config::Config::default(),
            ),
            kernel.clone(),
        );
        (guard, kernel)
    }

    /// What the loop does before each text: the guard reads the kernel's
    /// counters, the metrics take the reading in.
    fn update(m: &mut Metrics, g: &mut Guard<FakeKernel>) -> String {
        g.read_blocked_counters();
        m.update(&g.view())
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
        let (mut g, kernel) = guard(7);
        g.reconcile("start", Instant::now());
        let mut m = Metrics::start(None, state.path());
        assert_eq!(exported(&update(&mut m, &mut g), blocked), "7");

        // Somebody deletes the table; the guard recreates it, and before
        // the next read the new table counts 9.
        kernel.state().tables[0] = None;
        g.reconcile("netfilter change", Instant::now());
        kernel.state().blocked = vec![(L4Proto::Tcp, 8081, 9)];
        let text = update(&mut m, &mut g);
        assert_eq!(exported(&text, blocked), "16");
        assert_eq!(exported(&text, "portguard_restores_total"), "1");
        kernel.state().blocked = vec![(L4Proto::Tcp, 8081, 12)];
        assert_eq!(exported(&update(&mut m, &mut g), blocked), "19");
        m.stop(&g.view());

        // A restart: the table stayed (unchanged), the totals come back.
        let (mut g, kernel) = guard(12);
        kernel.state().tables[0] = Some(g.desired());
        g.reconcile("start", Instant::now());
        assert_eq!(kernel.state().commits, 0, "the table stayed");
        let mut m = Metrics::start(None, state.path());
        let text = update(&mut m, &mut g);
        assert_eq!(exported(&text, blocked), "19");
        assert_eq!(exported(&text, "portguard_restores_total"), "1");
        assert_eq!(
            exported(&text, "portguard_reconcile_duration_seconds_count"),
            "3"
        );
        // A restart whose start recreated the table (owned tables go with
        // their daemon): what the kernel had is folded, not lost.
        m.stop(&g.view());
        let (mut g, _kernel) = guard(2);
        g.reconcile("start", Instant::now());
        let mut m = Metrics::start(None, state.path());
        assert_eq!(exported(&update(&mut m, &mut g), blocked), "21");
    }

    /// A host of 600 published port bindings: 200 allowed on the low
    /// ports, 300 on loopback, 100 blocked on the highest. The inventory
    /// shows 512 of them, every blocked one among them, and counts the 88
    /// left out; the engine's version shows while Docker answers.
    #[test]
    fn the_inventory_follows_the_guards_rows_within_its_bound() {
        let dir = tempfile::tempdir().unwrap();
        let config =
            portguard_config::Config::from_toml_str("[[allow]]\ncontainer = \"web\"\n").unwrap();
        let mut setup = fake_kernel::setup(dir.path(), config);
        setup.config_source = portguard_core::control::ConfigSource::LastGood;
        let mut g = Guard::new(setup, FakeKernel::default());
        g.reconcile("start", Instant::now());
        let published: Vec<serde_json::Value> = (0..600u16)
            .map(|i| {
                let (name, host_ip) = match i {
                    0..200 => ("web", None),
                    200..500 => ("cache", Some("127.0.0.1")),
                    _ => ("db", Some("0.0.0.0")),
                };
                serde_json::json!({
                    "host_ip": host_ip, "host_port": 10000 + i, "proto": "tcp",
                    "container_port": 80, "host_network": false,
                    "container": {"id": name, "name": name, "compose": null}
                })
            })
            .collect();
        let snapshot =
            serde_json::from_value(serde_json::json!({ "bridges": [], "published": published }))
                .unwrap();
        g.on_docker(portguard_docker::DockerUpdate::Connected {
            snapshot,
            engine: "28.1.1".into(),
            firewall: None,
        });
        let mut m = Metrics::start(None, dir.path());
        let text = update(&mut m, &mut g);
        let rows: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("portguard_published_port{"))
            .collect();
        assert_eq!(rows.len(), MAX_SERIES);
        let with = |verdict: &str| {
            rows.iter()
                .filter(|l| l.contains(&format!("verdict=\"{verdict}\"")))
                .count()
        };
        assert_eq!(
            (with("blocked"), with("allowed"), with("local-only")),
            (100, 200, 212)
        );
        assert!(rows.contains(
            &"portguard_published_port{host_ip=\"0.0.0.0\",port=\"10599\",proto=\"tcp\",container=\"db\",verdict=\"blocked\"} 1"
        ));
        assert!(rows.contains(
            &"portguard_published_port{host_ip=\"*\",port=\"10000\",proto=\"tcp\",container=\"web\",verdict=\"allowed\"} 1"
        ));
        for (series, value) in [
            ("portguard_published_port_series_omitted", "88"),
            ("portguard_published_ports{verdict=\"local-only\"}", "300"),
            ("portguard_config_source_info{source=\"last-good\"}", "1"),
            ("portguard_docker_engine_info{version=\"28.1.1\"}", "1"),
        ] {
            assert_eq!(exported(&text, series), value, "{series}");
        }

        g.on_docker(portguard_docker::DockerUpdate::Disconnected {
            error: "gone".into(),
        });
        let text = update(&mut m, &mut g);
        assert!(!text.contains("portguard_docker_engine_info{"), "{text}");
        // What was published stays judged while Docker is away.
        assert_eq!(
            exported(&text, "portguard_published_port_series_omitted"),
            "88"
        );
    }
}
