//! Typed access to the XDP program's pinned maps: the one place in userspace that reads and
//! writes them.
//!
//! [`KernelMaps`] opens every map of a pin directory by its lb-common name and layout. The XDP
//! data plane is its only writer (while the daemon runs); `tandem maps` and the tests read
//! through it too. What to write (which services, which backends, which tables) is decided by
//! `plan`; this module only moves values in and out of the kernel.
//!
//! Each family has its own maps where an address is part of the entry (SERVICES6, VIPS6,
//! BACKENDS6, CONNTRACK6 beside the IPv4 ones); the `*_entry`/`*_entries` and `vip_*`
//! methods take and return either family and pick the map by it, so the data plane's logic
//! is written once.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsFd as _, AsRawFd as _, BorrowedFd};
use std::path::{Path, PathBuf};

use aya::maps::{Array, HashMap, IterableMap as _, Map, MapData, PerCpuArray, PerCpuValues};
use lb_common::{
    Backend6Value, BackendValue, Counter, FlowKey, FlowKey6, FlowValue, FlowValue6, IfaceValue,
    ServiceKey, ServiceKey6, ServiceValue, Stats, VipValue, BACKENDS6_MAP, BACKENDS_MAP,
    BACKEND_STATS_MAP, CONNTRACK6_MAP, CONNTRACK_MAP, COUNTERS_MAP, IFACE_MAP, MAGLEV_MAP,
    MAGLEV_TABLE_SIZE, MAX_L4_SERVICES, SERVICES6_MAP, SERVICES_MAP, SERVICE_STATS_MAP, VIPS6_MAP,
    VIPS_MAP,
};

use super::loader::XdpError;
use crate::dataplane::plan::{KernelBackend, KernelKey};

/// Handles on every map of one pin directory.
pub struct KernelMaps {
    pin_dir: PathBuf,
    services: HashMap<MapData, ServiceKey, ServiceValue>,
    vips: HashMap<MapData, u32, VipValue>,
    backends: Array<MapData, BackendValue>,
    maglev: Array<MapData, u32>,
    conntrack: HashMap<MapData, FlowKey, FlowValue>,
    counters: PerCpuArray<MapData, u64>,
    service_stats: PerCpuArray<MapData, Stats>,
    backend_stats: PerCpuArray<MapData, Stats>,
    iface: Array<MapData, IfaceValue>,
    services6: HashMap<MapData, ServiceKey6, ServiceValue>,
    vips6: HashMap<MapData, [u8; 16], VipValue>,
    backends6: Array<MapData, Backend6Value>,
    conntrack6: HashMap<MapData, FlowKey6, FlowValue6>,
}

fn open(pin_dir: &Path, name: &str) -> Result<Map, XdpError> {
    let path = pin_dir.join(name);
    if !path.exists() {
        return Err(XdpError::NoMaps(pin_dir.to_owned()));
    }
    let data = MapData::from_pin(&path)
        .map_err(|e| XdpError::from_kernel(format!("opening {}", path.display()), &e))?;
    Map::from_map_data(data)
        .map_err(|e| XdpError::from_kernel(format!("opening {}", path.display()), &e))
}

macro_rules! typed {
    ($pin_dir:expr, $name:expr, $ty:ty) => {{
        let map = open($pin_dir, $name)?;
        <$ty>::try_from(map).map_err(|e| {
            XdpError::from_kernel(
                format!(
                    "map {} in {} has another layout than this tandem expects (an older \
                     version's pins?)",
                    $name,
                    $pin_dir.display()
                ),
                &e,
            )
        })?
    }};
}

/// bpf(2)'s update flag "only if the key has no entry".
const BPF_NOEXIST: u64 = 1;

/// An insert with [`BPF_NOEXIST`]: `Ok(false)` when the key had an entry (EEXIST).
fn absent(result: Result<(), aya::maps::MapError>, what: &str) -> Result<bool, XdpError> {
    match result {
        Ok(()) => Ok(true),
        Err(aya::maps::MapError::SyscallError(aya::sys::SyscallError { io_error, .. }))
            if io_error.raw_os_error() == Some(libc::EEXIST) =>
        {
            Ok(false)
        }
        Err(e) => Err(XdpError::from_kernel(what, &e)),
    }
}

/// BPF_MAP_GET_NEXT_KEY from `after` (from the start with `None`). aya 0.14 walks a map only
/// from its start; the flow sharing resumes a bounded walk where the previous one stopped.
fn next_key<K: aya::Pod>(map: BorrowedFd<'_>, after: Option<&K>) -> std::io::Result<Option<K>> {
    /// The part of `union bpf_attr` this command reads (the kernel zero-fills the rest).
    #[repr(C)]
    struct MapElemAttr {
        map_fd: u32,
        _pad: u32,
        key: u64,
        next_key: u64,
        flags: u64,
    }
    const BPF_MAP_GET_NEXT_KEY: libc::c_long = 4;
    let mut next = std::mem::MaybeUninit::<K>::uninit();
    let attr = MapElemAttr {
        map_fd: map.as_raw_fd() as u32,
        _pad: 0,
        key: after.map_or(0, |key| std::ptr::from_ref(key) as u64),
        next_key: next.as_mut_ptr() as u64,
        flags: 0,
    };
    // SAFETY: `attr` is a valid bpf_attr prefix for this command; the kernel reads the map's
    // key size from `key` and writes as many bytes to `next`, and the map was opened with K's
    // size as its key size (checked against lb-common's layout when the maps were opened).
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_MAP_GET_NEXT_KEY,
            std::ptr::from_ref(&attr),
            std::mem::size_of::<MapElemAttr>() as u32,
        )
    };
    if rc == 0 {
        // SAFETY: the call succeeded, so the kernel wrote a whole key.
        Ok(Some(unsafe { next.assume_init() }))
    } else {
        let error = std::io::Error::last_os_error();
        if error.raw_os_error() == Some(libc::ENOENT) {
            Ok(None)
        } else {
            Err(error)
        }
    }
}

fn kernel(what: impl Into<String>) -> impl FnOnce(aya::maps::MapError) -> XdpError {
    let what = what.into();
    move |e| XdpError::from_kernel(what, &e)
}

impl KernelMaps {
    /// Opens every map pinned in `pin_dir`; fails when one is missing or has another layout.
    pub fn open(pin_dir: &Path) -> Result<KernelMaps, XdpError> {
        Ok(KernelMaps {
            pin_dir: pin_dir.to_owned(),
            services: typed!(pin_dir, SERVICES_MAP, HashMap<MapData, ServiceKey, ServiceValue>),
            vips: typed!(pin_dir, VIPS_MAP, HashMap<MapData, u32, VipValue>),
            backends: typed!(pin_dir, BACKENDS_MAP, Array<MapData, BackendValue>),
            maglev: typed!(pin_dir, MAGLEV_MAP, Array<MapData, u32>),
            conntrack: typed!(pin_dir, CONNTRACK_MAP, HashMap<MapData, FlowKey, FlowValue>),
            counters: typed!(pin_dir, COUNTERS_MAP, PerCpuArray<MapData, u64>),
            service_stats: typed!(pin_dir, SERVICE_STATS_MAP, PerCpuArray<MapData, Stats>),
            backend_stats: typed!(pin_dir, BACKEND_STATS_MAP, PerCpuArray<MapData, Stats>),
            iface: typed!(pin_dir, IFACE_MAP, Array<MapData, IfaceValue>),
            services6: typed!(pin_dir, SERVICES6_MAP, HashMap<MapData, ServiceKey6, ServiceValue>),
            vips6: typed!(pin_dir, VIPS6_MAP, HashMap<MapData, [u8; 16], VipValue>),
            backends6: typed!(pin_dir, BACKENDS6_MAP, Array<MapData, Backend6Value>),
            conntrack6: typed!(pin_dir, CONNTRACK6_MAP, HashMap<MapData, FlowKey6, FlowValue6>),
        })
    }

    pub fn pin_dir(&self) -> &Path {
        &self.pin_dir
    }

    /// Sets the source MAC of forwarded frames.
    pub fn set_iface_mac(&mut self, mac: [u8; 6]) -> Result<(), XdpError> {
        self.iface
            .set(0, IfaceValue { mac, _pad: [0; 2] }, 0)
            .map_err(kernel("writing IFACE"))
    }

    pub fn iface(&self) -> Result<IfaceValue, XdpError> {
        self.iface.get(&0, 0).map_err(kernel("reading IFACE"))
    }

    pub fn put_service(&mut self, key: ServiceKey, value: ServiceValue) -> Result<(), XdpError> {
        self.services
            .insert(key, value, 0)
            .map_err(kernel("writing SERVICES"))
    }

    pub fn remove_service(&mut self, key: &ServiceKey) -> Result<(), XdpError> {
        ignore_missing(self.services.remove(key)).map_err(kernel("removing from SERVICES"))
    }

    pub fn services(&self) -> Result<Vec<(ServiceKey, ServiceValue)>, XdpError> {
        self.services
            .iter()
            .collect::<Result<Vec<_>, _>>()
            .map_err(kernel("reading SERVICES"))
    }

    pub fn put_vip(&mut self, vip: u32) -> Result<(), XdpError> {
        self.vips
            .insert(vip, VipValue::default(), 0)
            .map_err(kernel("writing VIPS"))
    }

    pub fn remove_vip(&mut self, vip: u32) -> Result<(), XdpError> {
        ignore_missing(self.vips.remove(&vip)).map_err(kernel("removing from VIPS"))
    }

    /// The virtual IPs, in wire order (`u32::from_ne_bytes(octets)`).
    pub fn vips(&self) -> Result<Vec<u32>, XdpError> {
        self.vips
            .keys()
            .collect::<Result<Vec<_>, _>>()
            .map_err(kernel("reading VIPS"))
    }

    pub fn put_backend(&mut self, id: u32, value: BackendValue) -> Result<(), XdpError> {
        self.backends
            .set(id, value, 0)
            .map_err(kernel(format!("writing backend {id}")))
    }

    pub fn backend(&self, id: u32) -> Result<BackendValue, XdpError> {
        self.backends
            .get(&id, 0)
            .map_err(kernel(format!("reading backend {id}")))
    }

    /// Every BACKENDS entry that holds a backend (a non-zero address), by id.
    pub fn backends(&self) -> Result<Vec<(u32, BackendValue)>, XdpError> {
        let mut backends = Vec::new();
        for id in 0..self.backends.len() {
            let value = self.backend(id)?;
            if value.addr != 0 {
                backends.push((id, value));
            }
        }
        Ok(backends)
    }

    /// Writes Maglev table `ring` (backend ids, [`MAGLEV_TABLE_SIZE`] of them). With
    /// `previous`, only the slots that differ are written. Returns how many were written.
    pub fn write_table(
        &mut self,
        ring: u32,
        table: &[u32],
        previous: Option<&[u32]>,
    ) -> Result<usize, XdpError> {
        debug_assert!(ring < MAX_L4_SERVICES);
        debug_assert_eq!(table.len(), MAGLEV_TABLE_SIZE as usize);
        let base = ring * MAGLEV_TABLE_SIZE;
        let mut written = 0;
        for (slot, &id) in table.iter().enumerate() {
            if previous.is_some_and(|p| p.get(slot) == Some(&id)) {
                continue;
            }
            self.maglev
                .set(base + slot as u32, id, 0)
                .map_err(kernel(format!("writing Maglev table {ring}")))?;
            written += 1;
        }
        Ok(written)
    }

    /// Reads Maglev table `ring` back.
    pub fn read_table(&self, ring: u32) -> Result<Vec<u32>, XdpError> {
        let base = ring * MAGLEV_TABLE_SIZE;
        (0..MAGLEV_TABLE_SIZE)
            .map(|slot| self.maglev.get(&(base + slot), 0))
            .collect::<Result<Vec<_>, _>>()
            .map_err(kernel(format!("reading Maglev table {ring}")))
    }

    /// Every recorded flow.
    pub fn flows(&self) -> Result<Vec<(FlowKey, FlowValue)>, XdpError> {
        // Entries can be evicted while we walk the map; a vanished key is not an error.
        let mut flows = Vec::new();
        for key in self.conntrack.keys() {
            let key = key.map_err(kernel("reading CONNTRACK"))?;
            if let Ok(value) = self.conntrack.get(&key, 0) {
                flows.push((key, value));
            }
        }
        Ok(flows)
    }

    /// Number of recorded flows.
    pub fn flow_count(&self) -> Result<usize, XdpError> {
        let mut count = 0;
        for key in self.conntrack.keys() {
            key.map_err(kernel("reading CONNTRACK"))?;
            count += 1;
        }
        Ok(count)
    }

    pub fn put_flow(&mut self, key: FlowKey, value: FlowValue) -> Result<(), XdpError> {
        self.conntrack
            .insert(key, value, 0)
            .map_err(kernel("writing CONNTRACK"))
    }

    pub fn flow(&self, key: &FlowKey) -> Option<FlowValue> {
        self.conntrack.get(key, 0).ok()
    }

    /// The CONNTRACK key after `after` (the first with `None`); `None` at the end. A walk
    /// that resumes from a key evicted meanwhile starts again from the first key (the
    /// kernel's answer for a missing key).
    pub fn next_flow_key(&self, after: Option<&FlowKey>) -> Result<Option<FlowKey>, XdpError> {
        next_key(self.conntrack.map().fd().as_fd(), after)
            .map_err(|e| XdpError::from_kernel("walking CONNTRACK", &e))
    }

    /// Records `value` for `key` unless CONNTRACK has an entry for it (BPF_NOEXIST: the
    /// kernel decides, so a flow the program records meanwhile is never overwritten);
    /// `false` when it had one.
    pub fn put_flow_if_absent(&mut self, key: FlowKey, value: FlowValue) -> Result<bool, XdpError> {
        absent(
            self.conntrack.insert(key, value, BPF_NOEXIST),
            "writing CONNTRACK",
        )
    }

    pub fn put_service6(&mut self, key: ServiceKey6, value: ServiceValue) -> Result<(), XdpError> {
        self.services6
            .insert(key, value, 0)
            .map_err(kernel("writing SERVICES6"))
    }

    pub fn remove_service6(&mut self, key: &ServiceKey6) -> Result<(), XdpError> {
        ignore_missing(self.services6.remove(key)).map_err(kernel("removing from SERVICES6"))
    }

    pub fn services6(&self) -> Result<Vec<(ServiceKey6, ServiceValue)>, XdpError> {
        self.services6
            .iter()
            .collect::<Result<Vec<_>, _>>()
            .map_err(kernel("reading SERVICES6"))
    }

    pub fn put_vip6(&mut self, vip: [u8; 16]) -> Result<(), XdpError> {
        self.vips6
            .insert(vip, VipValue::default(), 0)
            .map_err(kernel("writing VIPS6"))
    }

    pub fn remove_vip6(&mut self, vip: [u8; 16]) -> Result<(), XdpError> {
        ignore_missing(self.vips6.remove(&vip)).map_err(kernel("removing from VIPS6"))
    }

    /// The IPv6 virtual IPs, as octets.
    pub fn vips6(&self) -> Result<Vec<[u8; 16]>, XdpError> {
        self.vips6
            .keys()
            .collect::<Result<Vec<_>, _>>()
            .map_err(kernel("reading VIPS6"))
    }

    pub fn put_backend6(&mut self, id: u32, value: Backend6Value) -> Result<(), XdpError> {
        self.backends6
            .set(id, value, 0)
            .map_err(kernel(format!("writing IPv6 backend {id}")))
    }

    pub fn backend6(&self, id: u32) -> Result<Backend6Value, XdpError> {
        self.backends6
            .get(&id, 0)
            .map_err(kernel(format!("reading IPv6 backend {id}")))
    }

    /// Every BACKENDS6 entry that holds a backend (a non-zero address), by id.
    pub fn backends6(&self) -> Result<Vec<(u32, Backend6Value)>, XdpError> {
        let mut backends = Vec::new();
        for id in 0..self.backends6.len() {
            let value = self.backend6(id)?;
            if value.addr != [0; 16] {
                backends.push((id, value));
            }
        }
        Ok(backends)
    }

    /// Every recorded IPv6 flow.
    pub fn flows6(&self) -> Result<Vec<(FlowKey6, FlowValue6)>, XdpError> {
        // As in `flows`: a key evicted during the walk is not an error.
        let mut flows = Vec::new();
        for key in self.conntrack6.keys() {
            let key = key.map_err(kernel("reading CONNTRACK6"))?;
            if let Ok(value) = self.conntrack6.get(&key, 0) {
                flows.push((key, value));
            }
        }
        Ok(flows)
    }

    /// Number of recorded IPv6 flows.
    pub fn flow6_count(&self) -> Result<usize, XdpError> {
        let mut count = 0;
        for key in self.conntrack6.keys() {
            key.map_err(kernel("reading CONNTRACK6"))?;
            count += 1;
        }
        Ok(count)
    }

    pub fn put_flow6(&mut self, key: FlowKey6, value: FlowValue6) -> Result<(), XdpError> {
        self.conntrack6
            .insert(key, value, 0)
            .map_err(kernel("writing CONNTRACK6"))
    }

    pub fn flow6(&self, key: &FlowKey6) -> Option<FlowValue6> {
        self.conntrack6.get(key, 0).ok()
    }

    /// [`KernelMaps::next_flow_key`] for CONNTRACK6.
    pub fn next_flow6_key(&self, after: Option<&FlowKey6>) -> Result<Option<FlowKey6>, XdpError> {
        next_key(self.conntrack6.map().fd().as_fd(), after)
            .map_err(|e| XdpError::from_kernel("walking CONNTRACK6", &e))
    }

    /// [`KernelMaps::put_flow_if_absent`] for CONNTRACK6.
    pub fn put_flow6_if_absent(
        &mut self,
        key: FlowKey6,
        value: FlowValue6,
    ) -> Result<bool, XdpError> {
        absent(
            self.conntrack6.insert(key, value, BPF_NOEXIST),
            "writing CONNTRACK6",
        )
    }

    /// Puts a service in SERVICES or SERVICES6, by its key's family.
    pub fn put_service_entry(
        &mut self,
        key: KernelKey,
        value: ServiceValue,
    ) -> Result<(), XdpError> {
        match key {
            KernelKey::V4(key) => self.put_service(key, value),
            KernelKey::V6(key) => self.put_service6(key, value),
        }
    }

    pub fn remove_service_entry(&mut self, key: &KernelKey) -> Result<(), XdpError> {
        match key {
            KernelKey::V4(key) => self.remove_service(key),
            KernelKey::V6(key) => self.remove_service6(key),
        }
    }

    /// Every service of both families: SERVICES, then SERVICES6.
    pub fn service_entries(&self) -> Result<Vec<(KernelKey, ServiceValue)>, XdpError> {
        let mut entries: Vec<(KernelKey, ServiceValue)> = self
            .services()?
            .into_iter()
            .map(|(k, v)| (KernelKey::V4(k), v))
            .collect();
        entries.extend(
            self.services6()?
                .into_iter()
                .map(|(k, v)| (KernelKey::V6(k), v)),
        );
        Ok(entries)
    }

    /// Puts a virtual IP in VIPS or VIPS6.
    pub fn put_vip_address(&mut self, vip: IpAddr) -> Result<(), XdpError> {
        match vip {
            IpAddr::V4(v4) => self.put_vip(u32::from_ne_bytes(v4.octets())),
            IpAddr::V6(v6) => self.put_vip6(v6.octets()),
        }
    }

    pub fn remove_vip_address(&mut self, vip: IpAddr) -> Result<(), XdpError> {
        match vip {
            IpAddr::V4(v4) => self.remove_vip(u32::from_ne_bytes(v4.octets())),
            IpAddr::V6(v6) => self.remove_vip6(v6.octets()),
        }
    }

    /// The virtual IPs of both families.
    pub fn vip_addresses(&self) -> Result<Vec<IpAddr>, XdpError> {
        let mut vips: Vec<IpAddr> = self
            .vips()?
            .into_iter()
            .map(|v| IpAddr::from(v.to_ne_bytes()))
            .collect();
        vips.extend(self.vips6()?.into_iter().map(IpAddr::from));
        Ok(vips)
    }

    /// Writes backend `id` into BACKENDS or BACKENDS6 by its address's family. The other
    /// family's entry for the id is left alone: [`KernelMaps::clear_backend`] empties both
    /// when an id is freed, so an id never holds a backend in both.
    pub fn put_backend_entry(
        &mut self,
        id: u32,
        address: SocketAddr,
        mac: [u8; 6],
        flags: u32,
        service: u32,
    ) -> Result<(), XdpError> {
        match address {
            SocketAddr::V4(a) => self.put_backend(
                id,
                BackendValue {
                    addr: u32::from_ne_bytes(a.ip().octets()),
                    mac,
                    port: a.port().to_be(),
                    flags,
                    service,
                },
            ),
            SocketAddr::V6(a) => self.put_backend6(
                id,
                Backend6Value {
                    addr: a.ip().octets(),
                    mac,
                    port: a.port().to_be(),
                    flags,
                    service,
                },
            ),
        }
    }

    /// Empties backend id `id` in both families' arrays.
    pub fn clear_backend(&mut self, id: u32) -> Result<(), XdpError> {
        self.put_backend(id, BackendValue::default())?;
        self.put_backend6(id, Backend6Value::default())
    }

    /// Every backend of both families, by id.
    pub fn backend_entries(&self) -> Result<Vec<(u32, KernelBackend)>, XdpError> {
        let mut entries: Vec<(u32, KernelBackend)> = self
            .backends()?
            .iter()
            .filter_map(|(id, b)| Some((*id, KernelBackend::from_v4(b)?)))
            .collect();
        entries.extend(
            self.backends6()?
                .iter()
                .filter_map(|(id, b)| Some((*id, KernelBackend::from_v6(b)?))),
        );
        Ok(entries)
    }

    /// Number of recorded flows of both families.
    pub fn flow_count_all(&self) -> Result<usize, XdpError> {
        Ok(self.flow_count()? + self.flow6_count()?)
    }

    /// The counters summed over CPUs, by [`Counter::name`].
    pub fn counters(&self) -> Result<BTreeMap<&'static str, u64>, XdpError> {
        let mut out = BTreeMap::new();
        for counter in Counter::ALL {
            let per_cpu = self
                .counters
                .get(&(counter as u32), 0)
                .map_err(kernel(format!("reading counter {}", counter.name())))?;
            out.insert(counter.name(), per_cpu.iter().sum());
        }
        Ok(out)
    }

    /// Packets and bytes forwarded for service `id`, summed over CPUs.
    pub fn service_stats(&self, id: u32) -> Result<Stats, XdpError> {
        sum_stats(&self.service_stats, id, "SERVICE_STATS")
    }

    /// Packets and bytes forwarded to backend `id`, summed over CPUs.
    pub fn backend_stats(&self, id: u32) -> Result<Stats, XdpError> {
        sum_stats(&self.backend_stats, id, "BACKEND_STATS")
    }

    /// Zeroes service `id`'s counters on every CPU (a reload gives the id to a new service).
    pub fn reset_service_stats(&mut self, id: u32) -> Result<(), XdpError> {
        zero_stats(&mut self.service_stats, id, "SERVICE_STATS")
    }

    /// Zeroes backend `id`'s counters on every CPU (a reload gives the id to a new backend).
    pub fn reset_backend_stats(&mut self, id: u32) -> Result<(), XdpError> {
        zero_stats(&mut self.backend_stats, id, "BACKEND_STATS")
    }
}

fn zero_stats(map: &mut PerCpuArray<MapData, Stats>, id: u32, name: &str) -> Result<(), XdpError> {
    // As many values as the map has CPUs: the read tells how many.
    let cpus = map
        .get(&id, 0)
        .map_err(kernel(format!("reading {name}[{id}]")))?
        .len();
    let zeros = PerCpuValues::try_from(vec![Stats::default(); cpus])
        .map_err(|e| XdpError::from_kernel(format!("zeroing {name}[{id}]"), &e))?;
    map.set(id, zeros, 0)
        .map_err(kernel(format!("zeroing {name}[{id}]")))
}

fn sum_stats(map: &PerCpuArray<MapData, Stats>, id: u32, name: &str) -> Result<Stats, XdpError> {
    let per_cpu = map
        .get(&id, 0)
        .map_err(kernel(format!("reading {name}[{id}]")))?;
    Ok(per_cpu.iter().fold(Stats::default(), |sum, s| Stats {
        packets: sum.packets + s.packets,
        bytes: sum.bytes + s.bytes,
    }))
}

/// Removing an entry that is not there is what we wanted anyway.
fn ignore_missing(result: Result<(), aya::maps::MapError>) -> Result<(), aya::maps::MapError> {
    match result {
        Err(aya::maps::MapError::KeyNotFound) => Ok(()),
        Err(aya::maps::MapError::SyscallError(e))
            if e.io_error.raw_os_error() == Some(libc::ENOENT) =>
        {
            Ok(())
        }
        other => other,
    }
}
