//! Golden tests: each `golden/<case>.toml` (with an optional
//! `<case>.snapshot.json`) renders to exactly `golden/<case>.nft`, and nft
//! itself accepts every rendering. `UPDATE_GOLDEN=1` rewrites the files.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use portguard_config::Config;
use portguard_core::{Snapshot, plan, render};

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

fn cases() -> Vec<(String, PathBuf)> {
    let mut cases: Vec<(String, PathBuf)> = std::fs::read_dir(golden_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .map(|p| (p.file_stem().unwrap().to_string_lossy().into_owned(), p))
        .collect();
    cases.sort();
    assert!(cases.len() >= 10, "golden cases went missing: {cases:?}");
    cases
}

fn rendered(case: &str, config_path: &Path) -> String {
    let config = Config::load(config_path).unwrap_or_else(|e| panic!("{case}: {e}"));
    let snapshot_path = golden_dir().join(format!("{case}.snapshot.json"));
    let snapshot: Snapshot = match std::fs::read_to_string(&snapshot_path) {
        Ok(text) => serde_json::from_str(&text).unwrap(),
        Err(_) => Snapshot::default(),
    };
    render(&plan(&config, &snapshot))
}

#[test]
fn renderings_match_golden_files() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut mismatches = Vec::new();
    for (case, path) in cases() {
        let text = rendered(&case, &path);
        let golden = golden_dir().join(format!("{case}.nft"));
        if update {
            std::fs::write(&golden, &text).unwrap();
            continue;
        }
        let expected = std::fs::read_to_string(&golden).unwrap_or_default();
        if expected != text {
            mismatches.push(format!(
                "--- {case}: expected {}\n{expected}\n--- got\n{text}",
                golden.display()
            ));
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}

/// Runs `script` with `sh` in a new, anonymous network namespace: it dies
/// with the process, so nothing can leak into the host or another test.
fn in_fresh_netns(script: &str) -> std::process::Output {
    Command::new("unshare")
        .args(["--net", "sh", "-ec", script])
        .output()
        .expect("unshare (util-linux) must be installed; tests run as root")
}

#[test]
fn nft_accepts_every_rendering() {
    let dir = tempfile_dir();
    for (case, path) in cases() {
        let file = dir.join(format!("{case}.nft"));
        std::fs::write(&file, rendered(&case, &path)).unwrap();
        let out = in_fresh_netns(&format!("nft -c -f {}", file.display()));
        assert!(
            out.status.success(),
            "nft -c rejected {case}:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn rendered_ruleset_loads_into_a_kernel_and_lists_back_identically() {
    let dir = tempfile_dir();
    for case in ["from_v4_v6", "containers", "interfaces", "audit", "range"] {
        let path = golden_dir().join(format!("{case}.toml"));
        let text = rendered(case, &path);
        let file = dir.join(format!("{case}.load.nft"));
        std::fs::write(&file, &text).unwrap();
        let out = in_fresh_netns(&format!(
            "nft -f {} && nft list table inet portguard",
            file.display()
        ));
        assert!(
            out.status.success(),
            "{case}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let listed = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            portguard_core::render::normalize_listing(&listed),
            portguard_core::render::normalize_listing(&text),
            "{case}: the kernel holds something else than we rendered"
        );
    }
}

fn tempfile_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("portguard-golden-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
