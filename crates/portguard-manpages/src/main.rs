//! Writes portguard's man pages and shell completions into a directory, for
//! the Debian package (packaging/build-deb):
//!
//! ```text
//! portguard-manpages OUT
//!   OUT/man/portguardd.8 OUT/man/guardctl.8 OUT/man/guardctl-<command>.8
//!   OUT/man/portguard.toml.5
//!   OUT/completions/bash/guardctl OUT/completions/zsh/_guardctl
//!   OUT/completions/fish/guardctl.fish
//! ```
//!
//! The CLI pages and completions come from the binaries' own clap
//! definitions (their `cli.rs`, included below); portguard.toml(5) comes
//! from the `///` docs of crates/portguard-config, the same text the
//! configuration reference is written from.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::CommandFactory;
use clap_complete::Shell;

mod config_page;

// The binaries' command lines, compiled here a second time. Their fields
// are only read by the binaries themselves.
#[allow(dead_code)]
#[path = "../../guardctl/src/cli.rs"]
mod guardctl_cli;
#[allow(dead_code)]
#[path = "../../portguardd/src/cli.rs"]
mod portguardd_cli;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args_os().skip(1);
    let (Some(out), None) = (args.next(), args.next()) else {
        anyhow::bail!("usage: portguard-manpages OUT_DIR");
    };
    let written = generate(Path::new(&out))?;
    for path in written {
        println!("{}", path.display());
    }
    Ok(())
}

/// Writes every page and completion under `out`; returns the files written.
pub fn generate(out: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let man = out.join("man");
    std::fs::create_dir_all(&man).with_context(|| format!("creating {}", man.display()))?;
    let mut written = Vec::new();

    written.push(write_man(&man, portguardd_cli::Args::command(), "8")?);
    let guardctl = guardctl_cli::Cli::command();
    written.push(write_man(&man, guardctl.clone(), "8")?);
    // One page per subcommand (guardctl-status(8), ...), so that each
    // command's options are documented, as git and cargo do.
    for sub in guardctl.get_subcommands() {
        // clap names are `&'static str` (without its "string" feature); the
        // generator exits right after, so leaking a few names is harmless.
        let name: &'static str = String::leak(format!("guardctl-{}", sub.get_name()));
        let sub = sub.clone().name(name).bin_name(name);
        written.push(write_man(&man, sub, "8")?);
    }

    let page = config_page::render(config_page::CONFIG_SOURCE)?;
    let path = man.join("portguard.toml.5");
    std::fs::write(&path, page).with_context(|| format!("writing {}", path.display()))?;
    written.push(path);

    // Where Debian's bash-completion, zsh and fish look for them.
    for (shell, dir, file) in [
        (Shell::Bash, "bash", "guardctl"),
        (Shell::Zsh, "zsh", "_guardctl"),
        (Shell::Fish, "fish", "guardctl.fish"),
    ] {
        let dir = out.join("completions").join(dir);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let path = dir.join(file);
        let mut text = Vec::new();
        clap_complete::generate(shell, &mut guardctl.clone(), "guardctl", &mut text);
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}

fn write_man(dir: &Path, cmd: clap::Command, section: &str) -> anyhow::Result<PathBuf> {
    let path = dir.join(format!("{}.{section}", cmd.get_name()));
    let mut page = Vec::new();
    clap_mangen::Man::new(cmd)
        .section(section)
        .manual("portguard")
        .render(&mut page)?;
    std::fs::write(&path, page).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}
