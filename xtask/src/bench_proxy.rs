//! `cargo xtask bench proxy`: Tandem's L7 proxy against HAProxy and nginx (Debian's packages)
//! on the lab topology, configured alike: the same two backends (the project's echo server on
//! http1 and http2, `/size/N` bodies), round robin, keep-alive to clients and to backends, two
//! worker threads or processes each, no access log, X-Forwarded-For/Proto/Port added. Each
//! proxy runs on lb1 in turn; wrk loads it from the client host for a bounded time per case
//! (1 KiB and 100 KiB bodies, 64 and 256 connections). The table (requests/s, p50, p99, peak
//! RSS, ratios to HAProxy and nginx) is printed and written to docs/benchmarks.md (## Proxy).
//!
//! Everything shares one machine: wrk, the backends and the proxy compete for its cores, so
//! the absolute figures say little; the ratios between proxies on the same machine are the
//! point.

use std::fmt::Write as _;
use std::fs;
use std::net::{SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context as _};
use tandem_lab::{wait_for_tcp, EchoBackend, Host, Lab, Process, CLIENT, HTTP1, HTTP2, LB1};

/// The proxies' port on lb1.
pub(crate) const PORT: u16 = 8080;
/// Response bodies measured (the echo server's `/size/N`).
const BODIES: [(usize, &str); 2] = [(1024, "1 KiB"), (100 * 1024, "100 KiB")];
const CONNECTIONS: [u32; 2] = [64, 256];
/// HTTP/2 (cleartext, prior knowledge) with h2load: connections, each with this many streams.
const H2_CONNECTIONS: u32 = 64;
const H2_STREAMS: u32 = 10;
/// nginx's cleartext HTTP/2 port (Tandem and HAProxy detect the preface on `PORT`).
const H2_NGINX_PORT: u16 = PORT + 1;
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

/// One wrk run's figures.
#[derive(Debug, Clone, Copy, Default)]
struct Measured {
    requests_per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
    errors: u64,
}

pub fn run(root: &Path, seconds: u64) -> anyhow::Result<()> {
    let target = crate::bench_report::release_dir(root);
    crate::bench_report::require_tools(
        &["/usr/bin/wrk", "/usr/sbin/haproxy", "/usr/sbin/nginx"],
        "wrk, haproxy and nginx-light",
    )?;
    let tandem = target.join("tandem");
    let echo = target.join("tandem-echo");
    let run_for = Duration::from_secs(seconds.max(1));

    let lab = Lab::new()?;
    let backends = [
        EchoBackend::start_with_binary(&echo, lab.host(HTTP1), 80, HTTP1)?,
        EchoBackend::start_with_binary(&echo, lab.host(HTTP2), 80, HTTP2)?,
    ];
    let backend_addrs: Vec<SocketAddrV4> = backends.iter().map(EchoBackend::addr).collect();
    let lb1 = lab.host(LB1);
    let client = lab.host(CLIENT);
    let listen = SocketAddrV4::new(lb1.ip, PORT);

    let mut results: Vec<(Contender, usize, u32, Measured)> = Vec::new();
    let mut h2_results: Vec<(Contender, usize, Measured)> = Vec::new();
    let mut peak_rss: Vec<(Contender, u64)> = Vec::new();
    for proxy in Contender::ALL {
        eprintln!("bench proxy: {}", proxy.name());
        let dir = lab
            .work_dir()
            .join(format!("bench-{}", proxy.name().to_lowercase()));
        fs::create_dir_all(&dir)?;
        let mut process = start(proxy, &tandem, lb1, &dir, listen, &backend_addrs)?;
        wait_for_tcp(client, SocketAddr::V4(listen), Duration::from_secs(10))
            .with_context(|| format!("{} does not accept on {listen}", proxy.name()))?;
        wrk(client, listen, BODIES[0].0, 64, WARM_UP)?;
        for (size, _) in BODIES {
            for connections in CONNECTIONS {
                let measured = wrk(client, listen, size, connections, run_for)?;
                eprintln!(
                    "  {size} bytes, {connections} connections: {:.0} req/s, p50 {:.2} ms, p99 {:.2} ms",
                    measured.requests_per_second, measured.p50_ms, measured.p99_ms
                );
                results.push((proxy, size, connections, measured));
            }
        }
        let h2_target = match proxy {
            Contender::Nginx => SocketAddrV4::new(*listen.ip(), H2_NGINX_PORT),
            Contender::Tandem | Contender::HaProxy => listen,
        };
        for (size, _) in BODIES {
            let measured = h2load(client, h2_target, size, run_for)?;
            eprintln!(
                "  HTTP/2 {size} bytes, {H2_CONNECTIONS}x{H2_STREAMS} streams: {:.0} req/s, mean {:.2} ms",
                measured.requests_per_second, measured.p50_ms
            );
            h2_results.push((proxy, size, measured));
        }
        peak_rss.push((
            proxy,
            crate::process_tree::kib(process.pid(), crate::process_tree::Memory::PeakResident),
        ));
        process
            .terminate(Duration::from_secs(5))
            .with_context(|| format!("stopping {}", proxy.name()))?;
    }
    drop(backends);

    let table = render(&results, &h2_results, &peak_rss, run_for);
    println!("\n{table}");
    crate::bench_report::replace_section(root, "Proxy", &table)?;
    Ok(())
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
                     control_socket = \"{socket}\"\n\n[proxy]\naccess_log = {{ level = 0 }}\nworkers = 2\n\n\
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
            (
                dir.join("haproxy.cfg"),
                format!(
                    "global\n    nbthread 2\n    maxconn 8000\n\n\
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
            let h2 = SocketAddrV4::new(*listen.ip(), H2_NGINX_PORT);
            (
                dir.join("nginx.conf"),
                format!(
                    "user root;\nworker_processes 2;\npid {dir}/nginx.pid;\nerror_log {dir}/error.log warn;\n\
                     worker_rlimit_nofile 20000;\nevents {{ worker_connections 8000; }}\n\
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
    let output = client.run(
        "wrk",
        &[
            "-t",
            "2",
            "-c",
            &connections.to_string(),
            "-d",
            &format!("{}s", duration.as_secs()),
            "--timeout",
            "10s",
            "--latency",
            &format!("http://{listen}/size/{size}"),
        ],
    )?;
    parse_wrk(&output).with_context(|| format!("reading wrk's output:\n{output}"))
}

fn parse_wrk(output: &str) -> anyhow::Result<Measured> {
    let mut measured = Measured::default();
    let mut in_distribution = false;
    for line in output.lines().map(str::trim) {
        if line.starts_with("Latency Distribution") {
            in_distribution = true;
        } else if let Some(rate) = line.strip_prefix("Requests/sec:") {
            measured.requests_per_second = rate.trim().parse().context("Requests/sec")?;
        } else if let Some(errors) = line.strip_prefix("Socket errors:") {
            measured.errors += errors
                .split(',')
                .filter_map(|part| part.split_whitespace().last()?.parse::<u64>().ok())
                .sum::<u64>();
        } else if let Some(count) = line.strip_prefix("Non-2xx or 3xx responses:") {
            measured.errors += count.trim().parse::<u64>().unwrap_or(0);
        } else if in_distribution {
            let mut words = line.split_whitespace();
            match (words.next(), words.next()) {
                (Some("50%"), Some(value)) => measured.p50_ms = milliseconds(value)?,
                (Some("99%"), Some(value)) => {
                    measured.p99_ms = milliseconds(value)?;
                    in_distribution = false;
                }
                _ => {}
            }
        }
    }
    if measured.requests_per_second == 0.0 {
        bail!("no Requests/sec line");
    }
    Ok(measured)
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
            "--warm-up-time=1",
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

/// wrk's "812.00us", "1.23ms", "2.01s" in milliseconds.
fn milliseconds(value: &str) -> anyhow::Result<f64> {
    let (number, factor) = if let Some(n) = value.strip_suffix("us") {
        (n, 0.001)
    } else if let Some(n) = value.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = value.strip_suffix('s') {
        (n, 1000.0)
    } else {
        bail!("unknown latency unit in {value:?}");
    };
    Ok(number
        .parse::<f64>()
        .with_context(|| format!("latency {value:?}"))?
        * factor)
}

fn render(
    results: &[(Contender, usize, u32, Measured)],
    h2_results: &[(Contender, usize, Measured)],
    peak_rss: &[(Contender, u64)],
    run_for: Duration,
) -> String {
    let find = |proxy: Contender, size: usize, connections: u32| {
        results
            .iter()
            .find(|(p, s, c, _)| *p == proxy && *s == size && *c == connections)
            .map(|(_, _, _, m)| *m)
            .unwrap_or_default()
    };
    let mut table = format!(
        "`cargo xtask bench proxy`: wrk (2 threads, {}s per case) from the client host to a \
         proxy on lb1, two tandem-echo backends, round robin, keep-alive both sides, 2 \
         workers each, no access log.\n\n\
         | body | conns | proxy | req/s | p50 ms | p99 ms | errors | req/s vs HAProxy | req/s vs nginx | p99 vs HAProxy |\n\
         |---|---|---|---|---|---|---|---|---|---|\n",
        run_for.as_secs()
    );
    for (size, label) in BODIES {
        for connections in CONNECTIONS {
            let haproxy = find(Contender::HaProxy, size, connections);
            let nginx = find(Contender::Nginx, size, connections);
            for proxy in Contender::ALL {
                let m = find(proxy, size, connections);
                let _ = writeln!(
                    table,
                    "| {label} | {connections} | {} | {:.0} | {:.2} | {:.2} | {} | {:.2} | {:.2} | {:.2} |",
                    proxy.name(),
                    m.requests_per_second,
                    m.p50_ms,
                    m.p99_ms,
                    m.errors,
                    ratio(m.requests_per_second, haproxy.requests_per_second),
                    ratio(m.requests_per_second, nginx.requests_per_second),
                    ratio(m.p99_ms, haproxy.p99_ms),
                );
            }
        }
    }
    let _ = write!(
        table,
        "\nHTTP/2 (cleartext, prior knowledge) with h2load: {H2_CONNECTIONS} connections x \
         {H2_STREAMS} streams; h2load reports the mean, not percentiles.\n\n\
         | body | proxy | req/s | mean ms | errors | req/s vs HAProxy | req/s vs nginx |\n\
         |---|---|---|---|---|---|---|\n"
    );
    for (size, label) in BODIES {
        let find = |proxy: Contender| {
            h2_results
                .iter()
                .find(|(p, s, _)| *p == proxy && *s == size)
                .map(|(_, _, m)| *m)
                .unwrap_or_default()
        };
        let (haproxy, nginx) = (find(Contender::HaProxy), find(Contender::Nginx));
        for proxy in Contender::ALL {
            let m = find(proxy);
            let _ = writeln!(
                table,
                "| {label} | {} | {:.0} | {:.2} | {} | {:.2} | {:.2} |",
                proxy.name(),
                m.requests_per_second,
                m.p50_ms,
                m.errors,
                ratio(m.requests_per_second, haproxy.requests_per_second),
                ratio(m.requests_per_second, nginx.requests_per_second),
            );
        }
    }
    table.push_str("\n| proxy | peak RSS (MiB) |\n|---|---|\n");
    for (proxy, kib) in peak_rss {
        let _ = writeln!(table, "| {} | {:.1} |", proxy.name(), *kib as f64 / 1024.0);
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
    fn wrk_output_is_read() -> anyhow::Result<()> {
        let output = "Running 10s test @ http://198.18.0.100:8080/size/1024
  2 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.52ms  812.00us  20.00ms   90.00%
  Latency Distribution
     50%  812.00us
     75%    1.20ms
     90%    2.00ms
     99%    4.50ms
  123456 requests in 10.00s, 130.00MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 3
Requests/sec:  12345.60
Transfer/sec:     13.00MB
";
        let measured = parse_wrk(output)?;
        assert!((measured.requests_per_second - 12345.6).abs() < 1e-6);
        assert!((measured.p50_ms - 0.812).abs() < 1e-9);
        assert!((measured.p99_ms - 4.5).abs() < 1e-9);
        assert_eq!(measured.errors, 6);
        Ok(())
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
        Ok(())
    }
}
