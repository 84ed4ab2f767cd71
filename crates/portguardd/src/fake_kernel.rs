//! The one kernel in memory every in-process test runs the guard against
//! (the guard's, the metrics' and the reconcile loop's tests): the tier's
//! tables, the IPv6 FORWARD policy, the blocked-attempt counters, and the
//! ways tests meddle with them (deleting a table, tampering right after a
//! commit, failing a commit, holding a reconcile half-way).
//!
//! A [`FakeKernel`] is a handle: the guard owns one as its backend, and
//! the test keeps a clone to look at and change the same kernel while the
//! loop runs on another thread.

use std::path::Path;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use portguard_config::Config;
use portguard_core::control::{ConfigSource, DockerStatus, ProtectionTier};
use portguard_core::plan::names;
use portguard_core::ruleset::Element;
use portguard_core::{Judged, L4Proto, Ruleset};
use portguard_nft::{
    Difference, DropSetter, DropWitness, Flow, ForwardPolicy, ForwardPolicySet, Ip6Firewall, Look,
    NftError, PolicyRestore, SweepStats, TableOutcome,
};

use crate::backend::{Backend, TableCounters, tables_of};
use crate::guard::Setup;

/// A guard's start with `config` from the files, its configuration and
/// state under `dir`, Docker not answering yet.
pub fn setup(dir: &Path, config: Config) -> Setup {
    Setup {
        config_path: dir.join("portguard.toml"),
        state_dir: dir.join("state"),
        config,
        config_source: ConfigSource::Files,
        config_error: None,
        docker: DockerStatus {
            connected: false,
            socket: String::new(),
            engine: None,
            error: None,
        },
        nflog_available: true,
    }
}

/// A kernel in memory, shared between the guard and the test.
#[derive(Clone)]
pub struct FakeKernel(Arc<Mutex<State>>);

/// What the kernel holds, and what the test asks it to do.
pub struct State {
    pub tier: ProtectionTier,
    /// Each table of the tier, primary first: what it holds, `None` when
    /// it is missing.
    pub tables: Vec<Option<Ruleset>>,
    /// The next reconcile fails with this.
    pub fail_next: Option<String>,
    /// Tampering that happens right after the next commit: the race.
    pub tamper_after_commit: Option<Ruleset>,
    /// Reconciles asked for (each one verifies every table, and commits
    /// where it must).
    pub reconciles: usize,
    /// Tables written (created or replaced).
    pub commits: usize,
    /// Every table as it was after each commit (and after the tampering
    /// that follows one): what the host held, commit by commit.
    pub history: Vec<Vec<Option<Ruleset>>>,
    /// nf_tables' IPv6 FORWARD policy, and who set it, decided by the
    /// real (pure) witness.
    pub ip6_policy: ForwardPolicy,
    pub ip6_witness: DropWitness,
    /// The primary table's per-port blocked-attempt counters (the standby
    /// copy counts nothing).
    pub blocked: Vec<(L4Proto, u16, u64)>,
    /// Reads of the per-port counters (each one a dump of every table).
    pub counter_reads: usize,
    /// The next reconcile stops before it looks at the tables.
    pause: Option<(Sender<()>, Receiver<()>)>,
}

impl Default for FakeKernel {
    /// Two copies of the table (the twin tier), none installed yet.
    fn default() -> Self {
        FakeKernel::new(ProtectionTier::Twin)
    }
}

impl FakeKernel {
    /// A kernel without any guard table, offering `tier`.
    pub fn new(tier: ProtectionTier) -> FakeKernel {
        let (_, standby) = tables_of(tier);
        FakeKernel(Arc::new(Mutex::new(State {
            tier,
            tables: vec![None; 1 + usize::from(standby.is_some())],
            fail_next: None,
            tamper_after_commit: None,
            reconciles: 0,
            commits: 0,
            history: Vec::new(),
            ip6_policy: ForwardPolicy::Accept,
            ip6_witness: DropWitness::default(),
            blocked: Vec::new(),
            counter_reads: 0,
            pause: None,
        })))
    }

    pub fn state(&self) -> MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Holds the next reconcile before it looks at the tables, until the
    /// returned handle releases it: what the test does meanwhile happens
    /// while the loop is inside a reconcile.
    pub fn pause_next_reconcile(&self) -> Paused {
        let (reached_tx, reached) = channel();
        let (release, release_rx) = channel();
        self.state().pause = Some((reached_tx, release_rx));
        Paused { reached, release }
    }
}

/// A reconcile held half-way (see [`FakeKernel::pause_next_reconcile`]).
pub struct Paused {
    reached: Receiver<()>,
    release: Sender<()>,
}

impl Paused {
    /// Waits until the reconcile is held; false if none came in `timeout`.
    pub fn reached(&self, timeout: Duration) -> bool {
        self.reached.recv_timeout(timeout).is_ok()
    }

    /// Lets the reconcile go on.
    pub fn release(self) {
        let _ = self.release.send(());
    }
}

impl Backend for FakeKernel {
    fn protection(&self) -> ProtectionTier {
        self.state().tier
    }

    fn reconcile(&mut self, desired: &Ruleset) -> Result<Vec<TableOutcome>, NftError> {
        // Held outside the lock: the test meddles with the kernel meanwhile.
        let pause = self.state().pause.take();
        if let Some((reached, release)) = pause {
            let _ = reached.send(());
            let _ = release.recv();
        }
        let mut state = self.state();
        state.reconciles += 1;
        if let Some(e) = state.fail_next.take() {
            return Err(NftError::Command(e));
        }
        let mut outcomes = Vec::new();
        for index in 0..state.tables.len() {
            // Like the real one: compare, repair, compare again.
            let mut outcome = TableOutcome::Unchanged;
            while state.tables[index].as_ref() != Some(desired) {
                let found = match &state.tables[index] {
                    None => Difference::TableMissing,
                    Some(_) => Difference::ChainForeign("x".into()),
                };
                state.tables[index] = Some(desired.clone());
                state.commits += 1;
                if let Some(tampered) = state.tamper_after_commit.take() {
                    state.tables[index] = Some(tampered);
                }
                let now = state.tables.clone();
                state.history.push(now);
                outcome = TableOutcome::Replaced(vec![found]);
            }
            outcomes.push(outcome);
        }
        Ok(outcomes)
    }

    fn blocked_packets(&mut self) -> Result<Option<u64>, NftError> {
        let state = self.state();
        let total = state.blocked.iter().map(|&(_, _, n)| n).sum();
        Ok(state.tables.first().and_then(|t| t.as_ref()).map(|_| total))
    }

    fn blocked_per_port(&mut self) -> Result<Vec<TableCounters>, NftError> {
        let mut state = self.state();
        state.counter_reads += 1;
        let (primary, standby) = tables_of(state.tier);
        let names = std::iter::once(primary.name).chain(standby.map(|s| s.name));
        Ok(names
            .zip(&state.tables)
            .enumerate()
            .map(|(index, (name, table))| {
                let counters = if index == 0 {
                    state.blocked.clone()
                } else {
                    Vec::new()
                };
                (name, table.as_ref().map(|_| counters))
            })
            .collect())
    }

    fn ip6_forward_policy(&mut self) -> Result<ForwardPolicy, NftError> {
        Ok(self.state().ip6_policy)
    }

    fn ip6_heard(&mut self, heard: &[ForwardPolicySet], lost: bool) {
        self.state().ip6_witness.hear(heard, lost);
    }

    fn restore_ip6_forward_policy(
        &mut self,
        look: Look,
        restore: bool,
    ) -> Result<Vec<PolicyRestore>, NftError> {
        let mut state = self.state();
        let policy = state.ip6_policy;
        let set_by = state.ip6_witness.drops(policy);
        if !(state.ip6_witness.nftables_found(policy, look) && restore) {
            return Ok(Vec::new());
        }
        state.ip6_policy = ForwardPolicy::Accept;
        state.ip6_witness.restored(Ip6Firewall::Nftables);
        Ok(set_by
            .into_iter()
            .map(|(backend, set_by)| PolicyRestore { backend, set_by })
            .collect())
    }

    fn ip6_forward_drops(&mut self) -> Result<Vec<(Ip6Firewall, DropSetter)>, NftError> {
        let state = self.state();
        Ok(state.ip6_witness.drops(state.ip6_policy))
    }

    fn end_connections(
        &mut self,
        _mark: u32,
        _keep: &dyn Fn(&Flow) -> bool,
    ) -> Result<SweepStats, NftError> {
        Ok(SweepStats::default())
    }

    fn judged_by_tables(&mut self) -> Result<Judged, NftError> {
        let mut judged = Judged::default();
        for table in self.state().tables.iter().flatten() {
            for set in &table.sets {
                for element in &set.elements {
                    match (set.name.as_str(), element) {
                        (names::DOCKER_BRIDGES | names::JUDGED_BRIDGES, Element::Ifname(n)) => {
                            judged.bridges.insert(n.clone());
                        }
                        ("published_tcp", Element::Port(p)) => {
                            judged.tcp.insert(p.start());
                        }
                        ("published_udp", Element::Port(p)) => {
                            judged.udp.insert(p.start());
                        }
                        (names::DOCKER_API_TCP, Element::Port(p)) => {
                            judged.docker_api.insert(p.start());
                        }
                        _ => {}
                    }
                }
            }
        }
        Ok(judged)
    }
}
