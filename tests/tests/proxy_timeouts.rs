//! Slow, stalled and hostile peers cannot hold the proxy: a backend that stops in the middle of
//! a body (`server_timeout`) or dies there, a client that stops reading a large answer or
//! sending its body (`client_timeout`), HTTP/2 connections that only send PINGs
//! (`header_timeout`), keep their flow-control window shut, reset streams in a burst
//! (CVE-2023-44487) or send an endless run of CONTINUATION frames. Each test asserts what the
//! client and the backend see.
//!
//! Each test runs `tandem run` on lb1 (its own address, no VRRP) with one service, and talks
//! to it from the client host, over raw TCP where a real client would not misbehave so.

use std::io::Write as _;
use std::net::{SocketAddr, SocketAddrV4, TcpStream};
use std::time::{Duration, Instant};

use tandem_lab::pair::TandemNode;
use tandem_lab::raw_h2::{
    self, frame, frames, read_all, CONTINUATION, END_HEADERS, END_STREAM, GET_BLOCK, GOAWAY,
    HEADERS, PING, RST_STREAM, SETTINGS,
};
use tandem_lab::raw_http::{exchange, Script, ScriptedBackend};
use tandem_lab::{wait_for_tcp, EchoBackend, Host, Lab, CLIENT, HTTP1, LB1};

const PORT: u16 = 8080;
/// Short enough to keep the tests quick, long enough for a loaded 2-core machine.
const HEADER_TIMEOUT: Duration = Duration::from_secs(2);
const CLIENT_TIMEOUT: Duration = Duration::from_secs(2);
const SERVER_TIMEOUT: Duration = Duration::from_secs(2);
/// What a timeout may overrun by on a busy machine before the test calls it a failure.
const SLACK: Duration = Duration::from_secs(3);

/// A node config with one service, "web", in front of `backend`.
fn node_config(lab: &Lab, node: &Host, backend: SocketAddr, proxy_extra: &str) -> String {
    format!(
        r#"{node}
[proxy]
header_timeout = "{header}s"
client_timeout = "{client}s"
server_timeout = "{server}s"
backend_timeout = "5s"
connect_timeout = "1s"
workers = 1
{proxy_extra}

[[service]]
name = "web"
listen = "{ip}:{PORT}"
backends = ["{backend}"]
"#,
        node = TandemNode::node_section(lab, node),
        header = HEADER_TIMEOUT.as_secs(),
        client = CLIENT_TIMEOUT.as_secs(),
        server = SERVER_TIMEOUT.as_secs(),
        ip = node.ip,
    )
}

struct Setup {
    node: TandemNode,
    proxy: SocketAddr,
    lab: Lab,
}

impl Setup {
    fn client(&self) -> &Host {
        self.lab.host(CLIENT)
    }

    /// The "web" service's error count, as `tandem status --json` shows it.
    fn service_errors(&self) -> u64 {
        let status = self.node.status().expect("status");
        status["services"]
            .as_array()
            .and_then(|services| services.iter().find(|s| s["name"] == "web"))
            .and_then(|web| web["errors"].as_u64())
            .unwrap_or_else(|| panic!("no errors for web in {status:#}"))
    }

    /// A plain request from the client host with curl; the status code it got ("000": none).
    fn curl(&self, protocol: &str) -> String {
        let url = format!("http://{}/", self.proxy);
        self.client()
            .run(
                "curl",
                &[
                    protocol,
                    "-s",
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{http_code}",
                    "--max-time",
                    "10",
                    &url,
                ],
            )
            .unwrap_or_else(|error| format!("curl failed: {error:#}"))
    }
}

/// The lab, the proxy on lb1 (with `proxy_extra` in `[proxy]`) and `backend` on http1.
fn setup_with(lab: Lab, backend: SocketAddr, proxy_extra: &str) -> Setup {
    let lb1 = lab.host(LB1);
    let config = node_config(&lab, lb1, backend, proxy_extra);
    let node = TandemNode::start(&lab, lb1, &config).expect("tandem run");
    let proxy = SocketAddr::V4(SocketAddrV4::new(lb1.ip, PORT));
    if let Err(error) = wait_for_tcp(lab.host(CLIENT), proxy, Duration::from_secs(10)) {
        panic!("the proxy does not accept: {error:#}\n{}", node.log_text());
    }
    Setup { node, proxy, lab }
}

fn within(elapsed: Duration, timeout: Duration) -> bool {
    elapsed >= timeout && elapsed < timeout + SLACK
}

#[test]
fn a_backend_that_stalls_mid_body_is_cut_off_after_the_server_timeout_and_counted() {
    let lab = Lab::new().expect("lab");
    let script = Script::StallAfter {
        length: 1000,
        sent: 1,
    };
    let backend = ScriptedBackend::start(lab.host(HTTP1), 80, script).expect("backend");
    let setup = setup_with(lab, backend.addr, "");

    // HTTP/1.1: the head and the one byte arrive, then the connection closes.
    let reply = exchange(
        setup.client(),
        setup.proxy,
        b"GET / HTTP/1.1\r\nHost: lb1\r\n\r\n",
        Duration::from_secs(15),
    )
    .expect("exchange");
    assert_eq!(reply.statuses(), [200], "{}", reply.text());
    assert!(reply.text().ends_with("\r\n\r\nx"), "{:?}", reply.text());
    assert!(reply.closed, "the client's connection stays open");
    assert!(
        within(reply.elapsed, SERVER_TIMEOUT),
        "closed after {:?}; server_timeout is {SERVER_TIMEOUT:?}",
        reply.elapsed
    );
    assert!(
        backend.wait_for_close(Duration::from_secs(5)).is_some(),
        "the backend connection was left open"
    );
    assert_eq!(
        setup.service_errors(),
        1,
        "the stalled body counts as a backend error"
    );

    // HTTP/2: the stream fails (curl reports no complete answer) after the same time.
    let started = Instant::now();
    let code = setup.curl("--http2-prior-knowledge");
    let took = started.elapsed();
    assert!(code.starts_with("curl failed"), "curl got {code}");
    assert!(
        within(took, SERVER_TIMEOUT),
        "the stream failed after {took:?}"
    );
    assert_eq!(setup.service_errors(), 2, "{}", setup.node.log_text());
}

#[test]
fn a_client_that_stops_reading_is_closed_with_its_backend_connection_after_the_client_timeout() {
    let lab = Lab::new().expect("lab");
    let backend = ScriptedBackend::start(lab.host(HTTP1), 80, Script::Endless).expect("backend");
    let setup = setup_with(lab, backend.addr, "");
    let proxy = setup.proxy;
    let mut stream = setup
        .client()
        .in_netns(move || TcpStream::connect_timeout(&proxy, Duration::from_secs(5)))
        .expect("netns")
        .expect("connect");
    let started = Instant::now();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: lb1\r\n\r\n")
        .expect("request");
    // The client reads nothing: the backend's data fills the sockets, then the proxy waits
    // on the client for the client timeout.
    let closed = backend
        .wait_for_close(Duration::from_secs(30))
        .expect("the backend connection is never closed");
    let took = closed - started;
    assert!(
        took >= CLIENT_TIMEOUT && took < Duration::from_secs(15),
        "the backend connection closed after {took:?}"
    );
    assert!(
        read_until_closed(&mut stream, Duration::from_secs(10)),
        "the client's connection is still open"
    );
}

#[test]
fn a_client_that_stops_sending_its_body_gets_408_after_the_client_timeout() {
    let lab = Lab::new().expect("lab");
    let backend = EchoBackend::start(lab.host(HTTP1), 80, "http1").expect("echo on http1");
    let setup = setup_with(lab, SocketAddr::V4(backend.addr()), "");
    let reply = exchange(
        setup.client(),
        setup.proxy,
        b"POST / HTTP/1.1\r\nHost: lb1\r\nContent-Length: 1000\r\n\r\nonly the start",
        Duration::from_secs(15),
    )
    .expect("exchange");
    assert_eq!(reply.statuses(), [408], "{}", reply.text());
    assert!(reply.closed, "the connection stays open after the 408");
    assert!(
        within(reply.elapsed, CLIENT_TIMEOUT),
        "408 after {:?}",
        reply.elapsed
    );
    assert_eq!(setup.curl("--http1.1"), "200", "the proxy serves on");

    // HTTP/2: curl uploads from a pipe that stays silent for 8 s. (curl waits for the end of
    // its upload whatever the answer, so its timings say nothing; the status does: without
    // the client timeout the backend timeout, 5 s, would answer 504 and blame the backend.)
    let url = format!("http://{}/", setup.proxy);
    let script = format!(
        "sleep 8 | curl --http2-prior-knowledge -s -o /dev/null -w '%{{http_code}}' \
         --max-time 15 -T - {url}"
    );
    let code = setup
        .client()
        .run("sh", &["-c", &script])
        .unwrap_or_default();
    assert_eq!(code.trim(), "408", "{}", setup.node.log_text());
    assert_eq!(
        setup.service_errors(),
        0,
        "a slow client is not the backend's error"
    );
}

// HTTP/2 by hand (tandem_lab::raw_h2): what h2load and curl never send.

/// A raw HTTP/2 connection from the client host to the proxy.
fn h2_connect(setup: &Setup) -> TcpStream {
    raw_h2::connect(setup.client(), setup.proxy).expect("HTTP/2 connection")
}

/// Reads until the server closes the connection or `timeout` passes; says whether it closed.
fn read_until_closed(stream: &mut TcpStream, timeout: Duration) -> bool {
    read_all(stream, timeout).1
}

#[test]
fn the_proxy_allows_an_http2_client_100_concurrent_streams() {
    let lab = Lab::new().expect("lab");
    let backend = EchoBackend::start(lab.host(HTTP1), 80, "http1").expect("echo on http1");
    let setup = setup_with(lab, SocketAddr::V4(backend.addr()), "");
    let mut stream = h2_connect(&setup);
    let (bytes, _) = read_all(&mut stream, Duration::from_secs(1));
    let settings = frames(&bytes)
        .into_iter()
        .find(|frame| frame.kind == SETTINGS && frame.flags & 1 == 0)
        .expect("the server's SETTINGS");
    let max_streams = settings.payload.chunks(6).find_map(|setting| {
        (setting[..2] == [0, 3])
            .then(|| u32::from_be_bytes([setting[2], setting[3], setting[4], setting[5]]))
    });
    assert_eq!(max_streams, Some(100));
}

#[test]
fn http2_connections_that_only_ping_do_not_hold_the_connection_budget() {
    let lab = Lab::new().expect("lab");
    let backend = EchoBackend::start(lab.host(HTTP1), 80, "http1").expect("echo on http1");
    let setup = setup_with(lab, SocketAddr::V4(backend.addr()), "max_connections = 4");
    // The whole budget, taken by connections that send a PING every 500 ms and no request.
    let started = Instant::now();
    let pingers: Vec<_> = (0..4)
        .map(|_| {
            let mut stream = h2_connect(&setup);
            std::thread::spawn(move || {
                let ping = frame(PING, 0, 0, &[1, 2, 3, 4, 5, 6, 7, 8]);
                // Bounded: 40 PINGs, 20 s.
                for _ in 0..40 {
                    if stream.write_all(&ping).is_err()
                        || read_until_closed(&mut stream, Duration::from_millis(500))
                    {
                        return Some(Instant::now());
                    }
                }
                None
            })
        })
        .collect();
    // A real client is served once they are gone (it waits in the accept queue till then).
    assert_eq!(setup.curl("--http1.1"), "200", "{}", setup.node.log_text());
    for pinger in pingers {
        let closed = pinger
            .join()
            .expect("pinger")
            .expect("a PING-only connection stayed open");
        let took = closed - started;
        assert!(
            within(took, HEADER_TIMEOUT),
            "a PING-only connection was closed after {took:?}"
        );
    }
}

#[test]
fn an_http2_client_that_resets_streams_in_a_burst_is_disconnected() {
    let lab = Lab::new().expect("lab");
    let backend = EchoBackend::start(lab.host(HTTP1), 80, "http1").expect("echo on http1");
    let setup = setup_with(lab, SocketAddr::V4(backend.addr()), "");
    let mut stream = h2_connect(&setup);
    // 1,000 requests, each cancelled at once (RST_STREAM, CANCEL): the rapid-reset attack.
    let mut burst = Vec::new();
    for n in 0..1000u32 {
        let id = 2 * n + 1;
        burst.extend(frame(HEADERS, END_STREAM | END_HEADERS, id, &GET_BLOCK));
        burst.extend(frame(RST_STREAM, 0, id, &8u32.to_be_bytes()));
    }
    // The proxy may close before it has read it all.
    let _ = stream.write_all(&burst);
    let (bytes, closed) = read_all(&mut stream, Duration::from_secs(10));
    assert!(closed, "the connection survived 1,000 resets");
    let goaway = frames(&bytes).iter().any(|frame| frame.kind == GOAWAY);
    let answered = frames(&bytes)
        .iter()
        .filter(|frame| frame.kind == HEADERS)
        .count();
    assert!(
        answered < 1000,
        "every reset stream was served ({answered}); GOAWAY: {goaway}"
    );
    assert_eq!(
        setup.curl("--http2-prior-knowledge"),
        "200",
        "the proxy serves on"
    );
}

#[test]
fn an_endless_run_of_continuation_frames_is_cut_off() {
    let lab = Lab::new().expect("lab");
    let backend = EchoBackend::start(lab.host(HTTP1), 80, "http1").expect("echo on http1");
    let setup = setup_with(lab, SocketAddr::V4(backend.addr()), "");
    let mut stream = h2_connect(&setup);
    // A header block that never ends: 20,000 CONTINUATION frames of 100 bytes of a header
    // value, 2 MB against max_header_size (16 KiB by default).
    let mut flood = frame(HEADERS, END_STREAM, 1, &GET_BLOCK);
    let literal = [b'a'; 100];
    for _ in 0..20_000 {
        flood.extend(frame(CONTINUATION, 0, 1, &literal));
    }
    let started = Instant::now();
    let _ = stream.write_all(&flood);
    let (bytes, closed) = read_all(&mut stream, Duration::from_secs(10));
    assert!(closed, "the connection is still open");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "closed after {:?}",
        started.elapsed()
    );
    let goaway = frames(&bytes).iter().any(|frame| frame.kind == GOAWAY);
    assert!(goaway, "no GOAWAY before the close");
    assert_eq!(
        setup.curl("--http2-prior-knowledge"),
        "200",
        "the proxy serves on"
    );
}

#[test]
fn an_http2_client_that_keeps_its_window_shut_is_closed_with_its_backend_connection() {
    let lab = Lab::new().expect("lab");
    let backend = ScriptedBackend::start(lab.host(HTTP1), 80, Script::Endless).expect("backend");
    let setup = setup_with(lab, backend.addr, "");
    let mut stream = h2_connect(&setup);
    let started = Instant::now();
    stream
        .write_all(&frame(HEADERS, END_STREAM | END_HEADERS, 1, &GET_BLOCK))
        .expect("request");
    // The client reads what comes but never opens its window (no WINDOW_UPDATE): after the
    // first 64 KiB the response waits on the client.
    let (_, closed) = read_all(&mut stream, Duration::from_secs(15));
    assert!(closed, "the connection is still open");
    let took = started.elapsed();
    assert!(
        within(took, CLIENT_TIMEOUT),
        "the client was cut off after {took:?}"
    );
    assert!(
        backend.wait_for_close(Duration::from_secs(5)).is_some(),
        "the backend connection was left open"
    );
}

#[test]
fn a_backend_that_dies_mid_body_closes_the_clients_connection_and_is_counted() {
    let lab = Lab::new().expect("lab");
    let script = Script::DieAfter {
        length: 100_000,
        sent: 50_000,
    };
    let backend = ScriptedBackend::start(lab.host(HTTP1), 80, script).expect("backend");
    let setup = setup_with(lab, backend.addr, "");
    let reply = exchange(
        setup.client(),
        setup.proxy,
        b"GET / HTTP/1.1\r\nHost: lb1\r\n\r\n",
        Duration::from_secs(10),
    )
    .expect("exchange");
    assert_eq!(reply.statuses(), [200], "{}", reply.text());
    // The client gets what the backend sent and then the close: it can tell the body is
    // short (Content-Length), as with HAProxy.
    let body = reply.bytes.len() - reply.text().find("\r\n\r\n").expect("head end") - 4;
    assert_eq!(body, 50_000);
    assert!(reply.closed, "the client's connection stays open");
    assert!(
        reply.elapsed < Duration::from_secs(5),
        "closed after {:?}",
        reply.elapsed
    );
    assert_eq!(setup.service_errors(), 1);
    // HTTP/2: the stream fails at once too.
    let started = Instant::now();
    let code = setup.curl("--http2-prior-knowledge");
    assert!(code.starts_with("curl failed"), "curl got {code}");
    assert!(started.elapsed() < Duration::from_secs(5));
}
