//! The ICMPv6 neighbour advertisement (RFC 4861 §4.4), and the unsolicited one a new master
//! sends for each IPv6 virtual address (RFC 5798 §6.4.2, §7.3; RFC 4861 §7.2.6): the IPv6
//! twin of the gratuitous ARP in [`super::arp`], so that neighbours move the address to the
//! new holder's MAC at once.
//!
//! [`Packet`] is the zero-copy view over the ICMPv6 message (the IPv6 payload), [`NaRepr`] its
//! meaning, with the Target Link-Layer Address option. [`unsolicited_na`] writes the whole
//! frame an `AF_PACKET` socket sends (Ethernet, IPv6 with hop limit 255 to ff02::1, the
//! message with its checksum over the IPv6 pseudo-header), and [`parse_frame`] reads frames
//! back, for tests and the lab's captures.
//!
//! Not here: neighbour solicitations and the other neighbour discovery messages (the kernel
//! answers those), the socket, and the timing of announcements.

use std::net::Ipv6Addr;

use super::checksum;
use super::ethernet::{self, ethertype, EthernetRepr, MacAddr};
use super::ipv6::{self, next_header, Ipv6Repr};
use super::{be16_at, mac_at};

/// ICMPv6 type of a neighbour advertisement.
pub const TYPE_NEIGHBOR_ADVERTISEMENT: u8 = 136;
/// Type, code, checksum, flags and reserved bits, target address.
pub const HEADER_LEN: usize = 24;
/// The Target Link-Layer Address option for Ethernet: type, length (in 8-byte units), MAC.
pub const TLLA_OPTION_LEN: usize = 8;
/// A neighbour advertisement with one Target Link-Layer Address option.
pub const MESSAGE_LEN: usize = HEADER_LEN + TLLA_OPTION_LEN;
/// Ethernet header, IPv6 header and the message: what [`unsolicited_na`] writes.
pub const FRAME_LEN: usize = ethernet::HEADER_LEN + ipv6::HEADER_LEN + MESSAGE_LEN;
/// Neighbour discovery messages carry hop limit 255; receivers drop any other (RFC 4861 §7.1.2).
pub const HOP_LIMIT: u8 = 255;
/// The all-nodes group an unsolicited advertisement goes to.
pub const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);

/// Neighbour discovery option types (RFC 4861 §4.6).
pub mod option {
    pub const SOURCE_LINK_LAYER_ADDRESS: u8 = 1;
    pub const TARGET_LINK_LAYER_ADDRESS: u8 = 2;
}

/// The flags in the first byte after the checksum (RFC 4861 §4.4).
mod flag {
    pub const ROUTER: u8 = 0x80;
    pub const SOLICITED: u8 = 0x40;
    pub const OVERRIDE: u8 = 0x20;
}

/// Offsets in the message.
mod field {
    pub type Field = core::ops::Range<usize>;

    pub const TYPE: usize = 0;
    pub const CODE: usize = 1;
    pub const CHECKSUM: Field = 2..4;
    pub const FLAGS: usize = 4;
    /// The 29 reserved bits after the flags.
    pub const RESERVED: Field = 4..8;
    pub const TARGET: Field = 8..24;
    pub const OPTIONS: usize = 24;
}

/// The Ethernet multicast address of an IPv6 multicast group (RFC 2464 §7): 33:33 and the
/// group's last 32 bits.
pub fn multicast_mac(group: Ipv6Addr) -> MacAddr {
    let o = group.octets();
    [0x33, 0x33, o[12], o[13], o[14], o[15]]
}

/// Why a buffer is not a neighbour advertisement Tandem can read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NaError {
    #[error("{what} of {len} bytes is too short")]
    Truncated { what: &'static str, len: usize },
    #[error("EtherType {0:#06x} is not IPv6 (0x86dd)")]
    NotIpv6(u16),
    #[error("IPv6 next header {0} is not ICMPv6 (58)")]
    NotIcmpv6(u8),
    #[error("ICMPv6 type {0} code {1} is not a neighbour advertisement (136, 0)")]
    NotNeighborAdvertisement(u8, u8),
    #[error("hop limit {0} is not 255: the message did not come from the link")]
    HopLimit(u8),
    #[error("an option of length zero, or one that runs past the message")]
    BadOption,
    #[error("wrong ICMPv6 checksum")]
    BadChecksum,
}

/// A zero-copy view over a neighbour advertisement (the ICMPv6 message).
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

    /// Whether the buffer holds the fixed part (options may follow).
    pub fn check_len(&self) -> bool {
        self.buffer.as_ref().len() >= HEADER_LEN
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    pub fn msg_type(&self) -> u8 {
        self.buffer.as_ref()[field::TYPE]
    }

    pub fn code(&self) -> u8 {
        self.buffer.as_ref()[field::CODE]
    }

    pub fn checksum(&self) -> u16 {
        be16_at(self.buffer.as_ref(), field::CHECKSUM.start)
    }

    pub fn router(&self) -> bool {
        self.buffer.as_ref()[field::FLAGS] & flag::ROUTER != 0
    }

    pub fn solicited(&self) -> bool {
        self.buffer.as_ref()[field::FLAGS] & flag::SOLICITED != 0
    }

    pub fn override_flag(&self) -> bool {
        self.buffer.as_ref()[field::FLAGS] & flag::OVERRIDE != 0
    }

    pub fn target(&self) -> Ipv6Addr {
        let mut octets = [0; 16];
        octets.copy_from_slice(&self.buffer.as_ref()[field::TARGET]);
        Ipv6Addr::from(octets)
    }

    /// The options: (type, body after the type and length bytes) each, or
    /// [`NaError::BadOption`] for a zero length or one past the end (RFC 4861 §4.6 says to
    /// drop the message then).
    pub fn options(&self) -> Result<Vec<(u8, &[u8])>, NaError> {
        let data = self.buffer.as_ref();
        let mut options = Vec::new();
        let mut at = field::OPTIONS;
        while at < data.len() {
            let Some(&units) = data.get(at + 1) else {
                return Err(NaError::BadOption);
            };
            let len = usize::from(units) * 8;
            if len == 0 || at + len > data.len() {
                return Err(NaError::BadOption);
            }
            options.push((data[at], &data[at + 2..at + len]));
            at += len;
        }
        Ok(options)
    }

    /// Whether the checksum is right for a message from `source` to `destination`.
    pub fn verify_checksum(&self, source: Ipv6Addr, destination: Ipv6Addr) -> bool {
        checksum::verifies(self.checksum_sum(source, destination))
    }

    fn checksum_sum(&self, source: Ipv6Addr, destination: Ipv6Addr) -> u64 {
        let data = self.buffer.as_ref();
        let sum = checksum::add(0, data);
        checksum::add_ipv6_pseudo_header(sum, source, destination, next_header::ICMPV6, data.len())
    }
}

/// Setters, for emitting. They panic on a buffer shorter than what they write.
impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    pub fn set_msg_type(&mut self, msg_type: u8) {
        self.buffer.as_mut()[field::TYPE] = msg_type;
    }

    pub fn set_code(&mut self, code: u8) {
        self.buffer.as_mut()[field::CODE] = code;
    }

    pub fn set_checksum(&mut self, checksum: u16) {
        self.buffer.as_mut()[field::CHECKSUM].copy_from_slice(&checksum.to_be_bytes());
    }

    /// The three flags, the reserved bits zero.
    pub fn set_flags(&mut self, router: bool, solicited: bool, override_flag: bool) {
        let mut flags = 0;
        if router {
            flags |= flag::ROUTER;
        }
        if solicited {
            flags |= flag::SOLICITED;
        }
        if override_flag {
            flags |= flag::OVERRIDE;
        }
        let reserved = &mut self.buffer.as_mut()[field::RESERVED];
        reserved.fill(0);
        reserved[0] = flags;
    }

    pub fn set_target(&mut self, target: Ipv6Addr) {
        self.buffer.as_mut()[field::TARGET].copy_from_slice(&target.octets());
    }

    /// Writes a Target Link-Layer Address option right after the fixed part.
    pub fn set_target_link_layer_address(&mut self, mac: MacAddr) {
        let at = field::OPTIONS;
        let option = &mut self.buffer.as_mut()[at..at + TLLA_OPTION_LEN];
        option[0] = option::TARGET_LINK_LAYER_ADDRESS;
        option[1] = 1;
        option[2..].copy_from_slice(&mac);
    }

    /// Computes the checksum over the message and the pseudo-header and writes it; every
    /// other field must be in place first.
    pub fn fill_checksum(&mut self, source: Ipv6Addr, destination: Ipv6Addr) {
        self.set_checksum(0);
        let sum = self.checksum_sum(source, destination);
        self.set_checksum(checksum::finish(sum));
    }
}

/// What a neighbour advertisement says.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct NaRepr {
    pub router: bool,
    pub solicited: bool,
    /// Replace the link-layer address a neighbour has cached (what moves a VIP).
    pub override_flag: bool,
    pub target: Ipv6Addr,
    /// The Target Link-Layer Address option, when the message has one.
    pub target_mac: Option<MacAddr>,
}

impl NaRepr {
    /// The announcement a new master sends for `address`, which now answers at `mac`:
    /// Override set (neighbours replace what they cached), Solicited clear (nobody asked),
    /// Router clear (a VIP is a host address; RFC 5798 §7.3 leaves the flag to the router's
    /// role, and keepalived too sets it only when the node forwards).
    pub fn unsolicited(mac: MacAddr, address: Ipv6Addr) -> NaRepr {
        NaRepr {
            router: false,
            solicited: false,
            override_flag: true,
            target: address,
            target_mac: Some(mac),
        }
    }

    /// Reads a message sent from `source` to `destination` ([`Packet::check_len`] done):
    /// type 136 code 0, a right checksum, well-formed options.
    pub fn parse<T: AsRef<[u8]>>(
        packet: &Packet<T>,
        source: Ipv6Addr,
        destination: Ipv6Addr,
    ) -> Result<NaRepr, NaError> {
        if packet.msg_type() != TYPE_NEIGHBOR_ADVERTISEMENT || packet.code() != 0 {
            return Err(NaError::NotNeighborAdvertisement(
                packet.msg_type(),
                packet.code(),
            ));
        }
        if !packet.verify_checksum(source, destination) {
            return Err(NaError::BadChecksum);
        }
        let target_mac = packet
            .options()?
            .into_iter()
            .find(|(kind, body)| *kind == option::TARGET_LINK_LAYER_ADDRESS && body.len() >= 6)
            .map(|(_, body)| mac_at(body, 0));
        Ok(NaRepr {
            router: packet.router(),
            solicited: packet.solicited(),
            override_flag: packet.override_flag(),
            target: packet.target(),
            target_mac,
        })
    }

    /// Length of the message [`NaRepr::emit`] writes.
    pub fn buffer_len(&self) -> usize {
        HEADER_LEN + self.target_mac.map_or(0, |_| TLLA_OPTION_LEN)
    }

    /// Writes the message, checksum included, for a packet from `source` to `destination`.
    /// Panics if the buffer is shorter than [`NaRepr::buffer_len`].
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(
        &self,
        packet: &mut Packet<T>,
        source: Ipv6Addr,
        destination: Ipv6Addr,
    ) {
        packet.set_msg_type(TYPE_NEIGHBOR_ADVERTISEMENT);
        packet.set_code(0);
        packet.set_flags(self.router, self.solicited, self.override_flag);
        packet.set_target(self.target);
        if let Some(mac) = self.target_mac {
            packet.set_target_link_layer_address(mac);
        }
        packet.fill_checksum(source, destination);
    }
}

/// An Ethernet frame that carries a neighbour advertisement: its three layers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct NaFrame {
    pub ethernet: EthernetRepr,
    pub ipv6: Ipv6Repr,
    pub na: NaRepr,
}

/// The unsolicited neighbour advertisement for `address` from the interface `sender_mac`,
/// announcing `link_layer` as the address's MAC: Ethernet to 33:33:00:00:00:01, IPv6 from the
/// address itself (RFC 4861 §7.2.6: any address of the interface; Linux's own unsolicited
/// advertisements use the target) to ff02::1 with hop limit 255.
pub fn unsolicited_na(
    sender_mac: MacAddr,
    link_layer: MacAddr,
    address: Ipv6Addr,
) -> [u8; FRAME_LEN] {
    let mut buffer = [0; FRAME_LEN];
    let mut frame = ethernet::Frame::new_unchecked(&mut buffer[..]);
    EthernetRepr {
        destination: multicast_mac(ALL_NODES),
        source: sender_mac,
        ethertype: ethertype::IPV6,
    }
    .emit(&mut frame);
    let mut ip = ipv6::Packet::new_unchecked(frame.payload_mut());
    Ipv6Repr {
        source: address,
        destination: ALL_NODES,
        next_header: next_header::ICMPV6,
        hop_limit: HOP_LIMIT,
        traffic_class: 0,
        payload_len: MESSAGE_LEN,
    }
    .emit(&mut ip);
    NaRepr::unsolicited(link_layer, address).emit(
        &mut Packet::new_unchecked(ip.payload_mut()),
        address,
        ALL_NODES,
    );
    buffer
}

/// Reads an Ethernet + IPv6 + neighbour advertisement frame (trailing padding allowed),
/// checking the hop limit and the checksum.
pub fn parse_frame(bytes: &[u8]) -> Result<NaFrame, NaError> {
    let truncated = |what| NaError::Truncated {
        what,
        len: bytes.len(),
    };
    let frame = ethernet::Frame::new_checked(bytes).map_err(|_| truncated("Ethernet frame"))?;
    let ethernet = EthernetRepr::parse(&frame).map_err(|_| truncated("Ethernet frame"))?;
    if ethernet.ethertype != ethertype::IPV6 {
        return Err(NaError::NotIpv6(ethernet.ethertype));
    }
    let ip = ipv6::Packet::new_checked(frame.payload()).map_err(|_| truncated("IPv6 packet"))?;
    let ipv6 = Ipv6Repr::parse(&ip).map_err(|_| truncated("IPv6 packet"))?;
    if ipv6.next_header != next_header::ICMPV6 {
        return Err(NaError::NotIcmpv6(ipv6.next_header));
    }
    if ipv6.hop_limit != HOP_LIMIT {
        return Err(NaError::HopLimit(ipv6.hop_limit));
    }
    let message = Packet::new_unchecked(ip.payload());
    if !message.check_len() {
        return Err(truncated("neighbour advertisement"));
    }
    let na = NaRepr::parse(&message, ipv6.source, ipv6.destination)?;
    Ok(NaFrame { ethernet, ipv6, na })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: MacAddr = [0x02, 0, 0, 0, 0, 0x01];
    const VMAC: MacAddr = [0x00, 0x00, 0x5e, 0x00, 0x02, 51];

    fn vip() -> Ipv6Addr {
        "2001:2::99".parse().unwrap()
    }

    /// A ones' complement checksum written apart from the codec's.
    fn internet_checksum(data: &[u8]) -> u16 {
        let mut sum: u32 = 0;
        for pair in data.chunks(2) {
            sum += (u32::from(pair[0]) << 8) | pair.get(1).map_or(0, |b| u32::from(*b));
        }
        while sum > 0xffff {
            sum = (sum >> 16) + (sum & 0xffff);
        }
        !(sum as u16)
    }

    #[test]
    fn the_unsolicited_na_is_laid_out_as_rfc_4861_says() {
        let frame = unsolicited_na(MAC, MAC, vip());
        assert_eq!(frame.len(), 86);
        // Ethernet: to 33:33:00:00:00:01 from the interface, IPv6.
        assert_eq!(frame[..6], [0x33, 0x33, 0, 0, 0, 1]);
        assert_eq!(frame[6..12], MAC);
        assert_eq!(frame[12..14], [0x86, 0xdd]);
        // IPv6: payload 32, next header 58, hop limit 255, from the VIP to ff02::1.
        let ip = &frame[14..54];
        assert_eq!(ip[..8], [0x60, 0, 0, 0, 0, 32, 58, 255]);
        assert_eq!(ip[8..24], vip().octets());
        assert_eq!(ip[24..40], ALL_NODES.octets());
        // ICMPv6: type 136 code 0, flags Override only, the target, option 2 length 1 MAC.
        let icmp = &frame[54..];
        assert_eq!(icmp[..2], [136, 0]);
        assert_eq!(icmp[4..8], [0x20, 0, 0, 0]);
        assert_eq!(icmp[8..24], vip().octets());
        assert_eq!(icmp[24..26], [2, 1]);
        assert_eq!(icmp[26..32], MAC);
        // The checksum, computed apart: pseudo-header then the message with its field zero.
        let mut summed = Vec::new();
        summed.extend_from_slice(&vip().octets());
        summed.extend_from_slice(&ALL_NODES.octets());
        summed.extend_from_slice(&32u32.to_be_bytes());
        summed.extend_from_slice(&[0, 0, 0, 58]);
        let mut zeroed = icmp.to_vec();
        zeroed[2..4].fill(0);
        summed.extend_from_slice(&zeroed);
        assert_eq!(icmp[2..4], internet_checksum(&summed).to_be_bytes());
    }

    /// keepalived 2.2.7's unsolicited neighbour advertisement for its IPv6 VIP 2001:2::99 on
    /// becoming master, from an interface with MAC 02:00:00:00:00:0a, captured with tcpdump
    /// between two network namespaces (it sent five, as its garp_master_repeat says).
    const KEEPALIVED_2_2_7_NA: [u8; 86] = [
        0x33, 0x33, 0x00, 0x00, 0x00, 0x01, 0x02, 0x00, 0x00, 0x00, 0x00, 0x0a, 0x86, 0xdd, 0x60,
        0x00, 0x00, 0x00, 0x00, 0x20, 0x3a, 0xff, 0x20, 0x01, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x99, 0xff, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x88, 0x00, 0x13, 0x5e, 0x20, 0x00,
        0x00, 0x00, 0x20, 0x01, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x99, 0x02, 0x01, 0x02, 0x00, 0x00, 0x00, 0x00, 0x0a,
    ];

    #[test]
    fn our_unsolicited_na_is_the_one_keepalived_sends() {
        let mac = [0x02, 0, 0, 0, 0, 0x0a];
        assert_eq!(unsolicited_na(mac, mac, vip()), KEEPALIVED_2_2_7_NA);
        let frame = parse_frame(&KEEPALIVED_2_2_7_NA).unwrap();
        assert_eq!(frame.na, NaRepr::unsolicited(mac, vip()));
    }

    #[test]
    fn an_unsolicited_na_parses_back() {
        let frame = parse_frame(&unsolicited_na(MAC, VMAC, vip())).unwrap();
        assert_eq!(frame.na, NaRepr::unsolicited(VMAC, vip()));
        assert!(frame.na.override_flag && !frame.na.router && !frame.na.solicited);
        assert_eq!(frame.ethernet.source, MAC);
        assert_eq!(frame.ipv6.hop_limit, 255);
        assert_eq!(frame.ipv6.destination, ALL_NODES);
        // Ethernet padding is ignored.
        let mut padded = unsolicited_na(MAC, MAC, vip()).to_vec();
        padded.resize(100, 0);
        assert_eq!(parse_frame(&padded).unwrap().na.target_mac, Some(MAC));
    }

    #[test]
    fn a_na_without_option_round_trips() {
        let na = NaRepr {
            router: true,
            solicited: true,
            override_flag: false,
            target: vip(),
            target_mac: None,
        };
        let mut buffer = vec![0; na.buffer_len()];
        assert_eq!(buffer.len(), HEADER_LEN);
        na.emit(
            &mut Packet::new_unchecked(&mut buffer[..]),
            vip(),
            ALL_NODES,
        );
        assert_eq!(buffer[4], 0xc0);
        let packet = Packet::new_unchecked(&buffer[..]);
        assert!(packet.check_len());
        assert_eq!(NaRepr::parse(&packet, vip(), ALL_NODES), Ok(na));
    }

    #[test]
    fn bad_frames_are_refused_with_their_reason() {
        let good = unsolicited_na(MAC, MAC, vip());
        let with = |at: usize, value: u8| {
            let mut bytes = good.to_vec();
            bytes[at] = value;
            parse_frame(&bytes)
        };
        assert_eq!(with(12, 0x08), Err(NaError::NotIpv6(0x08dd)));
        assert_eq!(with(14 + 6, 17), Err(NaError::NotIcmpv6(17)));
        assert_eq!(with(14 + 7, 254), Err(NaError::HopLimit(254)));
        assert_eq!(
            with(54, 135),
            Err(NaError::NotNeighborAdvertisement(135, 0))
        );
        assert_eq!(with(54 + 8, 0xfe), Err(NaError::BadChecksum));
        assert!(matches!(
            parse_frame(&good[..60]),
            Err(NaError::Truncated { .. })
        ));
        // An option of length zero: dropped whatever the checksum says.
        let mut zero_option = good;
        zero_option[54 + 25] = 0;
        let message = Packet::new_unchecked(&zero_option[54..]);
        assert_eq!(message.options(), Err(NaError::BadOption));
    }

    #[test]
    fn multicast_macs_follow_rfc_2464() {
        assert_eq!(multicast_mac(ALL_NODES), [0x33, 0x33, 0, 0, 0, 1]);
        let group: Ipv6Addr = "ff02::1:ff00:99".parse().unwrap();
        assert_eq!(multicast_mac(group), [0x33, 0x33, 0xff, 0, 0, 0x99]);
    }
}
