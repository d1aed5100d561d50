//! The node supervisor: what `tandem run` is. It starts the parts in order, wires VRRP
//! transitions to the data plane and the VIPs, serves the control socket, reloads the services
//! on SIGHUP or `tandem reload` (see [`reload`]), and on SIGINT or SIGTERM stops them in
//! the reverse order (a master sends priority 0 and drops its VIPs first,
//! so the backup takes over after its skew time alone).
//!
//! With no `[[vrrp]]` instance the node serves on its own, as if it were always master.
//!
//! This file holds the start and stop order only. Beside it: `control` (the commands of the
//! control socket), `reload` (what a reload changes, all or nothing, and the periodic
//! re-resolution of backend names), `l4_health` (the L4 services' checks the data plane
//! follows), `probe` (the built-in proxy check) and `mastership` (what a VRRP transition does
//! to the data plane).

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;
use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

mod control;
pub mod l4_health;
mod mastership;
mod probe;
pub mod reload;

use crate::backends::health::HealthChecks;
use crate::config;
use crate::dataplane::{self, Dataplane};
use crate::names::{Lookup, NameTable};
use crate::vrrp::held::HeldVips;
use crate::vrrp::instance::{self, InstanceHandle, Mastership};
use crate::vrrp::link::Netlink;
use l4_health::L4Health;
use mastership::NodeMastership;
use probe::spawn_proxy_probe;
use reload::{resolve_names_periodically, Reloader, Running};

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
    crate::fault_injection::spawn_panicking_task();

    // The L7 proxy binds its listeners (IP_FREEBIND) before any VIP is here.
    // Every service's health checks, HTTP and L4, run through one registry.
    let health_checks = Arc::new(HealthChecks::default());
    let proxy = crate::proxy::start(&config, Arc::clone(&health_checks), shutdown.child_token())
        .await
        .context("starting the L7 proxy")?;

    // XDP when it loads (native, else generic), the userspace relay otherwise; nothing is
    // forwarded until the node becomes master.
    let dataplane: Arc<dyn Dataplane> = Arc::from(dataplane::open(&config).await?);
    give_up_bpf_capabilities();
    // With `[replication]`, L4 flows go to the peers over the sessions' link, so a flow the
    // router moves to another node keeps its backend while the nodes' backend sets differ.
    if let Some(replicator) = proxy.replicator() {
        dataplane.share_flows(replicator, shutdown.child_token());
    }
    let mastership: Arc<dyn Mastership> = Arc::new(NodeMastership {
        dataplane: dataplane.clone(),
        always_active: config.bgp.is_some(),
    });
    // TCP backends are probed like the proxy's; a change rebuilds that service's Maglev table.
    let l4_health = L4Health::start(&config, Arc::clone(&health_checks), &dataplane, &shutdown);

    let proxy = Arc::new(proxy);
    let proxy_up = if config.services.iter().any(|service| !service.mode.is_l4()) {
        Some(spawn_proxy_probe(proxy.clone(), shutdown.child_token()))
    } else {
        None
    };

    let mut instances: Vec<InstanceHandle> = Vec::new();
    let mut instance_tasks = Vec::new();
    let vrrp_shutdown = shutdown.child_token();
    let netlink = if config.vrrp.is_empty() && config.bgp.is_none() {
        None
    } else {
        Some(Netlink::connect()?)
    };
    if let Some(netlink) = netlink.as_ref().filter(|_| !config.vrrp.is_empty()) {
        let held = HeldVips::beside_socket(&config.node.control_socket);
        for instance_config in &config.vrrp {
            let resources = instance::Resources {
                netlink: netlink.clone(),
                mastership: mastership.clone(),
                proxy_up: proxy_up.clone(),
                held: held.clone(),
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
    }
    if config.vrrp.is_empty() {
        mastership.becoming_master("(no VRRP: always active)").await;
    } else if config.bgp.is_some() {
        mastership.becoming_master("([bgp]: always active)").await;
    }

    // Started last: a VIP is announced only once everything that serves it runs.
    let bgp = match (&config.bgp, &netlink) {
        (Some(bgp_config), Some(netlink)) => {
            let sources = crate::bgp::Sources {
                proxy: Arc::downgrade(&proxy),
                dataplane: dataplane.clone(),
                proxy_up: proxy_up.clone(),
            };
            let run_dir = config.node.control_socket.with_extension("bird");
            match crate::bgp::BgpSpeaker::start(bgp_config, &run_dir, sources, netlink.clone())
                .await
            {
                Ok(speaker) => Some(Arc::new(speaker)),
                Err(err) => {
                    vrrp_shutdown.cancel();
                    for task in instance_tasks {
                        let _ = task.await;
                    }
                    dataplane.shutdown().await;
                    return Err(err.context("starting BGP"));
                }
            }
        }
        _ => None,
    };

    let parts = control::Parts {
        node: config.node.name.clone(),
        started,
        instances: instances.clone(),
        proxy: Arc::downgrade(&proxy),
        dataplane: dataplane.clone(),
        names: Arc::clone(&names),
        bgp: bgp.clone(),
    };
    let metrics_task = match config.node.metrics {
        Some(address) => {
            let source = parts.metrics_source();
            match crate::metrics::serve(address, source, shutdown.child_token()).await {
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
    let handler = control::handler(parts, Arc::downgrade(&reloader));
    let control_task = match crate::control::server::serve(
        &config.node.control_socket,
        handler,
        shutdown.child_token(),
    )
    .await
    {
        Ok(task) => Some(task),
        Err(err) => {
            warn!("{err:#}; `tandem status` will not reach this daemon");
            None
        }
    };

    info!("running; stop with SIGINT or SIGTERM, reload the services with SIGHUP");
    let mut last_status = systemd_status(&instances, bgp.as_deref());
    crate::systemd::ready(&last_status);
    // WATCHDOG=1 at half of WatchdogSec= (or never), STATUS= when it changes (checked each
    // second). Both come from this loop: if it stops turning, systemd restarts the daemon.
    let mut watchdog = crate::systemd::watchdog_interval().map(tokio::time::interval);
    let mut status_tick = tokio::time::interval(std::time::Duration::from_secs(1));
    let signal_name = loop {
        tokio::select! {
            _ = sigterm.recv() => break "SIGTERM",
            _ = sigint.recv() => break "SIGINT",
            _ = async {
                match watchdog.as_mut() {
                    Some(interval) => interval.tick().await,
                    None => std::future::pending().await,
                }
            } => {
                if proxy.workers_alive() {
                    crate::systemd::watchdog();
                } else {
                    error!("a proxy worker thread ended: no watchdog keepalive, systemd will restart the daemon");
                }
            }
            _ = status_tick.tick() => {
                let status = systemd_status(&instances, bgp.as_deref());
                if status != last_status {
                    crate::systemd::status(&status);
                    last_status = status;
                }
            }
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
    crate::systemd::stopping();
    // The routers first: new flows go to the other nodes while this one finishes its own.
    if let Some(bgp) = &bgp {
        bgp.withdraw_for_stop().await;
    }
    vrrp_shutdown.cancel();
    for task in instance_tasks {
        if let Err(err) = task.await {
            error!("a VRRP instance task failed: {err}");
        }
    }
    // Without VRRP the node stays "master" across a restart: the data plane is left as it is
    // (Dataplane::shutdown below), so established L4 flows go on while the daemon restarts.
    shutdown.cancel();
    proxy.stopped().await;
    let _ = resolver_task.await;
    if let Some(task) = control_task {
        let _ = task.await;
    }
    if let Some(task) = metrics_task {
        let _ = task.await;
    }
    if let Some(bgp) = &bgp {
        bgp.stop().await;
    }
    dataplane.shutdown().await;
    info!("stopped");
    Ok(())
}

/// The one line `systemctl status tandem` shows: each VRRP instance's state and the BGP VIPs.
fn systemd_status(instances: &[InstanceHandle], bgp: Option<&crate::bgp::BgpSpeaker>) -> String {
    let mut parts: Vec<String> = instances
        .iter()
        .map(|instance| {
            let status = instance.status();
            format!("{} {}", status.name, status.state)
        })
        .collect();
    if let Some(bgp) = bgp {
        let status = bgp.status();
        let announced = status.vips.iter().filter(|vip| vip.announced).count();
        let established = status
            .sessions
            .iter()
            .filter(|session| session.established())
            .count();
        parts.push(format!(
            "BGP {announced}/{} VIPs announced, {established}/{} sessions established{}",
            status.vips.len(),
            status.sessions.len(),
            if status.drained { ", drained" } else { "" }
        ));
    }
    if parts.is_empty() {
        parts.push("serving (no VRRP: always active)".to_owned());
    }
    parts.join("; ")
}

/// Once the data plane is open, programs are never loaded nor maps created again (data plane
/// settings change only with a restart), so CAP_BPF and CAP_PERFMON go, in every thread: a
/// flaw in the daemon after start-up cannot load BPF code. Kept on kernels before 6.5, where
/// every bpf(2) call checks CAP_BPF (Debian's `kernel.unprivileged_bpf_disabled`), including
/// the map updates of each mastership change and reload.
fn give_up_bpf_capabilities() {
    use crate::capabilities::{self, Capability};
    if !capabilities::kernel_checks_bpf_only_at_load() {
        info!("keeping CAP_BPF and CAP_PERFMON: this kernel (before 6.5) checks them on every map update");
        return;
    }
    match capabilities::drop_everywhere(&[Capability::Bpf, Capability::Perfmon]) {
        Ok(()) => info!("gave up CAP_BPF and CAP_PERFMON: the XDP program is loaded"),
        Err(err) => warn!("could not give up CAP_BPF and CAP_PERFMON: {err}"),
    }
}
