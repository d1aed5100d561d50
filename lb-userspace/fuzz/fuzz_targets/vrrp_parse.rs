//! Arbitrary bytes into the VRRP codec, in both checksum modes: as they come, and again with
//! the IPv4 header and VRRP checksums repaired, so the fuzzer also reaches the checks that sit
//! behind the checksums; and the same bytes as the payload an IPv6 raw socket returns, as they
//! come and with the checksum repaired. Whatever parses must emit and parse back to the same
//! advert.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::net::{IpAddr, Ipv6Addr};

use tandem::vrrp::wire::{
    parse_ipv4, parse_ipv6, ChecksumMode, Family, Packet, Received, MULTICAST_GROUP_V6,
};

const LINK_LOCAL: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1);

const MODES: [ChecksumMode; 2] = [
    ChecksumMode::WithPseudoHeader,
    ChecksumMode::WithoutPseudoHeader,
];

fuzz_target!(|data: &[u8]| {
    // The bare VRRP view, as the codec's users may hold one.
    if let Ok(packet) = Packet::new_checked(data, Family::Ipv4) {
        let _ = (
            packet.version(),
            packet.msg_type(),
            packet.vrid(),
            packet.priority(),
        );
        let _ = (
            packet.interval_units(),
            packet.checksum(),
            packet.addresses().count(),
        );
    }
    for mode in MODES {
        if let Ok(received) = parse_ipv4(data, mode) {
            assert_round_trip(&received, mode);
        }
        let mut repaired = data.to_vec();
        repair_checksums(&mut repaired, mode);
        if let Ok(received) = parse_ipv4(&repaired, mode) {
            assert_round_trip(&received, mode);
        }
    }
    if let Ok(received) = parse_ipv6(data, LINK_LOCAL, MULTICAST_GROUP_V6, 255) {
        assert_round_trip_v6(&received);
    }
    if data.len() >= 8 {
        let mut repaired = data.to_vec();
        Packet::new_unchecked(&mut repaired[..], Family::Ipv6).fill_checksum(
            IpAddr::V6(LINK_LOCAL),
            IpAddr::V6(MULTICAST_GROUP_V6),
            ChecksumMode::default(),
        );
        if let Ok(received) = parse_ipv6(&repaired, LINK_LOCAL, MULTICAST_GROUP_V6, 255) {
            assert_round_trip_v6(&received);
        }
    }
});

fn assert_round_trip_v6(received: &Received) {
    let payload = received
        .advert
        .emit(LINK_LOCAL, MULTICAST_GROUP_V6, ChecksumMode::default());
    match parse_ipv6(&payload, LINK_LOCAL, MULTICAST_GROUP_V6, 255) {
        Ok(again) => assert_eq!(again.advert, received.advert),
        Err(reason) => panic!(
            "{} emitted over IPv6, then dropped: {reason}",
            received.advert
        ),
    }
}

fn assert_round_trip(received: &Received, mode: ChecksumMode) {
    let (IpAddr::V4(source), IpAddr::V4(destination)) = (received.source, received.destination)
    else {
        panic!("an IPv4 datagram parsed with IPv6 addresses: {received:?}");
    };
    let datagram = received.advert.emit_ipv4(source, destination, mode);
    match parse_ipv4(&datagram, mode) {
        Ok(again) => assert_eq!(again.advert, received.advert),
        Err(reason) => panic!("{} emitted, then dropped: {reason}", received.advert),
    }
}

/// Rewrites the IPv4 header checksum and the VRRP checksum wherever the lengths allow.
fn repair_checksums(datagram: &mut [u8], mode: ChecksumMode) {
    if datagram.len() < 20 {
        return;
    }
    let header_len = usize::from(datagram[0] & 0x0f) * 4;
    if header_len < 20 || datagram.len() < header_len {
        return;
    }
    let total = usize::from(u16::from_be_bytes([datagram[2], datagram[3]]));
    if (header_len..=datagram.len()).contains(&total) && total - header_len >= 8 {
        let source =
            std::net::Ipv4Addr::new(datagram[12], datagram[13], datagram[14], datagram[15]);
        let destination =
            std::net::Ipv4Addr::new(datagram[16], datagram[17], datagram[18], datagram[19]);
        Packet::new_unchecked(&mut datagram[header_len..total], Family::Ipv4).fill_checksum(
            source.into(),
            destination.into(),
            mode,
        );
    }
    datagram[10..12].fill(0);
    let sum = !ones_complement_sum(&datagram[..header_len]);
    datagram[10..12].copy_from_slice(&sum.to_be_bytes());
}

fn ones_complement_sum(data: &[u8]) -> u16 {
    let mut sum: u64 = data
        .chunks(2)
        .map(|w| u64::from(w[0]) << 8 | u64::from(w.get(1).copied().unwrap_or(0)))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}
