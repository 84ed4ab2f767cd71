//! Reading configuration files an attacker may have prepared: only regular
//! files of bounded size, only from places nobody but root (or the user
//! portguard runs as) can write, like sshd's `StrictModes`.
//!
//! Files are checked on the open descriptor (`fstat`), so the file checked
//! is the file read. Directories are checked by path: the directory holding
//! the main file and `conf.d/`, no further up (a configuration kept under
//! `/tmp/x/` is fine as long as `x` itself is safe).

use std::fs::Metadata;
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::OFlag;
use nix::unistd::{Uid, User};

use crate::ConfigError;
use crate::error::LineIndex;

/// Largest configuration file read, main file or drop-in. 10,000 allow
/// entries take about half a megabyte.
pub const MAX_FILE_BYTES: u64 = 4 * 1024 * 1024;

/// Who may own and write configuration: root, and the effective user of
/// this process (portguardd's user, or whoever runs `guardctl check`).
#[derive(Clone, Copy)]
pub(crate) struct Trust {
    euid: Uid,
}

impl Trust {
    pub(crate) fn of_this_process() -> Self {
        Trust {
            euid: nix::unistd::geteuid(),
        }
    }

    /// Refuses `meta` (of `path`, a file or a directory) when anybody but a
    /// trusted owner could change what portguard reads.
    fn check_owner_and_mode(&self, path: &Path, meta: &Metadata) -> Result<(), ConfigError> {
        let what = if meta.is_dir() { "directory" } else { "file" };
        let owner = Uid::from_raw(meta.uid());
        let mode = meta.mode() & 0o7777;
        let refuse = |message: String| ConfigError::Refused {
            path: path.to_path_buf(),
            message,
        };
        if !owner.is_root() && owner != self.euid {
            let allowed = if self.euid.is_root() {
                "root".to_string()
            } else {
                format!("root or {} (the user reading it)", user_name(self.euid))
            };
            return Err(refuse(format!(
                "refusing a {what} owned by {} with mode {mode:04o}: it must be owned by {allowed}",
                user_name(owner)
            )));
        }
        let by = if mode & 0o002 != 0 {
            "others"
        } else if mode & 0o020 != 0 {
            "its group"
        } else {
            return Ok(());
        };
        Err(refuse(format!(
            "refusing a {what} writable by {by} (mode {mode:04o}) owned by {}: only its owner may \
             write it (chmod go-w)",
            user_name(owner)
        )))
    }

    /// Checks a directory configuration is read from. A missing directory
    /// is left for the open that follows to report.
    pub(crate) fn check_dir(&self, dir: &Path) -> Result<(), ConfigError> {
        let meta = match std::fs::metadata(dir) {
            Ok(meta) => meta,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(source) => {
                return Err(ConfigError::Io {
                    path: dir.to_path_buf(),
                    source,
                });
            }
        };
        self.check_owner_and_mode(dir, &meta)
    }

    /// Reads one configuration file: a regular file, trusted owner, not
    /// writable by group or others, at most [`MAX_FILE_BYTES`], UTF-8.
    pub(crate) fn read(&self, path: &Path) -> Result<String, ConfigError> {
        let io = |source| ConfigError::Io {
            path: path.to_path_buf(),
            source,
        };
        let refuse = |message: String| ConfigError::Refused {
            path: path.to_path_buf(),
            message,
        };
        // O_NONBLOCK: opening a FIFO must not wait for a writer. O_NOCTTY:
        // a terminal device never becomes the controlling terminal. Both
        // are refused right after, by fstat.
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags((OFlag::O_NONBLOCK | OFlag::O_NOCTTY).bits())
            .open(path)
            .map_err(io)?;
        let meta = file.metadata().map_err(io)?;
        if !meta.is_file() {
            return Err(refuse(format!(
                "refusing {}: configuration must be a regular file",
                kind_of(&meta)
            )));
        }
        self.check_owner_and_mode(path, &meta)?;
        if meta.len() > MAX_FILE_BYTES {
            return Err(refuse(too_large(Some(meta.len()))));
        }
        // Read one byte more than allowed, so that a file that grew since
        // fstat is still refused and never read whole.
        let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
        file.take(MAX_FILE_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(io)?;
        if bytes.len() as u64 > MAX_FILE_BYTES {
            return Err(refuse(too_large(None)));
        }
        utf8(path, bytes)
    }
}

/// `len` is the size fstat gave, or `None` when the file grew past the cap
/// while being read.
fn too_large(len: Option<u64>) -> String {
    let size = match len {
        Some(len) => format!("{len} bytes"),
        None => format!("more than {MAX_FILE_BYTES} bytes"),
    };
    format!(
        "refusing a file of {size}: configuration files are limited to {} MiB",
        MAX_FILE_BYTES / (1024 * 1024)
    )
}

/// The text of `bytes`, or an error at the line and column of the first
/// byte that is not UTF-8.
pub(crate) fn utf8(path: &Path, bytes: Vec<u8>) -> Result<String, ConfigError> {
    String::from_utf8(bytes).map_err(|e| {
        let valid_up_to = e.utf8_error().valid_up_to();
        let bytes = e.as_bytes();
        let bad = bytes.get(valid_up_to).copied().unwrap_or_default();
        // The prefix is valid UTF-8 by definition.
        let valid = std::str::from_utf8(&bytes[..valid_up_to]).unwrap_or_default();
        let (line, column) = LineIndex::new(valid).line_column(valid, valid_up_to);
        ConfigError::Invalid {
            path: path.to_path_buf(),
            line,
            column,
            message: format!(
                "invalid UTF-8 (byte 0x{bad:02x}): configuration files must be UTF-8 text"
            ),
        }
    })
}

fn kind_of(meta: &Metadata) -> &'static str {
    let kind = meta.file_type();
    if kind.is_dir() {
        "a directory"
    } else if kind.is_fifo() {
        "a FIFO"
    } else if kind.is_socket() {
        "a socket"
    } else if kind.is_char_device() {
        "a character device"
    } else if kind.is_block_device() {
        "a block device"
    } else {
        "something that is not a regular file"
    }
}

/// `root`, `nobody (uid 65534)`, or `uid 1234` when no such user exists.
fn user_name(uid: Uid) -> String {
    match User::from_uid(uid) {
        Ok(Some(user)) if uid.is_root() => user.name,
        Ok(Some(user)) => format!("{} (uid {uid})", user.name),
        _ => format!("uid {uid}"),
    }
}

/// The `*.toml` entries of `conf.d`, in the order they apply. Every entry
/// named `*.toml` must be a regular file or a symlink to one: a dangling or
/// looping symlink, a directory or a FIFO is an error, never skipped, so a
/// drop-in cannot vanish without a word.
pub(crate) fn drop_in_files(conf_d: &Path) -> Result<Vec<PathBuf>, ConfigError> {
    let entries = match std::fs::read_dir(conf_d) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(ConfigError::Io {
                path: conf_d.to_path_buf(),
                source,
            });
        }
    };
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| ConfigError::Io {
            path: conf_d.to_path_buf(),
            source,
        })?;
        let path = entry.path();
        if path.extension().is_none_or(|e| e != "toml") {
            continue;
        }
        // Follows symlinks: the kind of what would be read.
        let meta = std::fs::metadata(&path).map_err(|e| ConfigError::Refused {
            path: path.clone(),
            message: if path.is_symlink() {
                format!(
                    "drop-in symlink cannot be followed ({e}): fix or remove it; \
                     a drop-in is never skipped"
                )
            } else {
                format!("drop-in cannot be read ({e})")
            },
        })?;
        if !meta.is_file() {
            return Err(ConfigError::Refused {
                path,
                message: format!(
                    "refusing {} named *.toml in conf.d: drop-ins must be regular files",
                    kind_of(&meta)
                ),
            });
        }
        files.push(path);
    }
    files.sort();
    Ok(files)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use nix::unistd::Uid;

    /// A daemon running as a dedicated user trusts its own files and
    /// root's, nobody else's.
    #[test]
    fn a_non_root_reader_trusts_root_and_itself_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pg.toml");
        std::fs::write(&path, "").unwrap();
        let reader = super::Trust {
            euid: Uid::from_raw(65534),
        };
        assert!(reader.read(&path).is_ok(), "root's file");
        std::os::unix::fs::chown(&path, Some(65534), None).unwrap();
        assert!(reader.read(&path).is_ok(), "its own file");
        std::os::unix::fs::chown(&path, Some(4321), None).unwrap();
        let err = reader.read(&path).unwrap_err().to_string();
        assert!(
            err.ends_with(
                "refusing a file owned by uid 4321 with mode 0644: it must be owned by root or \
                 nobody (uid 65534) (the user reading it)"
            ),
            "{err}"
        );
    }

    #[test]
    fn first_bad_byte_has_its_line_and_column() {
        let path = std::path::Path::new("x.toml");
        let err = super::utf8(path, b"a = 1\nb = \"\xc3\xa9\xff\"\n".to_vec()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "x.toml:2:7: invalid UTF-8 (byte 0xff): configuration files must be UTF-8 text"
        );
        let err = super::utf8(path, b"\xfe".to_vec()).unwrap_err();
        assert!(err.to_string().starts_with("x.toml:1:1: "), "{err}");
    }
}
