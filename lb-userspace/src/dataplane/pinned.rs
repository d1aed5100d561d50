//! Reading the pinned maps: what `tandem maps` shows, with or without a daemon running.
//!
//! Everything here is read-only and goes through the pins in the node's pin directory, so an
//! operator can inspect the kernel's state while the daemon is stopped or wedged.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use aya::maps::{HashMap, Map, MapData, PerCpuArray};
use aya::programs::ProgramInfo;
use lb_common::{
    Counter, ServiceKey, ServiceMode, ServiceValue, COUNTERS_MAP, IPPROTO_TCP, IPPROTO_UDP,
    PROGRAM_PIN, SERVICES_MAP,
};
use serde::Serialize;

use super::xdp::{attached_interfaces, XdpError};

/// The state of the data plane as the kernel holds it.
#[derive(Clone, Debug, Serialize)]
pub struct MapsSnapshot {
    pub pin_dir: PathBuf,
    /// The pinned program, if any.
    pub program: Option<ProgramSummary>,
    /// Interfaces with a pinned Tandem link.
    pub attached: Vec<String>,
    /// Packets per counter, summed over CPUs, by the names of [`Counter::name`].
    pub counters: BTreeMap<&'static str, u64>,
    pub services: Vec<ServiceEntry>,
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
}

fn open_map(pin_dir: &Path, name: &str) -> Result<MapData, XdpError> {
    let path = pin_dir.join(name);
    if !path.exists() {
        return Err(XdpError::NoMaps(pin_dir.to_owned()));
    }
    MapData::from_pin(&path)
        .map_err(|e| XdpError::from_kernel(format!("opening {}", path.display()), &e))
}

/// Reads every Tandem map pinned in `pin_dir`.
pub fn read(pin_dir: &Path) -> Result<MapsSnapshot, XdpError> {
    let counters_map = Map::PerCpuArray(open_map(pin_dir, COUNTERS_MAP)?);
    let counters_map: PerCpuArray<MapData, u64> = PerCpuArray::try_from(counters_map)
        .map_err(|e| XdpError::from_kernel("reading COUNTERS", &e))?;
    let mut counters = BTreeMap::new();
    for counter in Counter::ALL {
        let per_cpu = counters_map.get(&(counter as u32), 0).map_err(|e| {
            XdpError::from_kernel(format!("reading counter {}", counter.name()), &e)
        })?;
        counters.insert(counter.name(), per_cpu.iter().sum());
    }

    let services_map = Map::HashMap(open_map(pin_dir, SERVICES_MAP)?);
    let services_map: HashMap<MapData, ServiceKey, ServiceValue> = HashMap::try_from(services_map)
        .map_err(|e| XdpError::from_kernel("reading SERVICES", &e))?;
    let mut services = Vec::new();
    for entry in services_map.iter() {
        let (key, value) = entry.map_err(|e| XdpError::from_kernel("reading SERVICES", &e))?;
        services.push(ServiceEntry {
            vip: Ipv4Addr::from(key.vip_octets()),
            port: key.port_host(),
            proto: match key.proto {
                IPPROTO_TCP => "tcp".to_owned(),
                IPPROTO_UDP => "udp".to_owned(),
                other => format!("ip-proto-{other}"),
            },
            id: value.id,
            mode: match ServiceMode::from_u32(value.mode) {
                Some(ServiceMode::Proxy) => "proxy".to_owned(),
                Some(ServiceMode::Forward) => "forward".to_owned(),
                None => format!("unknown({})", value.mode),
            },
        });
    }
    services.sort_by_key(|s| (s.vip, s.port, s.proto.clone()));

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
        counters,
        services,
    })
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
        let _ = writeln!(out, "attached  {attached}");
        let _ = writeln!(out, "\ncounters (packets, all CPUs)");
        for counter in Counter::ALL {
            let value = self.counters.get(counter.name()).copied().unwrap_or(0);
            let _ = writeln!(out, "  {:<12} {:>14}", counter.name(), value);
        }
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
                "  {:>3}  {}:{}/{}  {}",
                s.id, s.vip, s.port, s.proto, s.mode
            );
        }
        out
    }
}
