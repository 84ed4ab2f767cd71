//! "Did you mean": the known name nearest to a misspelt one.

/// The name of `known` nearest to `written` (ignoring case), if it is near
/// enough to be a slip of the keyboard: one edit for names of up to seven
/// characters, two up to eleven, three beyond. A swap of two neighbouring
/// characters (`gaurd`) is one edit. On a tie the earlier name wins.
pub fn nearest<'a>(written: &str, known: &[&'a str]) -> Option<&'a str> {
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

/// Optimal string alignment distance (strsim's): insertions, deletions,
/// substitutions and transpositions of neighbours each cost one.
fn edit_distance(a: &str, b: &str) -> usize {
    // Names are short; a very long one is no slip of the keyboard and is
    // not compared (the table would be a*b).
    let (a_len, b_len) = (a.chars().count(), b.chars().count());
    if a_len.abs_diff(b_len) > 3 || a_len > 64 {
        return usize::MAX;
    }
    strsim::osa_distance(a, b)
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
