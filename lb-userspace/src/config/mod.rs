//! The node configuration: the TOML file `tandem run` and `tandem check` read.
//!
//! [`load`] (or [`parse`] on a string) gives either a validated [`Config`] plus warnings, or
//! every error in the file at once, each as `FILE:LINE:COL: message` pointing at the offending
//! value (or key, for unknown keys). The format, with every default, is described on the model
//! types; `examples/lb1.toml` and `examples/lb2.toml` are the reference pair.
//!
//! Layout:
//! - `model.rs`: the public types ([`Config`] and its parts), free of any TOML or span detail.
//! - `diagnostic.rs`: [`Diagnostic`], [`Diagnostics`] and the collector the readers report to.
//! - `fields.rs`: located, typed access to the parsed TOML tree (types, ranges, unknown keys).
//! - `read.rs`: the schema, i.e. each section's keys, defaults and single-entry rules.
//! - `cross_check.rs`: rules across entries (uniqueness) and the warnings.
//! - `proxy.rs`: the HTTP engine's `[proxy]` table and per-service `host`/`path_prefix`/`tls`,
//!   model and reading together.

mod cross_check;
mod diagnostic;
mod fields;
mod model;
mod proxy;
mod read;

#[cfg(test)]
mod tests;

use std::path::Path;

pub use diagnostic::{Diagnostic, Diagnostics, Location, Severity};
pub use model::no_such_backend;
pub use model::{
    AccessLog, AccessLogLevel, Backend, BackendAddress, BackendProtocol, BackendTls, Balance, Bgp,
    BgpPeer, BuiltinCheck, CertificateFiles, Config, DataplaneMode, HealthCheck, HealthKind,
    LogTarget, NamedBackend, Node, ProxySettings, Replication, Service, ServiceHttp, ServiceMode,
    Session, SessionKind, SessionMode, Tls, Track, VrrpAuthentication, VrrpInstance,
    DEFAULT_CONFIG_PATH, DEFAULT_CONTROL_SOCKET,
};

use diagnostic::{Pos, Reporter};

/// A configuration that passed validation, with what looked suspicious but is allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loaded {
    pub config: Config,
    /// Every one has [`Severity::Warning`].
    pub warnings: Vec<Diagnostic>,
}

/// Reads, parses and validates the config file at `path`.
pub fn load(path: &Path) -> Result<Loaded, Diagnostics> {
    match std::fs::read_to_string(path) {
        Ok(text) => parse(&text, path),
        Err(err) => Err(Diagnostics(vec![Diagnostic {
            file: path.to_path_buf(),
            location: None,
            severity: Severity::Error,
            message: format!("cannot read the config file: {err}"),
        }])),
    }
}

/// Parses and validates config `text`; `file` only names the text in diagnostics.
pub fn parse(text: &str, file: &Path) -> Result<Loaded, Diagnostics> {
    let mut report = Reporter::new(file, text);
    let config = read_config(&mut report, text);
    let warnings = report.finish()?;
    // `read_config` gives no config only after reporting why, so this is the no-error case;
    // should that ever break, refuse the file rather than load half a config.
    config
        .map(|config| Loaded { config, warnings })
        .ok_or_else(|| {
            Diagnostics(vec![Diagnostic {
                file: file.to_path_buf(),
                location: None,
                severity: Severity::Error,
                message: "the configuration is incomplete but no error says why (a bug in \
                          Tandem; please report it)"
                    .to_owned(),
            }])
        })
}

/// The whole pipeline: syntax, schema, checks across entries. `None` if anything was reported
/// as an error.
fn read_config(report: &mut Reporter, text: &str) -> Option<Config> {
    let document = match toml_edit::ImDocument::parse(text) {
        Ok(document) => document,
        Err(err) => {
            let at = err.span().map_or(Pos::START, |span| Pos(span.start));
            // The parser's message spans lines ("invalid array\nexpected `]`"); a diagnostic
            // is one line.
            let mut message = err.message().trim().lines().collect::<Vec<_>>().join(": ");
            if message.is_empty() {
                // Some errors come without one (a control character in a comment): say what
                // is at the position.
                message = match text.get(at.0..).and_then(|rest| rest.chars().next()) {
                    Some(c) => format!("unexpected {c:?}"),
                    None => "unexpected end of file".to_owned(),
                };
            }
            report.error(at, format!("TOML syntax: {message}"));
            return None;
        }
    };
    let document = read::read_document(report, document.as_table());
    cross_check::check(report, &document);
    if report.has_errors() {
        return None;
    }
    Some(Config {
        node: document.node?,
        vrrp: document.vrrp.into_iter().map(|(vrrp, _)| vrrp).collect(),
        services: document
            .services
            .into_iter()
            .map(|(service, _)| service)
            .collect(),
        proxy: document.proxy?,
        replication: document.replication.map(|(replication, _)| replication),
        bgp: document.bgp.map(|(bgp, _)| bgp),
    })
}
