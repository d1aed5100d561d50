//! What the HTTP engine reads from the config: the top-level `[proxy]` table (timeouts, limits,
//! X-Forwarded-* switches, the access log) and the keys of an HTTP `[[service]]` that say which
//! requests it takes on a shared listener (`host`, `path_prefix`) and how clients connect
//! (`tls`). Model and reading live together here because nothing else reads them; the rules
//! across services (who may share a listener) are in `cross_check.rs`.
//!
//! Defaults follow Pound where Pound has the setting: `Client 10` (header timeout), `TimeOut 15`
//! (backend timeout), `LogLevel 1`, and X-Forwarded-For always added.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::diagnostic::Reporter;
use super::fields::{Field, Section};
use super::model::{duration_text, ServiceMode};

const PROXY_KEYS: &[&str] = &[
    "header_timeout",
    "idle_timeout",
    "max_header_size",
    "connect_timeout",
    "backend_timeout",
    "tunnel_timeout",
    "client_timeout",
    "server_timeout",
    "max_connections",
    "max_connections_per_client",
    "max_body_size",
    "workers",
    "x_forwarded_for",
    "x_forwarded_proto",
    "x_forwarded_port",
    "access_log",
];
const ACCESS_LOG_KEYS: &[&str] = &["level", "path"];
const TLS_KEYS: &[&str] = &["certificates"];
const CERTIFICATE_KEYS: &[&str] = &["cert", "key"];
const BACKEND_TLS_KEYS: &[&str] = &["ca", "verify", "server_name"];
/// The per-service keys this module reads; `read.rs` accepts them in `[[service]]`.
pub(super) const SERVICE_HTTP_KEYS: &[&str] = &[
    "host",
    "path_prefix",
    "tls",
    "backend_protocol",
    "backend_tls",
    "backend_max_connections",
    "queue_timeout",
];

/// hyper cannot parse a request head in a smaller buffer than this.
const MIN_HEADER_SIZE: usize = 1024;
const MAX_HEADER_SIZE: usize = 1 << 20;

/// `[proxy]`: how the HTTP engine treats clients and backends, shared by every HTTP service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProxySettings {
    /// Time a client has from the first byte of a request head to its end (slowloris), and
    /// for the TLS handshake.
    #[serde(with = "duration_text")]
    pub header_timeout: Duration,
    /// A client connection with no request in progress and no bytes moving for this long is
    /// closed (between keep-alive requests, or before the first one).
    #[serde(with = "duration_text")]
    pub idle_timeout: Duration,
    /// Largest request head (request line and headers) in bytes; larger ones get 431.
    pub max_header_size: usize,
    /// Time to open a TCP connection to a backend before trying the next one.
    #[serde(with = "duration_text")]
    pub connect_timeout: Duration,
    /// Time a backend has to start answering a request; after it the client gets 504.
    #[serde(with = "duration_text")]
    pub backend_timeout: Duration,
    /// A protocol switch (WebSocket...) through which nothing has moved for this long is
    /// closed (HAProxy's `timeout tunnel`).
    #[serde(with = "duration_text")]
    pub tunnel_timeout: Duration,
    /// While a request or its response is in flight, a client that neither sends nor takes
    /// anything for this long is cut off, with its backend connection (HAProxy's
    /// `timeout client`): a slow POST, a client that stops reading a large answer.
    #[serde(with = "duration_text")]
    pub client_timeout: Duration,
    /// Once a backend has started answering (or while it is being sent the request body), a
    /// backend that neither sends nor takes anything for this long is cut off and counted as
    /// failed; the client's connection closes (HAProxy's `timeout server`, nginx's
    /// `proxy_read_timeout`). `backend_timeout` stays the time to the response head.
    #[serde(with = "duration_text")]
    pub server_timeout: Duration,
    /// Client connections served at once; more wait in the kernel's accept queue.
    pub max_connections: usize,
    /// Connections one client address may have open at once; more are closed as they come
    /// (nginx's `limit_conn`). `None`: no limit (the default).
    pub max_connections_per_client: Option<usize>,
    /// Largest request body in bytes; a larger one gets 413 (nginx's `client_max_body_size`).
    /// `None`: no limit (the default).
    pub max_body_size: Option<u64>,
    /// Threads that serve connections (each with its own listening socket and backend pool);
    /// `None`: one per CPU.
    pub workers: Option<usize>,
    /// Append the client's address to `X-Forwarded-For`.
    pub x_forwarded_for: bool,
    /// Set `X-Forwarded-Proto` to "http" or "https".
    pub x_forwarded_proto: bool,
    /// Set `X-Forwarded-Port` to the port the client connected to.
    pub x_forwarded_port: bool,
    pub access_log: AccessLog,
}

impl ProxySettings {
    pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
    pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
    pub const DEFAULT_MAX_HEADER_SIZE: usize = 16 * 1024;
    pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
    pub const DEFAULT_BACKEND_TIMEOUT: Duration = Duration::from_secs(15);
    pub const DEFAULT_TUNNEL_TIMEOUT: Duration = Duration::from_secs(3600);
    pub const DEFAULT_CLIENT_TIMEOUT: Duration = Duration::from_secs(30);
    pub const DEFAULT_SERVER_TIMEOUT: Duration = Duration::from_secs(30);
    pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
}

impl Default for ProxySettings {
    fn default() -> Self {
        ProxySettings {
            header_timeout: Self::DEFAULT_HEADER_TIMEOUT,
            idle_timeout: Self::DEFAULT_IDLE_TIMEOUT,
            max_header_size: Self::DEFAULT_MAX_HEADER_SIZE,
            connect_timeout: Self::DEFAULT_CONNECT_TIMEOUT,
            backend_timeout: Self::DEFAULT_BACKEND_TIMEOUT,
            tunnel_timeout: Self::DEFAULT_TUNNEL_TIMEOUT,
            client_timeout: Self::DEFAULT_CLIENT_TIMEOUT,
            server_timeout: Self::DEFAULT_SERVER_TIMEOUT,
            max_connections: Self::DEFAULT_MAX_CONNECTIONS,
            max_connections_per_client: None,
            max_body_size: None,
            workers: None,
            x_forwarded_for: true,
            x_forwarded_proto: true,
            x_forwarded_port: true,
            access_log: AccessLog::default(),
        }
    }
}

/// `access_log = { level = 1, path = "stdout" }`: one line per request, in Pound's levels.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AccessLog {
    pub level: AccessLogLevel,
    /// "stdout", or a file that lines are appended to.
    pub path: LogTarget,
}

impl Default for AccessLog {
    fn default() -> Self {
        AccessLog {
            level: AccessLogLevel::Regular,
            path: LogTarget::Stdout,
        }
    }
}

/// Pound's `LogLevel` 0 to 3. Pound's 3 is Apache's combined format with the virtual host in
/// front, its 4 the combined format alone and its 5 combined plus service and backend; Tandem's
/// 3 is the plain combined format (Pound's 4), which log analysers read as is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(into = "u8")]
pub enum AccessLogLevel {
    /// 0: no access log.
    None,
    /// 1: client, request line, status line.
    Regular,
    /// 2: as 1, plus host, service, backend and the time taken.
    Extended,
    /// 3: Apache's combined log format.
    Combined,
}

impl From<AccessLogLevel> for u8 {
    fn from(level: AccessLogLevel) -> u8 {
        match level {
            AccessLogLevel::None => 0,
            AccessLogLevel::Regular => 1,
            AccessLogLevel::Extended => 2,
            AccessLogLevel::Combined => 3,
        }
    }
}

/// Where access log lines go.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum LogTarget {
    Stdout,
    File(PathBuf),
}

impl Serialize for LogTarget {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            LogTarget::Stdout => serializer.serialize_str("stdout"),
            LogTarget::File(path) => serializer.collect_str(&path.display()),
        }
    }
}

/// The HTTP-only keys of a `[[service]]`: which requests of a shared listener it takes, and
/// whether its listener speaks TLS. All empty for L4 services.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct ServiceHttp {
    /// Host names (lower case, no port) this service answers; empty means any host.
    /// `*.example.com` matches any name one or more labels below example.com.
    #[serde(rename = "host")]
    pub hosts: Vec<String>,
    /// Requests whose path is this prefix or lies below it ("/app" takes "/app" and "/app/x",
    /// not "/apple"); `None` takes every path. The longest matching prefix wins.
    pub path_prefix: Option<String>,
    pub tls: Option<Tls>,
    /// How the proxy speaks to this service's backends.
    pub backend_protocol: BackendProtocol,
    /// How backends are authenticated over TLS; `Some` exactly when `backend_protocol` is
    /// `https` or `h2`.
    pub backend_tls: Option<BackendTls>,
    /// Requests each backend may have at once, and how long more wait for a place (HAProxy's
    /// `maxconn` and `timeout queue`); `None`: no limit.
    pub backend_queue: Option<BackendQueue>,
}

/// `backend_max_connections` and `queue_timeout`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct BackendQueue {
    pub max_connections: usize,
    /// How long a request waits for a place before it gets 503.
    #[serde(with = "duration_text")]
    pub timeout: Duration,
}

impl BackendQueue {
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
}

/// `backend_protocol`: what the proxy speaks to a service's backends, whatever the client
/// speaks to the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendProtocol {
    /// HTTP/1.1 over TCP (Pound's only way).
    #[default]
    Http1,
    /// HTTP/2 over TCP with prior knowledge (what gRPC servers speak without TLS).
    H2c,
    /// HTTP/1.1 over TLS.
    Https,
    /// HTTP/2 over TLS, agreed by ALPN.
    H2,
}

impl BackendProtocol {
    /// The spelling used in the config file.
    pub fn as_str(self) -> &'static str {
        match self {
            BackendProtocol::Http1 => "http1",
            BackendProtocol::H2c => "h2c",
            BackendProtocol::Https => "https",
            BackendProtocol::H2 => "h2",
        }
    }

    pub fn uses_tls(self) -> bool {
        matches!(self, BackendProtocol::Https | BackendProtocol::H2)
    }

    pub fn is_http2(self) -> bool {
        matches!(self, BackendProtocol::H2c | BackendProtocol::H2)
    }
}

/// `backend_tls = { ca = "FILE", verify = true, server_name = "NAME" }`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize)]
pub struct BackendTls {
    /// PEM certificates of the authorities that sign the backends' certificates; `None` uses
    /// the system's (/etc/ssl/certs).
    pub ca: Option<PathBuf>,
    /// Whether the backend's certificate is checked (chain and name). `false` accepts any
    /// certificate: traffic is encrypted but the backend is not authenticated.
    pub verify: bool,
    /// The name sent as SNI and checked in the certificate; `None` uses the backend's host
    /// name, or its address when it was written as one.
    pub server_name: Option<String>,
}

/// `tls = { certificates = [...] }`: the listener speaks HTTPS with these certificates, chosen
/// by the name the client asks for (SNI); the first one is the default.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Tls {
    /// Never empty.
    pub certificates: Vec<CertificateFiles>,
}

/// A PEM certificate chain and its private key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct CertificateFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Reads `[proxy]`; every key has a default.
pub(super) fn read_proxy(report: &mut Reporter, section: Section) -> Option<ProxySettings> {
    section.reject_unknown_keys(report, PROXY_KEYS);
    let defaults = ProxySettings::default();
    let duration =
        |report: &mut Reporter, key: &'static str, default: Duration| match section.field(key) {
            Some(field) => field.positive_duration(report),
            None => Some(default),
        };
    let header_timeout = duration(report, "header_timeout", defaults.header_timeout);
    let idle_timeout = duration(report, "idle_timeout", defaults.idle_timeout);
    let connect_timeout = duration(report, "connect_timeout", defaults.connect_timeout);
    let backend_timeout = duration(report, "backend_timeout", defaults.backend_timeout);
    let tunnel_timeout = duration(report, "tunnel_timeout", defaults.tunnel_timeout);
    let client_timeout = duration(report, "client_timeout", defaults.client_timeout);
    let server_timeout = duration(report, "server_timeout", defaults.server_timeout);
    let max_header_size = match section.field("max_header_size") {
        Some(field) => field
            .int(report, MIN_HEADER_SIZE as u32, MAX_HEADER_SIZE as u32)
            .map(|n| n as usize),
        None => Some(defaults.max_header_size),
    };
    let max_connections = match section.field("max_connections") {
        Some(field) => field.int(report, 1, u32::MAX).map(|n| n as usize),
        None => Some(defaults.max_connections),
    };
    let max_connections_per_client = match section.field("max_connections_per_client") {
        Some(field) => field.int(report, 1, u32::MAX).map(|n| Some(n as usize)),
        None => Some(None),
    };
    let max_body_size = match section.field("max_body_size") {
        Some(field) => field.int(report, 1, u32::MAX).map(|n| Some(u64::from(n))),
        None => Some(None),
    };
    let workers = match section.field("workers") {
        Some(field) => field.int(report, 1u32, 1024u32).map(|n| Some(n as usize)),
        None => Some(None),
    };
    let flag = |report: &mut Reporter, key: &'static str| match section.field(key) {
        Some(field) => field.bool(report),
        None => Some(true),
    };
    let x_forwarded_for = flag(report, "x_forwarded_for");
    let x_forwarded_proto = flag(report, "x_forwarded_proto");
    let x_forwarded_port = flag(report, "x_forwarded_port");
    let access_log = match section.field("access_log") {
        Some(field) => field
            .section(report, "access_log")
            .and_then(|log| read_access_log(report, log)),
        None => Some(AccessLog::default()),
    };
    Some(ProxySettings {
        header_timeout: header_timeout?,
        idle_timeout: idle_timeout?,
        max_header_size: max_header_size?,
        connect_timeout: connect_timeout?,
        backend_timeout: backend_timeout?,
        tunnel_timeout: tunnel_timeout?,
        client_timeout: client_timeout?,
        server_timeout: server_timeout?,
        max_connections: max_connections?,
        max_connections_per_client: max_connections_per_client?,
        max_body_size: max_body_size?,
        workers: workers?,
        x_forwarded_for: x_forwarded_for?,
        x_forwarded_proto: x_forwarded_proto?,
        x_forwarded_port: x_forwarded_port?,
        access_log: access_log?,
    })
}

fn read_access_log(report: &mut Reporter, section: Section) -> Option<AccessLog> {
    section.reject_unknown_keys(report, ACCESS_LOG_KEYS);
    let level = match section.field("level") {
        Some(field) => field.int(report, 0u8, 3u8).map(|level| match level {
            0 => AccessLogLevel::None,
            1 => AccessLogLevel::Regular,
            2 => AccessLogLevel::Extended,
            _ => AccessLogLevel::Combined,
        }),
        None => Some(AccessLogLevel::Regular),
    };
    let path = match section.field("path") {
        Some(field) => field.non_empty_str(report).map(|path| match path {
            "stdout" | "-" => LogTarget::Stdout,
            file => LogTarget::File(PathBuf::from(file)),
        }),
        None => Some(LogTarget::Stdout),
    };
    Some(AccessLog {
        level: level?,
        path: path?,
    })
}

/// Reads `host`, `path_prefix` and `tls` of a `[[service]]`; they only make sense for
/// `mode = "http"`. `mode` is `None` when it was wrong (and reported).
pub(super) fn read_service_http(
    report: &mut Reporter,
    section: &Section,
    mode: Option<ServiceMode>,
) -> Option<ServiceHttp> {
    let present: Vec<&'static str> = SERVICE_HTTP_KEYS
        .iter()
        .copied()
        .filter(|key| section.has(key))
        .collect();
    match mode {
        Some(ServiceMode::Http) => {}
        Some(l4) => {
            for key in present {
                let at = section.key_at(key).unwrap_or(section.at);
                report.error(
                    at,
                    format!(
                        "`{key}` applies only to mode = \"http\" services; mode = \"{}\" \
                         forwards connections without reading requests",
                        l4.as_str()
                    ),
                );
            }
            return Some(ServiceHttp::default());
        }
        None => return None,
    }
    let hosts = match section.field("host") {
        Some(field) => read_hosts(report, field),
        None => Some(Vec::new()),
    };
    let path_prefix = match section.field("path_prefix") {
        Some(field) => read_path_prefix(report, field).map(Some),
        None => Some(None),
    };
    let tls = match section.field("tls") {
        Some(field) => field
            .section(report, "tls")
            .and_then(|tls| read_tls(report, tls))
            .map(Some),
        None => Some(None),
    };
    let backend_protocol = match section.field("backend_protocol") {
        Some(field) => field.choice(
            report,
            &[
                ("http1", BackendProtocol::Http1),
                ("h2c", BackendProtocol::H2c),
                ("https", BackendProtocol::Https),
                ("h2", BackendProtocol::H2),
            ],
        ),
        None => Some(BackendProtocol::Http1),
    };
    let backend_tls = match (section.field("backend_tls"), backend_protocol) {
        (Some(field), Some(protocol)) if !protocol.uses_tls() => {
            report.error(
                field.at,
                format!(
                    "backend_tls applies to TLS backends, and backend_protocol is \"{}\": write \
                     backend_protocol = \"https\" (HTTP/1.1 over TLS) or \"h2\" (HTTP/2 over \
                     TLS), or remove backend_tls",
                    protocol.as_str()
                ),
            );
            None
        }
        (Some(field), _) => field
            .section(report, "backend_tls")
            .and_then(|tls| read_backend_tls(report, tls))
            .map(Some),
        (None, Some(protocol)) if protocol.uses_tls() => Some(Some(BackendTls {
            verify: true,
            ..BackendTls::default()
        })),
        (None, _) => Some(None),
    };
    let max_connections = match section.field("backend_max_connections") {
        Some(field) => field.int(report, 1, u32::MAX).map(|n| Some(n as usize)),
        None => Some(None),
    };
    let queue_timeout = match section.field("queue_timeout") {
        Some(field) if !section.has("backend_max_connections") => {
            report.error(
                field.at,
                "queue_timeout is how long a request waits for a place at a backend, which only \
                 a limit makes scarce: add backend_max_connections = N, or remove queue_timeout",
            );
            None
        }
        Some(field) => field.positive_duration(report),
        None => Some(BackendQueue::DEFAULT_TIMEOUT),
    };
    let backend_queue = match (max_connections?, queue_timeout) {
        (None, _) => None,
        (Some(max_connections), Some(timeout)) => Some(BackendQueue {
            max_connections,
            timeout,
        }),
        (Some(_), None) => return None,
    };
    Some(ServiceHttp {
        hosts: hosts?,
        path_prefix: path_prefix?,
        tls: tls?,
        backend_protocol: backend_protocol?,
        backend_tls: backend_tls?,
        backend_queue,
    })
}

fn read_backend_tls(report: &mut Reporter, section: Section) -> Option<BackendTls> {
    section.reject_unknown_keys(report, BACKEND_TLS_KEYS);
    let ca = match section.field("ca") {
        Some(field) => field
            .non_empty_str(report)
            .map(|ca| Some(PathBuf::from(ca))),
        None => Some(None),
    };
    let verify = match section.field("verify") {
        Some(field) => field.bool(report),
        None => Some(true),
    };
    let server_name = match section.field("server_name") {
        Some(field) => field.non_empty_str(report).and_then(|name| {
            match rustls::pki_types::ServerName::try_from(name) {
                Ok(_) => Some(Some(name.to_owned())),
                Err(_) => {
                    report.error(
                        field.at,
                        format!(
                            "server_name {name:?} is not a DNS name or an IP address: write the \
                             name the backends' certificates carry, e.g. \"backend.example.com\""
                        ),
                    );
                    None
                }
            }
        }),
        None => Some(None),
    };
    Some(BackendTls {
        ca: ca?,
        verify: verify?,
        server_name: server_name?,
    })
}

/// `host = "a.example"` or `host = ["a.example", "*.b.example"]`.
fn read_hosts(report: &mut Reporter, field: Field) -> Option<Vec<String>> {
    let elements = if field.is_str() {
        vec![field]
    } else {
        field.list(report)?
    };
    if elements.is_empty() {
        report.error(
            field.at,
            "host is empty: list the names this service answers, e.g. [\"www.example.com\"], or \
             remove the key to answer any host",
        );
        return None;
    }
    let mut hosts = Vec::with_capacity(elements.len());
    let mut complete = true;
    for element in elements {
        let Some(name) = element.str(report) else {
            complete = false;
            continue;
        };
        match host_problem(name) {
            Some(problem) => {
                report.error(element.at, format!("host {name:?} {problem}"));
                complete = false;
            }
            None => hosts.push(name.to_ascii_lowercase()),
        }
    }
    complete.then_some(hosts)
}

/// What is wrong with `name` as a host to match, completing "host "NAME" ...".
fn host_problem(name: &str) -> Option<String> {
    let bare = name.strip_prefix("*.").unwrap_or(name);
    if bare.is_empty() {
        return Some("is empty: write a name such as \"www.example.com\"".to_owned());
    }
    if name.contains(':') {
        return Some(
            "has a port: hosts are matched without the port, write the name alone".to_owned(),
        );
    }
    bare.chars()
        .find(|&c| !(c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_'))
        .map(|bad| {
            format!(
                "contains {bad:?}: write a DNS name (letters, digits, '-', '.'), optionally \
                 starting with \"*.\""
            )
        })
}

fn read_path_prefix(report: &mut Reporter, field: Field) -> Option<String> {
    let prefix = field.str(report)?;
    if !prefix.starts_with('/') {
        report.error(
            field.at,
            format!("path_prefix {prefix:?} must start with '/', e.g. \"/{prefix}\""),
        );
        return None;
    }
    if prefix.contains(['?', '#']) || prefix.chars().any(|c| c.is_whitespace()) {
        report.error(
            field.at,
            format!("path_prefix {prefix:?} must be a plain path, without query or spaces"),
        );
        return None;
    }
    Some(prefix.to_owned())
}

fn read_tls(report: &mut Reporter, section: Section) -> Option<Tls> {
    section.reject_unknown_keys(report, TLS_KEYS);
    let field = section.required(report, "certificates")?;
    let elements = field.list(report)?;
    if elements.is_empty() {
        report.error(
            field.at,
            "certificates is empty: list at least one, e.g. [{ cert = \"site.pem\", key = \
             \"site.key\" }]",
        );
        return None;
    }
    let mut certificates = Vec::with_capacity(elements.len());
    let mut complete = true;
    for element in elements {
        let files = element
            .section(report, "certificate")
            .and_then(|entry| read_certificate(report, entry));
        match files {
            Some(files) => certificates.push(files),
            None => complete = false,
        }
    }
    complete.then_some(Tls { certificates })
}

fn read_certificate(report: &mut Reporter, section: Section) -> Option<CertificateFiles> {
    section.reject_unknown_keys(report, CERTIFICATE_KEYS);
    let cert = section
        .required(report, "cert")
        .and_then(|field| field.non_empty_str(report));
    let key = section
        .required(report, "key")
        .and_then(|field| field.non_empty_str(report));
    Some(CertificateFiles {
        cert: PathBuf::from(cert?),
        key: PathBuf::from(key?),
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::{parse, Diagnostics, Loaded};

    const NODE: &str = "[node]\nname = \"lb1\"\ninterface = \"eth0\"\n";

    fn parse_ok(text: &str) -> Loaded {
        match parse(text, Path::new("t.toml")) {
            Ok(loaded) => loaded,
            Err(errors) => panic!("expected the config to load, got:\n{errors}"),
        }
    }

    fn errors(text: &str) -> Vec<String> {
        match parse(text, Path::new("t.toml")) {
            Ok(loaded) => panic!("expected errors, but it loaded: {:?}", loaded.config),
            Err(Diagnostics(errors)) => errors.iter().map(ToString::to_string).collect(),
        }
    }

    /// A service on 198.18.0.100:80 (lines 4 to 7 after [`NODE`]) plus `extra` lines.
    fn service(name: &str, extra: &str) -> String {
        format!(
            "[[service]]\nname = \"{name}\"\nlisten = \"198.18.0.100:80\"\n\
             backends = [\"198.18.0.102:80\"]\n{extra}"
        )
    }

    #[test]
    fn proxy_table_is_optional_and_defaults_follow_pound() {
        let config = parse_ok(&format!("{NODE}{}", service("web", ""))).config;
        assert_eq!(config.proxy, ProxySettings::default());
        assert_eq!(config.proxy.header_timeout, Duration::from_secs(10));
        assert_eq!(config.proxy.backend_timeout, Duration::from_secs(15));
        assert_eq!(config.proxy.access_log.level, AccessLogLevel::Regular);
        assert_eq!(config.services[0].http, ServiceHttp::default());
    }

    #[test]
    fn backend_protocol_defaults_to_http1_and_tls_protocols_verify_by_default() {
        let plain = parse_ok(&format!("{NODE}{}", service("web", ""))).config;
        assert_eq!(
            plain.services[0].http.backend_protocol,
            BackendProtocol::Http1
        );
        assert_eq!(plain.services[0].http.backend_tls, None);
        let h2 = parse_ok(&format!(
            "{NODE}{}",
            service("grpc", "backend_protocol = \"h2\"\n")
        ))
        .config;
        assert_eq!(h2.services[0].http.backend_protocol, BackendProtocol::H2);
        assert_eq!(
            h2.services[0].http.backend_tls,
            Some(BackendTls {
                ca: None,
                verify: true,
                server_name: None
            })
        );
        let https = parse_ok(&format!(
            "{NODE}{}",
            service(
                "web",
                "backend_protocol = \"https\"\nbackend_tls = { ca = \"ca.pem\", verify = false, \
                 server_name = \"app.internal\" }\n"
            )
        ))
        .config;
        assert_eq!(
            https.services[0].http.backend_tls,
            Some(BackendTls {
                ca: Some("ca.pem".into()),
                verify: false,
                server_name: Some("app.internal".into())
            })
        );
    }

    #[test]
    fn backend_tls_without_a_tls_protocol_is_refused_with_the_fix() {
        let text = format!(
            "{NODE}{}",
            service(
                "web",
                "backend_protocol = \"h2c\"\nbackend_tls = { ca = \"ca.pem\" }\n"
            )
        );
        let wrong = errors(&text);
        assert_eq!(wrong.len(), 1, "{wrong:?}");
        assert!(
            wrong[0].starts_with(
                "t.toml:9:15: backend_tls applies to TLS backends, and backend_protocol is \"h2c\""
            ),
            "{wrong:?}"
        );
        let unknown = errors(&format!(
            "{NODE}{}",
            service("web", "backend_protocol = \"spdy\"\n")
        ));
        assert!(
            unknown[0].contains("h2c"),
            "the choices are listed: {unknown:?}"
        );
        let bad_name = errors(&format!(
            "{NODE}{}",
            service(
                "web",
                "backend_protocol = \"https\"\nbackend_tls = { server_name = \"a b\" }\n"
            )
        ));
        assert!(
            bad_name[0].contains("server_name \"a b\" is not a DNS name"),
            "{bad_name:?}"
        );
    }

    #[test]
    fn proxy_table_reads_every_key() {
        let text = format!(
            "{NODE}[proxy]\nheader_timeout = \"2s\"\nidle_timeout = \"30s\"\n\
             max_header_size = 8192\nconnect_timeout = \"300ms\"\nbackend_timeout = \"1m\"\n\
             tunnel_timeout = \"2h\"\nclient_timeout = \"20s\"\nserver_timeout = \"45s\"\nmax_connections = 100\nmax_connections_per_client = 20\nmax_body_size = 1048576\nworkers = 2\nx_forwarded_for = false\nx_forwarded_proto = false\n\
             x_forwarded_port = false\naccess_log = {{ level = 3, path = \"/var/log/t.log\" }}\n"
        );
        let proxy = parse_ok(&text).config.proxy;
        assert_eq!(
            proxy,
            ProxySettings {
                header_timeout: Duration::from_secs(2),
                idle_timeout: Duration::from_secs(30),
                max_header_size: 8192,
                connect_timeout: Duration::from_millis(300),
                backend_timeout: Duration::from_secs(60),
                tunnel_timeout: Duration::from_secs(7200),
                client_timeout: Duration::from_secs(20),
                server_timeout: Duration::from_secs(45),
                max_connections: 100,
                max_connections_per_client: Some(20),
                max_body_size: Some(1_048_576),
                workers: Some(2),
                x_forwarded_for: false,
                x_forwarded_proto: false,
                x_forwarded_port: false,
                access_log: AccessLog {
                    level: AccessLogLevel::Combined,
                    path: LogTarget::File(PathBuf::from("/var/log/t.log")),
                },
            }
        );
        let json = serde_json::to_value(&proxy).expect("serializes");
        assert_eq!(json["access_log"]["level"], 3);
        assert_eq!(json["access_log"]["path"], "/var/log/t.log");
        assert_eq!(json["connect_timeout"], "300ms");
    }

    #[test]
    fn proxy_table_mistakes_point_at_the_value() {
        let text = format!(
            "{NODE}[proxy]\nheader_timeout = \"0s\"\nmax_header_size = 10\n\
             access_log = {{ level = 4 }}\nx_forwarded_for = \"yes\"\ntimeout = \"1s\"\n"
        );
        assert_eq!(
            errors(&text),
            [
                "t.toml:5:18: header_timeout must be greater than 0, e.g. \"1s\"",
                "t.toml:6:19: max_header_size = 10 is out of range (allowed: 1024 to 1048576)",
                "t.toml:7:24: level = 4 is out of range (allowed: 0 to 3)",
                "t.toml:8:19: `x_forwarded_for` must be true or false, found string",
                "t.toml:9:1: unknown key `timeout` in [proxy] (expected one of: \
                 header_timeout, idle_timeout, max_header_size, connect_timeout, \
                 backend_timeout, tunnel_timeout, client_timeout, server_timeout, max_connections, \
                 max_connections_per_client, max_body_size, workers, x_forwarded_for, x_forwarded_proto, \
                 x_forwarded_port, access_log)",
            ]
        );
    }

    #[test]
    fn service_host_path_and_tls_are_read() {
        let text = format!(
            "{NODE}{}",
            service(
                "web",
                "host = [\"WWW.Example.com\", \"*.example.org\"]\npath_prefix = \"/app\"\n\
                 tls = { certificates = [{ cert = \"a.pem\", key = \"a.key\" }] }\n"
            )
        );
        let http = parse_ok(&text).config.services[0].http.clone();
        assert_eq!(
            http,
            ServiceHttp {
                hosts: vec!["www.example.com".into(), "*.example.org".into()],
                path_prefix: Some("/app".into()),
                tls: Some(Tls {
                    certificates: vec![CertificateFiles {
                        cert: "a.pem".into(),
                        key: "a.key".into(),
                    }],
                }),
                ..ServiceHttp::default()
            }
        );
        let single = format!("{NODE}{}", service("web", "host = \"a.example\"\n"));
        assert_eq!(
            parse_ok(&single).config.services[0].http.hosts,
            ["a.example"]
        );
    }

    #[test]
    fn service_http_key_mistakes() {
        assert_eq!(
            errors(&format!(
                "{NODE}{}",
                service("web", "host = \"a.example:80\"\n")
            )),
            [
                "t.toml:8:8: host \"a.example:80\" has a port: hosts are matched without the \
              port, write the name alone"
            ]
        );
        assert_eq!(
            errors(&format!(
                "{NODE}{}",
                service("web", "path_prefix = \"app\"\n")
            )),
            ["t.toml:8:15: path_prefix \"app\" must start with '/', e.g. \"/app\""]
        );
        assert_eq!(
            errors(&format!(
                "{NODE}{}",
                service("web", "tls = { certificates = [{ cert = \"a.pem\" }] }\n")
            )),
            ["t.toml:8:25: missing `key` in certificate"]
        );
        assert_eq!(
            errors(&format!(
                "{NODE}{}",
                service("raw", "mode = \"tcp\"\nhost = \"a.example\"\n")
            )),
            [
                "t.toml:9:1: `host` applies only to mode = \"http\" services; mode = \"tcp\" \
              forwards connections without reading requests"
            ]
        );
    }

    #[test]
    fn http_services_share_a_listener_when_host_or_path_differ() {
        let shared = format!(
            "{NODE}{}{}{}",
            service("default", ""),
            service("app", "path_prefix = \"/app\"\n"),
            service("other", "host = \"other.example\"\n"),
        );
        assert_eq!(parse_ok(&shared).config.services.len(), 3);

        let same_default = format!("{NODE}{}{}", service("a", ""), service("b", ""));
        assert_eq!(
            errors(&same_default),
            [
                "t.toml:10:10: listen 198.18.0.100:80 (tcp) is already used by service \"a\" \
              (line 6); HTTP services can share a listener only when their `host` or \
              `path_prefix` differ; set one of them, or use another address or port"
            ]
        );
        let overlapping_hosts = format!(
            "{NODE}{}{}",
            service("a", "host = [\"a.example\", \"b.example\"]\n"),
            service("b", "host = \"b.example\"\n")
        );
        assert_eq!(errors(&overlapping_hosts).len(), 1);

        let tls = "tls = { certificates = [{ cert = \"a.pem\", key = \"a.key\" }] }\n";
        let mixed = format!(
            "{NODE}{}{}",
            service("plain", ""),
            service("secure", &format!("host = \"s.example\"\n{tls}"))
        );
        assert_eq!(
            errors(&mixed),
            [
                "t.toml:10:10: listen 198.18.0.100:80 (tcp) is already used by service \
              \"plain\" (line 6); services on one listener must agree on TLS: give both a \
              `tls` table or neither"
            ]
        );
    }
}
