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
                        let answered_by = one_request(addr, settings.timeout);
                        let sample = Sample {
                            started,
                            ended: Instant::now(),
                            answered_by,
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
                        let answered_by =
                            tokio::time::timeout(settings.timeout, one_request_async(addr))
                                .await
                                .ok()
                                .flatten();
                        let sample = Sample {
                            started,
                            ended: Instant::now(),
                            answered_by,
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
fn one_request(addr: SocketAddr, timeout: Duration) -> Option<String> {
    let mut stream = TcpStream::connect_timeout(&addr, timeout).ok()?;
    stream.set_read_timeout(Some(timeout)).ok()?;
    stream.set_write_timeout(Some(timeout)).ok()?;
    let request = format!("GET / HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).ok()?;
    let mut response = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(read) => {
                response.extend_from_slice(&chunk[..read]);
                if response.len() > MAX_ANSWER {
                    return None;
                }
            }
            Err(_) => return None,
        }
    }
    answered_by(&response)
}

/// [`one_request`] on tokio, without its own timeout (the caller bounds it).
async fn one_request_async(addr: SocketAddr) -> Option<String> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    let request = format!("GET / HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut response = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        match stream.read(&mut chunk).await {
            Ok(0) => break,
            Ok(read) => {
                response.extend_from_slice(&chunk[..read]);
                if response.len() > MAX_ANSWER {
                    return None;
                }
            }
            Err(_) => return None,
        }
    }
    answered_by(&response)
}

/// An answer longer than this is not the page the loops ask for.
const MAX_ANSWER: usize = 1 << 20;

/// The backend's name (`X-Backend`, else `Server`) of a whole 2xx answer; `None` otherwise.
fn answered_by(response: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(response);
    let status_ok = text.starts_with("HTTP/1.1 2") || text.starts_with("HTTP/1.0 2");
    if !status_ok {
        return None;
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
    Some(
        header("x-backend")
            .or_else(|| header("server"))
            .unwrap_or_default(),
    )
}
