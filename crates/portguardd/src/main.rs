//! `portguardd`: installs the guard's nftables table before anything else,
//! keeps it in place whenever anybody rewrites netfilter state, restores the
//! IPv6 FORWARD policy Docker flips to drop, and leaves the table in place
//! when it stops (protection must outlive the daemon, P5).
//!
//! One reconcile loop owns the desired state; triggers arrive on a channel
//! from the nftables monitor, signals, and a periodic verify.

mod api_scan;
mod backend;
mod blocked_log;
mod cli;
mod control_socket;
mod counters;
mod event_loop;
#[cfg(test)]
mod fake_kernel;
mod guard;
mod judged_state;
mod lastgood;
mod logging;
mod metrics;
mod nf_tables;
mod notify;
mod start;
mod status;
mod triggers;

use std::process::ExitCode;

use clap::Parser;
use cli::Args;

fn main() -> ExitCode {
    logging::init();
    let args = Args::parse();
    if args.remove_rules {
        return match backend::remove_all() {
            Ok(existed) => {
                tracing::info!(existed, "removed the guard's tables");
                ExitCode::SUCCESS
            }
            Err(e) => {
                tracing::error!("could not remove the guard's tables: {e}");
                ExitCode::FAILURE
            }
        };
    }
    // P7: an invalid configuration never leaves the host unguarded; `run`
    // falls back to the last good configuration, else a closed ruleset.
    let options = start::Options {
        config_path: args.config,
        socket: args.socket,
        state_dir: args.state_dir,
        metrics_file: (!args.metrics_file.as_os_str().is_empty()).then_some(args.metrics_file),
    };
    match start::run(options) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("fatal: {e:#}");
            ExitCode::FAILURE
        }
    }
}
