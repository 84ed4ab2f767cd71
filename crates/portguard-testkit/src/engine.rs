//! Which Docker Engine the tests run against: `PORTGUARD_ENGINE=20|26|28|29`.
//!
//! 20 (or unset) is the machine's own Docker 20.10. The others are unpacked
//! once by `../shared/engines/prepare.sh NN DIR` into a cache
//! (`target/engines/NN`, or `$PORTGUARD_ENGINES_DIR/NN`) and reused by every
//! test and every later run; their `usr/sbin` and `usr/bin` go first on the
//! PATH of the dockerd the tests start and of the docker CLI they call (the
//! machine's 20.10 CLI speaks API 1.41, Docker 29 needs 1.44).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The engine under test.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Engine {
    /// 20, 26, 28 or 29.
    pub major: u8,
    /// Where the unpacked engine lives; `None` for the installed one.
    pub dir: Option<PathBuf>,
}

/// The engine `PORTGUARD_ENGINE` selects, unpacked on first use.
pub fn engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(|| {
        let wanted = std::env::var("PORTGUARD_ENGINE").unwrap_or_default();
        let major = match wanted.trim() {
            "" | "20" => {
                return Engine {
                    major: 20,
                    dir: None,
                };
            }
            "26" => 26,
            "28" => 28,
            "29" => 29,
            other => panic!("PORTGUARD_ENGINE={other}: expected 20, 26, 28 or 29"),
        };
        Engine {
            major,
            dir: Some(unpacked(major)),
        }
    })
}

impl Engine {
    /// Docker 29's nftables firewall backend: tables `ip docker-bridges`
    /// and `ip6 docker-bridges`, no iptables rules, no DOCKER-USER chain.
    pub fn nftables_backend(&self) -> bool {
        self.major >= 29
    }

    /// PATH for dockerd and the docker CLI: the engine's binaries first.
    pub fn path_env(&self) -> OsString {
        let system = std::env::var_os("PATH").unwrap_or_else(|| "/usr/sbin:/usr/bin".into());
        match &self.dir {
            None => system,
            Some(dir) => {
                let mut paths = vec![dir.join("usr/sbin"), dir.join("usr/bin")];
                paths.extend(std::env::split_paths(&system));
                std::env::join_paths(paths).expect("PATH entries without ':'")
            }
        }
    }

    /// Flags dockerd needs on this machine beyond the roots and socket.
    pub fn dockerd_args(&self) -> &'static [&'static str] {
        if self.nftables_backend() {
            // Debian 12's runc 1.1.5 has no time namespaces; containers
            // fail to start without the first flag.
            &[
                "--feature",
                "time-namespaces=false",
                "--firewall-backend=nftables",
            ]
        } else {
            &[]
        }
    }

    /// Sysctls to set in dockerd's namespace before it starts: the nftables
    /// backend does not turn forwarding on and refuses to start without it.
    pub fn namespace_sysctls(&self) -> &'static str {
        if self.nftables_backend() {
            "sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1"
        } else {
            "true"
        }
    }
}

/// The directory engines are cached in: `$PORTGUARD_ENGINES_DIR`, else
/// `engines/` in the target directory of the running test binary.
fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("PORTGUARD_ENGINES_DIR") {
        return PathBuf::from(dir);
    }
    // target/<profile>/deps/<test binary>
    let exe = std::env::current_exe().expect("current_exe");
    exe.ancestors()
        .nth(3)
        .expect("test binary inside target/<profile>/deps")
        .join("engines")
}

/// `../shared/engines/prepare.sh` beside the repository (as in CI), or
/// `$PORTGUARD_ENGINES_PREPARE`.
fn prepare_script() -> PathBuf {
    if let Some(script) = std::env::var_os("PORTGUARD_ENGINES_PREPARE") {
        return PathBuf::from(script);
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/engines/prepare.sh")
}

/// Unpacks engine `major` into the cache unless it is there already. An
/// flock serialises test processes; the engine is unpacked into a scratch
/// directory and renamed, so a half-unpacked engine is never used.
fn unpacked(major: u8) -> PathBuf {
    let cache = cache_dir();
    std::fs::create_dir_all(&cache).expect("engine cache directory");
    let dir = cache.join(major.to_string());
    let script = format!(
        "[ -x \"$dir/usr/sbin/dockerd\" ] && exit 0; rm -rf \"$dir.tmp\"; \
         \"$prepare\" {major} \"$dir.tmp\" >\"$dir.log\" 2>&1 || {{ cat \"$dir.log\" >&2; exit 1; }}; \
         mv \"$dir.tmp\" \"$dir\""
    );
    let out = Command::new("flock")
        .arg(cache.join(format!("{major}.lock")))
        .args(["sh", "-c", &script])
        .env("dir", &dir)
        .env("prepare", prepare_script())
        .output()
        .expect("flock (util-linux)");
    assert!(
        out.status.success(),
        "unpacking Docker engine {major} with {} failed: {}",
        prepare_script().display(),
        String::from_utf8_lossy(&out.stderr)
    );
    dir
}
