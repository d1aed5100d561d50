//! Sharing the XDP data plane's L4 flows with the other nodes, so a flow the router moves to
//! another node mid-connection (active-active, ECMP) reaches the backend the first node chose.
//!
//! Maglev alone gives the same backend on every node only while the nodes agree on the
//! backend set. For the moments they do not (a health check seen failing by one node first, a
//! backend drained on one node), each node tells the others which backend it gave each new
//! flow, as IPVS's sync daemon and LoxiLB do. Entries travel over the proxy's replication link
//! (`proxy::policy::replicate`, one JSON line each, [`FlowEntry`]) to every configured peer.
//!
//! - Sending: every [`SHARE_INTERVAL`] a pass walks CONNTRACK then CONNTRACK6 from where the
//!   previous pass stopped, at most [`SCAN_BUDGET`] keys, and publishes the flows it has not
//!   shared yet ([`Walk`] remembers them until a whole walk no longer finds them).
//! - Backends travel as addresses (service name, backend `address:port`): ids are numbered by
//!   each node. A flow whose backend id names no backend of the plan, or another address than
//!   the one it was recorded with, is not shared.
//! - Receiving: a flow goes into the node's own table only where it has no entry for that key
//!   (BPF_NOEXIST: a local decision is never overridden), with the node's own id for the
//!   backend; flows of services or backends this node does not have are ignored and counted.
//!   The XDP program checks on every hit that the backend is up and belongs to the service, so
//!   an inserted flow is sent to its backend while that backend is up here, drained or not.
//!
//! What is not here: the userspace relay keeps its flows to itself (its own table, in its own
//! process), and a node that (re)connects gets only the flows published from then on (and
//! those queued while the link was down), not a snapshot of the whole table.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use lb_common::{FlowKey, FlowKey6, FlowValue, FlowValue6};
use serde::{Deserialize, Serialize};

use super::plan::{Plan, PlannedService};
use super::xdp::loader::XdpError;
use super::xdp::maps::KernelMaps;
use crate::proxy::policy::replicate::{FlowEntry, FlowProto, FlowTuple};

/// How often new flows are looked for and sent: a flow opened through one node is known to
/// the others a quarter of a second later at most (plus the link's delay), well before a
/// router's ECMP change after a node's loss.
pub const SHARE_INTERVAL: Duration = Duration::from_millis(250);
/// Keys read from the connection tables per pass, at most: a full table (262144 flows per
/// family) is walked over a few seconds instead of in one long pass that holds the data
/// plane's lock.
pub const SCAN_BUDGET: usize = 8192;

/// Flow sharing as `tandem status` shows it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowShareStatus {
    /// Flows published to the peers (each counted once, whatever the number of peers).
    pub sent: u64,
    /// Flows received from the peers.
    pub received: u64,
    /// Received flows written into this node's connection tables.
    pub inserted: u64,
    /// Received flows this node had an entry for already (its own decision stays).
    pub present: u64,
    /// Received flows for a service or backend this node does not have.
    pub ignored: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    sent: AtomicU64,
    received: AtomicU64,
    inserted: AtomicU64,
    present: AtomicU64,
    ignored: AtomicU64,
}

impl Counters {
    pub(crate) fn status(&self) -> FlowShareStatus {
        FlowShareStatus {
            sent: self.sent.load(Ordering::Relaxed),
            received: self.received.load(Ordering::Relaxed),
            inserted: self.inserted.load(Ordering::Relaxed),
            present: self.present.load(Ordering::Relaxed),
            ignored: self.ignored.load(Ordering::Relaxed),
        }
    }

    pub(crate) fn count_sent(&self, n: usize) {
        self.sent.fetch_add(n as u64, Ordering::Relaxed);
    }

    pub(crate) fn count(&self, applied: Applied) {
        self.received.fetch_add(1, Ordering::Relaxed);
        let counter = match applied {
            Applied::Inserted => &self.inserted,
            Applied::Present => &self.present,
            Applied::Ignored(_) => &self.ignored,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// A connection-table entry in the kernel's terms, either family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KernelFlow {
    V4(FlowKey, FlowValue),
    V6(FlowKey6, FlowValue6),
}

/// Why a received flow was not inserted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ignored {
    /// No L4 service of that name here.
    UnknownService,
    /// The service here listens on another address, port or protocol than the flow's.
    OtherListen,
    /// The service here has no backend at that address.
    UnknownBackend,
    /// Client, VIP and backend are not all of one family.
    MixedFamilies,
    /// The kernel refused the write (logged).
    Failed,
}

/// What the receiver did with one flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Applied {
    Inserted,
    Present,
    Ignored(Ignored),
}

/// The connection tables as flow sharing uses them: [`KernelMaps`], and a table in memory in
/// the tests.
pub trait Conntrack {
    fn next4(&self, after: Option<&FlowKey>) -> Result<Option<FlowKey>, XdpError>;
    fn get4(&self, key: &FlowKey) -> Option<FlowValue>;
    fn next6(&self, after: Option<&FlowKey6>) -> Result<Option<FlowKey6>, XdpError>;
    fn get6(&self, key: &FlowKey6) -> Option<FlowValue6>;
    /// Writes `flow` unless its key has an entry; `false` when it had one.
    fn insert_if_absent(&mut self, flow: KernelFlow) -> Result<bool, XdpError>;
}

impl Conntrack for KernelMaps {
    fn next4(&self, after: Option<&FlowKey>) -> Result<Option<FlowKey>, XdpError> {
        self.next_flow_key(after)
    }
    fn get4(&self, key: &FlowKey) -> Option<FlowValue> {
        self.flow(key)
    }
    fn next6(&self, after: Option<&FlowKey6>) -> Result<Option<FlowKey6>, XdpError> {
        self.next_flow6_key(after)
    }
    fn get6(&self, key: &FlowKey6) -> Option<FlowValue6> {
        self.flow6(key)
    }
    fn insert_if_absent(&mut self, flow: KernelFlow) -> Result<bool, XdpError> {
        match flow {
            KernelFlow::V4(key, value) => self.put_flow_if_absent(key, value),
            KernelFlow::V6(key, value) => self.put_flow6_if_absent(key, value),
        }
    }
}

/// The plan's L4 backends by id, to name a recorded flow's backend by its address.
struct BackendsById<'p> {
    by_id: HashMap<u32, (&'p PlannedService, SocketAddr)>,
}

impl<'p> BackendsById<'p> {
    fn new(plan: &'p Plan) -> Self {
        let by_id = plan
            .l4_services()
            .flat_map(|service| {
                service
                    .backends
                    .iter()
                    .map(move |backend| (backend.id, (service, backend.address)))
            })
            .collect();
        BackendsById { by_id }
    }

    /// The flow as it travels; `None` when its backend id names no backend of the plan, or one
    /// at another address than it was recorded with (an id reused by a reload), or when the
    /// flow is not to the backend's service.
    fn entry(&self, flow: &KernelFlow) -> Option<FlowEntry> {
        let (id, recorded_ip, tuple) = match flow {
            KernelFlow::V4(key, value) => (
                value.backend,
                IpAddr::V4(Ipv4Addr::from(value.backend_addr.to_ne_bytes())),
                FlowTuple {
                    proto: FlowProto::from_number(key.proto)?,
                    client: SocketAddr::from((
                        Ipv4Addr::from(key.src.to_ne_bytes()),
                        u16::from_be(key.sport),
                    )),
                    vip: SocketAddr::from((
                        Ipv4Addr::from(key.dst.to_ne_bytes()),
                        u16::from_be(key.dport),
                    )),
                },
            ),
            KernelFlow::V6(key, value) => (
                value.backend,
                IpAddr::V6(Ipv6Addr::from(value.backend_addr)),
                FlowTuple {
                    proto: FlowProto::from_number(key.proto)?,
                    client: SocketAddr::from((Ipv6Addr::from(key.src), u16::from_be(key.sport))),
                    vip: SocketAddr::from((Ipv6Addr::from(key.dst), u16::from_be(key.dport))),
                },
            ),
        };
        let &(service, backend) = self.by_id.get(&id)?;
        let ours = backend.ip() == recorded_ip
            && service.listen == tuple.vip
            && service.proto() == tuple.proto.number();
        ours.then(|| FlowEntry {
            service: service.name.clone(),
            flow: tuple,
            backend,
        })
    }
}

/// A received flow in this node's terms: its key, and this node's id for the backend.
pub fn from_wire(plan: &Plan, entry: &FlowEntry) -> Result<KernelFlow, Ignored> {
    let service = plan
        .service(&entry.service)
        .filter(|service| service.mode.is_l4())
        .ok_or(Ignored::UnknownService)?;
    if service.listen != entry.flow.vip || service.proto() != entry.flow.proto.number() {
        return Err(Ignored::OtherListen);
    }
    let backend = service
        .backends
        .iter()
        .find(|backend| backend.address == entry.backend)
        .ok_or(Ignored::UnknownBackend)?;
    let proto = entry.flow.proto.number();
    match (entry.flow.client, entry.flow.vip, backend.address) {
        (SocketAddr::V4(client), SocketAddr::V4(vip), SocketAddr::V4(to)) => Ok(KernelFlow::V4(
            FlowKey {
                src: u32::from_ne_bytes(client.ip().octets()),
                dst: u32::from_ne_bytes(vip.ip().octets()),
                sport: client.port().to_be(),
                dport: vip.port().to_be(),
                proto,
                _pad: [0; 3],
            },
            FlowValue {
                backend: backend.id,
                backend_addr: u32::from_ne_bytes(to.ip().octets()),
            },
        )),
        (SocketAddr::V6(client), SocketAddr::V6(vip), SocketAddr::V6(to)) => Ok(KernelFlow::V6(
            FlowKey6 {
                src: client.ip().octets(),
                dst: vip.ip().octets(),
                sport: client.port().to_be(),
                dport: vip.port().to_be(),
                proto,
                _pad: [0; 3],
            },
            FlowValue6 {
                backend: backend.id,
                backend_addr: to.ip().octets(),
            },
        )),
        _ => Err(Ignored::MixedFamilies),
    }
}

/// Keys already shared (sent, or received from a peer), so a pass sends only new flows and a
/// received flow does not travel back. A key is forgotten once a whole walk of the table no
/// longer finds it (the flow ended or was evicted); a key that comes back later is a new flow.
///
/// A walk may never reach the end of a busy table: resuming from a key the LRU evicted
/// meanwhile starts it over. So the set is also bounded ([`SEEN_LIMIT`]): when full it is
/// emptied, and the flows still there are sent once more (a peer keeps its entry for them).
#[derive(Debug)]
pub struct Seen<K> {
    walk: u64,
    keys: HashMap<K, u64>,
    limit: usize,
}

/// Keys remembered per family at most: twice what a connection table holds.
pub const SEEN_LIMIT: usize = 2 * lb_common::MAX_FLOWS as usize;

impl<K> Default for Seen<K> {
    fn default() -> Self {
        Seen::with_limit(SEEN_LIMIT)
    }
}

impl<K> Seen<K> {
    /// A set that holds `limit` keys at most (at least 1).
    pub fn with_limit(limit: usize) -> Self {
        Seen {
            walk: 0,
            keys: HashMap::new(),
            limit: limit.max(1),
        }
    }
}

impl<K: Hash + Eq> Seen<K> {
    /// The walk found `key`: `true` the first time it is seen since it appeared.
    pub fn first_sight(&mut self, key: K) -> bool {
        self.make_room(&key);
        self.keys.insert(key, self.walk).is_none()
    }

    fn make_room(&mut self, key: &K) {
        if self.keys.len() >= self.limit && !self.keys.contains_key(key) {
            self.keys.clear();
        }
    }

    /// `key` is shared already (a peer sent it).
    pub fn remember(&mut self, key: K) {
        self.make_room(&key);
        self.keys.insert(key, self.walk);
    }

    /// The walk reached the end of the table: forgets the keys it did not find.
    pub fn end_walk(&mut self) {
        let walk = self.walk;
        self.keys.retain(|_, seen| *seen == walk);
        self.walk += 1;
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// Where the walk over both tables stands: in CONNTRACK after a key (or at its start), then
/// in CONNTRACK6.
#[derive(Clone, Copy, Debug)]
enum Cursor {
    V4(Option<FlowKey>),
    V6(Option<FlowKey6>),
}

/// The sender's side: the walk over the connection tables, resumed pass after pass.
#[derive(Debug)]
pub struct Walk {
    cursor: Cursor,
    seen4: Seen<FlowKey>,
    seen6: Seen<FlowKey6>,
}

impl Default for Walk {
    fn default() -> Self {
        Walk {
            cursor: Cursor::V4(None),
            seen4: Seen::default(),
            seen6: Seen::default(),
        }
    }
}

impl Walk {
    /// Reads at most `budget` keys from where the previous pass stopped and returns the flows
    /// among them that were not shared yet, as they travel. Reaching the end of CONNTRACK6
    /// starts the next walk at CONNTRACK's start in the next pass.
    pub fn pass(
        &mut self,
        table: &impl Conntrack,
        plan: &Plan,
        budget: usize,
    ) -> Result<Vec<FlowEntry>, XdpError> {
        let backends = BackendsById::new(plan);
        let mut out = Vec::new();
        for _ in 0..budget {
            match self.cursor {
                Cursor::V4(after) => match table.next4(after.as_ref())? {
                    Some(key) => {
                        self.cursor = Cursor::V4(Some(key));
                        if self.seen4.first_sight(key) {
                            if let Some(value) = table.get4(&key) {
                                out.extend(backends.entry(&KernelFlow::V4(key, value)));
                            }
                        }
                    }
                    None => {
                        self.seen4.end_walk();
                        self.cursor = Cursor::V6(None);
                    }
                },
                Cursor::V6(after) => match table.next6(after.as_ref())? {
                    Some(key) => {
                        self.cursor = Cursor::V6(Some(key));
                        if self.seen6.first_sight(key) {
                            if let Some(value) = table.get6(&key) {
                                out.extend(backends.entry(&KernelFlow::V6(key, value)));
                            }
                        }
                    }
                    None => {
                        self.seen6.end_walk();
                        self.cursor = Cursor::V4(None);
                        break; // one whole walk per pass at most
                    }
                },
            }
        }
        Ok(out)
    }

    /// Writes a received flow into `table` where it has no entry for its key, and remembers
    /// the key as shared either way (it must not travel back).
    pub fn apply(
        &mut self,
        table: &mut impl Conntrack,
        plan: &Plan,
        entry: &FlowEntry,
    ) -> Result<Applied, XdpError> {
        let flow = match from_wire(plan, entry) {
            Ok(flow) => flow,
            Err(ignored) => return Ok(Applied::Ignored(ignored)),
        };
        match flow {
            KernelFlow::V4(key, _) => self.seen4.remember(key),
            KernelFlow::V6(key, _) => self.seen6.remember(key),
        }
        Ok(if table.insert_if_absent(flow)? {
            Applied::Inserted
        } else {
            Applied::Present
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config;

    fn addr(text: &str) -> SocketAddr {
        text.parse().expect("test address")
    }

    fn plan(backends: &[&str]) -> Plan {
        let list = backends
            .iter()
            .map(|b| format!("\"{b}\""))
            .collect::<Vec<_>>()
            .join(", ");
        let text = format!(
            "[node]\nname = \"lb1\"\ninterface = \"eth0\"\n\n\
             [[service]]\nname = \"web\"\nlisten = \"198.18.0.99:80\"\nmode = \"http\"\n\
             backends = [\"198.18.0.102:8080\"]\n\n\
             [[service]]\nname = \"db\"\nlisten = \"198.18.0.99:5432\"\nmode = \"tcp\"\n\
             backends = [{list}]\n\n\
             [[service]]\nname = \"db6\"\nlisten = \"[2001:2::99]:5432\"\nmode = \"tcp\"\n\
             backends = [\"[2001:2::102]:5432\"]\n"
        );
        let config = config::parse(&text, std::path::Path::new("t.toml"))
            .unwrap_or_else(|e| panic!("test config: {e}"))
            .config;
        Plan::new(&config).expect("plan")
    }

    /// In-memory connection tables, walked in insertion order.
    #[derive(Default)]
    struct Table {
        v4: Vec<(FlowKey, FlowValue)>,
        v6: Vec<(FlowKey6, FlowValue6)>,
        reads: std::cell::Cell<usize>,
    }

    fn next<K: PartialEq + Copy, V>(list: &[(K, V)], after: Option<&K>) -> Option<K> {
        let start = match after {
            None => 0,
            // As the kernel does: a key that vanished restarts the walk.
            Some(after) => list
                .iter()
                .position(|(k, _)| k == after)
                .map_or(0, |i| i + 1),
        };
        list.get(start).map(|(k, _)| *k)
    }

    impl Conntrack for Table {
        fn next4(&self, after: Option<&FlowKey>) -> Result<Option<FlowKey>, XdpError> {
            self.reads.set(self.reads.get() + 1);
            Ok(next(&self.v4, after))
        }
        fn get4(&self, key: &FlowKey) -> Option<FlowValue> {
            self.v4.iter().find(|(k, _)| k == key).map(|(_, v)| *v)
        }
        fn next6(&self, after: Option<&FlowKey6>) -> Result<Option<FlowKey6>, XdpError> {
            self.reads.set(self.reads.get() + 1);
            Ok(next(&self.v6, after))
        }
        fn get6(&self, key: &FlowKey6) -> Option<FlowValue6> {
            self.v6.iter().find(|(k, _)| k == key).map(|(_, v)| *v)
        }
        fn insert_if_absent(&mut self, flow: KernelFlow) -> Result<bool, XdpError> {
            Ok(match flow {
                KernelFlow::V4(key, value) => {
                    if self.get4(&key).is_some() {
                        return Ok(false);
                    }
                    self.v4.push((key, value));
                    true
                }
                KernelFlow::V6(key, value) => {
                    if self.get6(&key).is_some() {
                        return Ok(false);
                    }
                    self.v6.push((key, value));
                    true
                }
            })
        }
    }

    fn flow(client: &str, backend: &str) -> FlowEntry {
        let client = addr(client);
        let (service, vip) = if client.is_ipv4() {
            ("db", addr("198.18.0.99:5432"))
        } else {
            ("db6", addr("[2001:2::99]:5432"))
        };
        FlowEntry {
            service: service.into(),
            flow: FlowTuple {
                proto: FlowProto::Tcp,
                client,
                vip,
            },
            backend: addr(backend),
        }
    }

    fn id_of(plan: &Plan, backend: &str) -> u32 {
        plan.l4_services()
            .flat_map(|s| &s.backends)
            .find(|b| b.address == addr(backend))
            .expect("backend of the plan")
            .id
    }

    #[test]
    fn a_received_flow_gets_this_nodes_id_for_its_backend_address() {
        // Node B lists the backends in another order than node A: other ids, same addresses.
        let a = plan(&["198.18.0.102:5432", "198.18.0.103:5432"]);
        let b = plan(&["198.18.0.103:5432", "198.18.0.102:5432"]);
        let entry = flow("198.18.0.10:42000", "198.18.0.103:5432");
        let KernelFlow::V4(key_a, value_a) = from_wire(&a, &entry).expect("fits A") else {
            panic!("an IPv4 flow");
        };
        let KernelFlow::V4(key_b, value_b) = from_wire(&b, &entry).expect("fits B") else {
            panic!("an IPv4 flow");
        };
        assert_eq!(
            key_a, key_b,
            "the key is the packet's, the same on every node"
        );
        assert_eq!(value_a.backend, id_of(&a, "198.18.0.103:5432"));
        assert_eq!(value_b.backend, id_of(&b, "198.18.0.103:5432"));
        assert_ne!(value_a.backend, value_b.backend);
        assert_eq!(key_a.sport, 42000u16.to_be());
        assert_eq!(key_a.dport, 5432u16.to_be());
        assert_eq!(key_a.src, u32::from_ne_bytes([198, 18, 0, 10]));
        assert_eq!(value_a.backend_addr, u32::from_ne_bytes([198, 18, 0, 103]));

        // And back: what A records travels as the same entry.
        let back = BackendsById::new(&a).entry(&KernelFlow::V4(key_a, value_a));
        assert_eq!(back, Some(entry));
        let entry6 = flow("[2001:2::10]:42000", "[2001:2::102]:5432");
        let flow6 = from_wire(&b, &entry6).expect("fits");
        assert!(matches!(flow6, KernelFlow::V6(..)));
        assert_eq!(BackendsById::new(&a).entry(&flow6), Some(entry6));
    }

    #[test]
    fn flows_for_services_or_backends_this_node_lacks_are_ignored() {
        let b = plan(&["198.18.0.102:5432"]);
        let mut unknown_service = flow("198.18.0.10:42000", "198.18.0.102:5432");
        unknown_service.service = "cache".into();
        assert_eq!(
            from_wire(&b, &unknown_service),
            Err(Ignored::UnknownService)
        );
        let mut http = unknown_service.clone();
        http.service = "web".into();
        assert_eq!(from_wire(&b, &http), Err(Ignored::UnknownService));
        let mut other_port = flow("198.18.0.10:42000", "198.18.0.102:5432");
        other_port.flow.vip = addr("198.18.0.99:5433");
        assert_eq!(from_wire(&b, &other_port), Err(Ignored::OtherListen));
        let mut udp = flow("198.18.0.10:42000", "198.18.0.102:5432");
        udp.flow.proto = FlowProto::Udp;
        assert_eq!(from_wire(&b, &udp), Err(Ignored::OtherListen));
        assert_eq!(
            from_wire(&b, &flow("198.18.0.10:42000", "198.18.0.103:5432")),
            Err(Ignored::UnknownBackend)
        );
        let mut mixed = flow("198.18.0.10:42000", "198.18.0.102:5432");
        mixed.flow.client = addr("[2001:2::10]:42000");
        assert_eq!(from_wire(&b, &mixed), Err(Ignored::MixedFamilies));
    }

    #[test]
    fn a_received_flow_never_overrides_the_nodes_own_entry() {
        let b = plan(&["198.18.0.102:5432", "198.18.0.103:5432"]);
        let mut table = Table::default();
        let mut walk = Walk::default();
        // B placed this flow itself on .102.
        let KernelFlow::V4(key, own) =
            from_wire(&b, &flow("198.18.0.10:42000", "198.18.0.102:5432")).expect("fits")
        else {
            panic!("an IPv4 flow");
        };
        table.v4.push((key, own));
        // A says .103.
        let applied = walk
            .apply(
                &mut table,
                &b,
                &flow("198.18.0.10:42000", "198.18.0.103:5432"),
            )
            .expect("applies");
        assert_eq!(applied, Applied::Present);
        assert_eq!(table.get4(&key), Some(own), "B's own choice stays");
        // A flow B has no entry for goes in, on B's id for the backend.
        let applied = walk
            .apply(
                &mut table,
                &b,
                &flow("198.18.0.10:42001", "198.18.0.103:5432"),
            )
            .expect("applies");
        assert_eq!(applied, Applied::Inserted);
        assert_eq!(table.v4.len(), 2);
        assert_eq!(table.v4[1].1.backend, id_of(&b, "198.18.0.103:5432"));
        let ignored = walk
            .apply(
                &mut table,
                &b,
                &flow("198.18.0.10:42002", "198.18.0.104:5432"),
            )
            .expect("applies");
        assert_eq!(ignored, Applied::Ignored(Ignored::UnknownBackend));
        assert_eq!(table.v4.len(), 2, "nothing written for an unknown backend");

        let counters = Counters::default();
        for applied in [Applied::Present, Applied::Inserted, ignored] {
            counters.count(applied);
        }
        counters.count_sent(3);
        assert_eq!(
            counters.status(),
            FlowShareStatus {
                sent: 3,
                received: 3,
                inserted: 1,
                present: 1,
                ignored: 1
            }
        );
    }

    #[test]
    fn passes_send_each_new_flow_once_within_their_budget_and_not_received_ones() {
        let a = plan(&["198.18.0.102:5432", "198.18.0.103:5432"]);
        let mut table = Table::default();
        let mut walk = Walk::default();
        let record = |table: &mut Table, port: u16| {
            let entry = flow(&format!("198.18.0.10:{port}"), "198.18.0.102:5432");
            table
                .insert_if_absent(from_wire(&a, &entry).expect("fits"))
                .expect("insert");
            entry
        };
        let first: Vec<FlowEntry> = (42000..42005).map(|p| record(&mut table, p)).collect();

        let sent = walk.pass(&table, &a, 3).expect("pass");
        assert_eq!(sent, first[..3], "three keys read, three flows sent");
        assert_eq!(table.reads.get(), 3);
        let sent = walk.pass(&table, &a, 3).expect("pass");
        assert_eq!(sent, first[3..], "the walk goes on where it stopped");
        // The walk ends (CONNTRACK6 is empty) and starts over: nothing new.
        let sent = walk.pass(&table, &a, 100).expect("pass");
        assert!(sent.is_empty(), "{sent:?}");

        // A new flow, and one received from a peer: only the new one is sent.
        let new = record(&mut table, 42010);
        walk.apply(
            &mut table,
            &a,
            &flow("198.18.0.10:42011", "198.18.0.103:5432"),
        )
        .expect("applies");
        let sent = walk.pass(&table, &a, 100).expect("pass");
        assert_eq!(sent, [new]);

        // A flow that ends is forgotten after a whole walk; its key coming back is a new flow.
        let ended = table.v4.remove(0);
        walk.pass(&table, &a, 100).expect("pass");
        walk.pass(&table, &a, 100).expect("pass");
        assert_eq!(
            walk.seen4.len(),
            table.v4.len(),
            "the ended flow is forgotten"
        );
        table.v4.push(ended);
        let sent = walk.pass(&table, &a, 100).expect("pass");
        assert_eq!(sent, first[..1]);
    }

    #[test]
    fn the_set_of_shared_keys_stays_bounded_when_a_walk_never_ends() {
        let mut seen = Seen::with_limit(3);
        for key in 0..3u32 {
            assert!(seen.first_sight(key));
        }
        assert!(!seen.first_sight(2), "a known key is no news");
        assert_eq!(seen.len(), 3);
        // A fourth key without an end of walk in between: the set starts again.
        assert!(seen.first_sight(3));
        assert_eq!(seen.len(), 1);
        assert!(
            seen.first_sight(0),
            "sent once more, which a peer shrugs off"
        );
    }

    #[test]
    fn flows_recorded_on_an_id_a_reload_gave_another_backend_are_not_sent() {
        let a = plan(&["198.18.0.102:5432", "198.18.0.103:5432"]);
        let KernelFlow::V4(key, mut value) =
            from_wire(&a, &flow("198.18.0.10:42000", "198.18.0.102:5432")).expect("fits")
        else {
            panic!("an IPv4 flow");
        };
        value.backend_addr = u32::from_ne_bytes([198, 18, 0, 250]);
        let mut table = Table::default();
        table.v4.push((key, value));
        value.backend = 4000;
        table.v4.push((
            FlowKey {
                sport: 42001u16.to_be(),
                ..key
            },
            value,
        ));
        let sent = Walk::default().pass(&table, &a, 100).expect("pass");
        assert!(sent.is_empty(), "{sent:?}");
    }
}
