//! Types shared by Tandem's XDP program (lb-ebpf) and its userspace (lb-userspace).
//!
//! Everything the kernel and userspace must agree on lives here and nowhere else: map names,
//! map sizes, the `#[repr(C)]` layout of map keys and values, and the meaning of each counter
//! index. The crate is `#![no_std]` so the eBPF program can use it; the `user` feature adds
//! `aya::Pod` impls so userspace can read and write the same types through aya.
//!
//! Byte order: addresses and ports in keys are stored exactly as they appear on the wire
//! (network byte order), so the XDP program can copy them from the packet without swapping.
//! The constructors below take host-order values and do the conversion once, in userspace.
//!
//! Each family has maps of its own where the key or value holds an address (SERVICES and
//! SERVICES6, VIPS and VIPS6, BACKENDS and BACKENDS6, CONNTRACK and CONNTRACK6), so the IPv4
//! layouts stay as they were; what holds no address is shared: service ids, Maglev tables (by
//! ring), backend ids (one id space: an id names an IPv4 or an IPv6 backend, never both),
//! statistics and counters.
#![no_std]

/// Name of the hash map of services, keyed by [`ServiceKey`], valued by [`ServiceValue`].
pub const SERVICES_MAP: &str = "SERVICES";
/// Name of the per-CPU array of [`Counter`]s.
pub const COUNTERS_MAP: &str = "COUNTERS";
/// Name under which the XDP program is pinned in the pin directory.
pub const PROGRAM_PIN: &str = "tandem_xdp";
/// Name of the XDP program function in the object file.
pub const PROGRAM_NAME: &str = "tandem_xdp";
/// Default bpffs directory holding the pinned program, links and maps.
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/tandem";

/// Most services a node can hold in its SERVICES map.
pub const MAX_SERVICES: u32 = 1024;

/// IP protocol numbers used in [`ServiceKey::proto`], and ICMP, whose errors the XDP program
/// sends after their flow.
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
pub const IPPROTO_ICMP: u8 = 1;
/// ICMPv6, whose Packet Too Big messages the XDP program sends after their flow.
pub const IPPROTO_ICMPV6: u8 = 58;

/// EtherTypes (IEEE registry) the XDP program and userspace's codecs (`wire::ethernet`) read.
pub mod ethertype {
    pub const IPV4: u16 = 0x0800;
    pub const ARP: u16 = 0x0806;
    pub const IPV6: u16 = 0x86dd;
    /// An 802.1Q VLAN tag follows.
    pub const VLAN: u16 = 0x8100;
    /// An 802.1ad (Q-in-Q) service tag follows.
    pub const QINQ: u16 = 0x88a8;
}

/// A service is identified by the virtual address, port and protocol a client sends to.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ServiceKey {
    /// IPv4 address in network byte order (as read from the packet).
    pub vip: u32,
    /// Port in network byte order.
    pub port: u16,
    /// [`IPPROTO_TCP`] or [`IPPROTO_UDP`].
    pub proto: u8,
    /// Keeps the layout free of implicit padding, so keys hash identically on both sides.
    pub _pad: u8,
}

impl ServiceKey {
    /// Builds a key from host-order values: `ServiceKey::new([198, 18, 0, 99], 80, IPPROTO_TCP)`.
    pub const fn new(vip: [u8; 4], port: u16, proto: u8) -> Self {
        ServiceKey {
            vip: u32::from_ne_bytes(vip),
            port: port.to_be(),
            proto,
            _pad: 0,
        }
    }

    /// The address as its four octets, in the order they are written (198.18.0.99 -> [198, 18, 0, 99]).
    pub const fn vip_octets(&self) -> [u8; 4] {
        self.vip.to_ne_bytes()
    }

    /// The port in host order.
    pub const fn port_host(&self) -> u16 {
        u16::from_be(self.port)
    }
}

/// An IPv6 service: the virtual address, port and protocol a client sends to (SERVICES6).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ServiceKey6 {
    /// IPv6 address, its 16 octets as on the wire.
    pub vip: [u8; 16],
    /// Port in network byte order.
    pub port: u16,
    /// [`IPPROTO_TCP`] or [`IPPROTO_UDP`].
    pub proto: u8,
    /// Keeps the layout free of implicit padding, so keys hash identically on both sides.
    pub _pad: u8,
}

impl ServiceKey6 {
    /// Builds a key from the address's octets and a host-order port.
    pub const fn new(vip: [u8; 16], port: u16, proto: u8) -> Self {
        ServiceKey6 {
            vip,
            port: port.to_be(),
            proto,
            _pad: 0,
        }
    }

    /// The port in host order.
    pub const fn port_host(&self) -> u16 {
        u16::from_be(self.port)
    }
}

/// How the data plane treats packets of a service.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServiceMode {
    /// L7 (HTTP): the packet goes up the kernel stack to the proxy.
    Proxy = 0,
    /// L4: forwarded to a backend by the XDP program.
    Forward = 1,
}

impl ServiceMode {
    pub const fn from_u32(v: u32) -> Option<Self> {
        match v {
            0 => Some(ServiceMode::Proxy),
            1 => Some(ServiceMode::Forward),
            _ => None,
        }
    }
}

/// What the data plane knows of a service.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServiceValue {
    /// Index of the service, used to find its per-service tables and counters.
    pub id: u32,
    /// A [`ServiceMode`] as u32 (enums are not safe to read from a map that userspace writes).
    pub mode: u32,
    /// For [`ServiceMode::Forward`]: which Maglev table in MAGLEV (below [`MAX_L4_SERVICES`]).
    pub ring: u32,
}

/// Per-CPU counters, one slot each in the COUNTERS array. Three groups:
/// - what a packet is: every packet lands in exactly one of `Ipv4Tcp` .. `Malformed`,
///   `Ipv6Tcp`, `Ipv6Udp` (the IPv6 kinds came later, so they are not all in one run);
/// - what the program did with it: every packet lands in exactly one of `Pass`, `Tx`, `Drop`;
/// - why, and other events: each counts on top of the two partitions above.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    /// An IPv4 TCP packet parsed to the end of its TCP header.
    Ipv4Tcp = 0,
    /// An IPv4 UDP packet parsed to the end of its UDP header.
    Ipv4Udp = 1,
    /// An IPv4 packet of another protocol (ICMP, VRRP, ...), or a fragment after the first.
    Ipv4Other = 2,
    /// An IPv6 packet that is not TCP or UDP right after the fixed header: ICMPv6 (neighbour
    /// discovery above all), extension headers, fragments, other protocols.
    Ipv6Other = 3,
    /// A frame that is not IP: ARP, LLDP, ...
    NonIp = 4,
    /// A frame too short for the headers it announces, or with impossible header fields.
    Malformed = 5,
    /// A TCP or UDP packet whose destination matched an entry of SERVICES.
    ServiceHit = 6,
    /// Verdict: handed to the kernel stack (XDP_PASS).
    Pass = 7,
    /// Verdict: sent back out of the interface to a backend (XDP_TX).
    Tx = 8,
    /// Verdict: dropped (XDP_DROP).
    Drop = 9,
    /// Passed: a packet for an L7 service, on its way to the proxy.
    PassL7 = 10,
    /// Passed: an IPv4 packet with header options (the program forwards plain headers only).
    PassIpOptions = 11,
    /// Passed: an IPv4 fragment (only the first has ports; the kernel reassembles), or an IPv6
    /// packet with a Fragment header.
    PassFragment = 12,
    /// Passed: ICMP or ICMPv6 for a virtual IP (pings, neighbour discovery, errors about flows
    /// this node does not forward).
    PassIcmp = 13,
    /// Dropped: TCP or UDP for a virtual IP on a port with no service.
    DropNoService = 14,
    /// Dropped: an L4 service with no backend up (empty Maglev table).
    DropNoBackend = 15,
    /// Dropped: the chosen backend's MAC address is not known yet (userspace is resolving it).
    DropNoMac = 16,
    /// Forwarded: the flow was in the connection table.
    FlowHit = 17,
    /// Forwarded: a new flow, placed by the Maglev table and recorded.
    FlowNew = 18,
    /// Forwarded: the flow's recorded backend is down or gone; placed again by Maglev.
    FlowMoved = 19,
    /// Forwarded: an ICMP "fragmentation needed" about an L4 flow, sent to that flow's backend.
    TxIcmpFragNeeded = 20,
    /// An IPv6 TCP packet (TCP right after the fixed header) parsed to the end of its TCP header.
    Ipv6Tcp = 21,
    /// An IPv6 UDP packet (UDP right after the fixed header) parsed to the end of its UDP header.
    Ipv6Udp = 22,
    /// Passed: an IPv6 packet for a virtual IP with an extension header the program does not
    /// walk (hop-by-hop, routing, destination options, ...): the kernel knows them.
    PassIpv6ExtHeader = 23,
    /// Forwarded: an ICMPv6 Packet Too Big about an L4 flow, sent to that flow's backend.
    TxIcmp6PacketTooBig = 24,
}

/// Number of slots in the COUNTERS array.
pub const COUNTER_COUNT: u32 = 25;

impl Counter {
    /// Every counter, in index order.
    pub const ALL: [Counter; COUNTER_COUNT as usize] = [
        Counter::Ipv4Tcp,
        Counter::Ipv4Udp,
        Counter::Ipv4Other,
        Counter::Ipv6Other,
        Counter::NonIp,
        Counter::Malformed,
        Counter::ServiceHit,
        Counter::Pass,
        Counter::Tx,
        Counter::Drop,
        Counter::PassL7,
        Counter::PassIpOptions,
        Counter::PassFragment,
        Counter::PassIcmp,
        Counter::DropNoService,
        Counter::DropNoBackend,
        Counter::DropNoMac,
        Counter::FlowHit,
        Counter::FlowNew,
        Counter::FlowMoved,
        Counter::TxIcmpFragNeeded,
        Counter::Ipv6Tcp,
        Counter::Ipv6Udp,
        Counter::PassIpv6ExtHeader,
        Counter::TxIcmp6PacketTooBig,
    ];

    /// The name used by `tandem maps` and in its JSON output.
    pub const fn name(self) -> &'static str {
        match self {
            Counter::Ipv4Tcp => "ipv4_tcp",
            Counter::Ipv4Udp => "ipv4_udp",
            Counter::Ipv4Other => "ipv4_other",
            Counter::Ipv6Other => "ipv6_other",
            Counter::NonIp => "non_ip",
            Counter::Malformed => "malformed",
            Counter::ServiceHit => "service_hit",
            Counter::Pass => "pass",
            Counter::Tx => "tx",
            Counter::Drop => "drop",
            Counter::PassL7 => "pass_l7",
            Counter::PassIpOptions => "pass_ip_options",
            Counter::PassFragment => "pass_fragment",
            Counter::PassIcmp => "pass_icmp",
            Counter::DropNoService => "drop_no_service",
            Counter::DropNoBackend => "drop_no_backend",
            Counter::DropNoMac => "drop_no_mac",
            Counter::FlowHit => "flow_hit",
            Counter::FlowNew => "flow_new",
            Counter::FlowMoved => "flow_moved",
            Counter::TxIcmpFragNeeded => "tx_icmp_frag_needed",
            Counter::Ipv6Tcp => "ipv6_tcp",
            Counter::Ipv6Udp => "ipv6_udp",
            Counter::PassIpv6ExtHeader => "pass_ipv6_ext_header",
            Counter::TxIcmp6PacketTooBig => "tx_icmp6_packet_too_big",
        }
    }
}

/// Name of the hash map of virtual IPs (key: address in wire order as u32, value: [`VipValue`]).
/// A TCP or UDP packet for one of them on a port without a service is dropped.
pub const VIPS_MAP: &str = "VIPS";
/// Name of the array of backends, indexed by backend id, valued by [`BackendValue`].
pub const BACKENDS_MAP: &str = "BACKENDS";
/// Name of the array of Maglev tables: [`MAX_L4_SERVICES`] tables of [`MAGLEV_TABLE_SIZE`]
/// backend ids each, table `ServiceValue::ring` first. [`NO_BACKEND`] marks an empty table.
pub const MAGLEV_MAP: &str = "MAGLEV";
/// Name of the LRU hash of L4 flows (connection tracking), [`FlowKey`] -> [`FlowValue`].
pub const CONNTRACK_MAP: &str = "CONNTRACK";
/// Name of the per-CPU array of [`Stats`] per service id.
pub const SERVICE_STATS_MAP: &str = "SERVICE_STATS";
/// Name of the per-CPU array of [`Stats`] per backend id.
pub const BACKEND_STATS_MAP: &str = "BACKEND_STATS";
/// Name of the one-entry array holding [`IfaceValue`]: what the program needs of its interface.
pub const IFACE_MAP: &str = "IFACE";
/// Name of the hash map of IPv6 services, [`ServiceKey6`] -> [`ServiceValue`].
pub const SERVICES6_MAP: &str = "SERVICES6";
/// Name of the hash map of IPv6 virtual IPs (key: the 16 octets, value: [`VipValue`]).
pub const VIPS6_MAP: &str = "VIPS6";
/// Name of the array of IPv6 backends, indexed by backend id (the same id space as BACKENDS),
/// valued by [`Backend6Value`].
pub const BACKENDS6_MAP: &str = "BACKENDS6";
/// Name of the LRU hash of IPv6 L4 flows, [`FlowKey6`] -> [`FlowValue6`].
pub const CONNTRACK6_MAP: &str = "CONNTRACK6";
/// Name of the one-entry array holding [`TraceConfig`]: whether `tandem trace` is running and
/// which packets it wants to see.
pub const TRACE_MAP: &str = "TRACE";

/// The aya-log target of the XDP program's per-packet decision records (`tandem trace`).
pub const TRACE_TARGET: &str = "tandem_trace";
/// [`TraceConfig::family`]: trace packets for every virtual IP.
pub const TRACE_ANY_VIP: u32 = 0;
/// [`TraceConfig::family`]: trace packets for the IPv4 virtual IP in the first four octets of
/// [`TraceConfig::vip`] only.
pub const TRACE_VIP4: u32 = 4;
/// [`TraceConfig::family`]: trace packets for the IPv6 virtual IP [`TraceConfig::vip`] only.
pub const TRACE_VIP6: u32 = 6;
/// In a decision record: no value (no backend chosen, no connection-table outcome).
pub const TRACE_NONE: u32 = u32::MAX;

/// What `tandem trace` asks of the XDP program (entry 0 of TRACE). All zero (the state a
/// fresh map starts in) means nobody traces: the program then logs nothing.
///
/// The program reads it once per TCP/UDP packet for a virtual IP, after its decision; the
/// decision record it logs (aya-log, target [`TRACE_TARGET`]) is the line
/// `FAMILY SRC SPORT DST DPORT PROTO ACTION REASON BACKEND FLOW TIME`: addresses as IPv6 (IPv4
/// ones mapped, `::ffff:198.18.0.10`), ports in host order, the XDP action, the [`Counter`]
/// index of the reason, the backend id or [`TRACE_NONE`], the connection-table [`Counter`]
/// (`FlowHit`, `FlowNew`, `FlowMoved`) or [`TRACE_NONE`], the time of the decision
/// (CLOCK_MONOTONIC, nanoseconds).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct TraceConfig {
    /// Non-zero while a trace runs.
    pub enabled: u32,
    /// [`TRACE_ANY_VIP`], [`TRACE_VIP4`] or [`TRACE_VIP6`].
    pub family: u32,
    /// The virtual IP to trace, octets as on the wire (IPv4: the first four).
    pub vip: [u8; 16],
    /// The service port to trace, network byte order; 0 for every port.
    pub port: u16,
    pub _pad: u16,
    /// The tracing process, so a second trace can tell a running one from a killed one.
    pub owner_pid: u32,
    /// When the trace started, seconds since the Unix epoch (shown by `tandem maps`).
    pub since: u64,
}

/// The kind of a BPF map, as the program declares it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapKind {
    Hash,
    LruHash,
    Array,
    PerCpuArray,
}

/// A map's layout: what lb-ebpf declares (its statics use these sizes and kinds) and what the
/// loader checks the program's maps and any pinned map against before using them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MapLayout {
    pub name: &'static str,
    pub kind: MapKind,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
}

/// Bytes of `T` as a map key or value size.
const fn size<T>() -> u32 {
    core::mem::size_of::<T>() as u32
}

/// Every map the program pins, with its layout: declared once, here.
pub const MAP_LAYOUTS: [MapLayout; 14] = [
    MapLayout {
        name: SERVICES_MAP,
        kind: MapKind::Hash,
        key_size: size::<ServiceKey>(),
        value_size: size::<ServiceValue>(),
        max_entries: MAX_SERVICES,
    },
    MapLayout {
        name: COUNTERS_MAP,
        kind: MapKind::PerCpuArray,
        key_size: size::<u32>(),
        value_size: size::<u64>(),
        max_entries: COUNTER_COUNT,
    },
    MapLayout {
        name: VIPS_MAP,
        kind: MapKind::Hash,
        key_size: size::<u32>(),
        value_size: size::<VipValue>(),
        max_entries: MAX_VIPS,
    },
    MapLayout {
        name: BACKENDS_MAP,
        kind: MapKind::Array,
        key_size: size::<u32>(),
        value_size: size::<BackendValue>(),
        max_entries: MAX_BACKENDS,
    },
    MapLayout {
        name: MAGLEV_MAP,
        kind: MapKind::Array,
        key_size: size::<u32>(),
        value_size: size::<u32>(),
        max_entries: MAX_L4_SERVICES * MAGLEV_TABLE_SIZE,
    },
    MapLayout {
        name: CONNTRACK_MAP,
        kind: MapKind::LruHash,
        key_size: size::<FlowKey>(),
        value_size: size::<FlowValue>(),
        max_entries: MAX_FLOWS,
    },
    MapLayout {
        name: SERVICE_STATS_MAP,
        kind: MapKind::PerCpuArray,
        key_size: size::<u32>(),
        value_size: size::<Stats>(),
        max_entries: MAX_SERVICES,
    },
    MapLayout {
        name: BACKEND_STATS_MAP,
        kind: MapKind::PerCpuArray,
        key_size: size::<u32>(),
        value_size: size::<Stats>(),
        max_entries: MAX_BACKENDS,
    },
    MapLayout {
        name: IFACE_MAP,
        kind: MapKind::Array,
        key_size: size::<u32>(),
        value_size: size::<IfaceValue>(),
        max_entries: 1,
    },
    MapLayout {
        name: SERVICES6_MAP,
        kind: MapKind::Hash,
        key_size: size::<ServiceKey6>(),
        value_size: size::<ServiceValue>(),
        max_entries: MAX_SERVICES,
    },
    MapLayout {
        name: VIPS6_MAP,
        kind: MapKind::Hash,
        key_size: size::<[u8; 16]>(),
        value_size: size::<VipValue>(),
        max_entries: MAX_VIPS,
    },
    MapLayout {
        name: BACKENDS6_MAP,
        kind: MapKind::Array,
        key_size: size::<u32>(),
        value_size: size::<Backend6Value>(),
        max_entries: MAX_BACKENDS,
    },
    MapLayout {
        name: CONNTRACK6_MAP,
        kind: MapKind::LruHash,
        key_size: size::<FlowKey6>(),
        value_size: size::<FlowValue6>(),
        max_entries: MAX_FLOWS,
    },
    MapLayout {
        name: TRACE_MAP,
        kind: MapKind::Array,
        key_size: size::<u32>(),
        value_size: size::<TraceConfig>(),
        max_entries: 1,
    },
];

/// The names of [`MAP_LAYOUTS`], so userspace can check, reuse or remove the pins together.
pub const ALL_MAPS: [&str; MAP_LAYOUTS.len()] = {
    let mut names = [""; MAP_LAYOUTS.len()];
    let mut i = 0;
    while i < MAP_LAYOUTS.len() {
        names[i] = MAP_LAYOUTS[i].name;
        i += 1;
    }
    names
};

/// Most virtual IPs in VIPS.
pub const MAX_VIPS: u32 = 256;
/// Most L4 services with a Maglev table (each table takes 256 KiB of kernel memory).
pub const MAX_L4_SERVICES: u32 = 32;
/// Most backends over all services (ids index BACKENDS and BACKEND_STATS).
pub const MAX_BACKENDS: u32 = 4096;
/// Entries of the connection table; the least recently used flow is evicted when it is full
/// (and then placed again by Maglev, which gives the same backend unless the set changed).
pub const MAX_FLOWS: u32 = 262_144;
/// A Maglev table slot with no backend (the service has none up).
pub const NO_BACKEND: u32 = u32::MAX;

/// [`BackendValue::flags`]: the backend takes traffic (healthy and configured).
pub const BACKEND_UP: u32 = 1;

/// What VIPS holds per virtual IP (nothing yet but a marker; room for flags).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct VipValue {
    pub flags: u32,
}

/// A backend as the XDP program needs it to forward by direct server return.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct BackendValue {
    /// IPv4 address in network byte order.
    pub addr: u32,
    /// The backend's MAC on the shared segment; all zero while unknown.
    pub mac: [u8; 6],
    /// Port in network byte order (informational: direct server return keeps the client's
    /// destination port).
    pub port: u16,
    /// [`BACKEND_UP`] or 0.
    pub flags: u32,
    /// Id of the service the backend belongs to.
    pub service: u32,
}

/// An IPv6 backend as the XDP program needs it to forward by direct server return (the twin
/// of [`BackendValue`]; a backend id is used in BACKENDS or in BACKENDS6, by its family).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Backend6Value {
    /// IPv6 address, its octets as on the wire; all zero for an empty slot.
    pub addr: [u8; 16],
    /// The backend's MAC on the shared segment; all zero while unknown.
    pub mac: [u8; 6],
    /// Port in network byte order (informational, as in [`BackendValue`]).
    pub port: u16,
    /// [`BACKEND_UP`] or 0.
    pub flags: u32,
    /// Id of the service the backend belongs to.
    pub service: u32,
}

/// An L4 flow as the client sent it: client address and port, virtual IP and port, protocol.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct FlowKey {
    /// Client address, network byte order.
    pub src: u32,
    /// Virtual IP, network byte order.
    pub dst: u32,
    /// Client port, network byte order.
    pub sport: u16,
    /// Service port, network byte order.
    pub dport: u16,
    pub proto: u8,
    pub _pad: [u8; 3],
}

impl FlowKey {
    /// [`flow_hash`] of this key: the value the XDP program looks the Maglev table up with.
    #[inline(always)]
    pub const fn hash(&self) -> u64 {
        flow_hash(
            self.src.to_ne_bytes(),
            u16::from_be(self.sport),
            self.dst.to_ne_bytes(),
            u16::from_be(self.dport),
            self.proto,
        )
    }
}

/// Where a flow goes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct FlowValue {
    /// Backend id (index into BACKENDS).
    pub backend: u32,
    /// The backend's address when the flow was recorded: an id reused for another backend
    /// (after a config change) then does not carry the flow to the wrong host.
    pub backend_addr: u32,
}

/// An IPv6 L4 flow as the client sent it: the 128-bit twin of [`FlowKey`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct FlowKey6 {
    /// Client address, its octets as on the wire.
    pub src: [u8; 16],
    /// Virtual IP, its octets as on the wire.
    pub dst: [u8; 16],
    /// Client port, network byte order.
    pub sport: u16,
    /// Service port, network byte order.
    pub dport: u16,
    pub proto: u8,
    pub _pad: [u8; 3],
}

impl FlowKey6 {
    /// [`flow_hash6`] of this key: the value the XDP program looks the Maglev table up with.
    #[inline(always)]
    pub const fn hash(&self) -> u64 {
        flow_hash6(
            self.src,
            u16::from_be(self.sport),
            self.dst,
            u16::from_be(self.dport),
            self.proto,
        )
    }
}

/// Where an IPv6 flow goes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct FlowValue6 {
    /// Backend id (index into BACKENDS6).
    pub backend: u32,
    /// The backend's address when the flow was recorded (see [`FlowValue::backend_addr`]).
    pub backend_addr: [u8; 16],
}

/// Packets and bytes (whole frames), per CPU.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Stats {
    pub packets: u64,
    pub bytes: u64,
}

/// What the program needs to know of the interface it runs on.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct IfaceValue {
    /// Source MAC of forwarded frames; all zero means "the frame's own destination MAC".
    pub mac: [u8; 6],
    pub _pad: [u8; 2],
}

/// Size of every Maglev lookup table (entries per L4 service). A prime, as Maglev requires
/// (every backend's permutation then visits every slot); 65537 keeps each backend's share
/// within a fraction of a percent of its weight for up to a few hundred backends.
pub const MAGLEV_TABLE_SIZE: u32 = 65537;

/// Hashes bytes to 64 bits, the same on every node, build and architecture (no random seed):
/// Maglev permutations and L7 session keys depend on it, and two nodes must agree.
///
/// FNV-1a over the bytes (simple enough for the eBPF program too), then the 64-bit finaliser of
/// MurmurHash3 so that keys differing in one byte spread over the whole range.
pub const fn hash_bytes(bytes: &[u8], seed: u64) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ seed;
    let mut i = 0;
    while i < bytes.len() {
        h ^= bytes[i] as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
        i += 1;
    }
    mix64(h)
}

/// MurmurHash3's 64-bit finaliser: every input bit affects every output bit.
#[inline(always)]
pub const fn mix64(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^= x >> 33;
    x
}

/// The hash of an L4 flow that chooses its backend from a Maglev table. The XDP program, the
/// userspace relay and the tests all call this, so a flow gets the same backend whichever of
/// them handles it and on whichever node. Addresses are the four octets in written order
/// (198.18.0.10 -> [198, 18, 0, 10]), ports in host order: the client's side first, then the
/// service's (the VIP and its port).
#[inline(always)]
pub const fn flow_hash(
    client: [u8; 4],
    client_port: u16,
    vip: [u8; 4],
    port: u16,
    proto: u8,
) -> u64 {
    let addrs = ((u32::from_be_bytes(client) as u64) << 32) | u32::from_be_bytes(vip) as u64;
    let ports = ((client_port as u64) << 32) | ((port as u64) << 16) | proto as u64;
    mix64(mix64(addrs ^ FLOW_HASH_SEED) ^ ports)
}

/// The hash of an IPv6 L4 flow: [`flow_hash`]'s twin for 128-bit addresses (octets in written
/// order, ports in host order, the client's side first). Every half of each address goes
/// through the mixer in turn, so a one-bit change anywhere spreads over the whole result.
#[inline(always)]
pub const fn flow_hash6(
    client: [u8; 16],
    client_port: u16,
    vip: [u8; 16],
    port: u16,
    proto: u8,
) -> u64 {
    let ports = ((client_port as u64) << 32) | ((port as u64) << 16) | proto as u64;
    let mut h = mix64(be_u64(&client, 0) ^ FLOW_HASH6_SEED);
    h = mix64(h ^ be_u64(&client, 8));
    h = mix64(h ^ be_u64(&vip, 0));
    h = mix64(h ^ be_u64(&vip, 8));
    mix64(h ^ ports)
}

/// The big-endian u64 at `at` in an address.
#[inline(always)]
const fn be_u64(bytes: &[u8; 16], at: usize) -> u64 {
    u64::from_be_bytes([
        bytes[at],
        bytes[at + 1],
        bytes[at + 2],
        bytes[at + 3],
        bytes[at + 4],
        bytes[at + 5],
        bytes[at + 6],
        bytes[at + 7],
    ])
}

/// Fixed seed of [`flow_hash6`]: "TANDEM" 0006.
const FLOW_HASH6_SEED: u64 = 0x5441_4e44_454d_0006;

/// Fixed seed of [`flow_hash`]; changing it moves every flow that has no connection entry.
const FLOW_HASH_SEED: u64 = 0x5441_4e44_454d_0001; // "TANDEM" 0001

#[cfg(feature = "user")]
mod pod {
    // SAFETY: these types are #[repr(C)], Copy, contain only integers and have no padding
    // (checked by the layout tests below), so every bit pattern is a valid value.
    unsafe impl aya::Pod for super::ServiceKey {}
    unsafe impl aya::Pod for super::ServiceValue {}
    unsafe impl aya::Pod for super::VipValue {}
    unsafe impl aya::Pod for super::BackendValue {}
    unsafe impl aya::Pod for super::FlowKey {}
    unsafe impl aya::Pod for super::FlowValue {}
    unsafe impl aya::Pod for super::Stats {}
    unsafe impl aya::Pod for super::IfaceValue {}
    unsafe impl aya::Pod for super::ServiceKey6 {}
    unsafe impl aya::Pod for super::Backend6Value {}
    unsafe impl aya::Pod for super::FlowKey6 {}
    unsafe impl aya::Pod for super::FlowValue6 {}
    unsafe impl aya::Pod for super::TraceConfig {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::{align_of, size_of};

    #[test]
    fn map_types_have_the_layout_the_kernel_program_expects() {
        assert_eq!(size_of::<ServiceKey>(), 8);
        assert_eq!(align_of::<ServiceKey>(), 4);
        assert_eq!(size_of::<ServiceValue>(), 12);
        assert_eq!(size_of::<VipValue>(), 4);
        assert_eq!(size_of::<BackendValue>(), 20);
        assert_eq!(size_of::<FlowKey>(), 16);
        assert_eq!(size_of::<FlowValue>(), 8);
        assert_eq!(size_of::<Stats>(), 16);
        assert_eq!(size_of::<IfaceValue>(), 8);
        assert_eq!(size_of::<ServiceKey6>(), 20);
        assert_eq!(size_of::<Backend6Value>(), 32);
        assert_eq!(size_of::<FlowKey6>(), 40);
        assert_eq!(size_of::<FlowValue6>(), 20);
        assert_eq!(size_of::<TraceConfig>(), 40);
    }

    #[test]
    fn service_key6_stores_address_and_port_in_wire_order() {
        let vip = [0x20, 0x01, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x99];
        let key = ServiceKey6::new(vip, 80, IPPROTO_UDP);
        // SAFETY: ServiceKey6 is repr(C) without padding; viewing it as bytes is sound.
        let bytes: [u8; 20] = unsafe { core::mem::transmute(key) };
        assert_eq!(&bytes[0..16], &vip);
        assert_eq!(&bytes[16..18], &[0, 80]);
        assert_eq!(bytes[18], 17);
        assert_eq!(key.port_host(), 80);
    }

    const CLIENT6: [u8; 16] = [0x20, 0x01, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10];
    const VIP6: [u8; 16] = [0x20, 0x01, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x99];

    #[test]
    fn flow_hash6_is_a_fixed_value_and_depends_on_every_field() {
        // Pinned, as flow_hash's: every node and version must place a flow alike.
        let base = flow_hash6(CLIENT6, 40000, VIP6, 80, IPPROTO_TCP);
        assert_eq!(base, 0x4581_755b_a108_66ac);
        for bit in 0..128 {
            let mut client = CLIENT6;
            client[bit / 8] ^= 1 << (bit % 8);
            assert_ne!(base, flow_hash6(client, 40000, VIP6, 80, IPPROTO_TCP));
            let mut vip = VIP6;
            vip[bit / 8] ^= 1 << (bit % 8);
            assert_ne!(base, flow_hash6(CLIENT6, 40000, vip, 80, IPPROTO_TCP));
        }
        assert_ne!(base, flow_hash6(CLIENT6, 40001, VIP6, 80, IPPROTO_TCP));
        assert_ne!(base, flow_hash6(CLIENT6, 40000, VIP6, 81, IPPROTO_TCP));
        assert_ne!(base, flow_hash6(CLIENT6, 40000, VIP6, 80, IPPROTO_UDP));
        // Client and VIP swapped is another flow.
        assert_ne!(base, flow_hash6(VIP6, 40000, CLIENT6, 80, IPPROTO_TCP));
    }

    #[test]
    fn flow_key6_hash_is_the_flow_hash6_of_its_host_order_fields() {
        let key = FlowKey6 {
            src: CLIENT6,
            dst: VIP6,
            sport: 40000u16.to_be(),
            dport: 80u16.to_be(),
            proto: IPPROTO_TCP,
            _pad: [0; 3],
        };
        assert_eq!(
            key.hash(),
            flow_hash6(CLIENT6, 40000, VIP6, 80, IPPROTO_TCP)
        );
    }

    #[test]
    fn every_map_has_a_unique_name() {
        for (i, name) in ALL_MAPS.iter().enumerate() {
            assert!(!ALL_MAPS[i + 1..].contains(name), "{name} twice");
        }
    }

    #[test]
    fn service_key_stores_address_and_port_in_wire_order() {
        let key = ServiceKey::new([198, 18, 0, 99], 80, IPPROTO_TCP);
        // SAFETY: ServiceKey is repr(C) without padding; viewing it as bytes is sound.
        let bytes: [u8; 8] = unsafe { core::mem::transmute(key) };
        assert_eq!(&bytes[0..4], &[198, 18, 0, 99]);
        assert_eq!(&bytes[4..6], &[0, 80]);
        assert_eq!(bytes[6], 6);
        assert_eq!(key.vip_octets(), [198, 18, 0, 99]);
        assert_eq!(key.port_host(), 80);
    }

    #[test]
    fn hashes_are_fixed_values_so_every_node_and_version_agrees() {
        // Pinned values: a change here changes every node's backend choices; bump them only
        // together with a note in the release notes.
        assert_eq!(hash_bytes(b"", 0), mix64(0xcbf2_9ce4_8422_2325));
        assert_eq!(hash_bytes(b"198.18.0.102:80", 0), 0xb9fb_4ac3_4c17_7869);
        assert_eq!(
            flow_hash([198, 18, 0, 10], 40000, [198, 18, 0, 99], 80, IPPROTO_TCP),
            0x7ef4_159a_1d52_8feb
        );
    }

    #[test]
    fn flow_hash_depends_on_every_field() {
        let base = flow_hash([198, 18, 0, 10], 40000, [198, 18, 0, 99], 80, IPPROTO_TCP);
        assert_ne!(
            base,
            flow_hash([198, 18, 0, 11], 40000, [198, 18, 0, 99], 80, 6)
        );
        assert_ne!(
            base,
            flow_hash([198, 18, 0, 10], 40001, [198, 18, 0, 99], 80, 6)
        );
        assert_ne!(
            base,
            flow_hash([198, 18, 0, 10], 40000, [198, 18, 0, 98], 80, 6)
        );
        assert_ne!(
            base,
            flow_hash([198, 18, 0, 10], 40000, [198, 18, 0, 99], 81, 6)
        );
        assert_ne!(
            base,
            flow_hash([198, 18, 0, 10], 40000, [198, 18, 0, 99], 80, 17)
        );
    }

    #[test]
    fn flow_key_hash_is_the_flow_hash_of_its_host_order_fields() {
        let key = FlowKey {
            src: u32::from_ne_bytes([198, 18, 0, 10]),
            dst: u32::from_ne_bytes([198, 18, 0, 99]),
            sport: 40000u16.to_be(),
            dport: 80u16.to_be(),
            proto: IPPROTO_TCP,
            _pad: [0; 3],
        };
        assert_eq!(
            key.hash(),
            flow_hash([198, 18, 0, 10], 40000, [198, 18, 0, 99], 80, IPPROTO_TCP)
        );
    }

    #[test]
    fn counters_are_indexed_in_order_and_named_uniquely() {
        for (i, c) in Counter::ALL.iter().enumerate() {
            assert_eq!(*c as usize, i);
            for other in &Counter::ALL[i + 1..] {
                assert_ne!(c.name(), other.name());
            }
        }
    }

    #[test]
    fn service_mode_round_trips_through_u32_and_rejects_unknown_values() {
        assert_eq!(
            ServiceMode::from_u32(ServiceMode::Proxy as u32),
            Some(ServiceMode::Proxy)
        );
        assert_eq!(
            ServiceMode::from_u32(ServiceMode::Forward as u32),
            Some(ServiceMode::Forward)
        );
        assert_eq!(ServiceMode::from_u32(7), None);
    }
}
