//! What a lab host does as a client in tests: wait until a port accepts, and send one plain
//! HTTP/1.1 request. Deliberately tiny and dependency-free (std `TcpStream` inside the host's
//! namespace), so a bug in the project's own HTTP stack cannot hide behind the same bug here.

use std::io::{self, BufRead, Read as _, Write as _};
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
    /// The connection may carry another request: HTTP/1.1 without `Connection: close` (or
    /// 1.0 with `keep-alive`), and a body whose end was not the end of the stream.
    pub keep_alive: bool,
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
    read_response(&mut io::Cursor::new(raw)).map_err(|error| {
        anyhow::anyhow!(
            "{error} in {} bytes: {:?}",
            raw.len(),
            String::from_utf8_lossy(&raw[..raw.len().min(200)])
        )
    })
}

/// Reads one HTTP/1.x response from `reader`, which may stay open for the next one (the
/// benches' keep-alive load reads through this too): status line, headers, then the body by
/// Content-Length, chunked (extensions and trailers skipped), or up to the end of the stream.
/// An end of stream before the response is whole is `UnexpectedEof`; a malformed response is
/// `InvalidData`; a read timeout comes back as the socket gave it.
pub fn read_response(reader: &mut impl BufRead) -> io::Result<HttpResponse> {
    let malformed = |what: String| io::Error::new(io::ErrorKind::InvalidData, what);
    let mut line = String::new();
    read_line(reader, &mut line)?;
    let status_line = line.trim_end().to_owned();
    let mut words = status_line.split(' ');
    let version = words.next().unwrap_or_default();
    let status = words
        .next()
        .and_then(|code| code.parse::<u16>().ok())
        .filter(|_| version.starts_with("HTTP/1."))
        .ok_or_else(|| malformed(format!("bad status line {status_line:?}")))?;
    let mut headers = Vec::new();
    loop {
        read_line(reader, &mut line)?;
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        let (name, value) = header
            .split_once(':')
            .ok_or_else(|| malformed(format!("bad header line {header:?}")))?;
        headers.push((name.trim().to_owned(), value.trim().to_owned()));
    }
    let mut response = HttpResponse {
        status,
        headers,
        body: String::new(),
        keep_alive: version != "HTTP/1.0",
    };
    if let Some(connection) = response.header("connection") {
        let connection = connection.to_ascii_lowercase();
        if connection.contains("close") {
            response.keep_alive = false;
        } else if connection.contains("keep-alive") {
            response.keep_alive = true;
        }
    }
    let chunked = response
        .header("transfer-encoding")
        .is_some_and(|coding| coding.to_ascii_lowercase().contains("chunked"));
    let mut body = Vec::new();
    if chunked {
        loop {
            read_line(reader, &mut line)?;
            let size_line = line.trim();
            let size_hex = size_line.split(';').next().unwrap_or_default().trim();
            let size = usize::from_str_radix(size_hex, 16)
                .map_err(|_| malformed(format!("bad chunk size {size_line:?}")))?;
            if size == 0 {
                // Trailers, up to the empty line.
                loop {
                    read_line(reader, &mut line)?;
                    if line.trim_end().is_empty() {
                        break;
                    }
                }
                break;
            }
            read_exactly(reader, size, &mut body)?;
            let mut crlf = Vec::new();
            read_exactly(reader, 2, &mut crlf)?;
        }
    } else if let Some(length) = response.header("content-length") {
        let length: usize = length
            .parse()
            .map_err(|_| malformed(format!("bad Content-Length {length:?}")))?;
        read_exactly(reader, length, &mut body)?;
    } else {
        reader
            .take(MAX_RESPONSE_BYTES as u64)
            .read_to_end(&mut body)?;
        response.keep_alive = false;
    }
    response.body = String::from_utf8_lossy(&body).into_owned();
    Ok(response)
}

/// Reads one line into `line` (cleared first); the end of the stream is `UnexpectedEof`.
fn read_line(reader: &mut impl BufRead, line: &mut String) -> io::Result<()> {
    line.clear();
    if reader.read_line(line)? == 0 {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    Ok(())
}

/// Appends exactly `n` bytes to `out`; fewer before the end of the stream is `UnexpectedEof`.
fn read_exactly(reader: &mut impl BufRead, n: usize, out: &mut Vec<u8>) -> io::Result<()> {
    let read = reader.take(n as u64).read_to_end(out)?;
    if read < n {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    Ok(())
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
    fn responses_on_a_kept_alive_connection_are_read_one_after_the_other() -> anyhow::Result<()> {
        let mut stream = io::Cursor::new(
            &b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\nx-backend: third\r\n\r\nabc\
               HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\n\
               Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"[..],
        );
        let first = read_response(&mut stream)?;
        assert_eq!(
            (first.status, first.header("x-backend"), first.keep_alive),
            (200, Some("third"), true)
        );
        let second = read_response(&mut stream)?;
        assert_eq!((second.status, second.keep_alive), (503, false));
        assert_eq!(
            read_response(&mut stream).unwrap_err().kind(),
            io::ErrorKind::UnexpectedEof
        );
        Ok(())
    }

    #[test]
    fn truncated_responses_are_errors() {
        assert!(parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nhello").is_err());
        assert!(parse_response(b"HTTP/1.1 200 OK\r\nContent-Le").is_err());
    }
}
