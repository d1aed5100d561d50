//! Whether this node may announce a VIP: the rule, apart from where its inputs come from.
//!
//! A node announces a VIP only while it can serve it: the data plane is attached (the XDP
//! program on the interface, or the relay running), a service on the VIP has a backend that
//! is up and not drained, and, when an HTTP service is on it, the proxy answers its built-in
//! check. A router that sends flows to a node that cannot serve them loses them; withdrawing
//! moves them to the nodes that can.

use std::net::IpAddr;

use crate::dataplane::{DataplaneKind, DataplaneStatus};
use crate::proxy::engine::stats::HttpServiceStatus;

/// What the rule reads, as the node's parts report it.
pub struct Inputs<'a> {
    /// The proxy's HTTP services.
    pub http: &'a [HttpServiceStatus],
    pub dataplane: &'a DataplaneStatus,
    /// The built-in proxy check (true when the node has no HTTP service).
    pub proxy_up: bool,
}

/// Why `vip` must not be announced now; `None` when it may be.
pub fn why_not(vip: IpAddr, inputs: &Inputs) -> Option<String> {
    let serves = |listen: IpAddr| {
        listen == vip || (listen.is_unspecified() && listen.is_ipv4() == vip.is_ipv4())
    };
    let http: Vec<&HttpServiceStatus> = inputs
        .http
        .iter()
        .filter(|service| serves(service.listen.ip()))
        .collect();
    let l4: Vec<_> = inputs
        .dataplane
        .services
        .iter()
        .filter(|service| serves(service.listen.ip()))
        .collect();
    if http.is_empty() && l4.is_empty() {
        return Some("no service listens on it".to_owned());
    }
    let dataplane = inputs.dataplane;
    let attached = match dataplane.kind {
        DataplaneKind::Xdp => dataplane.attach_mode.is_some(),
        DataplaneKind::Relay => true,
    };
    if !attached {
        return Some(format!(
            "the XDP program is not attached to {}",
            dataplane.interface
        ));
    }
    if !dataplane.active {
        return Some("the data plane is not forwarding".to_owned());
    }
    let healthy_http = http.iter().any(|service| {
        service
            .upstream
            .backends
            .iter()
            .any(|backend| backend.up && !backend.drained)
    });
    let healthy_l4 = l4.iter().any(|service| {
        service
            .backends
            .iter()
            .any(|backend| backend.up && !backend.drained)
    });
    if !healthy_http && !healthy_l4 {
        let names: Vec<&str> = http
            .iter()
            .map(|service| service.name.as_str())
            .chain(l4.iter().map(|service| service.name.as_str()))
            .collect();
        return Some(format!(
            "no backend of {} is up (and not drained)",
            names.join(", ")
        ));
    }
    if !http.is_empty() && !inputs.proxy_up {
        return Some("the proxy does not answer its built-in check".to_owned());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataplane::{AttachedMode, BackendStatus, ServiceStatus, Share};

    fn l4_dataplane(backend_up: bool, drained: bool) -> DataplaneStatus {
        DataplaneStatus {
            kind: DataplaneKind::Xdp,
            interface: "eth0".into(),
            attach_mode: Some(AttachedMode::Generic),
            pin_dir: None,
            active: true,
            fallback_reason: None,
            services: vec![ServiceStatus {
                name: "dns".into(),
                listen: "198.18.2.99:53".parse().unwrap(),
                mode: "udp".into(),
                backends: vec![BackendStatus {
                    address: "198.18.0.102:53".parse().unwrap(),
                    weight: 1,
                    up: backend_up,
                    share: Share::of(1, 1),
                    mac: None,
                    drained,
                    packets: 0,
                    bytes: 0,
                }],
            }],
            flows: None,
            flow_sharing: None,
        }
    }

    fn inputs(dataplane: &DataplaneStatus) -> Inputs<'_> {
        Inputs {
            http: &[],
            dataplane,
            proxy_up: true,
        }
    }

    #[test]
    fn a_vip_with_a_healthy_backend_on_an_attached_data_plane_is_announced() {
        let dataplane = l4_dataplane(true, false);
        assert_eq!(
            why_not("198.18.2.99".parse().unwrap(), &inputs(&dataplane)),
            None
        );
    }

    #[test]
    fn a_vip_is_withdrawn_when_its_backends_are_down_or_drained() {
        let down = l4_dataplane(false, false);
        let drained = l4_dataplane(true, true);
        for dataplane in [&down, &drained] {
            assert_eq!(
                why_not("198.18.2.99".parse().unwrap(), &inputs(dataplane)).as_deref(),
                Some("no backend of dns is up (and not drained)")
            );
        }
    }

    #[test]
    fn a_vip_is_withdrawn_when_the_program_is_detached_or_the_plane_inactive() {
        let mut detached = l4_dataplane(true, false);
        detached.attach_mode = None;
        assert_eq!(
            why_not("198.18.2.99".parse().unwrap(), &inputs(&detached)).as_deref(),
            Some("the XDP program is not attached to eth0")
        );
        let mut inactive = l4_dataplane(true, false);
        inactive.active = false;
        assert_eq!(
            why_not("198.18.2.99".parse().unwrap(), &inputs(&inactive)).as_deref(),
            Some("the data plane is not forwarding")
        );
    }

    #[test]
    fn a_vip_no_service_listens_on_is_not_announced() {
        let dataplane = l4_dataplane(true, false);
        assert_eq!(
            why_not("198.18.2.98".parse().unwrap(), &inputs(&dataplane)).as_deref(),
            Some("no service listens on it")
        );
    }

    fn http_service(up: bool) -> HttpServiceStatus {
        serde_json::from_value(serde_json::json!({
            "name": "web", "listen": "0.0.0.0:80", "service": "web",
            "balance": "round-robin", "session": null,
            "requests": {"1xx": 0, "2xx": 0, "3xx": 0, "4xx": 0, "5xx": 0},
            "errors": 0,
            "backends": [{"address": "198.18.0.102:80", "weight": 1, "emergency": false,
                          "up": up, "reason": "started", "since": "2026-12-07T00:00:00Z",
                          "sessions": 0, "requests": 0, "errors": 0}]
        }))
        .expect("an HTTP service's status")
    }

    #[test]
    fn an_http_vip_needs_the_proxy_check_and_a_healthy_backend_of_its_family() {
        let mut dataplane = l4_dataplane(true, false);
        dataplane.services.clear();
        let http = [http_service(true)];
        let vip = "198.18.2.99".parse().unwrap();
        let inputs = |proxy_up| Inputs {
            http: &http,
            dataplane: &dataplane,
            proxy_up,
        };
        assert_eq!(
            why_not(vip, &inputs(true)),
            None,
            "0.0.0.0:80 serves every IPv4 VIP"
        );
        assert_eq!(
            why_not(vip, &inputs(false)).as_deref(),
            Some("the proxy does not answer its built-in check")
        );
        assert_eq!(
            why_not("2001:2::99".parse().unwrap(), &inputs(true)).as_deref(),
            Some("no service listens on it"),
            "0.0.0.0 is not an IPv6 VIP's listener"
        );
        let down = [http_service(false)];
        let inputs = Inputs {
            http: &down,
            dataplane: &dataplane,
            proxy_up: true,
        };
        assert_eq!(
            why_not(vip, &inputs).as_deref(),
            Some("no backend of web is up (and not drained)")
        );
    }
}
