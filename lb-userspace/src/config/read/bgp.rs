//! `[bgp]`: the AS, the router id, the peers and the VIPs this node announces. The rules that
//! need the services and the VRRP instances (every VIP served, none also floated by VRRP) are
//! in `cross_check.rs`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use super::super::diagnostic::{Pos, Reporter};
use super::super::fields::{Field, Section};
use super::super::model::{Bgp, BgpPeer};

const BGP_KEYS: &[&str] = &["local_as", "router_id", "peers", "vips", "hold_time"];
const PEER_KEYS: &[&str] = &["address", "remote_as", "port", "password", "hold_time"];
/// AS 0 and 4294967295 are reserved (RFC 7607, RFC 7300); 23456 is AS_TRANS (RFC 6793).
const AS_TRANS: u32 = 23456;
/// BIRD's limit for a TCP MD5 password is the kernel's TCP_MD5SIG_MAXKEYLEN.
const MAX_PASSWORD_BYTES: usize = 80;

/// Where each `vips` element is written, for the checks against services and VRRP.
pub(in crate::config) struct BgpSpans {
    pub vips: Vec<Pos>,
}

pub(super) fn read_bgp(report: &mut Reporter, section: Section) -> Option<(Bgp, BgpSpans)> {
    section.reject_unknown_keys(report, BGP_KEYS);
    let local_as = section
        .required(report, "local_as")
        .and_then(|field| as_number(report, field));
    let router_id =
        section
            .required(report, "router_id")
            .and_then(|field| match field.ip(report)? {
                IpAddr::V4(id) if !id.is_unspecified() => Some(id),
                other => {
                    report.error(
                        field.at,
                        format!(
                            "router_id {other} is not a usable BGP identifier: it is a non-zero \
                         IPv4 address (RFC 6286), usually the node's own, e.g. \"198.18.0.100\", \
                         also on IPv6-only nodes"
                        ),
                    );
                    None
                }
            });
    let hold_time = match section.field("hold_time") {
        Some(field) => hold_time(report, field),
        None => Some(Bgp::DEFAULT_HOLD_TIME),
    };
    let peers = section
        .required(report, "peers")
        .and_then(|field| read_peers(report, field, hold_time));
    let vips = section
        .required(report, "vips")
        .and_then(|field| read_vips(report, field));
    let (vips, vip_spans) = vips?;
    Some((
        Bgp {
            local_as: local_as?,
            router_id: router_id?,
            peers: peers?,
            vips,
            hold_time: hold_time?,
        },
        BgpSpans { vips: vip_spans },
    ))
}

fn as_number(report: &mut Reporter, field: Field) -> Option<u32> {
    let number = field.int(report, 1u32, u32::MAX - 1)?;
    if number == AS_TRANS {
        report.error(
            field.at,
            format!(
                "{} = {AS_TRANS} is AS_TRANS (RFC 6793), which no router may use as its own; \
                 a private AS is 64512..=65534 or 4200000000..=4294967294",
                field.key
            ),
        );
        return None;
    }
    Some(number)
}

/// BGP carries the hold time in whole seconds, 0 (no keepalives) or 3..=65535 (RFC 4271 4.2).
/// Zero is refused: a node that died would never be withdrawn.
fn hold_time(report: &mut Reporter, field: Field) -> Option<Duration> {
    let duration = field.duration(report)?;
    if duration.subsec_nanos() != 0 || !(3..=65535).contains(&duration.as_secs()) {
        report.error(
            field.at,
            format!(
                "hold_time = {:?} is not a BGP hold time: whole seconds from \"3s\" to \
                 \"65535s\" (RFC 4271); the router withdraws a silent node's routes after it, \
                 e.g. \"9s\"",
                humantime::format_duration(duration).to_string()
            ),
        );
        return None;
    }
    Some(duration)
}

fn read_peers(
    report: &mut Reporter,
    field: Field,
    default_hold_time: Option<Duration>,
) -> Option<Vec<BgpPeer>> {
    let elements = field.list(report)?;
    if elements.is_empty() {
        report.error(
            field.at,
            "peers is empty: list the routers to announce to, e.g. \
             [{ address = \"198.18.0.1\", remote_as = 65000 }] (or remove [bgp])",
        );
        return None;
    }
    let mut peers = Vec::with_capacity(elements.len());
    let mut seen: HashMap<IpAddr, Pos> = HashMap::new();
    let mut complete = true;
    for element in elements {
        let Some(section) = element.section(report, "a [bgp] peer") else {
            complete = false;
            continue;
        };
        match read_peer(report, section, default_hold_time) {
            Some(peer) => {
                if let Some(first) = seen.insert(peer.address, element.at) {
                    report.error(
                        element.at,
                        format!(
                            "peer {} is listed twice (first on line {}); BGP has one session \
                             per neighbour address",
                            peer.address,
                            report.line_of(first)
                        ),
                    );
                    complete = false;
                }
                peers.push(peer);
            }
            None => complete = false,
        }
    }
    complete.then_some(peers)
}

fn read_peer(
    report: &mut Reporter,
    section: Section,
    default_hold_time: Option<Duration>,
) -> Option<BgpPeer> {
    section.reject_unknown_keys(report, PEER_KEYS);
    let address = section.required(report, "address").and_then(|field| {
        let address = field.ip(report)?;
        if address.is_unspecified() || address.is_multicast() || address.is_loopback() {
            report.error(
                field.at,
                format!(
                    "peer address {address} is not a router's address: give the neighbour's \
                     own unicast address, e.g. \"198.18.0.1\""
                ),
            );
            return None;
        }
        Some(address)
    });
    let remote_as = section
        .required(report, "remote_as")
        .and_then(|field| as_number(report, field));
    let port = match section.field("port") {
        Some(field) => field.int(report, 1u16, u16::MAX),
        None => Some(Bgp::DEFAULT_PORT),
    };
    let password = match section.field("password") {
        Some(field) => field.str(report).and_then(|text| {
            if text.is_empty() || text.len() > MAX_PASSWORD_BYTES || text.contains(['"', '\\']) {
                report.error(
                    field.at,
                    format!(
                        "password must be 1 to {MAX_PASSWORD_BYTES} bytes (the kernel's TCP MD5 \
                         key limit) without '\"' or '\\'"
                    ),
                );
                return None;
            }
            Some(Some(text.to_owned()))
        }),
        None => Some(None),
    };
    let hold_time = match section.field("hold_time") {
        Some(field) => hold_time(report, field),
        None => default_hold_time,
    };
    Some(BgpPeer {
        address: address?,
        remote_as: remote_as?,
        port: port?,
        password: password?,
        hold_time: hold_time?,
    })
}

fn read_vips(report: &mut Reporter, field: Field) -> Option<(Vec<IpAddr>, Vec<Pos>)> {
    let elements = field.list(report)?;
    if elements.is_empty() {
        report.error(
            field.at,
            "vips is empty: list the addresses to announce, e.g. [\"198.18.2.99\"] \
             (or remove [bgp])",
        );
        return None;
    }
    let mut vips = Vec::with_capacity(elements.len());
    let mut spans = Vec::with_capacity(elements.len());
    let mut complete = true;
    for element in elements {
        let Some(vip) = element.ip(report) else {
            complete = false;
            continue;
        };
        if vip.is_unspecified() || vip.is_multicast() || vip.is_loopback() {
            report.error(
                element.at,
                format!(
                    "vip {vip} cannot be announced: give a unicast address, e.g. \"198.18.2.99\""
                ),
            );
            complete = false;
            continue;
        }
        if let Some(index) = vips.iter().position(|&seen| seen == vip) {
            report.error(
                element.at,
                format!(
                    "vip {vip} is listed twice (first on line {})",
                    report.line_of(spans[index])
                ),
            );
            complete = false;
            continue;
        }
        vips.push(vip);
        spans.push(element.at);
    }
    complete.then_some((vips, spans))
}
