//! `tandem status` as a person reads it: one screen, colour on a terminal, plain when piped.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

use super::NodeStatus;

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
    }
    let l4_services: &[serde_json::Value] = status
        .dataplane
        .as_ref()
        .and_then(|dataplane| dataplane.get("services"))
        .and_then(|services| services.as_array())
        .map_or(&[], Vec::as_slice);
    if !status.services.is_empty() || !l4_services.is_empty() {
        let _ = writeln!(out, "\n{}", paint.bold("Services"));
    }
    for service in &status.services {
        render_http_service(&mut out, &paint, service);
    }
    let relay = status
        .dataplane
        .as_ref()
        .is_some_and(|dataplane| text(dataplane, "kind") == "relay");
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

fn text<'a>(value: &'a serde_json::Value, key: &str) -> &'a str {
    value.get(key).and_then(|v| v.as_str()).unwrap_or("?")
}

fn number(value: &serde_json::Value, key: &str) -> u64 {
    value
        .get(key)
        .and_then(serde_json::Value::as_u64)
        .unwrap_or(0)
}

fn health(paint: &Paint, backend: &serde_json::Value) -> String {
    let drained = backend.get("drained").and_then(serde_json::Value::as_bool) == Some(true);
    match backend.get("up").and_then(serde_json::Value::as_bool) {
        Some(true) if drained => paint.state("drain"),
        Some(true) => paint.state("up"),
        Some(false) => paint.state("down"),
        None => String::new(),
    }
}

/// An HTTP service: its policy, counters by status class, and each backend's health, weight,
/// sessions, requests and errors.
fn render_http_service(out: &mut String, paint: &Paint, service: &serde_json::Value) {
    let mut head = vec![
        format!("http on {}", text(service, "listen")),
        text(service, "balance").replace('_', " "),
    ];
    // Plain HTTP/1.1 is the default and goes unsaid.
    let protocol = text(service, "backend_protocol");
    if !matches!(protocol, "http1" | "?") {
        head.push(format!("backends over {protocol}"));
    }
    if let Some(session) = service.get("session").filter(|s| s.is_object()) {
        head.push(format!(
            "{} sessions ({} affinity, {})",
            number(session, "entries"),
            text(session, "type"),
            text(session, "mode")
        ));
    }
    let classes: Vec<String> = service
        .get("requests")
        .and_then(|r| r.as_object())
        .map(|classes| {
            classes
                .iter()
                .filter(|(_, count)| count.as_u64().unwrap_or(0) > 0)
                .map(|(class, count)| format!("{class} {count}"))
                .collect()
        })
        .unwrap_or_default();
    head.push(if classes.is_empty() {
        "no requests yet".to_owned()
    } else {
        format!("requests {}", classes.join(" "))
    });
    head.push(format!("errors {}", number(service, "errors")));
    if number(service, "tunnels") > 0 {
        head.push(format!("tunnels open {}", number(service, "tunnels")));
    }
    let _ = writeln!(
        out,
        "  {}  {}",
        paint.bold(text(service, "name")),
        head.join(", ")
    );
    for backend in service
        .get("backends")
        .and_then(|b| b.as_array())
        .into_iter()
        .flatten()
    {
        let emergency = if backend
            .get("emergency")
            .and_then(serde_json::Value::as_bool)
            == Some(true)
        {
            " (emergency)"
        } else {
            ""
        };
        let _ = writeln!(
            out,
            "    {:<22} {:<6} weight {}{emergency}, sessions {}, requests {}, errors {}  {}",
            text(backend, "address"),
            health(paint, backend),
            number(backend, "weight"),
            number(backend, "sessions"),
            number(backend, "requests"),
            number(backend, "errors"),
            paint.dim(&format!(
                "{} since {}",
                text(backend, "reason"),
                text(backend, "since")
            ))
        );
    }
}

/// An L4 service, as the data plane forwards it: each backend's health, weight, share of new
/// flows, MAC and traffic.
fn render_l4_service(out: &mut String, paint: &Paint, service: &serde_json::Value, relay: bool) {
    let _ = writeln!(
        out,
        "  {}  {} on {}, forwarded by the data plane",
        paint.bold(text(service, "name")),
        text(service, "mode"),
        text(service, "listen")
    );
    for backend in service
        .get("backends")
        .and_then(|b| b.as_array())
        .into_iter()
        .flatten()
    {
        let share = backend
            .get("share")
            .and_then(|share| share.get("percent"))
            .and_then(serde_json::Value::as_f64)
            .unwrap_or(0.0);
        // The relay counts what it relays: connections (TCP) or datagrams (UDP).
        let unit = match (relay, text(service, "mode")) {
            (false, _) => "packets",
            (true, "udp") => "datagrams",
            (true, _) => "connections",
        };
        // The relay connects to backends; only XDP sends them frames by MAC.
        let mac = match backend.get("mac").and_then(|mac| mac.as_str()) {
            _ if relay => String::new(),
            Some(mac) => format!("mac {mac}"),
            None => "mac unresolved".to_owned(),
        };
        let _ = writeln!(
            out,
            "    {:<22} {:<6} weight {}, new flows {share}%, {unit} {}, bytes {}  {}",
            text(backend, "address"),
            health(paint, backend),
            number(backend, "weight"),
            number(backend, "packets"),
            number(backend, "bytes"),
            paint.dim(&mac)
        );
    }
}

fn render_dataplane(out: &mut String, paint: &Paint, dataplane: &serde_json::Value) {
    let kind = match (
        text(dataplane, "kind"),
        dataplane.get("attach_mode").and_then(|m| m.as_str()),
    ) {
        ("xdp", Some(mode)) => format!("XDP ({mode})"),
        ("xdp", None) => "XDP".to_owned(),
        ("relay", _) => "userspace relay (L4 services)".to_owned(),
        (other, _) => other.to_owned(),
    };
    let active = if dataplane.get("active").and_then(serde_json::Value::as_bool) == Some(true) {
        paint.state("up") + " forwarding (this node is master)"
    } else {
        "idle (this node is not master)".to_owned()
    };
    let mut line = format!("  {kind} on {}, {active}", text(dataplane, "interface"));
    if let Some(flows) = dataplane.get("flows").and_then(serde_json::Value::as_u64) {
        let _ = write!(line, ", {flows} flows recorded");
    }
    if let Some(dir) = dataplane.get("pin_dir").and_then(|d| d.as_str()) {
        let _ = write!(line, "  {}", paint.dim(&format!("pinned at {dir}")));
    }
    let _ = writeln!(out, "{line}");
    if let Some(reason) = dataplane.get("fallback_reason").and_then(|r| r.as_str()) {
        let _ = writeln!(out, "  XDP not in use: {reason}");
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
            }],
            services: Vec::new(),
            dataplane: None,
            backend_names: Vec::new(),
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
        status.services = vec![serde_json::json!({
            "name": "web", "listen": "198.18.0.99:80", "balance": "round_robin",
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
        })];
        status.dataplane = Some(serde_json::json!({
            "kind": "xdp", "interface": "eth0", "attach_mode": "generic",
            "pin_dir": "/sys/fs/bpf/tandem", "active": true, "fallback_reason": null, "flows": 4,
            "services": [{"name": "ssh", "listen": "198.18.0.99:22", "mode": "tcp", "backends": [
                {"address": "198.18.0.102:22", "weight": 1, "up": true,
                 "share": {"slots": 65537, "percent": 100.0}, "mac": "02:00:00:00:00:66",
                 "packets": 10, "bytes": 1000}
            ]}]
        }));
        let text = render(&status, Colour::Off);
        for expected in [
            "web  http on 198.18.0.99:80, round robin, 12 sessions (cookie affinity, learn), requests 2xx 1200 4xx 3, errors 2",
            "198.18.0.103:80        DOWN   weight 2, sessions 5, requests 500, errors 2  connect refused since 2026-11-26T05:01:00Z",
            "ssh  tcp on 198.18.0.99:22, forwarded by the data plane",
            "198.18.0.104:80        DRAIN  weight 1, sessions 3",
            "198.18.0.102:22        UP     weight 1, new flows 100%, packets 10, bytes 1000  mac 02:00:00:00:00:66",
            "XDP (generic) on eth0, UP forwarding (this node is master), 4 flows recorded",
        ] {
            assert!(text.contains(expected), "{expected:?} in:\n{text}");
        }
    }
}
