//! The loop driven in-process: a fake kernel, fake triggers, a fake
//! configuration reader. Each test orders triggers the way a busy host
//! can, and checks what a user cares about: the tables end exact, the
//! right reply is sent, and no port was open in between.

#![allow(clippy::unwrap_used)]

use std::sync::mpsc::{Receiver, Sender, channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use portguard_config::Config;
use portguard_core::control::{ReloadOutcome, RequestBody, Response, ResponseBody, Status};
use portguard_core::ruleset::Element;
use portguard_core::{Ruleset, Snapshot};
use portguard_docker::DockerUpdate;
use portguard_nft::Change;
use tokio::sync::oneshot::error::TryRecvError;

use super::*;
use crate::fake_kernel::{self, FakeKernel};

/// Where a control request's answer arrives.
type Reply = tokio::sync::oneshot::Receiver<Response>;

/// Long enough for anything the loop does here; a test that waits this
/// long has failed.
const PATIENCE: Duration = Duration::from_secs(10);

/// A daemon whose loop runs on a thread of its own against a fake kernel.
struct Daemon {
    tx: Sender<Trigger>,
    kernel: FakeKernel,
    /// Each configuration read the loop starts hands over the sender its
    /// answer goes to: the test answers, late or never.
    reads: Receiver<Sender<Trigger>>,
    docker_api_pokes: Receiver<()>,
    thread: JoinHandle<Guard<FakeKernel>>,
    _dir: tempfile::TempDir,
}

impl Daemon {
    /// Starts like `start::run` does (protection first, then the
    /// metrics' first read).
    fn start(config: &str, verify_every: Duration) -> Daemon {
        Daemon::start_with(config, verify_every, |_| {}, Vec::new())
    }

    /// [`Daemon::start`], with `meddle` done to the kernel after the
    /// guard's start and `queued` already waiting on the channel when the
    /// loop first looks: one burst.
    fn start_with(
        config: &str,
        verify_every: Duration,
        meddle: impl FnOnce(&FakeKernel),
        queued: Vec<Trigger>,
    ) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        let kernel = FakeKernel::default();
        let mut guard = Guard::new(
            fake_kernel::setup(dir.path(), Config::from_toml_str(config).unwrap()),
            kernel.clone(),
        );
        guard.start().unwrap();
        meddle(&kernel);
        let (reads_tx, reads) = channel();
        let (docker_api, docker_api_pokes) = Poke::detached();
        let (inventory, _) = Poke::detached();
        let mut effects = Effects {
            metrics: Metrics::start(None, &dir.path().join("state")),
            blocked: Arc::new(Blocked::new()),
            rescan: Rescanners {
                docker_api,
                inventory,
            },
            read_config: Box::new(move |_path, answer| {
                let _ = reads_tx.send(answer);
            }),
        };
        let (tx, rx) = channel();
        for trigger in queued {
            tx.send(trigger).unwrap();
        }
        let triggers = Triggers {
            rx,
            tx: tx.clone(),
            verify_every,
        };
        let thread = std::thread::spawn(move || {
            refresh_metrics(&mut guard, &mut effects.metrics, Duration::ZERO);
            event_loop(&mut guard, &mut effects, &triggers);
            guard
        });
        Daemon {
            tx,
            kernel,
            reads,
            docker_api_pokes,
            thread,
            _dir: dir,
        }
    }

    fn send(&self, trigger: Trigger) {
        self.tx.send(trigger).unwrap();
    }

    fn ask(&self, request: RequestBody) -> Reply {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.send(Trigger::Control(request, reply));
        answer
    }

    fn status(&self) -> Status {
        match answer(&mut self.ask(RequestBody::Status)).body {
            ResponseBody::Status(status) => *status,
            other => panic!("not a status: {other:?}"),
        }
    }

    /// Returns once every trigger sent so far was handled in full: a
    /// status is answered mid-pass, so the second one's answer comes
    /// after the pass that answered the first one ended.
    fn settle(&self) {
        self.status();
        self.status();
    }

    /// The next configuration read the loop starts.
    fn read_started(&self) -> Sender<Trigger> {
        self.reads
            .recv_timeout(PATIENCE)
            .expect("the loop started no configuration read")
    }

    fn stop(self) -> Guard<FakeKernel> {
        self.send(Trigger::Stop);
        self.thread.join().unwrap()
    }
}

/// The reply, waiting for it at most [`PATIENCE`].
fn answer(reply: &mut Reply) -> Response {
    let started = Instant::now();
    loop {
        match reply.try_recv() {
            Ok(response) => return response,
            Err(TryRecvError::Empty) if started.elapsed() < PATIENCE => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => panic!("no reply: {e:?}"),
        }
    }
}

fn reload_outcome(response: Response) -> ReloadOutcome {
    match response.body {
        ResponseBody::Reload(outcome) => outcome,
        other => panic!("not a reload's answer: {other:?}"),
    }
}

/// Waits until `done` holds, at most [`PATIENCE`].
fn until(what: &str, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(
            started.elapsed() < PATIENCE,
            "{what}: not within {PATIENCE:?}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Somebody else committed a change to the guard's table.
fn table_changed() -> Trigger {
    Trigger::Netfilter(
        Change {
            pid: 7,
            process: "nft".into(),
            tables: ["inet portguard".to_string()].into(),
            ..Change::default()
        },
        Instant::now(),
    )
}

fn docker_connected(snapshot: Snapshot) -> Trigger {
    Trigger::Docker(DockerUpdate::Connected {
        snapshot,
        engine: "27.0".into(),
        firewall: None,
    })
}

/// Docker's answer: containers publishing `ports` (TCP) on docker0.
fn published(ports: &[u16]) -> Snapshot {
    let published: Vec<_> = ports
        .iter()
        .map(|&port| {
            serde_json::json!({
                "host_ip": null, "host_port": port, "proto": "tcp", "container_port": 80,
                "host_network": false,
                "container": {"id": format!("c{port}"), "name": format!("app{port}"), "compose": null}
            })
        })
        .collect();
    serde_json::from_value(serde_json::json!({ "bridges": [], "published": published })).unwrap()
}

fn holds(table: &Ruleset, set: &str, port: u16) -> bool {
    table.set(set).is_some_and(|s| {
        s.elements
            .iter()
            .any(|e| matches!(e, Element::Port(p) if p.start() <= port && port <= p.end()))
    })
}

/// Whether a new TCP connection from anywhere to published host port
/// `port` passes with the kernel's tables as `tables`: every copy present
/// judges each packet, so it passes when none is there, or when each one
/// leaves it unjudged or admits it.
fn open(tables: &[Option<Ruleset>], port: u16) -> bool {
    tables
        .iter()
        .flatten()
        .all(|t| !holds(t, "published_tcp", port) || holds(t, "allow_tcp", port))
}

/// After every commit since `port` was first judged published, it was
/// closed.
fn never_opened(kernel: &FakeKernel, port: u16) {
    let state = kernel.state();
    let judged = |tables: &Vec<Option<Ruleset>>| {
        tables
            .iter()
            .flatten()
            .any(|t| holds(t, "published_tcp", port))
    };
    let first = state
        .history
        .iter()
        .position(judged)
        .expect("the port was never judged");
    for (i, tables) in state.history.iter().enumerate().skip(first) {
        assert!(!open(tables, port), "port {port} open after commit {i}");
    }
}

/// Stops the daemon, whose every copy of the table must then hold
/// exactly what the guard wants.
fn stopped_exact(d: Daemon) -> FakeKernel {
    let kernel = d.kernel.clone();
    let guard = d.stop();
    exact(&guard, &kernel);
    kernel
}

/// Whether the primary copy admits TCP port `port` from anywhere.
fn allowed(kernel: &FakeKernel, port: u16) -> bool {
    kernel.state().tables[0]
        .as_ref()
        .is_some_and(|t| holds(t, "allow_tcp", port))
}

/// The configuration reader's answer: `text`, read.
fn config_read(text: &str) -> Trigger {
    Trigger::ConfigRead(Ok(Config::from_toml_str(text).unwrap()))
}

/// Every copy of the table holds exactly what the guard wants.
fn exact(guard: &Guard<FakeKernel>, kernel: &FakeKernel) {
    let desired = guard.desired();
    let state = kernel.state();
    assert_eq!(state.tables.len(), 2);
    for (i, table) in state.tables.iter().enumerate() {
        assert!(table.as_ref() == Some(&desired), "table {i} is not exact");
    }
}

/// A daemon allowing 9090, with 8080 and 9090 published, asked to
/// reload: the asker's reply, and the sender the read answers on.
fn reload_under_way() -> (Daemon, Reply, Sender<Trigger>) {
    let d = Daemon::start("[[allow]]\nport = 9090\n", VERIFY_INTERVAL);
    d.send(docker_connected(published(&[8080, 9090])));
    let reply = d.ask(RequestBody::Reload);
    let read = d.read_started();
    (d, reply, read)
}

/// The reload to `[[allow]] port = 9091` was said applied once it was in
/// force, the tables end exact with it, and 8080 was never open.
fn reload_applied_and_nothing_opened(d: Daemon, mut reply: Reply) {
    let outcome = reload_outcome(answer(&mut reply));
    assert!(outcome.applied && outcome.error.is_none(), "{outcome:?}");
    // Said applied: it is in force when the asker hears so.
    assert!(allowed(&d.kernel, 9091));
    let kernel = stopped_exact(d);
    assert!(allowed(&kernel, 9091) && !allowed(&kernel, 9090));
    never_opened(&kernel, 8080);
}

/// (a) Somebody deletes the table while a reload's read is under way: the
/// copy is restored at once with the configuration in force, the reload
/// then puts the new one in, its asker hears that it was applied, and
/// the published port that neither configuration opens stays closed.
#[test]
fn a_table_deleted_during_a_reload_is_restored_and_the_reload_applied() {
    let (d, mut reply, read) = reload_under_way();
    d.kernel.state().tables[0] = None;
    d.send(table_changed());
    until("the deleted copy is restored", || {
        d.kernel.state().tables[0].is_some()
    });
    assert_eq!(d.status().restores, 1);
    assert!(
        matches!(reply.try_recv(), Err(TryRecvError::Empty)),
        "the reload was answered before its read finished"
    );
    read.send(config_read("[[allow]]\nport = 9091\n")).unwrap();
    reload_applied_and_nothing_opened(d, reply);
}

/// (a) The same, with the deletion heard in the very pass that takes the
/// read's answer (both queued while the loop was inside a reconcile).
#[test]
fn a_table_deleted_as_the_reload_s_read_answers_is_restored_and_the_reload_applied() {
    let (d, reply, read) = reload_under_way();
    // Hold the loop inside a reconcile while both arrive.
    let paused = d.kernel.pause_next_reconcile();
    d.send(table_changed());
    assert!(paused.reached(PATIENCE));
    d.kernel.state().tables[0] = None;
    d.send(table_changed());
    read.send(config_read("[[allow]]\nport = 9091\n")).unwrap();
    paused.release();
    reload_applied_and_nothing_opened(d, reply);
}

/// (b) Docker comes back while the loop is restoring a deleted copy, with
/// a container more: the restore completes with what was judged while
/// Docker was away (its port stays closed), the new snapshot follows, the
/// tables end exact, and the scanner is asked to look for dockerd's
/// listeners again.
#[test]
fn docker_reconnecting_during_a_restore_ends_exact_and_opens_nothing() {
    let d = Daemon::start("", VERIFY_INTERVAL);
    d.send(docker_connected(published(&[8080])));
    d.send(Trigger::Docker(DockerUpdate::Disconnected {
        error: "stopped".into(),
    }));
    until("Docker is gone", || !d.status().docker.connected);
    while d.docker_api_pokes.try_recv().is_ok() {}
    let paused = d.kernel.pause_next_reconcile();
    d.kernel.state().tables[0] = None;
    d.send(table_changed());
    assert!(paused.reached(PATIENCE), "no restore started");
    d.send(docker_connected(published(&[8080, 8443])));
    paused.release();
    until("Docker is back", || d.status().docker.connected);
    // One look for the change heard, one for Docker's return.
    assert_eq!(
        d.docker_api_pokes.try_iter().count(),
        2,
        "dockerd's listeners were not looked for again after Docker came back"
    );
    let status = d.status();
    assert_eq!(status.restores, 1);
    let kernel = stopped_exact(d);
    let tables = kernel.state().tables.clone();
    assert!(!open(&tables, 8443), "the new container's port is open");
    never_opened(&kernel, 8080);
}

/// (c) A configuration read that never finishes (a FIFO nobody writes
/// to): the loop keeps turning (answers status, restores a heard
/// deletion, verifies and restores an unheard one), starts no second
/// read however often a reload is asked, and the asker's request times
/// out at the control socket as it would; when the read finally answers,
/// its asker hears, and the reloads asked meanwhile get a read of their
/// own.
#[test]
fn a_stuck_configuration_read_never_stops_the_loop() {
    let d = Daemon::start("[[allow]]\nport = 9090\n", Duration::from_millis(100));
    d.send(docker_connected(published(&[8080])));
    let mut first = d.ask(RequestBody::Reload);
    let stuck = d.read_started();

    // Answering, and restoring what it hears of.
    d.kernel.state().tables[1] = None;
    d.send(table_changed());
    until("the heard deletion is restored", || {
        d.kernel.state().tables[1].is_some()
    });
    // Verifying: an unheard deletion is found by the periodic verify.
    d.kernel.state().tables[0] = None;
    until("the unheard deletion is restored", || {
        d.kernel.state().tables[0].is_some()
    });
    assert_eq!(d.status().restores, 2);

    // More reloads: they wait for the next read, none starts meanwhile.
    let mut second = d.ask(RequestBody::Reload);
    d.send(Trigger::Reload);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let timed_out = runtime.block_on(control_socket::ask_loop(
        RequestBody::Reload,
        &d.tx,
        tokio::time::Instant::now() + Duration::from_millis(200),
    ));
    assert_eq!(
        timed_out.body,
        ResponseBody::Error("portguardd did not answer in time".into())
    );
    d.settle();
    assert!(
        d.reads.try_recv().is_err(),
        "a second read started while the first hangs"
    );
    assert!(matches!(first.try_recv(), Err(TryRecvError::Empty)));
    assert!(matches!(second.try_recv(), Err(TryRecvError::Empty)));

    // The read comes back at last.
    stuck.send(config_read("[[allow]]\nport = 9091\n")).unwrap();
    assert!(reload_outcome(answer(&mut first)).applied);
    let next = d.read_started();
    next.send(Trigger::ConfigRead(Err("portguard.toml:1:1: bad".into())))
        .unwrap();
    let refused = reload_outcome(answer(&mut second));
    assert!(!refused.applied);
    assert_eq!(refused.error.as_deref(), Some("portguard.toml:1:1: bad"));
    let kernel = stopped_exact(d);
    assert!(allowed(&kernel, 9091));
    never_opened(&kernel, 8080);
}

/// (d) A burst of changes (a script running `nft` fifty times, an
/// overflow among them) costs one check of the tables, which restores the
/// deleted copy once.
#[test]
fn a_burst_of_changes_is_one_reconcile() {
    let mut burst: Vec<Trigger> = (0..50).map(|_| table_changed()).collect();
    burst.insert(25, Trigger::Overflow(Vec::new()));
    let (reply, mut status) = tokio::sync::oneshot::channel();
    burst.push(Trigger::Control(RequestBody::Status, reply));
    burst.push(Trigger::Stop);
    let d = Daemon::start_with(
        "",
        VERIFY_INTERVAL,
        |kernel| {
            let mut state = kernel.state();
            state.tables[0] = None;
            state.reconciles = 0;
            state.commits = 0;
        },
        burst,
    );
    let kernel = d.kernel.clone();
    let guard = d.thread.join().unwrap();
    let ResponseBody::Status(status) = answer(&mut status).body else {
        panic!("not a status");
    };
    assert_eq!(status.restores, 1);
    let state = kernel.state();
    assert_eq!(state.reconciles, 1, "one reconcile for the burst");
    assert_eq!(state.commits, 1, "the deleted copy written once");
    drop(state);
    exact(&guard, &kernel);
}

/// 32 clients asking at once cost at most one read of the kernel's
/// counters, and still see what the kernel counted up to that read; the
/// loop's own pass within the gap does not read either.
#[test]
fn clients_asking_together_share_one_read_of_the_counters() {
    let blocked = "portguard_blocked_attempts_total{port=\"8081\",proto=\"tcp\"}";
    let d = Daemon::start("", VERIFY_INTERVAL);
    until("the start reads the counters", || {
        d.kernel.state().counter_reads == 1
    });
    d.kernel.state().blocked = vec![(portguard_core::L4Proto::Tcp, 8081, 5)];
    std::thread::sleep(metrics::CLIENT_READ_GAP);
    let reads = d.kernel.state().counter_reads;
    let mut replies: Vec<_> = (0..32).map(|_| d.ask(RequestBody::Metrics)).collect();
    for reply in &mut replies {
        let ResponseBody::Metrics(text) = answer(reply).body else {
            panic!("not metrics");
        };
        assert!(text.lines().any(|l| l == format!("{blocked} 5")), "{text}");
    }
    assert_eq!(
        d.kernel.state().counter_reads - reads,
        1,
        "one read for 32 clients"
    );
    d.settle();
    answer(&mut d.ask(RequestBody::Metrics));
    d.settle();
    assert_eq!(d.kernel.state().counter_reads - reads, 1);
    d.stop();
}
