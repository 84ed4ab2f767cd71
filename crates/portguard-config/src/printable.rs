//! Text that others wrote, made safe to show on a terminal. The one
//! function of its kind in portguard: the configuration's messages use it,
//! and so do the core, the Docker client and `guardctl` (through
//! `portguard_core::text::printable` where they do not depend on this
//! crate).

use std::borrow::Cow;
use std::fmt::Write as _;

/// `text` made safe for a terminal: control characters (C0, DEL, C1) and
/// the invisible bidirectional-text controls that reorder or disguise what
/// a reader sees (U+061C, U+200E, U+200F, U+202A-U+202E, U+2066-U+2069)
/// become visible escapes (`\x1b`, `\u{202e}`), and the backslash itself is
/// doubled so that an escape cannot be faked. Container names, labels, the
/// engine version, file names and error messages come from Docker or from
/// files other people write; printed raw, `\x1b]0;...\x07\x1b[2J` would
/// retitle and clear the administrator's terminal.
pub fn printable(text: &str) -> Cow<'_, str> {
    escape(text, Backslash::Doubled)
}

/// [`printable`] for a message whose quoted values are already escaped the
/// way Rust's `{:?}` does (`\t`, `\u{1b}`, `\\`): the configuration's own
/// messages and serde's and toml's. The same characters are escaped, the
/// same way, but a backslash is left as it is: doubling it would make
/// `eth\t0` (a tab) read as a backslash and a `t`. Measured: with
/// [`printable`] instead, three messages of `tests/hostile.rs` said so.
pub(crate) fn printable_escaped(text: &str) -> Cow<'_, str> {
    escape(text, Backslash::Kept)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Backslash {
    Doubled,
    Kept,
}

fn escape(text: &str, backslash: Backslash) -> Cow<'_, str> {
    let escaped = |c: char| needs_escape(c) || (c == '\\' && backslash == Backslash::Doubled);
    if !text.chars().any(escaped) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if !escaped(c) {
            out.push(c);
        } else if c == '\\' {
            out.push_str("\\\\");
        } else if (c as u32) < 0x80 {
            let _ = write!(out, "\\x{:02x}", c as u32);
        } else {
            let _ = write!(out, "\\u{{{:x}}}", c as u32);
        }
    }
    Cow::Owned(out)
}

/// The characters a terminal would obey, or that would change what a
/// reader sees without being seen themselves.
fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
        )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn printable_escapes_terminal_control_sequences() {
        let table: &[(&str, &str)] = &[
            ("web", "web"),
            ("shop/web", "shop/web"),
            ("plain \u{e9}", "plain \u{e9}"),
            (
                "web\x1b]0;pwned\x07\x1b[2J",
                "web\\x1b]0;pwned\\x07\\x1b[2J",
            ),
            ("a\nb\tc\r", "a\\x0ab\\x09c\\x0d"),
            ("del\x7f", "del\\x7f"),
            ("csi\u{9b}2J", "csi\\u{9b}2J"),
            ("evil\u{202e}txt.exe", "evil\\u{202e}txt.exe"),
            ("a\u{202e}b\n", "a\\u{202e}b\\x0a"),
            ("iso\u{2066}late\u{2069}", "iso\\u{2066}late\\u{2069}"),
            (
                "marks\u{200e}\u{200f}\u{61c}",
                "marks\\u{200e}\\u{200f}\\u{61c}",
            ),
            ("back\\slash", "back\\\\slash"),
            ("fake\\x1b", "fake\\\\x1b"),
        ];
        for (raw, shown) in table {
            assert_eq!(printable(raw), *shown, "{raw:?}");
        }
        assert!(matches!(printable("plain"), Cow::Borrowed(_)));
    }

    #[test]
    fn already_escaped_messages_keep_their_backslashes() {
        let message = "interface name `eth\\t0` contains '\\u{1b}'\x1b[2J\u{202e}";
        assert_eq!(
            printable_escaped(message),
            "interface name `eth\\t0` contains '\\u{1b}'\\x1b[2J\\u{202e}"
        );
        assert!(matches!(printable_escaped("a\\b"), Cow::Borrowed(_)));
    }

    proptest! {
        #[test]
        fn printable_output_has_no_control_characters(text in any::<String>()) {
            for shown in [printable(&text), printable_escaped(&text)] {
                prop_assert!(!shown.chars().any(needs_escape));
            }
        }

        /// Every text shows differently: an escape cannot be faked.
        #[test]
        fn printable_is_one_to_one(a in any::<String>(), b in any::<String>()) {
            prop_assume!(a != b);
            prop_assert_ne!(printable(&a), printable(&b));
        }
    }
}
