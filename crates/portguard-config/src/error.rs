use std::path::PathBuf;

use crate::printable::{printable, printable_escaped};

/// A configuration that cannot be used. Its `Display` is the one-line form
/// administrators and editors understand: `file:line:column: message`, or
/// `file: message` where there is no position (the file cannot be opened,
/// is not a regular file, or is writable by somebody it must not be).
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{}: {source}", printable(&path.to_string_lossy()))]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {}", printable(&path.to_string_lossy()), printable_escaped(message))]
    Refused { path: PathBuf, message: String },
    #[error(
        "{}:{line}:{column}: {}",
        printable(&path.to_string_lossy()),
        printable_escaped(message)
    )]
    Invalid {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    /// More than one mistake: every one of them, in the order the files
    /// are read and, within a file, in line order; shown one a line.
    #[error("{}", shown(.0))]
    Several(Vec<ConfigError>),
}

/// At most this many mistakes are shown; the rest are counted.
const MAX_SHOWN: usize = 20;

fn shown(errors: &[ConfigError]) -> String {
    let mut lines: Vec<String> = errors
        .iter()
        .take(MAX_SHOWN)
        .map(|e| e.to_string())
        .collect();
    if errors.len() > MAX_SHOWN {
        lines.push(format!(
            "... and {} more mistakes",
            errors.len() - MAX_SHOWN
        ));
    }
    lines.join("\n")
}

impl ConfigError {
    /// Every mistake this error stands for, one or more, in order.
    pub fn errors(&self) -> &[ConfigError] {
        match self {
            ConfigError::Several(errors) => errors,
            one => std::slice::from_ref(one),
        }
    }

    /// `Ok` for no mistakes, the mistake itself for one, `Several` for more.
    pub(crate) fn from_list(mut errors: Vec<ConfigError>) -> Result<(), ConfigError> {
        match errors.len() {
            0 => Ok(()),
            1 => Err(errors.remove(0)),
            _ => Err(ConfigError::Several(errors)),
        }
    }
}

/// Where each line of a text starts, so that turning a byte offset into a
/// line number is a binary search instead of a scan from the start of the
/// text (which made a file with many entries quadratic to load).
pub(crate) struct LineIndex {
    /// Byte offset of the first byte of every line; `starts[0] == 0`.
    starts: Vec<usize>,
}

impl LineIndex {
    pub(crate) fn new(text: &str) -> Self {
        let starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        LineIndex { starts }
    }

    /// 1-based line of byte `offset`.
    pub(crate) fn line(&self, offset: usize) -> usize {
        // The number of line starts at or before `offset`; never 0 since
        // the first line starts at 0.
        self.starts.partition_point(|&start| start <= offset)
    }

    /// Byte offset of the start of the line holding byte `offset`.
    pub(crate) fn start_of_line_at(&self, offset: usize) -> usize {
        self.starts[self.line(offset) - 1]
    }

    /// 1-based line and column (in characters) of byte `offset` in `text`,
    /// the text this index was built from. Only the one line is scanned.
    pub(crate) fn line_column(&self, text: &str, offset: usize) -> (usize, usize) {
        let mut offset = offset.min(text.len());
        while !text.is_char_boundary(offset) {
            offset -= 1;
        }
        let line = self.line(offset);
        let line_start = self.starts[line - 1];
        let column = text[line_start..offset].chars().count() + 1;
        (line, column)
    }
}

#[cfg(test)]
mod tests {
    use super::{ConfigError, LineIndex};

    /// A hostile file name or value cannot drive the terminal of whoever
    /// reads the error: escaped the way guardctl escapes Docker's names.
    #[test]
    fn control_characters_in_errors_are_escaped() {
        let error = ConfigError::Invalid {
            path: "/etc/portguard/conf.d/web\u{1b}]0;x\u{7}.toml".into(),
            line: 2,
            column: 1,
            message: "unknown field `a\u{202e}b\n`".into(),
        };
        assert_eq!(
            error.to_string(),
            r"/etc/portguard/conf.d/web\x1b]0;x\x07.toml:2:1: unknown field `a\u{202e}b\x0a`"
        );
    }

    #[test]
    fn line_column_counts_from_one() {
        let text = "a\nbc\ndé";
        let index = LineIndex::new(text);
        assert_eq!(index.line_column(text, 0), (1, 1));
        assert_eq!(index.line_column(text, 1), (1, 2));
        assert_eq!(index.line_column(text, 2), (2, 1));
        assert_eq!(index.line_column(text, 3), (2, 2));
        assert_eq!(index.line_column(text, text.len()), (3, 3));
        // Inside a multi-byte character: the character's own column.
        assert_eq!(index.line_column(text, text.len() - 1), (3, 2));
        assert_eq!(index.line_column(text, usize::MAX), (3, 3));
        assert_eq!(LineIndex::new("").line_column("", 0), (1, 1));
    }
}
