//! `portguardd`: installs the guard's nftables table before anything else,
//! keeps it in place whenever anybody rewrites netfilter state, restores the
//! IPv6 FORWARD policy Docker flips to drop, and leaves the table in place
//! when it stops (protection must outlive the daemon, P5).
//!
//! One reconcile loop owns the desired state; triggers arrive on a channel
//! from the nftables monitor, signals, and a periodic verify.

mod backend;
mod control;
mod guard;
mod lastgood;
mod notify;
mod reconcile;
mod status;
mod triggers;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use portguard_config::DEFAULT_CONFIG_PATH;

#[derive(Parser)]
#[command(
    name = "portguardd",
    version,
    about = "Keep Docker's published ports closed to the outside unless allowlisted",
    long_about = "Runs in the foreground (systemd Type=notify-reload), logs to stderr, reloads on SIGHUP, \
        and leaves its nftables table in place when it stops."
)]
struct Args {
    /// Main configuration file; drop-ins are read from conf.d beside it.
    #[arg(long, default_value = DEFAULT_CONFIG_PATH, value_name = "PATH")]
    config: PathBuf,
    /// Control socket (default: `[control] socket` from the configuration).
    #[arg(long, value_name = "PATH")]
    socket: Option<PathBuf>,
    /// Where the last good configuration is kept, for a start with a
    /// broken file.
    #[arg(long, default_value = lastgood::DEFAULT_STATE_DIR, value_name = "PATH")]
    state_dir: PathBuf,
    /// Delete the guard's tables and exit (used when the package is removed).
    #[arg(long)]
    remove_rules: bool,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PORTGUARD_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    let args = Args::parse();
    if args.remove_rules {
        return match backend::remove_all() {
            Ok(existed) => {
                tracing::info!(existed, "removed the guard's tables");
                ExitCode::SUCCESS
            }
            Err(e) => {
                tracing::error!(error = %e, "could not remove the guard's tables");
                ExitCode::FAILURE
            }
        };
    }
    // P7: an invalid configuration never leaves the host unguarded; `run`
    // falls back to the last good configuration, else a closed ruleset.
    let options = reconcile::Options {
        config_path: args.config,
        socket: args.socket,
        state_dir: args.state_dir,
    };
    match reconcile::run(options) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "fatal");
            ExitCode::FAILURE
        }
    }
}
