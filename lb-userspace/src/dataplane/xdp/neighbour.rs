//! Backend MAC addresses, from the kernel's neighbour table (ARP for IPv4, neighbour
//! discovery for IPv6).
//!
//! Direct server return rewrites only the destination MAC, so the XDP program needs each
//! backend's MAC on the shared segment. The kernel already learns them by ARP; this module
//! reads its table with rtnetlink and, for an address with no usable entry, makes the kernel
//! resolve it by sending one empty UDP datagram to the backend's discard port (the kernel
//! sends an ARP request or a neighbour solicitation before it can send; the backend answers at most with an ICMP port unreachable). Since
//! the XDP program's frames bypass the neighbour subsystem, entries age to STALE: they are
//! still correct, and a periodic probe keeps them confirmed.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use futures::TryStreamExt as _;
use rtnetlink::packet_route::neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourState};
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::Handle;
use tracing::debug;

/// The discard port: a probe datagram sent there is useless to the backend by definition.
const PROBE_PORT: u16 = 9;

/// A neighbour entry as the data plane uses it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Neighbour {
    pub mac: [u8; 6],
    /// REACHABLE, PERMANENT or NOARP: confirmed recently (or for good). STALE, DELAY and PROBE
    /// still carry a MAC, which is kept, but deserve a probe.
    pub confirmed: bool,
}

/// Reads (and provokes) neighbour entries on one interface.
#[derive(Clone)]
pub struct Neighbours {
    handle: Handle,
    if_index: u32,
}

impl Neighbours {
    /// Opens a route netlink connection driven on the current tokio runtime.
    pub fn connect(if_index: u32) -> std::io::Result<Neighbours> {
        let (connection, handle, _) = rtnetlink::new_connection()?;
        tokio::spawn(connection);
        Ok(Neighbours { handle, if_index })
    }

    /// The entries with a MAC for `addresses` on the interface (one table dump per family
    /// asked about).
    pub async fn lookup(
        &self,
        addresses: &[IpAddr],
    ) -> Result<HashMap<IpAddr, Neighbour>, rtnetlink::Error> {
        let mut found = HashMap::new();
        if addresses.iter().any(IpAddr::is_ipv4) {
            self.dump(AddressFamily::Inet, addresses, &mut found)
                .await?;
        }
        if addresses.iter().any(IpAddr::is_ipv6) {
            self.dump(AddressFamily::Inet6, addresses, &mut found)
                .await?;
        }
        Ok(found)
    }

    /// Adds the entries of one family's table that are for `addresses` to `found`.
    async fn dump(
        &self,
        family: AddressFamily,
        addresses: &[IpAddr],
        found: &mut HashMap<IpAddr, Neighbour>,
    ) -> Result<(), rtnetlink::Error> {
        let mut entries = self
            .handle
            .neighbours()
            .get()
            .set_address_family(family)
            .execute();
        while let Some(entry) = entries.try_next().await? {
            if entry.header.ifindex != self.if_index {
                continue;
            }
            let confirmed = match entry.header.state {
                NeighbourState::Reachable | NeighbourState::Permanent | NeighbourState::Noarp => {
                    true
                }
                NeighbourState::Stale | NeighbourState::Delay | NeighbourState::Probe => false,
                _ => continue,
            };
            let mut address = None;
            let mut mac = None;
            for attribute in &entry.attributes {
                match attribute {
                    NeighbourAttribute::Destination(NeighbourAddress::Inet(a)) => {
                        address = Some(IpAddr::V4(*a))
                    }
                    NeighbourAttribute::Destination(NeighbourAddress::Inet6(a)) => {
                        address = Some(IpAddr::V6(*a))
                    }
                    NeighbourAttribute::LinkLayerAddress(bytes) if bytes.len() == 6 => {
                        let mut m = [0u8; 6];
                        m.copy_from_slice(bytes);
                        mac = Some(m);
                    }
                    _ => {}
                }
            }
            if let (Some(address), Some(mac)) = (address, mac) {
                if addresses.contains(&address) && mac != [0; 6] {
                    found.insert(address, Neighbour { mac, confirmed });
                }
            }
        }
        Ok(())
    }

    /// Makes the kernel resolve (or re-confirm) `address`.
    pub async fn probe(address: IpAddr) {
        let any = match address {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        };
        match tokio::net::UdpSocket::bind((any, 0)).await {
            Ok(socket) => {
                if let Err(err) = socket.send_to(&[], (address, PROBE_PORT)).await {
                    debug!(%address, %err, "neighbour probe not sent");
                }
            }
            Err(err) => debug!(%err, "no socket for a neighbour probe"),
        }
    }

    /// The MACs of `addresses`: what the table has, after probing the ones it lacks and
    /// waiting up to `wait` for them. Entries that only age (STALE) are probed too but are
    /// used as they are. Addresses that stay unknown are missing from the result.
    pub async fn resolve(
        &self,
        addresses: &[IpAddr],
        wait: Duration,
    ) -> Result<HashMap<IpAddr, [u8; 6]>, rtnetlink::Error> {
        let deadline = tokio::time::Instant::now() + wait;
        let mut known = self.lookup(addresses).await?;
        for address in addresses {
            if known.get(address).is_none_or(|n| !n.confirmed) {
                Neighbours::probe(*address).await;
            }
        }
        while addresses.iter().any(|a| !known.contains_key(a))
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
            known = self.lookup(addresses).await?;
        }
        Ok(known.into_iter().map(|(a, n)| (a, n.mac)).collect())
    }
}
