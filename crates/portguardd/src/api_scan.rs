//! Finds an exposed Docker API: TCP sockets in LISTEN state (sock_diag over
//! netlink, in the daemon's network namespace) that are dockerd's.
//!
//! Which sockets are dockerd's: those among its open files
//! (`/proc/PID/fd/N -> socket:[INODE]`) where the daemon may read them,
//! which takes CAP_SYS_PTRACE over dockerd. Under the shipped unit it may
//! not (no CAP_SYS_PTRACE in its bounding set), so there the kernel's word
//! is used instead: sock_diag reports the cgroup each socket was opened
//! in, and a socket opened in dockerd's cgroup (`/proc/PID/cgroup`,
//! readable without ptrace) is dockerd's, but for the published ports a
//! docker-proxy in that cgroup serves (its command line names them). A
//! cgroup that other programs share is not guessed at: the look is blind,
//! says so in `status` (`docker_api_scan`) and in the log (once), and the
//! listeners found earlier stay closed.
//!
//! The scan runs on a thread of its own, every [`RESCAN_INTERVAL`] and
//! whenever the loop pokes it: Docker reconnected (dockerd may have
//! restarted with other `-H` flags), or somebody changed netfilter (a
//! starting dockerd opens its listeners, then writes its rules, seconds
//! before it answers on its socket). The loop never waits for it. It
//! reports only when what it found changed; after it found a listener it
//! had not seen, it looks again a few times in quick succession (see
//! [`LOOKS_AFTER_NEW`]).

mod identify;
mod procfs;
mod sock_diag;

use std::collections::{BTreeSet, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use portguard_core::DockerApiListener;
use portguard_core::docker_api::DockerApiScan;

use crate::logging::event;
use crate::triggers::Poke;

pub use identify::{Identified, identify};

/// How often dockerd's listeners are looked at without being asked.
pub const RESCAN_INTERVAL: Duration = Duration::from_secs(30);
/// Least time between two looks: a storm of netfilter changes (each one a
/// poke) costs at most one look (about 2 ms) per this.
const MIN_GAP: Duration = Duration::from_millis(100);
/// After a look that found a listener of dockerd's not seen before, this
/// many more looks follow, [`MIN_GAP`] apart. The new listener is reported
/// at once (an API is closed without waiting), and a later look takes it
/// back if it was a published port's: Docker 28 and later open such a
/// socket in dockerd, then start docker-proxy with it, and a look between
/// the two sees dockerd's. Without the second looks the port stayed judged
/// as the API (by sourced entries only) until the next poke, up to 30 s.
/// A docker-proxy slower than these looks is covered once Docker reports
/// the container: `Snapshot::docker_api` never counts a published
/// binding's address and port as the API.
const LOOKS_AFTER_NEW: u8 = 5;

/// How the latest look went, for `status`. Process-wide because what it
/// describes is: what this process may see of `/proc`.
static LAST_SCAN: Mutex<Option<DockerApiScan>> = Mutex::new(None);

/// How the latest look told dockerd's listeners apart (`None`: no look
/// finished yet).
pub fn last_scan() -> Option<DockerApiScan> {
    LAST_SCAN
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone()
}

/// One look: what is dockerd's among the listeners in this network
/// namespace, and the permission errors met on the way.
pub fn scan() -> std::io::Result<(Identified, Vec<String>)> {
    let listening = sock_diag::listening_tcp()?;
    let listening_in: HashSet<u64> = listening.iter().filter_map(|l| l.cgroup).collect();
    let view = procfs::look(Path::new("/proc"), &listening_in)?;
    Ok((
        identify(
            &listening,
            &view.dockerds,
            &view.proxy_sockets,
            view.hidden.as_deref(),
        ),
        view.denied,
    ))
}

/// The scanner's memory between looks: what it has logged, and what it
/// found while it could see.
#[derive(Default)]
struct Scanner {
    logged: HashSet<String>,
    last_scan: Option<DockerApiScan>,
    found: Vec<DockerApiListener>,
    /// Looks still wanted soon (see [`LOOKS_AFTER_NEW`]).
    looks_wanted: u8,
}

impl Scanner {
    /// Records a look; returns the listeners to report. A blind look keeps
    /// what earlier looks found (and adds what it did see): it proves
    /// nothing about them.
    fn record(&mut self, identified: Identified, denied: Vec<String>) -> Vec<DockerApiListener> {
        for error in denied {
            if self.logged.insert(error.clone()) {
                tracing::warn!(
                    portguard_event = event::DOCKER_API_SCAN,
                    "Docker API scan: {error}"
                );
            }
        }
        if self.last_scan.as_ref() != Some(&identified.scan) {
            match &identified.scan {
                DockerApiScan::Blind { reason } => tracing::error!(
                    portguard_event = event::DOCKER_API_SCAN,
                    "cannot tell which TCP listeners are dockerd's: {reason}; a Docker API on a port \
                     other than 2375 and 2376 would not be closed"
                ),
                DockerApiScan::Cgroup => tracing::info!(
                    portguard_event = event::DOCKER_API_SCAN,
                    "dockerd's open files are not readable here: its listeners are told by its cgroup"
                ),
                DockerApiScan::FileDescriptors | DockerApiScan::NoDockerd => {}
            }
            self.last_scan = Some(identified.scan.clone());
        }
        *LAST_SCAN.lock().unwrap_or_else(PoisonError::into_inner) = Some(identified.scan.clone());
        self.looks_wanted = if identified.listeners.iter().any(|l| !self.found.contains(l)) {
            LOOKS_AFTER_NEW
        } else {
            self.looks_wanted.saturating_sub(1)
        };
        if identified.complete() {
            self.found = identified.listeners;
        } else {
            let merged: BTreeSet<DockerApiListener> =
                self.found.drain(..).chain(identified.listeners).collect();
            self.found = merged.into_iter().collect();
        }
        self.found.clone()
    }
}

/// Starts the scanner; `report` gets each changed result (false: stop).
/// Returns the poke: a non-blocking request to look again now.
pub fn spawn(
    report: impl Fn(Vec<DockerApiListener>) -> bool + Send + 'static,
) -> std::io::Result<Poke> {
    let mut scanner = Scanner::default();
    // The scanner pokes itself for the looks that follow a new listener.
    let itself: Arc<OnceLock<Poke>> = Arc::new(OnceLock::new());
    let poke_itself = Arc::clone(&itself);
    let poke = crate::triggers::spawn_rescanner(
        "docker-api-scan",
        "look for an exposed Docker API (sock_diag)",
        MIN_GAP,
        RESCAN_INTERVAL,
        move || {
            scan().map(|(identified, denied)| {
                let found = scanner.record(identified, denied);
                if scanner.looks_wanted > 0
                    && let Some(poke) = poke_itself.get()
                {
                    poke.now();
                }
                found
            })
        },
        // The scanner keeps its own copy to compare with; a few listeners.
        move |found| report(Arc::unwrap_or_clone(found)),
    )?;
    let _ = itself.set(poke.clone());
    Ok(poke)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn api(port: u16) -> DockerApiListener {
        DockerApiListener {
            addr: "0.0.0.0".parse().unwrap(),
            port,
            pid: 77,
        }
    }

    fn look(listeners: Vec<DockerApiListener>, scan: DockerApiScan) -> Identified {
        Identified { listeners, scan }
    }

    #[test]
    fn a_blind_look_keeps_what_was_found_and_a_seeing_one_replaces_it() {
        let mut scanner = Scanner::default();
        let blind = || DockerApiScan::Blind { reason: "x".into() };
        assert_eq!(
            scanner.record(look(vec![api(4243)], DockerApiScan::Cgroup), Vec::new()),
            vec![api(4243)]
        );
        assert_eq!(
            scanner.record(look(vec![api(5000)], blind()), Vec::new()),
            vec![api(4243), api(5000)]
        );
        assert_eq!(
            scanner.record(look(Vec::new(), blind()), Vec::new()),
            vec![api(4243), api(5000)]
        );
        assert_eq!(
            scanner.record(look(Vec::new(), DockerApiScan::NoDockerd), Vec::new()),
            Vec::new()
        );
        assert_eq!(last_scan(), Some(DockerApiScan::NoDockerd));
    }

    /// Docker 28+: a published port's socket is dockerd's for a moment,
    /// then docker-proxy's. It is reported at once (an API would be), and
    /// the looks that follow take it back.
    #[test]
    fn a_new_listener_is_reported_at_once_and_looked_at_again() {
        let mut scanner = Scanner::default();
        let fds = DockerApiScan::FileDescriptors;
        assert_eq!(
            scanner.record(look(vec![api(2375)], fds.clone()), Vec::new()),
            vec![api(2375)]
        );
        assert_eq!(scanner.looks_wanted, LOOKS_AFTER_NEW);
        for left in (0..LOOKS_AFTER_NEW).rev() {
            scanner.record(look(vec![api(2375)], fds.clone()), Vec::new());
            assert_eq!(scanner.looks_wanted, left);
        }
        // The handover: 8080 is dockerd's in one look, docker-proxy's next.
        assert_eq!(
            scanner.record(look(vec![api(2375), api(8080)], fds.clone()), Vec::new()),
            vec![api(2375), api(8080)]
        );
        assert_eq!(scanner.looks_wanted, LOOKS_AFTER_NEW);
        assert_eq!(
            scanner.record(look(vec![api(2375)], fds), Vec::new()),
            vec![api(2375)]
        );
        assert_eq!(scanner.looks_wanted, LOOKS_AFTER_NEW - 1);
    }

    #[test]
    fn each_permission_error_is_logged_once() {
        let mut scanner = Scanner::default();
        let denied = || vec!["/proc/77/fd: Permission denied (os error 13)".to_string()];
        scanner.record(look(Vec::new(), DockerApiScan::Cgroup), denied());
        scanner.record(look(Vec::new(), DockerApiScan::Cgroup), denied());
        assert_eq!(scanner.logged.len(), 1);
    }
}
