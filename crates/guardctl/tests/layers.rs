//! guardctl's modules import each other only downwards, along the layers
//! `src/main.rs` and `src/render/mod.rs` list (issue 20: the client both
//! asked and printed, and the views called it back).

#[path = "../../portguard-core/tests/support/layers.rs"]
mod layers;

#[test]
fn modules_import_only_layers_above_their_own() {
    layers::check(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        &[
            &["cli", "output", "client", "offline"],
            &["render::style", "render::text"],
            &["render::table"],
            &[
                "render::ports",
                "render::blocked",
                "render::explain",
                "render::offline",
            ],
            &["render::status"],
            &["render"],
        ],
    );
}
