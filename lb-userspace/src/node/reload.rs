//! Reload: what `tandem reload` and SIGHUP do to a running node.
//!
//! A reload reads the config file again and either applies all of it or none of it:
//! 1. the file is validated as `tandem check` does; an error (FILE:LINE:COL) leaves the node
//!    as it was and goes back to whoever asked;
//! 2. a reload changes services and their backends, and the priority of a VRRP instance (as
//!    keepalived's reload does: lowering the master's priority below its peer's hands the VIP
//!    over). A change anywhere else (`[node]`, the rest of `[[vrrp]]`, `[proxy]`,
//!    `[replication]`) needs a restart: the reload is refused and says which settings differ,
//!    so the running node never runs half of a file;
//! 3. everything that can still fail is done before anything changes: the data plane checks
//!    that the services fit its maps, the proxy loads certificates and binds new addresses;
//! 4. then it applies: the proxy's routes (open connections keep going; their next request
//!    follows the new config), the data plane's services and backends (recorded L4 flows keep
//!    their backend when it remains), and the L4 services' health checks. Health, sessions and
//!    counters of backends that remain carry over.
//!
//! [`restart_only_changes`] and [`service_changes`] are pure and say what differs, for the
//! refusal and for the answer to the operator.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Weak};

use serde::Serialize;
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::l4_health::L4Health;
use crate::config::{self, Config, Service};
use crate::dataplane::Dataplane;
use crate::names::{Lookup, NameTable, Resolved};
use crate::proxy::ProxyHandle;

/// What a successful reload changed, one line per change ("service web: backend
/// 198.18.0.104:80 added"); empty when the file is the same as what runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct ReloadReport {
    pub config: PathBuf,
    pub changes: Vec<String>,
    /// What `tandem check` would warn about in the new file.
    pub warnings: Vec<String>,
}

/// The settings only a restart can change, as "where: before -> after" lines.
pub fn restart_only_changes(running: &Config, new: &Config) -> Vec<String> {
    let mut changes = Vec::new();
    diff_section("[node]", &running.node, &new.node, &mut changes);
    diff_section("[proxy]", &running.proxy, &new.proxy, &mut changes);
    match (&running.replication, &new.replication) {
        (None, Some(_)) => changes.push("[replication] added".to_owned()),
        (Some(_), None) => changes.push("[replication] removed".to_owned()),
        (Some(old), Some(new)) => diff_section("[replication]", old, new, &mut changes),
        (None, None) => {}
    }
    // BIRD's config is written at start; its sessions would have to be restarted anyway.
    match (&running.bgp, &new.bgp) {
        (None, Some(_)) => changes.push("[bgp] added".to_owned()),
        (Some(_), None) => changes.push("[bgp] removed".to_owned()),
        (Some(old), Some(new)) => {
            let before = changes.len();
            diff_section("[bgp]", old, new, &mut changes);
            if changes.len() == before && old != new {
                // Only a password differs, and passwords are never shown.
                changes.push("[bgp] a peer's password changed".to_owned());
            }
        }
        (None, None) => {}
    }
    for old in &running.vrrp {
        match new.vrrp.iter().find(|n| n.name == old.name) {
            Some(new) => {
                // The priority changes live (see `priority_changes`), except the owner's.
                let mut same_priority = new.clone();
                if old.priority != 255 && new.priority != 255 {
                    same_priority.priority = old.priority;
                }
                diff_section(
                    &format!("[[vrrp]] {}", old.name),
                    old,
                    &same_priority,
                    &mut changes,
                );
                // The password is not serialized, so the diff cannot see it change; say that
                // it did without saying what it is.
                if let (Some(before), Some(after)) = (&old.authentication, &new.authentication) {
                    if before != after {
                        changes.push(format!(
                            "[[vrrp]] {} authentication.password: changed (not shown)",
                            old.name
                        ));
                    }
                }
            }
            None => changes.push(format!("[[vrrp]] {} removed", old.name)),
        }
    }
    for new in &new.vrrp {
        if !running.vrrp.iter().any(|o| o.name == new.name) {
            changes.push(format!("[[vrrp]] {} added", new.name));
        }
    }
    changes
}

/// The VRRP instances whose priority a reload to `new` changes: (name, before, after). Only
/// meaningful once [`restart_only_changes`] found nothing.
pub fn priority_changes(running: &Config, new: &Config) -> Vec<(String, u8, u8)> {
    running
        .vrrp
        .iter()
        .filter_map(|old| {
            let new = new.vrrp.iter().find(|n| n.name == old.name)?;
            (new.priority != old.priority).then(|| (old.name.clone(), old.priority, new.priority))
        })
        .collect()
}

/// What a reload to `new` does to the services, one line per change.
pub fn service_changes(running: &Config, new: &Config) -> Vec<String> {
    let mut changes = Vec::new();
    for old in &running.services {
        match new.services.iter().find(|n| n.name == old.name) {
            None => changes.push(format!(
                "service {} removed ({} on {})",
                old.name,
                old.mode.as_str(),
                old.listen
            )),
            Some(new) if new != old => describe_service_change(old, new, &mut changes),
            Some(_) => {}
        }
    }
    for new in &new.services {
        if !running.services.iter().any(|o| o.name == new.name) {
            changes.push(format!(
                "service {} added ({} on {}, {} backend{})",
                new.name,
                new.mode.as_str(),
                new.listen,
                new.backends.len(),
                if new.backends.len() == 1 { "" } else { "s" }
            ));
        }
    }
    changes
}

fn describe_service_change(old: &Service, new: &Service, changes: &mut Vec<String>) {
    let name = &old.name;
    for backend in &new.backends {
        match old.backends.iter().find(|b| b.address == backend.address) {
            None => changes.push(format!("service {name}: backend {} added", backend.address)),
            Some(before) if before != backend => {
                let mut lines = Vec::new();
                diff_section("", before, backend, &mut lines);
                for line in lines {
                    changes.push(format!(
                        "service {name}: backend {} {}",
                        backend.address,
                        line.trim_start()
                    ));
                }
            }
            Some(_) => {}
        }
    }
    for backend in &old.backends {
        if !new.backends.iter().any(|b| b.address == backend.address) {
            changes.push(format!(
                "service {name}: backend {} removed",
                backend.address
            ));
        }
    }
    // Everything else of the service, field by field.
    let mut rest = Vec::new();
    let strip = |service: &Service| {
        let mut value = serde_json::to_value(service).unwrap_or(Value::Null);
        if let Some(fields) = value.as_object_mut() {
            fields.remove("backends");
        }
        value
    };
    diff_values("", &strip(old), &strip(new), &mut rest);
    for line in rest {
        changes.push(format!("service {name}: {}", line.trim_start()));
    }
}

/// Appends "`section` key: before -> after" for every leaf that differs.
fn diff_section<T: Serialize>(section: &str, old: &T, new: &T, out: &mut Vec<String>) {
    let old = serde_json::to_value(old).unwrap_or(Value::Null);
    let new = serde_json::to_value(new).unwrap_or(Value::Null);
    diff_values(section, &old, &new, out);
}

fn diff_values(section: &str, old: &Value, new: &Value, out: &mut Vec<String>) {
    let old = flatten(old);
    let new = flatten(new);
    let keys: std::collections::BTreeSet<&String> = old.keys().chain(new.keys()).collect();
    for key in keys {
        let before = old.get(key).map_or("(unset)".to_owned(), Value::to_string);
        let after = new.get(key).map_or("(unset)".to_owned(), Value::to_string);
        if before != after {
            out.push(format!("{section} {key}: {before} -> {after}"));
        }
    }
}

/// Leaves of a JSON value by dotted path ("health.interval"); arrays are leaves.
fn flatten(value: &Value) -> BTreeMap<String, Value> {
    fn walk(prefix: &str, value: &Value, out: &mut BTreeMap<String, Value>) {
        match value {
            Value::Object(fields) => {
                for (key, value) in fields {
                    let path = if prefix.is_empty() {
                        key.clone()
                    } else {
                        format!("{prefix}.{key}")
                    };
                    walk(&path, value, out);
                }
            }
            leaf => {
                out.insert(prefix.to_owned(), leaf.clone());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk("", value, &mut out);
    out
}

/// What runs now: the config as written, the config with its backend names resolved (what
/// every part of the node runs), and the L4 services' health checks.
pub struct Running {
    pub config: Config,
    pub declared: Config,
    pub l4_health: L4Health,
}

/// Everything a reload touches; the supervisor keeps one and calls [`Reloader::reload`] on
/// SIGHUP and on `tandem reload`, and [`Reloader::resolve_names`] every `resolve_interval`.
pub struct Reloader {
    pub path: PathBuf,
    /// The VRRP instances, whose priority a reload may change.
    pub instances: Vec<crate::vrrp::instance::InstanceHandle>,
    pub running: tokio::sync::Mutex<Running>,
    pub names: Arc<NameTable>,
    pub proxy: Weak<ProxyHandle>,
    pub dataplane: Arc<dyn Dataplane>,
    pub shutdown: CancellationToken,
}

impl Reloader {
    /// Reads the file again and applies it, or changes nothing and says why (in the log too).
    pub async fn reload(&self) -> Result<ReloadReport, String> {
        crate::systemd::reloading();
        let result = self.try_reload().await;
        if let Err(message) = &result {
            error!("reload refused: {message}");
        }
        crate::systemd::reloaded();
        result
    }

    async fn try_reload(&self) -> Result<ReloadReport, String> {
        let mut running = self.running.lock().await;
        let loaded = config::load(&self.path).map_err(|diagnostics| {
            format!(
                "the new configuration has errors; the node keeps running the previous one. \
                 Fix them (`tandem check` shows the same) and reload again:\n{diagnostics}"
            )
        })?;
        let declared = loaded.config;
        let (new, resolved) = self
            .names
            .expand(&declared, Lookup::All)
            .await
            .map_err(|err| format!("{}: {err}; nothing was changed", self.path.display()))?;
        let restart = restart_only_changes(&running.config, &new);
        if !restart.is_empty() {
            return Err(format!(
                "{}: these settings change only with a restart (`systemctl restart tandem`); nothing was changed:\n  {}",
                self.path.display(),
                restart.join("\n  ")
            ));
        }
        let priorities = priority_changes(&running.config, &new);
        let mut changes = service_changes(&running.config, &new);
        changes.extend(
            priorities.iter().map(|(name, before, after)| {
                format!("[[vrrp]] {name} priority: {before} -> {after}")
            }),
        );
        let warnings = loaded.warnings.iter().map(ToString::to_string).collect();
        if changes.is_empty() {
            // The same services; certificates are still read again (they may have been renewed).
            info!(config = %self.path.display(), "reload: no change to the services");
        }
        let failures = self
            .apply_services(&mut running, new, declared, resolved)
            .await
            .map_err(|err| format!("{}: {err}; nothing was changed", self.path.display()))?;
        for (name, _, after) in &priorities {
            if let Some(instance) = self.instances.iter().find(|i| i.name() == name) {
                instance.set_priority(*after);
            }
        }
        for change in &changes {
            info!(config = %self.path.display(), "reload: {change}");
        }
        if !failures.is_empty() {
            return Err(format!(
                "{}: the proxy runs the new services, but {}",
                self.path.display(),
                failures.join("; ")
            ));
        }
        info!(config = %self.path.display(), changes = changes.len(), "reloaded");
        Ok(ReloadReport {
            config: self.path.clone(),
            changes,
            warnings,
        })
    }

    /// Resolves again the backend names whose `resolve_interval` has passed, and applies the
    /// addresses that changed as a reload of the same file would (backends that remain keep
    /// their health and sessions). A name that stops resolving keeps its last addresses.
    pub async fn resolve_names(&self) {
        let mut running = self.running.lock().await;
        let now = std::time::Instant::now();
        if !self.names.any_due(&running.declared, now) {
            return;
        }
        let expanded = self.names.expand(&running.declared, Lookup::Due(now)).await;
        let (new, resolved) = match expanded {
            Ok(expanded) => expanded,
            Err(err) => {
                warn!("resolving backend names: {err}");
                return;
            }
        };
        for change in &resolved.changes {
            info!("{change}");
        }
        if new.services == running.config.services {
            self.names.commit(resolved);
            return;
        }
        let changes = service_changes(&running.config, &new);
        let declared = running.declared.clone();
        match self
            .apply_services(&mut running, new, declared, resolved)
            .await
        {
            Ok(failures) => {
                for change in &changes {
                    info!("backend names: {change}");
                }
                for failure in failures {
                    warn!("backend names: {failure}");
                }
            }
            Err(err) => warn!("backend names: the new addresses cannot apply: {err}"),
        }
    }

    /// Applies `new` (the expanded form of `declared`) to the proxy, the data plane and the L4
    /// health checks. `Err`: refused before anything changed. `Ok`: applied; what failed
    /// after the proxy switched is listed.
    async fn apply_services(
        &self,
        running: &mut Running,
        new: Config,
        declared: Config,
        resolved: Resolved,
    ) -> Result<Vec<String>, String> {
        self.dataplane
            .check_reconfigure(&new)
            .map_err(|err| format!("{err:#}"))?;
        let proxy = self.proxy.upgrade().ok_or("the node is stopping")?;
        let prepared = proxy
            .prepare_reload(&new)
            .map_err(|err| format!("{err:#}"))?;
        // From here on the new config applies.
        proxy.commit_reload(prepared).await;
        drop(proxy);
        self.names.commit(resolved);
        let mut failures = Vec::new();
        if let Err(err) = self.dataplane.reconfigure(&new).await {
            warn!("reload: updating the data plane: {err:#}");
            failures.push(format!("updating the data plane: {err:#}"));
        }
        running
            .l4_health
            .apply(&new, &self.dataplane, &self.shutdown);
        running.config = new;
        running.declared = declared;
        Ok(failures)
    }
}

/// Every second, resolves again the backend names whose `resolve_interval` has passed (see
/// [`Reloader::resolve_names`]); a reload may add or remove names at any time.
pub async fn resolve_names_periodically(
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

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn config(node_name: &str, priority: u8, services: &str) -> Config {
        let text = format!(
            "[node]\nname = \"{node_name}\"\ninterface = \"eth0\"\ndataplane = \"none\"\n\
             [[vrrp]]\nname = \"VI_1\"\nvirtual_router_id = 51\npriority = {priority}\n\
             virtual_ipaddress = [\"198.18.0.99\"]\n{services}"
        );
        match config::parse(&text, Path::new("t.toml")) {
            Ok(loaded) => loaded.config,
            Err(errors) => panic!("test config: {errors}"),
        }
    }

    const WEB: &str = "[[service]]\nname = \"web\"\nlisten = \"198.18.0.99:80\"\n\
                       backends = [\"198.18.0.102:80\", \"198.18.0.103:80\"]\n";

    #[test]
    fn the_same_file_changes_nothing() {
        let running = config("lb1", 101, WEB);
        assert!(restart_only_changes(&running, &running.clone()).is_empty());
        assert!(service_changes(&running, &running.clone()).is_empty());
    }

    #[test]
    fn node_settings_need_a_restart_and_a_vrrp_priority_changes_live() {
        let running = config("lb1", 101, WEB);
        let new = config("lb9", 90, WEB);
        assert_eq!(
            restart_only_changes(&running, &new),
            vec!["[node] name: \"lb1\" -> \"lb9\"".to_owned()]
        );
        assert_eq!(
            priority_changes(&running, &new),
            vec![("VI_1".to_owned(), 101, 90)]
        );
        // Becoming (or ceasing to be) the address owner changes how the instance starts.
        let owner = config("lb1", 255, WEB);
        assert_eq!(
            restart_only_changes(&running, &owner),
            vec!["[[vrrp]] VI_1 priority: 101 -> 255".to_owned()]
        );
    }

    #[test]
    fn a_vrrp_password_change_needs_a_restart_and_is_not_shown() {
        let with = |password: &str| {
            config(
                "lb1",
                101,
                &format!(
                    "version = 2\nauthentication = {{ type = \"PASS\", password = \"{password}\" }}\n"
                ),
            )
        };
        let running = with("secret");
        assert!(restart_only_changes(&running, &with("secret")).is_empty());
        assert_eq!(
            restart_only_changes(&running, &with("other")),
            vec!["[[vrrp]] VI_1 authentication.password: changed (not shown)".to_owned()]
        );
        let without = config("lb1", 101, "version = 2\n");
        let added = restart_only_changes(&without, &running);
        assert_eq!(
            added,
            vec!["[[vrrp]] VI_1 authentication.type: (unset) -> \"PASS\"".to_owned()]
        );
        assert!(!format!("{running:?}{added:?}").contains("secret"));
    }

    #[test]
    fn backend_changes_are_listed_one_per_line() {
        let running = config("lb1", 101, WEB);
        let new = config(
            "lb1",
            101,
            "[[service]]\nname = \"web\"\nlisten = \"198.18.0.99:80\"\n\
             backends = [{ address = \"198.18.0.103:80\", weight = 3 }, \"198.18.0.104:80\"]\n\
             health = { interval = \"1s\" }\n\
             [[service]]\nname = \"ssh\"\nlisten = \"198.18.0.99:22\"\nmode = \"tcp\"\n\
             backends = [\"198.18.0.102:22\"]\n",
        );
        assert!(restart_only_changes(&running, &new).is_empty());
        assert_eq!(
            service_changes(&running, &new),
            vec![
                "service web: backend 198.18.0.103:80 weight: 1 -> 3".to_owned(),
                "service web: backend 198.18.0.104:80 added".to_owned(),
                "service web: backend 198.18.0.102:80 removed".to_owned(),
                "service web: health.interval: \"2s\" -> \"1s\"".to_owned(),
                "service ssh added (tcp on 198.18.0.99:22, 1 backend)".to_owned(),
            ]
        );
        assert_eq!(
            service_changes(&new, &running),
            vec![
                "service web: backend 198.18.0.102:80 added".to_owned(),
                "service web: backend 198.18.0.103:80 weight: 3 -> 1".to_owned(),
                "service web: backend 198.18.0.104:80 removed".to_owned(),
                "service web: health.interval: \"1s\" -> \"2s\"".to_owned(),
                "service ssh removed (tcp on 198.18.0.99:22)".to_owned(),
            ]
        );
    }
}
