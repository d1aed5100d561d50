//! [`RequestLoop`]: a client that keeps asking a VIP for a page, one short request after the
//! other, and records when each started, when it ended and which backend answered. Failover
//! tests and the failover benchmark read the gap in service and the failed requests from it.
//! [`RateLoop`]: the same requests started at a fixed rate, each on its own connection whether
//! or not the earlier ones have finished, for a VIP that some connections reach and others do
//! not (anycast over several nodes, one of them lost).
//!
//! Both loops are bounded twice: they stop after `max_requests` or `max_duration`, whichever
//! comes first, even if nobody stops them.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::Host;

/// One request of the loop.
#[derive(Debug, Clone)]
pub struct Sample {
    pub started: Instant,
    pub ended: Instant,
    /// The `X-Backend` (or `Server`) of a 2xx answer; `None` when the request failed.
    pub answered_by: Option<String>,
    /// Why it failed; `None` when it was answered.
    pub failure: Option<Failure>,
}

/// How a request of a loop failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Failure {
    /// The connection was refused (a reset answered the SYN).
    Refused,
    /// No answer within the loop's timeout (connect, send or answer).
    TimedOut,
    /// The connection was reset before the whole answer arrived.
    Reset,
    /// The whole answer (its Content-Length) arrived, then a reset instead of the end of the
    /// connection: a client that reads to the end sees an error, one that counts the body
    /// has its answer, and the reset may discard the answer before it is read.
    ResetAfterAnswer,
    /// The connection ended without an answer.
    NoAnswer,
    /// An answer, but not a 2xx one (or not HTTP).
    NotOk,
    Other,
}

impl Failure {
    pub fn name(self) -> &'static str {
        match self {
            Failure::Refused => "refused",
            Failure::TimedOut => "timed out",
            Failure::Reset => "reset",
            Failure::ResetAfterAnswer => "reset after the whole answer",
            Failure::NoAnswer => "closed without an answer",
            Failure::NotOk => "not a 2xx answer",
            Failure::Other => "other error",
        }
    }

    fn of(error: &std::io::Error) -> Failure {
        use std::io::ErrorKind;
        match error.kind() {
            ErrorKind::ConnectionRefused => Failure::Refused,
            ErrorKind::TimedOut | ErrorKind::WouldBlock => Failure::TimedOut,
            ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted | ErrorKind::BrokenPipe => {
                Failure::Reset
            }
            _ => Failure::Other,
        }
    }

    /// The failure of a read that ended in `error` after `response` had arrived.
    fn of_read(error: &std::io::Error, response: &[u8]) -> Failure {
        match Failure::of(error) {
            Failure::Reset if whole_answer(response) => Failure::ResetAfterAnswer,
            failure => failure,
        }
    }
}

impl Sample {
    pub fn ok(&self) -> bool {
        self.answered_by.is_some()
    }
}

/// Settings of a [`RequestLoop`].
#[derive(Debug, Clone)]
pub struct LoopSettings {
    /// Connect timeout, and read timeout of the answer.
    pub timeout: Duration,
    /// Pause between the end of one request and the start of the next.
    pub pause: Duration,
    pub max_requests: usize,
    pub max_duration: Duration,
}

impl Default for LoopSettings {
    fn default() -> Self {
        LoopSettings {
            timeout: Duration::from_millis(100),
            pause: Duration::from_millis(5),
            max_requests: 200_000,
            max_duration: Duration::from_secs(120),
        }
    }
}

/// A running request loop in a host's namespace.
pub struct RequestLoop {
    stop: Arc<AtomicBool>,
    samples: Arc<Mutex<Vec<Sample>>>,
    thread: Option<JoinHandle<()>>,
}

impl RequestLoop {
    /// Starts asking `http://addr/` from `host`.
    pub fn start(
        host: &Host,
        addr: SocketAddr,
        settings: LoopSettings,
    ) -> anyhow::Result<RequestLoop> {
        let stop = Arc::new(AtomicBool::new(false));
        let samples = Arc::new(Mutex::new(Vec::new()));
        let netns = host.netns_path();
        let thread = {
            let stop = stop.clone();
            let samples = samples.clone();
            std::thread::Builder::new()
                .name("request-loop".to_owned())
                .spawn(move || {
                    if let Err(err) = crate::netns::enter(&netns) {
                        eprintln!("request loop: cannot enter {}: {err:#}", netns.display());
                        return;
                    }
                    let begun = Instant::now();
                    for _ in 0..settings.max_requests {
                        if stop.load(Ordering::SeqCst) || begun.elapsed() > settings.max_duration {
                            break;
                        }
                        let started = Instant::now();
                        let result = one_request(addr, settings.timeout);
                        let sample = Sample {
                            started,
                            ended: Instant::now(),
                            answered_by: result.as_ref().ok().cloned(),
                            failure: result.err(),
                        };
                        samples
                            .lock()
                            .unwrap_or_else(|poisoned| poisoned.into_inner())
                            .push(sample);
                        std::thread::sleep(settings.pause);
                    }
                })?
        };
        Ok(RequestLoop {
            stop,
            samples,
            thread: Some(thread),
        })
    }

    /// The samples so far.
    pub fn samples(&self) -> Vec<Sample> {
        self.samples
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Waits until a request that started after `after` succeeded, answered by `by` (any
    /// backend when `None`), or `timeout` passes.
    pub fn wait_for_success_after(
        &self,
        after: Instant,
        by: Option<&str>,
        timeout: Duration,
    ) -> Option<Sample> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            let found = self.samples().into_iter().find(|sample| {
                sample.started >= after
                    && sample.ok()
                    && by.is_none_or(|by| sample.answered_by.as_deref() == Some(by))
            });
            if found.is_some() {
                return found;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }

    /// Stops the loop and returns every sample.
    pub fn finish(mut self) -> Vec<Sample> {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        self.samples()
    }
}

impl Drop for RequestLoop {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Settings of a [`RateLoop`].
#[derive(Debug, Clone)]
pub struct RateSettings {
    /// A new request starts this often (a tick missed because the machine was busy is skipped,
    /// not made up for).
    pub every: Duration,
    /// A request (connect, send, whole answer) without its answer in this time failed.
    pub timeout: Duration,
    pub max_requests: usize,
    pub max_duration: Duration,
}

/// Requests started at a fixed rate from a host's namespace, each on a new connection.
pub struct RateLoop {
    runtime: Option<crate::l4::NetnsRuntime>,
    stop: Arc<AtomicBool>,
    samples: Arc<Mutex<Vec<Sample>>>,
    driver: Option<tokio::task::JoinHandle<()>>,
}

impl RateLoop {
    /// Starts asking `http://addr/` from `host`, one request every `settings.every`.
    pub fn start(
        host: &Host,
        addr: SocketAddr,
        settings: RateSettings,
    ) -> anyhow::Result<RateLoop> {
        let runtime = crate::l4::NetnsRuntime::new(host)?;
        let stop = Arc::new(AtomicBool::new(false));
        let samples = Arc::new(Mutex::new(Vec::new()));
        let driver = {
            let stop = stop.clone();
            let samples = samples.clone();
            runtime.handle().spawn(async move {
                let begun = Instant::now();
                let mut ticks = tokio::time::interval(settings.every);
                ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
                let mut requests = tokio::task::JoinSet::new();
                for _ in 0..settings.max_requests {
                    ticks.tick().await;
                    if stop.load(Ordering::SeqCst) || begun.elapsed() > settings.max_duration {
                        break;
                    }
                    let samples = samples.clone();
                    requests.spawn(async move {
                        let started = Instant::now();
                        let result =
                            tokio::time::timeout(settings.timeout, one_request_async(addr))
                                .await
                                .unwrap_or(Err(Failure::TimedOut));
                        let sample = Sample {
                            started,
                            ended: Instant::now(),
                            answered_by: result.as_ref().ok().cloned(),
                            failure: result.err(),
                        };
                        samples
                            .lock()
                            .unwrap_or_else(|poisoned| poisoned.into_inner())
                            .push(sample);
                    });
                    while requests.try_join_next().is_some() {}
                }
                // Every request has its own timeout: this ends.
                while requests.join_next().await.is_some() {}
            })
        };
        Ok(RateLoop {
            runtime: Some(runtime),
            stop,
            samples,
            driver: Some(driver),
        })
    }

    /// Stops starting requests, waits for those under way, and returns every sample in the
    /// order they started.
    pub fn finish(mut self) -> Vec<Sample> {
        self.stop_and_wait();
        let mut samples = self
            .samples
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone();
        samples.sort_by_key(|sample| sample.started);
        samples
    }

    fn stop_and_wait(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let (Some(driver), Some(runtime)) = (self.driver.take(), self.runtime.as_ref()) {
            let _ = runtime.handle().block_on(driver);
        }
        self.runtime.take();
    }
}

impl Drop for RateLoop {
    fn drop(&mut self) {
        self.stop_and_wait();
    }
}

/// What a failover looked like from the client, measured from the moment `stopped`.
#[derive(Debug, Clone, Copy)]
pub struct Outage {
    /// From `stopped` to the end of the first successful request that started after it and was
    /// answered by the new master.
    pub without_service: Duration,
    /// Requests that started after `stopped` and failed.
    pub failed_requests: usize,
}

/// Reads the outage after `stopped` from `samples`; `None` if service never came back.
pub fn outage(samples: &[Sample], stopped: Instant, new_master: Option<&str>) -> Option<Outage> {
    let back = samples.iter().find(|sample| {
        sample.started >= stopped
            && sample.ok()
            && new_master.is_none_or(|name| sample.answered_by.as_deref() == Some(name))
    })?;
    let failed_requests = samples
        .iter()
        .filter(|sample| {
            sample.started >= stopped && sample.started <= back.started && !sample.ok()
        })
        .count();
    Some(Outage {
        without_service: back.ended.saturating_duration_since(stopped),
        failed_requests,
    })
}

/// One `GET /` with `Connection: close`; the answering backend's name on a 2xx.
fn one_request(addr: SocketAddr, timeout: Duration) -> Result<String, Failure> {
    let mut stream = TcpStream::connect_timeout(&addr, timeout).map_err(|e| Failure::of(&e))?;
    stream
        .set_read_timeout(Some(timeout))
        .map_err(|e| Failure::of(&e))?;
    stream
        .set_write_timeout(Some(timeout))
        .map_err(|e| Failure::of(&e))?;
    let request = format!("GET / HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .map_err(|e| Failure::of(&e))?;
    let mut response = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(read) => {
                response.extend_from_slice(&chunk[..read]);
                if response.len() > MAX_ANSWER {
                    return Err(Failure::NotOk);
                }
            }
            Err(error) => return Err(Failure::of_read(&error, &response)),
        }
    }
    answered_by(&response)
}

/// [`one_request`] on tokio, without its own timeout (the caller bounds it).
async fn one_request_async(addr: SocketAddr) -> Result<String, Failure> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| Failure::of(&e))?;
    let request = format!("GET / HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| Failure::of(&e))?;
    let mut response = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        match stream.read(&mut chunk).await {
            Ok(0) => break,
            Ok(read) => {
                response.extend_from_slice(&chunk[..read]);
                if response.len() > MAX_ANSWER {
                    return Err(Failure::NotOk);
                }
            }
            Err(error) => return Err(Failure::of_read(&error, &response)),
        }
    }
    answered_by(&response)
}

/// Whether `response` holds a whole answer: its head, and as much body as its Content-Length
/// says (an answer without one is never known to be whole before the connection ends).
fn whole_answer(response: &[u8]) -> bool {
    let Some(head_end) = response.windows(4).position(|window| window == b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&response[..head_end]);
    let length = head.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.trim()
            .eq_ignore_ascii_case("content-length")
            .then(|| value.trim().parse::<usize>().ok())
            .flatten()
    });
    length.is_some_and(|length| response.len() - (head_end + 4) >= length)
}

/// An answer longer than this is not the page the loops ask for.
const MAX_ANSWER: usize = 1 << 20;

/// The backend's name (`X-Backend`, else `Server`) of a whole 2xx answer.
fn answered_by(response: &[u8]) -> Result<String, Failure> {
    if response.is_empty() {
        return Err(Failure::NoAnswer);
    }
    let text = String::from_utf8_lossy(response);
    let status_ok = text.starts_with("HTTP/1.1 2") || text.starts_with("HTTP/1.0 2");
    if !status_ok {
        return Err(Failure::NotOk);
    }
    let header = |name: &str| {
        text.lines()
            .take_while(|line| !line.is_empty())
            .find_map(|line| {
                let (key, value) = line.split_once(':')?;
                key.trim()
                    .eq_ignore_ascii_case(name)
                    .then(|| value.trim().to_owned())
            })
    };
    Ok(header("x-backend")
        .or_else(|| header("server"))
        .unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ANSWER: &[u8] =
        b"HTTP/1.1 200 OK\r\nx-backend: http2\r\ncontent-length: 5\r\nconnection: close\r\n\r\nhello";

    #[test]
    fn a_2xx_answer_names_its_backend_and_others_fail_with_their_kind() {
        assert_eq!(answered_by(ANSWER), Ok("http2".to_owned()));
        assert_eq!(
            answered_by(b"HTTP/1.1 503 Service Unavailable\r\n\r\n"),
            Err(Failure::NotOk)
        );
        assert_eq!(answered_by(b""), Err(Failure::NoAnswer));
    }

    #[test]
    fn a_reset_counts_as_after_the_answer_only_once_its_whole_body_arrived() {
        let reset = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        assert_eq!(Failure::of_read(&reset, ANSWER), Failure::ResetAfterAnswer);
        assert_eq!(
            Failure::of_read(&reset, &ANSWER[..ANSWER.len() - 1]),
            Failure::Reset
        );
        // Without a Content-Length only the connection's end tells the answer is whole.
        assert_eq!(
            Failure::of_read(&reset, b"HTTP/1.1 200 OK\r\n\r\nhello"),
            Failure::Reset
        );
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert_eq!(Failure::of(&refused), Failure::Refused);
        let timeout = std::io::Error::from(std::io::ErrorKind::WouldBlock);
        assert_eq!(Failure::of(&timeout), Failure::TimedOut);
    }
}
