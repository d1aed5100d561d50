//! Listeners and client connections: [`start`] runs the proxy on `workers` threads, each with
//! its own single-threaded tokio runtime, its own socket per listen address (SO_REUSEPORT: the
//! kernel spreads connections over them) and its own pool of backend connections. A request is
//! then handled from accept to response on one thread, without waking another: that is what
//! HAProxy and nginx do, and on a small machine the cross-thread wake-ups of one shared runtime
//! cost more than the proxying itself.
//!
//! Sockets are bound with IP_FREEBIND, so a node can listen on the virtual address before it
//! holds it. Connections are accepted within the `max_connections` budget, TLS is terminated
//! where the listener has certificates, and each connection is served behind [`ClientIo`]'s
//! checks and timeouts: HTTP/1.1 by the engine's [`h1`] (hyper's HTTP/1.1 server takes the
//! connections it hands off), HTTP/2 by the engine's [`h2`], whose streams go to
//! [`forward::handle`].
//!
//! Shutdown: when the token is cancelled the accept loops stop, every connection is asked to
//! finish (HTTP/1.1: after the current response; HTTP/2: GOAWAY) for up to 5 s, then closed;
//! [`ProxyHandle::stopped`] waits for the worker threads.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::warn;

use super::access_log::AccessLogger;
use super::backend::ClientBody;
use super::backend::PoolSettings;
use super::connection::{Connection, Engine, WorkerLoad};
use super::forward;
use super::guard::{ClientEvents, ClientIo, Timeouts};
use super::h1;
use super::h2;
use super::headers::Forwarded;
use super::routes::ListenerEntry;
use super::sender_pool;
use super::stats::ConnectionCounters;
use crate::config::ProxySettings;

/// The kernel's queue of connections not yet accepted, per socket.
const LISTEN_BACKLOG: i32 = 1024;
/// Pause after a failed accept (out of file descriptors...), so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);
/// How long an idle pooled backend connection is kept.
const POOL_IDLE: Duration = Duration::from_secs(60);
/// How often a worker gives its allocator's free memory back to the system.
const ALLOCATOR_COLLECT: Duration = Duration::from_secs(1);
/// How often a worker drops the backend connections idle for longer than [`POOL_IDLE`].
const POOL_SWEEP: Duration = Duration::from_secs(10);
/// Idle connections kept per backend and worker. Measured: with 128, HTTP/2 clients with 640
/// streams in flight over 2 workers and 2 backends (160 per backend and worker) closed and
/// reopened a backend connection for 1.9% of their requests (TcpActiveOpens), a handshake
/// and six system calls each; 512 is nginx's `keepalive` in the bench's configuration.
const POOL_MAX_IDLE: usize = 512;
/// How long open connections get to finish after shutdown before they are closed.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// The worker threads of a running proxy, as [`spawn_workers`] started them.
pub(super) struct Workers {
    pub threads: Vec<std::thread::JoinHandle<()>>,
    /// Each worker says here that it has finished (its connections closed).
    pub finished: Vec<oneshot::Receiver<()>>,
    /// One per worker: how a reload asks it to serve a new address.
    pub commands: Vec<mpsc::UnboundedSender<AddListener>>,
    pub live_accept_loops: Arc<AtomicUsize>,
    pub counters: Arc<ConnectionCounters>,
    pub probe_server: ServeProbe,
}

/// Starts `sockets.len()` worker threads, each with its own single-threaded runtime, serving
/// `listeners` on its own sockets (one per listener, in the same order). Returns once every
/// worker serves: the probe may run at once.
pub(super) async fn spawn_workers(
    settings: &ProxySettings,
    access_log: &AccessLogger,
    listeners: &[Arc<ListenerEntry>],
    sockets: Vec<Vec<std::net::TcpListener>>,
    shutdown: &CancellationToken,
) -> anyhow::Result<Workers> {
    let workers = sockets.len();
    let (handoffs, mut handoff_receivers): (Vec<_>, Vec<_>) =
        (0..workers).map(|_| mpsc::unbounded_channel()).unzip();
    let shared = Arc::new(WorkerShared {
        loads: (0..workers).map(|_| AtomicUsize::new(0)).collect(),
        handoffs,
        settings: settings.clone(),
        access_log: access_log.clone(),
        budget: Arc::new(Semaphore::new(
            settings.max_connections.min(Semaphore::MAX_PERMITS),
        )),
        counters: Arc::new(ConnectionCounters::default()),
        shutdown: shutdown.clone(),
        force_close: CancellationToken::new(),
        live_accept_loops: Arc::new(AtomicUsize::new(0)),
        per_client: settings
            .max_connections_per_client
            .map(super::per_client::ClientTable::new),
    });
    let mut threads = Vec::with_capacity(workers);
    let mut finished = Vec::with_capacity(workers);
    let mut starting = Vec::with_capacity(workers);
    let mut commands = Vec::with_capacity(workers);
    for (index, sockets) in sockets.into_iter().enumerate() {
        let shared = Arc::clone(&shared);
        let handoffs = handoff_receivers.remove(0);
        let initial: Vec<(Arc<ListenerEntry>, std::net::TcpListener)> =
            listeners.iter().cloned().zip(sockets).collect();
        let (done, done_rx) = oneshot::channel();
        let (ready, ready_rx) = oneshot::channel();
        let (command, command_rx) = mpsc::unbounded_channel();
        let thread = std::thread::Builder::new()
            .name(format!("tandem-proxy-{index}"))
            .spawn(move || {
                match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => {
                        let channels = WorkerChannels {
                            commands: command_rx,
                            handoffs,
                        };
                        runtime.block_on(run_worker(&shared, index, initial, channels, ready));
                    }
                    Err(error) => warn!(%error, "proxy worker {index}: cannot start its runtime"),
                }
                let _ = done.send(());
            })
            .context("starting a proxy worker thread")?;
        threads.push(thread);
        finished.push(done_rx);
        starting.push(ready_rx);
        commands.push(command);
    }
    for ready in starting {
        let _ = ready.await;
    }
    Ok(Workers {
        threads,
        finished,
        commands,
        live_accept_loops: Arc::clone(&shared.live_accept_loops),
        counters: Arc::clone(&shared.counters),
        probe_server: ServeProbe {
            server: Arc::new(ServerSide::new(
                settings,
                access_log.clone(),
                CancellationToken::new(),
                &shared,
                None,
            )),
        },
    })
}

/// What a reload asks of each worker: serve one more listening address.
pub(super) struct AddListener {
    pub listener: Arc<ListenerEntry>,
    pub socket: std::net::TcpListener,
    /// Answered once the accept loop runs.
    pub running: oneshot::Sender<()>,
}

/// What every worker thread shares.
struct WorkerShared {
    /// Connections open per worker, for [`WorkerLoad`].
    loads: Arc<[AtomicUsize]>,
    /// Per worker: how another worker hands it a connection it accepted.
    handoffs: Vec<mpsc::UnboundedSender<Handoff>>,
    settings: ProxySettings,
    access_log: AccessLogger,
    budget: Arc<Semaphore>,
    counters: Arc<ConnectionCounters>,
    shutdown: CancellationToken,
    /// Cancelled after the grace period: connections still open are closed.
    force_close: CancellationToken,
    live_accept_loops: Arc<AtomicUsize>,
    /// Connections per client address, shared by every worker, when limited.
    per_client: Option<Arc<super::per_client::ClientTable>>,
}

/// A connection one worker accepted for another, less loaded one.
struct Handoff {
    stream: std::net::TcpStream,
    peer: SocketAddr,
    listener: Arc<ListenerEntry>,
    admitted: Admitted,
}

/// What a worker receives from the others.
struct WorkerChannels {
    commands: mpsc::UnboundedReceiver<AddListener>,
    handoffs: mpsc::UnboundedReceiver<Handoff>,
}

/// One worker thread: an accept loop per listener (more when a reload adds addresses) and the
/// connections it accepted or was handed, until shutdown; then the connections get
/// [`SHUTDOWN_GRACE`] to finish.
async fn run_worker(
    shared: &WorkerShared,
    index: usize,
    initial: Vec<(Arc<ListenerEntry>, std::net::TcpListener)>,
    channels: WorkerChannels,
    ready: oneshot::Sender<()>,
) {
    let WorkerChannels {
        mut commands,
        mut handoffs,
    } = channels;
    let load = WorkerLoad {
        loads: Arc::clone(&shared.loads),
        index,
    };
    let server = Arc::new(ServerSide::new(
        &shared.settings,
        shared.access_log.clone(),
        shared.force_close.clone(),
        shared,
        Some(load),
    ));
    let connections = TaskTracker::new();
    // This worker's own token under the proxy's: every idle connection waits on it between
    // requests, and a token shared by all workers would make them take one lock across CPUs.
    let worker_shutdown = shared.shutdown.child_token();
    let mut accept_loops = Vec::with_capacity(initial.len());
    let spawn_loop = |listener: Arc<ListenerEntry>, socket: std::net::TcpListener| {
        let socket = match TcpListener::from_std(socket) {
            Ok(socket) => socket,
            Err(error) => {
                warn!(listen = %listener.addr, %error, "registering a listening socket");
                return None;
            }
        };
        let accept = AcceptLoop {
            socket,
            listener,
            server: Arc::clone(&server),
            budget: Arc::clone(&shared.budget),
            connections: connections.clone(),
            counters: Arc::clone(&shared.counters),
            shutdown: worker_shutdown.clone(),
            handoffs: shared.handoffs.clone(),
            _live: Live::new(&shared.live_accept_loops),
        };
        Some(tokio::spawn(accept.run()))
    };
    for (listener, socket) in initial {
        accept_loops.extend(spawn_loop(listener, socket));
    }
    let _ = ready.send(());
    let mut sweep = tokio::time::interval(POOL_SWEEP);
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut collect = tokio::time::interval(ALLOCATOR_COLLECT);
    collect.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shared.shutdown.cancelled() => break,
            _ = collect.tick() => {
                // mimalloc keeps a thread's freed pages for that thread until told: after a
                // burst, this gives them back so the process shrinks (48 MiB after an HTTP/2
                // 100 KiB load stayed 48 MiB without it). Only this thread's heap is collected,
                // hence a call in each worker.
                h1::shrink_spare_buffers();
                // SAFETY: mi_collect only walks and releases the calling thread's heap.
                unsafe { libmimalloc_sys::mi_collect(false) };
            }
            _ = sweep.tick() => {
                let now = std::time::Instant::now();
                h1::pool::sweep(now);
                sender_pool::sweep(now, &server.engine.pool);
            }
            Some(handoff) = handoffs.recv() => {
                let Handoff { stream, peer, listener, admitted } = handoff;
                match TcpStream::from_std(stream) {
                    Ok(stream) => {
                        serve_accepted(&server, &connections, &worker_shutdown, listener, stream, peer, admitted);
                    }
                    Err(error) => warn!(%error, "registering a connection handed over by another worker"),
                }
            }
            command = commands.recv() => match command {
                Some(AddListener { listener, socket, running }) => {
                    accept_loops.extend(spawn_loop(listener, socket));
                    let _ = running.send(());
                }
                None => shared.shutdown.cancelled().await,
            },
        }
    }
    for accept_loop in accept_loops {
        let _ = accept_loop.await;
    }
    connections.close();
    if tokio::time::timeout(SHUTDOWN_GRACE, connections.wait())
        .await
        .is_err()
    {
        // The connections still open are closed when this worker's runtime is dropped, as
        // it is once this returns (hyper's are told first, so that they close cleanly).
        shared.force_close.cancel();
        tokio::task::yield_now().await;
    }
}

/// What serving a client connection needs; one per worker (its backend pool included).
pub(super) struct ServerSide {
    engine: Arc<Engine>,
}

impl ServerSide {
    fn new(
        settings: &ProxySettings,
        access_log: AccessLogger,
        force_close: CancellationToken,
        shared: &WorkerShared,
        load: Option<WorkerLoad>,
    ) -> Self {
        ServerSide {
            engine: Arc::new(Engine {
                budget: Arc::clone(&shared.budget),
                connection_counters: Arc::clone(&shared.counters),
                hyper: server_builder(),
                force_close,
                client_timeouts: Timeouts {
                    header: settings.header_timeout,
                    idle: settings.idle_timeout,
                    client: settings.client_timeout,
                    tunnel: settings.tunnel_timeout,
                },
                pool: pool_settings(settings),
                forwarded: Forwarded {
                    for_: settings.x_forwarded_for,
                    proto: settings.x_forwarded_proto,
                    port: settings.x_forwarded_port,
                },
                backend_timeout: settings.backend_timeout,
                tunnel_timeout: settings.tunnel_timeout,
                client_timeout: settings.client_timeout,
                server_timeout: settings.server_timeout,
                max_body_size: settings.max_body_size,
                max_header_size: settings.max_header_size,
                load,
                per_client: shared.per_client.clone(),
                access_log,
            }),
        }
    }
}

/// The probe's request: the server-wide `OPTIONS *`, answered by the proxy itself.
const PROBE_REQUEST: &[u8] =
    b"OPTIONS * HTTP/1.1\r\nHost: tandem-probe\r\nConnection: close\r\n\r\n";

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

/// Serves the probe over an in-memory pipe (see [`ProxyHandle::probe`]).
pub(super) struct ServeProbe {
    server: Arc<ServerSide>,
}

impl ServeProbe {
    pub(super) async fn probe(&self, listener: Option<Arc<ListenerEntry>>) -> bool {
        let Some(listener) = listener else {
            // No HTTP service: nothing to fail.
            return true;
        };
        let (mut near, far) = tokio::io::duplex(4096);
        let peer = SocketAddr::from(([127, 0, 0, 1], 0));
        let never = CancellationToken::new();
        let (io, connection) = client_io(far, false, false, &self.server, listener, peer, None);
        let session = Box::new(h1::Session::new(io, connection, never));
        let serving = tokio::spawn(serve_client(session));
        let answered = answers_probe(&mut near).await;
        serving.abort();
        answered
    }
}

/// hyper's HTTP/1.1 server, for the connections the engine hands off (requests for services
/// whose backends hyper's client reaches).
fn server_builder() -> hyper::server::conn::http1::Builder {
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .keep_alive(true)
        // The client's EOF is seen only between requests: ClientIo relies on it to answer a
        // refused head after the responses before it.
        .half_close(true)
        .timer(TokioTimer::new());
    builder
}

/// How backend connections are made and kept.
fn pool_settings(settings: &ProxySettings) -> PoolSettings {
    PoolSettings {
        connect_timeout: settings.connect_timeout,
        max_idle_per_backend: POOL_MAX_IDLE,
        idle_timeout: POOL_IDLE,
    }
}

/// A listening socket on `addr`, even if the address is not (yet) on this node; one of
/// several on the same address (one per worker).
pub(super) fn bind(addr: SocketAddr) -> anyhow::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))
        .context("creating a listening socket")?;
    let setup = || -> std::io::Result<()> {
        socket.set_reuse_address(true)?;
        socket.set_reuse_port(true)?;
        // Free bind: a virtual address is on the node only while it is master, and the
        // listener is open before that.
        if addr.is_ipv4() {
            socket.set_freebind_v4(true)?;
        } else {
            socket.set_freebind_v6(true)?;
            // "[::]:80" is IPv6 only, as nginx's `listen [::]:80` is: an IPv4 service on
            // "0.0.0.0:80" beside it is its own listener.
            socket.set_only_v6(true)?;
        }
        socket.set_nonblocking(true)?;
        socket.bind(&addr.into())?;
        socket.listen(LISTEN_BACKLOG)
    };
    setup().map_err(|err| {
        let hint = match err.kind() {
            std::io::ErrorKind::AddrInUse => {
                "another program is using the port; stop it or choose another `listen`"
            }
            std::io::ErrorKind::PermissionDenied if addr.port() < 1024 => {
                "ports below 1024 need root or CAP_NET_BIND_SERVICE (dist/tandem.service \
                 grants it)"
            }
            _ => "is another program using the port?",
        };
        anyhow::Error::new(err).context(format!("listening on {addr}: {hint}"))
    })?;
    Ok(socket.into())
}

/// Each connection needs a descriptor for the client and one for the backend: raise the soft
/// limit to the hard one (Debian's default soft limit, 1024, is far below `max_connections`).
pub(super) fn raise_fd_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

struct AcceptLoop {
    socket: TcpListener,
    listener: Arc<ListenerEntry>,
    server: Arc<ServerSide>,
    budget: Arc<Semaphore>,
    connections: TaskTracker,
    counters: Arc<ConnectionCounters>,
    shutdown: CancellationToken,
    /// Per worker: where to hand a connection this worker should not take.
    handoffs: Vec<mpsc::UnboundedSender<Handoff>>,
    /// Counts this loop as running, for the probe.
    _live: Live,
}

/// Counts an accept loop as live while it exists.
struct Live(Arc<AtomicUsize>);

impl Live {
    fn new(count: &Arc<AtomicUsize>) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        Live(Arc::clone(count))
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl AcceptLoop {
    async fn run(self) {
        loop {
            // Over the budget, connections wait in the kernel's queue: the ones already
            // accepted are served at full speed meanwhile.
            let permit = tokio::select! {
                () = self.shutdown.cancelled() => break,
                () = self.listener.closed.cancelled() => break,
                permit = Arc::clone(&self.budget).acquire_owned() => match permit {
                    Ok(permit) => permit,
                    Err(_closed) => break,
                },
            };
            let accepted = tokio::select! {
                () = self.shutdown.cancelled() => break,
                () = self.listener.closed.cancelled() => break,
                accepted = self.socket.accept() => accepted,
            };
            let (stream, peer) = match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    if let Some(held) = crate::log_limit::allow("proxy-accept") {
                        let held = crate::log_limit::held_back(held);
                        warn!(listen = %self.listener.addr, %error, "accept failed; retrying{held}");
                    }
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            };
            let slot = match &self.server.engine.per_client {
                None => None,
                Some(table) => match table.admit(peer.ip()) {
                    Some(slot) => Some(slot),
                    None => {
                        // Closed at once; the permit goes back to the budget as it drops.
                        self.counters
                            .refused_per_client
                            .fetch_add(1, Ordering::Relaxed);
                        if let Some(held) = crate::log_limit::allow("proxy-per-client") {
                            let held = crate::log_limit::held_back(held);
                            warn!(listen = %self.listener.addr, client = %peer.ip(), "closed a connection over max_connections_per_client{held}");
                        }
                        continue;
                    }
                },
            };
            let admitted = Admitted { slot };
            let _ = stream.set_nodelay(true);
            self.counters.total.fetch_add(1, Ordering::Relaxed);
            self.counters.open.fetch_add(1, Ordering::Relaxed);
            // The connection's state gives the place in the budget back when it goes (see
            // `Connection`'s `counted`): no permit is kept per connection.
            permit.forget();
            // The kernel spreads connections over the workers' sockets by a hash, not by
            // load: a worker with more connections open than another hands the new one over,
            // so that each serves its share (HAProxy gives a new connection to its least
            // loaded thread too). Measured on loopback, wrk with 64 connections, 3 runs each:
            // p99 2.7-3.5 ms before, 2.1-2.8 ms after, HAProxy's 2.3-3.0 ms.
            let load = self.server.engine.load.as_ref();
            if let Some(target) = load.and_then(WorkerLoad::less_loaded_other) {
                match stream.into_std() {
                    Ok(stream) => {
                        let listener = Arc::clone(&self.listener);
                        if let Some(load) = load {
                            load.arrived_at(target);
                        }
                        let handoff = Handoff {
                            stream,
                            peer,
                            listener,
                            admitted,
                        };
                        if self.handoffs[target].send(handoff).is_err() {
                            // That worker has stopped (shutdown): the connection is closed.
                            if let Some(load) = load {
                                load.left_from(target);
                            }
                        }
                    }
                    Err(error) => warn!(%error, "handing a connection to another worker"),
                }
                continue;
            }
            if let Some(load) = load {
                load.arrived_at(load.index);
            }
            let listener = Arc::clone(&self.listener);
            serve_accepted(
                &self.server,
                &self.connections,
                &self.shutdown,
                listener,
                stream,
                peer,
                admitted,
            );
        }
    }
}

/// Serves a connection accepted by this worker (or handed over by another): TLS first where
/// the listener has certificates, then HTTP/1 or HTTP/2.
fn serve_accepted(
    server: &Arc<ServerSide>,
    connections: &TaskTracker,
    shutdown: &CancellationToken,
    listener: Arc<ListenerEntry>,
    stream: TcpStream,
    peer: SocketAddr,
    admitted: Admitted,
) {
    let server = Arc::clone(server);
    let shutdown = shutdown.clone();
    // The certificates in force when the connection came (a reload may renew them).
    match listener.routes().tls.clone() {
        None => {
            let (io, connection) = client_io(
                stream,
                false,
                false,
                &server,
                listener,
                peer,
                Some(admitted),
            );
            let session = Box::new(h1::Session::new(io, connection, shutdown));
            connections.spawn(serve_client(session));
        }
        Some(acceptor) => {
            let handshaking = Handshaking(Some(Arc::clone(&server.engine)));
            connections.spawn(Box::pin(serve_tls(
                stream,
                peer,
                acceptor,
                server,
                listener,
                shutdown,
                handshaking,
                admitted,
            )));
        }
    }
}

/// An accepted client connection: counted in the budget, with its place among its address's
/// connections when those are limited.
pub(super) struct Admitted {
    slot: Option<Box<super::per_client::ClientSlot>>,
}

/// A TLS connection in its handshake: counted as open and holding its place in the budget
/// until its `Connection` takes over, or it fails.
struct Handshaking(Option<Arc<Engine>>);

impl Handshaking {
    /// The connection's state now accounts for it.
    fn done(mut self) {
        self.0 = None;
    }
}

impl Drop for Handshaking {
    fn drop(&mut self) {
        if let Some(engine) = self.0.take() {
            engine.connection_closed();
        }
    }
}

/// The client I/O (its checks and timeouts) and the connection's shared state.
/// `counted`: the connection is in the open count and the budget, given back when its state
/// goes (not for the probe's in-memory connection).
fn client_io<I: AsyncRead + AsyncWrite + Unpin>(
    io: I,
    https: bool,
    http2: bool,
    server: &ServerSide,
    listener: Arc<ListenerEntry>,
    peer: SocketAddr,
    admitted: Option<Admitted>,
) -> (ClientIo<I>, Arc<Connection>) {
    let counted = admitted.is_some();
    let slot = admitted.and_then(|admitted| admitted.slot);
    let connection = Arc::new(Connection::new(
        Arc::clone(&server.engine),
        listener,
        https,
        peer,
        counted,
        slot,
    ));
    let events: Arc<dyn ClientEvents> = Arc::clone(&connection) as Arc<dyn ClientEvents>;
    let io = ClientIo::new(io, server.engine.max_header_size, http2, events);
    (io, connection)
}

/// Serves one client connection until it ends, or until shutdown (graceful, then forced):
/// HTTP/1 by the engine in [`h1`], HTTP/2 (the preface on a cleartext connection) by [`h2`],
/// and requests for services hyper's client reaches by hyper's HTTP/1.1 server.
///
/// The session is built before the task starts and kept in one allocation: the task stores a
/// pointer, not a copy of each part at each level of calls (an idle connection holds this,
/// its task, its socket and its shared state).
async fn serve_client<I>(mut session: Box<h1::Session<I>>)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // A forced close after the shutdown grace drops this task with the worker's runtime.
    let outcome = session.run().await;
    let (http2, read) = match outcome {
        h1::Outcome::Http2(read) => (true, read),
        h1::Outcome::HandOff(read) => (false, read),
        _ => return,
    };
    let (io, connection, shutdown) = session.into_parts();
    if http2 {
        Box::pin(h2::serve(io, read, connection, shutdown)).await;
    } else {
        // hyper serves the rest of the connection, from the bytes already read.
        let io = h1::Prefixed::new(io, read);
        Box::pin(serve_hyper(io, connection, shutdown)).await;
    }
}

/// A connection to an HTTPS listener: the handshake, then HTTP/2 by [`h2`] (ALPN h2) or
/// HTTP/1.1 by the engine.
#[allow(clippy::too_many_arguments)]
async fn serve_tls(
    stream: TcpStream,
    peer: SocketAddr,
    acceptor: TlsAcceptor,
    server: Arc<ServerSide>,
    listener: Arc<ListenerEntry>,
    shutdown: CancellationToken,
    handshaking: Handshaking,
    admitted: Admitted,
) {
    // The handshake is part of what a client must finish in the header timeout.
    let handshake = tokio::time::timeout(
        server.engine.client_timeouts.header,
        acceptor.accept(stream),
    )
    .await;
    let Ok(Ok(tls)) = handshake else {
        return;
    };
    let http2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
    let (io, connection) = client_io(tls, true, http2, &server, listener, peer, Some(admitted));
    handshaking.done();
    if http2 {
        Box::pin(h2::serve(io, bytes::Bytes::new(), connection, shutdown)).await;
        return;
    }
    serve_client(Box::new(h1::Session::new(io, connection, shutdown))).await;
}

/// Serves a connection with hyper (HTTP/2, or HTTP/1.1 handed off by the engine); each
/// request goes to [`forward::handle`].
async fn serve_hyper<I>(io: I, connection: Arc<Connection>, shutdown: CancellationToken)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let engine = Arc::clone(&connection.engine);
    let service = service_fn(move |request| {
        let connection = Arc::clone(&connection);
        async move {
            let request = request.map(ClientBody::Hyper);
            Ok::<_, Infallible>(forward::handle(connection, request).await)
        }
    });
    let serving = engine.hyper.serve_connection(TokioIo::new(io), service);
    tokio::pin!(serving);
    tokio::select! {
        _ = serving.as_mut() => return,
        () = shutdown.cancelled() => {}
    }
    serving.as_mut().graceful_shutdown();
    tokio::select! {
        _ = serving.as_mut() => {}
        () = engine.force_close.cancelled() => {}
    }
}
