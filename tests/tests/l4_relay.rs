//! The userspace fallback: with `dataplane = "none"` (or when XDP cannot load) the same L4
//! services are served by a TCP and UDP relay in the daemon, which sends each flow to the
//! backend the XDP program would have chosen.

mod l4_common;

use std::net::SocketAddrV4;

use l4_common::{L4Lab, Node, TCP_PORT};
use tandem::dataplane::DataplaneKind;
use tandem_lab::l4::take_vip;
use tandem_lab::{HTTP1, HTTP2, LB1, VIP};

const PORTS: std::ops::Range<u16> = 47000..47030;

#[test]
fn the_relay_serves_the_l4_services_with_the_backends_xdp_chooses() {
    let l4 = L4Lab::new();
    take_vip(l4.host(LB1), VIP).expect("VIP on lb1");

    // First through XDP: which backend each client port gets.
    let xdp = Node::open(&l4, LB1, "xdp-generic");
    xdp.activate();
    let by_xdp: Vec<String> = PORTS
        .map(|port| l4.ask_once(Some(port)).expect("XDP answer").1.backend)
        .collect();
    let udp_by_xdp: Vec<String> = PORTS
        .map(|port| l4.ask_udp(port).expect("XDP UDP answer").backend)
        .collect();
    // Stepping down empties the maps: from now on lb1's kernel sees the VIP's packets.
    xdp.deactivate();
    xdp.shutdown();

    let relay = Node::open(&l4, LB1, "none");
    assert_eq!(relay.status().kind, DataplaneKind::Relay);
    relay.activate();
    let lb1_ip = l4.host(LB1).ip;
    let mut by_relay = Vec::new();
    for port in PORTS {
        let (_, answer) = l4.ask_once(Some(port)).expect("relay answer");
        assert_eq!(
            answer.peer, lb1_ip,
            "the relay connects to the backend itself"
        );
        by_relay.push(answer.backend);
    }
    let udp_by_relay: Vec<String> = PORTS
        .map(|port| l4.ask_udp(port).expect("relay UDP answer").backend)
        .collect();
    assert_eq!(
        by_relay, by_xdp,
        "TCP: the same backend for every client port"
    );
    assert_eq!(
        udp_by_relay, udp_by_xdp,
        "UDP: the same backend for every client port"
    );
    assert!(by_relay.iter().any(|b| b == HTTP1) && by_relay.iter().any(|b| b == HTTP2));

    // The relay follows backend health like the tables do.
    let http2 = SocketAddrV4::new(l4.host(HTTP2).ip, TCP_PORT);
    relay.set_backend_up("who", http2, false);
    for port in PORTS {
        assert_eq!(l4.ask_once(Some(port)).expect("answer").1.backend, HTTP1);
    }
    relay.set_backend_up("who", http2, true);
    let again: Vec<String> = PORTS
        .map(|port| l4.ask_once(Some(port)).expect("answer").1.backend)
        .collect();
    assert_eq!(again, by_xdp, "back to the full table");

    let status = relay.status();
    let who = status.services.iter().find(|s| s.name == "who").unwrap();
    assert!(who.backends.iter().all(|b| b.packets > 0), "{who:?}");

    // Deactivated, the relay stops listening.
    relay.deactivate();
    assert!(l4.ask_once(None).is_err());
    relay.shutdown();
}

#[test]
fn when_xdp_cannot_load_the_node_falls_back_to_the_relay() {
    let l4 = L4Lab::new();
    take_vip(l4.host(LB1), VIP).expect("VIP on lb1");
    // An interface that does not exist: the XDP program cannot attach anywhere.
    let text = l4_common::node_config(&l4.lab, LB1, "xdp")
        .replace("interface = \"eth0\"", "interface = \"nosuch0\"");
    let config = l4_common::parse(&text);
    let runtime = tandem_lab::l4::NetnsRuntime::new(l4.host(LB1)).expect("runtime");
    let opened = config.clone();
    let dataplane = runtime
        .block_on(async move {
            let dp = tandem::dataplane::open(&opened).await?;
            dp.activate().await?;
            anyhow::Ok(std::sync::Arc::new(dp))
        })
        .expect("the node runs anyway");
    let status = dataplane.status();
    assert_eq!(status.kind, DataplaneKind::Relay);
    let reason = status.fallback_reason.expect("says why");
    assert!(reason.contains("nosuch0"), "{reason}");
    for port in PORTS {
        let (_, answer) = l4.ask_once(Some(port)).expect("relay answer");
        assert_eq!(answer.backend, l4.expected(&config, "who", port, &[]));
    }
    let dp = dataplane.clone();
    runtime.block_on(async move { dp.shutdown().await });
}
