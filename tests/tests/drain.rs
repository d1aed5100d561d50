//! `tandem drain` / `tandem enable` on a running node, as an operator uses them before
//! maintenance on a backend: users already on it finish there, new users go elsewhere, and
//! after `enable` it serves new users again.

use std::net::{SocketAddr, SocketAddrV4};
use std::time::Duration;

use tandem_lab::pair::TandemNode;
use tandem_lab::{
    http_get, tandem_binary, wait_for_tcp, Apache, Host, Lab, CLIENT, HTTP1, HTTP2, LB1,
};

const PORT: u16 = 80;

fn node_config(lab: &Lab, node: &Host, backends: [SocketAddrV4; 2]) -> String {
    format!(
        r#"{node}
[[service]]
name = "web"
listen = "{ip}:{PORT}"
backends = ["{}", "{}"]
session = {{ type = "cookie", id = "JSESSIONID", ttl = "300s" }}
"#,
        backends[0],
        backends[1],
        node = TandemNode::node_section(lab, node),
        ip = node.ip,
    )
}

/// Runs `tandem VERB web BACKEND` against the node; returns (success, stdout + stderr).
fn tandem(node: &TandemNode, verb: &str, service: &str, backend: &str) -> (bool, String) {
    let output = std::process::Command::new(tandem_binary().expect("binary"))
        .args([verb, service, backend, "--socket"])
        .arg(&node.socket)
        .output()
        .expect("run tandem");
    (
        output.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    )
}

#[test]
fn a_drained_backend_keeps_its_sessions_gets_no_new_users_and_serves_again_after_enable() {
    let lab = Lab::new().expect("lab");
    let http1 = Apache::start(&lab, lab.host(HTTP1), 80, "http1").expect("apache on http1");
    let http2 = Apache::start(&lab, lab.host(HTTP2), 80, "http2").expect("apache on http2");
    let lb1 = lab.host(LB1);
    let node = TandemNode::start(
        &lab,
        lb1,
        &node_config(&lab, lb1, [http1.addr(), http2.addr()]),
    )
    .expect("tandem run");
    let client = lab.host(CLIENT);
    let proxy = SocketAddr::V4(SocketAddrV4::new(lb1.ip, PORT));
    if let Err(error) = wait_for_tcp(client, proxy, Duration::from_secs(10)) {
        panic!("the proxy does not accept: {error:#}\n{}", node.log_text());
    }
    let backend_for = |cookie: Option<&str>| -> String {
        let headers: Vec<(&str, &str)> = cookie.map(|c| ("Cookie", c)).into_iter().collect();
        let reply = http_get(client, proxy, "/", &headers).expect("GET through the proxy");
        assert_eq!(reply.status, 200);
        reply.header("x-backend").unwrap_or("?").to_owned()
    };

    // A user whose session is on http1.
    let cookie = (0..100)
        .map(|i| format!("JSESSIONID=user{i}"))
        .find(|cookie| backend_for(Some(cookie)) == "http1")
        .expect("some session lands on http1");

    let (ok, said) = tandem(&node, "drain", "web", &http1.addr().to_string());
    assert!(ok, "drain: {said}");
    assert!(said.contains("drained"), "{said}");
    let status = node.status().expect("status");
    assert_eq!(
        status["services"][0]["backends"][0]["drained"], true,
        "{status:#}"
    );

    for _ in 0..5 {
        assert_eq!(
            backend_for(Some(&cookie)),
            "http1",
            "the session goes on on http1"
        );
    }
    for i in 0..10 {
        assert_eq!(
            backend_for(None),
            "http2",
            "request {i} without a session avoids http1"
        );
        let new_user = format!("JSESSIONID=new{i}");
        assert_eq!(
            backend_for(Some(&new_user)),
            "http2",
            "a new session avoids http1"
        );
    }

    let (ok, said) = tandem(&node, "drain", "web", "198.18.0.200:80");
    assert!(!ok, "an unknown backend is refused");
    assert!(
        said.contains("has no backend 198.18.0.200:80") && said.contains(&http1.addr().to_string()),
        "{said}"
    );
    let (ok, said) = tandem(&node, "drain", "nosuch", &http1.addr().to_string());
    assert!(
        !ok && said.contains("no service named \"nosuch\"") && said.contains("its services: web"),
        "an unknown service is refused with the node's services listed: {said}"
    );

    let (ok, said) = tandem(&node, "enable", "web", &http1.addr().to_string());
    assert!(ok, "enable: {said}");
    let answered: Vec<String> = (0..6).map(|_| backend_for(None)).collect();
    assert!(
        answered.iter().any(|b| b == "http1") && answered.iter().any(|b| b == "http2"),
        "both serve after enable: {answered:?}"
    );
}
