//! Packet fixtures for the XDP program, run through BPF_PROG_TEST_RUN (Katran's way of testing
//! a data plane): for each branch of the program, an input frame, the expected verdict and the
//! expected output frame, against maps filled the way the data plane fills them. No network is
//! involved; the program and its maps are the real ones, loaded from the object embedded in
//! the `tandem` library.
//!
//! Needs root (loading BPF) and a bpffs at /sys/fs/bpf, like the lab tests.

mod support;

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

use lb_common::{
    flow_hash, flow_hash6, Backend6Value, BackendValue, FlowKey, FlowKey6, FlowValue, FlowValue6,
    ServiceKey, ServiceKey6, ServiceMode, ServiceValue, BACKEND_UP, IPPROTO_TCP, IPPROTO_UDP,
    MAGLEV_TABLE_SIZE, NO_BACKEND,
};
use support::packets::{
    self, ethernet, icmp, icmp6, ipv6, tcp6_frame, tcp_frame, udp6_frame, udp_frame, Ipv4, ACK,
    ETH_P_ARP, ETH_P_IP, ETH_P_IPV6, IPPROTO_ICMP, IPPROTO_ICMPV6, IPV6_FRAGMENT, IPV6_HOP_BY_HOP,
    PSH, SYN,
};
use tandem::backends::maglev::{Maglev, DEFAULT_TABLE_SIZE};
use tandem::dataplane::xdp::loader;
use tandem::dataplane::xdp::maps::KernelMaps;
use tandem::dataplane::xdp::trace::{DecisionReader, TraceFilter, TraceSwitch};

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
const XDP_TX: u32 = 3;

const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 99);
const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 10);
const LB1: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 100);
const HTTP1: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 102);
const HTTP2: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 103);
const ROUTER: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);

/// The same node on IPv6 (RFC 5180's benchmarking range).
const VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 0x99);
const CLIENT6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 0x10);
const LB1_6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 0x100);
const HTTP1_6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 0x102);
const HTTP2_6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 0x103);
const ROUTER6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 1);

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
/// IPv6 backends: ids from the same space, in BACKENDS6.
const TCP6_B1: u32 = 5;
const TCP6_B2: u32 = 6;
const UDP6_B1: u32 = 7;
const UDP6_B2: u32 = 8;
/// Ids and Maglev tables of the IPv6 services.
const WEB6_ID: u32 = 5;
const TCP6_ID: u32 = 6;
const UDP6_ID: u32 = 7;
const TCP6_RING: u32 = 4;
const UDP6_RING: u32 = 5;

/// The program loaded with its maps pinned in a directory of its own, removed on drop.
struct Fixture {
    ebpf: loader::Ebpf,
    maps: KernelMaps,
    pin_dir: PathBuf,
    tcp_maglev: Maglev,
    udp_maglev: Maglev,
    tcp6_maglev: Maglev,
    udp6_maglev: Maglev,
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
        let names6 = |port: u16| {
            [
                format!("[{HTTP1_6}]:{port}").into_bytes(),
                format!("[{HTTP2_6}]:{port}").into_bytes(),
            ]
        };
        let tcp = names(L4_TCP);
        let udp = names(L4_UDP);
        let tcp6 = names6(L4_TCP);
        let udp6 = names6(L4_UDP);
        Fixture {
            ebpf,
            maps,
            pin_dir,
            tcp_maglev: Maglev::new(&[(&tcp[0], 1), (&tcp[1], 1)], DEFAULT_TABLE_SIZE),
            udp_maglev: Maglev::new(&[(&udp[0], 1), (&udp[1], 1)], DEFAULT_TABLE_SIZE),
            tcp6_maglev: Maglev::new(&[(&tcp6[0], 1), (&tcp6[1], 1)], DEFAULT_TABLE_SIZE),
            udp6_maglev: Maglev::new(&[(&udp6[0], 1), (&udp6[1], 1)], DEFAULT_TABLE_SIZE),
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

        // IPv6: the VIP, an L7 service and the two L4 services, with backends of their own.
        f.maps.put_vip6(VIP6.octets()).unwrap();
        let service6 = |port: u16, proto: u8, id: u32, mode: ServiceMode, ring: u32| {
            (
                ServiceKey6::new(VIP6.octets(), port, proto),
                ServiceValue {
                    id,
                    mode: mode as u32,
                    ring,
                },
            )
        };
        for (key, value) in [
            service6(WEB, IPPROTO_TCP, WEB6_ID, ServiceMode::Proxy, 0),
            service6(
                L4_TCP,
                IPPROTO_TCP,
                TCP6_ID,
                ServiceMode::Forward,
                TCP6_RING,
            ),
            service6(
                L4_UDP,
                IPPROTO_UDP,
                UDP6_ID,
                ServiceMode::Forward,
                UDP6_RING,
            ),
        ] {
            f.maps.put_service6(key, value).unwrap();
        }
        let backend6 = |addr: Ipv6Addr, port: u16, mac: [u8; 6], service: u32| Backend6Value {
            addr: addr.octets(),
            mac,
            port: port.to_be(),
            flags: BACKEND_UP,
            service,
        };
        for (id, value) in [
            (TCP6_B1, backend6(HTTP1_6, L4_TCP, HTTP1_MAC, TCP6_ID)),
            (TCP6_B2, backend6(HTTP2_6, L4_TCP, HTTP2_MAC, TCP6_ID)),
            (UDP6_B1, backend6(HTTP1_6, L4_UDP, HTTP1_MAC, UDP6_ID)),
            (UDP6_B2, backend6(HTTP2_6, L4_UDP, HTTP2_MAC, UDP6_ID)),
        ] {
            f.maps.put_backend6(id, value).unwrap();
        }
        let tcp6_table = ids(&f.tcp6_maglev, TCP6_B1);
        let udp6_table = ids(&f.udp6_maglev, UDP6_B1);
        f.maps.write_table(TCP6_RING, &tcp6_table, None).unwrap();
        f.maps.write_table(UDP6_RING, &udp6_table, None).unwrap();
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

    /// The MAC of the backend userspace Maglev chooses for an IPv6 flow to an L4 service.
    fn maglev6_mac(&self, sport: u16, port: u16, proto: u8) -> [u8; 6] {
        let hash = flow_hash6(CLIENT6.octets(), sport, VIP6.octets(), port, proto);
        let maglev = if proto == IPPROTO_TCP {
            &self.tcp6_maglev
        } else {
            &self.udp6_maglev
        };
        [HTTP1_MAC, HTTP2_MAC][maglev.lookup(hash).unwrap()]
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

/// [`ports_to_each_backend`] for IPv6 TCP flows to the L4 service.
fn ports6_to_each_backend(f: &Fixture) -> (u16, u16) {
    let mut to = [None, None];
    for sport in 40000..41000u16 {
        let slot = usize::from(f.maglev6_mac(sport, L4_TCP, IPPROTO_TCP) != HTTP1_MAC);
        to[slot].get_or_insert(sport);
        if let [Some(a), Some(b)] = to {
            return (a, b);
        }
    }
    panic!("1000 client ports all hash to one backend: the IPv6 flow hash is broken");
}

fn to_vip6(port: u16, sport: u16, flags: u8) -> Vec<u8> {
    tcp6_frame(
        (VIP_MAC, CLIENT_MAC),
        (CLIENT6, sport),
        (VIP6, port),
        flags,
        b"",
    )
}

/// An Ethernet frame carrying `payload` in IPv6 with `next_header`, from the client.
fn ipv6_frame(dst_mac: [u8; 6], dst: Ipv6Addr, next_header: u8, payload: &[u8]) -> Vec<u8> {
    ethernet(
        dst_mac,
        CLIENT_MAC,
        None,
        ETH_P_IPV6,
        &ipv6(CLIENT6, dst, next_header, payload),
    )
}

/// The counters that say what a frame is, IPv4 and IPv6: each frame lands in one of them.
const KINDS: [&str; 8] = [
    "ipv4_tcp",
    "ipv4_udp",
    "ipv4_other",
    "ipv6_tcp",
    "ipv6_udp",
    "ipv6_other",
    "non_ip",
    "malformed",
];

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
    let v6 = ethernet(
        VIP_MAC,
        CLIENT_MAC,
        None,
        ETH_P_IPV6,
        &ipv6(CLIENT6, LB1_6, 59, b""), // no next header
    );
    check(&mut f, "IPv6", &v6, XDP_PASS, &v6);
    let mut truncated = to_vip(L4_TCP, to_http1, SYN);
    truncated.truncate(14 + 20 + 10);
    check(&mut f, "truncated TCP", &truncated, XDP_PASS, &truncated);

    let counters = f.maps.counters().unwrap();
    assert_eq!(
        counters["pass"] + counters["tx"] + counters["drop"],
        KINDS.iter().map(|k| counters[k]).sum::<u64>(),
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

/// What flow sharing (`dataplane::flowshare`) relies on in the kernel: a flow received from
/// another node goes in only where the table has no entry for its key (the node's own choice
/// stays), the program then sends the flow's packets to that backend although its own Maglev
/// table says otherwise, and a walk resumed from a key visits the rest (from a key that is gone,
/// it starts over).
#[test]
fn a_shared_flow_goes_in_only_where_the_table_has_none_and_the_program_follows_it() {
    let mut f = Fixture::master();
    let (to_http1, other_to_http1) = {
        let (first, _) = ports_to_each_backend(&f);
        let second = (first + 1..)
            .find(|&p| f.maglev_tcp_mac(p) == HTTP1_MAC)
            .expect("another port to HTTP1");
        (first, second)
    };
    let key = |sport: u16| FlowKey {
        src: u32::from_ne_bytes(CLIENT.octets()),
        dst: u32::from_ne_bytes(VIP.octets()),
        sport: sport.to_be(),
        dport: L4_TCP.to_be(),
        proto: IPPROTO_TCP,
        _pad: [0; 3],
    };
    let on = |backend: u32, addr: Ipv4Addr| FlowValue {
        backend,
        backend_addr: u32::from_ne_bytes(addr.octets()),
    };

    // The node placed this flow itself (on HTTP1); the peer's entry (HTTP2) is refused.
    let syn = to_vip(L4_TCP, to_http1, SYN);
    check(
        &mut f,
        "own flow",
        &syn,
        XDP_TX,
        &rewritten(&syn, HTTP1_MAC, IFACE_MAC),
    );
    assert!(!f
        .maps
        .put_flow_if_absent(key(to_http1), on(TCP_B2, HTTP2))
        .unwrap());
    assert_eq!(f.maps.flow(&key(to_http1)), Some(on(TCP_B1, HTTP1)));

    // A flow the node has not seen goes in, and its packets follow it (not Maglev's HTTP1).
    assert!(f
        .maps
        .put_flow_if_absent(key(other_to_http1), on(TCP_B2, HTTP2))
        .unwrap());
    let ack = to_vip(L4_TCP, other_to_http1, ACK | PSH);
    check(
        &mut f,
        "shared flow",
        &ack,
        XDP_TX,
        &rewritten(&ack, HTTP2_MAC, IFACE_MAC),
    );
    assert_eq!(f.counter("flow_hit"), 1);

    // The walk: every key once, in the kernel's order; resuming after the first key gives the
    // second; a key that is not there starts over.
    let mut walked = Vec::new();
    let mut after = None;
    while let Some(next) = f.maps.next_flow_key(after.as_ref()).unwrap() {
        walked.push(next);
        after = Some(next);
    }
    assert_eq!(walked.len(), 2);
    assert!(walked.contains(&key(to_http1)) && walked.contains(&key(other_to_http1)));
    assert_eq!(
        f.maps.next_flow_key(Some(&walked[0])).unwrap(),
        Some(walked[1])
    );
    assert_eq!(
        f.maps.next_flow_key(Some(&key(1))).unwrap(),
        Some(walked[0])
    );

    // IPv6: the same refusal and the same walk.
    let key6 = FlowKey6 {
        src: CLIENT6.octets(),
        dst: VIP6.octets(),
        sport: 42000u16.to_be(),
        dport: L4_TCP.to_be(),
        proto: IPPROTO_TCP,
        _pad: [0; 3],
    };
    let on6 = |backend: u32, addr: Ipv6Addr| FlowValue6 {
        backend,
        backend_addr: addr.octets(),
    };
    assert!(f
        .maps
        .put_flow6_if_absent(key6, on6(TCP6_B2, HTTP2_6))
        .unwrap());
    assert!(!f
        .maps
        .put_flow6_if_absent(key6, on6(TCP6_B1, HTTP1_6))
        .unwrap());
    assert_eq!(f.maps.flow6(&key6), Some(on6(TCP6_B2, HTTP2_6)));
    assert_eq!(f.maps.next_flow6_key(None).unwrap(), Some(key6));
    assert_eq!(f.maps.next_flow6_key(Some(&key6)).unwrap(), None);
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

#[test]
fn ipv6_each_branch_gives_its_verdict_and_output_frame() {
    let mut f = Fixture::master();
    let (to_http1, to_http2) = ports6_to_each_backend(&f);

    // L7 service on the IPv6 VIP: up to the proxy, untouched.
    let syn = to_vip6(WEB, 40000, SYN);
    check(&mut f, "IPv6 L7 service", &syn, XDP_PASS, &syn);

    // L4 TCP, new flows: MACs rewritten towards the backend the userspace Maglev computes from
    // lb_common::flow_hash6; the IPv6 header and the segment are untouched (direct server
    // return: the backend holds the VIP).
    for (sport, mac) in [(to_http1, HTTP1_MAC), (to_http2, HTTP2_MAC)] {
        let syn = to_vip6(L4_TCP, sport, SYN);
        check(
            &mut f,
            "IPv6 L4 TCP new flow",
            &syn,
            XDP_TX,
            &rewritten(&syn, mac, IFACE_MAC),
        );
    }

    // L4 UDP.
    let dgram = udp6_frame(
        (VIP_MAC, CLIENT_MAC),
        (CLIENT6, 53000),
        (VIP6, L4_UDP),
        b"query",
    );
    let mac = f.maglev6_mac(53000, L4_UDP, IPPROTO_UDP);
    check(
        &mut f,
        "IPv6 L4 UDP",
        &dgram,
        XDP_TX,
        &rewritten(&dgram, mac, IFACE_MAC),
    );

    // 802.1Q-tagged: the tag stays, only the MACs change.
    let segment = packets::tcp6(CLIENT6, VIP6, to_http1, L4_TCP, ACK, b"x");
    let tagged = ethernet(
        VIP_MAC,
        CLIENT_MAC,
        Some(10),
        ETH_P_IPV6,
        &ipv6(CLIENT6, VIP6, IPPROTO_TCP, &segment),
    );
    check(
        &mut f,
        "tagged IPv6 L4 TCP",
        &tagged,
        XDP_TX,
        &rewritten(&tagged, HTTP1_MAC, IFACE_MAC),
    );

    // The IPv6 VIP on a port with no service, and the IPv4 service's port on the IPv6 VIP
    // over UDP: dropped.
    let syn = to_vip6(CLOSED, 40000, SYN);
    check(&mut f, "IPv6 VIP, no such port", &syn, XDP_DROP, &syn);
    let dgram = udp6_frame((VIP_MAC, CLIENT_MAC), (CLIENT6, 53000), (VIP6, L4_TCP), b"");
    check(
        &mut f,
        "IPv6 VIP, TCP port over UDP",
        &dgram,
        XDP_DROP,
        &dgram,
    );

    // Not for a VIP: the node's own address, another host.
    for (name, dst) in [("node's own IPv6", LB1_6), ("another IPv6 host", HTTP1_6)] {
        let frame = tcp6_frame(
            (IFACE_MAC, CLIENT_MAC),
            (CLIENT6, 40000),
            (dst, L4_TCP),
            SYN,
            b"",
        );
        check(&mut f, name, &frame, XDP_PASS, &frame);
    }

    // Neighbour discovery: a solicitation for the VIP to its solicited-node multicast group,
    // and a unicast one to the VIP (reachability check), go to the kernel, which answers them.
    let solicited_node = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 1, 0xff00, 0x99);
    let mut target = VIP6.octets().to_vec();
    target.extend_from_slice(&[1, 1]); // source link-layer address option
    target.extend_from_slice(&CLIENT_MAC);
    for (dst_mac, dst) in [
        ([0x33, 0x33, 0xff, 0, 0, 0x99], solicited_node),
        (VIP_MAC, VIP6),
    ] {
        let solicitation = icmp6(CLIENT6, dst, 135, 0, [0; 4], &target);
        let frame = ipv6_frame(dst_mac, dst, IPPROTO_ICMPV6, &solicitation);
        check(&mut f, "neighbour solicitation", &frame, XDP_PASS, &frame);
    }
    // An advertisement from a host, and an echo request to the VIP.
    let advert = icmp6(CLIENT6, VIP6, 136, 0, [0x60, 0, 0, 0], &CLIENT6.octets());
    let frame = ipv6_frame(VIP_MAC, VIP6, IPPROTO_ICMPV6, &advert);
    check(&mut f, "neighbour advertisement", &frame, XDP_PASS, &frame);
    let echo = icmp6(CLIENT6, VIP6, 128, 0, [0, 1, 0, 1], b"ping");
    let frame = ipv6_frame(VIP_MAC, VIP6, IPPROTO_ICMPV6, &echo);
    check(&mut f, "ICMPv6 echo", &frame, XDP_PASS, &frame);

    // An extension header before the TCP header: the program walks none, the kernel does.
    let segment = packets::tcp6(CLIENT6, VIP6, to_http1, L4_TCP, SYN, b"");
    let mut hop_by_hop = vec![IPPROTO_TCP, 0, 1, 4, 0, 0, 0, 0]; // next, length 0, PadN
    hop_by_hop.extend_from_slice(&segment);
    let frame = ipv6_frame(VIP_MAC, VIP6, IPV6_HOP_BY_HOP, &hop_by_hop);
    check(&mut f, "hop-by-hop header", &frame, XDP_PASS, &frame);

    // Fragments, first and later: to the kernel, which reassembles.
    let datagram = packets::udp6(CLIENT6, VIP6, 53000, L4_UDP, &[7u8; 64]);
    let mut first = vec![IPPROTO_UDP, 0, 0, 1, 0, 0, 0, 42]; // offset 0, more fragments
    first.extend_from_slice(&datagram[..48]);
    let frame = ipv6_frame(VIP_MAC, VIP6, IPV6_FRAGMENT, &first);
    check(&mut f, "IPv6 first fragment", &frame, XDP_PASS, &frame);
    let mut later = vec![IPPROTO_UDP, 0, 0, 48, 0, 0, 0, 42]; // offset 48 bytes, last
    later.extend_from_slice(&datagram[48..]);
    let frame = ipv6_frame(VIP_MAC, VIP6, IPV6_FRAGMENT, &later);
    check(&mut f, "IPv6 later fragment", &frame, XDP_PASS, &frame);

    // Malformed: a payload length past the frame, and a TCP header cut short.
    let mut too_long = to_vip6(L4_TCP, to_http1, SYN);
    too_long[14 + 4..14 + 6].copy_from_slice(&200u16.to_be_bytes());
    check(
        &mut f,
        "payload past the frame",
        &too_long,
        XDP_PASS,
        &too_long,
    );
    let mut truncated = to_vip6(L4_TCP, to_http1, SYN);
    truncated.truncate(14 + 40 + 10);
    truncated[14 + 4..14 + 6].copy_from_slice(&10u16.to_be_bytes());
    check(
        &mut f,
        "truncated IPv6 TCP",
        &truncated,
        XDP_PASS,
        &truncated,
    );

    let counters = f.maps.counters().unwrap();
    assert_eq!(
        counters["pass"] + counters["tx"] + counters["drop"],
        KINDS.iter().map(|k| counters[k]).sum::<u64>(),
        "each frame has one verdict and one kind: {counters:?}"
    );
    for (name, expected) in [
        // Per family: every frame above was IPv6.
        ("ipv4_tcp", 0),
        ("ipv4_udp", 0),
        ("ipv4_other", 0),
        ("ipv6_tcp", 7),
        ("ipv6_udp", 2),
        ("ipv6_other", 7),
        ("malformed", 2),
        ("tx", 4),
        ("drop", 2),
        ("pass_l7", 1),
        ("pass_icmp", 3), // the solicitation and advertisement to the VIP, the echo
        ("pass_ipv6_ext_header", 1),
        ("pass_fragment", 2),
        ("drop_no_service", 2),
        // Two TCP flows and one UDP flow; the tagged frame belongs to the first.
        ("flow_new", 3),
        ("flow_hit", 1),
    ] {
        assert_eq!(counters[name], expected, "counter {name}: {counters:?}");
    }
}

#[test]
fn ipv6_flows_are_recorded_by_their_128_bit_five_tuple_and_keep_their_backend() {
    let mut f = Fixture::master();
    let (to_http1, _) = ports6_to_each_backend(&f);
    let key = FlowKey6 {
        src: CLIENT6.octets(),
        dst: VIP6.octets(),
        sport: to_http1.to_be(),
        dport: L4_TCP.to_be(),
        proto: IPPROTO_TCP,
        _pad: [0; 3],
    };

    let syn = to_vip6(L4_TCP, to_http1, SYN);
    check(
        &mut f,
        "first packet",
        &syn,
        XDP_TX,
        &rewritten(&syn, HTTP1_MAC, IFACE_MAC),
    );
    assert_eq!(
        f.maps.flow6(&key),
        Some(FlowValue6 {
            backend: TCP6_B1,
            backend_addr: HTTP1_6.octets(),
        })
    );
    assert_eq!(f.maps.flow_count().unwrap(), 0, "no IPv4 flow recorded");

    // The recorded flow wins over the table.
    f.maps
        .put_flow6(
            key,
            FlowValue6 {
                backend: TCP6_B2,
                backend_addr: HTTP2_6.octets(),
            },
        )
        .unwrap();
    let ack = to_vip6(L4_TCP, to_http1, ACK | PSH);
    check(
        &mut f,
        "recorded flow",
        &ack,
        XDP_TX,
        &rewritten(&ack, HTTP2_MAC, IFACE_MAC),
    );
    assert_eq!(f.counter("flow_hit"), 1);

    // The same ports from a client one bit away is another flow, placed by Maglev afresh.
    let mut other_client = CLIENT6.octets();
    other_client[8] ^= 0x80;
    let other = tcp6_frame(
        (VIP_MAC, CLIENT_MAC),
        (Ipv6Addr::from(other_client), to_http1),
        (VIP6, L4_TCP),
        SYN,
        b"",
    );
    assert_eq!(f.run(&other).0, XDP_TX);
    assert_eq!(f.maps.flow6_count().unwrap(), 2);

    // HTTP2 goes down: the flow moves to the new table's choice and is recorded there.
    f.maps
        .write_table(TCP6_RING, &vec![TCP6_B1; MAGLEV_TABLE_SIZE as usize], None)
        .unwrap();
    let mut down = f.maps.backend6(TCP6_B2).unwrap();
    down.flags = 0;
    f.maps.put_backend6(TCP6_B2, down).unwrap();
    check(
        &mut f,
        "backend down",
        &ack,
        XDP_TX,
        &rewritten(&ack, HTTP1_MAC, IFACE_MAC),
    );
    assert_eq!(f.counter("flow_moved"), 1);
    assert_eq!(f.maps.flow6(&key).map(|v| v.backend), Some(TCP6_B1));

    // Forwarded IPv6 frames count for their service and backend like IPv4 ones.
    assert_eq!(f.maps.service_stats(TCP6_ID).unwrap().packets, 4);
    assert_eq!(f.maps.backend_stats(TCP6_B2).unwrap().packets, 1);
}

#[test]
fn icmpv6_packet_too_big_about_an_l4_flow_goes_to_that_flows_backend() {
    let mut f = Fixture::master();
    let (to_http1, to_http2) = ports6_to_each_backend(&f);
    // Record the flow on HTTP2 although Maglev would pick HTTP1, to see the table is not used.
    let key = FlowKey6 {
        src: CLIENT6.octets(),
        dst: VIP6.octets(),
        sport: to_http1.to_be(),
        dport: L4_TCP.to_be(),
        proto: IPPROTO_TCP,
        _pad: [0; 3],
    };
    f.maps
        .put_flow6(
            key,
            FlowValue6 {
                backend: TCP6_B2,
                backend_addr: HTTP2_6.octets(),
            },
        )
        .unwrap();

    // A router on the way back to the client could not forward the backend's large segment
    // ([VIP]:8080 -> client) and tells the VIP, quoting as much of it as fits.
    let too_big = |service_port: u16, client_port: u16| {
        let quoted_segment =
            packets::tcp6(VIP6, CLIENT6, service_port, client_port, ACK, &[0u8; 1400]);
        let quoted = ipv6(VIP6, CLIENT6, IPPROTO_TCP, &quoted_segment);
        let message = icmp6(ROUTER6, VIP6, 2, 0, 1280u32.to_be_bytes(), &quoted[..1232]);
        ethernet(
            VIP_MAC,
            CLIENT_MAC,
            None,
            ETH_P_IPV6,
            &packets::ipv6(ROUTER6, VIP6, IPPROTO_ICMPV6, &message),
        )
    };
    let frame = too_big(L4_TCP, to_http1);
    check(
        &mut f,
        "packet too big, recorded flow",
        &frame,
        XDP_TX,
        &rewritten(&frame, HTTP2_MAC, IFACE_MAC),
    );

    // About a flow never seen: where Maglev would put it, without recording anything.
    let frame = too_big(L4_TCP, to_http2);
    check(
        &mut f,
        "packet too big, unknown flow",
        &frame,
        XDP_TX,
        &rewritten(&frame, HTTP2_MAC, IFACE_MAC),
    );
    assert_eq!(
        f.maps.flow6_count().unwrap(),
        1,
        "an ICMPv6 error records no flow"
    );
    assert_eq!(f.counter("tx_icmp6_packet_too_big"), 2);
    assert_eq!(f.counter("tx_icmp_frag_needed"), 0);

    // About the L7 service: the kernel's business.
    let frame = too_big(WEB, 40000);
    check(
        &mut f,
        "packet too big, L7 service",
        &frame,
        XDP_PASS,
        &frame,
    );
    // Another ICMPv6 error about the flow (destination unreachable): the kernel's too.
    let quoted_segment = packets::tcp6(VIP6, CLIENT6, L4_TCP, to_http1, ACK, &[0u8; 8]);
    let quoted = ipv6(VIP6, CLIENT6, IPPROTO_TCP, &quoted_segment);
    let message = icmp6(ROUTER6, VIP6, 1, 0, [0; 4], &quoted);
    let frame = ethernet(
        VIP_MAC,
        CLIENT_MAC,
        None,
        ETH_P_IPV6,
        &ipv6(ROUTER6, VIP6, IPPROTO_ICMPV6, &message),
    );
    check(&mut f, "destination unreachable", &frame, XDP_PASS, &frame);
    assert_eq!(f.counter("pass_icmp"), 2);
}

#[test]
fn a_node_with_empty_maps_passes_every_ipv6_frame_for_the_vip() {
    let mut f = Fixture::empty();
    for port in [WEB, L4_TCP, CLOSED] {
        let syn = to_vip6(port, 40000, SYN);
        check(&mut f, "backup node, IPv6", &syn, XDP_PASS, &syn);
    }
    let dgram = udp6_frame((VIP_MAC, CLIENT_MAC), (CLIENT6, 53000), (VIP6, L4_UDP), b"");
    check(&mut f, "backup node, IPv6 UDP", &dgram, XDP_PASS, &dgram);
    assert_eq!(f.counter("tx") + f.counter("drop"), 0);
    assert_eq!((f.counter("ipv6_tcp"), f.counter("ipv6_udp")), (3, 1));
}

/// `tandem trace`'s kernel half: the program logs a decision record only while TRACE is on,
/// only for the traced VIP and port, and the record says what it did (verdict, reason,
/// backend, connection-table hit or new).
mod tracing {
    use super::*;
    use tandem::dataplane::xdp::trace::{backend_address, Decision};

    fn reader(f: &mut Fixture) -> DecisionReader {
        DecisionReader::of_loaded(&mut f.ebpf).expect("the program has a log ring buffer")
    }

    fn trace_on(f: &Fixture, vip: Option<std::net::IpAddr>, port: Option<u16>) -> impl Drop {
        TraceSwitch::open(&f.pin_dir)
            .expect("the TRACE map is pinned")
            .start(&TraceFilter { vip, port })
            .expect("no other trace runs")
    }

    #[test]
    fn with_tracing_off_the_program_logs_nothing_and_counts_as_before() {
        let mut f = Fixture::master();
        let mut reader = reader(&mut f);
        let (to_http1, _) = ports_to_each_backend(&f);
        check(
            &mut f,
            "new flow",
            &to_vip(L4_TCP, to_http1, SYN),
            XDP_TX,
            &rewritten(&to_vip(L4_TCP, to_http1, SYN), HTTP1_MAC, IFACE_MAC),
        );
        f.run(&to_vip(L4_TCP, to_http1, ACK));
        f.run(&to_vip(CLOSED, to_http1, SYN));
        f.run(&to_vip(WEB, to_http1, SYN));
        f.run(&to_vip6(L4_TCP, to_http1, SYN));
        assert_eq!(reader.read(), Vec::<Decision>::new());
        let counted = |f: &Fixture| {
            [
                "ipv4_tcp",
                "ipv6_tcp",
                "service_hit",
                "tx",
                "drop",
                "pass",
                "flow_new",
                "flow_hit",
                "drop_no_service",
                "pass_l7",
            ]
            .map(|name| f.counter(name))
        };
        assert_eq!(counted(&f), [4, 1, 4, 3, 1, 1, 2, 1, 1, 1]);

        // A trace that ended leaves the program as quiet as one never traced.
        drop(trace_on(&f, None, None));
        f.run(&to_vip(L4_TCP, to_http1, ACK));
        assert_eq!(reader.read(), Vec::<Decision>::new());
    }

    #[test]
    fn a_traced_service_logs_one_decision_per_packet_new_then_hit_and_other_ports_nothing() {
        let mut f = Fixture::master();
        let mut reader = reader(&mut f);
        let (_, to_http2) = ports_to_each_backend(&f);
        let _trace = trace_on(&f, Some(VIP.into()), Some(L4_TCP));

        let before = std::time::SystemTime::now();
        let (verdict, _) = f.run(&to_vip(L4_TCP, to_http2, SYN));
        let after = std::time::SystemTime::now();
        assert_eq!(verdict, XDP_TX);
        let first = reader.read();
        assert_eq!(first.len(), 1, "{first:?}");
        let d = &first[0];
        let slack = std::time::Duration::from_millis(20);
        assert!(
            before - slack <= d.wall_time() && d.wall_time() <= after + slack,
            "the record is dated when the program ran: {:?} not in {before:?}..{after:?}",
            d.wall_time()
        );
        assert_eq!(d.client, (CLIENT, to_http2).into());
        assert_eq!(d.service, (VIP, L4_TCP).into());
        assert_eq!(d.proto, IPPROTO_TCP);
        assert_eq!(
            (
                d.verdict(),
                d.reason.map(|r| r.name()),
                d.backend,
                d.conntrack()
            ),
            ("tx", Some("flow_new"), Some(TCP_B2), "new")
        );
        assert_eq!(
            backend_address(&f.maps, d),
            Some((HTTP2, L4_TCP).into()),
            "the line names the backend by its address"
        );

        f.run(&to_vip(L4_TCP, to_http2, ACK | PSH));
        let second = reader.read();
        assert_eq!(second.len(), 1, "{second:?}");
        assert_eq!(
            (
                second[0].verdict(),
                second[0].backend,
                second[0].conntrack()
            ),
            ("tx", Some(TCP_B2), "hit")
        );

        // Another port of the same VIP (a service, a closed port) and the same port over
        // IPv6: not traced.
        f.run(&to_vip(WEB, to_http2, SYN));
        f.run(&to_vip(CLOSED, to_http2, SYN));
        f.run(&to_vip6(L4_TCP, to_http2, SYN));
        assert_eq!(reader.read(), Vec::<Decision>::new());
        // Counting goes on as without tracing.
        assert_eq!((f.counter("flow_new"), f.counter("flow_hit")), (2, 1));
    }

    #[test]
    fn tracing_every_vip_shows_drops_and_passes_with_their_reasons_for_both_families() {
        let mut f = Fixture::master();
        let mut reader = reader(&mut f);
        let _trace = trace_on(&f, None, None);

        f.run(&to_vip(CLOSED, 40000, SYN));
        f.run(&to_vip(WEB, 40001, SYN));
        f.run(&to_vip(NO_BACKENDS, 40002, SYN));
        f.run(&to_vip(NO_MAC, 40003, SYN));
        f.run(&to_vip6(L4_TCP, 40004, SYN));
        // Not for a virtual IP: never traced.
        f.run(&tcp_frame(
            (IFACE_MAC, CLIENT_MAC),
            (CLIENT, 40005),
            (LB1, 22),
            SYN,
            b"",
        ));
        let seen: Vec<_> = reader
            .read()
            .iter()
            .map(|d| {
                (
                    d.service.port(),
                    d.verdict(),
                    d.reason.map_or("-", |r| r.name()),
                    d.conntrack(),
                )
            })
            .collect();
        assert_eq!(
            seen,
            [
                (CLOSED, "drop", "drop_no_service", "-"),
                (WEB, "pass", "pass_l7", "-"),
                (NO_BACKENDS, "drop", "drop_no_backend", "-"),
                (NO_MAC, "drop", "drop_no_mac", "new"),
                (L4_TCP, "tx", "flow_new", "new"),
            ]
        );
    }

    #[test]
    fn an_ipv6_vip_filter_traces_that_vip_only() {
        let mut f = Fixture::master();
        let mut reader = reader(&mut f);
        let _trace = trace_on(&f, Some(VIP6.into()), None);
        f.run(&to_vip(L4_TCP, 40000, SYN));
        f.run(&to_vip6(L4_UDP, 40000, SYN));
        f.run(&udp6_frame(
            (VIP_MAC, CLIENT_MAC),
            (CLIENT6, 40001),
            (VIP6, L4_UDP),
            b"q",
        ));
        let decisions = reader.read();
        assert_eq!(decisions.len(), 2, "{decisions:?}");
        assert!(
            decisions.iter().all(|d| d.service.ip() == VIP6),
            "{decisions:?}"
        );
        // TCP to the UDP service's port: no such service.
        assert_eq!(
            decisions[0].reason.map(|r| r.name()),
            Some("drop_no_service")
        );
        assert_eq!(decisions[1].proto, IPPROTO_UDP);
        assert_eq!(
            (decisions[1].verdict(), decisions[1].conntrack()),
            ("tx", "new")
        );
    }
}

/// A pin directory from before tracing (every map but TRACE): `tandem maps` says tracing is
/// unavailable rather than failing, and the next load (a daemon restart with this version)
/// reuses the maps there and adds TRACE, off.
#[test]
fn a_pin_directory_from_before_tracing_gets_its_trace_map_on_the_next_load() {
    use tandem::dataplane::xdp::pinned;
    use tandem::dataplane::xdp::trace::Tracing;
    let mut f = Fixture::master();
    let trace_pin = f.pin_dir.join(lb_common::TRACE_MAP);
    std::fs::remove_file(&trace_pin).expect("unpin TRACE, as an older version never pinned it");
    let before = pinned::read(&f.pin_dir, false).expect("tandem maps reads an older pin set");
    assert_eq!(before.tracing, Tracing::Unavailable);
    assert!(before.render_text().contains("tracing   unavailable"));
    match TraceSwitch::open(&f.pin_dir) {
        Err(error @ loader::XdpError::NoTraceMap(_)) => assert!(
            error.to_string().contains("restart the daemon"),
            "tandem trace says what to do: {error}"
        ),
        Err(other) => panic!("tandem trace on an older pin set: {other}"),
        Ok(_) => panic!("no TRACE map to open"),
    }

    f.ebpf = loader::load_unattached(&f.pin_dir).expect("the restart loads");
    assert!(trace_pin.exists(), "the load pins a TRACE map");
    let after = pinned::read(&f.pin_dir, false).unwrap();
    assert_eq!(after.tracing, Tracing::Off);
    assert_eq!(
        after.services.len(),
        before.services.len(),
        "the other maps were reused, not emptied"
    );
    let mut reader = DecisionReader::of_loaded(&mut f.ebpf).unwrap();
    let _trace = TraceSwitch::open(&f.pin_dir)
        .unwrap()
        .start(&TraceFilter::default())
        .unwrap();
    f.run(&to_vip(CLOSED, 40000, SYN));
    assert_eq!(reader.read().len(), 1, "the new program traces");
}
