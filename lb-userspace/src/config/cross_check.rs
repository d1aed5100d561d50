//! Rules that compare entries with each other: unique names, one VRID per interface, each
//! virtual address in one instance, one service per listen socket; and the warnings about
//! configs that load but probably do not do what their author expects.
//!
//! A repeated value is reported at its second occurrence, with the line of the first, since
//! the later one is usually the copy-pasted entry that was not edited.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

use super::diagnostic::{Pos, Reporter};
use super::model::{Service, SessionMode, VrrpInstance};
use super::read::{Document, ServiceSpans, VrrpSpans};

pub(super) fn check(report: &mut Reporter, document: &Document) {
    check_vrrp(report, &document.vrrp);
    check_services(report, &document.services);
    check_replication(report, document);
    check_bgp(report, document);
    warn(report, document);
}

/// A BGP VIP is announced only while a service on it can serve, so a VIP no service listens
/// on could never be announced; and an address is either floated by VRRP or announced by
/// every node, not both (two nodes would hold it on their interfaces while the router also
/// sends it to a third). Each VIP needs a peer of its family: BIRD announces IPv4 routes to
/// IPv4 neighbours and IPv6 to IPv6 ones here.
fn check_bgp(report: &mut Reporter, document: &Document) {
    let Some((bgp, spans)) = &document.bgp else {
        return;
    };
    for (&vip, &at) in bgp.vips.iter().zip(&spans.vips) {
        let served = document.services.iter().any(|(service, _)| {
            let listen = service.listen.ip();
            listen == vip || (listen.is_unspecified() && listen.is_ipv4() == vip.is_ipv4())
        });
        if !served {
            let example = if vip.is_ipv4() {
                format!("\"{vip}:80\"")
            } else {
                format!("\"[{vip}]:80\"")
            };
            report.error(
                at,
                format!(
                    "vip {vip} is served by no [[service]]: a node announces a VIP only while \
                     a service on it has a healthy backend; add a service with listen = \
                     {example}, or remove the VIP"
                ),
            );
        }
        for (instance, instance_spans) in &document.vrrp {
            if instance.virtual_ipaddress.contains(&vip) {
                report.error(
                    at,
                    format!(
                        "vip {vip} is also in [[vrrp]] {:?} (line {}): an address is either \
                         floated by VRRP or announced over BGP by every node; remove it from \
                         one of them",
                        instance.name,
                        report.line_of(instance_spans.name)
                    ),
                );
            }
        }
        if !bgp
            .peers
            .iter()
            .any(|peer| peer.address.is_ipv4() == vip.is_ipv4())
        {
            let family = if vip.is_ipv4() { "IPv4" } else { "IPv6" };
            report.error(
                at,
                format!(
                    "vip {vip} is {family} but no [bgp] peer is: add the router's {family} \
                     address to peers to announce it"
                ),
            );
        }
    }
}

/// The replication listener is one more TCP socket on the node: it must not take a service's.
/// And replication that has nothing to send (no learned sessions, no L4 flows) is probably a
/// config that lost its session table.
fn check_replication(report: &mut Reporter, document: &Document) {
    let Some((replication, listen_at)) = &document.replication else {
        return;
    };
    let listen = replication.listen;
    for (service, spans) in &document.services {
        let overlaps = service.listen.port() == listen.port()
            && (service.listen.ip() == listen.ip()
                || service.listen.ip().is_unspecified()
                || listen.ip().is_unspecified());
        if overlaps && service.mode.ip_protocol() == lb_common::IPPROTO_TCP {
            report.error(
                *listen_at,
                format!(
                    "replication listen {listen} overlaps service {:?}'s listen {} (line {}); \
                     give replication a port of its own, e.g. {}:7946",
                    service.name,
                    service.listen,
                    report.line_of(spans.listen),
                    listen.ip()
                ),
            );
        }
    }
    let learns = document.services.iter().any(|(service, _)| {
        service
            .session
            .as_ref()
            .is_some_and(|session| session.mode == SessionMode::Learn)
    });
    // L4 services share their flows over the same link (the XDP data plane does).
    let forwards = document
        .services
        .iter()
        .any(|(service, _)| service.mode.is_l4());
    if !learns && !forwards {
        report.warning(
            *listen_at,
            "[replication] has nothing to replicate: no service has a session with \
             mode = \"learn\", and no L4 service (mode tcp or udp) has flows to share",
        );
    }
}

fn check_vrrp(report: &mut Reporter, instances: &[(VrrpInstance, VrrpSpans)]) {
    let mut names: HashMap<&str, Pos> = HashMap::new();
    let mut router_ids: HashMap<(&str, u8, bool), (&str, Pos)> = HashMap::new();
    let mut addresses: HashMap<IpAddr, (&str, Pos)> = HashMap::new();
    for (instance, spans) in instances {
        if let Some(&first) = names.get(instance.name.as_str()) {
            report.error(
                spans.name,
                format!(
                    "duplicate [[vrrp]] name {:?} (first used at line {}); give each instance \
                     its own name",
                    instance.name,
                    report.line_of(first)
                ),
            );
        } else {
            names.insert(&instance.name, spans.name);
        }

        // The VRID is the last byte of the virtual MAC, so two instances with one id on one
        // link would fight over the same MAC address and each other's adverts. VRRP over IPv6
        // is another protocol with its own MACs (00:00:5e:00:02:xx), so an IPv4 and an IPv6
        // instance may share an id, as in keepalived.
        let ipv6 = instance
            .virtual_ipaddress
            .first()
            .is_some_and(IpAddr::is_ipv6);
        let router = (
            instance.interface.as_str(),
            instance.virtual_router_id,
            ipv6,
        );
        if let Some(&(owner, first)) = router_ids.get(&router) {
            report.error(
                spans.virtual_router_id,
                format!(
                    "virtual_router_id {} is already used on interface {:?} by [[vrrp]] {owner:?} \
                     (line {}); each {} instance on one interface needs its own id",
                    instance.virtual_router_id,
                    instance.interface,
                    report.line_of(first),
                    if ipv6 { "IPv6" } else { "IPv4" }
                ),
            );
        } else {
            router_ids.insert(router, (&instance.name, spans.virtual_router_id));
        }

        for (address, &at) in instance
            .virtual_ipaddress
            .iter()
            .zip(&spans.virtual_ipaddress)
        {
            if let Some(&(owner, first)) = addresses.get(address) {
                let owner = if owner == instance.name {
                    "this instance".to_owned()
                } else {
                    format!("[[vrrp]] {owner:?}")
                };
                report.error(
                    at,
                    format!(
                        "virtual address {address} is already listed in {owner} (line {}); an \
                         address can float with only one instance",
                        report.line_of(first)
                    ),
                );
            } else {
                addresses.insert(*address, (&instance.name, at));
            }
        }
    }
}

fn check_services(report: &mut Reporter, services: &[(Service, ServiceSpans)]) {
    let mut names: HashMap<&str, Pos> = HashMap::new();
    // HTTP and TCP services both listen on TCP, so they compete for the same sockets; HTTP
    // services may share one when Host and path tell their requests apart.
    let mut sockets: HashMap<(SocketAddr, u8), Vec<(&Service, Pos)>> = HashMap::new();
    for (index, (service, spans)) in services.iter().enumerate() {
        if index == lb_common::MAX_SERVICES as usize {
            report.error(
                spans.name,
                format!(
                    "too many services: the data plane holds at most {}",
                    lb_common::MAX_SERVICES
                ),
            );
        }
        if let Some(&first) = names.get(service.name.as_str()) {
            report.error(
                spans.name,
                format!(
                    "duplicate [[service]] name {:?} (first used at line {}); give each service \
                     its own name",
                    service.name,
                    report.line_of(first)
                ),
            );
        } else {
            names.insert(&service.name, spans.name);
        }

        let socket = (service.listen, service.mode.ip_protocol());
        let sharing = sockets.entry(socket).or_default();
        let conflict = sharing.iter().find_map(|&(owner, first)| {
            share_problem(owner, service).map(|why| (owner, first, why))
        });
        if let Some((owner, first, why)) = conflict {
            let transport = if socket.1 == lb_common::IPPROTO_UDP {
                "udp"
            } else {
                "tcp"
            };
            report.error(
                spans.listen,
                format!(
                    "listen {} ({transport}) is already used by service {:?} (line {}); {why}",
                    service.listen,
                    owner.name,
                    report.line_of(first)
                ),
            );
        } else {
            sharing.push((service, spans.listen));
        }
    }
}

/// Why `second` cannot listen where `first` does, or `None` if they can share the socket.
fn share_problem(first: &Service, second: &Service) -> Option<&'static str> {
    if first.mode.is_l4() || second.mode.is_l4() {
        return Some("use another address or port");
    }
    if first.http.tls.is_some() != second.http.tls.is_some() {
        return Some(
            "services on one listener must agree on TLS: give both a `tls` table or neither",
        );
    }
    let same_hosts = first.http.hosts.is_empty() && second.http.hosts.is_empty()
        || first
            .http
            .hosts
            .iter()
            .any(|host| second.http.hosts.contains(host));
    if same_hosts && first.http.path_prefix == second.http.path_prefix {
        return Some(
            "HTTP services can share a listener only when their `host` or `path_prefix` \
             differ; set one of them, or use another address or port",
        );
    }
    None
}

fn warn(report: &mut Reporter, document: &Document) {
    let bgp_vips: &[IpAddr] = document
        .bgp
        .as_ref()
        .map_or(&[], |(bgp, _)| bgp.vips.as_slice());
    if !document.has_vrrp_entries && bgp_vips.is_empty() {
        report.warning(
            Pos::START,
            "no [[vrrp]] instance: this node has no failover, and services are reachable only \
             where their listen addresses already exist",
        );
        return;
    }
    let virtual_addresses: Vec<IpAddr> = document
        .vrrp
        .iter()
        .flat_map(|(instance, _)| instance.virtual_ipaddress.iter().copied())
        .chain(bgp_vips.iter().copied())
        .collect();
    for (service, spans) in &document.services {
        let address = service.listen.ip();
        // 0.0.0.0 (HTTP only) listens on every address, the virtual ones included.
        if address.is_unspecified() || virtual_addresses.contains(&address) {
            continue;
        }
        report.warning(
            spans.listen,
            format!(
                "service {:?} listens on {address}, which is not a virtual_ipaddress of any \
                 [[vrrp]] instance{}: it does not fail over, and is reachable only where that \
                 address exists",
                service.name,
                if bgp_vips.is_empty() {
                    ""
                } else {
                    " nor a [bgp] vip"
                }
            ),
        );
    }
}
