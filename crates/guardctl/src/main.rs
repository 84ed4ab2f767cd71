//! `guardctl`: validate and preview portguard's configuration, and ask the
//! running daemon what is exposed.
//!
//! Layers, each module using only those above it (no two import each
//! other):
//! 1. `cli` (the command line), `output` (stdout that tolerates a closed
//!    pipe), `client` (asks the daemon: connect, send, receive, decode),
//!    `offline` (asks `nft` what the kernel holds when the daemon is down)
//! 2. `render` (everything shown to a person; its own layers are in
//!    `render/mod.rs`)
//! 3. `main` (this file: runs a command, asking, rendering and writing)

use std::io::Write;
use std::process::ExitCode;

mod cli;
mod client;
mod offline;
mod output;
mod render;

use clap::Parser;
use cli::{Cli, Command, TargetProto};
use portguard_config::{Config, printable};
use portguard_core::L4Proto;
use portguard_core::control::{RequestBody, ResponseBody};
use portguard_core::{Snapshot, plan};
use render::explain::Answers;
use render::style::Style;
use render::text::printable_lines;

/// Exit code when the daemon is not running (as `systemctl status` does).
const EXIT_NOT_RUNNING: u8 = 3;
/// Exit code when this user may not use the control socket.
const EXIT_PERMISSION_DENIED: u8 = 4;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut out = output::Output::new(std::io::stdout().lock());
    let result = run(cli, &mut out).and_then(|code| {
        out.flush()?;
        Ok(code)
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            // Errors carry text from the daemon and from Docker.
            output::say(&format!("guardctl: {}", printable(&format!("{e:#}"))));
            match e.downcast_ref::<client::Unreachable>() {
                Some(client::Unreachable::NotRunning(_)) => {
                    // The table outlives the daemon: say what still filters.
                    if let Some(guard) = offline::look() {
                        let note = render::offline::kernel_note(&guard);
                        output::say(&format!("guardctl: {note}."));
                    }
                    ExitCode::from(EXIT_NOT_RUNNING)
                }
                Some(client::Unreachable::PermissionDenied(_)) => {
                    ExitCode::from(EXIT_PERMISSION_DENIED)
                }
                None => ExitCode::FAILURE,
            }
        }
    }
}

fn l4(proto: TargetProto) -> L4Proto {
    match proto {
        TargetProto::Tcp => L4Proto::Tcp,
        TargetProto::Udp => L4Proto::Udp,
    }
}

/// Everything the daemon would refuse about the configuration at `path`,
/// refused first: the files themselves (ownership, modes, syntax, values,
/// via `Config::load`), a `[control] group` that does not exist, and
/// whatever the planner chokes on. Returns the configuration and how many
/// files it was read from.
fn check(path: &std::path::Path) -> Result<(Config, usize), portguard_config::ConfigError> {
    let config = Config::load(path)?;
    if let Some(group) = &config.control.group {
        let missing = match nix::unistd::Group::from_name(group) {
            Ok(Some(_)) => None,
            Ok(None) => Some(format!(
                "group `{group}` does not exist: create it (groupadd {group}) or remove `group`"
            )),
            Err(e) => Some(format!("cannot look up group `{group}`: {e}")),
        };
        if let Some(message) = missing {
            return Err(match &config.control.group_position {
                Some(position) => position.error(message),
                None => portguard_config::ConfigError::Refused {
                    path: path.to_path_buf(),
                    message,
                },
            });
        }
    }
    // The daemon installs this ruleset (plus Docker's bridges and ports).
    // The planner has no error path today; building and rendering it here
    // keeps `check` in step with the daemon should it ever refuse (or
    // panic on) a configuration.
    std::hint::black_box(portguard_core::render(&plan(&config, &Snapshot::default())));
    let files = 1 + portguard_config::drop_ins(path)?.len();
    Ok((config, files))
}

/// The allow entries of `config` that would open nothing on this host
/// now: judged against what the running daemon reports Docker publishes
/// (nothing when no daemon answers; a misspelt container name would
/// otherwise pass `check` without a word).
fn unmatched_by_the_running_daemon(
    socket: &std::path::Path,
    config: &Config,
) -> Vec<portguard_core::unmatched::Unmatched> {
    let Ok(ResponseBody::Status(status)) = client::ask(socket, RequestBody::Status) else {
        return Vec::new();
    };
    let published = status
        .published
        .iter()
        .map(|report| portguard_core::PublishedPort {
            host_ip: report.host_ip.parse().ok(),
            host_port: report.host_port,
            proto: report.proto,
            container: portguard_core::ContainerRef {
                id: String::new(),
                name: report.container.clone(),
                compose: report.compose.clone(),
                service: report.service.clone(),
            },
            container_port: report.container_port,
            host_network: report.verdict == portguard_core::verdict::Verdict::HostNetwork,
        })
        .collect();
    let snapshot = Snapshot {
        published,
        ..Snapshot::default()
    };
    portguard_core::unmatched::unmatched_entries(config, &snapshot, status.docker.engine.is_some())
}

fn print_json<T: serde::Serialize>(out: &mut impl Write, value: &T) -> anyhow::Result<()> {
    writeln!(out, "{}", serde_json::to_string_pretty(value)?)?;
    Ok(())
}

fn run(cli: Cli, out: &mut impl Write) -> anyhow::Result<ExitCode> {
    let socket = cli.socket.as_path();
    let style = Style::stdout();
    match cli.command {
        Command::Status { json, brief } => {
            let ResponseBody::Status(status) = client::ask(socket, RequestBody::Status)? else {
                anyhow::bail!("unexpected answer to status");
            };
            if json {
                print_json(out, &status)?;
            } else if brief {
                writeln!(out, "{}", render::status::brief(&status))?;
            } else {
                write!(
                    out,
                    "{}\n{}",
                    render::status::render_status(&status, &style),
                    render::ports::render_ports(&status.published, &style)
                )?;
            }
            Ok(if status.ruleset.installed {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Ports { json } => {
            let ResponseBody::Ports(ports) = client::ask(socket, RequestBody::Ports)? else {
                anyhow::bail!("unexpected answer to ports");
            };
            if json {
                print_json(out, &ports)?;
            } else {
                write!(out, "{}", render::ports::render_ports(&ports, &style))?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Explain { target, from, json } => {
            let protos = match target.proto {
                Some(proto) => vec![l4(proto)],
                None => L4Proto::ALL.to_vec(),
            };
            let mut answers = Vec::new();
            for proto in protos {
                let request = RequestBody::Explain {
                    port: target.port,
                    proto,
                    from,
                };
                let ResponseBody::Explain(explanation) = client::ask(socket, request)? else {
                    anyhow::bail!("unexpected answer to explain");
                };
                answers.push((proto, explanation));
            }
            let answers = Answers(answers);
            if json {
                print_json(out, &answers.json(target.proto.is_some())?)?;
            } else {
                write!(out, "{}", answers.render(target.port))?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Blocked { json } => {
            let ResponseBody::Blocked(report) = client::ask(socket, RequestBody::Blocked)? else {
                anyhow::bail!("unexpected answer to blocked");
            };
            if json {
                print_json(out, &report)?;
            } else {
                write!(out, "{}", render::blocked::render_blocked(&report))?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Metrics => {
            let ResponseBody::Metrics(text) = client::ask(socket, RequestBody::Metrics)? else {
                anyhow::bail!("unexpected answer to metrics");
            };
            // Label values are ports, protocols, verdicts and tier names,
            // but the text comes from another process: never raw to a
            // terminal.
            for line in text.lines() {
                writeln!(out, "{}", printable(line))?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Reload => {
            let ResponseBody::Reload(outcome) = client::ask(socket, RequestBody::Reload)? else {
                anyhow::bail!("unexpected answer to reload");
            };
            match outcome.error {
                None => {
                    writeln!(out, "configuration reloaded and applied")?;
                    for warning in &outcome.warnings {
                        eprintln!("guardctl: warning: {}", printable(warning));
                    }
                    Ok(ExitCode::SUCCESS)
                }
                Some(e) => {
                    output::say(&printable_lines(&e));
                    output::say("guardctl: reload refused; the last good ruleset stays in force");
                    Ok(ExitCode::FAILURE)
                }
            }
        }
        Command::Check { config } => match check(&config) {
            Ok((loaded, files)) => {
                writeln!(
                    out,
                    "{}: OK ({} file{}, {} allow entr{})",
                    config.display(),
                    files,
                    if files == 1 { "" } else { "s" },
                    loaded.allow.len(),
                    if loaded.allow.len() == 1 { "y" } else { "ies" }
                )?;
                for unmatched in unmatched_by_the_running_daemon(socket, &loaded) {
                    eprintln!("guardctl: warning: {}", printable(&unmatched.to_string()));
                }
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => {
                output::say(&e.to_string());
                Ok(ExitCode::FAILURE)
            }
        },
        Command::Plan { config } => match Config::load(&config) {
            Ok(loaded) => {
                write!(
                    out,
                    "{}",
                    portguard_core::render(&plan(&loaded, &Snapshot::default()))
                )?;
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => {
                output::say(&e.to_string());
                Ok(ExitCode::FAILURE)
            }
        },
    }
}
