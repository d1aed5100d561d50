//! Backends by host name (`backends = ["http1.example.com:80"]`): each name is resolved
//! through the system resolver (getaddrinfo: /etc/hosts, then DNS, as nsswitch.conf says),
//! and every IPv4 address it gives is a backend of the service, as HAProxy's
//! `server-template` and nginx's `resolve` make them.
//!
//! A config as written (the *declared* config) keeps its names; the config a node runs is
//! the *expanded* one ([`NameTable::expand`]): the names' addresses in `backends`, and which
//! name each came from in `backend_hosts` (for TLS's server name). Everything downstream (the
//! proxy, health checks, the data plane) sees plain addresses; a change of addresses goes
//! through the reload path, so the backends that remain keep their health and sessions.
//!
//! When a name is resolved: at start and at every reload (a name never resolved before that
//! does not resolve fails the start or the reload, with nothing changed), and again every
//! `resolve_interval` of its service. A name that stops resolving keeps its last addresses,
//! and `tandem status` says since when and why ([`NameStatus`]).

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};

use crate::config::{Backend, Config};

/// How long one lookup may take before it counts as a failure.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);

/// What `tandem status` shows of one name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NameStatus {
    pub service: String,
    /// "host:port", as written.
    pub name: String,
    /// The addresses in use: the last answer that had any.
    pub addresses: Vec<SocketAddr>,
    /// Seconds since the Unix epoch of the last answer with addresses.
    pub resolved_at: u64,
    /// Why the last lookup failed; `None` when it gave addresses.
    pub error: Option<String>,
}

#[derive(Debug, Clone)]
struct Entry {
    status: NameStatus,
    /// When this name was last looked up (successfully or not).
    looked_up: Instant,
}

/// Which names [`NameTable::expand`] looks up.
#[derive(Debug, Clone, Copy)]
pub enum Lookup {
    /// Every name (start, reload).
    All,
    /// Only the names of services whose `resolve_interval` has passed since their last lookup.
    Due(Instant),
}

/// The names of the running config and what they resolved to.
#[derive(Debug, Default)]
pub struct NameTable {
    entries: Mutex<BTreeMap<(String, String), Entry>>,
}

/// What an expansion found, applied with [`NameTable::commit`] once the config it made runs.
#[derive(Debug)]
pub struct Resolved {
    entries: BTreeMap<(String, String), Entry>,
    /// One line per name whose addresses changed, for the log.
    pub changes: Vec<String>,
}

impl Resolved {
    pub fn statuses(&self) -> impl Iterator<Item = &NameStatus> {
        self.entries.values().map(|entry| &entry.status)
    }
}

impl NameTable {
    /// `declared` with every name's addresses added to its service's backends (and recorded
    /// in `backend_hosts`). A name never resolved before that gives no address is an error
    /// that names the service and the name; a known one keeps its last addresses.
    pub async fn expand(
        &self,
        declared: &Config,
        lookup: Lookup,
    ) -> Result<(Config, Resolved), String> {
        let known = self.lock().clone();
        let mut entries = BTreeMap::new();
        let mut changes = Vec::new();
        let mut expanded = declared.clone();
        for service in &mut expanded.services {
            let due = match lookup {
                Lookup::All => true,
                Lookup::Due(now) => is_due(&known, service, now),
            };
            let mut seen: HashSet<SocketAddr> =
                service.backends.iter().map(|b| b.address).collect();
            for named in &service.backend_names {
                let key = (service.name.clone(), named.label());
                let before = known.get(&key);
                let entry = match (due, before) {
                    (false, Some(before)) => before.clone(),
                    _ => {
                        let answer = resolve(&named.host, named.port)
                            .await
                            .and_then(|all| one_family(all, service));
                        match (answer, before) {
                            (Ok(addresses), before) => {
                                if before.is_some_and(|b| b.status.addresses != addresses) {
                                    changes.push(format!(
                                        "service {}: {} now resolves to {}",
                                        service.name,
                                        named.label(),
                                        list(&addresses)
                                    ));
                                }
                                Entry {
                                    status: NameStatus {
                                        service: service.name.clone(),
                                        name: named.label(),
                                        addresses,
                                        resolved_at: unix_now(),
                                        error: None,
                                    },
                                    looked_up: Instant::now(),
                                }
                            }
                            (Err(error), Some(before)) => {
                                if before.status.error.is_none() {
                                    changes.push(format!(
                                        "service {}: {} does not resolve ({error}); keeping {}",
                                        service.name,
                                        named.label(),
                                        list(&before.status.addresses)
                                    ));
                                }
                                let mut kept = before.clone();
                                kept.status.error = Some(error);
                                kept.looked_up = Instant::now();
                                kept
                            }
                            (Err(error), None) => {
                                return Err(format!(
                                    "service {}: backend {} does not resolve: {error}. Fix the \
                                     name (the system resolver is asked, so /etc/hosts counts) \
                                     or write the backend's address",
                                    service.name,
                                    named.label()
                                ));
                            }
                        }
                    }
                };
                for &address in &entry.status.addresses {
                    if seen.insert(address) {
                        service.backends.push(Backend {
                            address,
                            weight: named.weight,
                            emergency: named.emergency,
                        });
                        service.backend_hosts.insert(address, named.host.clone());
                    }
                }
                entries.insert(key, entry);
            }
        }
        Ok((expanded, Resolved { entries, changes }))
    }

    /// Makes an expansion's answers the table's: the names of the config that now runs.
    pub fn commit(&self, resolved: Resolved) {
        *self.lock() = resolved.entries;
    }

    /// Every name of the running config, by service.
    pub fn status(&self) -> Vec<NameStatus> {
        self.lock()
            .values()
            .map(|entry| entry.status.clone())
            .collect()
    }

    /// Whether a name of `declared` is due for a lookup at `now` (none: nothing to do).
    pub fn any_due(&self, declared: &Config, now: Instant) -> bool {
        let known = self.lock();
        declared
            .services
            .iter()
            .any(|service| is_due(&known, service, now))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<(String, String), Entry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Whether one of `service`'s names was never looked up, or last looked up at least its
/// `resolve_interval` before `now`.
fn is_due(
    known: &BTreeMap<(String, String), Entry>,
    service: &crate::config::Service,
    now: Instant,
) -> bool {
    service.backend_names.iter().any(|named| {
        known
            .get(&(service.name.clone(), named.label()))
            .is_none_or(|entry| now.duration_since(entry.looked_up) >= service.resolve_interval)
    })
}

/// The addresses `host` resolves to with `port` (IPv4 and IPv6: A and AAAA records, and
/// /etc/hosts), sorted; an error says why there are none.
pub async fn resolve(host: &str, port: u16) -> Result<Vec<SocketAddr>, String> {
    let lookup = tokio::net::lookup_host((host, port));
    let found = match tokio::time::timeout(LOOKUP_TIMEOUT, lookup).await {
        Err(_elapsed) => return Err(format!("no answer within {LOOKUP_TIMEOUT:?}")),
        Ok(Err(error)) => return Err(error.to_string()),
        Ok(Ok(found)) => found,
    };
    let mut addresses: Vec<SocketAddr> = found.collect();
    addresses.sort();
    addresses.dedup();
    if addresses.is_empty() {
        return Err("it has no address".to_owned());
    }
    Ok(addresses)
}

/// The addresses of one family, so a dual-stack host is one backend, not two that share its
/// capacity and its health: those of the service's listen family (a client's family is the
/// backend's, as a dual-stack browser would choose), else, for HTTP, the other family's. An
/// L4 service takes only its listen's family: direct server return cannot cross families.
fn one_family(
    addresses: Vec<SocketAddr>,
    service: &crate::config::Service,
) -> Result<Vec<SocketAddr>, String> {
    let ipv6 = service.listen.is_ipv6();
    let (same, other): (Vec<SocketAddr>, Vec<SocketAddr>) = addresses
        .into_iter()
        .partition(|address| address.is_ipv6() == ipv6);
    let family = if ipv6 { "IPv6" } else { "IPv4" };
    match (same.is_empty(), service.mode.is_l4()) {
        (false, _) => Ok(same),
        (true, true) => Err(format!(
            "it has no {family} address, and mode = \"{}\" on {family} needs backends of its \
             family",
            service.mode.as_str()
        )),
        (true, false) => Ok(other),
    }
}

fn list(addresses: &[SocketAddr]) -> String {
    addresses
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn declared(backends: &str) -> Config {
        crate::config::parse(
            &format!(
                "[node]\nname = \"lb1\"\ninterface = \"eth0\"\n\n[[service]]\nname = \"web\"\n\
                 listen = \"198.18.0.99:80\"\nbackends = {backends}\n"
            ),
            Path::new("t.toml"),
        )
        .expect("loads")
        .config
    }

    #[test]
    fn a_dual_stack_name_gives_the_addresses_of_the_listen_family_and_l4_only_those() {
        let service = |listen: &str, mode: &str| {
            crate::config::parse(
                &format!(
                    "[node]\nname = \"lb1\"\ninterface = \"eth0\"\n\n[[service]]\n\
                     name = \"s\"\nlisten = \"{listen}\"\nmode = \"{mode}\"\n\
                     backends = [\"b.example.com:7000\"]\n"
                ),
                Path::new("t.toml"),
            )
            .expect("loads")
            .config
            .services
            .remove(0)
        };
        let v4: SocketAddr = "198.18.0.102:7000".parse().expect("v4");
        let v6: SocketAddr = "[2001:2::102]:7000".parse().expect("v6");
        let http4 = service("198.18.0.99:7000", "http");
        let http6 = service("[2001:2::99]:7000", "http");
        assert_eq!(one_family(vec![v4, v6], &http4), Ok(vec![v4]));
        assert_eq!(one_family(vec![v4, v6], &http6), Ok(vec![v6]));
        // HTTP crosses families when the name has only the other one.
        assert_eq!(one_family(vec![v6], &http4), Ok(vec![v6]));
        let tcp4 = service("198.18.0.99:7000", "tcp");
        assert_eq!(one_family(vec![v4, v6], &tcp4), Ok(vec![v4]));
        assert_eq!(
            one_family(vec![v6], &tcp4),
            Err(
                "it has no IPv4 address, and mode = \"tcp\" on IPv4 needs backends of its \
                 family"
                    .to_owned()
            )
        );
    }

    #[tokio::test]
    async fn a_name_becomes_one_backend_per_address_beside_the_written_ones() {
        let config =
            declared("[\"198.18.0.102:80\", { address = \"localhost:8080\", weight = 3 }]");
        assert_eq!(
            config.services[0].backends.len(),
            1,
            "names wait for the resolver"
        );
        let table = NameTable::default();
        let (expanded, resolved) = table.expand(&config, Lookup::All).await.expect("resolves");
        table.commit(resolved);
        let service = &expanded.services[0];
        let local: SocketAddr = "127.0.0.1:8080".parse().expect("addr");
        assert_eq!(service.backends[0].address.to_string(), "198.18.0.102:80");
        assert!(
            service
                .backends
                .iter()
                .any(|b| b.address == local && b.weight == 3),
            "{:?}",
            service.backends
        );
        assert_eq!(
            service.backend_hosts.get(&local).map(String::as_str),
            Some("localhost")
        );
        let status = table.status();
        assert_eq!(status.len(), 1);
        assert_eq!(status[0].name, "localhost:8080");
        assert_eq!(status[0].error, None);
    }

    #[tokio::test]
    async fn a_new_name_that_does_not_resolve_is_refused_with_the_service_and_name() {
        let config = declared("[\"no-such-host.invalid:80\"]");
        let error = NameTable::default()
            .expand(&config, Lookup::All)
            .await
            .expect_err("cannot resolve");
        assert!(
            error.starts_with("service web: backend no-such-host.invalid:80 does not resolve"),
            "{error}"
        );
    }

    #[tokio::test]
    async fn a_known_name_that_stops_resolving_keeps_its_last_addresses() {
        let table = NameTable::default();
        let last: SocketAddr = "198.18.0.102:80".parse().expect("addr");
        table.lock().insert(
            ("web".into(), "gone.invalid:80".into()),
            Entry {
                status: NameStatus {
                    service: "web".into(),
                    name: "gone.invalid:80".into(),
                    addresses: vec![last],
                    resolved_at: 1,
                    error: None,
                },
                looked_up: Instant::now() - Duration::from_secs(60),
            },
        );
        let config = declared("[\"gone.invalid:80\"]");
        let (expanded, resolved) = table
            .expand(&config, Lookup::Due(Instant::now()))
            .await
            .expect("keeps the last answer");
        assert_eq!(expanded.services[0].backends[0].address, last);
        assert_eq!(resolved.changes.len(), 1, "{:?}", resolved.changes);
        table.commit(resolved);
        let status = table.status();
        assert_eq!(status[0].addresses, vec![last]);
        assert!(
            status[0].error.is_some(),
            "status says it fails: {status:?}"
        );
    }
}
