//! The Ethernet II header: destination and source MAC, EtherType (IEEE 802.3 clause 3.2).
//!
//! [`Frame`] is the zero-copy view, [`EthernetRepr`] the header's meaning. 802.1Q tags are
//! not walked here (the XDP program walks them in the kernel); `ethertype::VLAN` names them.

use std::fmt;

use super::{be16_at, mac_at, Error};

/// An Ethernet MAC address.
pub type MacAddr = [u8; 6];

/// The Ethernet broadcast address.
pub const BROADCAST: MacAddr = [0xff; 6];

/// The Ethernet II header.
pub const HEADER_LEN: usize = 14;

/// EtherTypes, declared once for the XDP program and userspace.
pub use lb_common::ethertype;

/// Offsets in the header.
mod field {
    pub type Field = core::ops::Range<usize>;

    pub const DESTINATION: Field = 0..6;
    pub const SOURCE: Field = 6..12;
    pub const ETHERTYPE: Field = 12..14;
    pub const PAYLOAD: usize = 14;
}

/// A MAC address as `aa:bb:cc:dd:ee:ff`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mac(pub MacAddr);

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

/// A zero-copy view over an Ethernet II frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Frame<T> {
    /// Wraps a buffer without checking it; accessors may panic until [`Frame::check_len`]
    /// succeeds. For emitting into a buffer sized by the caller.
    pub const fn new_unchecked(buffer: T) -> Frame<T> {
        Frame { buffer }
    }

    /// Wraps a buffer that holds at least the header; then no accessor can panic.
    pub fn new_checked(buffer: T) -> Result<Frame<T>, Error> {
        let frame = Frame::new_unchecked(buffer);
        frame.check_len()?;
        Ok(frame)
    }

    pub fn check_len(&self) -> Result<(), Error> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(Error::Truncated {
                what: "Ethernet frame",
                len,
                needed: HEADER_LEN,
            });
        }
        Ok(())
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    pub fn destination(&self) -> MacAddr {
        mac_at(self.buffer.as_ref(), field::DESTINATION.start)
    }

    pub fn source(&self) -> MacAddr {
        mac_at(self.buffer.as_ref(), field::SOURCE.start)
    }

    pub fn ethertype(&self) -> u16 {
        be16_at(self.buffer.as_ref(), field::ETHERTYPE.start)
    }

    /// What follows the header (padding included: Ethernet pads frames to 60 bytes).
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[field::PAYLOAD..]
    }
}

/// Setters, for emitting. They panic on a buffer shorter than the header.
impl<T: AsRef<[u8]> + AsMut<[u8]>> Frame<T> {
    pub fn set_destination(&mut self, mac: MacAddr) {
        self.buffer.as_mut()[field::DESTINATION].copy_from_slice(&mac);
    }

    pub fn set_source(&mut self, mac: MacAddr) {
        self.buffer.as_mut()[field::SOURCE].copy_from_slice(&mac);
    }

    pub fn set_ethertype(&mut self, ethertype: u16) {
        self.buffer.as_mut()[field::ETHERTYPE].copy_from_slice(&ethertype.to_be_bytes());
    }

    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[field::PAYLOAD..]
    }
}

/// What an Ethernet II header says.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct EthernetRepr {
    pub destination: MacAddr,
    pub source: MacAddr,
    pub ethertype: u16,
}

impl EthernetRepr {
    pub fn parse<T: AsRef<[u8]>>(frame: &Frame<T>) -> Result<EthernetRepr, Error> {
        frame.check_len()?;
        Ok(EthernetRepr {
            destination: frame.destination(),
            source: frame.source(),
            ethertype: frame.ethertype(),
        })
    }

    /// Writes the header. Panics if the buffer is shorter than [`HEADER_LEN`].
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, frame: &mut Frame<T>) {
        frame.set_destination(self.destination);
        frame.set_source(self.source);
        frame.set_ethertype(self.ethertype);
    }

    /// The whole frame: this header, then `payload`.
    pub fn frame_with(&self, payload: &[u8]) -> Vec<u8> {
        let mut buffer = vec![0; HEADER_LEN + payload.len()];
        let mut frame = Frame::new_unchecked(&mut buffer[..]);
        self.emit(&mut frame);
        frame.payload_mut().copy_from_slice(payload);
        buffer
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FRAME: [u8; 16] = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, // destination
        0x02, 0x00, 0x5e, 0x00, 0x01, 0x33, // source
        0x08, 0x06, // ARP
        0xaa, 0xbb, // payload
    ];

    #[test]
    fn a_frame_reads_as_its_header_and_payload() {
        let frame = Frame::new_checked(&FRAME[..]).unwrap();
        let repr = EthernetRepr::parse(&frame).unwrap();
        assert_eq!(repr.destination, BROADCAST);
        assert_eq!(repr.source, [0x02, 0x00, 0x5e, 0x00, 0x01, 0x33]);
        assert_eq!(repr.ethertype, ethertype::ARP);
        assert_eq!(frame.payload(), &[0xaa, 0xbb]);
    }

    #[test]
    fn emitting_what_was_parsed_gives_the_same_bytes() {
        let repr = EthernetRepr::parse(&Frame::new_checked(&FRAME[..]).unwrap()).unwrap();
        assert_eq!(repr.frame_with(&[0xaa, 0xbb]), FRAME);
    }

    #[test]
    fn a_buffer_shorter_than_the_header_is_refused_with_its_length() {
        let error = Frame::new_checked(&FRAME[..13]).unwrap_err();
        assert_eq!(
            error,
            Error::Truncated {
                what: "Ethernet frame",
                len: 13,
                needed: HEADER_LEN
            }
        );
        assert_eq!(
            error.to_string(),
            "Ethernet frame of 13 bytes is shorter than its header needs (14 bytes)"
        );
    }

    #[test]
    fn a_mac_prints_as_colon_separated_hex() {
        assert_eq!(
            Mac([0x02, 0x00, 0x5e, 0x0a, 0xff, 0x01]).to_string(),
            "02:00:5e:0a:ff:01"
        );
    }
}
