//! [`Upstream`]: one HTTP service's backends as the HTTP engine sees them.
//!
//! The engine calls [`Upstream::route`] for each request, tries the candidates in order, and
//! reports back with [`Upstream::connect_failed`] and [`Upstream::responded`]. Everything that
//! decides (balancing, health, affinity) lives behind these calls.
//!
//! INTERFACE NOTE: the signatures below are the contract between the engine and the policy side.
//! The bodies are a first plain round robin so the engine can be built against it.

use std::net::{SocketAddr, SocketAddrV4};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use tokio_util::sync::CancellationToken;

use crate::config;

/// One HTTP service's backends and the policy that picks among them.
#[derive(Debug)]
pub struct Upstream {
    service: config::Service,
    next: AtomicUsize,
}

/// The backends to try for one request, best first, and what the policy needs to learn from
/// the answer. Empty `candidates` means no backend is available: answer 503.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub candidates: Vec<SocketAddrV4>,
    /// The request's session key, when the service has affinity and the request carries one.
    pub session_key: Option<String>,
}

impl Upstream {
    pub fn new(service: &config::Service) -> Arc<Self> {
        Arc::new(Upstream {
            service: service.clone(),
            next: AtomicUsize::new(0),
        })
    }

    /// The service this upstream serves.
    pub fn service(&self) -> &config::Service {
        &self.service
    }

    /// Starts the active health checks; they stop when `shutdown` is cancelled.
    pub fn spawn_health_checks(self: &Arc<Self>, shutdown: CancellationToken) {
        let _ = shutdown;
    }

    /// The backends to try for this request, best first.
    pub fn route(&self, request: &http::request::Parts, client: SocketAddr, now: Instant) -> Route {
        let _ = (request, client, now);
        let backends = &self.service.backends;
        let start = self.next.fetch_add(1, Ordering::Relaxed) % backends.len();
        let candidates = (0..backends.len())
            .map(|i| backends[(start + i) % backends.len()].address)
            .collect();
        Route {
            candidates,
            session_key: None,
        }
    }

    /// Connecting to `backend` failed (refused, reset or timed out): the request never reached
    /// it. Passive health: the backend is marked down at once.
    pub fn connect_failed(&self, backend: SocketAddrV4, reason: &str) {
        let _ = (backend, reason);
    }

    /// `backend` answered the request routed by `route`: learn the session (e.g. from the
    /// backend's Set-Cookie) and add what the policy wants the client to keep (the insert-mode
    /// cookie) to `response`.
    pub fn responded(
        &self,
        route: &Route,
        backend: SocketAddrV4,
        response: &mut http::response::Parts,
        now: Instant,
    ) {
        let _ = (route, backend, response, now);
    }
}
