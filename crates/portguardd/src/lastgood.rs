//! The last good configuration, kept in the state directory after every
//! successful apply, so that a boot (or restart) with a broken file still
//! installs the protection the administrator last had (P7). It is written
//! as one TOML document the ordinary parser reads back; entries then name
//! this file as their origin, which is the truth.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use portguard_config::{AllowTarget, Config};
use toml::{Table, Value};

const FILE_NAME: &str = "last-good.toml";

pub fn path(state_dir: &Path) -> PathBuf {
    state_dir.join(FILE_NAME)
}

/// Writes `config` atomically (temporary file, fsync, rename), mode 0600
/// in a directory of mode 0700: the loader refuses a file others could
/// have written, and so it should. A file that already holds exactly this
/// is left alone: every reload keeps the configuration, and most reloads
/// change nothing (an fsync each would be disk writes for nothing, on the
/// reconcile loop).
pub fn save(state_dir: &Path, config: &Config) -> anyhow::Result<()> {
    ensure_state_dir(state_dir)?;
    let target = path(state_dir);
    let bytes = to_toml(config);
    if holds_already(&target, bytes.as_bytes(), 0o600) {
        return Ok(());
    }
    write_atomically(&target, bytes.as_bytes(), 0o600)
}

/// Whether `target` is a regular file of ours with mode `mode` holding
/// exactly `bytes`. Anything else (no file, a link, another mode or
/// owner, other bytes, an error) is rewritten.
fn holds_already(target: &Path, bytes: &[u8], mode: u32) -> bool {
    use std::io::Read as _;
    use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _};
    let Ok(mut file) = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
        .open(target)
    else {
        return false;
    };
    let Ok(meta) = file.metadata() else {
        return false;
    };
    if !meta.is_file()
        || meta.mode() & 0o7777 != mode
        || meta.uid() != nix::unistd::geteuid().as_raw()
        || meta.len() != bytes.len() as u64
    {
        return false;
    }
    let mut held = Vec::with_capacity(bytes.len());
    file.read_to_end(&mut held).is_ok() && held == bytes
}

/// Creates the state directory if needed, mode 0700 either way.
pub fn ensure_state_dir(state_dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(state_dir)
        .with_context(|| format!("creating {}", state_dir.display()))?;
    std::fs::set_permissions(state_dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("chmod 0700 {}", state_dir.display()))
}

/// Replaces `target` with `bytes` so that readers see the old file or the
/// new one, never a part: a temporary file beside it (same file system),
/// fsync, rename. The temporary name is hidden and does not end like the
/// target (node_exporter reads only `*.prom`).
pub fn write_atomically(target: &Path, bytes: &[u8], mode: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
    let name = target
        .file_name()
        .with_context(|| format!("{} has no file name", target.display()))?;
    let temporary = target.with_file_name(format!(
        ".{}.{}.tmp",
        name.to_string_lossy(),
        std::process::id()
    ));
    // The directory may be writable by others (node_exporter's textfile
    // directory, any --metrics-file): whatever sits at the temporary name
    // (a crash's leftover, or a planted link) is unlinked, never followed,
    // and the file is created afresh (O_EXCL, O_NOFOLLOW), so the daemon
    // cannot be made to write, as root, through a link.
    match std::fs::remove_file(&temporary) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(e).with_context(|| format!("removing {}", temporary.display()));
        }
        _ => {}
    }
    let written = (|| -> anyhow::Result<()> {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .mode(mode)
            .open(&temporary)
            .with_context(|| format!("writing {}", temporary.display()))?;
        // The umask may have taken bits away from `mode`.
        file.set_permissions(std::fs::Permissions::from_mode(mode))?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&temporary, target)
            .with_context(|| format!("renaming into {}", target.display()))
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    written
}

/// The kept configuration: `Ok(None)` when none was kept.
pub fn load(state_dir: &Path) -> Result<Option<Config>, portguard_config::ConfigError> {
    let file = path(state_dir);
    if !file.exists() {
        return Ok(None);
    }
    Config::load(&file).map(Some)
}

/// `config` as a TOML document that [`Config::load`] reads back equal
/// (but for the entries' origins).
pub fn to_toml(config: &Config) -> String {
    let mut doc = Table::new();
    let mut guard = Table::new();
    guard.insert("mode".into(), value(&config.guard.mode));
    guard.insert("scope".into(), value(&config.guard.scope));
    guard.insert(
        "trusted_interfaces".into(),
        Value::Array(
            config
                .guard
                .trusted_interfaces
                .iter()
                .map(|n| Value::String(n.as_str().into()))
                .collect(),
        ),
    );
    if let Some(external) = &config.guard.external_interfaces {
        guard.insert(
            "external_interfaces".into(),
            Value::Array(
                external
                    .iter()
                    .map(|n| Value::String(n.as_str().into()))
                    .collect(),
            ),
        );
    }
    guard.insert(
        "log_blocked".into(),
        Value::Boolean(config.guard.log_blocked),
    );
    guard.insert("protection".into(), value(&config.guard.protection));
    doc.insert("guard".into(), Value::Table(guard));
    let mut ipv6 = Table::new();
    ipv6.insert(
        "restore_forward_policy".into(),
        Value::Boolean(config.ipv6.restore_forward_policy),
    );
    doc.insert("ipv6".into(), Value::Table(ipv6));
    let mut docker = Table::new();
    docker.insert(
        "socket".into(),
        Value::String(config.docker.socket.display().to_string()),
    );
    doc.insert("docker".into(), Value::Table(docker));
    let mut control = Table::new();
    control.insert(
        "socket".into(),
        Value::String(config.control.socket.display().to_string()),
    );
    if let Some(group) = &config.control.group {
        control.insert("group".into(), Value::String(group.clone()));
    }
    doc.insert("control".into(), Value::Table(control));
    let allow = config
        .allow
        .iter()
        .map(|entry| {
            let mut t = Table::new();
            match &entry.target {
                AllowTarget::Ports(range) => {
                    t.insert("port".into(), Value::String(range.to_string()))
                }
                AllowTarget::Container(name) => {
                    t.insert("container".into(), Value::String(name.clone()))
                }
            };
            t.insert("proto".into(), value(&entry.proto));
            if !entry.from.is_empty() {
                t.insert(
                    "from".into(),
                    Value::Array(
                        entry
                            .from
                            .iter()
                            .map(|c| Value::String(c.to_string()))
                            .collect(),
                    ),
                );
            }
            if let Some(comment) = &entry.comment {
                t.insert("comment".into(), Value::String(comment.clone()));
            }
            Value::Table(t)
        })
        .collect();
    doc.insert("allow".into(), Value::Array(allow));
    format!(
        "# Written by portguardd: the last configuration it applied successfully.\n\
         # Used only when the files in /etc/portguard are invalid at start.\n{}",
        toml::to_string(&doc).unwrap_or_default()
    )
}

/// A serializable value (the config's enums) as a TOML value.
fn value<T: serde::Serialize>(v: &T) -> Value {
    Value::try_from(v).unwrap_or(Value::String(String::new()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const FULL: &str = r#"
[guard]
mode = "audit"
scope = "all"
trusted_interfaces = ["wg0", "tun*"]
external_interfaces = ["eth0"]
log_blocked = false
protection = "twin"
[ipv6]
restore_forward_policy = false
[docker]
socket = "/run/other-docker.sock"
[control]
socket = "/run/pg.sock"
group = "adm"
[[allow]]
port = 8086
comment = "Telegraf \"quoted\""
[[allow]]
port = "40000-40100"
proto = "both"
from = ["203.0.113.0/24", "2001:db8::/32"]
[[allow]]
container = "shop/web"
"#;

    fn without_origins(mut config: Config) -> Config {
        for entry in &mut config.allow {
            entry.origin.file = PathBuf::new();
            entry.origin.line = 0;
        }
        config
    }

    #[test]
    fn what_is_kept_reads_back_as_the_same_configuration() {
        for text in ["", FULL] {
            let config = Config::from_toml_str(text).unwrap();
            let dir = tempfile::tempdir().unwrap();
            save(dir.path(), &config).unwrap();
            let back = load(dir.path()).unwrap().unwrap();
            assert_eq!(without_origins(back), without_origins(config), "{text}");
        }
    }

    /// The metrics file may live in a directory another user can write
    /// (node_exporter's textfile directory, any `--metrics-file`): a link
    /// planted at the temporary name must not make the daemon, as root,
    /// truncate and rewrite the file it points to.
    #[test]
    fn a_link_planted_at_the_temporary_name_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "precious").unwrap();
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o600)).unwrap();
        let target = dir.path().join("portguard.prom");
        let planted = dir
            .path()
            .join(format!(".portguard.prom.{}.tmp", std::process::id()));
        std::os::unix::fs::symlink(&victim, &planted).unwrap();
        write_atomically(&target, b"portguard_up 1\n", 0o644).unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
        assert_eq!(
            std::fs::read_to_string(&target).unwrap(),
            "portguard_up 1\n"
        );
        let mode = std::fs::metadata(&victim).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "the victim's mode was changed");
        // A stale temporary file (a crash mid-write) does not stop the next write.
        std::fs::write(&planted, "stale").unwrap();
        write_atomically(&target, b"portguard_up 0\n", 0o644).unwrap();
        assert_eq!(
            std::fs::read_to_string(&target).unwrap(),
            "portguard_up 0\n"
        );
    }

    /// A reload that changes nothing does not write (nor fsync) the file;
    /// a change, or a file that is not as the daemon left it, does.
    #[test]
    fn the_same_configuration_is_not_written_again() {
        use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
        let dir = tempfile::tempdir().unwrap();
        let file = path(dir.path());
        let inode = || std::fs::metadata(&file).unwrap().ino();
        let config = Config::from_toml_str(FULL).unwrap();
        save(dir.path(), &config).unwrap();
        let first = inode();
        save(dir.path(), &config).unwrap();
        assert_eq!(inode(), first, "rewritten though nothing changed");

        let other = Config::from_toml_str("[[allow]]\nport = 9000\n").unwrap();
        save(dir.path(), &other).unwrap();
        assert_ne!(inode(), first);
        assert_eq!(
            without_origins(load(dir.path()).unwrap().unwrap()),
            without_origins(other.clone())
        );

        // Same bytes, but a mode the loader refuses: written again, 0600.
        let second = inode();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        save(dir.path(), &other).unwrap();
        assert_ne!(inode(), second);
        assert_eq!(std::fs::metadata(&file).unwrap().mode() & 0o777, 0o600);
    }

    #[test]
    fn nothing_kept_is_none() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load(dir.path()).unwrap().is_none());
    }
}
