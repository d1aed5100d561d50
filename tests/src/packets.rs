//! Frames built by hand, byte by byte, for the XDP packet fixtures and raw-socket tests:
//! Ethernet (optionally 802.1Q-tagged), IPv4 (optionally with options or fragment bits), TCP,
//! UDP and ICMP, with correct checksums. Nothing here parses; the XDP program is what is tested.

use std::net::Ipv4Addr;

pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_ARP: u16 = 0x0806;
pub const ETH_P_IPV6: u16 = 0x86DD;
pub const ETH_P_8021Q: u16 = 0x8100;
pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
/// TCP flags.
pub const SYN: u8 = 0x02;
pub const ACK: u8 = 0x10;
pub const PSH: u8 = 0x08;

/// The internet checksum (RFC 1071) of `bytes`, with `initial` already summed in.
pub fn checksum(initial: u32, bytes: &[u8]) -> u16 {
    let mut sum = initial;
    for chunk in bytes.chunks(2) {
        let word = if chunk.len() == 2 {
            u16::from_be_bytes([chunk[0], chunk[1]])
        } else {
            u16::from_be_bytes([chunk[0], 0])
        };
        sum += u32::from(word);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn pseudo_header_sum(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, len: usize) -> u32 {
    let s = src.octets();
    let d = dst.octets();
    [
        u16::from_be_bytes([s[0], s[1]]),
        u16::from_be_bytes([s[2], s[3]]),
        u16::from_be_bytes([d[0], d[1]]),
        u16::from_be_bytes([d[2], d[3]]),
        u16::from(proto),
        len as u16,
    ]
    .iter()
    .map(|w| u32::from(*w))
    .sum()
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
        let mut options = self.options.clone();
        while !options.len().is_multiple_of(4) {
            options.push(0);
        }
        let header_len = 20 + options.len();
        let total = header_len + payload.len();
        let mut ip = Vec::with_capacity(total);
        ip.push(0x40 | (header_len / 4) as u8);
        ip.push(0);
        ip.extend_from_slice(&(total as u16).to_be_bytes());
        ip.extend_from_slice(&self.id.to_be_bytes());
        ip.extend_from_slice(&self.frag.to_be_bytes());
        ip.push(self.ttl);
        ip.push(self.proto);
        ip.extend_from_slice(&[0, 0]);
        ip.extend_from_slice(&self.src.octets());
        ip.extend_from_slice(&self.dst.octets());
        ip.extend_from_slice(&options);
        let sum = checksum(0, &ip);
        ip[10..12].copy_from_slice(&sum.to_be_bytes());
        ip.extend_from_slice(payload);
        ip
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
    let sum = checksum(pseudo_header_sum(src, dst, IPPROTO_TCP, seg.len()), &seg);
    seg[16..18].copy_from_slice(&sum.to_be_bytes());
    seg
}

/// A UDP datagram with its checksum over the pseudo-header.
pub fn udp(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let len = 8 + payload.len();
    let mut dgram = Vec::with_capacity(len);
    dgram.extend_from_slice(&sport.to_be_bytes());
    dgram.extend_from_slice(&dport.to_be_bytes());
    dgram.extend_from_slice(&(len as u16).to_be_bytes());
    dgram.extend_from_slice(&[0, 0]);
    dgram.extend_from_slice(payload);
    let mut sum = checksum(pseudo_header_sum(src, dst, IPPROTO_UDP, len), &dgram);
    if sum == 0 {
        sum = 0xffff;
    }
    dgram[6..8].copy_from_slice(&sum.to_be_bytes());
    dgram
}

/// An ICMP message: type, code, the 4 "rest of header" bytes, then `body`.
pub fn icmp(kind: u8, code: u8, rest: [u8; 4], body: &[u8]) -> Vec<u8> {
    let mut msg = vec![kind, code, 0, 0];
    msg.extend_from_slice(&rest);
    msg.extend_from_slice(body);
    let sum = checksum(0, &msg);
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
    let mut frame = Vec::with_capacity(18 + payload.len());
    frame.extend_from_slice(&dst);
    frame.extend_from_slice(&src);
    if let Some(id) = vlan {
        frame.extend_from_slice(&ETH_P_8021Q.to_be_bytes());
        frame.extend_from_slice(&(id & 0x0fff).to_be_bytes());
    }
    frame.extend_from_slice(&ethertype.to_be_bytes());
    frame.extend_from_slice(payload);
    frame
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

/// Formats a MAC as `aa:bb:cc:dd:ee:ff`.
pub fn fmt_mac(mac: [u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_header_checksum_verifies_to_zero() {
        let ip = Ipv4::new(
            Ipv4Addr::new(198, 18, 0, 10),
            Ipv4Addr::new(198, 18, 0, 99),
            6,
        )
        .build(&[]);
        assert_eq!(checksum(0, &ip[..20]), 0);
    }

    #[test]
    fn tcp_checksum_verifies_to_zero_with_the_pseudo_header() {
        let (s, d) = (Ipv4Addr::new(198, 18, 0, 10), Ipv4Addr::new(198, 18, 0, 99));
        let seg = tcp(s, d, 40000, 80, SYN, b"hello");
        assert_eq!(
            checksum(pseudo_header_sum(s, d, IPPROTO_TCP, seg.len()), &seg),
            0
        );
    }
}
