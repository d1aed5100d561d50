//! Putting the services read from pound.cfg together per listener, and telling the plain host
//! names and path prefixes that Tandem can route on from Pound's other patterns.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use crate::import::{Findings, ServiceDraft};

use super::{Listener, ServiceSpec, BALANCE_RANDOM, DEFAULT_SERVICE_NAME};

/// One `[[service]]` per listener and Service that applies to it, in Pound's order.
pub(super) fn assemble(
    listeners: &[Listener],
    global_services: &[ServiceSpec],
    health_interval: Duration,
    findings: &mut Findings,
) -> Vec<ServiceDraft> {
    let mut services: Vec<ServiceDraft> = Vec::new();
    let mut names: HashSet<String> = HashSet::new();
    // Global Services already written for a listener: on the next one, their name gets the
    // port.
    let mut global_written = vec![false; global_services.len()];
    if listeners.is_empty() {
        for spec in global_services
            .iter()
            .filter(|spec| !spec.backends.is_empty())
        {
            findings.untranslated(
                spec.at,
                "no ListenHTTP or ListenHTTPS: the service has no address to listen on and is \
                 not written; add a listener",
            );
        }
    }
    for listener in listeners.iter().filter(|listener| listener.usable) {
        let specs: Vec<(&ServiceSpec, Option<usize>)> = listener
            .services
            .iter()
            .map(|spec| (spec, None))
            .chain(
                global_services
                    .iter()
                    .enumerate()
                    .map(|(i, spec)| (spec, Some(i))),
            )
            .filter(|(spec, _)| !spec.backends.is_empty())
            .collect();
        if specs.is_empty() {
            findings.untranslated(
                listener.at,
                "no Service Tandem can write applies to this listener, so nothing listens here \
                 (Pound answers 503)",
            );
        }
        // Which Service (by line) takes each host/path on this listener.
        let mut taken: HashMap<(Vec<String>, Option<String>), usize> = HashMap::new();
        for (spec, global) in specs {
            let mut hosts = spec.hosts.clone();
            hosts.sort();
            let key = (hosts, spec.path_prefix.clone());
            if let Some(&first) = taken.get(&key) {
                findings.untranslated(
                    spec.at,
                    format!(
                        "not written for the listener at line {}: the Service at line {first} \
                         takes the same requests there (Pound uses the first match; Tandem needs \
                         a different host or path_prefix for each service on a listener)",
                        listener.at.line
                    ),
                );
                continue;
            }
            taken.insert(key, spec.at.line);
            let base = spec
                .name
                .clone()
                .unwrap_or_else(|| DEFAULT_SERVICE_NAME.to_owned());
            let mut name = match global {
                Some(i) if global_written[i] => format!("{base}-{}", listener.port),
                Some(i) => {
                    global_written[i] = true;
                    base
                }
                None => base,
            };
            let stem = name.clone();
            let mut n = 2;
            while names.contains(&name) {
                name = format!("{stem}-{n}");
                n += 1;
            }
            names.insert(name.clone());
            services.push(ServiceDraft {
                name,
                listen: listener.address.clone(),
                port: listener.port,
                hosts: spec.hosts.clone(),
                path_prefix: spec.path_prefix.clone(),
                certificates: listener.certificates.clone(),
                backends: spec.backends.clone(),
                health_interval,
                session: spec.session.clone(),
                balance: spec.balance,
            });
        }
    }
    if services
        .iter()
        .any(|service| service.balance == BALANCE_RANDOM)
    {
        findings.note_file(
            "Pound picks a back-end at random, weighted by Priority, so balance = \"random\" is \
             written; Tandem's default, \"round-robin\", spreads requests more evenly",
        );
    }
    services
}

/// Whether a HeadRequire pattern is about the Host header (the only one Tandem routes by).
pub(super) fn is_host_pattern(pattern: &str) -> bool {
    let pattern = pattern.strip_prefix('^').unwrap_or(pattern);
    pattern
        .get(..5)
        .is_some_and(|head| head.eq_ignore_ascii_case("host:"))
}

/// The host name of `Host: www\.example\.com` (anchors and the usual blank patterns allowed);
/// `None` when the pattern is more than one plain name.
pub(super) fn host_of(pattern: &str) -> Option<String> {
    let rest = pattern.strip_prefix('^').unwrap_or(pattern).get(5..)?;
    let rest = [r"[ \t]*", r"[[:space:]]*", r"\s*", r"\s+", " *", " +"]
        .iter()
        .find_map(|blank| rest.strip_prefix(blank))
        .unwrap_or(rest)
        .trim_start();
    let rest = rest.strip_suffix('$').unwrap_or(rest);
    let host = plain_text(rest, |c| c.is_ascii_alphanumeric() || c == '-')?;
    let labels_ok = !host.is_empty() && host.split('.').all(|label| !label.is_empty());
    labels_ok.then(|| host.to_ascii_lowercase())
}

/// The path prefix of a URL pattern: `Some(Some(prefix))` for `^/app`, `^/app/` or
/// `^/app/.*`; `Some(None)` for a pattern that matches every path (`.*`, `^/`); `None` for
/// anything else.
pub(super) fn prefix_of(pattern: &str) -> Option<Option<String>> {
    if matches!(pattern, "" | ".*" | "^.*" | "/" | "^/" | "^/.*") {
        return Some(None);
    }
    let rest = pattern.strip_prefix("^/")?;
    let rest = rest.strip_suffix(".*").unwrap_or(rest);
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    let path = plain_text(rest, |c| {
        c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '~' | '/')
    })?;
    if path.is_empty() || path.contains("//") {
        return None;
    }
    Some(Some(format!("/{path}")))
}

/// `pattern` without its regular-expression escapes, if it is plain text: characters for
/// which `plain` holds, and dots (escaped or not: `www.example.com` is meant literally).
pub(super) fn plain_text(pattern: &str, plain: impl Fn(char) -> bool) -> Option<String> {
    let mut text = String::with_capacity(pattern.len());
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some('.') => text.push('.'),
                _ => return None,
            },
            '.' => text.push('.'),
            c if plain(c) => text.push(c),
            _ => return None,
        }
    }
    Some(text)
}
