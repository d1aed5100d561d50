//! Tandem: one daemon per node that does an L7 proxy's work, VRRP failover and an XDP fast path.
//!
//! The binary (`src/main.rs`) is a thin CLI over these modules; tests use them directly.
//! - `config`: the TOML model and its validation (errors as FILE:LINE:COL).
//! - `dataplane`: the XDP program's loader and the reader of its pinned maps.

pub mod config;
pub mod dataplane;
