//! portguard-core's modules import each other only downwards, along the
//! layers `src/lib.rs` lists (issue 20: control, verdict and docker_api
//! imported each other).

#[path = "support/layers.rs"]
mod layers;

#[test]
fn modules_import_only_layers_above_their_own() {
    layers::check(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        &[
            &["text", "wire", "intervals", "snapshot"],
            &["ruleset", "unmatched"],
            &["hostfw", "render"],
            &["ip6_forward", "plan"],
            &["docker_api"],
            &["verdict"],
            &["control"],
        ],
    );
}
