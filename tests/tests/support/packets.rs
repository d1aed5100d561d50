//! Frames built for the XDP packet fixtures and raw-socket tests: Ethernet (optionally
//! 802.1Q-tagged), IPv4 (optionally with options or fragment bits), IPv6 (optionally with
//! extension headers), TCP, UDP, ICMP, ICMPv6 and ARP, with correct checksums. The Ethernet, IPv4 and ARP headers and the checksums are written by
//! Tandem's own codecs (`tandem::wire`); TCP, UDP and ICMP, which Tandem never parses in
//! userspace, are laid out here. Nothing here parses; the XDP program is what is tested.

use std::net::{Ipv4Addr, Ipv6Addr};

use tandem::wire::arp::{ArpFrame, ArpRepr, Operation, FRAME_LEN as ARP_FRAME_LEN};
use tandem::wire::checksum;
use tandem::wire::ethernet::{ethertype, EthernetRepr, Mac, BROADCAST};
use tandem::wire::ipv4::{self, Ipv4Repr};

pub const ETH_P_IP: u16 = ethertype::IPV4;
pub const ETH_P_ARP: u16 = ethertype::ARP;
pub const ETH_P_IPV6: u16 = ethertype::IPV6;
pub const ETH_P_8021Q: u16 = ethertype::VLAN;
pub const IPPROTO_ICMP: u8 = ipv4::protocol::ICMP;
pub const IPPROTO_TCP: u8 = ipv4::protocol::TCP;
pub const IPPROTO_UDP: u8 = ipv4::protocol::UDP;
pub const IPPROTO_ICMPV6: u8 = lb_common::IPPROTO_ICMPV6;
/// IPv6 extension headers used by the fixtures.
pub const IPV6_HOP_BY_HOP: u8 = 0;
pub const IPV6_FRAGMENT: u8 = 44;
/// TCP flags.
pub const SYN: u8 = 0x02;
pub const ACK: u8 = 0x10;
pub const PSH: u8 = 0x08;

/// The checksum of a TCP or UDP message over its IPv4 pseudo-header.
fn transport_checksum(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, message: &[u8]) -> u16 {
    let sum = checksum::add_ipv4_pseudo_header(0, src, dst, proto, message.len());
    checksum::finish(checksum::add(sum, message))
}

/// The checksum of a TCP, UDP or ICMPv6 message over its IPv6 pseudo-header (RFC 8200 §8.1).
fn transport_checksum6(src: Ipv6Addr, dst: Ipv6Addr, next_header: u8, message: &[u8]) -> u16 {
    let mut sum = checksum::add(0, &src.octets());
    sum = checksum::add(sum, &dst.octets());
    sum += message.len() as u64 + u64::from(next_header);
    checksum::finish(checksum::add(sum, message))
}

/// An IPv6 packet: the fixed header (hop limit 64, no flow label) announcing `next_header`,
/// then `payload` (extension headers included, their checksums already in place).
pub fn ipv6(src: Ipv6Addr, dst: Ipv6Addr, next_header: u8, payload: &[u8]) -> Vec<u8> {
    let mut packet = Vec::with_capacity(40 + payload.len());
    packet.extend_from_slice(&[0x60, 0, 0, 0]);
    packet.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    packet.push(next_header);
    packet.push(64);
    packet.extend_from_slice(&src.octets());
    packet.extend_from_slice(&dst.octets());
    packet.extend_from_slice(payload);
    packet
}

/// A TCP segment over IPv6 (20-byte header), its checksum over the IPv6 pseudo-header.
pub fn tcp6(
    src: Ipv6Addr,
    dst: Ipv6Addr,
    sport: u16,
    dport: u16,
    flags: u8,
    payload: &[u8],
) -> Vec<u8> {
    let mut seg = tcp_segment(sport, dport, flags, payload);
    let sum = transport_checksum6(src, dst, IPPROTO_TCP, &seg);
    seg[16..18].copy_from_slice(&sum.to_be_bytes());
    seg
}

/// A UDP datagram over IPv6, its checksum over the IPv6 pseudo-header (mandatory in IPv6).
pub fn udp6(src: Ipv6Addr, dst: Ipv6Addr, sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut dgram = udp_datagram(sport, dport, payload);
    let mut sum = transport_checksum6(src, dst, IPPROTO_UDP, &dgram);
    if sum == 0 {
        sum = 0xffff;
    }
    dgram[6..8].copy_from_slice(&sum.to_be_bytes());
    dgram
}

/// An ICMPv6 message from `src` to `dst`: type, code, the 4 bytes after the checksum, `body`.
pub fn icmp6(
    src: Ipv6Addr,
    dst: Ipv6Addr,
    kind: u8,
    code: u8,
    rest: [u8; 4],
    body: &[u8],
) -> Vec<u8> {
    let mut msg = vec![kind, code, 0, 0];
    msg.extend_from_slice(&rest);
    msg.extend_from_slice(body);
    let sum = transport_checksum6(src, dst, IPPROTO_ICMPV6, &msg);
    msg[2..4].copy_from_slice(&sum.to_be_bytes());
    msg
}

/// An Ethernet frame carrying a TCP segment over IPv6 from `src:sport` to `dst:dport`.
pub fn tcp6_frame(
    macs: ([u8; 6], [u8; 6]),
    src: (Ipv6Addr, u16),
    dst: (Ipv6Addr, u16),
    flags: u8,
    payload: &[u8],
) -> Vec<u8> {
    let segment = tcp6(src.0, dst.0, src.1, dst.1, flags, payload);
    let ip = ipv6(src.0, dst.0, IPPROTO_TCP, &segment);
    ethernet(macs.0, macs.1, None, ETH_P_IPV6, &ip)
}

/// An Ethernet frame carrying a UDP datagram over IPv6 from `src:sport` to `dst:dport`.
pub fn udp6_frame(
    macs: ([u8; 6], [u8; 6]),
    src: (Ipv6Addr, u16),
    dst: (Ipv6Addr, u16),
    payload: &[u8],
) -> Vec<u8> {
    let datagram = udp6(src.0, dst.0, src.1, dst.1, payload);
    let ip = ipv6(src.0, dst.0, IPPROTO_UDP, &datagram);
    ethernet(macs.0, macs.1, None, ETH_P_IPV6, &ip)
}

/// An IPv4 datagram under construction: header fields, then [`Ipv4::build`] with a payload.
#[derive(Clone, Debug)]
pub struct Ipv4 {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub proto: u8,
    pub ttl: u8,
    pub id: u16,
    /// Flags and fragment offset as on the wire (0x2000 = more fragments).
    pub frag: u16,
    /// Option bytes (padded to a multiple of 4 by the builder).
    pub options: Vec<u8>,
}

impl Ipv4 {
    pub fn new(src: Ipv4Addr, dst: Ipv4Addr, proto: u8) -> Ipv4 {
        Ipv4 {
            src,
            dst,
            proto,
            ttl: 64,
            id: 1,
            frag: 0x4000, // don't fragment
            options: Vec::new(),
        }
    }

    /// The header followed by `payload` (whose checksum, if any, is already in place).
    pub fn build(&self, payload: &[u8]) -> Vec<u8> {
        Ipv4Repr {
            source: self.src,
            destination: self.dst,
            protocol: self.proto,
            ttl: self.ttl,
            tos: 0,
            identification: self.id,
            flags_fragment: self.frag,
            payload_len: payload.len(),
        }
        .datagram_with(&self.options, payload)
    }
}

/// A TCP segment (20-byte header, no options) with its checksum over the pseudo-header.
pub fn tcp(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    sport: u16,
    dport: u16,
    flags: u8,
    payload: &[u8],
) -> Vec<u8> {
    let mut seg = tcp_segment(sport, dport, flags, payload);
    let sum = transport_checksum(src, dst, IPPROTO_TCP, &seg);
    seg[16..18].copy_from_slice(&sum.to_be_bytes());
    seg
}

/// A TCP segment with a zero checksum, for either family.
fn tcp_segment(sport: u16, dport: u16, flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut seg = Vec::with_capacity(20 + payload.len());
    seg.extend_from_slice(&sport.to_be_bytes());
    seg.extend_from_slice(&dport.to_be_bytes());
    seg.extend_from_slice(&1000u32.to_be_bytes()); // sequence
    seg.extend_from_slice(&(if flags & ACK != 0 { 1u32 } else { 0 }).to_be_bytes());
    seg.push(5 << 4);
    seg.push(flags);
    seg.extend_from_slice(&64240u16.to_be_bytes());
    seg.extend_from_slice(&[0, 0, 0, 0]); // checksum, urgent pointer
    seg.extend_from_slice(payload);
    seg
}

/// A UDP datagram with its checksum over the pseudo-header.
pub fn udp(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut dgram = udp_datagram(sport, dport, payload);
    let mut sum = transport_checksum(src, dst, IPPROTO_UDP, &dgram);
    if sum == 0 {
        sum = 0xffff;
    }
    dgram[6..8].copy_from_slice(&sum.to_be_bytes());
    dgram
}

/// A UDP datagram with a zero checksum, for either family.
fn udp_datagram(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let len = 8 + payload.len();
    let mut dgram = Vec::with_capacity(len);
    dgram.extend_from_slice(&sport.to_be_bytes());
    dgram.extend_from_slice(&dport.to_be_bytes());
    dgram.extend_from_slice(&(len as u16).to_be_bytes());
    dgram.extend_from_slice(&[0, 0]);
    dgram.extend_from_slice(payload);
    dgram
}

/// An ICMP message: type, code, the 4 "rest of header" bytes, then `body`.
pub fn icmp(kind: u8, code: u8, rest: [u8; 4], body: &[u8]) -> Vec<u8> {
    let mut msg = vec![kind, code, 0, 0];
    msg.extend_from_slice(&rest);
    msg.extend_from_slice(body);
    let sum = checksum::finish(checksum::add(0, &msg));
    msg[2..4].copy_from_slice(&sum.to_be_bytes());
    msg
}

/// An Ethernet frame: destination, source, ethertype, payload; with `vlan`, an 802.1Q tag.
pub fn ethernet(
    dst: [u8; 6],
    src: [u8; 6],
    vlan: Option<u16>,
    ethertype: u16,
    payload: &[u8],
) -> Vec<u8> {
    match vlan {
        None => EthernetRepr {
            destination: dst,
            source: src,
            ethertype,
        }
        .frame_with(payload),
        Some(id) => {
            let mut tagged = Vec::with_capacity(4 + payload.len());
            tagged.extend_from_slice(&(id & 0x0fff).to_be_bytes());
            tagged.extend_from_slice(&ethertype.to_be_bytes());
            tagged.extend_from_slice(payload);
            EthernetRepr {
                destination: dst,
                source: src,
                ethertype: ETH_P_8021Q,
            }
            .frame_with(&tagged)
        }
    }
}

/// An Ethernet frame carrying a TCP segment from `src:sport` to `dst:dport`.
pub fn tcp_frame(
    macs: ([u8; 6], [u8; 6]),
    src: (Ipv4Addr, u16),
    dst: (Ipv4Addr, u16),
    flags: u8,
    payload: &[u8],
) -> Vec<u8> {
    let segment = tcp(src.0, dst.0, src.1, dst.1, flags, payload);
    let ip = Ipv4::new(src.0, dst.0, IPPROTO_TCP).build(&segment);
    ethernet(macs.0, macs.1, None, ETH_P_IP, &ip)
}

/// An Ethernet frame carrying a UDP datagram from `src:sport` to `dst:dport`.
pub fn udp_frame(
    macs: ([u8; 6], [u8; 6]),
    src: (Ipv4Addr, u16),
    dst: (Ipv4Addr, u16),
    payload: &[u8],
) -> Vec<u8> {
    let datagram = udp(src.0, dst.0, src.1, dst.1, payload);
    let ip = Ipv4::new(src.0, dst.0, IPPROTO_UDP).build(&datagram);
    ethernet(macs.0, macs.1, None, ETH_P_IP, &ip)
}

/// A broadcast ARP request from `sender` asking who has `target`.
pub fn arp_request(sender: ([u8; 6], Ipv4Addr), target: Ipv4Addr) -> [u8; ARP_FRAME_LEN] {
    let mut frame = [0; ARP_FRAME_LEN];
    ArpFrame {
        ethernet: EthernetRepr {
            destination: BROADCAST,
            source: sender.0,
            ethertype: ETH_P_ARP,
        },
        arp: ArpRepr {
            operation: Operation::Request,
            sender_mac: sender.0,
            sender_ip: sender.1,
            target_mac: [0; 6],
            target_ip: target,
        },
    }
    .emit(&mut frame);
    frame
}

/// Formats a MAC as `aa:bb:cc:dd:ee:ff`.
pub fn fmt_mac(mac: [u8; 6]) -> String {
    Mac(mac).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_header_checksum_verifies() {
        let ip = Ipv4::new(
            Ipv4Addr::new(198, 18, 0, 10),
            Ipv4Addr::new(198, 18, 0, 99),
            6,
        )
        .build(&[]);
        assert!(checksum::verifies(checksum::add(0, &ip[..20])));
    }

    #[test]
    fn tcp_checksum_verifies_with_the_pseudo_header() {
        let (s, d) = (Ipv4Addr::new(198, 18, 0, 10), Ipv4Addr::new(198, 18, 0, 99));
        let seg = tcp(s, d, 40000, 80, SYN, b"hello");
        let sum = checksum::add_ipv4_pseudo_header(0, s, d, IPPROTO_TCP, seg.len());
        assert!(checksum::verifies(checksum::add(sum, &seg)));
    }

    #[test]
    fn ipv6_transport_checksums_verify_with_the_pseudo_header() {
        let (s, d): (Ipv6Addr, Ipv6Addr) =
            ("2001:2::10".parse().unwrap(), "2001:2::99".parse().unwrap());
        for (next, message) in [
            (IPPROTO_TCP, tcp6(s, d, 40000, 80, SYN, b"hello")),
            (IPPROTO_UDP, udp6(s, d, 40000, 53, b"query")),
            (IPPROTO_ICMPV6, icmp6(s, d, 128, 0, [0, 1, 0, 1], b"ping")),
        ] {
            let mut sum = checksum::add(0, &s.octets());
            sum = checksum::add(sum, &d.octets());
            sum += message.len() as u64 + u64::from(next);
            assert!(checksum::verifies(checksum::add(sum, &message)), "{next}");
        }
        let packet = ipv6(s, d, IPPROTO_UDP, &[0; 12]);
        assert_eq!(packet.len(), 52);
        assert_eq!(&packet[4..8], &[0, 12, IPPROTO_UDP, 64]);
    }

    #[test]
    fn a_tagged_frame_carries_the_vlan_then_the_ethertype() {
        let frame = ethernet([1; 6], [2; 6], Some(10), ETH_P_IP, b"ip");
        assert_eq!(&frame[12..18], &[0x81, 0x00, 0x00, 0x0a, 0x08, 0x00]);
        assert_eq!(&frame[18..], b"ip");
    }

    #[test]
    fn an_arp_request_parses_back_as_asked() {
        let sender = ([2, 0, 0, 0, 0, 1], Ipv4Addr::new(198, 18, 0, 10));
        let frame = arp_request(sender, Ipv4Addr::new(198, 18, 0, 250));
        let parsed = tandem::wire::arp::parse_frame(&frame).unwrap();
        assert_eq!(parsed.ethernet.destination, BROADCAST);
        assert_eq!(parsed.arp.operation, Operation::Request);
        assert_eq!(parsed.arp.target_ip, Ipv4Addr::new(198, 18, 0, 250));
    }
}
