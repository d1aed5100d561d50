//! Types shared by Tandem's XDP program (lb-ebpf) and its userspace (lb-userspace).
//!
//! Everything the kernel and userspace must agree on lives here and nowhere else: map names,
//! map sizes, the `#[repr(C)]` layout of map keys and values, and the meaning of each counter
//! index. The crate is `#![no_std]` so the eBPF program can use it; the `user` feature adds
//! `aya::Pod` impls so userspace can read and write the same types through aya.
//!
//! Byte order: addresses and ports in keys are stored exactly as they appear on the wire
//! (network byte order), so the XDP program can copy them from the packet without swapping.
//! The constructors below take host-order values and do the conversion once, in userspace.
#![no_std]

/// Name of the hash map of services, keyed by [`ServiceKey`], valued by [`ServiceValue`].
pub const SERVICES_MAP: &str = "SERVICES";
/// Name of the per-CPU array of [`Counter`]s.
pub const COUNTERS_MAP: &str = "COUNTERS";
/// Name under which the XDP program is pinned in the pin directory.
pub const PROGRAM_PIN: &str = "tandem_xdp";
/// Name of the XDP program function in the object file.
pub const PROGRAM_NAME: &str = "tandem_xdp";
/// Default bpffs directory holding the pinned program, links and maps.
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/tandem";

/// Most services a node can hold in its SERVICES map.
pub const MAX_SERVICES: u32 = 1024;

/// IP protocol numbers used in [`ServiceKey::proto`].
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;

/// A service is identified by the virtual address, port and protocol a client sends to.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ServiceKey {
    /// IPv4 address in network byte order (as read from the packet).
    pub vip: u32,
    /// Port in network byte order.
    pub port: u16,
    /// [`IPPROTO_TCP`] or [`IPPROTO_UDP`].
    pub proto: u8,
    /// Keeps the layout free of implicit padding, so keys hash identically on both sides.
    pub _pad: u8,
}

impl ServiceKey {
    /// Builds a key from host-order values: `ServiceKey::new([198, 18, 0, 99], 80, IPPROTO_TCP)`.
    pub const fn new(vip: [u8; 4], port: u16, proto: u8) -> Self {
        ServiceKey {
            vip: u32::from_ne_bytes(vip),
            port: port.to_be(),
            proto,
            _pad: 0,
        }
    }

    /// The address as its four octets, in the order they are written (198.18.0.99 -> [198, 18, 0, 99]).
    pub const fn vip_octets(&self) -> [u8; 4] {
        self.vip.to_ne_bytes()
    }

    /// The port in host order.
    pub const fn port_host(&self) -> u16 {
        u16::from_be(self.port)
    }
}

/// How the data plane treats packets of a service.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServiceMode {
    /// L7 (HTTP): the packet goes up the kernel stack to the proxy.
    Proxy = 0,
    /// L4: forwarded to a backend by the XDP program.
    Forward = 1,
}

impl ServiceMode {
    pub const fn from_u32(v: u32) -> Option<Self> {
        match v {
            0 => Some(ServiceMode::Proxy),
            1 => Some(ServiceMode::Forward),
            _ => None,
        }
    }
}

/// What the data plane knows of a service.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServiceValue {
    /// Index of the service, used to find its per-service tables and counters.
    pub id: u32,
    /// A [`ServiceMode`] as u32 (enums are not safe to read from a map that userspace writes).
    pub mode: u32,
}

/// Per-CPU counters, one slot each in the COUNTERS array. Every packet the XDP program sees
/// is counted in exactly one of the outcome counters (`Ipv4Tcp` .. `Malformed`); the
/// remaining counters count events on top of that.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    /// An IPv4 TCP packet parsed to the end of its TCP header.
    Ipv4Tcp = 0,
    /// An IPv4 UDP packet parsed to the end of its UDP header.
    Ipv4Udp = 1,
    /// An IPv4 packet of another protocol (ICMP, VRRP, ...), or a fragment after the first.
    Ipv4Other = 2,
    /// An IPv6 packet (not parsed further yet).
    Ipv6 = 3,
    /// A frame that is not IP: ARP, LLDP, ...
    NonIp = 4,
    /// A frame too short for the headers it announces, or with impossible header fields.
    Malformed = 5,
    /// A TCP or UDP packet whose destination matched an entry of SERVICES.
    ServiceHit = 6,
}

/// Number of slots in the COUNTERS array.
pub const COUNTER_COUNT: u32 = 7;

impl Counter {
    /// Every counter, in index order.
    pub const ALL: [Counter; COUNTER_COUNT as usize] = [
        Counter::Ipv4Tcp,
        Counter::Ipv4Udp,
        Counter::Ipv4Other,
        Counter::Ipv6,
        Counter::NonIp,
        Counter::Malformed,
        Counter::ServiceHit,
    ];

    /// The name used by `tandem maps` and in its JSON output.
    pub const fn name(self) -> &'static str {
        match self {
            Counter::Ipv4Tcp => "ipv4_tcp",
            Counter::Ipv4Udp => "ipv4_udp",
            Counter::Ipv4Other => "ipv4_other",
            Counter::Ipv6 => "ipv6",
            Counter::NonIp => "non_ip",
            Counter::Malformed => "malformed",
            Counter::ServiceHit => "service_hit",
        }
    }

    /// True for the counters that partition all packets (each packet lands in exactly one).
    pub const fn is_outcome(self) -> bool {
        !matches!(self, Counter::ServiceHit)
    }
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: both types are #[repr(C)], Copy, contain only integers and have no padding
    // (checked by the layout tests below), so every bit pattern is a valid value.
    unsafe impl aya::Pod for super::ServiceKey {}
    unsafe impl aya::Pod for super::ServiceValue {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::{align_of, size_of};

    #[test]
    fn map_types_have_the_layout_the_kernel_program_expects() {
        assert_eq!(size_of::<ServiceKey>(), 8);
        assert_eq!(align_of::<ServiceKey>(), 4);
        assert_eq!(size_of::<ServiceValue>(), 8);
    }

    #[test]
    fn service_key_stores_address_and_port_in_wire_order() {
        let key = ServiceKey::new([198, 18, 0, 99], 80, IPPROTO_TCP);
        // SAFETY: ServiceKey is repr(C) without padding; viewing it as bytes is sound.
        let bytes: [u8; 8] = unsafe { core::mem::transmute(key) };
        assert_eq!(&bytes[0..4], &[198, 18, 0, 99]);
        assert_eq!(&bytes[4..6], &[0, 80]);
        assert_eq!(bytes[6], 6);
        assert_eq!(key.vip_octets(), [198, 18, 0, 99]);
        assert_eq!(key.port_host(), 80);
    }

    #[test]
    fn counters_are_indexed_in_order_and_named_uniquely() {
        for (i, c) in Counter::ALL.iter().enumerate() {
            assert_eq!(*c as usize, i);
            for other in &Counter::ALL[i + 1..] {
                assert_ne!(c.name(), other.name());
            }
        }
    }

    #[test]
    fn service_mode_round_trips_through_u32_and_rejects_unknown_values() {
        assert_eq!(
            ServiceMode::from_u32(ServiceMode::Proxy as u32),
            Some(ServiceMode::Proxy)
        );
        assert_eq!(
            ServiceMode::from_u32(ServiceMode::Forward as u32),
            Some(ServiceMode::Forward)
        );
        assert_eq!(ServiceMode::from_u32(7), None);
    }
}
