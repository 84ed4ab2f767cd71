//! The control protocol between `portguardd` and `guardctl`: one JSON
//! object per line each way over a unix socket, versioned so that a newer
//! guardctl can tell an older daemon apart. The `status` object's field
//! names are a contract (SPEC): keep them.

use std::net::IpAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::snapshot::L4Proto;
use crate::verdict::{Explanation, PortReport};

/// Version of this protocol; bumped on incompatible changes.
pub const PROTOCOL_VERSION: u32 = 1;

/// A request, as `{"version":1,"request":"status"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    pub version: u32,
    #[serde(flatten)]
    pub body: RequestBody,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "request", rename_all = "lowercase")]
pub enum RequestBody {
    Status,
    Ports,
    Explain {
        port: u16,
        proto: L4Proto,
        from: Option<IpAddr>,
    },
    Reload,
}

/// A response: `{"version":1,"ok":true,"status":{...}}` and so on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Response {
    pub version: u32,
    pub ok: bool,
    #[serde(flatten)]
    pub body: ResponseBody,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ResponseBody {
    Status(Box<Status>),
    Ports(Vec<PortReport>),
    Explain(Explanation),
    Reload(ReloadOutcome),
    Error(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReloadOutcome {
    pub applied: bool,
    /// `file:line:column: message` when the new configuration was refused.
    pub error: Option<String>,
}

/// How the kernel protects the guard's table (`[guard] protection`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProtectionTier {
    /// Owned and persistent (Linux 6.9+): the kernel refuses every change
    /// by anybody else; the table outlives the daemon.
    OwnedPersistent,
    /// Owned (Linux 5.12+) plus an unowned standby copy that outlives the
    /// daemon.
    OwnedStandby,
    /// Two unowned copies, each restored when deleted.
    Twin,
}

/// Which configuration is in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ConfigSource {
    /// The configuration files, as last read successfully.
    Files,
    /// The files were invalid at start: the last good configuration the
    /// daemon kept in its state directory.
    LastGood,
    /// The files were invalid at start and no last good configuration was
    /// kept: every published port is closed.
    Closed,
}

/// `guardctl status --json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// `enforce` or `audit`.
    pub mode: String,
    /// The protection tier in force.
    pub protection: ProtectionTier,
    /// `containers` or `all`.
    pub scope: String,
    pub ruleset: RulesetStatus,
    pub last_reconcile: Option<ReconcileRecord>,
    pub docker: DockerStatus,
    /// `accept`, `drop` or `none` (no `ip6 filter FORWARD` chain).
    pub ipv6_forward_policy: String,
    /// Times the guard table was found missing or altered and restored.
    pub restores: u64,
    /// How long the last restore took, from notification to committed.
    pub last_restore_ms: Option<f64>,
    /// Times the IPv6 FORWARD policy was set back to accept.
    pub ipv6_policy_restores: u64,
    /// New connections counted by the drop (or, in audit mode, count) rules.
    pub blocked_packets: u64,
    /// Live connections ended because the allowlist stopped admitting them.
    pub ended_connections: u64,
    pub config: ConfigStatus,
    pub published: Vec<PortReport>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RulesetStatus {
    pub installed: bool,
    /// Last time the kernel's table was verified intact (RFC 3339, UTC).
    pub verified_at: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReconcileRecord {
    /// What woke the loop: `start`, `docker`, `netfilter change by nft (pid 42)`, ...
    pub trigger: String,
    pub at: String,
    pub duration_ms: f64,
    /// `unchanged`, `applied`, `restored` or `failed: ...`.
    pub outcome: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DockerStatus {
    pub connected: bool,
    pub socket: String,
    pub engine: Option<String>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigStatus {
    pub path: String,
    /// Where the configuration in force came from.
    pub in_force: ConfigSource,
    pub allow_entries: usize,
    /// Why the files are not in force: the error of the last reload, or
    /// of the start (then `in_force` says what guards instead).
    pub error: Option<String>,
}

/// `2026-11-22T19:40:01Z`.
pub fn rfc3339(time: SystemTime) -> String {
    let secs = time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Howard Hinnant's days-to-civil algorithm.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timestamps() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(1_795_376_401)),
            "2026-11-22T19:40:01Z"
        );
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(951_782_400)),
            "2000-02-29T00:00:00Z"
        );
    }

    #[test]
    fn wire_format() {
        let req = Request {
            version: PROTOCOL_VERSION,
            body: RequestBody::Explain {
                port: 8080,
                proto: L4Proto::Tcp,
                from: Some("203.0.113.9".parse().unwrap()),
            },
        };
        let text = serde_json::to_string(&req).unwrap();
        assert_eq!(
            text,
            r#"{"version":1,"request":"explain","port":8080,"proto":"tcp","from":"203.0.113.9"}"#
        );
        assert_eq!(serde_json::from_str::<Request>(&text).unwrap(), req);
        let status: Request = serde_json::from_str(r#"{"version":1,"request":"status"}"#).unwrap();
        assert_eq!(status.body, RequestBody::Status);
    }
}
