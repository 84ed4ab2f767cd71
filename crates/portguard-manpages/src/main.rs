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

mod cli_pages;
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

    written.push(write_man(
        &man,
        portguardd_cli::Args::command(),
        &cli_pages::portguardd(),
    )?);
    let guardctl = guardctl_cli::Cli::command();
    let commands: Vec<String> = guardctl
        .get_subcommands()
        .map(|sub| sub.get_name().to_string())
        .collect();
    // `guardctl help` is clap's; it has no page of its own to point to.
    written.push(write_man(
        &man,
        guardctl.clone().disable_help_subcommand(true),
        &cli_pages::guardctl(&commands),
    )?);
    // One page per subcommand (guardctl-status(8), ...), so that each
    // command's options are documented, as git and cargo do.
    for sub in guardctl.get_subcommands() {
        // clap names are `&'static str` (without its "string" feature); the
        // generator exits right after, so leaking a few names is harmless.
        let name: &'static str = String::leak(format!("guardctl-{}", sub.get_name()));
        let sub = sub.clone().name(name).bin_name(name);
        written.push(write_man(&man, sub, &cli_pages::guardctl_command())?);
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

/// Writes `cmd`'s page in section 8, clap's sections followed by `extra`
/// (roff, `.SH` and all) in place of clap's EXTRA (the `--help`
/// epilogue, which `extra` says properly).
fn write_man(dir: &Path, cmd: clap::Command, extra: &str) -> anyhow::Result<PathBuf> {
    let path = dir.join(format!("{}.8", cmd.get_name()));
    let mut page = Vec::new();
    clap_mangen::Man::new(cmd)
        .section("8")
        .source(format!("portguard {}", env!("CARGO_PKG_VERSION")))
        .manual("portguard")
        .render(&mut page)?;
    let page = cli_pages::finish(&String::from_utf8(page)?, extra);
    std::fs::write(&path, page).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    /// Every page generated, by file name (`guardctl.8`), as roff.
    fn pages() -> BTreeMap<String, String> {
        let dir = tempfile::tempdir().unwrap();
        super::generate(dir.path()).unwrap();
        std::fs::read_dir(dir.path().join("man"))
            .unwrap()
            .map(|entry| {
                let path = entry.unwrap().path();
                let name = path.file_name().unwrap().to_string_lossy().into_owned();
                (name, std::fs::read_to_string(&path).unwrap())
            })
            .collect()
    }

    /// The text of section `name` of `page` (up to the next `.SH`).
    fn section<'a>(page: &'a str, name: &str) -> Option<&'a str> {
        let quoted = format!("\n.SH \"{name}\"\n");
        let plain = format!("\n.SH {name}\n");
        let start = page
            .find(&quoted)
            .map(|at| at + quoted.len())
            .or_else(|| page.find(&plain).map(|at| at + plain.len()))?;
        let end = page[start..]
            .find("\n.SH ")
            .map_or(page.len(), |at| start + at);
        Some(&page[start..end])
    }

    /// Issue 22: guardctl(8) had no EXIT STATUS, FILES or ENVIRONMENT.
    #[test]
    fn guardctl_has_the_sections_a_debian_user_looks_for() {
        let pages = pages();
        let page = &pages["guardctl.8"];
        let exit = section(page, "EXIT STATUS").expect("EXIT STATUS");
        for code in ["0", "1", "2", "3", "4"] {
            assert!(exit.contains(&format!("\\fB{code}\\fR")), "{exit}");
        }
        assert!(exit.contains("not running"), "{exit}");
        let env = section(page, "ENVIRONMENT").expect("ENVIRONMENT");
        assert!(env.contains("NO_COLOR"), "{env}");
        let files = section(page, "FILES").expect("FILES");
        assert!(files.contains("/run/portguard/control.sock"), "{files}");
        let off = section(page, "EMERGENCY OFF").expect("EMERGENCY OFF");
        assert!(off.contains("portguardd \\-\\-remove\\-rules"), "{off}");
        assert!(section(page, "SEE ALSO").is_some());
        for sub in ["guardctl-status.8", "guardctl-explain.8"] {
            assert!(section(&pages[sub], "EXIT STATUS").is_some(), "{sub}");
        }
    }

    /// Every `name(N)` a page points to is a page generated here or a
    /// system page of the tools portguard works with: guardctl(8) pointed
    /// to a guardctl-help(8) that does not exist.
    #[test]
    fn every_page_referred_to_exists() {
        let pages = pages();
        let system = ["systemctl(1)", "journalctl(1)", "nft(8)"];
        for (file, page) in &pages {
            let plain = page
                .replace("\\fB", "")
                .replace("\\fR", "")
                .replace("\\-", "-");
            for (at, _) in plain.match_indices('(') {
                let section = &plain[at + 1..];
                if !(section.len() > 1
                    && section.as_bytes()[0].is_ascii_digit()
                    && section.as_bytes()[1] == b')')
                {
                    continue;
                }
                let name_start = plain[..at]
                    .rfind(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_')))
                    .map_or(0, |i| i + 1);
                let name = &plain[name_start..at];
                if name.is_empty() {
                    continue;
                }
                let reference = format!("{name}({})", &section[..1]);
                let generated = format!("{name}.{}", &section[..1]);
                assert!(
                    pages.contains_key(&generated) || system.contains(&reference.as_str()),
                    "{file} refers to {reference}, which is no page"
                );
            }
        }
    }

    /// Doc comments are Markdown; a page shows no backtick (they become
    /// bold), and `--json` is described where it is an option.
    #[test]
    fn no_markdown_left_and_json_described() {
        let pages = pages();
        for (file, page) in &pages {
            assert!(!page.contains('`'), "{file} has a backtick");
        }
        for file in [
            "guardctl-ports.8",
            "guardctl-explain.8",
            "guardctl-status.8",
            "guardctl-blocked.8",
        ] {
            let options = section(&pages[file], "OPTIONS").unwrap();
            let after = options
                .split("\\fB\\-\\-json\\fR\n")
                .nth(1)
                .unwrap_or_else(|| panic!("{file}: no --json"));
            let description = after.lines().next().unwrap_or("");
            assert!(
                description.starts_with("Machine\\-readable output"),
                "{file}: --json is `{description}`"
            );
        }
    }

    /// groff reads every page without a warning (lintian runs the same
    /// check on the package).
    #[test]
    fn groff_reads_every_page_without_a_warning() {
        let dir = tempfile::tempdir().unwrap();
        let written = super::generate(dir.path()).unwrap();
        for page in written
            .iter()
            .filter(|p| p.to_string_lossy().contains("/man/"))
        {
            let out = match std::process::Command::new("groff")
                .args(["-man", "-ww", "-z", "-Tutf8"])
                .arg(page)
                .env("LC_ALL", "C.UTF-8")
                .output()
            {
                Ok(out) => out,
                Err(e) => {
                    eprintln!("groff not run ({e}): skipped");
                    return;
                }
            };
            assert!(
                out.status.success() && out.stderr.is_empty(),
                "{}: {}",
                page.display(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}
