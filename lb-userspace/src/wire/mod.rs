//! The protocols Tandem reads and writes byte by byte, after smoltcp's `wire` module: for each
//! header a zero-copy view over a buffer (`Frame`, `Packet`: checked once, then no accessor
//! can panic) and a `Repr`, what the header means, with `parse` and `emit`.
//!
//! - [`ethernet`]: the Ethernet II header, EtherTypes and MAC addresses;
//! - [`ipv4`]: the IPv4 header (RFC 791) and its checksum;
//! - [`ipv6`]: the fixed IPv6 header (RFC 8200);
//! - [`arp`]: ARP for IPv4 over Ethernet (RFC 826), the gratuitous ARP of a new master;
//! - [`ndisc`]: the ICMPv6 neighbour advertisement (RFC 4861), the IPv6 twin of that
//!   gratuitous ARP;
//! - [`checksum`]: the internet checksum (RFC 1071) and the IPv4 and IPv6 pseudo-headers they,
//!   ICMP, ICMPv6, TCP, UDP and VRRP share.
//!
//! VRRP's own message lives with VRRP (`vrrp::wire`) and parses the payload of an
//! [`ipv4::Packet`], or what an IPv6 raw socket returns. The tests crate builds its fixtures with these codecs too.

pub mod arp;
pub mod checksum;
pub mod ethernet;
pub mod ipv4;
pub mod ipv6;
pub mod ndisc;

use std::net::Ipv4Addr;

use ethernet::MacAddr;

/// The big-endian u16 at `at`; the view has checked the length.
fn be16_at(data: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([data[at], data[at + 1]])
}

/// The IPv4 address at `at`; the view has checked the length.
fn ipv4_at(data: &[u8], at: usize) -> Ipv4Addr {
    Ipv4Addr::new(data[at], data[at + 1], data[at + 2], data[at + 3])
}

/// The MAC address at `at`; the view has checked the length.
fn mac_at(data: &[u8], at: usize) -> MacAddr {
    let mut mac = [0; 6];
    mac.copy_from_slice(&data[at..at + 6]);
    mac
}

/// Why a buffer cannot be read as the header it should hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// Shorter than the header (or than the length the header gives).
    #[error("{what} of {len} bytes is shorter than its header needs ({needed} bytes)")]
    Truncated {
        what: &'static str,
        len: usize,
        needed: usize,
    },
    /// A field holds a value the protocol forbids.
    #[error("malformed {what}: {why}")]
    Malformed {
        what: &'static str,
        why: &'static str,
    },
}
