//! No two files of any crate of the workspace import each other, directly
//! or around a circle (issue 20: six files of portguard-nft did, so there
//! was no file to start reading from). portguard-core and guardctl check
//! their declared layers too (their `tests/layers.rs`).

#![allow(clippy::expect_used)]

#[path = "../../portguard-core/tests/support/layers.rs"]
mod layers;

#[test]
fn no_crate_has_an_import_circle_between_its_files() {
    let crates = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("crates/");
    let mut problems = Vec::new();
    let mut checked = 0;
    for entry in std::fs::read_dir(crates).expect("read crates/") {
        let src = entry.expect("entry").path().join("src");
        if !src.is_dir() {
            continue;
        }
        checked += 1;
        for circle in layers::circles(&src) {
            problems.push(format!("{}: {}", src.display(), circle.join(" <-> ")));
        }
    }
    assert!(
        checked >= 8,
        "found only {checked} crates under {}",
        crates.display()
    );
    assert!(
        problems.is_empty(),
        "import circles:\n{}",
        problems.join("\n")
    );
}
