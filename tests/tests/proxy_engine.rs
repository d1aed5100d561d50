//! The engine with the shapes of traffic real clients send, through `tandem run` to the lab's
//! echo backends: over HTTP/1.1, pipelined requests answered in order, chunked request bodies
//! passed on whole, `Expect: 100-continue`, HEAD answered without a body, and HTTP/1.0 clients
//! with and without keep-alive; over HTTP/2 (the engine's own server), bodies larger than the
//! flow-control windows both ways, many streams of large answers at once, and cookie crumbs.

use std::net::{SocketAddr, SocketAddrV4};
use std::time::Duration;

use tandem_lab::pair::TandemNode;
use tandem_lab::raw_h2::{self, frame, frames, literal, read_all, DATA, END_HEADERS, END_STREAM};
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

#[test]
fn an_http2_request_body_larger_than_its_windows_arrives_whole() {
    with_proxy(|lab, proxy| {
        // 1,000,000 bytes: four times the stream's window and about the connection's, so the
        // upload goes on only as the proxy gives the windows back.
        let script = format!(
            "set -e; d=$(mktemp -d); seq 1 200000 | head -c 1000000 > $d/body; \
             curl --http2-prior-knowledge -s --max-time 20 --data-binary @$d/body \
             -o $d/answer http://{proxy}/upload; \
             if tail -c 1000000 $d/answer | cmp -s - $d/body; then echo same; else echo differs; fi; \
             rm -rf $d"
        );
        let out = lab.host(CLIENT).run("sh", &["-c", &script]).expect("curl");
        assert_eq!(out.trim(), "same", "the backend echoed another body");
    });
}

#[test]
fn an_http2_answer_larger_than_the_clients_windows_arrives_whole_as_it_opens_them() {
    with_proxy(|lab, proxy| {
        // nghttp with windows of 64 KiB for the stream and the connection: 2 MB go out only
        // as the client's WINDOW_UPDATEs come.
        let script = format!("nghttp -w 16 -W 16 http://{proxy}/size/2000000 | wc -c");
        let out = lab
            .host(CLIENT)
            .run("sh", &["-c", &script])
            .expect("nghttp");
        assert_eq!(out.trim(), "2000000");
    });
}

#[test]
fn many_http2_streams_of_large_answers_at_once_all_complete() {
    with_proxy(|lab, proxy| {
        // 4 connections x 50 streams in flight, 2,000 answers of 50 KB: the streams share the
        // connections' windows and the proxy's output, and none is left behind.
        let url = format!("http://{proxy}/size/50000");
        let out = lab
            .host(CLIENT)
            .run("h2load", &["-n", "2000", "-c", "4", "-m", "50", &url])
            .expect("h2load");
        assert!(
            out.contains("2000 succeeded, 0 failed, 0 errored, 0 timeout"),
            "{out}"
        );
    });
}

#[test]
fn cookie_crumbs_from_an_http2_client_reach_an_http1_backend_as_one_header() {
    with_proxy(|lab, proxy| {
        let mut stream = raw_h2::connect(lab.host(CLIENT), proxy).expect("HTTP/2 connection");
        let mut block = raw_h2::GET_BLOCK.to_vec();
        block.extend(literal(b"cookie", b"a=1"));
        block.extend(literal(b"cookie", b"b=2"));
        let request = frame(raw_h2::HEADERS, END_STREAM | END_HEADERS, 1, &block);
        std::io::Write::write_all(&mut stream, &request).expect("request");
        let (bytes, _) = read_all(&mut stream, Duration::from_secs(2));
        let body: Vec<u8> = frames(&bytes)
            .iter()
            .filter(|f| f.kind == DATA && f.stream == 1)
            .flat_map(|f| f.payload.iter().copied())
            .collect();
        let body = String::from_utf8_lossy(&body);
        assert!(body.contains("cookie: a=1; b=2\n"), "{body}");
    });
}
