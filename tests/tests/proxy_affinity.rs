//! Cookie session affinity through `tandem run` in the lab, as the classic pair's users relied
//! on Pound for it: the backend sets JSESSIONID, the proxy learns it from the Set-Cookie, and
//! every later request of that session goes to the same backend.
//!
//! The node serves on its own address (no VRRP needed for this): client -> lb1 -> http1/http2,
//! both running the echo backend, which says who answered in `X-Backend`.

use std::collections::HashMap;
use std::net::{SocketAddr, SocketAddrV4};
use std::time::Duration;

use tandem_lab::pair::{wait_until, TandemNode};
use tandem_lab::{http_get, wait_for_tcp, EchoBackend, Host, Lab, CLIENT, HTTP1, HTTP2, LB1};

/// The proxy's port on the node.
const PORT: u16 = 80;
const SESSIONS: usize = 50;
const REQUESTS_PER_SESSION: usize = 20;

/// A node config with one HTTP service on the node's own address, JSESSIONID affinity.
fn config(lab: &Lab, node: &Host) -> String {
    format!(
        r#"{node}
[[service]]
name = "web"
listen = "{ip}:{PORT}"
backends = ["{http1}:80", "{http2}:80"]
health = {{ interval = "1s" }}
session = {{ type = "cookie", id = "JSESSIONID", ttl = "300s" }}
"#,
        node = TandemNode::node_section(lab, node),
        ip = node.ip,
        http1 = lab.host(HTTP1).ip,
        http2 = lab.host(HTTP2).ip,
    )
}

#[test]
fn cookie_sessions_stay_on_one_backend_and_spread_evenly() {
    let lab = Lab::new().expect("lab");
    let _http1 = EchoBackend::start(lab.host(HTTP1), 80, "http1").expect("echo on http1");
    let _http2 = EchoBackend::start(lab.host(HTTP2), 80, "http2").expect("echo on http2");
    let lb1 = lab.host(LB1);
    let node = TandemNode::start(&lab, lb1, &config(&lab, lb1)).expect("tandem run");
    let client = lab.host(CLIENT);
    let proxy = SocketAddr::V4(SocketAddrV4::new(lb1.ip, PORT));
    if let Err(error) = wait_for_tcp(client, proxy, Duration::from_secs(10)) {
        panic!("the proxy does not accept: {error:#}\n{}", node.log_text());
    }

    let mut sessions_per_backend: HashMap<String, usize> = HashMap::new();
    for session in 0..SESSIONS {
        let id = format!("lab-session-{session}");
        // The first request carries no cookie; the backend that gets it starts the session.
        let first = http_get(
            client,
            proxy,
            &format!("/login?set-cookie=JSESSIONID={id}"),
            &[],
        )
        .expect("first request of the session");
        assert_eq!(first.status, 200, "{first:?}\n{}", node.log_text());
        let backend = first
            .header("x-backend")
            .expect("the echo backend names itself")
            .to_owned();
        assert!(
            first
                .header_all("set-cookie")
                .iter()
                .any(|c| c.starts_with(&format!("JSESSIONID={id}"))),
            "the backend's Set-Cookie reaches the client: {first:?}"
        );
        let cookie = format!("theme=dark; JSESSIONID={id}");
        for request in 1..REQUESTS_PER_SESSION {
            let response = http_get(
                client,
                proxy,
                &format!("/page/{request}"),
                &[("Cookie", cookie.as_str())],
            )
            .expect("request of the session");
            assert_eq!(response.status, 200);
            assert_eq!(
                response.header("x-backend"),
                Some(backend.as_str()),
                "session {id}, request {request}, left its backend"
            );
        }
        *sessions_per_backend.entry(backend).or_default() += 1;
    }

    let on_http1 = sessions_per_backend.get("http1").copied().unwrap_or(0);
    let on_http2 = sessions_per_backend.get("http2").copied().unwrap_or(0);
    assert_eq!(on_http1 + on_http2, SESSIONS, "{sessions_per_backend:?}");
    let share = on_http1 as f64 / SESSIONS as f64;
    assert!(
        (0.4..=0.6).contains(&share),
        "sessions spread {on_http1}/{on_http2} over http1/http2, outside 40/60"
    );
}

#[test]
fn sessions_move_off_a_dead_backend_and_new_ones_use_it_again_when_it_returns() {
    let lab = Lab::new().expect("lab");
    let _http1 = EchoBackend::start(lab.host(HTTP1), 80, "http1").expect("echo on http1");
    let mut http2 = EchoBackend::start(lab.host(HTTP2), 80, "http2").expect("echo on http2");
    let lb1 = lab.host(LB1);
    let config = config(&lab, lb1).replace(
        "health = { interval = \"1s\" }",
        "health = { interval = \"300ms\", rise = 2, fall = 2 }",
    );
    let node = TandemNode::start(&lab, lb1, &config).expect("tandem run");
    let client = lab.host(CLIENT);
    let proxy = SocketAddr::V4(SocketAddrV4::new(lb1.ip, PORT));
    if let Err(error) = wait_for_tcp(client, proxy, Duration::from_secs(10)) {
        panic!("the proxy does not accept: {error:#}\n{}", node.log_text());
    }
    let get = |path: &str, cookie: Option<&str>| {
        let headers: Vec<(&str, &str)> = cookie.map(|c| ("Cookie", c)).into_iter().collect();
        let response = http_get(client, proxy, path, &headers).expect("request through lb1");
        assert_eq!(response.status, 200, "{response:?}\n{}", node.log_text());
        response
            .header("x-backend")
            .expect("the echo backend names itself")
            .to_owned()
    };

    let mut on_http2 = Vec::new();
    for session in 0..10 {
        let id = format!("move-{session}");
        if get(&format!("/?set-cookie=JSESSIONID={id}"), None) == "http2" {
            on_http2.push(format!("JSESSIONID={id}"));
        }
    }
    assert_eq!(
        on_http2.len(),
        5,
        "round robin gave http2 half of the sessions"
    );

    http2.stop();
    for cookie in &on_http2 {
        // The first request finds http2 refusing and is retried on http1, unnoticed.
        for _ in 0..3 {
            assert_eq!(get("/", Some(cookie)), "http1", "{cookie} moved");
        }
    }
    let down = format!("backend {} down: ", http2.addr());
    assert!(node.log_text().contains(&down), "{}", node.log_text());

    let http2 = EchoBackend::start(lab.host(HTTP2), 80, "http2").expect("echo on http2 again");
    let up = format!("backend {} up: ", http2.addr());
    if let Err(error) = wait_until(Duration::from_secs(10), "http2 to be up again", || {
        node.log_text().contains(&up)
    }) {
        panic!("{error:#}\n{}", node.log_text());
    }
    // Moved sessions stay where they moved; new sessions use http2 again.
    for cookie in &on_http2 {
        assert_eq!(get("/", Some(cookie)), "http1", "{cookie} stays moved");
    }
    let new_on_http2 = (0..4)
        .filter(|i| get(&format!("/?set-cookie=JSESSIONID=after-{i}"), None) == "http2")
        .count();
    assert_eq!(new_on_http2, 2, "new sessions alternate again");
}
