//! Under systemd the daemon logs to the journal with structured fields.
//! journald's native socket is a fixed path, so the daemon runs in a
//! private mount namespace whose `/run` is a fresh tmpfs with the test's
//! own datagram socket bound in at `/run/systemd/journal/socket`; the test
//! reads what would have reached journald. Nothing outside the test's
//! namespaces sees the mounts.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::time::{Duration, Instant};

use portguard_testkit::NetNs;
use portguard_testkit::daemon::{Daemon, binaries, write_config};

/// One journal entry in the native protocol: `NAME=value\n`, or
/// `NAME\n<u64 LE length><value>\n` for values that may hold newlines.
fn parse_entry(mut data: &[u8]) -> HashMap<String, String> {
    let mut fields = HashMap::new();
    while !data.is_empty() {
        let Some(end) = data.iter().position(|&b| b == b'\n' || b == b'=') else {
            break;
        };
        let name = String::from_utf8_lossy(&data[..end]).into_owned();
        if data[end] == b'=' {
            let rest = &data[end + 1..];
            let stop = rest.iter().position(|&b| b == b'\n').unwrap_or(rest.len());
            fields.insert(name, String::from_utf8_lossy(&rest[..stop]).into_owned());
            data = rest.get(stop + 1..).unwrap_or_default();
        } else {
            let rest = &data[end + 1..];
            let len = u64::from_le_bytes(rest[..8].try_into().unwrap()) as usize;
            let value = &rest[8..8 + len];
            fields.insert(name, String::from_utf8_lossy(value).into_owned());
            data = rest.get(8 + len + 1..).unwrap_or_default();
        }
    }
    fields
}

/// Reads entries until one has `PORTGUARD_EVENT=event`; returns it.
fn wait_event(
    journal: &UnixDatagram,
    event: &str,
    seen: &mut Vec<HashMap<String, String>>,
) -> HashMap<String, String> {
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut buf = vec![0u8; 64 * 1024];
    while Instant::now() < deadline {
        journal
            .set_read_timeout(Some(deadline - Instant::now()))
            .unwrap();
        let Ok(n) = journal.recv(&mut buf) else { break };
        let entry = parse_entry(&buf[..n]);
        let hit = entry.get("PORTGUARD_EVENT").is_some_and(|e| e == event);
        seen.push(entry.clone());
        if hit {
            return entry;
        }
    }
    panic!("no PORTGUARD_EVENT={event} in the journal; got {seen:#?}");
}

#[test]
fn under_journald_events_carry_portguard_event_fields() {
    let ns = NetNs::new("jrnl");
    let dir = tempfile::tempdir().unwrap();
    let journal_dir = dir.path().join("journal");
    std::fs::create_dir(&journal_dir).unwrap();
    let journal = UnixDatagram::bind(journal_dir.join("socket")).unwrap();
    let wrapper = dir.path().join("portguardd-with-journal");
    std::fs::write(
        &wrapper,
        "#!/bin/sh\n\
         exec unshare --mount --propagation private sh -c '\
         mount -t tmpfs tmpfs /run && mkdir -p /run/systemd/journal && \
         mount --bind \"$PG_JOURNAL_DIR\" /run/systemd/journal && exec \"$PG_BINARY\" \"$@\"' sh \"$@\"\n",
    )
    .unwrap();
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let config = dir.path().join("portguard.toml");
    let docker = dir.path().join("no-docker.sock");
    let guarded = "[guard]\nprotection = \"twin\"\n[[allow]]\nport = 8080\n";
    write_config(&config, guarded, &docker);
    let binary = binaries().0;
    let daemon = Daemon::start_binary(
        &wrapper,
        &ns,
        &config,
        None,
        &[
            ("PG_JOURNAL_DIR", journal_dir.to_str().unwrap()),
            ("PG_BINARY", binary.to_str().unwrap()),
        ],
    );
    let mut seen = Vec::new();
    let start = wait_event(&journal, "start", &mut seen);
    assert_eq!(start["SYSLOG_IDENTIFIER"], "portguardd", "{start:?}");
    assert!(
        start["MESSAGE"].starts_with("protection in place (twin): "),
        "a sentence, the tier spelt as the configuration spells it: {start:?}"
    );
    assert!(
        Path::new(&daemon.log).metadata().unwrap().len() == 0,
        "logged to stderr as well as the journal: {}",
        daemon.log()
    );

    // Somebody deletes the table: a restore, a warning (priority 4).
    ns.sh("nft delete table inet portguard");
    let restore = wait_event(&journal, "restore", &mut seen);
    assert_eq!(restore["PRIORITY"], "4", "{restore:?}");
    assert!(restore["MESSAGE"].contains("table missing"), "{restore:?}");

    // A broken file: the error is in the message itself, which is what
    // `journalctl -u portguard` shows.
    write_config(
        &config,
        "[guard]\nprotection = \"twin\"\nbogus = 1\n",
        &docker,
    );
    let _ = daemon.guardctl(&["reload"]);
    let error = wait_event(&journal, "config_error", &mut seen);
    assert_eq!(error["PRIORITY"], "3", "{error:?}");
    assert!(
        error["MESSAGE"].contains(&format!("{}:3:1", config.display())),
        "{error:?}"
    );

    write_config(&config, guarded, &docker);
    let out = daemon.guardctl(&["reload"]);
    assert!(out.status.success());
    wait_event(&journal, "reload", &mut seen);
}
