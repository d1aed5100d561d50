//! `tandem status` as a person reads it: one screen, colour on a terminal, plain when piped.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

use super::NodeStatus;
use crate::config::BackendProtocol;
use crate::dataplane::{DataplaneKind, DataplaneStatus, ServiceStatus as L4ServiceStatus};
use crate::proxy::engine::stats::HttpServiceStatus;

/// Whether to colour the output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Colour {
    On,
    Off,
}

struct Paint(Colour);

impl Paint {
    fn wrap(&self, code: &str, text: &str) -> String {
        match self.0 {
            Colour::On => format!("\x1b[{code}m{text}\x1b[0m"),
            Colour::Off => text.to_owned(),
        }
    }
    fn bold(&self, text: &str) -> String {
        self.wrap("1", text)
    }
    fn state(&self, state: &str) -> String {
        let code = match state {
            "master" | "up" => "1;32",
            "backup" => "1;36",
            "fault" | "down" => "1;31",
            _ => "1;33",
        };
        self.wrap(code, &state.to_uppercase())
    }
    fn dim(&self, text: &str) -> String {
        self.wrap("2", text)
    }
}

/// The whole status screen.
pub fn render(status: &NodeStatus, colour: Colour) -> String {
    let paint = Paint(colour);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} {}  {}",
        paint.bold("node"),
        paint.bold(&status.node),
        paint.dim(&format!(
            "pid {}, up {}",
            status.pid,
            humantime::format_duration(Duration::from_secs(status.uptime_seconds as u64))
        ))
    );
    let _ = writeln!(out, "\n{}", paint.bold("VRRP"));
    if status.vrrp.is_empty() {
        let _ = writeln!(out, "  (no instances: this node serves without failover)");
    }
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs_f64())
        .unwrap_or_default();
    for instance in &status.vrrp {
        let master = match instance.master {
            Some(master) if instance.state == "master" => format!("{master} (this node)"),
            Some(master) => master.to_string(),
            None => "unknown".to_owned(),
        };
        let priority = if instance.effective_priority == instance.configured_priority {
            format!("priority {}", instance.effective_priority)
        } else {
            format!(
                "priority {} (configured {})",
                instance.effective_priority, instance.configured_priority
            )
        };
        let _ = writeln!(
            out,
            "  {:<10} {:<8} {}   master {}",
            paint.bold(&instance.name),
            paint.state(&instance.state),
            priority,
            master
        );
        let vips: Vec<String> = instance
            .virtual_ipaddress
            .iter()
            .map(ToString::to_string)
            .collect();
        let since = match instance.last_transition_unix {
            Some(at) => format!(
                "last transition {} ago",
                humantime::format_duration(Duration::from_secs((now - at).max(0.0) as u64))
            ),
            None => "no transition yet".to_owned(),
        };
        let _ = writeln!(
            out,
            "  {:<10} vrid {} v{} on {}, VIP {}",
            "",
            instance.virtual_router_id,
            instance.version,
            instance.interface,
            vips.join(" ")
        );
        let drops = if instance.drops.is_empty() {
            "none dropped".to_owned()
        } else {
            let listed: Vec<String> = instance
                .drops
                .iter()
                .map(|(reason, count)| format!("{reason} {count}"))
                .collect();
            format!("dropped: {}", listed.join(", "))
        };
        let _ = writeln!(
            out,
            "  {:<10} adverts sent {} received {}, {}; {} ({} in all)",
            "",
            instance.adverts_sent,
            instance.adverts_received,
            drops,
            since,
            instance.transitions
        );
        if let Some(fault) = &instance.fault {
            let _ = writeln!(out, "  {:<10} FAULT: {fault}", "");
        }
    }
    if let Some(bgp) = &status.bgp {
        render_bgp(&mut out, &paint, bgp);
    }
    let l4_services = status
        .dataplane
        .as_ref()
        .map_or(&[][..], |dataplane| dataplane.services.as_slice());
    if !status.services.is_empty() || !l4_services.is_empty() {
        let _ = writeln!(out, "\n{}", paint.bold("Services"));
    }
    for service in &status.services {
        render_http_service(&mut out, &paint, service);
    }
    let relay = status
        .dataplane
        .as_ref()
        .is_some_and(|dataplane| dataplane.kind == DataplaneKind::Relay);
    for service in l4_services {
        render_l4_service(&mut out, &paint, service, relay);
    }
    if !status.backend_names.is_empty() {
        let _ = writeln!(out, "\n{}", paint.bold("Backend names"));
    }
    for name in &status.backend_names {
        let addresses: Vec<String> = name.addresses.iter().map(ToString::to_string).collect();
        let age = humantime::format_duration(Duration::from_secs(
            (now as u64).saturating_sub(name.resolved_at),
        ));
        let state = match &name.error {
            None => format!("resolved {age} ago"),
            Some(error) => format!(
                "{}: {error}; keeping the addresses resolved {age} ago",
                paint.state("not resolving")
            ),
        };
        let _ = writeln!(
            out,
            "  {:<10} {} -> {}  {}",
            name.service,
            name.name,
            addresses.join(" "),
            state
        );
    }
    if let Some(dataplane) = &status.dataplane {
        let _ = writeln!(out, "\n{}", paint.bold("Data plane"));
        render_dataplane(&mut out, &paint, dataplane);
    }
    out
}

/// The name serde gives `value` (a config enum's spelling in the file, e.g. "round-robin").
fn spelling<T: serde::Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(text)) => text,
        _ => "?".to_owned(),
    }
}

fn health(paint: &Paint, up: bool, drained: bool) -> String {
    match (up, drained) {
        (true, true) => paint.state("drain"),
        (true, false) => paint.state("up"),
        (false, _) => paint.state("down"),
    }
}

/// An HTTP service: its policy, counters by status class, and each backend's health, weight,
/// sessions, requests and errors.
fn render_http_service(out: &mut String, paint: &Paint, service: &HttpServiceStatus) {
    let upstream = &service.upstream;
    let mut head = vec![
        format!("http on {}", service.listen),
        spelling(&upstream.balance).replace(['_', '-'], " "),
    ];
    // Plain HTTP/1.1 is the default and goes unsaid.
    if upstream.backend_protocol != BackendProtocol::Http1 {
        head.push(format!(
            "backends over {}",
            spelling(&upstream.backend_protocol)
        ));
    }
    if let Some(session) = &upstream.session {
        head.push(format!(
            "{} sessions ({} affinity, {})",
            session.entries,
            spelling(&session.kind),
            spelling(&session.mode)
        ));
    }
    let requests = &service.requests;
    let classes: Vec<String> = [
        ("1xx", requests.informational),
        ("2xx", requests.success),
        ("3xx", requests.redirect),
        ("4xx", requests.client_error),
        ("5xx", requests.server_error),
    ]
    .into_iter()
    .filter(|(_, count)| *count > 0)
    .map(|(class, count)| format!("{class} {count}"))
    .collect();
    head.push(if classes.is_empty() {
        "no requests yet".to_owned()
    } else {
        format!("requests {}", classes.join(" "))
    });
    head.push(format!("errors {}", service.errors));
    if service.tunnels > 0 {
        head.push(format!("tunnels open {}", service.tunnels));
    }
    if let Some(queue) = &upstream.queue {
        head.push(format!(
            "at most {} per backend, {} waiting, {} timed out in the queue",
            queue.max_connections, queue.waiting, queue.timed_out
        ));
    }
    let _ = writeln!(out, "  {}  {}", paint.bold(&service.name), head.join(", "));
    for (i, backend) in upstream.backends.iter().enumerate() {
        let emergency = if backend.emergency {
            " (emergency)"
        } else {
            ""
        };
        let active = upstream
            .queue
            .as_ref()
            .and_then(|queue| queue.active.get(i))
            .map_or_else(String::new, |active| format!(", in progress {active}"));
        let _ = writeln!(
            out,
            "    {:<22} {:<6} weight {}{emergency}, sessions {}, requests {}, errors {}{active}  {}",
            backend.address.to_string(),
            health(paint, backend.up, backend.drained),
            backend.weight,
            backend.sessions,
            backend.requests,
            backend.errors,
            paint.dim(&format!("{} since {}", backend.reason, backend.since))
        );
    }
}

/// An L4 service, as the data plane forwards it: each backend's health, weight, share of new
/// flows, MAC and traffic.
fn render_l4_service(out: &mut String, paint: &Paint, service: &L4ServiceStatus, relay: bool) {
    let _ = writeln!(
        out,
        "  {}  {} on {}, forwarded by the data plane",
        paint.bold(&service.name),
        service.mode,
        service.listen
    );
    for backend in &service.backends {
        // The relay counts what it relays: connections (TCP) or datagrams (UDP).
        let unit = match (relay, service.mode.as_str()) {
            (false, _) => "packets",
            (true, "udp") => "datagrams",
            (true, _) => "connections",
        };
        // The relay connects to backends; only XDP sends them frames by MAC.
        let mac = match &backend.mac {
            _ if relay => String::new(),
            Some(mac) => format!("mac {mac}"),
            None => "mac unresolved".to_owned(),
        };
        let _ = writeln!(
            out,
            "    {:<22} {:<6} weight {}, new flows {}%, {unit} {}, bytes {}  {}",
            backend.address.to_string(),
            health(paint, backend.up, backend.drained),
            backend.weight,
            backend.share.percent,
            backend.packets,
            backend.bytes,
            paint.dim(&mac)
        );
    }
}

fn render_dataplane(out: &mut String, paint: &Paint, dataplane: &DataplaneStatus) {
    let kind = match (dataplane.kind, dataplane.attach_mode) {
        (DataplaneKind::Xdp, Some(mode)) => format!("XDP ({mode})"),
        (DataplaneKind::Xdp, None) => "XDP".to_owned(),
        (DataplaneKind::Relay, _) => "userspace relay (L4 services)".to_owned(),
    };
    let active = if dataplane.active {
        paint.state("up") + " forwarding (this node is master)"
    } else {
        "idle (this node is not master)".to_owned()
    };
    let mut line = format!("  {kind} on {}, {active}", dataplane.interface);
    if let Some(flows) = dataplane.flows {
        let _ = write!(line, ", {flows} flows recorded");
    }
    if let Some(dir) = &dataplane.pin_dir {
        let _ = write!(
            line,
            "  {}",
            paint.dim(&format!("pinned at {}", dir.display()))
        );
    }
    let _ = writeln!(out, "{line}");
    if let Some(shared) = &dataplane.flow_sharing {
        let _ = writeln!(
            out,
            "  flows shared with the peers: {} sent; {} received: {} inserted, {} present already, {} ignored",
            shared.sent, shared.received, shared.inserted, shared.present, shared.ignored
        );
    }
    if let Some(reason) = &dataplane.fallback_reason {
        let _ = writeln!(out, "  XDP not in use: {reason}");
    }
}

/// The BGP section: the sessions, then each VIP with whether it is announced or why not.
fn render_bgp(out: &mut String, paint: &Paint, bgp: &crate::bgp::BgpStatus) {
    let drained = if bgp.drained { ", DRAINED" } else { "" };
    let _ = writeln!(
        out,
        "\n{}  {}",
        paint.bold("BGP"),
        paint.dim(&format!(
            "AS {}, router id {}, BIRD {}{drained}",
            bgp.local_as, bgp.router_id, bgp.bird
        ))
    );
    for session in &bgp.sessions {
        // Green once Established; yellow while connecting (it is not a fault of this node).
        let state = paint.wrap(
            if session.established() {
                "1;32"
            } else {
                "1;33"
            },
            &session.state,
        );
        let _ = writeln!(
            out,
            "  peer {:<24} AS {:<10} {}{}",
            session.peer,
            session.remote_as,
            state,
            if session.info.is_empty() {
                String::new()
            } else {
                format!("  {}", session.info)
            }
        );
    }
    for vip in &bgp.vips {
        if vip.announced {
            let _ = writeln!(out, "  vip  {:<24} announced", vip.vip);
        } else {
            let _ = writeln!(out, "  vip  {:<24} withdrawn: {}", vip.vip, vip.reason);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vrrp::instance::InstanceStatus;

    fn sample() -> NodeStatus {
        NodeStatus {
            node: "lb1".to_owned(),
            pid: 42,
            uptime_seconds: 75.0,
            vrrp: vec![InstanceStatus {
                name: "VI_1".to_owned(),
                interface: "eth0".to_owned(),
                virtual_router_id: 51,
                version: 3,
                state: "master".to_owned(),
                configured_priority: 101,
                effective_priority: 103,
                master: Some("198.18.0.100".parse().unwrap()),
                virtual_ipaddress: vec!["198.18.0.99".parse().unwrap()],
                adverts_sent: 70,
                adverts_received: 2,
                drops: [("ttl_not_255".to_owned(), 3)].into_iter().collect(),
                last_transition_unix: None,
                transitions: 1,
                fault: None,
            }],
            services: Vec::new(),
            dataplane: None,
            backend_names: Vec::new(),
            bgp: None,
        }
    }

    #[test]
    fn backend_names_show_their_addresses_and_a_name_that_stopped_resolving() {
        let mut status = sample();
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .expect("clock")
            .as_secs();
        status.backend_names = vec![
            crate::names::NameStatus {
                service: "web".into(),
                name: "http1.example.com:80".into(),
                addresses: vec!["198.18.0.102:80".parse().unwrap()],
                resolved_at: now - 5,
                error: None,
            },
            crate::names::NameStatus {
                service: "web".into(),
                name: "http2.example.com:80".into(),
                addresses: vec!["198.18.0.103:80".parse().unwrap()],
                resolved_at: now - 60,
                error: Some("failed to lookup address information".into()),
            },
        ];
        let text = render(&status, Colour::Off);
        assert!(
            text.contains("http1.example.com:80 -> 198.18.0.102:80  resolved 5s ago"),
            "{text}"
        );
        assert!(
            text.contains("http2.example.com:80 -> 198.18.0.103:80  NOT RESOLVING: failed to lookup address information; keeping the addresses resolved 1m ago"),
            "{text}"
        );
    }

    #[test]
    fn status_shows_state_priorities_master_and_drops() {
        let text = render(&sample(), Colour::Off);
        assert!(text.contains("MASTER"), "{text}");
        assert!(text.contains("priority 103 (configured 101)"), "{text}");
        assert!(text.contains("198.18.0.100 (this node)"), "{text}");
        assert!(text.contains("ttl_not_255 3"), "{text}");
        assert!(text.contains("adverts sent 70 received 2"), "{text}");
        assert!(!text.contains('\x1b'), "no colour when asked for none");
    }

    #[test]
    fn status_is_coloured_on_a_terminal() {
        assert!(render(&sample(), Colour::On).contains("\x1b[1;32mMASTER"));
    }

    #[test]
    fn services_show_each_backend_with_health_weight_sessions_requests_and_errors() {
        let mut status = sample();
        status.services = vec![serde_json::from_value(serde_json::json!({
            "name": "web", "listen": "198.18.0.99:80", "service": "web", "balance": "round-robin",
            "session": {"type": "cookie", "mode": "learn", "entries": 12},
            "requests": {"1xx": 0, "2xx": 1200, "3xx": 0, "4xx": 3, "5xx": 0},
            "errors": 2,
            "backends": [
                {"address": "198.18.0.102:80", "weight": 1, "emergency": false, "up": true,
                 "reason": "started", "since": "2026-11-26T05:00:00Z", "sessions": 7,
                 "requests": 700, "errors": 0},
                {"address": "198.18.0.104:80", "weight": 1, "emergency": false, "up": true,
                 "drained": true, "reason": "started", "since": "2026-11-26T05:00:00Z",
                 "sessions": 3, "requests": 30, "errors": 0},
                {"address": "198.18.0.103:80", "weight": 2, "emergency": false, "up": false,
                 "reason": "connect refused", "since": "2026-11-26T05:01:00Z", "sessions": 5,
                 "requests": 500, "errors": 2}
            ]
        }))
        .expect("the proxy's status as JSON")];
        status.dataplane = Some(serde_json::from_value(serde_json::json!({
            "kind": "xdp", "interface": "eth0", "attach_mode": "generic",
            "pin_dir": "/sys/fs/bpf/tandem", "active": true, "fallback_reason": null, "flows": 4,
            "flow_sharing": {"sent": 5, "received": 4, "inserted": 2, "present": 1, "ignored": 1},
            "services": [{"name": "ssh", "listen": "198.18.0.99:22", "mode": "tcp", "backends": [
                {"address": "198.18.0.102:22", "weight": 1, "up": true,
                 "share": {"slots": 65537, "percent": 100.0}, "mac": "02:00:00:00:00:66",
                 "packets": 10, "bytes": 1000}
            ]}]
        }))
        .expect("the data plane's status as JSON"));
        let text = render(&status, Colour::Off);
        for expected in [
            "web  http on 198.18.0.99:80, round robin, 12 sessions (cookie affinity, learn), requests 2xx 1200 4xx 3, errors 2",
            "198.18.0.103:80        DOWN   weight 2, sessions 5, requests 500, errors 2  connect refused since 2026-11-26T05:01:00Z",
            "ssh  tcp on 198.18.0.99:22, forwarded by the data plane",
            "198.18.0.104:80        DRAIN  weight 1, sessions 3",
            "198.18.0.102:22        UP     weight 1, new flows 100%, packets 10, bytes 1000  mac 02:00:00:00:00:66",
            "XDP (generic) on eth0, UP forwarding (this node is master), 4 flows recorded",
            "flows shared with the peers: 5 sent; 4 received: 2 inserted, 1 present already, 1 ignored",
        ] {
            assert!(text.contains(expected), "{expected:?} in:\n{text}");
        }
    }

    #[test]
    fn bgp_shows_each_session_state_and_why_a_vip_is_withdrawn() {
        let mut status = sample();
        status.bgp = Some(
            serde_json::from_value(serde_json::json!({
                "local_as": 65001, "router_id": "198.18.0.100", "bird": "running (pid 7)",
                "drained": false,
                "sessions": [
                    {"peer": "198.18.0.1", "remote_as": 65000, "state": "Established", "info": ""},
                    {"peer": "198.18.0.2", "remote_as": 65000, "state": "Active",
                     "info": "Socket: Connection refused"}
                ],
                "vips": [
                    {"vip": "198.18.2.99", "announced": true, "reason": ""},
                    {"vip": "198.18.2.98", "announced": false,
                     "reason": "no backend of dns is up (and not drained)"}
                ]
            }))
            .expect("BGP status as JSON"),
        );
        let text = render(&status, Colour::Off);
        for expected in [
            "BGP  AS 65001, router id 198.18.0.100, BIRD running (pid 7)",
            "peer 198.18.0.1               AS 65000      Established",
            "peer 198.18.0.2               AS 65000      Active  Socket: Connection refused",
            "vip  198.18.2.99              announced",
            "vip  198.18.2.98              withdrawn: no backend of dns is up (and not drained)",
        ] {
            assert!(text.contains(expected), "{expected:?} in:\n{text}");
        }
    }
}
