//! What guardctl(8), guardctl-COMMAND(8) and portguardd(8) say beyond
//! clap's sections: EXIT STATUS, ENVIRONMENT, FILES, SEE ALSO (the
//! sections a Debian user looks for), examples and how to switch the guard
//! off, from the same definitions as `guardctl --help`. And the finishing
//! of clap's roff: Markdown `code` spans in doc comments become bold.

use roff::{Inline, Roff, bold, italic, roman};

use crate::guardctl_cli::{EMERGENCY_OFF, EXAMPLES, EXIT_CODES};

/// roff's preamble, which each rendered fragment starts with and a page
/// needs once.
const PREAMBLE: &str = ".ie \\n(.g .ds Aq \\(aq\n.el .ds Aq '\n";

fn fragment(roff: &Roff) -> String {
    let text = roff.render();
    text.strip_prefix(PREAMBLE).unwrap_or(&text).to_string()
}

/// `name(section)`, as SEE ALSO writes it.
fn page_ref(name: &str, section: &str) -> Vec<Inline> {
    vec![bold(name), roman(format!("({section})"))]
}

/// `.SH SEE ALSO` with these pages, comma separated, and documents.
fn see_also(roff: &mut Roff, pages: &[(String, &str)], documents: &[&str]) {
    let mut line = Vec::new();
    for (i, (name, section)) in pages.iter().enumerate() {
        if i > 0 {
            line.push(roman(", "));
        }
        line.extend(page_ref(name, section));
    }
    for document in documents {
        line.push(roman(", "));
        line.push(italic(*document));
    }
    roff.control("SH", ["SEE ALSO"]).text(line);
}

fn exit_status(roff: &mut Roff) {
    roff.control("SH", ["EXIT STATUS"]);
    for (code, meaning) in EXIT_CODES {
        roff.control("TP", [])
            .text([bold(code.to_string())])
            .text([roman(*meaning)]);
    }
}

fn tagged(roff: &mut Roff, items: &[(&str, &str)]) {
    for (tag, text) in items {
        roff.control("TP", [])
            .text([bold(*tag)])
            .text([roman(*text)]);
    }
}

/// guardctl(8)'s sections after clap's, `commands` being its subcommands.
pub fn guardctl(commands: &[String]) -> String {
    let mut roff = Roff::new();
    roff.control("SH", ["EXAMPLES"]);
    tagged(&mut roff, EXAMPLES);
    exit_status(&mut roff);
    roff.control("SH", ["ENVIRONMENT"]);
    tagged(
        &mut roff,
        &[(
            "NO_COLOR",
            "If set (to any value), output is never coloured. Without it, colour is used only \
             when standard output is a terminal.",
        )],
    );
    roff.control("SH", ["FILES"]);
    tagged(
        &mut roff,
        &[
            (
                portguard_config::DEFAULT_CONTROL_SOCKET,
                "the daemon's control socket (--socket; [control] socket), mode 0600, or 0660 \
                 for the [control] group",
            ),
            (
                portguard_config::DEFAULT_CONFIG_PATH,
                "the configuration check and plan read (--config)",
            ),
            (
                "/etc/portguard/conf.d/*.toml",
                "its drop-ins, read in file-name order",
            ),
        ],
    );
    roff.control("SH", ["EMERGENCY OFF"]);
    roff.control("PP", []).text([roman(
        "The counterpart of ufw disable, as root. Stopping the daemon alone does not switch \
         the guard off: its table stays in the kernel and keeps dropping. To stop dropping but \
         keep counting, set [guard] mode = \"audit\" and run guardctl reload instead.",
    )]);
    tagged(&mut roff, EMERGENCY_OFF);
    let mut pages: Vec<(String, &str)> =
        vec![("portguardd".into(), "8"), ("portguard.toml".into(), "5")];
    pages.extend(commands.iter().map(|c| (format!("guardctl-{c}"), "8")));
    pages.extend([("systemctl".into(), "1"), ("nft".into(), "8")]);
    see_also(
        &mut roff,
        &pages,
        &[
            "/usr/share/doc/portguard/guardctl.md",
            "/usr/share/doc/portguard/operations.md",
        ],
    );
    fragment(&roff)
}

/// A guardctl-COMMAND(8) page's sections after clap's.
pub fn guardctl_command() -> String {
    let mut roff = Roff::new();
    exit_status(&mut roff);
    see_also(
        &mut roff,
        &[("guardctl".into(), "8"), ("portguard.toml".into(), "5")],
        &["/usr/share/doc/portguard/guardctl.md"],
    );
    fragment(&roff)
}

/// portguardd(8)'s sections after clap's.
pub fn portguardd() -> String {
    let mut roff = Roff::new();
    roff.control("SH", ["ENVIRONMENT"]);
    tagged(
        &mut roff,
        &[(
            "PORTGUARD_LOG",
            "what is logged: error, warn, info (the default), debug or trace (a tracing \
             EnvFilter, e.g. portguardd=debug)",
        )],
    );
    roff.control("SH", ["FILES"]);
    tagged(
        &mut roff,
        &[
            (
                portguard_config::DEFAULT_CONFIG_PATH,
                "the configuration, then /etc/portguard/conf.d/*.toml",
            ),
            (
                portguard_config::DEFAULT_CONTROL_SOCKET,
                "the control socket guardctl talks to",
            ),
            (
                "/var/lib/portguard/",
                "the last good configuration and the metrics' totals",
            ),
        ],
    );
    see_also(
        &mut roff,
        &[
            ("guardctl".into(), "8"),
            ("portguard.toml".into(), "5"),
            ("systemctl".into(), "1"),
            ("journalctl".into(), "1"),
            ("nft".into(), "8"),
        ],
        &["/usr/share/doc/portguard/operations.md"],
    );
    fragment(&roff)
}

/// clap's page with its EXTRA section (the `--help` epilogue) replaced
/// by `extra`, placed before VERSION, and Markdown code spans from the
/// doc comments made bold (plain in NAME, which whatis(1) reads).
pub fn finish(page: &str, extra: &str) -> String {
    let mut page = page.to_string();
    if let Some(start) = page.find("\n.SH EXTRA\n") {
        let end = page[start + 1..]
            .find("\n.SH ")
            .map_or(page.len(), |at| start + 1 + at);
        page.replace_range(start..end, "");
    }
    match page.find("\n.SH VERSION\n") {
        Some(at) => page.insert_str(at + 1, extra),
        None => {
            if !page.ends_with('\n') {
                page.push('\n');
            }
            page.push_str(extra);
        }
    }
    let mut section = String::new();
    let mut out = String::with_capacity(page.len());
    for line in page.lines() {
        if let Some(name) = line.strip_prefix(".SH ") {
            section = name.to_string();
        }
        if line.starts_with('.') {
            out.push_str(line);
        } else if section == "NAME" {
            out.push_str(&line.replace('`', ""));
        } else {
            out.push_str(&code_spans_bold(line));
        }
        out.push('\n');
    }
    out
}

/// `` `x` `` to `\fBx\fR`; an unpaired backtick stays.
fn code_spans_bold(line: &str) -> String {
    let parts: Vec<&str> = line.split('`').collect();
    if parts.len() < 3 {
        return line.to_string();
    }
    let mut out = String::new();
    let pairs = (parts.len() - 1) / 2;
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            if i <= pairs * 2 {
                out.push_str(if i % 2 == 1 { "\\fB" } else { "\\fR" });
            } else {
                out.push('`');
            }
        }
        out.push_str(part);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_spans_become_bold() {
        assert_eq!(
            code_spans_bold("run `check` or `plan`"),
            "run \\fBcheck\\fR or \\fBplan\\fR"
        );
        assert_eq!(code_spans_bold("one ` alone"), "one ` alone");
        assert_eq!(code_spans_bold("`a` and `b"), "\\fBa\\fR and `b");
    }

    #[test]
    fn extra_replaces_clap_s_epilogue_before_version() {
        let page = ".TH x 8\n.SH NAME\nx \\- do `y`\n.SH EXTRA\nExamples: ...\n.SH VERSION\nv1\n";
        assert_eq!(
            finish(page, ".SH FILES\nf\n"),
            ".TH x 8\n.SH NAME\nx \\- do y\n.SH FILES\nf\n.SH VERSION\nv1\n"
        );
    }
}
