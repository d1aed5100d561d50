//! Reading the pinned maps: what `tandem maps` shows, with or without a daemon running.
//!
//! Everything here is read-only and goes through the pins in the node's pin directory, so an
//! operator can inspect the kernel's state while the daemon is stopped or wedged: services,
//! each L4 service's backends with their share of its Maglev table and the MAC frames go to,
//! the connection table (its size, or every entry), and the counters summed over CPUs.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use aya::programs::ProgramInfo;
use lb_common::{
    ServiceMode, BACKEND_UP, IPPROTO_TCP, IPPROTO_UDP, MAGLEV_TABLE_SIZE, MAX_BACKENDS,
    MAX_L4_SERVICES, NO_BACKEND, PROGRAM_PIN,
};
use serde::Serialize;

use super::loader::{attached_interfaces, XdpError};
use super::maps::KernelMaps;
use crate::dataplane::plan::Share;
use crate::wire::ethernet::Mac;

/// The state of the data plane as the kernel holds it.
#[derive(Clone, Debug, Serialize)]
pub struct MapsSnapshot {
    pub pin_dir: PathBuf,
    /// The pinned program, if any.
    pub program: Option<ProgramSummary>,
    /// Interfaces with a pinned Tandem link.
    pub attached: Vec<String>,
    /// Source MAC of forwarded frames.
    pub interface_mac: String,
    /// Packets per counter, summed over CPUs, by the names of [`lb_common::Counter::name`].
    pub counters: BTreeMap<&'static str, u64>,
    /// The virtual IPs (empty on a node that is not master).
    pub vips: Vec<Ipv4Addr>,
    /// The services (empty on a node that is not master).
    pub services: Vec<ServiceEntry>,
    /// Entries in the connection table.
    pub flow_count: usize,
    /// The entries themselves (`--verbose` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flows: Option<Vec<FlowEntry>>,
}

#[derive(Clone, Debug, Serialize)]
pub struct ProgramSummary {
    pub id: u32,
    pub name: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct ServiceEntry {
    pub vip: Ipv4Addr,
    pub port: u16,
    pub proto: String,
    pub id: u32,
    pub mode: String,
    /// Frames forwarded (L4 services).
    pub packets: u64,
    pub bytes: u64,
    /// L4 services: the backends, by their share of the Maglev table.
    pub backends: Vec<BackendEntry>,
}

#[derive(Clone, Debug, Serialize)]
pub struct BackendEntry {
    pub id: u32,
    pub address: Ipv4Addr,
    pub port: u16,
    pub mac: String,
    pub up: bool,
    pub share: Share,
    pub packets: u64,
    pub bytes: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct FlowEntry {
    pub client: Ipv4Addr,
    pub client_port: u16,
    pub vip: Ipv4Addr,
    pub port: u16,
    pub proto: String,
    pub backend_id: u32,
    pub backend: Ipv4Addr,
}

fn proto_name(proto: u8) -> String {
    match proto {
        IPPROTO_TCP => "tcp".to_owned(),
        IPPROTO_UDP => "udp".to_owned(),
        other => format!("ip-proto-{other}"),
    }
}

fn ip(wire: u32) -> Ipv4Addr {
    Ipv4Addr::from(wire.to_ne_bytes())
}

/// Reads every Tandem map pinned in `pin_dir`; with `verbose`, every connection-table entry.
pub fn read(pin_dir: &Path, verbose: bool) -> Result<MapsSnapshot, XdpError> {
    let maps = KernelMaps::open(pin_dir)?;
    let counters = maps.counters()?;

    let mut services = Vec::new();
    for (key, value) in maps.services()? {
        let forward = ServiceMode::from_u32(value.mode) == Some(ServiceMode::Forward);
        let stats = maps.service_stats(value.id).unwrap_or_default();
        let backends = if forward && value.ring < MAX_L4_SERVICES {
            backends_of(&maps, value.id, value.ring)?
        } else {
            Vec::new()
        };
        services.push(ServiceEntry {
            vip: Ipv4Addr::from(key.vip_octets()),
            port: key.port_host(),
            proto: proto_name(key.proto),
            id: value.id,
            mode: match ServiceMode::from_u32(value.mode) {
                Some(ServiceMode::Proxy) => "proxy".to_owned(),
                Some(ServiceMode::Forward) => "forward".to_owned(),
                None => format!("unknown({})", value.mode),
            },
            packets: stats.packets,
            bytes: stats.bytes,
            backends,
        });
    }
    services.sort_by_key(|s| (s.vip, s.port, s.proto.clone()));

    let mut vips: Vec<Ipv4Addr> = maps.vips()?.into_iter().map(ip).collect();
    vips.sort();

    let (flow_count, flows) = if verbose {
        let mut flows: Vec<FlowEntry> = maps
            .flows()?
            .into_iter()
            .map(|(key, value)| FlowEntry {
                client: ip(key.src),
                client_port: u16::from_be(key.sport),
                vip: ip(key.dst),
                port: u16::from_be(key.dport),
                proto: proto_name(key.proto),
                backend_id: value.backend,
                backend: ip(value.backend_addr),
            })
            .collect();
        flows.sort_by_key(|f| (f.vip, f.port, f.client, f.client_port));
        (flows.len(), Some(flows))
    } else {
        (maps.flow_count()?, None)
    };

    let program = ProgramInfo::from_pin(pin_dir.join(PROGRAM_PIN))
        .ok()
        .map(|info| ProgramSummary {
            id: info.id(),
            name: info.name_as_str().unwrap_or("?").to_owned(),
        });
    Ok(MapsSnapshot {
        pin_dir: pin_dir.to_owned(),
        program,
        attached: attached_interfaces(pin_dir),
        interface_mac: Mac(maps.iface()?.mac).to_string(),
        counters,
        vips,
        services,
        flow_count,
        flows,
    })
}

/// The backends of L4 service `id`: those its table points at, plus those recorded for it
/// that have no slot (down), with their shares.
fn backends_of(maps: &KernelMaps, id: u32, ring: u32) -> Result<Vec<BackendEntry>, XdpError> {
    let table = maps.read_table(ring)?;
    let mut slots: BTreeMap<u32, usize> = BTreeMap::new();
    for backend in table.iter().filter(|&&b| b != NO_BACKEND) {
        *slots.entry(*backend).or_default() += 1;
    }
    let mut ids: Vec<u32> = slots.keys().copied().collect();
    for candidate in 0..MAX_BACKENDS {
        if ids.contains(&candidate) {
            continue;
        }
        let value = maps.backend(candidate)?;
        if value.addr != 0 && value.service == id {
            ids.push(candidate);
        }
    }
    ids.sort();
    let mut backends = Vec::new();
    for backend_id in ids {
        let Ok(value) = maps.backend(backend_id) else {
            continue;
        };
        let stats = maps.backend_stats(backend_id).unwrap_or_default();
        backends.push(BackendEntry {
            id: backend_id,
            address: ip(value.addr),
            port: u16::from_be(value.port),
            mac: Mac(value.mac).to_string(),
            up: value.flags & BACKEND_UP != 0,
            share: Share::of(
                slots.get(&backend_id).copied().unwrap_or(0),
                MAGLEV_TABLE_SIZE as usize,
            ),
            packets: stats.packets,
            bytes: stats.bytes,
        });
    }
    Ok(backends)
}

impl MapsSnapshot {
    /// The text `tandem maps` prints on a terminal.
    pub fn render_text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "pin dir   {}", self.pin_dir.display());
        match &self.program {
            Some(p) => {
                let _ = writeln!(out, "program   {} (id {})", p.name, p.id);
            }
            None => {
                let _ = writeln!(out, "program   none pinned");
            }
        }
        let attached = if self.attached.is_empty() {
            "none".to_owned()
        } else {
            self.attached.join(", ")
        };
        let _ = writeln!(
            out,
            "attached  {attached} (source MAC {})",
            self.interface_mac
        );
        let vips = if self.vips.is_empty() {
            "none".to_owned()
        } else {
            self.vips
                .iter()
                .map(|v| v.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let _ = writeln!(out, "vips      {vips}");

        let _ = writeln!(out, "\nservices ({})", self.services.len());
        if self.services.is_empty() {
            let _ = writeln!(
                out,
                "  none (the node is not master, or no service is configured)"
            );
        }
        for s in &self.services {
            let _ = writeln!(
                out,
                "  {:>3}  {}:{}/{}  {}{}",
                s.id,
                s.vip,
                s.port,
                s.proto,
                s.mode,
                if s.mode == "forward" {
                    format!("  {} packets, {} bytes", s.packets, s.bytes)
                } else {
                    String::new()
                }
            );
            for b in &s.backends {
                let _ = writeln!(
                    out,
                    "         backend {:>4}  {:<21} {}  {:<4}  {:>6.2}% of the table ({} slots)  {} packets, {} bytes",
                    b.id,
                    format!("{}:{}", b.address, b.port),
                    b.mac,
                    if b.up { "up" } else { "down" },
                    b.share.percent,
                    b.share.slots,
                    b.packets,
                    b.bytes
                );
            }
        }

        let _ = writeln!(out, "\nconnection table: {} flows", self.flow_count);
        if let Some(flows) = &self.flows {
            for f in flows {
                let _ = writeln!(
                    out,
                    "  {}:{} -> {}:{}/{}  backend {} ({})",
                    f.client, f.client_port, f.vip, f.port, f.proto, f.backend, f.backend_id
                );
            }
        }

        let _ = writeln!(out, "\ncounters (packets, all CPUs)");
        for counter in lb_common::Counter::ALL {
            let value = self.counters.get(counter.name()).copied().unwrap_or(0);
            let _ = writeln!(out, "  {:<20} {:>14}", counter.name(), value);
        }
        out
    }
}
