//! portguard's configuration: the schema of `/etc/portguard/portguard.toml`
//! and its `conf.d/*.toml` drop-ins, how they are merged, and errors that
//! name `file:line:column`.
//!
//! Every field below carries a TOML example that is compiled and run as a
//! doctest, so this reference cannot drift from what the parser accepts.
//!
//! ```
//! let config = portguard_config::Config::from_toml_str(r#"
//! [guard]
//! mode = "enforce"
//!
//! [[allow]]
//! port = 8086
//! comment = "Telegraf"
//! "#)?;
//! assert_eq!(config.allow.len(), 1);
//! # Ok::<(), portguard_config::ConfigError>(())
//! ```

/// `Deserialize` for an enum written as one of a fixed set of strings;
/// every other value is an error that names the allowed ones (serde's
/// derive would say "wanted string or table" for `mode = 5`).
macro_rules! string_enum {
    ($ty:ident { $($name:literal => $variant:expr),+ $(,)? }) => {
        impl<'de> serde::Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                const NAMES: &[&str] = &[$($name),+];
                const VARIANTS: &[$ty] = &[$($variant),+];
                let index = values::deserialize_one_of(deserializer, NAMES)?;
                Ok(VARIANTS[index])
            }
        }
    };
}

mod error;
mod file;
mod printable;
pub use printable::printable;
mod read;
mod suggest;
pub use suggest::nearest;
mod values;

use std::path::{Path, PathBuf};

use serde::Serialize;

pub use error::ConfigError;
pub use read::MAX_FILE_BYTES;
pub use values::{Cidr, IfName, PortRange};

/// Default path of the main configuration file.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/portguard/portguard.toml";
/// Default path of the control socket.
pub const DEFAULT_CONTROL_SOCKET: &str = "/run/portguard/control.sock";
/// Default path of Docker's API socket.
pub const DEFAULT_DOCKER_SOCKET: &str = "/var/run/docker.sock";

/// The whole, merged configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Config {
    /// `[guard]`: how the guard judges traffic.
    pub guard: GuardConfig,
    /// `[ipv6]`: the IPv6 FORWARD policy Docker flips to drop.
    pub ipv6: Ipv6Config,
    /// `[docker]`: where to reach the Docker Engine.
    pub docker: DockerConfig,
    /// `[control]`: the socket `guardctl` talks to.
    pub control: ControlConfig,
    /// `[[allow]]`: the allowlist. Entries from drop-ins are appended in
    /// file-name order. An empty allowlist is valid and closes every
    /// published port.
    ///
    /// ```
    /// let config = portguard_config::Config::from_toml_str("")?;
    /// assert!(config.allow.is_empty());
    /// # Ok::<(), portguard_config::ConfigError>(())
    /// ```
    pub allow: Vec<AllowEntry>,
}

/// `[guard]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GuardConfig {
    /// `"enforce"` (default) drops what the allowlist does not admit;
    /// `"audit"` only counts and logs it.
    ///
    /// ```
    /// use portguard_config::{Config, Mode};
    /// let config = Config::from_toml_str("[guard]\nmode = \"audit\"")?;
    /// assert_eq!(config.guard.mode, Mode::Audit);
    /// # Ok::<(), portguard_config::ConfigError>(())
    /// ```
    pub mode: Mode,
    /// `"containers"` (default) judges only forwarded traffic headed into a
    /// Docker network; `"all"` judges every new forwarded connection from
    /// an untrusted interface (the host as router is then covered too).
    ///
    /// ```
    /// use portguard_config::{Config, Scope};
    /// let config = Config::from_toml_str("[guard]\nscope = \"all\"")?;
    /// assert_eq!(config.guard.scope, Scope::All);
    /// # Ok::<(), portguard_config::ConfigError>(())
    /// ```
    pub scope: Scope,
    /// Interfaces whose traffic is never filtered (VPNs, management LANs).
    /// A trailing `*` matches a prefix.
    ///
    /// ```
    /// let config = portguard_config::Config::from_toml_str(
    ///     "[guard]\ntrusted_interfaces = [\"wg0\", \"tun*\"]")?;
    /// assert_eq!(config.guard.trusted_interfaces.len(), 2);
    /// # Ok::<(), portguard_config::ConfigError>(())
    /// ```
    pub trusted_interfaces: Vec<IfName>,
    /// If set, only these interfaces are untrusted. If not set (default),
    /// every interface but `lo`, Docker's bridges and the trusted ones is.
    ///
    /// ```
    /// let config = portguard_config::Config::from_toml_str(
    ///     "[guard]\nexternal_interfaces = [\"eth0\"]")?;
    /// assert_eq!(config.guard.external_interfaces.unwrap()[0].as_str(), "eth0");
    /// # Ok::<(), portguard_config::ConfigError>(())
    /// ```
    pub external_interfaces: Option<Vec<IfName>>,
    /// Write a rate-limited kernel log line for each blocked attempt
    /// (default `true`).
    ///
    /// ```
    /// let config = portguard_config::Config::from_toml_str("[guard]\nlog_blocked = false")?;
    /// assert!(!config.guard.log_blocked);
    /// # Ok::<(), portguard_config::ConfigError>(())
    /// ```
    pub log_blocked: bool,
    /// How the kernel protects the guard's table from everybody else
    /// (default `"auto"`: the strongest tier this kernel supports).
    ///
    /// * `"owned-persistent"` (Linux 6.9+): the table is owned by
    ///   portguardd and persists when it exits; the kernel refuses
    ///   `nft delete table`, foreign rules and elements, and skips it in
    ///   `nft flush ruleset`, so there is nothing to restore.
    /// * `"owned-standby"` (Linux 5.12+): the owned table plus an unowned
    ///   standby copy (`inet portguard_standby`), because an owned table
    ///   without the persist flag dies with the daemon.
    /// * `"twin"` (any kernel): two unowned copies, so that deleting one
    ///   leaves the other in force while the daemon restores it.
    ///
    /// A tier the kernel cannot provide is logged as an error at start,
    /// and the strongest tier the kernel has guards instead; a weaker one
    /// than `auto` would pick may be chosen. A reload cannot change it.
    ///
    /// ```
    /// use portguard_config::{Config, Protection};
    /// let config = Config::from_toml_str("[guard]\nprotection = \"twin\"")?;
    /// assert_eq!(config.guard.protection, Protection::Twin);
    /// assert_eq!(Config::from_toml_str("")?.guard.protection, Protection::Auto);
    /// # Ok::<(), portguard_config::ConfigError>(())
    /// ```
    pub protection: Protection,
}

/// `[guard] protection`: a protection tier, or `"auto"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Protection {
    #[default]
    Auto,
    OwnedPersistent,
    OwnedStandby,
    Twin,
}

string_enum!(Protection { "auto" => Protection::Auto, "owned-persistent" => Protection::OwnedPersistent, "owned-standby" => Protection::OwnedStandby, "twin" => Protection::Twin });

/// `[ipv6]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Ipv6Config {
    /// Set the `ip6 filter FORWARD` policy back to accept when Docker sets
    /// it to drop (default `true`). A drop anybody else set (ufw's routed
    /// policy, firewalld, an administrator), or one already in place when
    /// the daemon starts, is left alone; `guardctl status` says who set it.
    ///
    /// ```
    /// let config = portguard_config::Config::from_toml_str(
    ///     "[ipv6]\nrestore_forward_policy = false")?;
    /// assert!(!config.ipv6.restore_forward_policy);
    /// # Ok::<(), portguard_config::ConfigError>(())
    /// ```
    pub restore_forward_policy: bool,
}

/// `[docker]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DockerConfig {
    /// Path of the Docker Engine API socket (default
    /// `/var/run/docker.sock`); a `unix://` prefix is accepted.
    ///
    /// ```
    /// let config = portguard_config::Config::from_toml_str(
    ///     "[docker]\nsocket = \"unix:///run/docker.sock\"")?;
    /// assert_eq!(config.docker.socket, std::path::Path::new("/run/docker.sock"));
    /// # Ok::<(), portguard_config::ConfigError>(())
    /// ```
    pub socket: PathBuf,
}

/// `[control]`
#[derive(Debug, Clone, Eq, Serialize)]
pub struct ControlConfig {
    /// Path of the control socket `guardctl` talks to (default
    /// `/run/portguard/control.sock`).
    ///
    /// ```
    /// let config = portguard_config::Config::from_toml_str(
    ///     "[control]\nsocket = \"/run/pg.sock\"")?;
    /// assert_eq!(config.control.socket, std::path::Path::new("/run/pg.sock"));
    /// # Ok::<(), portguard_config::ConfigError>(())
    /// ```
    pub socket: PathBuf,
    /// A group whose members may use the control socket (mode 0660); by
    /// default only root may (mode 0600).
    ///
    /// ```
    /// let config = portguard_config::Config::from_toml_str(
    ///     "[control]\ngroup = \"adm\"")?;
    /// assert_eq!(config.control.group.as_deref(), Some("adm"));
    /// # Ok::<(), portguard_config::ConfigError>(())
    /// ```
    pub group: Option<String>,
    /// Where `group` was set, so that `guardctl check` can point at it when
    /// no such group exists.
    #[serde(skip)]
    pub group_position: Option<Position>,
}

/// `group_position` says where the group was written, not what the
/// configuration is: moving the line does not make it a different one
/// (a reload compares sections to see what changed).
impl PartialEq for ControlConfig {
    fn eq(&self, other: &Self) -> bool {
        self.socket == other.socket && self.group == other.group
    }
}

/// `"enforce"` or `"audit"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    #[default]
    Enforce,
    Audit,
}

string_enum!(Mode { "enforce" => Mode::Enforce, "audit" => Mode::Audit });

/// `"containers"` or `"all"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    #[default]
    Containers,
    All,
}

string_enum!(Scope { "containers" => Scope::Containers, "all" => Scope::All });

/// `"tcp"`, `"udp"` or `"both"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    #[default]
    Tcp,
    Udp,
    Both,
}

string_enum!(Proto { "tcp" => Proto::Tcp, "udp" => Proto::Udp, "both" => Proto::Both });

impl Proto {
    pub fn covers_tcp(self) -> bool {
        matches!(self, Proto::Tcp | Proto::Both)
    }

    pub fn covers_udp(self) -> bool {
        matches!(self, Proto::Udp | Proto::Both)
    }
}

/// One `[[allow]]` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AllowEntry {
    /// What the entry opens: `port = 8086` / `port = "40000-40100"` (the
    /// host port as published, before DNAT), or `container = "web"` (every
    /// port that container publishes; a container name, a compose
    /// `"project/service"` or a Swarm service, whose labels count only if
    /// the container's creator set them, not its image). Exactly one of
    /// the two.
    ///
    /// ```
    /// use portguard_config::{AllowTarget, Config};
    /// let config = Config::from_toml_str(r#"
    /// [[allow]]
    /// port = "40000-40100"
    /// [[allow]]
    /// container = "shop/web"
    /// "#)?;
    /// assert!(matches!(config.allow[0].target, AllowTarget::Ports(r) if r.end() == 40100));
    /// assert!(matches!(&config.allow[1].target, AllowTarget::Container(c) if c == "shop/web"));
    /// # Ok::<(), portguard_config::ConfigError>(())
    /// ```
    pub target: AllowTarget,
    /// `"tcp"` (default for `port`), `"udp"` or `"both"` (default for
    /// `container`).
    ///
    /// ```
    /// use portguard_config::{Config, Proto};
    /// let config = Config::from_toml_str("[[allow]]\nport = 53\nproto = \"both\"")?;
    /// assert_eq!(config.allow[0].proto, Proto::Both);
    /// # Ok::<(), portguard_config::ConfigError>(())
    /// ```
    pub proto: Proto,
    /// Source networks allowed to connect (IPv4 and IPv6 CIDRs). Absent
    /// means any source.
    ///
    /// ```
    /// let config = portguard_config::Config::from_toml_str(r#"
    /// [[allow]]
    /// port = 8086
    /// from = ["203.0.113.0/24", "2001:db8::/32"]
    /// "#)?;
    /// assert_eq!(config.allow[0].from.len(), 2);
    /// # Ok::<(), portguard_config::ConfigError>(())
    /// ```
    pub from: Vec<Cidr>,
    /// Free text shown by `guardctl ports` and `explain`.
    ///
    /// ```
    /// let config = portguard_config::Config::from_toml_str(
    ///     "[[allow]]\nport = 8086\ncomment = \"Telegraf\"")?;
    /// assert_eq!(config.allow[0].comment.as_deref(), Some("Telegraf"));
    /// # Ok::<(), portguard_config::ConfigError>(())
    /// ```
    pub comment: Option<String>,
    /// Where the entry was written, for reports.
    pub origin: Origin,
}

impl AllowEntry {
    /// Whether a connection from `source` (if known) passes the `from` list.
    pub fn admits_source(&self, source: Option<std::net::IpAddr>) -> bool {
        match source {
            _ if self.from.is_empty() => true,
            Some(ip) => self.from.iter().any(|c| c.contains(ip)),
            None => false,
        }
    }

    /// A short human description: `port 8086/tcp (Telegraf) at file:line`.
    pub fn describe(&self) -> String {
        let what = match &self.target {
            AllowTarget::Ports(range) => format!("port {range}/{}", proto_name(self.proto)),
            AllowTarget::Container(name) => format!("container {name}"),
        };
        let mut text = what;
        if !self.from.is_empty() {
            let from: Vec<String> = self.from.iter().map(|c| c.to_string()).collect();
            text.push_str(&format!(" from {}", from.join(", ")));
        }
        if let Some(comment) = &self.comment {
            text.push_str(&format!(" ({comment})"));
        }
        text.push_str(&format!(" at {}", self.origin));
        text
    }
}

fn proto_name(proto: Proto) -> &'static str {
    match proto {
        Proto::Tcp => "tcp",
        Proto::Udp => "udp",
        Proto::Both => "tcp+udp",
    }
}

/// What an allow entry opens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AllowTarget {
    Ports(PortRange),
    Container(String),
}

/// The file and line an entry came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Origin {
    pub file: PathBuf,
    pub line: usize,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.file.display(), self.line)
    }
}

/// Where a value was written: file, line and column (1-based).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
}

impl Position {
    /// An error about the value written here: `file:line:column: message`.
    pub fn error(&self, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            path: self.file.clone(),
            line: self.line,
            column: self.column,
            message: message.into(),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            guard: GuardConfig {
                mode: Mode::Enforce,
                scope: Scope::Containers,
                trusted_interfaces: Vec::new(),
                external_interfaces: None,
                log_blocked: true,
                protection: Protection::Auto,
            },
            ipv6: Ipv6Config {
                restore_forward_policy: true,
            },
            docker: DockerConfig {
                socket: PathBuf::from(DEFAULT_DOCKER_SOCKET),
            },
            control: ControlConfig {
                socket: PathBuf::from(DEFAULT_CONTROL_SOCKET),
                group: None,
                group_position: None,
            },
            allow: Vec::new(),
        }
    }
}

impl Config {
    /// Loads the main file at `path` and then every `conf.d/*.toml` beside
    /// it in file-name order. Later files override single values of
    /// earlier ones (`[guard] mode`, lists such as `trusted_interfaces` are
    /// replaced whole); `[[allow]]` entries are appended.
    ///
    /// Like sshd's `StrictModes`, the main file, every drop-in, the
    /// directory holding the main file and `conf.d/` must be owned by root
    /// or by the user this process runs as, and writable by nobody else;
    /// files must be regular files of at most [`MAX_FILE_BYTES`] and UTF-8.
    ///
    /// Every mistake in every file is reported at once
    /// ([`ConfigError::Several`]), file by file and within a file in line
    /// order, except that nothing is read from a directory that is refused.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let trust = read::Trust::of_this_process();
        // A directory others may write is not read from at all (not even
        // to report mistakes: they could have linked any root-only file in).
        trust.check_dir(config_dir(path))?;
        let mut config = Config::default();
        let mut errors = Vec::new();
        let mut apply = |file: &Path, errors: &mut Vec<ConfigError>| match trust.read(file) {
            Ok(text) => errors.extend(file::apply(&mut config, &text, file)),
            Err(e) => errors.push(e),
        };
        apply(path, &mut errors);
        let conf_d = conf_d(path);
        match trust
            .check_dir(&conf_d)
            .and_then(|()| read::drop_in_files(&conf_d))
        {
            Ok(files) => {
                for file in files {
                    apply(&file, &mut errors);
                }
            }
            Err(e) => errors.push(e),
        }
        ConfigError::from_list(errors)?;
        Ok(config)
    }

    /// Parses one document as if it were the whole configuration (no
    /// drop-ins). Errors name the file as `<string>`.
    pub fn from_toml_str(text: &str) -> Result<Config, ConfigError> {
        let mut config = Config::default();
        ConfigError::from_list(file::apply(&mut config, text, Path::new("<string>")))?;
        Ok(config)
    }
}

/// The drop-in files for the main file at `path`, in the order they apply.
/// An entry named `*.toml` that is not a regular file (or a symlink to
/// one) is an error: a dangling or looping symlink is never skipped.
pub fn drop_ins(path: &Path) -> Result<Vec<PathBuf>, ConfigError> {
    read::drop_in_files(&conf_d(path))
}

/// The directory holding the main file at `path`.
fn config_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}

fn conf_d(path: &Path) -> PathBuf {
    config_dir(path).join("conf.d")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::Config;

    #[test]
    fn group_position_is_kept_but_not_compared() {
        let a = Config::from_toml_str("[control]\ngroup = \"adm\"").unwrap();
        let b = Config::from_toml_str("\n[control]\n\ngroup = \"adm\"").unwrap();
        let at = |c: &Config| {
            c.control
                .group_position
                .as_ref()
                .map(|p| (p.line, p.column))
        };
        assert_eq!(at(&a), Some((2, 9)));
        assert_eq!(at(&b), Some((4, 9)));
        assert_eq!(a.control, b.control);
    }

    /// What `Serialize` writes is what the parser reads back.
    #[test]
    fn enum_words_round_trip() {
        use super::{Mode, Protection, Proto, Scope};
        fn word<T: serde::Serialize>(value: T) -> String {
            toml::Value::try_from(value).unwrap().to_string()
        }
        for mode in [Mode::Enforce, Mode::Audit] {
            let c = Config::from_toml_str(&format!("[guard]\nmode = {}", word(mode))).unwrap();
            assert_eq!(c.guard.mode, mode);
        }
        for scope in [Scope::Containers, Scope::All] {
            let c = Config::from_toml_str(&format!("[guard]\nscope = {}", word(scope))).unwrap();
            assert_eq!(c.guard.scope, scope);
        }
        for protection in [
            Protection::Auto,
            Protection::OwnedPersistent,
            Protection::OwnedStandby,
            Protection::Twin,
        ] {
            let text = format!("[guard]\nprotection = {}", word(protection));
            assert_eq!(
                Config::from_toml_str(&text).unwrap().guard.protection,
                protection
            );
        }
        for proto in [Proto::Tcp, Proto::Udp, Proto::Both] {
            let text = format!("[[allow]]\nport = 1\nproto = {}", word(proto));
            assert_eq!(Config::from_toml_str(&text).unwrap().allow[0].proto, proto);
        }
    }
}
