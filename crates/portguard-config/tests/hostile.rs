//! Hostile and careless configuration input, table-driven: each row is an
//! input and the error it must give (with `line:column` where there is a
//! position). Values are loaded through `Config::load` from a real file,
//! so every row also goes through the file checks.
//!
//! File-system rows create files, directories, symlinks, FIFOs and owners
//! (root runs the tests; `nobody` is uid 65534) in a fresh temporary
//! directory each. The property tests over arbitrary input are in
//! `tests/fuzz.rs`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use portguard_config::{AllowTarget, Config, MAX_FILE_BYTES};

const NOBODY: u32 = 65534;

/// A fresh directory the way an administrator's umask leaves it: owned by
/// root, mode 0755.
fn workdir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    chmod(dir.path(), 0o755);
    dir
}

fn write(path: &Path, contents: &[u8]) {
    std::fs::write(path, contents).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644)).unwrap();
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn chown(path: &Path, uid: u32) {
    std::os::unix::fs::lchown(path, Some(uid), None).unwrap();
}

fn mkfifo(path: &Path) {
    nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
}

/// `Config::load(path)` on another thread: a FIFO or a device that makes
/// it block shows as a failure naming the hang, not as a test run that
/// never ends.
fn load_or_hang(path: &Path) -> Result<Config, String> {
    let (tx, rx) = mpsc::channel();
    let owned = path.to_path_buf();
    std::thread::spawn(move || {
        let _ = tx.send(Config::load(&owned).map_err(|e| e.to_string()));
    });
    rx.recv_timeout(Duration::from_secs(20))
        .unwrap_or_else(|_| panic!("Config::load({}) hung", path.display()))
}

// ---------------------------------------------------------------------------
// Values: one file, one mistake.
// ---------------------------------------------------------------------------

/// (file contents, what the error says after `file:`).
const VALUE_ROWS: &[(&[u8], &str)] = &[
    // 4. Bytes that are not UTF-8: the position of the first one.
    (
        b"[guard]\nmode = \"\xc3\xa9\xff\"\n",
        "2:10: invalid UTF-8 (byte 0xff): configuration files must be UTF-8 text",
    ),
    (
        b"\xfe\xff[guard]\n",
        "1:1: invalid UTF-8 (byte 0xfe)",
    ),
    (
        b"# caf\xe9 (latin-1)\n[guard]\n",
        "1:6: invalid UTF-8 (byte 0xe9)",
    ),
    // 5. Every enum key names its allowed values, whatever the type given.
    (
        b"[guard]\nmode = 5\n",
        "2:8: invalid type: integer `5`, expected `enforce` or `audit`",
    ),
    (
        b"[guard]\nmode = \"block\"\n",
        "2:8: unknown variant `block`, expected `enforce` or `audit`",
    ),
    (
        b"[guard]\nmode = { enforce = {} }\n",
        "2:8: invalid type: map, expected `enforce` or `audit`",
    ),
    (
        b"[guard]\nscope = true\n",
        "2:9: invalid type: boolean `true`, expected `containers` or `all`",
    ),
    (
        b"[guard]\nprotection = 1.5\n",
        "2:14: invalid type: floating point `1.5`, expected one of `auto`, `owned-persistent`, `owned-standby`, `twin`",
    ),
    (
        b"[guard]\nprotection = \"locked\"\n",
        "2:14: unknown variant `locked`, expected one of `auto`, `owned-persistent`, `owned-standby`, `twin`",
    ),
    (
        b"[[allow]]\nport = 80\nproto = [\"tcp\"]\n",
        "3:9: invalid type: sequence, expected one of `tcp`, `udp`, `both`",
    ),
    (
        b"[[allow]]\nport = 80\nproto = 6\n",
        "3:9: invalid type: integer `6`, expected one of `tcp`, `udp`, `both`",
    ),
    // A control character in a value is shown escaped, never sent raw to
    // the administrator's terminal.
    (
        b"[guard]\nmode = \"\\u001b]0;pwned\\u0007\"\n",
        "2:8: unknown variant `\\u{1b}]0;pwned\\u{7}`, expected `enforce` or `audit`",
    ),
    // 6. IPv4-mapped IPv6 never matches IPv4 traffic: refused, with the
    // IPv4 form to write instead.
    (
        b"[[allow]]\nport = 80\nfrom = [\"::ffff:203.0.113.0/120\"]\n",
        "3:9: `::ffff:203.0.113.0/120` is an IPv4-mapped IPv6 address, which never matches IPv4 traffic: write `203.0.113.0/24` instead",
    ),
    (
        b"[[allow]]\nport = 80\nfrom = [\"2001:db8::/32\", \"::ffff:198.51.100.7\"]\n",
        "3:26: `::ffff:198.51.100.7` is an IPv4-mapped IPv6 address, which never matches IPv4 traffic: write `198.51.100.7` instead",
    ),
    (
        b"[[allow]]\nport = 80\nfrom = [\"::ffff:0:0/96\"]\n",
        "3:9: `::ffff:0:0/96` is an IPv4-mapped IPv6 address, which never matches IPv4 traffic: write `0.0.0.0/0` instead",
    ),
    (
        b"[[allow]]\nport = 80\nfrom = [\"10.0.0.0/+8\"]\n",
        "3:9: `10.0.0.0/+8` is not an IPv4 or IPv6 address or CIDR network",
    ),
    // 7. Port strings: `N` or `N-M`, ASCII digits only, no leading zero.
    (
        b"[[allow]]\nport = \" 80 - 90 \"\n",
        "2:8: ` 80 - 90 ` is not a port or port range: write \"N\" or \"N-M\" with digits only (no spaces, signs or other characters)",
    ),
    (
        b"[[allow]]\nport = \"+80-+90\"\n",
        "2:8: `+80-+90` is not a port or port range",
    ),
    (b"[[allow]]\nport = \"80 \"\n", "2:8: `80 ` is not a port or port range"),
    (b"[[allow]]\nport = \"-80\"\n", "2:8: `-80` is not a port or port range"),
    (b"[[allow]]\nport = \"80-\"\n", "2:8: `80-` is not a port or port range"),
    (b"[[allow]]\nport = \"1-2-3\"\n", "2:8: `1-2-3` is not a port or port range"),
    (b"[[allow]]\nport = \"\"\n", "2:8: `` is not a port or port range"),
    (
        // Fullwidth digits are digits to Unicode, not to us.
        "[[allow]]\nport = \"\u{ff18}\u{ff10}\"\n".as_bytes(),
        "2:8: `\u{ff18}\u{ff10}` is not a port or port range",
    ),
    (b"[[allow]]\nport = \"0x50\"\n", "2:8: `0x50` is not a port or port range"),
    (b"[[allow]]\nport = \"080\"\n", "2:8: `080` has a leading zero: write 80"),
    (
        b"[[allow]]\nport = \"80-0090\"\n",
        "2:8: `0090` has a leading zero: write 90",
    ),
    (
        b"[[allow]]\nport = \"000\"\n",
        "2:8: port 0 is out of range: expected a number from 1 to 65535",
    ),
    (
        b"[[allow]]\nport = \"99999999999999999999999\"\n",
        "2:8: port 99999999999999999999999 is out of range: expected a number from 1 to 65535",
    ),
    (
        b"[[allow]]\nport = -1\n",
        "2:8: port -1 is out of range: expected a number from 1 to 65535",
    ),
    (
        b"[[allow]]\nport = 80.5\n",
        "2:8: invalid type: floating point `80.5`, expected a port number (1-65535) or a range string",
    ),
    // 8. Interface names.
    (
        b"[guard]\ntrusted_interfaces = [\"abcdefghijklmnop\"]\n",
        "2:23: interface name `abcdefghijklmnop` is longer than 15 bytes",
    ),
    (
        b"[guard]\nexternal_interfaces = [\"eth0\", \"abcdefghijklmnop\"]\n",
        "2:32: interface name `abcdefghijklmnop` is longer than 15 bytes",
    ),
    (
        "[guard]\ntrusted_interfaces = [\"\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\"]\n"
            .as_bytes(),
        // Eight characters, sixteen bytes: bytes are what the kernel counts.
        "2:23: interface name `\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}` is longer than 15 bytes",
    ),
    (
        b"[guard]\ntrusted_interfaces = [\"eth0/1\"]\n",
        "2:23: interface name `eth0/1` contains '/'",
    ),
    (
        b"[guard]\ntrusted_interfaces = [\"eth0:1\"]\n",
        "2:23: interface name `eth0:1` contains ':'",
    ),
    (
        b"[guard]\ntrusted_interfaces = [\"eth\\t0\"]\n",
        "2:23: interface name `eth\\t0` contains '\\t'",
    ),
    (
        b"[guard]\ntrusted_interfaces = [\"wg\\u001b\"]\n",
        "2:23: interface name `wg\\u{1b}` contains '\\u{1b}'",
    ),
    (
        "[guard]\ntrusted_interfaces = [\"wg\u{e9}\"]\n".as_bytes(),
        "2:23: interface name `wg\u{e9}` contains '\u{e9}': interface names are printable ASCII",
    ),
    (
        b"[guard]\ntrusted_interfaces = [\".\"]\n",
        "2:23: `.` is not an interface name",
    ),
    (
        b"[guard]\nexternal_interfaces = [\"..\"]\n",
        "2:24: `..` is not an interface name",
    ),
    (
        b"[guard]\ntrusted_interfaces = [\"*\"]\n",
        "2:23: an interface name must not be empty",
    ),
    (
        b"[guard]\ntrusted_interfaces = [\"w*g\"]\n",
        "2:23: interface name `w*g` contains '*'",
    ),
    (
        b"[guard]\nexternal_interfaces = [\"eth*\"]\n",
        "2:23: external_interfaces takes exact interface names, not the wildcard `eth*`",
    ),
    // Sockets the daemon could not bind or reach.
    (
        b"[control]\nsocket = \"run/pg.sock\"\n",
        "2:10: socket `run/pg.sock` must be an absolute path",
    ),
    (
        b"[docker]\nsocket = \"/run/\\u0000docker.sock\"\n",
        "2:10: a socket path must not contain a NUL character",
    ),
    // Group names /etc/group cannot hold.
    (
        b"[control]\ngroup = \"adm:x\"\n",
        "2:9: `adm:x` is not a group name",
    ),
    // Nesting deep enough to exhaust a recursive parser's stack is an
    // error, not a crash.
    (
        b"[[allow]]\nport = 1\nfrom = [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[",
        "cannot recurse further",
    ),
];

#[test]
fn every_bad_value_is_refused_with_its_position() {
    let mut failures = Vec::new();
    for (contents, expected) in VALUE_ROWS {
        let dir = workdir();
        let path = dir.path().join("portguard.toml");
        write(&path, contents);
        let shown = match Config::load(&path) {
            Ok(_) => {
                failures.push(format!(
                    "{:?}: accepted, expected {expected}",
                    String::from_utf8_lossy(contents)
                ));
                continue;
            }
            Err(e) => e.to_string(),
        };
        let prefix = format!("{}:", path.display());
        let rest = shown.strip_prefix(&prefix).unwrap_or(&shown);
        let positioned = expected.as_bytes().first().is_some_and(u8::is_ascii_digit);
        let matches = if positioned {
            rest.starts_with(expected)
        } else {
            rest.contains(expected)
        };
        if !matches || !shown.starts_with(&prefix) {
            failures.push(format!(
                "{:?}:\n    got      {rest}\n    expected {expected}",
                String::from_utf8_lossy(contents)
            ));
        }
        assert!(
            !shown.chars().any(char::is_control),
            "raw control character in {shown:?}"
        );
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

/// The values the stricter checks still accept, so that they are not
/// stricter than documented.
#[test]
fn good_values_near_the_edges_are_accepted() {
    let dir = workdir();
    let path = dir.path().join("portguard.toml");
    write(
        &path,
        br#"
[guard]
trusted_interfaces = ["abcdefghijklmno", "abcdefghijklmno*", "wg*", "br-1a2b.100", "a@b"]
external_interfaces = ["eth0", "enp3s0f1"]

[control]
group = "portguard-users"

[[allow]]
port = "1-65535"
[[allow]]
port = "65535"
[[allow]]
port = 1
from = ["::/0", "0.0.0.0/0", "64:ff9b::/96", "2001:db8::ffff:0:1"]
"#,
    );
    let config = Config::load(&path).unwrap();
    assert_eq!(config.guard.trusted_interfaces.len(), 5);
    assert_eq!(config.allow.len(), 3);
}

// ---------------------------------------------------------------------------
// Files and directories: who may write them, and what they are.
// ---------------------------------------------------------------------------

struct FsRow {
    what: &'static str,
    /// Prepares `dir` (a fresh, safe directory holding `portguard.toml`
    /// with one valid entry) and returns the path to load.
    setup: fn(&Path) -> PathBuf,
    /// The error, `{dir}` standing for the directory.
    expected: &'static str,
}

const FS_ROWS: &[FsRow] = &[
    // 1. StrictModes.
    FsRow {
        what: "main file writable by others",
        setup: |dir| {
            chmod(&dir.join("portguard.toml"), 0o666);
            dir.join("portguard.toml")
        },
        expected: "{dir}/portguard.toml: refusing a file writable by others (mode 0666) owned by root",
    },
    FsRow {
        what: "main file writable by its group",
        setup: |dir| {
            chmod(&dir.join("portguard.toml"), 0o664);
            dir.join("portguard.toml")
        },
        expected: "{dir}/portguard.toml: refusing a file writable by its group (mode 0664) owned by root",
    },
    FsRow {
        what: "main file owned by nobody",
        setup: |dir| {
            chown(&dir.join("portguard.toml"), NOBODY);
            dir.join("portguard.toml")
        },
        expected: "{dir}/portguard.toml: refusing a file owned by nobody (uid 65534) with mode 0644: it must be owned by root",
    },
    FsRow {
        what: "drop-in owned by nobody opening every port",
        setup: |dir| {
            let drop_in = dir.join("conf.d/50-all.toml");
            write(&drop_in, b"[[allow]]\nport = \"1-65535\"\n");
            chown(&drop_in, NOBODY);
            dir.join("portguard.toml")
        },
        expected: "{dir}/conf.d/50-all.toml: refusing a file owned by nobody (uid 65534) with mode 0644",
    },
    FsRow {
        what: "drop-in writable by others",
        setup: |dir| {
            let drop_in = dir.join("conf.d/x.toml");
            write(&drop_in, b"");
            chmod(&drop_in, 0o646);
            dir.join("portguard.toml")
        },
        expected: "{dir}/conf.d/x.toml: refusing a file writable by others (mode 0646) owned by root",
    },
    FsRow {
        what: "symlinked drop-in whose target is owned by nobody",
        setup: |dir| {
            let target = dir.join("elsewhere.toml.txt");
            write(&target, b"[[allow]]\nport = \"1-65535\"\n");
            chown(&target, NOBODY);
            symlink(&target, dir.join("conf.d/10-link.toml")).unwrap();
            dir.join("portguard.toml")
        },
        expected: "{dir}/conf.d/10-link.toml: refusing a file owned by nobody (uid 65534)",
    },
    FsRow {
        what: "directory of the main file writable by others",
        setup: |dir| {
            chmod(dir, 0o777);
            dir.join("portguard.toml")
        },
        expected: "{dir}: refusing a directory writable by others (mode 0777) owned by root",
    },
    FsRow {
        what: "directory of the main file world-writable even with the sticky bit",
        setup: |dir| {
            chmod(dir, 0o1777);
            dir.join("portguard.toml")
        },
        expected: "{dir}: refusing a directory writable by others (mode 1777) owned by root",
    },
    FsRow {
        what: "directory of the main file owned by nobody",
        setup: |dir| {
            chown(dir, NOBODY);
            dir.join("portguard.toml")
        },
        expected: "{dir}: refusing a directory owned by nobody (uid 65534) with mode 0755",
    },
    FsRow {
        what: "conf.d writable by its group",
        setup: |dir| {
            chmod(&dir.join("conf.d"), 0o775);
            dir.join("portguard.toml")
        },
        expected: "{dir}/conf.d: refusing a directory writable by its group (mode 0775) owned by root",
    },
    FsRow {
        what: "conf.d owned by nobody",
        setup: |dir| {
            chown(&dir.join("conf.d"), NOBODY);
            dir.join("portguard.toml")
        },
        expected: "{dir}/conf.d: refusing a directory owned by nobody (uid 65534) with mode 0755",
    },
    // 2. Drop-ins never vanish silently.
    FsRow {
        what: "dangling drop-in symlink",
        setup: |dir| {
            symlink(dir.join("gone.toml"), dir.join("conf.d/20-narrow.toml")).unwrap();
            dir.join("portguard.toml")
        },
        expected: "{dir}/conf.d/20-narrow.toml: drop-in symlink cannot be followed (No such file or directory (os error 2)): fix or remove it",
    },
    FsRow {
        what: "looping drop-in symlinks",
        setup: |dir| {
            symlink(dir.join("conf.d/b.toml"), dir.join("conf.d/a.toml")).unwrap();
            symlink(dir.join("conf.d/a.toml"), dir.join("conf.d/b.toml")).unwrap();
            dir.join("portguard.toml")
        },
        expected: "{dir}/conf.d/a.toml: drop-in symlink cannot be followed (Too many levels of symbolic links (os error 40))",
    },
    FsRow {
        what: "directory named *.toml in conf.d",
        setup: |dir| {
            std::fs::create_dir(dir.join("conf.d/30-dir.toml")).unwrap();
            dir.join("portguard.toml")
        },
        expected: "{dir}/conf.d/30-dir.toml: refusing a directory named *.toml in conf.d: drop-ins must be regular files",
    },
    FsRow {
        what: "FIFO named *.toml in conf.d",
        setup: |dir| {
            mkfifo(&dir.join("conf.d/40-fifo.toml"));
            dir.join("portguard.toml")
        },
        expected: "{dir}/conf.d/40-fifo.toml: refusing a FIFO named *.toml in conf.d",
    },
    // 3. Only regular files, of bounded size.
    FsRow {
        what: "main file is a FIFO (must not hang)",
        setup: |dir| {
            let fifo = dir.join("fifo.toml");
            mkfifo(&fifo);
            fifo
        },
        expected: "{dir}/fifo.toml: refusing a FIFO: configuration must be a regular file",
    },
    FsRow {
        what: "main file is /dev/zero (must not eat memory)",
        setup: |_| PathBuf::from("/dev/zero"),
        expected: "/dev/zero: refusing a character device: configuration must be a regular file",
    },
    FsRow {
        what: "main file is a symlink to /dev/zero",
        setup: |dir| {
            symlink("/dev/zero", dir.join("zero.toml")).unwrap();
            dir.join("zero.toml")
        },
        expected: "{dir}/zero.toml: refusing a character device",
    },
    FsRow {
        what: "main file is a directory",
        setup: |dir| dir.join("conf.d"),
        expected: "{dir}/conf.d: refusing a directory: configuration must be a regular file",
    },
    FsRow {
        what: "main file one byte over the cap",
        setup: |dir| {
            let big = dir.join("big.toml");
            write(&big, &vec![b'#'; MAX_FILE_BYTES as usize + 1]);
            big
        },
        expected: "{dir}/big.toml: refusing a file of 4194305 bytes: configuration files are limited to 4 MiB",
    },
    FsRow {
        what: "sparse 1 TiB drop-in (refused before reading)",
        setup: |dir| {
            let sparse = dir.join("conf.d/99-sparse.toml");
            write(&sparse, b"");
            std::fs::OpenOptions::new()
                .write(true)
                .open(&sparse)
                .unwrap()
                .set_len(1 << 40)
                .unwrap();
            dir.join("portguard.toml")
        },
        expected: "{dir}/conf.d/99-sparse.toml: refusing a file of 1099511627776 bytes",
    },
];

#[test]
fn unsafe_files_and_directories_are_refused_naming_path_owner_and_mode() {
    let mut failures = Vec::new();
    for row in FS_ROWS {
        let dir = workdir();
        write(
            &dir.path().join("portguard.toml"),
            b"[[allow]]\nport = 80\n",
        );
        std::fs::create_dir(dir.path().join("conf.d")).unwrap();
        chmod(&dir.path().join("conf.d"), 0o755);
        let path = (row.setup)(dir.path());
        let expected = row
            .expected
            .replace("{dir}", &dir.path().display().to_string());
        match load_or_hang(&path) {
            Ok(_) => failures.push(format!("{}: accepted", row.what)),
            Err(shown) if !shown.starts_with(&expected) => failures.push(format!(
                "{}:\n    got      {shown}\n    expected {expected}",
                row.what
            )),
            Err(_) => {}
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

/// What the daemon and e2e tests write (default umask: files 0644, the
/// directory 0700 or 0755, all root's), symlinked drop-ins to safe files
/// and a file of exactly the cap all load.
#[test]
fn safe_files_load() {
    let dir = workdir();
    let main = dir.path().join("portguard.toml");
    write(&main, b"[[allow]]\nport = 80\n");
    std::fs::create_dir(dir.path().join("conf.d")).unwrap();
    let shared = dir.path().join("shared.toml.txt");
    write(&shared, b"[[allow]]\nport = 443\n");
    symlink(&shared, dir.path().join("conf.d/10-shared.toml")).unwrap();
    // Not *.toml: not a drop-in, whatever it is.
    mkfifo(&dir.path().join("conf.d/notes.fifo"));
    symlink("/nonexistent", dir.path().join("conf.d/old.toml.bak")).unwrap();
    let config = load_or_hang(&main).unwrap();
    assert_eq!(config.allow.len(), 2);
    chmod(dir.path(), 0o755);
    assert_eq!(load_or_hang(&main).unwrap().allow.len(), 2);

    let mut at_cap = b"[[allow]]\nport = 22\n".to_vec();
    at_cap.resize(MAX_FILE_BYTES as usize - 1, b'#');
    at_cap.push(b'\n');
    write(&main, &at_cap);
    assert_eq!(load_or_hang(&main).unwrap().allow.len(), 2);
}

/// A relative path (`guardctl check --config portguard.toml`) checks the
/// current directory as the directory of the main file.
#[test]
fn relative_main_file_checks_the_current_directory() {
    let dir = workdir();
    write(&dir.path().join("portguard.toml"), b"");
    chmod(dir.path(), 0o777);
    std::env::set_current_dir(dir.path()).unwrap();
    let err = Config::load(Path::new("portguard.toml")).unwrap_err();
    assert!(
        err.to_string()
            .starts_with(".: refusing a directory writable by others (mode 0777)"),
        "{err}"
    );
}

// ---------------------------------------------------------------------------
// 10. Size: many entries parse (speed is measured by `cargo bench`).
// ---------------------------------------------------------------------------

#[test]
fn ten_thousand_entries_parse_with_their_lines() {
    let mut text = String::from("# many entries\n");
    for i in 0..10_000u32 {
        text.push_str(&format!(
            "[[allow]]\nport = {}\nfrom = [\"203.0.113.0/24\"]\n",
            1 + i
        ));
    }
    let dir = workdir();
    let path = dir.path().join("portguard.toml");
    write(&path, text.as_bytes());
    let config = Config::load(&path).unwrap();
    assert_eq!(config.allow.len(), 10_000);
    for (i, entry) in config.allow.iter().enumerate() {
        assert_eq!(entry.origin.line, 2 + 3 * i, "entry {i}");
        assert!(matches!(entry.target, AllowTarget::Ports(r) if usize::from(r.start()) == 1 + i));
    }
}
