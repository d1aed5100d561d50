//! The L7 reverse proxy: what the classic pair relied on Pound for, on hyper.
//!
//! Two sides meet at [`upstream::Upstream`], one per HTTP service:
//! - the HTTP engine (listeners, TLS, forwarding, header rewriting, limits, access log) asks it
//!   which backends to try for a request and tells it what happened;
//! - the policy side behind it (balancing, health checks, session affinity, replication to the
//!   peer) decides, and never touches a client connection.

pub mod affinity;
pub mod balance;
pub mod replicate;
pub mod upstream;

// The HTTP engine: client and backend connections.
pub mod access_log;
pub mod backend;
pub mod body;
pub mod dispatch;
pub mod forward;
pub mod guard;
pub mod h1;
pub mod handle;
pub mod headers;
pub mod routes;
pub mod server;
pub mod tls;

pub use handle::{PreparedReload, ProxyHandle, ProxyStats};
pub use server::start;
