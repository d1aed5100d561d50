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
            info!(instance, "deactivating the data plane");
            if let Err(err) = self.dataplane.deactivate().await {
                error!(instance, "deactivating the data plane: {err:#}");
            }
        })
    }
}
