//! Maglev placement of a key over the healthy backends: a session key seen for the first time
//! goes where [`crate::backends::maglev`] says, so both nodes (and the kernel's L4 tables, which use the
//! same hash) place the same key on the same backend without talking to each other.

use std::net::SocketAddr;

use super::{BackendSelection, Candidates};
use crate::backends::maglev::{self, Maglev};

/// A Maglev table over backends identified by their address ("198.18.0.102:80").
#[derive(Debug, Clone)]
pub struct Consistent {
    maglev: Maglev,
    len: usize,
}

impl BackendSelection for Consistent {
    /// The table over `backends`; indices are positions in `backends`.
    fn build(backends: &[(SocketAddr, u32)]) -> Consistent {
        Consistent::with_table_size(backends, maglev::DEFAULT_TABLE_SIZE)
    }

    /// The backend `key` belongs on, then the others in ring order.
    fn select(&self, key: &[u8]) -> Candidates {
        match self.maglev.lookup(maglev::hash_key(key)) {
            Some(index) => Candidates::starting_at(index, self.len),
            None => Candidates::none(),
        }
    }
}

impl Consistent {
    /// [`BackendSelection::build`] with another (prime) table size, for small tests.
    pub fn with_table_size(backends: &[(SocketAddr, u32)], table_size: usize) -> Consistent {
        let identities: Vec<String> = backends.iter().map(|(a, _)| a.to_string()).collect();
        let entries: Vec<(&[u8], u32)> = identities
            .iter()
            .zip(backends)
            .map(|(identity, (_, weight))| (identity.as_bytes(), *weight))
            .collect();
        Consistent {
            maglev: Maglev::new(&entries, table_size),
            len: backends.len(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(text: &str) -> SocketAddr {
        text.parse().expect("test address")
    }

    #[test]
    fn placement_depends_on_the_key_and_the_backend_set_only() {
        let a = [(addr("198.18.0.102:80"), 1), (addr("198.18.0.103:80"), 1)];
        let b = [(addr("198.18.0.103:80"), 1), (addr("198.18.0.102:80"), 1)];
        let (one, two) = (Consistent::build(&a), Consistent::build(&b));
        let mut per_backend = [0usize; 2];
        for i in 0..1000 {
            let key = format!("session-{i}");
            let first = one.select(key.as_bytes()).next().expect("backends");
            let second = two.select(key.as_bytes()).next().expect("backends");
            assert_eq!(a[first].0, b[second].0, "{key}");
            per_backend[first] += 1;
        }
        assert!(
            per_backend.iter().all(|&n| (400..=600).contains(&n)),
            "{per_backend:?}"
        );
        assert_eq!(Consistent::build(&[]).select(b"x").next(), None);
    }
}
