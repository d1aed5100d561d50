//! A client connection's state and what every connection of the proxy shares ([`Engine`]):
//! the budget, the timeouts, hyper's HTTP/1.1 server for hand-offs, how backend connections are
//! made, each worker's load, the access log. The HTTP/1.1 engine (`h1`) and the HTTP/2 server
//! (`h2`, whose streams go to `forward`) both serve a [`Connection`]; neither needs the other
//! to do so.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use super::access_log::{AccessLogger, Record};
use super::backend::PoolSettings;
use super::dispatch;
use super::guard::{ClientEvents, ConnActivity, Rejection, Timeouts};
use super::headers::Forwarded;
use super::routes::{ListenerEntry, Routes, ServiceEntry};

/// What every request of the proxy shares.
pub struct Engine {
    /// The proxy's `max_connections` budget, given back as connections close.
    pub budget: Arc<tokio::sync::Semaphore>,
    pub connection_counters: Arc<super::stats::ConnectionCounters>,
    /// hyper's HTTP/1.1 server, for requests handed off to it.
    pub hyper: hyper::server::conn::http1::Builder,
    /// Cancelled after the shutdown grace: HTTP/2 connections and those hyper serves close
    /// at once.
    pub force_close: tokio_util::sync::CancellationToken,
    /// The header and idle timeouts of client connections (enforced by their client I/O).
    pub client_timeouts: Timeouts,
    /// How backend connections are made and pooled (the pool itself is the worker's).
    pub pool: PoolSettings,
    pub forwarded: Forwarded,
    pub backend_timeout: std::time::Duration,
    pub tunnel_timeout: std::time::Duration,
    /// Inactivity allowed of a client that owes a request body or is taking a response.
    pub client_timeout: std::time::Duration,
    /// Inactivity allowed of a backend once it is answering, or taking a request body.
    pub server_timeout: std::time::Duration,
    /// Largest request body accepted (413 beyond), if limited.
    pub max_body_size: Option<u64>,
    /// Largest request head (HTTP/1.1) or header list (HTTP/2) accepted.
    pub max_header_size: usize,
    /// This worker's place among the workers' loads (none for the probe's server).
    pub load: Option<WorkerLoad>,
    /// Connections per client address, if limited (shared by every worker).
    pub per_client: Option<Arc<super::per_client::ClientTable>>,
    pub access_log: AccessLogger,
}

impl Engine {
    /// A counted connection closed: out of the open count, its place in the budget free.
    pub fn connection_closed(&self) {
        if let Some(load) = &self.load {
            load.left_from(load.index);
        }
        self.connection_counters
            .open
            .fetch_sub(1, Ordering::Relaxed);
        self.budget.add_permits(1);
    }
}

/// The connections each worker has open, and which one this is: a worker that has more than
/// another hands a new connection over (see the accept loop in `server`).
pub struct WorkerLoad {
    pub loads: Arc<[std::sync::atomic::AtomicUsize]>,
    pub index: usize,
}

impl WorkerLoad {
    /// The worker with the fewest connections, if it has fewer than this one.
    pub fn less_loaded_other(&self) -> Option<usize> {
        let mine = self.loads.get(self.index)?.load(Ordering::Relaxed);
        let (least, count) = self
            .loads
            .iter()
            .map(|load| load.load(Ordering::Relaxed))
            .enumerate()
            .min_by_key(|&(_, count)| count)?;
        (count < mine).then_some(least)
    }

    pub fn arrived_at(&self, worker: usize) {
        if let Some(load) = self.loads.get(worker) {
            load.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn left_from(&self, worker: usize) {
        if let Some(load) = self.loads.get(worker) {
            load.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// One client connection.
pub struct Connection {
    pub engine: Arc<Engine>,
    pub listener: Arc<ListenerEntry>,
    /// The listener's routes as this connection last saw them (see [`ListenerEntry`]).
    routes: Mutex<(u64, Arc<Routes>)>,
    /// Whether this connection came over TLS (for X-Forwarded-Proto).
    pub https: bool,
    pub client: SocketAddr,
    pub activity: ConnActivity,
    /// In the open count and the budget (every accepted connection, not the probe's):
    /// given back when this state goes, with the connection's last request.
    counted: bool,
    /// Its place among its client address's connections (`max_connections_per_client`).
    _client_slot: Option<Box<super::per_client::ClientSlot>>,
}

impl Drop for Connection {
    fn drop(&mut self) {
        if self.counted {
            self.engine.connection_closed();
        }
    }
}

impl Connection {
    pub fn new(
        engine: Arc<Engine>,
        listener: Arc<ListenerEntry>,
        https: bool,
        client: SocketAddr,
        counted: bool,
        client_slot: Option<Box<super::per_client::ClientSlot>>,
    ) -> Connection {
        let routes = Mutex::new(listener.current());
        Connection {
            engine,
            listener,
            routes,
            https,
            client,
            activity: ConnActivity::default(),
            counted,
            _client_slot: client_slot,
        }
    }

    /// The service for `host` and `path` under the routes in force.
    pub(super) fn select(&self, host: Option<&str>, path: &str) -> Option<Arc<ServiceEntry>> {
        let mut seen = self.routes.lock().unwrap_or_else(|p| p.into_inner());
        if seen.0 != self.listener.generation() {
            *seen = self.listener.current();
        }
        let routes = &seen.1;
        dispatch::select(&routes.rules, host, path).map(|index| Arc::clone(&routes.services[index]))
    }
}

impl ClientEvents for Connection {
    fn activity(&self) -> &ConnActivity {
        &self.activity
    }

    fn timeouts(&self) -> Timeouts {
        self.engine.client_timeouts
    }

    /// A head refused by the client I/O: counted and logged like any answered request.
    fn rejected(&self, rejection: &Rejection) {
        let (listener, log, peer) = (&*self.listener, &self.engine.access_log, self.client);
        let status =
            http::StatusCode::from_u16(rejection.status).unwrap_or(http::StatusCode::BAD_REQUEST);
        listener.unrouted.count(status);
        tracing::debug!(listen = %listener.addr, client = %peer, status = rejection.status, reason = rejection.reason, "refused a request head");
        if !log.enabled() {
            return;
        }
        let line = rejection.request_line.as_deref().unwrap_or("-");
        let mut words = line.splitn(3, ' ');
        let method = words
            .next()
            .and_then(|m| http::Method::from_bytes(m.as_bytes()).ok())
            .unwrap_or(http::Method::GET);
        let target = words.next().unwrap_or("-").to_owned();
        let version = match words.next() {
            Some("HTTP/1.0") => http::Version::HTTP_10,
            _ => http::Version::HTTP_11,
        };
        log.log(&Record {
            client: peer.ip(),
            method,
            target,
            version,
            host: None,
            status,
            bytes: 0,
            service: Arc::from("-"),
            backend: None,
            took: std::time::Duration::ZERO,
            at: std::time::SystemTime::now(),
            referer: None,
            user_agent: None,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn a_worker_hands_a_connection_to_a_less_loaded_one_only() {
        let loads: Arc<[AtomicUsize]> = (0..3).map(|_| AtomicUsize::new(0)).collect();
        let first = WorkerLoad {
            loads: Arc::clone(&loads),
            index: 0,
        };
        assert_eq!(first.less_loaded_other(), None, "all equal: keep it");
        first.arrived_at(0);
        first.arrived_at(1);
        assert_eq!(first.less_loaded_other(), Some(2));
        first.arrived_at(2);
        assert_eq!(first.less_loaded_other(), None);
        first.left_from(1);
        assert_eq!(first.less_loaded_other(), Some(1));
    }
}
