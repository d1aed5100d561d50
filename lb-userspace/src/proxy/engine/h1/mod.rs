//! The HTTP/1.1 engine: one client connection served from its task, request after request,
//! with each request's backend connection driven in the same task (no task hop, no channel,
//! no lock: HAProxy's and Pingora's shape).
//!
//! Why not hyper on this path: per request hyper builds a `HeaderMap` for the request and for
//! the response on each side, clones them, and runs its client's dispatcher behind a channel;
//! measured here that cost 8.6 µs of user CPU per 1 KiB request against HAProxy's 6.0 µs
//! (4.3 µs now; docs/benchmarks.md, Proxy profile).
//! Here a head is parsed in place once ([`head`]), written once for the other side with the
//! proxy's changes, and bodies are passed through as they came (a chunked body stays chunked:
//! [`BodyEnd`] only finds where it ends), through buffers this worker reuses.
//!
//! A request's way: read the head (the client I/O below has checked its framing and enforces
//! the header and idle timeouts) > `OPTIONS *` answered here > the service by Host and path >
//! its [`Upstream`](crate::proxy::policy::upstream::Upstream)'s candidates > for each: a pooled or new
//! backend connection ([`pool`]), the head and body sent, the response head awaited within
//! `backend_timeout` > the response head and body relayed > the backend connection back to the
//! pool, the client's kept for the next request. Retries follow [`super::forward`]'s rules: a
//! connect failure moves on to the next backend; a request lost on a reused connection is sent
//! again on a fresh one when that is harmless (idempotent, no body).
//!
//! A `101 Switching Protocols` (WebSocket) turns the exchange into a tunnel: bytes go both ways
//! until either side closes or nothing moves for `tunnel_timeout`.
//!
//! HTTP/2 clients (the connection preface) are handed back to the caller with the bytes read,
//! for the engine's HTTP/2 server ([`super::h2`]).

pub mod client;
pub mod head;
mod io;
pub mod pool;

pub(in crate::proxy::engine) use io::read_response_head;
pub use io::{shrink_spare_buffers, Prefixed};

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::{Buf as _, BytesMut};
use http::{Method, StatusCode};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio_util::sync::CancellationToken;
use tracing::debug;

use self::head::{ClientConnection, ForwardedFor, Framing, RequestHead, ResponseHead};
use self::io::{give_buffer, read_some, take_buffer};
use self::pool::RawConn;
use super::access_log::Record;
use super::connection::Connection;
use super::guard::{BodyEnd, ClientIo};
use super::routes::ServiceEntry;
use crate::proxy::policy::queue::QueueTimedOut;

/// The HTTP/2 connection preface (RFC 9113 3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// What a client connection reads at once.
const CLIENT_READ: usize = 4 * 1024;
/// What a backend connection reads at once once a body streams through it.
const BACKEND_READ: usize = 32 * 1024;
/// What a response's first read gets: the head, and a small body with it. A body that does
/// not fit grows the buffer to [`BACKEND_READ`]; the many small answers in flight at once then
/// hold 4 KiB each, not 32 (measured with 640 HTTP/2 streams in flight: 20 MiB of buffers).
const HEAD_READ: usize = 4 * 1024;
/// Buffers kept per worker for reuse.
const SPARE_BUFFERS: usize = 64;
const ALLOW: &str = "GET, HEAD, POST, PUT, DELETE, OPTIONS, PATCH, TRACE";

/// How a client connection ended.
pub enum Outcome {
    Closed,
    /// The client speaks HTTP/2: the bytes already read from it.
    Http2(bytes::Bytes),
    /// A request is for a service whose backends hyper's client reaches (h2c, https, h2):
    /// the bytes read, that request's head first, for hyper's HTTP/1.1 server, which serves
    /// the rest of the connection.
    HandOff(bytes::Bytes),
}

impl<T: AsyncRead + AsyncWrite + Unpin> Session<T> {
    /// A client connection's state, made before its task starts so that the task stores it
    /// once (a value moved into an async function is stored twice in its future, and every
    /// idle connection would carry the copy).
    pub fn new(io: ClientIo<T>, conn: Arc<Connection>, shutdown: CancellationToken) -> Self {
        Session {
            io,
            buf: BytesMut::new(),
            conn,
            shutdown,
        }
    }

    /// Serves the connection until it closes, or until it turns out to be for hyper (the
    /// bytes read that hyper must see first are returned; the I/O is then [`Session::into_io`]).
    /// On close, the I/O's shutdown is called (it writes a refusal the client I/O may hold).
    pub async fn run(&mut self) -> Outcome {
        loop {
            let head = match self.next_head().await {
                NextHead::Head(head) => head,
                NextHead::Http2 => return Outcome::Http2(self.buf.split().freeze()),
                NextHead::End => break,
            };
            // A request's state (backend connection, timers, relay) lives on the heap while
            // it runs: a connection waiting for its next request then holds a few hundred
            // bytes, not the several KiB of the deepest exchange.
            match Box::pin(self.exchange(&head)).await {
                After::KeepOpen if !self.shutdown.is_cancelled() => {}
                After::KeepOpen | After::Close => break,
                After::HandOff => {
                    let mut read = BytesMut::from(head.into_bytes());
                    read.extend_from_slice(&self.buf);
                    return Outcome::HandOff(read.freeze());
                }
            }
            if self.buf.is_empty() {
                // An idle connection holds no buffer.
                self.buf = BytesMut::new();
            }
        }
        let _ = self.io.shutdown().await;
        Outcome::Closed
    }

    /// The client I/O, the connection's shared state and the shutdown token, for hyper
    /// after [`Outcome::Http2`] or [`Outcome::HandOff`].
    pub fn into_parts(self) -> (ClientIo<T>, Arc<Connection>, CancellationToken) {
        (self.io, self.conn, self.shutdown)
    }
}

enum NextHead {
    Head(RequestHead),
    Http2,
    End,
}

/// One client connection served by the engine.
pub struct Session<T> {
    io: ClientIo<T>,
    /// Bytes read from the client and not used yet.
    buf: BytesMut,
    conn: Arc<Connection>,
    shutdown: CancellationToken,
}

/// What becomes of the client connection after an exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum After {
    KeepOpen,
    Close,
    /// The request is for hyper to serve (see [`Outcome::HandOff`]); nothing was sent.
    HandOff,
}

/// Counters, latency and the access log line of one request, settled once when it ends.
struct RequestTally {
    service: Option<Arc<ServiceEntry>>,
    record: Option<Record>,
    started: Instant,
    bytes: u64,
}

impl<T: AsyncRead + AsyncWrite + Unpin> Session<T> {
    async fn next_head(&mut self) -> NextHead {
        loop {
            // Empty lines before a request line are ignored (RFC 9112 2.2).
            let blank = self
                .buf
                .iter()
                .take_while(|&&b| b == b'\r' || b == b'\n')
                .count();
            self.buf.advance(blank);
            if !self.buf.is_empty() {
                let n = self.buf.len().min(H2_PREFACE.len());
                if self.buf[..n] == H2_PREFACE[..n] {
                    if n == H2_PREFACE.len() {
                        return NextHead::Http2;
                    }
                } else {
                    let error = match RequestHead::take(&mut self.buf) {
                        Ok(Some(head)) => return NextHead::Head(head),
                        Ok(None) => None,
                        Err(error) => Some(error),
                    };
                    if let Some(error) = error {
                        // Boxed: an idle connection's future need not hold this rare path.
                        Box::pin(self.refuse_head(error)).await;
                        return NextHead::End;
                    }
                }
            }
            let read = if self.buf.is_empty() {
                // Between requests a shutdown closes the connection.
                tokio::select! {
                    biased;
                    read = read_some(&mut self.io, &mut self.buf) => read,
                    () = self.shutdown.cancelled() => return NextHead::End,
                }
            } else {
                read_some(&mut self.io, &mut self.buf).await
            };
            match read {
                Ok(0) | Err(_) => return NextHead::End,
                Ok(_) => {}
            }
        }
    }

    /// The client I/O lets through only heads it checked; what httparse still refuses (a bad
    /// byte in a header value) gets a 400 and the connection is closed.
    async fn refuse_head(&mut self, error: head::Malformed) {
        debug!(client = %self.conn.client, %error, "refused a request head");
        self.conn.listener.unrouted.count(StatusCode::BAD_REQUEST);
        let mut out = Vec::new();
        head::write_local(
            &mut out,
            StatusCode::BAD_REQUEST,
            &[],
            b"400 Bad Request: malformed request head\n",
            ClientConnection::Close,
        );
        let _ = self.io.write_all(&out).await;
        let _ = self.io.flush().await;
    }

    /// One request and its response; says whether the connection stays open.
    async fn exchange(&mut self, head: &RequestHead) -> After {
        let conn = Arc::clone(&self.conn);
        conn.activity.request_started();
        let mut outcome = RequestTally {
            service: None,
            record: None,
            started: Instant::now(),
            bytes: 0,
        };
        let after = self.route_and_forward(head, &mut outcome).await;
        conn.activity.request_finished();
        if let Some(service) = &outcome.service {
            service.counters.in_flight.fetch_sub(1, Ordering::Relaxed);
            service.counters.latency.observe(outcome.started.elapsed());
        }
        if let Some(mut record) = outcome.record.take() {
            record.bytes = outcome.bytes;
            record.took = outcome.started.elapsed();
            conn.engine.access_log.log(&record);
        }
        after
    }

    async fn route_and_forward(&mut self, head: &RequestHead, outcome: &mut RequestTally) -> After {
        let conn = Arc::clone(&self.conn);
        let framing = head.framing();
        let mode = if !head.keep_alive() || self.shutdown.is_cancelled() {
            ClientConnection::Close
        } else if head.minor == 0 {
            ClientConnection::KeepAlive10
        } else {
            ClientConnection::KeepAlive11
        };
        // A local answer leaves the request's body unread: the connection cannot go on.
        let local_mode = if framing == Framing::None {
            mode
        } else {
            ClientConnection::Close
        };

        if head.method() == b"OPTIONS" && head.target() == b"*" {
            return self
                .local(
                    outcome,
                    StatusCode::OK,
                    &[("allow", ALLOW)],
                    b"",
                    local_mode,
                )
                .await;
        }
        let host = head.host();
        let selected = conn.select(host, head.path());
        if conn.engine.access_log.enabled() {
            outcome.record = Some(record(&conn, head, selected.as_ref()));
        }
        if selected.as_ref().is_some_and(|s| s.transport.is_some()) {
            outcome.record = None;
            return After::HandOff;
        }
        let Some(service) = selected else {
            conn.listener.unrouted.count(StatusCode::NOT_FOUND);
            return self
                .local(
                    outcome,
                    StatusCode::NOT_FOUND,
                    &[],
                    b"no service for this host and path\n",
                    local_mode,
                )
                .await;
        };
        service.counters.in_flight.fetch_add(1, Ordering::Relaxed);
        outcome.service = Some(Arc::clone(&service));
        if head.method() == b"CONNECT" {
            service.counters.count(StatusCode::METHOD_NOT_ALLOWED);
            return self
                .local(
                    outcome,
                    StatusCode::METHOD_NOT_ALLOWED,
                    &[],
                    b"CONNECT is not supported\n",
                    local_mode,
                )
                .await;
        }

        if let (Framing::Length(length), Some(max)) = (framing, conn.engine.max_body_size) {
            if length > max {
                return self
                    .refuse(
                        outcome,
                        &service,
                        StatusCode::PAYLOAD_TOO_LARGE,
                        format!("413 Content Too Large: the body may have {max} bytes at most\n")
                            .as_bytes(),
                        ClientConnection::Close,
                    )
                    .await;
            }
        }

        // The policy reads the request's headers only for session affinity.
        let has_sessions = service.upstream.service().session.is_some();
        let request_parts = if has_sessions {
            request_parts(head)
        } else {
            http::Request::new(()).into_parts().0
        };
        let route = service
            .upstream
            .route(&request_parts, conn.client, Instant::now());

        if head.expects_continue() && framing != Framing::None {
            // As nginx does: the proxy itself invites the body, and the backend gets it whole.
            if self
                .io
                .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
                .await
                .is_err()
            {
                return After::Close;
            }
        }
        let mut request_head = Vec::with_capacity(512);
        head::write_request(
            &mut request_head,
            head,
            ForwardedFor {
                switches: conn.engine.forwarded,
                client: head::client_text(conn.client).as_bytes(),
                https: conn.https,
                port: conn.listener.port_header.as_bytes(),
            },
        );
        let idempotent = matches!(
            head.method(),
            b"GET" | b"HEAD" | b"PUT" | b"DELETE" | b"OPTIONS" | b"TRACE"
        );
        let head_request = head.method() == b"HEAD";
        let mut body = match framing {
            Framing::None => BodyEnd::Done,
            Framing::Length(n) => BodyEnd::length(n),
            Framing::Chunked => BodyEnd::chunked(),
            Framing::Close => BodyEnd::Done,
        };
        let pool = &conn.engine.pool;

        let mut last_failure = "no backend available";
        let mut attempts = service.upstream.attempts(&route);
        'candidates: while let Some(attempt) = attempts.next().await {
            // The place is held until the response is over (the end of this iteration).
            let (backend, _place) = match attempt {
                Ok(attempt) => attempt,
                Err(QueueTimedOut(waited)) => {
                    let text = format!(
                        "503 Service Unavailable: every backend is at backend_max_connections \
                         and none had a place within {}\n",
                        humantime::format_duration(waited)
                    );
                    return self
                        .refuse(
                            outcome,
                            &service,
                            StatusCode::SERVICE_UNAVAILABLE,
                            text.as_bytes(),
                            local_mode,
                        )
                        .await;
                }
            };
            for try_on_backend in 0..2 {
                let body_untouched = match body {
                    BodyEnd::Done => framing == Framing::None,
                    _ => true,
                };
                if !body_untouched {
                    break 'candidates;
                }
                let connected = if try_on_backend == 0 {
                    pool::checkout(backend, pool).await
                } else {
                    pool::connect(backend, pool).await
                };
                let mut backend_conn = match connected {
                    Ok(backend_conn) => backend_conn,
                    Err(error) => {
                        last_failure = service.connect_failed(backend, &error);
                        continue 'candidates;
                    }
                };
                let mut backend_buf = take_buffer(HEAD_READ);
                let sent = self
                    .send_request(&mut backend_conn, &request_head, &mut body)
                    .await;
                let answer = match sent {
                    Err(Lost::Client) => {
                        give_buffer(backend_buf);
                        return After::Close;
                    }
                    Err(Lost::TooLarge(max)) => {
                        // A chunked body ran over: the backend has half a request and goes.
                        give_buffer(backend_buf);
                        let text = format!(
                            "413 Content Too Large: the body may have {max} bytes at most\n"
                        );
                        return self
                            .refuse(
                                outcome,
                                &service,
                                StatusCode::PAYLOAD_TOO_LARGE,
                                text.as_bytes(),
                                ClientConnection::Close,
                            )
                            .await;
                    }
                    Err(Lost::ClientStalled) => {
                        // The backend has half a request: its connection is dropped.
                        give_buffer(backend_buf);
                        debug!(service = %service.name, client = %conn.client, "client sent nothing of its request body within the client timeout");
                        return self
                            .refuse(
                                outcome,
                                &service,
                                StatusCode::REQUEST_TIMEOUT,
                                b"408 Request Timeout: the request body stopped coming\n",
                                ClientConnection::Close,
                            )
                            .await;
                    }
                    Err(Lost::Backend) => None,
                    Ok(()) => {
                        let waited = tokio::time::timeout(
                            conn.engine.backend_timeout,
                            read_response_head(&mut backend_conn.stream, &mut backend_buf),
                        )
                        .await;
                        match waited {
                            Err(_elapsed) => {
                                give_buffer(backend_buf);
                                service.backend_failed(backend);
                                if let Some(record) = &mut outcome.record {
                                    record.backend = Some(backend);
                                }
                                return self
                                    .refuse(
                                        outcome,
                                        &service,
                                        StatusCode::GATEWAY_TIMEOUT,
                                        b"the backend did not answer in time\n",
                                        ClientConnection::Close,
                                    )
                                    .await;
                            }
                            Ok(answer) => answer,
                        }
                    }
                };
                let Some(response) = answer else {
                    give_buffer(backend_buf);
                    service.backend_failed(backend);
                    debug!(service = %service.name, %backend, try_on_backend, reused = backend_conn.reused, "backend connection lost before the response");
                    let body_sent = framing != Framing::None;
                    if !idempotent || body_sent {
                        return self
                            .refuse(
                                outcome,
                                &service,
                                StatusCode::BAD_GATEWAY,
                                b"the backend closed the connection before answering\n",
                                ClientConnection::Close,
                            )
                            .await;
                    }
                    last_failure = "the backends closed the connection before answering";
                    continue;
                };
                let after = self
                    .relay_response(
                        response,
                        backend_conn,
                        backend_buf,
                        head,
                        head_request,
                        mode,
                        &service,
                        &route,
                        outcome,
                    )
                    .await;
                return after;
            }
        }
        let text = format!("503 Service Unavailable: {last_failure}\n");
        self.refuse(
            outcome,
            &service,
            StatusCode::SERVICE_UNAVAILABLE,
            text.as_bytes(),
            local_mode,
        )
        .await
    }

    /// Writes the request head and the body (what the client sent of it already, then the
    /// rest as it comes) to the backend.
    async fn send_request(
        &mut self,
        backend: &mut RawConn,
        request_head: &[u8],
        body: &mut BodyEnd,
    ) -> Result<(), Lost> {
        // The head and the body bytes already here go in one write.
        let ready = body.feed(&self.buf).map_err(|_| Lost::Client)?;
        let first: std::borrow::Cow<'_, [u8]> = if ready == 0 {
            request_head.into()
        } else {
            let mut joined = Vec::with_capacity(request_head.len() + ready);
            joined.extend_from_slice(request_head);
            joined.extend_from_slice(&self.buf[..ready]);
            joined.into()
        };
        let server_timeout = self.conn.engine.server_timeout;
        let client_timeout = self.conn.engine.client_timeout;
        let max_body = self.conn.engine.max_body_size.unwrap_or(u64::MAX);
        // Bytes of the body as the client framed it (chunk sizes included): a declared length
        // over the limit was refused before; a chunked body is cut off when it runs over.
        let mut body_bytes = ready as u64;
        if body_bytes > max_body {
            return Err(Lost::TooLarge(max_body));
        }
        write_within(server_timeout, &mut backend.stream, &first).await?;
        self.buf.advance(ready);
        while !body.is_done() {
            self.buf.reserve(CLIENT_READ);
            // A client that stops sending its body (a slow POST) is cut off.
            match tokio::time::timeout(client_timeout, self.io.read_buf(&mut self.buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return Err(Lost::Client),
                Err(_elapsed) => return Err(Lost::ClientStalled),
                Ok(Ok(_)) => {}
            }
            let n = body.feed(&self.buf).map_err(|_| Lost::Client)?;
            body_bytes += n as u64;
            if body_bytes > max_body {
                return Err(Lost::TooLarge(max_body));
            }
            write_within(server_timeout, &mut backend.stream, &self.buf[..n]).await?;
            self.buf.advance(n);
        }
        Ok(())
    }

    /// Passes the backend's response on to the client; returns what becomes of the client
    /// connection.
    #[allow(clippy::too_many_arguments)]
    async fn relay_response(
        &mut self,
        mut response: ResponseHead,
        mut backend: RawConn,
        mut backend_buf: BytesMut,
        request: &RequestHead,
        head_request: bool,
        mut mode: ClientConnection,
        service: &Arc<ServiceEntry>,
        route: &crate::proxy::policy::upstream::Route,
        outcome: &mut RequestTally,
    ) -> After {
        let backend_addr = backend.backend;
        let timeout = self.conn.engine.backend_timeout;
        // Interim answers (103 Early Hints...) go on to HTTP/1.1 clients; 100 Continue was the
        // proxy's to send.
        while response.status >= 100 && response.status < 200 && response.status != 101 {
            if request.minor == 1 && response.status != 100 {
                let mut out = Vec::with_capacity(256);
                head::write_response(
                    &mut out,
                    &response,
                    response.headers(),
                    ClientConnection::KeepAlive11,
                );
                if self.io.write_all(&out).await.is_err() {
                    give_buffer(backend_buf);
                    return After::Close;
                }
            }
            match tokio::time::timeout(
                timeout,
                read_response_head(&mut backend.stream, &mut backend_buf),
            )
            .await
            {
                Ok(Some(next)) => response = next,
                _ => {
                    give_buffer(backend_buf);
                    let text = b"the backend closed the connection before answering\n";
                    return self.bad_gateway(outcome, service, backend_addr, text).await;
                }
            }
        }
        let status = StatusCode::from_u16(response.status).unwrap_or(StatusCode::BAD_GATEWAY);
        let upgrade = response.status == 101 && request.is_upgrade();
        let framing = if upgrade {
            Framing::None
        } else {
            match response.framing(head_request) {
                Ok(framing) => framing,
                Err(error) => {
                    give_buffer(backend_buf);
                    debug!(service = %service.name, backend = %backend_addr, %error, "refused a response head");
                    let text = b"the backend's answer was malformed\n";
                    return self.bad_gateway(outcome, service, backend_addr, text).await;
                }
            }
        };
        if upgrade {
            mode = ClientConnection::Upgrade;
        } else if framing == Framing::Close
            || response.status == 101
            || (framing == Framing::Chunked && request.minor == 0)
        {
            mode = ClientConnection::Close;
        }
        service.counters.count(status);
        if let Some(record) = &mut outcome.record {
            record.status = status;
            record.backend = Some(backend_addr);
        }

        // The policy learns from the response (Set-Cookie) and may add its own cookie.
        // Room for the head and the body bytes already read, sent in one write.
        let mut head_bytes = Vec::with_capacity(768 + backend_buf.len());
        if service.upstream.service().session.is_some() {
            let mut parts = http::Response::new(()).into_parts().0;
            parts.status = status;
            parts.headers = response.header_map();
            service
                .upstream
                .responded(route, backend_addr, &mut parts, Instant::now());
            let amended = parts
                .headers
                .iter()
                .map(|(name, value)| (name.as_str().as_bytes(), value.as_bytes()));
            head::write_response(&mut head_bytes, &response, amended, mode);
        } else {
            let mut parts = http::Response::new(()).into_parts().0;
            service
                .upstream
                .responded(route, backend_addr, &mut parts, Instant::now());
            head::write_response(&mut head_bytes, &response, response.headers(), mode);
        }
        let mut out = head_bytes;

        if upgrade {
            out.extend_from_slice(&backend_buf);
            backend_buf.clear();
            give_buffer(backend_buf);
            let written = self.io.write_all(&out).await.is_ok() && self.io.flush().await.is_ok();
            if written {
                self.tunnel(backend, service, outcome).await;
            }
            return After::Close;
        }

        let mut body = match framing {
            Framing::None => BodyEnd::Done,
            Framing::Length(n) => BodyEnd::length(n),
            Framing::Chunked => BodyEnd::chunked(),
            Framing::Close => BodyEnd::Close,
        };
        let mut backend_reusable = response.keep_alive() && response.minor == 1;
        // The head and the body bytes already read go out in one write.
        let mut failed = false;
        match body.feed(&backend_buf) {
            Ok(n) => {
                out.extend_from_slice(&backend_buf[..n]);
                outcome.bytes += n as u64;
                backend_buf.advance(n);
            }
            Err(_) => failed = true,
        }
        let mut client_gone = self.io.write_all(&out).await.is_err();
        while !failed && !client_gone && !body.is_done() {
            backend_buf.clear();
            backend_buf.reserve(BACKEND_READ);
            // Once the body has begun, the backend has the server timeout for each read.
            let read = tokio::time::timeout(
                self.conn.engine.server_timeout,
                backend.stream.read_buf(&mut backend_buf),
            )
            .await;
            match read {
                Ok(Ok(0)) if matches!(body, BodyEnd::Close) => {
                    backend_reusable = false;
                    break;
                }
                Ok(Ok(0)) | Ok(Err(_)) | Err(_) => failed = true,
                Ok(Ok(_)) => match body.feed(&backend_buf) {
                    Ok(n) => {
                        outcome.bytes += n as u64;
                        client_gone = self.io.write_all(&backend_buf[..n]).await.is_err();
                        backend_buf.advance(n);
                    }
                    Err(_) => failed = true,
                },
            }
        }
        if !client_gone {
            client_gone = self.io.flush().await.is_err();
        }
        if failed {
            // The body was cut short (the backend closed, sent garbage or stalled for the
            // server timeout): the client sees its connection close, as HAProxy does.
            debug!(service = %service.name, backend = %backend_addr, "backend connection lost or stalled in the middle of a response body");
            service.backend_failed(backend_addr);
        }
        // Bytes after the response: the backend is not speaking HTTP as expected.
        let clean = !failed && !client_gone && backend_buf.is_empty();
        give_buffer(backend_buf);
        if clean && backend_reusable && !matches!(body, BodyEnd::Close) {
            pool::release(backend, &self.conn.engine.pool);
        }
        if failed || client_gone || mode == ClientConnection::Close {
            After::Close
        } else {
            After::KeepOpen
        }
    }

    /// After a `101 Switching Protocols`: bytes both ways until one side closes or nothing
    /// moves for the tunnel timeout.
    async fn tunnel(
        &mut self,
        mut backend: RawConn,
        service: &Arc<ServiceEntry>,
        outcome: &mut RequestTally,
    ) {
        service.counters.tunnels.fetch_add(1, Ordering::Relaxed);
        self.io.pass_through();
        // Bytes the client sent after its handshake go first.
        let mut ok = true;
        if !self.buf.is_empty() {
            ok = backend.stream.write_all(&self.buf).await.is_ok();
            self.buf.clear();
        }
        let mut from_client = vec![0u8; 16 * 1024];
        let mut from_backend = vec![0u8; 16 * 1024];
        let idle = self.conn.engine.tunnel_timeout;
        let (mut backend_read, mut backend_write) = backend.stream.split();
        let mut client_open = true;
        while ok {
            tokio::select! {
                read = self.io.read(&mut from_client), if client_open => match read {
                    Ok(0) | Err(_) => {
                        client_open = false;
                        let _ = backend_write.shutdown().await;
                    }
                    Ok(n) => ok = backend_write.write_all(&from_client[..n]).await.is_ok(),
                },
                read = backend_read.read(&mut from_backend) => match read {
                    // The client's side is closed when the exchange ends.
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        outcome.bytes += n as u64;
                        ok = self.io.write_all(&from_backend[..n]).await.is_ok()
                            && self.io.flush().await.is_ok();
                    }
                },
                () = tokio::time::sleep(idle) => {
                    debug!(service = %service.name, "tunnel idle for {idle:?}; closing it");
                    break;
                }
            }
        }
        service.counters.tunnels.fetch_sub(1, Ordering::Relaxed);
    }

    /// `backend` failed the request before its answer began: counted against it, and the
    /// client gets a 502 on a connection that then closes.
    async fn bad_gateway(
        &mut self,
        outcome: &mut RequestTally,
        service: &ServiceEntry,
        backend: SocketAddr,
        text: &[u8],
    ) -> After {
        service.backend_failed(backend);
        self.refuse(
            outcome,
            service,
            StatusCode::BAD_GATEWAY,
            text,
            ClientConnection::Close,
        )
        .await
    }

    /// Answers with the proxy's own response, counted for the service.
    async fn refuse(
        &mut self,
        outcome: &mut RequestTally,
        service: &ServiceEntry,
        status: StatusCode,
        text: &[u8],
        mode: ClientConnection,
    ) -> After {
        service.counters.count(status);
        self.local(outcome, status, &[], text, mode).await
    }

    async fn local(
        &mut self,
        outcome: &mut RequestTally,
        status: StatusCode,
        extra: &[(&str, &str)],
        text: &[u8],
        mode: ClientConnection,
    ) -> After {
        if let Some(record) = &mut outcome.record {
            record.status = status;
        }
        let mut out = Vec::with_capacity(160 + text.len());
        head::write_local(&mut out, status, extra, text, mode);
        outcome.bytes += text.len() as u64;
        if self.io.write_all(&out).await.is_err() || self.io.flush().await.is_err() {
            return After::Close;
        }
        if mode == ClientConnection::Close {
            After::Close
        } else {
            After::KeepOpen
        }
    }
}

/// Which side went away while the request was being sent.
enum Lost {
    Client,
    /// The client sent nothing of its body for the client timeout.
    ClientStalled,
    /// The body ran over `max_body_size` (this many bytes).
    TooLarge(u64),
    Backend,
}

/// Writes `bytes` to a backend that must take them within `limit` (the server timeout).
async fn write_within(
    limit: Duration,
    stream: &mut (impl AsyncWrite + Unpin),
    bytes: &[u8],
) -> Result<(), Lost> {
    match tokio::time::timeout(limit, stream.write_all(bytes)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) | Err(_) => Err(Lost::Backend),
    }
}

/// The request as the policy reads it (for session keys): method, target and headers.
fn request_parts(head: &RequestHead) -> http::request::Parts {
    let mut parts = http::Request::new(()).into_parts().0;
    parts.method = Method::from_bytes(head.method()).unwrap_or(Method::GET);
    if let Ok(uri) = http::Uri::try_from(head.origin_form()) {
        parts.uri = uri;
    }
    parts.headers = head.header_map();
    parts
}

/// The request's access log line, completed when the response is known.
fn record(conn: &Connection, head: &RequestHead, service: Option<&Arc<ServiceEntry>>) -> Record {
    let text = |name| {
        head.header(name)
            .and_then(|v| std::str::from_utf8(v).ok())
            .map(str::to_owned)
    };
    Record {
        client: super::headers::client_ip(conn.client),
        method: Method::from_bytes(head.method()).unwrap_or(Method::GET),
        target: String::from_utf8_lossy(head.target()).into_owned(),
        version: if head.minor == 0 {
            http::Version::HTTP_10
        } else {
            http::Version::HTTP_11
        },
        host: head.host().map(str::to_owned),
        status: StatusCode::OK,
        bytes: 0,
        service: service.map_or_else(|| Arc::from("-"), |s| Arc::clone(&s.name)),
        backend: None::<SocketAddr>,
        took: Duration::ZERO,
        at: SystemTime::now(),
        referer: text("referer"),
        user_agent: text("user-agent"),
    }
}
