//! [`Upstream`]: one HTTP service's backends as the HTTP engine sees them.
//!
//! The engine calls [`Upstream::route`] for each request, tries the candidates in order, and
//! reports back with [`Upstream::connect_failed`] and [`Upstream::responded`]. Everything that
//! decides lives behind these calls:
//! - health ([`crate::backends::health`]): only backends that are up are candidates; emergency backends
//!   only while every regular one is down; none at all means the engine answers 503;
//! - balancing ([`super::balance`]): the order for requests without a session;
//! - affinity ([`super::affinity`]): a request with a known session key goes to its backend
//!   first; a key seen for the first time (or whose backend is down) is placed by Maglev over
//!   the backends in use, so both nodes agree; in insert mode the proxy's own cookie names the
//!   backend;
//! - replication ([`super::replicate`]): what is learned is sent to the peer node.
//!
//! [`crate::proxy::engine::routes`] builds every HTTP service's upstream from a [`config::Config`].
//!
//! INTERFACE NOTE: `new`, `service`, `health`, `spawn_session_sweep`, `route`, `connect_failed`
//! and `responded` are the contract with the HTTP engine. Health checks are not started here:
//! the node's `backends::health::HealthChecks` runs them for every service, HTTP or L4.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, Weak};
use std::time::{Duration, Instant};

use http::header::SET_COOKIE;
use http::HeaderValue;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::affinity::{self, InsertIds, NewKeyLimit, SessionKey, SessionTable};
use super::balance::{self, BackendSelection, Candidates, Consistent};
use super::queue::{Attempts, Places};
use super::replicate::{self, Replicator, SessionSink};
use crate::backends::health::{self, BackendHealth, HealthTable};
use crate::config::{self, SessionKind, SessionMode};

/// Bounds of the period of the background sweep of expired sessions.
const MIN_SWEEP_PERIOD: Duration = Duration::from_secs(1);
const MAX_SWEEP_PERIOD: Duration = Duration::from_secs(60);

/// One HTTP service's backends and the policy that picks among them.
#[derive(Debug)]
pub struct Upstream {
    service: config::Service,
    health: Arc<HealthTable>,
    /// The backends in use and the selections over them, rebuilt when health changes.
    plan: RwLock<Arc<Plan>>,
    affinity: Affinity,
    replicator: Option<Arc<Replicator>>,
    /// Requests answered per backend, in config order.
    requests: Vec<AtomicU64>,
    /// Failed attempts per backend (connect refused or timed out, connection lost, no answer
    /// in time), in config order.
    errors: Vec<AtomicU64>,
    /// Backends taken out of rotation by the operator (`tandem drain`), in config order.
    drained: Vec<AtomicBool>,
    /// Bumped on every drain change, so the plan is rebuilt.
    drains: AtomicU64,
    /// Places at each backend, when `backend_max_connections` limits them.
    places: Option<Arc<Places>>,
}

/// The backends to try for one request, best first, and what the policy needs to learn from
/// the answer. Empty `candidates` means no backend is available: answer 503.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub candidates: Vec<SocketAddr>,
    /// The client's address (a client may add only so many new session keys).
    pub client: std::net::IpAddr,
    /// The first candidate is the backend of the request's session.
    pub pinned: bool,
    /// The request's session key, when the service has affinity and the request carries one
    /// (in cookie-insert mode: the value of the proxy's cookie as the client sent it).
    pub session_key: Option<String>,
}

/// How the service keeps sessions.
#[derive(Debug)]
enum Affinity {
    None,
    /// Pound's way: a table of keys, learned from requests (and Set-Cookie).
    Learn {
        key: SessionKey,
        /// For `type = "cookie"`: the cookie whose Set-Cookie teaches a session.
        set_cookie: Option<String>,
        table: Mutex<SessionTable>,
        /// The new keys each client may still add (see [`affinity::NEW_KEYS_PER_CLIENT`]).
        new_keys: Box<Mutex<NewKeyLimit>>,
        /// How often a session in use is sent to the peers again, so their copy (which ages
        /// on its own clock) does not expire while the session lives here.
        refresh: Duration,
        ttl: Duration,
    },
    /// The proxy's own cookie names the backend: no table.
    Insert {
        cookie: String,
        ids: InsertIds,
    },
}

/// Which backends are in use, for one health generation and set of drained backends.
#[derive(Debug)]
struct Plan {
    generation: u64,
    drains: u64,
    tier: Tier,
    /// Backends for new requests and new sessions; the selections index into this.
    usable: Vec<SocketAddr>,
    /// Drained backends that are up: only requests of sessions already on them go there.
    draining: Vec<SocketAddr>,
    selection: Box<dyn BackendSelection>,
    /// Only when the service learns sessions: where new keys go.
    placement: Option<Consistent>,
}

/// Which backends a plan uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tier {
    /// The regular backends that are up.
    Regular,
    /// Every regular backend is down: the emergency backends that are up.
    Emergency,
    /// Nothing is up.
    Nothing,
}

/// One service as `tandem status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpstreamStatus {
    pub service: String,
    pub balance: config::Balance,
    /// What the proxy speaks to the backends (http1, h2c, https, h2).
    #[serde(default)]
    pub backend_protocol: config::BackendProtocol,
    pub session: Option<SessionStatus>,
    pub backends: Vec<BackendStatus>,
    /// `backend_max_connections` and its queue, when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<QueueStatus>,
}

/// The per-backend limit and the requests waiting for a place.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueStatus {
    pub max_connections: usize,
    /// Requests waiting for a place now.
    pub waiting: usize,
    /// Requests that waited the whole queue timeout and got 503, since start.
    pub timed_out: u64,
    /// Requests in progress per backend, in the order of `backends`.
    pub active: Vec<usize>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionStatus {
    #[serde(rename = "type")]
    pub kind: SessionKind,
    pub mode: SessionMode,
    /// Live entries in the table (always 0 in insert mode, which keeps none).
    pub entries: usize,
}

/// One backend as `tandem status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackendStatus {
    pub address: SocketAddr,
    pub weight: u32,
    pub emergency: bool,
    pub up: bool,
    /// Why it is up or down, e.g. "connect refused".
    pub reason: String,
    /// Since when (RFC 3339, UTC).
    pub since: String,
    /// Live session entries pointing at it.
    pub sessions: usize,
    /// Requests it answered since start.
    pub requests: u64,
    /// Attempts that failed on it since start (the request then went to another backend, or
    /// got a 502/504).
    pub errors: u64,
    /// Taken out of rotation by `tandem drain`: only its existing sessions still reach it.
    #[serde(default)]
    pub drained: bool,
}

impl Upstream {
    /// The upstream of `service`, without replication.
    pub fn new(service: &config::Service) -> Arc<Self> {
        Upstream::with_replicator(service, None)
    }

    /// The upstream of `service`; its learned sessions go to (and come from) the peers through
    /// `replicator` when given.
    pub fn with_replicator(
        service: &config::Service,
        replicator: Option<Arc<Replicator>>,
    ) -> Arc<Self> {
        Upstream::with_health(service, HealthTable::new(service), replicator)
    }

    /// [`Upstream::with_replicator`] judging health by `health` (a table over the service's
    /// backends that someone else may share, e.g. the node's status).
    pub fn with_health(
        service: &config::Service,
        health: Arc<HealthTable>,
        replicator: Option<Arc<Replicator>>,
    ) -> Arc<Self> {
        let addresses: Vec<SocketAddr> = service.backends.iter().map(|b| b.address).collect();
        let affinity = match &service.session {
            None => Affinity::None,
            Some(session) => match (session.mode, SessionKey::new(session)) {
                (SessionMode::Insert, _) => Affinity::Insert {
                    cookie: session.id.clone().unwrap_or_default(),
                    ids: InsertIds::new(&service.name, &addresses),
                },
                (SessionMode::Learn, Some(key)) => Affinity::Learn {
                    set_cookie: (session.kind == SessionKind::Cookie)
                        .then(|| session.id.clone())
                        .flatten(),
                    key,
                    table: Mutex::new(SessionTable::new(session.ttl, session.max_entries)),
                    new_keys: Box::default(),
                    refresh: session.ttl / 2,
                    ttl: session.ttl,
                },
                (SessionMode::Learn, None) => {
                    warn!(
                        service = %service.name,
                        "service {}: session id {:?} is not a valid header name; no affinity",
                        service.name,
                        session.id
                    );
                    Affinity::None
                }
            },
        };
        let learns = matches!(affinity, Affinity::Learn { .. });
        let drained: Vec<AtomicBool> = addresses.iter().map(|_| AtomicBool::new(false)).collect();
        let plan = Plan::build(service, &health, learns, health.generation(), 0, &drained);
        let upstream = Arc::new(Upstream {
            service: service.clone(),
            health,
            plan: RwLock::new(Arc::new(plan)),
            affinity,
            requests: addresses.iter().map(|_| AtomicU64::new(0)).collect(),
            errors: addresses.iter().map(|_| AtomicU64::new(0)).collect(),
            drained,
            drains: AtomicU64::new(0),
            places: service
                .http
                .backend_queue
                .map(|queue| Places::new(addresses.len(), queue.max_connections, queue.timeout)),
            replicator: replicator.filter(|_| learns),
        });
        upstream.register_with_replicator();
        upstream
    }

    /// Makes this upstream the one that replicated entries of its service go to (the last
    /// registered wins: a reload registers the upstream that replaced the service's old one).
    pub fn register_with_replicator(self: &Arc<Self>) {
        if let Some(replicator) = &self.replicator {
            let sink: Arc<dyn SessionSink> = self.clone();
            replicator.register(&self.service.name, Arc::downgrade(&sink));
        }
    }

    /// The upstream of `service` replacing `previous` (the same service before a reload),
    /// judging health by `health` (which carries over what the node knew of the remaining
    /// backends: `HealthChecks::table_for`); sessions and request counts of the backends that
    /// remain carry over, so a reload
    /// neither resets what the node knows about them nor moves a session that did not have to
    /// move. Sessions carry over only when the session key is the same (type and id).
    pub fn succeed(
        previous: &Upstream,
        service: &config::Service,
        health: Arc<HealthTable>,
        replicator: Option<Arc<Replicator>>,
    ) -> Arc<Self> {
        let upstream = Upstream::with_health(service, health, replicator);
        let same_key = match (&previous.service.session, &service.session) {
            (Some(old), Some(new)) => old.kind == new.kind && old.id == new.id,
            _ => false,
        };
        if let (true, Affinity::Learn { table: old, .. }, Affinity::Learn { table: new, .. }) =
            (same_key, &previous.affinity, &upstream.affinity)
        {
            let old = lock(old);
            lock(new).carry_over(&old, Instant::now(), |backend| {
                upstream.backend_index(backend).is_some()
            });
        }
        for (i, backend) in service.backends.iter().enumerate() {
            if let Some(old) = previous.backend_index(backend.address) {
                for (new, old_counts) in [
                    (&upstream.requests, &previous.requests),
                    (&upstream.errors, &previous.errors),
                ] {
                    new[i].store(old_counts[old].load(Ordering::Relaxed), Ordering::Relaxed);
                }
                if previous.drained[old].load(Ordering::Relaxed) {
                    upstream.drained[i].store(true, Ordering::Release);
                    upstream.drains.fetch_add(1, Ordering::AcqRel);
                }
            }
        }
        upstream
    }

    /// The service this upstream serves.
    pub fn service(&self) -> &config::Service {
        &self.service
    }

    /// The health table the upstream reads (and `connect_failed` writes).
    pub fn health(&self) -> &Arc<HealthTable> {
        &self.health
    }

    /// Starts the sweep of expired sessions (for a service that learns them); it stops when
    /// `shutdown` is cancelled. The health checks are the node's (`backends::health`). Must be
    /// called inside a tokio runtime.
    pub fn spawn_session_sweep(self: &Arc<Self>, shutdown: CancellationToken) {
        if let Affinity::Learn { ttl, .. } = &self.affinity {
            let period = (*ttl / 4).clamp(MIN_SWEEP_PERIOD, MAX_SWEEP_PERIOD);
            let upstream: Weak<Upstream> = Arc::downgrade(self);
            tokio::spawn(async move {
                let mut ticks = tokio::time::interval(period);
                ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        _ = ticks.tick() => {}
                    }
                    let Some(upstream) = upstream.upgrade() else {
                        return;
                    };
                    upstream.sweep_sessions(Instant::now());
                }
            });
        }
    }

    /// The backends to try for this request, best first.
    pub fn route(&self, request: &http::request::Parts, client: SocketAddr, now: Instant) -> Route {
        let plan = self.plan();
        let (preferred, session_key) = match &self.affinity {
            Affinity::None => (None, None),
            Affinity::Learn { key, table, .. } => {
                let session_key = key.extract(request, client);
                let preferred = session_key
                    .as_deref()
                    .and_then(|key| self.session_backend(&plan, table, key, now));
                (preferred, session_key)
            }
            Affinity::Insert { cookie, ids } => {
                let value = affinity::cookie_value(&request.headers, cookie);
                let preferred = value
                    .as_deref()
                    .and_then(|id| ids.backend(id))
                    .filter(|backend| plan.serves_sessions_on(*backend));
                (preferred, value)
            }
        };
        let pinned = preferred.is_some();
        Route {
            candidates: plan.candidates(preferred),
            pinned,
            client: client.ip(),
            session_key,
        }
    }

    /// The backends to try for `route`, in order, each with its place when the service limits
    /// them (see [`super::queue`]).
    pub fn attempts<'a>(
        &'a self,
        route: &'a Route,
    ) -> Attempts<'a, impl Fn(SocketAddr) -> Option<usize> + Send + Sync + 'a> {
        Attempts::new(
            self.places.as_ref(),
            move |backend| self.backend_index(backend),
            &route.candidates,
            route.pinned,
        )
    }

    /// The places at the backends, when limited.
    pub fn places(&self) -> Option<&Arc<Places>> {
        self.places.as_ref()
    }

    /// Connecting to `backend` failed (refused, reset or timed out): the request never reached
    /// it. Passive health: the backend is marked down at once.
    pub fn connect_failed(&self, backend: SocketAddr, reason: &str) {
        self.count_error(backend);
        self.health
            .mark_down(backend, &health::connect_failure(reason));
    }

    /// `backend` took the request but the connection was lost before the response, or no
    /// response came in time. Counted against the backend; health is the probes' call (one
    /// slow answer is not a dead backend).
    pub fn request_failed(&self, backend: SocketAddr) {
        self.count_error(backend);
    }

    fn count_error(&self, backend: SocketAddr) {
        if let Some(i) = self.backend_index(backend) {
            self.errors[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// `backend` answered the request routed by `route`: learn the session (e.g. from the
    /// backend's Set-Cookie) and add what the policy wants the client to keep (the insert-mode
    /// cookie) to `response`.
    pub fn responded(
        &self,
        route: &Route,
        backend: SocketAddr,
        response: &mut http::response::Parts,
        now: Instant,
    ) {
        if let Some(i) = self.backend_index(backend) {
            self.requests[i].fetch_add(1, Ordering::Relaxed);
        }
        match &self.affinity {
            Affinity::None => {}
            Affinity::Learn {
                set_cookie,
                new_keys,
                ..
            } => {
                if let Some(key) = &route.session_key {
                    if self.session(key, now).is_some()
                        || new_keys
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .allow(route.client, now)
                    {
                        self.learn(key, backend, now);
                    }
                }
                let learned = set_cookie
                    .as_deref()
                    .and_then(|name| affinity::set_cookie_value(&response.headers, name));
                if let Some(key) = learned.filter(|key| Some(key) != route.session_key.as_ref()) {
                    if key.len() <= affinity::MAX_KEY_BYTES {
                        self.learn(&key, backend, now);
                    }
                }
            }
            Affinity::Insert { cookie, ids } => {
                let Some(id) = ids.of(backend) else { return };
                if route.session_key.as_deref() == Some(id) {
                    return;
                }
                // A session cookie (no Max-Age): it names a backend, not a login, and must
                // not outlive the browser's idea of the visit.
                let value = format!("{cookie}={id}; Path=/; HttpOnly");
                match HeaderValue::from_str(&value) {
                    Ok(value) => {
                        response.headers.append(SET_COOKIE, value);
                    }
                    Err(_) => debug!(
                        service = %self.service.name,
                        "cookie name {cookie:?} cannot be sent in a header"
                    ),
                }
            }
        }
    }

    /// The session table's backend for `key` (or none, if the service keeps no table).
    pub fn session(&self, key: &str, now: Instant) -> Option<SocketAddr> {
        match &self.affinity {
            Affinity::Learn { table, .. } => lock(table).peek(key, now),
            _ => None,
        }
    }

    /// Where a session key seen for the first time goes now: Maglev's placement over the
    /// backends in use (the same on every node with the same backends up). `None` when the
    /// service learns no sessions or nothing is up.
    pub fn placement(&self, key: &str) -> Option<SocketAddr> {
        self.plan().place(key)
    }

    /// Removes expired sessions; returns how many.
    pub fn sweep_sessions(&self, now: Instant) -> usize {
        match &self.affinity {
            Affinity::Learn { table, .. } => lock(table).sweep(now),
            _ => 0,
        }
    }

    /// The service's backends, health and sessions, for `tandem status`.
    pub fn status(&self) -> UpstreamStatus {
        let now = Instant::now();
        let (session_counts, entries) = match &self.affinity {
            Affinity::Learn { table, .. } => {
                let counts = lock(table).count_by_backend(now);
                let entries = counts.values().sum();
                (counts, entries)
            }
            _ => (HashMap::new(), 0),
        };
        let health: Vec<BackendHealth> = self.health.snapshot();
        let backends = self
            .service
            .backends
            .iter()
            .enumerate()
            .map(|(i, backend)| {
                let health = health.iter().find(|h| h.address == backend.address);
                BackendStatus {
                    address: backend.address,
                    weight: backend.weight,
                    emergency: backend.emergency,
                    up: health.is_some_and(|h| h.up),
                    reason: health.map(|h| h.reason.clone()).unwrap_or_default(),
                    since: health.map(|h| h.since.clone()).unwrap_or_default(),
                    sessions: session_counts.get(&backend.address).copied().unwrap_or(0),
                    requests: self.requests[i].load(Ordering::Relaxed),
                    errors: self.errors[i].load(Ordering::Relaxed),
                    drained: self.drained[i].load(Ordering::Relaxed),
                }
            })
            .collect();
        let queue = self.places.as_ref().map(|places| QueueStatus {
            max_connections: places.max(),
            waiting: places.waiting(),
            timed_out: places.timed_out(),
            active: (0..self.service.backends.len())
                .map(|i| places.active(i))
                .collect(),
        });
        UpstreamStatus {
            queue,
            service: self.service.name.clone(),
            balance: self.service.balance,
            backend_protocol: self.service.http.backend_protocol,
            session: self.service.session.as_ref().map(|session| SessionStatus {
                kind: session.kind,
                mode: session.mode,
                entries,
            }),
            backends,
        }
    }

    /// Where a request with session `key` goes first: its table entry if that backend is in
    /// use, else Maglev's placement over the backends in use (recorded at once when an entry
    /// moves, so concurrent requests of the session agree).
    fn session_backend(
        &self,
        plan: &Plan,
        table: &Mutex<SessionTable>,
        key: &str,
        now: Instant,
    ) -> Option<SocketAddr> {
        let known = lock(table).get(key, now);
        if let Some(backend) = known.filter(|backend| plan.serves_sessions_on(*backend)) {
            return Some(backend);
        }
        let placed = plan.place(key)?;
        if let Some(from) = known {
            debug!(
                service = %self.service.name,
                "session moves from {from} (not in use) to {placed}"
            );
            self.learn(key, placed, now);
        }
        Some(placed)
    }

    /// Records that `backend` serves `key`, and sends it to the peers when it is new, moved, or
    /// due for a refresh.
    fn learn(&self, key: &str, backend: SocketAddr, now: Instant) {
        let Affinity::Learn { table, refresh, .. } = &self.affinity else {
            return;
        };
        let publish = {
            let mut table = lock(table);
            // New and moved entries are due at once (`needs_replication` sees them unsent).
            table.learn(key, backend, now);
            self.replicator.is_some() && table.needs_replication(key, now, *refresh)
        };
        if publish {
            if let Some(replicator) = &self.replicator {
                replicator.publish(replicate::Entry {
                    service: self.service.name.clone(),
                    key: key.to_owned(),
                    backend,
                });
            }
        }
    }

    fn backend_index(&self, backend: SocketAddr) -> Option<usize> {
        self.service
            .backends
            .iter()
            .position(|b| b.address == backend)
    }

    /// Takes `backend` out of rotation (`drained`) or puts it back: a drained backend that is
    /// up gets only the requests of sessions already on it, so they can finish while new
    /// users go elsewhere (unless no other backend is left). Returns false for an address the
    /// service does not have.
    pub fn set_drained(&self, backend: SocketAddr, drained: bool) -> bool {
        let Some(i) = self.backend_index(backend) else {
            return false;
        };
        if self.drained[i].swap(drained, Ordering::AcqRel) != drained {
            self.drains.fetch_add(1, Ordering::AcqRel);
            info!(
                service = %self.service.name,
                %backend,
                "backend {backend} {}",
                if drained {
                    "drained: no new sessions or requests, existing sessions go on"
                } else {
                    "back in rotation"
                }
            );
        }
        true
    }

    /// The plan for the current health generation and drains, rebuilt if either changed.
    fn plan(&self) -> Arc<Plan> {
        let generation = self.health.generation();
        let drains = self.drains.load(Ordering::Acquire);
        {
            let plan = self.plan.read().unwrap_or_else(|p| p.into_inner());
            if plan.generation == generation && plan.drains == drains {
                return plan.clone();
            }
        }
        let mut slot = self.plan.write().unwrap_or_else(|p| p.into_inner());
        if slot.generation == generation && slot.drains == drains {
            return slot.clone();
        }
        let learns = matches!(self.affinity, Affinity::Learn { .. });
        let plan = Arc::new(Plan::build(
            &self.service,
            &self.health,
            learns,
            generation,
            drains,
            &self.drained,
        ));
        log_tier_change(&self.service.name, slot.tier, &plan);
        *slot = plan.clone();
        plan
    }
}

impl SessionSink for Upstream {
    fn apply_replicated(&self, key: &str, backend: SocketAddr, now: Instant) -> bool {
        let Affinity::Learn { table, .. } = &self.affinity else {
            return false;
        };
        if self.backend_index(backend).is_none()
            || key.is_empty()
            || key.len() > affinity::MAX_KEY_BYTES
        {
            return false;
        }
        let mut table = lock(table);
        table.learn(key, backend, now);
        table.mark_replicated(key, now);
        true
    }

    fn replication_snapshot(&self, now: Instant) -> Vec<(String, SocketAddr)> {
        match &self.affinity {
            Affinity::Learn { table, .. } => lock(table).entries(now),
            _ => Vec::new(),
        }
    }
}

impl Plan {
    fn build(
        service: &config::Service,
        health: &HealthTable,
        learns: bool,
        generation: u64,
        drains: u64,
        drained: &[AtomicBool],
    ) -> Plan {
        let up: Vec<&config::Backend> = service
            .backends
            .iter()
            .filter(|b| health.is_up(b.address))
            .collect();
        let regular: Vec<&config::Backend> = up.iter().copied().filter(|b| !b.emergency).collect();
        let (tier, in_use) = if !regular.is_empty() {
            (Tier::Regular, regular)
        } else if !up.is_empty() {
            (Tier::Emergency, up)
        } else {
            (Tier::Nothing, Vec::new())
        };
        let is_drained = |backend: &config::Backend| {
            service
                .backends
                .iter()
                .position(|b| b.address == backend.address)
                .is_some_and(|i| drained[i].load(Ordering::Acquire))
        };
        let (draining, active): (Vec<&config::Backend>, Vec<&config::Backend>) =
            in_use.iter().copied().partition(|b| is_drained(b));
        // Draining every backend in use would leave new users with a 503: they get the
        // drained ones rather than nothing.
        let (in_use, draining) = if active.is_empty() {
            (draining, Vec::new())
        } else {
            (active, draining)
        };
        let weighted: Vec<(SocketAddr, u32)> =
            in_use.iter().map(|b| (b.address, b.weight)).collect();
        Plan {
            generation,
            drains,
            tier,
            usable: in_use.iter().map(|b| b.address).collect(),
            draining: draining.iter().map(|b| b.address).collect(),
            selection: balance::build(service.balance, &weighted),
            placement: learns.then(|| Consistent::build(&weighted)),
        }
    }

    /// The balancer's order; or, for a request whose session decides, its backend first and
    /// the others in ring order after it. A session's request does not take a turn from the
    /// balancer: the turns are for requests that need a choice (else a session of an even
    /// number of requests would send every new session to the same backend).
    fn candidates(&self, preferred: Option<SocketAddr>) -> Vec<SocketAddr> {
        let start = preferred.and_then(|p| self.usable.iter().position(|&b| b == p));
        let mut candidates = Vec::with_capacity(self.usable.len() + 1);
        let order = match start {
            Some(start) => Candidates::starting_at(start, self.usable.len()),
            None => {
                // A session on a drained backend stays there; the balancer's order follows
                // in case it fails.
                candidates.extend(preferred.filter(|p| self.draining.contains(p)));
                self.selection.select(&[])
            }
        };
        candidates.extend(order.map(|i| self.usable[i]));
        candidates
    }

    /// Whether a request of a session on `backend` may go there: in use, or drained but up.
    fn serves_sessions_on(&self, backend: SocketAddr) -> bool {
        self.usable.contains(&backend) || self.draining.contains(&backend)
    }

    /// Maglev's backend for a session key, among the backends in use.
    fn place(&self, key: &str) -> Option<SocketAddr> {
        let index = self.placement.as_ref()?.select(key.as_bytes()).next()?;
        self.usable.get(index).copied()
    }
}

/// Logs when a service starts or stops relying on emergency backends, or has none left.
fn log_tier_change(service: &str, before: Tier, plan: &Plan) {
    if before == plan.tier {
        return;
    }
    match plan.tier {
        Tier::Nothing => warn!(
            service = %service,
            "service {service}: no backend is up; answering 503 until one comes back"
        ),
        Tier::Emergency => warn!(
            service = %service,
            "service {service}: every regular backend is down; using emergency backends {:?}",
            plan.usable
        ),
        Tier::Regular => info!(
            service = %service,
            "service {service}: regular backends are up again: {:?}",
            plan.usable
        ),
    }
}

fn lock(table: &Mutex<SessionTable>) -> MutexGuard<'_, SessionTable> {
    table
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests;
