//! `tandem import`: turns a classic Pound + keepalived pair's configuration into tandem.toml.
//!
//! Each format has a tokenizer of its own (`pound.rs`: line-based blocks closed by `End`;
//! `keepalived.rs`: braces) that gives a tree of [`Directive`]s, and a mapping that fills a
//! draft of the output. Every directive ends up in exactly one of three places: translated
//! into the draft; listed as *not translated*, with its FILE:LINE and what to do about it (the
//! command then exits 2); or, when the translation is right but worth knowing (keepalived's
//! `state MASTER`, a host name taken from `--map`), in the *notes*. Nothing is dropped
//! silently. Both lists go to the top of the output as comments, and the CLI prints them on
//! stderr.
//!
//! What lives here: the entry point [`import`], the draft (plain values written as they will
//! appear, not validated), the lists, and the TOML writer. What does not: any rule of the
//! config format; the output is checked by [`crate::config::parse`] like a hand-written file.
//!
//! Host names: a back-end's host name is written as a name, which the node resolves when it
//! runs (`crate::names`); the import itself never asks DNS (the answer on the machine running
//! the import need not be what the load balancer sees). `--map NAME=ADDR` and `--hosts FILE`
//! ([`parse_map`], [`parse_hosts`]) write an address instead.

mod keepalived;
mod pound;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::fmt::{self, Write as _};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

/// Comment lines of the generated header are wrapped at this width.
const COMMENT_WIDTH: usize = 100;

/// One input file: how to name it in messages, and its text.
#[derive(Debug, Clone, Copy)]
pub struct Source<'a> {
    /// Usually the path as the user gave it.
    pub label: &'a str,
    pub text: &'a str,
}

/// What the files do not say.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// `[node] name`; else keepalived's `router_id`, else the VRRP interface.
    pub node: Option<String>,
    /// Addresses for host names the files use, keyed by lower-case name.
    pub hosts: HashMap<String, Ipv4Addr>,
}

/// The result of an import.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Imported {
    /// The tandem.toml text, the lists below included as comments at its top.
    pub toml: String,
    /// Directives that were not (or not exactly) translated, in file order.
    pub untranslated: Vec<Finding>,
    /// Translations worth knowing about, in file order.
    pub notes: Vec<Finding>,
}

impl Imported {
    /// Whether every directive was translated (the command's exit status 0).
    pub fn is_complete(&self) -> bool {
        self.untranslated.is_empty()
    }
}

/// A directive of an input file, with what the import says about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub file: String,
    /// `None` for something the file as a whole lacks.
    pub line: Option<usize>,
    /// The directive as written (without its comment), when the finding is about one.
    pub directive: Option<String>,
    pub message: String,
}

impl Finding {
    /// `FILE:LINE: LABEL: DIRECTIVE: message`, the form for stderr ("not translated", "note").
    pub fn labelled(&self, label: &str) -> String {
        let mut text = self.file.clone();
        if let Some(line) = self.line {
            let _ = write!(text, ":{line}");
        }
        let _ = write!(text, ": {label}");
        if let Some(directive) = &self.directive {
            let _ = write!(text, ": {directive}");
        }
        let _ = write!(text, ": {}", self.message);
        text
    }
}

impl fmt::Display for Finding {
    /// `FILE:LINE: DIRECTIVE: message`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if let Some(directive) = &self.directive {
            write!(f, ": {directive}")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// A file the import cannot read at all: a quote or a block left open, a block where it
/// cannot be.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}: {message}")]
pub struct SyntaxError {
    pub file: String,
    pub line: usize,
    pub message: String,
}

/// A tokenizer's error, before it is given its file's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct LineError {
    pub line: usize,
    pub message: String,
}

impl LineError {
    fn in_file(self, file: &str) -> SyntaxError {
        SyntaxError {
            file: file.to_owned(),
            line: self.line,
            message: self.message,
        }
    }
}

/// One statement of an input file: its keyword, its arguments (unquoted), and for a block
/// the statements inside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Directive {
    /// As written; Pound compares it without case, keepalived with.
    pub keyword: String,
    pub args: Vec<String>,
    pub line: usize,
    /// The statement as written, without its comment, for the lists.
    pub text: String,
    /// `Some` for a block (`Service ... End`, `vrrp_instance VI_1 { ... }`), even if empty.
    pub block: Option<Vec<Directive>>,
}

/// Appends a finished directive to the innermost open block, or to the top level.
pub(super) fn push_directive(
    open: &mut [Directive],
    root: &mut Vec<Directive>,
    directive: Directive,
) {
    match open.last_mut().and_then(|block| block.block.as_mut()) {
        Some(children) => children.push(directive),
        None => root.push(directive),
    }
}

/// The end of a file: its directives, or an error at the innermost block still open, said by
/// `unclosed` (which names the block and how to close it in that file's syntax).
pub(super) fn finish_tree(
    open: &[Directive],
    root: Vec<Directive>,
    unclosed: impl Fn(&Directive) -> String,
) -> Result<Vec<Directive>, LineError> {
    match open.last() {
        Some(block) => Err(LineError {
            line: block.line,
            message: format!(
                "{}{}",
                unclosed(block),
                match open.len() {
                    1 => String::new(),
                    n => format!(" ({n} blocks are open at the end of the file)"),
                }
            ),
        }),
        None => Ok(root),
    }
}

impl Directive {
    /// The statements of a block; none for a plain directive.
    pub fn children(&self) -> &[Directive] {
        self.block.as_deref().unwrap_or(&[])
    }

    /// The only argument, or `None` if there is not exactly one.
    pub fn single_arg(&self) -> Option<&str> {
        match self.args.as_slice() {
            [arg] => Some(arg),
            _ => None,
        }
    }
}

/// The lists one file's import fills.
pub(super) struct Findings<'a> {
    file: &'a str,
    untranslated: Vec<Finding>,
    notes: Vec<Finding>,
}

impl<'a> Findings<'a> {
    fn new(file: &'a str) -> Self {
        Findings {
            file,
            untranslated: Vec::new(),
            notes: Vec::new(),
        }
    }

    fn finding(&self, directive: Option<&Directive>, message: String) -> Finding {
        Finding {
            file: self.file.to_owned(),
            line: directive.map(|d| d.line),
            directive: directive.map(|d| d.text.clone()),
            message,
        }
    }

    /// `directive` was not translated (or not exactly); `message` says why and what to do.
    pub fn untranslated(&mut self, directive: &Directive, message: impl Into<String>) {
        let finding = self.finding(Some(directive), message.into());
        self.untranslated.push(finding);
    }

    /// `directive` was translated, and the reader should know how.
    pub fn note(&mut self, directive: &Directive, message: impl Into<String>) {
        let finding = self.finding(Some(directive), message.into());
        self.notes.push(finding);
    }

    /// Something about the file as a whole (a default the output spells out).
    pub fn note_file(&mut self, message: impl Into<String>) {
        let finding = self.finding(None, message.into());
        self.notes.push(finding);
    }

    /// Both lists in line order (file-wide notes first), as the reader walks the file.
    fn finish(mut self) -> (Vec<Finding>, Vec<Finding>) {
        self.untranslated.sort_by_key(|f| f.line);
        self.notes.sort_by_key(|f| f.line);
        (self.untranslated, self.notes)
    }
}

/// An address as the source gave it: resolved, or a host name nobody mapped.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) enum Host {
    Ip(IpAddr),
    Name(String),
}

impl Host {
    /// "address:port" as the config writes it: an IPv6 address in brackets.
    pub(super) fn with_port(&self, port: u16) -> String {
        match self {
            Host::Ip(ip) => SocketAddr::new(*ip, port).to_string(),
            Host::Name(name) => format!("{name}:{port}"),
        }
    }
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Ip(ip) => write!(f, "{ip}"),
            Host::Name(name) => write!(f, "{name}"),
        }
    }
}

/// `[node]` as far as the files say it.
struct NodeDraft {
    name: String,
    interface: String,
}

/// A `[[vrrp]]` entry; `None` fields are left out (the default applies).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct VrrpDraft {
    pub name: String,
    /// `None`: the `[node]` interface.
    pub interface: Option<String>,
    /// `None` only when the source lacks it (listed; `tandem check` then asks for it).
    pub virtual_router_id: Option<u8>,
    pub priority: u8,
    pub version: u8,
    pub advert_interval: Duration,
    pub preempt: bool,
    pub preempt_delay: Option<Duration>,
    pub virtual_ipaddress: Vec<Ipv4Addr>,
    pub unicast_peer: Vec<Ipv4Addr>,
    /// `auth_type PASS`: the password as keepalived sends it (at most 8 bytes).
    pub password: Option<String>,
    pub track: Vec<TrackDraft>,
    pub garp_master_repeat: Option<u32>,
    pub garp_master_delay: Option<Duration>,
    pub notify: Option<String>,
}

/// A `track` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum TrackDraft {
    /// `{ builtin = "proxy", weight = W }`.
    Proxy {
        weight: i32,
    },
    Script {
        script: String,
        interval: Option<Duration>,
        timeout: Option<Duration>,
        rise: Option<u32>,
        fall: Option<u32>,
        weight: i32,
    },
    Interface {
        interface: String,
        weight: i32,
    },
}

/// `[proxy]`: only what the source set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct ProxyDraft {
    pub header_timeout: Option<Duration>,
    pub connect_timeout: Option<Duration>,
    pub backend_timeout: Option<Duration>,
    pub access_log_level: Option<u8>,
}

impl ProxyDraft {
    fn is_empty(&self) -> bool {
        *self == ProxyDraft::default()
    }
}

/// A `[[service]]` entry (always `mode = "http"`: Pound is an HTTP proxy).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ServiceDraft {
    pub name: String,
    pub listen: Host,
    pub port: u16,
    pub hosts: Vec<String>,
    pub path_prefix: Option<String>,
    /// Pound's `Cert` files; each holds the chain and the key.
    pub certificates: Vec<String>,
    pub backends: Vec<BackendDraft>,
    pub health_interval: Duration,
    pub session: Option<SessionDraft>,
    /// The config's spelling: "random" (Pound's way) or "round-robin".
    pub balance: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct BackendDraft {
    pub address: Host,
    pub port: u16,
    /// `None`: the default weight.
    pub weight: Option<u32>,
    pub emergency: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct SessionDraft {
    /// The config's spelling: "cookie", "ip", "header", "url", "basic".
    pub kind: &'static str,
    pub id: Option<String>,
    pub ttl: Duration,
}

/// Translates `pound` and/or `keepalived` (one node's file) into tandem.toml.
///
/// Fails only on files it cannot read as their format at all; everything else it cannot
/// translate is listed in [`Imported::untranslated`].
pub fn import(
    pound: Option<Source>,
    keepalived: Option<Source>,
    options: &Options,
) -> Result<Imported, SyntaxError> {
    let mut untranslated = Vec::new();
    let mut notes = Vec::new();

    let mut proxy = ProxyDraft::default();
    let mut services = Vec::new();
    if let Some(source) = pound {
        let directives = pound::tokenize(source.text).map_err(|e| e.in_file(source.label))?;
        let mut findings = Findings::new(source.label);
        let draft = pound::import(&directives, &options.hosts, &mut findings);
        proxy = draft.proxy;
        services = draft.services;
        let (more_untranslated, more_notes) = findings.finish();
        untranslated.extend(more_untranslated);
        notes.extend(more_notes);
    }

    let mut vrrp = Vec::new();
    let mut node = None;
    if let Some(source) = keepalived {
        let directives = keepalived::tokenize(source.text).map_err(|e| e.in_file(source.label))?;
        let mut findings = Findings::new(source.label);
        let draft = keepalived::import(&directives, &mut findings);
        vrrp = draft.vrrp;
        node = Some(keepalived_node(
            options,
            draft.router_id,
            draft.interface,
            &mut findings,
        ));
        let (more_untranslated, more_notes) = findings.finish();
        untranslated.extend(more_untranslated);
        notes.extend(more_notes);
    }
    let node = node.unwrap_or_else(|| {
        let name = options.node.clone().unwrap_or_else(|| "tandem".to_owned());
        notes.push(Finding {
            file: "[node]".to_owned(),
            line: None,
            directive: None,
            message: format!(
                "no keepalived file, so interface = \"eth0\" is a guess{}; set the interface \
                 that holds the listen addresses, and add a [[vrrp]] instance for failover",
                if options.node.is_none() {
                    " and the name \"tandem\" a placeholder (or pass --node NAME)"
                } else {
                    ""
                }
            ),
        });
        NodeDraft {
            name,
            interface: "eth0".to_owned(),
        }
    });

    let sources: Vec<&str> = [pound, keepalived]
        .iter()
        .flatten()
        .map(|source| source.label)
        .collect();
    let mut toml = String::new();
    write_header(&mut toml, &sources, &untranslated, &notes);
    write_node(&mut toml, &node);
    for instance in &vrrp {
        write_vrrp(&mut toml, instance);
    }
    if !proxy.is_empty() {
        write_proxy(&mut toml, &proxy);
    }
    for service in &services {
        write_service(&mut toml, service);
    }
    Ok(Imported {
        toml,
        untranslated,
        notes,
    })
}

/// The node's name and interface from keepalived: `--node`, else `router_id`, else the
/// interface of the first instance.
fn keepalived_node(
    options: &Options,
    router_id: Option<String>,
    interface: Option<String>,
    findings: &mut Findings,
) -> NodeDraft {
    let interface = interface.unwrap_or_else(|| {
        findings.note_file(
            "no vrrp_instance names an interface: [node] interface = \"eth0\" is a guess; set \
             the interface that holds the virtual addresses",
        );
        "eth0".to_owned()
    });
    let name = match (&options.node, router_id) {
        (Some(name), _) => name.clone(),
        (None, Some(router_id)) => router_id,
        (None, None) => {
            findings.note_file(format!(
                "no router_id in global_defs and no --node: the node is named after its \
                 interface ({interface:?}); set [node] name (e.g. \"lb1\") or pass --node NAME"
            ));
            interface.clone()
        }
    };
    NodeDraft { name, interface }
}

/// `--map NAME=ADDR`: a host name and the IPv4 address to use for it.
pub fn parse_map(arg: &str) -> Result<(String, Ipv4Addr), String> {
    let Some((name, address)) = arg.split_once('=') else {
        return Err(format!(
            "{arg:?} is not NAME=ADDR; write e.g. http1.example.com=198.18.0.102"
        ));
    };
    let name = name.trim();
    if name.is_empty() {
        return Err(format!(
            "{arg:?} has no host name before '='; write e.g. http1.example.com=198.18.0.102"
        ));
    }
    let address = address.trim().parse::<Ipv4Addr>().map_err(|_| {
        format!("{arg:?}: {address:?} is not an IPv4 address; write e.g. {name}=198.18.0.102")
    })?;
    Ok((name.to_ascii_lowercase(), address))
}

/// The IPv4 entries of a hosts file (`/etc/hosts` format: address, name, aliases; `#`
/// comments). The first address given for a name wins, as with the resolver.
pub fn parse_hosts(text: &str) -> HashMap<String, Ipv4Addr> {
    let mut hosts = HashMap::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or_default();
        let mut words = line.split_whitespace();
        let Some(Ok(address)) = words.next().map(str::parse::<Ipv4Addr>) else {
            continue;
        };
        for name in words {
            hosts.entry(name.to_ascii_lowercase()).or_insert(address);
        }
    }
    hosts
}

/// Seconds as the classic files write them ("2", "0.5") into a duration.
pub(super) fn parse_seconds(text: &str) -> Option<Duration> {
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    if whole.is_empty() && fraction.is_empty()
        || !whole.bytes().all(|b| b.is_ascii_digit())
        || !fraction.bytes().all(|b| b.is_ascii_digit())
        || fraction.len() > 9
    {
        return None;
    }
    let secs = if whole.is_empty() {
        0
    } else {
        whole.parse().ok()?
    };
    let nanos = if fraction.is_empty() {
        0
    } else {
        format!("{fraction:0<9}").parse().ok()?
    };
    Some(Duration::new(secs, nanos))
}

/// A duration as the config file writes it: "2s", "500ms", else humantime's form.
pub(super) fn duration_text(duration: Duration) -> String {
    if duration.subsec_nanos() == 0 {
        format!("{}s", duration.as_secs())
    } else if duration.subsec_nanos().is_multiple_of(1_000_000) {
        format!("{}ms", duration.as_millis())
    } else {
        humantime::format_duration(duration).to_string()
    }
}

/// A TOML basic string.
fn toml_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `key = [a, b]` on one line when it fits, else one element per line.
fn write_list(out: &mut String, key: &str, elements: &[String]) {
    let one_line = format!("{key} = [{}]", elements.join(", "));
    if one_line.len() <= COMMENT_WIDTH {
        out.push_str(&one_line);
        out.push('\n');
        return;
    }
    let _ = writeln!(out, "{key} = [");
    for element in elements {
        let _ = writeln!(out, "    {element},");
    }
    out.push_str("]\n");
}

/// `{ a = 1, b = "x" }`.
fn inline_table(pairs: &[(&str, String)]) -> String {
    let body: Vec<String> = pairs
        .iter()
        .map(|(key, value)| format!("{key} = {value}"))
        .collect();
    format!("{{ {} }}", body.join(", "))
}

/// Appends `text` as comment lines: `first` before the first line, `rest` before the others,
/// words wrapped at [`COMMENT_WIDTH`] (a word longer than a line stays whole). Control
/// characters, which a TOML comment may not hold, are written escaped (`\u{1}`): a directive
/// quoted from a file may have them, and the output must still be TOML.
fn write_wrapped_comment(out: &mut String, first: &str, rest: &str, text: &str) {
    let mut line = first.to_owned();
    let mut empty = true;
    for word in text.split_whitespace() {
        let mut escaped = String::new();
        let word = if word.contains(|c: char| c.is_ascii_control()) {
            for c in word.chars() {
                if c.is_ascii_control() {
                    escaped.extend(c.escape_default());
                } else {
                    escaped.push(c);
                }
            }
            escaped.as_str()
        } else {
            word
        };
        if !empty && line.len() + 1 + word.len() > COMMENT_WIDTH {
            out.push_str(&line);
            out.push('\n');
            line = rest.to_owned();
            empty = true;
        }
        if !empty {
            line.push(' ');
        }
        line.push_str(word);
        empty = false;
    }
    out.push_str(&line);
    out.push('\n');
}

fn write_header(out: &mut String, sources: &[&str], untranslated: &[Finding], notes: &[Finding]) {
    let _ = writeln!(
        out,
        "# Imported by `tandem import` from {}.",
        sources.join(" and ")
    );
    out.push_str("# Review it, then validate it with: tandem check --config FILE\n");
    if !untranslated.is_empty() {
        out.push_str(
            "#\n# NOT TRANSLATED: decide what each of these needs (the hint says), then delete \
             this list.\n",
        );
        for finding in untranslated {
            write_wrapped_comment(out, "#  ", "#      ", &finding.to_string());
        }
    }
    if !notes.is_empty() {
        out.push_str("#\n# Notes on the translation:\n");
        for finding in notes {
            write_wrapped_comment(out, "#  ", "#      ", &finding.to_string());
        }
    }
}

fn write_node(out: &mut String, node: &NodeDraft) {
    let _ = writeln!(
        out,
        "\n[node]\nname = {}\ninterface = {}",
        toml_string(&node.name),
        toml_string(&node.interface)
    );
}

fn write_vrrp(out: &mut String, vrrp: &VrrpDraft) {
    let _ = writeln!(out, "\n[[vrrp]]\nname = {}", toml_string(&vrrp.name));
    if let Some(interface) = &vrrp.interface {
        let _ = writeln!(out, "interface = {}", toml_string(interface));
    }
    if let Some(vrid) = vrrp.virtual_router_id {
        let _ = writeln!(out, "virtual_router_id = {vrid}");
    }
    let _ = writeln!(out, "priority = {}", vrrp.priority);
    let _ = writeln!(out, "version = {}", vrrp.version);
    let _ = writeln!(
        out,
        "advert_interval = {}",
        toml_string(&duration_text(vrrp.advert_interval))
    );
    if !vrrp.preempt {
        out.push_str("preempt = false\n");
    }
    if let Some(delay) = vrrp.preempt_delay {
        let _ = writeln!(
            out,
            "preempt_delay = {}",
            toml_string(&duration_text(delay))
        );
    }
    let addresses = |list: &[Ipv4Addr]| -> Vec<String> {
        list.iter().map(|ip| toml_string(&ip.to_string())).collect()
    };
    write_list(
        out,
        "virtual_ipaddress",
        &addresses(&vrrp.virtual_ipaddress),
    );
    if !vrrp.unicast_peer.is_empty() {
        write_list(out, "unicast_peer", &addresses(&vrrp.unicast_peer));
    }
    if let Some(password) = &vrrp.password {
        let _ = writeln!(
            out,
            "authentication = {}",
            inline_table(&[
                ("type", toml_string("PASS")),
                ("password", toml_string(password)),
            ])
        );
    }
    if !vrrp.track.is_empty() {
        let tracks: Vec<String> = vrrp.track.iter().map(track_text).collect();
        write_list(out, "track", &tracks);
    }
    if let Some(repeat) = vrrp.garp_master_repeat {
        let _ = writeln!(out, "garp_master_repeat = {repeat}");
    }
    if let Some(delay) = vrrp.garp_master_delay {
        let _ = writeln!(
            out,
            "garp_master_delay = {}",
            toml_string(&duration_text(delay))
        );
    }
    if let Some(notify) = &vrrp.notify {
        let _ = writeln!(out, "notify = {}", toml_string(notify));
    }
}

fn track_text(track: &TrackDraft) -> String {
    match track {
        TrackDraft::Proxy { weight } => inline_table(&[
            ("builtin", toml_string("proxy")),
            ("weight", weight.to_string()),
        ]),
        TrackDraft::Script {
            script,
            interval,
            timeout,
            rise,
            fall,
            weight,
        } => {
            let mut pairs = vec![("script", toml_string(script))];
            if let Some(interval) = interval {
                pairs.push(("interval", toml_string(&duration_text(*interval))));
            }
            if let Some(timeout) = timeout {
                pairs.push(("timeout", toml_string(&duration_text(*timeout))));
            }
            if let Some(rise) = rise {
                pairs.push(("rise", rise.to_string()));
            }
            if let Some(fall) = fall {
                pairs.push(("fall", fall.to_string()));
            }
            pairs.push(("weight", weight.to_string()));
            inline_table(&pairs)
        }
        TrackDraft::Interface { interface, weight } => inline_table(&[
            ("interface", toml_string(interface)),
            ("weight", weight.to_string()),
        ]),
    }
}

fn write_proxy(out: &mut String, proxy: &ProxyDraft) {
    out.push_str("\n[proxy]\n");
    let timeouts = [
        ("header_timeout", proxy.header_timeout),
        ("connect_timeout", proxy.connect_timeout),
        ("backend_timeout", proxy.backend_timeout),
    ];
    for (key, value) in timeouts {
        if let Some(value) = value {
            let _ = writeln!(out, "{key} = {}", toml_string(&duration_text(value)));
        }
    }
    if let Some(level) = proxy.access_log_level {
        let _ = writeln!(
            out,
            "access_log = {}",
            inline_table(&[("level", level.to_string())])
        );
    }
}

fn write_service(out: &mut String, service: &ServiceDraft) {
    let _ = writeln!(
        out,
        "\n[[service]]\nname = {}\nlisten = {}\nmode = \"http\"",
        toml_string(&service.name),
        toml_string(&service.listen.with_port(service.port))
    );
    let _ = writeln!(out, "balance = {}", toml_string(service.balance));
    if !service.hosts.is_empty() {
        let hosts: Vec<String> = service.hosts.iter().map(|h| toml_string(h)).collect();
        write_list(out, "host", &hosts);
    }
    if let Some(prefix) = &service.path_prefix {
        let _ = writeln!(out, "path_prefix = {}", toml_string(prefix));
    }
    if !service.certificates.is_empty() {
        let certificates: Vec<String> = service
            .certificates
            .iter()
            .map(|file| inline_table(&[("cert", toml_string(file)), ("key", toml_string(file))]))
            .collect();
        let one_line = format!("tls = {{ certificates = [{}] }}", certificates.join(", "));
        if one_line.len() <= COMMENT_WIDTH {
            out.push_str(&one_line);
            out.push('\n');
        } else {
            out.push_str("tls.certificates = [\n");
            for certificate in &certificates {
                let _ = writeln!(out, "    {certificate},");
            }
            out.push_str("]\n");
        }
    }
    let plain = service
        .backends
        .iter()
        .all(|backend| backend.weight.is_none() && !backend.emergency);
    let backends: Vec<String> = service
        .backends
        .iter()
        .map(|backend| {
            let address = toml_string(&backend.address.with_port(backend.port));
            if plain {
                return address;
            }
            let mut pairs = vec![("address", address)];
            if let Some(weight) = backend.weight {
                pairs.push(("weight", weight.to_string()));
            }
            if backend.emergency {
                pairs.push(("emergency", "true".to_owned()));
            }
            inline_table(&pairs)
        })
        .collect();
    write_list(out, "backends", &backends);
    let _ = writeln!(
        out,
        "health = {}",
        inline_table(&[(
            "interval",
            toml_string(&duration_text(service.health_interval))
        )])
    );
    if let Some(session) = &service.session {
        let mut pairs = vec![("type", toml_string(session.kind))];
        if let Some(id) = &session.id {
            pairs.push(("id", toml_string(id)));
        }
        pairs.push(("ttl", toml_string(&duration_text(session.ttl))));
        let _ = writeln!(out, "session = {}", inline_table(&pairs));
    }
}
