//! Prometheus metrics: `GET /metrics` on `[node] metrics` in the text format.
//!
//! Nothing is kept twice: a collector reads the same snapshots `tandem status` shows (the VRRP
//! instances, the proxy's services, the data plane) on every scrape and encodes them.
//!
//! The families: `tandem_vrrp_state{vrrp_instance,state}` (1 for the current state),
//! `tandem_vrrp_transitions_total`, `tandem_vrrp_effective_priority`,
//! `tandem_vrrp_adverts_sent_total`, `tandem_vrrp_adverts_received_total`,
//! `tandem_vrrp_drops_total{vrrp_instance,reason}`, `tandem_backend_up{service,backend}`,
//! `tandem_backend_drained{service,backend}`,
//! `tandem_http_requests_total{service,class}`, `tandem_http_backend_errors_total{service}`,
//! `tandem_http_tunnels_open{service}`,
//! `tandem_http_request_duration_seconds{service}` (histogram),
//! `tandem_affinity_sessions{service}`, `tandem_dataplane_active{kind}`,
//! `tandem_xdp_packets_total{service,backend}`, `tandem_xdp_bytes_total{service,backend}`,
//! `tandem_xdp_flows`, `tandem_xdp_shared_flows_total{event}` (flow sharing with the peers:
//! sent, received, inserted, present, ignored); with `[bgp]`, `tandem_bgp_session_up{peer}`
//! (1 while Established) and `tandem_bgp_vip_announced{vip}`.

use std::convert::Infallible;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use http::{header::CONTENT_TYPE, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::dataplane::{DataplaneKind, DataplaneStatus};
use crate::proxy::engine::stats::ServiceSnapshot;
use crate::vrrp::instance::InstanceStatus;

/// The states `tandem_vrrp_state` has a series for.
const VRRP_STATES: [&str; 4] = ["initialize", "backup", "master", "fault"];
/// The text format's content type (OpenMetrics, which Prometheus reads).
const CONTENT_TYPE_TEXT: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// A scrape connection that takes longer than this is closed.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(10);

/// What one scrape reads.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub vrrp: Vec<InstanceStatus>,
    /// The HTTP services (empty without a proxy).
    pub services: Vec<ServiceSnapshot>,
    pub dataplane: Option<DataplaneStatus>,
    /// `[bgp]`'s sessions and VIPs; `None` without `[bgp]`.
    pub bgp: Option<crate::bgp::BgpStatus>,
}

/// Where the snapshots come from; called once per scrape.
pub type Source = Arc<dyn Fn() -> Snapshot + Send + Sync>;

/// The collector: encodes a fresh [`Snapshot`] on every scrape.
struct NodeCollector {
    source: Source,
}

impl fmt::Debug for NodeCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("NodeCollector")
    }
}

type Labels = Vec<(&'static str, String)>;

fn counter(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    samples: &[(Labels, u64)],
) -> fmt::Result {
    let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, value) in samples {
        metric
            .encode_family(labels)?
            .encode_counter::<NoLabelSet, _, u64>(value, None)?;
    }
    Ok(())
}

fn gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    samples: &[(Labels, i64)],
) -> fmt::Result {
    let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, value) in samples {
        metric.encode_family(labels)?.encode_gauge(value)?;
    }
    Ok(())
}

/// The process's own figures, in the names every Prometheus client library uses, so the
/// usual dashboards and alerts work: CPU seconds, resident and virtual memory, open and
/// maximum file descriptors, start time. Read from /proc/self on each scrape.
fn encode_process(encoder: &mut DescriptorEncoder) -> fmt::Result {
    let Some(process) = ProcessFigures::read() else {
        return Ok(());
    };
    encoder
        .encode_descriptor(
            "process_cpu_seconds",
            "Total user and system CPU time spent in seconds.",
            None,
            MetricType::Counter,
        )?
        .encode_counter::<NoLabelSet, _, u64>(&process.cpu_seconds, None)?;
    let gauges: [(&str, &str, f64); 5] = [
        (
            "process_resident_memory_bytes",
            "Resident memory size in bytes.",
            process.resident_bytes,
        ),
        (
            "process_virtual_memory_bytes",
            "Virtual memory size in bytes.",
            process.virtual_bytes,
        ),
        (
            "process_open_fds",
            "Number of open file descriptors.",
            process.open_fds,
        ),
        (
            "process_max_fds",
            "Maximum number of open file descriptors.",
            process.max_fds,
        ),
        (
            "process_start_time_seconds",
            "Start time of the process since unix epoch in seconds.",
            process.start_time_seconds,
        ),
    ];
    for (name, help, value) in gauges {
        encoder
            .encode_descriptor(name, help, None, MetricType::Gauge)?
            .encode_gauge(&value)?;
    }
    encoder
        .encode_descriptor(
            "tandem_build_info",
            "Always 1; the version of the running daemon in its label.",
            None,
            MetricType::Gauge,
        )?
        .encode_family(&vec![("version", env!("CARGO_PKG_VERSION").to_owned())])?
        .encode_gauge(&1i64)?;
    Ok(())
}

/// What /proc/self says of this process.
struct ProcessFigures {
    cpu_seconds: f64,
    resident_bytes: f64,
    virtual_bytes: f64,
    open_fds: f64,
    max_fds: f64,
    start_time_seconds: f64,
}

impl ProcessFigures {
    fn read() -> Option<ProcessFigures> {
        // SAFETY: sysconf has no side effects.
        let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        // SAFETY: as above.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as f64;
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        // Fields after the command name (which may hold spaces), from field 3 (state) on.
        let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        let field = |number: usize| -> Option<f64> { fields.get(number - 3)?.parse().ok() };
        let (utime, stime, start_ticks) = (field(14)?, field(15)?, field(22)?);
        let (virtual_bytes, resident_pages) = (field(23)?, field(24)?);
        let boot_time: f64 = std::fs::read_to_string("/proc/stat")
            .ok()?
            .lines()
            .find_map(|line| line.strip_prefix("btime "))?
            .trim()
            .parse()
            .ok()?;
        let open_fds = std::fs::read_dir("/proc/self/fd").ok()?.count() as f64;
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes the struct it is given.
        let max_fds = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0 {
            limit.rlim_cur as f64
        } else {
            0.0
        };
        Some(ProcessFigures {
            cpu_seconds: (utime + stime) / ticks,
            resident_bytes: resident_pages * page,
            virtual_bytes,
            open_fds,
            max_fds,
            start_time_seconds: boot_time + start_ticks / ticks,
        })
    }
}

fn count(value: usize) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

impl Collector for NodeCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let snapshot = (self.source)();
        let e = &mut encoder;
        encode_process(e)?;
        let instance = |i: &InstanceStatus| -> Labels { vec![("vrrp_instance", i.name.clone())] };

        let states: Vec<(Labels, i64)> = snapshot
            .vrrp
            .iter()
            .flat_map(|i| {
                VRRP_STATES.iter().map(move |&state| {
                    let labels = vec![
                        ("vrrp_instance", i.name.clone()),
                        ("state", state.to_owned()),
                    ];
                    (labels, i64::from(i.state == state))
                })
            })
            .collect();
        gauge(
            e,
            "tandem_vrrp_state",
            "The VRRP instance's state: 1 for the current one, 0 for the others.",
            &states,
        )?;
        let per_instance = |value: fn(&InstanceStatus) -> u64| -> Vec<(Labels, u64)> {
            snapshot
                .vrrp
                .iter()
                .map(|i| (instance(i), value(i)))
                .collect()
        };
        counter(
            e,
            "tandem_vrrp_transitions",
            "VRRP state transitions since start.",
            &per_instance(|i| i.transitions),
        )?;
        let priorities: Vec<(Labels, i64)> = snapshot
            .vrrp
            .iter()
            .map(|i| (instance(i), i64::from(i.effective_priority)))
            .collect();
        gauge(
            e,
            "tandem_vrrp_effective_priority",
            "The priority the instance advertises (configured priority and tracking).",
            &priorities,
        )?;
        counter(
            e,
            "tandem_vrrp_adverts_sent",
            "VRRP advertisements sent.",
            &per_instance(|i| i.adverts_sent),
        )?;
        counter(
            e,
            "tandem_vrrp_adverts_received",
            "VRRP advertisements received.",
            &per_instance(|i| i.adverts_received),
        )?;
        let drops: Vec<(Labels, u64)> = snapshot
            .vrrp
            .iter()
            .flat_map(|i| {
                i.drops.iter().map(|(reason, &n)| {
                    (
                        vec![
                            ("vrrp_instance", i.name.clone()),
                            ("reason", reason.clone()),
                        ],
                        n,
                    )
                })
            })
            .collect();
        counter(
            e,
            "tandem_vrrp_drops",
            "Received VRRP packets dropped, by reason.",
            &drops,
        )?;

        // (labels, up, drained) of every backend, HTTP and L4.
        let mut backends: Vec<(Labels, bool, bool)> = Vec::new();
        for service in &snapshot.services {
            for backend in &service.status.upstream.backends {
                backends.push((
                    vec![
                        ("service", service.status.upstream.service.clone()),
                        ("backend", backend.address.to_string()),
                    ],
                    backend.up,
                    backend.drained,
                ));
            }
        }
        for service in snapshot.dataplane.iter().flat_map(|d| &d.services) {
            for backend in &service.backends {
                backends.push((
                    vec![
                        ("service", service.name.clone()),
                        ("backend", backend.address.to_string()),
                    ],
                    backend.up,
                    backend.drained,
                ));
            }
        }
        let up: Vec<(Labels, i64)> = backends
            .iter()
            .map(|(labels, up, _)| (labels.clone(), i64::from(*up)))
            .collect();
        gauge(
            e,
            "tandem_backend_up",
            "Whether the backend passes its health checks (1) or not (0).",
            &up,
        )?;
        let drained: Vec<(Labels, i64)> = backends
            .iter()
            .map(|(labels, _, drained)| (labels.clone(), i64::from(*drained)))
            .collect();
        gauge(
            e,
            "tandem_backend_drained",
            "Whether the operator drained the backend (`tandem drain`): 1 means no new users.",
            &drained,
        )?;

        let mut requests: Vec<(Labels, u64)> = Vec::new();
        for service in &snapshot.services {
            let r = &service.status.requests;
            for (class, n) in [
                ("1xx", r.informational),
                ("2xx", r.success),
                ("3xx", r.redirect),
                ("4xx", r.client_error),
                ("5xx", r.server_error),
            ] {
                let labels = vec![
                    ("service", service.status.upstream.service.clone()),
                    ("class", class.to_owned()),
                ];
                requests.push((labels, n));
            }
        }
        counter(
            e,
            "tandem_http_requests",
            "HTTP requests answered, by status class.",
            &requests,
        )?;
        let errors: Vec<(Labels, u64)> = snapshot
            .services
            .iter()
            .map(|s| {
                (
                    vec![("service", s.status.upstream.service.clone())],
                    s.status.errors,
                )
            })
            .collect();
        counter(
            e,
            "tandem_http_backend_errors",
            "Backend attempts that failed (refused, timed out, connection lost).",
            &errors,
        )?;
        let tunnels: Vec<(Labels, i64)> = snapshot
            .services
            .iter()
            .map(|s| {
                let open = i64::try_from(s.status.tunnels).unwrap_or(i64::MAX);
                (vec![("service", s.status.upstream.service.clone())], open)
            })
            .collect();
        gauge(
            e,
            "tandem_http_tunnels_open",
            "Protocol switches (WebSocket...) tunneling through the proxy now.",
            &tunnels,
        )?;
        {
            let mut metric = e.encode_descriptor(
                "tandem_http_request_duration_seconds",
                "Time from the request head to the end of the response.",
                None,
                MetricType::Histogram,
            )?;
            for service in &snapshot.services {
                let labels: Labels = vec![("service", service.status.upstream.service.clone())];
                let latency = &service.latency;
                metric
                    .encode_family(&labels)?
                    .encode_histogram::<NoLabelSet>(
                        latency.sum_seconds,
                        latency.count,
                        &latency.buckets,
                        None,
                    )?;
            }
        }
        let sessions: Vec<(Labels, i64)> = snapshot
            .services
            .iter()
            .filter_map(|s| {
                let session = s.status.upstream.session.as_ref()?;
                Some((
                    vec![("service", s.status.upstream.service.clone())],
                    count(session.entries),
                ))
            })
            .collect();
        gauge(
            e,
            "tandem_affinity_sessions",
            "Live entries in the service's session table.",
            &sessions,
        )?;

        let dataplane = snapshot.dataplane.as_ref();
        let active: Vec<(Labels, i64)> = dataplane
            .map(|d| {
                let kind = match d.kind {
                    DataplaneKind::Xdp => "xdp",
                    DataplaneKind::Relay => "relay",
                };
                (vec![("kind", kind.to_owned())], i64::from(d.active))
            })
            .into_iter()
            .collect();
        gauge(
            e,
            "tandem_dataplane_active",
            "Whether the L4 data plane forwards (the node is master), by implementation.",
            &active,
        )?;
        let per_backend = |value: fn(&crate::dataplane::BackendStatus) -> u64| {
            dataplane
                .iter()
                .flat_map(|d| &d.services)
                .flat_map(|s| {
                    s.backends.iter().map(move |b| {
                        (
                            vec![
                                ("service", s.name.clone()),
                                ("backend", b.address.to_string()),
                            ],
                            value(b),
                        )
                    })
                })
                .collect::<Vec<(Labels, u64)>>()
        };
        counter(
            e,
            "tandem_xdp_packets",
            "L4 frames sent to the backend (the userspace relay counts connections and datagrams).",
            &per_backend(|b| b.packets),
        )?;
        counter(
            e,
            "tandem_xdp_bytes",
            "L4 bytes sent to the backend.",
            &per_backend(|b| b.bytes),
        )?;
        let flows: Vec<(Labels, i64)> = dataplane
            .and_then(|d| d.flows)
            .map(|flows| (Vec::new(), count(flows)))
            .into_iter()
            .collect();
        gauge(
            e,
            "tandem_xdp_flows",
            "Entries in the XDP connection table.",
            &flows,
        )?;
        if let Some(bgp) = &snapshot.bgp {
            let sessions: Vec<(Labels, i64)> = bgp
                .sessions
                .iter()
                .map(|session| {
                    (
                        vec![("peer", session.peer.to_string())],
                        i64::from(session.established()),
                    )
                })
                .collect();
            gauge(
                e,
                "tandem_bgp_session_up",
                "Whether the BGP session with the peer is Established.",
                &sessions,
            )?;
            let vips: Vec<(Labels, i64)> = bgp
                .vips
                .iter()
                .map(|vip| (vec![("vip", vip.vip.to_string())], i64::from(vip.announced)))
                .collect();
            gauge(
                e,
                "tandem_bgp_vip_announced",
                "Whether this node announces the VIP to its BGP peers.",
                &vips,
            )?;
        }
        let shared: Vec<(Labels, u64)> = dataplane
            .and_then(|d| d.flow_sharing)
            .map(|s| {
                [
                    ("sent", s.sent),
                    ("received", s.received),
                    ("inserted", s.inserted),
                    ("present", s.present),
                    ("ignored", s.ignored),
                ]
                .into_iter()
                .map(|(event, value)| (vec![("event", event.to_owned())], value))
                .collect()
            })
            .unwrap_or_default();
        counter(
            e,
            "tandem_xdp_shared_flows",
            "L4 flows shared with the replication peers: sent, received, inserted (received, \
             written into the connection table), present (received, this node's own entry \
             kept), ignored (received for a service or backend this node does not have).",
            &shared,
        )?;
        Ok(())
    }
}

/// The whole exposition for one snapshot source, as `GET /metrics` answers it.
pub struct Exposition {
    registry: Registry,
}

impl Exposition {
    pub fn new(source: Source) -> Self {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(NodeCollector { source }));
        Exposition { registry }
    }

    /// Reads the snapshots and encodes them in the text format.
    pub fn encode(&self) -> Result<String, fmt::Error> {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)?;
        Ok(text)
    }
}

fn answer<B>(exposition: &Exposition, request: &Request<B>) -> Response<Full<Bytes>> {
    let reply = |status: StatusCode, body: String, content_type: &'static str| {
        let mut response = Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() = status;
        response
            .headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
        response
    };
    let plain = "text/plain; charset=utf-8";
    if request.uri().path() != "/metrics" {
        return reply(
            StatusCode::NOT_FOUND,
            "not found; metrics are at /metrics\n".into(),
            plain,
        );
    }
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return reply(StatusCode::METHOD_NOT_ALLOWED, "use GET\n".into(), plain);
    }
    match exposition.encode() {
        Ok(text) => reply(StatusCode::OK, text, CONTENT_TYPE_TEXT),
        Err(_) => reply(
            StatusCode::INTERNAL_SERVER_ERROR,
            "encoding the metrics failed\n".into(),
            plain,
        ),
    }
}

/// Binds `address` and serves `GET /metrics` until `shutdown`. Returns the bound address
/// (useful with port 0) and the accept task.
pub async fn serve(
    address: SocketAddr,
    source: Source,
    shutdown: CancellationToken,
) -> anyhow::Result<(SocketAddr, JoinHandle<()>)> {
    let listener = TcpListener::bind(address)
        .await
        .with_context(|| format!("binding the metrics address {address}"))?;
    let local = listener.local_addr()?;
    let exposition = Arc::new(Exposition::new(source));
    let task = tokio::spawn(async move {
        loop {
            let stream = tokio::select! {
                _ = shutdown.cancelled() => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => stream,
                    Err(err) => {
                        warn!("metrics: accepting a connection: {err}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let exposition = exposition.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request: Request<hyper::body::Incoming>| {
                    let response = answer(&exposition, &request);
                    async move { Ok::<_, Infallible>(response) }
                });
                let connection =
                    http1::Builder::new().serve_connection(TokioIo::new(stream), service);
                match tokio::time::timeout(CONNECTION_TIMEOUT, connection).await {
                    Ok(Ok(())) => {}
                    Ok(Err(err)) => debug!("metrics: connection ended: {err}"),
                    Err(_) => debug!("metrics: connection timed out"),
                }
            });
        }
    });
    Ok((local, task))
}
