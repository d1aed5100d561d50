//! `cargo xtask bench reload`: a config reload under load, Tandem against HAProxy and nginx
//! (Debian's packages) on the lab topology. Each proxy runs on lb1 with the configuration of
//! `bench proxy` (round robin over the project's echo server, keep-alive both sides, two
//! workers); its config alternates every second between set A (http1:80, http2:80) and set B
//! (set A and a third echo backend, `third` on http1:81) and is reloaded the way its operators
//! do it:
//! - Tandem: `tandem reload --socket DIR/tandem.sock`, which returns once the new config runs;
//! - HAProxy 2.6: master-worker mode (`-W`, master CLI on `-S`, `stats socket ... expose-fd
//!   listeners`); a reload is `haproxy -c` then SIGUSR2 to the master, as Debian's `systemctl
//!   reload haproxy` does. The master re-executes itself, the new worker takes the listening
//!   sockets over from the old one (the seamless reload: `-x sockpair@`, automatic in
//!   master-worker mode) and the old worker finishes its connections and leaves;
//! - nginx: `nginx -p DIR -c CONF -s reload` (SIGHUP to the master: new workers, the old ones
//!   finish gracefully).
//!
//! Meanwhile a bounded load generator of its own (std threads and sockets, no wrk: it has to
//! tell a connection closed by the proxy from a failed request) keeps [`CONNECTIONS`] kept-alive
//! HTTP/1.1 connections from the client host busy with `GET /size/1024`. A connection the proxy
//! closes (EOF or reset, or a `Connection: close` answer) is counted, and its request retried
//! once on a fresh connection, as browsers do for idempotent requests; a request fails when it
//! gets no 2xx, times out, or its retry fails too. After each reload to set B, fresh
//! connections poll until the third backend answers: the time to effect. The peak RSS of each
//! proxy's process tree (old workers included) is sampled during the run. Before that, each
//! proxy carries the same load for the same time without reloads, so that what the reloads
//! cost in throughput is told apart from the proxies' different speeds.
//!
//! The table is printed and written to docs/benchmarks.md (## Reload). Everything shares one
//! machine; the counts of closed connections and failed requests are the point, not the
//! absolute request rates.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::io::{self, BufReader, Read as _, Write as _};
use std::net::{SocketAddr, SocketAddrV4, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use tandem_lab::client::read_response;
use tandem_lab::{wait_for_tcp, EchoBackend, Host, Process, CLIENT, HTTP1, LB1};

use super::proxy::{self as bench_proxy, ratio, Contender, PORT};

/// Kept-alive connections of the load, one thread each.
const CONNECTIONS: usize = 32;
/// The body size the load asks for (`/size/N` of the echo server).
const BODY: usize = 1024;
/// Connect, read and write timeout of every request.
const IO_TIMEOUT: Duration = Duration::from_secs(2);
/// How often the config flips between set A and set B (and is reloaded).
const RELOAD_EVERY: Duration = Duration::from_secs(1);
/// How long the time-to-effect poll waits for the third backend.
const EFFECT_LIMIT: Duration = Duration::from_secs(5);
/// Pause between two time-to-effect polls (each on a fresh connection).
const EFFECT_POLL: Duration = Duration::from_millis(10);
/// Requests per poll connection: round robin over three backends answers from each of them
/// within three requests unless other traffic interleaves.
const PROBE_REQUESTS: usize = 3;
/// The third backend, on http1: its name (the echo server's `X-Backend`) and port.
const THIRD: &str = "third";
const THIRD_PORT: u16 = 81;
/// How often the proxy's memory is sampled.
const RSS_SAMPLE: Duration = Duration::from_millis(100);
/// Bounds of the load beyond its duration: requests per connection thread.
const MAX_REQUESTS_PER_THREAD: u64 = 10_000_000;
/// Pause after a failed request, so a refusing proxy is not hammered.
const FAILURE_PAUSE: Duration = Duration::from_millis(10);
/// Failures kept per thread with their time, for the report.
const FAILURES_KEPT: usize = 20;

/// What one contender's run measured.
#[derive(Debug, Default)]
struct Measured {
    load: LoadStats,
    reloads: Vec<Reload>,
    peak_rss_kib: u64,
    /// The same load for the same time just before, without reloads: what the reloads cost
    /// in throughput is `load.ok` against this.
    baseline: LoadStats,
}

/// The load's counts (one thread's, then summed).
#[derive(Debug, Default)]
struct LoadStats {
    ok: u64,
    failed: u64,
    /// Connections the proxy closed, by how: "EOF", "reset", "Connection: close", ...
    closed: BTreeMap<&'static str, u64>,
    /// 2xx answers by backend (the echo server's `X-Backend`).
    by_backend: BTreeMap<String, u64>,
    /// Failed requests by cause.
    failures: BTreeMap<String, u64>,
    /// The first failures with the second of the run they happened in.
    failure_times: Vec<(f64, String)>,
}

impl LoadStats {
    fn closed_total(&self) -> u64 {
        self.closed.values().sum()
    }

    fn close(&mut self, how: &'static str) {
        *self.closed.entry(how).or_default() += 1;
    }

    fn fail(&mut self, started: Instant, cause: String) {
        self.failed += 1;
        if self.failure_times.len() < FAILURES_KEPT {
            self.failure_times
                .push((started.elapsed().as_secs_f64(), cause.clone()));
        }
        *self.failures.entry(cause).or_default() += 1;
    }

    fn merge(&mut self, other: LoadStats) {
        self.ok += other.ok;
        self.failed += other.failed;
        for (how, n) in other.closed {
            *self.closed.entry(how).or_default() += n;
        }
        for (backend, n) in other.by_backend {
            *self.by_backend.entry(backend).or_default() += n;
        }
        for (cause, n) in other.failures {
            *self.failures.entry(cause).or_default() += n;
        }
        self.failure_times.extend(other.failure_times);
        self.failure_times.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
}

/// One reload: when (seconds into the run), to which set, how long the command took, how long
/// until the third backend answered a fresh connection (reloads to set B), or what failed.
#[derive(Debug)]
struct Reload {
    at: f64,
    to_b: bool,
    command: Duration,
    effect: Option<Duration>,
    error: Option<String>,
}

pub fn run(root: &Path, seconds: u64) -> anyhow::Result<()> {
    let setup = super::Setup::new(
        root,
        &["/usr/sbin/haproxy", "/usr/sbin/nginx"],
        "haproxy and nginx-light",
    )?;
    let (tandem, lab) = (&setup.tandem, &setup.lab);
    let run_for = Duration::from_secs(seconds.max(2));
    let [http1, http2] = setup.echo_backends()?;
    let third = EchoBackend::start_with_binary(&setup.echo, lab.host(HTTP1), THIRD_PORT, THIRD)?;
    let backends = [http1, http2, third];
    let set_b: Vec<SocketAddrV4> = backends.iter().map(EchoBackend::addr).collect();
    let set_a = &set_b[..2];
    let lb1 = lab.host(LB1);
    let client = lab.host(CLIENT);
    let listen = SocketAddrV4::new(lb1.ip, PORT);

    let mut results: Vec<(Contender, Measured)> = Vec::new();
    for proxy in Contender::ALL {
        eprintln!("bench reload: {}", proxy.name());
        let dir = lab
            .work_dir()
            .join(format!("bench-reload-{}", proxy.name().to_lowercase()));
        fs::create_dir_all(&dir)?;
        let mut process = start(proxy, tandem, lb1, &dir, listen, set_a)?;
        wait_for_tcp(client, SocketAddr::V4(listen), Duration::from_secs(10))
            .with_context(|| format!("{} does not accept on {listen}", proxy.name()))?;
        let contender = Running {
            proxy,
            tandem,
            lb1,
            dir: &dir,
            listen,
            pid: process.pid(),
        };
        let baseline = measure(&contender, client, [set_a, &set_b], run_for, false).load;
        let mut measured = measure(&contender, client, [set_a, &set_b], run_for, true);
        measured.baseline = baseline;
        if proxy == Contender::HaProxy {
            // Which workers are left (old ones finishing their connections), for the log.
            match master_cli(&dir, "show proc") {
                Ok(procs) => eprintln!("  HAProxy master CLI `show proc`:\n{procs}"),
                Err(error) => eprintln!("  HAProxy master CLI: {error:#}"),
            }
        }
        process
            .terminate(Duration::from_secs(5))
            .with_context(|| format!("stopping {}", proxy.name()))?;
        report(proxy, &measured);
        results.push((proxy, measured));
    }
    drop(backends);

    let table = render(&results, run_for);
    println!("\n{table}");
    crate::bench::report::replace_section(root, "Reload", &table)?;
    Ok(())
}

/// A running contender: what reloading it needs.
struct Running<'a> {
    proxy: Contender,
    tandem: &'a Path,
    lb1: &'a Host,
    dir: &'a Path,
    listen: SocketAddrV4,
    /// The process started (HAProxy's and nginx's master).
    pid: u32,
}

/// Starts `proxy` on lb1: Tandem and nginx as `bench proxy` does, HAProxy in master-worker mode.
fn start(
    proxy: Contender,
    tandem: &Path,
    lb1: &Host,
    dir: &Path,
    listen: SocketAddrV4,
    backends: &[SocketAddrV4],
) -> anyhow::Result<Process> {
    if proxy != Contender::HaProxy {
        return bench_proxy::start(proxy, tandem, lb1, dir, listen, backends);
    }
    let log = fs::File::create(dir.join("stderr.log"))?;
    let config = write_config(proxy, lb1, dir, listen, backends)?;
    let mut command = lb1.command("/usr/sbin/haproxy");
    command
        .args(["-W", "-db", "-S"])
        .arg(format!("{},mode,600", dir.join("master.sock").display()))
        .arg("-f")
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log);
    lb1.spawn(command)
}

/// Writes `proxy`'s config for `backends`: `bench proxy`'s, and for HAProxy an admin stats
/// socket that exposes the listeners (what its seamless reload documentation asks for).
fn write_config(
    proxy: Contender,
    lb1: &Host,
    dir: &Path,
    listen: SocketAddrV4,
    backends: &[SocketAddrV4],
) -> anyhow::Result<PathBuf> {
    if proxy != Contender::HaProxy {
        return bench_proxy::write_config(proxy, lb1, dir, listen, backends);
    }
    let (path, text) = bench_proxy::config_text(proxy, lb1, dir, listen, backends);
    let stats = format!(
        "global\n    stats socket {} mode 600 level admin expose-fd listeners\n",
        dir.join("haproxy.sock").display()
    );
    let text = text.replacen("global\n", &stats, 1);
    fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// Rewrites the config for `backends` and reloads the contender; returns the wall time of the
/// reload command.
fn reload(c: &Running, backends: &[SocketAddrV4]) -> anyhow::Result<Duration> {
    let config = write_config(c.proxy, c.lb1, c.dir, c.listen, backends)?;
    let started = Instant::now();
    match c.proxy {
        Contender::Tandem => {
            let mut command = Command::new(c.tandem);
            command
                .args(["reload", "--socket"])
                .arg(c.dir.join("tandem.sock"));
            output_checked(&mut command)?;
        }
        Contender::HaProxy => {
            // Debian's ExecReload: check the file, then SIGUSR2 to the master.
            let mut check = Command::new("/usr/sbin/haproxy");
            check.args(["-c", "-q", "-f"]).arg(&config);
            output_checked(&mut check)?;
            let pid = libc::pid_t::try_from(c.pid).context("HAProxy's pid")?;
            // SAFETY: kill(2) on the master we started and have not reaped (it runs until
            // `terminate` after the measurement).
            if unsafe { libc::kill(pid, libc::SIGUSR2) } != 0 {
                bail!(
                    "SIGUSR2 to HAProxy's master {pid}: {}",
                    io::Error::last_os_error()
                );
            }
        }
        Contender::Nginx => {
            let mut command = Command::new("/usr/sbin/nginx");
            command
                .arg("-p")
                .arg(c.dir)
                .arg("-c")
                .arg(&config)
                .args(["-s", "reload"]);
            output_checked(&mut command)?;
        }
    }
    Ok(started.elapsed())
}

/// Runs `command` to completion; fails with its output unless it exits 0.
fn output_checked(command: &mut Command) -> anyhow::Result<()> {
    let shown = format!("{command:?}");
    let output = command
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("starting {shown}"))?;
    if !output.status.success() {
        bail!(
            "{shown} failed ({}): {}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout).trim(),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

/// One command on HAProxy's master CLI; returns its answer.
fn master_cli(dir: &Path, command: &str) -> anyhow::Result<String> {
    let path = dir.join("master.sock");
    let mut stream =
        UnixStream::connect(&path).with_context(|| format!("connecting to {}", path.display()))?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.write_all(format!("{command}\n").as_bytes())?;
    // The master CLI answers and closes once our side is shut.
    stream.shutdown(std::net::Shutdown::Write)?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    Ok(answer)
}

/// The load, the reloads and the memory samples of one contender, all bounded by `run_for`
/// (plus the I/O timeouts and the last time-to-effect poll).
fn measure(
    c: &Running,
    client: &Host,
    [set_a, set_b]: [&[SocketAddrV4]; 2],
    run_for: Duration,
    reloading: bool,
) -> Measured {
    let started = Instant::now();
    let deadline = started + run_for;
    let stop_sampling = AtomicBool::new(false);
    thread::scope(|scope| {
        let loads: Vec<_> = (0..CONNECTIONS)
            .map(|_| scope.spawn(|| load_connection(client, c.listen, started, deadline)))
            .collect();
        let sampler = scope.spawn(|| {
            let mut peak = 0;
            // Bounded by the stop flag and, should the flag never come, by time.
            while !stop_sampling.load(Ordering::Relaxed)
                && started.elapsed() < run_for + EFFECT_LIMIT + Duration::from_secs(10)
            {
                peak = peak.max(crate::bench::process_tree::kib(
                    c.pid,
                    crate::bench::process_tree::Memory::Resident,
                ));
                thread::sleep(RSS_SAMPLE);
            }
            peak
        });

        let mut reloads = Vec::new();
        for n in 1u32.. {
            let at = started + RELOAD_EVERY * n;
            if !reloading || at >= deadline {
                break;
            }
            if let Some(wait) = at.checked_duration_since(Instant::now()) {
                thread::sleep(wait);
            }
            let to_b = n % 2 == 1;
            let since = Instant::now();
            let mut record = Reload {
                at: started.elapsed().as_secs_f64(),
                to_b,
                command: Duration::ZERO,
                effect: None,
                error: None,
            };
            match reload(c, if to_b { set_b } else { set_a }) {
                Ok(took) => {
                    record.command = took;
                    if to_b {
                        record.effect = time_to_effect(client, c.listen, since);
                    }
                }
                Err(error) => record.error = Some(format!("{error:#}")),
            }
            eprintln!(
                "  reload {n} at {:.2}s to set {}: command {:.1} ms{}{}",
                record.at,
                if to_b { "B" } else { "A" },
                ms(record.command),
                match (to_b, record.effect) {
                    (false, _) => String::new(),
                    (true, Some(effect)) =>
                        format!(", third backend answers after {:.1} ms", ms(effect)),
                    (true, None) => format!(", third backend not seen within {EFFECT_LIMIT:?}"),
                },
                record
                    .error
                    .as_deref()
                    .map(|e| format!(", FAILED: {e}"))
                    .unwrap_or_default(),
            );
            reloads.push(record);
        }

        let mut load = LoadStats::default();
        for handle in loads {
            match handle.join() {
                Ok(stats) => load.merge(stats),
                Err(_) => load.fail(started, "load thread panicked".to_owned()),
            }
        }
        stop_sampling.store(true, Ordering::Relaxed);
        let peak_rss_kib = sampler.join().unwrap_or(0);
        Measured {
            load,
            reloads,
            peak_rss_kib,
            baseline: LoadStats::default(),
        }
    })
}

/// Why a request got no answer.
#[derive(Debug)]
enum Failure {
    /// The proxy closed the connection (EOF, reset, broken pipe) before the whole answer.
    Closed(&'static str),
    TimedOut,
    Other(String),
}

impl From<io::Error> for Failure {
    fn from(error: io::Error) -> Failure {
        match error.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => Failure::TimedOut,
            io::ErrorKind::UnexpectedEof => Failure::Closed("EOF"),
            io::ErrorKind::ConnectionReset => Failure::Closed("reset"),
            io::ErrorKind::ConnectionAborted => Failure::Closed("aborted"),
            io::ErrorKind::BrokenPipe => Failure::Closed("broken pipe"),
            _ => Failure::Other(error.to_string()),
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Closed(how) => write!(f, "connection closed ({how})"),
            Failure::TimedOut => write!(f, "timed out ({IO_TIMEOUT:?})"),
            Failure::Other(what) => f.write_str(what),
        }
    }
}

/// What the load needs of an answer.
#[derive(Debug)]
struct Response {
    status: u16,
    /// The echo server's `X-Backend`.
    backend: String,
    /// The proxy said `Connection: close` (or HTTP/1.0 without keep-alive).
    close: bool,
}

/// One load connection: requests back to back until `deadline` (or the request bound).
fn load_connection(
    client: &Host,
    target: SocketAddrV4,
    started: Instant,
    deadline: Instant,
) -> LoadStats {
    let request = format!("GET /size/{BODY} HTTP/1.1\r\nHost: {target}\r\n\r\n");
    let mut stats = LoadStats::default();
    let mut conn = None;
    for _ in 0..MAX_REQUESTS_PER_THREAD {
        if Instant::now() >= deadline {
            break;
        }
        let attempt = |conn: &mut Option<BufReader<TcpStream>>, stats: &mut LoadStats| {
            request_on(client, target, conn, request.as_bytes(), stats)
        };
        let cause = match attempt(&mut conn, &mut stats) {
            Ok(()) => continue,
            Err(Failure::Closed(how)) => {
                // Closed under the request: count it and retry once on a fresh connection.
                stats.close(how);
                match attempt(&mut conn, &mut stats) {
                    Ok(()) => continue,
                    Err(Failure::Closed(how)) => {
                        stats.close(how);
                        format!("retry: connection closed ({how})")
                    }
                    Err(failure) => format!("retry: {failure}"),
                }
            }
            Err(failure) => failure.to_string(),
        };
        stats.fail(started, cause);
        thread::sleep(FAILURE_PAUSE);
    }
    stats
}

/// One request on `conn`, on a fresh connection if there is none. An answer is counted (2xx
/// or a failed request); `conn` is dropped when the proxy closes it or on any error.
fn request_on(
    client: &Host,
    target: SocketAddrV4,
    conn: &mut Option<BufReader<TcpStream>>,
    request: &[u8],
    stats: &mut LoadStats,
) -> Result<(), Failure> {
    let reader = match conn {
        Some(reader) => reader,
        None => conn.insert(connect(client, target)?),
    };
    let response = exchange(reader, request);
    let response = match response {
        Ok(response) => response,
        Err(failure) => {
            *conn = None;
            return Err(failure);
        }
    };
    if response.close {
        stats.close("Connection: close");
        *conn = None;
    }
    if (200..300).contains(&response.status) {
        stats.ok += 1;
        *stats.by_backend.entry(response.backend).or_default() += 1;
        Ok(())
    } else {
        Err(Failure::Other(format!(
            "status {} (backend {:?})",
            response.status, response.backend
        )))
    }
}

/// A fresh connection from the client host (the socket stays in its namespace).
fn connect(client: &Host, target: SocketAddrV4) -> Result<BufReader<TcpStream>, Failure> {
    let stream = client
        .in_netns(|| TcpStream::connect_timeout(&SocketAddr::V4(target), IO_TIMEOUT))
        .map_err(|error| Failure::Other(format!("{error:#}")))?
        .map_err(|error| match Failure::from(error) {
            Failure::Closed(how) => Failure::Other(format!("connect: {how}")),
            Failure::Other(what) => Failure::Other(format!("connect: {what}")),
            Failure::TimedOut => Failure::TimedOut,
        })?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    stream.set_nodelay(true)?;
    Ok(BufReader::with_capacity(16 * 1024, stream))
}

/// Sends `request` and reads the whole answer.
fn exchange(conn: &mut BufReader<TcpStream>, request: &[u8]) -> Result<Response, Failure> {
    conn.get_mut().write_all(request)?;
    let response = read_response(conn)?;
    Ok(Response {
        status: response.status,
        backend: response.header("x-backend").unwrap_or_default().to_owned(),
        close: !response.keep_alive,
    })
}

/// From `since` (the start of a reload to set B) until a request on a fresh connection is
/// answered by the third backend; `None` if that does not happen within [`EFFECT_LIMIT`].
fn time_to_effect(client: &Host, target: SocketAddrV4, since: Instant) -> Option<Duration> {
    let request = format!("GET /size/0 HTTP/1.1\r\nHost: {target}\r\n\r\n");
    while since.elapsed() < EFFECT_LIMIT {
        if let Ok(mut conn) = connect(client, target) {
            for _ in 0..PROBE_REQUESTS {
                match exchange(&mut conn, request.as_bytes()) {
                    Ok(response) if response.backend == THIRD => return Some(since.elapsed()),
                    Ok(response) if !response.close => {}
                    _ => break,
                }
            }
        }
        thread::sleep(EFFECT_POLL);
    }
    None
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

fn median(mut values: Vec<f64>) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    Some(if values.len().is_multiple_of(2) {
        (values[mid - 1] + values[mid]) / 2.0
    } else {
        values[mid]
    })
}

/// Prints one contender's details (answers by backend, closes and failures) to stderr.
fn report(proxy: Contender, m: &Measured) {
    let load = &m.load;
    eprintln!(
        "  {}: {} requests OK, {} failed, {} connections closed by the proxy {:?}, peak RSS {:.1} MiB",
        proxy.name(),
        load.ok,
        load.failed,
        load.closed_total(),
        load.closed,
        m.peak_rss_kib as f64 / 1024.0
    );
    eprintln!(
        "  without reloads: {} requests OK, {} failed, {} connections closed by the proxy",
        m.baseline.ok,
        m.baseline.failed,
        m.baseline.closed_total()
    );
    eprintln!("  answers by backend: {:?}", load.by_backend);
    for (cause, n) in &load.failures {
        eprintln!("  failed: {n} x {cause}");
    }
    for (at, cause) in load.failure_times.iter().take(FAILURES_KEPT) {
        eprintln!("    at {at:.3}s: {cause}");
    }
}

/// The figures of one contender's table row.
struct Row {
    reloads: String,
    ok: u64,
    baseline_ok: u64,
    failed: u64,
    closed: u64,
    command_ms: Option<f64>,
    effect_ms: Option<f64>,
    rss_mib: f64,
}

fn row(m: &Measured) -> Row {
    let done: Vec<&Reload> = m.reloads.iter().filter(|r| r.error.is_none()).collect();
    let to_b = done.iter().filter(|r| r.to_b).count();
    let effects: Vec<f64> = done.iter().filter_map(|r| r.effect.map(ms)).collect();
    let mut reloads = if done.len() == m.reloads.len() {
        done.len().to_string()
    } else {
        format!(
            "{} of {} (failed: {})",
            done.len(),
            m.reloads.len(),
            m.reloads.len() - done.len()
        )
    };
    if effects.len() < to_b {
        let _ = write!(
            reloads,
            "; third backend unseen after {} of {to_b}",
            to_b - effects.len()
        );
    }
    Row {
        reloads,
        ok: m.load.ok,
        baseline_ok: m.baseline.ok,
        failed: m.load.failed,
        closed: m.load.closed_total(),
        command_ms: median(done.iter().map(|r| ms(r.command)).collect()),
        effect_ms: median(effects),
        rss_mib: m.peak_rss_kib as f64 / 1024.0,
    }
}

fn render(results: &[(Contender, Measured)], run_for: Duration) -> String {
    let cpus = thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let rows: Vec<(Contender, Row)> = results.iter().map(|(p, m)| (*p, row(m))).collect();
    let find = |proxy: Contender| rows.iter().find(|(p, _)| *p == proxy).map(|(_, r)| r);
    let reference = |proxy: Contender, pick: fn(&Row) -> Option<f64>| find(proxy).and_then(pick);
    let optional = |value: Option<f64>| value.map_or("-".to_owned(), |v| format!("{v:.1}"));
    let ratio_to = |value: Option<f64>, reference: Option<f64>| match (value, reference) {
        (Some(v), Some(r)) if r > 0.0 => format!("{:.2}", ratio(v, r)),
        _ => "-".to_owned(),
    };

    let mut table = format!(
        "`cargo xtask bench reload`: a config reload under load. {CONNECTIONS} kept-alive \
         HTTP/1.1 connections from the client host send `GET /size/{BODY}` back to back for \
         {secs}s to a proxy on lb1, configured as in the Proxy section (round robin, keep-alive \
         both sides, 2 workers), while its config alternates every second between two echo \
         backends (set A) and three (set B) and is reloaded as its operators do:\n\n\
         - Tandem: `tandem reload` over its control socket, which returns once the new config \
         runs; open connections stay and their next request follows the new config.\n\
         - HAProxy 2.6 in master-worker mode: `haproxy -c`, then SIGUSR2 to the master, as \
         Debian's `systemctl reload haproxy` does. This is its seamless reload: the new worker \
         takes the listening sockets over (`-x sockpair@`, `expose-fd listeners`) and the old \
         one finishes its connections, then exits.\n\
         - nginx: `nginx -s reload` (SIGHUP to the master): new workers start, the old ones \
         finish gracefully.\n\n\
         HAProxy's and nginx's commands return once the signal is sent (HAProxy's time includes \
         the `haproxy -c` check), Tandem's once the reload is applied, so the figure to compare \
         is the time to effect: from the start of a reload to set B until a request on a fresh \
         connection (polled every {poll} ms, up to {limit} s) is answered by the added backend. \
         Each proxy first carries the same load for {secs}s without reloads: \
         \"kept during reloads\" is its requests OK with reloads over that baseline. \
         A connection the proxy closes (EOF, reset or `Connection: close`) is counted and its \
         request retried once on a fresh connection, as browsers do; a request fails if it gets \
         no 2xx, times out ({timeout} s) or its retry fails too. Peak RSS: the proxy's process \
         tree (old workers included), sampled every {rss} ms. Load generator, backends and \
         proxy share the machine's {cpus} CPUs.\n\n\
         | proxy | reloads | requests OK | requests OK without reloads | kept during reloads | \
         failed requests | connections closed by the proxy | \
         reload command median ms | time to effect median ms | peak RSS MiB | \
         time to effect vs HAProxy | time to effect vs nginx | requests OK vs HAProxy | \
         requests OK vs nginx |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
        secs = run_for.as_secs(),
        poll = EFFECT_POLL.as_millis(),
        limit = EFFECT_LIMIT.as_secs(),
        timeout = IO_TIMEOUT.as_secs(),
        rss = RSS_SAMPLE.as_millis(),
    );
    let effect = |r: &Row| r.effect_ms;
    let ok = |r: &Row| Some(r.ok as f64);
    for (proxy, r) in &rows {
        let _ = writeln!(
            table,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.1} | {} | {} | {} | {} |",
            proxy.name(),
            r.reloads,
            r.ok,
            r.baseline_ok,
            ratio_to(Some(r.ok as f64), Some(r.baseline_ok as f64)),
            r.failed,
            r.closed,
            optional(r.command_ms),
            optional(r.effect_ms),
            r.rss_mib,
            ratio_to(r.effect_ms, reference(Contender::HaProxy, effect)),
            ratio_to(r.effect_ms, reference(Contender::Nginx, effect)),
            ratio_to(Some(r.ok as f64), reference(Contender::HaProxy, ok)),
            ratio_to(Some(r.ok as f64), reference(Contender::Nginx, ok)),
        );
    }
    table.push_str("\nConnections closed by the proxy and failed requests, by cause:\n\n");
    for (proxy, m) in results {
        let closed = if m.load.closed.is_empty() {
            "none".to_owned()
        } else {
            m.load
                .closed
                .iter()
                .map(|(how, n)| match *how {
                    "Connection: close" => format!("{n} `Connection: close`"),
                    how => format!("{n} {how}"),
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        let failed = if m.load.failures.is_empty() {
            "none".to_owned()
        } else {
            m.load
                .failures
                .iter()
                .map(|(cause, n)| format!("{n} {cause}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let reload_errors: Vec<&str> = m
            .reloads
            .iter()
            .filter_map(|r| r.error.as_deref())
            .collect();
        let reload_errors = match reload_errors.first() {
            Some(first) => format!(
                "; {} reload{} failed, the first: {first}",
                reload_errors.len(),
                if reload_errors.len() == 1 { "" } else { "s" }
            ),
            None => String::new(),
        };
        let _ = writeln!(
            table,
            "- {}: closed: {closed}; failed: {failed}{reload_errors}.",
            proxy.name()
        );
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_even_and_odd_counts() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(Vec::new()), None);
    }
}
