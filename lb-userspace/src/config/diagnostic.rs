//! Diagnostics: what is wrong (or looks suspicious) in a config file, and where.
//!
//! A [`Diagnostic`] renders as `FILE:LINE:COL: message`, the form editors and CI logs turn into
//! links. Lines and columns are 1-based and columns count characters, not bytes, so a caret
//! lands on the right spot even after non-ASCII text. [`Reporter`] is the collector the reader
//! and the checks write into: they report every problem they find and keep going, so a user
//! fixes a file in one round instead of one error per run.

use std::fmt;
use std::path::{Path, PathBuf};

/// A 1-based line and column (in characters) in a config file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Location {
    pub line: usize,
    pub col: usize,
}

/// Whether a diagnostic stops the config from loading.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Severity {
    Error,
    /// The config loads, but probably does not do what its author expects.
    Warning,
}

/// One problem in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub file: PathBuf,
    /// Where in the file; `None` for problems with the file as a whole (it cannot be read).
    pub location: Option<Location>,
    pub severity: Severity,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(Location { line, col }) = self.location {
            write!(f, ":{line}:{col}")?;
        }
        let label = match self.severity {
            Severity::Error => "",
            Severity::Warning => "warning: ",
        };
        write!(f, ": {label}{}", self.message)
    }
}

impl std::error::Error for Diagnostic {}

/// The errors that stopped a config from loading, in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl fmt::Display for Diagnostics {
    /// One diagnostic per line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, diagnostic) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{diagnostic}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostics {}

/// A byte offset into the config text: where a diagnostic points.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Pos(pub usize);

impl Pos {
    /// The start of the file, for problems that belong to no particular line.
    pub const START: Pos = Pos(0);
}

/// Collects the diagnostics of one config text.
pub(super) struct Reporter<'a> {
    file: &'a Path,
    text: &'a str,
    /// Byte offset where each line starts; `line_starts[0] == 0`.
    line_starts: Vec<usize>,
    errors: Vec<Diagnostic>,
    warnings: Vec<Diagnostic>,
}

impl<'a> Reporter<'a> {
    pub fn new(file: &'a Path, text: &'a str) -> Self {
        let line_starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        Reporter {
            file,
            text,
            line_starts,
            errors: Vec::new(),
            warnings: Vec::new(),
        }
    }

    pub fn error(&mut self, at: Pos, message: impl Into<String>) {
        let diagnostic = self.diagnostic(at, Severity::Error, message.into());
        self.errors.push(diagnostic);
    }

    pub fn warning(&mut self, at: Pos, message: impl Into<String>) {
        let diagnostic = self.diagnostic(at, Severity::Warning, message.into());
        self.warnings.push(diagnostic);
    }

    pub fn has_errors(&self) -> bool {
        !self.errors.is_empty()
    }

    /// The 1-based line of `at`, for messages that refer back to an earlier definition.
    pub fn line_of(&self, at: Pos) -> usize {
        self.location(at).line
    }

    /// Errors (sorted into file order) if there are any, else the warnings.
    pub fn finish(self) -> Result<Vec<Diagnostic>, Diagnostics> {
        if self.errors.is_empty() {
            Ok(sorted(self.warnings))
        } else {
            Err(Diagnostics(sorted(self.errors)))
        }
    }

    fn diagnostic(&self, at: Pos, severity: Severity, message: String) -> Diagnostic {
        Diagnostic {
            file: self.file.to_path_buf(),
            location: Some(self.location(at)),
            severity,
            message,
        }
    }

    fn location(&self, at: Pos) -> Location {
        let offset = at.0.min(self.text.len());
        // `line_starts[0] == 0 <= offset`, so at least one line start qualifies.
        let line_index = self
            .line_starts
            .partition_point(|&start| start <= offset)
            .saturating_sub(1);
        let line_start = self.line_starts[line_index];
        // Count characters, not bytes; `char_indices` also copes with an offset that is not on
        // a character boundary, which slicing would panic on.
        let col = self.text[line_start..]
            .char_indices()
            .take_while(|&(i, _)| line_start + i < offset)
            .count()
            + 1;
        Location {
            line: line_index + 1,
            col,
        }
    }
}

/// Stable sort by location, so cross-entry checks that run last still print in file order.
fn sorted(mut diagnostics: Vec<Diagnostic>) -> Vec<Diagnostic> {
    diagnostics.sort_by_key(|d| d.location);
    diagnostics
}

#[cfg(test)]
mod tests {
    use super::*;

    fn location(text: &str, offset: usize) -> Location {
        Reporter::new(Path::new("t.toml"), text).location(Pos(offset))
    }

    #[test]
    fn locations_are_one_based_and_count_characters() {
        let text = "a = 1\nné = \"x\"\n";
        assert_eq!(location(text, 0), Location { line: 1, col: 1 });
        assert_eq!(location(text, 4), Location { line: 1, col: 5 });
        assert_eq!(location(text, 6), Location { line: 2, col: 1 });
        // "é" is two bytes but one column: the '=' after "né " is column 4.
        let equals = text.rfind('=').expect("the test text has a second '='");
        assert_eq!(location(text, equals), Location { line: 2, col: 4 });
        // The end of the text (where "unexpected end of file" points) is still a location.
        assert_eq!(location(text, text.len()), Location { line: 3, col: 1 });
    }

    #[test]
    fn display_forms() {
        let mut d = Diagnostic {
            file: PathBuf::from("lb1.toml"),
            location: Some(Location { line: 3, col: 12 }),
            severity: Severity::Error,
            message: "bad".into(),
        };
        assert_eq!(d.to_string(), "lb1.toml:3:12: bad");
        d.severity = Severity::Warning;
        assert_eq!(d.to_string(), "lb1.toml:3:12: warning: bad");
        d.location = None;
        d.severity = Severity::Error;
        assert_eq!(d.to_string(), "lb1.toml: bad");
        let two = Diagnostics(vec![d.clone(), d]);
        assert_eq!(two.to_string(), "lb1.toml: bad\nlb1.toml: bad");
    }
}
