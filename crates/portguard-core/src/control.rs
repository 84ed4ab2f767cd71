//! The control protocol between `portguardd` and `guardctl`: one JSON
//! object per line each way over a unix socket, versioned so that a newer
//! guardctl can tell an older daemon apart. The `status` object's field
//! names are a contract (SPEC): keep them.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use portguard_config::{Mode, Scope};
use serde::{Deserialize, Serialize};

use crate::docker_api::{DockerApiReport, DockerApiScan};
use crate::hostfw::FirewallStatus;
use crate::ip6_forward::Ipv6ForwardDrop;
use crate::snapshot::{Judged, L4Proto, UntrustedClaim};
use crate::unmatched::Unmatched;
use crate::verdict::{Explanation, PortReport};
use crate::wire::{UnknownValue, serde_via_str};

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
    /// Blocked attempts per host port in the last hour.
    Blocked,
    /// The Prometheus metrics, as text (what the daemon writes to
    /// node_exporter's textfile directory).
    Metrics,
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
    Blocked(BlockedReport),
    /// Prometheus text exposition format.
    Metrics(String),
    Error(String),
}

/// `guardctl blocked --json`: new connections the judge chains blocked (or,
/// in audit mode, would have blocked) in the last hour, per host port, as
/// the kernel reported them to the daemon over nflog. The kernel reports at
/// most `report_limit_per_second` a second per protocol and judge chain;
/// beyond that (a flood) the numbers are a sample, and `blocked_packets`
/// in `status` is the exact count.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockedReport {
    /// Audit mode: these attempts were let through, and would have been
    /// blocked in enforce mode.
    pub audit: bool,
    /// Minutes covered: 60, or fewer since the daemon started.
    pub window_minutes: u32,
    /// Whether the daemon receives reports; `error` says why not.
    pub listening: bool,
    pub error: Option<String>,
    pub report_limit_per_second: u32,
    /// Most attempts first.
    pub ports: Vec<BlockedPort>,
    /// Attempts at ports beyond the number the daemon keeps apart, in the
    /// last hour.
    pub untracked_attempts: u64,
    /// Reports lost since the start because the daemon could not keep up
    /// (its queue was full, or the kernel's socket buffer overflowed).
    pub lost_reports: u64,
}

/// Blocked attempts at one host port in the last hour.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockedPort {
    /// The host port, as published (before DNAT).
    pub port: u16,
    pub proto: L4Proto,
    pub attempts: u64,
    /// Distinct source addresses (an estimate, within a few percent).
    pub distinct_sources: u64,
    /// The sources with the most attempts, most first. Each count is what
    /// the source surely made; it may have made up to `top_sources_error`
    /// more (a bounded heavy-hitter summary). With few sources (up to 16 a
    /// minute) counts are exact and the error is 0.
    pub top_sources: Vec<SourceAttempts>,
    pub top_sources_error: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceAttempts {
    pub source: IpAddr,
    pub attempts: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReloadOutcome {
    pub applied: bool,
    /// `file:line:column: message` when the new configuration was refused.
    pub error: Option<String>,
    /// Allow entries of the configuration in force that open nothing now
    /// (a misspelt container name, say), one sentence each.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
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

impl fmt::Display for ProtectionTier {
    /// As the configuration spells it (`owned-persistent`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ProtectionTier::OwnedPersistent => "owned-persistent",
            ProtectionTier::OwnedStandby => "owned-standby",
            ProtectionTier::Twin => "twin",
        })
    }
}

/// `[guard] protection` asks for a tier stronger than the kernel offers
/// (portguardd's `choose_tier`; it then guards with the strongest one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "[guard] protection = {wanted:?} needs a newer kernel (Linux 6.9+ for \
     owned-persistent, 5.12+ for owned-standby); this one offers {strongest:?}"
)]
pub struct TierUnavailable {
    pub wanted: ProtectionTier,
    /// The strongest tier this kernel offers.
    pub strongest: ProtectionTier,
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

/// What one reconcile did (`last_reconcile.outcome`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReconcileOutcome {
    /// `unchanged`: the kernel already held exactly the desired ruleset.
    Unchanged,
    /// `applied`: a new desired ruleset was applied (configuration or
    /// Docker).
    Applied,
    /// `restored (WHAT)`: the kernel had been changed by somebody else
    /// (what was found); put right.
    Restored(String),
    /// `failed: ERROR`.
    Failed(String),
}

impl fmt::Display for ReconcileOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReconcileOutcome::Unchanged => f.write_str("unchanged"),
            ReconcileOutcome::Applied => f.write_str("applied"),
            ReconcileOutcome::Restored(what) => write!(f, "restored ({what})"),
            ReconcileOutcome::Failed(error) => write!(f, "failed: {error}"),
        }
    }
}

impl FromStr for ReconcileOutcome {
    type Err = UnknownValue;

    fn from_str(text: &str) -> Result<Self, UnknownValue> {
        match text {
            "unchanged" => return Ok(ReconcileOutcome::Unchanged),
            "applied" => return Ok(ReconcileOutcome::Applied),
            _ => {}
        }
        if let Some(what) = text
            .strip_prefix("restored (")
            .and_then(|rest| rest.strip_suffix(')'))
        {
            Ok(ReconcileOutcome::Restored(what.into()))
        } else if let Some(error) = text.strip_prefix("failed: ") {
            Ok(ReconcileOutcome::Failed(error.into()))
        } else {
            Err(UnknownValue {
                field: "reconcile outcome",
                found: text.into(),
                expected: "`unchanged`, `applied`, `restored (WHAT)` or `failed: ERROR`",
            })
        }
    }
}

serde_via_str!(ReconcileOutcome);

/// The policy of the `ip6 filter FORWARD` chain Docker sets to drop
/// (`ipv6_forward_policy`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ipv6ForwardPolicy {
    /// `accept`
    Accept,
    /// `drop`: routed IPv6 is blocked.
    Drop,
    /// `none`: no `ip6 filter FORWARD` chain.
    NoChain,
    /// `unknown (ERROR)`: the daemon could not read it.
    Unreadable(String),
}

impl fmt::Display for Ipv6ForwardPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ipv6ForwardPolicy::Accept => f.write_str("accept"),
            Ipv6ForwardPolicy::Drop => f.write_str("drop"),
            Ipv6ForwardPolicy::NoChain => f.write_str("none"),
            Ipv6ForwardPolicy::Unreadable(error) => write!(f, "unknown ({error})"),
        }
    }
}

impl FromStr for Ipv6ForwardPolicy {
    type Err = UnknownValue;

    fn from_str(text: &str) -> Result<Self, UnknownValue> {
        match text {
            "accept" => Ok(Ipv6ForwardPolicy::Accept),
            "drop" => Ok(Ipv6ForwardPolicy::Drop),
            "none" => Ok(Ipv6ForwardPolicy::NoChain),
            _ => text
                .strip_prefix("unknown (")
                .and_then(|rest| rest.strip_suffix(')'))
                .map(|error| Ipv6ForwardPolicy::Unreadable(error.into()))
                .ok_or_else(|| UnknownValue {
                    field: "ipv6_forward_policy",
                    found: text.into(),
                    expected: "`accept`, `drop`, `none` or `unknown (ERROR)`",
                }),
        }
    }
}

serde_via_str!(Ipv6ForwardPolicy);

/// `guardctl status --json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// `enforce` or `audit`.
    pub mode: Mode,
    /// The protection tier in force.
    pub protection: ProtectionTier,
    /// `containers` or `all`.
    pub scope: Scope,
    pub ruleset: RulesetStatus,
    pub last_reconcile: Option<ReconcileRecord>,
    pub docker: DockerStatus,
    /// `accept`, `drop`, `none` (no `ip6 filter FORWARD` chain) or
    /// `unknown (ERROR)`.
    pub ipv6_forward_policy: Ipv6ForwardPolicy,
    /// Times the guard table was found missing or altered and restored.
    pub restores: u64,
    /// How long the last restore took, from notification to committed.
    pub last_restore_ms: Option<f64>,
    /// Times the IPv6 FORWARD policy was set back to accept.
    pub ipv6_policy_restores: u64,
    /// Each IPv6 FORWARD policy of drop in force (nf_tables, legacy
    /// x_tables): who set it, whether the guard leaves it alone (it is not
    /// Docker's), and then what routed IPv6 to a published port needs.
    /// Absent when no drop is in force (and from older daemons).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ipv6_forward_drops: Vec<Ipv6ForwardDrop>,
    /// New connections counted by the drop (or, in audit mode, count) rules.
    pub blocked_packets: u64,
    /// Live connections ended because the allowlist stopped admitting them.
    pub ended_connections: u64,
    /// The three host ports with the most blocked attempts in the last
    /// hour, each with its top three sources (see [`BlockedReport`]).
    #[serde(default)]
    pub blocked_last_hour: Vec<BlockedPort>,
    pub config: ConfigStatus,
    pub published: Vec<PortReport>,
    /// The firewall backend Docker says it uses against what the kernel
    /// holds, and the host's IPv6 INPUT path (absent from older daemons).
    #[serde(default)]
    pub firewall: Option<FirewallStatus>,
    /// TCP ports dockerd listens on (`-H tcp://...`): the Docker API.
    #[serde(default)]
    pub docker_api: Vec<DockerApiReport>,
    /// Bridges and ports judged since the start because the table found
    /// then (or the state directory) judged them, until Docker's first
    /// complete answer (absent once Docker answered).
    #[serde(default, skip_serializing_if = "Judged::is_empty")]
    pub kept: Judged,
    /// Allow entries that open nothing now (listed once Docker answered).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unmatched: Vec<Unmatched>,
    /// Bridges and container identities Docker claims that the guard
    /// refused, with the reasons (see [`UntrustedClaim`]).
    #[serde(default)]
    pub untrusted_claims: Vec<UntrustedClaim>,
    /// How the latest look for the Docker API told dockerd's listeners
    /// apart, or that it could not (`None`: not looked yet).
    #[serde(default)]
    pub docker_api_scan: Option<DockerApiScan>,
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
    /// `unchanged`, `applied`, `restored (...)` or `failed: ...`.
    pub outcome: ReconcileOutcome,
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

/// Longest request line the daemon reads (the newline included); a real
/// request is well under 200 bytes.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;

/// Why a request line is refused: the message of the error response the
/// daemon owes the client (its `Display`, sent as `error`).
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error("bad request: longer than {MAX_REQUEST_BYTES} bytes")]
    TooLong,
    /// `byte`: 1-based position of the first byte that is not UTF-8.
    #[error("bad request: not valid UTF-8 (byte {byte})")]
    NotUtf8 { byte: usize },
    #[error("bad request: empty line (expected one JSON object)")]
    Empty,
    /// Not a request object (serde_json's message says why).
    #[error("bad request: {0}")]
    Json(serde_json::Error),
    #[error(
        "protocol version {version} is not supported (this portguardd speaks {PROTOCOL_VERSION})"
    )]
    UnsupportedVersion { version: u32 },
    #[error("bad request: port 0 is not a port (expected 1-65535)")]
    PortZero,
}

/// One request line (with or without its trailing newline) -> a request the
/// daemon can answer, or why not (the message of the error response it
/// owes the client). Pure, so that every byte sequence a client may send
/// is tested in process (see the property test below).
pub fn parse_request(line: &[u8]) -> Result<Request, RequestError> {
    if line.len() > MAX_REQUEST_BYTES {
        return Err(RequestError::TooLong);
    }
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let text = std::str::from_utf8(line).map_err(|e| RequestError::NotUtf8 {
        byte: e.valid_up_to() + 1,
    })?;
    if text.trim().is_empty() {
        return Err(RequestError::Empty);
    }
    let request: Request = serde_json::from_str(text).map_err(RequestError::Json)?;
    if request.version != PROTOCOL_VERSION {
        return Err(RequestError::UnsupportedVersion {
            version: request.version,
        });
    }
    if let RequestBody::Explain { port: 0, .. } = request.body {
        return Err(RequestError::PortZero);
    }
    Ok(request)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{assert_wire, wire_error};
    use proptest::prelude::*;

    #[test]
    fn bad_requests_get_an_error_message() {
        let table: &[(&[u8], &str)] = &[
            (b"", "empty line"),
            (b"\n", "empty line"),
            (b"\xff\xfe{}\n", "not valid UTF-8 (byte 1)"),
            (b"{\"version\":1,\"request\":\"st\xc3atus\"}\n", "not valid UTF-8 (byte 27)"),
            (b"status\n", "bad request: expected value"),
            (b"{\"version\":1}\n", "bad request: missing field `request`"),
            (b"{\"version\":1,\"request\":\"shutdown\"}", "unknown variant `shutdown`"),
            (b"{\"version\":2,\"request\":\"status\"}", "protocol version 2 is not supported"),
            (
                b"{\"version\":1,\"request\":\"explain\",\"port\":0,\"proto\":\"tcp\",\"from\":null}",
                "port 0 is not a port",
            ),
            (
                b"{\"version\":1,\"request\":\"explain\",\"port\":65536,\"proto\":\"tcp\",\"from\":null}",
                "bad request: invalid value: integer `65536`",
            ),
            (
                b"{\"version\":1,\"request\":\"explain\",\"port\":80,\"proto\":\"sctp\",\"from\":null}",
                "unknown variant `sctp`",
            ),
        ];
        for (bytes, wanted) in table {
            let err = parse_request(bytes).unwrap_err().to_string();
            assert!(err.contains(wanted), "{bytes:?}: {err}");
        }
        let long = vec![b' '; MAX_REQUEST_BYTES + 1];
        assert!(
            parse_request(&long)
                .unwrap_err()
                .to_string()
                .contains("longer than 65536 bytes")
        );
    }

    /// The messages, word for word, as they were while `parse_request`
    /// returned strings: clients may match them.
    #[test]
    fn request_errors_say_what_they_said_as_strings() {
        let table: &[(&[u8], &str)] = &[
            (&[b' '; MAX_REQUEST_BYTES + 1], "bad request: longer than 65536 bytes"),
            (b"ab\xff", "bad request: not valid UTF-8 (byte 3)"),
            (b" \r\n", "bad request: empty line (expected one JSON object)"),
            (
                b"{\"version\":7,\"request\":\"status\"}",
                "protocol version 7 is not supported (this portguardd speaks 1)",
            ),
            (
                b"{\"version\":1,\"request\":\"explain\",\"port\":0,\"proto\":\"tcp\",\"from\":null}",
                "bad request: port 0 is not a port (expected 1-65535)",
            ),
        ];
        for (bytes, message) in table {
            assert_eq!(parse_request(bytes).unwrap_err().to_string(), *message);
        }
        let serde_says = serde_json::from_str::<Request>("[]").unwrap_err();
        assert_eq!(
            parse_request(b"[]").unwrap_err().to_string(),
            format!("bad request: {serde_says}")
        );
    }

    #[test]
    fn good_requests_parse_with_or_without_newline() {
        for line in [
            &b"{\"version\":1,\"request\":\"status\"}"[..],
            b"{\"version\":1,\"request\":\"status\"}\n",
            b"{\"version\":1,\"request\":\"status\"}\r\n",
        ] {
            assert_eq!(parse_request(line).unwrap().body, RequestBody::Status);
        }
        assert_eq!(
            parse_request(b"{\"version\":1,\"request\":\"blocked\"}")
                .unwrap()
                .body,
            RequestBody::Blocked
        );
        let explain = parse_request(
            b"{\"version\":1,\"request\":\"explain\",\"port\":1,\"proto\":\"udp\",\"from\":\"::1\"}",
        )
        .unwrap();
        assert!(matches!(explain.body, RequestBody::Explain { port: 1, .. }));
    }

    /// A few thousand cases by default; for a million:
    /// `PROPTEST_CASES=1000000 cargo test --release -p portguard-core control_protocol`.
    fn cases() -> ProptestConfig {
        let cases = std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(4096);
        ProptestConfig::with_cases(cases)
    }

    /// Bytes that look like requests more often than random bytes do.
    fn request_like() -> impl Strategy<Value = Vec<u8>> {
        let pieces = prop::sample::select(vec![
            &b"{"[..],
            b"}",
            b"\"version\":",
            b"1",
            b"0",
            b"4294967296",
            b",",
            b"\"request\":",
            b"\"status\"",
            b"\"ports\"",
            b"\"reload\"",
            b"\"blocked\"",
            b"\"metrics\"",
            b"\"explain\"",
            b"\"port\":",
            b"65535",
            b"-1",
            b"\"proto\":",
            b"\"tcp\"",
            b"\"udp\"",
            b"\"from\":",
            b"\"203.0.113.9\"",
            b"null",
            b"\\u0000",
            b"\xc3",
            b"\xff",
            b"\n",
            b"[",
            b"]",
        ]);
        prop::collection::vec(pieces, 0..24).prop_map(|p| p.concat())
    }

    fn check_parse(bytes: &[u8]) -> Result<(), TestCaseError> {
        match parse_request(bytes) {
            Ok(request) => {
                prop_assert_eq!(request.version, PROTOCOL_VERSION);
                if let RequestBody::Explain { port, .. } = request.body {
                    prop_assert!(port > 0);
                }
            }
            Err(error) => prop_assert!(!error.to_string().is_empty()),
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(cases())]

        #[test]
        fn control_protocol_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
            check_parse(&bytes)?;
        }

        #[test]
        fn control_protocol_request_like_bytes(bytes in request_like()) {
            check_parse(&bytes)?;
        }

        /// Whatever the detail, the string reads back as the value it
        /// was written from.
        #[test]
        fn status_strings_with_any_detail_read_back(detail in any::<String>()) {
            for outcome in [
                ReconcileOutcome::Restored(detail.clone()),
                ReconcileOutcome::Failed(detail.clone()),
            ] {
                prop_assert_eq!(outcome.to_string().parse::<ReconcileOutcome>(), Ok(outcome));
            }
            let policy = Ipv6ForwardPolicy::Unreadable(detail);
            prop_assert_eq!(policy.to_string().parse::<Ipv6ForwardPolicy>(), Ok(policy));
        }

    }

    #[test]
    fn an_unavailable_tier_says_what_it_said_as_a_string() {
        let error = TierUnavailable {
            wanted: ProtectionTier::OwnedPersistent,
            strongest: ProtectionTier::Twin,
        };
        assert_eq!(
            error.to_string(),
            "[guard] protection = OwnedPersistent needs a newer kernel (Linux 6.9+ for \
             owned-persistent, 5.12+ for owned-standby); this one offers Twin"
        );
    }

    #[test]
    fn reconcile_outcomes_on_the_wire() {
        let table = [
            (ReconcileOutcome::Unchanged, "unchanged"),
            (ReconcileOutcome::Applied, "applied"),
            (
                ReconcileOutcome::Restored("table missing; chain input altered".into()),
                "restored (table missing; chain input altered)",
            ),
            (
                ReconcileOutcome::Restored("set (a) emptied".into()),
                "restored (set (a) emptied)",
            ),
            (
                ReconcileOutcome::Failed("Operation not permitted (os error 1)".into()),
                "failed: Operation not permitted (os error 1)",
            ),
            (ReconcileOutcome::Failed(String::new()), "failed: "),
        ];
        for (outcome, text) in table {
            assert_wire(&outcome, text);
            assert_eq!(outcome.to_string(), text);
        }
        for bad in ["", "Applied", "restored", "restored (x", "failed", "ok"] {
            let error = wire_error::<ReconcileOutcome>(bad);
            assert!(
                error.starts_with(&format!(
                    "unknown reconcile outcome `{bad}`, expected `unchanged`"
                )),
                "{bad:?}: {error}"
            );
        }
    }

    #[test]
    fn ipv6_forward_policies_on_the_wire() {
        let table = [
            (Ipv6ForwardPolicy::Accept, "accept"),
            (Ipv6ForwardPolicy::Drop, "drop"),
            (Ipv6ForwardPolicy::NoChain, "none"),
            (
                Ipv6ForwardPolicy::Unreadable(
                    "netlink: Operation not permitted (os error 1)".into(),
                ),
                "unknown (netlink: Operation not permitted (os error 1))",
            ),
        ];
        for (policy, text) in table {
            assert_wire(&policy, text);
        }
        for bad in ["ACCEPT", "reject", "unknown", ""] {
            let error = wire_error::<Ipv6ForwardPolicy>(bad);
            assert!(
                error.starts_with(&format!("unknown ipv6_forward_policy `{bad}`, expected `accept`, `drop`, `none` or `unknown (ERROR)`")),
                "{bad:?}: {error}"
            );
        }
        // Not a string at all.
        assert!(serde_json::from_str::<Ipv6ForwardPolicy>("1").is_err());
    }

    #[test]
    fn mode_and_scope_on_the_wire() {
        assert_wire(&Mode::Enforce, "enforce");
        assert_wire(&Mode::Audit, "audit");
        assert_wire(&Scope::Containers, "containers");
        assert_wire(&Scope::All, "all");
        assert!(
            wire_error::<Mode>("enforcing")
                .contains("unknown variant `enforcing`, expected `enforce` or `audit`")
        );
        assert!(
            wire_error::<Scope>("any")
                .contains("unknown variant `any`, expected `containers` or `all`")
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
        let metrics = parse_request(br#"{"version":1,"request":"metrics"}"#).unwrap();
        assert_eq!(metrics.body, RequestBody::Metrics);
        let answer = Response {
            version: PROTOCOL_VERSION,
            ok: true,
            body: ResponseBody::Metrics("portguard_up 1\n".into()),
        };
        assert_eq!(
            serde_json::to_string(&answer).unwrap(),
            r#"{"version":1,"ok":true,"metrics":"portguard_up 1\n"}"#
        );
    }
}
