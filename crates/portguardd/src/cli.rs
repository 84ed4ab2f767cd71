//! portguardd's command line, in a module of its own so that the man page
//! (crates/portguard-manpages) is generated from the same definitions.

use std::path::PathBuf;

use clap::Parser;
use clap::builder::TypedValueParser as _;
use portguard_config::DEFAULT_CONFIG_PATH;

/// Default state directory, `--state-dir` (systemd's
/// `StateDirectory=portguard`). Here rather than in lastgood.rs because this
/// file is also compiled into the man page generator.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/portguard";

/// Default `--metrics-file`: the textfile directory of Debian's
/// prometheus-node-exporter.
pub const DEFAULT_METRICS_FILE: &str = "/var/lib/prometheus/node-exporter/portguard.prom";

#[derive(Parser)]
#[command(
    name = "portguardd",
    version,
    about = "Keep Docker's published ports closed to the outside unless allowlisted",
    long_about = "Runs in the foreground (systemd Type=notify), logs to stderr (the journal, under systemd), reloads on SIGHUP, \
        and leaves its nftables table in place when it stops."
)]
pub struct Args {
    /// Main configuration file; drop-ins are read from conf.d beside it.
    #[arg(long, default_value = DEFAULT_CONFIG_PATH, value_name = "PATH")]
    pub config: PathBuf,
    /// Control socket (default: `[control] socket` from the configuration).
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// Where the last good configuration is kept, for a start with a
    /// broken file.
    #[arg(long, default_value = DEFAULT_STATE_DIR, value_name = "PATH")]
    pub state_dir: PathBuf,
    /// Prometheus metrics file, rewritten atomically on every change and at
    /// least once a minute (node_exporter's textfile directory on Debian);
    /// not written while its directory does not exist. An empty value
    /// turns the file off (`guardctl metrics` still shows the metrics).
    // Not clap's PathBuf parser: it refuses an empty value, the
    // documented way to turn the file off.
    #[arg(
        long,
        default_value = DEFAULT_METRICS_FILE,
        value_name = "PATH",
        value_parser = clap::builder::OsStringValueParser::new().map(PathBuf::from)
    )]
    pub metrics_file: PathBuf,
    /// Delete the guard's tables and exit (used when the package is removed).
    #[arg(long)]
    pub remove_rules: bool,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// `ExecStart=/usr/sbin/portguardd --metrics-file ''` must start (an
    /// exit 2 here was a start loop under systemd).
    #[test]
    fn an_empty_metrics_file_is_accepted_and_turns_the_file_off() {
        let args = Args::try_parse_from(["portguardd", "--metrics-file", ""]).unwrap();
        assert!(args.metrics_file.as_os_str().is_empty());
        let args = Args::try_parse_from(["portguardd", "--metrics-file="]).unwrap();
        assert!(args.metrics_file.as_os_str().is_empty());
        let args = Args::try_parse_from(["portguardd"]).unwrap();
        assert_eq!(args.metrics_file, PathBuf::from(DEFAULT_METRICS_FILE));
    }
}
