//! The fixed IPv6 header (RFC 8200 §3): what the neighbour advertisement of a new master is
//! wrapped in when it is sent from a packet socket, and what packet fixtures build.
//!
//! Not here: extension headers (nothing Tandem writes carries one; a reader that meets one
//! sees it as the next header and its payload), and the pseudo-header checksum
//! ([`super::checksum::add_ipv6_pseudo_header`]).

use std::net::Ipv6Addr;

use super::{be16_at, Error};

/// The fixed header; IPv6 has no options in it.
pub const HEADER_LEN: usize = 40;

/// Next Header values Tandem reads or writes.
pub mod next_header {
    pub const ICMPV6: u8 = 58;
    pub const VRRP: u8 = 112;
}

/// Offsets in the fixed header.
mod field {
    pub type Field = core::ops::Range<usize>;

    /// Version (4 bits), traffic class (8), flow label (20).
    pub const VER_TC_FLOW: Field = 0..4;
    pub const PAYLOAD_LEN: Field = 4..6;
    pub const NEXT_HEADER: usize = 6;
    pub const HOP_LIMIT: usize = 7;
    pub const SOURCE: Field = 8..24;
    pub const DESTINATION: Field = 24..40;
}

fn ipv6_at(data: &[u8], at: usize) -> Ipv6Addr {
    let mut octets = [0; 16];
    octets.copy_from_slice(&data[at..at + 16]);
    Ipv6Addr::from(octets)
}

/// A zero-copy view over an IPv6 packet.
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

    /// Wraps a buffer that [`Packet::check_len`] accepts; then no accessor can panic.
    pub fn new_checked(buffer: T) -> Result<Packet<T>, Error> {
        let packet = Packet::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Checks version 6 and that the buffer holds the header and the payload length it
    /// gives (longer is fine: Ethernet padding).
    pub fn check_len(&self) -> Result<(), Error> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(Error::Truncated {
                what: "IPv6 packet",
                len,
                needed: HEADER_LEN,
            });
        }
        if self.version() != 6 {
            return Err(Error::Malformed {
                what: "IPv6 header",
                why: "version is not 6",
            });
        }
        let needed = HEADER_LEN + usize::from(self.payload_len());
        if len < needed {
            return Err(Error::Truncated {
                what: "IPv6 packet",
                len,
                needed,
            });
        }
        Ok(())
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_TC_FLOW.start] >> 4
    }

    pub fn traffic_class(&self) -> u8 {
        let data = self.buffer.as_ref();
        (data[0] << 4) | (data[1] >> 4)
    }

    pub fn payload_len(&self) -> u16 {
        be16_at(self.buffer.as_ref(), field::PAYLOAD_LEN.start)
    }

    pub fn next_header(&self) -> u8 {
        self.buffer.as_ref()[field::NEXT_HEADER]
    }

    pub fn hop_limit(&self) -> u8 {
        self.buffer.as_ref()[field::HOP_LIMIT]
    }

    pub fn source(&self) -> Ipv6Addr {
        ipv6_at(self.buffer.as_ref(), field::SOURCE.start)
    }

    pub fn destination(&self) -> Ipv6Addr {
        ipv6_at(self.buffer.as_ref(), field::DESTINATION.start)
    }

    /// The payload, as long as the header says (padding after it left out).
    pub fn payload(&self) -> &[u8] {
        let end = HEADER_LEN + usize::from(self.payload_len());
        &self.buffer.as_ref()[HEADER_LEN..end]
    }
}

/// Setters, for emitting. They panic on a buffer shorter than the header.
impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Version 6, the traffic class, flow label zero.
    pub fn set_version_and_traffic_class(&mut self, traffic_class: u8) {
        let word = (6u32 << 28) | (u32::from(traffic_class) << 20);
        self.buffer.as_mut()[field::VER_TC_FLOW].copy_from_slice(&word.to_be_bytes());
    }

    pub fn set_payload_len(&mut self, len: u16) {
        self.buffer.as_mut()[field::PAYLOAD_LEN].copy_from_slice(&len.to_be_bytes());
    }

    pub fn set_next_header(&mut self, next_header: u8) {
        self.buffer.as_mut()[field::NEXT_HEADER] = next_header;
    }

    pub fn set_hop_limit(&mut self, hop_limit: u8) {
        self.buffer.as_mut()[field::HOP_LIMIT] = hop_limit;
    }

    pub fn set_source(&mut self, address: Ipv6Addr) {
        self.buffer.as_mut()[field::SOURCE].copy_from_slice(&address.octets());
    }

    pub fn set_destination(&mut self, address: Ipv6Addr) {
        self.buffer.as_mut()[field::DESTINATION].copy_from_slice(&address.octets());
    }

    /// The bytes after the fixed header, to the end of the buffer.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[HEADER_LEN..]
    }
}

/// What a fixed IPv6 header says (the flow label is always zero here).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Ipv6Repr {
    pub source: Ipv6Addr,
    pub destination: Ipv6Addr,
    pub next_header: u8,
    pub hop_limit: u8,
    pub traffic_class: u8,
    pub payload_len: usize,
}

impl Ipv6Repr {
    /// Reads the header of a packet [`Packet::check_len`] accepts.
    pub fn parse<T: AsRef<[u8]>>(packet: &Packet<T>) -> Result<Ipv6Repr, Error> {
        packet.check_len()?;
        Ok(Ipv6Repr {
            source: packet.source(),
            destination: packet.destination(),
            next_header: packet.next_header(),
            hop_limit: packet.hop_limit(),
            traffic_class: packet.traffic_class(),
            payload_len: usize::from(packet.payload_len()),
        })
    }

    /// Writes the header. Panics if the buffer is shorter than [`HEADER_LEN`].
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Packet<T>) {
        packet.set_version_and_traffic_class(self.traffic_class);
        // Nothing Tandem builds comes near 64 KiB (no jumbograms).
        packet.set_payload_len(u16::try_from(self.payload_len).unwrap_or(u16::MAX));
        packet.set_next_header(self.next_header);
        packet.set_hop_limit(self.hop_limit);
        packet.set_source(self.source);
        packet.set_destination(self.destination);
    }

    /// The whole packet: this header (`payload_len` taken from `payload`), then `payload`.
    pub fn packet_with(&self, payload: &[u8]) -> Vec<u8> {
        let repr = Ipv6Repr {
            payload_len: payload.len(),
            ..*self
        };
        let mut buffer = vec![0; HEADER_LEN + payload.len()];
        let mut packet = Packet::new_unchecked(&mut buffer[..]);
        repr.emit(&mut packet);
        packet.payload_mut().copy_from_slice(payload);
        buffer
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repr() -> Ipv6Repr {
        Ipv6Repr {
            source: "2001:2::100".parse().unwrap(),
            destination: "ff02::12".parse().unwrap(),
            next_header: next_header::VRRP,
            hop_limit: 255,
            traffic_class: 0xc0,
            payload_len: 3,
        }
    }

    #[test]
    fn an_emitted_packet_parses_back_to_the_same_header_and_payload() {
        let bytes = repr().packet_with(b"abc");
        assert_eq!(bytes.len(), 43);
        // Version 6, traffic class 0xc0, flow 0: 0x6c 0x00 0x00 0x00.
        assert_eq!(bytes[..4], [0x6c, 0, 0, 0]);
        let packet = Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!(Ipv6Repr::parse(&packet).unwrap(), repr());
        assert_eq!(packet.payload(), b"abc");
    }

    #[test]
    fn short_buffers_and_other_versions_are_refused() {
        let bytes = repr().packet_with(b"abc");
        for len in [0, 39, 40, 42] {
            assert!(matches!(
                Packet::new_checked(&bytes[..len]),
                Err(Error::Truncated { .. })
            ));
        }
        let mut v4 = bytes.clone();
        v4[0] = 0x4c;
        assert!(matches!(
            Packet::new_checked(&v4[..]),
            Err(Error::Malformed { .. })
        ));
        // Ethernet padding after the payload is not part of it.
        let mut padded = bytes;
        padded.resize(64, 0);
        assert_eq!(Packet::new_checked(&padded[..]).unwrap().payload(), b"abc");
    }
}
