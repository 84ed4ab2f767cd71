//! Where the daemon's log goes: under systemd to the journal, with
//! structured fields (`PORTGUARD_EVENT=restore`, `PORT=2375`, ...), through
//! tracing-journald; elsewhere as text on stderr.
//!
//! Every event an administrator may want to find carries a
//! `portguard_event` field (one of [`event`]); its message is written to be
//! complete on its own, since `journalctl` shows only the message unless
//! asked for the fields (`-o verbose`).

use std::path::Path;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

/// The values of `PORTGUARD_EVENT`.
pub mod event {
    /// The daemon started and its table is in place.
    pub const START: &str = "start";
    /// Somebody else had changed the guard's table; it was put right.
    pub const RESTORE: &str = "restore";
    /// Docker had set the IPv6 FORWARD policy to drop; set back to accept.
    pub const IPV6_POLICY_RESTORE: &str = "ipv6_policy_restore";
    /// Somebody other than Docker set the IPv6 FORWARD policy to drop (or
    /// who is not known): left alone.
    pub const IPV6_POLICY_LEFT: &str = "ipv6_policy_left";
    /// A configuration was put in force.
    pub const RELOAD: &str = "reload";
    /// A configuration was refused (the last good one stays in force).
    pub const CONFIG_ERROR: &str = "config_error";
    /// Live connections the allowlist no longer admits were ended.
    pub const CONNECTIONS_ENDED: &str = "connections_ended";
    /// dockerd listens on TCP (the Docker API) beyond loopback.
    pub const DOCKER_API_EXPOSED: &str = "docker_api_exposed";
    /// dockerd no longer listens on TCP.
    pub const DOCKER_API_GONE: &str = "docker_api_gone";
    /// The Docker API scan met a permission error, or changed how it tells
    /// dockerd's listeners apart (or that it cannot: blind).
    pub const DOCKER_API_SCAN: &str = "docker_api_scan";
    pub const DOCKER_CONNECTED: &str = "docker_connected";
    pub const DOCKER_DISCONNECTED: &str = "docker_disconnected";
    /// A new connection was blocked (or, in audit mode, would have been):
    /// the first attempt per port and minute, with its source.
    pub const BLOCKED: &str = "blocked";
    /// Applying or verifying the ruleset failed.
    pub const RECONCILE_FAILED: &str = "reconcile_failed";
    pub const STOP: &str = "stop";
}

/// The journal's native socket, where tracing-journald writes.
const JOURNAL_SOCKET: &str = "/run/systemd/journal/socket";

/// Whether to log to the journal: started by systemd with stderr going to
/// the journal (`JOURNAL_STREAM`), or journald is listening at all.
pub fn use_journal(journal_stream: Option<&str>, socket: &Path) -> bool {
    journal_stream.is_some_and(|s| !s.is_empty()) || socket.exists()
}

/// Sets up logging; `PORTGUARD_LOG` filters (default `info`).
pub fn init() {
    let filter =
        || EnvFilter::try_from_env("PORTGUARD_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let stream = std::env::var("JOURNAL_STREAM").ok();
    if use_journal(stream.as_deref(), Path::new(JOURNAL_SOCKET)) {
        match tracing_journald::layer() {
            Ok(journal) => {
                // No prefix: fields are PORTGUARD_EVENT, PORT, SOURCE, ...
                // rather than F_PORTGUARD_EVENT.
                let journal = journal
                    .with_field_prefix(None)
                    .with_syslog_identifier("portguardd".into());
                tracing_subscriber::registry()
                    .with(filter())
                    .with(journal)
                    .init();
                return;
            }
            Err(e) => eprintln!("portguardd: cannot log to the journal ({e}); logging to stderr"),
        }
    }
    tracing_subscriber::fmt()
        .with_env_filter(filter())
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_journal_is_used_under_systemd_or_where_journald_listens() {
        let missing = Path::new("/nonexistent/journal/socket");
        assert!(use_journal(Some("8:1234"), missing));
        assert!(!use_journal(None, missing));
        assert!(!use_journal(Some(""), missing));
        let dir = std::env::temp_dir();
        assert!(use_journal(None, &dir));
    }
}
