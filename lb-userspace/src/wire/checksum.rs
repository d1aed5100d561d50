//! The internet checksum (RFC 1071): the ones' complement of the ones' complement sum of the
//! data as big-endian 16-bit words. IPv4 sums its header; ICMP its message; TCP, UDP and VRRP
//! v3 their message and the IPv4 pseudo-header; ICMPv6 and VRRP v3 over IPv6 their message and
//! the IPv6 pseudo-header.
//!
//! Sums are kept in 64 bits and folded once at the end: no slice that fits in memory can
//! overflow them, and parts can be summed separately and added.

use std::net::{Ipv4Addr, Ipv6Addr};

/// Adds `data` as big-endian 16-bit words to `sum`, an odd last byte padded with zero.
pub fn add(mut sum: u64, data: &[u8]) -> u64 {
    let mut words = data.chunks_exact(2);
    for word in &mut words {
        sum += u64::from(u16::from_be_bytes([word[0], word[1]]));
    }
    if let [last] = words.remainder() {
        sum += u64::from(*last) << 8;
    }
    sum
}

/// Adds the IPv4 pseudo-header {source, destination, zero, protocol, length} (RFC 768, RFC 793,
/// RFC 5798 §5.2.8). A length over 65,535 is summed as 65,535: such a message never verifies.
pub fn add_ipv4_pseudo_header(
    sum: u64,
    source: Ipv4Addr,
    destination: Ipv4Addr,
    protocol: u8,
    length: usize,
) -> u64 {
    let sum = add(sum, &source.octets());
    let sum = add(sum, &destination.octets());
    let length = u16::try_from(length).unwrap_or(u16::MAX);
    sum + u64::from(protocol) + u64::from(length)
}

/// Adds the IPv6 pseudo-header {source, destination, upper-layer length (32 bits), zero,
/// next header} (RFC 8200 §8.1, RFC 5798 §5.2.8, RFC 4443 §2.3).
pub fn add_ipv6_pseudo_header(
    sum: u64,
    source: Ipv6Addr,
    destination: Ipv6Addr,
    next_header: u8,
    length: usize,
) -> u64 {
    let sum = add(sum, &source.octets());
    let sum = add(sum, &destination.octets());
    let length = u32::try_from(length).unwrap_or(u32::MAX);
    add(sum, &length.to_be_bytes()) + u64::from(next_header)
}

/// Folds the carries back in: the 16-bit ones' complement sum.
pub fn fold(mut sum: u64) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    // The loop leaves at most 16 bits.
    sum as u16
}

/// The checksum to write for data summed to `sum` (its checksum field zero).
pub fn finish(sum: u64) -> u16 {
    !fold(sum)
}

/// Whether data summed to `sum`, its checksum field included, is intact.
pub fn verifies(sum: u64) -> bool {
    fold(sum) == 0xffff
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rfc_1071_example_sums_as_the_rfc_says() {
        // RFC 1071 §3: 00 01 f2 03 f4 f5 f6 f7 sums to ddf2.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(fold(add(0, &data)), 0xddf2);
        assert_eq!(finish(add(0, &data)), !0xddf2);
    }

    #[test]
    fn data_with_its_checksum_in_place_verifies_and_a_flipped_bit_does_not() {
        let mut data = vec![
            0x45, 0x00, 0x00, 0x1c, 0x12, 0x34, 0x00, 0x00, 0x40, 0x11, 0, 0,
        ];
        data.extend_from_slice(&[198, 18, 0, 1, 198, 18, 0, 2]);
        let checksum = finish(add(0, &data));
        data[10..12].copy_from_slice(&checksum.to_be_bytes());
        assert!(verifies(add(0, &data)));
        data[3] ^= 0x01;
        assert!(!verifies(add(0, &data)));
    }

    #[test]
    fn an_odd_last_byte_is_padded_with_zero() {
        assert_eq!(add(0, &[0xab]), 0xab00);
        assert_eq!(add(0, &[0x01, 0x02, 0xab]), 0x0102 + 0xab00);
    }

    #[test]
    fn the_ipv6_pseudo_header_sums_every_field() {
        let source: Ipv6Addr = "fe80::1".parse().unwrap();
        let destination: Ipv6Addr = "ff02::12".parse().unwrap();
        // By hand: fe80 + 0001 + ff02 + 0012 + length 0x0001_0002 as two words + 112.
        let expected = 0xfe80 + 0x0001 + 0xff02 + 0x0012 + 0x0001 + 0x0002 + 112;
        assert_eq!(
            add_ipv6_pseudo_header(0, source, destination, 112, 0x1_0002),
            expected
        );
    }

    #[test]
    fn sums_of_parts_add_up_to_the_sum_of_the_whole() {
        let data: Vec<u8> = (0..=255).collect();
        assert_eq!(
            fold(add(add(0, &data[..100]), &data[100..])),
            fold(add(0, &data))
        );
    }
}
