//! Colour, and only on a terminal: `NO_COLOR` or a pipe gets plain text.

use std::io::IsTerminal;

use portguard_core::verdict::Verdict;

/// Whether to colour: on standard output, when it is a terminal and
/// `NO_COLOR` is not set.
pub(crate) struct Style {
    color: bool,
}

impl Style {
    pub(crate) fn stdout() -> Style {
        Style {
            color: std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none(),
        }
    }

    /// `text` in the SGR colour `code` (`31;1`), or as it is.
    pub(crate) fn paint(&self, text: &str, code: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }

    /// A verdict's word in its colour.
    pub(crate) fn verdict(&self, verdict: Verdict) -> String {
        let code = match verdict {
            Verdict::Allowed => "32",
            Verdict::Blocked => "1",
            // Open, and not by choice: as loud as blocked, in yellow.
            Verdict::OpenInAudit => "1;33",
            Verdict::LocalOnly => "36",
            Verdict::HostNetwork => "33",
        };
        self.paint(verdict.as_str(), code)
    }
}
