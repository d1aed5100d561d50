//! Backend health: which backends of a service may get traffic, and the probes that decide it.
//!
//! [`HealthTable`] holds one service's verdicts. Two kinds of evidence change them:
//! - active checks ([`spawn_checks`]): a TCP connect, or an HTTP/1.1 `GET path` that must answer
//!   the expected status, every `interval`, in the backend's protocol (TLS, HTTP/2) when it has
//!   one; `fall` failures in a row take an up backend down,
//!   `rise` successes in a row bring a down one back (Pound's `Alive`, keepalived's rise/fall);
//! - passive marking ([`HealthTable::mark_down`]): a request that could not reach a backend
//!   (refused, reset, timed out) takes it down at once, so the next request does not try it;
//!   only the active checks bring it back.
//!
//! Both the proxy and the L4 data plane read the same table: the proxy on every request
//! ([`HealthTable::is_up`]), the data plane by watching [`HealthTable::subscribe`] and rebuilding
//! its Maglev table when the generation moves. Each transition is logged once, with the reason.
//! What does not live here: choosing among healthy backends (the balancers) and sessions.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use bytes::Bytes;
use http_body_util::Empty;

use crate::backend_transport::Transport;
use crate::config::{self, BackendProtocol, HealthCheck, HealthKind};

/// The most of an HTTP probe's answer that is read: the status line is all that counts.
const MAX_STATUS_LINE: usize = 1024;

/// One service's backend health, shared by the probes, the proxy and the data plane.
#[derive(Debug)]
pub struct HealthTable {
    service: String,
    /// Config order; indices into this are what [`HealthTable::is_up_at`] takes.
    backends: Vec<SocketAddr>,
    /// The verdicts, readable without a lock on the request path.
    up: Vec<AtomicBool>,
    /// Counters and reasons behind the verdicts; index-aligned with `backends`.
    state: Mutex<Vec<State>>,
    rise: u32,
    fall: u32,
    /// How often probes run, for the log line that says when a down backend is tried again.
    interval: Duration,
    /// Bumped on every transition; `watch` lets subscribers await it.
    generation: AtomicU64,
    changes: watch::Sender<u64>,
}

#[derive(Debug, Clone)]
struct State {
    up: bool,
    /// Why the backend is in its state ("started", "connect refused", ...).
    reason: String,
    since: SystemTime,
    since_instant: Instant,
    /// Consecutive probe results in the direction that would change the state.
    successes: u32,
    failures: u32,
}

/// A backend's health as `tandem status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BackendHealth {
    pub address: SocketAddr,
    pub up: bool,
    /// Why it is up or down, e.g. "connect refused" or "2 checks passed".
    pub reason: String,
    /// When it entered this state (RFC 3339, UTC).
    pub since: String,
}

/// A change of a backend's state, as returned to the caller that caused it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transition {
    Down { reason: String },
    Up { reason: String },
}

/// What one probe found.
pub type ProbeResult = Result<(), String>;

impl HealthTable {
    /// The table for `service`'s backends, all up (Pound starts that way: a backend that is
    /// down is found by the first probe or the first request).
    pub fn new(service: &config::Service) -> Arc<HealthTable> {
        let backends: Vec<SocketAddr> = service.backends.iter().map(|b| b.address).collect();
        HealthTable::with_backends(&service.name, &backends, &service.health)
    }

    /// A table for any list of backends (no address twice), judged with `check`'s rise and
    /// fall counts.
    pub fn with_backends(
        service: &str,
        backends: &[SocketAddr],
        check: &HealthCheck,
    ) -> Arc<HealthTable> {
        let now = (SystemTime::now(), Instant::now());
        let state = backends
            .iter()
            .map(|_| State {
                up: true,
                reason: "started".to_owned(),
                since: now.0,
                since_instant: now.1,
                successes: 0,
                failures: 0,
            })
            .collect();
        Arc::new(HealthTable {
            service: service.to_owned(),
            backends: backends.to_vec(),
            up: backends.iter().map(|_| AtomicBool::new(true)).collect(),
            state: Mutex::new(state),
            rise: check.rise.max(1),
            fall: check.fall.max(1),
            interval: check.interval,
            generation: AtomicU64::new(0),
            changes: watch::Sender::new(0),
        })
    }

    /// The backends, in the order given at creation.
    pub fn backends(&self) -> &[SocketAddr] {
        &self.backends
    }

    /// Whether `backend` may get traffic; `false` for an address the table does not know.
    pub fn is_up(&self, backend: SocketAddr) -> bool {
        self.index(backend).is_some_and(|i| self.is_up_at(i))
    }

    /// [`HealthTable::is_up`] by position in [`HealthTable::backends`].
    pub fn is_up_at(&self, index: usize) -> bool {
        self.up
            .get(index)
            .is_some_and(|up| up.load(Ordering::Acquire))
    }

    /// Counts every transition so far; changes exactly when some verdict changed.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// A receiver that sees the generation move, for rebuilding tables on change.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Passive marking: a request could not reach `backend` (`reason`, e.g. "connect
    /// refused"). An up backend goes down at once; the probes bring it back after `rise`
    /// successes. Returns the transition, if this caused one.
    pub fn mark_down(&self, backend: SocketAddr, reason: &str) -> Option<Transition> {
        let index = self.index(backend)?;
        let mut state = self.lock();
        let entry = &mut state[index];
        entry.successes = 0;
        if !entry.up {
            return None;
        }
        let transition = Transition::Down {
            reason: reason.to_owned(),
        };
        self.apply(&mut state, index, &transition);
        Some(transition)
    }

    /// Counts one probe result; returns the transition, if `rise` or `fall` was reached.
    pub fn record_probe(&self, backend: SocketAddr, result: ProbeResult) -> Option<Transition> {
        let index = self.index(backend)?;
        let mut state = self.lock();
        let entry = &mut state[index];
        let transition = match (entry.up, result) {
            (true, Ok(())) => {
                entry.failures = 0;
                None
            }
            (true, Err(error)) => {
                entry.failures += 1;
                (entry.failures >= self.fall).then(|| Transition::Down {
                    reason: if self.fall == 1 {
                        error
                    } else {
                        format!("{error} ({} checks failed in a row)", entry.failures)
                    },
                })
            }
            (false, Ok(())) => {
                entry.successes += 1;
                (entry.successes >= self.rise).then(|| Transition::Up {
                    reason: format!("{} checks passed", entry.successes),
                })
            }
            (false, Err(_)) => {
                entry.successes = 0;
                None
            }
        };
        if let Some(transition) = &transition {
            self.apply(&mut state, index, transition);
        }
        transition
    }

    /// A reload replaced this table's service: backends that were in `previous` keep their
    /// verdict, reason, age and probe counts (a backend known down does not come back with the
    /// new table, one that is up does not wait for `rise`); new backends start up, as at start.
    pub fn carry_over(&self, previous: &HealthTable) {
        let old = previous.lock();
        let mut state = self.lock();
        let mut changed = false;
        for (index, backend) in self.backends.iter().enumerate() {
            let Some(old_index) = previous.index(*backend) else {
                continue;
            };
            state[index] = old[old_index].clone();
            self.up[index].store(state[index].up, Ordering::Release);
            changed = true;
        }
        if changed {
            let generation = self.generation.fetch_add(1, Ordering::AcqRel) + 1;
            self.changes.send_replace(generation);
        }
    }

    /// Every backend's health, in table order.
    pub fn snapshot(&self) -> Vec<BackendHealth> {
        let state = self.lock();
        self.backends
            .iter()
            .zip(state.iter())
            .map(|(&address, entry)| BackendHealth {
                address,
                up: entry.up,
                reason: entry.reason.clone(),
                since: humantime::format_rfc3339_seconds(entry.since).to_string(),
            })
            .collect()
    }

    fn index(&self, backend: SocketAddr) -> Option<usize> {
        self.backends.iter().position(|&b| b == backend)
    }

    fn lock(&self) -> MutexGuard<'_, Vec<State>> {
        // A panic elsewhere while holding the lock leaves counters, never a broken invariant.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Records and logs a transition, then tells subscribers; called with the state locked,
    /// so each transition is logged exactly once.
    fn apply(&self, state: &mut [State], index: usize, transition: &Transition) {
        let backend = self.backends[index];
        let entry = &mut state[index];
        let now = Instant::now();
        let was_for = humantime::format_duration(round_to_millis(
            now.saturating_duration_since(entry.since_instant),
        ));
        let every = humantime::format_duration(self.interval);
        match transition {
            Transition::Down { reason } => {
                warn!(
                    service = %self.service,
                    backend = %backend,
                    "backend {backend} down: {reason}; probing every {every}"
                );
                entry.up = false;
                entry.reason = reason.clone();
            }
            Transition::Up { reason } => {
                info!(
                    service = %self.service,
                    backend = %backend,
                    "backend {backend} up: {reason} (was down {was_for}: {})",
                    entry.reason
                );
                entry.up = true;
                entry.reason = reason.clone();
            }
        }
        entry.since = SystemTime::now();
        entry.since_instant = now;
        entry.successes = 0;
        entry.failures = 0;
        self.up[index].store(entry.up, Ordering::Release);
        let generation = self.generation.fetch_add(1, Ordering::AcqRel) + 1;
        self.changes.send_replace(generation);
    }
}

fn round_to_millis(duration: Duration) -> Duration {
    Duration::from_millis(u64::try_from(duration.as_millis()).unwrap_or(u64::MAX))
}

/// The node's health checks, one entry per service, whichever part serves it (the proxy's
/// HTTP services, the data plane's L4 TCP services): the one place checks start. A reload
/// keeps the checks of a service that did not change, and gives a changed one a new table
/// that carries over what is known of its remaining backends.
#[derive(Default)]
pub struct HealthChecks {
    running: Mutex<std::collections::HashMap<String, Checked>>,
}

/// A service checked into a table until its token is cancelled.
struct Checked {
    service: config::Service,
    table: Arc<HealthTable>,
    stop: CancellationToken,
}

impl HealthChecks {
    /// The table `service` is to be served with: the running one when the service is checked
    /// as it is, else a new one (not checked until [`HealthChecks::run`]) with the verdicts of
    /// the running one's remaining backends.
    pub fn table_for(&self, service: &config::Service) -> Arc<HealthTable> {
        let running = self.lock();
        match running.get(&service.name) {
            Some(checked) if checked.service == *service && !checked.stop.is_cancelled() => {
                Arc::clone(&checked.table)
            }
            Some(checked) => {
                let table = HealthTable::new(service);
                table.carry_over(&checked.table);
                table
            }
            None => HealthTable::new(service),
        }
    }

    /// Checks `service` into `table` until `stop` is cancelled. Nothing changes when they run
    /// on that table already; the checks of a replaced table stop.
    pub fn run(
        &self,
        service: &config::Service,
        table: &Arc<HealthTable>,
        stop: &CancellationToken,
    ) {
        let mut running = self.lock();
        if let Some(checked) = running.get(&service.name) {
            if Arc::ptr_eq(&checked.table, table) && !checked.stop.is_cancelled() {
                return;
            }
            checked.stop.cancel();
        }
        // Services that are gone leave nothing behind.
        running.retain(|_, checked| !checked.stop.is_cancelled());
        let own = stop.child_token();
        spawn_checks(service, Arc::clone(table), own.clone());
        running.insert(
            service.name.clone(),
            Checked {
                service: service.clone(),
                table: Arc::clone(table),
                stop: own,
            },
        );
    }

    fn lock(&self) -> MutexGuard<'_, std::collections::HashMap<String, Checked>> {
        self.running
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Starts one probe task per backend of `service`, each probing every `health.interval`
/// (the first at once) and recording into `table`, until `shutdown` is cancelled. Must be
/// called inside a tokio runtime.
fn spawn_checks(service: &config::Service, table: Arc<HealthTable>, shutdown: CancellationToken) {
    // Backends that speak TLS or HTTP/2 are probed in their protocol.
    let transport = match service.http.backend_protocol {
        BackendProtocol::Http1 => None,
        protocol => match Transport::new(protocol, service.http.backend_tls.as_ref()) {
            Ok(transport) => Some(Arc::new(transport)),
            Err(error) => {
                warn!(service = %service.name, error = %format!("{error:#}"), "cannot set up the health checks' TLS; backends keep their state");
                return;
            }
        },
    };
    for backend in service.backends.iter().map(|b| b.address) {
        let table = table.clone();
        let check = service.health.clone();
        let shutdown = shutdown.clone();
        let transport = transport.clone();
        let host_name = service.backend_hosts.get(&backend).cloned();
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(check.interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    _ = ticks.tick() => {}
                }
                let result = tokio::select! {
                    () = shutdown.cancelled() => return,
                    result = probe(backend, &check, transport.as_deref(), host_name.as_deref()) => result,
                };
                // Out of descriptors or ports here: the backend is neither up nor down for it.
                if let Err(reason) = &result {
                    if is_local_failure(reason) {
                        if let Some(held) = crate::log_limit::allow("health-check-local-limit") {
                            warn!(%backend, "health check not run: {reason}{}", crate::log_limit::held_back(held));
                        }
                        continue;
                    }
                }
                table.record_probe(backend, result);
            }
        });
    }
}

/// Runs one probe of `backend` as `check` says, within `check.timeout`; through `transport`
/// when the backend speaks TLS or HTTP/2.
pub async fn probe(
    backend: SocketAddr,
    check: &HealthCheck,
    transport: Option<&Transport>,
    host_name: Option<&str>,
) -> ProbeResult {
    let timeout = check.timeout;
    let attempt = async {
        if let Some(transport) = transport {
            return transport_probe(transport, backend, host_name, &check.kind).await;
        }
        let mut stream = TcpStream::connect(backend).await.map_err(connect_error)?;
        match &check.kind {
            HealthKind::Tcp => Ok(()),
            HealthKind::Http {
                path,
                expect_status,
            } => http_probe(&mut stream, backend, path, *expect_status).await,
        }
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(result) => result,
        Err(_) => Err(format!(
            "no answer within {}",
            humantime::format_duration(timeout)
        )),
    }
}

/// Errors that say this node ran out of something (descriptors, local ports, memory), not
/// that the backend failed.
pub fn is_local_limit(error: &std::io::Error) -> bool {
    matches!(
        error.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::EADDRNOTAVAIL | libc::ENOBUFS | libc::ENOMEM)
    )
}

/// Ends the reason of a probe that could not run for a limit of this node.
const LOCAL_LIMIT: &str = " (a limit of this node, not the backend)";

/// Whether a probe's failure was this node's limit: such a probe says nothing of the backend
/// and is not counted.
pub fn is_local_failure(reason: &str) -> bool {
    reason.ends_with(LOCAL_LIMIT)
}

/// How a failed connect reads in logs and status: short, and the same words for the same cause.
pub fn connect_error(error: std::io::Error) -> String {
    if is_local_limit(&error) {
        return format!("cannot connect: {error}{LOCAL_LIMIT}");
    }
    match error.kind() {
        std::io::ErrorKind::ConnectionRefused => "connect refused".to_owned(),
        std::io::ErrorKind::TimedOut => "connect timed out".to_owned(),
        _ => format!("connect failed: {error}"),
    }
}

/// A connect failure as reported by a client library ("client error (Connect): tcp connect
/// error: Connection refused (os error 111)") in the words [`connect_error`] uses, so logs and
/// status read the same whoever noticed; unknown causes are kept as they are.
pub fn connect_failure(reason: &str) -> String {
    let lower = reason.to_ascii_lowercase();
    let known = [
        ("connection refused", "connect refused"),
        ("timed out", "connect timed out"),
        ("timeout", "connect timed out"),
        ("connection reset", "connection reset"),
        ("no route to host", "no route to host"),
        ("network is unreachable", "network unreachable"),
    ];
    known
        .iter()
        .find(|(needle, _)| lower.contains(needle))
        .map_or_else(|| reason.to_owned(), |(_, short)| (*short).to_owned())
}

/// A probe in the backend's protocol: the TLS handshake (if any) must succeed, and for an
/// HTTP check the `GET path` must answer the expected status.
async fn transport_probe(
    transport: &Transport,
    backend: SocketAddr,
    host_name: Option<&str>,
    kind: &HealthKind,
) -> ProbeResult {
    let stream = transport
        .connect(backend, host_name)
        .await
        .map_err(|error| {
            if error.kind() == std::io::ErrorKind::ConnectionRefused
                || error.kind() == std::io::ErrorKind::TimedOut
                || is_local_limit(&error)
            {
                connect_error(error)
            } else {
                format!("{} handshake failed: {error}", transport.protocol.as_str())
            }
        })?;
    let HealthKind::Http {
        path,
        expect_status,
    } = kind
    else {
        return Ok(());
    };
    let mut sender = transport
        .handshake::<Empty<Bytes>>(stream)
        .await
        .map_err(|error| format!("{} handshake failed: {error}", transport.protocol.as_str()))?;
    let mut request = http::Request::new(Empty::new());
    let scheme = if transport.protocol.uses_tls() {
        "https"
    } else {
        "http"
    };
    if transport.protocol.is_http2() {
        *request.uri_mut() = format!("{scheme}://{backend}{path}")
            .parse()
            .map_err(|_| format!("GET {path}: not a valid path"))?;
        *request.version_mut() = http::Version::HTTP_2;
    } else {
        *request.uri_mut() = path
            .parse()
            .map_err(|_| format!("GET {path}: not a valid path"))?;
        let host = http::HeaderValue::from_str(&backend.to_string())
            .map_err(|_| "backend address is not a header value".to_owned())?;
        request.headers_mut().insert(http::header::HOST, host);
    }
    request.headers_mut().insert(
        http::header::USER_AGENT,
        http::HeaderValue::from_static("tandem-health-check"),
    );
    let response = sender
        .send(request)
        .await
        .map_err(|error| format!("GET {path} failed: {error}"))?;
    let status = response.status().as_u16();
    if status == *expect_status {
        Ok(())
    } else {
        Err(format!(
            "GET {path} answered {status}, expected {expect_status}"
        ))
    }
}

async fn http_probe(
    stream: &mut TcpStream,
    backend: SocketAddr,
    path: &str,
    expect: u16,
) -> ProbeResult {
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {backend}\r\nUser-Agent: tandem-health-check\r\n\
         Connection: close\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|error| format!("sending GET {path} failed: {error}"))?;
    let mut head = Vec::with_capacity(256);
    let mut chunk = [0u8; 256];
    while !head.contains(&b'\n') && head.len() < MAX_STATUS_LINE {
        let read = stream
            .read(&mut chunk)
            .await
            .map_err(|error| format!("reading the answer to GET {path} failed: {error}"))?;
        if read == 0 {
            break;
        }
        head.extend_from_slice(&chunk[..read]);
    }
    let line_end = head.iter().position(|&b| b == b'\n').unwrap_or(head.len());
    let line = String::from_utf8_lossy(&head[..line_end]);
    let status = line
        .strip_prefix("HTTP/1.")
        .and_then(|rest| rest.split(' ').nth(1))
        .and_then(|code| code.trim().parse::<u16>().ok());
    match status {
        Some(status) if status == expect => Ok(()),
        Some(status) => Err(format!("GET {path} answered {status}, expected {expect}")),
        None if head.is_empty() => Err(format!("GET {path}: connection closed without answer")),
        None => Err(format!(
            "GET {path}: not an HTTP/1.x status line: {:?}",
            line.trim_end()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A service "web" on `backends`, its checks every hour (none probes during a test).
    fn checked_service(backends: &[&str]) -> config::Service {
        let list: Vec<String> = backends.iter().map(|b| format!("\"{b}\"")).collect();
        let text = format!(
            "[node]\nname = \"lb1\"\ninterface = \"eth0\"\n\n[[service]]\nname = \"web\"\n\
             listen = \"198.18.0.99:80\"\nbackends = [{}]\nhealth = {{ interval = \"1h\" }}\n",
            list.join(", ")
        );
        crate::config::parse(&text, std::path::Path::new("t.toml"))
            .expect("test config loads")
            .config
            .services
            .remove(0)
    }

    #[tokio::test]
    async fn an_unchanged_service_keeps_its_table_and_its_checks() {
        let checks = HealthChecks::default();
        let service = checked_service(&["198.18.0.102:80"]);
        let stop = CancellationToken::new();
        let table = checks.table_for(&service);
        checks.run(&service, &table, &stop);
        assert!(Arc::ptr_eq(&checks.table_for(&service), &table));
        checks.run(&service, &table, &stop);
        assert_eq!(checks.lock().len(), 1);
        assert!(!checks.lock()["web"].stop.is_cancelled());
        stop.cancel();
    }

    #[tokio::test]
    async fn a_changed_service_gets_a_new_table_that_carries_over_and_replaces_the_old_checks() {
        let checks = HealthChecks::default();
        let before = checked_service(&["198.18.0.102:80", "198.18.0.103:80"]);
        let stop = CancellationToken::new();
        let old = checks.table_for(&before);
        checks.run(&before, &old, &stop);
        old.mark_down(addr("198.18.0.103:80"), "connect refused");
        let old_checks = checks.lock()["web"].stop.clone();

        let after = checked_service(&["198.18.0.103:80", "198.18.0.104:80"]);
        let new = checks.table_for(&after);
        assert!(!Arc::ptr_eq(&new, &old));
        assert!(
            !new.is_up(addr("198.18.0.103:80")),
            "a backend known down stays down"
        );
        assert!(
            new.is_up(addr("198.18.0.104:80")),
            "a new backend starts up"
        );
        assert!(
            !old_checks.is_cancelled(),
            "nothing stops before the new table runs"
        );
        checks.run(&after, &new, &stop);
        assert!(old_checks.is_cancelled());
        stop.cancel();
    }

    #[tokio::test]
    async fn a_service_that_is_gone_leaves_nothing_behind() {
        let checks = HealthChecks::default();
        let web = checked_service(&["198.18.0.102:80"]);
        let mut other = web.clone();
        other.name = "api".to_owned();
        let (web_stop, other_stop) = (CancellationToken::new(), CancellationToken::new());
        checks.run(&web, &checks.table_for(&web), &web_stop);
        web_stop.cancel();
        checks.run(&other, &checks.table_for(&other), &other_stop);
        let running = checks.lock();
        assert_eq!(running.keys().collect::<Vec<_>>(), ["api"]);
        drop(running);
        other_stop.cancel();
    }

    fn addr(text: &str) -> SocketAddr {
        text.parse().expect("test address")
    }

    fn table(rise: u32, fall: u32) -> Arc<HealthTable> {
        let check = HealthCheck {
            rise,
            fall,
            ..HealthCheck::default()
        };
        HealthTable::with_backends(
            "web",
            &[addr("198.18.0.102:80"), addr("198.18.0.103:80")],
            &check,
        )
    }

    #[test]
    fn backends_start_up() {
        let table = table(2, 3);
        assert!(table.is_up(addr("198.18.0.102:80")));
        assert!(table.is_up(addr("198.18.0.103:80")));
        assert!(!table.is_up(addr("198.18.0.104:80")), "unknown is not up");
        assert_eq!(table.generation(), 0);
    }

    #[test]
    fn fall_failures_in_a_row_take_a_backend_down() {
        let table = table(2, 3);
        let b = addr("198.18.0.102:80");
        assert_eq!(table.record_probe(b, Err("connect refused".into())), None);
        assert_eq!(table.record_probe(b, Err("connect refused".into())), None);
        // A success in between starts the count again.
        assert_eq!(table.record_probe(b, Ok(())), None);
        assert_eq!(table.record_probe(b, Err("connect refused".into())), None);
        assert_eq!(table.record_probe(b, Err("connect refused".into())), None);
        assert!(table.is_up(b));
        let transition = table.record_probe(b, Err("connect refused".into()));
        assert_eq!(
            transition,
            Some(Transition::Down {
                reason: "connect refused (3 checks failed in a row)".into()
            })
        );
        assert!(!table.is_up(b));
        assert!(
            table.is_up(addr("198.18.0.103:80")),
            "the other is untouched"
        );
        assert_eq!(table.generation(), 1);
        // Further failures are no new transition.
        assert_eq!(table.record_probe(b, Err("connect refused".into())), None);
        assert_eq!(table.generation(), 1);
    }

    #[test]
    fn rise_successes_in_a_row_bring_it_back() {
        let table = table(2, 1);
        let b = addr("198.18.0.103:80");
        assert!(table
            .record_probe(b, Err("connect refused".into()))
            .is_some());
        assert_eq!(table.record_probe(b, Ok(())), None);
        assert_eq!(table.record_probe(b, Err("no answer".into())), None);
        assert_eq!(table.record_probe(b, Ok(())), None);
        assert!(!table.is_up(b));
        assert_eq!(
            table.record_probe(b, Ok(())),
            Some(Transition::Up {
                reason: "2 checks passed".into()
            })
        );
        assert!(table.is_up(b));
        assert_eq!(table.generation(), 2);
    }

    #[test]
    fn passive_marking_is_immediate_and_only_probes_bring_it_back() {
        let table = table(2, 3);
        let b = addr("198.18.0.102:80");
        let mut changes = table.subscribe();
        assert_eq!(
            table.mark_down(b, "connect refused"),
            Some(Transition::Down {
                reason: "connect refused".into()
            })
        );
        assert!(!table.is_up(b));
        assert!(changes.has_changed().unwrap_or(false));
        assert_eq!(*changes.borrow_and_update(), 1);
        // Marking again is no transition and logs nothing.
        assert_eq!(table.mark_down(b, "connect refused"), None);
        assert_eq!(table.generation(), 1);
        // A passive failure between probe successes starts the rise count again.
        assert_eq!(table.record_probe(b, Ok(())), None);
        assert_eq!(table.mark_down(b, "connect timed out"), None);
        assert_eq!(table.record_probe(b, Ok(())), None);
        assert!(table.record_probe(b, Ok(())).is_some());
        assert!(table.is_up(b));
        let snapshot = table.snapshot();
        assert!(snapshot[0].up);
        assert_eq!(snapshot[0].reason, "2 checks passed");
        assert!(snapshot[0].since.ends_with('Z'), "{}", snapshot[0].since);
    }

    #[test]
    fn connect_failures_read_the_same_whoever_noticed() {
        assert_eq!(
            connect_failure(
                "client error (Connect): tcp connect error: Connection refused (os error 111)"
            ),
            "connect refused"
        );
        assert_eq!(
            connect_failure(
                "client error (Connect): tcp connect error: deadline has elapsed: timed out"
            ),
            "connect timed out"
        );
        assert_eq!(connect_failure("connect refused"), "connect refused");
        assert_eq!(connect_failure("tls handshake eof"), "tls handshake eof");
    }

    #[test]
    fn unknown_backends_change_nothing() {
        let table = table(1, 1);
        assert_eq!(table.mark_down(addr("10.0.0.1:80"), "refused"), None);
        assert_eq!(
            table.record_probe(addr("10.0.0.1:80"), Err("x".into())),
            None
        );
        assert_eq!(table.generation(), 0);
    }

    #[tokio::test]
    async fn tcp_probe_succeeds_on_a_listener_and_fails_on_a_closed_port() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let open = listener.local_addr().expect("addr");
        let check = HealthCheck::default();
        assert_eq!(probe(open, &check, None, None).await, Ok(()));
        drop(listener);
        assert_eq!(
            probe(open, &check, None, None).await,
            Err("connect refused".into())
        );
    }

    #[tokio::test]
    async fn http_probe_checks_the_status() {
        async fn serve_once(answer: &'static str) -> SocketAddr {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let addr = listener.local_addr().expect("addr");
            tokio::spawn(async move {
                if let Ok((mut stream, _)) = listener.accept().await {
                    let mut buf = [0u8; 1024];
                    let _ = stream.read(&mut buf).await;
                    let _ = stream.write_all(answer.as_bytes()).await;
                }
            });
            addr
        }
        let check = |expect| HealthCheck {
            kind: HealthKind::Http {
                path: "/health".into(),
                expect_status: expect,
            },
            ..HealthCheck::default()
        };
        let ok = serve_once("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n").await;
        assert_eq!(probe(ok, &check(200), None, None).await, Ok(()));
        let wrong = serve_once("HTTP/1.1 503 Service Unavailable\r\n\r\n").await;
        assert_eq!(
            probe(wrong, &check(200), None, None).await,
            Err("GET /health answered 503, expected 200".into())
        );
        let garbage = serve_once("SSH-2.0-OpenSSH\r\n").await;
        assert!(probe(garbage, &check(200), None, None)
            .await
            .is_err_and(|e| e.contains("not an HTTP/1.x status line")));
    }

    #[tokio::test]
    async fn silent_backends_time_out() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        // Accepts (the kernel does) but never answers.
        let check = HealthCheck {
            timeout: Duration::from_millis(100),
            kind: HealthKind::Http {
                path: "/".into(),
                expect_status: 200,
            },
            ..HealthCheck::default()
        };
        assert_eq!(
            probe(addr, &check, None, None).await,
            Err("no answer within 100ms".into())
        );
        drop(listener);
    }
}
