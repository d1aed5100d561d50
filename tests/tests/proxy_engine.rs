//! The HTTP/1.1 engine with the shapes of traffic real clients send, through `tandem run` to the
//! lab's echo backends: pipelined requests answered in order, chunked request bodies passed on
//! whole, `Expect: 100-continue`, HEAD answered without a body, and HTTP/1.0 clients with and
//! without keep-alive.

use std::net::{SocketAddr, SocketAddrV4};
use std::time::Duration;

use tandem_lab::pair::TandemNode;
use tandem_lab::raw_http::{exchange, RawReply};
use tandem_lab::{wait_for_tcp, EchoBackend, Lab, CLIENT, HTTP1, LB1};

/// A lab with one echo backend behind a node; `check` gets the proxy's address.
fn with_proxy(check: impl FnOnce(&Lab, SocketAddr)) {
    let lab = Lab::new().expect("lab");
    let _backend = EchoBackend::start(lab.host(HTTP1), 80, "http1").expect("echo on http1");
    let lb1 = lab.host(LB1);
    let listen = SocketAddrV4::new(lb1.ip, 8080);
    let config = format!(
        "{node}\n[proxy]\naccess_log = {{ level = 0 }}\n\n[[service]]\nname = \"web\"\n\
         listen = \"{listen}\"\nbackends = [\"{backend}:80\"]\n",
        node = TandemNode::node_section(&lab, lb1),
        backend = lab.host(HTTP1).ip,
    );
    let node = TandemNode::start(&lab, lb1, &config).expect("tandem run");
    let proxy = SocketAddr::V4(listen);
    if let Err(error) = wait_for_tcp(lab.host(CLIENT), proxy, Duration::from_secs(10)) {
        panic!("the proxy does not accept: {error:#}\n{}", node.log_text());
    }
    check(&lab, proxy);
}

fn send(lab: &Lab, proxy: SocketAddr, request: &[u8]) -> RawReply {
    exchange(lab.host(CLIENT), proxy, request, Duration::from_secs(5)).expect("exchange")
}

#[test]
fn pipelined_requests_are_answered_in_order_and_a_chunked_body_arrives_whole() {
    with_proxy(|lab, proxy| {
        let reply = send(
            lab,
            proxy,
            b"GET /size/3 HTTP/1.1\r\nHost: lb\r\n\r\n\
              POST /upload HTTP/1.1\r\nHost: lb\r\nTransfer-Encoding: chunked\r\n\r\n\
              5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n\
              GET /size/4 HTTP/1.1\r\nHost: lb\r\nConnection: close\r\n\r\n",
        );
        assert_eq!(reply.statuses(), [200, 200, 200], "{}", reply.text());
        let text = reply.text();
        let upload = text
            .find("POST /upload")
            .expect("the POST reached the backend");
        assert!(
            text[upload..].contains("\n\nhello world"),
            "the backend got the chunked body whole:\n{text}"
        );
        assert!(text.ends_with("xxxx"), "the last answer is last:\n{text}");
        assert!(reply.closed, "Connection: close is honoured");
    });
}

#[test]
fn expect_100_continue_gets_its_interim_answer_and_the_body_goes_through() {
    with_proxy(|lab, proxy| {
        let reply = send(
            lab,
            proxy,
            b"POST /form HTTP/1.1\r\nHost: lb\r\nContent-Length: 7\r\nExpect: 100-continue\r\n\
              Connection: close\r\n\r\npayload",
        );
        assert_eq!(reply.statuses(), [100, 200], "{}", reply.text());
        assert!(reply.text().ends_with("\n\npayload"), "{}", reply.text());
    });
}

#[test]
fn head_has_no_body_and_http10_clients_get_the_connection_they_asked_for() {
    with_proxy(|lab, proxy| {
        // HEAD then GET on one connection: the GET's answer follows the HEAD's head at once.
        let reply = send(
            lab,
            proxy,
            b"HEAD /size/100 HTTP/1.1\r\nHost: lb\r\n\r\n\
              GET /size/2 HTTP/1.1\r\nHost: lb\r\nConnection: close\r\n\r\n",
        );
        assert_eq!(reply.statuses(), [200, 200], "{}", reply.text());
        assert!(
            !reply.text().contains(&"x".repeat(100)),
            "no body after HEAD:\n{}",
            reply.text()
        );
        assert!(reply.text().ends_with("\r\n\r\nxx"), "{}", reply.text());

        // HTTP/1.0 without keep-alive: answered, then closed.
        let reply = send(lab, proxy, b"GET /size/1 HTTP/1.0\r\nHost: lb\r\n\r\n");
        assert_eq!(reply.statuses(), [200], "{}", reply.text());
        assert!(reply.closed, "an HTTP/1.0 client's connection is closed");

        // HTTP/1.0 with keep-alive: told so, and a second request on the connection works.
        let reply = send(
            lab,
            proxy,
            b"GET /size/1 HTTP/1.0\r\nHost: lb\r\nConnection: keep-alive\r\n\r\n\
              GET /size/1 HTTP/1.0\r\nHost: lb\r\n\r\n",
        );
        assert_eq!(reply.statuses(), [200, 200], "{}", reply.text());
        assert!(
            reply
                .text()
                .to_ascii_lowercase()
                .contains("connection: keep-alive"),
            "{}",
            reply.text()
        );
    });
}
