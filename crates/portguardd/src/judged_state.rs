//! What the guard judged, kept in the state directory (`judged.json`)
//! whenever Docker's view of the host changes, so that a start before
//! Docker answers (a boot, where no table survived; a restart with
//! dockerd hung) judges no less than the guard last did. See
//! [`portguard_core::Judged`]: what this file holds is only ever judged,
//! never trusted or allowed, so a damaged file can close a port but never
//! open one, and an unreadable one is reported and skipped.

use std::io::Read as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use portguard_core::Judged;

use crate::lastgood::{ensure_state_dir, write_atomically};

const FILE_NAME: &str = "judged.json";
/// Far more than any host's bridges and ports take (a few KiB).
const MAX_BYTES: u64 = 1 << 20;

pub fn path(state_dir: &Path) -> PathBuf {
    state_dir.join(FILE_NAME)
}

/// Writes `judged` atomically, mode 0600.
pub fn save(state_dir: &Path, judged: &Judged) -> anyhow::Result<()> {
    ensure_state_dir(state_dir)?;
    let json = serde_json::to_vec_pretty(judged).context("encoding what is judged")?;
    write_atomically(&path(state_dir), &json, 0o600)
}

/// The kept judgement; empty when none was kept. Interface names the
/// kernel would refuse are left out (the whole ruleset would be refused).
pub fn load(state_dir: &Path) -> anyhow::Result<Judged> {
    let file = path(state_dir);
    let opened = match std::fs::File::open(&file) {
        Ok(opened) => opened,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Judged::default()),
        Err(e) => return Err(e).with_context(|| format!("opening {}", file.display())),
    };
    let mut text = Vec::new();
    opened
        .take(MAX_BYTES + 1)
        .read_to_end(&mut text)
        .with_context(|| format!("reading {}", file.display()))?;
    anyhow::ensure!(
        text.len() as u64 <= MAX_BYTES,
        "{} is larger than {MAX_BYTES} bytes",
        file.display()
    );
    let mut judged: Judged =
        serde_json::from_slice(&text).with_context(|| format!("parsing {}", file.display()))?;
    judged.bridges.retain(|name| {
        name.parse::<portguard_config::IfName>()
            .is_ok_and(|n| n.wildcard_prefix().is_none())
    });
    Ok(judged)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn what_is_saved_loads_back_and_damage_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        assert_eq!(load(&state).unwrap(), Judged::default(), "nothing kept yet");
        let mut judged = Judged::default();
        judged.bridges.insert("custom0".into());
        judged.tcp.insert(8080);
        judged.udp.insert(5353);
        judged.docker_api.insert(4243);
        save(&state, &judged).unwrap();
        assert_eq!(load(&state).unwrap(), judged);
        // A name the kernel would refuse would make it refuse the table.
        std::fs::write(
            path(&state),
            r#"{"bridges": ["custom0", "a-name-longer-than-15", ""], "tcp": [8080]}"#,
        )
        .unwrap();
        let loaded = load(&state).unwrap();
        assert_eq!(loaded.bridges.into_iter().collect::<Vec<_>>(), ["custom0"]);
        for damaged in ["{", r#"{"tcp": [70000]}"#, r#"{"surprise": 1}"#] {
            std::fs::write(path(&state), damaged).unwrap();
            assert!(load(&state).is_err(), "{damaged}");
        }
    }
}
