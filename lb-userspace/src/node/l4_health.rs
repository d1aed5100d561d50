//! The L4 link of backend health: the checks of the L4 TCP services (the proxy keeps its own
//! services'), which the data plane follows to rebuild a service's Maglev table when a backend
//! goes down or comes back.

use std::collections::HashMap;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::backends::health::{HealthChecks, HealthTable};
use crate::config::{self, Config, Service};
use crate::dataplane::Dataplane;

/// The L4 TCP services' health checks (run by the node's [`HealthChecks`], like the proxy's
/// services'), which the data plane follows. UDP has no answer to probe for in general, so UDP
/// backends count as up.
pub struct L4Health {
    checks: Arc<HealthChecks>,
    running: HashMap<String, (Service, CancellationToken)>,
}

impl L4Health {
    /// Starts the checks of `config`'s TCP services and has `dataplane` follow them.
    pub fn start(
        config: &Config,
        checks: Arc<HealthChecks>,
        dataplane: &Arc<dyn Dataplane>,
        shutdown: &CancellationToken,
    ) -> L4Health {
        let mut health = L4Health {
            checks,
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
        // Tables first, while the checks they replace still run: a changed service's table
        // carries over what those know.
        let fresh: Vec<(&Service, Arc<HealthTable>)> = wanted
            .iter()
            .filter(|service| {
                self.running
                    .get(&service.name)
                    .is_none_or(|(running, _)| running != **service)
            })
            .map(|service| (*service, self.checks.table_for(service)))
            .collect();
        self.running.retain(|_, (service, stop)| {
            let keep = wanted.iter().any(|w| *w == service);
            if !keep {
                stop.cancel();
            }
            keep
        });
        for (service, table) in fresh {
            let stop = shutdown.child_token();
            self.checks.run(service, &table, &stop);
            dataplane.follow_health(&service.name, table, stop.clone());
            self.running
                .insert(service.name.clone(), (service.clone(), stop));
        }
    }
}
