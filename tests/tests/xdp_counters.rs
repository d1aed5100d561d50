//! The XDP program counts every frame lb1 receives by what it is: the foundation's promise that
//! the kernel program parses real traffic correctly, checked in both attach modes.
//!
//! The client sends a known mix (TCP SYNs, UDP datagrams, pings, ARP requests, an IPv6 frame,
//! 802.1Q-tagged UDP and truncated IPv4) to lb1, with static neighbour entries on both sides
//! so that the kernel adds no ARP of its own; `tandem maps --json` must show exactly that mix.

mod support;

use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::packets::{self, ethernet, Ipv4, ETH_P_IP, ETH_P_IPV6, IPPROTO_UDP};
use tandem_lab::{tandem_binary, Host, Lab, CLIENT, LB1};

const TCP_SYNS: u64 = 40;
const UDP_DATAGRAMS: u64 = 500;
const PINGS: u64 = 5;
const ARP_REQUESTS: u64 = 7;
const IPV6_FRAMES: u64 = 3;
const TAGGED_UDP: u64 = 11;
const TRUNCATED_IPV4: u64 = 6;
const BAD_IHL_IPV4: u64 = 4;

/// The per-outcome counters of `tandem maps --json`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Counts {
    ipv4_tcp: u64,
    ipv4_udp: u64,
    ipv4_other: u64,
    ipv6: u64,
    non_ip: u64,
    malformed: u64,
    service_hit: u64,
}

impl Counts {
    fn since(self, before: Counts) -> Counts {
        Counts {
            ipv4_tcp: self.ipv4_tcp - before.ipv4_tcp,
            ipv4_udp: self.ipv4_udp - before.ipv4_udp,
            ipv4_other: self.ipv4_other - before.ipv4_other,
            ipv6: self.ipv6 - before.ipv6,
            non_ip: self.non_ip - before.non_ip,
            malformed: self.malformed - before.malformed,
            service_hit: self.service_hit - before.service_hit,
        }
    }
}

fn tandem(args: &[&str]) -> Command {
    let mut command = Command::new(tandem_binary().expect("tandem binary"));
    command.args(args);
    command
}

fn read_counts(pin_dir: &str) -> Counts {
    let output = tandem(&["maps", "--json", "--pin-dir", pin_dir])
        .output()
        .expect("run tandem maps");
    assert!(
        output.status.success(),
        "tandem maps failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let json: Value =
        serde_json::from_slice(&output.stdout).expect("tandem maps --json prints JSON");
    let get = |name: &str| {
        json["counters"][name]
            .as_u64()
            .unwrap_or_else(|| panic!("counter {name} missing in {json}"))
    };
    Counts {
        ipv4_tcp: get("ipv4_tcp"),
        ipv4_udp: get("ipv4_udp"),
        ipv4_other: get("ipv4_other"),
        // The IPv6 frames sent carry no TCP or UDP: "ipv6_other".
        ipv6: get("ipv6_other"),
        non_ip: get("non_ip"),
        malformed: get("malformed"),
        service_hit: get("service_hit"),
    }
}

/// XDP attach mode of a host's eth0 as `ip -details link` reports it: 1 native, 2 generic.
fn xdp_mode_of(host: &Host) -> Option<u64> {
    let json = host
        .run(
            "ip",
            &["-json", "-details", "link", "show", "dev", &host.iface],
        )
        .expect("ip link");
    let links: Value = serde_json::from_str(&json).expect("ip -json prints JSON");
    links[0]["xdp"]["mode"].as_u64()
}

/// `tandem xdp attach` on `host`'s eth0; asserts it succeeded and returns what it printed.
fn attach_xdp(host: &Host, mode: &str, pin_dir: &str) -> String {
    let output = host
        .command(tandem_binary().expect("tandem binary"))
        .args([
            "xdp",
            "attach",
            "--iface",
            "eth0",
            "--mode",
            mode,
            "--pin-dir",
            pin_dir,
        ])
        .output()
        .expect("run tandem xdp attach");
    assert!(
        output.status.success(),
        "attach failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// `tandem xdp detach` on `host`'s eth0; asserts it succeeded.
fn detach_xdp(host: &Host, pin_dir: &str) {
    let output = host
        .command(tandem_binary().expect("tandem binary"))
        .args(["xdp", "detach", "--iface", "eth0", "--pin-dir", pin_dir])
        .output()
        .expect("run tandem xdp detach");
    assert!(
        output.status.success(),
        "detach failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A raw AF_PACKET socket on the current namespace's eth0, for frames the stack would never send.
struct PacketSocket {
    fd: i32,
    if_index: i32,
}

impl PacketSocket {
    fn open(interface: &str) -> io::Result<Self> {
        let name = std::ffi::CString::new(interface).expect("no NUL");
        // SAFETY: plain syscalls with valid arguments; the fd is owned by the returned value.
        unsafe {
            let if_index = libc::if_nametoindex(name.as_ptr()) as i32;
            if if_index == 0 {
                return Err(io::Error::last_os_error());
            }
            let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0);
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(PacketSocket { fd, if_index })
        }
    }

    fn send(&self, frame: &[u8]) -> io::Result<()> {
        // SAFETY: sockaddr_ll is plain data; zeroed then filled; frame outlives the call.
        unsafe {
            let mut addr: libc::sockaddr_ll = std::mem::zeroed();
            addr.sll_family = libc::AF_PACKET as u16;
            addr.sll_ifindex = self.if_index;
            addr.sll_halen = 6;
            addr.sll_addr[..6].copy_from_slice(&frame[..6]);
            let sent = libc::sendto(
                self.fd,
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&addr as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            );
            if sent < 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    }
}

impl Drop for PacketSocket {
    fn drop(&mut self) {
        // SAFETY: we own the fd.
        unsafe { libc::close(self.fd) };
    }
}

/// An IPv4 UDP datagram from port 40000, checksummed.
fn ipv4_udp(src: Ipv4Addr, dst: Ipv4Addr, dport: u16, payload: &[u8]) -> Vec<u8> {
    Ipv4::new(src, dst, IPPROTO_UDP).build(&packets::udp(src, dst, 40000, dport, payload))
}

fn send_known_mix(client: &Host, lb1: &Host) {
    let lb1_ip = lb1.ip;
    let client_ip = client.ip;
    let lb1_mac = lb1.mac().expect("lb1 mac");
    let client_mac = client.mac().expect("client mac");
    client
        .in_netns(move || {
            for _ in 0..TCP_SYNS {
                // Nothing listens on port 9: one SYN in, one RST out, no retransmission.
                let refused = TcpStream::connect_timeout(
                    &SocketAddr::from((lb1_ip, 9)),
                    Duration::from_secs(2),
                );
                assert_eq!(
                    refused.err().map(|e| e.kind()),
                    Some(io::ErrorKind::ConnectionRefused)
                );
            }
            let udp = UdpSocket::bind("198.18.0.10:0").expect("bind UDP");
            for i in 0..UDP_DATAGRAMS {
                udp.send_to(&i.to_be_bytes(), (lb1_ip, 9))
                    .expect("send UDP");
            }
            let raw = PacketSocket::open("eth0").expect("AF_PACKET socket");
            for i in 0..ARP_REQUESTS {
                // Who has 198.18.0.250 (nobody): broadcast, so no host answers.
                let frame = packets::arp_request(
                    (client_mac, client_ip),
                    Ipv4Addr::new(198, 18, 0, 250 - i as u8),
                );
                raw.send(&frame).expect("send ARP");
            }
            for _ in 0..IPV6_FRAMES {
                let mut ipv6 = vec![0x60, 0, 0, 0, 0, 0, 59, 64]; // no next header, empty
                ipv6.extend_from_slice(&[0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
                ipv6.extend_from_slice(&[0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
                let frame = ethernet(lb1_mac, client_mac, None, ETH_P_IPV6, &ipv6);
                raw.send(&frame).expect("send IPv6");
            }
            for _ in 0..TAGGED_UDP {
                // VLAN 10, then IPv4.
                let udp = ipv4_udp(client_ip, lb1_ip, 9, b"tagged");
                let frame = ethernet(lb1_mac, client_mac, Some(10), ETH_P_IP, &udp);
                raw.send(&frame).expect("send tagged UDP");
            }
            for _ in 0..TRUNCATED_IPV4 {
                // An IPv4 header cut after 10 of its 20 bytes.
                let cut = &ipv4_udp(client_ip, lb1_ip, 9, b"")[..10];
                let frame = ethernet(lb1_mac, client_mac, None, ETH_P_IP, cut);
                raw.send(&frame).expect("send truncated IPv4");
            }
            for _ in 0..BAD_IHL_IPV4 {
                // A complete datagram whose header claims to be 12 bytes long (IHL 3).
                let mut packet = ipv4_udp(client_ip, lb1_ip, 9, b"bad ihl");
                packet[0] = 0x43;
                let frame = ethernet(lb1_mac, client_mac, None, ETH_P_IP, &packet);
                raw.send(&frame).expect("send bad-IHL IPv4");
            }
        })
        .expect("client sends its mix");
    client
        .run(
            "ping",
            &[
                "-c",
                &PINGS.to_string(),
                "-i",
                "0.05",
                "-W",
                "1",
                "-q",
                &lb1_ip.to_string(),
            ],
        )
        .expect("lb1 answers pings");
}

fn counts_every_frame_by_outcome(mode: &str, expected_ip_link_mode: u64) {
    let lab = Lab::new().expect("lab");
    let client = lab.host(CLIENT);
    let lb1 = lab.host(LB1);
    let pin_dir = lab.pin_dir(LB1);
    let pin_dir_str = pin_dir.to_str().expect("utf-8 pin dir").to_owned();

    // Static neighbours both ways: the kernels then send no ARP of their own, so every frame
    // lb1 receives is one the test sent.
    let client_mac = packets::fmt_mac(client.mac().expect("client mac"));
    let lb1_mac = packets::fmt_mac(lb1.mac().expect("lb1 mac"));
    client
        .run(
            "ip",
            &[
                "neigh",
                "replace",
                &lb1.ip.to_string(),
                "lladdr",
                &lb1_mac,
                "nud",
                "permanent",
                "dev",
                "eth0",
            ],
        )
        .expect("static neighbour on client");
    lb1.run(
        "ip",
        &[
            "neigh",
            "replace",
            &client.ip.to_string(),
            "lladdr",
            &client_mac,
            "nud",
            "permanent",
            "dev",
            "eth0",
        ],
    )
    .expect("static neighbour on lb1");

    let said = attach_xdp(lb1, mode, &pin_dir_str);
    assert!(
        said.contains(&format!("in {mode} mode")),
        "attach output names the mode: {said}"
    );
    assert_eq!(
        xdp_mode_of(lb1),
        Some(expected_ip_link_mode),
        "the kernel reports the mode asked for"
    );

    let before = read_counts(&pin_dir_str);
    send_known_mix(client, lb1);
    let expected = Counts {
        ipv4_tcp: TCP_SYNS,
        ipv4_udp: UDP_DATAGRAMS + TAGGED_UDP,
        ipv4_other: PINGS,
        ipv6: IPV6_FRAMES,
        non_ip: ARP_REQUESTS,
        malformed: TRUNCATED_IPV4 + BAD_IHL_IPV4,
        service_hit: 0,
    };
    // Frames cross the bridge in softirq context after send returns: wait until they arrive.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut seen = read_counts(&pin_dir_str).since(before);
    while seen != expected && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        seen = read_counts(&pin_dir_str).since(before);
    }
    println!("{mode} mode: expected {expected:?}\n{mode} mode: counted  {seen:?}");
    assert_eq!(
        seen, expected,
        "every frame lb1 received is counted once, by what it is"
    );

    detach_xdp(lb1, &pin_dir_str);
    assert_eq!(
        xdp_mode_of(lb1),
        None,
        "no XDP program is left on lb1's eth0"
    );
    assert!(
        !pin_dir.exists(),
        "detaching the last interface removes the pins"
    );
}

#[test]
fn xdp_counts_every_frame_by_outcome_in_generic_mode() {
    counts_every_frame_by_outcome("generic", 2);
}

#[test]
fn xdp_counts_every_frame_by_outcome_in_native_mode() {
    counts_every_frame_by_outcome("native", 1);
}

#[test]
fn maps_still_readable_after_the_attaching_process_exits_and_reload_reuses_them() {
    let lab = Lab::new().expect("lab");
    let lb1 = lab.host(LB1);
    let pin_dir = lab.pin_dir(LB1);
    let pin_dir_str = pin_dir.to_str().expect("utf-8").to_owned();
    attach_xdp(lb1, "generic", &pin_dir_str);
    lab.host(CLIENT)
        .run(
            "ping",
            &["-c", "3", "-i", "0.05", "-q", &lb1.ip.to_string()],
        )
        .expect("ping lb1");
    let first = read_counts(&pin_dir_str);
    assert!(
        first.ipv4_other >= 3,
        "pings counted after the loader exited: {first:?}"
    );
    let again = attach_xdp(lb1, "generic", &pin_dir_str);
    assert!(
        again.contains("reused the pinned maps"),
        "second attach says it reused the maps: {again}"
    );
    let after = read_counts(&pin_dir_str);
    assert!(
        after.ipv4_other >= first.ipv4_other,
        "counters survive a reload: {first:?} then {after:?}"
    );
    let text = tandem(&["maps", "--pin-dir", &pin_dir_str])
        .output()
        .expect("tandem maps");
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("attached  eth0") && text.contains("ipv4_other"),
        "text view: {text}"
    );
    detach_xdp(lb1, &pin_dir_str);
}

#[test]
fn a_packet_for_a_service_in_the_services_map_is_counted_as_a_service_hit() {
    let lab = Lab::new().expect("lab");
    let client = lab.host(CLIENT);
    let lb1 = lab.host(LB1);
    let pin_dir = lab.pin_dir(LB1);
    let pin_dir_str = pin_dir.to_str().expect("utf-8").to_owned();
    attach_xdp(lb1, "generic", &pin_dir_str);

    // bpftool plays the writer, to check the layout from outside: the key is the wire-order
    // layout of lb_common::ServiceKey (198.18.0.100, port 5353, UDP) and the value
    // ServiceValue { id: 1, mode: Proxy, ring: 0 } in host (little-endian) order.
    let services = pin_dir.join("SERVICES");
    let status = Command::new("bpftool")
        .args(["map", "update", "pinned"])
        .arg(&services)
        .args(["key", "hex", "c6", "12", "00", "64", "14", "e9", "11", "00"])
        .args([
            "value", "hex", "01", "00", "00", "00", "00", "00", "00", "00", "00", "00", "00", "00",
        ])
        .status()
        .expect("run bpftool");
    assert!(status.success(), "bpftool map update");

    let before = read_counts(&pin_dir_str);
    let lb1_ip = lb1.ip;
    client
        .in_netns(move || {
            let udp = UdpSocket::bind("198.18.0.10:0").expect("bind");
            for _ in 0..25 {
                udp.send_to(b"query", (lb1_ip, 5353))
                    .expect("send to the service");
            }
            for _ in 0..9 {
                udp.send_to(b"other", (lb1_ip, 5354))
                    .expect("send to another port");
            }
        })
        .expect("client sends");
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut seen = read_counts(&pin_dir_str).since(before);
    while (seen.service_hit, seen.ipv4_udp) != (25, 34) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        seen = read_counts(&pin_dir_str).since(before);
    }
    assert_eq!(
        (seen.service_hit, seen.ipv4_udp),
        (25, 34),
        "only the service's datagrams hit: {seen:?}"
    );

    let output = tandem(&["maps", "--json", "--pin-dir", &pin_dir_str])
        .output()
        .expect("tandem maps");
    let json: Value = serde_json::from_slice(&output.stdout).expect("JSON");
    let service = &json["services"][0];
    assert_eq!(service["vip"], "198.18.0.100");
    assert_eq!(service["port"], 5353);
    assert_eq!(service["proto"], "udp");
    assert_eq!(service["mode"], "proxy");

    detach_xdp(lb1, &pin_dir_str);
}
