//! The VRRP advertisement on the wire: version 3 (RFC 5798, RFC 9568) over IPv4 and IPv6, and
//! version 2 (RFC 3768), which is IPv4 only.
//!
//! Two layers, after smoltcp's `wire` module. [`Packet`] is a zero-copy view over the VRRP
//! message; once [`Packet::new_checked`] has accepted a buffer none of its accessors can panic.
//! [`Advert`] is what the message means, and [`Advert::parse`] is the only way to get one from
//! bytes, so a malformed advert never reaches the state machine. [`parse_ipv4`] takes what a raw
//! `IPPROTO_VRRP` socket returns (IPv4 header included), [`parse_ipv6`] what an `AF_INET6` one
//! returns (the payload alone: source, destination and hop limit come beside it), and both name
//! one [`DropReason`] for every datagram they refuse, so an instance can count its drops by
//! reason instead of logging them.
//!
//! The layout of a message depends on the family it is carried over ([`Family`]): the message
//! does not say whether its addresses are 4 or 16 bytes long, the IP header does.
//!
//! Checksums: v2 sums the VRRP message alone. For v3 over IPv4, RFC 5798 §5.2.8 adds the
//! pseudo-header {source, destination, zero, 112, VRRP length}, and keepalived does so by default
//! (Debian 12's 2.2.7 always does; a test below holds its captured advert). RFC 9568, which
//! obsoletes 5798, says the IPv4 checksum covers the message alone, as Cisco, Arista and newer
//! FRR compute it, and as keepalived does since 2.2.8 with `v3_checksum_as_v2` (keepalived issue
//! #2324 tracks its default). A packet cannot tell which rule its sender used, so it is
//! configuration: [`ChecksumMode`], keepalived's default unless set otherwise. Over IPv6 every
//! rule agrees: the IPv6 pseudo-header {source, destination, length, next header 112} is always
//! in the checksum, whatever the mode.
//!
//! The IPv4 header is read by [`crate::wire::ipv4`]; the advert is its payload.
//!
//! VRRPv2 authentication: type 0 (none) and type 1, the simple text [`Password`] of RFC 2338
//! §5.3.6 that keepalived still offers as `auth_type PASS`, are read and written; type 2 (IP
//! AH) and unknown types are dropped here. Whether a password is the right one is for the
//! instance to say.
//!
//! Not here: deciding whether an advert is for this instance (VRID, version, password, the v2
//! interval rule: `vrrp::accept` does that, though its drop reasons are listed in
//! [`DropReason`] so every drop is counted in one place), and sockets.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use crate::wire::ipv4::{self, Ipv4Repr};
use crate::wire::{checksum, Error};

/// IP protocol number of VRRP (`IPPROTO_VRRP`).
pub const PROTOCOL: u8 = ipv4::protocol::VRRP;
/// Where adverts are sent: the all-VRRP-routers group (RFC 5798 §5.1.1.2).
pub const MULTICAST_GROUP: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 18);
/// The IPv6 all-VRRP-routers group (RFC 5798 §5.1.2.2), link-local scope.
pub const MULTICAST_GROUP_V6: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 0x12);
/// The only TTL (IPv4) or hop limit (IPv6) an advert may carry: anything else was routed or
/// forged off-link (§5.1.1.3, §5.1.2.3).
pub const TTL: u8 = 255;
/// The only VRRP packet type, ADVERTISEMENT (RFC 5798 §5.2.2).
pub const TYPE_ADVERTISEMENT: u8 = 1;
/// The fixed VRRP header, before the addresses.
pub const HEADER_LEN: usize = 8;
/// Authentication Data that follows the addresses in every v2 advert (RFC 3768 §5.3.10).
pub const V2_AUTH_DATA_LEN: usize = 8;
/// The type of service [`Advert::emit_ipv4`] writes: network control precedence, as keepalived.
pub const IPV4_TOS: u8 = 0xc0;
/// The most addresses one advert can list (Count IPvX Addr is 8 bits).
pub const MAX_ADDRESSES: usize = 255;

/// VRRPv2 Auth Type values (RFC 2338 §5.3.6; RFC 3768 keeps only 0 and reserves the others).
pub mod auth_type {
    /// No authentication: the Authentication Data is ignored.
    pub const NONE: u8 = 0;
    /// Simple text password in the Authentication Data (keepalived's `auth_type PASS`).
    pub const PASSWORD: u8 = 1;
    /// IP Authentication Header (keepalived's `auth_type AH`); not supported.
    pub const IP_AH: u8 = 2;
}

/// Offsets in the VRRP message (RFC 5798 §5.1, RFC 3768 §5.1).
mod field {
    pub type Field = core::ops::Range<usize>;

    /// Version in the high nibble, type in the low one.
    pub const VER_TYPE: usize = 0;
    pub const VRID: usize = 1;
    pub const PRIORITY: usize = 2;
    pub const COUNT: usize = 3;
    /// v2 only: Auth Type.
    pub const V2_AUTH_TYPE: usize = 4;
    /// v2 only: Adver Int, whole seconds.
    pub const V2_ADVER_INT: usize = 5;
    /// v3 only: 4 reserved bits, then Max Adver Int in centiseconds (12 bits).
    pub const V3_MAX_ADVER_INT: Field = 4..6;
    pub const CHECKSUM: Field = 6..8;
    pub const ADDRESSES: usize = 8;
}

/// The IP family an advert is carried over: it sets the length of the addresses it lists, and
/// whether version 2 exists (it does not over IPv6).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Family {
    Ipv4,
    Ipv6,
}

impl Family {
    /// The family of `address`.
    pub fn of(address: IpAddr) -> Family {
        match address {
            IpAddr::V4(_) => Family::Ipv4,
            IpAddr::V6(_) => Family::Ipv6,
        }
    }

    /// Bytes per address in the message.
    pub fn address_len(self) -> usize {
        match self {
            Family::Ipv4 => 4,
            Family::Ipv6 => 16,
        }
    }

    /// Whether `version` is defined over this family: v2 is IPv4 only (RFC 3768).
    pub fn carries(self, version: Version) -> bool {
        self == Family::Ipv4 || version == Version::V3
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Family::Ipv4 => "IPv4",
            Family::Ipv6 => "IPv6",
        })
    }
}

/// The VRRP version an advert speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
pub enum Version {
    /// RFC 3768: keepalived's default, interval in whole seconds.
    V2,
    /// RFC 5798 / RFC 9568: interval in centiseconds.
    V3,
}

impl Version {
    /// The number in the Version field.
    pub fn number(self) -> u8 {
        match self {
            Version::V2 => 2,
            Version::V3 => 3,
        }
    }

    pub fn from_number(n: u8) -> Option<Version> {
        match n {
            2 => Some(Version::V2),
            3 => Some(Version::V3),
            _ => None,
        }
    }

    /// What one unit of the interval field is worth: a second (v2), a centisecond (v3).
    pub fn interval_unit(self) -> Duration {
        match self {
            Version::V2 => Duration::from_secs(1),
            Version::V3 => Duration::from_millis(10),
        }
    }

    /// The longest interval the field holds: 255 s (8 bits, v2), 40.95 s (12 bits, v3).
    pub fn max_interval(self) -> Duration {
        self.interval_from_wire(self.max_interval_units())
    }

    /// The interval as this version's field holds it, or `None` when it is zero, longer than
    /// [`Version::max_interval`] or not a whole number of units. Configuration validation calls
    /// this so that [`Advert::emit`] never has to round.
    pub fn interval_to_wire(self, interval: Duration) -> Option<u16> {
        let unit = self.interval_unit().as_nanos();
        let nanos = interval.as_nanos();
        if !nanos.is_multiple_of(unit) {
            return None;
        }
        let units = u16::try_from(nanos / unit).ok()?;
        (1..=self.max_interval_units())
            .contains(&units)
            .then_some(units)
    }

    /// The interval a field value stands for.
    pub fn interval_from_wire(self, units: u16) -> Duration {
        self.interval_unit() * u32::from(units)
    }

    fn max_interval_units(self) -> u16 {
        match self {
            Version::V2 => u16::from(u8::MAX),
            Version::V3 => 0x0fff,
        }
    }

    /// Bytes after the addresses: v2's Authentication Data, nothing in v3.
    fn trailer_len(self) -> usize {
        match self {
            Version::V2 => V2_AUTH_DATA_LEN,
            Version::V3 => 0,
        }
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VRRPv{}", self.number())
    }
}

/// Whether a v3 checksum over IPv4 includes the IPv4 pseudo-header.
///
/// v3 over IPv4: keepalived includes the IPv4 pseudo-header in the checksum (RFC 5798 says so);
/// RFC 9568 / some vendors omit it. v2 never uses a pseudo-header, whatever the mode; v3 over
/// IPv6 always does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ChecksumMode {
    /// RFC 5798 §5.2.8 and keepalived's default.
    #[default]
    WithPseudoHeader,
    /// The VRRP message alone, as in v2 (keepalived's `v3_checksum_as_v2`).
    WithoutPseudoHeader,
}

impl ChecksumMode {
    fn uses_pseudo_header(self, version: Version, family: Family) -> bool {
        match family {
            Family::Ipv6 => true,
            Family::Ipv4 => version == Version::V3 && self == ChecksumMode::WithPseudoHeader,
        }
    }
}

/// A VRRPv2 simple text password (Auth Type 1): the 8 bytes of Authentication Data, holding the
/// password zero-padded, as keepalived pads `auth_pass`. Two passwords are the same when all 8
/// bytes are, which is how keepalived compares them.
///
/// Not a secret on the wire (every advert carries it in clear), but its `Debug` form leaves it
/// out all the same, so that logs and test output do not spread a string people reuse.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Password([u8; V2_AUTH_DATA_LEN]);

impl Password {
    /// The longest password an advert holds, in bytes.
    pub const MAX_LEN: usize = V2_AUTH_DATA_LEN;

    /// `text` zero-padded to 8 bytes; `None` when it is empty or longer than 8 bytes.
    pub fn new(text: &[u8]) -> Option<Password> {
        if text.is_empty() || text.len() > Password::MAX_LEN {
            return None;
        }
        let mut data = [0; V2_AUTH_DATA_LEN];
        data[..text.len()].copy_from_slice(text);
        Some(Password(data))
    }

    /// The Authentication Data of a received advert, whatever it holds.
    pub fn from_auth_data(data: [u8; V2_AUTH_DATA_LEN]) -> Password {
        Password(data)
    }

    /// The 8 bytes an advert carries.
    pub fn auth_data(&self) -> &[u8; V2_AUTH_DATA_LEN] {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(..)")
    }
}

/// Why a received datagram was not handed to the instance; one variant per reason, so drops
/// can be counted by reason. The codec decides all of them up to
/// [`DropReason::UnsupportedAuthentication`]; `vrrp::accept` the ones after it.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, thiserror::Error,
)]
#[serde(rename_all = "snake_case")]
pub enum DropReason {
    #[error("datagram shorter than an IPv4 header or than its header says")]
    Truncated,
    #[error(
        "malformed IPv4 header (version, header length, total length, fragment or header checksum)"
    )]
    BadIpHeader,
    #[error("not VRRP: the IP protocol is not 112")]
    NotVrrp,
    #[error("IP TTL (IPv4) or hop limit (IPv6) is not 255: the advert was routed or sent from off the link")]
    #[serde(rename = "ttl_not_255")]
    TtlNot255,
    #[error(
        "VRRP version is neither 2 nor 3, or is 2 over IPv6 (only version 3 is defined there)"
    )]
    BadVersion,
    #[error("VRRP type is not 1 (advertisement)")]
    BadType,
    #[error("VRRP message length does not fit the header and whole addresses")]
    BadLength,
    #[error("count of addresses does not match the VRRP message length")]
    AddressCountMismatch,
    #[error("VRRP checksum is wrong: a corrupt packet, or a v3 peer over IPv4 that computes it with the other checksum mode (IPv4 pseudo-header or not)")]
    BadChecksum,
    #[error("advertisement interval is zero")]
    ZeroInterval,
    #[error("VRRPv2 authentication type is neither 0 (none) nor 1 (PASS): IP AH (2) or unknown, which Tandem does not support")]
    UnsupportedAuthentication,
    #[error("VRRP version differs from this instance's")]
    VersionMismatch,
    #[error("VRRPv2 authentication differs from this instance's: a PASS password on one node, none on the other")]
    AuthenticationMismatch,
    #[error("VRRPv2 PASS password differs from this instance's")]
    PasswordMismatch,
    #[error("VRRPv2 advertisement interval differs from this instance's (RFC 3768 drops it)")]
    IntervalMismatch,
    #[error("the advert's source is neither a unicast_peer nor in allowed_sources")]
    UnknownSource,
}

impl DropReason {
    /// Every reason, in declaration order (for counters and status tables).
    pub const ALL: &'static [DropReason] = &[
        DropReason::Truncated,
        DropReason::BadIpHeader,
        DropReason::NotVrrp,
        DropReason::TtlNot255,
        DropReason::BadVersion,
        DropReason::BadType,
        DropReason::BadLength,
        DropReason::AddressCountMismatch,
        DropReason::BadChecksum,
        DropReason::ZeroInterval,
        DropReason::UnsupportedAuthentication,
        DropReason::VersionMismatch,
        DropReason::AuthenticationMismatch,
        DropReason::PasswordMismatch,
        DropReason::IntervalMismatch,
        DropReason::UnknownSource,
    ];

    /// A stable snake_case name for metrics and JSON (the same as the serde form).
    pub fn name(self) -> &'static str {
        match self {
            DropReason::Truncated => "truncated",
            DropReason::BadIpHeader => "bad_ip_header",
            DropReason::NotVrrp => "not_vrrp",
            DropReason::TtlNot255 => "ttl_not_255",
            DropReason::BadVersion => "bad_version",
            DropReason::BadType => "bad_type",
            DropReason::BadLength => "bad_length",
            DropReason::AddressCountMismatch => "address_count_mismatch",
            DropReason::BadChecksum => "bad_checksum",
            DropReason::ZeroInterval => "zero_interval",
            DropReason::UnsupportedAuthentication => "unsupported_authentication",
            DropReason::VersionMismatch => "version_mismatch",
            DropReason::AuthenticationMismatch => "authentication_mismatch",
            DropReason::PasswordMismatch => "password_mismatch",
            DropReason::IntervalMismatch => "interval_mismatch",
            DropReason::UnknownSource => "unknown_source",
        }
    }
}

/// A zero-copy view over one VRRP message (v2 or v3), from the Version field to the end of
/// the addresses (v3) or of the Authentication Data (v2): exactly the IP payload. It knows the
/// family it came over, which sets the length of each address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
    family: Family,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps a buffer without checking it; accessors may panic until [`Packet::check_len`]
    /// succeeds. For emitting into a buffer sized with [`Advert::buffer_len`].
    pub const fn new_unchecked(buffer: T, family: Family) -> Packet<T> {
        Packet { buffer, family }
    }

    /// Wraps a buffer that [`Packet::check_len`] accepts; then no accessor can panic.
    pub fn new_checked(buffer: T, family: Family) -> Result<Packet<T>, DropReason> {
        let packet = Packet::new_unchecked(buffer, family);
        packet.check_len()?;
        Ok(packet)
    }

    /// The family the message came over (or is written for).
    pub fn family(&self) -> Family {
        self.family
    }

    /// Checks that the buffer is exactly one VRRP message with as many addresses as it counts.
    ///
    /// The layout depends on the version (v2 appends 8 bytes of Authentication Data), so an
    /// unknown version, or version 2 over IPv6, is refused here already, as
    /// [`DropReason::BadVersion`]. The buffer must
    /// not be longer than the message: the length comes from the IP header, and bytes the count
    /// does not explain make the advert ambiguous.
    pub fn check_len(&self) -> Result<(), DropReason> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(DropReason::BadLength);
        }
        let version = self
            .version()
            .filter(|version| self.family.carries(*version))
            .ok_or(DropReason::BadVersion)?;
        let fixed = HEADER_LEN + version.trailer_len();
        let address_len = self.family.address_len();
        if len < fixed || !(len - fixed).is_multiple_of(address_len) {
            return Err(DropReason::BadLength);
        }
        if (len - fixed) / address_len != usize::from(self.address_count()) {
            return Err(DropReason::AddressCountMismatch);
        }
        Ok(())
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The Version field as a number, whatever it holds.
    pub fn version_number(&self) -> u8 {
        self.buffer.as_ref()[field::VER_TYPE] >> 4
    }

    pub fn version(&self) -> Option<Version> {
        Version::from_number(self.version_number())
    }

    /// The Type field (1 is the only type there is).
    pub fn msg_type(&self) -> u8 {
        self.buffer.as_ref()[field::VER_TYPE] & 0x0f
    }

    pub fn vrid(&self) -> u8 {
        self.buffer.as_ref()[field::VRID]
    }

    pub fn priority(&self) -> u8 {
        self.buffer.as_ref()[field::PRIORITY]
    }

    pub fn address_count(&self) -> u8 {
        self.buffer.as_ref()[field::COUNT]
    }

    /// v2 only: Auth Type.
    pub fn v2_auth_type(&self) -> u8 {
        self.buffer.as_ref()[field::V2_AUTH_TYPE]
    }

    /// v2 only: Adver Int in seconds.
    pub fn v2_adver_int(&self) -> u8 {
        self.buffer.as_ref()[field::V2_ADVER_INT]
    }

    /// v3 only: Max Adver Int in centiseconds, the reserved bits masked off (RFC 5798 §5.2.4
    /// says to ignore them on reception).
    pub fn v3_max_adver_int(&self) -> u16 {
        let data = self.buffer.as_ref();
        u16::from_be_bytes([
            data[field::V3_MAX_ADVER_INT.start],
            data[field::V3_MAX_ADVER_INT.start + 1],
        ]) & 0x0fff
    }

    /// The interval field in its version's unit (v2 when the version is 2, else v3's layout).
    pub fn interval_units(&self) -> u16 {
        if self.version() == Some(Version::V2) {
            u16::from(self.v2_adver_int())
        } else {
            self.v3_max_adver_int()
        }
    }

    pub fn checksum(&self) -> u16 {
        let data = self.buffer.as_ref();
        u16::from_be_bytes([data[field::CHECKSUM.start], data[field::CHECKSUM.start + 1]])
    }

    /// Where the addresses end: the Authentication Data (v2) starts there.
    fn addresses_end(&self) -> usize {
        field::ADDRESSES + usize::from(self.address_count()) * self.family.address_len()
    }

    /// The addresses, as many as the count says, of the packet's family.
    pub fn addresses(&self) -> impl Iterator<Item = IpAddr> + '_ {
        let family = self.family;
        self.buffer.as_ref()[field::ADDRESSES..self.addresses_end()]
            .chunks_exact(family.address_len())
            .map(move |a| match family {
                Family::Ipv4 => IpAddr::from([a[0], a[1], a[2], a[3]]),
                Family::Ipv6 => {
                    let mut octets = [0; 16];
                    octets.copy_from_slice(a);
                    IpAddr::from(octets)
                }
            })
    }

    /// v2 only: the Authentication Data after the addresses (ignored with auth type 0).
    pub fn v2_auth_data(&self) -> &[u8] {
        let start = self.addresses_end();
        &self.buffer.as_ref()[start..start + V2_AUTH_DATA_LEN]
    }

    /// Whether the checksum is right for a message sent from `source` to `destination` (both
    /// of the packet's family; otherwise it is not).
    pub fn verify_checksum(&self, source: IpAddr, destination: IpAddr, mode: ChecksumMode) -> bool {
        self.checksum_sum(source, destination, mode)
            .is_some_and(checksum::verifies)
    }

    /// The sum of the message and, when the version, family and mode call for it, the
    /// pseudo-header; `None` when the addresses are not of the packet's family.
    fn checksum_sum(&self, source: IpAddr, destination: IpAddr, mode: ChecksumMode) -> Option<u64> {
        let data = self.buffer.as_ref();
        let sum = checksum::add(0, data);
        let pseudo = self
            .version()
            .is_some_and(|version| mode.uses_pseudo_header(version, self.family));
        match (self.family, source, destination) {
            (Family::Ipv4, IpAddr::V4(source), IpAddr::V4(destination)) => Some(if pseudo {
                checksum::add_ipv4_pseudo_header(sum, source, destination, PROTOCOL, data.len())
            } else {
                sum
            }),
            (Family::Ipv6, IpAddr::V6(source), IpAddr::V6(destination)) => Some(
                checksum::add_ipv6_pseudo_header(sum, source, destination, PROTOCOL, data.len()),
            ),
            _ => None,
        }
    }
}

/// Setters, for emitting. They panic on a buffer shorter than the field they write; size it
/// with [`Advert::buffer_len`].
impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    pub fn set_version_and_type(&mut self, version: Version, msg_type: u8) {
        self.buffer.as_mut()[field::VER_TYPE] = (version.number() << 4) | (msg_type & 0x0f);
    }

    pub fn set_vrid(&mut self, vrid: u8) {
        self.buffer.as_mut()[field::VRID] = vrid;
    }

    pub fn set_priority(&mut self, priority: u8) {
        self.buffer.as_mut()[field::PRIORITY] = priority;
    }

    pub fn set_address_count(&mut self, count: u8) {
        self.buffer.as_mut()[field::COUNT] = count;
    }

    pub fn set_v2_auth_type(&mut self, auth_type: u8) {
        self.buffer.as_mut()[field::V2_AUTH_TYPE] = auth_type;
    }

    pub fn set_v2_adver_int(&mut self, seconds: u8) {
        self.buffer.as_mut()[field::V2_ADVER_INT] = seconds;
    }

    /// Writes the 12-bit Max Adver Int with the reserved bits zero (higher bits are dropped).
    pub fn set_v3_max_adver_int(&mut self, centiseconds: u16) {
        self.buffer.as_mut()[field::V3_MAX_ADVER_INT]
            .copy_from_slice(&(centiseconds & 0x0fff).to_be_bytes());
    }

    pub fn set_checksum(&mut self, checksum: u16) {
        self.buffer.as_mut()[field::CHECKSUM].copy_from_slice(&checksum.to_be_bytes());
    }

    /// Writes address number `index` (from 0). Panics if it is not of the packet's family.
    pub fn set_address(&mut self, index: usize, address: IpAddr) {
        let len = self.family.address_len();
        let start = field::ADDRESSES + index * len;
        let slot = &mut self.buffer.as_mut()[start..start + len];
        match address {
            IpAddr::V4(address) => slot.copy_from_slice(&address.octets()),
            IpAddr::V6(address) => slot.copy_from_slice(&address.octets()),
        }
    }

    /// v2 only: the Authentication Data after the addresses.
    pub fn v2_auth_data_mut(&mut self) -> &mut [u8] {
        let start = self.addresses_end();
        &mut self.buffer.as_mut()[start..start + V2_AUTH_DATA_LEN]
    }

    /// Computes the checksum over the whole buffer (and the pseudo-header when `mode`, the
    /// version and the family call for it) and writes it; every other field must be in place
    /// first. Addresses of another family than the packet's leave a wrong checksum (debug
    /// builds panic).
    pub fn fill_checksum(&mut self, source: IpAddr, destination: IpAddr, mode: ChecksumMode) {
        self.set_checksum(0);
        let sum = self.checksum_sum(source, destination, mode);
        debug_assert!(
            sum.is_some(),
            "a {} advert sent from {source} to {destination}",
            self.family
        );
        self.set_checksum(checksum::finish(sum.unwrap_or(0)));
    }
}

/// One advertisement: what a VRRP message means.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Advert {
    pub version: Version,
    pub vrid: u8,
    /// 0 is valid: the master is shutting down (or in Fault) and hands over at once.
    pub priority: u8,
    /// v3: Max Advert Interval in centiseconds (12 bits); v2: Adver Int in whole seconds (8 bits).
    pub interval: Duration,
    /// All of one family, the one the advert is carried over ([`Advert::emit`] leaves out any
    /// other).
    pub addresses: Vec<IpAddr>,
    /// v2 only: `Some` is Auth Type 1 with this password, `None` Auth Type 0. Always `None` in
    /// a v3 advert, and left out when one is emitted (v3 has no such field).
    pub password: Option<Password>,
}

impl Advert {
    /// Reads an advert from a message sent from `source` to `destination`, checking everything
    /// the message alone can tell: layout, type, checksum, authentication, interval.
    pub fn parse<T: AsRef<[u8]>>(
        packet: &Packet<T>,
        source: IpAddr,
        destination: IpAddr,
        checksum: ChecksumMode,
    ) -> Result<Advert, DropReason> {
        packet.check_len()?;
        let version = packet.version().ok_or(DropReason::BadVersion)?;
        if packet.msg_type() != TYPE_ADVERTISEMENT {
            return Err(DropReason::BadType);
        }
        if !packet.verify_checksum(source, destination, checksum) {
            return Err(DropReason::BadChecksum);
        }
        // RFC 3768 §5.3.6 deprecated types 1 (plain text) and 2 (IP AH); RFC 5798 removed the
        // field. keepalived still sends type 1, so it is read; whether the password is the
        // right one is the instance's call. The Authentication Data is ignored with type 0.
        let password = match version {
            Version::V3 => None,
            Version::V2 => match packet.v2_auth_type() {
                auth_type::NONE => None,
                auth_type::PASSWORD => {
                    let mut data = [0; V2_AUTH_DATA_LEN];
                    data.copy_from_slice(packet.v2_auth_data());
                    Some(Password::from_auth_data(data))
                }
                _ => return Err(DropReason::UnsupportedAuthentication),
            },
        };
        let units = packet.interval_units();
        if units == 0 {
            return Err(DropReason::ZeroInterval);
        }
        Ok(Advert {
            version,
            vrid: packet.vrid(),
            priority: packet.priority(),
            interval: version.interval_from_wire(units),
            addresses: packet.addresses().collect(),
            password,
        })
    }

    /// Length of the VRRP message [`Advert::emit`] writes over `family`.
    pub fn buffer_len(&self, family: Family) -> usize {
        HEADER_LEN
            + self.emitted_addresses(family).len() * family.address_len()
            + self.version.trailer_len()
    }

    /// Writes the advert into `packet`, checksum included.
    ///
    /// The interval must fit the version ([`Version::interval_to_wire`]); configuration
    /// validation makes sure of it. Otherwise debug builds panic, and release builds round to
    /// the nearest unit within 1..=max. Addresses past the 255th, and addresses of another
    /// family than the packet's, are left out (debug builds panic). Panics if the buffer is
    /// shorter than [`Advert::buffer_len`].
    pub fn emit_into<T: AsRef<[u8]> + AsMut<[u8]>>(
        &self,
        packet: &mut Packet<T>,
        source: IpAddr,
        destination: IpAddr,
        checksum: ChecksumMode,
    ) {
        let addresses = self.emitted_addresses(packet.family());
        packet.set_version_and_type(self.version, TYPE_ADVERTISEMENT);
        packet.set_vrid(self.vrid);
        packet.set_priority(self.priority);
        // emitted_addresses() keeps at most 255.
        packet.set_address_count(u8::try_from(addresses.len()).unwrap_or(u8::MAX));
        let units = self.wire_interval();
        match self.version {
            Version::V2 => {
                packet.set_v2_auth_type(match self.password {
                    Some(_) => auth_type::PASSWORD,
                    None => auth_type::NONE,
                });
                packet.set_v2_adver_int(u8::try_from(units).unwrap_or(u8::MAX));
            }
            Version::V3 => packet.set_v3_max_adver_int(units),
        }
        for (index, address) in addresses.iter().enumerate() {
            packet.set_address(index, *address);
        }
        if self.version == Version::V2 {
            match &self.password {
                Some(password) => packet
                    .v2_auth_data_mut()
                    .copy_from_slice(password.auth_data()),
                None => packet.v2_auth_data_mut().fill(0),
            }
        }
        packet.fill_checksum(source, destination, checksum);
    }

    /// The VRRP part only (what a raw socket with the kernel building the IP header sends),
    /// checksum filled in. `source` and `destination` are the IP addresses the datagram will
    /// carry: a v3 checksum with the pseudo-header depends on them, and their family is the
    /// advert's (both of one family; debug builds panic otherwise).
    pub fn emit(
        &self,
        source: impl Into<IpAddr>,
        destination: impl Into<IpAddr>,
        checksum: ChecksumMode,
    ) -> Vec<u8> {
        let (source, destination) = (source.into(), destination.into());
        let family = Family::of(source);
        let mut buffer = vec![0; self.buffer_len(family)];
        self.emit_into(
            &mut Packet::new_unchecked(&mut buffer[..], family),
            source,
            destination,
            checksum,
        );
        buffer
    }

    /// The whole IPv4 datagram, header included (TTL 255, protocol 112, TOS 0xc0, no options,
    /// identification 0): for `IP_HDRINCL` sockets, packet fixtures and tests.
    pub fn emit_ipv4(
        &self,
        source: Ipv4Addr,
        destination: Ipv4Addr,
        checksum: ChecksumMode,
    ) -> Vec<u8> {
        let vrrp = self.emit(IpAddr::V4(source), IpAddr::V4(destination), checksum);
        Ipv4Repr {
            source,
            destination,
            protocol: PROTOCOL,
            ttl: TTL,
            tos: IPV4_TOS,
            identification: 0,
            flags_fragment: 0,
            payload_len: vrrp.len(),
        }
        .datagram_with(&[], &vrrp)
    }

    fn emitted_addresses(&self, family: Family) -> Vec<IpAddr> {
        debug_assert!(
            self.addresses.len() <= MAX_ADDRESSES,
            "a VRRP advert lists at most {MAX_ADDRESSES} addresses, got {}",
            self.addresses.len()
        );
        debug_assert!(
            self.addresses.iter().all(|a| Family::of(*a) == family),
            "an {family} advert lists {:?}: configuration validation keeps an instance to one family",
            self.addresses
        );
        self.addresses
            .iter()
            .copied()
            .filter(|address| Family::of(*address) == family)
            .take(MAX_ADDRESSES)
            .collect()
    }

    fn wire_interval(&self) -> u16 {
        let version = self.version;
        if let Some(units) = version.interval_to_wire(self.interval) {
            return units;
        }
        let max = version.max_interval();
        debug_assert!(
            !self.interval.is_zero() && self.interval <= max,
            "{version} interval {:?} outside 1 unit..={max:?}: configuration validation must refuse it",
            self.interval
        );
        let unit = version.interval_unit().as_nanos();
        let rounded = (self.interval.as_nanos() + unit / 2) / unit;
        let units = u16::try_from(rounded).unwrap_or(u16::MAX);
        units.clamp(1, version.max_interval_units())
    }
}

impl fmt::Display for Advert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} vrid {} priority {} interval {:?} addresses [",
            self.version, self.vrid, self.priority, self.interval
        )?;
        for (index, address) in self.addresses.iter().enumerate() {
            if index > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{address}")?;
        }
        f.write_str("]")?;
        if self.password.is_some() {
            f.write_str(" auth PASS")?;
        }
        Ok(())
    }
}

/// An advert with the IP fields the instance needs to judge it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Received {
    /// The sender's primary address (over IPv6 its link-local address): the tie-breaker
    /// between equal priorities.
    pub source: IpAddr,
    /// [`MULTICAST_GROUP`] or [`MULTICAST_GROUP_V6`], or the node's own address when the peer
    /// sends unicast.
    pub destination: IpAddr,
    /// The TTL (IPv4) or hop limit (IPv6): always [`TTL`] in an accepted advert; kept for
    /// diagnostics.
    pub ttl: u8,
    pub advert: Advert,
}

/// Parses a whole IPv4 datagram as a raw IPPROTO 112 socket returns it (IP header included).
///
/// Checks the IPv4 header (version 4, header length, total length against the buffer, header
/// checksum, not a fragment), protocol 112, TTL 255, then the VRRP message ([`Advert::parse`]).
/// Bytes after the IP total length (Ethernet padding when read from a packet socket) are
/// ignored. The kernel has already checked the header checksum of what a raw socket returns;
/// it is checked again so the function is right for any source of bytes.
pub fn parse_ipv4(datagram: &[u8], checksum: ChecksumMode) -> Result<Received, DropReason> {
    let ip = ipv4::Packet::new_checked(datagram).map_err(|error| match error {
        Error::Truncated { .. } => DropReason::Truncated,
        Error::Malformed { .. } => DropReason::BadIpHeader,
    })?;
    if !ip.verify_checksum() {
        return Err(DropReason::BadIpHeader);
    }
    // A raw socket returns reassembled datagrams; a fragment here has no VRRP header to read.
    if ip.is_fragment() {
        return Err(DropReason::BadIpHeader);
    }
    if ip.protocol() != PROTOCOL {
        return Err(DropReason::NotVrrp);
    }
    let ttl = ip.ttl();
    if ttl != TTL {
        return Err(DropReason::TtlNot255);
    }
    let (source, destination) = (IpAddr::V4(ip.source()), IpAddr::V4(ip.destination()));
    let packet = Packet::new_checked(ip.payload(), Family::Ipv4)?;
    let advert = Advert::parse(&packet, source, destination, checksum)?;
    Ok(Received {
        source,
        destination,
        ttl,
        advert,
    })
}

/// Parses what an `AF_INET6` raw `IPPROTO_VRRP` socket returns: the VRRP message alone (the
/// kernel keeps the IPv6 header), with the `source` from the socket address and the
/// `destination` and `hop_limit` from ancillary data (`IPV6_PKTINFO`, `IPV6_HOPLIMIT`).
///
/// Checks the hop limit (255, RFC 5798 §5.1.2.3), then the message ([`Advert::parse`]), whose
/// checksum always covers the IPv6 pseudo-header (§5.2.8). Version 2 is dropped as
/// [`DropReason::BadVersion`]: it is not defined over IPv6.
pub fn parse_ipv6(
    payload: &[u8],
    source: Ipv6Addr,
    destination: Ipv6Addr,
    hop_limit: u8,
) -> Result<Received, DropReason> {
    if hop_limit != TTL {
        return Err(DropReason::TtlNot255);
    }
    let (source, destination) = (IpAddr::V6(source), IpAddr::V6(destination));
    let packet = Packet::new_checked(payload, Family::Ipv6)?;
    // The mode only chooses for v3 over IPv4; over IPv6 the pseudo-header is always summed.
    let advert = Advert::parse(&packet, source, destination, ChecksumMode::default())?;
    Ok(Received {
        source,
        destination,
        ttl: hop_limit,
        advert,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const LB1: Ipv4Addr = Ipv4Addr::new(192, 168, 0, 1);
    const VIP: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 168, 0, 99));
    const MODES: [ChecksumMode; 2] = [
        ChecksumMode::WithPseudoHeader,
        ChecksumMode::WithoutPseudoHeader,
    ];

    /// A ones' complement checksum written separately from the codec's, so byte-exact tests
    /// do not check the codec against itself.
    fn internet_checksum(data: &[u8]) -> u16 {
        let mut sum: u32 = 0;
        let mut i = 0;
        while i < data.len() {
            let hi = u32::from(data[i]) << 8;
            let lo = data.get(i + 1).map_or(0, |b| u32::from(*b));
            sum += hi | lo;
            i += 2;
        }
        while sum > 0xffff {
            sum = (sum >> 16) + (sum & 0xffff);
        }
        !(sum as u16)
    }

    /// An IPv4 header around `payload`, its checksum computed by `internet_checksum`.
    fn datagram(ttl: u8, protocol: u8, source: Ipv4Addr, payload: &[u8]) -> Vec<u8> {
        let total = (20 + payload.len()) as u16;
        let mut d = vec![0x45, 0xc0];
        d.extend_from_slice(&total.to_be_bytes());
        d.extend_from_slice(&[0, 0, 0, 0, ttl, protocol, 0, 0]);
        d.extend_from_slice(&source.octets());
        d.extend_from_slice(&MULTICAST_GROUP.octets());
        let sum = internet_checksum(&d);
        d[10..12].copy_from_slice(&sum.to_be_bytes());
        d.extend_from_slice(payload);
        d
    }

    fn v2_advert() -> Advert {
        Advert {
            version: Version::V2,
            vrid: 51,
            priority: 101,
            interval: Duration::from_secs(1),
            addresses: vec![VIP],
            password: None,
        }
    }

    /// keepalived's VI_1 with `authentication { auth_type PASS  auth_pass secret }`.
    fn v2_pass_advert() -> Advert {
        Advert {
            password: Password::new(b"secret"),
            ..v2_advert()
        }
    }

    fn v3_advert() -> Advert {
        Advert {
            version: Version::V3,
            ..v2_advert()
        }
    }

    /// A valid advert's VRRP message, edited by `edit`, then its checksum refilled, so that
    /// the edit is the only thing wrong with it.
    fn edited(advert: &Advert, edit: impl FnOnce(&mut Packet<&mut [u8]>)) -> Vec<u8> {
        let mut bytes = advert.emit(LB1, MULTICAST_GROUP, ChecksumMode::default());
        let mut packet = Packet::new_unchecked(&mut bytes[..], Family::Ipv4);
        edit(&mut packet);
        packet.fill_checksum(LB1.into(), MULTICAST_GROUP.into(), ChecksumMode::default());
        bytes
    }

    fn parse_vrrp(vrrp: &[u8]) -> Result<Received, DropReason> {
        parse_ipv4(&datagram(TTL, PROTOCOL, LB1, vrrp), ChecksumMode::default())
    }

    /// The advert keepalived sends for the classic pair's VI_1 with `vrrp_version 2` (its
    /// default): VRID 51, priority 101, advert_int 1, one address 192.168.0.99, from
    /// 192.168.0.1 to 224.0.0.18. Laid out by hand from RFC 3768 §5.1; the checksum was worked
    /// out on paper: 0x2133 + 0x6501 + 0x0001 + 0xc0a8 + 0x0063 = 0x14740, folded 0x4741,
    /// complemented 0xb8be. `KEEPALIVED_2_2_7_V2` below shows keepalived sends exactly this.
    const KEEPALIVED_V2: [u8; 20] = [
        0x21, // version 2, type 1 (advertisement)
        51,   // virtual router id
        101,  // priority
        1,    // count of addresses
        0,    // auth type 0 (none)
        1,    // adver int: 1 s
        0xb8, 0xbe, // checksum
        192, 168, 0, 99, // the virtual address
        0, 0, 0, 0, 0, 0, 0, 0, // authentication data, zero
    ];

    /// Whole datagrams keepalived 2.2.7 (Debian 12) sent for that instance, captured with
    /// tcpdump on a veth pair between two network namespaces (`vrrp_version 2`, then 3). Its IP
    /// header: TOS 0xc0, identification counting from 1, no flags, TTL 255.
    const KEEPALIVED_2_2_7_V2: [u8; 40] = [
        0x45, 0xc0, 0x00, 0x28, 0x00, 0x01, 0x00, 0x00, 0xff, 0x70, 0x19, 0xe9, 0xc0, 0xa8, 0x00,
        0x01, 0xe0, 0x00, 0x00, 0x12, 0x21, 0x33, 0x65, 0x01, 0x00, 0x01, 0xb8, 0xbe, 0xc0, 0xa8,
        0x00, 0x63, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    ];
    /// The same instance with `authentication { auth_type PASS  auth_pass secret }`, captured
    /// the same way: Auth Type 1, "secret" zero-padded to 8 bytes after the address.
    const KEEPALIVED_2_2_7_V2_PASS: [u8; 40] = [
        0x45, 0xc0, 0x00, 0x28, 0x00, 0x01, 0x00, 0x00, 0xff, 0x70, 0x19, 0xe9, 0xc0, 0xa8, 0x00,
        0x01, 0xe0, 0x00, 0x00, 0x12, 0x21, 0x33, 0x65, 0x01, 0x01, 0x01, 0x7b, 0x72, 0xc0, 0xa8,
        0x00, 0x63, 0x73, 0x65, 0x63, 0x72, 0x65, 0x74, 0x00, 0x00,
    ];
    const KEEPALIVED_2_2_7_V3: [u8; 32] = [
        0x45, 0xc0, 0x00, 0x20, 0x00, 0x01, 0x00, 0x00, 0xff, 0x70, 0x19, 0xf1, 0xc0, 0xa8, 0x00,
        0x01, 0xe0, 0x00, 0x00, 0x12, 0x31, 0x33, 0x65, 0x01, 0x00, 0x64, 0x07, 0x23, 0xc0, 0xa8,
        0x00, 0x63,
    ];

    #[test]
    fn keepalived_captures_parse_and_match_what_we_emit() {
        let received = parse_ipv4(&KEEPALIVED_2_2_7_V2, ChecksumMode::default()).unwrap();
        assert_eq!(received.advert, v2_advert());
        assert_eq!(
            (received.source, received.destination, received.ttl),
            (LB1.into(), MULTICAST_GROUP.into(), 255)
        );
        assert_eq!(KEEPALIVED_2_2_7_V2[20..], KEEPALIVED_V2);
        let emitted = v2_advert().emit(LB1, MULTICAST_GROUP, ChecksumMode::default());
        assert_eq!(emitted, KEEPALIVED_2_2_7_V2[20..]);

        // keepalived 2.2.7 puts the IPv4 pseudo-header in the v3 checksum.
        let received = parse_ipv4(&KEEPALIVED_2_2_7_V3, ChecksumMode::WithPseudoHeader).unwrap();
        assert_eq!(received.advert, v3_advert());
        let emitted = v3_advert().emit(LB1, MULTICAST_GROUP, ChecksumMode::WithPseudoHeader);
        assert_eq!(emitted, KEEPALIVED_2_2_7_V3[20..]);
        assert_eq!(
            parse_ipv4(&KEEPALIVED_2_2_7_V3, ChecksumMode::WithoutPseudoHeader),
            Err(DropReason::BadChecksum)
        );
    }

    #[test]
    fn keepalived_pass_advert_parses_with_its_password_and_we_emit_the_same_bytes() {
        // By hand: 0x2133 + 0x6501 + 0x0101 (auth type 1, interval 1) + 0xc0a8 + 0x0063
        // + "se" 0x7365 + "cr" 0x6372 + "et" 0x6574 + 0x0000 = 0x2848b, folded 0x848d,
        // complemented 0x7b72: the checksum covers the password.
        let vrrp = &KEEPALIVED_2_2_7_V2_PASS[20..];
        assert_eq!(internet_checksum(vrrp), 0, "capture checksum");
        assert_eq!(vrrp[4], auth_type::PASSWORD);
        assert_eq!(&vrrp[12..], b"secret\0\0");
        let received = parse_ipv4(&KEEPALIVED_2_2_7_V2_PASS, ChecksumMode::default()).unwrap();
        assert_eq!(received.advert, v2_pass_advert());
        assert_ne!(received.advert.password, None);
        let emitted = v2_pass_advert().emit(LB1, MULTICAST_GROUP, ChecksumMode::default());
        assert_eq!(emitted, vrrp);
        // The same bytes as the unauthenticated advert but for type, checksum and data.
        assert_eq!(vrrp[..4], KEEPALIVED_V2[..4]);
        assert_eq!(vrrp[5..6], KEEPALIVED_V2[5..6]);
        assert_eq!(vrrp[8..12], KEEPALIVED_V2[8..12]);
    }

    #[test]
    fn passwords_are_one_to_eight_bytes_zero_padded_and_compared_on_all_eight() {
        assert_eq!(Password::new(b""), None);
        assert_eq!(Password::new(b"123456789"), None);
        assert_eq!(Password::new(b"12345678").unwrap().auth_data(), b"12345678");
        assert_eq!(Password::new(b"1111").unwrap().auth_data(), b"1111\0\0\0\0");
        assert_eq!(
            Password::new(b"1111"),
            Some(Password::from_auth_data(*b"1111\0\0\0\0"))
        );
        // keepalived compares the 8 bytes: bytes after the terminating zero count.
        assert_ne!(
            Password::new(b"1111"),
            Some(Password::from_auth_data(*b"1111\0\0\0x"))
        );
        assert_eq!(
            format!("{:?}", Password::new(b"secret")),
            "Some(Password(..))"
        );
    }

    #[test]
    fn a_password_round_trips_in_v2_and_is_not_emitted_in_v3() {
        let advert = v2_pass_advert();
        let d = advert.emit_ipv4(LB1, MULTICAST_GROUP, ChecksumMode::default());
        assert_eq!(
            parse_ipv4(&d, ChecksumMode::default()).unwrap().advert,
            advert
        );
        assert_eq!(advert.to_string(), format!("{} auth PASS", v2_advert()));
        // An Auth Type 1 advert with all-zero data is a password too, just a wrong one.
        let zeros = edited(&v2_advert(), |p| p.set_v2_auth_type(auth_type::PASSWORD));
        assert_eq!(
            parse_vrrp(&zeros).unwrap().advert.password,
            Some(Password::from_auth_data([0; 8]))
        );
        // v3 has no Authentication Data: the same message as without a password.
        let v3 = Advert {
            password: Password::new(b"secret"),
            ..v3_advert()
        };
        assert_eq!(
            v3.emit(LB1, MULTICAST_GROUP, ChecksumMode::default()),
            v3_advert().emit(LB1, MULTICAST_GROUP, ChecksumMode::default())
        );
    }

    #[test]
    fn v2_advert_is_byte_exact_with_keepalived_layout() {
        assert_eq!(internet_checksum(&KEEPALIVED_V2), 0, "fixture checksum");
        let mut zeroed = KEEPALIVED_V2;
        zeroed[6..8].fill(0);
        assert_eq!(internet_checksum(&zeroed), 0xb8be);
        for mode in MODES {
            assert_eq!(v2_advert().emit(LB1, MULTICAST_GROUP, mode), KEEPALIVED_V2);
            let received = parse_ipv4(&datagram(255, 112, LB1, &KEEPALIVED_V2), mode).unwrap();
            assert_eq!(received.advert, v2_advert());
            assert_eq!(received.source, IpAddr::V4(LB1));
            assert_eq!(received.destination, IpAddr::V4(MULTICAST_GROUP));
            assert_eq!(received.ttl, 255);
        }
    }

    #[test]
    fn v3_advert_is_byte_exact_in_both_checksum_modes() {
        // keepalived with `vrrp_version 3`, same instance, advert_int 1 = 100 centiseconds,
        // laid out from RFC 5798 §5.1.
        let body = [0x31, 51, 101, 1, 0x00, 0x64, 0, 0, 192, 168, 0, 99];
        // Without the pseudo-header, by hand: 0x3133 + 0x6501 + 0x0064 + 0xc0a8 + 0x0063
        // = 0x157a3, folded 0x57a4, complemented 0xa85b.
        assert_eq!(internet_checksum(&body), 0xa85b);
        // With it: add 0xc0a8 + 0x0001 (source), 0xe000 + 0x0012 (group), 0x0070 (protocol
        // 112), 0x000c (length 12) = 0x2f8da, folded 0xf8dc, complemented 0x0723.
        let mut pseudo = vec![192, 168, 0, 1, 224, 0, 0, 18, 0, 112, 0, 12];
        pseudo.extend_from_slice(&body);
        assert_eq!(internet_checksum(&pseudo), 0x0723);

        for (mode, sum) in [
            (ChecksumMode::WithPseudoHeader, [0x07, 0x23]),
            (ChecksumMode::WithoutPseudoHeader, [0xa8, 0x5b]),
        ] {
            let mut expected = body;
            expected[6..8].copy_from_slice(&sum);
            assert_eq!(v3_advert().emit(LB1, MULTICAST_GROUP, mode), expected);
            let received = parse_ipv4(&datagram(255, 112, LB1, &expected), mode).unwrap();
            assert_eq!(received.advert, v3_advert());
        }
    }

    #[test]
    fn round_trips_both_versions_and_checksum_modes() {
        let addresses = vec![
            IpAddr::from([198, 18, 0, 99]),
            IpAddr::from([198, 18, 0, 98]),
            IpAddr::from([198, 18, 1, 1]),
        ];
        let adverts = [
            Advert {
                version: Version::V2,
                vrid: 1,
                priority: 255,
                interval: Duration::from_secs(255),
                addresses: addresses.clone(),
                password: None,
            },
            Advert {
                version: Version::V2,
                vrid: 2,
                priority: 1,
                interval: Duration::from_secs(1),
                addresses: vec![],
                password: Password::new(b"12345678"),
            },
            Advert {
                version: Version::V3,
                vrid: 255,
                priority: 100,
                interval: Duration::from_millis(40_950),
                addresses: addresses.clone(),
                password: None,
            },
            Advert {
                version: Version::V3,
                vrid: 7,
                priority: 1,
                interval: Duration::from_millis(10),
                addresses: vec![],
                password: None,
            },
        ];
        for advert in adverts {
            for mode in MODES {
                let datagram = advert.emit_ipv4(LB1, MULTICAST_GROUP, mode);
                let received = parse_ipv4(&datagram, mode).unwrap();
                assert_eq!(received.advert, advert, "{mode:?}");
                let packet = Packet::new_checked(&datagram[20..], Family::Ipv4).unwrap();
                let parsed =
                    Advert::parse(&packet, LB1.into(), MULTICAST_GROUP.into(), mode).unwrap();
                assert_eq!(parsed, advert);
                assert_eq!(datagram.len(), 20 + advert.buffer_len(Family::Ipv4));
            }
        }
    }

    #[test]
    fn emit_ipv4_header_is_what_keepalived_sends() {
        let d = v2_advert().emit_ipv4(LB1, MULTICAST_GROUP, ChecksumMode::default());
        assert_eq!(d, datagram(255, 112, LB1, &KEEPALIVED_V2));
    }

    #[test]
    fn priority_zero_is_a_valid_advert() {
        for advert in [v2_advert(), v3_advert()] {
            let advert = Advert {
                priority: 0,
                ..advert
            };
            let d = advert.emit_ipv4(LB1, MULTICAST_GROUP, ChecksumMode::default());
            assert_eq!(
                parse_ipv4(&d, ChecksumMode::default())
                    .unwrap()
                    .advert
                    .priority,
                0
            );
        }
    }

    #[test]
    fn v3_checksum_mode_must_match_the_sender() {
        for (sent, read) in [
            (
                ChecksumMode::WithPseudoHeader,
                ChecksumMode::WithoutPseudoHeader,
            ),
            (
                ChecksumMode::WithoutPseudoHeader,
                ChecksumMode::WithPseudoHeader,
            ),
        ] {
            let d = v3_advert().emit_ipv4(LB1, MULTICAST_GROUP, sent);
            assert_eq!(parse_ipv4(&d, read), Err(DropReason::BadChecksum));
            // v2 has no pseudo-header in either mode.
            let d = v2_advert().emit_ipv4(LB1, MULTICAST_GROUP, sent);
            assert!(parse_ipv4(&d, read).is_ok());
        }
    }

    #[test]
    fn v3_pseudo_header_checksum_covers_the_addresses() {
        // A v3 advert replayed with another source fails, as RFC 5798 intends.
        let vrrp = v3_advert().emit(LB1, MULTICAST_GROUP, ChecksumMode::WithPseudoHeader);
        let other = Ipv4Addr::new(192, 168, 0, 2);
        let d = datagram(255, 112, other, &vrrp);
        assert_eq!(
            parse_ipv4(&d, ChecksumMode::WithPseudoHeader),
            Err(DropReason::BadChecksum)
        );
    }

    #[test]
    fn v3_reserved_bits_are_ignored() {
        let vrrp = edited(&v3_advert(), |p| p.buffer[4] |= 0xf0);
        assert_eq!(vrrp[4] & 0xf0, 0xf0);
        assert_eq!(parse_vrrp(&vrrp).unwrap().advert, v3_advert());
    }

    #[test]
    fn v2_authentication_data_is_ignored_with_type_0() {
        let vrrp = edited(&v2_advert(), |p| {
            p.v2_auth_data_mut().copy_from_slice(b"1111\0\0\0\0")
        });
        assert_eq!(parse_vrrp(&vrrp).unwrap().advert, v2_advert());
    }

    #[test]
    fn ip_options_and_trailing_padding_are_accepted() {
        let vrrp = v2_advert().emit(LB1, MULTICAST_GROUP, ChecksumMode::default());
        // IHL 6: one 4-byte option word (router alert, RFC 2113).
        let mut d = datagram(255, 112, LB1, &[]);
        d[0] = 0x46;
        d.extend_from_slice(&[0x94, 0x04, 0x00, 0x00]);
        d.extend_from_slice(&vrrp);
        let total = d.len() as u16;
        d[2..4].copy_from_slice(&total.to_be_bytes());
        d[10..12].fill(0);
        let sum = internet_checksum(&d[..24]);
        d[10..12].copy_from_slice(&sum.to_be_bytes());
        // Ethernet pads frames to 60 bytes; a packet socket would return the padding.
        d.resize(60, 0);
        assert_eq!(
            parse_ipv4(&d, ChecksumMode::default()).unwrap().advert,
            v2_advert()
        );
    }

    #[test]
    fn drops_truncated() {
        let d = v3_advert().emit_ipv4(LB1, MULTICAST_GROUP, ChecksumMode::default());
        for len in [0, 19, 20, d.len() - 1] {
            assert_eq!(
                parse_ipv4(&d[..len], ChecksumMode::default()),
                Err(DropReason::Truncated),
                "{len} bytes"
            );
        }
        // IHL says 60 bytes of header in a 32-byte datagram.
        let mut short = d.clone();
        short[0] = 0x4f;
        assert_eq!(
            parse_ipv4(&short, ChecksumMode::default()),
            Err(DropReason::Truncated)
        );
    }

    #[test]
    fn drops_bad_ip_header() {
        let good = v3_advert().emit_ipv4(LB1, MULTICAST_GROUP, ChecksumMode::default());
        // (what, byte, value): each with the header checksum fixed up afterwards.
        let with = |at: usize, value: u8| {
            let mut d = good.clone();
            d[at] = value;
            d[10..12].fill(0);
            let sum = internet_checksum(&d[..20]);
            d[10..12].copy_from_slice(&sum.to_be_bytes());
            parse_ipv4(&d, ChecksumMode::default())
        };
        for (what, at, value) in [
            ("IPv6 version", 0, 0x65),
            ("IHL 4", 0, 0x44),
            ("total length 19, below IHL", 3, 19),
            ("more fragments", 6, 0x20),
            ("fragment offset", 7, 1),
        ] {
            assert_eq!(with(at, value), Err(DropReason::BadIpHeader), "{what}");
        }
        // Don't Fragment is fine.
        assert!(with(6, 0x40).is_ok());
        let mut bad_sum = good.clone();
        bad_sum[11] ^= 1;
        assert_eq!(
            parse_ipv4(&bad_sum, ChecksumMode::default()),
            Err(DropReason::BadIpHeader)
        );
    }

    #[test]
    fn drops_not_vrrp() {
        let vrrp = v3_advert().emit(LB1, MULTICAST_GROUP, ChecksumMode::default());
        let d = datagram(255, 17, LB1, &vrrp);
        assert_eq!(
            parse_ipv4(&d, ChecksumMode::default()),
            Err(DropReason::NotVrrp)
        );
    }

    #[test]
    fn drops_ttl_not_255() {
        let vrrp = v2_advert().emit(LB1, MULTICAST_GROUP, ChecksumMode::default());
        for ttl in [0, 1, 64, 254] {
            let d = datagram(ttl, 112, LB1, &vrrp);
            assert_eq!(
                parse_ipv4(&d, ChecksumMode::default()),
                Err(DropReason::TtlNot255)
            );
        }
    }

    #[test]
    fn drops_bad_version() {
        for version in [0u8, 1, 4, 15] {
            let vrrp = edited(&v3_advert(), |p| p.buffer[0] = (version << 4) | 1);
            assert_eq!(parse_vrrp(&vrrp), Err(DropReason::BadVersion), "v{version}");
        }
    }

    #[test]
    fn drops_bad_type() {
        for msg_type in [0, 2, 15] {
            let vrrp = edited(&v3_advert(), |p| {
                p.set_version_and_type(Version::V3, msg_type)
            });
            assert_eq!(parse_vrrp(&vrrp), Err(DropReason::BadType));
        }
    }

    #[test]
    fn drops_bad_length() {
        // Shorter than the fixed header.
        let vrrp = v3_advert().emit(LB1, MULTICAST_GROUP, ChecksumMode::default());
        assert_eq!(parse_vrrp(&vrrp[..7]), Err(DropReason::BadLength));
        // A v2 message without room for its Authentication Data.
        let vrrp = v2_advert().emit(LB1, MULTICAST_GROUP, ChecksumMode::default());
        assert_eq!(parse_vrrp(&vrrp[..12]), Err(DropReason::BadLength));
        // Not a whole number of addresses.
        let mut vrrp = v3_advert().emit(LB1, MULTICAST_GROUP, ChecksumMode::default());
        vrrp.push(0);
        assert_eq!(parse_vrrp(&vrrp), Err(DropReason::BadLength));
    }

    #[test]
    fn drops_address_count_mismatch() {
        for count in [0, 2, 255] {
            let vrrp = edited(&v3_advert(), |p| p.set_address_count(count));
            assert_eq!(
                parse_vrrp(&vrrp),
                Err(DropReason::AddressCountMismatch),
                "count {count}"
            );
        }
        let vrrp = edited(&v2_advert(), |p| p.set_address_count(3));
        assert_eq!(parse_vrrp(&vrrp), Err(DropReason::AddressCountMismatch));
    }

    #[test]
    fn drops_bad_checksum() {
        let mut vrrp = v2_advert().emit(LB1, MULTICAST_GROUP, ChecksumMode::default());
        vrrp[2] = 100; // priority changed after the checksum was computed
        assert_eq!(parse_vrrp(&vrrp), Err(DropReason::BadChecksum));
    }

    #[test]
    fn drops_zero_interval() {
        let vrrp = edited(&v2_advert(), |p| p.set_v2_adver_int(0));
        assert_eq!(parse_vrrp(&vrrp), Err(DropReason::ZeroInterval));
        // Only the reserved bits set: still zero.
        let vrrp = edited(&v3_advert(), |p| p.buffer[4..6].copy_from_slice(&[0xf0, 0]));
        assert_eq!(parse_vrrp(&vrrp), Err(DropReason::ZeroInterval));
    }

    #[test]
    fn drops_unsupported_authentication() {
        // keepalived's `auth_type AH` is 2; nothing defines 3 and up. PASS (1) is read.
        for auth_type in [auth_type::IP_AH, 3, 254, 255] {
            let vrrp = edited(&v2_pass_advert(), |p| p.set_v2_auth_type(auth_type));
            assert_eq!(
                parse_vrrp(&vrrp),
                Err(DropReason::UnsupportedAuthentication),
                "auth type {auth_type}"
            );
        }
    }

    /// Every truncation and every single-byte change of a valid datagram: the parser never
    /// panics, and since a one-byte change always moves a ones' complement sum, every one of
    /// them is dropped (by the IP header checksum, the VRRP checksum or an earlier check).
    #[test]
    fn every_truncation_and_byte_mutation_is_dropped_without_panic() {
        for advert in [v2_advert(), v2_pass_advert(), v3_advert()] {
            for mode in MODES {
                let good = advert.emit_ipv4(LB1, MULTICAST_GROUP, mode);
                assert!(parse_ipv4(&good, mode).is_ok());
                for len in 0..good.len() {
                    assert!(parse_ipv4(&good[..len], mode).is_err(), "{len} bytes");
                }
                let mut bad = good.clone();
                for at in 0..good.len() {
                    for value in 0..=u8::MAX {
                        if value == good[at] {
                            continue;
                        }
                        bad[at] = value;
                        for read in MODES {
                            let result = parse_ipv4(&bad, read);
                            if read == mode {
                                assert!(result.is_err(), "byte {at} = {value:#04x}: {result:?}");
                            }
                        }
                    }
                    bad[at] = good[at];
                }
            }
        }
    }

    #[test]
    fn packet_accessors_read_the_fields() {
        let advert = Advert {
            addresses: vec![VIP, LB1.into()],
            ..v2_advert()
        };
        let vrrp = advert.emit(LB1, MULTICAST_GROUP, ChecksumMode::default());
        let packet = Packet::new_checked(&vrrp[..], Family::Ipv4).unwrap();
        assert_eq!(packet.version(), Some(Version::V2));
        assert_eq!(packet.msg_type(), TYPE_ADVERTISEMENT);
        assert_eq!(packet.vrid(), 51);
        assert_eq!(packet.priority(), 101);
        assert_eq!(packet.address_count(), 2);
        assert_eq!(packet.v2_auth_type(), 0);
        assert_eq!(packet.v2_adver_int(), 1);
        assert_eq!(packet.interval_units(), 1);
        assert_eq!(packet.addresses().collect::<Vec<_>>(), [VIP, LB1.into()]);
        assert_eq!(packet.v2_auth_data(), [0; 8]);
        assert!(packet.verify_checksum(
            LB1.into(),
            MULTICAST_GROUP.into(),
            ChecksumMode::default()
        ));
        assert_eq!(packet.into_inner().len(), 24);
        assert_eq!(
            Packet::new_checked(&vrrp[..5], Family::Ipv4),
            Err(DropReason::BadLength)
        );
    }

    #[test]
    fn interval_encoding_per_version() {
        assert_eq!(
            Version::V2.interval_to_wire(Duration::from_secs(1)),
            Some(1)
        );
        assert_eq!(
            Version::V2.interval_to_wire(Duration::from_secs(255)),
            Some(255)
        );
        assert_eq!(Version::V2.interval_to_wire(Duration::from_secs(256)), None);
        assert_eq!(
            Version::V2.interval_to_wire(Duration::from_millis(1500)),
            None
        );
        assert_eq!(Version::V2.interval_to_wire(Duration::ZERO), None);
        assert_eq!(
            Version::V3.interval_to_wire(Duration::from_millis(100)),
            Some(10)
        );
        assert_eq!(
            Version::V3.interval_to_wire(Duration::from_millis(40_950)),
            Some(4095)
        );
        assert_eq!(
            Version::V3.interval_to_wire(Duration::from_millis(40_960)),
            None
        );
        assert_eq!(
            Version::V3.interval_to_wire(Duration::from_millis(15)),
            None
        );
        assert_eq!(Version::V2.max_interval(), Duration::from_secs(255));
        assert_eq!(Version::V3.max_interval(), Duration::from_millis(40_950));
        // A fraction of a unit is rounded to the nearest one (validation should refuse it).
        let advert = Advert {
            interval: Duration::from_millis(1004),
            ..v3_advert()
        };
        let vrrp = advert.emit(LB1, MULTICAST_GROUP, ChecksumMode::default());
        assert_eq!(
            Packet::new_unchecked(&vrrp[..], Family::Ipv4).v3_max_adver_int(),
            100
        );
    }

    #[test]
    fn versions_number_both_ways() {
        for version in [Version::V2, Version::V3] {
            assert_eq!(Version::from_number(version.number()), Some(version));
        }
        assert_eq!(Version::from_number(1), None);
        assert_eq!(Version::V3.to_string(), "VRRPv3");
    }

    #[test]
    fn drop_reasons_have_unique_snake_case_names_matching_serde() {
        // An exhaustive match, so a new variant that is missing from ALL fails to compile here.
        let listed = |reason: DropReason| match reason {
            DropReason::Truncated
            | DropReason::BadIpHeader
            | DropReason::NotVrrp
            | DropReason::TtlNot255
            | DropReason::BadVersion
            | DropReason::BadType
            | DropReason::BadLength
            | DropReason::AddressCountMismatch
            | DropReason::BadChecksum
            | DropReason::ZeroInterval
            | DropReason::UnsupportedAuthentication
            | DropReason::VersionMismatch
            | DropReason::AuthenticationMismatch
            | DropReason::PasswordMismatch
            | DropReason::IntervalMismatch
            | DropReason::UnknownSource => DropReason::ALL.contains(&reason),
        };
        assert!(DropReason::ALL.iter().all(|r| listed(*r)));
        assert_eq!(DropReason::ALL.len(), 16);
        let mut names: Vec<&str> = DropReason::ALL.iter().map(|r| r.name()).collect();
        for (reason, name) in DropReason::ALL.iter().zip(&names) {
            assert!(name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'));
            assert_eq!(
                serde_json::to_string(reason).unwrap(),
                format!("\"{name}\"")
            );
            assert!(!reason.to_string().is_empty());
        }
        assert_eq!(DropReason::TtlNot255.name(), "ttl_not_255");
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), DropReason::ALL.len());
        assert!(DropReason::ALL.windows(2).all(|w| w[0] < w[1]));
    }

    const LB1_LINK_LOCAL: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1);

    fn v6_advert() -> Advert {
        Advert {
            addresses: vec!["2001:2::99".parse().unwrap()],
            ..v3_advert()
        }
    }

    /// What keepalived 2.2.7 sent for an IPv6 instance (`vrrp_version 3`, VRID 51, priority
    /// 101, advert_int 1, `virtual_ipaddress { 2001:2::99 }`) from its link-local address
    /// fe80::ff:fe00:a to ff02::12, captured with tcpdump on a veth pair between two network
    /// namespaces: the IPv6 payload (hop limit 255, traffic class 0xc0), then the priority-0
    /// advert it sent when stopped.
    const KEEPALIVED_2_2_7_V6: [u8; 24] = [
        0x31, 0x33, 0x65, 0x01, 0x00, 0x64, 0x4b, 0xa3, 0x20, 0x01, 0x00, 0x02, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x99,
    ];
    const KEEPALIVED_2_2_7_V6_PRIORITY_0: [u8; 24] = [
        0x31, 0x33, 0x00, 0x01, 0x00, 0x64, 0xb0, 0xa3, 0x20, 0x01, 0x00, 0x02, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x99,
    ];
    const KEEPALIVED_LINK_LOCAL: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0xff, 0xfe00, 0xa);

    #[test]
    fn keepalived_v6_captures_parse_and_match_what_we_emit() {
        for (capture, priority) in [
            (KEEPALIVED_2_2_7_V6, 101),
            (KEEPALIVED_2_2_7_V6_PRIORITY_0, 0),
        ] {
            let received =
                parse_ipv6(&capture, KEEPALIVED_LINK_LOCAL, MULTICAST_GROUP_V6, 255).unwrap();
            let advert = Advert {
                priority,
                ..v6_advert()
            };
            assert_eq!(received.advert, advert);
            assert_eq!(
                advert.emit(
                    KEEPALIVED_LINK_LOCAL,
                    MULTICAST_GROUP_V6,
                    ChecksumMode::default()
                ),
                capture
            );
        }
    }

    #[test]
    fn v6_advert_is_laid_out_with_16_byte_addresses_and_the_ipv6_pseudo_header() {
        let vrrp = v6_advert().emit(LB1_LINK_LOCAL, MULTICAST_GROUP_V6, ChecksumMode::default());
        // RFC 5798 §5.1: version 3 type 1, VRID 51, priority 101, one address, 100 cs.
        assert_eq!(vrrp.len(), 8 + 16);
        assert_eq!(vrrp[..6], [0x31, 51, 101, 1, 0x00, 0x64]);
        assert_eq!(
            vrrp[8..],
            "2001:2::99".parse::<Ipv6Addr>().unwrap().octets()
        );
        // The checksum, computed apart: pseudo-header {source, destination, length 24 in 32
        // bits, three zero bytes, next header 112}, then the message with its field zero.
        let mut summed = Vec::new();
        summed.extend_from_slice(&LB1_LINK_LOCAL.octets());
        summed.extend_from_slice(&MULTICAST_GROUP_V6.octets());
        summed.extend_from_slice(&[0, 0, 0, 24, 0, 0, 0, 112]);
        let mut zeroed = vrrp.clone();
        zeroed[6..8].fill(0);
        summed.extend_from_slice(&zeroed);
        assert_eq!(vrrp[6..8], internet_checksum(&summed).to_be_bytes());
        // Both checksum modes write the same bytes: the mode is an IPv4 matter.
        assert_eq!(
            v6_advert().emit(
                LB1_LINK_LOCAL,
                MULTICAST_GROUP_V6,
                ChecksumMode::WithoutPseudoHeader
            ),
            vrrp
        );
    }

    #[test]
    fn v6_adverts_round_trip() {
        for addresses in [
            vec![],
            vec!["2001:2::99".parse().unwrap()],
            vec![
                "2001:2::99".parse().unwrap(),
                "2001:2:0:1::1".parse().unwrap(),
                "fe80::99".parse().unwrap(),
            ],
        ] {
            let advert = Advert {
                addresses,
                priority: 0,
                ..v6_advert()
            };
            let vrrp = advert.emit(LB1_LINK_LOCAL, MULTICAST_GROUP_V6, ChecksumMode::default());
            assert_eq!(vrrp.len(), advert.buffer_len(Family::Ipv6));
            let received = parse_ipv6(&vrrp, LB1_LINK_LOCAL, MULTICAST_GROUP_V6, 255).unwrap();
            assert_eq!(received.advert, advert);
            assert_eq!(received.source, IpAddr::V6(LB1_LINK_LOCAL));
            assert_eq!(received.destination, IpAddr::V6(MULTICAST_GROUP_V6));
            assert_eq!(received.ttl, 255);
        }
    }

    #[test]
    fn v6_drops_a_hop_limit_other_than_255() {
        let vrrp = v6_advert().emit(LB1_LINK_LOCAL, MULTICAST_GROUP_V6, ChecksumMode::default());
        for hop_limit in [0, 1, 64, 254] {
            assert_eq!(
                parse_ipv6(&vrrp, LB1_LINK_LOCAL, MULTICAST_GROUP_V6, hop_limit),
                Err(DropReason::TtlNot255),
                "hop limit {hop_limit}"
            );
        }
    }

    #[test]
    fn v6_checksum_covers_source_and_destination() {
        let vrrp = v6_advert().emit(LB1_LINK_LOCAL, MULTICAST_GROUP_V6, ChecksumMode::default());
        let other: Ipv6Addr = "fe80::2".parse().unwrap();
        assert_eq!(
            parse_ipv6(&vrrp, other, MULTICAST_GROUP_V6, 255),
            Err(DropReason::BadChecksum)
        );
        // Sent unicast to a peer, not to the group.
        assert_eq!(
            parse_ipv6(&vrrp, LB1_LINK_LOCAL, other, 255),
            Err(DropReason::BadChecksum)
        );
    }

    #[test]
    fn v6_refuses_version_2_and_ipv4_layouts() {
        // Version 2 is not defined over IPv6, whatever its layout.
        let mut v2 = v6_advert().emit(LB1_LINK_LOCAL, MULTICAST_GROUP_V6, ChecksumMode::default());
        v2[0] = 0x21;
        assert_eq!(
            parse_ipv6(&v2, LB1_LINK_LOCAL, MULTICAST_GROUP_V6, 255),
            Err(DropReason::BadVersion)
        );
        // An IPv4 advert's message (4-byte addresses) read as IPv6.
        let v4 = v3_advert().emit(LB1, MULTICAST_GROUP, ChecksumMode::default());
        assert_eq!(
            parse_ipv6(&v4, LB1_LINK_LOCAL, MULTICAST_GROUP_V6, 255),
            Err(DropReason::BadLength)
        );
        // Four IPv4 addresses fill 16 bytes: a whole IPv6 address, but the count says 4.
        let four = Advert {
            addresses: vec![VIP; 4],
            ..v3_advert()
        }
        .emit(LB1, MULTICAST_GROUP, ChecksumMode::default());
        assert_eq!(
            parse_ipv6(&four, LB1_LINK_LOCAL, MULTICAST_GROUP_V6, 255),
            Err(DropReason::AddressCountMismatch)
        );
        assert!(!Family::Ipv6.carries(Version::V2));
        assert!(Family::Ipv4.carries(Version::V2));
    }

    #[test]
    fn v6_every_truncation_and_byte_mutation_is_dropped_without_panic() {
        let good = v6_advert().emit(LB1_LINK_LOCAL, MULTICAST_GROUP_V6, ChecksumMode::default());
        let parse = |bytes: &[u8]| parse_ipv6(bytes, LB1_LINK_LOCAL, MULTICAST_GROUP_V6, 255);
        assert!(parse(&good).is_ok());
        for len in 0..good.len() {
            assert!(parse(&good[..len]).is_err(), "{len} bytes");
        }
        let mut bad = good.clone();
        for at in 0..good.len() {
            for value in 0..=u8::MAX {
                if value == good[at] {
                    continue;
                }
                bad[at] = value;
                // Every byte is in the checksum, the reserved bits too: any change is caught.
                assert!(parse(&bad).is_err(), "byte {at} = {value:#04x}");
            }
            bad[at] = good[at];
        }
    }

    #[test]
    fn advert_displays_for_logs() {
        assert_eq!(
            v3_advert().to_string(),
            "VRRPv3 vrid 51 priority 101 interval 1s addresses [192.168.0.99]"
        );
    }
}
