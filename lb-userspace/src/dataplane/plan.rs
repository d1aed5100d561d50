//! The data plane's picture of the configuration: which services and backends exist, with the
//! ids the kernel maps use for them, and the Maglev table of an L4 service given which of its
//! backends are up. Pure (no I/O), shared by the XDP data plane and the userspace relay, so
//! both choose the same backend for the same flow.
//!
//! Three kinds of ids: a service's id (it indexes SERVICE_STATS, and every backend records the
//! id of its service), an L4 service's ring (which Maglev table it uses), and backend ids of
//! the L4 services' backends (they index BACKENDS and BACKEND_STATS, and the connection table
//! records one per flow).
//!
//! [`Plan::new`] numbers from the config's order (services by position, rings by position
//! among L4 services, backends in order): the plan of a node that starts with nothing to go
//! on.
//!
//! [`Plan::reconcile`] numbers a reloaded config against the plan in force, because the
//! program keeps a recorded flow only while its backend id still holds an up backend with the
//! same address and the same service id: renumbering would move established flows. So a
//! service that remains (same name, same mode) keeps its id and ring, a backend that remains
//! (same service, same address) keeps its id, and new ones get the lowest free ids. Service ids
//! and rings freed by the reload may go to new services at once: the XDP data plane removes a
//! service's SERVICES entry before anything else changes, so no packet reads them in between.
//! Backend ids freed by the reload are not reused by the same reload, since the old tables and
//! the recorded flows point at them until the reload's writes are done; they are free from the
//! next reload on.
//!
//! [`Plan::recover`] reads a plan back from what a previous run of the daemon left in the
//! pinned maps (SERVICES and BACKENDS), so that a restart numbers its config against it with
//! [`Plan::reconcile`], as a reload does: after reloads that inserted or removed backends, the
//! ids in the maps are not those of config order, and the pinned connection table records
//! flows by backend id and service id.
//!
//! Both families go through the same numbering: an IPv6 service's entry goes to SERVICES6
//! (its [`KernelKey`] says which map), its backends to BACKENDS6, but service ids, rings and
//! backend ids are one space over both families, as the program's Maglev tables and
//! statistics are.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use lb_common::{
    Backend6Value, BackendValue, ServiceKey, ServiceKey6, ServiceMode, ServiceValue, IPPROTO_TCP,
    IPPROTO_UDP, MAX_BACKENDS, MAX_L4_SERVICES, MAX_SERVICES,
};
use serde::{Deserialize, Serialize};

use crate::backends::maglev::{Maglev, DEFAULT_TABLE_SIZE};
use crate::config::{self, Config};

/// The services of one node, numbered for the kernel maps. The default is the plan with no
/// service, which [`Plan::reconcile`] numbers a first config against.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub services: Vec<PlannedService>,
    /// The addresses that float between nodes (every `[[vrrp]]` virtual_ipaddress). A TCP or
    /// UDP packet for one of them on a port with no service is dropped; with no VRRP this is
    /// empty, so a standalone node never drops traffic to its own addresses.
    pub vips: Vec<IpAddr>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedService {
    pub name: String,
    pub listen: SocketAddr,
    pub mode: config::ServiceMode,
    /// Index into SERVICE_STATS.
    pub id: u32,
    /// Which Maglev table (L4 services only).
    pub ring: Option<u32>,
    pub backends: Vec<PlannedBackend>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlannedBackend {
    pub address: SocketAddr,
    pub weight: u32,
    /// Index into BACKENDS (L4 services only; 0 for HTTP services, whose backends the kernel
    /// never sees).
    pub id: u32,
}

/// A configuration the kernel maps cannot hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("{count} services, but the XDP maps hold at most {MAX_SERVICES}")]
    TooManyServices { count: usize },
    #[error("{count} L4 services (mode tcp/udp), but the XDP program has Maglev tables for at most {MAX_L4_SERVICES}; use dataplane = \"none\" (the userspace relay) or fewer L4 services")]
    TooManyL4Services { count: usize },
    #[error("{count} backends over the L4 services, but the XDP maps hold at most {MAX_BACKENDS}")]
    TooManyBackends { count: usize },
    #[error("this reload needs {needed} backend ids at once (the backends that remain, those it removes and those it adds: a removed backend's id is reused from the next reload on), but the XDP maps hold at most {MAX_BACKENDS}; reload in two steps (first remove backends, then add) or restart the node")]
    BackendIdsExhausted { needed: usize },
}

/// Why the numbering in the pinned maps cannot be taken over: they hold what no Tandem data
/// plane writes (a start then numbers afresh, see [`Plan::recover`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecoverError {
    #[error("SERVICES entry {key} has mode {mode}, neither proxy (0) nor forward (1)")]
    UnknownMode { key: String, mode: u32 },
    #[error("SERVICES entry {key} has id {id}, but the maps hold at most {MAX_SERVICES} services")]
    ServiceIdTooLarge { key: String, id: u32 },
    #[error("SERVICES entry {key} has Maglev table {ring}, but the program has {MAX_L4_SERVICES}")]
    RingTooLarge { key: String, ring: u32 },
    #[error("SERVICES entries {first} and {second} have the same id {id}")]
    SharedId {
        first: String,
        second: String,
        id: u32,
    },
    #[error("SERVICES entries {first} and {second} have the same Maglev table {ring}")]
    SharedRing {
        first: String,
        second: String,
        ring: u32,
    },
    #[error("BACKENDS entry {id} is past the {MAX_BACKENDS} backends the maps hold")]
    BackendIdTooLarge { id: u32 },
}

/// A service's key in the kernel: in SERVICES for an IPv4 listen address, in SERVICES6 for
/// an IPv6 one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KernelKey {
    V4(ServiceKey),
    V6(ServiceKey6),
}

impl KernelKey {
    /// The key of a service listening on `listen` for IP protocol `proto`.
    pub fn new(listen: SocketAddr, proto: u8) -> KernelKey {
        match listen {
            SocketAddr::V4(v4) => {
                KernelKey::V4(ServiceKey::new(v4.ip().octets(), v4.port(), proto))
            }
            SocketAddr::V6(v6) => {
                KernelKey::V6(ServiceKey6::new(v6.ip().octets(), v6.port(), proto))
            }
        }
    }

    /// The virtual IP and port.
    pub fn listen(&self) -> SocketAddr {
        match self {
            KernelKey::V4(k) => SocketAddr::from((Ipv4Addr::from(k.vip_octets()), k.port_host())),
            KernelKey::V6(k) => SocketAddr::from((Ipv6Addr::from(k.vip), k.port_host())),
        }
    }

    pub fn proto(&self) -> u8 {
        match self {
            KernelKey::V4(k) => k.proto,
            KernelKey::V6(k) => k.proto,
        }
    }
}

/// The name `tandem maps` and error messages give an IP protocol.
pub fn proto_name(proto: u8) -> String {
    match proto {
        IPPROTO_TCP => "tcp".to_owned(),
        IPPROTO_UDP => "udp".to_owned(),
        other => format!("ip-proto-{other}"),
    }
}

/// As an operator reads it: `198.18.0.99:7000/tcp`, `[2001:2::99]:7000/tcp`.
impl fmt::Display for KernelKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.listen(), proto_name(self.proto()))
    }
}

fn describe(key: &KernelKey) -> String {
    key.to_string()
}

/// A BACKENDS or BACKENDS6 entry that holds a backend, as [`Plan::recover`] reads it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelBackend {
    pub address: SocketAddr,
    /// The id of its service.
    pub service: u32,
}

impl KernelBackend {
    /// The backend in an IPv4 entry, `None` for an empty one.
    pub fn from_v4(value: &BackendValue) -> Option<KernelBackend> {
        (value.addr != 0).then(|| KernelBackend {
            address: SocketAddr::from((
                Ipv4Addr::from(value.addr.to_ne_bytes()),
                u16::from_be(value.port),
            )),
            service: value.service,
        })
    }

    /// The backend in an IPv6 entry, `None` for an empty one.
    pub fn from_v6(value: &Backend6Value) -> Option<KernelBackend> {
        (value.addr != [0; 16]).then(|| KernelBackend {
            address: SocketAddr::from((Ipv6Addr::from(value.addr), u16::from_be(value.port))),
            service: value.service,
        })
    }
}

/// How many ids the maps have room for.
#[derive(Clone, Copy, Debug)]
struct Limits {
    services: u32,
    rings: u32,
    backends: u32,
}

impl Limits {
    /// The XDP program's maps.
    const XDP: Limits = Limits {
        services: MAX_SERVICES,
        rings: MAX_L4_SERVICES,
        backends: MAX_BACKENDS,
    };
    /// The relay has no maps to fit.
    const NONE: Limits = Limits {
        services: u32::MAX,
        rings: u32::MAX,
        backends: u32::MAX,
    };
}

/// Ids in use, handing out the lowest free one.
#[derive(Default)]
struct Ids {
    taken: HashSet<u32>,
    /// Every id below this one is taken.
    floor: u32,
}

impl Ids {
    fn take(&mut self, id: u32) {
        self.taken.insert(id);
    }

    fn lowest_free(&mut self) -> u32 {
        while self.taken.contains(&self.floor) {
            self.floor += 1;
        }
        self.taken.insert(self.floor);
        self.floor
    }
}

impl Plan {
    /// Numbers `config`'s services and backends in config order (the plan a node starts with).
    pub fn new(config: &Config) -> Result<Plan, PlanError> {
        // From nothing, the lowest free id is the next one in config order.
        Plan::number(&Plan::default(), config, Limits::XDP)
    }

    /// Numbers `config` (a reload) so that what remains of `previous` keeps its ids: services
    /// by name (when the mode is the same), rings by L4 service name, backends by service name
    /// and address. New ones get the lowest free ids. Fails, as [`Plan::new`] does, when the
    /// result does not fit the XDP maps, and when the backend ids freed by this reload would be
    /// needed at once (see the module doc).
    pub fn reconcile(previous: &Plan, config: &Config) -> Result<Plan, PlanError> {
        Plan::number(previous, config, Limits::XDP)
    }

    /// The plan a previous run of the daemon left in the pinned maps, as far as `config` still
    /// has it: what a start numbers `config` against with [`Plan::reconcile`], so that what
    /// remains keeps its ids as across a reload. `services` is what SERVICES holds (filled
    /// while the node forwards; a daemon that stops without stepping down leaves it as it
    /// is), `backends` the BACKENDS entries that hold a backend (kept current all the time).
    ///
    /// Names are not in the maps. A service of `config` is the SERVICES entry with its listen
    /// address, port and protocol, when the entry's mode is its kind (forward for tcp and udp,
    /// proxy for http): it gets that entry's id and ring and, if L4, every backend recorded
    /// with that service id, in id order. The reconcile then keeps the ids of those the config
    /// lists (same address and port) and leaves the others' unused for this numbering, as for
    /// backends a reload removes. A service without its entry is not in the result (it gets
    /// fresh ids), so an empty SERVICES (the node was not forwarding when it stopped) gives
    /// the empty plan, against which the reconcile numbers as [`Plan::new`] does.
    ///
    /// Fails when the maps hold what no Tandem data plane writes: ids past the maps' limits,
    /// an unknown mode, two entries with one service id or one Maglev table.
    pub fn recover(
        config: &Config,
        services: &[(KernelKey, ServiceValue)],
        backends: &[(u32, KernelBackend)],
    ) -> Result<Plan, RecoverError> {
        let mut ids: HashMap<u32, &KernelKey> = HashMap::new();
        let mut rings: HashMap<u32, &KernelKey> = HashMap::new();
        for (key, value) in services {
            let forward = match ServiceMode::from_u32(value.mode) {
                Some(mode) => mode == ServiceMode::Forward,
                None => {
                    return Err(RecoverError::UnknownMode {
                        key: describe(key),
                        mode: value.mode,
                    })
                }
            };
            if value.id >= MAX_SERVICES {
                return Err(RecoverError::ServiceIdTooLarge {
                    key: describe(key),
                    id: value.id,
                });
            }
            if let Some(first) = ids.insert(value.id, key) {
                return Err(RecoverError::SharedId {
                    first: describe(first),
                    second: describe(key),
                    id: value.id,
                });
            }
            if forward {
                if value.ring >= MAX_L4_SERVICES {
                    return Err(RecoverError::RingTooLarge {
                        key: describe(key),
                        ring: value.ring,
                    });
                }
                if let Some(first) = rings.insert(value.ring, key) {
                    return Err(RecoverError::SharedRing {
                        first: describe(first),
                        second: describe(key),
                        ring: value.ring,
                    });
                }
            }
        }
        if let Some((id, _)) = backends.iter().find(|(id, _)| *id >= MAX_BACKENDS) {
            return Err(RecoverError::BackendIdTooLarge { id: *id });
        }
        let mut backends: Vec<&(u32, KernelBackend)> = backends.iter().collect();
        backends.sort_by_key(|(id, _)| *id);

        let mut recovered = Vec::new();
        // Each entry for one service at most (the config allows one service per listen socket).
        let mut matched: HashSet<KernelKey> = HashSet::new();
        for service in &config.services {
            let l4 = service.mode.is_l4();
            let listen = service.listen;
            let key = KernelKey::new(listen, service.mode.ip_protocol());
            let Some((_, value)) = services.iter().find(|(k, _)| *k == key) else {
                continue;
            };
            let kind = if l4 {
                ServiceMode::Forward
            } else {
                ServiceMode::Proxy
            };
            if value.mode != kind as u32 || !matched.insert(key) {
                continue;
            }
            let planned = if l4 {
                backends
                    .iter()
                    .filter(|(_, b)| b.service == value.id)
                    .map(|(id, b)| {
                        let address = b.address;
                        let weight = service
                            .backends
                            .iter()
                            .find(|c| c.address == address)
                            .map_or(0, |c| c.weight);
                        PlannedBackend {
                            address,
                            weight,
                            id: *id,
                        }
                    })
                    .collect()
            } else {
                Vec::new()
            };
            recovered.push(PlannedService {
                name: service.name.clone(),
                listen,
                mode: service.mode,
                id: value.id,
                ring: l4.then_some(value.ring),
                backends: planned,
            });
        }
        Ok(Plan {
            services: recovered,
            vips: vips(config),
        })
    }

    /// How many services and L4 backends of this plan have the ids they have in `previous`
    /// (a service by name, a backend by its service's name and its address).
    pub fn kept_from(&self, previous: &Plan) -> (usize, usize) {
        let mut services = 0;
        let mut backends = 0;
        for service in &self.services {
            let Some(old) = previous
                .service(&service.name)
                .filter(|old| old.mode == service.mode && old.id == service.id)
            else {
                continue;
            };
            services += 1;
            if service.mode.is_l4() {
                backends += service
                    .backends
                    .iter()
                    .filter(|b| {
                        old.backends
                            .iter()
                            .any(|o| o.address == b.address && o.id == b.id)
                    })
                    .count();
            }
        }
        (services, backends)
    }

    /// Numbers `config` with no limit: the userspace relay has no kernel maps to fit and uses
    /// the plan only for the services, their backends and their Maglev tables.
    pub fn without_limits(config: &Config) -> Plan {
        Plan::number(&Plan::default(), config, Limits::NONE)
            .expect("without limits, numbering cannot fail")
    }

    fn number(previous: &Plan, config: &Config, limits: Limits) -> Result<Plan, PlanError> {
        let count = config.services.len();
        if count > limits.services as usize {
            return Err(PlanError::TooManyServices { count });
        }
        let l4 = config.services.iter().filter(|s| s.mode.is_l4());
        let l4_count = l4.clone().count();
        if l4_count > limits.rings as usize {
            return Err(PlanError::TooManyL4Services { count: l4_count });
        }
        let backend_count: usize = l4.map(|s| s.backends.len()).sum();
        if backend_count > limits.backends as usize {
            return Err(PlanError::TooManyBackends {
                count: backend_count,
            });
        }

        // What remains: the previous service of the same name, when its mode is the same.
        let remaining = |service: &config::Service| {
            previous
                .service(&service.name)
                .filter(|p| p.mode == service.mode)
        };
        let mut service_ids = Ids::default();
        let mut rings = Ids::default();
        // Every backend id of the previous plan stays taken, those of removed backends too.
        let mut backend_ids = Ids::default();
        for service in previous.l4_services() {
            for backend in &service.backends {
                backend_ids.take(backend.id);
            }
        }
        for service in &config.services {
            if let Some(kept) = remaining(service) {
                service_ids.take(kept.id);
                if let Some(ring) = kept.ring {
                    rings.take(ring);
                }
            }
        }

        let mut services = Vec::with_capacity(count);
        let mut fresh_backends = 0usize;
        for service in &config.services {
            let listen = service.listen;
            let kept = remaining(service);
            let l4 = service.mode.is_l4();
            let id = kept.map_or_else(|| service_ids.lowest_free(), |k| k.id);
            if id >= limits.services {
                return Err(PlanError::TooManyServices { count });
            }
            let ring = if l4 {
                let ring = kept
                    .and_then(|k| k.ring)
                    .unwrap_or_else(|| rings.lowest_free());
                // Not reachable from a plan that fit (there are at most as many rings as L4
                // services), but a ring past the maps would be written out of bounds.
                if ring >= limits.rings {
                    return Err(PlanError::TooManyL4Services { count: l4_count });
                }
                Some(ring)
            } else {
                None
            };
            // Each previous backend id once, even if an address were listed twice.
            let mut kept_ids: HashMap<SocketAddr, u32> = kept
                .filter(|_| l4)
                .map(|k| k.backends.iter().rev().map(|b| (b.address, b.id)).collect())
                .unwrap_or_default();
            let mut backends = Vec::with_capacity(service.backends.len());
            for backend in &service.backends {
                let address = backend.address;
                let id = if !l4 {
                    0
                } else if let Some(id) = kept_ids.remove(&address) {
                    id
                } else {
                    fresh_backends += 1;
                    let id = backend_ids.lowest_free();
                    if id >= limits.backends {
                        return Err(PlanError::BackendIdsExhausted {
                            needed: previous.backend_count() + fresh_backends,
                        });
                    }
                    id
                };
                backends.push(PlannedBackend {
                    address,
                    weight: backend.weight,
                    id,
                });
            }
            services.push(PlannedService {
                name: service.name.clone(),
                listen,
                mode: service.mode,
                id,
                ring,
                backends,
            });
        }
        Ok(Plan {
            services,
            vips: vips(config),
        })
    }

    /// How many backend ids the plan uses.
    fn backend_count(&self) -> usize {
        self.l4_services().map(|s| s.backends.len()).sum()
    }

    /// The L4 services (those the data plane forwards itself).
    pub fn l4_services(&self) -> impl Iterator<Item = &PlannedService> {
        self.services.iter().filter(|s| s.mode.is_l4())
    }

    pub fn service(&self, name: &str) -> Option<&PlannedService> {
        self.services.iter().find(|s| s.name == name)
    }
}

/// Every `[[vrrp]]` virtual_ipaddress of `config` (both families), each once, sorted (IPv4
/// first).
fn vips(config: &Config) -> Vec<IpAddr> {
    let mut vips: Vec<IpAddr> = config
        .vrrp
        .iter()
        .flat_map(|v| v.virtual_ipaddress.iter().copied())
        .collect();
    vips.sort();
    vips.dedup();
    vips
}

impl PlannedService {
    /// The IP protocol of the service's packets.
    pub fn proto(&self) -> u8 {
        self.mode.ip_protocol()
    }

    /// The service's SERVICES entry: its listen address, port and protocol, and what the
    /// program does with its packets (forward by its Maglev table, or pass to the proxy).
    pub fn kernel_entry(&self) -> (KernelKey, ServiceValue) {
        (
            KernelKey::new(self.listen, self.proto()),
            ServiceValue {
                id: self.id,
                mode: if self.mode.is_l4() {
                    ServiceMode::Forward as u32
                } else {
                    ServiceMode::Proxy as u32
                },
                ring: self.ring.unwrap_or(0),
            },
        )
    }

    /// Fails, naming the service's backends, when `backend` is not one of them (what an
    /// operator's command about a backend answers to a typo).
    pub fn require_backend(&self, backend: SocketAddr) -> anyhow::Result<SocketAddr> {
        if let Some(found) = self.backends.iter().find(|b| b.address == backend) {
            return Ok(found.address);
        }
        anyhow::bail!(config::no_such_backend(
            &self.name,
            backend,
            self.backends.iter().map(|b| b.address)
        ))
    }

    /// The Maglev table over the backends for which `up` says yes; lookups return indices into
    /// `self.backends`. A backend's identity is its `address:port` text, the same on every node.
    pub fn maglev(&self, up: impl Fn(SocketAddr) -> bool) -> Maglev {
        let identities: Vec<String> = self
            .backends
            .iter()
            .map(|b| b.address.to_string())
            .collect();
        let weighted: Vec<(&[u8], u32)> = self
            .backends
            .iter()
            .zip(&identities)
            .map(|(b, identity)| {
                (
                    identity.as_bytes(),
                    if up(b.address) { b.weight } else { 0 },
                )
            })
            .collect();
        Maglev::new(&weighted, DEFAULT_TABLE_SIZE)
    }

    /// The backend for a flow from `client`, as the XDP program and the relay choose it
    /// (without a connection entry): Maglev over the backends that are up, by
    /// [`flow_hash_of`]. `None` when no backend is up.
    pub fn choose(&self, maglev: &Maglev, client: SocketAddr) -> Option<&PlannedBackend> {
        let hash = flow_hash_of(client, self.listen, self.proto());
        maglev.lookup(hash).map(|i| &self.backends[i])
    }
}

/// The hash the XDP program places a flow from `client` to `service` with:
/// [`lb_common::flow_hash`] for IPv4, [`lb_common::flow_hash6`] for IPv6. An IPv4 client of an
/// IPv6 service (an IPv4-mapped address, which the relay's IPv6-only sockets never see) is
/// hashed as its mapped IPv6 address.
pub fn flow_hash_of(client: SocketAddr, service: SocketAddr, proto: u8) -> u64 {
    match (client, service) {
        (SocketAddr::V4(c), SocketAddr::V4(s)) => {
            lb_common::flow_hash(c.ip().octets(), c.port(), s.ip().octets(), s.port(), proto)
        }
        (c, s) => lb_common::flow_hash6(
            ipv6_of(c.ip()).octets(),
            c.port(),
            ipv6_of(s.ip()).octets(),
            s.port(),
            proto,
        ),
    }
}

fn ipv6_of(address: IpAddr) -> Ipv6Addr {
    match address {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

impl PlannedService {
    /// Whether the service listens on IPv6 (its entry is in SERVICES6, its backends in
    /// BACKENDS6).
    pub fn is_ipv6(&self) -> bool {
        self.listen.is_ipv6()
    }
}

/// A backend's share of its service's Maglev table, for `tandem status` and `tandem maps`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Share {
    pub slots: usize,
    pub percent: f64,
}

impl Share {
    pub fn of(slots: usize, table_len: usize) -> Share {
        Share {
            slots,
            percent: if table_len == 0 {
                0.0
            } else {
                (slots as f64 * 10_000.0 / table_len as f64).round() / 100.0
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(address: Ipv4Addr, port: u16) -> SocketAddr {
        SocketAddr::from((address, port))
    }

    /// The host part the test configs vary: 198.18.0.HOST, 2001:2::HOST (HOST in hex).
    fn last_octet(address: IpAddr) -> u8 {
        match address {
            IpAddr::V4(v4) => v4.octets()[3],
            IpAddr::V6(v6) => v6.octets()[15],
        }
    }

    fn config(text: &str) -> Config {
        config::parse(text, std::path::Path::new("test.toml"))
            .unwrap_or_else(|e| panic!("{e}"))
            .config
    }

    const TWO_SERVICES: &str = r#"
[node]
name = "lb1"
interface = "eth0"

[[vrrp]]
name = "VI_1"
virtual_router_id = 51
virtual_ipaddress = ["198.18.0.99"]

[[service]]
name = "web"
listen = "198.18.0.99:80"
backends = ["198.18.0.102:80", "198.18.0.103:80"]

[[service]]
name = "echo"
listen = "198.18.0.99:7"
mode = "tcp"
backends = ["198.18.0.102:7", "198.18.0.103:7"]

[[service]]
name = "dns"
listen = "198.18.0.99:53"
mode = "udp"
backends = ["198.18.0.102:53"]
"#;

    #[test]
    fn ids_follow_the_config_order_and_only_l4_services_get_tables_and_backend_ids() {
        let plan = Plan::new(&config(TWO_SERVICES)).unwrap();
        assert_eq!(plan.vips, vec![IpAddr::V4(Ipv4Addr::new(198, 18, 0, 99))]);
        let ids: Vec<(u32, Option<u32>)> = plan.services.iter().map(|s| (s.id, s.ring)).collect();
        assert_eq!(ids, vec![(0, None), (1, Some(0)), (2, Some(1))]);
        let backend_ids: Vec<u32> = plan
            .l4_services()
            .flat_map(|s| s.backends.iter().map(|b| b.id))
            .collect();
        assert_eq!(backend_ids, vec![0, 1, 2]);
        assert_eq!(plan.l4_services().count(), 2);
    }

    #[test]
    fn the_choice_is_maglev_by_the_flow_hash_and_avoids_backends_that_are_down() {
        let plan = Plan::new(&config(TWO_SERVICES)).unwrap();
        let echo = plan.service("echo").unwrap();
        let all = echo.maglev(|_| true);
        let client = v4(Ipv4Addr::new(198, 18, 0, 10), 40000);
        let hash = lb_common::flow_hash([198, 18, 0, 10], 40000, [198, 18, 0, 99], 7, 6);
        assert_eq!(
            echo.choose(&all, client).map(|b| b.address),
            all.lookup(hash).map(|i| echo.backends[i].address)
        );
        let first = echo.backends[0].address;
        let without_first = echo.maglev(|a| a != first);
        for port in 40000..40100 {
            let chosen = echo
                .choose(&without_first, SocketAddr::new(client.ip(), port))
                .unwrap();
            assert_ne!(chosen.address, first);
        }
        let none = echo.maglev(|_| false);
        assert!(echo.choose(&none, client).is_none());
    }

    /// A service of a test config: name, mode, port, backends (last octet of the address,
    /// weight).
    type Spec<'a> = (&'a str, &'a str, u16, &'a [(u8, u32)]);

    /// A service's ids: name, service id, ring, backends (last octet of the address, id).
    type ServiceIds = (String, u32, Option<u32>, Vec<(u8, u32)>);

    /// A config with the VIP and `services`, each backend at 198.18.0.HOST on the service's
    /// port.
    fn services(services: &[Spec]) -> Config {
        let mut text = String::from(
            "[node]\nname = \"lb1\"\ninterface = \"eth0\"\n\n[[vrrp]]\nname = \"VI_1\"\nvirtual_router_id = 51\nvirtual_ipaddress = [\"198.18.0.99\"]\n",
        );
        for (name, mode, port, backends) in services {
            let backends: Vec<String> = backends
                .iter()
                .map(|(host, weight)| {
                    format!("{{ address = \"198.18.0.{host}:{port}\", weight = {weight} }}")
                })
                .collect();
            text.push_str(&format!(
                "\n[[service]]\nname = \"{name}\"\nlisten = \"198.18.0.99:{port}\"\nmode = \"{mode}\"\nbackends = [{}]\n",
                backends.join(", ")
            ));
        }
        config(&text)
    }

    /// (service id, ring, [(backend host, backend id)]) of every service, by name.
    fn ids(plan: &Plan) -> Vec<ServiceIds> {
        plan.services
            .iter()
            .map(|s| {
                (
                    s.name.clone(),
                    s.id,
                    s.ring,
                    s.backends
                        .iter()
                        .map(|b| (last_octet(b.address.ip()), b.id))
                        .collect(),
                )
            })
            .collect()
    }

    fn entry(name: &str, id: u32, ring: Option<u32>, backends: &[(u8, u32)]) -> ServiceIds {
        (name.to_owned(), id, ring, backends.to_vec())
    }

    #[test]
    fn a_first_reconcile_numbers_as_a_start_does() {
        let config = config(TWO_SERVICES);
        assert_eq!(
            Plan::reconcile(&Plan::default(), &config).unwrap(),
            Plan::new(&config).unwrap()
        );
    }

    #[test]
    fn a_backend_inserted_in_front_leaves_the_others_their_ids() {
        let before = Plan::new(&services(&[("echo", "tcp", 7, &[(102, 1), (103, 1)])])).unwrap();
        // A new backend first in the list, and a weight changed.
        let after = Plan::reconcile(
            &before,
            &services(&[("echo", "tcp", 7, &[(104, 1), (102, 1), (103, 3)])]),
        )
        .unwrap();
        assert_eq!(
            ids(&after),
            vec![entry("echo", 0, Some(0), &[(104, 2), (102, 0), (103, 1)])]
        );
        assert_eq!(after.services[0].backends[2].weight, 3);
        // Config order is kept: the Maglev table does not depend on it anyway.
        assert_eq!(
            after.service("echo").unwrap().maglev(|_| true),
            Plan::new(&services(&[(
                "echo",
                "tcp",
                7,
                &[(104, 1), (102, 1), (103, 3)]
            )]))
            .unwrap()
            .service("echo")
            .unwrap()
            .maglev(|_| true)
        );
    }

    #[test]
    fn services_keep_ids_and_rings_by_name_across_insertion_removal_and_reordering() {
        let before = Plan::new(&services(&[
            ("web", "http", 80, &[(102, 1)]),
            ("a", "tcp", 1000, &[(102, 1), (103, 1)]),
            ("b", "udp", 1001, &[(102, 1)]),
            ("c", "tcp", 1002, &[(103, 1)]),
        ]))
        .unwrap();
        assert_eq!(
            ids(&before),
            vec![
                entry("web", 0, None, &[(102, 0)]),
                entry("a", 1, Some(0), &[(102, 0), (103, 1)]),
                entry("b", 2, Some(1), &[(102, 2)]),
                entry("c", 3, Some(2), &[(103, 3)]),
            ]
        );
        // "a" removed, "new" inserted first, "c" before "b", "web" last.
        let after = Plan::reconcile(
            &before,
            &services(&[
                ("new", "tcp", 2000, &[(104, 1), (105, 1)]),
                ("c", "tcp", 1002, &[(103, 1)]),
                ("b", "udp", 1001, &[(102, 1)]),
                ("web", "http", 80, &[(102, 1)]),
            ]),
        )
        .unwrap();
        assert_eq!(
            ids(&after),
            vec![
                // The freed service id and ring go to the new service at once; the freed
                // backend ids 0 and 1 do not (flows still point at them during this reload).
                entry("new", 1, Some(0), &[(104, 4), (105, 5)]),
                entry("c", 3, Some(2), &[(103, 3)]),
                entry("b", 2, Some(1), &[(102, 2)]),
                entry("web", 0, None, &[(102, 0)]),
            ]
        );
        // The next reload may reuse them, lowest first.
        let next = Plan::reconcile(
            &after,
            &services(&[
                ("new", "tcp", 2000, &[(104, 1), (105, 1), (106, 1)]),
                ("c", "tcp", 1002, &[(103, 1), (107, 1)]),
                ("b", "udp", 1001, &[(102, 1)]),
                ("web", "http", 80, &[(102, 1)]),
                ("d", "udp", 3000, &[(108, 1)]),
            ]),
        )
        .unwrap();
        assert_eq!(
            ids(&next),
            vec![
                entry("new", 1, Some(0), &[(104, 4), (105, 5), (106, 0)]),
                entry("c", 3, Some(2), &[(103, 3), (107, 1)]),
                entry("b", 2, Some(1), &[(102, 2)]),
                entry("web", 0, None, &[(102, 0)]),
                entry("d", 4, Some(3), &[(108, 6)]),
            ]
        );
    }

    #[test]
    fn a_backend_that_leaves_frees_its_id_for_the_next_reload_not_this_one() {
        let before = Plan::new(&services(&[("a", "tcp", 7, &[(102, 1), (103, 1)])])).unwrap();
        let swapped = Plan::reconcile(
            &before,
            &services(&[("a", "tcp", 7, &[(102, 1), (104, 1)])]),
        )
        .unwrap();
        assert_eq!(
            ids(&swapped),
            vec![entry("a", 0, Some(0), &[(102, 0), (104, 2)])]
        );
        let again = Plan::reconcile(
            &swapped,
            &services(&[("a", "tcp", 7, &[(102, 1), (104, 1), (105, 1)])]),
        )
        .unwrap();
        assert_eq!(
            ids(&again),
            vec![entry("a", 0, Some(0), &[(102, 0), (104, 2), (105, 1)])]
        );
        // A backend that comes back after leaving is a new backend: fresh id, fresh counters.
        let back = Plan::reconcile(
            &again,
            &services(&[("a", "tcp", 7, &[(103, 1), (104, 1), (105, 1)])]),
        )
        .unwrap();
        assert_eq!(
            ids(&back),
            vec![entry("a", 0, Some(0), &[(103, 3), (104, 2), (105, 1)])]
        );
    }

    #[test]
    fn a_service_whose_mode_changes_is_a_new_service() {
        let before = Plan::new(&services(&[
            ("a", "tcp", 7, &[(102, 1)]),
            ("b", "tcp", 8, &[(102, 1)]),
        ]))
        .unwrap();
        let after = Plan::reconcile(
            &before,
            &services(&[("a", "udp", 7, &[(102, 1)]), ("b", "http", 8, &[(102, 1)])]),
        )
        .unwrap();
        // Both freed their ids and rings; "a" (udp) takes the lowest free ones, "b" (http)
        // has no ring. The freed backend ids stay unused for this reload.
        assert_eq!(
            ids(&after),
            vec![
                entry("a", 0, Some(0), &[(102, 2)]),
                entry("b", 1, None, &[(102, 0)])
            ]
        );
        assert_eq!(after.services[0].mode, config::ServiceMode::Udp);
    }

    #[test]
    fn the_same_config_again_changes_nothing() {
        let config = config(TWO_SERVICES);
        let plan = Plan::new(&config).unwrap();
        assert_eq!(Plan::reconcile(&plan, &config).unwrap(), plan);
    }

    #[test]
    fn reconcile_enforces_the_maps_limits() {
        let small = Plan::new(&services(&[("a", "tcp", 7, &[(102, 1)])])).unwrap();
        // One Maglev table too many.
        let names: Vec<String> = (0..=MAX_L4_SERVICES).map(|i| format!("s{i}")).collect();
        let many: Vec<Spec> = names
            .iter()
            .enumerate()
            .map(|(i, name)| (name.as_str(), "tcp", 1000 + i as u16, &[(102u8, 1u32)][..]))
            .collect();
        assert_eq!(
            Plan::reconcile(&small, &services(&many)),
            Err(PlanError::TooManyL4Services {
                count: MAX_L4_SERVICES as usize + 1
            })
        );
        // Exactly as many fit, and the ids stay below the limit.
        let fit = Plan::reconcile(&small, &services(&many[1..])).unwrap();
        assert!(fit
            .services
            .iter()
            .all(|s| s.ring.unwrap() < MAX_L4_SERVICES));
        // The relay has no such limit.
        assert_eq!(
            Plan::without_limits(&services(&many)).services.len(),
            many.len()
        );
    }

    /// A config with one TCP service of `count` backends (each its own address) and, unless
    /// `second` is empty, a second one with those hosts: enough to count ids up to
    /// MAX_BACKENDS.
    fn backends_config(count: u32, second: &[u8]) -> Config {
        let backends: Vec<String> = (0..count)
            .map(|i| format!("\"198.18.{}.{}:7\"", 1 + i / 200, 1 + i % 200))
            .collect();
        let mut text = format!(
            "[node]\nname = \"lb1\"\ninterface = \"eth0\"\n\n\
             [[service]]\nname = \"big\"\nlisten = \"198.18.0.99:7\"\nmode = \"tcp\"\nbackends = [{}]\n",
            backends.join(", ")
        );
        if !second.is_empty() {
            let second: Vec<String> = second
                .iter()
                .map(|h| format!("\"198.18.0.{h}:8\""))
                .collect();
            text.push_str(&format!(
                "\n[[service]]\nname = \"small\"\nlisten = \"198.18.0.99:8\"\nmode = \"tcp\"\nbackends = [{}]\n",
                second.join(", ")
            ));
        }
        config(&text)
    }

    #[test]
    fn reconcile_refuses_more_backend_ids_than_the_maps_hold() {
        let full = Plan::new(&backends_config(MAX_BACKENDS - 1, &[102])).unwrap();
        assert_eq!(
            Plan::reconcile(&full, &backends_config(MAX_BACKENDS, &[102])),
            Err(PlanError::TooManyBackends {
                count: MAX_BACKENDS as usize + 1
            })
        );
        // Swapping a backend needs a fresh id while the old one is still in use.
        assert_eq!(
            Plan::reconcile(&full, &backends_config(MAX_BACKENDS - 1, &[103])),
            Err(PlanError::BackendIdsExhausted {
                needed: MAX_BACKENDS as usize + 1
            })
        );
        // In two reloads it fits: the freed id is reused by the second.
        let removed = Plan::reconcile(&full, &backends_config(MAX_BACKENDS - 1, &[])).unwrap();
        assert!(removed.service("small").is_none());
        let added = Plan::reconcile(&removed, &backends_config(MAX_BACKENDS - 1, &[103])).unwrap();
        let small = added.service("small").unwrap();
        assert_eq!(small.backends[0].id, MAX_BACKENDS - 1);
        assert_eq!(
            small.backends[0].address.ip(),
            IpAddr::V4(Ipv4Addr::new(198, 18, 0, 103))
        );
    }

    /// What SERVICES and BACKENDS hold.
    type Pinned = (Vec<(KernelKey, ServiceValue)>, Vec<(u32, KernelBackend)>);

    /// What the XDP data plane leaves in SERVICES (while active) and BACKENDS for `plan`.
    fn pinned(plan: &Plan) -> Pinned {
        let services = plan
            .services
            .iter()
            .map(PlannedService::kernel_entry)
            .collect();
        let backends = plan
            .l4_services()
            .flat_map(|s| {
                // Through the kernel's layouts, as the data plane reads them back.
                s.backends.iter().map(|b| {
                    let entry = match b.address {
                        SocketAddr::V4(a) => KernelBackend::from_v4(&BackendValue {
                            addr: u32::from_ne_bytes(a.ip().octets()),
                            mac: [2, 0, 0, 0, 0, a.ip().octets()[3]],
                            port: a.port().to_be(),
                            flags: lb_common::BACKEND_UP,
                            service: s.id,
                        }),
                        SocketAddr::V6(a) => KernelBackend::from_v6(&Backend6Value {
                            addr: a.ip().octets(),
                            mac: [2, 0, 0, 0, 0, a.ip().octets()[15]],
                            port: a.port().to_be(),
                            flags: lb_common::BACKEND_UP,
                            service: s.id,
                        }),
                    };
                    (b.id, entry.expect("a backend's entry holds an address"))
                })
            })
            .collect();
        (services, backends)
    }

    /// What a start numbers `config` as, given what the maps hold.
    fn restart(config: &Config, pinned: &Pinned) -> Plan {
        let recovered = Plan::recover(config, &pinned.0, &pinned.1).unwrap();
        Plan::reconcile(&recovered, config).unwrap()
    }

    #[test]
    fn a_restart_after_a_reload_that_inserted_a_backend_keeps_every_id() {
        let before = Plan::new(&services(&[
            ("echo", "tcp", 7, &[(102, 1), (103, 1)]),
            ("dns", "udp", 53, &[(102, 1), (103, 1)]),
        ]))
        .unwrap();
        let config = services(&[
            ("echo", "tcp", 7, &[(104, 1), (102, 1), (103, 1)]),
            ("dns", "udp", 53, &[(102, 1), (103, 1)]),
        ]);
        let reloaded = Plan::reconcile(&before, &config).unwrap();
        // Config order would give 104 the id 0, which the kernel recorded flows to 102 with.
        assert_ne!(Plan::new(&config).unwrap(), reloaded);

        let maps = pinned(&reloaded);
        let recovered = Plan::recover(&config, &maps.0, &maps.1).unwrap();
        let restarted = Plan::reconcile(&recovered, &config).unwrap();
        assert_eq!(restarted, reloaded);
        assert_eq!(restarted.kept_from(&recovered), (2, 5));
        // The config's names, modes and weights.
        assert_eq!(
            recovered.service("dns").unwrap().mode,
            config::ServiceMode::Udp
        );
    }

    #[test]
    fn a_restart_after_many_reloads_keeps_every_id_whatever_the_config_order() {
        let mut plan = Plan::new(&services(&[
            ("web", "http", 80, &[(102, 1)]),
            ("a", "tcp", 1000, &[(102, 1), (103, 1)]),
            ("b", "udp", 1001, &[(102, 1)]),
            ("c", "tcp", 1002, &[(103, 1)]),
        ]))
        .unwrap();
        let reloads = [
            services(&[
                ("new", "tcp", 2000, &[(104, 1), (105, 1)]),
                ("c", "tcp", 1002, &[(103, 1)]),
                ("b", "udp", 1001, &[(102, 1)]),
                ("web", "http", 80, &[(102, 1)]),
            ]),
            services(&[
                ("new", "tcp", 2000, &[(104, 1), (105, 1), (106, 1)]),
                ("c", "tcp", 1002, &[(107, 2), (103, 1)]),
                ("b", "udp", 1001, &[(102, 1)]),
                ("web", "http", 80, &[(102, 1)]),
                ("d", "udp", 3000, &[(108, 1)]),
            ]),
        ];
        for config in &reloads {
            plan = Plan::reconcile(&plan, config).unwrap();
            assert_eq!(restart(config, &pinned(&plan)), plan);
        }
        // Renamed services are found by their address: the maps know no names.
        let renamed = services(&[
            ("new2", "tcp", 2000, &[(104, 1), (105, 1), (106, 1)]),
            ("c2", "tcp", 1002, &[(107, 2), (103, 1)]),
            ("b2", "udp", 1001, &[(102, 1)]),
            ("web2", "http", 80, &[(102, 1)]),
            ("d2", "udp", 3000, &[(108, 1)]),
        ]);
        let restarted = restart(&renamed, &pinned(&plan));
        // Everything but the names.
        let strip = |p: &Plan| -> Vec<ServiceIds> {
            ids(p)
                .into_iter()
                .map(|(_, id, ring, b)| (String::new(), id, ring, b))
                .collect()
        };
        assert_eq!(strip(&restarted), strip(&plan));
    }

    #[test]
    fn with_no_service_in_the_maps_a_start_numbers_in_config_order() {
        let before = Plan::new(&services(&[("a", "tcp", 7, &[(102, 1), (103, 1)])])).unwrap();
        let config = services(&[("a", "tcp", 7, &[(104, 1), (102, 1), (103, 1)])]);
        let reloaded = Plan::reconcile(&before, &config).unwrap();
        // A backup's maps: BACKENDS current, SERVICES empty.
        let (_, backends) = pinned(&reloaded);
        let recovered = Plan::recover(&config, &[], &backends).unwrap();
        assert!(recovered.services.is_empty());
        assert_eq!(
            Plan::reconcile(&recovered, &config).unwrap(),
            Plan::new(&config).unwrap()
        );
        assert_eq!(
            restart(&config, &(Vec::new(), Vec::new())),
            Plan::new(&config).unwrap()
        );
    }

    #[test]
    fn a_config_changed_while_the_daemon_was_stopped_keeps_what_remains_and_numbers_the_rest_afresh(
    ) {
        let before = Plan::new(&services(&[
            ("a", "tcp", 7, &[(102, 1), (103, 1)]),
            ("gone", "tcp", 8, &[(104, 1)]),
            ("b", "udp", 9, &[(102, 1)]),
            ("mode", "tcp", 10, &[(103, 1)]),
        ]))
        .unwrap();
        let config = services(&[
            // 103 removed, 105 added.
            ("a", "tcp", 7, &[(105, 1), (102, 1)]),
            ("b", "udp", 9, &[(102, 1), (106, 1)]),
            // Same address, another kind of service: not the service the maps hold.
            ("mode", "http", 10, &[(103, 1)]),
            ("new", "udp", 11, &[(107, 1)]),
        ]);
        let restarted = restart(&config, &pinned(&before));
        assert_eq!(
            ids(&before),
            vec![
                entry("a", 0, Some(0), &[(102, 0), (103, 1)]),
                entry("gone", 1, Some(1), &[(104, 2)]),
                entry("b", 2, Some(2), &[(102, 3)]),
                entry("mode", 3, Some(3), &[(103, 4)]),
            ]
        );
        assert_eq!(
            ids(&restarted),
            vec![
                // 103's id 1 is not given to 105 at once (a's table in the kernel points at
                // it until the first activation has written the new one), as in a reload;
                // the ids of a service that is gone are free.
                entry("a", 0, Some(0), &[(105, 2), (102, 0)]),
                entry("b", 2, Some(2), &[(102, 3), (106, 4)]),
                entry("mode", 1, None, &[(103, 0)]),
                entry("new", 3, Some(1), &[(107, 5)]),
            ]
        );
        let recovered = {
            let maps = pinned(&before);
            Plan::recover(&config, &maps.0, &maps.1).unwrap()
        };
        assert_eq!(restarted.kept_from(&recovered), (2, 2));
    }

    #[test]
    fn maps_no_tandem_wrote_are_not_taken_over() {
        let config = services(&[("a", "tcp", 7, &[(102, 1)]), ("b", "tcp", 8, &[(103, 1)])]);
        let good = pinned(&Plan::new(&config).unwrap());
        assert!(Plan::recover(&config, &good.0, &good.1).is_ok());
        let broken = |f: &dyn Fn(&mut Pinned)| {
            let mut maps = good.clone();
            f(&mut maps);
            let (services, backends) = maps;
            Plan::recover(&config, &services, &backends).unwrap_err()
        };
        assert!(matches!(
            broken(&|(s, _)| s[1].1.id = s[0].1.id),
            RecoverError::SharedId { id: 0, .. }
        ));
        assert!(matches!(
            broken(&|(s, _)| s[1].1.ring = s[0].1.ring),
            RecoverError::SharedRing { ring: 0, .. }
        ));
        assert!(matches!(
            broken(&|(s, _)| s[0].1.id = MAX_SERVICES),
            RecoverError::ServiceIdTooLarge { .. }
        ));
        assert!(matches!(
            broken(&|(s, _)| s[0].1.ring = MAX_L4_SERVICES),
            RecoverError::RingTooLarge { .. }
        ));
        assert!(matches!(
            broken(&|(s, _)| s[0].1.mode = 7),
            RecoverError::UnknownMode { mode: 7, .. }
        ));
        assert!(matches!(
            broken(&|(_, b)| b[0].0 = MAX_BACKENDS),
            RecoverError::BackendIdTooLarge { id: MAX_BACKENDS }
        ));
        let message = broken(&|(s, _)| s[1].1.id = s[0].1.id).to_string();
        assert!(message.contains("198.18.0.99:7/tcp"), "{message}");
        // Proxy entries have no ring: two of them with ring 0 are fine.
        let http = services(&[
            ("a", "http", 80, &[(102, 1)]),
            ("b", "http", 81, &[(103, 1)]),
        ]);
        let maps = pinned(&Plan::new(&http).unwrap());
        assert!(Plan::recover(&http, &maps.0, &maps.1).is_ok());
    }

    const DUAL_STACK: &str = r#"
[node]
name = "lb1"
interface = "eth0"

[[vrrp]]
name = "VI_1"
virtual_router_id = 51
virtual_ipaddress = ["198.18.0.99"]

[[service]]
name = "echo"
listen = "198.18.0.99:7"
mode = "tcp"
backends = ["198.18.0.102:7", "198.18.0.103:7"]

[[service]]
name = "echo6"
listen = "[2001:2::99]:7"
mode = "tcp"
backends = ["[2001:2::102]:7", "[2001:2::103]:7"]

[[service]]
name = "web6"
listen = "[2001:2::99]:80"
backends = ["198.18.0.102:80"]

[[service]]
name = "dns6"
listen = "[2001:2::99]:53"
mode = "udp"
backends = ["[2001:2::102]:53"]
"#;

    const VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 0x99);

    #[test]
    fn ipv6_services_share_the_numbering_and_their_entries_go_to_the_ipv6_maps() {
        let plan = Plan::new(&config(DUAL_STACK)).unwrap();
        assert_eq!(
            ids(&plan),
            vec![
                entry("echo", 0, Some(0), &[(102, 0), (103, 1)]),
                entry("echo6", 1, Some(1), &[(0x02, 2), (0x03, 3)]),
                entry("web6", 2, None, &[(102, 0)]),
                entry("dns6", 3, Some(2), &[(0x02, 4)]),
            ]
        );
        let (key, value) = plan.service("echo6").unwrap().kernel_entry();
        assert_eq!(
            key,
            KernelKey::V6(ServiceKey6::new(VIP6.octets(), 7, IPPROTO_TCP))
        );
        assert_eq!((value.id, value.ring, value.mode), (1, 1, 1));
        assert_eq!(key.to_string(), "[2001:2::99]:7/tcp");
        assert_eq!(key.listen(), "[2001:2::99]:7".parse().unwrap());
        let (key, _) = plan.service("echo").unwrap().kernel_entry();
        assert_eq!(
            key,
            KernelKey::V4(ServiceKey::new([198, 18, 0, 99], 7, IPPROTO_TCP))
        );
        assert_eq!(key.to_string(), "198.18.0.99:7/tcp");
        let (key, _) = plan.service("dns6").unwrap().kernel_entry();
        assert_eq!(key.proto(), IPPROTO_UDP);
        assert!(plan.service("echo6").unwrap().is_ipv6());
    }

    #[test]
    fn an_ipv6_flow_is_placed_by_flow_hash6_over_the_maglev_table() {
        let plan = Plan::new(&config(DUAL_STACK)).unwrap();
        let echo6 = plan.service("echo6").unwrap();
        let all = echo6.maglev(|_| true);
        let client: SocketAddr = "[2001:2::10]:40000".parse().unwrap();
        let client6 = Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 0x10);
        let hash = lb_common::flow_hash6(client6.octets(), 40000, VIP6.octets(), 7, IPPROTO_TCP);
        assert_eq!(flow_hash_of(client, echo6.listen, IPPROTO_TCP), hash);
        assert_eq!(
            echo6.choose(&all, client).map(|b| b.address),
            all.lookup(hash).map(|i| echo6.backends[i].address)
        );
        // Both backends get flows, and one that is down gets none.
        let mut chosen = HashSet::new();
        for port in 40000..40100 {
            chosen.insert(
                echo6
                    .choose(&all, SocketAddr::new(client.ip(), port))
                    .unwrap()
                    .address,
            );
        }
        assert_eq!(chosen.len(), 2);
        let first = echo6.backends[0].address;
        let without_first = echo6.maglev(|a| a != first);
        for port in 40000..40100 {
            let backend = echo6.choose(&without_first, SocketAddr::new(client.ip(), port));
            assert_ne!(backend.unwrap().address, first);
        }
        // An IPv4-mapped client is hashed as its IPv6 form.
        let mapped: SocketAddr = "198.18.0.10:40000".parse().unwrap();
        assert_eq!(
            flow_hash_of(mapped, echo6.listen, IPPROTO_TCP),
            flow_hash_of(
                "[::ffff:198.18.0.10]:40000".parse().unwrap(),
                echo6.listen,
                IPPROTO_TCP
            )
        );
    }

    #[test]
    fn a_restart_keeps_the_ids_of_ipv6_services_and_backends() {
        let before = Plan::new(&config(DUAL_STACK)).unwrap();
        // A reload inserts an IPv6 backend first: config order would renumber.
        let text = DUAL_STACK.replace(
            "backends = [\"[2001:2::102]:7\", \"[2001:2::103]:7\"]",
            "backends = [\"[2001:2::104]:7\", \"[2001:2::102]:7\", \"[2001:2::103]:7\"]",
        );
        let config = config(&text);
        let reloaded = Plan::reconcile(&before, &config).unwrap();
        assert_eq!(
            ids(&reloaded)[1],
            entry("echo6", 1, Some(1), &[(0x04, 5), (0x02, 2), (0x03, 3)])
        );
        let maps = pinned(&reloaded);
        assert!(maps
            .0
            .iter()
            .any(|(k, _)| matches!(k, KernelKey::V6(k) if k.port_host() == 53)));
        assert_eq!(restart(&config, &maps), reloaded);
    }

    #[test]
    fn kernel_backends_read_back_their_address_and_ignore_empty_slots() {
        assert_eq!(KernelBackend::from_v4(&BackendValue::default()), None);
        assert_eq!(KernelBackend::from_v6(&Backend6Value::default()), None);
        let v6 = Backend6Value {
            addr: VIP6.octets(),
            mac: [2, 0, 0, 0, 0, 1],
            port: 8080u16.to_be(),
            flags: 1,
            service: 7,
        };
        assert_eq!(
            KernelBackend::from_v6(&v6),
            Some(KernelBackend {
                address: "[2001:2::99]:8080".parse().unwrap(),
                service: 7
            })
        );
    }

    #[test]
    fn shares_are_rounded_percentages() {
        assert_eq!(Share::of(32768, 65537).percent, 50.0);
        assert_eq!(Share::of(0, 0).percent, 0.0);
    }
}
