//! The XDP data plane: Tandem's program on the node's interface, and the one writer of its maps.
//!
//! What it keeps in the maps, and when:
//! - BACKENDS and MAGLEV (every L4 backend with its MAC and health; every L4 service's table)
//!   are kept current all the time, master or not: they forward nothing by themselves.
//! - SERVICES and VIPS are what make the program act. [`Dataplane::activate`] writes them last
//!   (after the tables), [`Dataplane::deactivate`] removes them (VIPS first), so a backup's
//!   program passes every packet to its kernel.
//! - CONNTRACK is the program's; userspace never clears it, so flows survive a restart and a
//!   round trip through backup.
//!
//! When a backend goes down its table slots move first (new flows avoid it) and its flag is
//! cleared after (its recorded flows are placed again by the new table); coming up, the
//! order is reversed. MACs come from the neighbour table, refreshed every
//! [`MAC_REFRESH_INTERVAL`].

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::Context as _;
use futures::future::BoxFuture;
use lb_common::{BackendValue, ServiceKey, ServiceMode, ServiceValue, BACKEND_UP, NO_BACKEND};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::maps::KernelMaps;
use super::neighbour::Neighbours;
use super::plan::{Plan, PlannedService, Share};
use super::xdp::{self, AttachMode, Attachment};
use super::{BackendStatus, Dataplane, DataplaneKind, DataplaneStatus, HealthView, ServiceStatus};
use crate::config::Config;
use crate::health::HealthTable;
use crate::maglev::Maglev;

/// How often backend MACs are read again from the neighbour table (and stale entries probed).
pub const MAC_REFRESH_INTERVAL: Duration = Duration::from_secs(10);
/// How long `activate` waits for backends' MACs to resolve before it goes on without them
/// (their frames are dropped and counted as `drop_no_mac` until the refresh finds them).
const MAC_RESOLVE_WAIT: Duration = Duration::from_millis(1500);

/// The XDP implementation of [`Dataplane`].
#[derive(Clone)]
pub struct XdpDataplane {
    inner: Arc<Inner>,
}

struct Inner {
    plan: Plan,
    attachment: Attachment,
    neighbours: Neighbours,
    state: Mutex<State>,
    stop: CancellationToken,
}

struct State {
    maps: KernelMaps,
    active: bool,
    health: HealthView,
    macs: HashMap<Ipv4Addr, [u8; 6]>,
    /// Per L4 service (by ring): the Maglev table over its backends that are up, and the
    /// kernel table (backend ids) last written from it.
    tables: HashMap<u32, (Maglev, Vec<u32>)>,
}

impl XdpDataplane {
    /// Loads and attaches the program on `config.node.interface` (reusing what a previous run
    /// pinned), without activating anything.
    pub async fn open(config: &Config, mode: AttachMode) -> anyhow::Result<XdpDataplane> {
        let plan = Plan::new(config)?;
        for service in plan.l4_services() {
            for backend in &service.backends {
                if backend.address.port() != service.listen.port() {
                    warn!(
                        service = %service.name,
                        backend = %backend.address,
                        "direct server return keeps the client's destination port: the backend gets port {} on the VIP, not {}",
                        service.listen.port(),
                        backend.address.port()
                    );
                }
            }
        }
        let node = &config.node;
        let attachment = xdp::attach(&node.interface, mode, &node.bpf_pin_dir)
            .with_context(|| format!("attaching XDP to {}", node.interface))?;
        let if_index = xdp::interface_index(&node.interface)
            .with_context(|| format!("interface {} vanished", node.interface))?;
        let link = super::link::link_state(if_index)
            .with_context(|| format!("reading interface {}", node.interface))?;
        let mut maps = KernelMaps::open(&node.bpf_pin_dir)?;
        maps.set_iface_mac(link.mac)?;
        let was_active = !maps.services()?.is_empty();
        info!(
            interface = %attachment.interface,
            mode = %attachment.mode,
            program_id = attachment.program_id,
            pin_dir = %attachment.pin_dir.display(),
            reused_maps = attachment.reused_maps,
            "XDP data plane attached in {} mode{}",
            attachment.mode,
            if attachment.reused_maps {
                format!(
                    "; kept the pinned maps ({} recorded flows{})",
                    maps.flow_count().unwrap_or(0),
                    if was_active { ", still forwarding" } else { "" }
                )
            } else {
                String::new()
            }
        );
        let neighbours = Neighbours::connect(if_index).context("opening route netlink")?;
        let dataplane = XdpDataplane {
            inner: Arc::new(Inner {
                plan,
                attachment,
                neighbours,
                state: Mutex::new(State {
                    maps,
                    active: was_active,
                    health: HealthView::default(),
                    macs: HashMap::new(),
                    tables: HashMap::new(),
                }),
                stop: CancellationToken::new(),
            }),
        };
        dataplane.spawn_mac_refresh();
        Ok(dataplane)
    }

    /// What the attach did (mode, program id, pin directory).
    pub fn attachment(&self) -> &Attachment {
        &self.inner.attachment
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain data behind; carry on with it.
        self.inner
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn backend_ips(&self) -> Vec<Ipv4Addr> {
        let mut ips: Vec<Ipv4Addr> = self
            .inner
            .plan
            .l4_services()
            .flat_map(|s| s.backends.iter().map(|b| *b.address.ip()))
            .collect();
        ips.sort();
        ips.dedup();
        ips
    }

    /// Reads the backends' MACs (probing missing ones) and writes what changed.
    async fn refresh_macs(&self, wait: Duration) -> anyhow::Result<()> {
        let ips = self.backend_ips();
        if ips.is_empty() {
            return Ok(());
        }
        let found = self
            .inner
            .neighbours
            .resolve(&ips, wait)
            .await
            .context("reading the neighbour table")?;
        let mut state = self.state();
        let mut changed = false;
        for ip in &ips {
            match (found.get(ip), state.macs.get(ip)) {
                (Some(new), Some(old)) if new == old => {}
                (Some(new), _) => {
                    info!(backend = %ip, mac = %fmt_mac(*new), "backend MAC resolved");
                    state.macs.insert(*ip, *new);
                    changed = true;
                }
                (None, Some(_)) => {} // keep the last known one; the next round probes again
                (None, None) => {
                    warn!(backend = %ip, "backend MAC unknown (no ARP answer): its L4 frames are dropped until it answers; is it on the same L2 segment as the node?");
                }
            }
        }
        if changed {
            self.write_backends(&mut state)?;
        }
        Ok(())
    }

    fn spawn_mac_refresh(&self) {
        let this = self.clone();
        let stop = self.inner.stop.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(MAC_REFRESH_INTERVAL) => {}
                }
                if let Err(err) = this.refresh_macs(Duration::from_millis(500)).await {
                    warn!("refreshing backend MACs: {err:#}");
                }
            }
        });
    }

    /// Writes every L4 backend's entry (address, MAC, health).
    fn write_backends(&self, state: &mut State) -> anyhow::Result<()> {
        for service in self.inner.plan.l4_services() {
            for backend in &service.backends {
                let value = backend_value(state, service, backend.address, backend.id);
                state.maps.put_backend(backend.id, value)?;
            }
        }
        Ok(())
    }

    /// Rebuilds `service`'s table from the health view and writes the slots that changed.
    fn write_table(&self, state: &mut State, service: &PlannedService) -> anyhow::Result<()> {
        let Some(ring) = service.ring else {
            return Ok(());
        };
        let maglev = service.maglev(|a| state.health.is_up(&service.name, a));
        let table: Vec<u32> = if maglev.table().is_empty() {
            vec![NO_BACKEND; lb_common::MAGLEV_TABLE_SIZE as usize]
        } else {
            maglev
                .table()
                .iter()
                .map(|&i| service.backends[i as usize].id)
                .collect()
        };
        let previous = state.tables.get(&ring).map(|(_, t)| t.as_slice());
        let written = state.maps.write_table(ring, &table, previous)?;
        debug!(service = %service.name, ring, written, "Maglev table written");
        state.tables.insert(ring, (maglev, table));
        Ok(())
    }

    fn write_everything(&self, state: &mut State) -> anyhow::Result<()> {
        self.write_backends(state)?;
        for service in self.inner.plan.l4_services() {
            self.write_table(state, service)?;
        }
        Ok(())
    }

    fn apply_backend(&self, service: &str, backend: SocketAddrV4, up: bool) -> anyhow::Result<()> {
        let Some(planned) = self.inner.plan.service(service).filter(|s| s.mode.is_l4()) else {
            return Ok(());
        };
        let Some(entry) = planned.backends.iter().find(|b| b.address == backend) else {
            return Ok(());
        };
        let mut state = self.state();
        if !state.health.set(service, backend, up) {
            return Ok(());
        }
        info!(service, %backend, up, "L4 backend {}; rebuilding the Maglev table", if up { "up" } else { "down" });
        let value = backend_value(&state, planned, backend, entry.id);
        if up {
            state.maps.put_backend(entry.id, value)?;
            self.write_table(&mut state, planned)?;
        } else {
            self.write_table(&mut state, planned)?;
            state.maps.put_backend(entry.id, value)?;
        }
        Ok(())
    }

    async fn do_activate(&self) -> anyhow::Result<()> {
        if let Err(err) = self.refresh_macs(MAC_RESOLVE_WAIT).await {
            warn!("resolving backend MACs: {err:#}");
        }
        let mut state = self.state();
        self.write_everything(&mut state)?;
        let plan = &self.inner.plan;
        let wanted: Vec<(ServiceKey, ServiceValue)> = plan
            .services
            .iter()
            .map(|s| {
                (
                    ServiceKey::new(s.listen.ip().octets(), s.listen.port(), s.proto()),
                    ServiceValue {
                        id: s.id,
                        mode: if s.mode.is_l4() {
                            ServiceMode::Forward as u32
                        } else {
                            ServiceMode::Proxy as u32
                        },
                        ring: s.ring.unwrap_or(0),
                    },
                )
            })
            .collect();
        for (key, value) in &wanted {
            state.maps.put_service(*key, *value)?;
        }
        for (key, _) in state.maps.services()? {
            if !wanted.iter().any(|(k, _)| *k == key) {
                state.maps.remove_service(&key)?;
            }
        }
        let vips: Vec<u32> = plan
            .vips
            .iter()
            .map(|v| u32::from_ne_bytes(v.octets()))
            .collect();
        for vip in &vips {
            state.maps.put_vip(*vip)?;
        }
        for vip in state.maps.vips()? {
            if !vips.contains(&vip) {
                state.maps.remove_vip(vip)?;
            }
        }
        if !state.active {
            info!(
                services = plan.services.len(),
                l4 = plan.l4_services().count(),
                vips = plan.vips.len(),
                "XDP data plane active"
            );
        }
        state.active = true;
        Ok(())
    }

    fn do_deactivate(&self) -> anyhow::Result<()> {
        let mut state = self.state();
        for vip in state.maps.vips()? {
            state.maps.remove_vip(vip)?;
        }
        for (key, _) in state.maps.services()? {
            state.maps.remove_service(&key)?;
        }
        if state.active {
            info!("XDP data plane inactive: every packet goes to the kernel");
        }
        state.active = false;
        Ok(())
    }
}

fn backend_value(
    state: &State,
    service: &PlannedService,
    address: SocketAddrV4,
    _id: u32,
) -> BackendValue {
    BackendValue {
        addr: u32::from_ne_bytes(address.ip().octets()),
        mac: state.macs.get(address.ip()).copied().unwrap_or([0; 6]),
        port: address.port().to_be(),
        flags: if state.health.is_up(&service.name, address) {
            BACKEND_UP
        } else {
            0
        },
        service: service.id,
    }
}

pub(crate) fn fmt_mac(mac: [u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

impl Dataplane for XdpDataplane {
    fn activate(&self) -> BoxFuture<'_, anyhow::Result<()>> {
        Box::pin(self.do_activate())
    }

    fn deactivate(&self) -> BoxFuture<'_, anyhow::Result<()>> {
        Box::pin(async move { self.do_deactivate() })
    }

    fn set_backend_up(
        &self,
        service: &str,
        backend: SocketAddrV4,
        up: bool,
    ) -> BoxFuture<'_, anyhow::Result<()>> {
        let service = service.to_owned();
        Box::pin(async move { self.apply_backend(&service, backend, up) })
    }

    fn follow_health(&self, service: &str, table: Arc<HealthTable>) {
        let this = self.clone();
        super::spawn_health_follower(service, table, move |service, backend, up| {
            let this = this.clone();
            Box::pin(async move { this.apply_backend(&service, backend, up) })
        });
    }

    fn shutdown(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            self.inner.stop.cancel();
            let state = self.state();
            info!(
                pin_dir = %self.inner.attachment.pin_dir.display(),
                active = state.active,
                "leaving the XDP program attached and its maps in place: established L4 flows go on, and the next start picks them up"
            );
        })
    }

    fn status(&self) -> DataplaneStatus {
        let state = self.state();
        let services = self
            .inner
            .plan
            .l4_services()
            .map(|service| {
                let maglev = service
                    .ring
                    .and_then(|r| state.tables.get(&r))
                    .map(|(m, _)| m.clone())
                    .unwrap_or_else(|| service.maglev(|a| state.health.is_up(&service.name, a)));
                let shares = maglev.shares();
                ServiceStatus {
                    name: service.name.clone(),
                    listen: service.listen,
                    mode: service.mode.as_str(),
                    backends: service
                        .backends
                        .iter()
                        .enumerate()
                        .map(|(i, b)| {
                            let stats = state.maps.backend_stats(b.id).unwrap_or_default();
                            BackendStatus {
                                address: b.address,
                                weight: b.weight,
                                up: state.health.is_up(&service.name, b.address),
                                share: Share::of(
                                    shares.get(i).copied().unwrap_or(0),
                                    maglev.table().len(),
                                ),
                                mac: state.macs.get(b.address.ip()).map(|m| fmt_mac(*m)),
                                packets: stats.packets,
                                bytes: stats.bytes,
                            }
                        })
                        .collect(),
                }
            })
            .collect();
        DataplaneStatus {
            kind: DataplaneKind::Xdp,
            interface: self.inner.attachment.interface.clone(),
            attach_mode: Some(self.inner.attachment.mode),
            pin_dir: Some(self.inner.attachment.pin_dir.clone()),
            active: state.active,
            fallback_reason: None,
            services,
            flows: state.maps.flow_count().ok(),
        }
    }
}
