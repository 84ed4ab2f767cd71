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
    // daemon served one client at a time, 5 s per read).
    let stop = Arc::new(AtomicBool::new(false));
    let drippers: Vec<_> = (0..4)
        .map(|_| {
            let mut stream = UnixStream::connect(&daemon.socket).unwrap();
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let mut sent = 0;
                while !stop.load(Ordering::Relaxed) && stream.write_all(b" ").is_ok() {
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
    // guardctl refuses port 0 itself, with its own message.
    let out = daemon.guardctl(&["explain", "0"]);
    assert_eq!(out.status.code(), Some(1));

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
