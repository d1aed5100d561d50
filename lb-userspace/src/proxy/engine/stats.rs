//! The proxy's counters: requests by status class, latency, backend errors and open tunnels per
//! service, unrouted requests per listener, connections. Written by the engine with relaxed
//! atomics (no lock on the request path), read as snapshots by `tandem status` and the metrics.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use http::StatusCode;
use serde::{Deserialize, Serialize};

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

/// One HTTP service as `tandem status` shows it, `tandem status --json` prints it and the
/// metrics read it: the policy's view (backends, health, sessions) with the engine's counters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HttpServiceStatus {
    pub name: String,
    pub listen: std::net::SocketAddr,
    #[serde(flatten)]
    pub upstream: crate::proxy::policy::upstream::UpstreamStatus,
    pub requests: RequestCounts,
    pub errors: u64,
    /// Protocol switches (WebSocket...) tunneling now.
    #[serde(default)]
    pub tunnels: u64,
}

/// One HTTP service as the metrics read it: its status and its latency histogram.
#[derive(Debug, Clone)]
pub struct ServiceSnapshot {
    pub status: HttpServiceStatus,
    pub latency: LatencySnapshot,
}

impl Counters {
    pub fn count(&self, status: StatusCode) {
        let class = usize::from(status.as_u16() / 100).clamp(1, 5) - 1;
        self.by_class[class].fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> RequestCounts {
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
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
    pub listen: SocketAddr,
    pub requests: RequestCounts,
    pub errors: u64,
    pub in_flight: i64,
}

/// One listener's counters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ListenerStats {
    pub listen: SocketAddr,
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
    /// Connections closed at once for `max_connections_per_client`.
    pub connections_refused_per_client: u64,
    pub access_log_dropped: u64,
}

/// Connection counters shared by the accept loops.
#[derive(Debug, Default)]
pub struct ConnectionCounters {
    pub open: AtomicU64,
    pub total: AtomicU64,
    /// Connections closed at once for `max_connections_per_client`.
    pub refused_per_client: AtomicU64,
}
