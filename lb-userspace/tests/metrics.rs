//! The metrics endpoint: started on 127.0.0.1:0 with fake snapshots, it answers `GET /metrics`
//! with every family in the text format, and 404 elsewhere.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tandem::config::{Balance, SessionKind, SessionMode};
use tandem::dataplane::{self, DataplaneKind, DataplaneStatus, Share};
use tandem::metrics::{self, Snapshot};
use tandem::proxy::engine::stats::{HttpServiceStatus, Latency, RequestCounts, ServiceSnapshot};
use tandem::proxy::policy::upstream::{self, SessionStatus, UpstreamStatus};
use tandem::vrrp::instance::InstanceStatus;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio_util::sync::CancellationToken;

fn fake() -> Snapshot {
    let latency = Latency::default();
    latency.observe(Duration::from_millis(3));
    latency.observe(Duration::from_millis(70));
    latency.observe(Duration::from_secs(30));
    Snapshot {
        vrrp: vec![InstanceStatus {
            name: "VI_1".into(),
            interface: "eth0".into(),
            virtual_router_id: 51,
            version: 3,
            state: "master".into(),
            configured_priority: 101,
            effective_priority: 103,
            master: None,
            virtual_ipaddress: vec!["198.18.0.99".parse().unwrap()],
            adverts_sent: 42,
            adverts_received: 7,
            drops: BTreeMap::from([("bad-ttl".to_owned(), 2)]),
            last_transition_unix: None,
            transitions: 2,
            fault: None,
        }],
        services: vec![ServiceSnapshot {
            status: HttpServiceStatus {
                name: "web".into(),
                listen: "198.18.0.99:80".parse().unwrap(),
                upstream: UpstreamStatus {
                    service: "web".into(),
                    balance: Balance::RoundRobin,
                    backend_protocol: tandem::config::BackendProtocol::Http1,
                    session: Some(SessionStatus {
                        kind: SessionKind::Cookie,
                        mode: SessionMode::Learn,
                        entries: 5,
                    }),
                    backends: vec![
                        upstream::BackendStatus {
                            address: "198.18.0.102:80".parse().unwrap(),
                            weight: 1,
                            emergency: false,
                            up: true,
                            reason: "ok".into(),
                            since: "2026-01-01T00:00:00Z".into(),
                            sessions: 3,
                            requests: 10,
                            errors: 0,
                            drained: false,
                        },
                        upstream::BackendStatus {
                            address: "198.18.0.103:80".parse().unwrap(),
                            weight: 1,
                            emergency: false,
                            up: false,
                            reason: "connect refused".into(),
                            since: "2026-01-01T00:00:00Z".into(),
                            sessions: 2,
                            requests: 4,
                            errors: 3,
                            drained: true,
                        },
                    ],
                    queue: None,
                },
                requests: RequestCounts {
                    success: 12,
                    server_error: 1,
                    ..RequestCounts::default()
                },
                errors: 1,
                tunnels: 2,
            },
            latency: latency.snapshot(),
        }],
        dataplane: Some(DataplaneStatus {
            kind: DataplaneKind::Xdp,
            interface: "eth0".into(),
            attach_mode: None,
            pin_dir: None,
            active: true,
            fallback_reason: None,
            services: vec![dataplane::ServiceStatus {
                name: "ssh".into(),
                listen: "198.18.0.99:22".parse().unwrap(),
                mode: "tcp".into(),
                backends: vec![dataplane::BackendStatus {
                    address: "198.18.0.102:22".parse().unwrap(),
                    weight: 1,
                    up: true,
                    drained: false,
                    share: Share::of(65537, 65537),
                    mac: None,
                    packets: 99,
                    bytes: 9900,
                }],
            }],
            flows: Some(4),
            flow_sharing: Some(dataplane::flowshare::FlowShareStatus {
                sent: 11,
                received: 6,
                inserted: 3,
                present: 2,
                ignored: 1,
            }),
        }),
        bgp: Some(
            serde_json::from_value(serde_json::json!({
                "local_as": 65001, "router_id": "198.18.0.100", "bird": "running (pid 7)",
                "drained": false,
                "sessions": [
                    {"peer": "198.18.0.1", "remote_as": 65000, "state": "Established", "info": ""},
                    {"peer": "198.18.0.2", "remote_as": 65000, "state": "Active", "info": ""}
                ],
                "vips": [{"vip": "198.18.2.99", "announced": true, "reason": ""}]
            }))
            .expect("BGP status as JSON"),
        ),
    }
}

async fn get(address: SocketAddr, path: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: metrics\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_string(&mut response))
        .await
        .expect("the metrics server answers in time")
        .unwrap();
    response
}

#[tokio::test]
async fn metrics_endpoint_serves_every_family_in_text_format() {
    let shutdown = CancellationToken::new();
    let (address, task) = metrics::serve(
        "127.0.0.1:0".parse().unwrap(),
        Arc::new(fake),
        shutdown.clone(),
    )
    .await
    .unwrap();

    let response = get(address, "/metrics").await;
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("openmetrics-text"), "{head}");

    for (family, kind) in [
        ("tandem_vrrp_state", "gauge"),
        ("tandem_vrrp_transitions", "counter"),
        ("tandem_vrrp_effective_priority", "gauge"),
        ("tandem_vrrp_adverts_sent", "counter"),
        ("tandem_vrrp_adverts_received", "counter"),
        ("tandem_vrrp_drops", "counter"),
        ("tandem_backend_up", "gauge"),
        ("tandem_backend_drained", "gauge"),
        ("tandem_http_requests", "counter"),
        ("tandem_http_request_duration_seconds", "histogram"),
        ("tandem_http_tunnels_open", "gauge"),
        ("tandem_affinity_sessions", "gauge"),
        ("tandem_xdp_packets", "counter"),
        ("tandem_xdp_flows", "gauge"),
        ("tandem_bgp_session_up", "gauge"),
        ("tandem_bgp_vip_announced", "gauge"),
        ("tandem_xdp_shared_flows", "counter"),
    ] {
        let line = format!("# TYPE {family} {kind}\n");
        assert!(body.contains(&line), "missing {line:?} in:\n{body}");
    }
    for sample in [
        "tandem_vrrp_state{vrrp_instance=\"VI_1\",state=\"master\"} 1\n",
        "tandem_vrrp_state{vrrp_instance=\"VI_1\",state=\"backup\"} 0\n",
        "tandem_vrrp_transitions_total{vrrp_instance=\"VI_1\"} 2\n",
        "tandem_vrrp_effective_priority{vrrp_instance=\"VI_1\"} 103\n",
        "tandem_vrrp_adverts_sent_total{vrrp_instance=\"VI_1\"} 42\n",
        "tandem_vrrp_adverts_received_total{vrrp_instance=\"VI_1\"} 7\n",
        "tandem_vrrp_drops_total{vrrp_instance=\"VI_1\",reason=\"bad-ttl\"} 2\n",
        "tandem_backend_up{service=\"web\",backend=\"198.18.0.102:80\"} 1\n",
        "tandem_backend_up{service=\"web\",backend=\"198.18.0.103:80\"} 0\n",
        "tandem_backend_up{service=\"ssh\",backend=\"198.18.0.102:22\"} 1\n",
        "tandem_backend_drained{service=\"web\",backend=\"198.18.0.103:80\"} 1\n",
        "tandem_http_requests_total{service=\"web\",class=\"2xx\"} 12\n",
        "tandem_http_requests_total{service=\"web\",class=\"5xx\"} 1\n",
        "tandem_http_request_duration_seconds_count{service=\"web\"} 3\n",
        "tandem_http_request_duration_seconds_bucket{le=\"0.005\",service=\"web\"} 1\n",
        "tandem_http_request_duration_seconds_bucket{le=\"0.1\",service=\"web\"} 2\n",
        "tandem_http_request_duration_seconds_bucket{le=\"10.0\",service=\"web\"} 2\n",
        "tandem_http_request_duration_seconds_bucket{le=\"+Inf\",service=\"web\"} 3\n",
        "tandem_affinity_sessions{service=\"web\"} 5\n",
        "tandem_http_tunnels_open{service=\"web\"} 2\n",
        "tandem_xdp_packets_total{service=\"ssh\",backend=\"198.18.0.102:22\"} 99\n",
        "tandem_xdp_flows 4\n",
        "tandem_bgp_session_up{peer=\"198.18.0.1\"} 1\n",
        "tandem_bgp_session_up{peer=\"198.18.0.2\"} 0\n",
        "tandem_bgp_vip_announced{vip=\"198.18.2.99\"} 1\n",
        "tandem_xdp_shared_flows_total{event=\"sent\"} 11\n",
        "tandem_xdp_shared_flows_total{event=\"received\"} 6\n",
        "tandem_xdp_shared_flows_total{event=\"inserted\"} 3\n",
        "tandem_xdp_shared_flows_total{event=\"present\"} 2\n",
        "tandem_xdp_shared_flows_total{event=\"ignored\"} 1\n",
    ] {
        assert!(body.contains(sample), "missing {sample:?} in:\n{body}");
    }
    // Valid exposition: every sample line belongs to a family declared by `# TYPE` before it,
    // and the text ends with `# EOF`.
    let mut declared: Vec<String> = Vec::new();
    for line in body.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            declared.push(rest.split(' ').next().unwrap().to_owned());
        } else if !line.starts_with('#') && !line.is_empty() {
            let name = line.split(['{', ' ']).next().unwrap();
            assert!(
                declared
                    .iter()
                    .any(|family| name.starts_with(family.as_str())),
                "sample {line:?} has no # TYPE line before it"
            );
        }
    }
    assert!(body.ends_with("# EOF\n"), "{body}");

    let other = get(address, "/").await;
    assert!(other.starts_with("HTTP/1.1 404"), "{other}");

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("the metrics server stops on shutdown")
        .unwrap();
}

/// Every metric the Grafana dashboard in dist/ queries is one the daemon serves, under that
/// name, so the dashboard cannot go blank after a rename.
#[tokio::test]
async fn the_grafana_dashboard_queries_only_metrics_the_daemon_serves() {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../dist/grafana-dashboard.json");
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("dist/grafana-dashboard.json"))
            .expect("the dashboard is JSON");
    let body = metrics::Exposition::new(Arc::new(fake))
        .encode()
        .expect("encodes");
    let served: std::collections::BTreeSet<&str> = body
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| line.split(['{', ' ']).next())
        .collect();
    let mut queried = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().expect("targets") {
            let expr = target["expr"].as_str().expect("a PromQL expression");
            let mut rest = expr;
            while let Some(start) = rest.find("tandem_").or_else(|| rest.find("process_")) {
                let name: String = rest[start..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                rest = &rest[start + name.len()..];
                queried.push(name);
            }
        }
    }
    assert!(
        queried.len() >= 12,
        "the dashboard queries the main families: {queried:?}"
    );
    for name in &queried {
        assert!(
            served.contains(name.as_str()),
            "the dashboard queries {name}, which /metrics does not serve; served: {served:?}"
        );
    }
}
