//! "Did you mean": the known name nearest to a misspelt one.

/// The name of `known` nearest to `written` (ignoring case), if it is near
/// enough to be a slip of the keyboard: one edit for names of up to seven
/// characters, two up to eleven, three beyond. A swap of two neighbouring
/// characters (`gaurd`) is one edit. On a tie the earlier name wins.
pub(crate) fn nearest<'a>(written: &str, known: &[&'a str]) -> Option<&'a str> {
    let written = written.to_lowercase();
    known
        .iter()
        .map(|name| (edit_distance(&written, name), *name))
        .filter(|(distance, name)| *distance <= allowed_edits(name))
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, name)| name)
}

fn allowed_edits(name: &str) -> usize {
    match name.chars().count() {
        0..=7 => 1,
        8..=11 => 2,
        _ => 3,
    }
}

/// Optimal string alignment distance: insertions, deletions,
/// substitutions and transpositions of neighbours each cost one.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    // Names in a configuration file are short; a very long key is no slip
    // of the keyboard and is not compared (the table would be a*b).
    if a.len().abs_diff(b.len()) > 3 || a.len() > 64 {
        return usize::MAX;
    }
    let width = b.len() + 1;
    let mut d = vec![0usize; (a.len() + 1) * width];
    for (i, row) in d.chunks_mut(width).enumerate() {
        row[0] = i;
    }
    for (j, cell) in d.iter_mut().take(width).enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[(i - 1) * width + j] + 1)
                .min(d[i * width + j - 1] + 1)
                .min(d[(i - 1) * width + j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[(i - 2) * width + j - 2] + 1);
            }
            d[i * width + j] = best;
        }
    }
    d[a.len() * width + b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The keys of `[guard]`, as the parser has them.
    fn guard() -> &'static [&'static str] {
        crate::file::SECTIONS[0].1
    }

    #[test]
    fn slips_of_the_keyboard_find_their_name() {
        assert_eq!(nearest("gaurd", &["guard", "ipv6"]), Some("guard"));
        assert_eq!(nearest("modee", guard()), Some("mode"));
        assert_eq!(nearest("Mode", guard()), Some("mode"));
        assert_eq!(
            nearest("trusted_interface", guard()),
            Some("trusted_interfaces")
        );
        assert_eq!(nearest("log-blocked", guard()), Some("log_blocked"));
        assert_eq!(nearest("protecton", guard()), Some("protection"));
        assert_eq!(
            nearest("contianer", &["port", "container", "proto"]),
            Some("container")
        );
        assert_eq!(
            nearest("prot", &["port", "container", "proto"]),
            Some("port")
        );
    }

    #[test]
    fn other_words_find_nothing() {
        assert_eq!(nearest("lock_table", guard()), None);
        assert_eq!(nearest("enabled", guard()), None);
        assert_eq!(nearest("", guard()), None);
        assert_eq!(nearest(&"x".repeat(10_000), guard()), None);
    }

    #[test]
    fn distances() {
        assert_eq!(edit_distance("gaurd", "guard"), 1);
        assert_eq!(edit_distance("abc", "abc"), 0);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }
}
