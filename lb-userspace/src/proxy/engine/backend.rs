//! Backend connections: HTTP/1.1 on hyper's low-level `client::conn`, pooled per worker thread
//! and driven by the task of the client request that uses them.
//!
//! Why not hyper-util's pooled `Client`: it runs each backend connection in a task of its own
//! and hands every request to it over a channel, from a pool behind a lock keyed by URI
//! authority: two task wake-ups, a lock and a URI built and parsed per request. HAProxy and
//! Pingora do otherwise, and so does this module: the session that reads the client drives the
//! backend connection too ([`BackendConn::send`] polls the connection while it waits for the
//! response head; [`super::body::ResponseBody`] polls it while the body streams), idle
//! connections wait in a pool that belongs to the worker thread (a `thread_local`, so no lock
//! and no other thread ever touches it), keyed by backend address, and each connection's
//! buffers are bounded ([`PoolSettings::read_buffer`]).
//!
//! An idle connection is not polled: a backend that closes it is noticed when it is taken from
//! the pool (the close is read then) or, if the close crosses the request on the wire, by the
//! caller, which retries idempotent requests once on a fresh connection. [`sweep`] drops
//! connections idle for longer than the pool's limit.

use std::cell::RefCell;
use std::collections::HashMap;
use std::future::{poll_fn, Future as _};
use std::io;
use std::net::{SocketAddr, SocketAddrV4};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

type Io = TokioIo<TcpStream>;
type Driver = http1::Connection<Io, ForwardBody>;

/// A request body as sent to a backend.
#[derive(Debug)]
pub enum ForwardBody {
    Empty,
    Shared(Arc<SharedBody>),
}

/// A client's body that several attempts can hold in turn.
#[derive(Debug)]
pub struct SharedBody {
    body: Mutex<Option<Incoming>>,
    started: AtomicBool,
    hint: SizeHint,
}

impl ForwardBody {
    /// Wraps a client's body; an empty one needs no sharing.
    pub fn new(body: Incoming) -> Self {
        if body.is_end_stream() {
            return ForwardBody::Empty;
        }
        let hint = body.size_hint();
        ForwardBody::Shared(Arc::new(SharedBody {
            body: Mutex::new(Some(body)),
            started: AtomicBool::new(false),
            hint,
        }))
    }

    /// Another handle on the same body for the next attempt, if no attempt has read from it
    /// yet; `None` means the body cannot be sent again.
    pub fn again(&self) -> Option<ForwardBody> {
        match self {
            ForwardBody::Empty => Some(ForwardBody::Empty),
            ForwardBody::Shared(shared) if !shared.started.load(Ordering::Acquire) => {
                Some(ForwardBody::Shared(Arc::clone(shared)))
            }
            ForwardBody::Shared(_) => None,
        }
    }

    pub fn is_empty(&self) -> bool {
        matches!(self, ForwardBody::Empty)
    }
}

impl Body for ForwardBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            ForwardBody::Empty => Poll::Ready(None),
            ForwardBody::Shared(shared) => {
                shared.started.store(true, Ordering::Release);
                let mut body = shared
                    .body
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                match body.as_mut() {
                    Some(body) => Pin::new(body).poll_frame(cx),
                    None => Poll::Ready(None),
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, ForwardBody::Empty)
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ForwardBody::Empty => SizeHint::with_exact(0),
            ForwardBody::Shared(shared) => shared.hint,
        }
    }
}

/// How backend connections are made and kept.
#[derive(Debug, Clone)]
pub struct PoolSettings {
    pub connect_timeout: Duration,
    /// Largest read buffer of one backend connection: bodies stream through it.
    pub read_buffer: usize,
    /// Idle connections kept per backend and worker.
    pub max_idle_per_backend: usize,
    /// How long an idle connection is kept.
    pub idle_timeout: Duration,
}

/// Why a backend connection could not be had.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The backend refused, reset or did not answer: it counts against the backend's health.
    #[error("connect to {backend}: {source}")]
    Backend {
        backend: SocketAddrV4,
        source: io::Error,
    },
    #[error("connect to {backend}: no answer within {after:?}")]
    Timeout {
        backend: SocketAddrV4,
        after: Duration,
    },
    /// This node could not open the connection (out of descriptors or local ports): not the
    /// backend's fault.
    #[error("connect to {backend}: {source} (a limit of this node, not the backend)")]
    Local {
        backend: SocketAddrV4,
        source: io::Error,
    },
}

impl ConnectError {
    /// A failed connect to `backend`: the backend's fault, or this node's (out of descriptors
    /// or local ports).
    pub fn classify(backend: SocketAddrV4, source: io::Error) -> Self {
        if is_local_limit(&source) {
            ConnectError::Local { backend, source }
        } else {
            ConnectError::Backend { backend, source }
        }
    }

    /// Whether the backend is to blame (and marked down).
    pub fn is_backend_fault(&self) -> bool {
        !matches!(self, ConnectError::Local { .. })
    }
}

/// Why a request got no response head from a connection.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error(transparent)]
    Http(#[from] hyper::Error),
    #[error("the backend closed the connection before answering")]
    Closed,
}

/// One HTTP/1.1 connection to a backend.
pub struct BackendConn {
    backend: SocketAddrV4,
    sender: http1::SendRequest<ForwardBody>,
    driver: Pin<Box<Driver>>,
    /// The driver has finished: the connection is closed (or was given up).
    finished: bool,
    /// Came from the pool (a request lost on it may be retried on a fresh one).
    reused: bool,
    settings: PoolLimits,
}

/// What a connection needs to know to go back into the pool.
#[derive(Debug, Clone, Copy)]
struct PoolLimits {
    max_idle: usize,
    idle_timeout: Duration,
}

thread_local! {
    /// This worker thread's idle connections, by backend.
    static POOL: RefCell<HashMap<SocketAddrV4, Vec<Idle>>> = RefCell::new(HashMap::new());
}

struct Idle {
    since: Instant,
    conn: BackendConn,
}

/// A connection to `backend`: an idle one of this worker's pool that is still open, or a new
/// one.
pub async fn checkout(
    backend: SocketAddrV4,
    settings: &PoolSettings,
) -> Result<BackendConn, ConnectError> {
    let now = Instant::now();
    loop {
        let idle = POOL.with(|pool| {
            let mut pool = pool.borrow_mut();
            let list = pool.get_mut(&backend)?;
            // The most recently used first: the least likely to have been closed.
            let idle = list.pop();
            if list.is_empty() {
                pool.remove(&backend);
            }
            idle
        });
        let Some(Idle { since, mut conn }) = idle else {
            break;
        };
        if now.duration_since(since) < settings.idle_timeout && conn.still_open().await {
            conn.reused = true;
            return Ok(conn);
        }
    }
    connect(backend, settings).await
}

/// Opens a new connection to `backend`.
pub async fn connect(
    backend: SocketAddrV4,
    settings: &PoolSettings,
) -> Result<BackendConn, ConnectError> {
    let stream = match tokio::time::timeout(
        settings.connect_timeout,
        TcpStream::connect(SocketAddr::V4(backend)),
    )
    .await
    {
        Err(_elapsed) => {
            return Err(ConnectError::Timeout {
                backend,
                after: settings.connect_timeout,
            })
        }
        Ok(Err(source)) => return Err(ConnectError::classify(backend, source)),
        Ok(Ok(stream)) => stream,
    };
    let _ = stream.set_nodelay(true);
    let (sender, driver) = http1::Builder::new()
        .max_buf_size(settings.read_buffer)
        .handshake(TokioIo::new(stream))
        .await
        .map_err(|error| ConnectError::Backend {
            backend,
            source: io::Error::other(error),
        })?;
    Ok(BackendConn {
        backend,
        sender,
        driver: Box::pin(driver),
        finished: false,
        reused: false,
        settings: PoolLimits {
            max_idle: settings.max_idle_per_backend,
            idle_timeout: settings.idle_timeout,
        },
    })
}

/// Errors that say this node ran out of something, not that the backend failed.
fn is_local_limit(error: &io::Error) -> bool {
    matches!(
        error.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::EADDRNOTAVAIL | libc::ENOBUFS | libc::ENOMEM)
    )
}

impl BackendConn {
    pub fn backend(&self) -> SocketAddrV4 {
        self.backend
    }

    /// Whether this connection came from the pool rather than a fresh connect.
    pub fn reused(&self) -> bool {
        self.reused
    }

    /// Sends `request` and drives the connection until the response head arrives. The
    /// request's URI is written as it is: origin-form (`/path?query`).
    pub async fn send(
        &mut self,
        request: Request<ForwardBody>,
    ) -> Result<Response<Incoming>, SendError> {
        let mut response = std::pin::pin!(self.sender.send_request(request));
        poll_fn(|cx| {
            let driver_done = self.drive(cx);
            match response.as_mut().poll(cx) {
                Poll::Ready(result) => Poll::Ready(result.map_err(SendError::Http)),
                Poll::Pending => match driver_done {
                    Some(Err(error)) => Poll::Ready(Err(SendError::Http(error))),
                    Some(Ok(())) => Poll::Ready(Err(SendError::Closed)),
                    None => Poll::Pending,
                },
            }
        })
        .await
    }

    /// Polls the connection (reads and writes what it can); `Some` once it has finished.
    pub fn drive(&mut self, cx: &mut Context<'_>) -> Option<hyper::Result<()>> {
        if self.finished {
            return Some(Ok(()));
        }
        match self.driver.as_mut().poll(cx) {
            Poll::Ready(result) => {
                self.finished = true;
                Some(result)
            }
            Poll::Pending => None,
        }
    }

    /// Whether an idle connection is still open (reads the backend's close if it came).
    async fn still_open(&mut self) -> bool {
        poll_fn(|cx| Poll::Ready(self.drive(cx).is_none() && self.sender.is_ready())).await
    }

    /// The response's body has been read to its end: the connection goes back to this
    /// worker's pool if it can carry another request.
    pub fn release(mut self, cx: &mut Context<'_>) {
        // The driver sees the end of the message and gets ready for the next one.
        if self.drive(cx).is_some() || !self.sender.is_ready() {
            return;
        }
        let limits = self.settings;
        POOL.with(|pool| {
            let mut pool = pool.borrow_mut();
            let list = pool.entry(self.backend).or_default();
            if list.len() >= limits.max_idle {
                return;
            }
            list.push(Idle {
                since: Instant::now(),
                conn: self,
            });
        });
    }
}

/// Drops this worker's connections idle for longer than their limit; returns how many stay.
pub fn sweep(now: Instant) -> usize {
    POOL.with(|pool| {
        let mut pool = pool.borrow_mut();
        pool.retain(|_, list| {
            list.retain(|idle| now.duration_since(idle.since) < idle.conn.settings.idle_timeout);
            !list.is_empty()
        });
        pool.values().map(Vec::len).sum()
    })
}

/// Idle connections in this worker's pool (for tests).
pub fn idle_connections() -> usize {
    POOL.with(|pool| pool.borrow().values().map(Vec::len).sum())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::engine::body::{Finish, ResponseBody};
    use http_body_util::BodyExt as _;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio::net::TcpListener;

    fn settings() -> PoolSettings {
        PoolSettings {
            connect_timeout: Duration::from_secs(1),
            read_buffer: 16 * 1024,
            max_idle_per_backend: 4,
            idle_timeout: Duration::from_secs(60),
        }
    }

    /// A keep-alive backend that answers every request with `body` (and closes after
    /// `close_after` responses per connection); counts its connections.
    async fn backend(body: &'static str, close_after: usize) -> (SocketAddrV4, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let SocketAddr::V4(addr) = listener.local_addr().expect("addr") else {
            unreachable!()
        };
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = Arc::clone(&accepted);
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    let mut seen = Vec::new();
                    let mut answered = 0;
                    while answered < close_after {
                        let Ok(n) = stream.read(&mut buf).await else {
                            return;
                        };
                        if n == 0 {
                            return;
                        }
                        seen.extend_from_slice(&buf[..n]);
                        while let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                            seen.drain(..end + 4);
                            let response = format!(
                                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
                                body.len()
                            );
                            if stream.write_all(response.as_bytes()).await.is_err() {
                                return;
                            }
                            answered += 1;
                        }
                    }
                });
            }
        });
        (addr, accepted)
    }

    fn get() -> Request<ForwardBody> {
        let mut request = Request::new(ForwardBody::Empty);
        *request.uri_mut() = "/".parse().expect("uri");
        request
            .headers_mut()
            .insert(http::header::HOST, "backend".parse().expect("host"));
        request
    }

    struct NoFinish;
    impl Finish for NoFinish {
        fn finish(&mut self, _bytes: u64) {}
    }

    /// One request through the pool, its body read as hyper's server reads it (until the body
    /// says it has ended); returns the body and whether the connection came from the pool.
    async fn exchange(backend: SocketAddrV4) -> (String, bool) {
        let mut conn = checkout(backend, &settings()).await.expect("connect");
        let reused = conn.reused();
        let response = conn.send(get()).await.expect("response");
        let mut body = ResponseBody::backend(response.into_body(), conn, Box::new(NoFinish));
        let mut text = Vec::new();
        while !body.is_end_stream() {
            let Some(frame) = body.frame().await else {
                break;
            };
            if let Ok(data) = frame.expect("body").into_data() {
                text.extend_from_slice(&data);
            }
        }
        (String::from_utf8(text).expect("utf-8"), reused)
    }

    #[tokio::test(flavor = "current_thread")]
    async fn requests_in_turn_reuse_one_backend_connection() {
        let (addr, accepted) = backend("hello", usize::MAX).await;
        for round in 0..3 {
            let (text, reused) = exchange(addr).await;
            assert_eq!(text, "hello");
            assert_eq!(reused, round > 0, "round {round}");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
        assert_eq!(idle_connections(), 1);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_connection_the_backend_closed_is_not_taken_from_the_pool() {
        let (addr, accepted) = backend("once", 1).await;
        assert_eq!(exchange(addr).await, ("once".to_owned(), false));
        // The backend closes after its answer; give the close time to arrive.
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(exchange(addr).await, ("once".to_owned(), false));
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_refused_connect_blames_the_backend() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let SocketAddr::V4(addr) = listener.local_addr().expect("addr") else {
            unreachable!()
        };
        drop(listener);
        let Err(error) = connect(addr, &settings()).await else {
            panic!("connected to a closed port");
        };
        assert!(error.is_backend_fault(), "{error}");
    }

    #[test]
    fn running_out_of_descriptors_is_not_the_backends_fault() {
        let error = ConnectError::Local {
            backend: "198.18.0.102:80".parse().expect("addr"),
            source: io::Error::from_raw_os_error(libc::EMFILE),
        };
        assert!(!error.is_backend_fault());
        assert!(is_local_limit(&io::Error::from_raw_os_error(
            libc::EADDRNOTAVAIL
        )));
        assert!(!is_local_limit(&io::Error::from_raw_os_error(
            libc::ECONNREFUSED
        )));
    }
}
