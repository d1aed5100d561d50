//! What the proxy does with requests it must not pass on, and with backends that fail, seen
//! from a client in the lab: malformed heads (400), smuggling attempts (400), unknown transfer
//! codings (501), oversized heads (431), a backend that never answers (504), no backend left
//! (503), and a slowloris client, which is cut off without slowing anyone else down.
//!
//! Each test runs `tandem run` on lb1 (its own address, no VRRP) in front of echo backends on
//! http1 and http2, and talks to it over raw TCP from the client host.

use std::net::{SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

use tandem_lab::pair::TandemNode;
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
