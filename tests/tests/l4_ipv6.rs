//! IPv6 L4 services: an IPv6 client reaches a TCP and a UDP service on the IPv6 VIP
//! `2001:2::99` through lb1's XDP program (generic mode on veth), by direct server return to
//! http1 and http2 (the VIP on their loopback), and through the userspace relay; both send
//! each flow to the backend Maglev picks for it by `lb_common::flow_hash6`.
//!
//! The lab is the dual-stack one: every host also has 2001:2::N/64 (RFC 5180's benchmarking
//! range; the client is 2001:2::10), added without duplicate address detection so it serves at
//! once. The lab's teardown removes the namespaces with everything in them, pinned maps
//! included, also when an assertion fails.

mod l4_common;

use std::collections::BTreeSet;
use std::io;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use l4_common::{eventually, parse, Node};
use tandem::config::Config;
use tandem::dataplane::{self, DataplaneKind, Plan};
use tandem_lab::l4::{make_dsr_backend, parse_answer, Answer, NetnsRuntime, WhoServer};
use tandem_lab::{Host, Lab, CLIENT, HTTP1, HTTP2, LB1, LB2, VIP6};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::TcpSocket;

const TCP_PORT: u16 = 7000;
const UDP_PORT: u16 = 7001;
/// Client ports the tests ask from, so that Maglev's choice for each is known.
const PORTS: std::ops::Range<u16> = 47000..47024;
const ANSWER_TIMEOUT: Duration = Duration::from_secs(3);

/// A host's IPv6 address: every host of the dual-stack lab has one.
fn ip6(host: &Host) -> Ipv6Addr {
    host.ip6.expect("a dual-stack lab host has an IPv6 address")
}

/// The dual-stack lab; the backends serve the IPv6 VIP by direct server return. Field order: the servers and the client's runtime go before the lab.
struct Ipv6Lab {
    _servers: Vec<WhoServer>,
    client: NetnsRuntime,
    lab: Lab,
}

impl Ipv6Lab {
    fn new() -> Ipv6Lab {
        let lab = Lab::dual_stack().expect("dual-stack lab");
        let mut servers = Vec::new();
        // lb2 serves too: the backend a reload inserts.
        for name in [HTTP1, HTTP2, LB2] {
            let host = lab.host(name);
            make_dsr_backend(host, VIP6).expect("VIP on the backend's loopback");
            for port in [TCP_PORT, UDP_PORT] {
                servers.push(WhoServer::start(host, port, Some(VIP6), name).expect("who server"));
            }
        }
        let client = NetnsRuntime::new(lab.host(CLIENT)).expect("client runtime");
        Ipv6Lab {
            _servers: servers,
            client,
            lab,
        }
    }

    fn host(&self, name: &str) -> &Host {
        self.lab.host(name)
    }

    /// lb1's data plane in `mode` for the IPv6 services over http1 and http2 (see
    /// [`Ipv6Lab::open`]).
    fn lb1(&self, mode: &str) -> Node {
        self.open(self.config(mode, &[HTTP1, HTTP2]))
    }

    /// lb1's config: the IPv6 TCP and UDP services over `backends`, in that order.
    fn config(&self, mode: &str, backends: &[&str]) -> Config {
        let pin_dir = self.lab.pin_dir(LB1);
        let backends = |port: u16| {
            backends
                .iter()
                .map(|h| format!("\"[{}]:{port}\"", ip6(self.host(h))))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let text = format!(
            r#"
[node]
name = "lb1"
interface = "eth0"
dataplane = "{mode}"
bpf_pin_dir = "{pin_dir}"
control_socket = "{socket}"

[[service]]
name = "who6"
listen = "[{VIP6}]:{TCP_PORT}"
mode = "tcp"
backends = [{tcp}]

[[service]]
name = "who6-udp"
listen = "[{VIP6}]:{UDP_PORT}"
mode = "udp"
backends = [{udp}]
"#,
            pin_dir = pin_dir.display(),
            socket = self.lab.work_dir().join("lb1.sock").display(),
            tcp = backends(TCP_PORT),
            udp = backends(UDP_PORT),
        );
        parse(&text)
    }

    /// lb1's data plane for `config`, opened in lb1's namespace and activated; lb1 then takes
    /// the VIP (as a master: maps first, then the address).
    fn open(&self, config: Config) -> Node {
        let pin_dir = self.lab.pin_dir(LB1);
        let runtime = NetnsRuntime::new(self.host(LB1)).expect("lb1 runtime");
        let opened = config.clone();
        let dataplane = runtime
            .block_on(async move { dataplane::open(&opened).await })
            .expect("open the data plane");
        let node = Node {
            runtime,
            dataplane: Arc::new(dataplane),
            config,
            pin_dir,
        };
        node.activate();
        let lb1 = self.host(LB1);
        let has_vip = lb1
            .run("ip", &["-6", "addr", "show", "dev", &lb1.iface])
            .expect("lb1's addresses")
            .contains(&VIP6.to_string());
        if !has_vip {
            // Deprecated (preferred_lft 0): it takes connections and serves sockets bound to
            // it, but the kernel never picks it as a source address. Otherwise, as a /128 it
            // matches the backends' addresses longer than lb1's own /64 does, the relay's
            // connections to the backends leave from the VIP, and the backends (which hold
            // the VIP for direct server return) answer themselves.
            lb1.run(
                "ip",
                &[
                    "-6",
                    "addr",
                    "add",
                    &format!("{VIP6}/128"),
                    "dev",
                    &lb1.iface,
                    "nodad",
                    "preferred_lft",
                    "0",
                ],
            )
            .expect("VIP on lb1");
        }
        node
    }

    /// One TCP connection from the client's `port` to the service, one question, closed with
    /// a reset (so the port can be used again at once).
    fn ask_tcp(&self, port: u16) -> io::Result<Answer> {
        self.client.block_on(async move {
            let socket = TcpSocket::new_v6()?;
            socket.set_reuseaddr(true)?;
            socket.set_zero_linger()?;
            socket.bind(SocketAddr::from((Ipv6Addr::UNSPECIFIED, port)))?;
            let server = SocketAddr::from((VIP6, TCP_PORT));
            let stream = tokio::time::timeout(ANSWER_TIMEOUT, socket.connect(server))
                .await
                .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect"))??;
            let (read, mut write) = stream.into_split();
            write.write_all(b"who\n").await?;
            let mut lines = BufReader::new(read).lines();
            match tokio::time::timeout(ANSWER_TIMEOUT, lines.next_line()).await {
                Ok(Ok(Some(line))) => parse_answer(&line),
                Ok(Ok(None)) => Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(Err(err)) => Err(err),
                Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "no answer")),
            }
        })
    }

    /// One UDP question from the client's `port`.
    fn ask_udp(&self, port: u16) -> io::Result<Answer> {
        let server = SocketAddr::from((VIP6, UDP_PORT));
        self.client
            .block_on(async move { tandem_lab::l4::ask_udp(server, port).await })
    }

    /// The backend Maglev picks for a flow from the client's `port` to `service`, computed
    /// here from the config by the library the XDP tables and the relay come from.
    fn expected(&self, node: &Node, service: &str, port: u16) -> &'static str {
        self.expected_under(&node.config, service, port)
    }

    /// [`Ipv6Lab::expected`] under `config`.
    fn expected_under(&self, config: &Config, service: &str, port: u16) -> &'static str {
        let plan = Plan::new(config).expect("plan");
        let service = plan.service(service).expect("service");
        let client = SocketAddr::from((ip6(self.host(CLIENT)), port));
        let chosen = service
            .choose(&service.maglev(|_| true), client)
            .expect("a backend")
            .address
            .ip();
        [HTTP1, HTTP2, LB2]
            .into_iter()
            .find(|h| chosen == IpAddr::V6(ip6(self.host(h))))
            .unwrap_or_else(|| panic!("{chosen} is no backend"))
    }

    /// A TCP connection from the client's `port`, kept open.
    fn converse(&self, port: u16) -> io::Result<Conversation6> {
        self.client.block_on(async move {
            let socket = TcpSocket::new_v6()?;
            socket.set_reuseaddr(true)?;
            socket.set_zero_linger()?;
            socket.bind(SocketAddr::from((Ipv6Addr::UNSPECIFIED, port)))?;
            let server = SocketAddr::from((VIP6, TCP_PORT));
            let stream = tokio::time::timeout(ANSWER_TIMEOUT, socket.connect(server))
                .await
                .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect"))??;
            let (read, write) = stream.into_split();
            Ok(Conversation6 {
                lines: BufReader::new(read).lines(),
                write,
            })
        })
    }

    /// One question on a kept-open connection (its socket is the client's already).
    fn ask(&self, conversation: &mut Conversation6) -> io::Result<Answer> {
        self.client.handle().block_on(async {
            conversation.write.write_all(b"who\n").await?;
            match tokio::time::timeout(ANSWER_TIMEOUT, conversation.lines.next_line()).await {
                Ok(Ok(Some(line))) => parse_answer(&line),
                Ok(Ok(None)) => Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(Err(err)) => Err(err),
                Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "no answer")),
            }
        })
    }
}

/// A TCP connection to the service kept open across what a test does to lb1.
struct Conversation6 {
    lines: tokio::io::Lines<BufReader<tokio::net::tcp::OwnedReadHalf>>,
    write: tokio::net::tcp::OwnedWriteHalf,
}

#[test]
fn an_ipv6_client_reaches_ipv6_l4_services_through_xdp_by_direct_server_return() {
    let lab = Ipv6Lab::new();
    let node = lab.lb1("xdp-generic");
    let client = IpAddr::V6(ip6(lab.host(CLIENT)));

    let mut seen = BTreeSet::new();
    for port in PORTS {
        let answer = lab.ask_tcp(port).unwrap_or_else(|e| {
            panic!(
                "no TCP answer through lb1 from port {port} ({e}); lb1's counters: {}",
                node.maps_json(lab.host(LB1))["counters"]
            )
        });
        assert_eq!(
            answer.peer, client,
            "direct server return: the backend sees the client itself"
        );
        assert_eq!(
            answer.backend,
            lab.expected(&node, "who6", port),
            "client port {port}: the backend the Maglev table says"
        );
        seen.insert(answer.backend);
    }
    assert_eq!(seen.len(), 2, "both backends get connections: {seen:?}");
    for port in PORTS.take(8) {
        let answer = lab.ask_udp(port).expect("a UDP answer through lb1");
        assert_eq!(answer.peer, client);
        assert_eq!(answer.backend, lab.expected(&node, "who6-udp", port));
    }

    // What the kernel did, per family, as `tandem maps` reads it from the pins.
    let maps = node.maps_json(lab.host(LB1));
    let counters = &maps["counters"];
    let counter = |name: &str| counters[name].as_u64().unwrap_or(0);
    assert!(counter("ipv6_tcp") >= 3 * PORTS.len() as u64, "{counters}");
    assert!(counter("ipv6_udp") >= 8, "{counters}");
    assert!(counter("flow_new") >= PORTS.len() as u64 + 8, "{counters}");
    assert!(counter("tx") > 0, "forwarded by XDP_TX: {counters}");
    assert_eq!(
        counter("ipv4_tcp") + counter("ipv4_udp"),
        0,
        "nothing went over IPv4: {counters}"
    );
    assert!(
        counter("ipv6_other") > 0,
        "neighbour discovery passed to the kernel: {counters}"
    );
    let services = maps["services"].as_array().expect("services");
    let tcp = services
        .iter()
        .find(|s| s["port"] == TCP_PORT)
        .expect("the TCP service in tandem maps");
    assert_eq!(tcp["vip"], VIP6.to_string());
    let backends = tcp["backends"].as_array().unwrap();
    assert_eq!(backends.len(), 2, "{tcp}");
    for backend in backends {
        assert!(backend["address"].as_str().unwrap().starts_with("2001:2::"));
        assert_ne!(
            backend["mac"], "00:00:00:00:00:00",
            "MAC by neighbour discovery"
        );
        assert!(backend["packets"].as_u64().unwrap() > 0, "{backend}");
    }
    assert!(maps["flow_count"].as_u64().unwrap() >= PORTS.len() as u64 + 8);

    // The text views: `tandem maps --verbose` and the data plane's status for `tandem status`.
    let output = lab
        .host(LB1)
        .command(tandem_lab::tandem_binary().expect("tandem binary"))
        .args(["maps", "--verbose", "--pin-dir"])
        .arg(&node.pin_dir)
        .output()
        .expect("tandem maps --verbose");
    let text = String::from_utf8_lossy(&output.stdout);
    println!("{text}");
    assert!(
        text.contains(&format!("[{VIP6}]:{TCP_PORT}/tcp  forward")),
        "{text}"
    );
    assert!(
        text.contains(&format!("[{client}]:{}", PORTS.start)),
        "{text}"
    );
    let status = node.status();
    assert_eq!(status.kind, DataplaneKind::Xdp);
    let listens: Vec<String> = status
        .services
        .iter()
        .map(|s| s.listen.to_string())
        .collect();
    assert!(
        listens.contains(&format!("[{VIP6}]:{TCP_PORT}")),
        "{listens:?}"
    );
    assert!(status.services[0].backends.iter().all(|b| b.mac.is_some()));
    assert!(status.flows.unwrap_or(0) >= PORTS.len());

    // A node that steps down empties the IPv6 maps too: no service, no VIP left.
    node.deactivate();
    let maps = node.maps_json(lab.host(LB1));
    assert_eq!(maps["services"].as_array().map(Vec::len), Some(0), "{maps}");
    node.shutdown();
}

#[test]
fn the_relay_serves_ipv6_l4_services_with_the_backends_xdp_chooses() {
    let lab = Ipv6Lab::new();
    let node = lab.lb1("none");
    assert_eq!(node.status().kind, DataplaneKind::Relay);
    let lb1 = IpAddr::V6(ip6(lab.host(LB1)));
    let mut seen = BTreeSet::new();
    for port in PORTS {
        let answer = lab.ask_tcp(port).expect("a TCP answer through the relay");
        assert_eq!(answer.peer, lb1, "the relay connects to the backend itself");
        assert_eq!(answer.backend, lab.expected(&node, "who6", port));
        seen.insert(answer.backend);
    }
    assert_eq!(seen.len(), 2, "both backends get connections: {seen:?}");
    for port in PORTS.take(8) {
        let answer = lab.ask_udp(port).expect("a UDP answer through the relay");
        assert_eq!(answer.peer, lb1);
        assert_eq!(answer.backend, lab.expected(&node, "who6-udp", port));
    }
    let relayed = || {
        let status = node.status();
        let tcp = status
            .services
            .iter()
            .find(|s| s.name == "who6")
            .expect("who6 in the status")
            .clone();
        assert_eq!(tcp.listen.to_string(), format!("[{VIP6}]:{TCP_PORT}"));
        tcp.backends.iter().map(|b| b.packets).sum::<u64>()
    };
    // A connection is counted when its copy ends, a moment after the client's reset.
    assert!(
        eventually(Duration::from_secs(3), || relayed() == PORTS.len() as u64),
        "every connection counted: {}",
        relayed()
    );
    node.shutdown();
}

#[test]
fn ipv6_flows_are_forwarded_in_native_mode_too() {
    let lab = Ipv6Lab::new();
    // As for IPv4 (l4_forwarding.rs): veth delivers native XDP_TX frames only to a peer that
    // runs XDP itself, and the client must checksum its segments in software.
    tandem_lab::l4::prepare_native_xdp_tx(&lab.lab, LB1).expect("native XDP_TX on lb1's veth");
    lab.host(CLIENT)
        .run("ethtool", &["-K", "eth0", "tx", "off"])
        .expect("client checksums in software");
    let node = lab.lb1("xdp");
    assert_eq!(
        node.status().attach_mode.map(|m| m.to_string()),
        Some("native".to_owned())
    );
    for port in PORTS.take(10) {
        let answer = lab.ask_tcp(port).unwrap_or_else(|e| {
            panic!(
                "no answer through native XDP ({e}); lb1's counters: {}",
                node.maps_json(lab.host(LB1))["counters"]
            )
        });
        assert_eq!(answer.backend, lab.expected(&node, "who6", port));
    }
    node.shutdown();
}

#[test]
fn ipv6_flows_keep_their_backend_across_a_reload_that_inserts_a_backend_and_a_restart() {
    let lab = Ipv6Lab::new();
    let original = lab.config("xdp-generic", &[HTTP1, HTTP2]);
    let reloaded = lab.config("xdp-generic", &[LB2, HTTP1, HTTP2]);
    // Client ports whose new flows the reloaded table gives to lb2, and ports it leaves where
    // they were. Numbered in config order, the restarted data plane would give lb2 the id the
    // kernel recorded http1's flows with: the first kind would be placed again, onto lb2.
    let mut ports = Vec::new();
    let (mut to_lb2, mut staying) = (0, 0);
    for port in 53000..54000u16 {
        let before = lab.expected_under(&original, "who6", port);
        let after = lab.expected_under(&reloaded, "who6", port);
        if after == LB2 && to_lb2 < 3 {
            to_lb2 += 1;
            ports.push((port, before));
        } else if after == before && staying < 3 {
            staying += 1;
            ports.push((port, before));
        }
    }
    assert_eq!((to_lb2, staying), (3, 3), "client ports of each kind");

    let node = lab.open(original);
    let mut conversations: Vec<(Conversation6, &str)> = ports
        .iter()
        .map(|&(port, backend)| {
            let mut c = lab.converse(port).expect("connect through lb1");
            let answer = lab.ask(&mut c).expect("first answer");
            assert_eq!(answer.backend, backend, "port {port}: Maglev's choice");
            (c, backend)
        })
        .collect();
    let mut go_on = |when: &str| {
        for (c, backend) in conversations.iter_mut() {
            let answer = lab
                .ask(c)
                .unwrap_or_else(|e| panic!("{when}: the connection to {backend} broke: {e}"));
            assert_eq!(answer.backend, *backend, "{when}: the same backend");
        }
    };

    let config = reloaded.clone();
    let dataplane = node.dataplane.clone();
    node.runtime
        .block_on(async move { dataplane.reconfigure(&config).await })
        .expect("the reload");
    go_on("after the reload");
    let ids = |node: &Node| -> Vec<(u64, String)> {
        let maps = node.maps_json(lab.host(LB1));
        let service = maps["services"]
            .as_array()
            .expect("services")
            .iter()
            .find(|s| s["port"] == TCP_PORT)
            .expect("the TCP service")
            .clone();
        let mut ids: Vec<(u64, String)> = service["backends"]
            .as_array()
            .expect("backends")
            .iter()
            .map(|b| {
                (
                    b["id"].as_u64().unwrap(),
                    b["address"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        ids.sort();
        ids
    };
    let before = ids(&node);
    assert_eq!(before.len(), 3, "{before:?}");
    let moved = node.counter(lab.host(LB1), "flow_moved");

    // A stop that leaves the program and the maps (as `tandem run` does on SIGTERM), then a
    // start with the reloaded config: it numbers against what the pinned maps hold.
    node.shutdown();
    go_on("with no daemon");
    let node = lab.open(reloaded);
    go_on("after the restart");
    assert_eq!(ids(&node), before, "every backend kept its id");
    assert_eq!(
        node.counter(lab.host(LB1), "flow_moved"),
        moved,
        "no recorded flow was placed again"
    );
    node.shutdown();
}
