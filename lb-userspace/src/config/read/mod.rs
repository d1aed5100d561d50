//! The schema: reads `[node]`, `[[vrrp]]` and `[[service]]` from the parsed document into the
//! model, applying defaults and every rule that concerns a single entry (ranges, required keys,
//! combinations such as "session needs mode = http").
//!
//! Rules that compare entries with each other (unique names, VRIDs, addresses) need every entry
//! read first; they live in `cross_check.rs`, which gets the located pieces it needs through
//! [`VrrpSpans`] and [`ServiceSpans`].
//!
//! `vrrp.rs` reads `[[vrrp]]` entries and their trackers; `service.rs` reads `[[service]]`
//! entries, their backends, health checks and sessions; this file the document, `[node]` and
//! `[replication]`, and the helpers both use; `bgp.rs` reads `[bgp]`.

mod bgp;
mod service;
mod vrrp;

pub(super) use bgp::BgpSpans;

use std::path::PathBuf;

use toml_edit::Table;

use super::diagnostic::{Pos, Reporter};
use super::fields::{Field, Section};
use super::model::{
    Bgp, DataplaneMode, Node, Replication, Service, VrrpInstance, DEFAULT_CONTROL_SOCKET,
};
use super::proxy::{self, ProxySettings};

const TOP_LEVEL_KEYS: &[&str] = &["node", "vrrp", "service", "proxy", "replication", "bgp"];
const NODE_KEYS: &[&str] = &[
    "name",
    "interface",
    "dataplane",
    "bpf_pin_dir",
    "control_socket",
    "metrics",
];
const REPLICATION_KEYS: &[&str] = &["listen", "peers"];
/// Linux's IFNAMSIZ (16) minus the terminating NUL.
const MAX_INTERFACE_NAME_BYTES: usize = 15;

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
    /// `[bgp]`; `None` when absent or with errors (which are reported).
    pub bgp: Option<(Bgp, BgpSpans)>,
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
            vrrp::read_vrrp(report, section, node_interface)
        })
        .collect();

    let services = entries(report, &root, "service")
        .iter()
        .filter_map(|field| {
            let section = field.section(report, "[[service]]")?;
            service::read_service(report, section)
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

    let bgp = root.field("bgp").and_then(|field| {
        let section = field.section(report, "[bgp]")?;
        bgp::read_bgp(report, section)
    });

    Document {
        bgp,
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
