//! The schema: reads `[node]`, `[[vrrp]]` and `[[service]]` from the parsed document into the
//! model, applying defaults and every rule that concerns a single entry (ranges, required keys,
//! combinations such as "session needs mode = http").
//!
//! Rules that compare entries with each other (unique names, VRIDs, addresses) need every entry
//! read first; they live in `cross_check.rs`, which gets the located pieces it needs through
//! [`VrrpSpans`] and [`ServiceSpans`].

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::PathBuf;
use std::time::Duration;

use toml_edit::Table;

use super::diagnostic::{Pos, Reporter};
use super::fields::{Field, Section};
use super::model::{
    Backend, BackendAddress, Balance, BuiltinCheck, DataplaneMode, HealthCheck, HealthKind,
    NamedBackend, Node, Replication, Service, ServiceMode, Session, SessionKind, SessionMode,
    Track, VrrpInstance, DEFAULT_CONTROL_SOCKET,
};
use super::proxy::{self, ProxySettings};

const TOP_LEVEL_KEYS: &[&str] = &["node", "vrrp", "service", "proxy", "replication"];
const NODE_KEYS: &[&str] = &[
    "name",
    "interface",
    "dataplane",
    "bpf_pin_dir",
    "control_socket",
    "metrics",
];
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
    "track",
    "garp_master_repeat",
    "garp_master_delay",
    "notify",
    "checksum_pseudo_header",
];
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
const REPLICATION_KEYS: &[&str] = &["listen", "peers"];
const HEALTH_KEYS: &[&str] = &[
    "interval", "timeout", "rise", "fall", "type", "path", "expect",
];
const SESSION_KEYS: &[&str] = &["type", "id", "ttl", "max_entries", "mode"];

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

/// keepalived's bound: a tracker can move a priority by at most 254 either way.
const MAX_TRACK_WEIGHT: i32 = 254;
/// Linux's IFNAMSIZ (16) minus the terminating NUL.
const MAX_INTERFACE_NAME_BYTES: usize = 15;
/// VRRPv3 carries the advert interval in centiseconds in 12 bits (RFC 5798 5.2.7).
const V3_INTERVAL_STEP: Duration = Duration::from_millis(10);
const V3_MAX_INTERVAL: Duration = Duration::from_millis(4095 * 10);
/// VRRPv2 carries it in whole seconds in 8 bits (RFC 3768 5.3.7).
const V2_MAX_INTERVAL_SECS: u64 = 255;

/// Where the pieces of a `[[vrrp]]` entry are written, for the checks across entries.
pub(super) struct VrrpSpans {
    pub name: Pos,
    pub virtual_router_id: Pos,
    /// One per `virtual_ipaddress` element, in order.
    pub virtual_ipaddress: Vec<Pos>,
}

/// Where the pieces of a `[[service]]` entry are written, for the checks across entries.
pub(super) struct ServiceSpans {
    pub name: Pos,
    pub listen: Pos,
}

/// Everything read from a document. Entries with errors are left out (their errors are
/// reported), so the checks across entries only see complete ones.
pub(super) struct Document {
    pub node: Option<Node>,
    pub vrrp: Vec<(VrrpInstance, VrrpSpans)>,
    /// Whether the file has `[[vrrp]]` entries at all, complete or not.
    pub has_vrrp_entries: bool,
    pub services: Vec<(Service, ServiceSpans)>,
    /// `[proxy]`, defaults when absent; `None` if it has errors.
    pub proxy: Option<ProxySettings>,
    /// `[replication]` with where its `listen` is written; `None` when absent or with errors
    /// (which are reported).
    pub replication: Option<(Replication, Pos)>,
}

/// Reads the whole document; problems go to `report`.
pub(super) fn read_document(report: &mut Reporter, root: &Table) -> Document {
    let root = Section::new(root, "the top level", Pos::START);
    root.reject_unknown_keys(report, TOP_LEVEL_KEYS);

    let node = match root.field("node") {
        Some(field) => field
            .section(report, "[node]")
            .and_then(|section| read_node(report, section)),
        None => {
            report.error(
                Pos::START,
                "missing [node] table: every config starts with [node] and the node's `name` \
                 and `interface`",
            );
            None
        }
    };
    let node_interface = node.as_ref().map(|node| node.interface.as_str());

    let vrrp_entries = entries(report, &root, "vrrp");
    let vrrp = vrrp_entries
        .iter()
        .filter_map(|field| {
            let section = field.section(report, "[[vrrp]]")?;
            read_vrrp(report, section, node_interface)
        })
        .collect();

    let services = entries(report, &root, "service")
        .iter()
        .filter_map(|field| {
            let section = field.section(report, "[[service]]")?;
            read_service(report, section)
        })
        .collect();

    let proxy = match root.field("proxy") {
        Some(field) => field
            .section(report, "[proxy]")
            .and_then(|section| proxy::read_proxy(report, section)),
        None => Some(ProxySettings::default()),
    };

    let replication = root.field("replication").and_then(|field| {
        let section = field.section(report, "[replication]")?;
        read_replication(report, section)
    });

    Document {
        proxy,
        replication,
        has_vrrp_entries: !vrrp_entries.is_empty(),
        node,
        vrrp,
        services,
    }
}

/// The elements of a top-level `[[key]]` list (also accepted: `key = [{ ... }, ...]`).
fn entries<'a>(report: &mut Reporter, root: &Section<'a>, key: &'static str) -> Vec<Field<'a>> {
    let Some(field) = root.field(key) else {
        return Vec::new();
    };
    if field.is_table() {
        report.error(
            field.at,
            format!("`{key}` must be a list of tables: write [[{key}]], one per entry"),
        );
        return Vec::new();
    }
    field.list(report).unwrap_or_default()
}

fn read_node(report: &mut Reporter, section: Section) -> Option<Node> {
    section.reject_unknown_keys(report, NODE_KEYS);
    let name = section
        .required(report, "name")
        .and_then(|field| field.non_empty_str(report));
    let interface = section
        .required(report, "interface")
        .and_then(|field| interface_name(report, field));
    let dataplane = match section.field("dataplane") {
        Some(field) => field.choice(
            report,
            &[
                ("xdp", DataplaneMode::Xdp),
                ("xdp-generic", DataplaneMode::XdpGeneric),
                ("none", DataplaneMode::None),
            ],
        ),
        None => Some(DataplaneMode::default()),
    };
    let bpf_pin_dir = path_or(report, &section, "bpf_pin_dir", lb_common::DEFAULT_PIN_DIR);
    let control_socket = path_or(report, &section, "control_socket", DEFAULT_CONTROL_SOCKET);
    let metrics = optional(&section, "metrics", None, |field| {
        field.socket_addr(report).map(Some)
    });
    Some(Node {
        name: name?.to_owned(),
        interface: interface?,
        dataplane: dataplane?,
        bpf_pin_dir: bpf_pin_dir?,
        control_socket: control_socket?,
        metrics: metrics?,
    })
}

fn path_or(
    report: &mut Reporter,
    section: &Section,
    key: &'static str,
    default: &str,
) -> Option<PathBuf> {
    match section.field(key) {
        Some(field) => field.non_empty_str(report).map(PathBuf::from),
        None => Some(PathBuf::from(default)),
    }
}

/// A network interface name as Linux accepts it (the kernel's `dev_valid_name`).
fn interface_name(report: &mut Reporter, field: Field) -> Option<String> {
    let name = field.str(report)?;
    match interface_name_problem(name) {
        Some(problem) => {
            report.error(field.at, format!("{} {name:?} {problem}", field.key));
            None
        }
        None => Some(name.to_owned()),
    }
}

/// What is wrong with `name` as an interface name, completing "interface "NAME" ...".
fn interface_name_problem(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("must not be empty".to_owned());
    }
    if name.len() > MAX_INTERFACE_NAME_BYTES {
        return Some(format!(
            "is {} bytes long; Linux interface names have at most {MAX_INTERFACE_NAME_BYTES}",
            name.len()
        ));
    }
    if name == "." || name == ".." {
        return Some("is not a valid interface name".to_owned());
    }
    name.chars()
        .find(|&c| c == '/' || c == ':' || c.is_whitespace())
        .map(|bad| format!("contains {bad:?}; interface names have no '/', ':' or whitespace"))
}

fn read_vrrp(
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
                .filter_map(|peer| peer.ipv4(report))
                .collect::<Vec<_>>()
        }),
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

    let (virtual_ipaddress, vip_spans) = virtual_ipaddress?.into_iter().unzip();
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
        unicast_peer: unicast_peer?,
        track: track?,
        garp_master_repeat: garp_master_repeat?,
        garp_master_delay: garp_master_delay?,
        notify: notify?,
        checksum_pseudo_header: checksum_pseudo_header?,
    };
    Some((instance, spans))
}

/// Reads `key` with `read` if present, else gives `default`.
fn optional<'a, T>(
    section: &Section<'a>,
    key: &'static str,
    default: T,
    read: impl FnOnce(Field<'a>) -> Option<T>,
) -> Option<T> {
    match section.field(key) {
        Some(field) => read(field),
        None => Some(default),
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

/// The `virtual_ipaddress` list with where each address is written. Accepts "a.b.c.d" and
/// "a.b.c.d/32": a virtual address is one host, so any other prefix length is a mistake.
fn virtual_addresses(report: &mut Reporter, field: Field) -> Option<Vec<(Ipv4Addr, Pos)>> {
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

fn virtual_address(report: &mut Reporter, field: Field) -> Option<Ipv4Addr> {
    let text = field.str(report)?;
    let (address, prefix) = match text.split_once('/') {
        Some((address, prefix)) => (address, Some(prefix)),
        None => (text, None),
    };
    let Ok(address) = address.parse::<Ipv4Addr>() else {
        report.error(
            field.at,
            format!(
                "virtual_ipaddress {text:?} is not an IPv4 address; write e.g. \"198.18.0.99\""
            ),
        );
        return None;
    };
    match prefix {
        None | Some("32") => Some(address),
        Some(prefix) => {
            report.error(
                field.at,
                format!(
                    "virtual_ipaddress {text:?} has prefix length /{prefix}: a virtual address is \
                     a single host; write \"{address}\" (or \"{address}/32\")"
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

fn read_service(report: &mut Reporter, section: Section) -> Option<(Service, ServiceSpans)> {
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
            emergency: backend.emergency,
            at: *at,
        })
        .chain(names.iter().map(|(named, at)| WrittenBackend {
            label: named.label(),
            port: named.port,
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
/// port is not rewritten. The userspace relay follows the same rule so a config behaves the
/// same whichever data plane runs it.
fn l4_addresses_fit(
    report: &mut Reporter,
    listen_at: Pos,
    listen: SocketAddrV4,
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

/// `[replication]`: this node's listen address and its peers'.
fn read_replication(report: &mut Reporter, section: Section) -> Option<(Replication, Pos)> {
    section.reject_unknown_keys(report, REPLICATION_KEYS);
    let listen_field = section.required(report, "listen");
    let listen = listen_field.and_then(|field| field.socket_addr(report));
    let peers = section.required(report, "peers").and_then(|field| {
        let elements = field.list(report)?;
        if elements.is_empty() {
            report.error(
                field.at,
                "peers is empty: list the other node's replication address, e.g. \
                 [\"198.18.0.101:7946\"] (or remove [replication])",
            );
            return None;
        }
        let mut peers = Vec::with_capacity(elements.len());
        let mut complete = true;
        for element in elements {
            match element.socket_addr(report) {
                Some(peer) if peer.ip().is_unspecified() => {
                    report.error(
                        element.at,
                        format!(
                            "peer {peer} has no address: give the other node's own address, \
                             e.g. \"198.18.0.101:{}\"",
                            peer.port()
                        ),
                    );
                    complete = false;
                }
                Some(peer) if Some(peer) == listen => {
                    report.error(
                        element.at,
                        format!(
                            "peer {peer} is this node's own listen address: list the other \
                             nodes here"
                        ),
                    );
                    complete = false;
                }
                Some(peer) => peers.push(peer),
                None => complete = false,
            }
        }
        complete.then_some(peers)
    });
    let replication = Replication {
        listen: listen?,
        peers: peers?,
    };
    Some((replication, listen_field?.at))
}
