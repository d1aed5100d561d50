//! One HTTP/2 stream's way through the proxy: pick the service (Host, path), ask its
//! [`Upstream`](crate::proxy::policy::upstream::Upstream) for backends, rewrite the headers,
//! try the backends in order over HTTP/1.1 connections of the worker's pool (the HTTP/1.1
//! engine's, through [`super::h1::client`]), and answer with the backend's response or a
//! short error of our own.
//!
//! Retries: a backend that refused or did not accept the connection never saw the request, so
//! any request moves on to the next candidate (its body was not read yet: see
//! [`ForwardBody`]). A request that was sent and then lost with its connection is retried only
//! when repeating it is harmless: an idempotent method (RFC 9110 9.2.2) and no body. No
//! candidate left: 503. A backend that does not start answering within `backend_timeout` once
//! it has the request: 504. While the body is sent, each piece must come from the client within
//! `client_timeout` (else 408, not the backend's fault) and go to the backend within
//! `server_timeout`.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use bytes::BytesMut;
use http::header::{HeaderValue, ALLOW, CONTENT_TYPE, HOST, REFERER, USER_AGENT};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use tracing::debug;

use super::access_log::{AccessLogger, Record};
use super::backend::{ClientBody, ForwardBody};
use super::body::{Finish, ResponseBody};
use super::connection::Connection;
use super::guard::ConnActivity;
use super::h1::{
    self,
    client::{self, RawBody, SendFailed},
};
use super::headers;
use super::routes::ServiceEntry;
use super::sender_pool;
use crate::backend_transport::Transport;
use crate::proxy::policy::queue::{Place, QueueTimedOut};
use crate::proxy::policy::upstream::Route;

/// What the access log and the counters need once the response is over.
struct Done {
    conn: Arc<Connection>,
    counters: Option<Arc<ServiceEntry>>,
    /// The backend answering, once one is.
    backend: Option<SocketAddr>,
    /// Its place there (`backend_max_connections`), given back when the response is over.
    place: Option<Place>,
    log: Option<(AccessLogger, Record)>,
    started: Instant,
    finished: bool,
}

/// hyper drops a stream's future when the client resets the stream before its response
/// began: the request still ends here (counted, logged as nginx does, 499), and the reset
/// counts toward the connection's limit.
impl Drop for Done {
    fn drop(&mut self) {
        if !self.finished {
            self.conn.activity.stream_cancelled();
            if let Some((_, record)) = &mut self.log {
                record.status = StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST);
            }
            self.finish(0);
        }
    }
}

impl Finish for Done {
    fn backend_stalled(&mut self) {
        if let (Some(service), Some(backend)) = (&self.counters, self.backend) {
            debug!(service = %service.name, %backend, "the backend stalled in the middle of a response body");
            service.backend_failed(backend);
        }
    }

    fn activity(&self) -> Option<&ConnActivity> {
        Some(&self.conn.activity)
    }

    fn finish(&mut self, bytes: u64) {
        self.finished = true;
        self.conn.activity.stream_finished();
        if let Some(service) = &self.counters {
            service.counters.in_flight.fetch_sub(1, Ordering::Relaxed);
            service.counters.latency.observe(self.started.elapsed());
        }
        if let Some((logger, record)) = &mut self.log {
            record.bytes = bytes;
            record.took = self.started.elapsed();
            logger.log(record);
        }
    }
}

/// Answers one request.
pub async fn handle(conn: Arc<Connection>, request: Request<ClientBody>) -> Response<ResponseBody> {
    let started = Instant::now();
    conn.activity.stream_started();
    let (mut parts, body) = request.into_parts();

    let host = parts
        .headers
        .get(HOST)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned)
        .or_else(|| parts.uri.authority().map(|a| a.as_str().to_owned()));
    let mut done = Done {
        conn: Arc::clone(&conn),
        counters: None,
        backend: None,
        place: None,
        log: None,
        started,
        finished: false,
    };

    // `OPTIONS *` asks about the server itself: answered here (also the built-in probe).
    if parts.method == Method::OPTIONS && parts.uri == "*" {
        let mut response = local(StatusCode::OK, "", Some(Box::new(done)));
        response.headers_mut().insert(
            ALLOW,
            HeaderValue::from_static("GET, HEAD, POST, PUT, DELETE, OPTIONS, PATCH, TRACE"),
        );
        return response;
    }

    let selected = conn.select(host.as_deref(), parts.uri.path());
    if conn.engine.access_log.enabled() {
        done.log = Some((
            conn.engine.access_log.clone(),
            record(&conn, &parts, host.clone(), selected.as_ref()),
        ));
    }
    let Some(service) = selected else {
        conn.listener.unrouted.count(StatusCode::NOT_FOUND);
        return refuse(
            done,
            StatusCode::NOT_FOUND,
            "no service for this host and path\n",
        );
    };
    service.counters.in_flight.fetch_add(1, Ordering::Relaxed);
    done.counters = Some(Arc::clone(&service));
    if parts.method == Method::CONNECT {
        service.counters.count(StatusCode::METHOD_NOT_ALLOWED);
        return refuse(
            done,
            StatusCode::METHOD_NOT_ALLOWED,
            "CONNECT is not supported\n",
        );
    }

    let route = service.upstream.route(&parts, conn.client, Instant::now());

    // The backend sees the client's Host; HTTP/2 clients send it as the authority.
    if !parts.headers.contains_key(HOST) {
        if let Some(value) = host.as_deref().and_then(|h| HeaderValue::from_str(h).ok()) {
            parts.headers.insert(HOST, value);
        }
    }
    headers::remove_hop_by_hop(&mut parts.headers);
    headers::add_forwarded(
        &mut parts.headers,
        conn.engine.forwarded,
        headers::client_ip(conn.client),
        conn.https,
        &conn.listener.port_header,
    );
    // Origin-form for the backend, whatever form the client used (HTTP/2 sends the authority).
    let target = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
    let idempotent = matches!(
        parts.method,
        Method::GET | Method::HEAD | Method::PUT | Method::DELETE | Method::OPTIONS | Method::TRACE
    );
    let head_request = parts.method == Method::HEAD;

    let max_body = conn.engine.max_body_size;
    let declared = parts
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok()?.parse::<u64>().ok());
    if let (Some(length), Some(max)) = (declared, max_body) {
        if length > max {
            return too_large(&service, done, max);
        }
    }
    let body = ForwardBody::new(body, max_body);
    if let Some(transport) = &service.transport {
        let attempt = Attempt {
            conn: &conn,
            service: &service,
            route: &route,
            idempotent,
        };
        // Boxed: hyper's client and the TLS handshake make a future of several KiB, which
        // every HTTP/2 stream's task would otherwise carry (and copy when spawned).
        return Box::pin(attempt.over_transport(transport, parts, host.as_deref(), body, done))
            .await;
    }
    let (request_head, chunked) = client::request_head(&parts, target.as_bytes(), !body.is_empty());
    let pool = &conn.engine.pool;
    let mut last_failure = "no backend available";
    let mut attempts = service.upstream.attempts(&route);
    'candidates: while let Some(attempt) = attempts.next().await {
        let (backend, mut place) = match attempt {
            Ok(attempt) => attempt,
            Err(QueueTimedOut(waited)) => return queue_full(&service, done, waited),
        };
        // A request lost on a reused connection (the backend closed it as we sent) is sent
        // once more on a fresh one before moving on.
        for try_on_backend in 0..2 {
            let Some(this_body) = body.again() else {
                break 'candidates;
            };
            let connected = if try_on_backend == 0 {
                h1::pool::checkout(backend, pool).await
            } else {
                h1::pool::connect(backend, pool).await
            };
            let mut backend_conn = match connected {
                Ok(backend_conn) => backend_conn,
                Err(error) => {
                    last_failure = service.connect_failed(backend, &error);
                    continue 'candidates;
                }
            };
            let mut buf = BytesMut::new();
            let (client_timeout, server_timeout) =
                (conn.engine.client_timeout, conn.engine.server_timeout);
            let sent = client::send(
                &mut backend_conn,
                &request_head,
                this_body,
                chunked,
                client_timeout,
                server_timeout,
            )
            .await;
            match sent {
                Err(_) if body.too_large() => {
                    return too_large(&service, done, max_body.unwrap_or_default());
                }
                // The client's doing: the backend connection (half a request) is dropped.
                Err(SendFailed::ClientStalled) => {
                    return refuse_for(
                        &service,
                        done,
                        StatusCode::REQUEST_TIMEOUT,
                        None,
                        "408 Request Timeout: the request body stopped coming\n",
                    );
                }
                Err(SendFailed::Client) => {
                    return refuse_for(
                        &service,
                        done,
                        StatusCode::BAD_REQUEST,
                        None,
                        "the request body ended in an error\n",
                    );
                }
                Err(SendFailed::Backend) | Ok(()) => {}
            }
            let backend_lost = sent.is_err();
            let exchange = async {
                if backend_lost {
                    return None;
                }
                loop {
                    let response =
                        h1::read_response_head(&mut backend_conn.stream, &mut buf).await?;
                    // Interim answers do not go on to HTTP/2 clients; the final one follows.
                    if !(100..200).contains(&response.status) || response.status == 101 {
                        return Some(response);
                    }
                }
            };
            let reply = tokio::time::timeout(conn.engine.backend_timeout, exchange).await;
            match reply {
                Ok(Some(response)) => {
                    let framing = match response.framing(head_request) {
                        Ok(framing) if response.status != 101 => framing,
                        _ => {
                            // A protocol switch cannot be carried over HTTP/2.
                            service.backend_failed(backend);
                            return refuse_for(
                                &service,
                                done,
                                StatusCode::BAD_GATEWAY,
                                None,
                                "the backend's answer was malformed\n",
                            );
                        }
                    };
                    let mut head = Response::new(()).into_parts().0;
                    head.status =
                        StatusCode::from_u16(response.status).unwrap_or(StatusCode::BAD_GATEWAY);
                    head.headers = response.header_map();
                    headers::remove_hop_by_hop(&mut head.headers);
                    answered(&service, &route, backend, &mut head, &mut done);
                    let reusable = response.keep_alive() && response.minor == 1;
                    let raw = RawBody::new(backend_conn, buf, framing, reusable, pool.clone());
                    done.backend = Some(backend);
                    // The place at the backend is kept until the body is over.
                    done.place = place.take();
                    let server_timeout = conn.engine.server_timeout;
                    let body = ResponseBody::backend(raw, Box::new(done), server_timeout);
                    return Response::from_parts(head, body);
                }
                Ok(None) => {
                    service.backend_failed(backend);
                    debug!(service = %service.name, %backend, try_on_backend, reused = backend_conn.reused, "backend connection lost before the response");
                    if !(idempotent && body.is_empty()) {
                        return refuse_for(&service, done, StatusCode::BAD_GATEWAY, None, LOST);
                    }
                    last_failure = "the backends closed the connection before answering";
                }
                Err(_elapsed) => {
                    service.backend_failed(backend);
                    let status = StatusCode::GATEWAY_TIMEOUT;
                    return refuse_for(&service, done, status, Some(backend), LATE);
                }
            }
        }
    }
    unavailable(&service, done, last_failure)
}

/// What trying a request's backends in turn needs to know.
struct Attempt<'a> {
    conn: &'a Connection,
    service: &'a Arc<ServiceEntry>,
    route: &'a Route,
    idempotent: bool,
}

impl Attempt<'_> {
    /// Sends the request to the route's backends through hyper's client over `transport`
    /// (h2c, https or h2), with the retry rules of [`handle`]. `parts` has its headers
    /// rewritten for the backend already.
    async fn over_transport(
        &self,
        transport: &Transport,
        parts: http::request::Parts,
        host: Option<&str>,
        body: ForwardBody,
        mut done: Done,
    ) -> Response<ResponseBody> {
        let (conn, service) = (self.conn, self.service);
        let path = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
        let mut headers = parts.headers;
        let (uri, version) = if transport.protocol.is_http2() {
            // HTTP/2 carries the host as the :authority, with the scheme.
            let scheme = if transport.protocol.uses_tls() {
                "https"
            } else {
                "http"
            };
            headers.remove(HOST);
            let absolute = |authority: &str| format!("{scheme}://{authority}{path}").parse().ok();
            let uri = host.and_then(absolute).or_else(|| {
                absolute(
                    &self
                        .route
                        .candidates
                        .first()
                        .map_or_else(String::new, ToString::to_string),
                )
            });
            (uri, Version::HTTP_2)
        } else {
            (path.parse().ok(), Version::HTTP_11)
        };
        let Some(uri): Option<Uri> = uri else {
            service.counters.count(StatusCode::BAD_REQUEST);
            return refuse(
                done,
                StatusCode::BAD_REQUEST,
                "the request's target is not a valid URI\n",
            );
        };
        let pool = &conn.engine.pool;
        let mut last_failure = "no backend available";
        let mut attempts = service.upstream.attempts(self.route);
        'candidates: while let Some(attempt) = attempts.next().await {
            let (backend, mut place) = match attempt {
                Ok(attempt) => attempt,
                Err(QueueTimedOut(waited)) => return queue_full(service, done, waited),
            };
            // A request lost on a pooled connection is sent once more on a fresh one when that
            // is harmless, as in `handle`.
            for _ in 0..2 {
                let Some(this_body) = body.again() else {
                    break 'candidates;
                };
                // A backend written by name is asked for by that name (TLS's server name).
                let host_name = service.upstream.service().backend_hosts.get(&backend);
                let (mut sender, reused) = match Box::pin(sender_pool::checkout(
                    transport,
                    backend,
                    host_name.map(String::as_str),
                    pool,
                ))
                .await
                {
                    Ok(checked_out) => checked_out,
                    Err(error) => {
                        last_failure = service.connect_failed(backend, &error);
                        continue 'candidates;
                    }
                };
                let mut request = Request::new(this_body);
                *request.method_mut() = parts.method.clone();
                *request.uri_mut() = uri.clone();
                *request.version_mut() = version;
                *request.headers_mut() = headers.clone();
                let sent =
                    tokio::time::timeout(conn.engine.backend_timeout, sender.send(request)).await;
                sender_pool::release(transport, backend, sender, pool);
                match sent {
                    Ok(Ok(response)) if response.status() != StatusCode::SWITCHING_PROTOCOLS => {
                        let (mut head, incoming) = response.into_parts();
                        headers::remove_hop_by_hop(&mut head.headers);
                        head.version = Version::default();
                        answered(service, self.route, backend, &mut head, &mut done);
                        done.backend = Some(backend);
                        done.place = place.take();
                        let server_timeout = self.conn.engine.server_timeout;
                        return Response::from_parts(
                            head,
                            ResponseBody::hyper(incoming, Box::new(done), server_timeout),
                        );
                    }
                    Ok(Ok(_switching)) => {
                        // hyper's server side does not carry a protocol switch on.
                        service.backend_failed(backend);
                        return refuse_for(
                            service,
                            done,
                            StatusCode::BAD_GATEWAY,
                            None,
                            "the backend switched protocols, which this service cannot carry\n",
                        );
                    }
                    Ok(Err(_)) if body.too_large() => {
                        let max = conn.engine.max_body_size.unwrap_or_default();
                        return too_large(service, done, max);
                    }
                    Ok(Err(error)) => {
                        service.backend_failed(backend);
                        debug!(service = %service.name, %backend, reused, %error, "backend request failed before the response");
                        if !(self.idempotent && body.is_empty()) {
                            let status = StatusCode::BAD_GATEWAY;
                            return refuse_for(service, done, status, None, LOST);
                        }
                        last_failure = "the backends closed the connection before answering";
                        if !reused {
                            continue 'candidates;
                        }
                    }
                    Err(_elapsed) => {
                        service.backend_failed(backend);
                        let status = StatusCode::GATEWAY_TIMEOUT;
                        return refuse_for(service, done, status, Some(backend), LATE);
                    }
                }
            }
        }
        unavailable(service, done, last_failure)
    }
}

/// 503: every candidate stayed at `backend_max_connections` for the queue timeout.
fn queue_full(
    service: &Arc<ServiceEntry>,
    done: Done,
    waited: std::time::Duration,
) -> Response<ResponseBody> {
    let text = format!(
        "503 Service Unavailable: every backend is at backend_max_connections and none had a \
         place within {}\n",
        humantime::format_duration(waited)
    );
    refuse_for(service, done, StatusCode::SERVICE_UNAVAILABLE, None, text)
}

/// 413: the request's body is over `max_body_size`.
fn too_large(service: &Arc<ServiceEntry>, done: Done, max: u64) -> Response<ResponseBody> {
    let text = format!("413 Content Too Large: the body may have {max} bytes at most\n");
    refuse_for(service, done, StatusCode::PAYLOAD_TOO_LARGE, None, text)
}

/// The request's line in the access log, completed when the response is known.
fn record(
    conn: &Connection,
    parts: &http::request::Parts,
    host: Option<String>,
    service: Option<&Arc<ServiceEntry>>,
) -> Record {
    let text = |name| {
        parts
            .headers
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
            .map(str::to_owned)
    };
    Record {
        client: headers::client_ip(conn.client),
        method: parts.method.clone(),
        target: parts
            .uri
            .path_and_query()
            .map_or_else(|| parts.uri.to_string(), |pq| pq.as_str().to_owned()),
        version: parts.version,
        host,
        status: StatusCode::OK,
        bytes: 0,
        service: service.map_or_else(|| Arc::from("-"), |s| Arc::clone(&s.name)),
        backend: None,
        took: std::time::Duration::ZERO,
        at: SystemTime::now(),
        referer: text(REFERER),
        user_agent: text(USER_AGENT),
    }
}

/// The backend's response head goes to the client: the policy sees it (sessions), and it is
/// counted and logged against `backend`.
fn answered(
    service: &ServiceEntry,
    route: &Route,
    backend: SocketAddr,
    head: &mut http::response::Parts,
    done: &mut Done,
) {
    service
        .upstream
        .responded(route, backend, head, Instant::now());
    service.counters.count(head.status);
    if let Some((_, record)) = &mut done.log {
        record.status = head.status;
        record.backend = Some(backend);
    }
}

/// An answer of the proxy's own for a request of `service`, counted; `backend` is logged when
/// the failure is one backend's.
fn refuse_for(
    service: &ServiceEntry,
    mut done: Done,
    status: StatusCode,
    backend: Option<SocketAddr>,
    text: impl Into<bytes::Bytes>,
) -> Response<ResponseBody> {
    service.counters.count(status);
    if let (Some(backend), Some((_, record))) = (backend, &mut done.log) {
        record.backend = Some(backend);
    }
    refuse(done, status, text)
}

/// The answer once every candidate failed: 503, with why the last one did.
fn unavailable(service: &ServiceEntry, done: Done, last_failure: &str) -> Response<ResponseBody> {
    refuse_for(
        service,
        done,
        StatusCode::SERVICE_UNAVAILABLE,
        None,
        format!("503 Service Unavailable: {last_failure}\n"),
    )
}

/// A request lost with its connection before the response head.
const LOST: &str = "the backend closed the connection before answering\n";
/// A backend that did not start answering within `backend_timeout`.
const LATE: &str = "the backend did not answer in time\n";

fn refuse(
    mut done: Done,
    status: StatusCode,
    text: impl Into<bytes::Bytes>,
) -> Response<ResponseBody> {
    if let Some((_, record)) = &mut done.log {
        record.status = status;
    }
    local(status, text, Some(Box::new(done)))
}

fn local(
    status: StatusCode,
    text: impl Into<bytes::Bytes>,
    finish: Option<Box<dyn Finish>>,
) -> Response<ResponseBody> {
    let mut response = Response::new(ResponseBody::local(text, finish));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    response
}
