//! Tandem: one daemon per node that does an L7 proxy's work, VRRP failover and an XDP fast path.
//!
//! The binary (`src/main.rs`) is a thin CLI over these modules; tests use them directly.
//! - `backends`: the policy the proxy and the L4 data plane share: backend health (active
//!   probes, passive marking) and Maglev consistent hashing.
//! - `backend_transport`: TLS and HTTP/2 to backends (h2c, https, h2), for the proxy and checks.
//! - `bgp`: active-active: the `[bgp]` VIPs announced to routers through a BIRD 2 child.
//! - `capabilities`: which Linux capabilities the process has, for errors that name them.
//! - `config`: the TOML model and its validation (errors as FILE:LINE:COL).
//! - `control`: the control socket (`tandem status`, `tandem reload`) and the status screen.
//! - `dataplane`: the XDP program's loader and the reader of its pinned maps.
//! - `fault_injection`: faults the lab's tests inject (`TANDEM_FAULT_INJECTION`; inert
//!   otherwise).
//! - `import`: `tandem import`, a classic pound.cfg and keepalived.conf read into a tandem.toml
//!   (beside `config`: it writes what the config parser reads).
//! - `manual`: the man page tandem(8), rendered from the CLI's clap definition.
//! - `log_limit`: log lines a peer can cause, limited per cause (one a second).
//! - `names`: backends written by host name, resolved at start, at reload and periodically.
//! - `node`: the supervisor `tandem run` is: the start and stop order, the control commands,
//!   reload (what SIGHUP and `tandem reload` change, all or nothing), the L4 health link and
//!   the built-in proxy check.
//! - `proxy`: the L7 reverse proxy (Pound's feature set on hyper).
//! - `systemd`: the notify protocol (ready, reloading, status, watchdog) and journald.
//! - `vrrp`: the virtual IP's election, interoperable with keepalived.
//! - `wire`: the Ethernet, IPv4 and ARP codecs and the internet checksum (VRRP's advert parses
//!   an IPv4 packet's payload with them; the tests crate builds its frames with them).

pub mod backend_transport;
pub mod backends;
pub mod bgp;
pub mod capabilities;
pub mod config;
pub mod control;
pub mod dataplane;
pub mod fault_injection;
pub mod import;
pub mod log_limit;
pub mod manual;
pub mod metrics;
pub mod names;
pub mod node;
pub mod proxy;
pub mod systemd;
pub mod vrrp;
pub mod wire;
