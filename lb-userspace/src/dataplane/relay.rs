//! The userspace fallback: the L4 services relayed by tokio, for nodes where XDP cannot load or
//! `dataplane = "none"`.
//!
//! Each TCP service is a listener on its address (bound with IP_FREEBIND, so it can start
//! before the node holds the VIP); each accepted connection goes to the backend that Maglev
//! picks for its 5-tuple, exactly as the XDP program would (same table, same
//! `lb_common::flow_hash`), and the bytes are copied both ways. A UDP service is one socket:
//! each client address gets a session with a socket connected to its backend, and answers go
//! back from the service's address; a session ends after [`UDP_IDLE`] without traffic.
//!
//! The difference with XDP is the path, not the choice: connections end here and are opened
//! anew to the backend (no direct server return), so a backend sees the node as its client.
//! Listeners exist only while active; deactivating closes them and the connections in flight.

use std::collections::HashMap;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Duration;

use futures::future::BoxFuture;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::plan::{Plan, PlannedService, Share};
use super::{BackendStatus, Dataplane, DataplaneKind, DataplaneStatus, HealthView, ServiceStatus};
use crate::config::{Config, ServiceMode};
use crate::health::HealthTable;
use crate::maglev::Maglev;

/// How long a backend gets to accept a relayed connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// A UDP session without a datagram either way for this long is forgotten.
pub const UDP_IDLE: Duration = Duration::from_secs(30);
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
    services: Vec<Arc<RelayService>>,
    state: Mutex<State>,
}

struct State {
    /// Cancels the listeners and their connections; `Some` while active.
    active: Option<CancellationToken>,
    health: HealthView,
}

/// One L4 service: its plan, its current table, its counters.
struct RelayService {
    planned: PlannedService,
    table: RwLock<Arc<Maglev>>,
    /// Connections (TCP) or datagrams (UDP) and bytes sent to each backend, by index.
    stats: Vec<(AtomicU64, AtomicU64)>,
    /// Which backends are up, by index (a UDP session to a backend that went down moves).
    up: Vec<std::sync::atomic::AtomicBool>,
}

impl RelayService {
    fn table(&self) -> Arc<Maglev> {
        self.table
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// The backend for `client` (index into the plan's backends).
    fn choose(&self, client: SocketAddrV4) -> Option<usize> {
        let table = self.table();
        let backend = self.planned.choose(&table, client)?;
        self.planned
            .backends
            .iter()
            .position(|b| b.address == backend.address)
    }

    fn count(&self, backend: usize, bytes: u64) {
        if let Some((packets, total)) = self.stats.get(backend) {
            packets.fetch_add(1, Ordering::Relaxed);
            total.fetch_add(bytes, Ordering::Relaxed);
        }
    }
}

impl RelayDataplane {
    /// The relay for `config`'s L4 services; `fallback_reason` says why XDP is not used, when
    /// it was asked for.
    pub fn new(config: &Config, fallback_reason: Option<String>) -> anyhow::Result<RelayDataplane> {
        // The relay has no kernel tables to fit: only the numbering is used.
        let plan = Plan::new(config).or_else(|_| {
            let mut small = config.clone();
            small.services.retain(|s| s.mode.is_l4());
            Plan::new(&small)
        })?;
        let services = plan
            .l4_services()
            .map(|planned| {
                Arc::new(RelayService {
                    table: RwLock::new(Arc::new(planned.maglev(|_| true))),
                    stats: planned
                        .backends
                        .iter()
                        .map(|_| (AtomicU64::new(0), AtomicU64::new(0)))
                        .collect(),
                    up: planned
                        .backends
                        .iter()
                        .map(|_| std::sync::atomic::AtomicBool::new(true))
                        .collect(),
                    planned: planned.clone(),
                })
            })
            .collect();
        Ok(RelayDataplane {
            inner: Arc::new(Inner {
                interface: config.node.interface.clone(),
                fallback_reason,
                services,
                state: Mutex::new(State {
                    active: None,
                    health: HealthView::default(),
                }),
            }),
        })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.inner
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    async fn do_activate(&self) -> anyhow::Result<()> {
        let token = {
            let mut state = self.state();
            if state.active.is_some() {
                return Ok(());
            }
            let token = CancellationToken::new();
            state.active = Some(token.clone());
            token
        };
        for service in &self.inner.services {
            let result = match service.planned.mode {
                ServiceMode::Tcp => bind_tcp(service.planned.listen).map(|listener| {
                    tokio::spawn(serve_tcp(listener, service.clone(), token.clone()));
                }),
                ServiceMode::Udp => bind_udp(service.planned.listen).map(|socket| {
                    tokio::spawn(serve_udp(socket, service.clone(), token.clone()));
                }),
                ServiceMode::Http => Ok(()),
            };
            if let Err(err) = result {
                token.cancel();
                self.state().active = None;
                return Err(anyhow::anyhow!(
                    "service {}: binding {} for the userspace relay: {err}",
                    service.planned.name,
                    service.planned.listen
                ));
            }
        }
        info!(
            services = self.inner.services.len(),
            "userspace relay active"
        );
        Ok(())
    }

    fn do_deactivate(&self) {
        if let Some(token) = self.state().active.take() {
            token.cancel();
            info!("userspace relay inactive: listeners closed");
        }
    }

    fn apply_backend(&self, service: &str, backend: SocketAddrV4, up: bool) {
        let Some(relay) = self
            .inner
            .services
            .iter()
            .find(|s| s.planned.name == service)
        else {
            return;
        };
        let Some(index) = relay
            .planned
            .backends
            .iter()
            .position(|b| b.address == backend)
        else {
            return;
        };
        let mut state = self.state();
        if !state.health.set(service, backend, up) {
            return;
        }
        info!(service, %backend, up, "L4 backend {}; rebuilding the relay's Maglev table", if up { "up" } else { "down" });
        relay.up[index].store(up, Ordering::Release);
        let table = relay.planned.maglev(|a| state.health.is_up(service, a));
        *relay
            .table
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(table);
    }
}

fn bind_tcp(address: SocketAddrV4) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_freebind_v4(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&SocketAddr::V4(address).into())?;
    socket.listen(1024)?;
    TcpListener::from_std(socket.into())
}

fn bind_udp(address: SocketAddrV4) -> io::Result<UdpSocket> {
    let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_reuse_address(true)?;
    socket.set_freebind_v4(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&SocketAddr::V4(address).into())?;
    UdpSocket::from_std(socket.into())
}

fn v4(address: SocketAddr) -> Option<SocketAddrV4> {
    match address {
        SocketAddr::V4(a) => Some(a),
        SocketAddr::V6(a) => a
            .ip()
            .to_ipv4_mapped()
            .map(|ip| SocketAddrV4::new(ip, a.port())),
    }
}

async fn serve_tcp(listener: TcpListener, service: Arc<RelayService>, stop: CancellationToken) {
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let (client, peer) = match accepted {
            Ok(pair) => pair,
            Err(err) => {
                warn!(service = %service.planned.name, "accept: {err}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Some(peer) = v4(peer) else { continue };
        let service = service.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = relay_tcp(client, peer, &service) => {}
            }
        });
    }
}

async fn relay_tcp(mut client: TcpStream, peer: SocketAddrV4, service: &RelayService) {
    let Some(index) = service.choose(peer) else {
        debug!(service = %service.planned.name, client = %peer, "no backend up: connection closed");
        return;
    };
    let backend = service.planned.backends[index].address;
    let mut upstream = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(backend))
        .await
    {
        Ok(Ok(stream)) => stream,
        Ok(Err(err)) => {
            warn!(service = %service.planned.name, %backend, "relay connect: {err}");
            return;
        }
        Err(_) => {
            warn!(service = %service.planned.name, %backend, "relay connect: timed out after {CONNECT_TIMEOUT:?}");
            return;
        }
    };
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let copied = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
    let sent = copied.map(|(to_backend, _)| to_backend).unwrap_or(0);
    service.count(index, sent);
}

/// One UDP client's session: its socket to the chosen backend.
struct Session {
    backend: usize,
    upstream: Arc<UdpSocket>,
    done: CancellationToken,
}

async fn serve_udp(socket: UdpSocket, service: Arc<RelayService>, stop: CancellationToken) {
    let socket = Arc::new(socket);
    let sessions: Arc<Mutex<HashMap<SocketAddrV4, Session>>> = Arc::default();
    let mut buffer = vec![0u8; MAX_DATAGRAM];
    loop {
        let received = tokio::select! {
            _ = stop.cancelled() => break,
            received = socket.recv_from(&mut buffer) => received,
        };
        let (len, peer) = match received {
            Ok(r) => r,
            Err(err) => {
                debug!(service = %service.planned.name, "recv: {err}");
                continue;
            }
        };
        let Some(peer) = v4(peer) else { continue };
        let existing = {
            let mut map = sessions.lock().unwrap_or_else(|p| p.into_inner());
            match map.get(&peer) {
                Some(s)
                    if service.up[s.backend].load(Ordering::Acquire) && !s.done.is_cancelled() =>
                {
                    Some((s.upstream.clone(), s.backend))
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
        let (upstream, index) = match existing {
            Some(pair) => pair,
            None => {
                let Some(index) = service.choose(peer) else {
                    continue;
                };
                let backend = service.planned.backends[index].address;
                let upstream = match UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).await {
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
                        backend: index,
                        upstream: upstream.clone(),
                        done,
                    },
                );
                (upstream, index)
            }
        };
        if upstream.send(&buffer[..len]).await.is_ok() {
            service.count(index, len as u64);
        }
    }
}

/// Copies a backend's answers to the client until the session idles out or is cancelled.
async fn udp_replies(
    upstream: Arc<UdpSocket>,
    socket: Arc<UdpSocket>,
    client: SocketAddrV4,
    done: CancellationToken,
    sessions: Arc<Mutex<HashMap<SocketAddrV4, Session>>>,
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
            self.do_deactivate();
            Ok(())
        })
    }

    fn set_backend_up(
        &self,
        service: &str,
        backend: SocketAddrV4,
        up: bool,
    ) -> BoxFuture<'_, anyhow::Result<()>> {
        let service = service.to_owned();
        Box::pin(async move {
            self.apply_backend(&service, backend, up);
            Ok(())
        })
    }

    fn follow_health(&self, service: &str, table: Arc<HealthTable>) {
        let this = self.clone();
        super::spawn_health_follower(service, table, move |service, backend, up| {
            this.apply_backend(&service, backend, up);
            Box::pin(async { Ok(()) })
        });
    }

    fn shutdown(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move { self.do_deactivate() })
    }

    fn status(&self) -> DataplaneStatus {
        let state = self.state();
        let services = self
            .inner
            .services
            .iter()
            .map(|service| {
                let table = service.table();
                let shares = table.shares();
                ServiceStatus {
                    name: service.planned.name.clone(),
                    listen: service.planned.listen,
                    mode: service.planned.mode.as_str(),
                    backends: service
                        .planned
                        .backends
                        .iter()
                        .enumerate()
                        .map(|(i, b)| BackendStatus {
                            address: b.address,
                            weight: b.weight,
                            up: state.health.is_up(&service.planned.name, b.address),
                            share: Share::of(
                                shares.get(i).copied().unwrap_or(0),
                                table.table().len(),
                            ),
                            mac: None,
                            packets: service.stats[i].0.load(Ordering::Relaxed),
                            bytes: service.stats[i].1.load(Ordering::Relaxed),
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
        }
    }
}
