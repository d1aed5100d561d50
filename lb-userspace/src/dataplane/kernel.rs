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
//! Each family's entries go to its own maps (SERVICES6, VIPS6, BACKENDS6 for IPv6 services,
//! VIPs and backends), picked by `KernelMaps` from the address; everything below is the same
//! for both.
//!
//! When a backend goes down its table slots move first (new flows avoid it) and its flag is
//! cleared after (its recorded flows are placed again by the new table); coming up, the
//! order is reversed. MACs come from the neighbour table, refreshed every
//! [`MAC_REFRESH_INTERVAL`].
//!
//! A reload ([`Dataplane::reconfigure`]) numbers the new config against the plan in force
//! ([`Plan::reconcile`]: what remains keeps its ids, so the program keeps its recorded flows
//! on their backends) and, if that fits the maps, writes in an order where no packet meets a
//! half-written state that sends it wrong:
//! 1. while active, SERVICES entries that go away or change are removed: no packet reaches a
//!    removed service's table or backends any more, whose service id and ring the new plan
//!    may give to a new service (an entry whose key and value stay, e.g. a service renamed
//!    on the same address, stays: its packets meet the old or the new backends of that
//!    address while its table is rewritten);
//! 2. backends that remain keep their health, the others' is forgotten; counters of ids the
//!    new plan gives afresh are zeroed (a freed id would show its last owner's counts);
//! 3. BACKENDS is written for every backend of the new plan (new ids: no table points at them
//!    yet, and ids freed by this reload are not among them);
//! 4. tables of new rings and of services whose backends or weights changed are written
//!    (only the slots that differ), so new flows reach new backends and avoid removed ones;
//! 5. BACKENDS entries of removed backends are cleared, so the flows recorded with them fail
//!    the program's check and are placed again by the new tables; rings no longer used are
//!    filled with NO_BACKEND;
//! 6. while active, SERVICES entries of new and changed services are put, their tables ready.
//!
//! MACs of new backends are resolved (a short wait) before step 1. The program and the maps
//! stay the same object through a reload: nothing is reloaded in the kernel. If a write fails
//! half-way (not expected: every write is within the maps' bounds), the previous plan is
//! written back whole and the error returned.
//!
//! A restart keeps the ids. [`XdpDataplane::open`], finding the maps a previous run pinned,
//! numbers its config against what that run left in them instead of in config order: each
//! service gets the id and ring of the SERVICES entry with its listen address, port and
//! protocol (the maps hold no names), each of its backends the id of the BACKENDS entry with
//! that service id and its address ([`Plan::recover`], then [`Plan::reconcile`] as for a
//! reload). So after reloads that inserted or removed backends, the ids the connection table
//! recorded still name the same backends and established flows go on; a config edited while
//! the daemon was stopped is taken as a reload would take it. The first activation then
//! moves the maps to that plan in a reload's order: SERVICES entries that change or go away
//! are removed before the backends and tables are written, BACKENDS entries of backends the
//! config no longer has are cleared after, and SERVICES is put last.
//!
//! What remains: SERVICES holds entries only while the node forwards. A daemon stopped on a
//! backup, or on a VRRP master (a clean stop steps down first: the peer takes the VIPs and
//! [`Dataplane::deactivate`] empties SERVICES), leaves none, and the next start has nothing
//! to recover: it numbers in config order. Only a standalone node (no VRRP) and a daemon that
//! died without stopping (crash, SIGKILL) find SERVICES filled. For the others, the flows
//! recorded while the node was master have been carried by the peer since, placed by its own
//! Maglev table (those whose placement changed with the backends broke at the failover);
//! when this node is master again, a recorded flow whose backend id now names another backend
//! is placed again by Maglev, which keeps it on its backend unless the backends changed since
//! it was placed. Maps that hold what no Tandem writes (ids past the maps' limits, two
//! services with one id or one table) are not taken over either: the start numbers in config
//! order and logs why.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::Context as _;
use futures::future::BoxFuture;
use lb_common::{ServiceValue, BACKEND_UP, NO_BACKEND};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::flowshare::{Applied, Counters, Ignored, Walk, SCAN_BUDGET, SHARE_INTERVAL};
use super::plan::{KernelKey, Plan, PlannedService, Share};
use super::xdp::loader::{self, AttachMode, Attachment};
use super::xdp::maps::KernelMaps;
use super::xdp::neighbour::Neighbours;
use super::{BackendStatus, Dataplane, DataplaneKind, DataplaneStatus, HealthView, ServiceStatus};
use crate::backends::health::HealthTable;
use crate::backends::maglev::Maglev;
use crate::config::Config;
use crate::proxy::policy::replicate::{FlowEntry, FlowSink, Replicator};
use crate::wire::ethernet::Mac;

/// How often backend MACs are read again from the neighbour table (and stale entries probed).
pub const MAC_REFRESH_INTERVAL: Duration = Duration::from_secs(10);
/// How long `activate` waits for backends' MACs to resolve before it goes on without them
/// (their frames are dropped and counted as `drop_no_mac` until the refresh finds them).
const MAC_RESOLVE_WAIT: Duration = Duration::from_millis(1500);
/// The same for the backends a reload adds: shorter, since the reload waits for it, and a new
/// backend without a MAC only means its first frames are dropped until the refresh finds it.
const RELOAD_MAC_WAIT: Duration = Duration::from_millis(1000);

/// The XDP implementation of [`Dataplane`].
#[derive(Clone)]
pub struct XdpDataplane {
    inner: Arc<Inner>,
}

struct Inner {
    attachment: Attachment,
    neighbours: Neighbours,
    state: Mutex<State>,
    stop: CancellationToken,
    /// One reload at a time, from numbering the new config to its last map write (the MAC
    /// lookup in between runs without the state lock).
    reload: tokio::sync::Mutex<()>,
    /// Sharing flows with the peers ([`Dataplane::share_flows`]); locked after `state`.
    sharing: Mutex<Option<Walk>>,
    share_counters: Counters,
}

struct State {
    /// The services and ids the maps hold; a reload replaces it.
    plan: Arc<Plan>,
    maps: KernelMaps,
    active: bool,
    health: HealthView,
    macs: HashMap<IpAddr, [u8; 6]>,
    /// Per L4 service (by ring): the Maglev table over its backends that are up, and the
    /// kernel table (backend ids) last written from it.
    tables: HashMap<u32, (Maglev, Vec<u32>)>,
}

impl XdpDataplane {
    /// Loads and attaches the program on `config.node.interface` (reusing what a previous run
    /// pinned), without activating anything.
    pub async fn open(config: &Config, mode: AttachMode) -> anyhow::Result<XdpDataplane> {
        // A config the maps cannot hold is refused before anything is attached.
        let fresh = Plan::new(config)?;
        warn_about_ports(&fresh, None);
        let node = &config.node;
        let attachment = loader::attach(&node.interface, mode, &node.bpf_pin_dir)
            .with_context(|| format!("attaching XDP to {}", node.interface))?;
        let if_index = loader::interface_index(&node.interface)
            .with_context(|| format!("interface {} vanished", node.interface))?;
        let link = super::xdp::link::link_state(if_index)
            .with_context(|| format!("reading interface {}", node.interface))?;
        let mut maps = KernelMaps::open(&node.bpf_pin_dir)?;
        maps.set_iface_mac(link.mac)?;
        let pinned_services = maps.service_entries()?;
        let was_active = !pinned_services.is_empty();
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
                    maps.flow_count_all().unwrap_or(0),
                    if was_active { ", still forwarding" } else { "" }
                )
            } else {
                String::new()
            }
        );
        let plan = if attachment.reused_maps {
            numbering_at_start(config, &maps, &pinned_services, fresh)
        } else {
            fresh
        };
        let neighbours = Neighbours::connect(if_index).context("opening route netlink")?;
        let dataplane = XdpDataplane {
            inner: Arc::new(Inner {
                attachment,
                neighbours,
                state: Mutex::new(State {
                    plan: Arc::new(plan),
                    maps,
                    active: was_active,
                    health: HealthView::default(),
                    macs: HashMap::new(),
                    tables: HashMap::new(),
                }),
                stop: CancellationToken::new(),
                reload: tokio::sync::Mutex::new(()),
                sharing: Mutex::new(None),
                share_counters: Counters::default(),
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

    /// Reads the backends' MACs (probing missing ones) and writes what changed.
    async fn refresh_macs(&self, wait: Duration) -> anyhow::Result<()> {
        let ips = backend_ips(&self.state().plan);
        if ips.is_empty() {
            return Ok(());
        }
        let found = self.resolve_macs(&ips, wait).await?;
        let mut state = self.state();
        if record_macs(&mut state, &ips, &found) {
            let plan = state.plan.clone();
            write_backends(&mut state, &plan)?;
        }
        Ok(())
    }

    async fn resolve_macs(
        &self,
        ips: &[IpAddr],
        wait: Duration,
    ) -> anyhow::Result<HashMap<IpAddr, [u8; 6]>> {
        self.inner
            .neighbours
            .resolve(ips, wait)
            .await
            .context("reading the neighbour table")
    }

    fn sharing(&self) -> MutexGuard<'_, Option<Walk>> {
        self.inner
            .sharing
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// One pass of the flow sharing's walk: the flows not shared yet among the next
    /// [`SCAN_BUDGET`] keys.
    fn flows_to_share(&self) -> anyhow::Result<Vec<FlowEntry>> {
        let state = self.state();
        let mut sharing = self.sharing();
        let Some(walk) = sharing.as_mut() else {
            return Ok(Vec::new());
        };
        Ok(walk.pass(&state.maps, &state.plan, SCAN_BUDGET)?)
    }

    /// Records flows received from a peer where this node has none of its own.
    fn apply_shared(&self, flows: &[FlowEntry]) {
        let mut state = self.state();
        let plan = state.plan.clone();
        let mut sharing = self.sharing();
        let Some(walk) = sharing.as_mut() else {
            return;
        };
        for flow in flows {
            match walk.apply(&mut state.maps, &plan, flow) {
                Ok(applied) => {
                    if let Applied::Ignored(why) = applied {
                        debug!(service = %flow.service, backend = %flow.backend, "shared flow ignored: {why:?}");
                    }
                    self.inner.share_counters.count(applied);
                }
                Err(err) => {
                    warn!(service = %flow.service, backend = %flow.backend, "recording a shared flow: {err}");
                    self.inner
                        .share_counters
                        .count(Applied::Ignored(Ignored::Failed));
                }
            }
        }
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

    fn apply_backend(&self, service: &str, backend: SocketAddr, up: bool) -> anyhow::Result<()> {
        let mut state = self.state();
        // The plan of the moment: a follower of a service a reload removed finds nothing.
        let plan = state.plan.clone();
        let Some(planned) = plan.service(service).filter(|s| s.mode.is_l4()) else {
            return Ok(());
        };
        let Some(entry) = planned.backends.iter().find(|b| b.address == backend) else {
            return Ok(());
        };
        if !state.health.set(service, backend, up) {
            return Ok(());
        }
        info!(service, %backend, up, "L4 backend {}; rebuilding the Maglev table", if up { "up" } else { "down" });
        if up {
            put_backend(&mut state, planned, backend, entry.id)?;
            write_table(&mut state, planned)?;
        } else {
            write_table(&mut state, planned)?;
            put_backend(&mut state, planned, backend, entry.id)?;
        }
        Ok(())
    }

    /// `tandem drain` / `enable`: only the table changes; the backend's flag (up) stays, so
    /// the program keeps its recorded flows on it.
    fn apply_drain(
        &self,
        service: &str,
        backend: SocketAddr,
        drained: bool,
    ) -> anyhow::Result<bool> {
        let mut state = self.state();
        let plan = state.plan.clone();
        let Some(planned) = plan.service(service).filter(|s| s.mode.is_l4()) else {
            return Ok(false);
        };
        let backend = planned.require_backend(backend)?;
        if state.health.set_drained(service, backend, drained) {
            info!(service, %backend, drained, "L4 backend {}; rebuilding the Maglev table", if drained { "drained (no new flows, recorded flows go on)" } else { "back in rotation" });
            write_table(&mut state, planned)?;
        }
        Ok(true)
    }

    async fn do_reconfigure(&self, config: &Config) -> anyhow::Result<()> {
        let _one_at_a_time = self.inner.reload.lock().await;
        let previous = self.state().plan.clone();
        let plan = Arc::new(Plan::reconcile(&previous, config)?);
        warn_about_ports(&plan, Some(&previous));
        // New backends' MACs before anything changes, so their first frames find them.
        let missing: Vec<IpAddr> = {
            let state = self.state();
            backend_ips(&plan)
                .into_iter()
                .filter(|ip| !state.macs.contains_key(ip))
                .collect()
        };
        if !missing.is_empty() {
            match self.resolve_macs(&missing, RELOAD_MAC_WAIT).await {
                Ok(found) => {
                    record_macs(&mut self.state(), &missing, &found);
                }
                Err(err) => warn!("resolving the new backends' MACs: {err:#}"),
            }
        }
        let mut state = self.state();
        let health = state.health.clone();
        if let Err(err) = switch_plan(&mut state, plan.clone()) {
            // Not expected (writes within the maps' bounds), but then the maps hold a mix:
            // go back to what the node had, which the caller still believes in.
            warn!("reload stopped half-way ({err:#}); writing the previous services back");
            state.health = health;
            if let Err(back) = restore_plan(&mut state, previous, &plan) {
                warn!("writing the previous services back: {back:#}");
            }
            return Err(err.context("writing the reloaded services to the XDP maps"));
        }
        info!(
            services = plan.services.len(),
            l4 = plan.l4_services().count(),
            backends = plan.l4_services().map(|s| s.backends.len()).sum::<usize>(),
            active = state.active,
            "XDP data plane reconfigured"
        );
        Ok(())
    }

    async fn do_activate(&self) -> anyhow::Result<()> {
        if let Err(err) = self.refresh_macs(MAC_RESOLVE_WAIT).await {
            warn!("resolving backend MACs: {err:#}");
        }
        let mut state = self.state();
        let plan = state.plan.clone();
        if state.active {
            // Forwarding already: a restarted daemon's first activation. What changes or goes
            // away stops first, so no packet meets a table or backends rewritten under it (as
            // step 1 of a reload); with the numbering recovered, nothing does.
            let wanted = services_wanted(&plan);
            for (key, value) in state.maps.service_entries()? {
                if !wanted.contains(&(key, value)) {
                    state.maps.remove_service_entry(&key)?;
                }
            }
        }
        write_backends(&mut state, &plan)?;
        for service in plan.l4_services() {
            write_table(&mut state, service)?;
        }
        clear_stray_backends(&mut state, &plan)?;
        write_services(&mut state)?;
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
        for vip in state.maps.vip_addresses()? {
            state.maps.remove_vip_address(vip)?;
        }
        for (key, _) in state.maps.service_entries()? {
            state.maps.remove_service_entry(&key)?;
        }
        if state.active {
            info!("XDP data plane inactive: every packet goes to the kernel");
        }
        state.active = false;
        Ok(())
    }
}

/// The L4 backends' addresses, each once.
fn backend_ips(plan: &Plan) -> Vec<IpAddr> {
    let mut ips: Vec<IpAddr> = plan
        .l4_services()
        .flat_map(|s| s.backends.iter().map(|b| b.address.ip()))
        .collect();
    ips.sort();
    ips.dedup();
    ips
}

/// Notes the MACs `found` for `ips`; true when one is new or changed.
fn record_macs(state: &mut State, ips: &[IpAddr], found: &HashMap<IpAddr, [u8; 6]>) -> bool {
    let mut changed = false;
    for ip in ips {
        match (found.get(ip), state.macs.get(ip)) {
            (Some(new), Some(old)) if new == old => {}
            (Some(new), _) => {
                info!(backend = %ip, mac = %Mac(*new), "backend MAC resolved");
                state.macs.insert(*ip, *new);
                changed = true;
            }
            (None, Some(_)) => {} // keep the last known one; the next round probes again
            (None, None) => {
                warn!(backend = %ip, "backend MAC unknown (no ARP or neighbour discovery answer): its L4 frames are dropped until it answers; is it on the same L2 segment as the node?");
            }
        }
    }
    changed
}

/// Direct server return cannot change ports: says so for each backend whose port differs
/// from its service's (only for the new ones after a reload).
fn warn_about_ports(plan: &Plan, previous: Option<&Plan>) {
    for service in plan.l4_services() {
        for backend in &service.backends {
            let known = previous
                .and_then(|p| p.service(&service.name))
                .is_some_and(|p| p.listen == service.listen && p.backends.contains(backend));
            if backend.address.port() != service.listen.port() && !known {
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
}

/// Writes backend `id` of `service` (address, MAC, health, service id) into BACKENDS or
/// BACKENDS6, by the address's family.
fn put_backend(
    state: &mut State,
    service: &PlannedService,
    address: SocketAddr,
    id: u32,
) -> anyhow::Result<()> {
    let mac = state.macs.get(&address.ip()).copied().unwrap_or([0; 6]);
    let flags = if state.health.is_up(&service.name, address) {
        BACKEND_UP
    } else {
        0
    };
    state
        .maps
        .put_backend_entry(id, address, mac, flags, service.id)?;
    Ok(())
}

/// Writes the entry (address, MAC, health, service) of every L4 backend of `plan`.
fn write_backends(state: &mut State, plan: &Plan) -> anyhow::Result<()> {
    for service in plan.l4_services() {
        for backend in &service.backends {
            put_backend(state, service, backend.address, backend.id)?;
        }
    }
    Ok(())
}

/// Clears the BACKENDS entries that hold no backend of `plan` (a previous run's backends that
/// the config no longer has), so the flows recorded with them are placed again. Called once
/// no table of `plan` points at them.
fn clear_stray_backends(state: &mut State, plan: &Plan) -> anyhow::Result<()> {
    let ids: HashSet<u32> = plan
        .l4_services()
        .flat_map(|s| s.backends.iter().map(|b| b.id))
        .collect();
    for (id, value) in state.maps.backend_entries()? {
        if !ids.contains(&id) {
            debug!(id, backend = %value.address, "clearing a backend the config no longer has");
            state.maps.clear_backend(id)?;
        }
    }
    Ok(())
}

/// The plan a start begins with when the maps were pinned by a previous run: `config`
/// numbered against what that run left in them (see the module doc), or `fresh` (config
/// order) when there is nothing to go on.
fn numbering_at_start(
    config: &Config,
    maps: &KernelMaps,
    services: &[(KernelKey, ServiceValue)],
    fresh: Plan,
) -> Plan {
    const AFRESH: &str = "numbering the services in config order (established L4 flows whose backend gets another id than the previous run gave it are placed again by Maglev)";
    if services.is_empty() {
        info!("the pinned maps hold no service (the node was not forwarding when the daemon stopped): {AFRESH}");
        return fresh;
    }
    let backends = match maps.backend_entries() {
        Ok(backends) => backends,
        Err(err) => {
            warn!("reading the pinned backends: {err:#}; {AFRESH}");
            return fresh;
        }
    };
    let recovered = match Plan::recover(config, services, &backends) {
        Ok(recovered) => recovered,
        Err(err) => {
            warn!("the pinned maps hold what no Tandem data plane writes ({err}); {AFRESH}");
            return fresh;
        }
    };
    match Plan::reconcile(&recovered, config) {
        Ok(plan) => {
            let (services, backends) = plan.kept_from(&recovered);
            info!(
                services,
                backends,
                "kept the numbering of {services} services and {backends} backends from the pinned maps"
            );
            plan
        }
        Err(err) => {
            warn!("numbering the config against the pinned maps: {err}; {AFRESH}");
            fresh
        }
    }
}

/// Rebuilds `service`'s table from the health view and writes the slots that changed.
fn write_table(state: &mut State, service: &PlannedService) -> anyhow::Result<()> {
    let Some(ring) = service.ring else {
        return Ok(());
    };
    let maglev = state.health.new_flow_table(service);
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

/// SERVICES and VIPS as `state.plan` wants them (while active): entries put, strays removed.
fn write_services(state: &mut State) -> anyhow::Result<()> {
    let plan = state.plan.clone();
    let wanted = services_wanted(&plan);
    for (key, value) in &wanted {
        state.maps.put_service_entry(*key, *value)?;
    }
    for (key, _) in state.maps.service_entries()? {
        if !wanted.iter().any(|(k, _)| *k == key) {
            state.maps.remove_service_entry(&key)?;
        }
    }
    for vip in &plan.vips {
        state.maps.put_vip_address(*vip)?;
    }
    for vip in state.maps.vip_addresses()? {
        if !plan.vips.contains(&vip) {
            state.maps.remove_vip_address(vip)?;
        }
    }
    Ok(())
}

/// The SERVICES and SERVICES6 entries of `plan`.
fn services_wanted(plan: &Plan) -> Vec<(KernelKey, ServiceValue)> {
    plan.services
        .iter()
        .map(PlannedService::kernel_entry)
        .collect()
}

/// Moves the maps from `state.plan` to `plan`, in the order the module doc gives.
fn switch_plan(state: &mut State, plan: Arc<Plan>) -> anyhow::Result<()> {
    let previous = state.plan.clone();
    // The same service in both plans: same name and mode (then the same ids).
    let remaining = |name: &str| -> Option<(&PlannedService, &PlannedService)> {
        let old = previous.service(name)?;
        let new = plan.service(name)?;
        (old.mode == new.mode).then_some((old, new))
    };

    // 1. Stop packets from reaching what goes away or changes.
    let wanted = services_wanted(&plan);
    if state.active {
        for (key, value) in state.maps.service_entries()? {
            if !wanted.contains(&(key, value)) {
                state.maps.remove_service_entry(&key)?;
            }
        }
    }

    // 2. Health and counters.
    state.health.retain(|name, address| {
        remaining(name).is_some_and(|(old, new)| {
            new.mode.is_l4()
                && old.backends.iter().any(|b| b.address == address)
                && new.backends.iter().any(|b| b.address == address)
        })
    });
    for service in &plan.services {
        if remaining(&service.name).is_none() {
            state.maps.reset_service_stats(service.id)?;
        }
    }
    let old_ids: HashSet<u32> = previous
        .l4_services()
        .flat_map(|s| s.backends.iter().map(|b| b.id))
        .collect();
    let new_ids: HashSet<u32> = plan
        .l4_services()
        .flat_map(|s| s.backends.iter().map(|b| b.id))
        .collect();
    for &id in new_ids.difference(&old_ids) {
        state.maps.reset_backend_stats(id)?;
    }

    // 3. Every backend of the new plan.
    write_backends(state, &plan)?;

    // 4. Tables of new rings and changed services; the diff against what the ring held
    //    before (another service's table, for a ring freed and reused) writes only what moves.
    for service in plan.l4_services() {
        let unchanged = remaining(&service.name).is_some_and(|(old, new)| old == new);
        let ring = service.ring.expect("L4 services have a ring");
        if !unchanged || !state.tables.contains_key(&ring) {
            write_table(state, service)?;
        }
    }

    // 5. What the new plan no longer uses.
    for &id in old_ids.difference(&new_ids) {
        state.maps.clear_backend(id)?;
    }
    let new_rings: HashSet<u32> = plan.l4_services().filter_map(|s| s.ring).collect();
    for service in previous.l4_services() {
        let Some(ring) = service.ring.filter(|r| !new_rings.contains(r)) else {
            continue;
        };
        let empty = vec![NO_BACKEND; lb_common::MAGLEV_TABLE_SIZE as usize];
        let written = state.tables.get(&ring).map(|(_, t)| t.as_slice());
        state.maps.write_table(ring, &empty, written)?;
        state.tables.remove(&ring);
        debug!(service = %service.name, ring, "Maglev table emptied");
    }

    // 6. Start forwarding the new and changed services.
    state.plan = plan;
    if state.active {
        write_services(state)?;
    }
    Ok(())
}

/// After [`switch_plan`] to `failed` stopped somewhere: writes `previous` back whole, in the
/// same order (what the kernel holds is not known any more, so no diff).
fn restore_plan(state: &mut State, previous: Arc<Plan>, failed: &Plan) -> anyhow::Result<()> {
    state.plan = previous.clone();
    state.tables.clear();
    let wanted = services_wanted(&previous);
    if state.active {
        for (key, value) in state.maps.service_entries()? {
            if !wanted.contains(&(key, value)) {
                state.maps.remove_service_entry(&key)?;
            }
        }
    }
    write_backends(state, &previous)?;
    for service in previous.l4_services() {
        write_table(state, service)?;
    }
    let ids: HashSet<u32> = previous
        .l4_services()
        .flat_map(|s| s.backends.iter().map(|b| b.id))
        .collect();
    for service in failed.l4_services() {
        for backend in service.backends.iter().filter(|b| !ids.contains(&b.id)) {
            state.maps.clear_backend(backend.id)?;
        }
    }
    let rings: HashSet<u32> = previous.l4_services().filter_map(|s| s.ring).collect();
    for ring in failed.l4_services().filter_map(|s| s.ring) {
        if !rings.contains(&ring) {
            let empty = vec![NO_BACKEND; lb_common::MAGLEV_TABLE_SIZE as usize];
            state.maps.write_table(ring, &empty, None)?;
        }
    }
    if state.active {
        write_services(state)?;
    }
    Ok(())
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
        backend: SocketAddr,
        up: bool,
    ) -> BoxFuture<'_, anyhow::Result<()>> {
        let service = service.to_owned();
        Box::pin(async move { self.apply_backend(&service, backend, up) })
    }

    fn follow_health(&self, service: &str, table: Arc<HealthTable>, stop: CancellationToken) {
        let this = self.clone();
        super::spawn_health_follower(service, table, stop, move |service, backend, up| {
            let this = this.clone();
            Box::pin(async move { this.apply_backend(&service, backend, up) })
        });
    }

    fn set_backend_drained(
        &self,
        service: &str,
        backend: SocketAddr,
        drained: bool,
    ) -> BoxFuture<'_, anyhow::Result<bool>> {
        let service = service.to_owned();
        Box::pin(async move { self.apply_drain(&service, backend, drained) })
    }

    fn check_reconfigure(&self, config: &Config) -> anyhow::Result<()> {
        let plan = self.state().plan.clone();
        Plan::reconcile(&plan, config)?;
        Ok(())
    }

    fn reconfigure(&self, config: &Config) -> BoxFuture<'_, anyhow::Result<()>> {
        let config = config.clone();
        Box::pin(async move { self.do_reconfigure(&config).await })
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

    fn share_flows(&self, replicator: Arc<Replicator>, stop: CancellationToken) {
        *self.sharing() = Some(Walk::default());
        let sink: Arc<dyn FlowSink> = Arc::new(SharedFlows(self.clone()));
        replicator.register_flows(Arc::downgrade(&sink));
        let this = self.clone();
        let daemon_stop = self.inner.stop.clone();
        tokio::spawn(async move {
            // Holds the sink: the replicator has it weakly, so it lives as long as this task.
            let _sink = sink;
            let mut reported = false;
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = daemon_stop.cancelled() => return,
                    _ = tokio::time::sleep(SHARE_INTERVAL) => {}
                }
                match this.flows_to_share() {
                    Ok(flows) => {
                        reported = false;
                        this.inner.share_counters.count_sent(flows.len());
                        replicator.publish_flows(&flows);
                    }
                    Err(err) => {
                        // Logged once per run of failures, not four times a second.
                        if !reported {
                            warn!("reading the connection tables to share new flows: {err:#}");
                            reported = true;
                        }
                    }
                }
            }
        });
    }

    fn status(&self) -> DataplaneStatus {
        let flow_sharing = self
            .sharing()
            .is_some()
            .then(|| self.inner.share_counters.status());
        let state = self.state();
        let services = state
            .plan
            .l4_services()
            .map(|service| {
                let maglev = service
                    .ring
                    .and_then(|r| state.tables.get(&r))
                    .map(|(m, _)| m.clone())
                    .unwrap_or_else(|| state.health.new_flow_table(service));
                let shares = maglev.shares();
                ServiceStatus {
                    name: service.name.clone(),
                    listen: service.listen,
                    mode: service.mode.as_str().to_owned(),
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
                                drained: state.health.is_drained(&service.name, b.address),
                                share: Share::of(
                                    shares.get(i).copied().unwrap_or(0),
                                    maglev.table().len(),
                                ),
                                mac: state.macs.get(&b.address.ip()).map(|m| Mac(*m).to_string()),
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
            flows: state.maps.flow_count_all().ok(),
            flow_sharing,
        }
    }
}

/// The XDP data plane as the replication link's receiver of flows.
struct SharedFlows(XdpDataplane);

impl FlowSink for SharedFlows {
    fn apply_flows(&self, flows: &[FlowEntry]) {
        self.0.apply_shared(flows);
    }
}
