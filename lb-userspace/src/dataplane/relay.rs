//! The userspace fallback: the L4 services relayed by tokio, for nodes where XDP cannot load or
//! `dataplane = "none"`.
//!
//! Each TCP service is a listener on its address (bound with IP_FREEBIND, so it can start
//! before the node holds the VIP); each accepted connection goes to the backend that Maglev
//! picks for its 5-tuple, exactly as the XDP program would (same table, same
//! `lb_common::flow_hash`, or `flow_hash6` for an IPv6 service), and the bytes are copied both
//! ways. An IPv6 service's sockets are IPv6-only (as the proxy's listeners), so its clients are
//! IPv6 clients and its backends (of the listen address's family, as the config requires) are
//! reached over IPv6. A UDP service is one socket:
//! each client address gets a session with a socket connected to its backend, and answers go
//! back from the service's address; a session ends after [`UDP_IDLE`] without traffic.
//!
//! The difference with XDP is the path, not the choice: connections end here and are opened
//! anew to the backend (no direct server return), so a backend sees the node as its client.
//! Listeners exist only while active; deactivating closes them and the connections in flight.
//!
//! A reload ([`Dataplane::reconfigure`]) keeps what remains. A service is its listening socket:
//! the same address and mode keep the same listener (a renamed service too). Its backends and
//! table are swapped as one (a connection is placed by one version or the next, never a mix);
//! a backend that remains (same service name and address) keeps its health and counters;
//! relayed TCP connections go on whatever changed, since each is its own task with its own
//! sockets, and a UDP session whose backend is gone moves to the new table's choice on its next
//! datagram. New services get a listener at once when active; every new listener is bound
//! before anything changes, so a bind failure leaves the relay as it was. A removed service's
//! listener closes and its relayed connections are cut, as XDP drops the packets of a service
//! that is gone: the operator removed it, and a half-open service would be worse.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Duration;

use futures::future::BoxFuture;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::plan::{Plan, PlannedService, Share};
use super::{BackendStatus, Dataplane, DataplaneKind, DataplaneStatus, HealthView, ServiceStatus};
use crate::backends::health::HealthTable;
use crate::backends::maglev::Maglev;
use crate::config::{Config, ServiceMode};
use crate::proxy::policy::replicate::Replicator;

/// How long a backend gets to accept a relayed connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// A UDP session without a datagram either way for this long is forgotten.
pub const UDP_IDLE: Duration = Duration::from_secs(30);

/// What the relay lets the clients of one service hold: every relayed TCP connection is a
/// task and two sockets, every UDP session a task, a socket and a datagram buffer, so a flood
/// (of connections, or of datagrams from made-up source addresses) must meet a ceiling.
/// Beyond it a new connection is closed at once and a datagram that would open a session is
/// dropped, both counted in the log (limited to a line a second).
#[derive(Debug, Clone, Copy)]
pub struct RelayLimits {
    /// Relayed TCP connections per service.
    pub max_tcp_connections: usize,
    /// A relayed TCP connection through which nothing moved for this long is closed (nginx's
    /// stream `proxy_timeout` is 10 minutes too).
    pub tcp_idle: Duration,
    /// UDP sessions (client addresses) per service.
    pub max_udp_sessions: usize,
}

impl Default for RelayLimits {
    fn default() -> Self {
        RelayLimits {
            max_tcp_connections: 16_384,
            tcp_idle: Duration::from_secs(600),
            max_udp_sessions: 4_096,
        }
    }
}
/// Largest datagram relayed.
const MAX_DATAGRAM: usize = 65_535;

/// The relay implementation of [`Dataplane`].
#[derive(Clone)]
pub struct RelayDataplane {
    inner: Arc<Inner>,
}

struct Inner {
    interface: String,
    fallback_reason: Option<String>,
    limits: RelayLimits,
    state: Mutex<State>,
}

/// What identifies a relayed service across reloads: the socket it listens on.
type ListenKey = (SocketAddr, ServiceMode);

struct State {
    /// Cancels the listeners and their connections; `Some` while active.
    active: Option<CancellationToken>,
    health: HealthView,
    /// The L4 services, in config order.
    services: Vec<Arc<RelayService>>,
    /// Per service, a child of `active`: cancels its listener and connections. Present only
    /// while active.
    listeners: HashMap<ListenKey, CancellationToken>,
    /// The listeners' tasks: deactivating waits for them, so the ports are free again when it
    /// returns (a node that flaps back to master at once can bind them).
    listener_tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl State {
    /// The L4 service named `name`.
    fn service(&self, name: &str) -> Option<Arc<RelayService>> {
        self.services
            .iter()
            .find(|s| s.current().planned.name == name)
            .cloned()
    }
}

/// One L4 service: where it listens, and its current backends and table.
struct RelayService {
    listen: SocketAddr,
    mode: ServiceMode,
    current: RwLock<Arc<Backends>>,
}

/// A service's backends and Maglev table, replaced as a whole when health or a reload changes
/// them.
struct Backends {
    planned: PlannedService,
    /// Index-aligned with `planned.backends`; shared with the previous version for backends
    /// that remain, so counters and UDP sessions follow them.
    slots: Vec<Arc<RelayBackend>>,
    maglev: Maglev,
}

/// One backend as the relay's connections see it.
struct RelayBackend {
    address: SocketAddr,
    /// Up and still configured: a UDP session whose backend went down or was removed moves.
    up: AtomicBool,
    /// Connections (TCP) or datagrams (UDP) sent to it, and their bytes.
    packets: AtomicU64,
    bytes: AtomicU64,
}

impl RelayBackend {
    fn new(address: SocketAddr, up: bool) -> Arc<RelayBackend> {
        Arc::new(RelayBackend {
            address,
            up: AtomicBool::new(up),
            packets: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
        })
    }

    fn count(&self, bytes: u64) {
        self.packets.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
    }
}

impl Backends {
    /// The same backends with the table `health` (health and drains) gives now.
    fn with_table_from(&self, health: &HealthView) -> Backends {
        Backends {
            maglev: health.new_flow_table(&self.planned),
            planned: self.planned.clone(),
            slots: self.slots.clone(),
        }
    }

    /// `planned`'s backends with the slots of `previous` (by service name, mode and address)
    /// where there are some, and the table over those `health` says are up.
    fn new(
        planned: &PlannedService,
        previous: &mut HashMap<(String, ServiceMode, SocketAddr), Arc<RelayBackend>>,
        health: &HealthView,
    ) -> Backends {
        let slots = planned
            .backends
            .iter()
            .map(|b| {
                previous
                    .remove(&(planned.name.clone(), planned.mode, b.address))
                    .unwrap_or_else(|| RelayBackend::new(b.address, true))
            })
            .collect();
        Backends {
            maglev: health.new_flow_table(planned),
            planned: planned.clone(),
            slots,
        }
    }
}

impl RelayService {
    fn current(&self) -> Arc<Backends> {
        self.current
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    fn replace(&self, backends: Backends) {
        *self
            .current
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(backends);
    }

    fn name(&self) -> String {
        self.current().planned.name.clone()
    }

    fn key(&self) -> ListenKey {
        (self.listen, self.mode)
    }

    /// The backend for `client`, as the XDP program would choose it.
    fn choose(&self, client: SocketAddr) -> Option<Arc<RelayBackend>> {
        let current = self.current();
        let backend = current.planned.choose(&current.maglev, client)?;
        current
            .slots
            .iter()
            .find(|s| s.address == backend.address)
            .cloned()
    }
}

impl RelayDataplane {
    /// The relay for `config`'s L4 services; `fallback_reason` says why XDP is not used, when
    /// it was asked for.
    pub fn new(config: &Config, fallback_reason: Option<String>) -> anyhow::Result<RelayDataplane> {
        // The relay has no kernel tables to fit, so no limit on services or backends.
        let plan = Plan::without_limits(config);
        let health = HealthView::default();
        let services = plan
            .l4_services()
            .map(|planned| {
                Arc::new(RelayService {
                    listen: planned.listen,
                    mode: planned.mode,
                    current: RwLock::new(Arc::new(Backends::new(
                        planned,
                        &mut HashMap::new(),
                        &health,
                    ))),
                })
            })
            .collect();
        Ok(RelayDataplane {
            inner: Arc::new(Inner {
                interface: config.node.interface.clone(),
                fallback_reason,
                limits: RelayLimits::default(),
                state: Mutex::new(State {
                    active: None,
                    health,
                    services,
                    listeners: HashMap::new(),
                    listener_tasks: Vec::new(),
                }),
            }),
        })
    }

    /// The same relay with other limits (tests use small ones). Call before it is activated.
    pub fn with_limits(self, limits: RelayLimits) -> RelayDataplane {
        let mut inner = Arc::try_unwrap(self.inner)
            .unwrap_or_else(|_| panic!("with_limits on a relay already shared"));
        inner.limits = limits;
        RelayDataplane {
            inner: Arc::new(inner),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.inner
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    async fn do_activate(&self) -> anyhow::Result<()> {
        let mut state = self.state();
        if state.active.is_some() {
            return Ok(());
        }
        let mut bound = Vec::with_capacity(state.services.len());
        for service in &state.services {
            bound.push((service.clone(), bind(service)?));
        }
        let token = CancellationToken::new();
        for (service, listener) in bound {
            let stop = token.child_token();
            state.listeners.insert(service.key(), stop.clone());
            let task = listener.serve(service, stop, self.inner.limits);
            state.listener_tasks.push(task);
        }
        state.active = Some(token);
        info!(services = state.services.len(), "userspace relay active");
        Ok(())
    }

    async fn do_deactivate(&self) {
        let tasks = {
            let mut state = self.state();
            let Some(token) = state.active.take() else {
                return;
            };
            token.cancel();
            state.listeners.clear();
            std::mem::take(&mut state.listener_tasks)
        };
        for task in tasks {
            // A listener ends at its next poll once cancelled; the bound is for safety.
            let _ = tokio::time::timeout(Duration::from_secs(1), task).await;
        }
        info!("userspace relay inactive: listeners closed");
    }

    fn apply_backend(&self, service: &str, backend: SocketAddr, up: bool) {
        let mut state = self.state();
        let Some(relay) = state.service(service) else {
            return;
        };
        let current = relay.current();
        let Some(index) = current
            .planned
            .backends
            .iter()
            .position(|b| b.address == backend)
        else {
            return;
        };
        if !state.health.set(service, backend, up) {
            return;
        }
        info!(service, %backend, up, "L4 backend {}; rebuilding the relay's Maglev table", if up { "up" } else { "down" });
        current.slots[index].up.store(up, Ordering::Release);
        relay.replace(current.with_table_from(&state.health));
    }

    fn apply_drain(
        &self,
        service: &str,
        backend: SocketAddr,
        drained: bool,
    ) -> anyhow::Result<bool> {
        let mut state = self.state();
        let Some(relay) = state.service(service) else {
            return Ok(false);
        };
        let current = relay.current();
        let backend = current.planned.require_backend(backend)?;
        if state.health.set_drained(service, backend, drained) {
            info!(service, %backend, drained, "L4 backend {}; rebuilding the relay's Maglev table", if drained { "drained (no new connections)" } else { "back in rotation" });
            relay.replace(current.with_table_from(&state.health));
        }
        Ok(true)
    }

    fn do_reconfigure(&self, config: &Config) -> anyhow::Result<()> {
        let plan = Plan::without_limits(config);
        let mut state = self.state();

        // Everything is computed and every new listener bound before anything changes.
        let mut slots: HashMap<(String, ServiceMode, SocketAddr), Arc<RelayBackend>> =
            HashMap::new();
        let mut previous_modes: HashMap<String, ServiceMode> = HashMap::new();
        for service in &state.services {
            let current = service.current();
            previous_modes.insert(current.planned.name.clone(), current.planned.mode);
            for (backend, slot) in current.planned.backends.iter().zip(&current.slots) {
                slots.insert(
                    (
                        current.planned.name.clone(),
                        current.planned.mode,
                        backend.address,
                    ),
                    slot.clone(),
                );
            }
        }
        let mut health = state.health.clone();
        health.retain(|name, address| {
            let Some(new) = plan.service(name).filter(|s| s.mode.is_l4()) else {
                return false;
            };
            previous_modes.get(name) == Some(&new.mode)
                && slots.contains_key(&(name.to_owned(), new.mode, address))
                && new.backends.iter().any(|b| b.address == address)
        });

        let mut services = Vec::new();
        let mut swaps = Vec::new();
        let mut listeners = Vec::new();
        for planned in plan.l4_services() {
            let key = (planned.listen, planned.mode);
            let existing = state.services.iter().find(|s| s.key() == key).cloned();
            let service = match existing {
                Some(service) => {
                    let current = service.current();
                    if current.planned != *planned {
                        swaps.push((service.clone(), Backends::new(planned, &mut slots, &health)));
                    } else {
                        // Unchanged: keep its slots out of those retired below.
                        for backend in &planned.backends {
                            slots.remove(&(planned.name.clone(), planned.mode, backend.address));
                        }
                    }
                    service
                }
                None => {
                    let service = Arc::new(RelayService {
                        listen: planned.listen,
                        mode: planned.mode,
                        current: RwLock::new(Arc::new(Backends::new(planned, &mut slots, &health))),
                    });
                    if state.active.is_some() {
                        listeners.push((service.clone(), bind(&service)?));
                    }
                    service
                }
            };
            services.push(service);
        }

        // Commit.
        state.health = health;
        for (service, backends) in swaps {
            service.replace(backends);
        }
        // Backends that are gone: UDP sessions to them move on their next datagram.
        for slot in slots.values() {
            slot.up.store(false, Ordering::Release);
        }
        let removed: Vec<ListenKey> = state
            .services
            .iter()
            .map(|s| s.key())
            .filter(|key| !services.iter().any(|s| s.key() == *key))
            .collect();
        for key in &removed {
            if let Some(stop) = state.listeners.remove(key) {
                stop.cancel();
            }
        }
        if let Some(active) = state.active.clone() {
            for (service, listener) in listeners {
                let stop = active.child_token();
                state.listeners.insert(service.key(), stop.clone());
                let task = listener.serve(service, stop, self.inner.limits);
                state.listener_tasks.push(task);
            }
        }
        info!(
            services = services.len(),
            removed = removed.len(),
            "userspace relay reconfigured"
        );
        state.services = services;
        Ok(())
    }
}

/// A bound socket of a service, not serving yet.
enum Listener {
    Tcp(TcpListener),
    Udp(UdpSocket),
}

impl Listener {
    fn serve(
        self,
        service: Arc<RelayService>,
        stop: CancellationToken,
        limits: RelayLimits,
    ) -> tokio::task::JoinHandle<()> {
        match self {
            Listener::Tcp(listener) => tokio::spawn(serve_tcp(listener, service, stop, limits)),
            Listener::Udp(socket) => tokio::spawn(serve_udp(socket, service, stop, limits)),
        }
    }
}

/// Binds `service`'s listening socket; the error names the service and the address.
fn bind(service: &RelayService) -> anyhow::Result<Listener> {
    let bound = match service.mode {
        ServiceMode::Tcp => bind_tcp(service.listen).map(Listener::Tcp),
        ServiceMode::Udp => bind_udp(service.listen).map(Listener::Udp),
        ServiceMode::Http => unreachable!("the relay serves L4 services only"),
    };
    bound.map_err(|err| {
        anyhow::anyhow!(
            "service {}: binding {} for the userspace relay: {err}",
            service.name(),
            service.listen
        )
    })
}

fn bind_tcp(address: SocketAddr) -> io::Result<TcpListener> {
    let socket = service_socket(address, Type::STREAM, Protocol::TCP)?;
    socket.listen(1024)?;
    TcpListener::from_std(socket.into())
}

fn bind_udp(address: SocketAddr) -> io::Result<UdpSocket> {
    let socket = service_socket(address, Type::DGRAM, Protocol::UDP)?;
    UdpSocket::from_std(socket.into())
}

/// A non-blocking socket bound to a service's address with IP_FREEBIND (or its IPv6 twin), so
/// it binds before the node holds the VIP; IPv6 sockets are IPv6-only, so an IPv6 service and
/// an IPv4 one on the same port never take each other's clients.
fn service_socket(address: SocketAddr, kind: Type, protocol: Protocol) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(address), kind, Some(protocol))?;
    socket.set_reuse_address(true)?;
    if address.is_ipv6() {
        socket.set_only_v6(true)?;
        socket.set_freebind_v6(true)?;
    } else {
        socket.set_freebind_v4(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&address.into())?;
    Ok(socket)
}

/// A client's address as the flow hash takes it: an IPv4-mapped IPv6 address (which the
/// IPv6-only sockets should never report) as the IPv4 address it is.
fn client_address(address: SocketAddr) -> SocketAddr {
    match address {
        SocketAddr::V6(a) => match a.ip().to_ipv4_mapped() {
            Some(ip) => SocketAddr::new(IpAddr::V4(ip), a.port()),
            None => SocketAddr::new(IpAddr::V6(*a.ip()), a.port()),
        },
        v4 => v4,
    }
}

/// The wildcard address of `address`'s family: where a relay's socket towards it binds.
fn unspecified_like(address: SocketAddr) -> SocketAddr {
    match address {
        SocketAddr::V4(_) => SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0),
        SocketAddr::V6(_) => SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0),
    }
}

async fn serve_tcp(
    listener: TcpListener,
    service: Arc<RelayService>,
    stop: CancellationToken,
    limits: RelayLimits,
) {
    let places = Arc::new(tokio::sync::Semaphore::new(limits.max_tcp_connections));
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let (client, peer) = match accepted {
            Ok(pair) => pair,
            Err(err) => {
                if let Some(held) = crate::log_limit::allow("relay-accept") {
                    let held = crate::log_limit::held_back(held);
                    warn!(service = %service.name(), "accept: {err}{held}");
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let peer = client_address(peer);
        let Ok(place) = Arc::clone(&places).try_acquire_owned() else {
            if let Some(held) = crate::log_limit::allow("relay-tcp-full") {
                let held = crate::log_limit::held_back(held);
                warn!(service = %service.name(), client = %peer, "{} relayed connections open: closed a new one{held}", limits.max_tcp_connections);
            }
            continue;
        };
        let service = service.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let _place = place;
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = relay_tcp(client, peer, &service, limits.tcp_idle) => {}
            }
        });
    }
}

async fn relay_tcp(client: TcpStream, peer: SocketAddr, service: &RelayService, idle: Duration) {
    let Some(chosen) = service.choose(peer) else {
        debug!(service = %service.name(), client = %peer, "no backend up: connection closed");
        return;
    };
    let backend = chosen.address;
    let upstream = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(backend)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(err)) => {
            warn!(service = %service.name(), %backend, "relay connect: {err}");
            return;
        }
        Err(_) => {
            warn!(service = %service.name(), %backend, "relay connect: timed out after {CONNECT_TIMEOUT:?}");
            return;
        }
    };
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    // Both sides note when they last moved a byte; a watchdog ends the copy after `idle`.
    let moved = Arc::new(AtomicU64::new(0));
    let started = tokio::time::Instant::now();
    let mut client = Watched::new(client, &moved, started);
    let mut upstream = Watched::new(upstream, &moved, started);
    let sent = tokio::select! {
        copied = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {
            copied.map(|(to_backend, _)| to_backend).unwrap_or(0)
        }
        () = idle_watch(&moved, started, idle) => {
            debug!(service = %service.name(), client = %peer, "relayed connection idle for {idle:?}: closed");
            0
        }
    };
    // Counted on the backend it went to, even if a reload changed the service meanwhile.
    chosen.count(sent);
}

/// A relayed stream that notes (in ms since `started`) when it last read or wrote a byte.
struct Watched<S> {
    inner: S,
    moved: Arc<AtomicU64>,
    started: tokio::time::Instant,
}

impl<S> Watched<S> {
    fn new(inner: S, moved: &Arc<AtomicU64>, started: tokio::time::Instant) -> Self {
        Watched {
            inner,
            moved: Arc::clone(moved),
            started,
        }
    }

    fn note(&self) {
        let ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.moved.store(ms, Ordering::Relaxed);
    }
}

impl<S: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Watched<S> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.note();
        }
        polled
    }
}

impl<S: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<io::Result<usize>> {
        let polled = std::pin::Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(polled, std::task::Poll::Ready(Ok(n)) if n > 0) {
            self.note();
        }
        polled
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Returns once nothing has moved (by `moved`, in ms since `started`) for `idle`.
async fn idle_watch(moved: &AtomicU64, started: tokio::time::Instant, idle: Duration) {
    loop {
        let last = started + Duration::from_millis(moved.load(Ordering::Relaxed));
        if tokio::time::Instant::now() >= last + idle {
            return;
        }
        tokio::time::sleep_until(last + idle).await;
    }
}

/// One UDP client's session: its socket to the chosen backend.
struct Session {
    backend: Arc<RelayBackend>,
    upstream: Arc<UdpSocket>,
    done: CancellationToken,
}

async fn serve_udp(
    socket: UdpSocket,
    service: Arc<RelayService>,
    stop: CancellationToken,
    limits: RelayLimits,
) {
    let socket = Arc::new(socket);
    let sessions: Arc<Mutex<HashMap<SocketAddr, Session>>> = Arc::default();
    let mut buffer = vec![0u8; MAX_DATAGRAM];
    loop {
        let received = tokio::select! {
            _ = stop.cancelled() => break,
            received = socket.recv_from(&mut buffer) => received,
        };
        let (len, peer) = match received {
            Ok(r) => r,
            Err(err) => {
                debug!(service = %service.name(), "recv: {err}");
                continue;
            }
        };
        let peer = client_address(peer);
        let existing = {
            let mut map = sessions.lock().unwrap_or_else(|p| p.into_inner());
            match map.get(&peer) {
                Some(s) if s.backend.up.load(Ordering::Acquire) && !s.done.is_cancelled() => {
                    Some((s.upstream.clone(), s.backend.clone()))
                }
                Some(_) => {
                    if let Some(old) = map.remove(&peer) {
                        old.done.cancel();
                    }
                    None
                }
                None => None,
            }
        };
        let (upstream, chosen) = match existing {
            Some(pair) => pair,
            None => {
                let open = sessions.lock().unwrap_or_else(|p| p.into_inner()).len();
                if open >= limits.max_udp_sessions {
                    if let Some(held) = crate::log_limit::allow("relay-udp-full") {
                        let held = crate::log_limit::held_back(held);
                        warn!(service = %service.name(), client = %peer, "{open} UDP sessions open: dropped a datagram that would open another{held}");
                    }
                    continue;
                }
                let Some(chosen) = service.choose(peer) else {
                    continue;
                };
                let backend = chosen.address;
                let upstream = match UdpSocket::bind(unspecified_like(backend)).await {
                    Ok(s) => s,
                    Err(err) => {
                        warn!("relay UDP socket: {err}");
                        continue;
                    }
                };
                if let Err(err) = upstream.connect(backend).await {
                    warn!(%backend, "relay UDP connect: {err}");
                    continue;
                }
                let upstream = Arc::new(upstream);
                let done = stop.child_token();
                tokio::spawn(udp_replies(
                    upstream.clone(),
                    socket.clone(),
                    peer,
                    done.clone(),
                    sessions.clone(),
                ));
                sessions.lock().unwrap_or_else(|p| p.into_inner()).insert(
                    peer,
                    Session {
                        backend: chosen.clone(),
                        upstream: upstream.clone(),
                        done,
                    },
                );
                (upstream, chosen)
            }
        };
        if upstream.send(&buffer[..len]).await.is_ok() {
            chosen.count(len as u64);
        }
    }
}

/// Copies a backend's answers to the client until the session idles out or is cancelled.
async fn udp_replies(
    upstream: Arc<UdpSocket>,
    socket: Arc<UdpSocket>,
    client: SocketAddr,
    done: CancellationToken,
    sessions: Arc<Mutex<HashMap<SocketAddr, Session>>>,
) {
    let mut buffer = vec![0u8; MAX_DATAGRAM];
    loop {
        let received = tokio::select! {
            _ = done.cancelled() => break,
            _ = tokio::time::sleep(UDP_IDLE) => break,
            received = upstream.recv(&mut buffer) => received,
        };
        match received {
            Ok(len) => {
                let _ = socket.send_to(&buffer[..len], client).await;
            }
            Err(_) => break, // e.g. ICMP port unreachable from the backend
        }
    }
    done.cancel();
    let mut map = sessions.lock().unwrap_or_else(|p| p.into_inner());
    if map
        .get(&client)
        .is_some_and(|s| Arc::ptr_eq(&s.upstream, &upstream))
    {
        map.remove(&client);
    }
}

impl Dataplane for RelayDataplane {
    fn activate(&self) -> BoxFuture<'_, anyhow::Result<()>> {
        Box::pin(self.do_activate())
    }

    fn deactivate(&self) -> BoxFuture<'_, anyhow::Result<()>> {
        Box::pin(async move {
            self.do_deactivate().await;
            Ok(())
        })
    }

    fn set_backend_up(
        &self,
        service: &str,
        backend: SocketAddr,
        up: bool,
    ) -> BoxFuture<'_, anyhow::Result<()>> {
        let service = service.to_owned();
        Box::pin(async move {
            self.apply_backend(&service, backend, up);
            Ok(())
        })
    }

    fn follow_health(&self, service: &str, table: Arc<HealthTable>, stop: CancellationToken) {
        let this = self.clone();
        super::spawn_health_follower(service, table, stop, move |service, backend, up| {
            this.apply_backend(&service, backend, up);
            Box::pin(async { Ok(()) })
        });
    }

    fn set_backend_drained(
        &self,
        service: &str,
        backend: SocketAddr,
        drained: bool,
    ) -> BoxFuture<'_, anyhow::Result<bool>> {
        let service = service.to_owned();
        Box::pin(async move { self.apply_drain(&service, backend, drained) })
    }

    fn check_reconfigure(&self, _config: &Config) -> anyhow::Result<()> {
        // No maps to fit. Whether new listen addresses can be bound is known only by binding
        // them, which reconfigure does first (and changes nothing when one fails).
        Ok(())
    }

    fn reconfigure(&self, config: &Config) -> BoxFuture<'_, anyhow::Result<()>> {
        let config = config.clone();
        Box::pin(async move { self.do_reconfigure(&config) })
    }

    fn shutdown(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move { self.do_deactivate().await })
    }

    fn share_flows(&self, _replicator: Arc<Replicator>, _stop: CancellationToken) {
        // The relay ends each TCP connection in this process: one the router moves to another
        // node cannot go on there, whatever backend that node picks, so there is nothing to
        // share for TCP (and its UDP flows are left out with them).
        info!("the userspace relay does not share its L4 flows with the peers; learned sessions are still replicated");
    }

    fn status(&self) -> DataplaneStatus {
        let state = self.state();
        let services = state
            .services
            .iter()
            .map(|service| {
                let current = service.current();
                let shares = current.maglev.shares();
                let planned = &current.planned;
                ServiceStatus {
                    name: planned.name.clone(),
                    listen: planned.listen,
                    mode: planned.mode.as_str().to_owned(),
                    backends: planned
                        .backends
                        .iter()
                        .zip(&current.slots)
                        .enumerate()
                        .map(|(i, (b, slot))| BackendStatus {
                            address: b.address,
                            weight: b.weight,
                            up: state.health.is_up(&planned.name, b.address),
                            drained: state.health.is_drained(&planned.name, b.address),
                            share: Share::of(
                                shares.get(i).copied().unwrap_or(0),
                                current.maglev.table().len(),
                            ),
                            mac: None,
                            packets: slot.packets.load(Ordering::Relaxed),
                            bytes: slot.bytes.load(Ordering::Relaxed),
                        })
                        .collect(),
                }
            })
            .collect();
        DataplaneStatus {
            kind: DataplaneKind::Relay,
            interface: self.inner.interface.clone(),
            attach_mode: None,
            pin_dir: None,
            active: state.active.is_some(),
            fallback_reason: self.inner.fallback_reason.clone(),
            services,
            flows: None,
            flow_sharing: None,
        }
    }
}

#[cfg(test)]
mod tests {
    //! The relay's reload on loopback: backends are small servers in this process that answer
    //! every line (TCP) or datagram (UDP) with their name.

    use super::*;
    use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};

    /// A free port on 127.0.0.1 (bound and released: good enough for a test).
    fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    /// A backend on 127.0.0.`host`:`port` answering TCP lines and UDP datagrams with `name`.
    /// (An L4 backend has its service's port; the relay listens on 127.0.0.1.)
    async fn backend(host: u8, port: u16, name: &'static str) -> SocketAddr {
        let ip = Ipv4Addr::new(127, 0, 0, host);
        let listener = TcpListener::bind((ip, port)).await.unwrap();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (read, mut write) = stream.into_split();
                    let mut lines = BufReader::new(read).lines();
                    while let Ok(Some(_)) = lines.next_line().await {
                        if write
                            .write_all(format!("{name}\n").as_bytes())
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                });
            }
        });
        let udp = UdpSocket::bind((ip, port)).await.unwrap();
        tokio::spawn(async move {
            let mut buffer = [0u8; 64];
            while let Ok((_, peer)) = udp.recv_from(&mut buffer).await {
                let _ = udp.send_to(name.as_bytes(), peer).await;
            }
        });
        SocketAddr::from((ip, port))
    }

    /// A service of a test config: name, mode, listen port, backends with weights.
    type Spec<'a> = (&'a str, &'a str, u16, Vec<(SocketAddr, u32)>);

    /// A config with `services`, listening on 127.0.0.1.
    fn config(services: &[Spec]) -> Config {
        let mut text =
            String::from("[node]\nname = \"lb1\"\ninterface = \"lo\"\ndataplane = \"none\"\n");
        for (name, mode, port, backends) in services {
            let backends: Vec<String> = backends
                .iter()
                .map(|(a, w)| format!("{{ address = \"{a}\", weight = {w} }}"))
                .collect();
            text.push_str(&format!(
                "\n[[service]]\nname = \"{name}\"\nlisten = \"127.0.0.1:{port}\"\nmode = \"{mode}\"\nbackends = [{}]\n",
                backends.join(", ")
            ));
        }
        crate::config::parse(&text, std::path::Path::new("relay-test.toml"))
            .unwrap_or_else(|e| panic!("{e}"))
            .config
    }

    struct Conversation {
        lines: tokio::io::Lines<BufReader<tokio::net::tcp::OwnedReadHalf>>,
        write: tokio::net::tcp::OwnedWriteHalf,
    }

    impl Conversation {
        async fn open(port: u16) -> io::Result<Conversation> {
            let stream = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).await?;
            let (read, write) = stream.into_split();
            Ok(Conversation {
                lines: BufReader::new(read).lines(),
                write,
            })
        }

        async fn ask(&mut self) -> io::Result<String> {
            self.write.write_all(b"who\n").await?;
            match tokio::time::timeout(Duration::from_secs(3), self.lines.next_line()).await {
                Ok(Ok(Some(line))) => Ok(line),
                Ok(Ok(None)) => Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(Err(err)) => Err(err),
                Err(_) => Err(io::ErrorKind::TimedOut.into()),
            }
        }
    }

    async fn ask_once(port: u16) -> io::Result<String> {
        Conversation::open(port).await?.ask().await
    }

    fn backend_status<'a>(
        status: &'a DataplaneStatus,
        service: &str,
        address: SocketAddr,
    ) -> &'a BackendStatus {
        status
            .services
            .iter()
            .find(|s| s.name == service)
            .unwrap_or_else(|| panic!("service {service} in {status:?}"))
            .backends
            .iter()
            .find(|b| b.address == address)
            .unwrap_or_else(|| panic!("backend {address} of {service} in {status:?}"))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_reload_keeps_relayed_connections_health_and_counters_and_new_connections_reach_new_backends(
    ) {
        let port = free_port();
        let a = backend(11, port, "a").await;
        let b = backend(12, port, "b").await;
        let c = backend(13, port, "c").await;
        let relay = RelayDataplane::new(
            &config(&[("echo", "tcp", port, vec![(a, 1), (b, 1)])]),
            None,
        )
        .unwrap();
        relay.activate().await.unwrap();
        let mut long_lived = Conversation::open(port).await.unwrap();
        let first = long_lived.ask().await.unwrap();
        for _ in 0..10 {
            ask_once(port).await.unwrap();
        }
        // A closed connection is counted when its copy ends, a moment after the client's close.
        let counted =
            |status: &DataplaneStatus, address| backend_status(status, "echo", address).packets;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
        let before = loop {
            let status = relay.status();
            if counted(&status, a) + counted(&status, b) == 10
                || tokio::time::Instant::now() > deadline
            {
                break status;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_eq!(counted(&before, a) + counted(&before, b), 10);
        relay.set_backend_up("echo", b, false).await.unwrap();

        // A new backend first in the list and a weight changed.
        relay
            .reconfigure(&config(&[(
                "echo",
                "tcp",
                port,
                vec![(c, 1), (a, 2), (b, 1)],
            )]))
            .await
            .unwrap();
        assert_eq!(
            long_lived.ask().await.unwrap(),
            first,
            "the connection goes on"
        );
        let after = relay.status();
        assert_eq!(counted(&after, a), counted(&before, a), "counters kept");
        assert_eq!(counted(&after, b), counted(&before, b));
        assert_eq!(counted(&after, c), 0);
        assert!(!backend_status(&after, "echo", b).up, "health kept");
        assert!(
            backend_status(&after, "echo", c).up,
            "a new backend starts up"
        );
        assert_eq!(backend_status(&after, "echo", a).weight, 2);

        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..40 {
            seen.insert(ask_once(port).await.unwrap());
        }
        assert_eq!(
            seen,
            ["a", "c"].iter().map(|s| s.to_string()).collect(),
            "new connections reach the new backend, and not the one that is down"
        );
        relay.shutdown().await;
    }

    // The IPv6 relay end to end (IPv6 clients, two IPv6 backends on the service's port) needs
    // addresses that loopback does not have: tests/tests/l4_ipv6.rs runs it in namespaces.

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_ipv6_service_listens_ipv6_only_and_shows_its_address_in_brackets() {
        let port = free_port();
        let text = format!(
            "[node]\nname = \"lb1\"\ninterface = \"lo\"\ndataplane = \"none\"\n\n\
             [[service]]\nname = \"echo6\"\nlisten = \"[::1]:{port}\"\nmode = \"tcp\"\n\
             backends = [\"[2001:2::102]:{port}\"]\n\n\
             [[service]]\nname = \"dns6\"\nlisten = \"[::1]:{port}\"\nmode = \"udp\"\n\
             backends = [\"[2001:2::102]:{port}\"]\n"
        );
        let config = crate::config::parse(&text, std::path::Path::new("relay-test.toml"))
            .unwrap_or_else(|e| panic!("{e}"))
            .config;
        let relay = RelayDataplane::new(&config, None).unwrap();
        relay.activate().await.unwrap();
        // The IPv6 listener takes IPv6 clients only: 127.0.0.1 on that port is free.
        TcpStream::connect((Ipv6Addr::LOCALHOST, port))
            .await
            .expect("the IPv6 listener accepts");
        assert!(TcpStream::connect((Ipv4Addr::LOCALHOST, port))
            .await
            .is_err());
        let v4 = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, port));
        assert!(v4.is_ok(), "IPv4 on the same port is not taken: {v4:?}");
        let status = relay.status();
        let listens: Vec<String> = status
            .services
            .iter()
            .map(|s| s.listen.to_string())
            .collect();
        assert_eq!(listens, [format!("[::1]:{port}"), format!("[::1]:{port}")]);
        assert_eq!(
            status.services[0].backends[0].address.to_string(),
            format!("[2001:2::102]:{port}")
        );
        relay.shutdown().await;
    }

    #[test]
    fn clients_are_hashed_by_their_own_family_and_mapped_ones_as_ipv4() {
        let v6: SocketAddr = "[2001:2::10]:40000".parse().unwrap();
        assert_eq!(client_address(v6), v6);
        let mapped: SocketAddr = "[::ffff:198.18.0.10]:40000".parse().unwrap();
        assert_eq!(
            client_address(mapped),
            "198.18.0.10:40000".parse::<SocketAddr>().unwrap()
        );
        assert_eq!(
            unspecified_like("[2001:2::102]:7".parse().unwrap()),
            "[::]:0".parse::<SocketAddr>().unwrap()
        );
        assert_eq!(
            unspecified_like("198.18.0.102:7".parse().unwrap()),
            "0.0.0.0:0".parse::<SocketAddr>().unwrap()
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_reload_opens_added_services_and_closes_removed_ones() {
        let (kept, removed, added) = (free_port(), free_port(), free_port());
        let a = backend(21, kept, "a").await;
        let b = backend(22, removed, "b").await;
        let b_added = backend(22, added, "b").await;
        let relay = RelayDataplane::new(
            &config(&[
                ("kept", "tcp", kept, vec![(a, 1)]),
                ("removed", "tcp", removed, vec![(b, 1)]),
            ]),
            None,
        )
        .unwrap();
        relay.activate().await.unwrap();
        let mut on_kept = Conversation::open(kept).await.unwrap();
        let mut on_removed = Conversation::open(removed).await.unwrap();
        assert_eq!(on_removed.ask().await.unwrap(), "b");
        assert!(ask_once(added).await.is_err(), "nothing there yet");

        relay
            .reconfigure(&config(&[
                ("added", "tcp", added, vec![(b_added, 1)]),
                ("kept", "tcp", kept, vec![(a, 1)]),
            ]))
            .await
            .unwrap();
        assert_eq!(
            ask_once(added).await.unwrap(),
            "b",
            "the added service answers"
        );
        assert_eq!(on_kept.ask().await.unwrap(), "a");
        let refused = ask_once(removed).await.unwrap_err();
        assert_eq!(
            refused.kind(),
            io::ErrorKind::ConnectionRefused,
            "{refused}"
        );
        assert!(
            on_removed.ask().await.is_err(),
            "a removed service's connections are cut"
        );
        let names: Vec<String> = relay
            .status()
            .services
            .into_iter()
            .map(|s| s.name)
            .collect();
        assert_eq!(names, ["added", "kept"]);

        // Inactive, a reload only changes the plan; activating opens what it says.
        relay.deactivate().await.unwrap();
        relay
            .reconfigure(&config(&[("kept", "tcp", kept, vec![(a, 1)])]))
            .await
            .unwrap();
        relay.activate().await.unwrap();
        assert_eq!(ask_once(kept).await.unwrap(), "a");
        assert!(ask_once(added).await.is_err());
        relay.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_reload_whose_listener_cannot_bind_changes_nothing() {
        let (kept, taken) = (free_port(), free_port());
        let a = backend(31, kept, "a").await;
        let b = backend(32, kept, "b").await;
        let a_taken = backend(31, taken, "a").await;
        let _squatter = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, taken)).unwrap();
        let before = config(&[("kept", "tcp", kept, vec![(a, 1)])]);
        let relay = RelayDataplane::new(&before, None).unwrap();
        relay.activate().await.unwrap();
        relay.check_reconfigure(&before).unwrap();

        let err = relay
            .reconfigure(&config(&[
                ("kept", "tcp", kept, vec![(b, 1)]),
                ("blocked", "tcp", taken, vec![(a_taken, 1)]),
            ]))
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("blocked") && err.contains(&format!("127.0.0.1:{taken}")),
            "the error names the service and the address: {err}"
        );
        assert_eq!(ask_once(kept).await.unwrap(), "a", "still the old backends");
        let status = relay.status();
        assert_eq!(status.services.len(), 1);
        assert_eq!(status.services[0].backends[0].address, a);
        relay.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_udp_session_whose_backend_is_removed_moves_to_another() {
        let port = free_port();
        let a = backend(41, port, "a").await;
        let b = backend(42, port, "b").await;
        let relay =
            RelayDataplane::new(&config(&[("dns", "udp", port, vec![(a, 1), (b, 1)])]), None)
                .unwrap();
        relay.activate().await.unwrap();
        let client = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        client.connect((Ipv4Addr::LOCALHOST, port)).await.unwrap();
        let ask = || async {
            let mut buffer = [0u8; 64];
            for _ in 0..3 {
                client.send(b"who").await.unwrap();
                if let Ok(Ok(len)) =
                    tokio::time::timeout(Duration::from_secs(1), client.recv(&mut buffer)).await
                {
                    return String::from_utf8_lossy(&buffer[..len]).into_owned();
                }
            }
            panic!("no UDP answer");
        };
        let first = ask().await;
        let (gone, stays) = if first == "a" { (a, b) } else { (b, a) };
        let stays_name = if first == "a" { "b" } else { "a" };
        assert_eq!(ask().await, first, "a session keeps its backend");
        relay
            .reconfigure(&config(&[("dns", "udp", port, vec![(stays, 1)])]))
            .await
            .unwrap();
        assert_eq!(ask().await, stays_name, "the session moved off {gone}");
        relay.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn relayed_tcp_connections_are_capped_and_closed_when_idle() {
        let port = free_port();
        let a = backend(51, port, "a").await;
        let limits = RelayLimits {
            max_tcp_connections: 2,
            tcp_idle: Duration::from_secs(1),
            ..RelayLimits::default()
        };
        let relay = RelayDataplane::new(&config(&[("who", "tcp", port, vec![(a, 1)])]), None)
            .unwrap()
            .with_limits(limits);
        relay.activate().await.unwrap();
        let mut first = Conversation::open(port).await.unwrap();
        let mut second = Conversation::open(port).await.unwrap();
        assert_eq!(first.ask().await.unwrap(), "a");
        assert_eq!(second.ask().await.unwrap(), "a");
        // A third, over the cap, is closed at once.
        let third = ask_once(port).await;
        assert!(third.is_err(), "a third connection was relayed: {third:?}");
        // The first two keep talking; once they idle for a second they are closed, and their
        // places serve new connections.
        assert_eq!(first.ask().await.unwrap(), "a");
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert!(first.ask().await.is_err(), "an idle connection stayed open");
        assert_eq!(ask_once(port).await.unwrap(), "a");
        relay.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn udp_sessions_are_capped() {
        let port = free_port();
        let a = backend(52, port, "a").await;
        let limits = RelayLimits {
            max_udp_sessions: 1,
            ..RelayLimits::default()
        };
        let relay = RelayDataplane::new(&config(&[("dns", "udp", port, vec![(a, 1)])]), None)
            .unwrap()
            .with_limits(limits);
        relay.activate().await.unwrap();
        let ask = |client: Arc<UdpSocket>| async move {
            let mut buffer = [0u8; 64];
            client.send(b"who").await.unwrap();
            tokio::time::timeout(Duration::from_millis(500), client.recv(&mut buffer))
                .await
                .ok()
                .and_then(Result::ok)
                .map(|len| String::from_utf8_lossy(&buffer[..len]).into_owned())
        };
        let client = || async {
            let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
            socket.connect((Ipv4Addr::LOCALHOST, port)).await.unwrap();
            Arc::new(socket)
        };
        let (one, other) = (client().await, client().await);
        assert_eq!(ask(one.clone()).await.as_deref(), Some("a"));
        assert_eq!(
            ask(other).await,
            None,
            "a second session was opened over the cap"
        );
        assert_eq!(
            ask(one).await.as_deref(),
            Some("a"),
            "the first session goes on"
        );
        relay.shutdown().await;
    }
}
