//! The L4 link of backend health: the checks of the L4 TCP services (the proxy keeps its own
//! services'), which the data plane follows to rebuild a service's Maglev table when a backend
//! goes down or comes back.

use std::collections::HashMap;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::backends::health::{self, HealthTable};
use crate::config::{self, Config, Service};
use crate::dataplane::Dataplane;

/// The health checks of the L4 TCP services (the proxy keeps its own services'), which the
/// data plane follows. UDP has no answer to probe for in general, so UDP backends count as up.
pub struct L4Health {
    running: HashMap<String, (Service, Arc<HealthTable>, CancellationToken)>,
}

impl L4Health {
    /// Starts the checks of `config`'s TCP services and has `dataplane` follow them.
    pub fn start(
        config: &Config,
        dataplane: &Arc<dyn Dataplane>,
        shutdown: &CancellationToken,
    ) -> L4Health {
        let mut health = L4Health {
            running: HashMap::new(),
        };
        health.apply(config, dataplane, shutdown);
        health
    }

    /// Brings the checks in line with `config`: unchanged services keep theirs; a changed
    /// service gets a new table that carries over what is known of its remaining backends;
    /// checks of services that are gone stop.
    pub fn apply(
        &mut self,
        config: &Config,
        dataplane: &Arc<dyn Dataplane>,
        shutdown: &CancellationToken,
    ) {
        let wanted: Vec<&Service> = config
            .services
            .iter()
            .filter(|service| service.mode == config::ServiceMode::Tcp)
            .collect();
        let mut replaced: HashMap<String, Arc<HealthTable>> = HashMap::new();
        self.running.retain(|name, (service, table, stop)| {
            let keep = wanted.iter().any(|w| *w == service);
            if !keep {
                stop.cancel();
                replaced.insert(name.clone(), Arc::clone(table));
            }
            keep
        });
        for service in wanted {
            if self.running.contains_key(&service.name) {
                continue;
            }
            let table = HealthTable::new(service);
            if let Some(previous) = replaced.get(&service.name) {
                table.carry_over(previous);
            }
            let stop = shutdown.child_token();
            health::spawn_checks(service, table.clone(), stop.clone());
            dataplane.follow_health(&service.name, table.clone(), stop.clone());
            self.running
                .insert(service.name.clone(), (service.clone(), table, stop));
        }
    }
}
