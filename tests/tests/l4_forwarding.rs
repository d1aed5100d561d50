//! An L4 TCP service on the VIP, forwarded by lb1's XDP program by direct server return to
//! http1 and http2 (the VIP on their loopback): what a user of the L4 data plane sees.
//!
//! lb1 holds the VIP (as a VRRP master would) and runs the data plane in-process in its
//! namespace; the backends answer each line with their name and the client address they saw.

mod l4_common;

use std::collections::BTreeMap;
use std::net::SocketAddrV4;
use std::time::Duration;

use l4_common::{eventually, L4Lab, Node, TCP_PORT};
use tandem_lab::l4::take_vip;
use tandem_lab::{CLIENT, HTTP1, HTTP2, LB1, LB2, VIP};

fn lb1_forwarding(mode: &str) -> (L4Lab, Node) {
    let l4 = L4Lab::new();
    let node = Node::open(&l4, LB1, mode);
    node.activate();
    take_vip(l4.host(LB1), VIP).expect("VIP on lb1");
    (l4, node)
}

#[test]
fn connections_reach_both_backends_by_direct_server_return_where_maglev_says() {
    let (l4, node) = lb1_forwarding("xdp-generic");
    let client_ip = l4.host(CLIENT).ip;
    let mut seen = BTreeMap::new();
    for _ in 0..40 {
        let (port, answer) = l4.ask_once(None).expect("the service answers through lb1");
        assert_eq!(
            answer.peer, client_ip,
            "direct server return: the backend sees the client itself"
        );
        assert_eq!(
            answer.backend,
            l4.expected(&node.config, "who", port, &[]),
            "client port {port}: the kernel chose the backend the Maglev table says"
        );
        *seen.entry(answer.backend).or_insert(0) += 1;
    }
    assert_eq!(seen.len(), 2, "both backends get connections: {seen:?}");

    let maps = node.maps_json(l4.host(LB1));
    let counters = &maps["counters"];
    assert!(
        counters["tx"].as_u64().unwrap() > 0,
        "forwarded by XDP_TX: {counters}"
    );
    assert!(counters["flow_new"].as_u64().unwrap() >= 40, "{counters}");
    assert!(maps["flow_count"].as_u64().unwrap() >= 40, "flows recorded");
    let service = maps["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["port"] == TCP_PORT)
        .expect("the service in tandem maps");
    let backends = service["backends"].as_array().unwrap();
    assert_eq!(backends.len(), 2);
    for backend in backends {
        let share = backend["share"]["percent"].as_f64().unwrap();
        assert!(
            (45.0..55.0).contains(&share),
            "about half the table each: {backend}"
        );
        assert_ne!(
            backend["mac"], "00:00:00:00:00:00",
            "MAC resolved: {backend}"
        );
        assert!(backend["packets"].as_u64().unwrap() > 0, "{backend}");
    }

    // The text view, with every flow: what an operator reads with the daemon stopped too.
    let output = l4
        .host(LB1)
        .command(tandem_lab::tandem_binary().expect("tandem binary"))
        .args(["maps", "--verbose", "--pin-dir"])
        .arg(&node.pin_dir)
        .output()
        .expect("tandem maps --verbose");
    let text = String::from_utf8_lossy(&output.stdout);
    println!("{text}");
    assert!(
        text.contains(&format!("{client_ip}:")),
        "flows listed: {text}"
    );
    assert!(text.contains("% of the table"), "shares shown: {text}");
    node.shutdown();
}

#[test]
fn connections_are_forwarded_in_native_mode_too() {
    let l4 = L4Lab::new();
    // veth delivers XDP_TX frames only to a peer that runs XDP itself, and locally made
    // segments carry a partial checksum that nobody fills in on that path (TOOLCHAIN.md).
    tandem_lab::l4::prepare_native_xdp_tx(&l4.lab, LB1).expect("native XDP_TX on lb1's veth");
    l4.host(CLIENT)
        .run("ethtool", &["-K", "eth0", "tx", "off"])
        .expect("client checksums in software");
    let node = Node::open(&l4, LB1, "xdp");
    assert_eq!(
        node.status().attach_mode.map(|m| m.to_string()),
        Some("native".to_owned())
    );
    node.activate();
    take_vip(l4.host(LB1), VIP).expect("VIP on lb1");
    for _ in 0..10 {
        let (port, answer) = l4.ask_once(None).unwrap_or_else(|e| {
            panic!(
                "no answer through native XDP ({e}); lb1's counters: {}",
                node.maps_json(l4.host(LB1))["counters"]
            )
        });
        assert_eq!(answer.backend, l4.expected(&node.config, "who", port, &[]));
    }
    node.shutdown();
}

#[test]
fn a_connection_keeps_its_backend_while_the_other_backends_come_and_go() {
    let (l4, node) = lb1_forwarding("xdp-generic");
    let mut conversation = l4.converse(None).expect("connect");
    let first = l4.ask(&mut conversation).expect("answer").backend;
    let other = if first == HTTP1 { HTTP2 } else { HTTP1 };
    let other_addr = SocketAddrV4::new(l4.host(other).ip, TCP_PORT);
    for round in 0..3 {
        node.set_backend_up("who", other_addr, round % 2 == 1);
        for _ in 0..5 {
            let answer = l4.ask(&mut conversation).expect("the connection goes on");
            assert_eq!(answer.backend, first, "round {round}: same backend");
        }
    }
    node.shutdown();
}

#[test]
fn a_removed_backends_flows_move_to_the_others_and_come_back_when_it_returns() {
    let (l4, node) = lb1_forwarding("xdp-generic");
    // Flows on each backend.
    let mut on = BTreeMap::new();
    for port in 42000..42100u16 {
        on.entry(l4.expected(&node.config, "who", port, &[]))
            .or_insert_with(Vec::new)
            .push(port);
    }
    let http2_ports: Vec<u16> = on[HTTP2].iter().copied().take(10).collect();
    for &port in &http2_ports {
        assert_eq!(l4.ask_once(Some(port)).expect("answer").1.backend, HTTP2);
    }
    let mut long_lived = l4.converse(Some(46000)).expect("connect");
    let before = l4.ask(&mut long_lived).expect("answer");

    let http2 = SocketAddrV4::new(l4.host(HTTP2).ip, TCP_PORT);
    node.set_backend_up("who", http2, false);
    for &port in &http2_ports {
        assert_eq!(
            l4.ask_once(Some(port)).expect("answer").1.backend,
            HTTP1,
            "port {port}: http2's flows go to http1 now"
        );
    }
    for port in 43000..43020u16 {
        assert_eq!(l4.ask_once(Some(port)).expect("answer").1.backend, HTTP1);
    }
    if before.backend == HTTP2 {
        // Its packets now reach http1, which knows no such connection and resets it.
        assert!(
            l4.ask(&mut long_lived).is_err(),
            "a connection on the removed backend cannot go on elsewhere"
        );
    }
    assert!(node.counter(l4.host(LB1), "flow_moved") >= 10);

    node.set_backend_up("who", http2, true);
    let back = http2_ports
        .iter()
        .filter(|&&port| l4.ask_once(Some(port)).expect("answer").1.backend == HTTP2)
        .count();
    // Those flows were recorded on http1 meanwhile (reset connections, but the entries stay
    // until they age out), so only fresh ports show where new flows go.
    let fresh: Vec<u16> = on[HTTP2].iter().copied().skip(10).collect();
    for &port in &fresh {
        assert_eq!(
            l4.ask_once(Some(port)).expect("answer").1.backend,
            HTTP2,
            "new flows reach http2 again"
        );
    }
    println!(
        "{back} of {} recorded flows went back to http2",
        http2_ports.len()
    );
    node.shutdown();
}

#[test]
fn udp_datagrams_are_forwarded_by_direct_server_return_too() {
    let (l4, node) = lb1_forwarding("xdp-generic");
    let client_ip = l4.host(CLIENT).ip;
    let mut seen = BTreeMap::new();
    for port in 44000..44030u16 {
        let answer = l4.ask_udp(port).expect("UDP answer");
        assert_eq!(answer.peer, client_ip);
        assert_eq!(
            answer.backend,
            l4.expected(&node.config, "who-udp", port, &[])
        );
        *seen.entry(answer.backend).or_insert(0) += 1;
    }
    assert_eq!(seen.len(), 2, "{seen:?}");
    node.shutdown();
}

#[test]
fn a_node_whose_maps_are_empty_never_forwards() {
    let l4 = L4Lab::new();
    // lb2 is a backup: program attached, maps empty. The client is made to send the VIP's
    // traffic to lb2 anyway (a stale ARP entry, say).
    let backup = Node::open(&l4, LB2, "xdp-generic");
    backup.deactivate();
    let lb2_mac = l4.host(LB2).mac().expect("lb2 MAC");
    l4.host(CLIENT)
        .run(
            "ip",
            &[
                "neigh",
                "replace",
                &VIP.to_string(),
                "lladdr",
                &tandem::wire::ethernet::Mac(lb2_mac).to_string(),
                "dev",
                "eth0",
            ],
        )
        .expect("client sends the VIP's traffic to lb2");
    assert!(
        l4.ask_once(None).is_err(),
        "nothing answers through a backup"
    );
    assert!(l4.ask_udp(45000).is_err());
    let maps = backup.maps_json(l4.host(LB2));
    assert_eq!(maps["counters"]["tx"], 0, "the backup forwarded nothing");
    assert_eq!(maps["services"].as_array().unwrap().len(), 0);
    assert!(
        maps["counters"]["ipv4_tcp"].as_u64().unwrap() > 0,
        "it saw the packets"
    );

    // The same node, activated, forwards: it was the maps.
    backup.activate();
    assert!(
        eventually(Duration::from_secs(5), || l4.ask_once(None).is_ok()),
        "an active lb2 forwards"
    );
    backup.shutdown();
}
