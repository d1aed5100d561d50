//! The data plane: how packets for the virtual IPs are handled below the proxy.
//!
//! [`Dataplane`] is what the node supervisor drives, without knowing which implementation it
//! has: [`activate`](Dataplane::activate) when the node becomes master,
//! [`deactivate`](Dataplane::deactivate) when it stops being master, backend health as it
//! changes, [`reconfigure`](Dataplane::reconfigure) when a reload changes the services, and
//! [`status`](Dataplane::status) for `tandem status`. [`open`] picks the
//! implementation from the config:
//! - [`kernel::XdpDataplane`]: Tandem's XDP program (lb-ebpf, embedded in the binary) on the
//!   node's interface, native mode with a fall back to generic (or generic when the config says
//!   `xdp-generic`). L4 services are forwarded in the kernel by direct server return; L7
//!   services pass up to the proxy. Program, link and maps are pinned under a bpffs directory,
//!   so they outlive the process: a restarted daemon picks them up and established L4 flows go
//!   on, and `tandem maps` reads them with no daemon running.
//! - [`relay::RelayDataplane`]: the userspace fallback, a TCP and UDP relay in tokio for the L4
//!   services, with the same Maglev choice of backend. Used with `dataplane = "none"` and when
//!   XDP cannot be loaded (no BPF permission, an interface that refuses it, a binary built
//!   without the object).
//!
//! Layout: `plan` numbers services and backends and builds Maglev tables (pure); `xdp/` is the
//! program's side (`loader` loads, attaches and pins; `maps` is the only reader and writer of
//! the kernel maps; `link` and `neighbour` ask the kernel about the interface and the
//! backends' MACs; `pinned` is what `tandem maps` shows); `kernel` drives it as a
//! [`Dataplane`]; `flowshare` shares its flows with the other nodes over the replication
//! link; `relay` is the userspace one. Policy (which node is master, which backend is healthy) stays outside:
//! this module carries it out.

pub mod flowshare;
pub mod kernel;
pub mod plan;
pub mod relay;
pub mod xdp;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::backends::health::HealthTable;
use crate::backends::maglev::Maglev;
use crate::config::{Config, DataplaneMode};
use crate::proxy::policy::replicate::Replicator;
use plan::PlannedService;

pub use plan::{Plan, Share};
pub use xdp::link::AttachedMode;
pub use xdp::loader::{AttachMode, Attachment, XdpError};

/// What the node supervisor drives. Implementations are cheap to share (`Arc` inside); every
/// method may be called from any task.
pub trait Dataplane: Send + Sync {
    /// The node became master: start forwarding the services (fill the kernel maps, or start
    /// the relay's listeners). Called before the VIPs are added, so the first packet for a VIP
    /// finds everything ready. Calling it while active brings the state up to date.
    fn activate(&self) -> BoxFuture<'_, anyhow::Result<()>>;

    /// The node is no longer master: stop forwarding (empty SERVICES and VIPS, or close the
    /// relay's listeners). Called after the VIPs are removed. Recorded flows are kept, so a
    /// node that becomes master again sends them where they went before.
    fn deactivate(&self) -> BoxFuture<'_, anyhow::Result<()>>;

    /// Backend `backend` of service `service` went up or down. Its L4 flows move to other
    /// backends when it goes down (Maglev moves only its share); new flows reach it again
    /// when it comes back. Unknown services or backends are ignored (an HTTP service's
    /// backends are the proxy's business).
    fn set_backend_up(
        &self,
        service: &str,
        backend: SocketAddr,
        up: bool,
    ) -> BoxFuture<'_, anyhow::Result<()>>;

    /// Follows `table` (the health checks of `service`) until `stop` is cancelled: every
    /// change of its generation updates the backends as [`Dataplane::set_backend_up`]. A
    /// reload that replaces the table cancels the old follower and starts one for the new
    /// table (whose first pass applies its verdicts at once).
    fn follow_health(&self, service: &str, table: Arc<HealthTable>, stop: CancellationToken);

    /// Whether `config`'s services fit this data plane (e.g. the XDP maps' limits), without
    /// changing anything. The reload calls this before it changes anything on the node.
    fn check_reconfigure(&self, config: &Config) -> anyhow::Result<()>;

    /// `tandem drain` (`drained`) and `tandem enable`: backend `backend` of L4 service
    /// `service` leaves (or rejoins) the Maglev table for new flows; its recorded flows go on
    /// while it is up. `Ok(false)` when the data plane has no L4 service of that name; an error
    /// when the service has no such backend. Kept across a reload, not across a restart.
    fn set_backend_drained(
        &self,
        service: &str,
        backend: SocketAddr,
        drained: bool,
    ) -> BoxFuture<'_, anyhow::Result<bool>>;

    /// Switches to `config`'s services and backends. The interface, data-plane mode and VIPs
    /// are the same as before (reload refuses changes to them). Services and backends that
    /// remain keep their ids, health and counters, so their recorded flows go on to the same
    /// backend; new backends start up (as health tables do) and get fresh ids; services and
    /// backends that are gone are removed (their flows are placed again, or dropped if the
    /// service is gone). When active, SERVICES follow at once (new services start forwarding,
    /// removed ones stop). On error nothing changed (or, for a kernel write that fails midway,
    /// the previous services were written back).
    fn reconfigure(&self, config: &Config) -> BoxFuture<'_, anyhow::Result<()>>;

    /// The daemon is stopping (not the node losing mastership: call
    /// [`deactivate`](Dataplane::deactivate) for that first). The XDP program stays attached
    /// and the maps stay as they are, so a restart does not interrupt established flows; the
    /// relay closes its sockets.
    fn shutdown(&self) -> BoxFuture<'_, ()>;

    /// Shares the L4 flows this data plane records with the peers of `replicator`, and
    /// records those the peers share (see [`flowshare`]), until `stop` is cancelled or the
    /// data plane shuts down. The userspace relay does not share its flows: it logs so and
    /// does nothing.
    fn share_flows(&self, replicator: Arc<Replicator>, stop: CancellationToken);

    /// The data plane as `tandem status` shows it.
    fn status(&self) -> DataplaneStatus;
}

/// Which implementation runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DataplaneKind {
    Xdp,
    Relay,
}

/// `tandem status`'s view of the data plane.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DataplaneStatus {
    pub kind: DataplaneKind,
    pub interface: String,
    /// For XDP: the mode the program is attached in.
    pub attach_mode: Option<AttachedMode>,
    /// For XDP: where program, link and maps are pinned.
    pub pin_dir: Option<std::path::PathBuf>,
    /// Whether the node is forwarding (master).
    pub active: bool,
    /// Why the relay runs although the config asked for XDP.
    pub fallback_reason: Option<String>,
    /// The L4 services; HTTP services appear only in the proxy's status.
    pub services: Vec<ServiceStatus>,
    /// For XDP: entries in the connection table.
    pub flows: Option<usize>,
    /// For XDP with `[replication]`: the flows shared with the other nodes.
    #[serde(default)]
    pub flow_sharing: Option<flowshare::FlowShareStatus>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ServiceStatus {
    pub name: String,
    pub listen: SocketAddr,
    pub mode: String,
    pub backends: Vec<BackendStatus>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BackendStatus {
    pub address: SocketAddr,
    pub weight: u32,
    pub up: bool,
    /// Its part of the service's Maglev table (new flows).
    pub share: Share,
    /// For XDP: the MAC frames are sent to (`None` while unresolved).
    pub mac: Option<String>,
    /// Taken out of rotation by `tandem drain`: no new flows, its recorded flows go on.
    #[serde(default)]
    pub drained: bool,
    /// Frames (XDP) or connections and datagrams (relay) sent to it.
    pub packets: u64,
    pub bytes: u64,
}

/// Backend health as the data plane sees it: every backend starts up (as the health tables
/// do) and follows what it is told; and which backends the operator drained.
#[derive(Clone, Debug, Default)]
pub(crate) struct HealthView {
    down: HashMap<(String, SocketAddr), ()>,
    drained: HashSet<(String, SocketAddr)>,
}

impl HealthView {
    pub(crate) fn is_up(&self, service: &str, backend: SocketAddr) -> bool {
        !self.down.contains_key(&(service.to_owned(), backend))
    }

    pub(crate) fn is_drained(&self, service: &str, backend: SocketAddr) -> bool {
        self.drained.contains(&(service.to_owned(), backend))
    }

    /// Records a drain (`tandem drain`); returns true when it changed.
    pub(crate) fn set_drained(
        &mut self,
        service: &str,
        backend: SocketAddr,
        drained: bool,
    ) -> bool {
        let key = (service.to_owned(), backend);
        if drained {
            self.drained.insert(key)
        } else {
            self.drained.remove(&key)
        }
    }

    /// The Maglev table for new flows of `service`: over its backends that are up and not
    /// drained; over those that are up when every one of them is drained (new flows then go
    /// to a drained backend rather than nowhere). A backend that is up keeps its recorded
    /// flows either way: draining changes only the table.
    pub(crate) fn new_flow_table(&self, service: &PlannedService) -> Maglev {
        let in_rotation = |address| {
            self.is_up(&service.name, address) && !self.is_drained(&service.name, address)
        };
        if service.backends.iter().any(|b| in_rotation(b.address)) {
            service.maglev(in_rotation)
        } else {
            service.maglev(|address| self.is_up(&service.name, address))
        }
    }

    /// Keeps the states of the backends for which `keep(service, backend)` says yes; the
    /// others are forgotten (a backend that is configured again later starts up, in rotation).
    pub(crate) fn retain(&mut self, mut keep: impl FnMut(&str, SocketAddr) -> bool) {
        self.down
            .retain(|(service, backend), _| keep(service, *backend));
        self.drained
            .retain(|(service, backend)| keep(service, *backend));
    }

    /// Records a state; returns true when it changed.
    pub(crate) fn set(&mut self, service: &str, backend: SocketAddr, up: bool) -> bool {
        let key = (service.to_owned(), backend);
        if up {
            self.down.remove(&key).is_some()
        } else {
            self.down.insert(key, ()).is_none()
        }
    }
}

/// Spawns the task behind [`Dataplane::follow_health`]: on every generation change, the
/// table's verdict for each backend goes to `apply`, until `stop` is cancelled. (The task holds
/// the table, so its channel never closes: `stop` is the only way out.)
pub(crate) fn spawn_health_follower<F>(
    service: &str,
    table: Arc<HealthTable>,
    stop: CancellationToken,
    apply: F,
) where
    F: Fn(String, SocketAddr, bool) -> BoxFuture<'static, anyhow::Result<()>> + Send + 'static,
{
    let service = service.to_owned();
    let mut changes = table.subscribe();
    tokio::spawn(async move {
        loop {
            for (index, backend) in table.backends().iter().enumerate() {
                if stop.is_cancelled() {
                    return; // a replaced table's verdicts must not undo the new one's
                }
                if let Err(err) = apply(service.clone(), *backend, table.is_up_at(index)).await {
                    warn!(service, %backend, "updating the data plane after a health change: {err:#}");
                }
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                changed = changes.changed() => {
                    if changed.is_err() {
                        return; // the table is gone
                    }
                }
            }
        }
    });
}

/// Opens the data plane `config` asks for: XDP (native, falling back to generic; or generic
/// with `xdp-generic`), and the userspace relay when that cannot load or with
/// `dataplane = "none"`. Must run inside the tokio runtime (and network namespace) the node
/// runs in. Nothing forwards until [`Dataplane::activate`].
pub async fn open(config: &Config) -> anyhow::Result<Box<dyn Dataplane>> {
    let mode = match config.node.dataplane {
        DataplaneMode::Xdp => AttachMode::Auto,
        DataplaneMode::XdpGeneric => AttachMode::Generic,
        DataplaneMode::None => {
            info!("dataplane = \"none\": L4 services go through the userspace relay");
            return Ok(Box::new(relay::RelayDataplane::new(config, None)?));
        }
    };
    match kernel::XdpDataplane::open(config, mode).await {
        Ok(xdp) => Ok(Box::new(xdp)),
        Err(err) => {
            let reason = format!("{err:#}");
            warn!(
                "XDP data plane unavailable ({reason}); L4 services go through the userspace relay"
            );
            Ok(Box::new(relay::RelayDataplane::new(config, Some(reason))?))
        }
    }
}
