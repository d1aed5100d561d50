//! keepalived.conf (one node's): the tokenizer, and the mapping of its VRRP part onto
//! `[[vrrp]]` and the `[node]` name and interface.
//!
//! The format: statements end at the end of a line unless a `{` opens a block (on the same
//! line or the next); `}` closes one; `!` and `#` start a comment where a word could start;
//! double quotes group words. keepalived's keywords are lower case and compared as written.
//!
//! The mapping follows keepalived's defaults where Tandem's differ, so the node elects as the
//! keepalived node did: VRRP version 2 unless `vrrp_version` says otherwise, advert interval
//! 1 s, preemption on. The classic track script (`killall -0 pound`, or `pidof pound`)
//! becomes Tandem's built-in proxy check; other scripts stay scripts. `auth_type PASS` becomes
//! `authentication` with the password keepalived actually sends (its first 8 bytes). LVS
//! (`virtual_server`), sync groups, mail and `auth_type AH` have no counterpart and are listed.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use super::{
    duration_text, finish_tree, parse_seconds, push_directive, Directive, Findings, LineError,
    TrackDraft, VrrpDraft,
};
use crate::config::{VrrpAuthentication, VrrpInstance};

/// keepalived's VRRP version when `vrrp_version` is not set.
const KEEPALIVED_DEFAULT_VERSION: u8 = 2;
/// keepalived's bound on tracker weights (Tandem's is 254).
const MAX_WEIGHT: i32 = 254;

const GENERIC: &str = "Tandem has no equivalent for this directive; check that the setup works \
                       without it";
const INCLUDE: &str = "not followed: `tandem import` reads one file; paste the included file \
                       in its place and import again";
const MAIL: &str = "Tandem sends no mail; a `notify` script can, on every state change";

/// Reads keepalived.conf into directives; fails on an unterminated quote, a `}` too many, a
/// `{` with nothing before it, or a block left open.
pub(super) fn tokenize(text: &str) -> Result<Vec<Directive>, LineError> {
    let mut root: Vec<Directive> = Vec::new();
    // The blocks open at this point, outermost first.
    let mut open: Vec<Directive> = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        // The statement being read, with where it starts in the line.
        let mut current: Option<(Directive, usize)> = None;
        for token in lex_line(line, number)? {
            match token {
                Token::Word {
                    text: word,
                    start,
                    end,
                } => match current.as_mut() {
                    Some((directive, first)) => {
                        directive.args.push(word);
                        directive.text = line[*first..end].to_owned();
                    }
                    None => {
                        let directive = Directive {
                            keyword: word,
                            args: Vec::new(),
                            line: number,
                            text: line[start..end].to_owned(),
                            block: None,
                        };
                        current = Some((directive, start));
                    }
                },
                Token::Open => {
                    let opener = match current.take() {
                        Some((directive, _)) => directive,
                        // `name args` on one line and `{` alone on the next.
                        None => match take_last_plain(&mut open, &mut root) {
                            Some(directive) => directive,
                            None => {
                                return Err(LineError {
                                    line: number,
                                    message: "`{` without a keyword before it".to_owned(),
                                })
                            }
                        },
                    };
                    open.push(Directive {
                        block: Some(Vec::new()),
                        ..opener
                    });
                }
                Token::Close => {
                    if let Some((directive, _)) = current.take() {
                        push_directive(&mut open, &mut root, directive);
                    }
                    let Some(done) = open.pop() else {
                        return Err(LineError {
                            line: number,
                            message: "`}` without a block to close".to_owned(),
                        });
                    };
                    push_directive(&mut open, &mut root, done);
                }
            }
        }
        if let Some((directive, _)) = current {
            push_directive(&mut open, &mut root, directive);
        }
    }
    finish_tree(&open, root, |block| {
        format!(
            "the block of `{}` is never closed: a `}}` is missing",
            block.text
        )
    })
}

/// The last statement of the innermost open block (or the top level) if it has no block yet,
/// to become the opener of a `{` written on the next line.
fn take_last_plain(open: &mut [Directive], root: &mut Vec<Directive>) -> Option<Directive> {
    let list = match open.last_mut().and_then(|block| block.block.as_mut()) {
        Some(children) => children,
        None => root,
    };
    if list.last().is_some_and(|last| last.block.is_none()) {
        list.pop()
    } else {
        None
    }
}

enum Token {
    Word {
        text: String,
        /// Byte offsets in the line, quotes included.
        start: usize,
        end: usize,
    },
    Open,
    Close,
}

/// The tokens of one line, up to a comment.
fn lex_line(line: &str, number: usize) -> Result<Vec<Token>, LineError> {
    let mut tokens = Vec::new();
    let mut chars = line.char_indices().peekable();
    while let Some(&(start, c)) = chars.peek() {
        match c {
            c if c.is_whitespace() => {
                chars.next();
            }
            '!' | '#' => break,
            '{' => {
                chars.next();
                tokens.push(Token::Open);
            }
            '}' => {
                chars.next();
                tokens.push(Token::Close);
            }
            '"' => {
                chars.next();
                let mut text = String::new();
                let mut end = None;
                while let Some((at, c)) = chars.next() {
                    match c {
                        '"' => {
                            end = Some(at + 1);
                            break;
                        }
                        '\\' if chars.peek().is_some_and(|&(_, next)| next == '"') => {
                            text.push('"');
                            chars.next();
                        }
                        c => text.push(c),
                    }
                }
                let Some(end) = end else {
                    return Err(LineError {
                        line: number,
                        message: "unterminated quoted string: add the closing \"".to_owned(),
                    });
                };
                tokens.push(Token::Word { text, start, end });
            }
            _ => {
                let mut end = start;
                while let Some(&(at, c)) = chars.peek() {
                    if c.is_whitespace() || c == '{' || c == '}' {
                        break;
                    }
                    end = at + c.len_utf8();
                    chars.next();
                }
                tokens.push(Token::Word {
                    text: line[start..end].to_owned(),
                    start,
                    end,
                });
            }
        }
    }
    Ok(tokens)
}

/// What keepalived.conf gives the output.
pub(super) struct KeepalivedDraft {
    pub router_id: Option<String>,
    /// The first instance's interface: the node's.
    pub interface: Option<String>,
    pub vrrp: Vec<VrrpDraft>,
}

/// Maps the directives of one node's keepalived.conf; what does not map goes to `findings`.
pub(super) fn import(directives: &[Directive], findings: &mut Findings) -> KeepalivedDraft {
    let mut reader = Reader {
        findings,
        globals: Globals::default(),
        scripts: HashMap::new(),
        tracked: HashMap::new(),
    };
    // Definitions first: instances may use them before they are written.
    for directive in directives {
        match directive.keyword.as_str() {
            "global_defs" => reader.global_defs(directive),
            "vrrp_script" => match directive.single_arg() {
                Some(name) => {
                    if let Some(first) = reader.scripts.insert(name, directive) {
                        reader.findings.untranslated(
                            first,
                            format!(
                                "vrrp_script {name} is defined again at line {}, which is the \
                                 one translated",
                                directive.line
                            ),
                        );
                    }
                }
                None => reader
                    .findings
                    .untranslated(directive, "a vrrp_script needs one name; not translated"),
            },
            _ => {}
        }
    }
    let mut vrrp = Vec::new();
    for directive in directives {
        match directive.keyword.as_str() {
            "global_defs" | "vrrp_script" => {}
            "vrrp_instance" => vrrp.push(reader.instance(directive)),
            "vrrp_sync_group" => reader.findings.untranslated(
                directive,
                "Tandem has no sync groups: each [[vrrp]] instance elects on its own; give the \
                 instances the same priorities and trackers so they move together",
            ),
            "virtual_server" | "virtual_server_group" => reader.findings.untranslated(
                directive,
                "LVS virtual servers are not translated: write each as a [[service]] with mode \
                 = \"tcp\" (or \"udp\") and its real_servers as backends",
            ),
            "static_ipaddress" | "static_routes" | "static_rules" => reader.findings.untranslated(
                directive,
                "Tandem does not manage static addresses or routes; keep them in the \
                     system's network configuration",
            ),
            _ => reader.unknown(directive),
        }
    }
    let mut unused: Vec<&Directive> = reader
        .scripts
        .values()
        .filter(|script| !reader.tracked.contains_key(&script.line))
        .copied()
        .collect();
    unused.sort_by_key(|script| script.line);
    for script in unused {
        reader.findings.note(
            script,
            "no vrrp_instance tracks this script, so keepalived never runs it; nothing to \
             translate",
        );
    }
    let interface = vrrp.iter().find_map(|instance| instance.interface.clone());
    // The node's interface is the default of every instance: spell out only the others.
    for instance in &mut vrrp {
        if instance.interface == interface {
            instance.interface = None;
        }
    }
    KeepalivedDraft {
        router_id: reader.globals.router_id,
        interface,
        vrrp,
    }
}

#[derive(Default)]
struct Globals {
    router_id: Option<String>,
    version: Option<u8>,
    /// `vrrp_strict`: keepalived then sends no authentication, whatever an instance says.
    strict: bool,
    garp_master_delay: Option<Duration>,
    garp_master_repeat: Option<u32>,
}

struct Reader<'a, 'f> {
    findings: &'a mut Findings<'f>,
    globals: Globals,
    /// `vrrp_script` blocks by name.
    scripts: HashMap<&'a str, &'a Directive>,
    /// Scripts translated so far, by their line: the block's own findings are listed once.
    tracked: HashMap<usize, Option<TrackDraft>>,
}

impl<'a> Reader<'a, '_> {
    /// Anything without a translation; `include` gets its own hint.
    fn unknown(&mut self, directive: &Directive) {
        let message = if directive.keyword == "include" {
            INCLUDE
        } else {
            GENERIC
        };
        self.findings.untranslated(directive, message);
    }

    fn global_defs(&mut self, directive: &Directive) {
        for child in directive.children() {
            match child.keyword.as_str() {
                "router_id" => match child.single_arg() {
                    Some(name) => self.globals.router_id = Some(name.to_owned()),
                    None => self
                        .findings
                        .untranslated(child, "expected one name; not translated"),
                },
                "vrrp_version" => self.globals.version = self.version(child),
                "vrrp_garp_master_delay" => {
                    self.globals.garp_master_delay = self.seconds(child, true);
                }
                "vrrp_garp_master_repeat" => {
                    self.globals.garp_master_repeat = self.garp_repeat(child);
                }
                "notification_email"
                | "notification_email_from"
                | "smtp_server"
                | "smtp_helo_name"
                | "smtp_connect_timeout"
                | "smtp_alert"
                | "smtp_alert_vrrp" => self.findings.untranslated(child, MAIL),
                "enable_script_security" | "script_user" => self.findings.untranslated(
                    child,
                    "not needed: Tandem runs track and notify scripts as its own user \
                     (systemd's User=); make them work as that user",
                ),
                "vrrp_strict" => {
                    self.globals.strict = true;
                    self.findings.untranslated(
                        child,
                        "not needed: Tandem checks adverts as RFC 5798 says in any case, and adds \
                         no firewall rules",
                    );
                }
                keyword if keyword.starts_with("lvs_") => self.findings.untranslated(
                    child,
                    "an LVS setting: Tandem's L4 services ([[service]] mode = \"tcp\") need \
                     none",
                ),
                _ => self.unknown(child),
            }
        }
    }

    fn version(&mut self, directive: &Directive) -> Option<u8> {
        match directive.single_arg() {
            Some("2") => Some(2),
            Some("3") => Some(3),
            _ => {
                self.findings
                    .untranslated(directive, "expected version 2 or 3; not translated");
                None
            }
        }
    }

    /// Seconds ("2", "0.5"); zero only where `zero_ok`.
    fn seconds(&mut self, directive: &Directive, zero_ok: bool) -> Option<Duration> {
        let seconds = directive
            .single_arg()
            .and_then(parse_seconds)
            .filter(|duration| zero_ok || !duration.is_zero());
        if seconds.is_none() {
            self.findings.untranslated(
                directive,
                format!(
                    "expected a number of seconds{}; not translated",
                    if zero_ok { "" } else { " greater than 0" }
                ),
            );
        }
        seconds
    }

    fn garp_repeat(&mut self, directive: &Directive) -> Option<u32> {
        let repeat = directive
            .single_arg()
            .and_then(|text| text.parse::<u32>().ok())
            .filter(|&repeat| repeat <= 100);
        if repeat.is_none() {
            self.findings
                .untranslated(directive, "expected a count from 0 to 100; not translated");
        }
        repeat
    }

    /// An integer in `min..=max`, the only argument.
    fn integer(&mut self, directive: &Directive, min: i64, max: i64) -> Option<i64> {
        let value = directive
            .single_arg()
            .and_then(|text| text.parse::<i64>().ok())
            .filter(|value| (min..=max).contains(value));
        if value.is_none() {
            self.findings.untranslated(
                directive,
                format!("expected a whole number from {min} to {max}; not translated"),
            );
        }
        value
    }

    fn instance(&mut self, directive: &'a Directive) -> VrrpDraft {
        let name = match directive.single_arg() {
            Some(name) => name.to_owned(),
            None => {
                let name = format!("VI_line{}", directive.line);
                self.findings.untranslated(
                    directive,
                    format!("a vrrp_instance needs one name; written as {name:?}"),
                );
                name
            }
        };
        let mut interface = None;
        let mut state = None;
        let mut virtual_router_id = None;
        let mut priority = None;
        let mut version = None;
        let mut advert = None;
        let mut preempt = true;
        let mut preempt_delay = None;
        let mut addresses: Vec<(&Directive, IpAddr, Option<&str>)> = Vec::new();
        let mut unicast_peer = Vec::new();
        let mut track = Vec::new();
        let mut garp_master_delay = self.globals.garp_master_delay;
        let mut garp_master_repeat = self.globals.garp_master_repeat;
        let mut notify = None;
        let mut authentication = None;
        for child in directive.children() {
            match child.keyword.as_str() {
                "interface" => match child.single_arg() {
                    Some(name) => interface = Some(name.to_owned()),
                    None => self
                        .findings
                        .untranslated(child, "expected one interface; not translated"),
                },
                "state" => match child.single_arg() {
                    Some("MASTER" | "BACKUP") => state = Some(child),
                    _ => self
                        .findings
                        .untranslated(child, "expected MASTER or BACKUP; not translated"),
                },
                "virtual_router_id" => {
                    virtual_router_id = self.integer(child, 1, 255).map(|id| id as u8);
                }
                "priority" => priority = self.integer(child, 1, 255).map(|p| p as u8),
                "version" => version = self.version(child).or(version),
                "advert_int" => advert = self.seconds(child, false).map(|d| (child, d)),
                "nopreempt" => preempt = false,
                "preempt_delay" => preempt_delay = self.seconds(child, true),
                "virtual_ipaddress" => {
                    for entry in child.children() {
                        if let Some((address, dev)) = self.virtual_address(entry) {
                            addresses.push((entry, address, dev));
                        }
                    }
                }
                "unicast_peer" => {
                    for entry in child.children() {
                        if let Some(peer) = self.peer(entry) {
                            unicast_peer.push((entry, peer));
                        }
                    }
                }
                "track_script" => {
                    for entry in child.children() {
                        track.extend(self.track_script(entry));
                    }
                }
                "track_interface" => {
                    for entry in child.children() {
                        track.extend(self.track_interface(entry));
                    }
                }
                "garp_master_delay" => garp_master_delay = self.seconds(child, true),
                "garp_master_repeat" => garp_master_repeat = self.garp_repeat(child),
                "notify" if !child.args.is_empty() => notify = Some(child.args.join(" ")),
                "notify_master"
                | "notify_backup"
                | "notify_fault"
                | "notify_stop"
                | "notify_master_rx_lower_pri" => self.findings.untranslated(
                    child,
                    "Tandem runs one `notify` script on every transition, with the instance \
                     name, the new state and the priority as arguments; point `notify` at a \
                     script that acts on the state",
                ),
                // Read once the version is known: keepalived ignores it with version 3.
                "authentication" => authentication = Some(child),
                "virtual_ipaddress_excluded" => self.findings.untranslated(
                    child,
                    "Tandem advertises and adds every virtual address alike; move these into \
                     virtual_ipaddress, or into a second [[vrrp]] instance",
                ),
                "unicast_src_ip" | "mcast_src_ip" => self.findings.untranslated(
                    child,
                    "Tandem sends adverts from the interface's primary address (for IPv6 its \
                     link-local address); make sure that is the address the peer expects",
                ),
                "track_process" | "track_file" | "track_bfd" => self.findings.untranslated(
                    child,
                    "Tandem tracks its proxy, scripts and interfaces: write a script tracker \
                     that checks the same, e.g. { script = \"pidof NAME\", weight = W }",
                ),
                "smtp_alert" => self.findings.untranslated(child, MAIL),
                "use_vmac" | "vmac_xmit_base" => self.findings.untranslated(
                    child,
                    "Tandem keeps the interface's own MAC address and moves the virtual address \
                     with gratuitous ARPs (unsolicited neighbour advertisements for IPv6); no \
                     virtual MAC is translated",
                ),
                "native_ipv6" => self.findings.untranslated(
                    child,
                    "Tandem runs an instance over the family of its virtual addresses: IPv6 \
                     addresses make it an IPv6 instance, with no setting",
                ),
                "debug" => self.findings.untranslated(
                    child,
                    "set TANDEM_LOG=debug in the daemon's environment instead",
                ),
                _ => self.unknown(child),
            }
        }

        if interface.is_none() {
            self.findings.untranslated(
                directive,
                "no interface (keepalived requires one): the instance uses [node] interface",
            );
        }
        if virtual_router_id.is_none() {
            self.findings.untranslated(
                directive,
                "no virtual_router_id: add it to the [[vrrp]] entry (1 to 255, the same on both \
                 nodes); `tandem check` asks for it",
            );
        }
        // As keepalived: the first address sets the instance's family, and an address of
        // the other one is left out (keepalived logs and ignores it too).
        let family_is_ipv6 = addresses.first().map(|(_, address, _)| address.is_ipv6());
        let mut virtual_ipaddress = Vec::new();
        for (entry, address, dev) in addresses {
            match (dev, interface.as_deref()) {
                (Some(dev), Some(interface)) if dev != interface => self.findings.untranslated(
                    entry,
                    format!(
                        "Tandem adds an instance's addresses on its interface ({interface}); \
                         put this one in an instance on {dev}; not written"
                    ),
                ),
                _ if Some(address.is_ipv6()) != family_is_ipv6 => self.findings.untranslated(
                    entry,
                    format!(
                        "{address} is not of the family of the instance's first address (one \
                         family per instance, as keepalived ignores it too): put it in a second \
                         [[vrrp]] instance; not written"
                    ),
                ),
                _ => virtual_ipaddress.push(address),
            }
        }
        let mut peers = Vec::new();
        for (entry, peer) in unicast_peer {
            if family_is_ipv6.is_some_and(|ipv6| ipv6 != peer.is_ipv6()) {
                self.findings.untranslated(
                    entry,
                    format!(
                        "{peer} is not of the family of the instance's virtual addresses: \
                         adverts go between addresses of one family; not written"
                    ),
                );
            } else {
                peers.push(peer);
            }
        }
        let unicast_peer = peers;
        if virtual_ipaddress.is_empty() {
            self.findings.untranslated(
                directive,
                "no virtual address Tandem can use: add virtual_ipaddress to the [[vrrp]] \
                 entry; `tandem check` asks for it",
            );
        }
        let priority = priority.unwrap_or(VrrpInstance::DEFAULT_PRIORITY);
        if let Some(at) = state {
            self.findings.note(
                at,
                format!(
                    "no equivalent, and none needed: Tandem starts every node as backup and the \
                     highest priority becomes master (this node: {priority}, plus its trackers' \
                     weights)"
                ),
            );
        }
        let version = match version.or(self.globals.version) {
            // keepalived runs IPv6 instances with version 3 whatever it is told (RFC 3768
            // defines version 2 for IPv4 only).
            Some(2) if family_is_ipv6 == Some(true) => {
                self.findings.note(
                    directive,
                    "VRRP version 2 carries IPv4 only: keepalived runs this IPv6 instance with \
                     version 3, and so version = 3 is written",
                );
                3
            }
            Some(version) => version,
            None if family_is_ipv6 == Some(true) => 3,
            None => {
                self.findings.note(
                    directive,
                    format!(
                        "keepalived speaks VRRP version {KEEPALIVED_DEFAULT_VERSION} unless \
                         vrrp_version says otherwise, so version = {KEEPALIVED_DEFAULT_VERSION} \
                         is written: the node then elects with a keepalived peer during the \
                         migration; once both nodes run Tandem, version = 3 allows sub-second \
                         adverts"
                    ),
                );
                KEEPALIVED_DEFAULT_VERSION
            }
        };
        let password = authentication.and_then(|block| self.authentication(block, version));
        let advert_interval = match advert {
            Some((at, interval)) if version == 2 && interval.subsec_nanos() != 0 => {
                let rounded = Duration::from_secs(interval.as_secs().max(1));
                self.findings.untranslated(
                    at,
                    format!(
                        "VRRP version 2 counts whole seconds: written as \"{}\"; set version = \
                         3 (on both nodes) for sub-second adverts",
                        duration_text(rounded)
                    ),
                );
                rounded
            }
            Some((_, interval)) => interval,
            None => VrrpInstance::DEFAULT_ADVERT_INTERVAL,
        };
        VrrpDraft {
            name,
            interface,
            virtual_router_id,
            priority,
            version,
            advert_interval,
            preempt,
            preempt_delay,
            virtual_ipaddress,
            unicast_peer,
            password,
            track,
            garp_master_repeat,
            garp_master_delay,
            notify,
        }
    }

    /// An instance's `authentication` block: the password of `auth_type PASS` as keepalived
    /// sends it, or `None` (listed or noted) where keepalived sends no authentication or
    /// Tandem has no counterpart. keepalived's own rules (vrrp/vrrp.c, vrrp_parser.c): the
    /// password is truncated to 8 bytes; version 3, `vrrp_strict` and an empty password each
    /// turn authentication off.
    fn authentication(&mut self, block: &Directive, version: u8) -> Option<String> {
        let mut kind = None;
        let mut pass = None;
        for child in block.children() {
            match child.keyword.as_str() {
                "auth_type" => match child.args.first().map(String::as_str) {
                    Some(name @ ("PASS" | "AH")) => kind = Some((child, name)),
                    _ => self.findings.untranslated(
                        child,
                        "expected PASS or AH (keepalived ignores anything else); not translated",
                    ),
                },
                // keepalived takes the first word; a password has no spaces in its config.
                "auth_pass" => pass = child.args.first().map(|text| (child, text.as_str())),
                _ => self.unknown(child),
            }
        }
        let Some((kind_at, kind)) = kind else {
            if pass.is_some() {
                self.findings.note(
                    block,
                    "auth_pass without auth_type: keepalived sends no authentication, so none \
                     is written",
                );
            }
            return None;
        };
        if kind == "AH" {
            self.findings.untranslated(
                kind_at,
                "Tandem has no IPsec AH authentication; not written. Switch both nodes to \
                 auth_type PASS (the same guard against a misconfigured neighbour; the password \
                 travels in clear) or remove authentication; until then a keepalived peer with \
                 AH drops Tandem's adverts",
            );
            return None;
        }
        if version == 3 {
            self.findings.note(
                block,
                "keepalived ignores authentication with VRRP version 3 (which has none), so its \
                 adverts carry none and none is written",
            );
            return None;
        }
        if self.globals.strict {
            self.findings.note(
                block,
                "keepalived ignores authentication under vrrp_strict, so its adverts carry \
                 none: not written",
            );
            return None;
        }
        let Some((pass_at, text)) = pass.filter(|(_, text)| !text.is_empty()) else {
            self.findings.note(
                block,
                "auth_type PASS without auth_pass: keepalived then sends no authentication, so \
                 none is written",
            );
            return None;
        };
        let max = VrrpAuthentication::MAX_PASSWORD_BYTES;
        if text.len() <= max {
            return Some(text.to_owned());
        }
        let Some(kept) = text.get(..max) else {
            self.findings.untranslated(
                pass_at,
                format!(
                    "keepalived uses the first {max} bytes of auth_pass, which end inside a \
                     character here; not written: set a password of at most {max} bytes on \
                     both nodes"
                ),
            );
            return None;
        };
        self.findings.note(
            pass_at,
            format!(
                "keepalived uses only the first {max} bytes of auth_pass (it logs \"Truncating \
                 auth_pass\"), so the password its adverts carry, {kept:?}, is written"
            ),
        );
        Some(kept.to_owned())
    }

    /// `ADDR[/PREFIX] [dev IF] [label L] ...`: the address (IPv4 or IPv6) and the `dev` it
    /// names.
    fn virtual_address<'d>(&mut self, entry: &'d Directive) -> Option<(IpAddr, Option<&'d str>)> {
        let (text, prefix) = match entry.keyword.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (entry.keyword.as_str(), None),
        };
        let Ok(address) = text.parse::<IpAddr>() else {
            self.findings
                .untranslated(entry, "not an IPv4 or IPv6 address; not written");
            return None;
        };
        let host = if address.is_ipv6() { "128" } else { "32" };
        match prefix {
            None => {}
            Some(prefix) if prefix == host => {}
            Some(prefix) => self.findings.untranslated(
                entry,
                format!(
                    "Tandem adds virtual addresses as /{host}: written as {address}, without \
                     the /{prefix} (which matters only if the node has no other address in \
                     that network)"
                ),
            ),
        }
        let mut dev = None;
        let mut extras = entry.args.iter();
        while let Some(option) = extras.next() {
            // keepalived's options with a value; the rest (no_track, ...) are flags.
            let takes_value = matches!(
                option.as_str(),
                "dev" | "label" | "brd" | "broadcast" | "scope" | "preferred_lft" | "track_group"
            );
            let value = if takes_value { extras.next() } else { None };
            match (option.as_str(), value) {
                ("dev", Some(value)) => dev = Some(value.as_str()),
                ("label", Some(value)) => self.findings.untranslated(
                    entry,
                    format!(
                        "label {value}: Tandem adds the address without a label (a label only \
                         names it in `ip addr`); nothing to do unless scripts look for it"
                    ),
                ),
                (option, value) => self.findings.untranslated(
                    entry,
                    format!(
                        "`{option}{}` is not translated: Tandem adds the address as a plain \
                         host address (/32, /128) on the instance's interface",
                        value.map(|value| format!(" {value}")).unwrap_or_default()
                    ),
                ),
            }
        }
        Some((address, dev))
    }

    fn peer(&mut self, entry: &Directive) -> Option<IpAddr> {
        let Ok(address) = entry.keyword.parse::<IpAddr>() else {
            self.findings
                .untranslated(entry, "not an IPv4 or IPv6 address; not written");
            return None;
        };
        if !entry.args.is_empty() {
            self.findings.untranslated(
                entry,
                format!(
                    "`{}` is not translated: Tandem checks that adverts arrive with TTL 255",
                    entry.args.join(" ")
                ),
            );
        }
        Some(address)
    }

    /// `weight W` after a tracked name; `None` when absent, or malformed (listed).
    fn weight_override(&mut self, entry: &Directive) -> Result<Option<i32>, ()> {
        match entry.args.as_slice() {
            [] => Ok(None),
            [keyword, value] if keyword == "weight" => match value.parse::<i32>() {
                Ok(weight) if weight.abs() <= MAX_WEIGHT => Ok(Some(weight)),
                _ => {
                    self.findings.untranslated(
                        entry,
                        format!(
                            "expected a weight from -{MAX_WEIGHT} to {MAX_WEIGHT}; not \
                             translated"
                        ),
                    );
                    Err(())
                }
            },
            _ => {
                self.findings.untranslated(
                    entry,
                    "only `weight W` is translated (not `reverse`); the tracker is not written",
                );
                Err(())
            }
        }
    }

    fn track_interface(&mut self, entry: &Directive) -> Option<TrackDraft> {
        let weight = self.weight_override(entry).ok()?.unwrap_or(0);
        Some(TrackDraft::Interface {
            interface: entry.keyword.clone(),
            weight,
        })
    }

    fn track_script(&mut self, entry: &Directive) -> Option<TrackDraft> {
        let weight = self.weight_override(entry).ok()?;
        let Some(&script) = self.scripts.get(entry.keyword.as_str()) else {
            self.findings.untranslated(
                entry,
                format!(
                    "no vrrp_script {} in this file; the tracker is not written",
                    entry.keyword
                ),
            );
            return None;
        };
        let draft = match self.tracked.get(&script.line) {
            Some(draft) => draft.clone(),
            None => {
                let draft = self.script(script);
                self.tracked.insert(script.line, draft.clone());
                draft
            }
        }?;
        let mut draft = draft;
        // The instance's `weight` overrides the script's.
        if let (
            Some(instance_weight),
            TrackDraft::Proxy { weight } | TrackDraft::Script { weight, .. },
        ) = (weight, &mut draft)
        {
            *weight = instance_weight;
        }
        Some(draft)
    }

    /// A `vrrp_script` block, read the first time an instance tracks it.
    fn script(&mut self, directive: &Directive) -> Option<TrackDraft> {
        let mut command = None;
        let mut interval = None;
        let mut timeout = None;
        let mut rise = None;
        let mut fall = None;
        let mut weight = 0;
        // What the built-in check has no use for, should the script be the classic one.
        let mut timing: Vec<String> = Vec::new();
        for child in directive.children() {
            match child.keyword.as_str() {
                "script" if !child.args.is_empty() => command = Some(child.args.join(" ")),
                "interval" => {
                    interval = self.seconds(child, false);
                    timing.push(child.text.clone());
                }
                "timeout" => {
                    timeout = self.seconds(child, false);
                    timing.push(child.text.clone());
                }
                "rise" => {
                    rise = self
                        .integer(child, 1, i64::from(u32::MAX))
                        .map(|n| n as u32);
                    timing.push(child.text.clone());
                }
                "fall" => {
                    fall = self
                        .integer(child, 1, i64::from(u32::MAX))
                        .map(|n| n as u32);
                    timing.push(child.text.clone());
                }
                "weight" => match child.args.as_slice() {
                    [value] => match value.parse::<i32>() {
                        Ok(value) if value.abs() <= MAX_WEIGHT => weight = value,
                        _ => self.findings.untranslated(
                            child,
                            format!(
                                "expected a weight from -{MAX_WEIGHT} to {MAX_WEIGHT}; not \
                                 translated (weight 0 is written)"
                            ),
                        ),
                    },
                    _ => self.findings.untranslated(
                        child,
                        "only `weight W` is translated (not `reverse`); weight 0 is written",
                    ),
                },
                "user" => self.findings.untranslated(
                    child,
                    "Tandem runs scripts as its own user (systemd's User=); make the script work \
                     as that user",
                ),
                _ => self.unknown(child),
            }
        }
        let Some(command) = command else {
            self.findings.untranslated(
                directive,
                "a vrrp_script without `script` runs nothing; its trackers are not written",
            );
            return None;
        };
        if is_pound_check(&command) {
            let ignored = if timing.is_empty() {
                String::new()
            } else {
                format!(
                    ", so `{}` {} no counterpart",
                    timing.join("`, `"),
                    if timing.len() == 1 { "has" } else { "have" }
                )
            };
            self.findings.note(
                directive,
                format!(
                    "`{command}` checks that pound runs; Tandem's built-in proxy check (track \
                     {{ builtin = \"proxy\" }}) does it from inside the daemon, continuously{ignored}"
                ),
            );
            return Some(TrackDraft::Proxy { weight });
        }
        Some(TrackDraft::Script {
            script: command,
            interval,
            timeout,
            rise,
            fall,
            weight,
        })
    }
}

/// Whether a track script is the classic "is pound running" check.
pub(super) fn is_pound_check(command: &str) -> bool {
    let words: Vec<&str> = command.split_whitespace().collect();
    let Some((program, args)) = words.split_first() else {
        return false;
    };
    let program = program.rsplit('/').next().unwrap_or(program);
    matches!(
        (program, args),
        ("killall", ["-0", "pound"])
            | ("pidof", ["pound"])
            | ("pidof", ["-s", "pound"])
            | ("pgrep", ["pound"])
            | ("pgrep", ["-x", "pound"])
    )
}
