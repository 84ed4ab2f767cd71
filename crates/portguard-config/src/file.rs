//! One configuration file as written: every key optional, unknown keys
//! rejected, merged onto the configuration built so far.
//!
//! The file is read into a TOML document with the position of every key
//! and value, and each key is then checked on its own, so that one pass
//! finds every mistake in the file (serde's derive stops at the first).
//! After a syntax error the parser can only guess at what follows, so
//! every syntax error is reported (the first of each line), but keys and
//! values are judged only in the lines before the first one, read again
//! on their own: nothing the parser guessed at is blamed on the
//! administrator.

use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;
use toml::de::{DeTable, DeValue, ValueDeserializer};

use crate::error::{ConfigError, LineIndex};
use crate::suggest::nearest;
use crate::{
    AllowEntry, AllowTarget, Cidr, Config, ControlConfig, GuardConfig, IfName, Origin, PortRange,
    Position, Proto,
};

/// The keys of each section, in the order the reference lists them; what
/// "did you mean" offers. Keys that were removed are not here.
pub(crate) const SECTIONS: &[(&str, &[&str])] = &[
    (
        "guard",
        &[
            "mode",
            "scope",
            "trusted_interfaces",
            "external_interfaces",
            "log_blocked",
            "protection",
        ],
    ),
    ("ipv6", &["restore_forward_policy"]),
    ("docker", &["socket"]),
    ("control", &["socket", "group"]),
    ("allow", &["port", "container", "proto", "from", "comment"]),
];

/// Parses `text` (the contents of `path`) and merges it onto `config`.
/// Returns every mistake in the file, in line order; none means the file
/// is good (and `config` holds it).
pub(crate) fn apply(config: &mut Config, text: &str, path: &Path) -> Vec<ConfigError> {
    let (document, syntax_errors) = DeTable::parse_recoverable(text);
    let mut found = Found {
        path,
        text,
        // Built once per file: every entry's origin line is then a binary
        // search, not a scan from the start of the text (which was quadratic).
        lines: LineIndex::new(text),
        complete: syntax_errors.is_empty(),
        mistakes: Vec::new(),
    };
    if syntax_errors.is_empty() {
        judge(config, document, &mut found);
        return found.into_errors();
    }
    let mut syntax_lines = Vec::new();
    for error in &syntax_errors {
        let at = error.span().map_or(0, |span| span.start).min(text.len());
        // What the parser reports after a syntax error on the same line is
        // mostly the same mistake seen again.
        let line = found.lines.line(at);
        if !syntax_lines.contains(&line) {
            syntax_lines.push(line);
            found
                .mistakes
                .push((at, error.message().trim_end().to_string()));
        }
    }
    let first = found.mistakes.iter().map(|(at, _)| *at).min().unwrap_or(0);
    if let Some(before) = clean_prefix(text, &found.lines, first) {
        // The file is refused anyway; what it would have set is dropped.
        judge(&mut config.clone(), before, &mut found);
    }
    found.into_errors()
}

/// How many times [`clean_prefix`] steps back a line.
const MAX_STEPS_BACK: usize = 16;

/// The lines before the one at byte `error`, as a document of their own,
/// if they make one: cutting a value that spans lines (a list written one
/// element a line) leaves it open, and the cut then moves up a line at a
/// time (at most [`MAX_STEPS_BACK`] times).
fn clean_prefix<'i>(
    text: &'i str,
    lines: &LineIndex,
    error: usize,
) -> Option<Spanned<DeTable<'i>>> {
    let mut end = lines.start_of_line_at(error);
    for _ in 0..MAX_STEPS_BACK {
        match DeTable::parse(&text[..end]) {
            Ok(document) => return Some(document),
            Err(e) => {
                let at = e.span().map_or(0, |span| span.start).min(end);
                let start = lines.start_of_line_at(at);
                end = if start < end {
                    start
                } else {
                    lines.start_of_line_at(end.checked_sub(1)?)
                };
            }
        }
    }
    None
}

/// Checks every key of `document` and merges what is good onto `config`.
fn judge(config: &mut Config, document: Spanned<DeTable<'_>>, found: &mut Found<'_>) {
    for (key, value) in document.into_inner() {
        match key.get_ref().as_ref() {
            "guard" => {
                if let Some(table) = found.section("guard", value) {
                    guard(&mut config.guard, table, found);
                }
            }
            "ipv6" => {
                if let Some(table) = found.section("ipv6", value) {
                    for (key, value) in table {
                        match key.get_ref().as_ref() {
                            "restore_forward_policy" => {
                                if let Some(restore) = found.value(value) {
                                    config.ipv6.restore_forward_policy = restore;
                                }
                            }
                            other => found.unknown_key(&key, other, "ipv6"),
                        }
                    }
                }
            }
            "docker" => {
                if let Some(table) = found.section("docker", value) {
                    for (key, value) in table {
                        match key.get_ref().as_ref() {
                            "socket" => {
                                if let Some(socket) = found.checked(value, socket_path) {
                                    config.docker.socket = socket;
                                }
                            }
                            other => found.unknown_key(&key, other, "docker"),
                        }
                    }
                }
            }
            "control" => {
                if let Some(table) = found.section("control", value) {
                    control(&mut config.control, table, found);
                }
            }
            "allow" => {
                let span = key.span();
                match value.into_inner() {
                    DeValue::Array(entries) => {
                        for entry in entries {
                            if let Some(entry) = allow_entry(entry, found) {
                                config.allow.push(entry);
                            }
                        }
                    }
                    DeValue::Table(_) => found.add(
                        span,
                        "write [[allow]], with two brackets: each allow entry is a table of its own"
                            .to_string(),
                    ),
                    other => found.add(
                        span,
                        format!(
                            "`allow` must be [[allow]] tables, not {}",
                            other.type_str()
                        ),
                    ),
                }
            }
            other => {
                let message = unknown_section(other, value.get_ref());
                found.add(key.span(), message);
            }
        }
    }
}

/// The mistakes of one file, with what is needed to place them.
struct Found<'a> {
    path: &'a Path,
    text: &'a str,
    lines: LineIndex,
    /// No syntax error at all: a key that is missing is really missing.
    complete: bool,
    /// (byte offset, message)
    mistakes: Vec<(usize, String)>,
}

impl Found<'_> {
    fn add(&mut self, at: Range<usize>, message: String) {
        self.mistakes.push((at.start, message));
    }

    fn into_errors(mut self) -> Vec<ConfigError> {
        // Stable: two mistakes at one place keep the order they were found in.
        self.mistakes.sort_by_key(|(at, _)| *at);
        self.mistakes
            .into_iter()
            .map(|(at, message)| {
                let (line, column) = self.lines.line_column(self.text, at);
                ConfigError::Invalid {
                    path: self.path.to_path_buf(),
                    line,
                    column,
                    message,
                }
            })
            .collect()
    }

    /// `value` as a `T`, or `None` once the reason is noted.
    fn value<'i, T: Deserialize<'i>>(&mut self, value: Spanned<DeValue<'i>>) -> Option<T> {
        let span = value.span();
        match T::deserialize(ValueDeserializer::from(value)) {
            Ok(value) => Some(value),
            Err(e) => {
                self.add(e.span().unwrap_or(span), e.message().trim_end().to_string());
                None
            }
        }
    }

    /// A string checked by `check`, whose complaint is placed at the value.
    fn checked<T>(
        &mut self,
        value: Spanned<DeValue<'_>>,
        check: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<T> {
        let span = value.span();
        let text: String = self.value(value)?;
        check(&text).map_err(|m| self.add(span, m)).ok()
    }

    /// Every string of a list parsed as a `T`, each bad one noted at its
    /// own position; `None` if any was bad.
    fn each<T: std::str::FromStr<Err = String>>(
        &mut self,
        items: Vec<Spanned<String>>,
    ) -> Option<Vec<T>> {
        let mut parsed = Vec::with_capacity(items.len());
        let mut good = true;
        for item in items {
            match item.get_ref().parse() {
                Ok(value) => parsed.push(value),
                Err(message) => {
                    self.add(item.span(), message);
                    good = false;
                }
            }
        }
        good.then_some(parsed)
    }

    /// The keys of `[name]`, or `None` once it is noted that it is not a
    /// table.
    fn section<'i>(&mut self, name: &str, value: Spanned<DeValue<'i>>) -> Option<DeTable<'i>> {
        let span = value.span();
        match value.into_inner() {
            DeValue::Table(table) => Some(table),
            other => {
                self.add(
                    span,
                    format!(
                        "`{name}` must be a section ([{name}] on a line of its own, its keys \
                         below), not {}",
                        other.type_str()
                    ),
                );
                None
            }
        }
    }

    fn unknown_key(&mut self, key: &Spanned<toml::de::DeString<'_>>, name: &str, section: &str) {
        self.add(key.span(), unknown_key(name, section));
    }
}

/// `[guard]`, or `[[allow]]`.
fn header(section: &str) -> String {
    if section == "allow" {
        "[[allow]]".to_string()
    } else {
        format!("[{section}]")
    }
}

/// The sections other than `section` that have a key `name`.
fn sections_with(name: &str, except: Option<&str>) -> Vec<String> {
    SECTIONS
        .iter()
        .filter(|(s, keys)| Some(*s) != except && keys.contains(&name))
        .map(|(s, _)| header(s))
        .collect()
}

fn known_keys(section: &str) -> &'static [&'static str] {
    SECTIONS
        .iter()
        .find(|(s, _)| *s == section)
        .map_or(&[], |(_, keys)| keys)
}

fn quoted_list(names: &[&str]) -> String {
    let quoted: Vec<String> = names.iter().map(|n| format!("`{n}`")).collect();
    match quoted.as_slice() {
        [one] => one.clone(),
        [rest @ .., last] => format!("{} or {last}", rest.join(", ")),
        [] => String::new(),
    }
}

fn unknown_key(name: &str, section: &str) -> String {
    let shown = name.escape_debug();
    let in_section = header(section);
    if section == "guard" && name == "lock_table" {
        return "`lock_table` was replaced by `protection`: the table is owned by default where \
                the kernel supports it (protection = \"auto\"); remove the key"
            .to_string();
    }
    let elsewhere = sections_with(name, Some(section));
    if !elsewhere.is_empty() {
        return format!(
            "`{shown}` is not a key of {in_section}: it belongs in {}",
            elsewhere.join(" or ")
        );
    }
    let known = known_keys(section);
    match nearest(name, known) {
        Some(near) => format!("unknown key `{shown}` in {in_section}: did you mean `{near}`?"),
        None => format!(
            "unknown key `{shown}` in {in_section}: expected {}",
            quoted_list(known)
        ),
    }
}

/// A top-level name that is no section: a misspelt section, or a key
/// written above every section header.
fn unknown_section(name: &str, value: &DeValue<'_>) -> String {
    let shown = name.escape_debug();
    let sections: Vec<&str> = SECTIONS.iter().map(|(s, _)| *s).collect();
    let all = || {
        sections
            .iter()
            .map(|s| header(s))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let written = match value {
        DeValue::Table(_) => format!("[{shown}]"),
        DeValue::Array(items) if items.iter().all(|i| i.get_ref().is_table()) => {
            format!("[[{shown}]]")
        }
        _ => {
            let owners = sections_with(name, None);
            return if owners.is_empty() {
                format!(
                    "unknown key `{shown}` outside any section: the sections are {}",
                    all()
                )
            } else {
                format!(
                    "`{shown}` is outside any section: write it below {}",
                    owners.join(" or ")
                )
            };
        }
    };
    match nearest(name, &sections) {
        Some(near) => format!("unknown section {written}: did you mean {}?", header(near)),
        None => format!("unknown section {written}: the sections are {}", all()),
    }
}

fn guard(config: &mut GuardConfig, table: DeTable<'_>, found: &mut Found<'_>) {
    for (key, value) in table {
        match key.get_ref().as_ref() {
            "mode" => {
                if let Some(mode) = found.value(value) {
                    config.mode = mode;
                }
            }
            "scope" => {
                if let Some(scope) = found.value(value) {
                    config.scope = scope;
                }
            }
            "trusted_interfaces" => {
                if let Some(names) = found.value(value).and_then(|list| found.each(list)) {
                    config.trusted_interfaces = names;
                }
            }
            "external_interfaces" => {
                let span = value.span();
                let Some(list) = found.value::<Vec<Spanned<String>>>(value) else {
                    continue;
                };
                if list.is_empty() {
                    found.add(
                        span,
                        "external_interfaces must not be empty: omit it to treat every interface \
                         but lo, Docker's bridges and trusted ones as untrusted"
                            .to_string(),
                    );
                    continue;
                }
                let Some(names) = found.each::<IfName>(list) else {
                    continue;
                };
                match names.iter().find(|n| n.wildcard_prefix().is_some()) {
                    Some(wildcard) => found.add(
                        span,
                        format!(
                            "external_interfaces takes exact interface names, not the wildcard \
                             `{wildcard}`"
                        ),
                    ),
                    None => config.external_interfaces = Some(names),
                }
            }
            "log_blocked" => {
                if let Some(log_blocked) = found.value(value) {
                    config.log_blocked = log_blocked;
                }
            }
            "protection" => {
                if let Some(protection) = found.value(value) {
                    config.protection = protection;
                }
            }
            other => found.unknown_key(&key, other, "guard"),
        }
    }
}

fn control(config: &mut ControlConfig, table: DeTable<'_>, found: &mut Found<'_>) {
    for (key, value) in table {
        match key.get_ref().as_ref() {
            "socket" => {
                if let Some(socket) = found.checked(value, socket_path) {
                    config.socket = socket;
                }
            }
            "group" => {
                let start = value.span().start;
                if let Some(group) = found.checked(value, group_name) {
                    let (line, column) = found.lines.line_column(found.text, start);
                    config.group_position = Some(Position {
                        file: found.path.to_path_buf(),
                        line,
                        column,
                    });
                    config.group = Some(group);
                }
            }
            other => found.unknown_key(&key, other, "control"),
        }
    }
}

/// Names /etc/group can hold: no `:` (its field separator), no white
/// space or control characters, no `/`.
fn group_name(name: &str) -> Result<String, String> {
    if name.is_empty()
        || name
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || matches!(c, ':' | '/'))
    {
        return Err(format!("`{}` is not a group name", name.escape_debug()));
    }
    Ok(name.to_string())
}

/// One `[[allow]]` entry, or `None` once its mistakes are noted.
fn allow_entry(entry: Spanned<DeValue<'_>>, found: &mut Found<'_>) -> Option<AllowEntry> {
    let entry_at = entry.span();
    let origin = Origin {
        file: found.path.to_path_buf(),
        line: found.lines.line(entry_at.start),
    };
    let table = match entry.into_inner() {
        DeValue::Table(table) => table,
        other => {
            found.add(
                entry_at,
                format!(
                    "an allow entry must be a table ({{ port = 80 }}), not {}",
                    other.type_str()
                ),
            );
            return None;
        }
    };
    let before = found.mistakes.len();
    let mut port = None;
    let mut container = None;
    // Whether each was written at all, even with a bad value.
    let (mut port_written, mut container_at) = (false, None);
    let mut proto = None;
    let mut from = None;
    let mut comment = None;
    // An unknown key is most likely `port` or `container` misspelt: then
    // "needs `port` or `container`" would only repeat it.
    let mut misspelt = false;
    for (key, value) in table {
        match key.get_ref().as_ref() {
            "port" => {
                port_written = true;
                port = found.value::<PortRange>(value);
            }
            "container" => {
                container_at = Some(value.span());
                container = found.checked(value, container_name);
            }
            "proto" => proto = found.value::<Proto>(value),
            "from" => {
                let span = value.span();
                match found.value::<Vec<Spanned<String>>>(value) {
                    Some(list) if list.is_empty() => found.add(
                        span,
                        "`from` must not be empty: omit it to allow any source".to_string(),
                    ),
                    Some(list) => from = found.each::<Cidr>(list),
                    None => {}
                }
            }
            "comment" => comment = found.value::<String>(value),
            other => {
                misspelt = true;
                found.unknown_key(&key, other, "allow");
            }
        }
    }
    match (port_written, container_at) {
        (true, Some(at)) => found.add(
            at,
            "an [[allow]] entry takes either `port` or `container`, not both: split it into two \
             entries"
                .to_string(),
        ),
        // Without a syntax error a missing key is really missing; with
        // one, it may be the line the parser could not read.
        (false, None) if found.complete && !misspelt => found.add(
            entry_at,
            "an [[allow]] entry needs `port` (a number or \"low-high\") or `container` (a name or \
             \"project/service\")"
                .to_string(),
        ),
        _ => {}
    }
    if found.mistakes.len() > before {
        return None;
    }
    let target = match (port, container) {
        (Some(range), None) => AllowTarget::Ports(range),
        (None, Some(name)) => AllowTarget::Container(name),
        // Only after a syntax error (noted already).
        _ => return None,
    };
    let default_proto = match target {
        AllowTarget::Ports(_) => Proto::Tcp,
        AllowTarget::Container(_) => Proto::Both,
    };
    Some(AllowEntry {
        target,
        proto: proto.unwrap_or(default_proto),
        from: from.unwrap_or_default(),
        comment,
        origin,
    })
}

fn container_name(name: &str) -> Result<String, String> {
    let valid_part = |part: &str| {
        !part.is_empty()
            && part
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
    };
    let ok = match name.split_once('/') {
        Some((project, service)) => valid_part(project) && valid_part(service),
        None => valid_part(name.trim_start_matches('/')),
    };
    if ok {
        Ok(name.to_string())
    } else {
        Err(format!(
            "`{name}` is not a container name or compose \"project/service\" (letters, digits, `_`, `.`, `-`)"
        ))
    }
}

/// Longest path a Unix socket address holds (`sun_path` is 108 bytes
/// including the terminating NUL); a longer one fails only at bind or
/// connect time, so it is refused here.
const MAX_SOCKET_PATH: usize = 107;

fn socket_path(text: &str) -> Result<PathBuf, String> {
    let path = text.strip_prefix("unix://").unwrap_or(text);
    if !path.starts_with('/') {
        return Err(format!(
            "socket `{}` must be an absolute path (optionally with a unix:// prefix)",
            text.escape_debug()
        ));
    }
    if path.contains('\0') {
        return Err("a socket path must not contain a NUL character".to_string());
    }
    if path.len() > MAX_SOCKET_PATH {
        return Err(format!(
            "socket path is {} bytes long: a Unix socket path holds at most {MAX_SOCKET_PATH}",
            path.len()
        ));
    }
    Ok(PathBuf::from(path))
}

#[cfg(test)]
mod tests {
    use super::SECTIONS;

    /// The keys "did you mean" offers are the keys the parser takes: a
    /// file using each parses or fails for its value, never as unknown.
    #[test]
    fn the_offered_keys_are_the_parsed_keys() {
        for (section, keys) in SECTIONS {
            let header = super::header(section);
            for key in *keys {
                let text = format!("{header}\n{key} = 1\n");
                if let Err(e) = crate::Config::from_toml_str(&text) {
                    let shown = e.to_string();
                    assert!(
                        !shown.contains("unknown") && !shown.contains("not a key"),
                        "{key}: {shown}"
                    );
                }
            }
        }
    }
}
