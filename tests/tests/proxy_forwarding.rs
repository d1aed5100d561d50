//! Requests through `tandem run` reach real backends as the classic pair's did: Apache's
//! access log (the classic `%{X-Forwarded-For}i` format) shows the client's address, the
//! proxy listens on the virtual address before the node holds it (IP_FREEBIND), and the
//! headers the backend gets follow Pound and RFC 9110 (X-Forwarded-*, Host kept, hop-by-hop
//! headers gone), over HTTP/1.1 and HTTP/2.

use std::net::{SocketAddr, SocketAddrV4};
use std::time::Duration;

use tandem_lab::pair::TandemNode;
use tandem_lab::{
    http_get, wait_for_tcp, Apache, EchoBackend, Host, Lab, CLIENT, HTTP1, HTTP2, LB1, VIP,
};

fn node_config(lab: &Lab, node: &Host, listen: SocketAddrV4, extra: &str) -> String {
    format!(
        r#"{node}{extra}
[[service]]
name = "web"
listen = "{listen}"
backends = ["{http1}:80", "{http2}:80"]
"#,
        node = TandemNode::node_section(lab, node),
        http1 = lab.host(HTTP1).ip,
        http2 = lab.host(HTTP2).ip,
    )
}

#[test]
fn apache_logs_the_client_address_for_requests_through_the_vip() {
    let lab = Lab::new().expect("lab");
    let http1 = Apache::start(&lab, lab.host(HTTP1), 80, "http1").expect("apache on http1");
    let http2 = Apache::start(&lab, lab.host(HTTP2), 80, "http2").expect("apache on http2");
    let lb1 = lab.host(LB1);
    let vip = SocketAddrV4::new(VIP, 80);
    // The VIP is not on lb1 yet: the proxy must start anyway (IP_FREEBIND).
    let node = TandemNode::start(&lab, lb1, &node_config(&lab, lb1, vip, "")).expect("tandem run");
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        node.log_text().contains("proxy listening"),
        "the proxy listens before the VIP exists:\n{}",
        node.log_text()
    );
    lb1.run(
        "ip",
        &["addr", "add", &format!("{VIP}/24"), "dev", &lb1.iface],
    )
    .expect("add the VIP on lb1");
    let client = lab.host(CLIENT);
    if let Err(error) = wait_for_tcp(client, SocketAddr::V4(vip), Duration::from_secs(10)) {
        panic!(
            "the proxy does not accept on the VIP: {error:#}\n{}",
            node.log_text()
        );
    }

    for _ in 0..4 {
        let reply = http_get(client, SocketAddr::V4(vip), "/", &[]).expect("GET through the VIP");
        assert_eq!(reply.status, 200, "{reply:?}");
        assert!(reply.body.starts_with("backend http"), "{reply:?}");
    }
    // Round robin: two requests each; Apache writes its line after answering.
    let client_ip = client.ip.to_string();
    for apache in [&http1, &http2] {
        let log = apache
            .wait_for_access_log(2, Duration::from_secs(5))
            .expect("Apache logged the requests");
        for line in &log {
            assert!(
                line.starts_with(&format!("{client_ip} - - ["))
                    && line.contains("\"GET / HTTP/1.1\" 200"),
                "Apache's classic log shows the client {client_ip}, not the proxy: {line}"
            );
        }
    }
}

#[test]
fn backends_get_forwarded_headers_without_hop_by_hop_ones() {
    let lab = Lab::new().expect("lab");
    let _http1 = EchoBackend::start(lab.host(HTTP1), 80, "http1").expect("echo on http1");
    let _http2 = EchoBackend::start(lab.host(HTTP2), 80, "http2").expect("echo on http2");
    let lb1 = lab.host(LB1);
    let listen = SocketAddrV4::new(lb1.ip, 8080);
    let node = TandemNode::start(&lab, lb1, &node_config(&lab, lb1, listen, "")).expect("tandem");
    let client = lab.host(CLIENT);
    let proxy = SocketAddr::V4(listen);
    if let Err(error) = wait_for_tcp(client, proxy, Duration::from_secs(10)) {
        panic!("the proxy does not accept: {error:#}\n{}", node.log_text());
    }

    let reply = http_get(
        client,
        proxy,
        "/path?q=1",
        &[
            ("Host", "www.example.com"),
            ("X-Forwarded-For", "203.0.113.9"),
            ("Connection", "X-Hop"),
            ("X-Hop", "must not pass"),
            ("Keep-Alive", "timeout=5"),
            ("X-End-To-End", "passes"),
        ],
    )
    .expect("GET through the proxy");
    assert_eq!(reply.status, 200, "{reply:?}");
    let body = reply.body.to_ascii_lowercase();
    for expected in [
        "get /path?q=1 http/1.1",
        "host: www.example.com",
        "x-forwarded-for: 203.0.113.9, 198.18.0.10",
        "x-forwarded-proto: http",
        "x-forwarded-port: 8080",
        "x-end-to-end: passes",
    ] {
        assert!(
            body.contains(expected),
            "the backend got {expected:?}:\n{body}"
        );
    }
    for removed in ["x-hop", "keep-alive", "connection: x-hop"] {
        assert!(
            !body.contains(removed),
            "the backend did not get {removed:?}:\n{body}"
        );
    }

    // HTTP/2 from the client (prior knowledge, cleartext): the backend still gets HTTP/1.1
    // with the client's authority as Host.
    let h2 = client
        .run(
            "curl",
            &[
                "-s",
                "--http2-prior-knowledge",
                "-w",
                "\\n%{http_version}",
                &format!("http://{listen}/h2"),
            ],
        )
        .expect("curl over HTTP/2");
    assert!(h2.ends_with("\n2"), "curl spoke HTTP/2: {h2}");
    assert!(h2.contains(&format!("host: {listen}")), "{h2}");
    assert!(h2.contains("GET /h2 HTTP/1.1"), "{h2}");

    // Turned off, the X-Forwarded-* headers are left as the client sent them.
    drop(node);
    let off =
        "\n[proxy]\nx_forwarded_for = false\nx_forwarded_proto = false\nx_forwarded_port = false\n";
    let node = TandemNode::start(&lab, lb1, &node_config(&lab, lb1, listen, off)).expect("tandem");
    if let Err(error) = wait_for_tcp(client, proxy, Duration::from_secs(10)) {
        panic!("the proxy does not accept: {error:#}\n{}", node.log_text());
    }
    let reply = http_get(client, proxy, "/", &[("X-Forwarded-For", "203.0.113.9")]).expect("GET");
    let body = reply.body.to_ascii_lowercase();
    assert!(body.contains("x-forwarded-for: 203.0.113.9\n"), "{body}");
    assert!(
        !body.contains("x-forwarded-proto") && !body.contains("x-forwarded-port"),
        "{body}"
    );
}
