//! What the proxy does with requests it must not pass on, and with backends that fail, seen
//! from a client in the lab: malformed heads (400), smuggling attempts (400), unknown transfer
//! codings (501), oversized heads (431), a backend that never answers (504), no backend left
//! (503), and a slowloris client, which is cut off without slowing anyone else down. Over
//! HTTP/2: malformed requests are reset (RFC 9113 8.1.1) and the connection serves on, a
//! protocol violation ends the connection with GOAWAY, an oversized header list gets 431.
//!
//! Each test runs `tandem run` on lb1 (its own address, no VRRP) in front of echo backends on
//! http1 and http2, and talks to it over raw TCP from the client host.

use std::net::{SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

use tandem_lab::pair::TandemNode;
use tandem_lab::raw_h2::{
    self, frame, frames, literal, read_all, DATA, END_HEADERS, END_STREAM, GET_BLOCK, GOAWAY,
    HEADERS, PROTOCOL_ERROR, RST_STREAM,
};
use tandem_lab::raw_http::{exchange, trickle, SilentBackend};
use tandem_lab::{http_get, wait_for_tcp, EchoBackend, Host, Lab, CLIENT, HTTP1, HTTP2, LB1};

const PORT: u16 = 8080;
/// Short enough to keep the tests quick, long enough for a loaded 2-core machine.
const HEADER_TIMEOUT: Duration = Duration::from_secs(2);
const BACKEND_TIMEOUT: Duration = Duration::from_secs(2);

/// A node config with one service per `(name, port, backends)`, on lb1's own address.
fn node_config(lab: &Lab, node: &Host, services: &[(&str, u16, &[SocketAddrV4])]) -> String {
    let mut config = format!(
        r#"{node}
[proxy]
header_timeout = "{header}s"
backend_timeout = "{backend}s"
connect_timeout = "1s"
max_header_size = 4096
access_log = {{ level = 2, path = "{log}" }}
"#,
        node = TandemNode::node_section(lab, node),
        header = HEADER_TIMEOUT.as_secs(),
        backend = BACKEND_TIMEOUT.as_secs(),
        log = lab.work_dir().join("access.log").display(),
    );
    for (name, port, backends) in services {
        let backends: Vec<String> = backends.iter().map(|b| format!("\"{b}\"")).collect();
        config.push_str(&format!(
            "\n[[service]]\nname = \"{name}\"\nlisten = \"{}:{port}\"\nbackends = [{}]\n",
            node.ip,
            backends.join(", ")
        ));
    }
    config
}

/// The lab with echo backends on http1 and http2 (port 80) and the proxy on lb1.
struct Setup {
    node: TandemNode,
    proxy: SocketAddr,
    _backends: Vec<EchoBackend>,
    lab: Lab,
}

fn setup() -> Setup {
    let lab = Lab::new().expect("lab");
    let backends = vec![
        EchoBackend::start(lab.host(HTTP1), 80, "http1").expect("echo on http1"),
        EchoBackend::start(lab.host(HTTP2), 80, "http2").expect("echo on http2"),
    ];
    let addrs: Vec<SocketAddrV4> = backends.iter().map(EchoBackend::addr).collect();
    let lb1 = lab.host(LB1);
    let config = node_config(&lab, lb1, &[("web", PORT, &addrs)]);
    let node = TandemNode::start(&lab, lb1, &config).expect("tandem run");
    let proxy = SocketAddr::V4(SocketAddrV4::new(lb1.ip, PORT));
    if let Err(error) = wait_for_tcp(lab.host(CLIENT), proxy, Duration::from_secs(10)) {
        panic!("the proxy does not accept: {error:#}\n{}", node.log_text());
    }
    Setup {
        node,
        proxy,
        _backends: backends,
        lab,
    }
}

fn send(setup: &Setup, request: &[u8]) -> tandem_lab::raw_http::RawReply {
    exchange(
        setup.lab.host(CLIENT),
        setup.proxy,
        request,
        Duration::from_secs(5),
    )
    .expect("exchange with the proxy")
}

#[test]
fn bad_framing_is_refused_with_the_rfc_status_and_the_connection_closed() {
    let setup = setup();
    let cases: [(&str, &[u8], u16); 8] = [
        ("no colon in a header", b"GET / HTTP/1.1\r\nHost lb1\r\n\r\n", 400),
        ("garbage request line", b"\x01\x02 hello there\r\n\r\n", 400),
        (
            "Content-Length and Transfer-Encoding (CL.TE smuggling)",
            b"POST / HTTP/1.1\r\nHost: lb1\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nG",
            400,
        ),
        (
            "Transfer-Encoding then Content-Length (TE.CL smuggling)",
            b"POST / HTTP/1.1\r\nHost: lb1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n8\r\nSMUGGLED\r\n0\r\n\r\n",
            400,
        ),
        (
            "two different Content-Length values",
            b"POST / HTTP/1.1\r\nHost: lb1\r\nContent-Length: 5\r\nContent-Length: 7\r\n\r\nhello",
            400,
        ),
        (
            "unknown transfer coding",
            b"POST / HTTP/1.1\r\nHost: lb1\r\nTransfer-Encoding: gzip\r\n\r\n",
            501,
        ),
        (
            "a coding before chunked that the proxy does not know",
            b"POST / HTTP/1.1\r\nHost: lb1\r\nTransfer-Encoding: x-custom, chunked\r\n\r\n0\r\n\r\n",
            501,
        ),
        (
            "a head over max_header_size (4096)",
            &[
                &b"GET / HTTP/1.1\r\nHost: lb1\r\nX-Big: "[..],
                &[b'a'; 8000][..],
                &b"\r\n\r\n"[..],
            ]
            .concat(),
            431,
        ),
    ];
    for (what, request, status) in cases {
        let reply = send(&setup, request);
        assert_eq!(
            reply.statuses(),
            [status],
            "{what}: {:?}\n{}",
            reply.text(),
            setup.node.log_text()
        );
        assert!(
            reply.closed,
            "{what}: the connection is closed after the refusal"
        );
    }
    // None of it stalled or crashed the proxy.
    let ok = http_get(setup.lab.host(CLIENT), setup.proxy, "/", &[]).expect("a good request");
    assert_eq!(ok.status, 200);
}

#[test]
fn a_smuggled_request_never_reaches_a_backend() {
    let setup = setup();
    // A good request, then a CL.TE attempt whose "body" hides a second request: the backend
    // must see the first only, and the client gets 200 then 400.
    let reply = send(
        &setup,
        b"GET /first HTTP/1.1\r\nHost: lb1\r\n\r\n\
          POST /outer HTTP/1.1\r\nHost: lb1\r\nContent-Length: 44\r\nTransfer-Encoding: chunked\r\n\r\n\
          0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: lb1\r\n\r\n",
    );
    assert_eq!(reply.statuses(), [200, 400], "{}", reply.text());
    assert!(reply.text().contains("GET /first"));
    assert!(!reply.text().contains("/smuggled"), "{}", reply.text());
    let log = std::fs::read_to_string(setup.lab.work_dir().join("access.log")).unwrap_or_default();
    assert!(!log.contains("/smuggled"), "the access log: {log}");
}

#[test]
fn a_backend_that_never_answers_gets_504_and_no_backend_gets_503() {
    let lab = Lab::new().expect("lab");
    let silent = SilentBackend::start(lab.host(HTTP1), 80).expect("silent backend");
    let lb1 = lab.host(LB1);
    let refused = SocketAddrV4::new(lab.host(HTTP2).ip, 81);
    let silent_addr = match silent.addr {
        SocketAddr::V4(v4) => v4,
        SocketAddr::V6(_) => unreachable!("the lab is IPv4"),
    };
    // Two services: one whose only backend hangs, one whose only backend refuses.
    let config = node_config(
        &lab,
        lb1,
        &[
            ("hung", PORT, &[silent_addr]),
            ("down", PORT + 1, &[refused]),
        ],
    );
    let node = TandemNode::start(&lab, lb1, &config).expect("tandem run");
    let client = lab.host(CLIENT);
    let hung = SocketAddr::V4(SocketAddrV4::new(lb1.ip, PORT));
    let down = SocketAddr::V4(SocketAddrV4::new(lb1.ip, PORT + 1));
    for addr in [hung, down] {
        if let Err(error) = wait_for_tcp(client, addr, Duration::from_secs(10)) {
            panic!("the proxy does not accept: {error:#}\n{}", node.log_text());
        }
    }

    let started = Instant::now();
    let reply = http_get(client, hung, "/slow", &[]).expect("an answer from the proxy");
    assert_eq!(reply.status, 504, "{reply:?}\n{}", node.log_text());
    assert!(
        started.elapsed() >= BACKEND_TIMEOUT,
        "504 only after the backend timeout"
    );

    let reply = http_get(client, down, "/", &[]).expect("an answer from the proxy");
    assert_eq!(reply.status, 503, "{reply:?}\n{}", node.log_text());
    assert!(
        reply.body.contains("Service Unavailable"),
        "a short text body: {:?}",
        reply.body
    );
}

#[test]
fn a_slowloris_client_is_cut_off_and_does_not_delay_others() {
    let setup = setup();
    let client = setup.lab.host(CLIENT);
    let proxy = setup.proxy;
    let head =
        b"GET / HTTP/1.1\r\nHost: lb1\r\nUser-Agent: slowloris\r\nX-Padding: 0123456789\r\n\r\n";
    std::thread::scope(|scope| {
        let loris = scope.spawn(|| {
            // One byte a second would take over a minute; the proxy must not wait that long.
            trickle(
                client,
                proxy,
                head,
                Duration::from_secs(1),
                Duration::from_secs(30),
            )
        });
        // Meanwhile other clients are served as usual (bounded: 20 requests).
        for _ in 0..20 {
            let reply = http_get(client, proxy, "/other", &[]).expect("another client");
            assert_eq!(reply.status, 200);
            std::thread::sleep(Duration::from_millis(50));
        }
        let reply = loris
            .join()
            .expect("slowloris thread")
            .expect("slowloris client");
        assert!(
            reply.closed,
            "the slow client is disconnected: {reply:?}\n{}",
            setup.node.log_text()
        );
        assert!(
            reply.elapsed < HEADER_TIMEOUT * 4,
            "cut off at the header timeout ({HEADER_TIMEOUT:?}), not after {:?}",
            reply.elapsed
        );
        assert!(
            reply.statuses().is_empty(),
            "it got no response: {}",
            reply.text()
        );
    });
}

/// A raw HTTP/2 connection to the proxy, `requests` sent on it; what came back within 2 s,
/// and whether the proxy closed the connection.
fn h2_exchange(setup: &Setup, requests: &[u8]) -> (Vec<u8>, bool) {
    let mut stream = raw_h2::connect(setup.lab.host(CLIENT), setup.proxy).expect("HTTP/2");
    std::io::Write::write_all(&mut stream, requests).expect("requests");
    read_all(&mut stream, Duration::from_secs(2))
}

/// The first byte of a response head that says 200 (the static table's index 8).
const STATUS_200: u8 = 0x88;

#[test]
fn malformed_http2_requests_are_reset_and_the_connection_serves_on() {
    let setup = setup();
    let with = |field: Vec<u8>| {
        let mut block = GET_BLOCK.to_vec();
        block.extend(field);
        block
    };
    let cases: [(&str, Vec<u8>); 4] = [
        ("an uppercase header name", with(literal(b"X-Upper", b"1"))),
        (
            "a connection-specific header",
            with(literal(b"connection", b"close")),
        ),
        ("TE other than trailers", with(literal(b"te", b"gzip"))),
        // :method GET, :scheme http, :authority lb1: no :path.
        ("no :path", vec![0x82, 0x86, 0x01, 0x03, b'l', b'b', b'1']),
    ];
    let mut requests = Vec::new();
    for (n, (_, block)) in cases.iter().enumerate() {
        let id = 2 * u32::try_from(n).expect("few") + 1;
        requests.extend(frame(HEADERS, END_STREAM | END_HEADERS, id, block));
    }
    let valid = 2 * u32::try_from(cases.len()).expect("few") + 1;
    requests.extend(frame(HEADERS, END_STREAM | END_HEADERS, valid, &GET_BLOCK));
    let (bytes, closed) = h2_exchange(&setup, &requests);
    let frames = frames(&bytes);
    for (n, (case, _)) in cases.iter().enumerate() {
        let id = 2 * u32::try_from(n).expect("few") + 1;
        let reset = frames
            .iter()
            .find(|f| f.stream == id && f.kind == RST_STREAM);
        assert_eq!(
            reset.and_then(|f| f.error_code()),
            Some(PROTOCOL_ERROR),
            "{case}: {frames:?}"
        );
    }
    let answer = frames
        .iter()
        .find(|f| f.stream == valid && f.kind == HEADERS)
        .expect("the valid request was answered");
    assert_eq!(answer.payload.first(), Some(&STATUS_200));
    assert!(!closed, "the connection was closed");
}

#[test]
fn an_http2_protocol_violation_ends_the_connection_with_goaway() {
    let setup = setup();
    // DATA must belong to a stream (RFC 9113 6.1): on stream 0 it is a connection error.
    let (bytes, closed) = h2_exchange(&setup, &frame(DATA, 0, 0, b"hello"));
    let goaway = frames(&bytes)
        .into_iter()
        .find(|f| f.kind == GOAWAY)
        .expect("a GOAWAY");
    assert_eq!(goaway.error_code(), Some(PROTOCOL_ERROR));
    assert!(closed, "the connection stayed open");
    let url = format!("http://{}/", setup.proxy);
    let code = setup
        .lab
        .host(CLIENT)
        .run(
            "curl",
            &[
                "--http2-prior-knowledge",
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                &url,
            ],
        )
        .expect("curl");
    assert_eq!(code, "200", "the proxy serves on");
}

#[test]
fn an_http2_header_list_over_max_header_size_gets_431() {
    let setup = setup();
    // max_header_size is 4096 here: a 5,000-byte value is over it.
    let mut block = GET_BLOCK.to_vec();
    block.extend(literal(b"x-big", &[b'a'; 5000]));
    let mut requests = frame(HEADERS, END_STREAM | END_HEADERS, 1, &block);
    requests.extend(frame(HEADERS, END_STREAM | END_HEADERS, 3, &GET_BLOCK));
    let (bytes, _) = h2_exchange(&setup, &requests);
    let frames = frames(&bytes);
    let refused = frames
        .iter()
        .find(|f| f.stream == 1 && f.kind == HEADERS)
        .expect("an answer to the oversized request");
    // :status as a literal with the static name (index 8): 0x08, length 3, "431".
    assert_eq!(refused.payload, b"\x08\x03431", "{frames:?}");
    assert!(refused.flags & END_STREAM != 0);
    let answer = frames
        .iter()
        .find(|f| f.stream == 3 && f.kind == HEADERS)
        .expect("the next request was answered");
    assert_eq!(answer.payload.first(), Some(&STATUS_200));
}
