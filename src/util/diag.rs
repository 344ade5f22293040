//! Diagnostics: an error or warning about the config, with the place it
//! points at (file, line, column) and, where there is one, what would be
//! valid. Rendered the way compilers do, `file:line:col: error: message`,
//! so editors and operators jump straight to the spot.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
    /// Worth knowing, nothing to fix (e.g. a variable that has no effect).
    Note,
}

/// Line and column, both counted from 1 (columns in characters).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Position {
    pub line: usize,
    pub column: usize,
}

impl Position {
    /// The position of byte `offset` in `text`.
    pub fn of_offset(text: &str, offset: usize) -> Self {
        let offset = offset.min(text.len());
        let before = text.get(..offset).unwrap_or(text);
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        Self {
            line: before.matches('\n').count() + 1,
            column: before[line_start..].chars().count() + 1,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    pub severity: Severity,
    pub file: PathBuf,
    /// Where in the file; `None` for the file as a whole (it cannot be read).
    #[serde(flatten)]
    pub position: Option<Position>,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let severity = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Note => "note",
        };
        write!(f, "{}", self.file.display())?;
        if let Some(p) = self.position {
            write!(f, ":{}:{}", p.line, p.column)?;
        }
        write!(f, ": {severity}: {}", self.message)
    }
}

/// Collects diagnostics about one source file.
#[derive(Debug, Clone)]
pub struct Diagnostics {
    file: PathBuf,
    text: String,
    items: Vec<Diagnostic>,
}

impl Diagnostics {
    pub fn new(file: &Path, text: &str) -> Self {
        Self {
            file: file.to_path_buf(),
            text: text.to_string(),
            items: Vec::new(),
        }
    }

    fn push(&mut self, severity: Severity, span: Option<Range<usize>>, message: String) {
        let position = span.map(|s| Position::of_offset(&self.text, s.start));
        self.items.push(Diagnostic {
            severity,
            file: self.file.clone(),
            position,
            message,
        });
    }

    /// An error at `span` (byte range in the file), or about the whole file.
    pub fn error(&mut self, span: impl Into<Option<Range<usize>>>, message: impl Into<String>) {
        self.push(Severity::Error, span.into(), message.into());
    }

    pub fn warning(&mut self, span: impl Into<Option<Range<usize>>>, message: impl Into<String>) {
        self.push(Severity::Warning, span.into(), message.into());
    }

    pub fn note(&mut self, span: impl Into<Option<Range<usize>>>, message: impl Into<String>) {
        self.push(Severity::Note, span.into(), message.into());
    }

    /// The text of the file the diagnostics are about.
    pub fn text(&self) -> &str {
        &self.text
    }

    pub fn has_errors(&self) -> bool {
        self.items.iter().any(|d| d.severity == Severity::Error)
    }

    /// All diagnostics, errors first, each group in file order.
    pub fn into_sorted(mut self) -> Vec<Diagnostic> {
        self.items.sort_by_key(|d| (d.severity, d.position));
        self.items.dedup();
        self.items
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_count_lines_and_characters_from_one() {
        let text = "a = 1\nbé = 2\n";
        assert_eq!(
            Position::of_offset(text, 0),
            Position { line: 1, column: 1 }
        );
        assert_eq!(
            Position::of_offset(text, 6),
            Position { line: 2, column: 1 }
        );
        // "bé " is 4 bytes, 3 characters: the `=` (byte 10) is the 4th.
        assert_eq!(
            Position::of_offset(text, 10),
            Position { line: 2, column: 4 }
        );
        assert_eq!(Position::of_offset(text, 999).line, 3);
    }

    #[test]
    fn renders_like_a_compiler_and_sorts_errors_first() {
        let mut d = Diagnostics::new(Path::new("h.toml"), "x = 1\ny = 2\n");
        d.warning(6..7, "w");
        d.error(0..1, "e");
        d.error(None, "whole file");
        let items = d.into_sorted();
        let lines: Vec<String> = items.iter().map(ToString::to_string).collect();
        assert_eq!(
            lines,
            [
                "h.toml: error: whole file",
                "h.toml:1:1: error: e",
                "h.toml:2:1: warning: w"
            ]
        );
    }
}
