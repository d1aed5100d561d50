//! Which service on a shared listener takes a request: by Host, then by the longest matching
//! path prefix. A service with a `host` list that names the request's host beats one without;
//! among those, the longest `path_prefix` that the path lies under wins, and a service with no
//! prefix takes whatever is left. Ties go to the service written first.

/// One service's matching rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// Lower-case names; `*.example.com` matches names below example.com. Empty: any host.
    pub hosts: Vec<String>,
    pub path_prefix: Option<String>,
}

/// The index of the rule that takes a request for `host` (as sent: may carry a port, any case)
/// and `path`, or `None` if no rule does.
pub fn select(rules: &[Rule], host: Option<&str>, path: &str) -> Option<usize> {
    let host = host.map(normalize_host);
    let mut best: Option<(usize, (bool, usize))> = None;
    for (index, rule) in rules.iter().enumerate() {
        let host_specific = if rule.hosts.is_empty() {
            false
        } else if host
            .as_deref()
            .is_some_and(|host| rule.hosts.iter().any(|pattern| host_matches(pattern, host)))
        {
            true
        } else {
            continue;
        };
        let prefix_len = match &rule.path_prefix {
            None => 0,
            Some(prefix) if path_under(path, prefix) => prefix.len(),
            Some(_) => continue,
        };
        let rank = (host_specific, prefix_len);
        if best.is_none_or(|(_, best_rank)| rank > best_rank) {
            best = Some((index, rank));
        }
    }
    best.map(|(index, _)| index)
}

/// "WWW.Example.com:8080" -> "www.example.com"; "[::1]:80" -> "[::1]"; a trailing dot goes.
fn normalize_host(host: &str) -> String {
    let without_port = if host.starts_with('[') {
        host.find(']').map_or(host, |end| &host[..=end])
    } else {
        host.rsplit_once(':').map_or(host, |(name, _)| name)
    };
    without_port.trim_end_matches('.').to_ascii_lowercase()
}

fn host_matches(pattern: &str, host: &str) -> bool {
    match pattern.strip_prefix("*.") {
        Some(domain) => host
            .strip_suffix(domain)
            .is_some_and(|sub| sub.len() > 1 && sub.ends_with('.')),
        None => pattern == host,
    }
}

/// Whether `path` is `prefix` or lies below it on a segment boundary.
fn path_under(path: &str, prefix: &str) -> bool {
    match path.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || prefix.ends_with('/') || rest.starts_with('/'),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(hosts: &[&str], prefix: Option<&str>) -> Rule {
        Rule {
            hosts: hosts.iter().map(|h| h.to_string()).collect(),
            path_prefix: prefix.map(str::to_owned),
        }
    }

    #[test]
    fn longest_prefix_wins_and_the_default_takes_the_rest() {
        let rules = [
            rule(&[], None),
            rule(&[], Some("/app")),
            rule(&[], Some("/app/admin")),
        ];
        assert_eq!(select(&rules, Some("a"), "/"), Some(0));
        assert_eq!(select(&rules, Some("a"), "/app"), Some(1));
        assert_eq!(select(&rules, Some("a"), "/app/x"), Some(1));
        assert_eq!(select(&rules, Some("a"), "/apple"), Some(0));
        assert_eq!(select(&rules, Some("a"), "/app/admin/users"), Some(2));
    }

    #[test]
    fn a_matching_host_beats_a_hostless_service() {
        let rules = [
            rule(&[], Some("/app")),
            rule(&["www.example.com"], None),
            rule(&["*.example.org"], None),
        ];
        assert_eq!(
            select(&rules, Some("WWW.example.com:8080"), "/app"),
            Some(1)
        );
        assert_eq!(select(&rules, Some("other.example.com"), "/app"), Some(0));
        assert_eq!(select(&rules, Some("a.b.example.org"), "/"), Some(2));
        assert_eq!(select(&rules, Some("example.org"), "/"), None);
        assert_eq!(select(&rules, None, "/x"), None);
    }

    #[test]
    fn hosts_are_normalized() {
        assert_eq!(normalize_host("Example.COM."), "example.com");
        assert_eq!(normalize_host("[::1]:80"), "[::1]");
        assert_eq!(normalize_host("198.18.0.99:80"), "198.18.0.99");
    }
}
