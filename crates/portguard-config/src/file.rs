//! One configuration file as written: every key optional, unknown keys
//! rejected, merged onto the configuration built so far.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use crate::error::{ConfigError, LineIndex};
use crate::{
    AllowEntry, AllowTarget, Cidr, Config, Mode, Origin, PortRange, Position, Protection, Proto,
    Scope,
};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    guard: Option<FileGuard>,
    ipv6: Option<FileIpv6>,
    docker: Option<FileDocker>,
    control: Option<FileControl>,
    allow: Option<Vec<Spanned<FileAllow>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileGuard {
    mode: Option<Mode>,
    scope: Option<Scope>,
    trusted_interfaces: Option<Vec<Spanned<String>>>,
    external_interfaces: Option<Spanned<Vec<Spanned<String>>>>,
    log_blocked: Option<bool>,
    protection: Option<Protection>,
    /// Replaced by `protection`; kept only to say so.
    lock_table: Option<Spanned<bool>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileIpv6 {
    restore_forward_policy: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileDocker {
    socket: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileControl {
    socket: Option<Spanned<String>>,
    group: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileAllow {
    port: Option<PortRange>,
    container: Option<Spanned<String>>,
    proto: Option<Proto>,
    from: Option<Spanned<Vec<Spanned<String>>>>,
    comment: Option<String>,
}

/// Parses `text` (the contents of `path`) and merges it onto `config`.
pub(crate) fn apply(config: &mut Config, text: &str, path: &Path) -> Result<(), ConfigError> {
    let file: FileConfig = toml::from_str(text).map_err(|e| {
        let offset = e.span().map_or(0, |s| s.start);
        ConfigError::at(path, text, offset, e.message().trim_end().to_string())
    })?;
    // Built once per file: every entry's origin line is then a binary
    // search, not a scan from the start of the text (which was quadratic).
    let lines = LineIndex::new(text);
    let invalid = |span: std::ops::Range<usize>, message: String| {
        ConfigError::at(path, text, span.start, message)
    };

    if let Some(guard) = file.guard {
        if let Some(mode) = guard.mode {
            config.guard.mode = mode;
        }
        if let Some(scope) = guard.scope {
            config.guard.scope = scope;
        }
        if let Some(trusted) = guard.trusted_interfaces {
            config.guard.trusted_interfaces =
                parse_each(trusted).map_err(|(at, m)| invalid(at, m))?;
        }
        if let Some(external) = guard.external_interfaces {
            let external_span = external.span();
            if external.get_ref().is_empty() {
                return Err(invalid(
                    external.span(),
                    "external_interfaces must not be empty: omit it to treat every interface but lo, \
                     Docker's bridges and trusted ones as untrusted"
                        .to_string(),
                ));
            }
            let names: Vec<crate::IfName> =
                parse_each(external.into_inner()).map_err(|(at, m)| invalid(at, m))?;
            if let Some(wildcard) = names.iter().find(|n| n.wildcard_prefix().is_some()) {
                return Err(invalid(
                    external_span,
                    format!(
                        "external_interfaces takes exact interface names, not the wildcard `{wildcard}`"
                    ),
                ));
            }
            config.guard.external_interfaces = Some(names);
        }
        if let Some(log_blocked) = guard.log_blocked {
            config.guard.log_blocked = log_blocked;
        }
        if let Some(protection) = guard.protection {
            config.guard.protection = protection;
        }
        if let Some(lock_table) = guard.lock_table {
            return Err(invalid(
                lock_table.span(),
                "`lock_table` was replaced by `protection`: the table is owned by default where the \
                 kernel supports it (protection = \"auto\"); remove the key"
                    .to_string(),
            ));
        }
    }
    if let Some(ipv6) = file.ipv6
        && let Some(restore) = ipv6.restore_forward_policy
    {
        config.ipv6.restore_forward_policy = restore;
    }
    if let Some(docker) = file.docker
        && let Some(socket) = docker.socket
    {
        config.docker.socket = socket_path(&socket).map_err(|m| invalid(socket.span(), m))?;
    }
    if let Some(control) = file.control {
        if let Some(socket) = control.socket {
            config.control.socket = socket_path(&socket).map_err(|m| invalid(socket.span(), m))?;
        }
        if let Some(group) = control.group {
            let name = group.get_ref();
            // Names /etc/group can hold: no `:` (its field separator), no
            // white space or control characters, no `/`.
            if name.is_empty()
                || name
                    .chars()
                    .any(|c| c.is_whitespace() || c.is_control() || matches!(c, ':' | '/'))
            {
                return Err(invalid(
                    group.span(),
                    format!("`{}` is not a group name", name.escape_debug()),
                ));
            }
            let (line, column) = lines.line_column(text, group.span().start);
            config.control.group_position = Some(Position {
                file: path.to_path_buf(),
                line,
                column,
            });
            config.control.group = Some(group.into_inner());
        }
    }
    for entry in file.allow.unwrap_or_default() {
        let span = entry.span();
        let origin = Origin {
            file: path.to_path_buf(),
            line: lines.line(span.start),
        };
        config.allow.push(
            allow_entry(entry.into_inner(), origin)
                .map_err(|(at, m)| invalid(at.unwrap_or(span), m))?,
        );
    }
    Ok(())
}

type EntryError = (Option<std::ops::Range<usize>>, String);

fn allow_entry(raw: FileAllow, origin: Origin) -> Result<AllowEntry, EntryError> {
    let target = match (raw.port, raw.container) {
        (Some(range), None) => AllowTarget::Ports(range),
        (None, Some(name)) => {
            check_container_name(name.get_ref()).map_err(|m| (Some(name.span()), m))?;
            AllowTarget::Container(name.into_inner())
        }
        (Some(_), Some(name)) => {
            return Err((
                Some(name.span()),
                "an [[allow]] entry takes either `port` or `container`, not both: split it into two entries".to_string(),
            ));
        }
        (None, None) => {
            return Err((
                None,
                "an [[allow]] entry needs `port` (a number or \"low-high\") or `container` (a name or \"project/service\")"
                    .to_string(),
            ));
        }
    };
    let default_proto = match target {
        AllowTarget::Ports(_) => Proto::Tcp,
        AllowTarget::Container(_) => Proto::Both,
    };
    let from = match raw.from {
        None => Vec::new(),
        Some(from) if from.get_ref().is_empty() => {
            return Err((
                Some(from.span()),
                "`from` must not be empty: omit it to allow any source".to_string(),
            ));
        }
        Some(from) => parse_each::<Cidr>(from.into_inner()).map_err(|(at, m)| (Some(at), m))?,
    };
    Ok(AllowEntry {
        target,
        proto: raw.proto.unwrap_or(default_proto),
        from,
        comment: raw.comment,
        origin,
    })
}

/// Parses every string of a list, failing at the first bad one with its own
/// span (toml only knows the span of the whole array).
fn parse_each<T: std::str::FromStr<Err = String>>(
    items: Vec<Spanned<String>>,
) -> Result<Vec<T>, (std::ops::Range<usize>, String)> {
    items
        .into_iter()
        .map(|item| item.get_ref().parse().map_err(|m| (item.span(), m)))
        .collect()
}

fn check_container_name(name: &str) -> Result<(), String> {
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
        Ok(())
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

fn socket_path(value: &Spanned<String>) -> Result<PathBuf, String> {
    let text = value.get_ref();
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
