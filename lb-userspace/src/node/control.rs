//! What a running node tells and takes: the commands it answers on its control socket
//! (`status`, `reload`, `drain`, `enable`; the socket itself and the client are
//! `crate::control`), and the sources of `tandem status` and of the metrics.

use std::sync::{Arc, Weak};
use std::time::Instant;

use futures::future::BoxFuture;
use tracing::info;

use super::reload::Reloader;
use crate::control::{self, NodeStatus, Reply};
use crate::dataplane::Dataplane;
use crate::names::NameTable;
use crate::proxy::ProxyHandle;
use crate::vrrp::instance::InstanceHandle;

/// The running parts the node reports on and acts on.
#[derive(Clone)]
pub struct Parts {
    pub node: String,
    pub started: Instant,
    pub instances: Vec<InstanceHandle>,
    pub proxy: Weak<ProxyHandle>,
    pub dataplane: Arc<dyn Dataplane>,
    pub names: Arc<NameTable>,
    /// `[bgp]`'s speaker, when the node announces VIPs.
    pub bgp: Option<Arc<crate::bgp::BgpSpeaker>>,
}

impl Parts {
    /// What `tandem status` shows.
    pub fn status(&self) -> NodeStatus {
        NodeStatus {
            node: self.node.clone(),
            pid: std::process::id(),
            uptime_seconds: self.started.elapsed().as_secs_f64(),
            vrrp: self.instances.iter().map(InstanceHandle::status).collect(),
            services: self
                .proxy
                .upgrade()
                .map(|proxy| proxy.service_status())
                .unwrap_or_default(),
            dataplane: Some(self.dataplane.status()),
            backend_names: self.names.status(),
            bgp: self.bgp.as_ref().map(|bgp| bgp.status()),
        }
    }

    /// What the metrics endpoint reads at each scrape.
    pub fn metrics_source(&self) -> crate::metrics::Source {
        let parts = self.clone();
        Arc::new(move || crate::metrics::Snapshot {
            vrrp: parts.instances.iter().map(InstanceHandle::status).collect(),
            services: parts
                .proxy
                .upgrade()
                .map(|proxy| proxy.service_snapshots())
                .unwrap_or_default(),
            dataplane: Some(parts.dataplane.status()),
            bgp: parts.bgp.as_ref().map(|bgp| bgp.status()),
        })
    }
}

/// The handler of the control socket's commands.
pub fn handler(parts: Parts, reloader: Weak<Reloader>) -> control::server::Handler {
    Arc::new(move |words: Vec<String>| {
        let parts = parts.clone();
        let reloader = reloader.clone();
        Box::pin(async move {
            match words[0].as_str() {
                "status" => match serde_json::to_value(parts.status()) {
                    Ok(body) => Reply::Ok { body },
                    Err(err) => Reply::Error {
                        message: format!("encoding the status: {err}"),
                    },
                },
                "reload" => match reloader.upgrade() {
                    Some(reloader) => match reloader.reload().await {
                        Ok(report) => Reply::Ok {
                            body: serde_json::to_value(report).unwrap_or_default(),
                        },
                        Err(message) => Reply::Error { message },
                    },
                    None => Reply::Error {
                        message: "the node is stopping".to_owned(),
                    },
                },
                verb @ ("drain" | "enable") if words.len() == 1 => {
                    drain_node(verb == "drain", parts.bgp.as_deref()).await
                }
                verb @ ("drain" | "enable") => {
                    drain(&words[1..], verb == "drain", &parts.proxy, &parts.dataplane).await
                }
                other => Reply::Error {
                    message: format!(
                        "unknown command {other:?}; this daemon knows: status, reload, drain, enable"
                    ),
                },
            }
        }) as BoxFuture<'static, Reply>
    })
}

/// `tandem drain` and `tandem enable` of the whole node: its `[bgp]` VIPs are withdrawn (the
/// routers send new flows to the other nodes; open connections go on) or announced again.
async fn drain_node(drained: bool, bgp: Option<&crate::bgp::BgpSpeaker>) -> Reply {
    let Some(bgp) = bgp else {
        return Reply::Error {
            message: "draining the node withdraws its [bgp] VIPs, and this node has no [bgp]; \
                      drain a backend with `tandem drain SERVICE BACKEND`, or move a VRRP VIP \
                      by stopping this node"
                .to_owned(),
        };
    };
    if let Err(err) = bgp.set_drained(drained).await {
        return Reply::Error {
            message: format!("{err:#}"),
        };
    }
    let message = if drained {
        "node drained: every [bgp] VIP is withdrawn; open connections go on (`tandem enable` \
         to announce again)"
    } else {
        "node enabled: the [bgp] VIPs are announced again as soon as they can be served"
    };
    info!("{message}");
    Reply::Ok {
        body: serde_json::json!({ "drained": drained, "message": message }),
    }
}

/// `tandem drain SERVICE BACKEND` (`drained`) and `tandem enable SERVICE BACKEND`: the HTTP
/// service's proxy or the L4 service's data plane takes the backend out of rotation (its
/// sessions and recorded flows go on) or puts it back.
async fn drain(
    args: &[String],
    drained: bool,
    proxy: &Weak<ProxyHandle>,
    dataplane: &Arc<dyn Dataplane>,
) -> Reply {
    let error = |message: String| Reply::Error { message };
    let [service, backend] = args else {
        return error("usage: drain|enable SERVICE BACKEND (e.g. web 198.18.0.102:80)".to_owned());
    };
    let Ok(address) = backend.parse::<std::net::SocketAddr>() else {
        return error(format!(
            "{backend:?} is not a backend address; give it as in the config, e.g. 198.18.0.102:80"
        ));
    };
    let Some(proxy) = proxy.upgrade() else {
        return error("the node is stopping".to_owned());
    };
    let in_proxy = proxy.set_drained(service, address, drained);
    let found = match in_proxy {
        Ok(true) => true,
        Ok(false) => match dataplane
            .set_backend_drained(service, address, drained)
            .await
        {
            Ok(found) => found,
            Err(err) => return error(format!("{err:#}")),
        },
        Err(message) => return error(message),
    };
    if !found {
        let known: Vec<String> = proxy
            .stats()
            .services
            .into_iter()
            .map(|s| s.name)
            .chain(dataplane.status().services.into_iter().map(|s| s.name))
            .collect();
        return error(format!(
            "no service named {service:?} on this node; its services: {}",
            known.join(", ")
        ));
    }
    let message = if drained {
        format!(
            "{service} {address}: drained; no new sessions, requests or flows go there, existing              sessions and flows go on (`tandem enable {service} {address}` to undo)"
        )
    } else {
        format!("{service} {address}: back in rotation")
    };
    info!("{message}");
    Reply::Ok {
        body: serde_json::json!({
            "service": service,
            "backend": address,
            "drained": drained,
            "message": message,
        }),
    }
}
