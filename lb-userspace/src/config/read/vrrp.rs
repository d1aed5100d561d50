//! `[[vrrp]]` entries: the instance, its addresses and interval, its authentication, its
//! trackers.

use std::net::IpAddr;
use std::time::Duration;

use crate::config::diagnostic::{Pos, Reporter};
use crate::config::fields::{Field, Section};
use crate::config::model::{BuiltinCheck, Track, VrrpAuthentication, VrrpInstance};

use super::{interface_name, optional, VrrpSpans};

const VRRP_KEYS: &[&str] = &[
    "name",
    "interface",
    "virtual_router_id",
    "priority",
    "version",
    "advert_interval",
    "preempt",
    "preempt_delay",
    "virtual_ipaddress",
    "unicast_peer",
    "allowed_sources",
    "track",
    "garp_master_repeat",
    "garp_master_delay",
    "notify",
    "checksum_pseudo_header",
    "authentication",
];
const AUTHENTICATION_KEYS: &[&str] = &["type", "password"];

/// keepalived's bound: a tracker can move a priority by at most 254 either way.
const MAX_TRACK_WEIGHT: i32 = 254;
/// VRRPv3 carries the advert interval in centiseconds in 12 bits (RFC 5798 5.2.7).
const V3_INTERVAL_STEP: Duration = Duration::from_millis(10);
const V3_MAX_INTERVAL: Duration = Duration::from_millis(4095 * 10);
/// VRRPv2 carries it in whole seconds in 8 bits (RFC 3768 5.3.7).
const V2_MAX_INTERVAL_SECS: u64 = 255;

/// What a track entry watches, named by the key that says so; an entry has exactly one.
#[derive(Clone, Copy)]
enum TrackKind {
    Builtin,
    Script,
    Interface,
}
const TRACK_KINDS: &[(&str, TrackKind)] = &[
    ("builtin", TrackKind::Builtin),
    ("script", TrackKind::Script),
    ("interface", TrackKind::Interface),
];
const TRACK_BUILTIN_KEYS: &[&str] = &["builtin", "weight"];
const TRACK_SCRIPT_KEYS: &[&str] = &["script", "interval", "timeout", "rise", "fall", "weight"];
const TRACK_INTERFACE_KEYS: &[&str] = &["interface", "weight"];

pub(super) fn read_vrrp(
    report: &mut Reporter,
    section: Section,
    node_interface: Option<&str>,
) -> Option<(VrrpInstance, VrrpSpans)> {
    section.reject_unknown_keys(report, VRRP_KEYS);
    let name_field = section.required(report, "name");
    let name = name_field.and_then(|field| field.non_empty_str(report));
    // Without a valid [node] interface there is nothing to default to; that error is reported.
    let interface = match section.field("interface") {
        Some(field) => interface_name(report, field),
        None => node_interface.map(str::to_owned),
    };
    let vrid_field = section.required(report, "virtual_router_id");
    let virtual_router_id = vrid_field.and_then(|field| field.int(report, 1u8, u8::MAX));
    let priority = optional(
        &section,
        "priority",
        VrrpInstance::DEFAULT_PRIORITY,
        |field| field.int(report, 1u8, u8::MAX),
    );
    let version_field = section.field("version");
    let version = match version_field {
        Some(field) => field.int(report, 2u8, 3u8),
        None => Some(VrrpInstance::DEFAULT_VERSION),
    };
    let interval_field = section.field("advert_interval");
    let advert_interval = match interval_field {
        Some(field) => field
            .positive_duration(report)
            .filter(|&interval| match version {
                Some(version) => advert_interval_fits(report, field, version, interval),
                // The version is wrong and reported; the interval cannot be judged without it.
                None => true,
            }),
        None => Some(VrrpInstance::DEFAULT_ADVERT_INTERVAL),
    };
    let preempt = optional(&section, "preempt", true, |field| field.bool(report));
    let preempt_delay = optional(&section, "preempt_delay", Duration::ZERO, |field| {
        field.duration(report)
    });
    let virtual_ipaddress = match section.required(report, "virtual_ipaddress") {
        Some(field) => virtual_addresses(report, field),
        None => None,
    };
    let unicast_peer = match section.field("unicast_peer") {
        Some(field) => field.list(report).map(|peers| {
            peers
                .iter()
                .filter_map(|peer| peer.ip(report))
                .collect::<Vec<_>>()
        }),
        None => Some(Vec::new()),
    };
    // Adverts are taken only from these (multicast); with unicast peers, only from the peers.
    let allowed_sources = match section.field("allowed_sources") {
        Some(field) => {
            let sources = field.list(report).map(|sources| {
                sources
                    .iter()
                    .filter_map(|source| source.ip(report))
                    .collect::<Vec<_>>()
            });
            if unicast_peer.as_ref().is_some_and(|peers| !peers.is_empty()) {
                report.error(
                    field.at,
                    "allowed_sources is for multicast adverts; with unicast_peer set, adverts \
                     are taken from the peers only: remove allowed_sources or unicast_peer",
                );
            }
            sources
        }
        None => Some(Vec::new()),
    };
    let track = match section.field("track") {
        Some(field) => field.list(report).map(|entries| {
            entries
                .iter()
                .filter_map(|entry| read_track(report, *entry))
                .collect::<Vec<_>>()
        }),
        None => Some(Vec::new()),
    };

    let garp_master_repeat = optional(
        &section,
        "garp_master_repeat",
        VrrpInstance::DEFAULT_GARP_REPEAT,
        |field| field.int(report, 0u32, 100u32),
    );
    let garp_master_delay = optional(
        &section,
        "garp_master_delay",
        VrrpInstance::DEFAULT_GARP_DELAY,
        |field| field.duration(report),
    );
    let notify = match section.field("notify") {
        Some(field) => field
            .non_empty_str(report)
            .map(|script| Some(script.to_owned())),
        None => Some(None),
    };
    let checksum_pseudo_header = optional(&section, "checksum_pseudo_header", true, |field| {
        field.bool(report)
    });
    let authentication = match section.field("authentication") {
        Some(field) => read_authentication(report, field, version).map(Some),
        None => Some(None),
    };

    let virtual_ipaddress = virtual_ipaddress?;
    let family = one_family(report, &virtual_ipaddress, version)?;
    let unicast_peer = unicast_peer?;
    let allowed_sources = allowed_sources?;
    for (key, addresses) in [
        ("unicast_peer", &unicast_peer),
        ("allowed_sources", &allowed_sources),
    ] {
        if let Some(other) = addresses
            .iter()
            .find(|address| address.is_ipv6() != family.is_ipv6())
        {
            report.error(
                section.field(key).map_or(section.at, |field| field.at),
                format!(
                    "{key} {other} is not {family} like the instance's virtual_ipaddress: VRRP \
                     adverts go between addresses of one family; list the peers' {family} \
                     addresses"
                ),
            );
            return None;
        }
        // RFC 5798 §5.1.2.1: an IPv6 advert comes from its sender's link-local address, and
        // that is the source these lists are compared with; a global address never matches.
        if let Some(global) = addresses.iter().find(|address| match address {
            IpAddr::V6(address) => address.segments()[0] & 0xffc0 != 0xfe80,
            IpAddr::V4(_) => false,
        }) {
            report.error(
                section.field(key).map_or(section.at, |field| field.at),
                format!(
                    "{key} {global} is not a link-local address: IPv6 adverts come from the \
                     sender's link-local address (RFC 5798), so list the peers' fe80:: \
                     addresses (`ip -6 addr show scope link` on each peer)"
                ),
            );
            return None;
        }
    }
    let (virtual_ipaddress, vip_spans) = virtual_ipaddress.into_iter().unzip();
    let spans = VrrpSpans {
        name: name_field?.at,
        virtual_router_id: vrid_field?.at,
        virtual_ipaddress: vip_spans,
    };
    let instance = VrrpInstance {
        name: name?.to_owned(),
        interface: interface?,
        virtual_router_id: virtual_router_id?,
        priority: priority?,
        version: version?,
        advert_interval: advert_interval?,
        preempt: preempt?,
        preempt_delay: preempt_delay?,
        virtual_ipaddress,
        unicast_peer,
        allowed_sources,
        track: track?,
        garp_master_repeat: garp_master_repeat?,
        garp_master_delay: garp_master_delay?,
        notify: notify?,
        checksum_pseudo_header: checksum_pseudo_header?,
        authentication: authentication?,
    };
    Some((instance, spans))
}

/// `authentication = { type = "PASS", password = "..." }`, for a VRRPv2 instance (`version` is
/// the instance's, `None` when it is wrong and reported already).
fn read_authentication(
    report: &mut Reporter,
    field: Field,
    version: Option<u8>,
) -> Option<VrrpAuthentication> {
    if !field.is_table() {
        report.error(
            field.at,
            format!(
                "authentication is a table, e.g. {{ type = \"PASS\", password = \"secret\" }}; \
                 found {}",
                field.type_name()
            ),
        );
        return None;
    }
    let section = field.section(report, "authentication")?;
    section.reject_unknown_keys(report, AUTHENTICATION_KEYS);
    // Version 3 has no Auth Type field (RFC 5798), and keepalived ignores authentication there.
    let for_v2 = version != Some(3);
    if !for_v2 {
        report.error(
            field.at,
            "authentication is for VRRP version 2 only (version 3 has none): set version = 2, \
             as the keepalived peer that uses auth_type PASS speaks it, or remove \
             authentication",
        );
    }
    let kind = section.required(report, "type").and_then(|kind| {
        if kind.is_str() && kind.str(report) == Some("AH") {
            report.error(
                kind.at,
                "type = \"AH\" (IPsec authentication header) is not supported: use type = \
                 \"PASS\" on both nodes, or remove authentication on both",
            );
            return None;
        }
        kind.choice(report, &[("PASS", ())])
    });
    let password = section
        .required(report, "password")
        .and_then(|password| read_password(report, password));
    kind?;
    let password = password?;
    for_v2.then_some(VrrpAuthentication::Pass { password })
}

/// A PASS password: what keepalived's `auth_pass` can hold, 1 to 8 bytes.
fn read_password(report: &mut Reporter, field: Field) -> Option<String> {
    let text = field.str(report)?;
    let max = VrrpAuthentication::MAX_PASSWORD_BYTES;
    let problem = if text.is_empty() {
        Some(format!(
            "password is empty: write 1 to {max} bytes, the same as the peer's auth_pass, \
             e.g. password = \"secret\""
        ))
    } else if text.len() > max {
        // keepalived keeps the first 8 bytes of a longer auth_pass: that is what its peer has.
        let kept = match text.get(..max) {
            Some(prefix) => format!(", {prefix:?} here"),
            None => String::new(),
        };
        Some(format!(
            "password is {} bytes; a VRRPv2 advert carries at most {max}: shorten it (a \
             keepalived peer given this auth_pass uses its first {max} bytes{kept})",
            text.len()
        ))
    } else if text.contains('\0') {
        Some("password contains a NUL byte, which keepalived's auth_pass cannot hold".to_owned())
    } else {
        None
    };
    match problem {
        Some(message) => {
            report.error(field.at, message);
            None
        }
        None => Some(text.to_owned()),
    }
}

/// Whether the advert interval can be sent in `version`'s packet field; reports it if not.
fn advert_interval_fits(
    report: &mut Reporter,
    field: Field,
    version: u8,
    interval: Duration,
) -> bool {
    let shown = humantime::format_duration(interval);
    let problem = if version == 2 {
        let whole_seconds = interval.subsec_nanos() == 0;
        (!whole_seconds || interval.as_secs() > V2_MAX_INTERVAL_SECS).then(|| {
            format!(
                "advert_interval = \"{shown}\" does not fit VRRPv2, which counts whole seconds: \
                 allowed 1s to {V2_MAX_INTERVAL_SECS}s (or set version = 3 for sub-second adverts)"
            )
        })
    } else if !interval
        .as_nanos()
        .is_multiple_of(V3_INTERVAL_STEP.as_nanos())
    {
        Some(format!(
            "advert_interval = \"{shown}\" is not a multiple of 10ms: VRRPv3 counts centiseconds"
        ))
    } else if interval > V3_MAX_INTERVAL {
        Some(format!(
            "advert_interval = \"{shown}\" is out of range for VRRPv3 (allowed: 10ms to 40s 950ms)"
        ))
    } else {
        None
    };
    match problem {
        Some(message) => {
            report.error(field.at, message);
            false
        }
        None => true,
    }
}

/// An instance's addresses are all IPv4 or all IPv6, as keepalived's are (one instance per
/// family: they are separate protocols on the wire, VRRP over IPv4 and over IPv6), and IPv6
/// needs VRRP version 3. Returns the family, or reports the first address that breaks it.
fn one_family(
    report: &mut Reporter,
    addresses: &[(IpAddr, Pos)],
    version: Option<u8>,
) -> Option<Family> {
    let &[(first, _), ..] = addresses else {
        return None;
    };
    let family = Family::of(first);
    if let Some(&(other, at)) = addresses
        .iter()
        .find(|(address, _)| Family::of(*address) != family)
    {
        report.error(
            at,
            format!(
                "virtual_ipaddress {other} is {} but {first} is {family}: one instance carries \
                 one family, as in keepalived; put the {} addresses in a second [[vrrp]] \
                 instance (it may use the same virtual_router_id)",
                Family::of(other),
                Family::of(other)
            ),
        );
        return None;
    }
    if family == Family::Ipv6 && version == Some(2) {
        report.error(
            addresses[0].1,
            format!(
                "virtual_ipaddress {first} is IPv6, which VRRP version 2 cannot carry: set \
                 version = 3 (RFC 5798), as keepalived needs for IPv6 too"
            ),
        );
        return None;
    }
    Some(family)
}

/// The address family of an instance, as messages name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    Ipv4,
    Ipv6,
}

impl Family {
    fn of(address: IpAddr) -> Family {
        match address {
            IpAddr::V4(_) => Family::Ipv4,
            IpAddr::V6(_) => Family::Ipv6,
        }
    }

    fn is_ipv6(self) -> bool {
        self == Family::Ipv6
    }
}

impl std::fmt::Display for Family {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Family::Ipv4 => "IPv4",
            Family::Ipv6 => "IPv6",
        })
    }
}

/// The `virtual_ipaddress` list with where each address is written. Accepts "a.b.c.d" and
/// "a.b.c.d/32", "2001:2::99" and "2001:2::99/128": a virtual address is one host, so any other
/// prefix length is a mistake.
fn virtual_addresses(report: &mut Reporter, field: Field) -> Option<Vec<(IpAddr, Pos)>> {
    let elements = field.list(report)?;
    if elements.is_empty() {
        report.error(
            field.at,
            "virtual_ipaddress is empty: list the address(es) that float, e.g. [\"198.18.0.99\"]",
        );
        return None;
    }
    let mut addresses = Vec::with_capacity(elements.len());
    let mut complete = true;
    for element in elements {
        match virtual_address(report, element) {
            Some(address) => addresses.push((address, element.at)),
            None => complete = false,
        }
    }
    complete.then_some(addresses)
}

fn virtual_address(report: &mut Reporter, field: Field) -> Option<IpAddr> {
    let text = field.str(report)?;
    let (address, prefix) = match text.split_once('/') {
        Some((address, prefix)) => (address, Some(prefix)),
        None => (text, None),
    };
    let Ok(address) = address.parse::<IpAddr>() else {
        report.error(
            field.at,
            format!(
                "virtual_ipaddress {text:?} is not an IP address; write e.g. \"198.18.0.99\" \
                 or \"2001:2::99\""
            ),
        );
        return None;
    };
    let host_prefix = if address.is_ipv4() { "32" } else { "128" };
    match prefix {
        None => Some(address),
        Some(prefix) if prefix == host_prefix => Some(address),
        Some(prefix) => {
            report.error(
                field.at,
                format!(
                    "virtual_ipaddress {text:?} has prefix length /{prefix}: a virtual address is \
                     a single host; write \"{address}\" (or \"{address}/{host_prefix}\")"
                ),
            );
            None
        }
    }
}

fn read_track(report: &mut Reporter, field: Field) -> Option<Track> {
    if !field.is_table() {
        report.error(
            field.at,
            format!(
                "a track entry is a table, e.g. {{ builtin = \"proxy\", weight = 2 }}; found {}",
                field.type_name()
            ),
        );
        return None;
    }
    let section = field.section(report, "track entry")?;
    let kinds: Vec<(&str, TrackKind)> = TRACK_KINDS
        .iter()
        .copied()
        .filter(|(key, _)| section.has(key))
        .collect();
    match kinds.as_slice() {
        [] => {
            report.error(
                section.at,
                "a track entry needs one of `builtin`, `script` or `interface`, \
                 e.g. { builtin = \"proxy\", weight = 2 }",
            );
            None
        }
        [(_, TrackKind::Builtin)] => {
            section.reject_unknown_keys(report, TRACK_BUILTIN_KEYS);
            let check = section
                .field("builtin")
                .and_then(|field| field.choice(report, &[("proxy", BuiltinCheck::Proxy)]));
            let weight = track_weight(report, &section);
            Some(Track::Builtin {
                check: check?,
                weight: weight?,
            })
        }
        [(_, TrackKind::Script)] => {
            section.reject_unknown_keys(report, TRACK_SCRIPT_KEYS);
            let script = section
                .field("script")
                .and_then(|field| field.non_empty_str(report));
            let interval = optional(&section, "interval", Track::DEFAULT_SCRIPT_INTERVAL, |f| {
                f.positive_duration(report)
            });
            // keepalived gives a script the whole interval to finish unless told otherwise.
            let timeout = match section.field("timeout") {
                Some(field) => field.positive_duration(report),
                None => interval,
            };
            let rise = optional(&section, "rise", 1, |field| field.int(report, 1, u32::MAX));
            let fall = optional(&section, "fall", 1, |field| field.int(report, 1, u32::MAX));
            let weight = track_weight(report, &section);
            Some(Track::Script {
                script: script?.to_owned(),
                interval: interval?,
                timeout: timeout?,
                rise: rise?,
                fall: fall?,
                weight: weight?,
            })
        }
        [(_, TrackKind::Interface)] => {
            section.reject_unknown_keys(report, TRACK_INTERFACE_KEYS);
            let interface = section
                .field("interface")
                .and_then(|field| interface_name(report, field));
            let weight = track_weight(report, &section);
            Some(Track::Interface {
                interface: interface?,
                weight: weight?,
            })
        }
        [(first, _), (second, _), ..] => {
            let at = section.key_at(second).unwrap_or(section.at);
            report.error(
                at,
                format!(
                    "a track entry watches one thing, but this one has both `{first}` and \
                     `{second}`; split it into two entries"
                ),
            );
            None
        }
    }
}

/// A tracker's weight; 0 (the default, as in keepalived) means "failure puts the instance in
/// Fault" rather than "lower the priority".
fn track_weight(report: &mut Reporter, section: &Section) -> Option<i32> {
    optional(section, "weight", 0, |field| {
        field.int(report, -MAX_TRACK_WEIGHT, MAX_TRACK_WEIGHT)
    })
}
