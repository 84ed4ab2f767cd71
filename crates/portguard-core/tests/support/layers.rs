//! Checks that a crate's modules import each other only downwards, along
//! the layers its root file's comment lists: each `crate::m` and
//! `super::m` path in a module's file (comments left out) must name a
//! module of a layer above the module's own. A path to an item of the
//! crate root (`crate::L4Proto`, a re-export) is not a module's and is
//! not checked. Shared by portguard-core's and guardctl's `tests/layers.rs`
//! (included by `#[path]`).

#![allow(clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::Path;

/// `src`'s modules (`render::status` for `src/render/status.rs`, `render`
/// for `src/render/mod.rs`) and the source of each, comments removed. The
/// root file (`lib.rs`, `main.rs`) is `""`.
fn modules(src: &Path) -> BTreeMap<String, String> {
    let mut found = BTreeMap::new();
    let mut dirs = vec![(src.to_path_buf(), String::new())];
    while let Some((dir, prefix)) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("read src") {
            let path = entry.expect("entry").path();
            let stem = path.file_stem().and_then(|s| s.to_str()).expect("name");
            let name = if prefix.is_empty() {
                stem.to_string()
            } else {
                format!("{prefix}::{stem}")
            };
            if path.is_dir() {
                dirs.push((path.clone(), name));
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let module = match stem {
                "lib" | "main" if prefix.is_empty() => String::new(),
                "mod" => prefix.clone(),
                _ => name,
            };
            let text = std::fs::read_to_string(&path).expect("read module");
            // A module's own tests may reach across (a test of the guard
            // reads its status): only the code they test is layered.
            let text = text.split("#[cfg(test)]\nmod tests").next().unwrap_or("");
            let code: String = text
                .lines()
                .map(|line| line.split("//").next().unwrap_or(""))
                .collect::<Vec<_>>()
                .join("\n");
            found.insert(module, code);
        }
    }
    found
}

/// The first segment of each path that follows `start` in `code`
/// (`crate::a::b` -> `a`; `crate::{a, b::c}` -> `a`, `b`).
fn targets(code: &str, start: &str) -> Vec<String> {
    let ident = |s: &str| -> String {
        s.trim_start()
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect()
    };
    let mut out = Vec::new();
    for (at, _) in code.match_indices(start) {
        let before = code[..at].chars().next_back();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
            continue; // `self::super::`, `foo_crate::`
        }
        let rest = &code[at + start.len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let group = group.split('}').next().unwrap_or("");
            out.extend(group.split(',').map(ident).filter(|s| !s.is_empty()));
        } else {
            let name = ident(rest);
            if !name.is_empty() {
                out.push(name);
            }
        }
    }
    out
}

/// The modules each module of `src` uses (`crate::m`, `super::m`), by
/// full name, itself left out.
fn uses(src: &Path) -> BTreeMap<String, Vec<String>> {
    let modules = modules(src);
    let mut graph = BTreeMap::new();
    for (module, code) in &modules {
        let parent = module.rsplit_once("::").map_or("", |(p, _)| p);
        let mut used: Vec<String> = targets(code, "crate::")
            .into_iter()
            .filter(|t| modules.contains_key(t.as_str()))
            .collect();
        used.extend(
            targets(code, "super::")
                .into_iter()
                .map(|t| {
                    if parent.is_empty() {
                        t
                    } else {
                        format!("{parent}::{t}")
                    }
                })
                .filter(|t| modules.contains_key(t.as_str())),
        );
        used.retain(|t| t != module);
        used.sort();
        used.dedup();
        graph.insert(module.clone(), used);
    }
    graph
}

/// Each import circle among the modules of `src`, as the modules on it
/// (`["a", "b"]`: a uses b and b, directly or not, uses a). The root
/// file (`""`) is left out: it declares every module.
#[allow(dead_code)] // portguard-testkit's tests/import_circles.rs uses it, core's and guardctl's do not
pub fn circles(src: &Path) -> Vec<Vec<String>> {
    let graph = uses(src);
    let reaches = |from: &str, to: &str| -> bool {
        let mut seen = std::collections::BTreeSet::new();
        let mut todo = vec![from.to_string()];
        while let Some(m) = todo.pop() {
            for next in graph.get(&m).into_iter().flatten() {
                if next == to {
                    return true;
                }
                if seen.insert(next.clone()) {
                    todo.push(next.clone());
                }
            }
        }
        false
    };
    let mut found: Vec<Vec<String>> = Vec::new();
    for module in graph.keys().filter(|m| !m.is_empty()) {
        if found.iter().any(|c| c.contains(module)) || !reaches(module, module) {
            continue;
        }
        let circle: Vec<String> = graph
            .keys()
            .filter(|other| !other.is_empty())
            .filter(|other| *other == module || (reaches(module, other) && reaches(other, module)))
            .cloned()
            .collect();
        found.push(circle);
    }
    found
}

/// Asserts that every module of `src` is in one of `layers` (top first)
/// and imports only modules of earlier layers. The root file is the last
/// layer's implicitly.
#[allow(dead_code)] // portguard-testkit's tests/import_circles.rs does not use it
pub fn check(src: &Path, layers: &[&[&str]]) {
    let graph = uses(src);
    let layer_of = |module: &str| -> Option<usize> {
        if module.is_empty() {
            return Some(layers.len());
        }
        layers.iter().position(|l| l.contains(&module))
    };
    let mut problems = Vec::new();
    for module in graph.keys().filter(|m| !m.is_empty()) {
        if layer_of(module).is_none() {
            problems.push(format!("{module}: in no layer"));
        }
    }
    for (module, used) in &graph {
        let Some(own) = layer_of(module) else {
            continue;
        };
        for target in used {
            match layer_of(target) {
                Some(layer) if layer < own => {}
                _ => problems.push(format!(
                    "{} uses {target}, which is not in a layer above it",
                    if module.is_empty() {
                        "the root"
                    } else {
                        module
                    }
                )),
            }
        }
    }
    problems.sort();
    problems.dedup();
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}
