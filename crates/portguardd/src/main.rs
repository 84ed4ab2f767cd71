//! `portguardd`: installs the guard's nftables table before anything else,
//! keeps it in place whenever anybody rewrites netfilter state, restores the
//! IPv6 FORWARD policy Docker flips to drop, and leaves the table in place
//! when it stops (protection must outlive the daemon, P5).
//!
//! One reconcile loop owns the desired state; triggers arrive on a channel
//! from the nftables monitor, signals, and a periodic verify.

mod cli;
mod control;
mod notify;
mod reconcile;

use std::process::ExitCode;

use clap::Parser;
use cli::Args;
use portguard_config::Config;

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
        return match portguard_nft::Nft::open().and_then(|mut nft| nft.remove()) {
            Ok(existed) => {
                tracing::info!(existed, "removed the guard's table");
                ExitCode::SUCCESS
            }
            Err(e) => {
                tracing::error!(error = %e, "could not remove the guard's table");
                ExitCode::FAILURE
            }
        };
    }
    let config = match Config::load(&args.config) {
        Ok(config) => config,
        Err(e) => {
            // P7: a bad configuration never starts a weaker guard.
            eprintln!("{e}");
            tracing::error!(error = %e, "invalid configuration; not starting");
            return ExitCode::from(2);
        }
    };
    match reconcile::run(args.config, config, args.socket) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "fatal");
            ExitCode::FAILURE
        }
    }
}
