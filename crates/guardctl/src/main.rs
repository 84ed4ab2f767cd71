//! `guardctl`: validate and preview portguard's configuration, and ask the
//! running daemon what is exposed.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use portguard_config::{Config, DEFAULT_CONFIG_PATH, DEFAULT_CONTROL_SOCKET};
use portguard_core::{Snapshot, plan, render};

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
struct Cli {
    /// Control socket of the running daemon.
    #[arg(long, global = true, default_value = DEFAULT_CONTROL_SOCKET, value_name = "PATH")]
    socket: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Validate the configuration (main file and conf.d drop-ins); exit 0 if
    /// valid, 1 with `file:line:column: message` if not.
    Check {
        /// Main configuration file; drop-ins are read from conf.d beside it.
        #[arg(long, default_value = DEFAULT_CONFIG_PATH, value_name = "PATH")]
        config: PathBuf,
    },
    /// Print, in nft syntax, the ruleset the daemon would install. Touches
    /// nothing. Offline, no container is known, so `container = ...`
    /// entries open nothing yet and the published-port sets are empty.
    Plan {
        /// Main configuration file; drop-ins are read from conf.d beside it.
        #[arg(long, default_value = DEFAULT_CONFIG_PATH, value_name = "PATH")]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("guardctl: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let _ = &cli.socket;
    match cli.command {
        Command::Check { config } => match Config::load(&config) {
            Ok(loaded) => {
                let files = 1 + portguard_config::drop_ins(&config)?.len();
                println!(
                    "{}: OK ({} file{}, {} allow entr{})",
                    config.display(),
                    files,
                    if files == 1 { "" } else { "s" },
                    loaded.allow.len(),
                    if loaded.allow.len() == 1 { "y" } else { "ies" }
                );
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => {
                eprintln!("{e}");
                Ok(ExitCode::FAILURE)
            }
        },
        Command::Plan { config } => match Config::load(&config) {
            Ok(loaded) => {
                print!("{}", render(&plan(&loaded, &Snapshot::default())));
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => {
                eprintln!("{e}");
                Ok(ExitCode::FAILURE)
            }
        },
    }
}
