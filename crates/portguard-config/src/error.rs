use std::path::PathBuf;

/// A configuration that cannot be used. Its `Display` is the one-line form
/// administrators and editors understand: `file:line:column: message`.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}:{line}:{column}: {message}", path.display())]
    Invalid {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
}

impl ConfigError {
    /// An error at byte `offset` of `text`, the contents of `path`.
    pub(crate) fn at(path: &std::path::Path, text: &str, offset: usize, message: String) -> Self {
        let (line, column) = line_column(text, offset);
        ConfigError::Invalid {
            path: path.to_path_buf(),
            line,
            column,
            message,
        }
    }
}

/// 1-based line and column (in characters) of byte `offset` in `text`.
pub(crate) fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    #[test]
    fn line_column_counts_from_one() {
        let text = "a\nbc\ndé";
        assert_eq!(super::line_column(text, 0), (1, 1));
        assert_eq!(super::line_column(text, 3), (2, 2));
        assert_eq!(super::line_column(text, text.len()), (3, 3));
    }
}
