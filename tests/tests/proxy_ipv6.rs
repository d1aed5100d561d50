//! The proxy on IPv6, in a dual-stack lab (2001:2::/64 beside 198.18.0.0/24) with real Apache
//! backends: an IPv6 client through an IPv6 listener to IPv6 backends, each family's clients to
//! the other family's backends, the client's IPv6 address as Apache logs it from
//! X-Forwarded-For (bare, as HAProxy and nginx write it) and in Tandem's own access log, and
//! session affinity by client address for an IPv6 client.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tandem_lab::pair::TandemNode;
use tandem_lab::{http_get, wait_for_tcp, Apache, Host, Lab, CLIENT, HTTP1, HTTP2, LB1, VIP6};

/// The IPv6 address of a lab host (every host of a dual-stack lab has one).
fn ip6(host: &Host) -> IpAddr {
    IpAddr::V6(
        host.ip6
            .expect("a dual-stack lab gives every host an IPv6 address"),
    )
}

fn start_node(lab: &Lab, lb1: &Host, services: &str, access_log: &std::path::Path) -> TandemNode {
    let config = format!(
        "{node}\n[proxy]\naccess_log = {{ level = 2, path = \"{log}\" }}\n{services}",
        node = TandemNode::node_section(lab, lb1),
        log = access_log.display(),
    );
    TandemNode::start(lab, lb1, &config).expect("tandem run")
}

fn wait_until_accepting(client: &Host, node: &TandemNode, addr: SocketAddr) {
    if let Err(error) = wait_for_tcp(client, addr, Duration::from_secs(10)) {
        panic!(
            "the proxy does not accept on {addr}: {error:#}\n{}",
            node.log_text()
        );
    }
}

/// The backend names the replies came from ("backend http1" is Apache's index page on http1).
fn answered_by(client: &Host, addr: SocketAddr, requests: usize) -> Vec<String> {
    (0..requests)
        .map(|_| {
            let reply = http_get(client, addr, "/", &[]).expect("GET through the proxy");
            assert_eq!(reply.status, 200, "{reply:?}");
            reply.body.trim().to_owned()
        })
        .collect()
}

#[test]
fn an_ipv6_client_reaches_ipv6_backends_through_the_ipv6_vip_and_apache_logs_its_address() {
    let lab = Lab::dual_stack().expect("dual-stack lab");
    let http1 = Apache::start(&lab, lab.host(HTTP1), 80, "http1").expect("apache on http1");
    let http2 = Apache::start(&lab, lab.host(HTTP2), 80, "http2").expect("apache on http2");
    let lb1 = lab.host(LB1);
    let client = lab.host(CLIENT);
    let vip = SocketAddr::new(VIP6.into(), 80);
    let services = format!(
        "[[service]]\nname = \"web6\"\nlisten = \"{vip}\"\nbackends = [\"{}\", \"{}\"]\n",
        http1.addr6().expect("http1 on IPv6"),
        http2.addr6().expect("http2 on IPv6"),
    );
    let access_log = lab.work_dir().join("lb1-access.log");
    // The VIP is not on lb1 yet: the IPv6 listener must open anyway (IPV6_FREEBIND).
    let node = start_node(&lab, lb1, &services, &access_log);
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        node.log_text().contains("proxy listening"),
        "the proxy listens before the IPv6 VIP exists:\n{}",
        node.log_text()
    );
    lb1.run(
        "ip",
        &[
            "-6",
            "addr",
            "add",
            &format!("{VIP6}/64"),
            "dev",
            &lb1.iface,
            "nodad",
        ],
    )
    .expect("add the IPv6 VIP on lb1");
    wait_until_accepting(client, &node, vip);

    let mut backends = answered_by(client, vip, 4);
    backends.sort();
    assert_eq!(
        backends,
        [
            "backend http1",
            "backend http1",
            "backend http2",
            "backend http2"
        ],
        "round robin over the IPv6 backends"
    );
    // Apache's classic log starts with the X-Forwarded-For it got: the bare IPv6 address.
    let client_ip = ip6(client).to_string();
    for apache in [&http1, &http2] {
        let log = apache
            .wait_for_access_log(2, Duration::from_secs(5))
            .expect("Apache logged the requests");
        for line in &log {
            assert!(
                line.starts_with(&format!("{client_ip} - - ["))
                    && line.contains("\"GET / HTTP/1.1\" 200"),
                "Apache shows the IPv6 client {client_ip}: {line}"
            );
        }
    }
    // Tandem's own access log names the client and the IPv6 backend it chose.
    let ours = std::fs::read_to_string(&access_log).expect("Tandem's access log");
    let lines: Vec<&str> = ours.lines().collect();
    assert_eq!(lines.len(), 4, "{ours}");
    for line in lines {
        assert!(
            line.contains(&format!(" {client_ip} GET / HTTP/1.1 - HTTP/1.1 200 OK"))
                && line.contains("-> [2001:2::10"),
            "the access log shows the IPv6 client and backend: {line}"
        );
    }
}

#[test]
fn clients_of_either_family_reach_backends_of_the_other() {
    let lab = Lab::dual_stack().expect("dual-stack lab");
    let http1 = Apache::start(&lab, lab.host(HTTP1), 80, "http1").expect("apache on http1");
    let lb1 = lab.host(LB1);
    let client = lab.host(CLIENT);
    let v4_listen = SocketAddr::new(lb1.ip.into(), 8080);
    let v6_listen = SocketAddr::new(ip6(lb1), 8080);
    // "[::]" listens on every IPv6 address and only those (IPV6_V6ONLY), so the IPv4 service
    // beside it on the same port is its own listener.
    let services = format!(
        "[[service]]\nname = \"v4-to-v6\"\nlisten = \"{v4_listen}\"\nbackends = [\"{}\"]\n\
         [[service]]\nname = \"v6-to-v4\"\nlisten = \"[::]:8080\"\nbackends = [\"{}\"]\n",
        http1.addr6().expect("http1 on IPv6"),
        http1.addr(),
    );
    let access_log = lab.work_dir().join("lb1-access.log");
    let node = start_node(&lab, lb1, &services, &access_log);
    wait_until_accepting(client, &node, v4_listen);
    wait_until_accepting(client, &node, v6_listen);

    assert_eq!(answered_by(client, v4_listen, 1), ["backend http1"]);
    assert_eq!(answered_by(client, v6_listen, 1), ["backend http1"]);
    let log = http1
        .wait_for_access_log(2, Duration::from_secs(5))
        .expect("Apache logged both requests");
    let first_fields: Vec<&str> = log
        .iter()
        .map(|line| line.split(' ').next().unwrap_or(""))
        .collect();
    assert_eq!(
        first_fields,
        [client.ip.to_string(), ip6(client).to_string()],
        "X-Forwarded-For carries each client's own address, whatever the backend's family: \
         {log:#?}"
    );
}

#[test]
fn an_ipv6_client_keeps_its_backend_with_sessions_by_client_address() {
    let lab = Lab::dual_stack().expect("dual-stack lab");
    let http1 = Apache::start(&lab, lab.host(HTTP1), 80, "http1").expect("apache on http1");
    let http2 = Apache::start(&lab, lab.host(HTTP2), 80, "http2").expect("apache on http2");
    let lb1 = lab.host(LB1);
    let client = lab.host(CLIENT);
    let listen = SocketAddr::new(ip6(lb1), 80);
    let services = format!(
        "[[service]]\nname = \"sticky6\"\nlisten = \"{listen}\"\nbackends = [\"{}\", \"{}\"]\n\
         session = {{ type = \"ip\", ttl = \"300s\" }}\n",
        http1.addr6().expect("http1 on IPv6"),
        http2.addr6().expect("http2 on IPv6"),
    );
    let access_log = lab.work_dir().join("lb1-access.log");
    let node = start_node(&lab, lb1, &services, &access_log);
    wait_until_accepting(client, &node, listen);

    // Round robin alone would alternate; the client's IPv6 address keeps it on one backend.
    let backends = answered_by(client, listen, 6);
    assert!(
        backends.iter().all(|backend| *backend == backends[0]),
        "every request of the IPv6 client went to one backend: {backends:?}"
    );
}
