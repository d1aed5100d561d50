//! ARP for IPv4 over Ethernet (RFC 826), and the gratuitous ARP a new master broadcasts for
//! each virtual address, so that hosts and switches move the address to its MAC at once
//! instead of when their caches expire.
//!
//! [`Packet`] is the zero-copy view over the 28-byte ARP packet (the Ethernet payload),
//! [`ArpRepr`] its meaning. [`gratuitous_arp`] writes the 42 bytes an `AF_PACKET` socket sends
//! (Ethernet header and ARP; the driver pads them to the 60-byte Ethernet minimum), and
//! [`parse_frame`] reads frames back, for tests and the lab's captures.
//!
//! Not here: the socket, the timing and repetition of announcements (the supervisor's), and
//! IPv6 neighbour advertisements ([`super::ndisc`]).

use std::net::Ipv4Addr;

use super::ethernet::{self, ethertype, EthernetRepr, MacAddr, BROADCAST};
use super::{be16_at, ipv4_at, mac_at};

/// The ARP packet for IPv4 over Ethernet.
pub const PACKET_LEN: usize = 28;
/// Ethernet header (14 bytes) and ARP packet (28 bytes).
pub const FRAME_LEN: usize = ethernet::HEADER_LEN + PACKET_LEN;
/// ARP hardware type of Ethernet.
pub const HARDWARE_ETHERNET: u16 = 1;

/// Offsets in the ARP packet.
mod field {
    pub type Field = core::ops::Range<usize>;

    pub const HARDWARE_TYPE: Field = 0..2;
    pub const PROTOCOL_TYPE: Field = 2..4;
    pub const HARDWARE_LEN: usize = 4;
    pub const PROTOCOL_LEN: usize = 5;
    pub const OPERATION: Field = 6..8;
    pub const SENDER_MAC: Field = 8..14;
    pub const SENDER_IP: Field = 14..18;
    pub const TARGET_MAC: Field = 18..24;
    pub const TARGET_IP: Field = 24..28;
}

/// Why a frame is not an ARP packet for IPv4 over Ethernet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ArpError {
    #[error("frame of {0} bytes is shorter than Ethernet + ARP ({FRAME_LEN} bytes)")]
    Truncated(usize),
    #[error("EtherType {0:#06x} is not ARP (0x0806)")]
    NotArp(u16),
    #[error("ARP for hardware type {hardware_type} / protocol {protocol_type:#06x} with address lengths {hardware_len}/{protocol_len}, not IPv4 over Ethernet")]
    Unsupported {
        hardware_type: u16,
        protocol_type: u16,
        hardware_len: u8,
        protocol_len: u8,
    },
    #[error("ARP operation {0} is neither request (1) nor reply (2)")]
    UnknownOperation(u16),
}

/// The ARP operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Operation {
    Request,
    Reply,
}

impl Operation {
    pub fn number(self) -> u16 {
        match self {
            Operation::Request => 1,
            Operation::Reply => 2,
        }
    }

    pub fn from_number(n: u16) -> Option<Operation> {
        match n {
            1 => Some(Operation::Request),
            2 => Some(Operation::Reply),
            _ => None,
        }
    }
}

/// A zero-copy view over an ARP packet for IPv4 over Ethernet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps a buffer without checking it; accessors may panic until [`Packet::check_len`]
    /// succeeds.
    pub const fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }

    /// Whether the buffer holds the whole packet (longer is fine: Ethernet padding).
    pub fn check_len(&self) -> bool {
        self.buffer.as_ref().len() >= PACKET_LEN
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    pub fn hardware_type(&self) -> u16 {
        be16_at(self.buffer.as_ref(), field::HARDWARE_TYPE.start)
    }

    pub fn protocol_type(&self) -> u16 {
        be16_at(self.buffer.as_ref(), field::PROTOCOL_TYPE.start)
    }

    pub fn hardware_len(&self) -> u8 {
        self.buffer.as_ref()[field::HARDWARE_LEN]
    }

    pub fn protocol_len(&self) -> u8 {
        self.buffer.as_ref()[field::PROTOCOL_LEN]
    }

    /// The operation as a number (1 request, 2 reply).
    pub fn operation(&self) -> u16 {
        be16_at(self.buffer.as_ref(), field::OPERATION.start)
    }

    pub fn sender_mac(&self) -> MacAddr {
        mac_at(self.buffer.as_ref(), field::SENDER_MAC.start)
    }

    pub fn sender_ip(&self) -> Ipv4Addr {
        ipv4_at(self.buffer.as_ref(), field::SENDER_IP.start)
    }

    pub fn target_mac(&self) -> MacAddr {
        mac_at(self.buffer.as_ref(), field::TARGET_MAC.start)
    }

    pub fn target_ip(&self) -> Ipv4Addr {
        ipv4_at(self.buffer.as_ref(), field::TARGET_IP.start)
    }
}

/// Setters, for emitting. They panic on a buffer shorter than [`PACKET_LEN`].
impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    pub fn set_hardware_type(&mut self, hardware_type: u16) {
        self.buffer.as_mut()[field::HARDWARE_TYPE].copy_from_slice(&hardware_type.to_be_bytes());
    }

    pub fn set_protocol_type(&mut self, protocol_type: u16) {
        self.buffer.as_mut()[field::PROTOCOL_TYPE].copy_from_slice(&protocol_type.to_be_bytes());
    }

    pub fn set_hardware_len(&mut self, len: u8) {
        self.buffer.as_mut()[field::HARDWARE_LEN] = len;
    }

    pub fn set_protocol_len(&mut self, len: u8) {
        self.buffer.as_mut()[field::PROTOCOL_LEN] = len;
    }

    pub fn set_operation(&mut self, operation: u16) {
        self.buffer.as_mut()[field::OPERATION].copy_from_slice(&operation.to_be_bytes());
    }

    pub fn set_sender_mac(&mut self, mac: MacAddr) {
        self.buffer.as_mut()[field::SENDER_MAC].copy_from_slice(&mac);
    }

    pub fn set_sender_ip(&mut self, ip: Ipv4Addr) {
        self.buffer.as_mut()[field::SENDER_IP].copy_from_slice(&ip.octets());
    }

    pub fn set_target_mac(&mut self, mac: MacAddr) {
        self.buffer.as_mut()[field::TARGET_MAC].copy_from_slice(&mac);
    }

    pub fn set_target_ip(&mut self, ip: Ipv4Addr) {
        self.buffer.as_mut()[field::TARGET_IP].copy_from_slice(&ip.octets());
    }
}

/// What an ARP packet for IPv4 over Ethernet says.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ArpRepr {
    pub operation: Operation,
    pub sender_mac: MacAddr,
    pub sender_ip: Ipv4Addr,
    pub target_mac: MacAddr,
    pub target_ip: Ipv4Addr,
}

impl ArpRepr {
    /// The announcement a new master sends for `address` from the interface `mac`.
    ///
    /// An ARP request with sender IP = target IP = the address, as keepalived sends
    /// (vrrp_arp.c, `send_gratuitous_arp_immediate`). The target MAC is 00:00:00:00:00:00, as
    /// RFC 5227 §2.3 says for an ARP Announcement (the field is "ignored and SHOULD be set to all
    /// zeroes"); keepalived writes ff:ff:ff:ff:ff:ff there instead (seen in a capture of 2.2.7,
    /// see the tests). Receivers ignore the field in a request, so both update neighbour
    /// caches the same way: Linux learns from the sender fields.
    pub fn gratuitous(mac: MacAddr, address: Ipv4Addr) -> ArpRepr {
        ArpRepr {
            operation: Operation::Request,
            sender_mac: mac,
            sender_ip: address,
            target_mac: [0; 6],
            target_ip: address,
        }
    }

    /// Whether this announces its sender's own address (sender IP = target IP).
    pub fn is_gratuitous(&self) -> bool {
        self.sender_ip == self.target_ip
    }

    /// Reads a packet, refusing anything but IPv4 over Ethernet, request or reply. The
    /// caller has checked the length ([`Packet::check_len`]).
    pub fn parse<T: AsRef<[u8]>>(packet: &Packet<T>) -> Result<ArpRepr, ArpError> {
        if packet.hardware_type() != HARDWARE_ETHERNET
            || packet.protocol_type() != ethertype::IPV4
            || packet.hardware_len() != 6
            || packet.protocol_len() != 4
        {
            return Err(ArpError::Unsupported {
                hardware_type: packet.hardware_type(),
                protocol_type: packet.protocol_type(),
                hardware_len: packet.hardware_len(),
                protocol_len: packet.protocol_len(),
            });
        }
        let operation = Operation::from_number(packet.operation())
            .ok_or(ArpError::UnknownOperation(packet.operation()))?;
        Ok(ArpRepr {
            operation,
            sender_mac: packet.sender_mac(),
            sender_ip: packet.sender_ip(),
            target_mac: packet.target_mac(),
            target_ip: packet.target_ip(),
        })
    }

    /// Writes the packet. Panics if the buffer is shorter than [`PACKET_LEN`].
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Packet<T>) {
        packet.set_hardware_type(HARDWARE_ETHERNET);
        packet.set_protocol_type(ethertype::IPV4);
        packet.set_hardware_len(6);
        packet.set_protocol_len(4);
        packet.set_operation(self.operation.number());
        packet.set_sender_mac(self.sender_mac);
        packet.set_sender_ip(self.sender_ip);
        packet.set_target_mac(self.target_mac);
        packet.set_target_ip(self.target_ip);
    }
}

/// An Ethernet frame that carries ARP: its header and its ARP packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ArpFrame {
    pub ethernet: EthernetRepr,
    pub arp: ArpRepr,
}

impl ArpFrame {
    /// The broadcast gratuitous ARP for `address` from the interface `mac`.
    pub fn gratuitous(mac: MacAddr, address: Ipv4Addr) -> ArpFrame {
        ArpFrame {
            ethernet: EthernetRepr {
                destination: BROADCAST,
                source: mac,
                ethertype: ethertype::ARP,
            },
            arp: ArpRepr::gratuitous(mac, address),
        }
    }

    /// Writes the frame into `buffer`; its EtherType is ARP whatever `ethernet` says.
    pub fn emit(&self, buffer: &mut [u8; FRAME_LEN]) {
        let mut frame = ethernet::Frame::new_unchecked(&mut buffer[..]);
        EthernetRepr {
            ethertype: ethertype::ARP,
            ..self.ethernet
        }
        .emit(&mut frame);
        self.arp
            .emit(&mut Packet::new_unchecked(frame.payload_mut()));
    }
}

/// The gratuitous ARP frame for `address` from the interface whose MAC is `sender_mac`
/// ([`ArpRepr::gratuitous`], broadcast).
pub fn gratuitous_arp(sender_mac: MacAddr, address: Ipv4Addr) -> [u8; FRAME_LEN] {
    let mut buffer = [0; FRAME_LEN];
    ArpFrame::gratuitous(sender_mac, address).emit(&mut buffer);
    buffer
}

/// Reads an Ethernet + ARP frame (trailing padding allowed).
pub fn parse_frame(frame: &[u8]) -> Result<ArpFrame, ArpError> {
    if frame.len() < FRAME_LEN {
        return Err(ArpError::Truncated(frame.len()));
    }
    let len = frame.len();
    let frame = ethernet::Frame::new_unchecked(frame);
    // Longer than the Ethernet header (checked above): parsing it cannot fail.
    let ethernet = EthernetRepr::parse(&frame).map_err(|_| ArpError::Truncated(len))?;
    if ethernet.ethertype != ethertype::ARP {
        return Err(ArpError::NotArp(ethernet.ethertype));
    }
    let arp = ArpRepr::parse(&Packet::new_unchecked(frame.payload()))?;
    Ok(ArpFrame { ethernet, arp })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: MacAddr = [0x02, 0x00, 0x5e, 0x10, 0x00, 0x01];
    const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 99);

    /// Written out by hand from RFC 826 and RFC 5227 §2.3.
    const GARP: [u8; 42] = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, // Ethernet destination: broadcast
        0x02, 0x00, 0x5e, 0x10, 0x00, 0x01, // Ethernet source
        0x08, 0x06, // EtherType ARP
        0x00, 0x01, // hardware type Ethernet
        0x08, 0x00, // protocol type IPv4
        6, 4, // address lengths
        0x00, 0x01, // request
        0x02, 0x00, 0x5e, 0x10, 0x00, 0x01, // sender MAC
        198, 18, 0, 99, // sender IP
        0, 0, 0, 0, 0, 0, // target MAC: zero in an announcement
        198, 18, 0, 99, // target IP = sender IP
    ];

    #[test]
    fn gratuitous_arp_is_byte_exact() {
        assert_eq!(gratuitous_arp(MAC, VIP), GARP);
    }

    #[test]
    fn gratuitous_arp_parses_back() {
        let frame = parse_frame(&gratuitous_arp(MAC, VIP)).unwrap();
        assert_eq!(frame, ArpFrame::gratuitous(MAC, VIP));
        let repr = frame.arp;
        assert!(repr.is_gratuitous());
        assert_eq!(repr.operation, Operation::Request);
        assert_eq!(frame.ethernet.destination, BROADCAST);
        assert_eq!(frame.ethernet.source, MAC);
        assert_eq!(repr.sender_mac, MAC);
    }

    #[test]
    fn reply_round_trips() {
        let frame = ArpFrame {
            ethernet: EthernetRepr {
                destination: MAC,
                source: [2, 0, 0, 0, 0, 2],
                ethertype: ethertype::ARP,
            },
            arp: ArpRepr {
                operation: Operation::Reply,
                sender_mac: [2, 0, 0, 0, 0, 2],
                sender_ip: Ipv4Addr::new(198, 18, 0, 100),
                target_mac: MAC,
                target_ip: Ipv4Addr::new(198, 18, 0, 10),
            },
        };
        let mut buffer = [0; FRAME_LEN];
        frame.emit(&mut buffer);
        assert_eq!(parse_frame(&buffer), Ok(frame));
        assert!(!frame.arp.is_gratuitous());
    }

    /// The first gratuitous ARP keepalived 2.2.7 (Debian 12) sent on becoming master for
    /// 192.168.0.99, captured with tcpdump in a network namespace: as ours but for the target
    /// MAC, which keepalived sets to broadcast.
    const KEEPALIVED_2_2_7_GARP: [u8; 42] = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfa, 0x6d, 0x19, 0x40, 0x30, 0x13, 0x08, 0x06, 0x00,
        0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01, 0xfa, 0x6d, 0x19, 0x40, 0x30, 0x13, 0xc0, 0xa8,
        0x00, 0x63, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xc0, 0xa8, 0x00, 0x63,
    ];

    #[test]
    fn keepalived_gratuitous_arp_differs_only_in_target_mac() {
        let mac = [0xfa, 0x6d, 0x19, 0x40, 0x30, 0x13];
        let address = Ipv4Addr::new(192, 168, 0, 99);
        let frame = parse_frame(&KEEPALIVED_2_2_7_GARP).unwrap();
        assert!(frame.arp.is_gratuitous());
        assert_eq!(frame.arp.target_mac, BROADCAST);
        let ours = ArpFrame::gratuitous(mac, address);
        assert_eq!(
            frame,
            ArpFrame {
                arp: ArpRepr {
                    target_mac: BROADCAST,
                    ..ours.arp
                },
                ..ours
            }
        );
        let ours = gratuitous_arp(mac, address);
        assert_eq!(ours[..32], KEEPALIVED_2_2_7_GARP[..32]);
        assert_eq!(ours[32..38], [0; 6]);
        assert_eq!(ours[38..], KEEPALIVED_2_2_7_GARP[38..]);
    }

    #[test]
    fn padded_frame_is_accepted() {
        let mut frame = GARP.to_vec();
        frame.resize(60, 0);
        assert_eq!(parse_frame(&frame), Ok(ArpFrame::gratuitous(MAC, VIP)));
    }

    #[test]
    fn truncated_frames_are_refused() {
        for len in 0..FRAME_LEN {
            assert_eq!(parse_frame(&GARP[..len]), Err(ArpError::Truncated(len)));
        }
    }

    #[test]
    fn other_ethertypes_are_refused() {
        let mut frame = GARP;
        frame[12..14].copy_from_slice(&[0x08, 0x00]);
        assert_eq!(parse_frame(&frame), Err(ArpError::NotArp(0x0800)));
    }

    #[test]
    fn other_address_families_are_refused() {
        for (at, value) in [(15, 6u8), (16, 0x86), (18, 8), (19, 16)] {
            let mut frame = GARP;
            frame[at] = value;
            assert!(
                matches!(parse_frame(&frame), Err(ArpError::Unsupported { .. })),
                "byte {at}"
            );
        }
    }

    #[test]
    fn unknown_operations_are_refused() {
        for op in [0u16, 3, 8, 0xffff] {
            let mut frame = GARP;
            frame[20..22].copy_from_slice(&op.to_be_bytes());
            assert_eq!(parse_frame(&frame), Err(ArpError::UnknownOperation(op)));
        }
    }

    #[test]
    fn every_byte_mutation_parses_without_panic() {
        let mut frame = GARP;
        for at in 0..FRAME_LEN {
            for value in 0..=u8::MAX {
                frame[at] = value;
                let _ = parse_frame(&frame);
            }
            frame[at] = GARP[at];
        }
    }

    #[test]
    fn errors_say_what_was_wrong() {
        assert_eq!(
            ArpError::NotArp(0x86dd).to_string(),
            "EtherType 0x86dd is not ARP (0x0806)"
        );
        assert!(ArpError::Truncated(14).to_string().contains("14 bytes"));
    }
}
