//! Tandem's XDP program: the kernel half of the data plane.
//!
//! It parses each frame (Ethernet with at most one 802.1Q/802.1ad tag, IPv4 or IPv6, TCP, UDP,
//! ICMP, ICMPv6) with a bounds check before every read and decides, the same way for both
//! families (each has its own SERVICES, VIPS, BACKENDS and CONNTRACK maps; Maglev tables,
//! backend ids and statistics are shared):
//! - TCP/UDP for an L7 service (SERVICES, mode Proxy): XDP_PASS, up to the proxy;
//! - TCP/UDP for an L4 service (mode Forward): the flow's backend from the connection table
//!   (CONNTRACK), or else from the service's Maglev table by `lb_common::flow_hash` of the
//!   5-tuple (and the flow is recorded); the frame's MACs are rewritten towards the backend and
//!   it leaves by the interface it came in on (XDP_TX): direct server return, the backend holds
//!   the virtual IP on its loopback and answers the client itself;
//! - TCP/UDP for a virtual IP (VIPS) on a port with no service: XDP_DROP;
//! - ICMP "fragmentation needed" and ICMPv6 "packet too big" about an L4 flow: XDP_TX to that
//!   flow's backend (so path MTU discovery works for the backend that sends the large
//!   segments); other ICMP and ICMPv6 (pings, neighbour discovery): XDP_PASS;
//! - IPv4 with options, IPv6 with any extension header (the program walks none: TCP or UDP
//!   must follow the fixed header, as in Katran), fragments, anything not for a virtual IP:
//!   XDP_PASS.
//!
//! Every frame is counted once by what it is and once by verdict, with a reason counter where
//! there is one (COUNTERS), and forwarded frames per service and per backend (packets, bytes).
//!
//! `tandem trace` sees the decision for each TCP/UDP packet for a virtual IP: while entry 0 of
//! TRACE is enabled and the packet matches its VIP and port filter, the program logs one
//! record (aya-log, target `lb_common::TRACE_TARGET`) with the flow, verdict, reason, backend
//! and connection-table outcome. The check comes after the decision and only for packets for
//! a virtual IP; while nobody traces it costs those packets one array lookup (which the
//! kernel inlines) and two compares, TCP/UDP for other addresses one compare, and other
//! frames nothing.
//!
//! The program holds no policy: which services and backends exist, whether the node is master
//! (the maps are empty when it is not) and which backends are up is decided by userspace
//! (lb-userspace's dataplane module). Map names and layouts come from lb-common, the only place
//! both sides agree on them.
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::xdp_action,
    helpers::{bpf_ktime_get_ns, bpf_xdp_get_buff_len},
    macros::{map, xdp},
    maps::{Array, HashMap, LruHashMap, PerCpuArray},
    programs::XdpContext,
};
use aya_log_ebpf::info;
use lb_common::{
    ethertype, Backend6Value, BackendValue, Counter, FlowKey, FlowKey6, FlowValue, FlowValue6,
    IfaceValue, ServiceKey, ServiceKey6, ServiceMode, ServiceValue, Stats, TraceConfig, VipValue,
    BACKEND_UP, COUNTER_COUNT, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP,
    MAGLEV_TABLE_SIZE, MAX_BACKENDS, MAX_FLOWS, MAX_L4_SERVICES, MAX_SERVICES, MAX_VIPS,
    NO_BACKEND, TRACE_ANY_VIP, TRACE_NONE, TRACE_TARGET, TRACE_VIP4, TRACE_VIP6,
};

/// Services this node answers for; filled by userspace while the node is master.
#[map(name = "SERVICES")]
static SERVICES: HashMap<ServiceKey, ServiceValue> = HashMap::pinned(MAX_SERVICES, 0);

/// One u64 per [`Counter`] per CPU; userspace sums over CPUs.
#[map(name = "COUNTERS")]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::pinned(COUNTER_COUNT, 0);

/// The virtual IPs (wire order) while the node is master.
#[map(name = "VIPS")]
static VIPS: HashMap<u32, VipValue> = HashMap::pinned(MAX_VIPS, 0);

/// Backends by id.
#[map(name = "BACKENDS")]
static BACKENDS: Array<BackendValue> = Array::pinned(MAX_BACKENDS, 0);

/// The Maglev tables, one per L4 service (ServiceValue::ring), each MAGLEV_TABLE_SIZE backend ids.
#[map(name = "MAGLEV")]
static MAGLEV: Array<u32> = Array::pinned(MAX_L4_SERVICES * MAGLEV_TABLE_SIZE, 0);

/// L4 flows and their backend; least recently used first out.
#[map(name = "CONNTRACK")]
static CONNTRACK: LruHashMap<FlowKey, FlowValue> = LruHashMap::pinned(MAX_FLOWS, 0);

/// Forwarded packets and bytes per service id, per CPU.
#[map(name = "SERVICE_STATS")]
static SERVICE_STATS: PerCpuArray<Stats> = PerCpuArray::pinned(MAX_SERVICES, 0);

/// Forwarded packets and bytes per backend id, per CPU.
#[map(name = "BACKEND_STATS")]
static BACKEND_STATS: PerCpuArray<Stats> = PerCpuArray::pinned(MAX_BACKENDS, 0);

/// Entry 0: the interface's MAC (source of forwarded frames).
#[map(name = "IFACE")]
static IFACE: Array<IfaceValue> = Array::pinned(1, 0);

/// IPv6 services this node answers for; filled by userspace while the node is master.
#[map(name = "SERVICES6")]
static SERVICES6: HashMap<ServiceKey6, ServiceValue> = HashMap::pinned(MAX_SERVICES, 0);

/// The IPv6 virtual IPs while the node is master.
#[map(name = "VIPS6")]
static VIPS6: HashMap<[u8; 16], VipValue> = HashMap::pinned(MAX_VIPS, 0);

/// IPv6 backends by id (ids shared with BACKENDS: each is used in one of the two).
#[map(name = "BACKENDS6")]
static BACKENDS6: Array<Backend6Value> = Array::pinned(MAX_BACKENDS, 0);

/// IPv6 L4 flows and their backend; least recently used first out.
#[map(name = "CONNTRACK6")]
static CONNTRACK6: LruHashMap<FlowKey6, FlowValue6> = LruHashMap::pinned(MAX_FLOWS, 0);

/// Entry 0: whether `tandem trace` runs, and for which virtual IP and port.
#[map(name = "TRACE")]
static TRACE: Array<TraceConfig> = Array::pinned(1, 0);

const ETH_HLEN: usize = 14;
const VLAN_HLEN: usize = 4;
const IPV4_MIN_HLEN: usize = 20;
const TCP_MIN_HLEN: usize = 20;
const UDP_HLEN: usize = 8;
const ICMP_DEST_UNREACH: u8 = 3;
const ICMP_FRAG_NEEDED: u8 = 4;
/// ICMP header, then the offending datagram's IPv4 header (without options) and the first
/// 8 bytes of its TCP/UDP header (both ports).
const ICMP_QUOTE_LEN: usize = 8 + IPV4_MIN_HLEN + 8;
/// Fragment offset bits of the IPv4 flags/fragment field: non-zero means "not the first
/// fragment", which carries no L4 header.
const IP_FRAG_OFFSET_MASK: u16 = 0x1fff;
/// More-fragments flag: set on every fragment but the last.
const IP_MORE_FRAGMENTS: u16 = 0x2000;
const IPV6_HLEN: usize = 40;
/// ICMPv6 Packet Too Big (RFC 4443 §3.2).
const ICMPV6_PACKET_TOO_BIG: u8 = 2;
/// ICMPv6 header with the MTU, then the offending packet's fixed IPv6 header and the first
/// 8 bytes of its TCP/UDP header (both ports).
const ICMPV6_QUOTE_LEN: usize = 8 + IPV6_HLEN + 8;
/// IPv6 Fragment header.
const IPV6_FRAGMENT: u8 = 44;

#[xdp]
pub fn tandem_xdp(ctx: XdpContext) -> u32 {
    let action = match parse(&ctx) {
        Ok(action) => action,
        Err(Malformed) => {
            count(Counter::Malformed);
            xdp_action::XDP_PASS
        }
    };
    count(match action {
        xdp_action::XDP_TX => Counter::Tx,
        xdp_action::XDP_DROP => Counter::Drop,
        _ => Counter::Pass,
    });
    action
}

/// Why parsing stopped short: the frame is shorter than a header it announces, or a header
/// field is impossible (IHL < 5, TCP data offset < 5, total length shorter than the header).
struct Malformed;

#[inline(always)]
fn parse(ctx: &XdpContext) -> Result<u32, Malformed> {
    let mut next_header = read_u16_be(ctx, 12)?;
    let mut l3 = ETH_HLEN;
    if next_header == ethertype::VLAN || next_header == ethertype::QINQ {
        next_header = read_u16_be(ctx, ETH_HLEN + 2)?;
        l3 += VLAN_HLEN;
        if next_header == ethertype::VLAN || next_header == ethertype::QINQ {
            // Stacked tags are not parsed: leave the frame to the kernel, which knows them.
            count(Counter::NonIp);
            return Ok(xdp_action::XDP_PASS);
        }
    }
    match next_header {
        ethertype::IPV4 => parse_ipv4(ctx, l3),
        ethertype::IPV6 => parse_ipv6(ctx, l3),
        _ => {
            count(Counter::NonIp);
            Ok(xdp_action::XDP_PASS)
        }
    }
}

#[inline(always)]
fn parse_ipv4(ctx: &XdpContext, l3: usize) -> Result<u32, Malformed> {
    // The fixed 20 bytes are read behind one bounds check. Lengths announced by the packet are
    // then compared with the frame's length as plain numbers (bpf_xdp_get_buff_len), never as
    // `data + variable > data_end`: the verifier cannot use a pointer compare with a variable
    // offset, and LLVM would drop the constant checks it implies, leaving reads unproven.
    let header = read_bytes::<IPV4_MIN_HLEN>(ctx, l3)?;
    let version = header[0] >> 4;
    let header_len = ((header[0] & 0x0f) as usize) * 4;
    if version != 4 || header_len < IPV4_MIN_HLEN {
        return Err(Malformed);
    }
    let total_len = u16::from_be_bytes([header[2], header[3]]) as usize;
    let frame_len = frame_len(ctx);
    if total_len < header_len || l3 + total_len > frame_len {
        return Err(Malformed);
    }
    let frag = u16::from_be_bytes([header[6], header[7]]);
    let protocol = header[9];
    let saddr = u32::from_ne_bytes([header[12], header[13], header[14], header[15]]);
    let daddr = u32::from_ne_bytes([header[16], header[17], header[18], header[19]]);
    if frag & IP_FRAG_OFFSET_MASK != 0 {
        count(Counter::Ipv4Other);
        return Ok(pass_if_vip(daddr, Counter::PassFragment));
    }
    let l4 = l3 + header_len;
    let l4_len = total_len - header_len;
    let (counter, ports) = match protocol {
        IPPROTO_TCP => {
            let tcp = read_bytes::<TCP_MIN_HLEN>(ctx, l4)?;
            let data_offset = ((tcp[12] >> 4) as usize) * 4;
            if data_offset < TCP_MIN_HLEN || data_offset > l4_len {
                return Err(Malformed);
            }
            (Counter::Ipv4Tcp, [tcp[0], tcp[1], tcp[2], tcp[3]])
        }
        IPPROTO_UDP => {
            if l4_len < UDP_HLEN {
                return Err(Malformed);
            }
            let udp = read_bytes::<UDP_HLEN>(ctx, l4)?;
            (Counter::Ipv4Udp, [udp[0], udp[1], udp[2], udp[3]])
        }
        IPPROTO_ICMP => {
            count(Counter::Ipv4Other);
            if frag & IP_MORE_FRAGMENTS != 0 || header_len != IPV4_MIN_HLEN {
                return Ok(pass_if_vip(daddr, Counter::PassIcmp));
            }
            return Ok(icmp(ctx, l3, daddr, frame_len));
        }
        _ => {
            count(Counter::Ipv4Other);
            return Ok(xdp_action::XDP_PASS);
        }
    };
    count(counter);
    if frag & IP_MORE_FRAGMENTS != 0 {
        // A first fragment has ports, but the fragments after it do not: the kernel reassembles.
        return Ok(pass_if_vip(daddr, Counter::PassFragment));
    }
    if header_len != IPV4_MIN_HLEN {
        return Ok(pass_if_vip(daddr, Counter::PassIpOptions));
    }
    let key = FlowKey {
        src: saddr,
        dst: daddr,
        sport: u16::from_ne_bytes([ports[0], ports[1]]),
        dport: u16::from_ne_bytes([ports[2], ports[3]]),
        proto: protocol,
        _pad: [0; 3],
    };
    let decision = decide(ctx, &key, frame_len);
    if decision.reason != TRACE_NONE && traced4(daddr, key.dport) {
        log_decision4(ctx, &key, &decision);
    }
    Ok(decision.action)
}

/// What the program did with a TCP/UDP packet, and why: what `tandem trace` shows.
#[derive(Clone, Copy)]
struct Decision {
    action: u32,
    /// The [`Counter`] that says why, or [`TRACE_NONE`] for a packet that is not for a
    /// virtual IP (not traced).
    reason: u32,
    /// The backend id the packet went (or would have gone) to, or [`TRACE_NONE`].
    backend: u32,
    /// The connection-table outcome ([`Counter::FlowHit`], `FlowNew`, `FlowMoved`) or
    /// [`TRACE_NONE`].
    flow: u32,
}

impl Decision {
    #[inline(always)]
    fn of(action: u32, reason: Counter) -> Decision {
        Decision {
            action,
            reason: reason as u32,
            backend: TRACE_NONE,
            flow: TRACE_NONE,
        }
    }

    /// XDP_PASS for a packet that is not for one of this node's virtual IPs.
    #[inline(always)]
    fn not_ours() -> Decision {
        Decision {
            action: xdp_action::XDP_PASS,
            reason: TRACE_NONE,
            backend: TRACE_NONE,
            flow: TRACE_NONE,
        }
    }

    /// An L4 service's packet: forwarded to `backend` or dropped with `reason`.
    #[inline(always)]
    fn forwarded(action: u32, reason: Counter, backend: u32, flow: u32) -> Decision {
        Decision {
            action,
            // A forwarded packet's reason is how its backend was found.
            reason: if action == xdp_action::XDP_TX {
                flow
            } else {
                reason as u32
            },
            backend: if backend < MAX_BACKENDS {
                backend
            } else {
                TRACE_NONE
            },
            flow,
        }
    }
}

/// The verdict for an IPv4 TCP/UDP packet of flow `key`: its service's, or a drop for a
/// virtual IP's port without one, or a pass for anything else.
#[inline(always)]
fn decide(ctx: &XdpContext, key: &FlowKey, frame_len: usize) -> Decision {
    let service_key = ServiceKey {
        vip: key.dst,
        port: key.dport,
        proto: key.proto,
        _pad: 0,
    };
    let Some(service) = SERVICES.get_ptr(service_key) else {
        if VIPS.get_ptr(key.dst).is_some() {
            count(Counter::DropNoService);
            return Decision::of(xdp_action::XDP_DROP, Counter::DropNoService);
        }
        return Decision::not_ours();
    };
    count(Counter::ServiceHit);
    // SAFETY: a pointer from a map lookup, valid for this program run; the value is plain
    // data, copied out at once.
    let service = unsafe { *service };
    if service.mode != ServiceMode::Forward as u32 {
        count(Counter::PassL7);
        return Decision::of(xdp_action::XDP_PASS, Counter::PassL7);
    }
    let mut flow = TRACE_NONE;
    let backend = choose_backend(&service, key, true, &mut flow);
    let (action, reason) = forward(ctx, &service, backend, frame_len);
    Decision::forwarded(action, reason, backend, flow)
}

/// [`decide`] for an IPv6 packet.
#[inline(always)]
fn decide6(ctx: &XdpContext, key: &FlowKey6, frame_len: usize) -> Decision {
    let service_key = ServiceKey6 {
        vip: key.dst,
        port: key.dport,
        proto: key.proto,
        _pad: 0,
    };
    let Some(service) = SERVICES6.get_ptr(&service_key) else {
        if VIPS6.get_ptr(&key.dst).is_some() {
            count(Counter::DropNoService);
            return Decision::of(xdp_action::XDP_DROP, Counter::DropNoService);
        }
        return Decision::not_ours();
    };
    count(Counter::ServiceHit);
    // SAFETY: as in decide.
    let service = unsafe { *service };
    if service.mode != ServiceMode::Forward as u32 {
        count(Counter::PassL7);
        return Decision::of(xdp_action::XDP_PASS, Counter::PassL7);
    }
    let mut flow = TRACE_NONE;
    let backend = choose_backend6(&service, key, true, &mut flow);
    let (action, reason) = forward6(ctx, &service, backend, frame_len);
    Decision::forwarded(action, reason, backend, flow)
}

/// `a.b.c.d` (wire order) as the IPv6 address `::ffff:a.b.c.d`, the form decision records
/// use for both families.
#[inline(always)]
fn ipv4_mapped(addr: u32) -> [u8; 16] {
    let a = addr.to_ne_bytes();
    [
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, a[0], a[1], a[2], a[3],
    ]
}

/// Whether `tandem trace` wants packets for IPv4 virtual IP `vip` on `port` (both in wire
/// order): the one TRACE lookup, made after the decision and for virtual IPs only.
#[inline(always)]
fn traced4(vip: u32, port: u16) -> bool {
    let Some(config) = TRACE.get(0) else {
        return false;
    };
    if config.enabled == 0 {
        return false;
    }
    let v = config.vip;
    let vip_matches = config.family == TRACE_ANY_VIP
        || (config.family == TRACE_VIP4 && u32::from_ne_bytes([v[0], v[1], v[2], v[3]]) == vip);
    vip_matches && (config.port == 0 || config.port == port)
}

/// [`traced4`] for an IPv6 virtual IP.
#[inline(always)]
fn traced6(vip: &[u8; 16], port: u16) -> bool {
    let Some(config) = TRACE.get(0) else {
        return false;
    };
    if config.enabled == 0 {
        return false;
    }
    let vip_matches =
        config.family == TRACE_ANY_VIP || (config.family == TRACE_VIP6 && config.vip == *vip);
    vip_matches && (config.port == 0 || config.port == port)
}

/// Logs an IPv4 packet's decision for `tandem trace` (the record's format is described at
/// `lb_common::TraceConfig`). Not inlined: the logging code stays out of the packet path.
#[inline(never)]
fn log_decision4(ctx: &XdpContext, key: &FlowKey, decision: &Decision) {
    let src = ipv4_mapped(key.src);
    let dst = ipv4_mapped(key.dst);
    // SAFETY: a helper without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    info!(
        ctx,
        target: TRACE_TARGET,
        "4 {:i} {} {:i} {} {} {} {} {} {} {}",
        src,
        u16::from_be(key.sport),
        dst,
        u16::from_be(key.dport),
        key.proto,
        decision.action,
        decision.reason,
        decision.backend,
        decision.flow,
        now
    );
}

/// [`log_decision4`] for an IPv6 packet.
#[inline(never)]
fn log_decision6(ctx: &XdpContext, key: &FlowKey6, decision: &Decision) {
    // SAFETY: a helper without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    info!(
        ctx,
        target: TRACE_TARGET,
        "6 {:i} {} {:i} {} {} {} {} {} {} {}",
        key.src,
        u16::from_be(key.sport),
        key.dst,
        u16::from_be(key.dport),
        key.proto,
        decision.action,
        decision.reason,
        decision.backend,
        decision.flow,
        now
    );
}

/// Whether IPv6 next header `next` is an extension header (RFC 8200 §4, and the IANA list of
/// IPv6 extension header types) other than Fragment, which has its own counter.
#[inline(always)]
fn is_ipv6_extension(next: u8) -> bool {
    // Hop-by-hop, routing, ESP, AH, destination options, mobility, HIP, shim6, experiments.
    matches!(next, 0 | 43 | 50 | 51 | 60 | 135 | 139 | 140 | 253 | 254)
}

#[inline(always)]
fn parse_ipv6(ctx: &XdpContext, l3: usize) -> Result<u32, Malformed> {
    // As for IPv4: the fixed header behind one bounds check, lengths compared as numbers.
    let header = read_bytes::<IPV6_HLEN>(ctx, l3)?;
    if header[0] >> 4 != 6 {
        return Err(Malformed);
    }
    let payload_len = u16::from_be_bytes([header[4], header[5]]) as usize;
    let frame_len = frame_len(ctx);
    if l3 + IPV6_HLEN + payload_len > frame_len {
        return Err(Malformed);
    }
    let next = header[6];
    let mut saddr = [0u8; 16];
    let mut daddr = [0u8; 16];
    saddr.copy_from_slice(&header[8..24]);
    daddr.copy_from_slice(&header[24..40]);
    let l4 = l3 + IPV6_HLEN;
    let (counter, ports) = match next {
        IPPROTO_TCP => {
            let tcp = read_bytes::<TCP_MIN_HLEN>(ctx, l4)?;
            let data_offset = ((tcp[12] >> 4) as usize) * 4;
            if data_offset < TCP_MIN_HLEN || data_offset > payload_len {
                return Err(Malformed);
            }
            (Counter::Ipv6Tcp, [tcp[0], tcp[1], tcp[2], tcp[3]])
        }
        IPPROTO_UDP => {
            if payload_len < UDP_HLEN {
                return Err(Malformed);
            }
            let udp = read_bytes::<UDP_HLEN>(ctx, l4)?;
            (Counter::Ipv6Udp, [udp[0], udp[1], udp[2], udp[3]])
        }
        IPPROTO_ICMPV6 => {
            count(Counter::Ipv6Other);
            return Ok(icmp6(ctx, l4, &daddr, frame_len));
        }
        IPV6_FRAGMENT => {
            // Only the first fragment has ports, behind the Fragment header: the kernel
            // reassembles, as for IPv4.
            count(Counter::Ipv6Other);
            return Ok(pass_if_vip6(&daddr, Counter::PassFragment));
        }
        other => {
            count(Counter::Ipv6Other);
            if is_ipv6_extension(other) {
                return Ok(pass_if_vip6(&daddr, Counter::PassIpv6ExtHeader));
            }
            return Ok(xdp_action::XDP_PASS);
        }
    };
    count(counter);
    let key = FlowKey6 {
        src: saddr,
        dst: daddr,
        sport: u16::from_ne_bytes([ports[0], ports[1]]),
        dport: u16::from_ne_bytes([ports[2], ports[3]]),
        proto: next,
        _pad: [0; 3],
    };
    let decision = decide6(ctx, &key, frame_len);
    if decision.reason != TRACE_NONE && traced6(&key.dst, key.dport) {
        log_decision6(ctx, &key, &decision);
    }
    Ok(decision.action)
}

/// ICMPv6 for `daddr` (the message starts at `l4`): a Packet Too Big about an L4 flow goes to
/// that flow's backend; everything else (neighbour discovery, echo, other errors) goes to the
/// kernel, counted when it is for a virtual IP.
#[inline(always)]
fn icmp6(ctx: &XdpContext, l4: usize, daddr: &[u8; 16], frame_len: usize) -> u32 {
    let Ok(quote) = read_bytes::<ICMPV6_QUOTE_LEN>(ctx, l4) else {
        return pass_if_vip6(daddr, Counter::PassIcmp);
    };
    // The quoted packet is one the backend sent from the virtual IP to the client (direct
    // server return): its source is the service, its destination the client. TCP or UDP must
    // follow its fixed header, as for packets the program forwards.
    let inner_next = quote[8 + 6];
    if quote[0] != ICMPV6_PACKET_TOO_BIG
        || quote[1] != 0
        || quote[8] >> 4 != 6
        || (inner_next != IPPROTO_TCP && inner_next != IPPROTO_UDP)
    {
        return pass_if_vip6(daddr, Counter::PassIcmp);
    }
    let mut vip = [0u8; 16];
    let mut client = [0u8; 16];
    vip.copy_from_slice(&quote[16..32]);
    client.copy_from_slice(&quote[32..48]);
    let vport = u16::from_ne_bytes([quote[48], quote[49]]);
    let cport = u16::from_ne_bytes([quote[50], quote[51]]);
    let service_key = ServiceKey6 {
        vip,
        port: vport,
        proto: inner_next,
        _pad: 0,
    };
    let Some(service) = SERVICES6.get_ptr(&service_key) else {
        return pass_if_vip6(daddr, Counter::PassIcmp);
    };
    // SAFETY: as in parse_ipv4.
    let service = unsafe { *service };
    if service.mode != ServiceMode::Forward as u32 {
        return pass_if_vip6(daddr, Counter::PassIcmp);
    }
    let key = FlowKey6 {
        src: client,
        dst: vip,
        sport: cport,
        dport: vport,
        proto: inner_next,
        _pad: [0; 3],
    };
    // An error message must not create a flow: only look it up (or compute where it would go).
    let mut not_traced = TRACE_NONE;
    let backend = choose_backend6(&service, &key, false, &mut not_traced);
    let (action, _) = forward6(ctx, &service, backend, frame_len);
    if action == xdp_action::XDP_TX {
        count(Counter::TxIcmp6PacketTooBig);
    }
    action
}

/// ICMP for `daddr`: a "fragmentation needed" about an L4 flow goes to that flow's backend;
/// anything else for a virtual IP (pings above all) goes to the kernel.
#[inline(always)]
fn icmp(ctx: &XdpContext, l3: usize, daddr: u32, frame_len: usize) -> u32 {
    let Ok(quote) = read_bytes::<ICMP_QUOTE_LEN>(ctx, l3 + IPV4_MIN_HLEN) else {
        return pass_if_vip(daddr, Counter::PassIcmp);
    };
    // The quoted datagram is one the backend sent from the virtual IP to the client (direct
    // server return), so its source is the service and its destination the client.
    let inner_proto = quote[8 + 9];
    if quote[0] != ICMP_DEST_UNREACH
        || quote[1] != ICMP_FRAG_NEEDED
        || quote[8] != 0x45
        || (inner_proto != IPPROTO_TCP && inner_proto != IPPROTO_UDP)
    {
        return pass_if_vip(daddr, Counter::PassIcmp);
    }
    let vip = u32::from_ne_bytes([quote[20], quote[21], quote[22], quote[23]]);
    let client = u32::from_ne_bytes([quote[24], quote[25], quote[26], quote[27]]);
    let vport = u16::from_ne_bytes([quote[28], quote[29]]);
    let cport = u16::from_ne_bytes([quote[30], quote[31]]);
    let service_key = ServiceKey {
        vip,
        port: vport,
        proto: inner_proto,
        _pad: 0,
    };
    let Some(service) = SERVICES.get_ptr(service_key) else {
        return pass_if_vip(daddr, Counter::PassIcmp);
    };
    // SAFETY: as in parse_ipv4.
    let service = unsafe { *service };
    if service.mode != ServiceMode::Forward as u32 {
        return pass_if_vip(daddr, Counter::PassIcmp);
    }
    let key = FlowKey {
        src: client,
        dst: vip,
        sport: cport,
        dport: vport,
        proto: inner_proto,
        _pad: [0; 3],
    };
    // An error message must not create a flow: only look it up (or compute where it would go).
    let mut not_traced = TRACE_NONE;
    let backend = choose_backend(&service, &key, false, &mut not_traced);
    let (action, _) = forward(ctx, &service, backend, frame_len);
    if action == xdp_action::XDP_TX {
        count(Counter::TxIcmpFragNeeded);
    }
    action
}

/// The backend id for an IPv4 flow of an L4 service, or a drop reason counter's index at or
/// above [`MAX_BACKENDS`] (plain integers: the verifier tracks them better than enums with
/// payloads). `flow` gets the connection-table outcome (`FlowHit`, and with `record`
/// `FlowNew` or `FlowMoved`) for `tandem trace`.
#[inline(always)]
fn choose_backend(service: &ServiceValue, key: &FlowKey, record: bool, flow_out: &mut u32) -> u32 {
    let mut moved = false;
    if let Some(flow) = CONNTRACK.get_ptr(key) {
        // SAFETY: map value pointer, plain data, copied at once.
        let flow = unsafe { *flow };
        if let Some(backend) = BACKENDS.get(flow.backend) {
            if backend.flags & BACKEND_UP != 0
                && backend.addr == flow.backend_addr
                && backend.service == service.id
            {
                count(Counter::FlowHit);
                *flow_out = Counter::FlowHit as u32;
                return flow.backend;
            }
        }
        moved = true;
    }
    let id = maglev_pick(service, key.hash());
    let Some(backend) = BACKENDS.get(id) else {
        return MAX_BACKENDS + Counter::DropNoBackend as u32;
    };
    if backend.flags & BACKEND_UP == 0 {
        return MAX_BACKENDS + Counter::DropNoBackend as u32;
    }
    if record {
        let flow = FlowValue {
            backend: id,
            backend_addr: backend.addr,
        };
        // A full table evicts its least recently used flow; a failed insert only means this
        // flow is placed by Maglev again on its next packet.
        let _ = CONNTRACK.insert(key, flow, 0);
        *flow_out = count_placed(moved) as u32;
    }
    id
}

/// [`choose_backend`] for an IPv6 flow: CONNTRACK6 and BACKENDS6, the same Maglev tables.
#[inline(always)]
fn choose_backend6(
    service: &ServiceValue,
    key: &FlowKey6,
    record: bool,
    flow_out: &mut u32,
) -> u32 {
    let mut moved = false;
    if let Some(flow) = CONNTRACK6.get_ptr(key) {
        // SAFETY: map value pointer, plain data, copied at once.
        let flow = unsafe { *flow };
        if let Some(backend) = BACKENDS6.get(flow.backend) {
            if backend.flags & BACKEND_UP != 0
                && backend.addr == flow.backend_addr
                && backend.service == service.id
            {
                count(Counter::FlowHit);
                *flow_out = Counter::FlowHit as u32;
                return flow.backend;
            }
        }
        moved = true;
    }
    let id = maglev_pick(service, key.hash());
    let Some(backend) = BACKENDS6.get(id) else {
        return MAX_BACKENDS + Counter::DropNoBackend as u32;
    };
    if backend.flags & BACKEND_UP == 0 {
        return MAX_BACKENDS + Counter::DropNoBackend as u32;
    }
    if record {
        let flow = FlowValue6 {
            backend: id,
            backend_addr: backend.addr,
        };
        // As for IPv4: a failed insert only means Maglev places the flow again.
        let _ = CONNTRACK6.insert(key, flow, 0);
        *flow_out = count_placed(moved) as u32;
    }
    id
}

/// The backend id in the service's Maglev table for a flow hash, or [`NO_BACKEND`].
#[inline(always)]
fn maglev_pick(service: &ServiceValue, hash: u64) -> u32 {
    if service.ring >= MAX_L4_SERVICES {
        return NO_BACKEND;
    }
    let slot = (hash % MAGLEV_TABLE_SIZE as u64) as u32;
    match MAGLEV.get(service.ring * MAGLEV_TABLE_SIZE + slot) {
        Some(id) => *id,
        None => NO_BACKEND,
    }
}

#[inline(always)]
fn count_placed(moved: bool) -> Counter {
    let placed = if moved {
        Counter::FlowMoved
    } else {
        Counter::FlowNew
    };
    count(placed);
    placed
}

/// Sends the frame to IPv4 backend `id` (or drops it with the reason `choose_backend` encoded).
/// Returns the action and the reason counted for it (`Tx` when sent).
#[inline(always)]
fn forward(ctx: &XdpContext, service: &ServiceValue, id: u32, frame_len: usize) -> (u32, Counter) {
    if id >= MAX_BACKENDS {
        count(Counter::DropNoBackend);
        return (xdp_action::XDP_DROP, Counter::DropNoBackend);
    }
    let Some(backend) = BACKENDS.get(id) else {
        count(Counter::DropNoBackend);
        return (xdp_action::XDP_DROP, Counter::DropNoBackend);
    };
    send_to_mac(ctx, service, id, backend.mac, frame_len)
}

/// Sends the frame to IPv6 backend `id` (or drops it with the reason `choose_backend6` encoded).
#[inline(always)]
fn forward6(ctx: &XdpContext, service: &ServiceValue, id: u32, frame_len: usize) -> (u32, Counter) {
    if id >= MAX_BACKENDS {
        count(Counter::DropNoBackend);
        return (xdp_action::XDP_DROP, Counter::DropNoBackend);
    }
    let Some(backend) = BACKENDS6.get(id) else {
        count(Counter::DropNoBackend);
        return (xdp_action::XDP_DROP, Counter::DropNoBackend);
    };
    send_to_mac(ctx, service, id, backend.mac, frame_len)
}

/// Direct server return: the frame goes back out with the backend's MAC as destination and
/// the interface's as source; the IP header is untouched (the backend holds the VIP).
#[inline(always)]
fn send_to_mac(
    ctx: &XdpContext,
    service: &ServiceValue,
    id: u32,
    dst: [u8; 6],
    frame_len: usize,
) -> (u32, Counter) {
    if dst == [0; 6] {
        count(Counter::DropNoMac);
        return (xdp_action::XDP_DROP, Counter::DropNoMac);
    }
    let Ok(macs) = bytes_at::<12>(ctx, 0) else {
        return (xdp_action::XDP_PASS, Counter::Pass);
    };
    let macs = macs as *mut [u8; 12];
    // SAFETY: bytes_at checked the 12 bytes lie within the frame, which XDP may write.
    let old = unsafe { core::ptr::read_unaligned(macs) };
    let mut src = [old[0], old[1], old[2], old[3], old[4], old[5]];
    if let Some(iface) = IFACE.get(0) {
        if iface.mac != [0; 6] {
            src = iface.mac;
        }
    }
    let new = [
        dst[0], dst[1], dst[2], dst[3], dst[4], dst[5], src[0], src[1], src[2], src[3], src[4],
        src[5],
    ];
    // SAFETY: as above.
    unsafe { core::ptr::write_unaligned(macs, new) };
    add_stats(&SERVICE_STATS, service.id, frame_len);
    add_stats(&BACKEND_STATS, id, frame_len);
    (xdp_action::XDP_TX, Counter::Tx)
}

/// XDP_PASS, counting `reason` when the packet was for one of this node's virtual IPs.
#[inline(always)]
fn pass_if_vip(daddr: u32, reason: Counter) -> u32 {
    if VIPS.get_ptr(daddr).is_some() {
        count(reason);
    }
    xdp_action::XDP_PASS
}

/// [`pass_if_vip`] for an IPv6 destination.
#[inline(always)]
fn pass_if_vip6(daddr: &[u8; 16], reason: Counter) -> u32 {
    if VIPS6.get_ptr(daddr).is_some() {
        count(reason);
    }
    xdp_action::XDP_PASS
}

#[inline(always)]
fn add_stats(map: &PerCpuArray<Stats>, index: u32, bytes: usize) {
    if let Some(stats) = map.get_ptr_mut(index) {
        // SAFETY: this CPU's own slot, from the map lookup.
        unsafe {
            (*stats).packets += 1;
            (*stats).bytes += bytes as u64;
        }
    }
}

/// The frame's length in bytes, as a number the verifier tracks as a scalar.
#[inline(always)]
fn frame_len(ctx: &XdpContext) -> usize {
    // SAFETY: ctx.ctx is the xdp_md the kernel passed to this program.
    unsafe { bpf_xdp_get_buff_len(ctx.ctx) as usize }
}

#[inline(always)]
fn count(counter: Counter) {
    if let Some(slot) = COUNTERS.get_ptr_mut(counter as u32) {
        // SAFETY: the pointer comes from the map lookup and points at this CPU's own u64 slot;
        // no other CPU writes it.
        unsafe { *slot += 1 };
    }
}

/// Returns a pointer to `N` bytes at `offset` from the start of the frame, after checking that
/// they lie within it: the check the verifier insists on before every read.
#[inline(always)]
fn bytes_at<const N: usize>(ctx: &XdpContext, offset: usize) -> Result<*const [u8; N], Malformed> {
    let start = ctx.data();
    if start + offset + N > ctx.data_end() {
        return Err(Malformed);
    }
    Ok((start + offset) as *const [u8; N])
}

/// Copies `N` bytes at `offset` out of the frame (after the bounds check).
#[inline(always)]
fn read_bytes<const N: usize>(ctx: &XdpContext, offset: usize) -> Result<[u8; N], Malformed> {
    // SAFETY: bytes_at checked that the N bytes lie within the frame; read_unaligned because
    // frame fields have no alignment.
    Ok(unsafe { core::ptr::read_unaligned(bytes_at::<N>(ctx, offset)?) })
}

#[inline(always)]
fn read_u16_be(ctx: &XdpContext, offset: usize) -> Result<u16, Malformed> {
    Ok(u16::from_be_bytes(read_bytes::<2>(ctx, offset)?))
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[link_section = "license"]
#[no_mangle]
static LICENSE: [u8; 4] = *b"GPL\0";
