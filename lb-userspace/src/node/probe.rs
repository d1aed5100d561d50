//! The built-in proxy check: the node probes its own proxy, and a VRRP instance tracking
//! `{ builtin = "proxy" }` goes to Fault while the proxy does not answer.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::proxy::ProxyHandle;

/// How often the built-in proxy check probes the proxy, and how many probes in a row must fail
/// before it counts as down (one slow answer under load is not a dead proxy).
const PROXY_PROBE_INTERVAL: std::time::Duration = std::time::Duration::from_millis(200);
const PROXY_PROBE_FALL: u32 = 2;

/// The built-in VRRP tracker (`track = [{ builtin = "proxy" }]`): probes the proxy from inside
/// the process and publishes whether it is up. The probe task ends with `shutdown`; the probe
/// holds its own reference to the proxy only while a probe runs.
pub(super) fn spawn_proxy_probe(
    proxy: Arc<ProxyHandle>,
    shutdown: CancellationToken,
) -> tokio::sync::watch::Receiver<bool> {
    let (sender, receiver) = tokio::sync::watch::channel(true);
    let weak = Arc::downgrade(&proxy);
    drop(proxy);
    tokio::spawn(async move {
        let mut failures = 0;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(PROXY_PROBE_INTERVAL) => {}
            }
            let Some(proxy) = weak.upgrade() else { break };
            let ok = proxy.probe().await;
            drop(proxy);
            failures = if ok { 0 } else { failures + 1 };
            let up = failures < PROXY_PROBE_FALL;
            if *sender.borrow() != up {
                if up {
                    info!("built-in proxy check: the proxy answers again");
                } else {
                    warn!("built-in proxy check: the proxy does not answer ({failures} probes in a row)");
                }
                sender.send_replace(up);
            }
        }
    });
    receiver
}
