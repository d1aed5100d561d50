//! Tandem: one daemon per node that does an L7 proxy's work, VRRP failover and an XDP fast path.
//!
//! The binary (`src/main.rs`) is a thin CLI over these modules; tests use them directly.
//! - `config`: the TOML model and its validation (errors as FILE:LINE:COL).
//! - `dataplane`: the XDP program's loader and the reader of its pinned maps.
//! - `maglev`: consistent hashing shared by the L4 data plane and the proxy's sessions.
//! - `proxy`: the L7 reverse proxy (Pound's feature set on hyper).
//! - `vrrp`: the virtual IP's election, interoperable with keepalived.

pub mod config;
pub mod dataplane;
pub mod maglev;
pub mod proxy;
pub mod vrrp;
