//! Reading the pinned maps: what `tandem maps` shows, with or without a daemon running.
//!
//! Everything here is read-only and goes through the pins in the node's pin directory, so an
//! operator can inspect the kernel's state while the daemon is stopped or wedged: services,
//! each L4 service's backends with their share of its Maglev table and the MAC frames go to,
//! the connection table (its size, or every entry), and the counters summed over CPUs. Both
//! families are shown together: IPv6 addresses as written (`2001:2::99`), IPv6 sockets in
//! brackets (`[2001:2::99]:80`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};

use aya::programs::ProgramInfo;
use lb_common::{
    ServiceMode, BACKEND_UP, MAGLEV_TABLE_SIZE, MAX_BACKENDS, MAX_L4_SERVICES, NO_BACKEND,
    PROGRAM_PIN,
};
use serde::Serialize;

use super::loader::{attached_interfaces, XdpError};
use super::maps::KernelMaps;
use super::trace::Tracing;
use crate::dataplane::plan::{proto_name, KernelKey, Share};
use crate::wire::ethernet::Mac;

/// The state of the data plane as the kernel holds it.
#[derive(Clone, Debug, Serialize)]
pub struct MapsSnapshot {
    pub pin_dir: PathBuf,
    /// The pinned program, if any.
    pub program: Option<ProgramSummary>,
    /// Interfaces with a pinned Tandem link.
    pub attached: Vec<String>,
    /// Whether `tandem trace` has the program log its decisions.
    pub tracing: Tracing,
    /// Source MAC of forwarded frames.
    pub interface_mac: String,
    /// Packets per counter, summed over CPUs, by the names of [`lb_common::Counter::name`].
    pub counters: BTreeMap<&'static str, u64>,
    /// The virtual IPs (empty on a node that is not master).
    pub vips: Vec<IpAddr>,
    /// The services (empty on a node that is not master).
    pub services: Vec<ServiceEntry>,
    /// Entries in the connection tables (IPv4 and IPv6).
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
    pub vip: IpAddr,
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
    pub address: IpAddr,
    pub port: u16,
    pub mac: String,
    pub up: bool,
    pub share: Share,
    pub packets: u64,
    pub bytes: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct FlowEntry {
    pub client: IpAddr,
    pub client_port: u16,
    pub vip: IpAddr,
    pub port: u16,
    pub proto: String,
    pub backend_id: u32,
    pub backend: IpAddr,
}

fn ip(wire: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(wire.to_ne_bytes()))
}

fn ip6(octets: [u8; 16]) -> IpAddr {
    IpAddr::V6(Ipv6Addr::from(octets))
}

/// Reads every Tandem map pinned in `pin_dir`; with `verbose`, every connection-table entry.
pub fn read(pin_dir: &Path, verbose: bool) -> Result<MapsSnapshot, XdpError> {
    let maps = KernelMaps::open(pin_dir)?;
    let counters = maps.counters()?;

    let mut services = Vec::new();
    for (key, value) in maps.service_entries()? {
        let forward = ServiceMode::from_u32(value.mode) == Some(ServiceMode::Forward);
        let stats = maps.service_stats(value.id).unwrap_or_default();
        let ipv6 = matches!(key, KernelKey::V6(_));
        let backends = if forward && value.ring < MAX_L4_SERVICES {
            backends_of(&maps, value.id, value.ring, ipv6)?
        } else {
            Vec::new()
        };
        let listen = key.listen();
        services.push(ServiceEntry {
            vip: listen.ip(),
            port: listen.port(),
            proto: proto_name(key.proto()),
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

    let mut vips: Vec<IpAddr> = maps.vip_addresses()?;
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
        flows.extend(maps.flows6()?.into_iter().map(|(key, value)| FlowEntry {
            client: ip6(key.src),
            client_port: u16::from_be(key.sport),
            vip: ip6(key.dst),
            port: u16::from_be(key.dport),
            proto: proto_name(key.proto),
            backend_id: value.backend,
            backend: ip6(value.backend_addr),
        }));
        flows.sort_by_key(|f| (f.vip, f.port, f.client, f.client_port));
        (flows.len(), Some(flows))
    } else {
        (maps.flow_count_all()?, None)
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
        tracing: Tracing::read(pin_dir)?,
        interface_mac: Mac(maps.iface()?.mac).to_string(),
        counters,
        vips,
        services,
        flow_count,
        flows,
    })
}

/// A BACKENDS or BACKENDS6 entry in one shape for both families.
struct Slot {
    address: IpAddr,
    port: u16,
    mac: [u8; 6],
    flags: u32,
    service: u32,
}

impl Slot {
    /// Entry `id` of BACKENDS6 (`ipv6`) or BACKENDS; `None` when it holds no backend.
    fn read(maps: &KernelMaps, id: u32, ipv6: bool) -> Result<Option<Slot>, XdpError> {
        Ok(if ipv6 {
            let b = maps.backend6(id)?;
            (b.addr != [0; 16]).then(|| Slot {
                address: ip6(b.addr),
                port: u16::from_be(b.port),
                mac: b.mac,
                flags: b.flags,
                service: b.service,
            })
        } else {
            let b = maps.backend(id)?;
            (b.addr != 0).then(|| Slot {
                address: ip(b.addr),
                port: u16::from_be(b.port),
                mac: b.mac,
                flags: b.flags,
                service: b.service,
            })
        })
    }
}

/// The backends of L4 service `id` (in BACKENDS6 when `ipv6`): those its table points at,
/// plus those recorded for it that have no slot (down), with their shares.
fn backends_of(
    maps: &KernelMaps,
    id: u32,
    ring: u32,
    ipv6: bool,
) -> Result<Vec<BackendEntry>, XdpError> {
    let read = |backend_id: u32| Slot::read(maps, backend_id, ipv6);
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
        if read(candidate)?.is_some_and(|b| b.service == id) {
            ids.push(candidate);
        }
    }
    ids.sort();
    let mut backends = Vec::new();
    for backend_id in ids {
        let Ok(Some(Slot {
            address,
            port,
            mac,
            flags,
            ..
        })) = read(backend_id)
        else {
            continue;
        };
        let stats = maps.backend_stats(backend_id).unwrap_or_default();
        backends.push(BackendEntry {
            id: backend_id,
            address,
            port,
            mac: Mac(mac).to_string(),
            up: flags & BACKEND_UP != 0,
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
        let _ = writeln!(out, "tracing   {}", self.tracing.describe());

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
                "  {:>3}  {}/{}  {}{}",
                s.id,
                SocketAddr::new(s.vip, s.port),
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
                    SocketAddr::new(b.address, b.port).to_string(),
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
                    "  {} -> {}/{}  backend {} ({})",
                    SocketAddr::new(f.client, f.client_port),
                    SocketAddr::new(f.vip, f.port),
                    f.proto,
                    f.backend,
                    f.backend_id
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_services_backends_and_flows_are_shown_with_bracketed_sockets() {
        let vip6: IpAddr = "2001:2::99".parse().unwrap();
        let backend6: IpAddr = "2001:2::102".parse().unwrap();
        let client6: IpAddr = "2001:2::10".parse().unwrap();
        let snapshot = MapsSnapshot {
            pin_dir: PathBuf::from("/sys/fs/bpf/tandem"),
            program: None,
            attached: vec!["eth0".to_owned()],
            tracing: Tracing::Off,
            interface_mac: "02:00:00:00:00:64".to_owned(),
            counters: BTreeMap::new(),
            vips: vec!["198.18.0.99".parse().unwrap(), vip6],
            services: vec![ServiceEntry {
                vip: vip6,
                port: 7000,
                proto: "tcp".to_owned(),
                id: 1,
                mode: "forward".to_owned(),
                packets: 3,
                bytes: 300,
                backends: vec![BackendEntry {
                    id: 2,
                    address: backend6,
                    port: 7000,
                    mac: "02:00:00:00:00:66".to_owned(),
                    up: true,
                    share: Share::of(65537, 65537),
                    packets: 3,
                    bytes: 300,
                }],
            }],
            flow_count: 1,
            flows: Some(vec![FlowEntry {
                client: client6,
                client_port: 40000,
                vip: vip6,
                port: 7000,
                proto: "tcp".to_owned(),
                backend_id: 2,
                backend: backend6,
            }]),
        };
        let text = snapshot.render_text();
        assert!(
            text.contains("vips      198.18.0.99, 2001:2::99\n"),
            "{text}"
        );
        assert!(
            text.contains("  1  [2001:2::99]:7000/tcp  forward"),
            "{text}"
        );
        assert!(text.contains("backend    2  [2001:2::102]:7000"), "{text}");
        assert!(
            text.contains("  [2001:2::10]:40000 -> [2001:2::99]:7000/tcp  backend 2001:2::102 (2)"),
            "{text}"
        );
        let json = serde_json::to_value(&snapshot).unwrap();
        assert_eq!(json["services"][0]["vip"], "2001:2::99");
        assert_eq!(json["services"][0]["backends"][0]["address"], "2001:2::102");
    }
}
