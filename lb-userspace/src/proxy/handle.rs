//! [`ProxyHandle`]: what the rest of the daemon holds of a running proxy: its counters (for
//! `tandem status` and metrics), the built-in VRRP tracker's [`ProxyHandle::probe`], and the
//! end of a graceful shutdown.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use serde::Serialize;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use super::forward::ListenerEntry;
use super::server::ServeProbe;

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
    pub(super) listeners: Vec<Arc<ListenerEntry>>,
    /// One accept loop per listener and worker.
    pub(super) expected_accept_loops: usize,
    pub(super) live_accept_loops: Arc<AtomicUsize>,
    pub(super) threads: Vec<std::thread::JoinHandle<()>>,
    /// Each worker says here that it has finished (its connections closed).
    pub(super) finished: Vec<oneshot::Receiver<()>>,
    pub(super) connection_counters: Arc<ConnectionCounters>,
    pub(super) access_log: super::access_log::AccessLogger,
    pub(super) shutdown: CancellationToken,
    pub(super) probe_server: ServeProbe,
}

impl ProxyHandle {
    /// The addresses listened on, in config order.
    pub fn listen_addresses(&self) -> Vec<SocketAddrV4> {
        self.listeners.iter().map(|l| l.addr).collect()
    }

    /// Counters of every service and listener.
    pub fn stats(&self) -> ProxyStats {
        let services = self
            .listeners
            .iter()
            .flat_map(|listener| {
                listener.services.iter().map(|service| ServiceStats {
                    name: service.name.to_string(),
                    listen: listener.addr,
                    requests: service.counters.snapshot(),
                    errors: service.counters.errors.load(Ordering::Relaxed),
                    in_flight: service.counters.in_flight.load(Ordering::Relaxed),
                })
            })
            .collect();
        let listeners = self
            .listeners
            .iter()
            .map(|listener| ListenerStats {
                listen: listener.addr,
                https: listener.https,
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
        self.listeners
            .iter()
            .flat_map(|listener| {
                listener.services.iter().map(move |service| {
                    let mut value =
                        serde_json::to_value(service.upstream.status()).unwrap_or_default();
                    if let Some(fields) = value.as_object_mut() {
                        fields.insert("name".into(), service.name.to_string().into());
                        fields.insert("listen".into(), listener.addr.to_string().into());
                        fields.insert(
                            "requests".into(),
                            serde_json::to_value(service.counters.snapshot()).unwrap_or_default(),
                        );
                        fields.insert(
                            "errors".into(),
                            service.counters.errors.load(Ordering::Relaxed).into(),
                        );
                    }
                    value
                })
            })
            .collect()
    }

    /// Each HTTP service's policy view and counters, typed (for the metrics).
    pub fn service_snapshots(&self) -> Vec<ServiceSnapshot> {
        self.listeners
            .iter()
            .flat_map(|listener| {
                listener.services.iter().map(|service| ServiceSnapshot {
                    upstream: service.upstream.status(),
                    requests: service.counters.snapshot(),
                    errors: service.counters.errors.load(Ordering::Relaxed),
                    latency: service.counters.latency.snapshot(),
                })
            })
            .collect()
    }

    /// The built-in VRRP tracker: every accept loop is running, and a request answered by the
    /// proxy within 500 ms, over TCP to a listener whose address is on this node (over an
    /// in-memory pipe through the same HTTP stack when none is, e.g. a backup node that does
    /// not hold the virtual address).
    pub async fn probe(&self) -> bool {
        let accepting = self.live_accept_loops.load(Ordering::Relaxed)
            == self.expected_accept_loops
            && !self
                .threads
                .iter()
                .any(std::thread::JoinHandle::is_finished);
        if self.shutdown.is_cancelled() || !accepting {
            return false;
        }
        let local = self
            .listeners
            .iter()
            .filter(|listener| !listener.https)
            .find_map(|listener| local_target(listener.addr));
        let answered = match local {
            Some(target) => tokio::time::timeout(PROBE_TIMEOUT, probe_tcp(target)).await,
            None => tokio::time::timeout(PROBE_TIMEOUT, self.probe_server.probe()).await,
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
}
