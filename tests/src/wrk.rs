//! wrk for the tests and every bench (`cargo xtask bench`): [`run`] runs it on a lab host and
//! [`parse_wrk`] reads its summary once for all: requests, rate, errors and, when run with
//! `--latency`, the 50th and 99th percentiles.

use anyhow::{bail, Context as _};

use crate::lab::Host;

/// Runs wrk on `host` with `args`, behind `prefix` when given (e.g. `nice -n -10 taskset -c
/// 0`, which then runs /usr/bin/wrk), and reads its summary. A wrk that fails or prints no
/// summary is an error that shows what it printed.
pub fn run(host: &Host, prefix: &[&str], args: &[String]) -> anyhow::Result<WrkSummary> {
    let mut command = match prefix.split_first() {
        Some((program, rest)) => {
            let mut command = host.command(program);
            command.args(rest).arg("/usr/bin/wrk");
            command
        }
        None => host.command("wrk"),
    };
    let output = command.args(args).output().context("running wrk")?;
    let text = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!(
            "wrk failed on host {}: {text}{}",
            host.name,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    parse_wrk(&text).with_context(|| format!("reading wrk's output:\n{text}"))
}

/// What wrk prints at the end of a run.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct WrkSummary {
    /// Requests completed.
    pub requests: u64,
    pub requests_per_second: f64,
    /// Connect, read, write and timeout errors together.
    pub socket_errors: u64,
    /// Answers that were neither 2xx nor 3xx.
    pub non_2xx: u64,
    /// Latency percentiles in ms; zero unless wrk ran with `--latency`.
    pub p50_ms: f64,
    pub p99_ms: f64,
}

impl WrkSummary {
    /// Socket errors and answers other than 2xx or 3xx.
    pub fn errors(&self) -> u64 {
        self.socket_errors + self.non_2xx
    }
}

/// Reads wrk's output; an output without its `Requests/sec` line (wrk failed) is an error.
pub fn parse_wrk(output: &str) -> anyhow::Result<WrkSummary> {
    let mut summary = WrkSummary::default();
    let mut rate_seen = false;
    let mut in_distribution = false;
    for line in output.lines().map(str::trim) {
        if line.starts_with("Latency Distribution") {
            in_distribution = true;
        } else if let Some((count, _)) = line.split_once(" requests in ") {
            summary.requests = count.trim().parse().context("the 'requests in' line")?;
        } else if let Some(rate) = line.strip_prefix("Requests/sec:") {
            summary.requests_per_second = rate.trim().parse().context("Requests/sec")?;
            rate_seen = true;
        } else if let Some(errors) = line.strip_prefix("Socket errors:") {
            summary.socket_errors = errors
                .split(',')
                .filter_map(|part| part.split_whitespace().last()?.parse::<u64>().ok())
                .sum();
        } else if let Some(count) = line.strip_prefix("Non-2xx or 3xx responses:") {
            summary.non_2xx = count.trim().parse().unwrap_or(0);
        } else if in_distribution {
            let mut words = line.split_whitespace();
            match (words.next(), words.next()) {
                (Some("50%"), Some(value)) => summary.p50_ms = milliseconds(value)?,
                (Some("99%"), Some(value)) => {
                    summary.p99_ms = milliseconds(value)?;
                    in_distribution = false;
                }
                _ => {}
            }
        }
    }
    if !rate_seen {
        bail!("no Requests/sec line in wrk's output");
    }
    Ok(summary)
}

/// wrk's "812.00us", "1.23ms", "2.01s" in milliseconds.
pub fn milliseconds(value: &str) -> anyhow::Result<f64> {
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

#[cfg(test)]
mod tests {
    use super::*;

    const WITH_LATENCY: &str = "Running 10s test @ http://198.18.0.100:80/size/1024
  2 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.10ms  512.00us  20.00ms   90.00%
    Req/Sec    29.00k     1.00k   31.00k    70.00%
  Latency Distribution
     50%  812.00us
     75%    1.20ms
     90%    1.80ms
     99%    3.07ms
  580000 requests in 10.00s, 650.00MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 4
Requests/sec:  57999.60
Transfer/sec:     65.00MB
";

    #[test]
    fn a_summary_with_latency_reads_every_figure() {
        let summary = parse_wrk(WITH_LATENCY).unwrap();
        assert_eq!(summary.requests, 580_000);
        assert_eq!(summary.requests_per_second, 57_999.6);
        assert_eq!((summary.socket_errors, summary.non_2xx), (3, 4));
        assert_eq!(summary.errors(), 7);
        assert!((summary.p50_ms - 0.812).abs() < 1e-9);
        assert!((summary.p99_ms - 3.07).abs() < 1e-9);
    }

    #[test]
    fn a_summary_without_latency_leaves_the_percentiles_at_zero() {
        let output = "  100 requests in 1.00s, 1.00MB read\nRequests/sec:    100.00\n";
        let summary = parse_wrk(output).unwrap();
        assert_eq!(
            (summary.requests, summary.p99_ms, summary.errors()),
            (100, 0.0, 0)
        );
    }

    #[test]
    fn an_output_without_a_rate_is_an_error() {
        assert!(parse_wrk("unable to connect to 198.18.0.99:80 Connection refused\n").is_err());
    }

    #[test]
    fn latencies_are_read_in_their_units() {
        assert!((milliseconds("2.01s").unwrap() - 2010.0).abs() < 1e-9);
        assert!(milliseconds("5m").is_err());
    }
}
