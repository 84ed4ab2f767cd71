//! The control socket against hostile and unprivileged clients: a real
//! portguardd in its own network namespace, raw unix streams and guardctl.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use portguard_testkit::NetNs;
use portguard_testkit::daemon::{Daemon, binaries, until, write_config};

/// A daemon with an empty allowlist and no Docker, answering on its socket.
fn start_daemon(ns: &NetNs, dir: &Path, body: &str) -> Daemon {
    let config = dir.join("portguard.toml");
    write_config(&config, body, &dir.join("no-docker.sock"));
    let daemon = Daemon::start(ns, &config, None, &[]);
    until("control socket answers", Duration::from_secs(10), || {
        daemon.guardctl(&["status"]).status.code() == Some(0)
    });
    daemon
}

/// Sends `request` raw and returns the one line answered.
fn raw_request(socket: &Path, request: &[u8]) -> serde_json::Value {
    let mut stream = UnixStream::connect(socket).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    stream.write_all(request).unwrap();
    let mut line = String::new();
    BufReader::new(&stream).read_line(&mut line).unwrap();
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"))
}

fn timed_status(daemon: &Daemon) -> Duration {
    let started = Instant::now();
    let out = daemon.guardctl(&["status"]);
    let took = started.elapsed();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    took
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[test]
fn dripping_clients_do_not_delay_another_clients_status() {
    let ns = NetNs::new("ctldrip");
    let dir = tempfile::tempdir().unwrap();
    let daemon = start_daemon(&ns, dir.path(), "");
    let baseline: Vec<Duration> = (0..5).map(|_| timed_status(&daemon)).collect();

    // Four clients each send a byte every 2 s, never a whole line (the old
    // daemon served one client at a time, 5 s per read); dropped at the
    // first line's deadline, they connect again.
    let stop = Arc::new(AtomicBool::new(false));
    let drippers: Vec<_> = (0..4)
        .map(|_| {
            let socket = daemon.socket.clone();
            let mut stream = UnixStream::connect(&socket).unwrap();
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let mut sent = 0;
                while !stop.load(Ordering::Relaxed) {
                    if stream.write_all(b" ").is_err() {
                        match UnixStream::connect(&socket) {
                            Ok(again) => stream = again,
                            Err(_) => break,
                        }
                        continue;
                    }
                    sent += 1;
                    for _ in 0..20 {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        std::thread::sleep(Duration::from_millis(100));
                    }
                }
                sent
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let mut dripping = Vec::new();
    for _ in 0..5 {
        dripping.push(timed_status(&daemon));
        std::thread::sleep(Duration::from_millis(500));
    }
    stop.store(true, Ordering::Relaxed);
    let sent: Vec<usize> = drippers.into_iter().map(|d| d.join().unwrap()).collect();
    let (base, drip) = (median(baseline.clone()), median(dripping.clone()));
    println!(
        "guardctl status: median {base:?} alone ({baseline:?}), {drip:?} with 4 dripping clients ({dripping:?}); bytes dripped {sent:?}"
    );
    assert!(sent.iter().all(|&n| n >= 2), "the drippers kept dripping");
    // A server that waits on a dripping client answers after its 10 s
    // deadline; scheduling noise on a busy machine is a few tens of ms, so
    // the median is held close to the baseline and no answer may take 1 s.
    let worst = *dripping.iter().max().unwrap();
    assert!(
        drip < base + Duration::from_millis(100) && worst < Duration::from_secs(1),
        "status took {drip:?} (median; worst {worst:?}) beside dripping clients, {base:?} alone"
    );
}

#[test]
fn bad_requests_get_an_error_reply_and_a_client_beyond_the_cap_is_told_busy() {
    let ns = NetNs::new("ctlbad");
    let dir = tempfile::tempdir().unwrap();
    let daemon = start_daemon(&ns, dir.path(), "");
    let cases: &[(&[u8], &str)] = &[
        (b"\xff\xfe\x80\n", "not valid UTF-8"),
        (b"status\n", "bad request"),
        (
            b"{\"version\":1,\"request\":\"explain\",\"port\":0,\"proto\":\"tcp\",\"from\":null}\n",
            "port 0 is not a port",
        ),
        (b"{\"version\":9,\"request\":\"status\"}\n", "version 9"),
    ];
    for (request, wanted) in cases {
        let answer = raw_request(&daemon.socket, request);
        assert_eq!(answer["ok"], false, "{answer}");
        let error = answer["error"].as_str().unwrap();
        assert!(error.contains(wanted), "{request:?}: {error}");
    }
    // 70 KiB and no newline: refused once the limit is passed.
    let answer = raw_request(&daemon.socket, &vec![b'{'; 70 * 1024]);
    assert!(
        answer["error"].as_str().unwrap().contains("longer than"),
        "{answer}"
    );
    // guardctl refuses port 0 itself, as a usage error (exit 2).
    let out = daemon.guardctl(&["explain", "0"]);
    assert_eq!(out.status.code(), Some(2));

    // 32 idle clients hold every slot; the 33rd is answered "busy" at once.
    let idle: Vec<UnixStream> = (0..32)
        .map(|_| UnixStream::connect(&daemon.socket).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let started = Instant::now();
    let answer = raw_request(&daemon.socket, b"");
    assert!(
        answer["error"].as_str().unwrap().starts_with("busy"),
        "{answer}"
    );
    assert!(started.elapsed() < Duration::from_secs(2));
    // The deadline frees the slots; nobody is shut out for long.
    drop(idle);
    until("slots freed", Duration::from_secs(5), || {
        daemon.guardctl(&["status"]).status.success()
    });
    // A client that stalls mid-line is answered when its deadline passes.
    let mut slow = UnixStream::connect(&daemon.socket).unwrap();
    slow.write_all(b"{\"version\"").unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let started = Instant::now();
    let mut answer = String::new();
    slow.read_to_string(&mut answer).unwrap();
    println!(
        "a stalled client was answered after {:?}",
        started.elapsed()
    );
    assert!(answer.contains("no complete line within"), "{answer}");
}

/// guardctl copied where an unprivileged user can run it.
fn guardctl_for_everybody(dir: &Path) -> std::path::PathBuf {
    let copy = dir.join("guardctl");
    std::fs::copy(binaries().1, &copy).unwrap();
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).unwrap();
    copy
}

fn guardctl_as_nobody(guardctl: &Path, socket: &Path, extra_groups: bool) -> std::process::Output {
    let mut cmd = Command::new("setpriv");
    cmd.args(["--reuid=65534", "--regid=65534"]);
    if extra_groups {
        cmd.arg("--init-groups");
    } else {
        cmd.arg("--clear-groups");
    }
    cmd.arg(guardctl)
        .arg("--socket")
        .arg(socket)
        .arg("status")
        .output()
        .unwrap()
}

#[test]
fn a_user_without_access_is_told_permission_denied_with_exit_code_4() {
    let ns = NetNs::new("ctlperm");
    let dir = tempfile::tempdir().unwrap();
    // The directory must be traversable; the socket's mode is what is tested.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let guardctl = guardctl_for_everybody(dir.path());
    let daemon = start_daemon(&ns, dir.path(), "");
    let mode = std::fs::metadata(&daemon.socket)
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);

    let out = guardctl_as_nobody(&guardctl, &daemon.socket, false);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{stderr}");
    assert!(stderr.contains("permission denied"), "{stderr}");
    assert!(!stderr.contains("not running"), "{stderr}");

    // Not running stays exit 3.
    let out = guardctl_as_nobody(&guardctl, &dir.path().join("nothing.sock"), false);
    assert_eq!(out.status.code(), Some(3));
    drop(daemon);

    // With `[control] group = "nogroup"`, that group's members get in.
    let dir2 = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir2.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let daemon = start_daemon(&ns, dir2.path(), "[control]\ngroup = \"nogroup\"\n");
    let mode = std::fs::metadata(&daemon.socket)
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o660);
    let out = guardctl_as_nobody(&guardctl, &daemon.socket, false);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_regular_file_at_the_socket_path_is_left_untouched_and_refused() {
    let ns = NetNs::new("ctlfile");
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("portguard.toml");
    write_config(&config, "", &dir.path().join("no-docker.sock"));
    let socket = dir.path().join("control.sock");
    std::fs::write(&socket, "an administrator's notes\n").unwrap();
    let mut daemon = Daemon::start(&ns, &config, None, &[]);
    until("portguardd exits", Duration::from_secs(10), || {
        daemon.child.try_wait().unwrap().is_some()
    });
    assert!(!daemon.child.wait().unwrap().success());
    let log = daemon.log();
    assert!(log.contains("is a regular file"), "{log}");
    assert_eq!(
        std::fs::read_to_string(&socket).unwrap(),
        "an administrator's notes\n"
    );

    // A stale socket (nobody listens) is replaced.
    std::fs::remove_file(&socket).unwrap();
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    let daemon = Daemon::start(&ns, &config, None, &[]);
    until("stale socket replaced", Duration::from_secs(10), || {
        daemon.guardctl(&["status"]).status.success()
    });
}

/// Set in the child that plays the hostile group member.
const HOSTILE_SOCKET: &str = "PORTGUARD_TEST_HOSTILE_SOCKET";
/// Connections the hostile group member keeps open at once.
const HOSTILE_CONNECTIONS: usize = 100;
/// Marks the child's report on its stdout.
const HOSTILE_REPORT: &str = "hostile client:";

/// Not a test of its own: the hostile member of the control group for
/// `root_is_served_while_a_group_member_holds_100_connections`, run by it
/// as nobody in a child process (the daemon tells clients apart by the
/// credentials the kernel recorded at connect). Without its variable it
/// returns at once.
///
/// It keeps [`HOSTILE_CONNECTIONS`] connections open, each having sent
/// `{` and nothing more (a request that never ends), opens a new one as
/// soon as one is closed, and stops when its stdin closes.
#[test]
fn hostile_group_member_child() {
    let Some(socket) = std::env::var_os(HOSTILE_SOCKET) else {
        return;
    };
    let socket = std::path::PathBuf::from(socket);
    let stop = Arc::new(AtomicBool::new(false));
    let started = Arc::new(std::sync::Barrier::new(HOSTILE_CONNECTIONS + 1));
    let threads: Vec<_> = (0..HOSTILE_CONNECTIONS)
        .map(|_| {
            let (socket, stop, started) = (socket.clone(), Arc::clone(&stop), Arc::clone(&started));
            std::thread::spawn(move || {
                // (connections the daemon kept until it dropped them,
                // connections refused at once, one refusal's text)
                let (mut held, mut refused, mut refusal) = (0usize, 0usize, String::new());
                let mut first = true;
                while !stop.load(Ordering::Relaxed) {
                    let stream = UnixStream::connect(&socket);
                    if first {
                        started.wait();
                        first = false;
                    }
                    let Ok(mut stream) = stream else {
                        std::thread::sleep(Duration::from_millis(5));
                        continue;
                    };
                    let _ = stream.write_all(b"{");
                    stream
                        .set_read_timeout(Some(Duration::from_millis(200)))
                        .unwrap();
                    let mut answer = Vec::new();
                    let mut buf = [0u8; 512];
                    while !stop.load(Ordering::Relaxed) {
                        match stream.read(&mut buf) {
                            Ok(0) => break,
                            Ok(n) => answer.extend_from_slice(&buf[..n]),
                            Err(e)
                                if matches!(
                                    e.kind(),
                                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                                ) => {}
                            Err(_) => break,
                        }
                    }
                    let answer = String::from_utf8_lossy(&answer).into_owned();
                    if answer.contains("busy") {
                        refused += 1;
                        refusal = answer;
                        // Hostile, but leaving the shared test machine a core.
                        std::thread::sleep(Duration::from_millis(5));
                    } else {
                        held += 1;
                    }
                }
                (held, refused, refusal)
            })
        })
        .collect();
    started.wait();
    println!("{HOSTILE_REPORT} connected");
    let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut Vec::new());
    stop.store(true, Ordering::Relaxed);
    let (mut held, mut refused, mut refusal) = (0, 0, String::new());
    for thread in threads {
        let (h, r, text) = thread.join().unwrap();
        held += h;
        refused += r;
        if !text.is_empty() {
            refusal = text;
        }
    }
    println!(
        "{HOSTILE_REPORT} held {held}, refused {refused}, told {:?}",
        refusal.trim()
    );
}

/// A member of `[control] group` holds 100 connections that never finish
/// a request; root's `guardctl reload` (what `systemctl reload` runs) and
/// `status` are answered every time, and the member is told why it was
/// refused.
#[test]
fn root_is_served_while_a_group_member_holds_100_connections() {
    let ns = NetNs::new("ctlfair");
    let dir = tempfile::tempdir().unwrap();
    // nobody must reach the socket; the socket's own mode is 0660.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let daemon = start_daemon(&ns, dir.path(), "[control]\ngroup = \"nogroup\"\n");
    let mut hostile = {
        use std::os::unix::process::CommandExt as _;
        Command::new(std::env::current_exe().unwrap())
            .args([
                "hostile_group_member_child",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(HOSTILE_SOCKET, &daemon.socket)
            // nobody:nogroup, no other groups (std drops them).
            .uid(65534)
            .gid(65534)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let mut report = BufReader::new(hostile.stdout.take().unwrap());
    let mut line = String::new();
    while !line.contains(HOSTILE_REPORT) {
        line.clear();
        assert_ne!(report.read_line(&mut line).unwrap(), 0, "the child died");
    }
    // Every connection has sent its `{` by now.
    std::thread::sleep(Duration::from_millis(500));

    const TRIES: usize = 20;
    let (mut reloads, mut statuses) = (0, 0);
    let mut errors = std::collections::BTreeSet::new();
    for _ in 0..TRIES {
        for (args, served) in [
            (&["reload"][..], &mut reloads),
            (&["status"], &mut statuses),
        ] {
            let out = daemon.guardctl(args);
            if out.status.success() {
                *served += 1;
            } else {
                errors.insert(String::from_utf8_lossy(&out.stderr).trim().to_string());
            }
        }
        // Spread over a few of the first line's deadlines, when the
        // member's held connections are dropped and taken again.
        std::thread::sleep(Duration::from_millis(200));
    }
    // The member's own guardctl is refused, and says why.
    let guardctl = guardctl_for_everybody(dir.path());
    let member_told: Vec<String> = (0..TRIES)
        .map(|_| {
            let out = guardctl_as_nobody(&guardctl, &daemon.socket, false);
            assert_eq!(out.status.code(), Some(1));
            String::from_utf8_lossy(&out.stderr).trim().to_string()
        })
        .collect();
    drop(hostile.stdin.take());
    let mut rest = String::new();
    report.read_to_string(&mut rest).unwrap();
    hostile.wait().unwrap();
    let hostile_said = rest
        .lines()
        .find(|l| l.contains(HOSTILE_REPORT))
        .unwrap_or("(no report)")
        .to_string();
    println!(
        "root beside {HOSTILE_CONNECTIONS} hostile connections from uid 65534: reload {reloads}/{TRIES}, status {statuses}/{TRIES}; errors {errors:?}; {hostile_said}"
    );
    assert_eq!(
        (reloads, statuses),
        (TRIES, TRIES),
        "root was refused: {errors:?}"
    );
    assert!(
        hostile_said.contains("too many connections from uid 65534"),
        "{hostile_said}"
    );
    let told: std::collections::BTreeSet<_> = member_told.iter().collect();
    println!("the member's guardctl status was told {told:?}");
    assert!(
        member_told
            .iter()
            .all(|e| e.contains("busy: too many connections from uid 65534")),
        "{told:?}"
    );
}

/// A client that sends part of a line, then a byte now and then, never a
/// newline, is dropped when the first line's short deadline passes: the
/// bytes do not renew it, and it does not get the whole request's.
#[test]
fn a_first_line_that_never_ends_is_dropped_after_its_short_deadline() {
    let ns = NetNs::new("ctlslow");
    let dir = tempfile::tempdir().unwrap();
    let daemon = start_daemon(&ns, dir.path(), "");
    let stream = UnixStream::connect(&daemon.socket).unwrap();
    let started = Instant::now();
    let dripper = {
        let mut stream = stream.try_clone().unwrap();
        std::thread::spawn(move || {
            let mut sent = 0;
            while stream
                .write_all(if sent == 0 { b"{" } else { b" " })
                .is_ok()
                && sent < 200
            {
                sent += 1;
                std::thread::sleep(Duration::from_millis(100));
            }
            sent
        })
    };
    let mut answer = String::new();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    BufReader::new(&stream).read_line(&mut answer).unwrap();
    let took = started.elapsed();
    let _ = stream.shutdown(std::net::Shutdown::Both);
    let sent = dripper.join().unwrap();
    println!("a dripping first line was answered after {took:?} ({sent} bytes dripped): {answer}");
    assert!(answer.contains("no complete line within 2 s"), "{answer}");
}

/// What the daemon logs (at debug level) each time it reads the kernel's
/// counters: one dump of each guard table, on the reconcile loop.
const COUNTER_READ: &str = "read the kernel's blocked-attempt counters";

/// 32 clients ask for `metrics` at once, with 10,000 allow entries in
/// both tables of the twin tier: all are answered, with at most one read
/// of the kernel's counters between them (a second may be the periodic
/// one), where each used to dump both tables on the loop.
#[test]
fn thirty_two_metrics_requests_at_once_share_one_read_of_the_kernel() {
    let ns = NetNs::new("ctlmetrics");
    let dir = tempfile::tempdir().unwrap();
    let mut body = String::from("[guard]\nprotection = \"twin\"\n");
    for port in 10_000..20_000 {
        body.push_str(&format!("[[allow]]\nport = {port}\n"));
    }
    let config = dir.path().join("portguard.toml");
    write_config(&config, &body, &dir.path().join("no-docker.sock"));
    let daemon = Daemon::start(
        &ns,
        &config,
        None,
        &[("PORTGUARD_LOG", "info,portguardd::counters=debug")],
    );
    until("control socket answers", Duration::from_secs(30), || {
        daemon.guardctl(&["status"]).status.code() == Some(0)
    });
    const CLIENTS: usize = 32;
    let mut rounds = Vec::new();
    for _ in 0..3 {
        let reads_before = daemon.log().matches(COUNTER_READ).count();
        let go = Arc::new(std::sync::Barrier::new(CLIENTS));
        let clients: Vec<_> = (0..CLIENTS)
            .map(|_| {
                let (socket, go) = (daemon.socket.clone(), Arc::clone(&go));
                std::thread::spawn(move || {
                    let stream = UnixStream::connect(&socket).unwrap();
                    go.wait();
                    let started = Instant::now();
                    (&stream)
                        .write_all(b"{\"version\":1,\"request\":\"metrics\"}\n")
                        .unwrap();
                    let mut line = String::new();
                    BufReader::new(&stream).read_line(&mut line).unwrap();
                    let answer: serde_json::Value = serde_json::from_str(&line).unwrap();
                    (started.elapsed(), answer)
                })
            })
            .collect();
        let mut took = Vec::new();
        for client in clients {
            let (elapsed, answer) = client.join().unwrap();
            assert_eq!(answer["ok"], true, "{answer}");
            let text = answer["metrics"].as_str().unwrap_or_default();
            assert!(text.contains("portguard_up 1"), "{answer}");
            took.push(elapsed);
        }
        let reads = daemon.log().matches(COUNTER_READ).count() - reads_before;
        took.sort();
        println!(
            "{CLIENTS} metrics requests at once (10,000 entries, twin): median {:?}, slowest {:?}; kernel counter reads {reads}",
            took[CLIENTS / 2],
            took[CLIENTS - 1]
        );
        rounds.push(reads);
        std::thread::sleep(Duration::from_millis(1100));
    }
    assert!(
        rounds.iter().all(|&reads| reads <= 2),
        "kernel counter reads per round of {CLIENTS} requests: {rounds:?}"
    );
}

/// A reload that changes nothing leaves the kept last good configuration
/// as it was (no rewrite, no fsync); a reload that changes something still
/// keeps the new configuration.
#[test]
fn a_reload_that_changes_nothing_leaves_last_good_toml_alone() {
    use std::os::unix::fs::MetadataExt as _;
    let ns = NetNs::new("ctlkept");
    let dir = tempfile::tempdir().unwrap();
    let daemon = start_daemon(&ns, dir.path(), "[[allow]]\nport = 8080\n");
    let kept = dir.path().join("state").join("last-good.toml");
    until("last good kept", Duration::from_secs(5), || kept.exists());
    let identity = || {
        let m = std::fs::metadata(&kept).unwrap();
        (m.ino(), m.mtime(), m.mtime_nsec())
    };
    let before = identity();
    // Past the file system's timestamp granularity.
    std::thread::sleep(Duration::from_millis(50));
    for _ in 0..3 {
        let out = daemon.guardctl(&["reload"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(
        identity(),
        before,
        "last-good.toml was rewritten (inode, mtime) by reloads that changed nothing"
    );
    write_config(
        &dir.path().join("portguard.toml"),
        "[[allow]]\nport = 8081\n",
        &dir.path().join("no-docker.sock"),
    );
    assert!(daemon.guardctl(&["reload"]).status.success());
    let text = std::fs::read_to_string(&kept).unwrap();
    assert!(text.contains("8081") && !text.contains("8080"), "{text}");
}
