//! guardctl's command line, in a module of its own so that the man page
//! and shell completions (crates/portguard-manpages) are generated from the
//! same definitions.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use portguard_config::{DEFAULT_CONFIG_PATH, DEFAULT_CONTROL_SOCKET};

/// Examples for `guardctl --help` and guardctl(8): (command, what it does).
pub const EXAMPLES: &[(&str, &str)] = &[
    (
        "guardctl check",
        "validate /etc/portguard/portguard.toml and its drop-ins",
    ),
    (
        "guardctl plan --config ./pg.toml",
        "print the nft ruleset that configuration gives",
    ),
    (
        "guardctl explain 5353",
        "why port 5353 (TCP and UDP) is open or closed",
    ),
];

/// guardctl's exit codes, for `--help` and guardctl(8).
pub const EXIT_CODES: &[(u8, &str)] = &[
    (0, "success"),
    (
        1,
        "refused or failed: an invalid configuration (check, plan, reload), the ruleset not \
         installed (status), an error answer from the daemon",
    ),
    (
        2,
        "usage error: an unknown command or option, a port that is not 1-65535, a protocol \
         other than tcp or udp",
    ),
    (
        3,
        "portguardd is not running (no control socket, or nobody listening on it)",
    ),
    (
        4,
        "permission denied: this user may not use the control socket (run as root, or join \
         the [control] group)",
    ),
];

/// How to switch the guard off in an emergency, ufw disable's counterpart
/// (docs/operations.md#emergency-off says the same at length): (command
/// as root, what it does).
pub const EMERGENCY_OFF: &[(&str, &str)] = &[
    (
        "systemctl stop portguard && portguardd --remove-rules",
        "switch the guard off: published ports are then exactly as open as Docker makes them \
         (stopping the daemon alone leaves its table, and protection, in the kernel)",
    ),
    (
        "systemctl disable portguard",
        "keep it off across reboots and Docker restarts",
    ),
    ("systemctl enable --now portguard", "switch it back on"),
];

/// Text after the commands in `guardctl --help`.
fn after_help() -> String {
    let mut text = String::from("Examples:\n");
    for (command, what) in EXAMPLES {
        text.push_str(&format!("  {command:<34}  {what}\n"));
    }
    text.push_str("\nExit status:\n");
    for (code, meaning) in EXIT_CODES {
        let short = meaning.split(':').next().unwrap_or(meaning);
        text.push_str(&format!("  {code}  {short}\n"));
    }
    text.push_str("\nEmergency off, as root (to stop dropping but keep counting, set [guard] mode = \"audit\" and reload instead):\n");
    for (command, what) in EMERGENCY_OFF {
        text.push_str(&format!(
            "  {command}\n      {}\n",
            what.split(" (").next().unwrap_or(what)
        ));
    }
    text
}

#[derive(Parser)]
#[command(
    name = "guardctl",
    version,
    about = "Control and inspect portguard, the firewall guard for Docker's published ports",
    long_about = "Control and inspect portguard, the firewall guard for Docker's published ports.\n\n\
        `check` and `plan` work offline on a configuration file; the other commands ask the \
        running portguardd over its control socket.",
    after_help = after_help()
)]
pub struct Cli {
    /// Control socket of the running daemon.
    #[arg(long, global = true, default_value = DEFAULT_CONTROL_SOCKET, value_name = "PATH")]
    pub socket: PathBuf,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Validate the configuration (main file and conf.d drop-ins); exit 0 if
    /// valid, 1 with `file:line:column: message` if not.
    Check {
        /// Main configuration file; drop-ins are read from conf.d beside it.
        #[arg(long, default_value = DEFAULT_CONFIG_PATH, value_name = "PATH")]
        config: PathBuf,
    },
    /// Guard state (enforcing or audit, ruleset installed and verified, last
    /// reconcile, restores, Docker connection, IPv6 forward policy), then
    /// every published port with its verdict.
    Status {
        /// Machine-readable output (documented in /usr/share/doc/portguard/guardctl.md).
        #[arg(long, conflicts_with = "brief")]
        json: bool,
        /// One line: the mode, and how many published ports are closed,
        /// allowed and local-only (what the package prints on install).
        #[arg(long)]
        brief: bool,
    },
    /// Every published port: host address, host port, protocol, container,
    /// container port and verdict (allowed by which entry, blocked,
    /// local-only, host-network).
    Ports {
        /// Machine-readable output: a list of objects with host_ip,
        /// host_port, proto, container, container_port, verdict, allowed_by
        /// (and compose, service, warnings when they say something);
        /// documented in /usr/share/doc/portguard/guardctl.md.
        #[arg(long)]
        json: bool,
    },
    /// Why a published host port is open or closed, e.g. `explain 8080`,
    /// `explain 5353/udp --from 203.0.113.7`. Without a protocol both TCP
    /// and UDP are looked at, and the answer says which is published.
    Explain {
        /// PORT, PORT/tcp or PORT/udp (the host port, as published, 1-65535).
        #[arg(value_parser = parse_target, value_name = "PORT[/PROTO]")]
        target: Target,
        /// Source address of the connection to judge.
        #[arg(long, value_name = "ADDR")]
        from: Option<std::net::IpAddr>,
        /// Machine-readable output: an object with answer (open, closed,
        /// not-published, local-only, host-network), reasons and, when
        /// there are any, warnings; without a protocol also proto (the
        /// one answered for) and, when both are published, also (UDP's
        /// answer); documented in /usr/share/doc/portguard/guardctl.md.
        #[arg(long)]
        json: bool,
    },
    /// Blocked new connections in the last hour, per host port: attempts,
    /// distinct sources and the top sources (reported by the kernel, at
    /// most 250 a second per protocol and judge chain; a flood is sampled).
    Blocked {
        /// Machine-readable output (documented in /usr/share/doc/portguard/guardctl.md).
        #[arg(long)]
        json: bool,
    },
    /// Print the daemon's Prometheus metrics (the text it writes to
    /// node_exporter's textfile directory, see `portguardd --metrics-file`).
    Metrics,
    /// Ask the daemon to re-read its configuration. A bad file is refused
    /// and the last good ruleset stays in force.
    Reload,
    /// Print, in nft syntax, the ruleset the daemon would install. Touches
    /// nothing. Offline, no container is known, so `container = ...`
    /// entries open nothing yet and the published-port sets are empty.
    Plan {
        /// Main configuration file; drop-ins are read from conf.d beside it.
        #[arg(long, default_value = DEFAULT_CONFIG_PATH, value_name = "PATH")]
        config: PathBuf,
    },
}

/// A transport protocol `explain` can be asked about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TargetProto {
    Tcp,
    Udp,
}

/// `explain`'s `PORT[/PROTO]`: a port from 1 to 65535 and, if given, a
/// protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Target {
    pub port: u16,
    pub proto: Option<TargetProto>,
}

/// Parses `PORT`, `PORT/tcp` or `PORT/udp`; anything else is a usage
/// error (exit 2), reported before the daemon is asked.
pub fn parse_target(text: &str) -> Result<Target, String> {
    let (port, proto) = match text.split_once('/') {
        Some((port, "tcp")) => (port, Some(TargetProto::Tcp)),
        Some((port, "udp")) => (port, Some(TargetProto::Udp)),
        Some((_, other)) => {
            return Err(format!("`{other}` is not a protocol: expected tcp or udp"));
        }
        None => (text, None),
    };
    match port.parse::<u16>() {
        Ok(port) if port > 0 => Ok(Target { port, proto }),
        _ => Err(format!("`{port}` is not a port number (1-65535)")),
    }
}
