//! `tandem drain` for an L4 service (`Dataplane::set_backend_drained`): the drained backend
//! leaves the Maglev table, so new connections go to the others, while the connections it
//! already has go on (its backend entry stays up); `enable` brings it back for new ones. For
//! the XDP program and for the userspace relay alike.

mod l4_common;

use std::collections::BTreeMap;
use std::net::SocketAddrV4;

use l4_common::{L4Lab, Node, TCP_PORT};
use tandem::dataplane::DataplaneKind;
use tandem_lab::l4::{take_vip, Conversation};
use tandem_lab::{HTTP1, HTTP2, LB1, VIP};

fn set_drained(node: &Node, backend: SocketAddrV4, drained: bool) -> anyhow::Result<bool> {
    let dataplane = node.dataplane.clone();
    node.runtime.block_on(async move {
        dataplane
            .set_backend_drained("who", backend.into(), drained)
            .await
    })
}

fn drain_keeps_established_connections_and_moves_new_ones(dataplane: &str) {
    let l4 = L4Lab::new();
    take_vip(l4.host(LB1), VIP).expect("VIP on lb1");
    let node = Node::open(&l4, LB1, dataplane);
    let kind = if dataplane == "none" {
        DataplaneKind::Relay
    } else {
        DataplaneKind::Xdp
    };
    assert_eq!(node.status().kind, kind, "the data plane under test");
    node.activate();
    let http1 = SocketAddrV4::new(l4.host(HTTP1).ip, TCP_PORT);

    // Connections kept open, some on each backend.
    let mut open: Vec<(Conversation, String)> = Vec::new();
    while !(open.iter().any(|(_, b)| b == HTTP1) && open.iter().any(|(_, b)| b == HTTP2)) {
        assert!(open.len() < 64, "connections reach both backends");
        let mut conversation = l4.converse(None).expect("connect through lb1");
        let backend = l4.ask(&mut conversation).expect("first answer").backend;
        open.push((conversation, backend));
    }

    assert!(
        set_drained(&node, http1, true).expect("drain"),
        "the service is known"
    );
    let status = node.status();
    let who = status
        .services
        .iter()
        .find(|s| s.name == "who")
        .expect("who");
    let drained: Vec<(bool, bool)> = who.backends.iter().map(|b| (b.up, b.drained)).collect();
    assert_eq!(drained, [(true, true), (true, false)], "{who:?}");

    for (conversation, backend) in &mut open {
        let answer = l4
            .ask(conversation)
            .unwrap_or_else(|e| panic!("{dataplane}: an established connection broke: {e}"));
        assert_eq!(
            &answer.backend, backend,
            "{dataplane}: it stays on its backend"
        );
    }
    for port in 52000..52030u16 {
        let (_, answer) = l4.ask_once(Some(port)).expect("the service answers");
        assert_eq!(
            answer.backend, HTTP2,
            "{dataplane}: port {port} avoids the drained http1"
        );
    }

    let unknown = SocketAddrV4::new(l4.host(HTTP1).ip, TCP_PORT + 50);
    let refused = set_drained(&node, unknown, true).expect_err("not a backend of who");
    assert!(refused.to_string().contains("has no backend"), "{refused}");

    set_drained(&node, http1, false).expect("enable");
    let mut seen = BTreeMap::new();
    for port in 52100..52140u16 {
        let (_, answer) = l4.ask_once(Some(port)).expect("the service answers");
        *seen.entry(answer.backend).or_insert(0) += 1;
    }
    assert_eq!(
        seen.len(),
        2,
        "{dataplane}: both get new connections after enable: {seen:?}"
    );
    node.shutdown();
}

#[test]
fn draining_an_xdp_backend_keeps_its_connections_and_sends_new_ones_elsewhere() {
    drain_keeps_established_connections_and_moves_new_ones("xdp-generic");
}

#[test]
fn draining_a_relayed_backend_keeps_its_connections_and_sends_new_ones_elsewhere() {
    drain_keeps_established_connections_and_moves_new_ones("none");
}
