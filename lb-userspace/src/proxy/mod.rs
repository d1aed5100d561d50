//! The L7 reverse proxy: what the classic pair relied on Pound for.
//!
//! Two rooms, with imports one way (engine to policy):
//! - [`engine`]: listeners, TLS, the HTTP/1.1 and HTTP/2 engines, backend connections,
//!   header rewriting, limits and timeouts, the access log, counters;
//! - [`policy`]: per HTTP service, an [`policy::upstream::Upstream`] that decides which
//!   backends to try (health, balancing, session affinity, replication to the peer) and never
//!   touches a connection.

pub mod engine;
pub mod policy;

pub use engine::handle::{start, PreparedReload, ProxyHandle};
pub use engine::stats::ProxyStats;
