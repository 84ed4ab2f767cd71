//! Debian's `promtool` (package prometheus, installed by
//! scripts/install-deps), the judge of the daemon's metrics text, the
//! shipped alerting rules and the dashboard's queries.

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};

/// Runs `promtool args` in `dir` with `input` on its standard input and
/// returns what it printed; fails the test with that output (and the
/// input) unless it succeeds.
pub fn promtool(dir: &Path, args: &[&str], input: &[u8]) -> String {
    let mut child = Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus) must be installed: scripts/install-deps");
    child.stdin.take().unwrap().write_all(input).unwrap();
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "promtool {}:\n{text}\n{}",
        args.join(" "),
        String::from_utf8_lossy(input)
    );
    text
}
