//! What a config makes of the proxy's listening addresses: the HTTP services grouped by
//! `listen` (in config order), each address's dispatch rules and TLS certificates, and each
//! service's [`ServiceEntry`].
//!
//! The same code builds them at start and at a reload. At a reload, a service the new config
//! leaves exactly as it was keeps its entry (upstream, health, sessions, counters: nothing
//! about it changes); a changed service gets a new upstream that carries over what is known
//! about the backends that remain ([`Upstream::succeed`], with the health table the node's
//! [`HealthChecks`] gives it) and keeps its counters. Building starts nothing:
//! [`Prepared::start_checks`] does, once the whole reload is known to apply.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use anyhow::Context as _;
use http::HeaderValue;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use super::backend::ConnectError;
use super::dispatch;
use super::stats::Counters;
use super::tls;
use crate::backend_transport::Transport;
use crate::backends::health::HealthChecks;
use crate::config::{BackendProtocol, CertificateFiles, Config, ServiceMode};
use crate::proxy::policy::replicate::Replicator;
use crate::proxy::policy::upstream::Upstream;

/// A service as the engine sees it.
pub struct ServiceEntry {
    pub name: Arc<str>,
    pub upstream: Arc<Upstream>,
    /// Shared with the entry a reload replaces, so counters never go back.
    pub counters: Arc<Counters>,
    /// Stops the service's health checks and session sweep when a reload retires the entry.
    pub checks: CancellationToken,
    /// How backends are reached when they speak h2c, https or h2; `None` for plain HTTP/1.1,
    /// which the HTTP/1.1 engine reaches itself.
    pub transport: Option<Arc<Transport>>,
}

impl ServiceEntry {
    /// Connecting to `backend` failed: counted, and the backend marked down when it is to
    /// blame (not when this node ran out of descriptors or ports). Returns why, for the 503.
    pub fn connect_failed(&self, backend: SocketAddr, error: &ConnectError) -> &'static str {
        let reason = error.to_string();
        tracing::debug!(service = %self.name, %backend, %reason, "connect failed; trying the next backend");
        self.counters.errors.fetch_add(1, Ordering::Relaxed);
        if error.is_backend_fault() {
            self.upstream.connect_failed(backend, &reason);
            "no backend could be reached"
        } else {
            self.upstream.request_failed(backend);
            "this node is out of connections"
        }
    }

    /// `backend` took the request and then failed it (lost the connection, no answer in
    /// time, a malformed answer): counted against the service and the backend.
    pub fn backend_failed(&self, backend: SocketAddr) {
        self.counters.errors.fetch_add(1, Ordering::Relaxed);
        self.upstream.request_failed(backend);
    }
}

/// One listening address. What a reload may change behind it is in [`Routes`], swapped whole:
/// a connection checks `generation` for each request and takes the new routes when it moved,
/// so a reload applies to the next request of a connection that stays open. (The check is a
/// plain load: the entry is shared by every worker, and taking its lock or cloning its routes
/// on every request would write to a cache line all of them read.)
pub struct ListenerEntry {
    pub addr: SocketAddr,
    pub port_header: HeaderValue,
    routes: RwLock<Arc<Routes>>,
    /// Bumped by every `replace_routes`, after the routes are in place.
    generation: AtomicU64,
    /// Requests no service took, and requests refused before routing (400/431/501).
    pub unrouted: Counters,
    /// Cancelled when a reload removes the address: the accept loops stop and close their
    /// sockets; connections already accepted finish.
    pub closed: CancellationToken,
}

/// The services of one listening address, and its TLS certificates.
pub struct Routes {
    /// `Some` for HTTPS: the certificates (chosen by SNI) new connections get.
    pub tls: Option<TlsAcceptor>,
    pub rules: Vec<dispatch::Rule>,
    pub services: Vec<Arc<ServiceEntry>>,
    /// Whether a service here has a [`ServiceEntry::transport`]: then the HTTP/1.1 engine
    /// looks at each request's service before serving it.
    pub any_transport: bool,
}

impl ListenerEntry {
    pub fn new(addr: SocketAddr, routes: Arc<Routes>) -> ListenerEntry {
        ListenerEntry {
            addr,
            port_header: HeaderValue::from(addr.port()),
            routes: RwLock::new(routes),
            generation: AtomicU64::new(0),
            unrouted: Counters::default(),
            closed: CancellationToken::new(),
        }
    }

    /// The routes in force now.
    pub fn routes(&self) -> Arc<Routes> {
        Arc::clone(&self.routes.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// A reload's new routes; requests already routed finish with the old ones.
    pub fn replace_routes(&self, routes: Arc<Routes>) {
        *self.routes.write().unwrap_or_else(|p| p.into_inner()) = routes;
        self.generation.fetch_add(1, Ordering::Release);
    }

    /// The routes with the generation they are at least as new as.
    pub(super) fn current(&self) -> (u64, Arc<Routes>) {
        // Generation first: routes read after it are that new or newer (a newer pair is
        // simply taken again at the next request).
        let generation = self.generation.load(Ordering::Acquire);
        (generation, self.routes())
    }

    /// How many times the routes were replaced.
    pub(super) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Whether new connections get TLS.
    pub fn https(&self) -> bool {
        self.routes().tls.is_some()
    }
}

/// The routes of every listening address of a config, built but not started.
pub(super) struct Prepared {
    /// In config order of each address's first service.
    pub listeners: Vec<(SocketAddr, Arc<Routes>)>,
    /// Entries built for this config (not carried over unchanged): their checks start with
    /// [`Prepared::start_checks`].
    fresh: Vec<Arc<ServiceEntry>>,
}

impl Prepared {
    /// Every service entry of the config, by name.
    pub fn services(&self) -> HashMap<Arc<str>, Arc<ServiceEntry>> {
        self.listeners
            .iter()
            .flat_map(|(_, routes)| routes.services.iter())
            .map(|entry| (Arc::clone(&entry.name), Arc::clone(entry)))
            .collect()
    }

    /// Starts the health checks (through the node's `checks`) and session sweeps of the
    /// entries built for this config. Must run inside a tokio runtime.
    pub fn start_checks(&self, checks: &HealthChecks) {
        for entry in &self.fresh {
            let upstream = &entry.upstream;
            checks.run(upstream.service(), upstream.health(), &entry.checks);
            upstream.spawn_session_sweep(entry.checks.clone());
        }
    }
}

/// Builds the routes of `config`'s HTTP services. `previous` is what runs now (empty at start);
/// `shutdown` is the proxy's token, parent of every service's checks. Fails, with nothing
/// started, when a certificate cannot be loaded.
pub(super) fn prepare(
    config: &Config,
    previous: &HashMap<Arc<str>, Arc<ServiceEntry>>,
    replicator: Option<&Arc<Replicator>>,
    checks: &HealthChecks,
    shutdown: &CancellationToken,
) -> anyhow::Result<Prepared> {
    let mut order: Vec<SocketAddr> = Vec::new();
    let mut grouped: HashMap<SocketAddr, Vec<&crate::config::Service>> = HashMap::new();
    for service in config
        .services
        .iter()
        .filter(|s| s.mode == ServiceMode::Http)
    {
        let group = grouped.entry(service.listen).or_default();
        if group.is_empty() {
            order.push(service.listen);
        }
        group.push(service);
    }
    let mut fresh = Vec::new();
    let mut listeners = Vec::with_capacity(order.len());
    for addr in order {
        let services = &grouped[&addr];
        let mut certificates: Vec<CertificateFiles> = Vec::new();
        for files in services
            .iter()
            .filter_map(|s| s.http.tls.as_ref())
            .flat_map(|tls| &tls.certificates)
        {
            if !certificates.contains(files) {
                certificates.push(files.clone());
            }
        }
        // Read from the files every time: a reload with the same config picks up renewed
        // certificates.
        let tls = if certificates.is_empty() {
            None
        } else {
            Some(
                tls::acceptor(&certificates)
                    .with_context(|| format!("setting up TLS for listener {addr}"))?,
            )
        };
        let rules = services
            .iter()
            .map(|s| dispatch::Rule {
                hosts: s.http.hosts.clone(),
                path_prefix: s.http.path_prefix.clone(),
            })
            .collect();
        let entries = services
            .iter()
            .map(|service| {
                let before = previous.get(service.name.as_str());
                if let Some(before) = before.filter(|b| b.upstream.service() == *service) {
                    return Ok(Arc::clone(before));
                }
                let transport = match service.http.backend_protocol {
                    BackendProtocol::Http1 => None,
                    protocol => Some(Arc::new(
                        Transport::new(protocol, service.http.backend_tls.as_ref())
                            .with_context(|| format!("service {}", service.name))?,
                    )),
                };
                let replicator = replicator.cloned();
                let health = checks.table_for(service);
                let (upstream, counters) = match before {
                    Some(before) => (
                        Upstream::succeed(&before.upstream, service, health, replicator),
                        Arc::clone(&before.counters),
                    ),
                    None => (
                        Upstream::with_health(service, health, replicator),
                        Arc::new(Counters::default()),
                    ),
                };
                let entry = Arc::new(ServiceEntry {
                    name: Arc::from(service.name.as_str()),
                    upstream,
                    counters,
                    checks: shutdown.child_token(),
                    transport,
                });
                fresh.push(Arc::clone(&entry));
                Ok(entry)
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let any_transport = entries.iter().any(|entry| entry.transport.is_some());
        listeners.push((
            addr,
            Arc::new(Routes {
                tls,
                rules,
                services: entries,
                any_transport,
            }),
        ));
    }
    Ok(Prepared { listeners, fresh })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstreams_are_built_for_http_services_only() {
        let config = crate::config::parse(
            "[node]\nname = \"lb1\"\ninterface = \"eth0\"\n\n[[service]]\nname = \"web\"\n\
             listen = \"198.18.0.99:80\"\nbackends = [\"198.18.0.102:80\"]\n\
             session = { type = \"cookie\", id = \"JSESSIONID\" }\n\n[[service]]\nname = \"db\"\n\
             mode = \"tcp\"\nlisten = \"198.18.0.99:5432\"\nbackends = [\"198.18.0.102:5432\"]\n",
            std::path::Path::new("t.toml"),
        )
        .expect("loads")
        .config;
        let prepared = prepare(
            &config,
            &HashMap::new(),
            None,
            &HealthChecks::default(),
            &CancellationToken::new(),
        )
        .expect("prepare");
        let services = prepared.services();
        assert_eq!(services.len(), 1);
        assert!(services.contains_key("web"));
        assert!(!services.contains_key("db"));
        assert_eq!(services["web"].upstream.status().service, "web");
    }
}
