//! What a VRRP transition does to the node: the data plane is filled when an instance becomes
//! master and emptied when it leaves (the instance adds and removes the VIPs itself).

use std::sync::Arc;

use futures::future::BoxFuture;
use tracing::{error, info};

use crate::dataplane::Dataplane;
use crate::vrrp::instance::Mastership;

/// What the node does when an instance gains or loses mastership.
pub(super) struct NodeMastership {
    pub(super) dataplane: Arc<dyn Dataplane>,
    /// With `[bgp]` the data plane serves the announced VIPs whatever VRRP decides, so losing
    /// a VRRP mastership leaves it filled (the VRRP VIPs' packets stop arriving anyway, since
    /// the VIPs left this node).
    pub(super) always_active: bool,
}

impl Mastership for NodeMastership {
    fn becoming_master(&self, instance: &str) -> BoxFuture<'_, ()> {
        let instance = instance.to_owned();
        Box::pin(async move {
            info!(instance, "activating the data plane");
            if let Err(err) = self.dataplane.activate().await {
                error!(instance, "activating the data plane: {err:#}");
            }
        })
    }

    fn left_master(&self, instance: &str) -> BoxFuture<'_, ()> {
        let instance = instance.to_owned();
        Box::pin(async move {
            if self.always_active {
                info!(instance, "keeping the data plane active for the [bgp] VIPs");
                return;
            }
            info!(instance, "deactivating the data plane");
            if let Err(err) = self.dataplane.deactivate().await {
                error!(instance, "deactivating the data plane: {err:#}");
            }
        })
    }
}
