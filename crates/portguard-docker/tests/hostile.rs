//! The observer against a hostile Docker Engine: a fake Engine API on a
//! unix socket in a tempdir (endless answers, bridge names pointing at
//! other interfaces), and real links in a network namespace of the test's
//! own.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use portguard_docker::{DockerUpdate, transport::MAX_RESPONSE_BYTES};
use portguard_testkit::NetNs;

/// What the fake Engine answers, by path prefix.
#[derive(Clone)]
enum Answer {
    Json(String),
    /// `Content-Length: 3 GB`, then bytes until the client hangs up.
    Endless,
    /// A chunked body that never ends and has no newline: an event stream
    /// whose first event (a JSON string) never ends.
    EndlessChunks,
    /// Headers, then nothing (a quiet event stream).
    Silent,
}

struct FakeEngine {
    routes: Arc<Mutex<Vec<(&'static str, Answer)>>>,
    sent: Arc<AtomicU64>,
}

impl FakeEngine {
    fn start(socket: &Path, routes: Vec<(&'static str, Answer)>) -> FakeEngine {
        let listener = UnixListener::bind(socket).unwrap();
        let routes = Arc::new(Mutex::new(routes));
        let sent = Arc::new(AtomicU64::new(0));
        {
            let (routes, sent) = (Arc::clone(&routes), Arc::clone(&sent));
            std::thread::spawn(move || {
                for stream in listener.incoming().flatten() {
                    let (routes, sent) = (Arc::clone(&routes), Arc::clone(&sent));
                    std::thread::spawn(move || serve(stream, &routes, &sent));
                }
            });
        }
        FakeEngine { routes, sent }
    }

    fn set(&self, prefix: &'static str, answer: Answer) {
        let mut routes = self.routes.lock().unwrap();
        routes.retain(|(p, _)| *p != prefix);
        routes.insert(0, (prefix, answer));
    }
}

fn serve(stream: UnixStream, routes: &Mutex<Vec<(&'static str, Answer)>>, sent: &AtomicU64) {
    let mut reader = BufReader::new(&stream);
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() {
        return;
    }
    loop {
        let mut header = String::new();
        match reader.read_line(&mut header) {
            Ok(0) | Err(_) => return,
            Ok(_) if header == "\r\n" => break,
            Ok(_) => {}
        }
    }
    // "GET /v1.53/containers/json?all=false HTTP/1.1" -> "/containers/json?..."
    let target = request_line.split_whitespace().nth(1).unwrap_or("/");
    let path = match target.strip_prefix("/v1.") {
        Some(rest) => &rest[rest.find('/').unwrap_or(0)..],
        None => target,
    };
    let answer = routes
        .lock()
        .unwrap()
        .iter()
        .find(|(prefix, _)| path.starts_with(prefix))
        .map(|(_, a)| a.clone())
        .unwrap_or(Answer::Json("{}".into()));
    let mut out = &stream;
    let head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nApi-Version: 1.41\r\n";
    match answer {
        Answer::Json(body) => {
            let _ = write!(
                out,
                "{head}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
        Answer::Endless => {
            let _ = write!(out, "{head}Content-Length: 3000000000\r\n\r\n[");
            let block = vec![b' '; 1 << 20];
            while out.write_all(&block).is_ok() {
                sent.fetch_add(block.len() as u64, Ordering::Relaxed);
            }
        }
        Answer::EndlessChunks => {
            let _ = write!(
                out,
                "{head}Transfer-Encoding: chunked\r\n\r\n9\r\n{{\"Type\":\"\r\n"
            );
            let block = vec![b'x'; 1 << 20];
            loop {
                if write!(out, "{:x}\r\n", block.len()).is_err()
                    || out.write_all(&block).is_err()
                    || out.write_all(b"\r\n").is_err()
                {
                    break;
                }
                sent.fetch_add(block.len() as u64, Ordering::Relaxed);
            }
        }
        Answer::Silent => {
            let _ = write!(out, "{head}Transfer-Encoding: chunked\r\n\r\n");
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
}

fn over_cap() -> String {
    format!("more than {} MiB", MAX_RESPONSE_BYTES >> 20)
}

fn version() -> Answer {
    Answer::Json(r#"{"Version":"99.0-fake","ApiVersion":"1.41"}"#.into())
}

/// The kernel's peak resident set of this process, in bytes.
fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    let kb: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kb * 1024
}

/// Runs the observer (in `ns`) against `socket`; its updates arrive on the
/// receiver. It stops when the receiver is dropped.
fn observe(ns: &NetNs, socket: &Path) -> Receiver<DockerUpdate> {
    let (tx, rx) = channel();
    let socket = socket.to_path_buf();
    ns.enter(move || {
        portguard_docker::spawn(socket, move |update| tx.send(update).is_ok()).unwrap();
    });
    rx
}

fn next(rx: &Receiver<DockerUpdate>, within: Duration) -> DockerUpdate {
    rx.recv_timeout(within)
        .unwrap_or_else(|e| panic!("no update from the observer within {within:?}: {e}"))
}

#[test]
fn an_endless_answer_is_cut_off_and_reported_with_memory_bounded() {
    let ns = NetNs::new("dkendless");
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("docker.sock");
    let engine = FakeEngine::start(
        &socket,
        vec![
            ("/version", version()),
            ("/events", Answer::Silent),
            ("/containers/json", Answer::Endless),
            ("/networks", Answer::Json("[]".into())),
        ],
    );
    let before = peak_rss();
    let started = Instant::now();
    let rx = observe(&ns, &socket);
    let DockerUpdate::Disconnected { error } = next(&rx, Duration::from_secs(60)) else {
        panic!("an endless answer gave a snapshot");
    };
    let took = started.elapsed();
    let grown = peak_rss().saturating_sub(before);
    let sent = engine.sent.load(Ordering::Relaxed);
    println!(
        "endless /containers/json: refused after {took:?}, {} MiB sent by the fake Engine, peak RSS grew {} MiB: {error}",
        sent >> 20,
        grown >> 20
    );
    assert!(error.contains(&over_cap()), "{error}");
    assert!(
        sent >= MAX_RESPONSE_BYTES / 2,
        "the cap, not something else, ended it"
    );
    // The answer is collected up to the cap (bollard buffers bodies), never
    // beyond it.
    assert!(
        grown < 3 * MAX_RESPONSE_BYTES,
        "peak RSS grew by {} MiB",
        grown >> 20
    );

    // An event stream whose first line never ends is cut off the same way,
    // after a good snapshot.
    engine.set("/containers/json", Answer::Json("[]".into()));
    engine.set("/events", Answer::EndlessChunks);
    // bollard re-parses the unfinished line on every read: slow in debug.
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut seen = Vec::new();
    loop {
        let update = next(&rx, deadline.saturating_duration_since(Instant::now()));
        if let DockerUpdate::Disconnected { error } = &update
            && seen
                .iter()
                .any(|u| matches!(u, DockerUpdate::Connected { .. }))
        {
            assert!(error.contains(&over_cap()), "{error}");
            break;
        }
        seen.push(update);
    }
    let grown = peak_rss().saturating_sub(before);
    println!(
        "after the endless event stream, peak RSS grew {} MiB",
        grown >> 20
    );
    assert!(grown < 3 * MAX_RESPONSE_BYTES);
}

fn networks(claims: &[(&str, &str)]) -> Answer {
    let list: Vec<String> = claims
        .iter()
        .enumerate()
        .map(|(i, (network, bridge))| {
            format!(
                r#"{{"Name":"{network}","Id":"{i:064x}","Driver":"bridge","Options":{{"com.docker.network.bridge.name":"{bridge}"}}}}"#
            )
        })
        .collect();
    Answer::Json(format!("[{}]", list.join(",")))
}

fn bridges(update: &DockerUpdate) -> Vec<String> {
    match update {
        DockerUpdate::Connected { snapshot, .. } | DockerUpdate::Snapshot(snapshot) => {
            snapshot.bridges.iter().cloned().collect()
        }
        DockerUpdate::Disconnected { error } => panic!("disconnected: {error}"),
    }
}

#[test]
fn only_real_bridges_named_by_docker_are_trusted() {
    let ns = NetNs::new("dkbridges");
    ns.sh(
        "ip link add veth-outside type veth peer name veth-inside && \
         ip link add shopnet type bridge && ip link add plain0 type veth peer name plain1",
    );
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("docker.sock");
    let _engine = FakeEngine::start(
        &socket,
        vec![
            ("/version", version()),
            ("/events", Answer::Silent),
            ("/containers/json", Answer::Json("[]".into())),
            (
                "/networks",
                networks(&[
                    ("evil", "veth-outside"),
                    ("plain", "plain0"),
                    ("shop", "shopnet"),
                    ("later", "newnet"),
                    ("long", "a-very-long-bridge-name"),
                    ("path", "../shopnet"),
                ]),
            ),
        ],
    );
    let rx = observe(&ns, &socket);
    let first = next(&rx, Duration::from_secs(30));
    assert!(matches!(first, DockerUpdate::Connected { .. }));
    assert_eq!(bridges(&first), ["shopnet"]);

    // The awaited bridge appears: trusted from then on, without any Docker
    // event.
    ns.sh("ip link add newnet type bridge");
    let update = next(&rx, Duration::from_secs(10));
    assert_eq!(bridges(&update), ["newnet", "shopnet"]);

    // A trusted name replaced by something that is not a bridge.
    ns.sh("ip link del shopnet && ip link add shopnet type veth peer name shoppeer");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let update = next(&rx, deadline.saturating_duration_since(Instant::now()));
        if bridges(&update) == ["newnet"] {
            break;
        }
    }
}

/// `GET /info` only feeds status (the firewall backend Docker says): an
/// Engine that sends its headers and then nothing (a wedged storage or
/// plugin driver) must not keep the observer from connecting, which would
/// leave the guard on its last snapshot.
#[test]
fn a_silent_info_answer_does_not_keep_the_observer_from_connecting() {
    let ns = NetNs::new("dksilentinfo");
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("docker.sock");
    let _engine = FakeEngine::start(
        &socket,
        vec![
            ("/version", version()),
            ("/events", Answer::Silent),
            ("/info", Answer::Silent),
            ("/containers/json", Answer::Json("[]".into())),
            ("/networks", Answer::Json("[]".into())),
        ],
    );
    let rx = observe(&ns, &socket);
    match next(&rx, Duration::from_secs(45)) {
        DockerUpdate::Connected { firewall, .. } => {
            assert_eq!(firewall, None, "no answer, no backend");
        }
        other => panic!("expected a connection, got {other:?}"),
    }
}

/// An Engine that sends the headers of `/version` and then nothing (the
/// first request of every connection) must not hold the observer forever:
/// it gives up, backs off and connects once the Engine answers again.
#[test]
fn a_silent_version_answer_is_given_up_and_retried() {
    let ns = NetNs::new("dksilentver");
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("docker.sock");
    let engine = FakeEngine::start(
        &socket,
        vec![
            ("/version", Answer::Silent),
            ("/events", Answer::Silent),
            ("/containers/json", Answer::Json("[]".into())),
            ("/networks", Answer::Json("[]".into())),
        ],
    );
    let rx = observe(&ns, &socket);
    std::thread::sleep(Duration::from_secs(2));
    engine.set("/version", version());
    // It may say that it gave up first; then it connects.
    let deadline = Instant::now() + Duration::from_secs(45);
    loop {
        match next(&rx, deadline.saturating_duration_since(Instant::now())) {
            DockerUpdate::Connected { engine, .. } => {
                assert_eq!(engine, "99.0-fake");
                break;
            }
            DockerUpdate::Disconnected { error } => assert!(error.contains("/version"), "{error}"),
            other => panic!("expected a connection, got {other:?}"),
        }
    }
}
