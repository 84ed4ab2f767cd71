//! The metrics files, written by a thread of their own (latest text wins),
//! so that a hung file system never stalls the reconcile loop: the
//! textfile node_exporter collects, and the state file that keeps the
//! totals for the next run (read back here at start).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use super::counting::Persisted;
use crate::lastgood;

/// The totals of earlier runs; none if there is no file or it is unreadable
/// (said in the log: the counters then start again, which Prometheus'
/// `rate()` reads as a reset, not as a negative rate).
pub fn load(path: &Path) -> Persisted {
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
pub struct Job {
    pub textfile: Option<(PathBuf, String)>,
    pub state: (PathBuf, String),
}

#[derive(Default)]
struct Slot {
    job: Option<Job>,
    submitted: u64,
    done: u64,
}

/// The writer thread: holds the latest job only; the loop never waits for
/// it (the lock is held just to swap a job in or out).
pub struct Writer {
    shared: Arc<(Mutex<Slot>, Condvar)>,
}

impl Writer {
    pub fn spawn() -> Writer {
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

    pub fn submit(&self, job: Job) {
        let (lock, wake) = &*self.shared;
        if let Ok(mut slot) = lock.lock() {
            slot.job = Some(job);
            slot.submitted += 1;
            wake.notify_all();
        }
    }

    /// Waits up to `timeout` for every submitted job; whether they were.
    pub fn flush(&self, timeout: Duration) -> bool {
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
    use super::super::STATE_FILE;
    use super::super::counting::PersistedBlocked;
    use super::*;
    use portguard_core::L4Proto;

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
