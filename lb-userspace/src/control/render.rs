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
    for service in &status.services {
        if out.ends_with('\n') && !out.contains("\nServices\n") {
            let _ = writeln!(out, "\n{}", paint.bold("Services"));
        }
        render_service(&mut out, &paint, service);
    }
    if let Some(dataplane) = &status.dataplane {
        let _ = writeln!(out, "\n{}", paint.bold("Data plane"));
        let _ = writeln!(out, "  {}", compact(dataplane));
    }
    out
}

fn render_service(out: &mut String, paint: &Paint, service: &serde_json::Value) {
    let name = service.get("name").and_then(|v| v.as_str()).unwrap_or("?");
    let _ = writeln!(
        out,
        "  {}  {}",
        paint.bold(name),
        compact_without(service, &["name", "backends"])
    );
    if let Some(backends) = service.get("backends").and_then(|v| v.as_array()) {
        for backend in backends {
            let address = backend
                .get("address")
                .and_then(|v| v.as_str())
                .unwrap_or("?");
            let health = match backend.get("up").and_then(|v| v.as_bool()) {
                Some(true) => paint.state("up"),
                Some(false) => paint.state("down"),
                None => String::new(),
            };
            let _ = writeln!(
                out,
                "    {:<22} {:<6} {}",
                address,
                health,
                compact_without(backend, &["address", "up"])
            );
        }
    }
}

fn compact(value: &serde_json::Value) -> String {
    compact_without(value, &[])
}

/// `key value` pairs of an object's scalar fields, for one line.
fn compact_without(value: &serde_json::Value, skip: &[&str]) -> String {
    match value {
        serde_json::Value::Object(map) => map
            .iter()
            .filter(|(key, _)| !skip.contains(&key.as_str()))
            .filter_map(|(key, value)| match value {
                serde_json::Value::String(text) => Some(format!("{key} {text}")),
                serde_json::Value::Number(number) => Some(format!("{key} {number}")),
                serde_json::Value::Bool(flag) => Some(format!("{key} {flag}")),
                _ => None,
            })
            .collect::<Vec<_>>()
            .join(", "),
        other => other.to_string(),
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
        }
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
}
