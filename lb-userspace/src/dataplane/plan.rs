//! The data plane's picture of the configuration: which services and backends exist, with the
//! ids the kernel maps use for them, and the Maglev table of an L4 service given which of its
//! backends are up. Pure (no I/O), shared by the XDP data plane and the userspace relay, so
//! both choose the same backend for the same flow.
//!
//! Ids are assigned from the config's order: a service's id is its position among all
//! services (it indexes SERVICE_STATS); an L4 service's ring is its position among L4 services
//! (which Maglev table it uses); backend ids number the L4 services' backends in order (they
//! index BACKENDS and BACKEND_STATS). The same config therefore gives the same ids after a
//! restart, which is what lets a restarted daemon keep the flows in the pinned connection
//! table.

use std::net::{Ipv4Addr, SocketAddrV4};

use lb_common::{MAX_BACKENDS, MAX_L4_SERVICES, MAX_SERVICES};
use serde::Serialize;

use crate::config::{self, Config};
use crate::maglev::{Maglev, DEFAULT_TABLE_SIZE};

/// The services of one node, numbered for the kernel maps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    pub services: Vec<PlannedService>,
    /// The addresses that float between nodes (every `[[vrrp]]` virtual_ipaddress). A TCP or
    /// UDP packet for one of them on a port with no service is dropped; with no VRRP this is
    /// empty, so a standalone node never drops traffic to its own addresses.
    pub vips: Vec<Ipv4Addr>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedService {
    pub name: String,
    pub listen: SocketAddrV4,
    pub mode: config::ServiceMode,
    /// Index into SERVICE_STATS.
    pub id: u32,
    /// Which Maglev table (L4 services only).
    pub ring: Option<u32>,
    pub backends: Vec<PlannedBackend>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlannedBackend {
    pub address: SocketAddrV4,
    pub weight: u32,
    /// Index into BACKENDS (L4 services only; 0 for HTTP services, whose backends the kernel
    /// never sees).
    pub id: u32,
}

/// A configuration the kernel maps cannot hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("{count} services, but the XDP maps hold at most {MAX_SERVICES}")]
    TooManyServices { count: usize },
    #[error("{count} L4 services (mode tcp/udp), but the XDP program has Maglev tables for at most {MAX_L4_SERVICES}; use dataplane = \"none\" (the userspace relay) or fewer L4 services")]
    TooManyL4Services { count: usize },
    #[error("{count} backends over the L4 services, but the XDP maps hold at most {MAX_BACKENDS}")]
    TooManyBackends { count: usize },
}

impl Plan {
    /// Numbers `config`'s services and backends.
    pub fn new(config: &Config) -> Result<Plan, PlanError> {
        if config.services.len() > MAX_SERVICES as usize {
            return Err(PlanError::TooManyServices {
                count: config.services.len(),
            });
        }
        let mut services = Vec::with_capacity(config.services.len());
        let mut next_ring = 0u32;
        let mut next_backend = 0u32;
        for (index, service) in config.services.iter().enumerate() {
            let l4 = service.mode.is_l4();
            let ring = l4.then(|| {
                next_ring += 1;
                next_ring - 1
            });
            let backends = service
                .backends
                .iter()
                .map(|b| PlannedBackend {
                    address: b.address,
                    weight: b.weight,
                    id: if l4 {
                        next_backend += 1;
                        next_backend - 1
                    } else {
                        0
                    },
                })
                .collect();
            services.push(PlannedService {
                name: service.name.clone(),
                listen: service.listen,
                mode: service.mode,
                id: index as u32,
                ring,
                backends,
            });
        }
        if next_ring > MAX_L4_SERVICES {
            return Err(PlanError::TooManyL4Services {
                count: next_ring as usize,
            });
        }
        if next_backend > MAX_BACKENDS {
            return Err(PlanError::TooManyBackends {
                count: next_backend as usize,
            });
        }
        let mut vips: Vec<Ipv4Addr> = config
            .vrrp
            .iter()
            .flat_map(|v| v.virtual_ipaddress.iter().copied())
            .collect();
        vips.sort();
        vips.dedup();
        Ok(Plan { services, vips })
    }

    /// The L4 services (those the data plane forwards itself).
    pub fn l4_services(&self) -> impl Iterator<Item = &PlannedService> {
        self.services.iter().filter(|s| s.mode.is_l4())
    }

    pub fn service(&self, name: &str) -> Option<&PlannedService> {
        self.services.iter().find(|s| s.name == name)
    }
}

impl PlannedService {
    /// The IP protocol of the service's packets.
    pub fn proto(&self) -> u8 {
        self.mode.ip_protocol()
    }

    /// The Maglev table over the backends for which `up` says yes; lookups return indices into
    /// `self.backends`. A backend's identity is its `address:port` text, the same on every node.
    pub fn maglev(&self, up: impl Fn(SocketAddrV4) -> bool) -> Maglev {
        let identities: Vec<String> = self
            .backends
            .iter()
            .map(|b| b.address.to_string())
            .collect();
        let weighted: Vec<(&[u8], u32)> = self
            .backends
            .iter()
            .zip(&identities)
            .map(|(b, identity)| {
                (
                    identity.as_bytes(),
                    if up(b.address) { b.weight } else { 0 },
                )
            })
            .collect();
        Maglev::new(&weighted, DEFAULT_TABLE_SIZE)
    }

    /// The backend for a flow from `client`, as the XDP program and the relay choose it
    /// (without a connection entry): Maglev over the backends that are up, by
    /// [`lb_common::flow_hash`]. `None` when no backend is up.
    pub fn choose(&self, maglev: &Maglev, client: SocketAddrV4) -> Option<&PlannedBackend> {
        let hash = lb_common::flow_hash(
            client.ip().octets(),
            client.port(),
            self.listen.ip().octets(),
            self.listen.port(),
            self.proto(),
        );
        maglev.lookup(hash).map(|i| &self.backends[i])
    }
}

/// A backend's share of its service's Maglev table, for `tandem status` and `tandem maps`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Share {
    pub slots: usize,
    pub percent: f64,
}

impl Share {
    pub fn of(slots: usize, table_len: usize) -> Share {
        Share {
            slots,
            percent: if table_len == 0 {
                0.0
            } else {
                (slots as f64 * 10_000.0 / table_len as f64).round() / 100.0
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> Config {
        config::parse(text, std::path::Path::new("test.toml"))
            .unwrap_or_else(|e| panic!("{e}"))
            .config
    }

    const TWO_SERVICES: &str = r#"
[node]
name = "lb1"
interface = "eth0"

[[vrrp]]
name = "VI_1"
virtual_router_id = 51
virtual_ipaddress = ["198.18.0.99"]

[[service]]
name = "web"
listen = "198.18.0.99:80"
backends = ["198.18.0.102:80", "198.18.0.103:80"]

[[service]]
name = "echo"
listen = "198.18.0.99:7"
mode = "tcp"
backends = ["198.18.0.102:7", "198.18.0.103:7"]

[[service]]
name = "dns"
listen = "198.18.0.99:53"
mode = "udp"
backends = ["198.18.0.102:53"]
"#;

    #[test]
    fn ids_follow_the_config_order_and_only_l4_services_get_tables_and_backend_ids() {
        let plan = Plan::new(&config(TWO_SERVICES)).unwrap();
        assert_eq!(plan.vips, vec![Ipv4Addr::new(198, 18, 0, 99)]);
        let ids: Vec<(u32, Option<u32>)> = plan.services.iter().map(|s| (s.id, s.ring)).collect();
        assert_eq!(ids, vec![(0, None), (1, Some(0)), (2, Some(1))]);
        let backend_ids: Vec<u32> = plan
            .l4_services()
            .flat_map(|s| s.backends.iter().map(|b| b.id))
            .collect();
        assert_eq!(backend_ids, vec![0, 1, 2]);
        assert_eq!(plan.l4_services().count(), 2);
    }

    #[test]
    fn the_choice_is_maglev_by_the_flow_hash_and_avoids_backends_that_are_down() {
        let plan = Plan::new(&config(TWO_SERVICES)).unwrap();
        let echo = plan.service("echo").unwrap();
        let all = echo.maglev(|_| true);
        let client = SocketAddrV4::new(Ipv4Addr::new(198, 18, 0, 10), 40000);
        let hash = lb_common::flow_hash([198, 18, 0, 10], 40000, [198, 18, 0, 99], 7, 6);
        assert_eq!(
            echo.choose(&all, client).map(|b| b.address),
            all.lookup(hash).map(|i| echo.backends[i].address)
        );
        let first = echo.backends[0].address;
        let without_first = echo.maglev(|a| a != first);
        for port in 40000..40100 {
            let chosen = echo
                .choose(&without_first, SocketAddrV4::new(*client.ip(), port))
                .unwrap();
            assert_ne!(chosen.address, first);
        }
        let none = echo.maglev(|_| false);
        assert!(echo.choose(&none, client).is_none());
    }

    #[test]
    fn shares_are_rounded_percentages() {
        assert_eq!(Share::of(32768, 65537).percent, 50.0);
        assert_eq!(Share::of(0, 0).percent, 0.0);
    }
}
