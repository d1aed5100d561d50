//! Tandem's lab: the reference deployment of DESIGN.md built from network namespaces, so
//! end-to-end tests (and `cargo xtask lab`) run real daemons, real web servers and real VRRP on
//! one machine without touching its own network.
//!
//! ```text
//!   client .10 ─┐
//!   lb1   .100 ─┤  one L2 segment 198.18.0.0/24: a Linux bridge `br0` in a namespace of
//!   lb2   .101 ─┼  its own, each host a namespace with `eth0` on a veth pair to a bridge port
//!   http1 .102 ─┤  (the VIP 198.18.0.99 is not configured here: Tandem or keepalived add it)
//!   http2 .103 ─┘
//! ```
//!
//! What lives where:
//! - [`lab`]: [`Lab`] and [`Host`] — building the topology with unique names per run, running
//!   commands and closures inside a host's namespace, and tearing everything down on drop (also
//!   when a test panics) and at the next start when an earlier run was killed.
//! - [`process`]: [`Process`], a child that is stopped and reaped when dropped.
//! - [`client`]: what a client does in a test: wait for a port, send one HTTP/1.1 request,
//!   read an HTTP/1.x response (also on a kept-alive connection, for the benches).
//! - [`wrk`]: wrk's summary, for the tests and every bench.
//! - [`anycast`]: the active-active lab's router (BIRD with a session per node, ECMP) and the
//!   `[bgp]` part of a node's config.
//! - [`backends`]: web servers for the `http1`/`http2` hosts: the project's echo server
//!   (`tandem-echo`, fast, tells which backend answered and what it received) and Debian's
//!   Apache (the classic setup's real backend).
//!
//! The lab needs root (network namespaces, veth, bridges). Nothing here sends traffic anywhere
//! but to loopback or to the lab's own hosts in 198.18.0.0/15.

pub mod anycast;
pub mod backends;
pub mod client;
pub mod l4;
pub mod lab;
mod netns;
pub mod pair;
pub mod probe;
pub mod process;
pub mod raw_h2;
pub mod raw_http;
pub mod wrk;

use std::net::{Ipv4Addr, Ipv6Addr};

pub use backends::{echo_binary, Apache, EchoBackend};
pub use client::{http_get, wait_for_tcp, HttpResponse};
pub use lab::{Host, Lab};
pub use process::Process;

use std::path::PathBuf;

use anyhow::{bail, Context as _};

/// Finds the built `tandem` binary: `$TANDEM_BIN` if set, else where cargo put it (see
/// [`built_binary`]). `cargo xtask test` builds it before the tests run; a plain `cargo test`
/// after changing lb-userspace needs `cargo build -p lb-userspace` first, or it tests the old one.
pub fn tandem_binary() -> anyhow::Result<PathBuf> {
    built_binary(
        "tandem",
        "TANDEM_BIN",
        "cargo xtask build (or cargo build -p lb-userspace)",
    )
}

/// Finds a binary of this workspace: `$env_override` if set, else next to the running
/// executable or in its parent directory (integration tests run from target/debug/deps, xtask
/// from target/debug, where cargo puts the binaries). The error says how to build it.
pub fn built_binary(name: &str, env_override: &str, build_hint: &str) -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os(env_override) {
        let path = PathBuf::from(path);
        if !path.is_file() {
            bail!(
                "{env_override}={} is not a file: point it at a built {name} or unset it",
                path.display()
            );
        }
        return Ok(path);
    }
    let exe = std::env::current_exe().context("finding the running executable")?;
    let candidates: Vec<PathBuf> = exe
        .ancestors()
        .skip(1)
        .take(2)
        .map(|dir| dir.join(name))
        .collect();
    match candidates.iter().find(|path| path.is_file()) {
        Some(path) => Ok(path.clone()),
        None => bail!("no {name} binary at {candidates:?}: build it with {build_hint} (or set {env_override})"),
    }
}

/// The host that plays the user: curl, load generators.
pub const CLIENT: &str = "client";
/// The first load balancer node (the VRRP master in the reference deployment).
pub const LB1: &str = "lb1";
/// The second load balancer node (the VRRP backup).
pub const LB2: &str = "lb2";
/// The first web server.
pub const HTTP1: &str = "http1";
/// The second web server.
pub const HTTP2: &str = "http2";

/// The virtual IP of the reference deployment. The lab never configures it on any host: it is
/// the address that the load balancers move between them.
pub const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 99);

/// The lab segment: every host has an address in 198.18.0.0/24.
pub const SEGMENT_PREFIX_LEN: u8 = 24;

/// The IPv6 virtual address of a dual-stack lab ([`Lab::dual_stack`]), from RFC 5180's
/// benchmarking range like every IPv6 address of the lab.
pub const VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 0x99);

/// The IPv6 segment of a dual-stack lab: 2001:2::/64.
pub const SEGMENT6_PREFIX_LEN: u8 = 64;

/// A host's IPv6 address in a dual-stack lab: 2001:2::N where N is the last byte of its IPv4
/// address written in decimal digits as hex digits (198.18.0.102 is 2001:2::102), so the two
/// addresses of a host read alike.
pub const fn ipv6_of(ip: Ipv4Addr) -> Ipv6Addr {
    let last = ip.octets()[3] as u16;
    let digits = ((last / 100) << 8) | ((last / 10 % 10) << 4) | (last % 10);
    Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, digits)
}

/// The router of an active-active lab ([`Lab::active_active`]): BIRD, BGP with every node,
/// ECMP to the anycast VIP.
pub const ROUTER: &str = "router";
/// The third node of an active-active lab.
pub const LB3: &str = "lb3";
/// The VIP every node of an active-active lab announces over BGP (off the segment: only the
/// routes make it reachable).
pub const ANYCAST_VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 99);
/// The client's address in an active-active lab, outside, behind the router.
pub const CLIENT_OUTSIDE: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 10);
/// The router's address on the client's side.
pub const ROUTER_OUTSIDE: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 1);
/// In a dual-stack active-active lab: the client's IPv6 address (2001:2:1::/64 outside), the
/// router's on that side, and the IPv6 anycast VIP.
pub const CLIENT_OUTSIDE6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 1, 0, 0, 0, 0, 0x10);
pub const ROUTER_OUTSIDE6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 1, 0, 0, 0, 0, 1);
pub const ANYCAST_VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 2, 0, 0, 0, 0, 0x99);
/// The client's network in an active-active lab: 198.18.1.0/24.
pub const OUTSIDE_PREFIX_LEN: u8 = 24;
/// The nodes' AS and the router's in an active-active lab (private ASes).
pub const NODES_AS: u32 = 65001;
pub const ROUTER_AS: u32 = 65000;

/// The hosts of an active-active lab, in the order the lab builds them.
pub const ACTIVE_ACTIVE_HOSTS: [(&str, Ipv4Addr); 7] = [
    (CLIENT, CLIENT_OUTSIDE),
    (ROUTER, Ipv4Addr::new(198, 18, 0, 1)),
    (LB1, Ipv4Addr::new(198, 18, 0, 100)),
    (LB2, Ipv4Addr::new(198, 18, 0, 101)),
    (LB3, Ipv4Addr::new(198, 18, 0, 104)),
    (HTTP1, Ipv4Addr::new(198, 18, 0, 102)),
    (HTTP2, Ipv4Addr::new(198, 18, 0, 103)),
];

/// Every host of the reference deployment with its address, in the order the lab builds them.
pub const HOSTS: [(&str, Ipv4Addr); 5] = [
    (CLIENT, Ipv4Addr::new(198, 18, 0, 10)),
    (LB1, Ipv4Addr::new(198, 18, 0, 100)),
    (LB2, Ipv4Addr::new(198, 18, 0, 101)),
    (HTTP1, Ipv4Addr::new(198, 18, 0, 102)),
    (HTTP2, Ipv4Addr::new(198, 18, 0, 103)),
];
