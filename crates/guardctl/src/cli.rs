//! guardctl's command line, in a module of its own so that the man page
//! and shell completions (crates/portguard-manpages) are generated from the
//! same definitions.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use portguard_config::{DEFAULT_CONFIG_PATH, DEFAULT_CONTROL_SOCKET};

#[derive(Parser)]
#[command(
    name = "guardctl",
    version,
    about = "Control and inspect portguard, the firewall guard for Docker's published ports",
    long_about = "Control and inspect portguard, the firewall guard for Docker's published ports.\n\n\
        `check` and `plan` work offline on a configuration file; the other commands ask the \
        running portguardd over its control socket.",
    after_help = "Examples:\n  guardctl check                      validate /etc/portguard/portguard.toml and drop-ins\n  \
        guardctl plan --config ./pg.toml    print the nft ruleset that configuration gives"
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
        /// Machine-readable output (documented in docs/guardctl.md).
        #[arg(long)]
        json: bool,
    },
    /// Every published port: host address, host port, protocol, container,
    /// container port and verdict (allowed by which entry, blocked,
    /// local-only, host-network).
    Ports {
        #[arg(long)]
        json: bool,
    },
    /// Why a published host port is open or closed, e.g. `explain 8080`,
    /// `explain 5353/udp --from 203.0.113.7`.
    Explain {
        /// PORT, PORT/tcp or PORT/udp (the host port, as published).
        target: String,
        /// Source address of the connection to judge.
        #[arg(long, value_name = "ADDR")]
        from: Option<std::net::IpAddr>,
        #[arg(long)]
        json: bool,
    },
    /// Blocked new connections in the last hour, per host port: attempts,
    /// distinct sources and the top sources (reported by the kernel, at
    /// most 250 a second per protocol and judge chain; a flood is sampled).
    Blocked {
        /// Machine-readable output (documented in docs/guardctl.md).
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
