//! The shipped unit's limits that need no systemd, read from
//! `systemd/portguard.service` itself (so the unit and the tests cannot
//! drift apart) and applied to a daemon a test starts on the host, in the
//! test's network namespace:
//!
//! * `CapabilityBoundingSet=`: the bounding set (`setpriv`); root then
//!   holds exactly these capabilities, as under systemd. Without
//!   CAP_SYS_PTRACE, other root processes' `/proc/PID/fd` links are
//!   unreadable.
//! * `NoNewPrivileges=`: `setpriv --no-new-privs`.
//! * `ProtectProc=` and `ProcSubset=`: a `/proc` of its own, mounted with
//!   `hidepid=` and `subset=`, in a mount namespace of its own.
//! * `ProtectSystem=strict` and `ReadWritePaths=`: every mount but `/dev`,
//!   `/proc` and `/sys` read-only, then the paths the unit names (where
//!   they exist) and the test's own directory writable again (the test's
//!   directory stands in for `StateDirectory=` and `RuntimeDirectory=`).
//!
//! Not applied here, because only systemd can: `SystemCallFilter=`,
//! `RestrictAddressFamilies=`, `SystemCallArchitectures=`,
//! `MemoryDenyWriteExecute=`, `RestrictNamespaces=` and the other seccomp
//! filters, `IPAddressDeny=` (cgroup BPF), `ProtectKernelTunables=`,
//! `PrivateDevices=`, `PrivateTmp=`. The booted container runs the
//! package's real unit with all of them (tests/e2e/tests/sandbox.rs).

use std::path::{Path, PathBuf};

/// What [`UnitLimits::shipped`] reads.
pub fn shipped_unit() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../systemd/portguard.service")
}

/// The unit's limits this module can apply.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UnitLimits {
    /// `CapabilityBoundingSet=`, as `setpriv` names them (`net_admin`).
    pub capabilities: Vec<String>,
    pub no_new_privileges: bool,
    /// `ProtectProc=`: the `hidepid=` value (`invisible`); `None` for
    /// `default`.
    pub protect_proc: Option<String>,
    /// `ProcSubset=`: `pid`, or `None` for `all`.
    pub proc_subset: Option<String>,
    /// `ProtectSystem=strict`.
    pub read_only_system: bool,
    /// `ReadWritePaths=`, without the `-` that makes one optional (all are
    /// treated as optional here: the host's paths are not the test's).
    pub read_write_paths: Vec<PathBuf>,
}

impl UnitLimits {
    /// The limits of `systemd/portguard.service`.
    pub fn shipped() -> UnitLimits {
        let path = shipped_unit();
        let unit =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        UnitLimits::parse(&unit)
    }

    /// The limits in a unit file's `[Service]` section, with systemd's
    /// rules for repeated settings: capabilities and paths accumulate (an
    /// empty assignment resets them), anything else the last one wins.
    pub fn parse(unit: &str) -> UnitLimits {
        let mut limits = UnitLimits::default();
        let mut section = "";
        for line in unit.lines().map(str::trim) {
            if line.starts_with('[') {
                section = line;
                continue;
            }
            if section != "[Service]" || line.starts_with('#') {
                continue;
            }
            let Some((key, value)) = line.split_once('=') else {
                continue;
            };
            let (key, value) = (key.trim(), value.trim());
            match key {
                "CapabilityBoundingSet" if value.is_empty() => limits.capabilities.clear(),
                "CapabilityBoundingSet" => limits.capabilities.extend(
                    value
                        .split_whitespace()
                        .map(|c| c.trim_start_matches("CAP_").to_ascii_lowercase()),
                ),
                "NoNewPrivileges" => limits.no_new_privileges = yes(value),
                "ProtectProc" => {
                    limits.protect_proc = (value != "default").then(|| value.to_string())
                }
                "ProcSubset" => limits.proc_subset = (value != "all").then(|| value.to_string()),
                "ProtectSystem" => limits.read_only_system = value == "strict",
                "ReadWritePaths" if value.is_empty() => limits.read_write_paths.clear(),
                "ReadWritePaths" => limits.read_write_paths.extend(
                    value
                        .split_whitespace()
                        .map(|p| PathBuf::from(p.trim_start_matches(['-', '+']))),
                ),
                _ => {}
            }
        }
        limits
    }

    /// A shell script that applies the limits to its own process and
    /// then runs `"$@"`, to be run in a mount namespace of its own
    /// (`unshare --mount --propagation private`). `writable`: the test's
    /// directories that stay writable.
    pub fn script(&self, writable: &[&Path]) -> String {
        let mut script = String::from("set -e\n");
        if self.read_only_system {
            script.push_str(
                "for m in $(awk '{print $5}' /proc/self/mountinfo); do\n\
                 \x20 case \"$m\" in /dev|/dev/*|/proc|/proc/*|/sys|/sys/*|*\\\\*) continue;; esac\n\
                 \x20 mount -o remount,bind,ro \"$m\" 2>/dev/null || true\n\
                 done\n",
            );
            let existing = self.read_write_paths.iter().map(|p| quote(p));
            let test = writable.iter().map(|p| quote(p));
            for path in existing.chain(test) {
                script.push_str(&format!(
                    "if [ -e {path} ]; then mount --bind {path} {path} && mount -o remount,bind,rw {path}; fi\n"
                ));
            }
        }
        if self.protect_proc.is_some() || self.proc_subset.is_some() {
            let mut options = Vec::new();
            if let Some(hidepid) = &self.protect_proc {
                options.push(format!("hidepid={hidepid}"));
            }
            if let Some(subset) = &self.proc_subset {
                options.push(format!("subset={subset}"));
            }
            script.push_str(&format!(
                "mount -t proc -o {} proc /proc\n",
                options.join(",")
            ));
        }
        let caps: Vec<String> = self.capabilities.iter().map(|c| format!("+{c}")).collect();
        script.push_str(&format!(
            "exec setpriv --bounding-set -all,{} --inh-caps -all {}-- \"$@\"\n",
            caps.join(","),
            if self.no_new_privileges {
                "--no-new-privs "
            } else {
                ""
            }
        ));
        script
    }
}

fn yes(value: &str) -> bool {
    matches!(value, "yes" | "true" | "on" | "1")
}

/// `path` in single quotes for sh.
fn quote(path: &Path) -> String {
    format!("'{}'", path.display().to_string().replace('\'', "'\\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_unit_s_limits_are_read_from_the_unit_file() {
        let limits = UnitLimits::shipped();
        assert_eq!(limits.capabilities, ["net_admin", "net_raw", "chown"]);
        assert!(limits.no_new_privileges);
        assert_eq!(limits.protect_proc.as_deref(), Some("invisible"));
        assert_eq!(limits.proc_subset.as_deref(), Some("pid"));
        assert!(limits.read_only_system);
        assert!(
            limits
                .read_write_paths
                .contains(&PathBuf::from("/run/xtables.lock"))
        );
    }

    #[test]
    fn repeated_settings_follow_systemd_s_rules() {
        let limits = UnitLimits::parse(
            "[Unit]\nProtectProc=invisible\n[Service]\nCapabilityBoundingSet=CAP_CHOWN\n\
             CapabilityBoundingSet=\nCapabilityBoundingSet=CAP_NET_ADMIN CAP_NET_RAW\n\
             # ProtectProc=noaccess\nProtectProc=default\nReadWritePaths=-/a\nReadWritePaths=/b\n",
        );
        assert_eq!(limits.capabilities, ["net_admin", "net_raw"]);
        assert_eq!(limits.protect_proc, None);
        assert_eq!(
            limits.read_write_paths,
            [PathBuf::from("/a"), PathBuf::from("/b")]
        );
        let script = limits.script(&[Path::new("/tmp/it's")]);
        assert!(
            script.contains("setpriv --bounding-set -all,+net_admin,+net_raw --inh-caps -all -- "),
            "{script}"
        );
        assert!(!script.contains("mount -t proc"), "{script}");
        assert!(!script.contains("/tmp/it"), "{script}");
    }
}
