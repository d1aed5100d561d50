//! The node supervisor: what `tandem run` is. It starts the parts in order, wires VRRP
//! transitions to the data plane and the VIPs, serves the control socket, reloads the services
//! on SIGHUP or `tandem reload` (see [`crate::reload`]), and on SIGINT or SIGTERM stops them in
//! the reverse order (a master sends priority 0 and drops its VIPs first,
//! so the backup takes over after its skew time alone).
//!
//! With no `[[vrrp]]` instance the node serves on its own, as if it were always master.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;
use futures::future::BoxFuture;
use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::config;
use crate::control::{self, NodeStatus, Reply};
use crate::dataplane::{self, Dataplane};
use crate::names::{Lookup, NameTable};
use crate::reload::{L4Health, Reloader, Running};
use crate::vrrp::instance::{self, InstanceHandle, Mastership};
use crate::vrrp::link::Netlink;

/// Runs the node until SIGINT or SIGTERM.
pub async fn run(path: &Path, declared: config::Config) -> anyhow::Result<()> {
    let started = Instant::now();
    // Backends written by name become addresses before anything starts; a name that does not
    // resolve stops the start here, with nothing changed.
    let names = Arc::new(NameTable::default());
    let (config, resolved) = names
        .expand(&declared, Lookup::All)
        .await
        .map_err(|err| anyhow::anyhow!("{}: {err}", path.display()))?;
    for status in resolved.statuses() {
        info!(service = %status.service, name = %status.name, addresses = ?status.addresses, "backend name resolved");
    }
    names.commit(resolved);
    let node = &config.node;
    info!(config = %path.display(), node = %node.name, interface = %node.interface, dataplane = node.dataplane.as_str(), "loaded configuration");
    for instance in &config.vrrp {
        info!(instance = %instance.name, vrid = instance.virtual_router_id, priority = instance.priority, version = instance.version, vips = ?instance.virtual_ipaddress, "VRRP instance");
    }
    for service in &config.services {
        info!(service = %service.name, listen = %service.listen, mode = service.mode.as_str(), backends = service.backends.len(), "service");
    }

    // Signals are hooked before anything is touched, so a SIGTERM during start-up still goes
    // through the clean stop below.
    let mut sigterm = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut sigint = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut sighup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    let shutdown = CancellationToken::new();

    // The L7 proxy binds its listeners (IP_FREEBIND) before any VIP is here.
    let proxy = crate::proxy::start(&config, shutdown.child_token())
        .await
        .context("starting the L7 proxy")?;

    // XDP when it loads (native, else generic), the userspace relay otherwise; nothing is
    // forwarded until the node becomes master.
    let dataplane: Arc<dyn Dataplane> = Arc::from(dataplane::open(&config).await?);
    let mastership: Arc<dyn Mastership> = Arc::new(NodeMastership {
        dataplane: dataplane.clone(),
    });
    // TCP backends are probed like the proxy's; a change rebuilds that service's Maglev table.
    let l4_health = L4Health::start(&config, &dataplane, &shutdown);

    let proxy = Arc::new(proxy);
    let proxy_up = if config.services.iter().any(|service| !service.mode.is_l4()) {
        Some(spawn_proxy_probe(proxy.clone(), shutdown.child_token()))
    } else {
        None
    };

    let mut instances: Vec<InstanceHandle> = Vec::new();
    let mut instance_tasks = Vec::new();
    let vrrp_shutdown = shutdown.child_token();
    if !config.vrrp.is_empty() {
        let netlink = Netlink::connect()?;
        for instance_config in &config.vrrp {
            let resources = instance::Resources {
                netlink: netlink.clone(),
                mastership: mastership.clone(),
                proxy_up: proxy_up.clone(),
            };
            match instance::start(instance_config.clone(), resources, vrrp_shutdown.clone()).await {
                Ok((handle, task)) => {
                    instances.push(handle);
                    instance_tasks.push(task);
                }
                Err(err) => {
                    // Stop what was started: no instance may be left half-running.
                    vrrp_shutdown.cancel();
                    for task in instance_tasks {
                        let _ = task.await;
                    }
                    dataplane.shutdown().await;
                    return Err(
                        err.context(format!("starting VRRP instance {}", instance_config.name))
                    );
                }
            }
        }
    } else {
        mastership.becoming_master("(no VRRP: always active)").await;
    }

    let status_source = {
        let instances = instances.clone();
        let name = config.node.name.clone();
        let dataplane = dataplane.clone();
        let status_proxy = Arc::downgrade(&proxy);
        let status_names = Arc::clone(&names);
        Arc::new(move || NodeStatus {
            node: name.clone(),
            pid: std::process::id(),
            uptime_seconds: started.elapsed().as_secs_f64(),
            vrrp: instances.iter().map(InstanceHandle::status).collect(),
            services: status_proxy
                .upgrade()
                .map(|proxy| proxy.service_status())
                .unwrap_or_default(),
            dataplane: serde_json::to_value(dataplane.status()).ok(),
            backend_names: status_names.status(),
        })
    };
    let metrics_task = match config.node.metrics {
        Some(address) => {
            let instances = instances.clone();
            let dataplane = dataplane.clone();
            let metrics_proxy = Arc::downgrade(&proxy);
            let source: crate::metrics::Source = Arc::new(move || crate::metrics::Snapshot {
                vrrp: instances.iter().map(InstanceHandle::status).collect(),
                services: metrics_proxy
                    .upgrade()
                    .map(|proxy| proxy.service_snapshots())
                    .unwrap_or_default(),
                dataplane: Some(dataplane.status()),
            });
            match crate::metrics::serve(address.into(), source, shutdown.child_token()).await {
                Ok((bound, task)) => {
                    info!(address = %bound, "serving Prometheus metrics at /metrics");
                    Some(task)
                }
                Err(err) => {
                    warn!("{err:#}; no metrics will be served");
                    None
                }
            }
        }
        None => None,
    };
    let reloader = Arc::new(Reloader {
        path: std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf()),
        instances: instances.clone(),
        running: tokio::sync::Mutex::new(Running {
            config: config.clone(),
            declared,
            l4_health,
        }),
        names: Arc::clone(&names),
        proxy: Arc::downgrade(&proxy),
        dataplane: dataplane.clone(),
        shutdown: shutdown.clone(),
    });
    let resolver_task = tokio::spawn(resolve_names_periodically(
        Arc::downgrade(&reloader),
        shutdown.child_token(),
    ));
    let handler: control::server::Handler = {
        let reloader = Arc::downgrade(&reloader);
        let drain_proxy = Arc::downgrade(&proxy);
        let drain_dataplane = dataplane.clone();
        Arc::new(move |words: Vec<String>| {
            let status_source = status_source.clone();
            let reloader = reloader.clone();
            let drain_proxy = drain_proxy.clone();
            let drain_dataplane = drain_dataplane.clone();
            Box::pin(async move {
                match words[0].as_str() {
                    "status" => match serde_json::to_value(status_source()) {
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
                    verb @ ("drain" | "enable") => {
                        drain(&words[1..], verb == "drain", &drain_proxy, &drain_dataplane).await
                    }
                    other => Reply::Error {
                        message: format!(
                            "unknown command {other:?}; this daemon knows: status, reload, drain, enable"
                        ),
                    },
                }
            }) as BoxFuture<'static, Reply>
        })
    };
    let control_task =
        match control::server::serve(&config.node.control_socket, handler, shutdown.child_token())
            .await
        {
            Ok(task) => Some(task),
            Err(err) => {
                warn!("{err:#}; `tandem status` will not reach this daemon");
                None
            }
        };

    info!("running; stop with SIGINT or SIGTERM, reload the services with SIGHUP");
    let signal_name = loop {
        tokio::select! {
            _ = sigterm.recv() => break "SIGTERM",
            _ = sigint.recv() => break "SIGINT",
            _ = sighup.recv() => {
                info!(config = %reloader.path.display(), "SIGHUP: reloading");
                match reloader.reload().await {
                    Ok(report) if report.changes.is_empty() => info!("reload done: no change"),
                    Ok(report) => info!(changes = report.changes.len(), "reload done"),
                    Err(_) => {} // logged by the reload
                }
            }
        }
    };
    drop(reloader);
    info!(signal = signal_name, "stopping");
    vrrp_shutdown.cancel();
    for task in instance_tasks {
        if let Err(err) = task.await {
            error!("a VRRP instance task failed: {err}");
        }
    }
    // Without VRRP the node stays "master" across a restart: the data plane is left as it is
    // (Dataplane::shutdown below), so established L4 flows go on while the daemon restarts.
    shutdown.cancel();
    // A probe in flight holds the proxy for at most its timeout.
    let mut proxy = proxy;
    for _ in 0..100 {
        match Arc::try_unwrap(proxy) {
            Ok(owned) => {
                owned.stopped().await;
                break;
            }
            Err(shared) => {
                proxy = shared;
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        }
    }
    let _ = resolver_task.await;
    if let Some(task) = control_task {
        let _ = task.await;
    }
    if let Some(task) = metrics_task {
        let _ = task.await;
    }
    dataplane.shutdown().await;
    info!("stopped");
    Ok(())
}

/// `tandem drain SERVICE BACKEND` (`drained`) and `tandem enable SERVICE BACKEND`: the HTTP
/// service's proxy or the L4 service's data plane takes the backend out of rotation (its
/// sessions and recorded flows go on) or puts it back.
async fn drain(
    args: &[String],
    drained: bool,
    proxy: &std::sync::Weak<crate::proxy::ProxyHandle>,
    dataplane: &Arc<dyn Dataplane>,
) -> Reply {
    let error = |message: String| Reply::Error { message };
    let [service, backend] = args else {
        return error("usage: drain|enable SERVICE BACKEND (e.g. web 198.18.0.102:80)".to_owned());
    };
    let Ok(address) = backend.parse::<std::net::SocketAddrV4>() else {
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

/// How often the built-in proxy check probes the proxy, and how many probes in a row must fail
/// before it counts as down (one slow answer under load is not a dead proxy).
const PROXY_PROBE_INTERVAL: std::time::Duration = std::time::Duration::from_millis(200);
const PROXY_PROBE_FALL: u32 = 2;

/// The built-in VRRP tracker (`track = [{ builtin = "proxy" }]`): probes the proxy from inside
/// the process and publishes whether it is up. The probe task ends with `shutdown`; the probe
/// holds its own reference to the proxy only while a probe runs.
fn spawn_proxy_probe(
    proxy: Arc<crate::proxy::ProxyHandle>,
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

/// What the node does when an instance gains or loses mastership.
struct NodeMastership {
    dataplane: Arc<dyn Dataplane>,
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

/// Every second, resolves again the backend names whose `resolve_interval` has passed (see
/// [`Reloader::resolve_names`]); a reload may add or remove names at any time.
async fn resolve_names_periodically(
    reloader: std::sync::Weak<Reloader>,
    shutdown: CancellationToken,
) {
    let mut ticks = tokio::time::interval(std::time::Duration::from_secs(1));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let Some(reloader) = reloader.upgrade() else {
            return;
        };
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = reloader.resolve_names() => {}
        }
    }
}
