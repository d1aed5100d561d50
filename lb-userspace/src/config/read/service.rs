//! `[[service]]` entries: listen address and mode, backends (by address or name, weights,
//! emergency), balance, health checks and sessions.

use std::collections::HashMap;
use std::net::SocketAddr;

use crate::config::diagnostic::{Pos, Reporter};
use crate::config::fields::{Field, Section};
use crate::config::model::{
    Backend, BackendAddress, Balance, HealthCheck, HealthKind, NamedBackend, Service, ServiceMode,
    Session, SessionKind, SessionMode,
};
use crate::config::proxy;

use super::{optional, ServiceSpans};

const SERVICE_KEYS: &[&str] = &[
    "name",
    "listen",
    "mode",
    "backends",
    "health",
    "session",
    "balance",
    "resolve_interval",
];
const BACKEND_KEYS: &[&str] = &["address", "weight", "emergency"];
const HEALTH_KEYS: &[&str] = &[
    "interval", "timeout", "rise", "fall", "type", "path", "expect",
];
const SESSION_KEYS: &[&str] = &["type", "id", "ttl", "max_entries", "mode"];

pub(super) fn read_service(
    report: &mut Reporter,
    section: Section,
) -> Option<(Service, ServiceSpans)> {
    let known: Vec<&str> = SERVICE_KEYS
        .iter()
        .chain(proxy::SERVICE_HTTP_KEYS)
        .copied()
        .collect();
    section.reject_unknown_keys(report, &known);
    let name_field = section.required(report, "name");
    let name = name_field.and_then(|field| field.non_empty_str(report));
    let listen_field = section.required(report, "listen");
    let listen = listen_field.and_then(|field| field.socket_addr(report));
    let mode = optional(&section, "mode", ServiceMode::default(), |field| {
        field.choice(
            report,
            &[
                ("http", ServiceMode::Http),
                ("tcp", ServiceMode::Tcp),
                ("udp", ServiceMode::Udp),
            ],
        )
    });
    let backends = section
        .required(report, "backends")
        .and_then(|field| read_backends(report, field));
    let health = match section.field("health") {
        Some(field) => field
            .section(report, "health")
            .and_then(|health| read_health(report, health, mode)),
        None => Some(HealthCheck::default()),
    };
    let session = match (section.field("session"), mode) {
        (None, _) => Some(None),
        (Some(field), Some(ServiceMode::Http)) => field
            .section(report, "session")
            .and_then(|session| read_session(report, session))
            .map(Some),
        (Some(field), Some(ServiceMode::Tcp | ServiceMode::Udp)) => {
            report.error(
                field.at,
                "session affinity needs mode = \"http\"; L4 services keep flows by connection \
                 tracking",
            );
            None
        }
        // The mode is wrong and reported; whether a session fits cannot be judged.
        (Some(_), None) => None,
    };

    let http = proxy::read_service_http(report, &section, mode);
    let balance = read_balance(report, &section, mode);

    let resolve_interval = match section.field("resolve_interval") {
        Some(field) => field.positive_duration(report),
        None => Some(Service::DEFAULT_RESOLVE_INTERVAL),
    };

    let (listen_field, listen, mode, (backends, names)) =
        (listen_field?, listen?, mode?, backends?);
    let all: Vec<WrittenBackend> = backends
        .iter()
        .map(|(backend, at)| WrittenBackend {
            label: backend.address.to_string(),
            port: backend.address.port(),
            ipv6: Some(backend.address.is_ipv6()),
            emergency: backend.emergency,
            at: *at,
        })
        .chain(names.iter().map(|(named, at)| WrittenBackend {
            label: named.label(),
            port: named.port,
            ipv6: None,
            emergency: named.emergency,
            at: *at,
        }))
        .collect();
    if mode.is_l4() && !l4_addresses_fit(report, listen_field.at, listen, mode, &all) {
        return None;
    }
    if !emergency_backends_fit(report, &section, mode, &all) {
        return None;
    }
    let spans = ServiceSpans {
        name: name_field?.at,
        listen: listen_field.at,
    };
    let service = Service {
        name: name?.to_owned(),
        listen,
        mode,
        backends: backends.into_iter().map(|(backend, _)| backend).collect(),
        backend_names: names.into_iter().map(|(named, _)| named).collect(),
        resolve_interval: resolve_interval?,
        backend_hosts: std::collections::BTreeMap::new(),
        health: health?,
        session: session?,
        http: http?,
        balance: balance?,
    };
    Some((service, spans))
}

/// `balance`, which only the proxy uses: L4 services are placed by Maglev.
fn read_balance(
    report: &mut Reporter,
    section: &Section,
    mode: Option<ServiceMode>,
) -> Option<Balance> {
    let Some(field) = section.field("balance") else {
        return Some(Balance::default());
    };
    let balance = field.choice(
        report,
        &[
            (Balance::RoundRobin.as_str(), Balance::RoundRobin),
            (Balance::Random.as_str(), Balance::Random),
        ],
    )?;
    match mode {
        Some(mode) if mode.is_l4() => {
            report.error(
                field.at,
                format!(
                    "balance applies to mode = \"http\" services; mode = \"{}\" services are \
                     placed by Maglev consistent hashing; remove `balance`",
                    mode.as_str()
                ),
            );
            None
        }
        _ => Some(balance),
    }
}

/// Emergency backends stand in while every regular backend is down, which only the proxy
/// does; so they need mode = "http" and at least one regular backend to stand in for.
fn emergency_backends_fit(
    report: &mut Reporter,
    section: &Section,
    mode: ServiceMode,
    backends: &[WrittenBackend],
) -> bool {
    let mut fits = true;
    if mode.is_l4() {
        for backend in backends.iter().filter(|backend| backend.emergency) {
            report.error(
                backend.at,
                format!(
                    "backend {} is an emergency backend, which needs mode = \"http\"; mode = \
                     \"{}\" services spread flows by Maglev over every healthy backend, with no \
                     emergency tier",
                    backend.label,
                    mode.as_str()
                ),
            );
            fits = false;
        }
    } else if backends.iter().all(|backend| backend.emergency) {
        let at = section
            .field("backends")
            .map_or(section.at, |field| field.at);
        report.error(
            at,
            "every backend is an emergency backend: emergency backends serve only while all \
             regular ones are down; make at least one regular (drop `emergency = true`)",
        );
        fits = false;
    }
    fits
}

/// L4 services are forwarded in XDP by direct server return: the kernel program finds the
/// service by destination address and only rewrites MAC addresses. So the listen address must
/// be a real address (not 0.0.0.0), and a backend must serve the listen port itself, since the
/// port is not rewritten; and for the same reason a backend is of the listen address's family
/// (the packet's header is not rewritten either: an IPv6 client's packet can only reach an
/// IPv6 backend; a backend named by host name gets the addresses of the listen's family). The
/// userspace relay follows the same rules so a config behaves the same whichever data plane
/// runs it.
fn l4_addresses_fit(
    report: &mut Reporter,
    listen_at: Pos,
    listen: SocketAddr,
    mode: ServiceMode,
    backends: &[WrittenBackend],
) -> bool {
    let mut fits = true;
    if listen.ip().is_unspecified() {
        report.error(
            listen_at,
            format!(
                "listen {listen} has no address: mode = \"{}\" services are matched by address in \
                 XDP; listen on the virtual address, e.g. \"198.18.0.99:{}\"",
                mode.as_str(),
                listen.port()
            ),
        );
        fits = false;
    }
    for backend in backends {
        if backend.ipv6.is_some_and(|ipv6| ipv6 != listen.is_ipv6()) {
            let (family, other) = if listen.is_ipv6() {
                ("IPv6", "IPv4")
            } else {
                ("IPv4", "IPv6")
            };
            report.error(
                backend.at,
                format!(
                    "backend {} is {other} but listen {listen} is {family}: mode = \"{}\" \
                     services forward by direct server return, which keeps the client's packet \
                     as it is; give {family} backends (for {other} clients, add a service that \
                     listens on an {other} address)",
                    backend.label,
                    mode.as_str()
                ),
            );
            fits = false;
            continue;
        }
        if backend.port != listen.port() {
            report.error(
                backend.at,
                format!(
                    "backend {} must use port {} like the listen address: mode = \"{}\" \
                     services forward by direct server return, which does not rewrite ports",
                    backend.label,
                    listen.port(),
                    mode.as_str()
                ),
            );
            fits = false;
        }
    }
    fits
}

/// A backend as written, for the rules that hold whether it is an address or a name.
struct WrittenBackend {
    label: String,
    port: u16,
    /// Whether it is an IPv6 address; `None` for a name (its addresses are not known yet).
    ipv6: Option<bool>,
    emergency: bool,
    at: Pos,
}

/// Backends written by address and by name, with where each is written.
type ReadBackends = (Vec<(Backend, Pos)>, Vec<(NamedBackend, Pos)>);

/// The backends with where each is written; none twice.
fn read_backends(report: &mut Reporter, field: Field) -> Option<ReadBackends> {
    let elements = field.list(report)?;
    if elements.is_empty() {
        report.error(
            field.at,
            "backends is empty: list at least one, e.g. [\"198.18.0.102:80\"]",
        );
        return None;
    }
    let mut backends = Vec::with_capacity(elements.len());
    let mut names = Vec::new();
    let mut first_seen: HashMap<String, Pos> = HashMap::new();
    let mut complete = true;
    for element in elements {
        let Some((backend, at)) = read_backend(report, element) else {
            complete = false;
            continue;
        };
        let written = match &backend {
            Ok(backend) => backend.address.to_string(),
            Err(named) => named.label(),
        };
        if let Some(&first) = first_seen.get(&written) {
            report.error(
                at,
                format!(
                    "backend {written} is listed twice (first at line {}); to give it more \
                     traffic, raise its weight instead",
                    report.line_of(first)
                ),
            );
            complete = false;
            continue;
        }
        first_seen.insert(written, at);
        match backend {
            Ok(backend) => backends.push((backend, at)),
            Err(named) => names.push((named, at)),
        }
    }
    complete.then_some((backends, names))
}

/// A backend written as "ADDRESS" or `{ address = "ADDRESS", weight = N }`, ADDRESS being
/// "IP:PORT" (`Ok`) or "NAME:PORT" (`Err`: resolved when the node runs); the position is its
/// address's.
fn read_backend(
    report: &mut Reporter,
    field: Field,
) -> Option<(Result<Backend, NamedBackend>, Pos)> {
    let written = |address: BackendAddress, weight: u32, emergency: bool| match address {
        BackendAddress::Ip(address) => Ok(Backend {
            address,
            weight,
            emergency,
        }),
        BackendAddress::Name { host, port } => Err(NamedBackend {
            host,
            port,
            weight,
            emergency,
        }),
    };
    if field.is_str() {
        let address = field.backend_address(report)?;
        return Some((written(address, Backend::DEFAULT_WEIGHT, false), field.at));
    }
    if !field.is_table() {
        report.error(
            field.at,
            format!(
                "a backend is \"IP:PORT\" or {{ address = \"IP:PORT\", weight = N }}; found {}",
                field.type_name()
            ),
        );
        return None;
    }
    let section = field.section(report, "backend")?;
    section.reject_unknown_keys(report, BACKEND_KEYS);
    let address_field = section.required(report, "address");
    let address = address_field.and_then(|field| field.backend_address(report));
    let weight = optional(&section, "weight", Backend::DEFAULT_WEIGHT, |field| {
        field.int(report, 1, Backend::MAX_WEIGHT)
    });
    let emergency = optional(&section, "emergency", false, |field| field.bool(report));
    Some((written(address?, weight?, emergency?), address_field?.at))
}

fn read_health(
    report: &mut Reporter,
    section: Section,
    mode: Option<ServiceMode>,
) -> Option<HealthCheck> {
    section.reject_unknown_keys(report, HEALTH_KEYS);
    let interval_field = section.field("interval");
    let interval = match interval_field {
        Some(field) => field.positive_duration(report),
        None => Some(HealthCheck::DEFAULT_INTERVAL),
    };
    let timeout = match (section.field("timeout"), interval) {
        (Some(field), interval) => {
            field
                .positive_duration(report)
                .filter(|&timeout| match interval {
                    Some(interval) if timeout > interval => {
                        report.error(
                            field.at,
                            format!(
                            "timeout = \"{}\" is longer than the interval (\"{}\"): a probe must \
                             finish before the next one starts",
                            humantime::format_duration(timeout),
                            humantime::format_duration(interval)
                        ),
                        );
                        false
                    }
                    _ => true,
                })
        }
        // A short interval shortens the default timeout rather than contradicting it.
        (None, Some(interval)) => Some(HealthCheck::DEFAULT_TIMEOUT.min(interval)),
        (None, None) => None,
    };
    let rise = optional(&section, "rise", HealthCheck::DEFAULT_RISE, |field| {
        field.int(report, 1, u32::MAX)
    });
    let fall = optional(&section, "fall", HealthCheck::DEFAULT_FALL, |field| {
        field.int(report, 1, u32::MAX)
    });
    let kind_field = section.field("type");
    let is_http = match kind_field {
        Some(field) => field.choice(report, &[("tcp", false), ("http", true)]),
        None => Some(false),
    };
    let kind = match is_http {
        Some(true) => read_http_probe(report, &section, kind_field, mode),
        Some(false) => {
            for key in ["path", "expect"] {
                if let Some(at) = section.key_at(key) {
                    report.error(
                        at,
                        format!(
                            "`{key}` applies only to HTTP health checks; add type = \"http\" to \
                             this health table"
                        ),
                    );
                }
            }
            (!section.has("path") && !section.has("expect")).then_some(HealthKind::Tcp)
        }
        None => None,
    };
    Some(HealthCheck {
        interval: interval?,
        timeout: timeout?,
        rise: rise?,
        fall: fall?,
        kind: kind?,
    })
}

fn read_http_probe(
    report: &mut Reporter,
    section: &Section,
    kind_field: Option<Field>,
    mode: Option<ServiceMode>,
) -> Option<HealthKind> {
    let fits_mode = if mode == Some(ServiceMode::Udp) {
        let at = kind_field.map_or(section.at, |field| field.at);
        report.error(
            at,
            "type = \"http\" health checks need a TCP service; this service has mode = \"udp\"",
        );
        false
    } else {
        true
    };
    let path = optional(section, "path", HealthKind::DEFAULT_HTTP_PATH, |field| {
        let path = field.str(report)?;
        if path.starts_with('/') {
            Some(path)
        } else {
            report.error(
                field.at,
                format!("path {path:?} must start with '/', e.g. \"/{path}\""),
            );
            None
        }
    });
    let expect_status = optional(section, "expect", HealthKind::DEFAULT_HTTP_STATUS, |f| {
        f.int(report, 100, 599)
    });
    let probe = HealthKind::Http {
        path: path?.to_owned(),
        expect_status: expect_status?,
    };
    fits_mode.then_some(probe)
}

fn read_session(report: &mut Reporter, section: Section) -> Option<Session> {
    section.reject_unknown_keys(report, SESSION_KEYS);
    let kind = section.required(report, "type").and_then(|field| {
        field.choice(
            report,
            &[
                ("cookie", SessionKind::Cookie),
                ("ip", SessionKind::Ip),
                ("header", SessionKind::Header),
                ("url", SessionKind::Url),
                ("basic", SessionKind::Basic),
            ],
        )
    });
    let id = match (kind, section.field("id")) {
        (Some(kind), Some(field)) => match kind.id_meaning() {
            Some(_) => field.non_empty_str(report).map(|id| Some(id.to_owned())),
            None => {
                report.error(
                    section.key_at("id").unwrap_or(field.at),
                    format!(
                        "session type \"{}\" takes no `id` (the key is the {}); remove it",
                        kind.as_str(),
                        if kind == SessionKind::Ip {
                            "client's address"
                        } else {
                            "basic-auth user name"
                        }
                    ),
                );
                None
            }
        },
        (Some(kind), None) => match kind.id_meaning() {
            Some(meaning) => {
                let example = match kind {
                    SessionKind::Cookie => "JSESSIONID",
                    SessionKind::Header => "X-Session-Id",
                    _ => "sid",
                };
                report.error(
                    section.at,
                    format!(
                        "session type \"{}\" needs `id`, {meaning}: e.g. id = \"{example}\"",
                        kind.as_str()
                    ),
                );
                None
            }
            None => Some(None),
        },
        // The type is missing or wrong and reported; `id` cannot be judged without it.
        (None, _) => None,
    };
    let ttl = optional(&section, "ttl", Session::DEFAULT_TTL, |field| {
        field.positive_duration(report)
    });
    let max_entries = optional(&section, "max_entries", Session::DEFAULT_MAX_ENTRIES, |f| {
        f.int(report, 1, u32::MAX)
            .map(|n| usize::try_from(n).unwrap_or(usize::MAX))
    });
    let mode = match section.field("mode") {
        Some(field) => field
            .choice(
                report,
                &[
                    (SessionMode::Learn.as_str(), SessionMode::Learn),
                    (SessionMode::Insert.as_str(), SessionMode::Insert),
                ],
            )
            .filter(|&mode| match kind {
                Some(kind) if mode == SessionMode::Insert && kind != SessionKind::Cookie => {
                    report.error(
                        field.at,
                        format!(
                            "mode = \"insert\" sets a cookie of the proxy's own, so it needs \
                             type = \"cookie\" (this session has type = \"{}\"); remove \
                             `mode` to learn sessions instead",
                            kind.as_str()
                        ),
                    );
                    false
                }
                _ => true,
            }),
        None => Some(SessionMode::default()),
    };
    Some(Session {
        kind: kind?,
        id: id?,
        ttl: ttl?,
        max_entries: max_entries?,
        mode: mode?,
    })
}
