//! The IPv4 header (RFC 791 §3.1): [`Packet`], a zero-copy view over a datagram, and
//! [`Ipv4Repr`], what its header says.
//!
//! [`Packet::new_checked`] accepts a buffer only when the header's lengths agree with it
//! (version 4, a header length of at least 20 bytes, a total length between the header's and
//! the buffer's); bytes after the total length (Ethernet padding) are not part of the payload.
//! The header checksum is checked by [`Packet::verify_checksum`], not by the view.

use std::net::Ipv4Addr;

use super::{be16_at, checksum, ipv4_at, Error};

/// An IPv4 header without options.
pub const MIN_HEADER_LEN: usize = 20;

/// IP protocol numbers (IANA registry) Tandem meets; those the XDP program reads come from
/// lb-common, which it shares.
pub mod protocol {
    pub const ICMP: u8 = lb_common::IPPROTO_ICMP;
    pub const TCP: u8 = lb_common::IPPROTO_TCP;
    pub const UDP: u8 = lb_common::IPPROTO_UDP;
    pub const VRRP: u8 = 112;
}

/// The Don't Fragment flag in the flags-and-fragment-offset word.
pub const DONT_FRAGMENT: u16 = 0x4000;
/// The More Fragments flag.
pub const MORE_FRAGMENTS: u16 = 0x2000;
/// More Fragments and the fragment offset: non-zero in any fragment.
const FRAGMENT_MASK: u16 = 0x3fff;

/// Offsets in the header.
mod field {
    pub type Field = core::ops::Range<usize>;

    pub const VER_IHL: usize = 0;
    pub const TOS: usize = 1;
    pub const LENGTH: Field = 2..4;
    pub const IDENTIFICATION: Field = 4..6;
    pub const FLAGS_FRAGMENT: Field = 6..8;
    pub const TTL: usize = 8;
    pub const PROTOCOL: usize = 9;
    pub const CHECKSUM: Field = 10..12;
    pub const SOURCE: Field = 12..16;
    pub const DESTINATION: Field = 16..20;
}

/// A zero-copy view over an IPv4 datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps a buffer without checking it; accessors may panic until [`Packet::check_len`]
    /// succeeds. For emitting into a buffer sized by the caller.
    pub const fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }

    /// Wraps a buffer whose header is consistent with it; then no accessor can panic.
    pub fn new_checked(buffer: T) -> Result<Packet<T>, Error> {
        let packet = Packet::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Checks the version, the header length and the total length against the buffer.
    pub fn check_len(&self) -> Result<(), Error> {
        let data = self.buffer.as_ref();
        let truncated = |needed| Error::Truncated {
            what: "IPv4 datagram",
            len: data.len(),
            needed,
        };
        let malformed = |why| Error::Malformed {
            what: "IPv4 header",
            why,
        };
        if data.len() < MIN_HEADER_LEN {
            return Err(truncated(MIN_HEADER_LEN));
        }
        if data[field::VER_IHL] >> 4 != 4 {
            return Err(malformed("version is not 4"));
        }
        let header_len = self.header_len();
        if header_len < MIN_HEADER_LEN {
            return Err(malformed("header length under 20 bytes"));
        }
        if data.len() < header_len {
            return Err(truncated(header_len));
        }
        let total_len = usize::from(self.total_len());
        if total_len < header_len {
            return Err(malformed("total length shorter than the header"));
        }
        if data.len() < total_len {
            return Err(truncated(total_len));
        }
        Ok(())
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_IHL] >> 4
    }

    /// The header's length in bytes, options included.
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[field::VER_IHL] & 0x0f) * 4
    }

    /// The type of service byte (DSCP and ECN).
    pub fn tos(&self) -> u8 {
        self.buffer.as_ref()[field::TOS]
    }

    pub fn total_len(&self) -> u16 {
        be16_at(self.buffer.as_ref(), field::LENGTH.start)
    }

    pub fn identification(&self) -> u16 {
        be16_at(self.buffer.as_ref(), field::IDENTIFICATION.start)
    }

    /// The flags and the fragment offset as on the wire.
    pub fn flags_fragment(&self) -> u16 {
        be16_at(self.buffer.as_ref(), field::FLAGS_FRAGMENT.start)
    }

    /// More Fragments set or a fragment offset: not a whole datagram.
    pub fn is_fragment(&self) -> bool {
        self.flags_fragment() & FRAGMENT_MASK != 0
    }

    pub fn ttl(&self) -> u8 {
        self.buffer.as_ref()[field::TTL]
    }

    pub fn protocol(&self) -> u8 {
        self.buffer.as_ref()[field::PROTOCOL]
    }

    pub fn checksum(&self) -> u16 {
        be16_at(self.buffer.as_ref(), field::CHECKSUM.start)
    }

    pub fn source(&self) -> Ipv4Addr {
        ipv4_at(self.buffer.as_ref(), field::SOURCE.start)
    }

    pub fn destination(&self) -> Ipv4Addr {
        ipv4_at(self.buffer.as_ref(), field::DESTINATION.start)
    }

    /// The options, between the fixed header and the payload.
    pub fn options(&self) -> &[u8] {
        &self.buffer.as_ref()[MIN_HEADER_LEN..self.header_len()]
    }

    /// Whether the header checksum is right.
    pub fn verify_checksum(&self) -> bool {
        checksum::verifies(checksum::add(0, &self.buffer.as_ref()[..self.header_len()]))
    }

    /// The payload: from the end of the header to the total length.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..usize::from(self.total_len())]
    }
}

/// Setters, for emitting. They panic on a buffer shorter than the field they write.
impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Version 4 and the header length in bytes (a multiple of 4, at most 60).
    pub fn set_version_and_header_len(&mut self, header_len: usize) {
        debug_assert!(header_len.is_multiple_of(4) && (MIN_HEADER_LEN..=60).contains(&header_len));
        // At most 60 / 4 = 15: fits the nibble.
        self.buffer.as_mut()[field::VER_IHL] = 0x40 | ((header_len / 4) as u8 & 0x0f);
    }

    pub fn set_tos(&mut self, tos: u8) {
        self.buffer.as_mut()[field::TOS] = tos;
    }

    pub fn set_total_len(&mut self, len: u16) {
        self.buffer.as_mut()[field::LENGTH].copy_from_slice(&len.to_be_bytes());
    }

    pub fn set_identification(&mut self, id: u16) {
        self.buffer.as_mut()[field::IDENTIFICATION].copy_from_slice(&id.to_be_bytes());
    }

    pub fn set_flags_fragment(&mut self, word: u16) {
        self.buffer.as_mut()[field::FLAGS_FRAGMENT].copy_from_slice(&word.to_be_bytes());
    }

    pub fn set_ttl(&mut self, ttl: u8) {
        self.buffer.as_mut()[field::TTL] = ttl;
    }

    pub fn set_protocol(&mut self, protocol: u8) {
        self.buffer.as_mut()[field::PROTOCOL] = protocol;
    }

    pub fn set_checksum(&mut self, checksum: u16) {
        self.buffer.as_mut()[field::CHECKSUM].copy_from_slice(&checksum.to_be_bytes());
    }

    pub fn set_source(&mut self, address: Ipv4Addr) {
        self.buffer.as_mut()[field::SOURCE].copy_from_slice(&address.octets());
    }

    pub fn set_destination(&mut self, address: Ipv4Addr) {
        self.buffer.as_mut()[field::DESTINATION].copy_from_slice(&address.octets());
    }

    pub fn options_mut(&mut self) -> &mut [u8] {
        let end = self.header_len();
        &mut self.buffer.as_mut()[MIN_HEADER_LEN..end]
    }

    pub fn payload_mut(&mut self) -> &mut [u8] {
        let (start, end) = (self.header_len(), usize::from(self.total_len()));
        &mut self.buffer.as_mut()[start..end]
    }

    /// Computes the header checksum and writes it; every other header field must be in place.
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let header_len = self.header_len();
        let sum = checksum::add(0, &self.buffer.as_ref()[..header_len]);
        self.set_checksum(checksum::finish(sum));
    }
}

/// What an IPv4 header says (options aside).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Ipv4Repr {
    pub source: Ipv4Addr,
    pub destination: Ipv4Addr,
    pub protocol: u8,
    pub ttl: u8,
    pub tos: u8,
    pub identification: u16,
    /// Flags and fragment offset as on the wire ([`DONT_FRAGMENT`], [`MORE_FRAGMENTS`]).
    pub flags_fragment: u16,
    pub payload_len: usize,
}

impl Ipv4Repr {
    /// Reads the header of a checked packet; a wrong header checksum is refused.
    pub fn parse<T: AsRef<[u8]>>(packet: &Packet<T>) -> Result<Ipv4Repr, Error> {
        packet.check_len()?;
        if !packet.verify_checksum() {
            return Err(Error::Malformed {
                what: "IPv4 header",
                why: "wrong header checksum",
            });
        }
        Ok(Ipv4Repr {
            source: packet.source(),
            destination: packet.destination(),
            protocol: packet.protocol(),
            ttl: packet.ttl(),
            tos: packet.tos(),
            identification: packet.identification(),
            flags_fragment: packet.flags_fragment(),
            payload_len: packet.payload().len(),
        })
    }

    /// Writes the header with `options` (already a multiple of 4 bytes, at most 40) and the
    /// checksum. Panics if the buffer is shorter than the header.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Packet<T>, options: &[u8]) {
        let header_len = MIN_HEADER_LEN + options.len();
        packet.set_version_and_header_len(header_len);
        packet.set_tos(self.tos);
        // A datagram over 65,535 bytes cannot be written; callers build small ones.
        packet.set_total_len(u16::try_from(header_len + self.payload_len).unwrap_or(u16::MAX));
        packet.set_identification(self.identification);
        packet.set_flags_fragment(self.flags_fragment);
        packet.set_ttl(self.ttl);
        packet.set_protocol(self.protocol);
        packet.set_source(self.source);
        packet.set_destination(self.destination);
        packet.options_mut().copy_from_slice(options);
        packet.fill_checksum();
    }

    /// The whole datagram: this header (`payload_len` taken from `payload`), `options` padded
    /// with zeros to a multiple of 4 bytes, then `payload`.
    pub fn datagram_with(&self, options: &[u8], payload: &[u8]) -> Vec<u8> {
        let mut padded = options.to_vec();
        padded.resize(options.len().next_multiple_of(4), 0);
        let repr = Ipv4Repr {
            payload_len: payload.len(),
            ..*self
        };
        let mut buffer = vec![0; MIN_HEADER_LEN + padded.len() + payload.len()];
        let mut packet = Packet::new_unchecked(&mut buffer[..]);
        repr.emit(&mut packet, &padded);
        packet.payload_mut().copy_from_slice(payload);
        buffer
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repr() -> Ipv4Repr {
        Ipv4Repr {
            source: Ipv4Addr::new(198, 18, 0, 10),
            destination: Ipv4Addr::new(198, 18, 0, 99),
            protocol: protocol::UDP,
            ttl: 64,
            tos: 0,
            identification: 7,
            flags_fragment: DONT_FRAGMENT,
            payload_len: 3,
        }
    }

    #[test]
    fn an_emitted_datagram_parses_back_to_the_same_header_and_payload() {
        let datagram = repr().datagram_with(&[], b"abc");
        let packet = Packet::new_checked(&datagram[..]).unwrap();
        assert_eq!(Ipv4Repr::parse(&packet).unwrap(), repr());
        assert_eq!(packet.payload(), b"abc");
        assert!(!packet.is_fragment());
    }

    #[test]
    fn options_are_padded_and_skipped_before_the_payload() {
        let datagram = repr().datagram_with(&[0x01, 0x01, 0x01], b"abc");
        let packet = Packet::new_checked(&datagram[..]).unwrap();
        assert_eq!(packet.header_len(), 24);
        assert_eq!(packet.options(), &[1, 1, 1, 0]);
        assert_eq!(packet.payload(), b"abc");
        assert!(packet.verify_checksum());
    }

    #[test]
    fn ethernet_padding_after_the_total_length_is_not_payload() {
        let mut datagram = repr().datagram_with(&[], b"abc");
        datagram.extend_from_slice(&[0; 20]);
        let packet = Packet::new_checked(&datagram[..]).unwrap();
        assert_eq!(packet.payload(), b"abc");
    }

    #[test]
    fn inconsistent_lengths_are_refused_as_truncated_or_malformed() {
        let datagram = repr().datagram_with(&[], b"abc");
        assert!(matches!(
            Packet::new_checked(&datagram[..19]),
            Err(Error::Truncated { needed: 20, .. })
        ));
        assert!(matches!(
            Packet::new_checked(&datagram[..22]),
            Err(Error::Truncated { needed: 23, .. })
        ));
        let mut v6 = datagram.clone();
        v6[0] = 0x65;
        assert!(matches!(
            Packet::new_checked(&v6[..]),
            Err(Error::Malformed {
                why: "version is not 4",
                ..
            })
        ));
        let mut short_ihl = datagram.clone();
        short_ihl[0] = 0x44;
        assert!(matches!(
            Packet::new_checked(&short_ihl[..]),
            Err(Error::Malformed { .. })
        ));
        let mut short_total = datagram;
        short_total[2..4].copy_from_slice(&10u16.to_be_bytes());
        assert!(matches!(
            Packet::new_checked(&short_total[..]),
            Err(Error::Malformed { .. })
        ));
    }

    #[test]
    fn a_wrong_header_checksum_is_refused() {
        let mut datagram = repr().datagram_with(&[], b"abc");
        datagram[8] = 63;
        let packet = Packet::new_checked(&datagram[..]).unwrap();
        assert!(!packet.verify_checksum());
        assert!(matches!(
            Ipv4Repr::parse(&packet),
            Err(Error::Malformed {
                why: "wrong header checksum",
                ..
            })
        ));
    }

    #[test]
    fn fragments_are_told_from_whole_datagrams() {
        let mut repr = repr();
        repr.flags_fragment = MORE_FRAGMENTS;
        let datagram = repr.datagram_with(&[], b"abc");
        assert!(Packet::new_checked(&datagram[..]).unwrap().is_fragment());
        repr.flags_fragment = 0x0010;
        let datagram = repr.datagram_with(&[], b"abc");
        assert!(Packet::new_checked(&datagram[..]).unwrap().is_fragment());
    }
}
