//! [`ProxyHandle`]: what the rest of the daemon holds of a running proxy: its counters (for
//! `tandem status` and metrics), the built-in VRRP tracker's [`ProxyHandle::probe`], and the
//! end of a graceful shutdown.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::info;

use super::access_log::AccessLogger;
use super::routes::{self, ListenerEntry, ServiceEntry};
use super::server::{self, answers_probe, bind, AddListener, ServeProbe};
use super::stats::{
    ConnectionCounters, HttpServiceStatus, ListenerStats, ProxyStats, ServiceSnapshot, ServiceStats,
};
use crate::backends::health::HealthChecks;
use crate::config::Config;
use crate::proxy::policy::replicate::Replicator;

/// How long the probe's local request may take.
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);

/// Starts the proxy for the config's `mode = "http"` services. Returns once every listener is
/// bound and served. The worker threads run even with no HTTP service, so a reload can add one.
/// Starts the proxy for `config`'s HTTP services; their health checks run through `checks`,
/// the node's, which the L4 services share.
pub async fn start(
    config: &Config,
    checks: Arc<HealthChecks>,
    shutdown: CancellationToken,
) -> anyhow::Result<ProxyHandle> {
    let settings = &config.proxy;
    server::raise_fd_limit();
    let access_log = AccessLogger::start(&settings.access_log)?;
    // Learned sessions go to the peer node (and come from it) when `[replication]` is set.
    let replicator = config.replication.as_ref().map(Replicator::new);
    let prepared = routes::prepare(
        config,
        &HashMap::new(),
        replicator.as_ref(),
        &checks,
        &shutdown,
    )?;
    let workers = settings.workers.unwrap_or_else(|| {
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
    });
    // Bound here, so a port in use fails the start instead of a worker.
    let mut listeners = Vec::with_capacity(prepared.listeners.len());
    let mut sockets: Vec<Vec<std::net::TcpListener>> = (0..workers).map(|_| Vec::new()).collect();
    for (addr, routes) in &prepared.listeners {
        for per_worker in &mut sockets {
            per_worker.push(bind(*addr)?);
        }
        listeners.push(Arc::new(ListenerEntry::new(*addr, Arc::clone(routes))));
    }
    prepared.start_checks(&checks);
    if let Some(replicator) = &replicator {
        replicator.spawn(shutdown.child_token());
    }
    let running =
        server::spawn_workers(settings, &access_log, &listeners, sockets, &shutdown).await?;
    for listener in &listeners {
        info!(listen = %listener.addr, https = listener.https(), services = listener.routes().services.len(), workers, "proxy listening");
    }
    Ok(ProxyHandle {
        listeners: RwLock::new(listeners),
        workers: running.commands,
        live_accept_loops: running.live_accept_loops,
        threads: running.threads,
        finished: std::sync::Mutex::new(running.finished),
        connection_counters: running.counters,
        access_log,
        shutdown,
        probe_server: running.probe_server,
        replicator,
        checks,
        reloading: tokio::sync::Mutex::new(()),
    })
}

/// A running proxy.
pub struct ProxyHandle {
    /// The addresses served, in config order; a reload adds and removes some.
    pub(super) listeners: RwLock<Vec<Arc<ListenerEntry>>>,
    /// One per worker thread: how a reload asks it to serve a new address.
    pub(super) workers: Vec<mpsc::UnboundedSender<AddListener>>,
    pub(super) live_accept_loops: Arc<AtomicUsize>,
    pub(super) threads: Vec<std::thread::JoinHandle<()>>,
    /// Each worker says here that it has finished (its connections closed).
    pub(super) finished: std::sync::Mutex<Vec<oneshot::Receiver<()>>>,
    pub(super) connection_counters: Arc<ConnectionCounters>,
    pub(super) access_log: super::access_log::AccessLogger,
    pub(super) shutdown: CancellationToken,
    pub(super) probe_server: ServeProbe,
    pub(super) replicator: Option<Arc<Replicator>>,
    /// The node's health checks, which this proxy's services run through.
    pub(super) checks: Arc<HealthChecks>,
    /// One reload at a time.
    pub(super) reloading: tokio::sync::Mutex<()>,
}

/// A reload of the proxy, checked and built but not applied: see
/// [`ProxyHandle::prepare_reload`].
pub struct PreparedReload {
    routes: routes::Prepared,
    /// Sockets for addresses the new config adds, one per worker, bound already.
    new_sockets: HashMap<SocketAddr, Vec<std::net::TcpListener>>,
}

impl ProxyHandle {
    /// The replication link (`[replication]`), which the XDP data plane shares its flows over.
    pub fn replicator(&self) -> Option<Arc<Replicator>> {
        self.replicator.clone()
    }

    /// The addresses listened on, in config order.
    pub fn listen_addresses(&self) -> Vec<SocketAddr> {
        self.listeners().iter().map(|l| l.addr).collect()
    }

    fn listeners(&self) -> Vec<Arc<ListenerEntry>> {
        self.listeners
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Every HTTP service in force, with the address it is served on, in config order.
    fn service_entries(&self) -> Vec<(SocketAddr, Arc<ServiceEntry>)> {
        self.listeners()
            .iter()
            .flat_map(|listener| {
                let routes = listener.routes();
                routes
                    .services
                    .iter()
                    .map(|service| (listener.addr, Arc::clone(service)))
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// Counters of every service and listener.
    pub fn stats(&self) -> ProxyStats {
        let services = self
            .service_entries()
            .into_iter()
            .map(|(listen, service)| ServiceStats {
                name: service.name.to_string(),
                listen,
                requests: service.counters.snapshot(),
                errors: service.counters.errors.load(Ordering::Relaxed),
                in_flight: service.counters.in_flight.load(Ordering::Relaxed),
            })
            .collect();
        let listeners = self
            .listeners()
            .iter()
            .map(|listener| ListenerStats {
                listen: listener.addr,
                https: listener.https(),
                unrouted: listener.unrouted.snapshot(),
            })
            .collect();
        ProxyStats {
            services,
            listeners,
            connections_open: self.connection_counters.open.load(Ordering::Relaxed),
            connections_total: self.connection_counters.total.load(Ordering::Relaxed),
            connections_refused_per_client: self
                .connection_counters
                .refused_per_client
                .load(Ordering::Relaxed),
            access_log_dropped: self.access_log.dropped(),
        }
    }

    /// Each HTTP service as `tandem status` shows it: the policy's view (backends, health,
    /// sessions) with the engine's counters.
    pub fn service_status(&self) -> Vec<HttpServiceStatus> {
        self.service_entries()
            .into_iter()
            .map(|(listen, service)| status_of(listen, &service))
            .collect()
    }

    /// Each HTTP service's status and latency histogram (for the metrics).
    pub fn service_snapshots(&self) -> Vec<ServiceSnapshot> {
        self.service_entries()
            .into_iter()
            .map(|(listen, service)| ServiceSnapshot {
                status: status_of(listen, &service),
                latency: service.counters.latency.snapshot(),
            })
            .collect()
    }

    /// `tandem drain` / `tandem enable` for an HTTP service's backend (see
    /// [`crate::proxy::policy::upstream::Upstream::set_drained`]). `Ok(false)` when no HTTP service has that
    /// name; an error names the service's backends when it has no such backend.
    pub fn set_drained(
        &self,
        service: &str,
        backend: SocketAddr,
        drained: bool,
    ) -> Result<bool, String> {
        let Some((_, entry)) = self
            .service_entries()
            .into_iter()
            .find(|(_, entry)| &*entry.name == service)
        else {
            return Ok(false);
        };
        if entry.upstream.set_drained(backend, drained) {
            return Ok(true);
        }
        let known = entry.upstream.service().backends.iter().map(|b| b.address);
        Err(crate::config::no_such_backend(service, backend, known))
    }

    /// The first step of a reload: builds what `config` needs (upstreams, TLS from the
    /// certificate files, sockets for new listen addresses) without changing anything that
    /// serves. An error (a certificate that does not load, a port in use) leaves the proxy as
    /// it was. The proxy settings (`[proxy]`, `[replication]`) must be those it started with:
    /// the caller refuses a reload that changes them.
    pub fn prepare_reload(&self, config: &Config) -> anyhow::Result<PreparedReload> {
        let current: HashMap<Arc<str>, Arc<ServiceEntry>> = self
            .service_entries()
            .into_iter()
            .map(|(_, entry)| (Arc::clone(&entry.name), entry))
            .collect();
        let routes = routes::prepare(
            config,
            &current,
            self.replicator.as_ref(),
            &self.checks,
            &self.shutdown,
        );
        // Building an upstream registers it for replicated sessions: until the reload is
        // applied (or if it is not), the running ones must stay registered.
        for entry in current.values() {
            entry.upstream.register_with_replicator();
        }
        let routes = routes?;
        let served: Vec<SocketAddr> = self.listen_addresses();
        let mut new_sockets = HashMap::new();
        for (addr, _) in &routes.listeners {
            if served.contains(addr) {
                continue;
            }
            let sockets = self
                .workers
                .iter()
                .map(|_| bind(*addr))
                .collect::<anyhow::Result<Vec<_>>>()?;
            new_sockets.insert(*addr, sockets);
        }
        Ok(PreparedReload {
            routes,
            new_sockets,
        })
    }

    /// Applies a prepared reload: addresses that remain get their new routes (the next request
    /// of every open connection follows them), new addresses are served by every worker before
    /// this returns, removed addresses stop accepting (their open connections finish), and the
    /// checks of services that are gone or replaced stop.
    pub async fn commit_reload(&self, reload: PreparedReload) {
        let _one_at_a_time = self.reloading.lock().await;
        let PreparedReload {
            routes,
            mut new_sockets,
        } = reload;
        let before = self.service_entries();
        routes.start_checks(&self.checks);
        let mut listeners = Vec::with_capacity(routes.listeners.len());
        let current = self.listeners();
        for (addr, new_routes) in &routes.listeners {
            if let Some(listener) = current.iter().find(|l| l.addr == *addr) {
                listener.replace_routes(Arc::clone(new_routes));
                listeners.push(Arc::clone(listener));
                continue;
            }
            let listener = Arc::new(ListenerEntry::new(*addr, Arc::clone(new_routes)));
            let sockets = new_sockets.remove(addr).unwrap_or_default();
            let mut running = Vec::with_capacity(sockets.len());
            for (worker, socket) in self.workers.iter().zip(sockets) {
                let (sender, receiver) = oneshot::channel();
                let command = AddListener {
                    listener: Arc::clone(&listener),
                    socket,
                    running: sender,
                };
                if worker.send(command).is_ok() {
                    running.push(receiver);
                }
            }
            for receiver in running {
                let _ = receiver.await;
            }
            info!(listen = %addr, https = listener.https(), "proxy listening (added by reload)");
            listeners.push(listener);
        }
        for gone in current
            .iter()
            .filter(|l| !listeners.iter().any(|n| n.addr == l.addr))
        {
            info!(listen = %gone.addr, "proxy stops listening (removed by reload); open connections finish");
            gone.closed.cancel();
        }
        *self.listeners.write().unwrap_or_else(|p| p.into_inner()) = listeners;
        let after = routes.services();
        for (_, entry) in &before {
            if !after
                .get(&entry.name)
                .is_some_and(|kept| Arc::ptr_eq(kept, entry))
            {
                entry.checks.cancel();
            }
        }
        for entry in after.values() {
            entry.upstream.register_with_replicator();
        }
    }

    /// The built-in VRRP tracker: every accept loop is running, and a request answered by the
    /// proxy within 500 ms, over TCP to a listener whose address is on this node (over an
    /// in-memory pipe through the same HTTP stack when none is, e.g. a backup node that does
    /// not hold the virtual address).
    /// Whether every worker thread of the proxy still runs (none ended by a panic or a hang
    /// that killed it): what the systemd watchdog keepalive is conditioned on.
    pub fn workers_alive(&self) -> bool {
        !self
            .threads
            .iter()
            .any(std::thread::JoinHandle::is_finished)
    }

    pub async fn probe(&self) -> bool {
        let listeners = self.listeners();
        // A reload registers new accept loops before it lists their address, and unlists an
        // address before its loops end: at least as many live as listed.
        let accepting = self.live_accept_loops.load(Ordering::Relaxed)
            >= self.workers.len() * listeners.len()
            && !self
                .threads
                .iter()
                .any(std::thread::JoinHandle::is_finished);
        if self.shutdown.is_cancelled() || !accepting {
            return false;
        }
        let local = listeners
            .iter()
            .filter(|listener| !listener.https())
            .find_map(|listener| local_target(listener.addr));
        let answered = match local {
            Some(target) => tokio::time::timeout(PROBE_TIMEOUT, probe_tcp(target)).await,
            None => {
                tokio::time::timeout(
                    PROBE_TIMEOUT,
                    self.probe_server.probe(listeners.first().cloned()),
                )
                .await
            }
        };
        matches!(answered, Ok(true))
    }

    /// Waits until the proxy has stopped: cancel the shutdown token first. Open connections
    /// finish their current request (up to 5 s), then are closed.
    pub async fn stopped(&self) {
        self.shutdown.cancelled().await;
        let finished = std::mem::take(
            &mut *self
                .finished
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        );
        for finished in finished {
            // An error means the worker is gone already.
            let _ = finished.await;
        }
    }
}

/// One service's status: its upstream's view and the engine's counters.
fn status_of(listen: SocketAddr, service: &ServiceEntry) -> HttpServiceStatus {
    HttpServiceStatus {
        name: service.name.to_string(),
        listen,
        upstream: service.upstream.status(),
        requests: service.counters.snapshot(),
        errors: service.counters.errors.load(Ordering::Relaxed),
        tunnels: u64::try_from(service.counters.tunnels.load(Ordering::Relaxed)).unwrap_or(0),
    }
}

/// Where to reach `listen` from this node, if its address is here (or it listens on all).
fn local_target(listen: SocketAddr) -> Option<SocketAddr> {
    let ip = listen.ip();
    if ip.is_unspecified() {
        let loopback: IpAddr = match ip {
            IpAddr::V4(_) => Ipv4Addr::LOCALHOST.into(),
            IpAddr::V6(_) => Ipv6Addr::LOCALHOST.into(),
        };
        return Some(SocketAddr::new(loopback, listen.port()));
    }
    // Binding succeeds only for an address assigned to this node (no IP_FREEBIND here).
    UdpSocket::bind((ip, 0)).ok().map(|_| listen)
}

async fn probe_tcp(target: SocketAddr) -> bool {
    let Ok(mut stream) = tokio::net::TcpStream::connect(target).await else {
        return false;
    };
    answers_probe(&mut stream).await
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    fn config(listen: &str) -> crate::config::Config {
        let text = format!(
            "[node]\nname = \"t\"\ninterface = \"lo\"\ndataplane = \"none\"\n\
             [proxy]\naccess_log = {{ level = 0 }}\n\
             [[service]]\nname = \"web\"\nlisten = \"{listen}\"\nbackends = [\"127.0.0.1:9\"]\n"
        );
        match crate::config::parse(&text, Path::new("t.toml")) {
            Ok(loaded) => loaded.config,
            Err(errors) => panic!("test config: {errors}"),
        }
    }

    #[tokio::test]
    async fn probe_answers_while_running_and_fails_after_shutdown() {
        // A listener on a local address is probed over TCP; one on an address this host does
        // not have (as on a backup node without the VIP) through the in-memory pipe.
        for listen in ["127.0.0.1:28391", "198.18.0.250:28392"] {
            let shutdown = CancellationToken::new();
            let proxy = crate::proxy::start(&config(listen), Default::default(), shutdown.clone())
                .await
                .expect("proxy starts");
            assert!(proxy.probe().await, "probe of a running proxy on {listen}");
            shutdown.cancel();
            assert!(!proxy.probe().await, "probe after shutdown on {listen}");
            proxy.stopped().await;
        }
    }

    /// A backend on loopback that answers every request of a kept-alive connection with its
    /// name as the body.
    async fn named_backend(name: &'static str) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a backend");
        let addr = listener.local_addr().expect("backend address");
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut pending = Vec::new();
                    let mut chunk = [0u8; 1024];
                    while let Ok(read) = stream.read(&mut chunk).await {
                        if read == 0 {
                            return;
                        }
                        pending.extend_from_slice(&chunk[..read]);
                        while let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                            pending.drain(..end + 4);
                            let answer = format!(
                                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{name}",
                                name.len()
                            );
                            if stream.write_all(answer.as_bytes()).await.is_err() {
                                return;
                            }
                        }
                    }
                });
            }
        });
        addr
    }

    /// Sends a GET on `stream` (kept alive) and returns the response body.
    async fn ask(stream: &mut tokio::net::TcpStream) -> String {
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
            .await
            .expect("send a request");
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            let read = stream.read(&mut byte).await.expect("read the head");
            assert_ne!(read, 0, "the proxy closed the connection");
            head.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&head).to_lowercase();
        let length: usize = head
            .lines()
            .find_map(|line| line.strip_prefix("content-length:"))
            .and_then(|value| value.trim().parse().ok())
            .expect("a Content-Length");
        let mut body = vec![0u8; length];
        stream.read_exact(&mut body).await.expect("read the body");
        String::from_utf8_lossy(&body).into_owned()
    }

    fn services_config(services: &[(&str, u16, SocketAddr)]) -> crate::config::Config {
        let mut text = "[node]\nname = \"t\"\ninterface = \"lo\"\ndataplane = \"none\"\n\
                        [proxy]\nworkers = 2\naccess_log = { level = 0 }\n"
            .to_owned();
        for (name, port, backend) in services {
            text.push_str(&format!(
                "[[service]]\nname = \"{name}\"\nlisten = \"127.0.0.1:{port}\"\nbackends = [\"{backend}\"]\n"
            ));
        }
        match crate::config::parse(&text, Path::new("t.toml")) {
            Ok(loaded) => loaded.config,
            Err(errors) => panic!("test config: {errors}"),
        }
    }

    #[tokio::test]
    async fn a_reload_routes_the_next_request_of_an_open_connection_and_adds_and_removes_addresses()
    {
        let (a, b) = (named_backend("a").await, named_backend("b").await);
        let (first_port, second_port) = (28395, 28396);
        let shutdown = CancellationToken::new();
        let proxy = crate::proxy::start(
            &services_config(&[("web", first_port, a)]),
            Default::default(),
            shutdown.clone(),
        )
        .await
        .expect("proxy starts");
        let mut kept = tokio::net::TcpStream::connect(("127.0.0.1", first_port))
            .await
            .expect("connect");
        assert_eq!(ask(&mut kept).await, "a");

        // web moves to backend b; a second address appears.
        let reload = proxy
            .prepare_reload(&services_config(&[
                ("web", first_port, b),
                ("api", second_port, a),
            ]))
            .expect("prepare");
        proxy.commit_reload(reload).await;
        assert_eq!(ask(&mut kept).await, "b", "same connection, new routes");
        let mut second = tokio::net::TcpStream::connect(("127.0.0.1", second_port))
            .await
            .expect("the added address accepts at once");
        assert_eq!(ask(&mut second).await, "a");
        assert!(
            proxy.probe().await,
            "probe after a reload that added an address"
        );

        // A reload that cannot apply (the address is taken by another program) changes nothing.
        let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let taken_port = taken.local_addr().expect("address").port();
        let refused = proxy.prepare_reload(&services_config(&[
            ("web", first_port, b),
            ("api", second_port, a),
            ("other", taken_port, a),
        ]));
        assert!(refused.is_err(), "a port in use fails the reload");
        let names: Vec<String> = proxy.stats().services.into_iter().map(|s| s.name).collect();
        assert_eq!(names, ["web", "api"]);

        // The first address goes: it stops accepting, its open connection goes on.
        let reload = proxy
            .prepare_reload(&services_config(&[("api", second_port, a)]))
            .expect("prepare");
        proxy.commit_reload(reload).await;
        assert_eq!(
            ask(&mut kept).await,
            "b",
            "an open connection outlives its address"
        );
        let mut closed = false;
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(("127.0.0.1", first_port))
                .await
                .is_err()
            {
                closed = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(closed, "the removed address refuses new connections");
        assert_eq!(ask(&mut second).await, "a");
        assert!(
            proxy.probe().await,
            "probe after a reload that removed an address"
        );

        shutdown.cancel();
        drop((kept, second));
        proxy.stopped().await;
    }
}
