//! Hand-made HTTP for proxy tests: bytes a real client library would never send (smuggling
//! attempts, malformed heads, a client that trickles its head), sent over a plain TCP socket
//! from a lab host, and the proxy's answer read back as bytes.

use std::io::{BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::Context as _;

use crate::client::{read_response, HttpResponse};
use crate::lab::Host;

/// What came back on one connection.
#[derive(Debug, Clone)]
pub struct RawReply {
    pub bytes: Vec<u8>,
    /// The server closed the connection (as opposed to the read timing out).
    pub closed: bool,
    /// How long until the close or the timeout.
    pub elapsed: Duration,
}

impl RawReply {
    /// The status codes of every response in the reply, in order.
    pub fn statuses(&self) -> Vec<u16> {
        let needle = b"HTTP/1.1 ";
        let mut statuses = Vec::new();
        let mut at = 0;
        while let Some(offset) = self.bytes[at..]
            .windows(needle.len())
            .position(|w| w == needle)
        {
            let start = at + offset + needle.len();
            let code = self
                .bytes
                .get(start..start + 3)
                .and_then(|digits| std::str::from_utf8(digits).ok())
                .and_then(|digits| digits.parse().ok());
            if let Some(code) = code {
                statuses.push(code);
            }
            at = start;
        }
        statuses
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }
}

/// Sends `request` to `addr` from inside `host` and reads until the server closes the
/// connection or `timeout` passes.
pub fn exchange(
    host: &Host,
    addr: SocketAddr,
    request: &[u8],
    timeout: Duration,
) -> anyhow::Result<RawReply> {
    host.in_netns(|| -> anyhow::Result<RawReply> {
        let started = Instant::now();
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
            .with_context(|| format!("connecting to {addr}"))?;
        stream.write_all(request).context("sending the request")?;
        read_reply(&mut stream, started, timeout)
    })?
}

/// One keep-alive HTTP/1.1 connection from a lab host, for tests that must see the same
/// connection go on (e.g. across a reload): each [`KeepAlive::get`] is a request on it.
pub struct KeepAlive {
    stream: BufReader<TcpStream>,
}

impl KeepAlive {
    /// Connects from inside `host` (the socket stays in its namespace).
    pub fn connect(host: &Host, addr: SocketAddr) -> anyhow::Result<KeepAlive> {
        let stream = host
            .in_netns(|| TcpStream::connect_timeout(&addr, Duration::from_secs(5)))?
            .with_context(|| format!("connecting to {addr}"))?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        Ok(KeepAlive {
            stream: BufReader::new(stream),
        })
    }

    /// Sends `GET path` on the connection and reads the response (the lab's one reader,
    /// [`read_response`]). Fails if the server closed the connection.
    pub fn get(&mut self, path: &str) -> anyhow::Result<HttpResponse> {
        let request = format!("GET {path} HTTP/1.1\r\nHost: tandem-test\r\n\r\n");
        self.stream
            .get_mut()
            .write_all(request.as_bytes())
            .context("sending on the kept-alive connection")?;
        read_response(&mut self.stream).map_err(|error| match error.kind() {
            std::io::ErrorKind::UnexpectedEof => {
                anyhow::anyhow!("the server closed the kept-alive connection")
            }
            _ => anyhow::Error::new(error).context("reading the response"),
        })
    }
}

/// Sends `request` one byte every `pace` (a slowloris client) and reports how the server
/// reacted: whether it closed the connection, and when.
pub fn trickle(
    host: &Host,
    addr: SocketAddr,
    request: &[u8],
    pace: Duration,
    timeout: Duration,
) -> anyhow::Result<RawReply> {
    host.in_netns(|| -> anyhow::Result<RawReply> {
        let started = Instant::now();
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
            .with_context(|| format!("connecting to {addr}"))?;
        for byte in request {
            if started.elapsed() > timeout || stream.write_all(&[*byte]).is_err() {
                break;
            }
            thread::sleep(pace);
            // A closed connection shows as a read of 0 bytes (or a reset).
            stream
                .set_read_timeout(Some(Duration::from_millis(1)))
                .context("setting a read timeout")?;
            let mut probe = [0u8; 1024];
            match stream.read(&mut probe) {
                Ok(0) => {
                    return Ok(RawReply {
                        bytes: Vec::new(),
                        closed: true,
                        elapsed: started.elapsed(),
                    })
                }
                Ok(n) => {
                    let mut reply = read_reply(&mut stream, started, timeout)?;
                    reply.bytes.splice(0..0, probe[..n].iter().copied());
                    return Ok(reply);
                }
                Err(error)
                    if matches!(
                        error.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_reset) => {
                    return Ok(RawReply {
                        bytes: Vec::new(),
                        closed: true,
                        elapsed: started.elapsed(),
                    })
                }
            }
        }
        read_reply(&mut stream, started, timeout)
    })?
}

/// Reads what the server sends on `stream` until it closes the connection (a reset counts as a
/// close) or `timeout` has passed since `started`.
pub fn read_reply(
    stream: &mut TcpStream,
    started: Instant,
    timeout: Duration,
) -> anyhow::Result<RawReply> {
    let mut bytes = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        let left = timeout.saturating_sub(started.elapsed());
        if left.is_zero() {
            return Ok(RawReply {
                bytes,
                closed: false,
                elapsed: started.elapsed(),
            });
        }
        stream
            .set_read_timeout(Some(left))
            .context("setting a read timeout")?;
        match stream.read(&mut chunk) {
            Ok(0) => {
                return Ok(RawReply {
                    bytes,
                    closed: true,
                    elapsed: started.elapsed(),
                })
            }
            Ok(n) => bytes.extend_from_slice(&chunk[..n]),
            Err(error)
                if matches!(
                    error.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            // A reset after the answer counts as a close.
            Err(_) => {
                return Ok(RawReply {
                    bytes,
                    closed: true,
                    elapsed: started.elapsed(),
                })
            }
        }
    }
}

/// A backend that accepts connections (in the kernel) and never answers: what a hung
/// application server looks like to a proxy. Listens until dropped.
pub struct SilentBackend {
    _listener: TcpListener,
    pub addr: SocketAddr,
}

impl SilentBackend {
    pub fn start(host: &Host, port: u16) -> anyhow::Result<SilentBackend> {
        let addr = SocketAddr::from((host.ip, port));
        let listener = host
            .in_netns(move || TcpListener::bind(addr))?
            .with_context(|| format!("listening on {addr} on host {}", host.name))?;
        Ok(SilentBackend {
            _listener: listener,
            addr,
        })
    }
}

/// What a [`ScriptedBackend`] does with each request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Script {
    /// Answers with a head promising `length` body bytes, sends `sent` of them and then
    /// nothing more (a backend stuck in the middle of a body).
    StallAfter { length: usize, sent: usize },
    /// Answers with a head promising 1 GiB and sends it as fast as the proxy takes it.
    Endless,
    /// Answers `200 OK` with a short body after this long, then closes.
    Slow(Duration),
    /// Answers with a head promising `length` body bytes, sends `sent` of them and closes the
    /// connection (a backend that dies in the middle of a body).
    DieAfter { length: usize, sent: usize },
}

/// A backend that follows a [`Script`] on every connection and records when the proxy closed
/// each one (what the backend side of a timeout looks like). Each connection is served for
/// at most a minute; the listener lives until dropped.
pub struct ScriptedBackend {
    pub addr: SocketAddr,
    closed: std::sync::mpsc::Receiver<Instant>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// Requests being answered now, and the most there ever were at once.
    concurrency: std::sync::Arc<(
        std::sync::atomic::AtomicUsize,
        std::sync::atomic::AtomicUsize,
    )>,
}

/// The longest a scripted backend keeps one connection.
const SCRIPTED_CONNECTION_LIMIT: Duration = Duration::from_secs(60);

impl ScriptedBackend {
    pub fn start(host: &Host, port: u16, script: Script) -> anyhow::Result<ScriptedBackend> {
        use std::sync::atomic::{AtomicBool, Ordering};
        let addr = SocketAddr::from((host.ip, port));
        let listener = host
            .in_netns(move || TcpListener::bind(addr))?
            .with_context(|| format!("listening on {addr} on host {}", host.name))?;
        listener
            .set_nonblocking(true)
            .context("a non-blocking listener")?;
        let (closed_tx, closed) = std::sync::mpsc::channel();
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let stopped = std::sync::Arc::clone(&stop);
        let concurrency = std::sync::Arc::new((
            std::sync::atomic::AtomicUsize::new(0),
            std::sync::atomic::AtomicUsize::new(0),
        ));
        let counted = std::sync::Arc::clone(&concurrency);
        thread::spawn(move || {
            while !stopped.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let closed_tx = closed_tx.clone();
                        let counted = std::sync::Arc::clone(&counted);
                        thread::spawn(move || {
                            if let Some(when) = serve_script(stream, script, &counted) {
                                let _ = closed_tx.send(when);
                            }
                        });
                    }
                    Err(_) => thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        Ok(ScriptedBackend {
            addr,
            closed,
            stop,
            concurrency,
        })
    }

    /// The most requests this backend was answering at once.
    pub fn max_concurrent(&self) -> usize {
        self.concurrency.1.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Waits up to `timeout` for the proxy to close one of the connections; says when it did.
    pub fn wait_for_close(&self, timeout: Duration) -> Option<Instant> {
        self.closed.recv_timeout(timeout).ok()
    }
}

impl Drop for ScriptedBackend {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Serves one connection by `script`; returns when the proxy closed it (None: it was still
/// open at the time limit, or it carried no request).
fn serve_script(
    mut stream: TcpStream,
    script: Script,
    concurrency: &(
        std::sync::atomic::AtomicUsize,
        std::sync::atomic::AtomicUsize,
    ),
) -> Option<Instant> {
    let started = Instant::now();
    stream.set_nonblocking(false).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .ok()?;
    // The request head (the proxy sends it in one piece).
    let mut head = Vec::new();
    let mut chunk = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        if started.elapsed() > SCRIPTED_CONNECTION_LIMIT {
            return None;
        }
        match stream.read(&mut chunk) {
            // No request (a health check's connection): nothing to report.
            Ok(0) => return None,
            Ok(n) => head.extend_from_slice(&chunk[..n]),
            Err(_) => {}
        }
    }
    match script {
        Script::Slow(delay) => {
            use std::sync::atomic::Ordering::SeqCst;
            let now = concurrency.0.fetch_add(1, SeqCst) + 1;
            concurrency.1.fetch_max(now, SeqCst);
            thread::sleep(delay);
            concurrency.0.fetch_sub(1, SeqCst);
            let answer = "HTTP/1.1 200 OK\r\ncontent-length: 3\r\nconnection: close\r\n\r\nok\n";
            stream.write_all(answer.as_bytes()).ok()?;
            None
        }
        Script::DieAfter { length, sent } => {
            answer_partly(&mut stream, length, sent).ok()?;
            None
        }
        Script::StallAfter { length, sent } => {
            answer_partly(&mut stream, length, sent).ok()?;
            // Nothing more: wait for the proxy to give up on us.
            until_closed(started, || stream.read(&mut chunk))
        }
        Script::Endless => {
            let answer = "HTTP/1.1 200 OK\r\ncontent-length: 1073741824\r\n\r\n";
            stream.write_all(answer.as_bytes()).ok()?;
            stream
                .set_write_timeout(Some(Duration::from_millis(200)))
                .ok()?;
            let data = vec![b'x'; 64 * 1024];
            until_closed(started, || stream.write(&data))
        }
    }
}

/// A `200 OK` head promising `length` body bytes, and `sent` of them.
fn answer_partly(stream: &mut TcpStream, length: usize, sent: usize) -> std::io::Result<()> {
    let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {length}\r\n\r\n");
    stream.write_all(head.as_bytes())?;
    stream.write_all(&vec![b'x'; sent])
}

/// Repeats `step` (a read or a write on the proxy's connection, with a socket timeout) until
/// the proxy closes the connection, and says when; `None` if it was still open at the limit.
fn until_closed(
    started: Instant,
    mut step: impl FnMut() -> std::io::Result<usize>,
) -> Option<Instant> {
    while started.elapsed() < SCRIPTED_CONNECTION_LIMIT {
        match step() {
            Ok(0) => return Some(Instant::now()),
            Ok(_) => {}
            Err(error)
                if matches!(
                    error.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return Some(Instant::now()),
        }
    }
    None
}
