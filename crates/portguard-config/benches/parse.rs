//! Parsing time of configurations with many `[[allow]]` entries.
//!
//! `cargo bench -p portguard-config` prints the median of several runs for
//! 100, 1,000 and 10,000 entries, both from a string and through
//! `Config::load` (open, checks, read, parse). It prints numbers; it
//! asserts nothing about time.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use portguard_config::Config;

/// A realistic entry mix: ports, ranges, sources, containers, comments.
fn config_with(entries: usize) -> String {
    let mut text = String::from("[guard]\nmode = \"enforce\"\ntrusted_interfaces = [\"wg0\"]\n");
    for i in 0..entries {
        let port = 1 + (i % 65_000);
        match i % 4 {
            0 => text.push_str(&format!(
                "\n[[allow]]\nport = {port}\nproto = \"tcp\"\ncomment = \"entry {i}\"\n"
            )),
            1 => text.push_str(&format!(
                "\n[[allow]]\nport = \"{port}-{}\"\nproto = \"udp\"\n",
                port + 10
            )),
            2 => text.push_str(&format!(
                "\n[[allow]]\nport = {port}\nfrom = [\"203.0.113.0/24\", \"2001:db8:{:x}::/48\"]\n",
                i % 0xffff
            )),
            _ => text.push_str(&format!("\n[[allow]]\ncontainer = \"shop/web-{i}\"\n")),
        }
    }
    text
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn measure(runs: usize, mut f: impl FnMut()) -> Duration {
    f(); // warm up
    median(
        (0..runs)
            .map(|_| {
                let started = Instant::now();
                f();
                started.elapsed()
            })
            .collect(),
    )
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs us once
    // quickly, without it.
    let quick = !std::env::args().any(|a| a == "--bench");
    let dir = tempfile::tempdir().unwrap();
    println!("portguard-config parse (median of runs)");
    for entries in [100, 1_000, 10_000] {
        let text = config_with(entries);
        let runs = if quick { 1 } else { 21 };
        let from_str = measure(runs, || {
            let config = Config::from_toml_str(&text).unwrap();
            assert_eq!(config.allow.len(), entries);
        });
        let path = dir.path().join(format!("pg-{entries}.toml"));
        std::fs::write(&path, &text).unwrap();
        let load = measure(runs, || {
            let config = Config::load(&path).unwrap();
            assert_eq!(config.allow.len(), entries);
        });
        println!(
            "  {entries:>6} entries ({:>7} bytes): from_toml_str {:>9.3} ms   load {:>9.3} ms",
            text.len(),
            from_str.as_secs_f64() * 1e3,
            load.as_secs_f64() * 1e3,
        );
    }
}
