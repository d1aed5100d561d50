//! Tandem's XDP program: the kernel half of the data plane.
//!
//! It parses each frame (Ethernet with at most one 802.1Q/802.1ad tag, IPv4, TCP, UDP) with a
//! bounds check before every read, looks the destination up in SERVICES, and counts the outcome
//! in a per-CPU counter. Today every frame is passed to the kernel stack (XDP_PASS); forwarding
//! decisions for L4 services build on this parse. The program holds no policy: what a service
//! is, and when the map is filled, is decided by userspace (lb-userspace's dataplane module).
//! Map names and layouts come from lb-common, the only place both sides agree on them.
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::xdp_action,
    helpers::bpf_xdp_get_buff_len,
    macros::{map, xdp},
    maps::{HashMap, PerCpuArray},
    programs::XdpContext,
};
use lb_common::{
    Counter, ServiceKey, ServiceValue, COUNTER_COUNT, IPPROTO_TCP, IPPROTO_UDP, MAX_SERVICES,
};

/// Services this node answers for; filled by userspace while the node is master.
#[map(name = "SERVICES")]
static SERVICES: HashMap<ServiceKey, ServiceValue> = HashMap::pinned(MAX_SERVICES, 0);

/// One u64 per [`Counter`] per CPU; userspace sums over CPUs.
#[map(name = "COUNTERS")]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::pinned(COUNTER_COUNT, 0);

const ETH_HLEN: usize = 14;
const VLAN_HLEN: usize = 4;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86DD;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88A8;
const IPV4_MIN_HLEN: usize = 20;
const TCP_MIN_HLEN: usize = 20;
const UDP_HLEN: usize = 8;
/// Fragment offset bits of the IPv4 flags/fragment field: non-zero means "not the first
/// fragment", which carries no L4 header.
const IP_FRAG_OFFSET_MASK: u16 = 0x1fff;

#[xdp]
pub fn tandem_xdp(ctx: XdpContext) -> u32 {
    let outcome = match parse(&ctx) {
        Ok(counter) => counter,
        Err(Malformed) => Counter::Malformed,
    };
    count(outcome);
    xdp_action::XDP_PASS
}

/// Why parsing stopped short: the frame is shorter than a header it announces, or a header
/// field is impossible (IHL < 5, TCP data offset < 5, total length shorter than the header).
struct Malformed;

#[inline(always)]
fn parse(ctx: &XdpContext) -> Result<Counter, Malformed> {
    let mut ethertype = read_u16_be(ctx, 12)?;
    let mut l3 = ETH_HLEN;
    if ethertype == ETH_P_8021Q || ethertype == ETH_P_8021AD {
        ethertype = read_u16_be(ctx, ETH_HLEN + 2)?;
        l3 += VLAN_HLEN;
        if ethertype == ETH_P_8021Q || ethertype == ETH_P_8021AD {
            // Stacked tags are not parsed: leave the frame to the kernel, which knows them.
            return Ok(Counter::NonIp);
        }
    }
    match ethertype {
        ETH_P_IP => parse_ipv4(ctx, l3),
        ETH_P_IPV6 => Ok(Counter::Ipv6),
        _ => Ok(Counter::NonIp),
    }
}

#[inline(always)]
fn parse_ipv4(ctx: &XdpContext, l3: usize) -> Result<Counter, Malformed> {
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
    if total_len < header_len || l3 + total_len > frame_len(ctx) {
        return Err(Malformed);
    }
    let frag = u16::from_be_bytes([header[6], header[7]]);
    let protocol = header[9];
    let daddr = u32::from_ne_bytes([header[16], header[17], header[18], header[19]]);
    if frag & IP_FRAG_OFFSET_MASK != 0 {
        return Ok(Counter::Ipv4Other);
    }
    let l4 = l3 + header_len;
    let l4_len = total_len - header_len;
    let (counter, dport) = match protocol {
        IPPROTO_TCP => {
            let tcp = read_bytes::<TCP_MIN_HLEN>(ctx, l4)?;
            let data_offset = ((tcp[12] >> 4) as usize) * 4;
            if data_offset < TCP_MIN_HLEN || data_offset > l4_len {
                return Err(Malformed);
            }
            (Counter::Ipv4Tcp, u16::from_ne_bytes([tcp[2], tcp[3]]))
        }
        IPPROTO_UDP => {
            if l4_len < UDP_HLEN {
                return Err(Malformed);
            }
            let udp = read_bytes::<UDP_HLEN>(ctx, l4)?;
            (Counter::Ipv4Udp, u16::from_ne_bytes([udp[2], udp[3]]))
        }
        _ => return Ok(Counter::Ipv4Other),
    };
    let key = ServiceKey {
        vip: daddr,
        port: dport,
        proto: protocol,
        _pad: 0,
    };
    if SERVICES.get_ptr(key).is_some() {
        count(Counter::ServiceHit);
    }
    Ok(counter)
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
