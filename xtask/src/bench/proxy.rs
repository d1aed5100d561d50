//! `cargo xtask bench proxy`: Tandem's L7 proxy against HAProxy and nginx (Debian's packages)
//! on the lab topology, configured alike: the same two backends (the project's echo server on
//! http1 and http2, `/size/N` bodies), round robin, keep-alive to clients and to backends, two
//! worker threads or processes each, no access log, X-Forwarded-For/Proto/Port added. The three
//! run side by side on lb1 (each on its own port) and are loaded in turn from the client host:
//! each cell (HTTP/1.1 with wrk: 1 KiB and 100 KiB bodies at 64 and 256 connections; HTTP/2
//! with h2load: 1 KiB and 100 KiB) is run for every proxy, interleaved, and the whole round is
//! repeated (3 times by default, the proxies' order rotated each time), so a noisy moment of the
//! shared machine hits all of them alike. Per run: requests/s, p99 latency, CPU time of the
//! proxy's processes per request, and its peak RSS during that run alone (the peak is reset
//! before it). Before any load, each proxy holds 10,000 idle keep-alive client connections
//! (each has made one request): the RSS they add, per connection.
//!
//! The table (median and min-max of the repetitions, ratios of medians to HAProxy and nginx) is
//! printed and written to docs/benchmarks.md (## Proxy).

use std::fmt::Write as _;
use std::fs;
use std::net::{SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context as _};
use tandem_lab::client::read_response;
use tandem_lab::wrk::milliseconds;
use tandem_lab::{wait_for_tcp, EchoBackend, Host, Process, CLIENT, LB1};

/// The proxies' port on lb1.
pub(crate) const PORT: u16 = 8080;
/// Response bodies measured (the echo server's `/size/N`).
const BODIES: [(usize, &str); 2] = [(1024, "1 KiB"), (100 * 1024, "100 KiB")];
const CONNECTIONS: [u32; 2] = [64, 256];
/// HTTP/2 (cleartext, prior knowledge) with h2load: connections, each with this many streams.
const H2_CONNECTIONS: u32 = 64;
const H2_STREAMS: u32 = 10;
/// Load before the measured runs of each proxy (connections, pools, caches warm).
const WARM_UP: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Contender {
    Tandem,
    HaProxy,
    Nginx,
}

impl Contender {
    pub(crate) const ALL: [Contender; 3] =
        [Contender::Tandem, Contender::HaProxy, Contender::Nginx];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Contender::Tandem => "Tandem",
            Contender::HaProxy => "HAProxy",
            Contender::Nginx => "nginx",
        }
    }
}

/// One load run's figures.
#[derive(Debug, Clone, Copy, Default)]
struct Measured {
    requests_per_second: f64,
    /// Requests completed (for CPU per request).
    requests: u64,
    p50_ms: f64,
    p99_ms: f64,
    errors: u64,
}

/// What one run of one cell gave for one proxy.
#[derive(Debug, Clone, Copy, Default)]
struct Run {
    load: Measured,
    /// CPU time of the proxy's processes per request, in microseconds.
    cpu_us_per_request: f64,
    peak_rss_kib: u64,
}

/// A cell of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cell {
    Http1 { size: usize, connections: u32 },
    Http2 { size: usize },
}

impl Cell {
    fn all() -> Vec<Cell> {
        let mut cells = Vec::new();
        for (size, _) in BODIES {
            for connections in CONNECTIONS {
                cells.push(Cell::Http1 { size, connections });
            }
        }
        for (size, _) in BODIES {
            cells.push(Cell::Http2 { size });
        }
        cells
    }

    fn label(self) -> String {
        let body = |size| {
            BODIES
                .iter()
                .find(|(s, _)| *s == size)
                .map_or("?", |(_, label)| *label)
        };
        match self {
            Cell::Http1 { size, connections } => {
                format!("HTTP/1.1 {} x {connections}", body(size))
            }
            Cell::Http2 { size } => {
                format!("HTTP/2 {} x {H2_CONNECTIONS}x{H2_STREAMS}", body(size))
            }
        }
    }
}

/// Idle keep-alive client connections held for the memory row.
const IDLE_CONNECTIONS: usize = 9_000;
/// Each proxy's port on lb1 (nginx's cleartext HTTP/2 port is the next one).
fn port_of(proxy: Contender) -> u16 {
    match proxy {
        Contender::Tandem => PORT,
        Contender::HaProxy => PORT + 1,
        Contender::Nginx => PORT + 2,
    }
}

/// `only`: the cells whose label contains it (see [`Cell::label`]); then the idle row is
/// skipped and the docs are left as they are.
pub fn run(root: &Path, seconds: u64, repetitions: u32, only: Option<&str>) -> anyhow::Result<()> {
    let cells: Vec<Cell> = Cell::all()
        .into_iter()
        .filter(|cell| only.is_none_or(|only| cell.label().contains(only)))
        .collect();
    if cells.is_empty() {
        let labels: Vec<String> = Cell::all().into_iter().map(Cell::label).collect();
        bail!(
            "no cell matches --only {:?}; the cells are: {}",
            only.unwrap_or_default(),
            labels.join(", ")
        );
    }
    let setup = super::Setup::new(
        root,
        &[
            "/usr/bin/wrk",
            "/usr/bin/h2load",
            "/usr/sbin/haproxy",
            "/usr/sbin/nginx",
        ],
        "wrk, nghttp2-client, haproxy and nginx-light",
    )?;
    let tandem = &setup.tandem;
    let lab = &setup.lab;
    let run_for = Duration::from_secs(seconds.max(1));
    let repetitions = repetitions.max(1);
    let backends = setup.echo_backends()?;
    let backend_addrs: Vec<SocketAddrV4> = backends.iter().map(EchoBackend::addr).collect();
    let lb1 = lab.host(LB1);
    let client = lab.host(CLIENT);

    // All three run at once; each is idle while another is measured.
    let mut processes = Vec::new();
    let mut idle = Vec::new();
    for proxy in Contender::ALL {
        let listen = SocketAddrV4::new(lb1.ip, port_of(proxy));
        let dir = lab
            .work_dir()
            .join(format!("bench-{}", proxy.name().to_lowercase()));
        fs::create_dir_all(&dir)?;
        let process = start(proxy, tandem, lb1, &dir, listen, &backend_addrs)?;
        wait_for_tcp(client, SocketAddr::V4(listen), Duration::from_secs(10))
            .with_context(|| format!("{} does not accept on {listen}", proxy.name()))?;
        // The memory row first, before any load has grown the allocators' caches.
        if only.is_some() {
            processes.push((proxy, listen, process));
            continue;
        }
        match idle_rss_per_connection(client, listen, process.pid()) {
            Ok(per_connection) => {
                eprintln!(
                    "bench proxy: {} holds {IDLE_CONNECTIONS} idle connections at \
                     {per_connection:.2} KiB each",
                    proxy.name()
                );
                idle.push((proxy, Ok(per_connection)));
            }
            Err(error) => {
                let logs: String = ["stderr.log", "error.log"]
                    .iter()
                    .filter_map(|name| fs::read_to_string(dir.join(name)).ok())
                    .collect();
                eprintln!(
                    "bench proxy: {} could not hold {IDLE_CONNECTIONS} idle connections: \
                     {error:#}\n{logs}",
                    proxy.name()
                );
                idle.push((proxy, Err(format!("{error:#}"))));
            }
        }
        processes.push((proxy, listen, process));
    }
    for (_, listen, _) in &processes {
        wrk(client, *listen, BODIES[0].0, 64, WARM_UP)?;
    }

    let ticks = crate::bench::process_tree::ticks_per_second();
    let mut runs: Vec<(Cell, Contender, Run)> = Vec::new();
    for repetition in 0..repetitions {
        for &cell in &cells {
            // The order rotates each repetition: no proxy always goes first after a change.
            for i in 0..processes.len() {
                let (proxy, listen, process) =
                    &processes[(i + repetition as usize) % processes.len()];
                let pid = process.pid();
                crate::bench::process_tree::reset_peak(pid);
                let cpu_before = crate::bench::process_tree::cpu_ticks(pid);
                let load = match cell {
                    Cell::Http1 { size, connections } => {
                        wrk(client, *listen, size, connections, run_for)?
                    }
                    Cell::Http2 { size } => {
                        let target = match proxy {
                            Contender::Nginx => SocketAddrV4::new(*listen.ip(), listen.port() + 1),
                            Contender::Tandem | Contender::HaProxy => *listen,
                        };
                        h2load(client, target, size, run_for)?
                    }
                };
                let cpu_seconds =
                    (crate::bench::process_tree::cpu_ticks(pid) - cpu_before) as f64 / ticks;
                let run = Run {
                    load,
                    cpu_us_per_request: cpu_seconds * 1e6 / load.requests.max(1) as f64,
                    peak_rss_kib: crate::bench::process_tree::kib(
                        pid,
                        crate::bench::process_tree::Memory::PeakResident,
                    ),
                };
                eprintln!(
                    "  [{}/{repetitions}] {} {}: {:.0} req/s, p99 {:.2} ms, {:.1} µs CPU/req, peak {:.1} MiB",
                    repetition + 1,
                    cell.label(),
                    proxy.name(),
                    load.requests_per_second,
                    load.p99_ms,
                    run.cpu_us_per_request,
                    run.peak_rss_kib as f64 / 1024.0
                );
                runs.push((cell, *proxy, run));
            }
        }
    }
    for (proxy, _, mut process) in processes {
        process
            .terminate(Duration::from_secs(5))
            .with_context(|| format!("stopping {}", proxy.name()))?;
    }
    drop(backends);

    let mut table = render(&runs, &idle, run_for, repetitions);
    println!("\n{table}");
    if only.is_none() {
        write_chart(&root.join("docs").join(CHART_FILE), &runs)?;
        table.push_str(&format!(
            "\n![Requests per second per cell and proxy, median with min-max]({CHART_FILE})\n"
        ));
        crate::bench::report::replace_section(root, "Proxy", &table)?;
    }
    Ok(())
}

/// The chart beside the table in docs/.
const CHART_FILE: &str = "bench-proxy.svg";

/// Requests per second per cell, a bar per proxy (median, min-max whisker).
fn write_chart(path: &Path, runs: &[(Cell, Contender, Run)]) -> anyhow::Result<()> {
    let cells: Vec<Cell> = Cell::all()
        .into_iter()
        .filter(|cell| runs.iter().any(|(c, _, _)| c == cell))
        .collect();
    let series = Contender::ALL
        .iter()
        .map(|&proxy| {
            let figures: Vec<Option<(f64, f64, f64)>> = cells
                .iter()
                .map(|&cell| {
                    let rates: Vec<f64> = runs
                        .iter()
                        .filter(|(c, p, _)| *c == cell && *p == proxy)
                        .map(|(_, _, run)| run.load.requests_per_second / 1000.0)
                        .collect();
                    (!rates.is_empty()).then(|| spread(rates))
                })
                .collect();
            crate::bench::chart::Series {
                name: proxy.name().to_owned(),
                medians: figures.iter().map(|f| f.map(|f| f.0)).collect(),
                ranges: figures.iter().map(|f| f.map(|f| (f.1, f.2))).collect(),
            }
        })
        .collect::<Vec<_>>();
    let labels: Vec<String> = cells.iter().map(|cell| cell.label()).collect();
    crate::bench::chart::grouped_bars(
        path,
        "cargo xtask bench proxy: requests per second",
        "thousand requests/s",
        &labels,
        &series,
    )
}

/// Opens [`IDLE_CONNECTIONS`] keep-alive connections from `client` to `listen`, each making
/// one request, holds them, and returns the RSS the proxy (`pid` and its children) gained, in
/// KiB per connection.
fn idle_rss_per_connection(client: &Host, listen: SocketAddrV4, pid: u32) -> anyhow::Result<f64> {
    use std::io::Write as _;
    let before = crate::bench::process_tree::kib(pid, crate::bench::process_tree::Memory::Resident);
    let after = client.in_netns(move || -> anyhow::Result<u64> {
        raise_fd_limit();
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        let request = format!("GET /size/16 HTTP/1.1\r\nHost: {listen}\r\n\r\n");
        let mut held = Vec::with_capacity(IDLE_CONNECTIONS);
        for _ in 0..IDLE_CONNECTIONS {
            if std::time::Instant::now() > deadline {
                bail!("opened only {} connections in 120 s", held.len());
            }
            let mut stream = std::net::TcpStream::connect_timeout(
                &SocketAddr::V4(listen),
                Duration::from_secs(5),
            )?;
            stream.set_read_timeout(Some(Duration::from_secs(5)))?;
            stream.write_all(request.as_bytes())?;
            let answer = read_response(&mut std::io::BufReader::new(&stream))
                .with_context(|| format!("reading an answer after {} were open", held.len()))?;
            if answer.status != 200 || !answer.keep_alive {
                bail!(
                    "answer {} (keep-alive: {}) after {} connections were open",
                    answer.status,
                    answer.keep_alive,
                    held.len()
                );
            }
            held.push(stream);
        }
        // Let the proxy settle (buffers released, tasks parked) before reading its memory.
        std::thread::sleep(Duration::from_secs(2));
        let after =
            crate::bench::process_tree::kib(pid, crate::bench::process_tree::Memory::Resident);
        drop(held);
        Ok(after)
    })??;
    Ok(after.saturating_sub(before) as f64 / IDLE_CONNECTIONS as f64)
}

/// Lets this process hold the idle connections (the soft limit is often 1024).
fn raise_fd_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

/// Starts `proxy` on lb1 with its equivalent configuration in `dir`.
pub(crate) fn start(
    proxy: Contender,
    tandem: &Path,
    lb1: &Host,
    dir: &Path,
    listen: SocketAddrV4,
    backends: &[SocketAddrV4],
) -> anyhow::Result<Process> {
    let log = fs::File::create(dir.join("stderr.log"))?;
    let config = write_config(proxy, lb1, dir, listen, backends)?;
    let mut command = command(proxy, tandem, lb1, dir, &config);
    command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log);
    lb1.spawn(command)
}

/// Writes `proxy`'s configuration (see [`config_text`]) and returns its path.
pub(crate) fn write_config(
    proxy: Contender,
    lb1: &Host,
    dir: &Path,
    listen: SocketAddrV4,
    backends: &[SocketAddrV4],
) -> anyhow::Result<PathBuf> {
    let (config, text) = config_text(proxy, lb1, dir, listen, backends);
    fs::write(&config, text).with_context(|| format!("writing {}", config.display()))?;
    Ok(config)
}

/// `proxy`'s configuration for `backends` (round robin) on `listen`: where it goes in `dir` and
/// what it says. The three are configured alike (see the module's documentation).
pub(crate) fn config_text(
    proxy: Contender,
    lb1: &Host,
    dir: &Path,
    listen: SocketAddrV4,
    backends: &[SocketAddrV4],
) -> (PathBuf, String) {
    match proxy {
        Contender::Tandem => {
            let backends: Vec<String> = backends.iter().map(|b| format!("\"{b}\"")).collect();
            (
                dir.join("tandem.toml"),
                format!(
                    "[node]\nname = \"lb1\"\ninterface = \"{iface}\"\ndataplane = \"none\"\n\
                     control_socket = \"{socket}\"\n\n[proxy]\naccess_log = {{ level = 0 }}\nworkers = 2\n\
                     max_connections = 20000\n\n\
                     [[service]]\nname = \"web\"\nlisten = \"{listen}\"\nbackends = [{backends}]\n",
                    iface = lb1.iface,
                    socket = dir.join("tandem.sock").display(),
                    backends = backends.join(", "),
                ),
            )
        }
        Contender::HaProxy => {
            let servers: String = backends
                .iter()
                .enumerate()
                .map(|(i, b)| format!("    server s{i} {b}\n"))
                .collect();
            // HAProxy asks for 2 x maxconn descriptors and a few more (40 with the master and
            // stats sockets of `bench reload`); the hard limit here is 20,000, and 9,990 made
            // it refuse to start there. The idle row holds 9,000.
            (
                dir.join("haproxy.cfg"),
                format!(
                    "global\n    nbthread 2\n    maxconn 9950\n\n\
                     defaults\n    mode http\n    timeout connect 5s\n    timeout client 60s\n\
                     \x20   timeout server 15s\n    timeout http-keep-alive 60s\n    option forwardfor\n\n\
                     frontend web\n    bind {listen}\n\
                     \x20   http-request set-header X-Forwarded-Proto http\n\
                     \x20   http-request set-header X-Forwarded-Port %[dst_port]\n\
                     \x20   default_backend servers\n\n\
                     backend servers\n    balance roundrobin\n    http-reuse safe\n{servers}"
                ),
            )
        }
        Contender::Nginx => {
            let servers: String = backends
                .iter()
                .map(|b| format!("        server {b};\n"))
                .collect();
            let location = "        location / {\n\
                 \x20           proxy_pass http://servers;\n            proxy_http_version 1.1;\n\
                 \x20           proxy_set_header Connection \"\";\n            proxy_set_header Host $host;\n\
                 \x20           proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n\
                 \x20           proxy_set_header X-Forwarded-Proto $scheme;\n\
                 \x20           proxy_set_header X-Forwarded-Port $server_port;\n\
                 \x20           proxy_max_temp_file_size 0;\n        }\n";
            // nginx speaks cleartext HTTP/2 only on a port of its own.
            let h2 = SocketAddrV4::new(*listen.ip(), listen.port() + 1);
            (
                dir.join("nginx.conf"),
                format!(
                    "user root;\nworker_processes 2;\npid {dir}/nginx.pid;\nerror_log {dir}/error.log warn;\n\
                     worker_rlimit_nofile 20000;\nevents {{ worker_connections 20000; }}\n\
                     http {{\n    access_log off;\n    keepalive_timeout 60s;\n    keepalive_requests 1000000;\n\
                     \x20   upstream servers {{\n{servers}        keepalive 512;\n        keepalive_requests 1000000;\n    }}\n\
                     \x20   server {{\n        listen {listen};\n{location}    }}\n\
                     \x20   server {{\n        listen {h2} http2;\n{location}    }}\n}}\n",
                    dir = dir.display(),
                ),
            )
        }
    }
}

/// The command that runs `proxy` on lb1 with `config` (from [`write_config`]), in the
/// foreground; stdio is the caller's to set.
fn command(proxy: Contender, tandem: &Path, lb1: &Host, dir: &Path, config: &Path) -> Command {
    match proxy {
        Contender::Tandem => {
            let mut command = lb1.command(tandem);
            command
                .args(["run", "--config"])
                .arg(config)
                .env("TANDEM_LOG", "warn");
            command
        }
        Contender::HaProxy => {
            let mut command = lb1.command("/usr/sbin/haproxy");
            command.arg("-db").arg("-f").arg(config);
            command
        }
        Contender::Nginx => {
            let mut command = lb1.command("/usr/sbin/nginx");
            command
                .arg("-p")
                .arg(dir)
                .arg("-c")
                .arg(config)
                .args(["-g", "daemon off;"]);
            command
        }
    }
}

/// Runs wrk from `client` against `/size/{size}` and reads its summary.
fn wrk(
    client: &Host,
    listen: SocketAddrV4,
    size: usize,
    connections: u32,
    duration: Duration,
) -> anyhow::Result<Measured> {
    let args = [
        "-t".to_owned(),
        "2".to_owned(),
        "-c".to_owned(),
        connections.to_string(),
        "-d".to_owned(),
        format!("{}s", duration.as_secs()),
        "--timeout".to_owned(),
        "10s".to_owned(),
        "--latency".to_owned(),
        format!("http://{listen}/size/{size}"),
    ];
    let summary = tandem_lab::wrk::run(client, &[], &args)?;
    Ok(Measured {
        requests_per_second: summary.requests_per_second,
        requests: summary.requests,
        p50_ms: summary.p50_ms,
        p99_ms: summary.p99_ms,
        errors: summary.errors(),
    })
}

/// Runs h2load (HTTP/2 prior knowledge) from `client`; the mean latency goes in `p50_ms`.
fn h2load(
    client: &Host,
    target: SocketAddrV4,
    size: usize,
    duration: Duration,
) -> anyhow::Result<Measured> {
    let output = client.run(
        "h2load",
        &[
            "-t",
            "2",
            "-c",
            &H2_CONNECTIONS.to_string(),
            "-m",
            &H2_STREAMS.to_string(),
            "-D",
            &duration.as_secs().to_string(),
            &format!("http://{target}/size/{size}"),
        ],
    )?;
    parse_h2load(&output).with_context(|| format!("reading h2load's output:\n{output}"))
}

fn parse_h2load(output: &str) -> anyhow::Result<Measured> {
    let mut measured = Measured::default();
    for line in output.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("finished in ") {
            let rate = rest
                .split(", ")
                .find_map(|part| part.strip_suffix(" req/s"))
                .context("no req/s in the 'finished in' line")?;
            measured.requests_per_second = rate.parse().context("req/s")?;
        } else if let Some(rest) = line.strip_prefix("requests:") {
            measured.requests = rest
                .split(',')
                .find_map(|part| part.trim().strip_suffix(" done")?.parse().ok())
                .context("no 'done' count in the requests line")?;
            measured.errors = rest
                .split(',')
                .filter_map(|part| {
                    let mut words = part.split_whitespace();
                    let count = words.next()?.parse::<u64>().ok()?;
                    matches!(words.next(), Some("failed" | "errored" | "timeout")).then_some(count)
                })
                .sum();
        } else if let Some(rest) = line.strip_prefix("time for request:") {
            let mean = rest.split_whitespace().nth(2).context("no mean latency")?;
            measured.p50_ms = milliseconds(mean)?;
        }
    }
    if measured.requests_per_second == 0.0 {
        bail!("no 'finished in' line");
    }
    Ok(measured)
}

/// The median and the range of `values` (sorted here).
fn spread(mut values: Vec<f64>) -> (f64, f64, f64) {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n == 0 {
        return (0.0, 0.0, 0.0);
    }
    let median = if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    };
    (median, values[0], values[n - 1])
}

fn render(
    runs: &[(Cell, Contender, Run)],
    idle: &[(Contender, Result<f64, String>)],
    run_for: Duration,
    repetitions: u32,
) -> String {
    let mut table = format!(
        "`cargo xtask bench proxy`: the three proxies side by side on lb1, two tandem-echo \
         backends, round robin, keep-alive both sides, 2 workers each, no access log. Each \
         cell runs {}s per proxy, interleaved, {repetitions} times (the proxies' order rotated \
         each time); figures are the median with the min-max in brackets. HTTP/1.1 load: wrk, 2 \
         threads; HTTP/2: h2load (cleartext, prior knowledge), {H2_CONNECTIONS} connections x \
         {H2_STREAMS} streams, which reports a mean latency, not a p99. CPU: user and system \
         time of the proxy's processes over the run, per request. Peak RSS: the proxy's \
         processes during that run alone. Ratios are of medians; for latency, CPU and memory \
         lower is better.\n\n\
         | cell | proxy | req/s | p99 ms | CPU µs/req | peak RSS MiB | errors | req/s vs HAProxy | req/s vs nginx | p99 vs HAProxy | CPU vs HAProxy | RSS vs HAProxy |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|\n",
        run_for.as_secs()
    );
    // The cells that ran (all of them unless `--only` picked some).
    for cell in Cell::all()
        .into_iter()
        .filter(|cell| runs.iter().any(|(c, _, _)| c == cell))
    {
        let of = |proxy: Contender| -> Vec<Run> {
            runs.iter()
                .filter(|(c, p, _)| *c == cell && *p == proxy)
                .map(|(_, _, run)| *run)
                .collect()
        };
        let summary = |proxy: Contender| {
            let runs = of(proxy);
            let rate = spread(runs.iter().map(|r| r.load.requests_per_second).collect());
            let latency = spread(
                runs.iter()
                    .map(|r| match cell {
                        Cell::Http1 { .. } => r.load.p99_ms,
                        Cell::Http2 { .. } => r.load.p50_ms,
                    })
                    .collect(),
            );
            let cpu = spread(runs.iter().map(|r| r.cpu_us_per_request).collect());
            let rss = spread(
                runs.iter()
                    .map(|r| r.peak_rss_kib as f64 / 1024.0)
                    .collect(),
            );
            let errors: u64 = runs.iter().map(|r| r.load.errors).sum();
            (rate, latency, cpu, rss, errors)
        };
        let haproxy = summary(Contender::HaProxy);
        let nginx = summary(Contender::Nginx);
        for proxy in Contender::ALL {
            let (rate, latency, cpu, rss, errors) = summary(proxy);
            let latency_label = match cell {
                Cell::Http1 { .. } => {
                    format!("{:.2} ({:.2}-{:.2})", latency.0, latency.1, latency.2)
                }
                Cell::Http2 { .. } => {
                    format!("mean {:.2} ({:.2}-{:.2})", latency.0, latency.1, latency.2)
                }
            };
            let _ = writeln!(
                table,
                "| {} | {} | {:.0} ({:.0}-{:.0}) | {latency_label} | {:.1} ({:.1}-{:.1}) | {:.1} ({:.1}-{:.1}) | {errors} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} |",
                cell.label(),
                proxy.name(),
                rate.0,
                rate.1,
                rate.2,
                cpu.0,
                cpu.1,
                cpu.2,
                rss.0,
                rss.1,
                rss.2,
                ratio(rate.0, haproxy.0 .0),
                ratio(rate.0, nginx.0 .0),
                ratio(latency.0, haproxy.1 .0),
                ratio(cpu.0, haproxy.2 .0),
                ratio(rss.0, haproxy.3 .0),
            );
        }
    }
    if idle.is_empty() {
        return table;
    }
    let _ = write!(
        table,
        "\n{IDLE_CONNECTIONS} idle keep-alive client connections (each made one request, before \
         any load): the RSS the proxy's processes gained while holding them.\n\n\
         | proxy | KiB per idle connection | vs HAProxy |\n|---|---|---|\n"
    );
    let haproxy = idle
        .iter()
        .find(|(p, _)| *p == Contender::HaProxy)
        .and_then(|(_, kib)| kib.as_ref().ok().copied())
        .unwrap_or(0.0);
    for (proxy, kib) in idle {
        let _ = match kib {
            Ok(kib) => writeln!(
                table,
                "| {} | {kib:.2} | {:.2} |",
                proxy.name(),
                ratio(*kib, haproxy)
            ),
            Err(error) => writeln!(table, "| {} | failed: {error} | |", proxy.name()),
        };
    }
    table
}

pub(crate) fn ratio(value: f64, reference: f64) -> f64 {
    if reference > 0.0 {
        value / reference
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_gives_the_median_and_the_range() {
        assert_eq!(spread(vec![3.0, 1.0, 2.0]), (2.0, 1.0, 3.0));
        assert_eq!(spread(vec![4.0, 1.0]), (2.5, 1.0, 4.0));
    }

    #[test]
    fn h2load_output_is_read() -> anyhow::Result<()> {
        let output = "finished in 2.00s, 34813.00 req/s, 36.72MB/s
requests: 69626 total, 69666 started, 69626 done, 69620 succeeded, 4 failed, 2 errored, 0 timeout
time for request:      107us      6.93ms      1.08ms       539us    75.88%
";
        let measured = parse_h2load(output)?;
        assert!((measured.requests_per_second - 34813.0).abs() < 1e-6);
        assert!((measured.p50_ms - 1.08).abs() < 1e-9);
        assert_eq!(measured.errors, 6);
        assert_eq!(measured.requests, 69626);
        Ok(())
    }
}
