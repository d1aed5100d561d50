//! `tandem-echo --listen ADDR:PORT --name NAME`: the lab's echo backend, an HTTP/1.1 server
//! (keep-alive) that tells who answered and what it received, so proxy tests can assert on
//! which backend served a request and which headers the proxy forwarded.
//!
//! Every response is 200 with `X-Backend: NAME` and `Content-Type: text/plain`. The body is
//! `backend NAME`, the request line, one `name: value` line per request header and, if the
//! request had a body, an empty line and that body. Two extras:
//! - `?set-cookie=NAME=VALUE` (repeatable) adds `Set-Cookie: NAME=VALUE; Path=/`, for session
//!   affinity tests that learn sessions from the backend's Set-Cookie;
//! - `/size/N` answers with a body of exactly N bytes, for benchmarks.
//!
//! One thread (tokio current-thread runtime): several instances share a small machine.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE, SET_COOKIE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

/// Largest request body echoed back; larger ones get 413.
const MAX_REQUEST_BODY: usize = 1 << 20;
/// Largest `/size/N` served.
const MAX_SIZED_BODY: usize = 64 << 20;
/// Pause after a failed accept (e.g. out of file descriptors), so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

const USAGE: &str = "usage: tandem-echo --listen ADDR:PORT --name NAME";

struct Args {
    listen: SocketAddr,
    name: String,
}

impl Args {
    fn parse(mut args: impl Iterator<Item = String>) -> anyhow::Result<Args> {
        let mut listen = None;
        let mut name = None;
        while let Some(flag) = args.next() {
            let mut value = |flag: &str| {
                args.next()
                    .with_context(|| format!("{flag} needs a value; {USAGE}"))
            };
            match flag.as_str() {
                "--listen" => {
                    let text = value("--listen")?;
                    listen = Some(text.parse::<SocketAddr>().with_context(|| {
                        format!("--listen {text:?} is not an ADDR:PORT like 198.18.0.102:80")
                    })?);
                }
                "--name" => name = Some(value("--name")?),
                "-h" | "--help" => bail!("{USAGE}"),
                other => bail!("unknown argument {other:?}; {USAGE}"),
            }
        }
        let name = name.with_context(|| format!("--name is required; {USAGE}"))?;
        // The name goes into a header: reject what a header cannot carry now, not per request.
        HeaderValue::from_str(&name)
            .with_context(|| format!("--name {name:?} cannot be an HTTP header value"))?;
        Ok(Args {
            listen: listen.with_context(|| format!("--listen is required; {USAGE}"))?,
            name,
        })
    }
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("tandem-echo: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    let args = Args::parse(std::env::args().skip(1))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("creating the tokio runtime")?;
    runtime.block_on(serve(args))
}

async fn serve(args: Args) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| {
            format!(
                "listening on {}: is that address configured on this host and the port free?",
                args.listen
            )
        })?;
    let name: Arc<str> = Arc::from(args.name);
    // Runs until the process is killed: that is how the lab stops a backend.
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _peer)) => stream,
            Err(error) => {
                eprintln!("tandem-echo: accept on {} failed: {error}", args.listen);
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        // Small responses should leave at once, not wait for Nagle.
        let _ = stream.set_nodelay(true);
        let name = Arc::clone(&name);
        tokio::spawn(async move {
            let service = service_fn(move |request| respond(Arc::clone(&name), request));
            // Errors here are clients going away mid-request: nothing to report.
            let _ = http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn respond(
    name: Arc<str>,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = request.into_parts();
    let request_body = match Limited::new(body, MAX_REQUEST_BODY).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => {
            return Ok(plain(
                &name,
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("request body over {MAX_REQUEST_BODY} bytes or broken\n"),
            ))
        }
    };

    let cookies = match requested_cookies(parts.uri.query().unwrap_or_default()) {
        Ok(cookies) => cookies,
        Err(error) => return Ok(plain(&name, StatusCode::BAD_REQUEST, format!("{error}\n"))),
    };

    let body = if let Some(size) = parts.uri.path().strip_prefix("/size/") {
        match size.parse::<usize>() {
            Ok(size) if size <= MAX_SIZED_BODY => Bytes::from(vec![b'x'; size]),
            _ => {
                return Ok(plain(
                    &name,
                    StatusCode::BAD_REQUEST,
                    format!("/size/N needs N between 0 and {MAX_SIZED_BODY}\n"),
                ))
            }
        }
    } else {
        let mut text = format!(
            "backend {name}\n{} {} {:?}\n",
            parts.method, parts.uri, parts.version
        );
        for (header, value) in &parts.headers {
            text.push_str(&format!(
                "{header}: {}\n",
                String::from_utf8_lossy(value.as_bytes())
            ));
        }
        let mut body = text.into_bytes();
        if !request_body.is_empty() {
            body.push(b'\n');
            body.extend_from_slice(&request_body);
        }
        Bytes::from(body)
    };

    let mut response = plain(&name, StatusCode::OK, body);
    for cookie in cookies {
        response.headers_mut().append(SET_COOKIE, cookie);
    }
    Ok(response)
}

/// A response with the headers every answer carries.
fn plain(name: &str, status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    // Checked at start-up that the name is a valid header value.
    if let Ok(value) = HeaderValue::from_str(name) {
        headers.insert("x-backend", value);
    }
    response
}

/// The `Set-Cookie` values asked for with `set-cookie=NAME=VALUE` in the query.
fn requested_cookies(query: &str) -> anyhow::Result<Vec<HeaderValue>> {
    query
        .split('&')
        .filter_map(|pair| pair.strip_prefix("set-cookie="))
        .map(|cookie| {
            let cookie = percent_decode(cookie);
            if !cookie.contains('=') {
                bail!("set-cookie={cookie:?} must be NAME=VALUE");
            }
            HeaderValue::from_str(&format!("{cookie}; Path=/"))
                .with_context(|| format!("set-cookie={cookie:?} is not a valid header value"))
        })
        .collect()
}

/// Decodes `%XX` escapes (so `set-cookie=ID%3D1` works as well as `set-cookie=ID=1`).
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        let escaped = (bytes[index] == b'%')
            .then(|| bytes.get(index + 1..index + 3))
            .flatten()
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match escaped {
            Some(byte) => {
                decoded.push(byte);
                index += 3;
            }
            None => {
                decoded.push(bytes[index]);
                index += 1;
            }
        }
    }
    String::from_utf8_lossy(&decoded).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_taken_from_the_query() -> anyhow::Result<()> {
        let cookies = requested_cookies("a=1&set-cookie=JSESSIONID=abc&set-cookie=X%3D2")?;
        assert_eq!(cookies, ["JSESSIONID=abc; Path=/", "X=2; Path=/"]);
        assert!(requested_cookies("set-cookie=novalue").is_err());
        assert!(requested_cookies("").map(|c| c.is_empty())?);
        Ok(())
    }

    #[test]
    fn arguments_need_listen_and_name() {
        let parse = |args: &[&str]| Args::parse(args.iter().map(|s| s.to_string()));
        assert!(parse(&["--listen", "127.0.0.1:8080", "--name", "http1"]).is_ok());
        assert!(parse(&["--listen", "127.0.0.1:8080"]).is_err());
        assert!(parse(&["--name", "http1"]).is_err());
        assert!(parse(&["--listen", "nonsense", "--name", "http1"]).is_err());
        assert!(parse(&["--listen", "127.0.0.1:8080", "--name", "bad\nname"]).is_err());
    }
}
