//! Property tests of the configuration parser over arbitrary input: raw
//! bytes (through `Config::load`, as the daemon reads a file) and TOML-ish
//! documents built from the real keys with good, bad and odd values. Every
//! case must end in `Ok` or an `Err`, never a panic; an `Err` must name the
//! file and, where it has a position, one inside the document; an `Ok` must
//! hold only values the checks admit. A hang shows as the test never
//! finishing (CI's timeout); each case is bounded by the 4 MiB cap and
//! toml's recursion limit.
//!
//! CI runs 4,000 cases per property (`cargo test -p portguard-config`).
//! To run a million:
//!
//! ```sh
//! PROPTEST_CASES=1000000 cargo test -p portguard-config --release --test fuzz
//! ```

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use portguard_config::{AllowTarget, Config, ConfigError};
use proptest::prelude::*;
use proptest::test_runner::Config as ProptestConfig;

/// 4,000 cases unless `PROPTEST_CASES` says otherwise.
fn cases() -> ProptestConfig {
    let mut config = ProptestConfig::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = 4_000;
    }
    config
}

/// What every outcome must satisfy, for a document of `text_len` bytes and
/// `lines` lines at `path`.
fn check_outcome(result: Result<Config, ConfigError>, path: &Path, lines: usize) {
    match result {
        Ok(config) => {
            for entry in &config.allow {
                if let AllowTarget::Ports(range) = entry.target {
                    assert!(range.start() >= 1 && range.start() <= range.end());
                }
                assert!(entry.origin.line >= 1 && entry.origin.line <= lines);
                for cidr in &entry.from {
                    if let std::net::IpAddr::V6(v6) = cidr.addr() {
                        assert!(v6.to_ipv4_mapped().is_none() || cidr.prefix() < 96);
                    }
                }
            }
            for name in config
                .guard
                .trusted_interfaces
                .iter()
                .chain(config.guard.external_interfaces.iter().flatten())
            {
                let body = name.wildcard_prefix().unwrap_or(name.as_str());
                assert!(!body.is_empty() && body.len() <= 15, "{name}");
                assert!(body.bytes().all(|b| b.is_ascii_graphic()), "{name}");
            }
        }
        Err(e) => {
            // Every mistake is checked on its own: together they are one
            // a line.
            for one in e.errors() {
                let shown = one.to_string();
                assert!(
                    shown.starts_with(&path.display().to_string()),
                    "error does not name the file: {shown}"
                );
                assert!(
                    !shown.chars().any(char::is_control),
                    "raw control character: {shown:?}"
                );
                assert!(!matches!(one, ConfigError::Several(_)), "nested: {e}");
                if let ConfigError::Invalid { line, column, .. } = one {
                    assert!(
                        *line >= 1 && *line <= lines,
                        "line {line} of {lines}: {shown}"
                    );
                    assert!(*column >= 1, "{shown}");
                }
            }
            // In line order.
            let places: Vec<(usize, usize)> = e
                .errors()
                .iter()
                .filter_map(|one| match one {
                    ConfigError::Invalid { line, column, .. } => Some((*line, *column)),
                    _ => None,
                })
                .collect();
            assert!(places.is_sorted(), "not in line order: {e}");
        }
    }
}

fn line_count(bytes: &[u8]) -> usize {
    bytes.iter().filter(|&&b| b == b'\n').count() + 1
}

/// One file, rewritten for every case, loaded as the daemon loads it.
fn load_bytes(dir: &Path, bytes: &[u8]) {
    let path = dir.join("portguard.toml");
    std::fs::write(&path, bytes).unwrap();
    check_outcome(Config::load(&path), &path, line_count(bytes));
}

/// A string over `alphabet` (pieces, possibly several bytes each), up to
/// `max` pieces. Built from indices rather than a regex: proptest's regex
/// strategies cost about a millisecond per value in a debug build.
fn text(alphabet: &'static [&'static str], max: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(alphabet), 0..=max)
        .prop_map(|pieces| pieces.concat())
}

/// `text` written as a TOML string, escaped by toml itself.
fn quoted(alphabet: &'static [&'static str], max: usize) -> impl Strategy<Value = String> {
    text(alphabet, max).prop_map(|s| toml::Value::String(s).to_string())
}

const PORT_CHARS: &[&str] = &["0", "1", "5", "6", "8", "9", "-", " ", "+", "\u{ff18}", "x"];
const IFACE_CHARS: &[&str] = &[
    "a", "w", "g", "0", "9", ".", "-", "_", "@", ":", "/", "*", " ", "\t", "\u{e9}", "\u{1b}", "\"",
];
const PATH_CHARS: &[&str] = &["a", "/", ".", "\0", " ", "unix://", "\u{1b}"];
const ANY_CHARS: &[&str] = &[
    "a",
    "Z",
    "0",
    " ",
    "\n",
    "\r",
    "\t",
    "\0",
    "\u{1b}",
    "\u{7f}",
    "\u{85}",
    "\u{feff}",
    "\u{202e}",
    "\u{e9}",
    "\u{1f600}",
    "\"",
    "'",
    "\\",
    "[",
    "]",
    "{",
    "}",
    "=",
    "#",
    ",",
];

fn enum_word() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        "\"enforce\"",
        "\"audit\"",
        "\"containers\"",
        "\"all\"",
        "\"tcp\"",
        "\"udp\"",
        "\"both\"",
        "\"auto\"",
        "\"owned-persistent\"",
        "\"owned-standby\"",
        "\"twin\"",
        "\"Enforce\"",
        "\"\"",
        "true",
        "{}",
        "[]",
        "{ enforce = {} }",
        "[\"tcp\"]",
    ])
    .prop_map(str::to_string)
}

fn port() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => (0u32..70_000).prop_map(|n| n.to_string()),
        3 => (1u16.., 1u16..).prop_map(|(a, b)| format!("\"{}-{}\"", a.min(b), a.max(b))),
        1 => any::<i64>().prop_map(|n| n.to_string()),
        1 => quoted(PORT_CHARS, 12),
        1 => prop::sample::select(vec!["1.5", "0x50", "\"080\"", "\"65535\"", "\"1-65535\""])
            .prop_map(str::to_string),
    ]
}

fn interfaces() -> impl Strategy<Value = String> {
    prop_oneof![
        2 => list(
            prop::sample::select(vec!["\"wg0\"", "\"tun*\"", "\"eth0\"", "\"br-1a2b3c4d5e6f\""])
                .prop_map(str::to_string)
        ),
        1 => list(quoted(IFACE_CHARS, 17)),
    ]
}

fn cidr() -> impl Strategy<Value = String> {
    let base = prop::sample::select(vec![
        "::ffff:203.0.113.",
        "203.0.113.",
        "10.0.0.",
        "2001:db8::",
        "::",
        "fe80::",
        "64:ff9b::",
        "::ffff:0:",
        "",
        "x",
    ]);
    (base, any::<u8>(), prop::option::of(0u8..140), any::<bool>()).prop_map(
        |(base, last, prefix, plus)| match prefix {
            Some(p) => format!("\"{base}{last}/{}{p}\"", if plus { "+" } else { "" }),
            None => format!("\"{base}{last}\""),
        },
    )
}

fn list(item: impl Strategy<Value = String>) -> impl Strategy<Value = String> {
    prop::collection::vec(item, 0..4).prop_map(|items| format!("[{}]", items.join(", ")))
}

/// A value of any TOML type, often almost right for some key.
fn value() -> BoxedStrategy<String> {
    prop_oneof![
        enum_word(),
        port(),
        any::<f64>().prop_map(|f| format!("{f:?}")),
        Just("1979-05-27T07:32:00Z".to_string()),
        Just("inf".to_string()),
        quoted(IFACE_CHARS, 20),
        quoted(PATH_CHARS, 130),
        quoted(ANY_CHARS, 12),
        list(quoted(IFACE_CHARS, 17)),
        list(cidr()),
    ]
    .boxed()
}

/// A value for `key`: mostly of the right kind, sometimes anything.
fn value_for(key: &str) -> BoxedStrategy<String> {
    let right = match key {
        "mode" | "scope" | "proto" | "protection" => {
            let words: &[&str] = match key {
                "mode" => &["\"enforce\"", "\"audit\""],
                "scope" => &["\"containers\"", "\"all\""],
                "proto" => &["\"tcp\"", "\"udp\"", "\"both\""],
                _ => &[
                    "\"auto\"",
                    "\"owned-persistent\"",
                    "\"owned-standby\"",
                    "\"twin\"",
                ],
            };
            prop_oneof![
                3 => prop::sample::select(words).prop_map(str::to_string),
                1 => enum_word(),
            ]
            .boxed()
        }
        "trusted_interfaces" | "external_interfaces" => interfaces().boxed(),
        "log_blocked" | "restore_forward_policy" => {
            any::<bool>().prop_map(|b| b.to_string()).boxed()
        }
        "socket" => prop_oneof![
            Just("\"/run/pg.sock\"".to_string()),
            Just("\"unix:///var/run/docker.sock\"".to_string()),
            quoted(PATH_CHARS, 130),
        ]
        .boxed(),
        "group" => prop_oneof![Just("\"root\"".to_string()), quoted(IFACE_CHARS, 12)].boxed(),
        "container" => prop_oneof![
            Just("\"web\"".to_string()),
            Just("\"shop/web\"".to_string()),
            quoted(IFACE_CHARS, 12),
        ]
        .boxed(),
        "comment" => quoted(ANY_CHARS, 12).boxed(),
        "port" => port().boxed(),
        "from" => list(cidr()).boxed(),
        _ => value(),
    };
    prop_oneof![9 => right, 1 => value()].boxed()
}

/// A section: its header, then some of its keys (each at most once, or a
/// typo) with values.
fn section(header: &'static str, keys: &'static [&'static str]) -> BoxedStrategy<String> {
    prop::sample::subsequence(keys, 0..=keys.len())
        .prop_flat_map(|keys| {
            keys.into_iter()
                .map(|k| value_for(k).prop_map(move |v| format!("{k} = {v}\n")))
                .collect::<Vec<_>>()
        })
        .prop_map(move |lines| format!("{header}\n{}", lines.concat()))
        .boxed()
}

/// A document: the single sections at most once each, `[[allow]]` entries,
/// and now and then a line of chaos.
fn document() -> impl Strategy<Value = String> {
    let chaos = prop_oneof![
        prop::sample::select(vec![
            "[",
            "]]",
            "=",
            "[guard.x]",
            "[[guard]]",
            "[guard]",
            "a.b.c = 1",
            "# \u{e9}",
            "\u{0}",
        ])
        .prop_map(str::to_string),
        text(ANY_CHARS, 20),
    ]
    .prop_map(|line| line + "\n");
    let singles = (
        prop::option::of(section(
            "[guard]",
            &[
                "mode",
                "scope",
                "trusted_interfaces",
                "external_interfaces",
                "log_blocked",
                "protection",
                "lock_table",
                "modee",
            ],
        )),
        prop::option::of(section("[ipv6]", &["restore_forward_policy"])),
        prop::option::of(section("[docker]", &["socket"])),
        prop::option::of(section("[control]", &["socket", "group"])),
    );
    let allow = section(
        "[[allow]]",
        &["port", "container", "proto", "from", "comment"],
    );
    let rest = prop::collection::vec(prop_oneof![12 => allow, 1 => chaos], 0..6);
    (singles, rest).prop_map(|((guard, ipv6, docker, control), rest)| {
        [guard, ipv6, docker, control]
            .into_iter()
            .flatten()
            .chain(rest)
            .collect::<String>()
    })
}

proptest! {
    #![proptest_config(cases())]

    #[test]
    fn arbitrary_bytes_give_ok_or_err(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let dir = tempfile::tempdir().unwrap();
        load_bytes(dir.path(), &bytes);
    }

    #[test]
    fn toml_ish_documents_give_ok_or_err(text in document()) {
        let path = Path::new("<string>");
        check_outcome(Config::from_toml_str(&text), path, line_count(text.as_bytes()));
    }

    /// Valid TOML with a UTF-8 error spliced in anywhere: the position
    /// given is the spliced byte's.
    #[test]
    fn bad_byte_position_is_exact(text in text(ANY_CHARS, 200), at in any::<prop::sample::Index>(), bad in 0x80u8..=0xff) {
        let mut bytes = text.into_bytes();
        let mut offset = at.index(bytes.len() + 1);
        // Splice on a character boundary so the prefix stays valid.
        while offset < bytes.len() && (bytes[offset] & 0xc0) == 0x80 {
            offset += 1;
        }
        // A lone continuation byte or a lead byte followed by ASCII `!`.
        let splice: &[u8] = if bad < 0xc0 { &[bad] } else { &[bad, b'!'] };
        bytes.splice(offset..offset, splice.iter().copied());
        let prefix = std::str::from_utf8(&bytes[..offset]).unwrap();
        let line = prefix.matches('\n').count() + 1;
        let column = prefix.rsplit('\n').next().unwrap().chars().count() + 1;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("portguard.toml");
        std::fs::write(&path, &bytes).unwrap();
        let err = Config::load(&path).unwrap_err().to_string();
        let expected = format!("{}:{line}:{column}: invalid UTF-8", path.display());
        prop_assert!(err.starts_with(&expected), "{} vs {}", err, expected);
    }
}
