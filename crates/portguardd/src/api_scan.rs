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
//! reports only when what it found changed.

mod identify;
mod procfs;
mod sock_diag;

use std::collections::{BTreeSet, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
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
    crate::triggers::spawn_rescanner(
        "docker-api-scan",
        "look for an exposed Docker API (sock_diag)",
        MIN_GAP,
        RESCAN_INTERVAL,
        move || scan().map(|(identified, denied)| scanner.record(identified, denied)),
        // The scanner keeps its own copy to compare with; a few listeners.
        move |found| report(Arc::unwrap_or_clone(found)),
    )
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

    #[test]
    fn each_permission_error_is_logged_once() {
        let mut scanner = Scanner::default();
        let denied = || vec!["/proc/77/fd: Permission denied (os error 13)".to_string()];
        scanner.record(look(Vec::new(), DockerApiScan::Cgroup), denied());
        scanner.record(look(Vec::new(), DockerApiScan::Cgroup), denied());
        assert_eq!(scanner.logged.len(), 1);
    }
}
