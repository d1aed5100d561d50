//! What both importers' targets assert about `tandem import` (lb-userspace/src/import).
//!
//! Each text is imported twice: without options, and with a node name and a host mapped, as
//! `tandem import --node lb1 --map ...` would. Asserted: no panic; a syntax error names the
//! file and a line of it; every finding names its file (or `[node]`) and a line inside it; a
//! non-empty NOT TRANSLATED list heads the output; the output is TOML, and what the config
//! reader refuses in it is located there. When nothing is listed as not translated, the reader
//! may refuse only values (an address, a priority, as the files gave them: `tandem check`
//! reports them and `tandem import` exits 2), never the output's shape (a missing or unknown
//! key, a value of the wrong type): the importer writes the shape and lists what it cannot.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::Path;

use tandem::config;
use tandem::import::{self, Finding, Options, Source};

const POUND: &str = "pound.cfg";
const KEEPALIVED: &str = "keepalived.conf";

pub fn check(pound: Option<&str>, keepalived: Option<&str>) {
    let mapped = Options {
        node: Some("lb1".to_owned()),
        hosts: HashMap::from([(
            "http1.example.com".to_owned(),
            Ipv4Addr::new(198, 18, 0, 102),
        )]),
    };
    for options in [Options::default(), mapped] {
        check_with(pound, keepalived, &options);
    }
}

fn check_with(pound: Option<&str>, keepalived: Option<&str>, options: &Options) {
    fn source<'a>(label: &'a str, text: Option<&'a str>) -> Option<Source<'a>> {
        text.map(|text| Source { label, text })
    }
    let lines = |file: &str| {
        let text = if file == POUND { pound } else { keepalived };
        text.map_or(0, |text| text.split('\n').count())
    };
    let imported = match import::import(
        source(POUND, pound),
        source(KEEPALIVED, keepalived),
        options,
    ) {
        Ok(imported) => imported,
        Err(error) => {
            assert!(error.file == POUND || error.file == KEEPALIVED, "{error}");
            assert!(
                (1..=lines(&error.file)).contains(&error.line),
                "{error}: the file has {} lines",
                lines(&error.file)
            );
            return;
        }
    };
    let findings: Vec<&Finding> = imported
        .untranslated
        .iter()
        .chain(&imported.notes)
        .collect();
    for finding in findings {
        if finding.file == "[node]" {
            assert_eq!(finding.line, None, "{finding}");
            continue;
        }
        assert!(
            finding.file == POUND || finding.file == KEEPALIVED,
            "{finding}"
        );
        if let Some(line) = finding.line {
            assert!(
                (1..=lines(&finding.file)).contains(&line),
                "{finding}: the file has {} lines",
                lines(&finding.file)
            );
        }
    }
    if !imported.is_complete() {
        assert!(
            imported.toml.contains("# NOT TRANSLATED"),
            "{}",
            imported.toml
        );
    }
    let Err(errors) = config::parse(&imported.toml, Path::new("tandem.toml")) else {
        return;
    };
    for error in &errors.0 {
        let message = &error.message;
        assert!(
            !message.starts_with("TOML syntax"),
            "the output is not TOML: {error}\n--- output:\n{}",
            imported.toml
        );
        let shape = message.starts_with("unknown key ")
            || message.starts_with("missing `")
            || (message.contains(" must be ") && message.contains(", found "));
        // A value the files lack (a virtual_router_id) is listed, and then missing here.
        assert!(
            !shape || !imported.is_complete(),
            "nothing is listed as not translated, yet the output's shape is wrong: {error}\n\
             --- output:\n{}",
            imported.toml
        );
        assert!(error.location.is_some(), "{error}");
    }
}
