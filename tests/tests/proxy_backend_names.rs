//! Backends written by host name, resolved through the node's hosts file (the lab namespace's
//! /etc/netns/NAME/hosts, which `ip netns exec` puts in place of /etc/hosts), with real Apache
//! backends: a name's addresses are its backends, a change in the hosts file is followed
//! within `resolve_interval`, and a name that stops resolving keeps its last addresses and
//! says so in `tandem status`.

use std::collections::BTreeSet;
use std::net::{SocketAddr, SocketAddrV4};
use std::time::Duration;

use tandem_lab::pair::{wait_until, TandemNode};
use tandem_lab::{http_get, wait_for_tcp, Apache, Lab, CLIENT, HTTP1, HTTP2, LB1};

const PORT: u16 = 8080;

/// The backends that answered `count` requests through the proxy (Apache's `X-Backend`).
fn answering(lab: &Lab, listen: SocketAddrV4, count: usize) -> BTreeSet<String> {
    (0..count)
        .map(|_| {
            let response = http_get(lab.host(CLIENT), SocketAddr::V4(listen), "/", &[])
                .expect("a request through the proxy");
            assert_eq!(response.status, 200, "{response:?}");
            response.header("x-backend").unwrap_or("-").to_owned()
        })
        .collect()
}

/// `tandem status --json`'s entry for the name `app.test:80`.
fn name_status(node: &TandemNode) -> serde_json::Value {
    let status = node.status().expect("tandem status");
    status["backend_names"]
        .as_array()
        .and_then(|names| names.iter().find(|n| n["name"] == "app.test:80"))
        .cloned()
        .unwrap_or_else(|| panic!("app.test:80 in status: {status}"))
}

fn addresses(name: &serde_json::Value) -> Vec<String> {
    name["addresses"]
        .as_array()
        .map(|list| {
            list.iter()
                .filter_map(|a| a.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn a_named_backend_follows_the_hosts_file_and_keeps_its_last_addresses_when_it_stops_resolving() {
    let lab = Lab::new().expect("lab");
    let (http1, http2) = (lab.host(HTTP1), lab.host(HTTP2));
    let _web1 = Apache::start(&lab, http1, 80, "web1").expect("apache web1");
    let _web2 = Apache::start(&lab, http2, 80, "web2").expect("apache web2");
    let lb1 = lab.host(LB1);
    lb1.set_hosts_file(&format!("127.0.0.1 localhost\n{} app.test\n", http1.ip))
        .expect("hosts file");
    let listen = SocketAddrV4::new(lb1.ip, PORT);
    let config = format!(
        "{node}\n[proxy]\naccess_log = {{ level = 0 }}\n\n[[service]]\nname = \"web\"\n\
         listen = \"{listen}\"\nbackends = [\"app.test:80\"]\nresolve_interval = \"1s\"\n",
        node = TandemNode::node_section(&lab, lb1),
    );
    let node = TandemNode::start_with_hosts_file(&lab, lb1, &config).expect("tandem run");
    if let Err(error) = wait_for_tcp(
        lab.host(CLIENT),
        SocketAddr::V4(listen),
        Duration::from_secs(10),
    ) {
        panic!("the proxy does not accept: {error:#}\n{}", node.log_text());
    }
    let first = name_status(&node);
    assert_eq!(addresses(&first), [format!("{}:80", http1.ip)], "{first}");
    assert_eq!(
        answering(&lab, listen, 4),
        BTreeSet::from(["web1".to_owned()])
    );

    // The name gains an address: within the interval it is a backend too.
    lb1.set_hosts_file(&format!(
        "127.0.0.1 localhost\n{} app.test\n{} app.test\n",
        http1.ip, http2.ip
    ))
    .expect("hosts file");
    let both = vec![format!("{}:80", http1.ip), format!("{}:80", http2.ip)];
    if let Err(error) = wait_until(Duration::from_secs(5), "both addresses", || {
        addresses(&name_status(&node)) == both
    }) {
        panic!("{error:#}\n{}", node.log_text());
    }
    assert_eq!(
        answering(&lab, listen, 6),
        BTreeSet::from(["web1".to_owned(), "web2".to_owned()]),
        "requests reach both addresses"
    );

    // The name disappears: the node keeps the last addresses and says the name fails.
    lb1.set_hosts_file("127.0.0.1 localhost\n")
        .expect("hosts file");
    if let Err(error) = wait_until(Duration::from_secs(5), "the name reported failing", || {
        !name_status(&node)["error"].is_null()
    }) {
        panic!("{error:#}\n{}", node.log_text());
    }
    let failing = name_status(&node);
    assert_eq!(
        addresses(&failing),
        both,
        "the last addresses are kept: {failing}"
    );
    assert_eq!(
        answering(&lab, listen, 6),
        BTreeSet::from(["web1".to_owned(), "web2".to_owned()]),
        "the backends still serve"
    );
    let text = std::process::Command::new(tandem_lab::tandem_binary().expect("tandem"))
        .args(["status", "--socket"])
        .arg(&node.socket)
        .output()
        .expect("tandem status");
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("app.test:80") && text.contains("NOT RESOLVING"),
        "the status screen says so:\n{text}"
    );
}

#[test]
fn a_reload_with_a_name_that_does_not_resolve_changes_nothing() {
    let lab = Lab::new().expect("lab");
    let http1 = lab.host(HTTP1);
    let _web1 = Apache::start(&lab, http1, 80, "web1").expect("apache web1");
    let lb1 = lab.host(LB1);
    lb1.set_hosts_file(&format!("127.0.0.1 localhost\n{} app.test\n", http1.ip))
        .expect("hosts file");
    let listen = SocketAddrV4::new(lb1.ip, PORT);
    let service = |backends: &str| {
        format!(
            "{node}\n[[service]]\nname = \"web\"\nlisten = \"{listen}\"\nbackends = {backends}\n",
            node = TandemNode::node_section(&lab, lb1),
        )
    };
    let node = TandemNode::start_with_hosts_file(&lab, lb1, &service("[\"app.test:80\"]"))
        .expect("tandem run");
    if let Err(error) = wait_for_tcp(
        lab.host(CLIENT),
        SocketAddr::V4(listen),
        Duration::from_secs(10),
    ) {
        panic!("the proxy does not accept: {error:#}\n{}", node.log_text());
    }
    let output = node
        .reload(&service("[\"app.test:80\", \"missing.test:80\"]"))
        .expect("tandem reload");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("service web: backend missing.test:80 does not resolve")
            && stderr.contains("nothing was changed"),
        "{stderr}"
    );
    assert_eq!(
        answering(&lab, listen, 2),
        BTreeSet::from(["web1".to_owned()])
    );
}
