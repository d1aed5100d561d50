//! The control socket: how `tandem status` (and later `tandem reload`) talk to a running daemon.
//!
//! A Unix stream socket (default /run/tandem/tandem.sock, `[node] control_socket`), one request
//! per connection: the client writes a command line ("status"), the daemon answers with one JSON
//! document and closes. `server` is the daemon's side, `client` the CLI's, `render` turns a
//! [`NodeStatus`] into the screen a person reads.

pub mod client;
pub mod render;
pub mod server;

use serde::{Deserialize, Serialize};

use crate::vrrp::instance::InstanceStatus;

/// Everything `tandem status` shows about a node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeStatus {
    pub node: String,
    pub pid: u32,
    pub uptime_seconds: f64,
    pub vrrp: Vec<InstanceStatus>,
    /// Per HTTP service: its backends, health and counters, as the proxy reports them.
    #[serde(default)]
    pub services: Vec<crate::proxy::engine::stats::HttpServiceStatus>,
    /// The data plane and its L4 services.
    #[serde(default)]
    pub dataplane: Option<crate::dataplane::DataplaneStatus>,
    /// Backends written by host name: what each resolved to, and whether it still does.
    #[serde(default)]
    pub backend_names: Vec<crate::names::NameStatus>,
    /// `[bgp]`: the sessions and the announced VIPs; `None` when the node has no `[bgp]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bgp: Option<crate::bgp::BgpStatus>,
}

/// The daemon's answer to one command.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "lowercase")]
pub enum Reply {
    Ok { body: serde_json::Value },
    Error { message: String },
}
