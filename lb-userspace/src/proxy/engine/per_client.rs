//! `max_connections_per_client`: how many connections one client address may have open at
//! once, across every worker (nginx's `limit_conn`); an IPv6 client is its /64
//! ([`limited_client`]). A connection over the limit is closed as soon as it is accepted,
//! before it costs a task or a buffer; the ones the client already has go on. Off unless
//! configured: clients behind one NAT share an address.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use crate::proxy::policy::limited_client;

/// Open connections per client address.
#[derive(Debug)]
pub struct ClientTable {
    max: usize,
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// One admitted connection's place in the table, given back when dropped.
#[derive(Debug)]
pub struct ClientSlot {
    table: Arc<ClientTable>,
    client: IpAddr,
}

impl ClientTable {
    pub fn new(max: usize) -> Arc<ClientTable> {
        Arc::new(ClientTable {
            max,
            open: Mutex::new(HashMap::new()),
        })
    }

    /// A place for one more connection from `client`, unless it has `max` open already.
    pub fn admit(self: &Arc<Self>, client: IpAddr) -> Option<Box<ClientSlot>> {
        let client = limited_client(client);
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let count = open.entry(client).or_insert(0);
        if *count >= self.max {
            return None;
        }
        *count += 1;
        Some(Box::new(ClientSlot {
            table: Arc::clone(self),
            client,
        }))
    }

    #[cfg(test)]
    fn open(&self, client: IpAddr) -> usize {
        let open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        open.get(&client).copied().unwrap_or(0)
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut open = self.table.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = open.get_mut(&self.client) {
            *count -= 1;
            // Addresses with nothing open leave no entry: the table stays as small as the
            // set of clients connected now.
            if *count == 0 {
                open.remove(&self.client);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ipv6_client_cannot_pass_the_limit_with_more_addresses_of_its_64() {
        let table = ClientTable::new(1);
        let address = |text: &str| -> IpAddr { text.parse().expect("address") };
        let _first = table.admit(address("2001:2::10")).expect("first");
        assert!(table.admit(address("2001:2::11")).is_none());
        assert!(table.admit(address("2001:2:0:1::10")).is_some());
    }

    #[test]
    fn a_client_gets_max_connections_and_more_once_one_closes() {
        let table = ClientTable::new(2);
        let (one, other): (IpAddr, IpAddr) =
            ("198.18.0.1".parse().unwrap(), "198.18.0.2".parse().unwrap());
        let first = table.admit(one).expect("first");
        let _second = table.admit(one).expect("second");
        assert!(table.admit(one).is_none(), "a third is refused");
        assert!(
            table.admit(other).is_some(),
            "another client is not affected"
        );
        drop(first);
        assert!(table.admit(one).is_some(), "a place came free");
        assert_eq!(table.open(other), 0, "closed connections leave no entry");
    }
}
