//! Arbitrary text into the config reader, as `tandem check` reads a file (`config::parse`).
//!
//! Asserted: it never panics; a file that does not load has at least one error, and every
//! diagnostic (errors, and the warnings of a file that loads) names the file and a line and
//! column inside the text, says something on one line, and comes in file order, as
//! `FILE:LINE:COL: message`.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use tandem::config::{self, Diagnostic, Severity};

const FILE: &str = "fuzz.toml";

fuzz_target!(|data: &[u8]| {
    // The reader is given a file's text: `load` refuses a file that is not UTF-8 before.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match config::parse(text, Path::new(FILE)) {
        Ok(loaded) => check(text, &loaded.warnings, Severity::Warning),
        Err(errors) => {
            assert!(!errors.0.is_empty(), "a config refused without an error");
            check(text, &errors.0, Severity::Error);
        }
    }
});

fn check(text: &str, diagnostics: &[Diagnostic], severity: Severity) {
    let lines: Vec<&str> = text.split('\n').collect();
    let mut previous = None;
    for diagnostic in diagnostics {
        let shown = diagnostic.to_string();
        assert_eq!(diagnostic.severity, severity, "{shown}");
        assert_eq!(diagnostic.file, Path::new(FILE), "{shown}");
        let Some(location) = diagnostic.location else {
            panic!("a diagnostic without a position: {shown}");
        };
        assert!(
            (1..=lines.len()).contains(&location.line),
            "line {} of {}: {shown}",
            location.line,
            lines.len()
        );
        let columns = lines[location.line - 1].chars().count() + 1;
        assert!(
            (1..=columns).contains(&location.col),
            "column {} of {columns}: {shown}",
            location.col
        );
        assert!(
            shown.starts_with(&format!("{FILE}:{}:{}: ", location.line, location.col)),
            "{shown}"
        );
        assert!(!diagnostic.message.contains('\n'), "{shown}");
        assert!(
            !diagnostic.message.is_empty() && !diagnostic.message.ends_with(": "),
            "a message that says nothing: {shown}"
        );
        assert!(
            previous.is_none_or(|previous| previous <= location),
            "out of file order: {shown}"
        );
        previous = Some(location);
    }
}
