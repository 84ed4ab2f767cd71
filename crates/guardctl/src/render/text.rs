//! Words and lines shared by every view.

use portguard_config::printable;

/// `1 port`, `2 ports`.
pub(crate) fn plural(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// `text` made safe for a terminal line by line, its line breaks kept
/// (several configuration mistakes are one a line).
pub(crate) fn printable_lines(text: &str) -> String {
    text.lines()
        .map(|line| printable(line).into_owned())
        .collect::<Vec<_>>()
        .join("\n")
}
