//! Session replication between two `tandem run` nodes in the lab: a session learned on lb1
//! (from the backend's Set-Cookie) is routed to the same backend by lb2, which never saw it.
//!
//! The session key is chosen so that Maglev would place it on the *other* backend: lb2 can
//! only route it to the learned one if the entry came over the replication link, not because
//! both nodes hash alike.

use std::net::{SocketAddr, SocketAddrV4};
use std::path::Path;
use std::time::Duration;

use tandem::config;
use tandem::proxy::policy::upstream::Upstream;
use tandem_lab::pair::{wait_until, TandemNode};
use tandem_lab::{http_get, wait_for_tcp, EchoBackend, Host, Lab, CLIENT, HTTP1, HTTP2, LB1, LB2};

const PORT: u16 = 80;
const REPLICATION_PORT: u16 = 7946;

/// A node serving `web` on its own address, replicating to `peer`.
fn config(lab: &Lab, node: &Host, peer: &Host) -> String {
    format!(
        r#"{node}
[[service]]
name = "web"
listen = "{ip}:{PORT}"
backends = ["{http1}:80", "{http2}:80"]
session = {{ type = "cookie", id = "JSESSIONID", ttl = "300s" }}

[replication]
listen = "{ip}:{REPLICATION_PORT}"
peers = ["{peer_ip}:{REPLICATION_PORT}"]
"#,
        node = TandemNode::node_section(lab, node),
        ip = node.ip,
        peer_ip = peer.ip,
        http1 = lab.host(HTTP1).ip,
        http2 = lab.host(HTTP2).ip,
    )
}

/// A session id that a fresh node with both backends up would place on `backend`.
fn key_placed_on(config_text: &str, backend: SocketAddrV4) -> String {
    let backend = std::net::SocketAddr::V4(backend);
    let loaded = config::parse(config_text, Path::new("lb2.toml")).expect("the config loads");
    let upstream = Upstream::new(&loaded.config.services[0]);
    (0..10_000)
        .map(|i| format!("replicated-{i}"))
        .find(|key| upstream.placement(key) == Some(backend))
        .expect("some key is placed on each backend")
}

#[test]
fn a_session_learned_on_one_node_is_routed_identically_by_the_other() {
    let lab = Lab::new().expect("lab");
    let _http1 = EchoBackend::start(lab.host(HTTP1), 80, "http1").expect("echo on http1");
    let _http2 = EchoBackend::start(lab.host(HTTP2), 80, "http2").expect("echo on http2");
    let (lb1, lb2) = (lab.host(LB1), lab.host(LB2));
    let lb2_config = config(&lab, lb2, lb1);
    let node1 = TandemNode::start(&lab, lb1, &config(&lab, lb1, lb2)).expect("tandem run on lb1");
    let node2 = TandemNode::start(&lab, lb2, &lb2_config).expect("tandem run on lb2");
    let client = lab.host(CLIENT);
    let proxy1 = SocketAddr::V4(SocketAddrV4::new(lb1.ip, PORT));
    let proxy2 = SocketAddr::V4(SocketAddrV4::new(lb2.ip, PORT));
    let logs = || format!("lb1:\n{}\nlb2:\n{}", node1.log_text(), node2.log_text());
    for proxy in [proxy1, proxy2] {
        if let Err(error) = wait_for_tcp(client, proxy, Duration::from_secs(10)) {
            panic!(
                "the proxy on {proxy} does not accept: {error:#}\n{}",
                logs()
            );
        }
    }
    let link_up = format!("replication to {}:{REPLICATION_PORT} connected", lb2.ip);
    if let Err(error) = wait_until(Duration::from_secs(15), "lb1's link to lb2", || {
        node1.log_text().contains(&link_up)
    }) {
        panic!("{error:#}\n{}", logs());
    }

    // Maglev would put this key on http2; lb1 learns it on http1.
    let http1 = SocketAddrV4::new(lab.host(HTTP1).ip, 80);
    let http2 = SocketAddrV4::new(lab.host(HTTP2).ip, 80);
    let key = key_placed_on(&lb2_config, http2);
    let learn_path = format!("/login?set-cookie=JSESSIONID={key}");
    let mut learned_on = None;
    // Round robin alternates; within a few requests one lands on http1 and sets the cookie
    // there (a landing on http2 first is overwritten by the later one on http1).
    for _ in 0..4 {
        let response = http_get(client, proxy1, &learn_path, &[]).expect("request to lb1");
        assert_eq!(response.status, 200, "{response:?}\n{}", logs());
        if response.header("x-backend") == Some("http1") {
            learned_on = Some("http1");
            break;
        }
    }
    assert_eq!(
        learned_on,
        Some("http1"),
        "lb1 never sent the login to http1 ({http1})"
    );
    let cookie = format!("JSESSIONID={key}");
    let on_lb1 = http_get(client, proxy1, "/", &[("Cookie", cookie.as_str())]).expect("lb1");
    assert_eq!(
        on_lb1.header("x-backend"),
        Some("http1"),
        "lb1 keeps the session"
    );

    // Asking lb2 before the entry arrived would make lb2 place the key itself (on http2) and
    // spoil the test, so wait for lb2 to log its arrival (the last entry for the key is the
    // one naming http1: the link keeps order).
    let arrived = |log: &str| {
        log.lines().any(|line| {
            line.contains("replicated session received") && line.contains(&http1.to_string())
        })
    };
    if let Err(error) = wait_until(Duration::from_secs(10), "the entry to reach lb2", || {
        arrived(&node2.log_text())
    }) {
        panic!("{error:#}\n{}", logs());
    }
    for request in 0..5 {
        let on_lb2 = http_get(client, proxy2, "/", &[("Cookie", cookie.as_str())]).expect("lb2");
        assert_eq!(
            on_lb2.header("x-backend"),
            Some("http1"),
            "request {request} to lb2 of the session learned on lb1 (Maglev says {http2})\n{}",
            logs()
        );
    }
}
