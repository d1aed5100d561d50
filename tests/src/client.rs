//! What a lab host does as a client in tests: wait until a port accepts, and send one plain
//! HTTP/1.1 request. Deliberately tiny and dependency-free (std `TcpStream` inside the host's
//! namespace), so a bug in the project's own HTTP stack cannot hide behind the same bug here.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};

use crate::lab::Host;

/// Connect, read and write timeout of [`http_get`].
const HTTP_TIMEOUT: Duration = Duration::from_secs(5);
/// Upper bound for a whole [`http_get`] exchange, however the server trickles.
const HTTP_DEADLINE: Duration = Duration::from_secs(15);
/// Largest response [`http_get`] reads: benchmarks fetch 100 KiB bodies, nothing needs more.
const MAX_RESPONSE_BYTES: usize = 64 << 20;
/// Pause between connection attempts in [`wait_for_tcp`].
const CONNECT_RETRY: Duration = Duration::from_millis(50);
/// Longest single connection attempt in [`wait_for_tcp`]: an unanswered ARP must not eat the
/// whole budget.
const CONNECT_ATTEMPT: Duration = Duration::from_millis(500);

/// Tries to connect to `addr` from inside `host`'s namespace until it succeeds or `timeout`
/// has passed.
pub fn wait_for_tcp(host: &Host, addr: SocketAddr, timeout: Duration) -> anyhow::Result<()> {
    host.in_netns(|| -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            let remaining = deadline.saturating_duration_since(Instant::now());
            let attempt = remaining.clamp(Duration::from_millis(1), CONNECT_ATTEMPT);
            let error = match TcpStream::connect_timeout(&addr, attempt) {
                Ok(_) => return Ok(()),
                Err(error) => error,
            };
            if Instant::now() >= deadline {
                bail!(
                    "{addr} accepted no connection from host {} within {timeout:?} \
                     ({attempts} attempts, last error: {error}); is the server running and \
                     listening on that address?",
                    host.name
                );
            }
            thread::sleep(CONNECT_RETRY);
        }
    })?
}

/// A response read by [`http_get`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse {
    /// The status code, e.g. 200.
    pub status: u16,
    /// The headers in the order received, names as the server spelt them.
    pub headers: Vec<(String, String)>,
    /// The body (chunked transfer coding removed), as text; invalid UTF-8 is replaced.
    pub body: String,
}

impl HttpResponse {
    /// The first header with this name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(header, _)| header.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    /// Every value of the headers with this name (case-insensitive), e.g. all `Set-Cookie`s.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(header, _)| header.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
            .collect()
    }
}

/// Sends `GET path` with `headers` to `addr` from inside `host`'s namespace, with
/// `Connection: close` and 5 s timeouts, and reads the whole response. A `Host` header is added
/// unless `headers` has one.
pub fn http_get(
    host: &Host,
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> anyhow::Result<HttpResponse> {
    let mut request = format!("GET {path} HTTP/1.1\r\n");
    if !headers
        .iter()
        .any(|(name, _)| name.eq_ignore_ascii_case("host"))
    {
        request.push_str(&format!("Host: {addr}\r\n"));
    }
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("Connection: close\r\n\r\n");

    let raw = host
        .in_netns(|| exchange(addr, request.as_bytes()))?
        .with_context(|| format!("GET http://{addr}{path} from host {}", host.name))?;
    parse_response(&raw).with_context(|| {
        format!(
            "GET http://{addr}{path} from host {}: malformed response",
            host.name
        )
    })
}

/// Sends `request` and reads until the server closes the connection.
fn exchange(addr: SocketAddr, request: &[u8]) -> anyhow::Result<Vec<u8>> {
    let deadline = Instant::now() + HTTP_DEADLINE;
    let mut stream = TcpStream::connect_timeout(&addr, HTTP_TIMEOUT)
        .with_context(|| format!("connecting to {addr}"))?;
    stream
        .set_read_timeout(Some(HTTP_TIMEOUT))
        .and_then(|()| stream.set_write_timeout(Some(HTTP_TIMEOUT)))
        .context("setting socket timeouts")?;
    stream.write_all(request).context("sending the request")?;
    let mut response = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let read = stream
            .read(&mut chunk)
            .with_context(|| format!("reading the response ({} bytes so far)", response.len()))?;
        if read == 0 {
            return Ok(response);
        }
        response.extend_from_slice(&chunk[..read]);
        if response.len() > MAX_RESPONSE_BYTES {
            bail!("response larger than {MAX_RESPONSE_BYTES} bytes");
        }
        if Instant::now() >= deadline {
            bail!("response not complete after {HTTP_DEADLINE:?}");
        }
    }
}

fn parse_response(raw: &[u8]) -> anyhow::Result<HttpResponse> {
    let head_end = find(raw, b"\r\n\r\n").with_context(|| {
        format!(
            "no end of headers in {} bytes: {:?}",
            raw.len(),
            String::from_utf8_lossy(&raw[..raw.len().min(200)])
        )
    })?;
    let head = std::str::from_utf8(&raw[..head_end]).context("headers are not UTF-8")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .strip_prefix("HTTP/1.")
        .and_then(|rest| rest.split(' ').nth(1))
        .and_then(|code| code.parse::<u16>().ok())
        .with_context(|| format!("bad status line {status_line:?}"))?;
    let headers = lines
        .map(|line| {
            let (name, value) = line
                .split_once(':')
                .with_context(|| format!("bad header line {line:?}"))?;
            Ok((name.trim().to_owned(), value.trim().to_owned()))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut response = HttpResponse {
        status,
        headers,
        body: String::new(),
    };

    let rest = &raw[head_end + 4..];
    let chunked = response
        .header("transfer-encoding")
        .is_some_and(|coding| coding.eq_ignore_ascii_case("chunked"));
    let body = if chunked {
        decode_chunked(rest)?
    } else if let Some(length) = response.header("content-length") {
        let length: usize = length
            .parse()
            .with_context(|| format!("bad Content-Length {length:?}"))?;
        if rest.len() < length {
            bail!(
                "body cut short: Content-Length {length}, received {}",
                rest.len()
            );
        }
        rest[..length].to_vec()
    } else {
        rest.to_vec()
    };
    response.body = String::from_utf8_lossy(&body).into_owned();
    Ok(response)
}

fn decode_chunked(mut rest: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut body = Vec::new();
    // Each round consumes at least the size line, so the input bounds the loop.
    loop {
        let line_end = find(rest, b"\r\n").context("chunk size line without end")?;
        let size_line = std::str::from_utf8(&rest[..line_end]).context("chunk size not text")?;
        let size_hex = size_line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_hex, 16)
            .with_context(|| format!("bad chunk size {size_line:?}"))?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            return Ok(body);
        }
        if rest.len() < size + 2 {
            bail!("chunk of {size} bytes cut short");
        }
        body.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_with_content_length_parse() -> anyhow::Result<()> {
        let response = parse_response(
            b"HTTP/1.1 200 OK\r\nX-Backend: http1\r\nContent-Length: 5\r\n\r\nhello",
        )?;
        assert_eq!(response.status, 200);
        assert_eq!(response.header("x-backend"), Some("http1"));
        assert_eq!(response.body, "hello");
        Ok(())
    }

    #[test]
    fn chunked_responses_are_decoded() -> anyhow::Result<()> {
        let response = parse_response(
            b"HTTP/1.1 503 Service Unavailable\r\nTransfer-Encoding: chunked\r\n\r\n\
              3\r\nhel\r\n2;ext=1\r\nlo\r\n0\r\n\r\n",
        )?;
        assert_eq!(response.status, 503);
        assert_eq!(response.body, "hello");
        Ok(())
    }

    #[test]
    fn truncated_responses_are_errors() {
        assert!(parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nhello").is_err());
        assert!(parse_response(b"HTTP/1.1 200 OK\r\nContent-Le").is_err());
    }
}

/// The counts wrk prints at the end of a run.
#[derive(Debug, Default)]
pub struct WrkSummary {
    pub requests: u64,
    pub socket_errors: u64,
    pub non_2xx: u64,
}

pub fn parse_wrk(output: &str) -> WrkSummary {
    let mut summary = WrkSummary::default();
    for line in output.lines().map(str::trim) {
        if let Some((count, _)) = line.split_once(" requests in ") {
            summary.requests = count.trim().parse().unwrap_or(0);
        } else if let Some(errors) = line.strip_prefix("Socket errors:") {
            summary.socket_errors = errors
                .split(',')
                .filter_map(|part| part.split_whitespace().last()?.parse::<u64>().ok())
                .sum();
        } else if let Some(count) = line.strip_prefix("Non-2xx or 3xx responses:") {
            summary.non_2xx = count.trim().parse().unwrap_or(0);
        }
    }
    summary
}
