//! Active-active L4: two `tandem run` nodes forward the same L4 service by XDP (generic) with
//! direct server return, and the client's next hop for the VIP moves from lb1 to lb2 in the
//! middle of a TCP connection, as a router's ECMP does when its set of next hops changes. At
//! that moment the nodes disagree on the backends: lb2 has the connection's backend drained
//! (`tandem drain`, as it would have it down after seeing a health check fail first), so its
//! Maglev table sends the flow elsewhere. With `[replication]` between the nodes, lb1 has told
//! lb2 which backend the flow is on, and the connection goes on there; without it, it breaks.

mod l4_common;

use std::time::Duration;

use l4_common::{eventually, L4Lab, TCP_PORT};
use tandem_lab::pair::TandemNode;
use tandem_lab::{tandem_binary, Host, CLIENT, HTTP1, HTTP2, LB1, LB2, VIP};

const REPLICATION_PORT: u16 = 7946;

/// A node with the L4 TCP service on the VIP, both backends, XDP generic, no VRRP (the node
/// always forwards, as every node of an active-active group does); with `[replication]` to
/// `peer` when given.
fn node_config(l4: &L4Lab, host: &Host, peer: Option<&Host>) -> String {
    let lab = &l4.lab;
    let node = TandemNode::node_section(lab, host).replace(
        "dataplane = \"none\"\n",
        &format!(
            "dataplane = \"xdp-generic\"\nbpf_pin_dir = \"{}\"\n",
            lab.pin_dir(&host.name).display()
        ),
    );
    let backends = [HTTP1, HTTP2]
        .iter()
        .map(|h| format!("\"{}:{TCP_PORT}\"", l4.host(h).ip))
        .collect::<Vec<_>>()
        .join(", ");
    let replication = match peer {
        Some(peer) => format!(
            "\n[replication]\nlisten = \"{}:{REPLICATION_PORT}\"\npeers = [\"{}:{REPLICATION_PORT}\"]\n",
            host.ip, peer.ip
        ),
        None => String::new(),
    };
    format!(
        "{node}\n[[service]]\nname = \"who\"\nlisten = \"{VIP}:{TCP_PORT}\"\nmode = \"tcp\"\n\
         backends = [{backends}]\n{replication}"
    )
}

/// Points the client's neighbour entry for the VIP at `node`'s MAC: the next hop a router
/// would choose for the flow.
fn route_vip_through(l4: &L4Lab, node: &str) {
    let mac = l4.host(node).mac().expect("node MAC");
    let mac = mac
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":");
    let client = l4.host(CLIENT);
    client
        .run(
            "ip",
            &[
                "neigh",
                "replace",
                &VIP.to_string(),
                "lladdr",
                &mac,
                "dev",
                &client.iface,
                "nud",
                "permanent",
            ],
        )
        .expect("the client's neighbour entry for the VIP");
}

fn status(node: &TandemNode) -> serde_json::Value {
    node.status()
        .unwrap_or_else(|e| panic!("{}: {e:#}\n{}", node.host, node.log_text()))
}

/// Packets the node's XDP program sent to `backend` (an address of the lab).
fn packets_to(node: &TandemNode, backend: &str) -> u64 {
    status(node)["dataplane"]["services"][0]["backends"]
        .as_array()
        .expect("backends")
        .iter()
        .find(|b| b["address"] == backend)
        .and_then(|b| b["packets"].as_u64())
        .unwrap_or_else(|| panic!("{backend} in {}'s status", node.host))
}

/// Starts both nodes, opens a connection through lb1, drains its backend on lb2, waits for
/// what sharing would take, moves the client's next hop to lb2, and asks again: the answer
/// (or the error) on the moved connection, with the backend it began on.
fn move_a_connection_while_lb2_has_its_backend_drained(
    l4: &L4Lab,
    sharing: bool,
) -> (std::io::Result<String>, String, TandemNode, TandemNode) {
    let (lb1_host, lb2_host) = (l4.host(LB1), l4.host(LB2));
    let lb1 = TandemNode::start(
        &l4.lab,
        lb1_host,
        &node_config(l4, lb1_host, sharing.then_some(lb2_host)),
    )
    .expect("start lb1");
    let lb2 = TandemNode::start(
        &l4.lab,
        lb2_host,
        &node_config(l4, lb2_host, sharing.then_some(lb1_host)),
    )
    .expect("start lb2");
    for node in [&lb1, &lb2] {
        assert!(
            eventually(Duration::from_secs(15), || {
                node.status().is_ok_and(|s| {
                    s["dataplane"]["active"] == true && s["dataplane"]["kind"] == "xdp"
                })
            }),
            "{} forwards by XDP:\n{}",
            node.host,
            node.log_text()
        );
        assert_eq!(
            status(node)["dataplane"]["flow_sharing"].is_object(),
            sharing,
            "{}: flow sharing shown exactly when configured",
            node.host
        );
    }

    route_vip_through(l4, LB1);
    let mut conversation = l4.converse(None).expect("connect through lb1");
    let backend = l4.ask(&mut conversation).expect("first answer").backend;
    let backend_address = format!("{}:{TCP_PORT}", l4.host(&backend).ip);
    assert!(packets_to(&lb1, &backend_address) > 0, "lb1 carried it");

    // lb2 sees the backend set differently for a moment: the connection's backend out of
    // rotation (still up: its recorded flows would go on there).
    let output = std::process::Command::new(tandem_binary().expect("binary"))
        .args(["drain", "who", &backend_address, "--socket"])
        .arg(&lb2.socket)
        .output()
        .expect("run tandem drain");
    assert!(
        output.status.success(),
        "tandem drain: {}",
        String::from_utf8_lossy(&output.stderr)
    );

    if sharing {
        assert!(
            eventually(Duration::from_secs(5), || {
                status(&lb2)["dataplane"]["flow_sharing"]["inserted"].as_u64() >= Some(1)
            }),
            "lb2 recorded the flow lb1 shared: {}\n{}",
            status(&lb2)["dataplane"],
            lb2.log_text()
        );
    } else {
        // As long as sharing needs, and more: nothing arrives.
        std::thread::sleep(Duration::from_secs(2));
    }

    route_vip_through(l4, LB2);
    let moved = l4.ask(&mut conversation).map(|answer| answer.backend);
    (moved, backend, lb1, lb2)
}

#[test]
fn a_connection_moved_to_another_node_keeps_its_backend_when_the_nodes_share_flows() {
    let l4 = L4Lab::new();
    let (moved, backend, lb1, lb2) = move_a_connection_while_lb2_has_its_backend_drained(&l4, true);
    let answer = moved.unwrap_or_else(|e| {
        panic!(
            "the connection broke on lb2: {e}\nlb1: {}\nlb2: {}",
            status(&lb1)["dataplane"],
            status(&lb2)["dataplane"]
        )
    });
    assert_eq!(answer, backend, "lb2 sent it to the backend lb1 chose");
    let backend_address = format!("{}:{TCP_PORT}", l4.host(&backend).ip);
    assert!(
        packets_to(&lb2, &backend_address) > 0,
        "lb2 carried it after the move"
    );
    let lb1_sharing = status(&lb1)["dataplane"]["flow_sharing"].clone();
    let lb2_sharing = status(&lb2)["dataplane"]["flow_sharing"].clone();
    assert!(lb1_sharing["sent"].as_u64() >= Some(1), "{lb1_sharing}");
    assert_eq!(
        lb1_sharing["inserted"], 0,
        "nothing came back: {lb1_sharing}"
    );
    assert!(lb2_sharing["received"].as_u64() >= Some(1), "{lb2_sharing}");
    assert_eq!(lb2_sharing["ignored"], 0, "{lb2_sharing}");
    assert_eq!(
        lb2_sharing["sent"], 0,
        "a received flow is not sent back: {lb2_sharing}"
    );
}

#[test]
fn without_flow_sharing_a_moved_connection_breaks_when_the_nodes_disagree() {
    let l4 = L4Lab::new();
    let (moved, backend, _lb1, lb2) =
        move_a_connection_while_lb2_has_its_backend_drained(&l4, false);
    assert!(
        moved.is_err(),
        "lb2 placed the flow by its own table, on another backend than {backend}: {moved:?}\n{}",
        status(&lb2)["dataplane"]
    );
}
