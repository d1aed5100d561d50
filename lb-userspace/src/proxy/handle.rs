//! [`ProxyHandle`]: what the rest of the daemon holds of a running proxy: its counters (for
//! `tandem status` and metrics), the built-in VRRP tracker's [`ProxyHandle::probe`], and the
//! end of a graceful shutdown.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use http::StatusCode;
use serde::Serialize;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::info;

use super::forward::{ListenerEntry, ServiceEntry};
use super::replicate::Replicator;
use super::routes;
use super::server::{bind, AddListener, ServeProbe};
use crate::config::Config;

/// How long the probe's local request may take.
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);
/// The probe's request: the server-wide `OPTIONS *`, answered by the proxy itself.
const PROBE_REQUEST: &[u8] =
    b"OPTIONS * HTTP/1.1\r\nHost: tandem-probe\r\nConnection: close\r\n\r\n";

/// Request counters of one service (or of a listener's unrouted requests).
#[derive(Debug, Default)]
pub struct Counters {
    /// By status class: 1xx, 2xx, 3xx, 4xx, 5xx.
    pub by_class: [AtomicU64; 5],
    /// Backend attempts that failed (connect refused or timed out, connection lost, timeout).
    pub errors: AtomicU64,
    pub in_flight: AtomicI64,
    /// Protocol switches (WebSocket...) tunneling now.
    pub tunnels: AtomicI64,
    /// How long answered requests took, from the request head to the end of the response.
    pub latency: Latency,
}

/// Upper bounds (seconds) of the request latency histogram's buckets; one more counts the rest.
pub const LATENCY_BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A lock-free latency histogram: a count per bucket (not cumulative) and the sum.
#[derive(Debug, Default)]
pub struct Latency {
    /// One per [`LATENCY_BUCKETS`] entry, then the +Inf bucket.
    buckets: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    sum_micros: AtomicU64,
}

impl Latency {
    pub fn observe(&self, took: Duration) {
        let seconds = took.as_secs_f64();
        let bucket = LATENCY_BUCKETS
            .iter()
            .position(|&bound| seconds <= bound)
            .unwrap_or(LATENCY_BUCKETS.len());
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> LatencySnapshot {
        let buckets: Vec<(f64, u64)> = LATENCY_BUCKETS
            .iter()
            .copied()
            .chain([f64::INFINITY])
            .zip(&self.buckets)
            .map(|(bound, count)| (bound, count.load(Ordering::Relaxed)))
            .collect();
        LatencySnapshot {
            count: buckets.iter().map(|(_, count)| count).sum(),
            sum_seconds: self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6,
            buckets,
        }
    }
}

/// A [`Latency`] histogram at one moment.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LatencySnapshot {
    pub count: u64,
    pub sum_seconds: f64,
    /// (upper bound in seconds, observations in this bucket alone); the last bound is +Inf.
    pub buckets: Vec<(f64, u64)>,
}

/// One HTTP service as the metrics read it.
#[derive(Debug, Clone)]
pub struct ServiceSnapshot {
    pub upstream: super::upstream::UpstreamStatus,
    pub requests: RequestCounts,
    pub errors: u64,
    /// Protocol switches (WebSocket...) tunneling now.
    pub tunnels: u64,
    pub latency: LatencySnapshot,
}

impl Counters {
    pub fn count(&self, status: StatusCode) {
        let class = usize::from(status.as_u16() / 100).clamp(1, 5) - 1;
        self.by_class[class].fetch_add(1, Ordering::Relaxed);
    }

    fn snapshot(&self) -> RequestCounts {
        let get = |i: usize| self.by_class[i].load(Ordering::Relaxed);
        RequestCounts {
            informational: get(0),
            success: get(1),
            redirect: get(2),
            client_error: get(3),
            server_error: get(4),
        }
    }
}

/// Requests answered, by status class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct RequestCounts {
    #[serde(rename = "1xx")]
    pub informational: u64,
    #[serde(rename = "2xx")]
    pub success: u64,
    #[serde(rename = "3xx")]
    pub redirect: u64,
    #[serde(rename = "4xx")]
    pub client_error: u64,
    #[serde(rename = "5xx")]
    pub server_error: u64,
}

impl RequestCounts {
    pub fn total(&self) -> u64 {
        self.informational + self.success + self.redirect + self.client_error + self.server_error
    }
}

/// One service's counters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServiceStats {
    pub name: String,
    pub listen: SocketAddrV4,
    pub requests: RequestCounts,
    pub errors: u64,
    pub in_flight: i64,
}

/// One listener's counters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ListenerStats {
    pub listen: SocketAddrV4,
    pub https: bool,
    /// Requests no service took (404) or refused before routing (400, 431, 501).
    pub unrouted: RequestCounts,
}

/// Everything `stats()` reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProxyStats {
    pub services: Vec<ServiceStats>,
    pub listeners: Vec<ListenerStats>,
    pub connections_open: u64,
    pub connections_total: u64,
    pub access_log_dropped: u64,
}

/// Connection counters shared by the accept loops.
#[derive(Debug, Default)]
pub struct ConnectionCounters {
    pub open: AtomicU64,
    pub total: AtomicU64,
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
    pub(super) finished: Vec<oneshot::Receiver<()>>,
    pub(super) connection_counters: Arc<ConnectionCounters>,
    pub(super) access_log: super::access_log::AccessLogger,
    pub(super) shutdown: CancellationToken,
    pub(super) probe_server: ServeProbe,
    pub(super) replicator: Option<Arc<Replicator>>,
    /// One reload at a time.
    pub(super) reloading: tokio::sync::Mutex<()>,
}

/// A reload of the proxy, checked and built but not applied: see
/// [`ProxyHandle::prepare_reload`].
pub struct PreparedReload {
    routes: routes::Prepared,
    /// Sockets for addresses the new config adds, one per worker, bound already.
    new_sockets: HashMap<SocketAddrV4, Vec<std::net::TcpListener>>,
}

impl ProxyHandle {
    /// The addresses listened on, in config order.
    pub fn listen_addresses(&self) -> Vec<SocketAddrV4> {
        self.listeners().iter().map(|l| l.addr).collect()
    }

    fn listeners(&self) -> Vec<Arc<ListenerEntry>> {
        self.listeners
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Every HTTP service in force, with the address it is served on, in config order.
    fn service_entries(&self) -> Vec<(SocketAddrV4, Arc<ServiceEntry>)> {
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
            access_log_dropped: self.access_log.dropped(),
        }
    }

    /// Each HTTP service as `tandem status` shows it: the policy's view (backends, health,
    /// sessions) with the engine's counters.
    pub fn service_status(&self) -> Vec<serde_json::Value> {
        self.service_entries()
            .into_iter()
            .map(|(listen, service)| {
                let mut value = serde_json::to_value(service.upstream.status()).unwrap_or_default();
                if let Some(fields) = value.as_object_mut() {
                    fields.insert("name".into(), service.name.to_string().into());
                    fields.insert("listen".into(), listen.to_string().into());
                    fields.insert(
                        "requests".into(),
                        serde_json::to_value(service.counters.snapshot()).unwrap_or_default(),
                    );
                    fields.insert(
                        "errors".into(),
                        service.counters.errors.load(Ordering::Relaxed).into(),
                    );
                    fields.insert(
                        "tunnels".into(),
                        service.counters.tunnels.load(Ordering::Relaxed).into(),
                    );
                }
                value
            })
            .collect()
    }

    /// Each HTTP service's policy view and counters, typed (for the metrics).
    pub fn service_snapshots(&self) -> Vec<ServiceSnapshot> {
        self.service_entries()
            .into_iter()
            .map(|(_, service)| ServiceSnapshot {
                upstream: service.upstream.status(),
                requests: service.counters.snapshot(),
                errors: service.counters.errors.load(Ordering::Relaxed),
                tunnels: u64::try_from(service.counters.tunnels.load(Ordering::Relaxed))
                    .unwrap_or(0),
                latency: service.counters.latency.snapshot(),
            })
            .collect()
    }

    /// `tandem drain` / `tandem enable` for an HTTP service's backend (see
    /// [`super::upstream::Upstream::set_drained`]). `Ok(false)` when no HTTP service has that
    /// name; an error names the service's backends when it has no such backend.
    pub fn set_drained(
        &self,
        service: &str,
        backend: SocketAddrV4,
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
        let routes = routes::prepare(config, &current, self.replicator.as_ref(), &self.shutdown);
        // Building an upstream registers it for replicated sessions: until the reload is
        // applied (or if it is not), the running ones must stay registered.
        for entry in current.values() {
            entry.upstream.register_with_replicator();
        }
        let routes = routes?;
        let served: Vec<SocketAddrV4> = self.listen_addresses();
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
        routes.start_checks();
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
    pub async fn stopped(self) {
        self.shutdown.cancelled().await;
        for finished in self.finished {
            // An error means the worker is gone already.
            let _ = finished.await;
        }
    }
}

/// Where to reach `listen` from this node, if its address is here (or it listens on all).
fn local_target(listen: SocketAddrV4) -> Option<SocketAddr> {
    let ip = *listen.ip();
    if ip.is_unspecified() {
        return Some(SocketAddr::from((Ipv4Addr::LOCALHOST, listen.port())));
    }
    // Binding succeeds only for an address assigned to this node (no IP_FREEBIND here).
    UdpSocket::bind((ip, 0))
        .ok()
        .map(|_| SocketAddr::V4(listen))
}

async fn probe_tcp(target: SocketAddr) -> bool {
    let Ok(mut stream) = tokio::net::TcpStream::connect(target).await else {
        return false;
    };
    answers_probe(&mut stream).await
}

/// Sends the probe request over `stream` and checks for a 200 answer.
pub(super) async fn answers_probe<S>(stream: &mut S) -> bool
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    if stream.write_all(PROBE_REQUEST).await.is_err() {
        return false;
    }
    let mut answer = [0u8; 12];
    stream.read_exact(&mut answer).await.is_ok() && &answer == b"HTTP/1.1 200"
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

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
            let proxy = crate::proxy::start(&config(listen), shutdown.clone())
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
    async fn named_backend(name: &'static str) -> SocketAddrV4 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a backend");
        let SocketAddr::V4(addr) = listener.local_addr().expect("backend address") else {
            unreachable!("bound on IPv4");
        };
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

    fn services_config(services: &[(&str, u16, SocketAddrV4)]) -> crate::config::Config {
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
