//! Pound's pound.cfg read onto `[proxy]` and `[[service]]`: `lex` turns lines into words,
//! this file reads the directives, `assemble` puts the services together per listener.
//!
//! The format is Pound 2.x's, as in the classic tutorial, with the Pound 4 spellings that are
//! common: one directive per line, keywords in any case, arguments bare or in double quotes
//! (where `\"` and `\\` are escapes), `#` comments, and blocks (`ListenHTTP`, `ListenHTTPS`,
//! `Service`, `BackEnd`, `Emergency`, `Session`, ...) closed by `End`.
//!
//! The mapping: `Alive` becomes every service's health interval (Pound re-checks dead
//! back-ends that often); `LogLevel`, `Client`, `TimeOut` and `ConnTO` become `[proxy]`
//! settings, which Tandem has once per node, so differing values are listed; each listener
//! gets one `[[service]]` per Service that applies to it (its own, then the global ones, the
//! order Pound tries them in). Services are told apart only by a plain host name
//! (`HeadRequire "Host: www.example.com"`) or a plain path prefix (`URL "^/app"`): Pound's
//! patterns are regular expressions, and a guessed translation would send requests elsewhere
//! without a word, so anything else is listed.

mod assemble;
mod lex;

use assemble::{assemble, host_of, is_host_pattern, prefix_of};
pub(super) use lex::tokenize;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use super::{
    duration_text, parse_seconds, BackendDraft, Directive, Findings, Host, ProxyDraft,
    ServiceDraft, SessionDraft,
};
use crate::config::{Backend, Session};

/// Pound's `Alive` when the file has none.
const DEFAULT_ALIVE: Duration = Duration::from_secs(30);
/// Pound's back-end `Priority` when a service gives some back-ends one and not others.
const DEFAULT_PRIORITY: u32 = 5;
/// Pound picks a back-end at random, weighted by Priority, unless told otherwise.
const BALANCE_RANDOM: &str = "random";
/// The name of a service Pound left unnamed.
const DEFAULT_SERVICE_NAME: &str = "web";

const LISTENERS: &[&str] = &["listenhttp", "listenhttps", "httplistener", "httpslistener"];

const GENERIC: &str = "Tandem has no equivalent for this directive; check that the setup works \
                       without it";
const TLS_SETTINGS: &str = "Tandem's TLS (rustls) offers TLS 1.2 and 1.3 with its own safe \
                            choice of ciphers and curves, and asks for no client certificate; \
                            nothing to set";
const NOT_A_ROUTE: &str = "Tandem chooses a service by Host and path prefix only; enforce this \
                           in the back-end";

/// What pound.cfg gives the output.
pub(super) struct PoundDraft {
    pub proxy: ProxyDraft,
    pub services: Vec<ServiceDraft>,
}

/// Maps the directives of pound.cfg; what does not map goes to `findings`.
pub(super) fn import(
    directives: &[Directive],
    hosts: &HashMap<String, Ipv4Addr>,
    findings: &mut Findings,
) -> PoundDraft {
    let mut reader = Reader {
        hosts,
        findings,
        settings: Settings::default(),
        alive: None,
    };
    // Global settings first, so that a listener's or back-end's differing value is the one
    // listed, as Pound applies the global one everywhere else.
    for directive in directives {
        let keyword = directive.keyword.to_ascii_lowercase();
        if !LISTENERS.contains(&keyword.as_str()) && keyword != "service" {
            reader.global(directive);
        }
    }
    let mut listeners = Vec::new();
    let mut global_services = Vec::new();
    for directive in directives {
        match directive.keyword.to_ascii_lowercase().as_str() {
            "listenhttp" | "httplistener" => listeners.push(reader.listener(directive, false)),
            "listenhttps" | "httpslistener" => listeners.push(reader.listener(directive, true)),
            "service" => global_services.push(reader.service(directive)),
            _ => {}
        }
    }
    let health_interval = match reader.alive {
        Some(alive) => alive,
        None => {
            reader.findings.note_file(format!(
                "no Alive: Pound checks dead back-ends every {}s by default, so every service \
                 gets health = {{ interval = \"{}\" }}",
                DEFAULT_ALIVE.as_secs(),
                duration_text(DEFAULT_ALIVE)
            ));
            DEFAULT_ALIVE
        }
    };
    let services = assemble(
        &listeners,
        &global_services,
        health_interval,
        reader.findings,
    );
    PoundDraft {
        proxy: reader.settings.draft(),
        services,
    }
}

/// A listener as read: where it listens and the Services inside it.
struct Listener<'d> {
    at: &'d Directive,
    address: Host,
    port: u16,
    certificates: Vec<String>,
    services: Vec<ServiceSpec<'d>>,
    /// False when it cannot be written (HTTPS without a certificate); already listed.
    usable: bool,
}

/// A Service as read, before it is placed on its listeners.
struct ServiceSpec<'d> {
    at: &'d Directive,
    name: Option<String>,
    hosts: Vec<String>,
    path_prefix: Option<String>,
    backends: Vec<BackendDraft>,
    session: Option<SessionDraft>,
    balance: &'static str,
}

/// `[proxy]` values with the line that set each: Tandem has one per node.
#[derive(Default)]
struct Settings {
    header_timeout: Option<(Duration, usize)>,
    connect_timeout: Option<(Duration, usize)>,
    backend_timeout: Option<(Duration, usize)>,
    access_log_level: Option<(u8, usize)>,
}

impl Settings {
    fn draft(&self) -> ProxyDraft {
        ProxyDraft {
            header_timeout: self.header_timeout.map(|(value, _)| value),
            connect_timeout: self.connect_timeout.map(|(value, _)| value),
            backend_timeout: self.backend_timeout.map(|(value, _)| value),
            access_log_level: self.access_log_level.map(|(value, _)| value),
        }
    }
}

/// Keeps the first value of a node-wide setting; lists a later, different one.
fn settle<T: PartialEq + Copy>(
    slot: &mut Option<(T, usize)>,
    value: T,
    directive: &Directive,
    findings: &mut Findings,
    key: &str,
    show: impl Fn(T) -> String,
) {
    match *slot {
        None => *slot = Some((value, directive.line)),
        Some((kept, _)) if kept == value => {}
        Some((kept, line)) => findings.untranslated(
            directive,
            format!(
                "Tandem has one [proxy] {key} for the whole node; {} from line {line} is \
                 written: decide which value the node needs",
                show(kept)
            ),
        ),
    }
}

struct Reader<'a, 'f> {
    hosts: &'a HashMap<String, Ipv4Addr>,
    findings: &'a mut Findings<'f>,
    settings: Settings,
    alive: Option<Duration>,
}

impl Reader<'_, '_> {
    fn untranslated(&mut self, directive: &Directive, message: impl Into<String>) {
        self.findings.untranslated(directive, message);
    }

    /// A top-level directive other than a listener or a Service.
    fn global(&mut self, directive: &Directive) {
        match directive.keyword.to_ascii_lowercase().as_str() {
            // Nothing for the operator to decide: the unit sets who Tandem runs as.
            "user" => self.findings.note(
                directive,
                "not needed: Tandem runs under systemd's User= (the unit shipped with Tandem \
                 sets it)",
            ),
            "group" => self.findings.note(
                directive,
                "not needed: Tandem runs under systemd's Group= (the unit shipped with Tandem \
                 sets it)",
            ),
            "rootjail" => self.untranslated(
                directive,
                "not needed: Tandem does not chroot; confine it with its systemd unit's \
                 sandboxing (ProtectSystem=, ReadOnlyPaths=)",
            ),
            "daemon" => self.untranslated(
                directive,
                "not needed: Tandem stays in the foreground and systemd supervises it",
            ),
            "threads" => self.untranslated(
                directive,
                "not needed: Tandem's proxy is asynchronous and sizes its own thread pool",
            ),
            "logfacility" => self.untranslated(
                directive,
                "Tandem logs to stderr (the journal under systemd) and writes the access log to \
                 stdout; to write requests to a file instead, set [proxy] access_log = { path = \
                 \"FILE\" }",
            ),
            "control" => self.untranslated(
                directive,
                "not needed: `tandem status` talks to the daemon's control socket ([node] \
                 control_socket)",
            ),
            "include" => self.untranslated(directive, INCLUDE),
            "backend" => self.untranslated(
                directive,
                "named back-ends are not translated: write the back-end inside each Service \
                 that uses it, and import again",
            ),
            "sslengine" | "ecdhcurve" | "dhparams" | "certdir" | "ciphers" => {
                self.untranslated(directive, TLS_SETTINGS);
            }
            "loglevel" => self.log_level(directive),
            "alive" => {
                if let Some(alive) = self.seconds(directive) {
                    self.alive = Some(alive);
                }
            }
            "timeout" => self.timeout(directive, Timeout::Backend),
            "connto" => self.timeout(directive, Timeout::Connect),
            "client" => self.timeout(directive, Timeout::Header),
            _ => self.untranslated(directive, GENERIC),
        }
    }

    /// A positive number of seconds as the only argument; lists the directive otherwise.
    fn seconds(&mut self, directive: &Directive) -> Option<Duration> {
        let seconds = directive
            .single_arg()
            .and_then(parse_seconds)
            .filter(|duration| !duration.is_zero());
        if seconds.is_none() {
            self.untranslated(
                directive,
                format!(
                    "expected a number of seconds greater than 0, e.g. `{} 10`; not translated",
                    directive.keyword
                ),
            );
        }
        seconds
    }

    fn timeout(&mut self, directive: &Directive, which: Timeout) {
        let Some(value) = self.seconds(directive) else {
            return;
        };
        let (slot, key) = match which {
            Timeout::Header => (&mut self.settings.header_timeout, "header_timeout"),
            Timeout::Connect => (&mut self.settings.connect_timeout, "connect_timeout"),
            Timeout::Backend => (&mut self.settings.backend_timeout, "backend_timeout"),
        };
        settle(slot, value, directive, self.findings, key, |kept| {
            format!("\"{}\"", duration_text(kept))
        });
    }

    /// Pound's levels 0 to 2 are Tandem's; 4 (Apache's combined format) is Tandem's 3; 3 and
    /// 5 are combined with more fields, which Tandem does not write.
    fn log_level(&mut self, directive: &Directive) {
        let level = match directive.single_arg().map(str::parse::<u8>) {
            Some(Ok(level @ 0..=5)) => level,
            _ => {
                self.untranslated(
                    directive,
                    "LogLevel takes 0 to 5; not translated (Tandem's [proxy] access_log level \
                     takes 0 to 3)",
                );
                return;
            }
        };
        let written = match level {
            0..=2 => level,
            3 => {
                self.untranslated(
                    directive,
                    "Pound's level 3 puts the virtual host in front of Apache's combined format; \
                     Tandem's level 3 is the plain combined format, and is written",
                );
                3
            }
            4 => {
                self.findings.note(
                    directive,
                    "Pound's level 4 (Apache's combined format) is Tandem's access_log level 3",
                );
                3
            }
            _ => {
                self.untranslated(
                    directive,
                    "Pound's level 5 adds the service and back-end to Apache's combined format; \
                     Tandem's level 3 (the plain combined format) is written, and its level 2 \
                     names service and back-end in a format of its own",
                );
                3
            }
        };
        settle(
            &mut self.settings.access_log_level,
            written,
            directive,
            self.findings,
            "access_log level",
            |kept| kept.to_string(),
        );
    }

    /// An address, or a host name: an address when `--map`/`--hosts` give one, else kept as a
    /// name for the node's resolver.
    fn host(&mut self, directive: &Directive) -> Option<Host> {
        let Some(text) = directive.single_arg() else {
            self.untranslated(directive, "expected one address; not translated");
            return None;
        };
        if let Ok(ip) = text.parse::<IpAddr>() {
            return Some(Host::Ip(ip));
        }
        if let Some(ip) = self.hosts.get(&text.to_ascii_lowercase()) {
            self.findings
                .note(directive, format!("written as {ip}, from --map or --hosts"));
            return Some(Host::Ip(IpAddr::V4(*ip)));
        }
        self.findings.note(
            directive,
            format!(
                "{text} is written as a host name: the node resolves it (system resolver: \
                 /etc/hosts, then DNS) at start and every resolve_interval (30s), each address \
                 a backend; --map {text}=ADDR or --hosts FILE write an address instead"
            ),
        );
        Some(Host::Name(text.to_owned()))
    }

    fn port(&mut self, directive: &Directive) -> Option<u16> {
        let port = directive
            .single_arg()
            .and_then(|text| text.parse::<u16>().ok())
            .filter(|&port| port != 0);
        if port.is_none() {
            self.untranslated(directive, "expected a port from 1 to 65535; not translated");
        }
        port
    }

    fn listener<'d>(&mut self, directive: &'d Directive, tls: bool) -> Listener<'d> {
        let mut address = None;
        let mut port = None;
        let mut certificates = Vec::new();
        let mut services = Vec::new();
        for child in directive.children() {
            match child.keyword.to_ascii_lowercase().as_str() {
                "address" => address = self.host(child).or(address),
                "port" => port = self.port(child).or(port),
                "cert" if tls => match child.single_arg() {
                    Some(file) => certificates.push(file.to_owned()),
                    None => self.untranslated(child, "expected one file name; not translated"),
                },
                "cert" => self.untranslated(
                    child,
                    "a certificate on a plain HTTP listener does nothing; not translated (use \
                     ListenHTTPS for TLS)",
                ),
                "loglevel" => self.log_level(child),
                "client" => self.timeout(child, Timeout::Header),
                "service" => services.push(self.service(child)),
                "xhttp" => self.untranslated(
                    child,
                    "Tandem forwards every request method but CONNECT; if the back-ends must \
                     not see some methods, refuse them there",
                ),
                "headremove" | "addheader" => self.untranslated(
                    child,
                    "Tandem changes no request header but X-Forwarded-For, -Proto and -Port \
                     ([proxy] x_forwarded_*); add or remove this header in the back-end",
                ),
                "rewritelocation" | "rewritedestination" => self.untranslated(
                    child,
                    "Tandem passes Location and Destination headers through unchanged; make the \
                     back-ends answer with the public host name",
                ),
                "checkurl" => self.untranslated(
                    child,
                    "Tandem does not filter request URLs; filter them in the back-end",
                ),
                "err400" | "err401" | "err403" | "err404" | "err413" | "err414" | "err500"
                | "err501" | "err503" => self.untranslated(
                    child,
                    "Tandem answers errors with short pages of its own; custom pages are not \
                     translated",
                ),
                "maxrequest" => self.untranslated(
                    child,
                    "Tandem limits the request head only ([proxy] max_header_size); limit \
                     request bodies in the back-end",
                ),
                "ciphers"
                | "disable"
                | "clientcert"
                | "calist"
                | "verifylist"
                | "crllist"
                | "nohttps11"
                | "sslallowclientrenegotiation"
                | "sslhonorcipherorder"
                | "ecdhcurve"
                | "dhparams" => self.untranslated(child, TLS_SETTINGS),
                "include" => self.untranslated(child, INCLUDE),
                _ => self.untranslated(child, GENERIC),
            }
        }
        let kind = if tls { "ListenHTTPS" } else { "ListenHTTP" };
        let address = address.unwrap_or_else(|| {
            self.findings.note(
                directive,
                format!("{kind} without Address: written as 0.0.0.0 (every address)"),
            );
            Host::Ip(Ipv4Addr::UNSPECIFIED.into())
        });
        let port = port.unwrap_or_else(|| {
            let port = if tls { 443 } else { 80 };
            self.findings
                .note(directive, format!("{kind} without Port: written as {port}"));
            port
        });
        let usable = !tls || !certificates.is_empty();
        if !usable {
            self.untranslated(
                directive,
                "ListenHTTPS without Cert: Tandem needs a certificate to serve HTTPS; its \
                 services are not written (add them with tls = { certificates = [...] })",
            );
        } else if !certificates.is_empty() {
            self.findings.note(
                directive,
                "Pound's Cert file holds the certificate chain and the private key, so each \
                 is written as both cert and key",
            );
        }
        Listener {
            at: directive,
            address,
            port,
            certificates,
            services,
            usable,
        }
    }

    fn service<'d>(&mut self, directive: &'d Directive) -> ServiceSpec<'d> {
        let mut hosts = Vec::new();
        let mut host_line = None;
        let mut path_prefix = None;
        let mut url_line = None;
        let mut backends = Vec::new();
        let mut session = None;
        let mut balance = None;
        for child in directive.children() {
            match child.keyword.to_ascii_lowercase().as_str() {
                "url" => {
                    if let Some(line) = url_line {
                        self.untranslated(
                            child,
                            format!(
                                "a second URL pattern (the first is at line {line}): Pound \
                                 requires both to match, Tandem takes one path_prefix"
                            ),
                        );
                        continue;
                    }
                    url_line = Some(child.line);
                    match child
                        .single_arg()
                        .map(|pattern| (pattern, prefix_of(pattern)))
                    {
                        Some((_, Some(prefix))) => path_prefix = prefix,
                        Some((_, None)) => self.untranslated(
                            child,
                            "not a plain path prefix such as \"^/app\": Tandem chooses services \
                             by path_prefix; write the closest prefix by hand, or leave the \
                             service for every path",
                        ),
                        None => self.untranslated(child, "expected one pattern; not translated"),
                    }
                }
                "headrequire" => {
                    let Some(pattern) = child.single_arg() else {
                        self.untranslated(child, "expected one pattern; not translated");
                        continue;
                    };
                    if !is_host_pattern(pattern) {
                        self.untranslated(child, NOT_A_ROUTE);
                        continue;
                    }
                    match (host_of(pattern), host_line) {
                        (_, Some(line)) => self.untranslated(
                            child,
                            format!(
                                "a second Host requirement (the first is at line {line}): \
                                 Pound requires both to match, so write the one host both \
                                 allow by hand"
                            ),
                        ),
                        (Some(host), None) => {
                            hosts.push(host);
                            host_line = Some(child.line);
                        }
                        (None, None) => self.untranslated(
                            child,
                            "not a plain host name: Tandem chooses services by exact host names \
                             (and \"*.example.com\" for the names below one); write host = \
                             [...] by hand",
                        ),
                    }
                }
                "headdeny" => self.untranslated(child, NOT_A_ROUTE),
                "backend" => backends.extend(self.backend(child, false)),
                "emergency" => backends.extend(self.backend(child, true)),
                // Pound 4: "random" (the default, as in Pound 2) or "iwrr".
                "balancer" => match child.single_arg().map(str::to_ascii_lowercase).as_deref() {
                    Some("random") => balance = Some(BALANCE_RANDOM),
                    Some("iwrr") => balance = Some("round-robin"),
                    _ => self.untranslated(
                        child,
                        "expected random or iwrr; Pound's default (random) is written",
                    ),
                },
                "session" => session = self.session(child).or(session),
                "redirect" | "redirectappend" | "redirectdynamic" => self.untranslated(
                    child,
                    "Tandem has no redirect services; let a back-end answer with the redirect",
                ),
                "disabled" if child.single_arg() == Some("0") => {}
                "disabled" => self.untranslated(
                    child,
                    "Tandem has no disabled services; the service is written, so delete it if \
                     it must take no requests",
                ),
                "ignorecase" if child.single_arg() == Some("0") => {}
                "ignorecase" => self.untranslated(
                    child,
                    "Tandem compares path prefixes with case (host names without); not \
                     translated",
                ),
                "dynscale" => self.untranslated(
                    child,
                    "Tandem does not rescale weights by response time; weights stay as written",
                ),
                "include" => self.untranslated(child, INCLUDE),
                _ => self.untranslated(child, GENERIC),
            }
        }
        // Weights are relative: once one back-end has a Priority, the others have Pound's
        // default rather than Tandem's.
        if backends.iter().any(|backend| backend.weight.is_some()) {
            for backend in backends.iter_mut().filter(|backend| !backend.emergency) {
                backend.weight.get_or_insert(DEFAULT_PRIORITY);
            }
        }
        if backends.iter().all(|backend| backend.emergency) {
            let what = if backends.is_empty() {
                "no BackEnd Tandem can use"
            } else {
                "only Emergency back-ends (which stand in while the regular ones are down)"
            };
            self.untranslated(
                directive,
                format!("{what}: the service is not written; give it a BackEnd"),
            );
            backends.clear();
        }
        ServiceSpec {
            balance: balance.unwrap_or(BALANCE_RANDOM),
            at: directive,
            name: directive.args.first().cloned(),
            hosts,
            path_prefix,
            backends,
            session,
        }
    }

    fn backend(&mut self, directive: &Directive, emergency: bool) -> Option<BackendDraft> {
        let mut address = None;
        let mut port = None;
        let mut weight = None;
        let mut usable = true;
        for child in directive.children() {
            match child.keyword.to_ascii_lowercase().as_str() {
                "address" if child.single_arg().is_some_and(|a| a.starts_with('/')) => {
                    self.untranslated(
                        child,
                        "a Unix socket back-end: Tandem reaches back-ends over TCP; the \
                         back-end is not written (make it listen on a TCP port)",
                    );
                    usable = false;
                }
                "address" => address = self.host(child).or(address),
                "port" => port = self.port(child).or(port),
                "priority" => match child.single_arg().and_then(|text| text.parse::<u32>().ok()) {
                    Some(priority @ 1..=Backend::MAX_WEIGHT) => weight = Some(priority),
                    _ => self.untranslated(
                        child,
                        format!(
                            "expected a priority from 1 to {} (Tandem's weight); not \
                                 translated",
                            Backend::MAX_WEIGHT
                        ),
                    ),
                },
                "timeout" => self.timeout(child, Timeout::Backend),
                "connto" => self.timeout(child, Timeout::Connect),
                "haport" => self.untranslated(
                    child,
                    "Tandem probes each back-end at its own address and port; a separate health \
                     port is not translated (or use health = { type = \"http\", path = \"...\" })",
                ),
                "https" => self.untranslated(
                    child,
                    "Tandem talks plain HTTP to back-ends; the back-end is written with its \
                     port, so make it serve HTTP there",
                ),
                "cert" | "ciphers" | "disable" => self.untranslated(
                    child,
                    "TLS to back-ends is not supported by Tandem; not translated",
                ),
                "disabled" if child.single_arg() == Some("0") => {}
                "disabled" => {
                    self.untranslated(
                        child,
                        "Tandem has no disabled back-ends, so this one is not written; add it to \
                         backends when it should take requests",
                    );
                    usable = false;
                }
                "include" => self.untranslated(child, INCLUDE),
                _ => self.untranslated(child, GENERIC),
            }
        }
        if !usable {
            return None;
        }
        let (Some(address), Some(port)) = (address, port) else {
            self.untranslated(
                directive,
                "a back-end needs an Address and a Port; this one is not written",
            );
            return None;
        };
        Some(BackendDraft {
            address,
            port,
            weight,
            emergency,
        })
    }

    fn session(&mut self, directive: &Directive) -> Option<SessionDraft> {
        let mut kind = None;
        let mut kind_listed = false;
        let mut id = None;
        let mut id_directive = None;
        let mut ttl = None;
        for child in directive.children() {
            match child.keyword.to_ascii_lowercase().as_str() {
                "type" => {
                    let found = child
                        .single_arg()
                        .map(str::to_ascii_lowercase)
                        .and_then(|text| match text.as_str() {
                            "cookie" => Some("cookie"),
                            "ip" => Some("ip"),
                            "header" => Some("header"),
                            "url" => Some("url"),
                            "basic" => Some("basic"),
                            _ => None,
                        });
                    if found.is_none() {
                        kind_listed = true;
                        let parm = child
                            .single_arg()
                            .is_some_and(|t| t.eq_ignore_ascii_case("parm"));
                        self.untranslated(
                            child,
                            if parm {
                                "Tandem has no session by path parameter (\";name=...\"); \
                                 type \"url\" takes a query parameter, \"cookie\" a cookie: \
                                 choose one, the session is not written"
                            } else {
                                "expected Cookie, IP, Header, URL or Basic; the session is not \
                                 written"
                            },
                        );
                    }
                    kind = found.or(kind);
                }
                "id" => match child.single_arg() {
                    Some(text) if !text.is_empty() => {
                        id = Some(text.to_owned());
                        id_directive = Some(child);
                    }
                    _ => self.untranslated(child, "expected one name; not translated"),
                },
                "ttl" => ttl = self.seconds(child).or(ttl),
                "include" => self.untranslated(child, INCLUDE),
                _ => self.untranslated(child, GENERIC),
            }
        }
        let Some(kind) = kind else {
            if !kind_listed {
                self.untranslated(directive, "a Session without Type is not written");
            }
            return None;
        };
        let needs_id = matches!(kind, "cookie" | "header" | "url");
        match (&id, id_directive) {
            (None, _) if needs_id => {
                self.untranslated(
                    directive,
                    format!(
                        "Type {kind} needs an ID (the {} name); the session is not written",
                        match kind {
                            "cookie" => "cookie",
                            "header" => "header",
                            _ => "query parameter",
                        }
                    ),
                );
                return None;
            }
            (Some(_), Some(at)) if !needs_id => {
                self.findings.note(
                    at,
                    format!("Type {kind} uses no ID (neither does Pound); left out"),
                );
                id = None;
            }
            _ => {}
        }
        let ttl = ttl.unwrap_or_else(|| {
            self.findings.note(
                directive,
                format!(
                    "no TTL: written as \"{}\", Tandem's default",
                    duration_text(Session::DEFAULT_TTL)
                ),
            );
            Session::DEFAULT_TTL
        });
        Some(SessionDraft { kind, id, ttl })
    }
}

#[derive(Clone, Copy)]
enum Timeout {
    Header,
    Connect,
    Backend,
}

const INCLUDE: &str = "not followed: `tandem import` reads one file; paste the included file \
                       in its place and import again";
