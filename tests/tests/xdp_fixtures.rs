//! Packet fixtures for the XDP program, run through BPF_PROG_TEST_RUN (Katran's way of testing
//! a data plane): for each branch of the program, an input frame, the expected verdict and the
//! expected output frame, against maps filled the way the data plane fills them. No network is
//! involved; the program and its maps are the real ones, loaded from the object embedded in
//! the `tandem` library.
//!
//! Needs root (loading BPF) and a bpffs at /sys/fs/bpf, like the lab tests.

mod support;

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

use lb_common::{
    flow_hash, BackendValue, FlowKey, FlowValue, ServiceKey, ServiceMode, ServiceValue, BACKEND_UP,
    IPPROTO_TCP, IPPROTO_UDP, MAGLEV_TABLE_SIZE, NO_BACKEND,
};
use support::packets::{
    self, ethernet, icmp, tcp_frame, udp_frame, Ipv4, ACK, ETH_P_ARP, ETH_P_IP, ETH_P_IPV6,
    IPPROTO_ICMP, PSH, SYN,
};
use tandem::backends::maglev::{Maglev, DEFAULT_TABLE_SIZE};
use tandem::dataplane::xdp::loader;
use tandem::dataplane::xdp::maps::KernelMaps;

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
const XDP_TX: u32 = 3;

const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 99);
const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 10);
const LB1: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 100);
const HTTP1: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 102);
const HTTP2: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 103);
const ROUTER: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);

const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0a];
/// The VRRP virtual MAC a client may send to; forwarded frames leave with the interface's own.
const VIP_MAC: [u8; 6] = [0x00, 0x00, 0x5e, 0x00, 0x01, 0x33];
const IFACE_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x64];
const HTTP1_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x66];
const HTTP2_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x67];

/// Service ports of the fixture's node.
const WEB: u16 = 80; // L7
const L4_TCP: u16 = 8080; // L4 TCP, two backends
const L4_UDP: u16 = 5353; // L4 UDP, two backends
const NO_BACKENDS: u16 = 9000; // L4 TCP, every backend down
const NO_MAC: u16 = 9001; // L4 TCP, one backend whose MAC is not known yet
const CLOSED: u16 = 22; // no service on the VIP

/// Backend ids, as the data plane numbers them.
const TCP_B1: u32 = 0;
const TCP_B2: u32 = 1;
const UDP_B1: u32 = 2;
const UDP_B2: u32 = 3;
const NOMAC_B: u32 = 4;

/// The program loaded with its maps pinned in a directory of its own, removed on drop.
struct Fixture {
    ebpf: loader::Ebpf,
    maps: KernelMaps,
    pin_dir: PathBuf,
    tcp_maglev: Maglev,
    udp_maglev: Maglev,
}

static NEXT: AtomicU32 = AtomicU32::new(0);

impl Fixture {
    /// The program with empty maps: a node that is not master.
    fn empty() -> Fixture {
        let pin_dir = PathBuf::from(format!(
            "/sys/fs/bpf/tandem-fixtures-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let ebpf = loader::load_unattached(&pin_dir).expect(
            "load the XDP program (needs root, a bpffs, and a tandem built with the object)",
        );
        let maps = KernelMaps::open(&pin_dir).expect("open the maps");
        let names = |port: u16| {
            [
                format!("{HTTP1}:{port}").into_bytes(),
                format!("{HTTP2}:{port}").into_bytes(),
            ]
        };
        let tcp = names(L4_TCP);
        let udp = names(L4_UDP);
        Fixture {
            ebpf,
            maps,
            pin_dir,
            tcp_maglev: Maglev::new(&[(&tcp[0], 1), (&tcp[1], 1)], DEFAULT_TABLE_SIZE),
            udp_maglev: Maglev::new(&[(&udp[0], 1), (&udp[1], 1)], DEFAULT_TABLE_SIZE),
        }
    }

    /// The program with the maps of a master node serving the services above.
    fn master() -> Fixture {
        let mut f = Fixture::empty();
        f.maps.set_iface_mac(IFACE_MAC).unwrap();
        f.maps.put_vip(u32::from_ne_bytes(VIP.octets())).unwrap();
        let service = |port: u16, proto: u8, id: u32, mode: ServiceMode, ring: u32| {
            (
                ServiceKey::new(VIP.octets(), port, proto),
                ServiceValue {
                    id,
                    mode: mode as u32,
                    ring,
                },
            )
        };
        for (key, value) in [
            service(WEB, IPPROTO_TCP, 0, ServiceMode::Proxy, 0),
            service(L4_TCP, IPPROTO_TCP, 1, ServiceMode::Forward, 0),
            service(L4_UDP, IPPROTO_UDP, 2, ServiceMode::Forward, 1),
            service(NO_BACKENDS, IPPROTO_TCP, 3, ServiceMode::Forward, 2),
            service(NO_MAC, IPPROTO_TCP, 4, ServiceMode::Forward, 3),
        ] {
            f.maps.put_service(key, value).unwrap();
        }
        let backend = |addr: Ipv4Addr, port: u16, mac: [u8; 6], service: u32| BackendValue {
            addr: u32::from_ne_bytes(addr.octets()),
            mac,
            port: port.to_be(),
            flags: BACKEND_UP,
            service,
        };
        for (id, value) in [
            (TCP_B1, backend(HTTP1, L4_TCP, HTTP1_MAC, 1)),
            (TCP_B2, backend(HTTP2, L4_TCP, HTTP2_MAC, 1)),
            (UDP_B1, backend(HTTP1, L4_UDP, HTTP1_MAC, 2)),
            (UDP_B2, backend(HTTP2, L4_UDP, HTTP2_MAC, 2)),
            (NOMAC_B, backend(HTTP1, NO_MAC, [0; 6], 4)),
        ] {
            f.maps.put_backend(id, value).unwrap();
        }
        // Maglev tables: the kernel gets backend ids; index i of the Maglev backends is id base+i.
        let ids =
            |m: &Maglev, base: u32| -> Vec<u32> { m.table().iter().map(|i| base + i).collect() };
        let tcp_table = ids(&f.tcp_maglev, TCP_B1);
        let udp_table = ids(&f.udp_maglev, UDP_B1);
        f.maps.write_table(0, &tcp_table, None).unwrap();
        f.maps.write_table(1, &udp_table, None).unwrap();
        f.maps
            .write_table(2, &vec![NO_BACKEND; MAGLEV_TABLE_SIZE as usize], None)
            .unwrap();
        f.maps
            .write_table(3, &vec![NOMAC_B; MAGLEV_TABLE_SIZE as usize], None)
            .unwrap();
        f
    }

    fn run(&mut self, frame: &[u8]) -> (u32, Vec<u8>) {
        loader::test_run(&mut self.ebpf, frame).expect("BPF_PROG_TEST_RUN")
    }

    fn counter(&self, name: &str) -> u64 {
        self.maps.counters().unwrap()[name]
    }

    /// The MAC of the backend userspace Maglev chooses for a TCP flow to the L4 service.
    fn maglev_tcp_mac(&self, sport: u16) -> [u8; 6] {
        let hash = flow_hash(CLIENT.octets(), sport, VIP.octets(), L4_TCP, IPPROTO_TCP);
        [HTTP1_MAC, HTTP2_MAC][self.tcp_maglev.lookup(hash).unwrap()]
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = loader::remove_pins(&self.pin_dir);
    }
}

/// `frame` with its Ethernet addresses replaced: what XDP_TX towards `dst` must send.
fn rewritten(frame: &[u8], dst: [u8; 6], src: [u8; 6]) -> Vec<u8> {
    let mut out = frame.to_vec();
    out[0..6].copy_from_slice(&dst);
    out[6..12].copy_from_slice(&src);
    out
}

fn to_vip(port: u16, sport: u16, flags: u8) -> Vec<u8> {
    tcp_frame(
        (VIP_MAC, CLIENT_MAC),
        (CLIENT, sport),
        (VIP, port),
        flags,
        b"",
    )
}

/// Client ports whose flows Maglev sends to HTTP1 and to HTTP2 respectively.
fn ports_to_each_backend(f: &Fixture) -> (u16, u16) {
    let mut to = [None, None];
    for sport in 40000..41000u16 {
        let slot = if f.maglev_tcp_mac(sport) == HTTP1_MAC {
            0
        } else {
            1
        };
        to[slot].get_or_insert(sport);
        if let [Some(a), Some(b)] = to {
            return (a, b);
        }
    }
    panic!("1000 client ports all hash to one backend: the flow hash is broken");
}

fn check(f: &mut Fixture, name: &str, input: &[u8], verdict: u32, output: &[u8]) {
    let (got_verdict, got_output) = f.run(input);
    assert_eq!(got_verdict, verdict, "{name}: verdict");
    assert_eq!(
        got_output, output,
        "{name}: output frame\n  got      {got_output:02x?}\n  expected {output:02x?}"
    );
}

#[test]
fn each_branch_gives_its_verdict_and_output_frame() {
    let mut f = Fixture::master();
    let (to_http1, to_http2) = ports_to_each_backend(&f);

    // L7 service: up to the proxy, untouched.
    let syn = to_vip(WEB, 40000, SYN);
    check(&mut f, "L7 service", &syn, XDP_PASS, &syn);

    // L4 TCP, new flows: MACs rewritten towards the backend Maglev picks (the same one the
    // userspace Maglev computes from lb_common::flow_hash), out the same interface.
    for (sport, mac) in [(to_http1, HTTP1_MAC), (to_http2, HTTP2_MAC)] {
        let syn = to_vip(L4_TCP, sport, SYN);
        check(
            &mut f,
            "L4 TCP new flow",
            &syn,
            XDP_TX,
            &rewritten(&syn, mac, IFACE_MAC),
        );
    }

    // L4 UDP.
    let dgram = udp_frame(
        (VIP_MAC, CLIENT_MAC),
        (CLIENT, 53000),
        (VIP, L4_UDP),
        b"query",
    );
    let hash = flow_hash(CLIENT.octets(), 53000, VIP.octets(), L4_UDP, IPPROTO_UDP);
    let mac = [HTTP1_MAC, HTTP2_MAC][f.udp_maglev.lookup(hash).unwrap()];
    check(
        &mut f,
        "L4 UDP",
        &dgram,
        XDP_TX,
        &rewritten(&dgram, mac, IFACE_MAC),
    );

    // 802.1Q-tagged: the tag stays, only the MACs change.
    let segment = packets::tcp(CLIENT, VIP, to_http1, L4_TCP, ACK, b"x");
    let ip = Ipv4::new(CLIENT, VIP, IPPROTO_TCP).build(&segment);
    let tagged = ethernet(VIP_MAC, CLIENT_MAC, Some(10), ETH_P_IP, &ip);
    check(
        &mut f,
        "tagged L4 TCP",
        &tagged,
        XDP_TX,
        &rewritten(&tagged, HTTP1_MAC, IFACE_MAC),
    );

    // The VIP on a port with no service: dropped.
    let syn = to_vip(CLOSED, 40000, SYN);
    check(&mut f, "VIP, no such port", &syn, XDP_DROP, &syn);
    let dgram = udp_frame((VIP_MAC, CLIENT_MAC), (CLIENT, 53000), (VIP, L4_TCP), b"");
    check(&mut f, "VIP, TCP port over UDP", &dgram, XDP_DROP, &dgram);

    // Not for a VIP: the node's own address, another host.
    let own = tcp_frame(
        (IFACE_MAC, CLIENT_MAC),
        (CLIENT, 40000),
        (LB1, 22),
        SYN,
        b"",
    );
    check(&mut f, "node's own address", &own, XDP_PASS, &own);
    let other = tcp_frame(
        (IFACE_MAC, CLIENT_MAC),
        (CLIENT, 40000),
        (HTTP1, L4_TCP),
        SYN,
        b"",
    );
    check(&mut f, "another host", &other, XDP_PASS, &other);

    // IPv4 with options, and fragments, for an L4 service: to the kernel.
    let segment = packets::tcp(CLIENT, VIP, to_http1, L4_TCP, SYN, b"");
    let mut with_options = Ipv4::new(CLIENT, VIP, IPPROTO_TCP);
    with_options.options = vec![0x94, 0x04, 0, 0]; // router alert
    let frame = ethernet(
        VIP_MAC,
        CLIENT_MAC,
        None,
        ETH_P_IP,
        &with_options.build(&segment),
    );
    check(&mut f, "IPv4 options", &frame, XDP_PASS, &frame);
    let mut first_fragment = Ipv4::new(CLIENT, VIP, IPPROTO_UDP);
    first_fragment.frag = 0x2000; // more fragments, offset 0
    let datagram = packets::udp(CLIENT, VIP, 53000, L4_UDP, &[7u8; 64]);
    let frame = ethernet(
        VIP_MAC,
        CLIENT_MAC,
        None,
        ETH_P_IP,
        &first_fragment.build(&datagram),
    );
    check(&mut f, "first fragment", &frame, XDP_PASS, &frame);
    let mut later_fragment = Ipv4::new(CLIENT, VIP, IPPROTO_UDP);
    later_fragment.frag = 0x0008; // offset 64 bytes, last
    let frame = ethernet(
        VIP_MAC,
        CLIENT_MAC,
        None,
        ETH_P_IP,
        &later_fragment.build(&[7u8; 16]),
    );
    check(&mut f, "later fragment", &frame, XDP_PASS, &frame);

    // ICMP echo to the VIP: the master's kernel answers it.
    let echo = icmp(8, 0, [0, 1, 0, 1], b"ping");
    let frame = ethernet(
        VIP_MAC,
        CLIENT_MAC,
        None,
        ETH_P_IP,
        &Ipv4::new(CLIENT, VIP, IPPROTO_ICMP).build(&echo),
    );
    check(&mut f, "ICMP echo", &frame, XDP_PASS, &frame);

    // An L4 service whose backends are all down, and one whose backend MAC is unknown.
    let syn = to_vip(NO_BACKENDS, 40000, SYN);
    check(&mut f, "no backend up", &syn, XDP_DROP, &syn);
    let syn = to_vip(NO_MAC, 40000, SYN);
    check(&mut f, "backend MAC unknown", &syn, XDP_DROP, &syn);

    // Not IPv4 at all, and malformed IPv4.
    let arp = ethernet([0xff; 6], CLIENT_MAC, None, ETH_P_ARP, &[0u8; 28]);
    check(&mut f, "ARP", &arp, XDP_PASS, &arp);
    let v6 = ethernet(VIP_MAC, CLIENT_MAC, None, ETH_P_IPV6, &[0x60; 40]);
    check(&mut f, "IPv6", &v6, XDP_PASS, &v6);
    let mut truncated = to_vip(L4_TCP, to_http1, SYN);
    truncated.truncate(14 + 20 + 10);
    check(&mut f, "truncated TCP", &truncated, XDP_PASS, &truncated);

    let counters = f.maps.counters().unwrap();
    assert_eq!(
        counters["pass"] + counters["tx"] + counters["drop"],
        counters["ipv4_tcp"]
            + counters["ipv4_udp"]
            + counters["ipv4_other"]
            + counters["ipv6"]
            + counters["non_ip"]
            + counters["malformed"],
        "each frame has one verdict and one kind: {counters:?}"
    );
    for (name, expected) in [
        ("tx", 4),
        ("drop", 4),
        ("pass_l7", 1),
        ("pass_ip_options", 1),
        ("pass_fragment", 2),
        ("pass_icmp", 1),
        ("drop_no_service", 2),
        ("drop_no_backend", 1),
        ("drop_no_mac", 1),
        ("malformed", 1),
    ] {
        assert_eq!(counters[name], expected, "counter {name}: {counters:?}");
    }
}

#[test]
fn a_node_with_empty_maps_passes_everything_for_the_vip() {
    // A backup: the program is attached but SERVICES, VIPS and the tables are empty.
    let mut f = Fixture::empty();
    for port in [WEB, L4_TCP, CLOSED] {
        let syn = to_vip(port, 40000, SYN);
        check(&mut f, "backup node", &syn, XDP_PASS, &syn);
    }
    assert_eq!(f.counter("tx") + f.counter("drop"), 0);
}

#[test]
fn a_flow_keeps_its_recorded_backend_and_moves_only_when_that_backend_goes() {
    let mut f = Fixture::master();
    let (to_http1, _) = ports_to_each_backend(&f);
    let key = FlowKey {
        src: u32::from_ne_bytes(CLIENT.octets()),
        dst: u32::from_ne_bytes(VIP.octets()),
        sport: to_http1.to_be(),
        dport: L4_TCP.to_be(),
        proto: IPPROTO_TCP,
        _pad: [0; 3],
    };

    // The first packet records the flow with the backend Maglev chose.
    let syn = to_vip(L4_TCP, to_http1, SYN);
    check(
        &mut f,
        "first packet",
        &syn,
        XDP_TX,
        &rewritten(&syn, HTTP1_MAC, IFACE_MAC),
    );
    assert_eq!(
        f.maps.flow(&key),
        Some(FlowValue {
            backend: TCP_B1,
            backend_addr: u32::from_ne_bytes(HTTP1.octets()),
        })
    );
    assert_eq!((f.counter("flow_new"), f.counter("flow_hit")), (1, 0));

    // A recorded flow wins over the table: a flow placed when the tables differed (another
    // backend set, the other node's table) stays where it is.
    f.maps
        .put_flow(
            key,
            FlowValue {
                backend: TCP_B2,
                backend_addr: u32::from_ne_bytes(HTTP2.octets()),
            },
        )
        .unwrap();
    let ack = to_vip(L4_TCP, to_http1, ACK | PSH);
    check(
        &mut f,
        "recorded flow",
        &ack,
        XDP_TX,
        &rewritten(&ack, HTTP2_MAC, IFACE_MAC),
    );
    assert_eq!(f.counter("flow_hit"), 1);

    // HTTP2 goes down: userspace rebuilds the table without it and clears its flag. The flow
    // moves to what the new table says, and is recorded there.
    let only_http1 = vec![TCP_B1; MAGLEV_TABLE_SIZE as usize];
    f.maps.write_table(0, &only_http1, None).unwrap();
    let mut down = f.maps.backend(TCP_B2).unwrap();
    down.flags = 0;
    f.maps.put_backend(TCP_B2, down).unwrap();
    check(
        &mut f,
        "backend down",
        &ack,
        XDP_TX,
        &rewritten(&ack, HTTP1_MAC, IFACE_MAC),
    );
    assert_eq!(f.counter("flow_moved"), 1);
    assert_eq!(f.maps.flow(&key).map(|v| v.backend), Some(TCP_B1));
}

#[test]
fn icmp_fragmentation_needed_about_an_l4_flow_goes_to_that_flows_backend() {
    let mut f = Fixture::master();
    let (to_http1, to_http2) = ports_to_each_backend(&f);
    // Record the flow on HTTP2 although Maglev would pick HTTP1, to see the table is not used.
    let key = FlowKey {
        src: u32::from_ne_bytes(CLIENT.octets()),
        dst: u32::from_ne_bytes(VIP.octets()),
        sport: to_http1.to_be(),
        dport: L4_TCP.to_be(),
        proto: IPPROTO_TCP,
        _pad: [0; 3],
    };
    f.maps
        .put_flow(
            key,
            FlowValue {
                backend: TCP_B2,
                backend_addr: u32::from_ne_bytes(HTTP2.octets()),
            },
        )
        .unwrap();

    // A router on the way back to the client could not forward the backend's large segment
    // (VIP:8080 -> client), and tells the VIP.
    let frag_needed = |client_port: u16| {
        let quoted_segment = packets::tcp(VIP, CLIENT, L4_TCP, client_port, ACK, &[0u8; 1400]);
        let quoted = Ipv4::new(VIP, CLIENT, IPPROTO_TCP).build(&quoted_segment);
        let message = icmp(3, 4, [0, 0, 0x05, 0xdc], &quoted[..28]);
        ethernet(
            VIP_MAC,
            CLIENT_MAC,
            None,
            ETH_P_IP,
            &Ipv4::new(ROUTER, VIP, IPPROTO_ICMP).build(&message),
        )
    };
    let frame = frag_needed(to_http1);
    check(
        &mut f,
        "frag needed, recorded flow",
        &frame,
        XDP_TX,
        &rewritten(&frame, HTTP2_MAC, IFACE_MAC),
    );

    // About a flow never seen: where Maglev would put it, without recording anything.
    let frame = frag_needed(to_http2);
    check(
        &mut f,
        "frag needed, unknown flow",
        &frame,
        XDP_TX,
        &rewritten(&frame, HTTP2_MAC, IFACE_MAC),
    );
    assert_eq!(
        f.maps.flow_count().unwrap(),
        1,
        "an ICMP error records no flow"
    );
    assert_eq!(f.counter("tx_icmp_frag_needed"), 2);

    // About a port that is not an L4 service (the L7 one): the kernel's business.
    let quoted_segment = packets::tcp(VIP, CLIENT, WEB, 40000, ACK, &[0u8; 8]);
    let quoted = Ipv4::new(VIP, CLIENT, IPPROTO_TCP).build(&quoted_segment);
    let message = icmp(3, 4, [0, 0, 0x05, 0xdc], &quoted[..28]);
    let frame = ethernet(
        VIP_MAC,
        CLIENT_MAC,
        None,
        ETH_P_IP,
        &Ipv4::new(ROUTER, VIP, IPPROTO_ICMP).build(&message),
    );
    check(&mut f, "frag needed, L7 service", &frame, XDP_PASS, &frame);
}

#[test]
fn forwarded_packets_and_bytes_are_counted_per_service_and_per_backend() {
    let mut f = Fixture::master();
    let (to_http1, to_http2) = ports_to_each_backend(&f);
    let mut bytes = [0u64; 2];
    for i in 0..10u16 {
        let (sport, backend) = if i % 2 == 0 {
            (to_http1, 0)
        } else {
            (to_http2, 1)
        };
        let frame = tcp_frame(
            (VIP_MAC, CLIENT_MAC),
            (CLIENT, sport),
            (VIP, L4_TCP),
            ACK,
            &vec![0u8; usize::from(i) * 10],
        );
        bytes[backend] += frame.len() as u64;
        assert_eq!(f.run(&frame).0, XDP_TX);
    }
    let service = f.maps.service_stats(1).unwrap();
    assert_eq!((service.packets, service.bytes), (10, bytes[0] + bytes[1]));
    let b1 = f.maps.backend_stats(TCP_B1).unwrap();
    let b2 = f.maps.backend_stats(TCP_B2).unwrap();
    assert_eq!((b1.packets, b1.bytes), (5, bytes[0]));
    assert_eq!((b2.packets, b2.bytes), (5, bytes[1]));
    assert_eq!(
        f.maps.service_stats(0).unwrap().packets,
        0,
        "L7 is not forwarded"
    );
}
