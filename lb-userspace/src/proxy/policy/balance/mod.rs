//! Choosing among healthy backends: one small trait, one file per algorithm.
//!
//! A selection is built over the backends that may get traffic right now (healthy, and regular
//! unless every regular one is down) and is rebuilt when that set changes; it never looks at
//! health itself. It answers with every backend in preference order ([`Candidates`]), so "try
//! the next one when this one cannot be reached" is a loop in the caller, not a special case.
//!
//! - [`round_robin`]: smooth weighted round robin, the default;
//! - [`random`]: weighted random;
//! - [`consistent`]: Maglev placement of a key, for sessions seen for the first time.
//!
//! Pingora's shape: every algorithm is built over the backends and asked with the request's
//! key; the balancers ignore the key, consistent placement is decided by it.

pub mod consistent;
pub mod random;
pub mod round_robin;

use std::fmt::Debug;
use std::net::SocketAddr;

use crate::config::Balance;

pub use consistent::Consistent;
pub use random::Random;
pub use round_robin::RoundRobin;

/// A way to order backends for one request.
pub trait BackendSelection: Send + Sync + Debug {
    /// The selection over `backends` (address and weight, a weight of 0 counting as 1),
    /// indexed as given.
    fn build(backends: &[(SocketAddr, u32)]) -> Self
    where
        Self: Sized;

    /// Every backend, each once, best first, for a request whose key is `key` (a session key;
    /// empty when there is none). Empty when built over no backend.
    fn select(&self, key: &[u8]) -> Candidates;
}

/// The selection `balance` names, over `backends` (address and weight).
pub fn build(balance: Balance, backends: &[(SocketAddr, u32)]) -> Box<dyn BackendSelection> {
    match balance {
        Balance::RoundRobin => Box::new(RoundRobin::build(backends)),
        Balance::Random => Box::new(Random::build(backends)),
    }
}

/// Backend indices in preference order: the chosen one, then the others in ring order after
/// it (the order only matters for retries, which should spread too).
#[derive(Debug, Clone)]
pub struct Candidates {
    first: usize,
    len: usize,
    next: usize,
}

impl Candidates {
    /// `first`, then every other index of `0..len` in ring order.
    pub fn starting_at(first: usize, len: usize) -> Candidates {
        Candidates {
            first: if len == 0 { 0 } else { first % len },
            len,
            next: 0,
        }
    }

    /// No candidate at all.
    pub fn none() -> Candidates {
        Candidates::starting_at(0, 0)
    }
}

impl Iterator for Candidates {
    type Item = usize;

    fn next(&mut self) -> Option<usize> {
        if self.next >= self.len {
            return None;
        }
        let index = (self.first + self.next) % self.len;
        self.next += 1;
        Some(index)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.len - self.next;
        (left, Some(left))
    }
}

impl ExactSizeIterator for Candidates {}

/// Backends 198.18.0.1:80, .2:80... with these weights, for the algorithms' tests.
#[cfg(test)]
pub(crate) fn weighted(weights: &[u32]) -> Vec<(SocketAddr, u32)> {
    weights
        .iter()
        .zip(1u8..)
        .map(|(&weight, host)| (SocketAddr::from(([198, 18, 0, host], 80)), weight))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates_start_at_the_choice_and_visit_every_backend_once() {
        assert_eq!(
            Candidates::starting_at(2, 4).collect::<Vec<_>>(),
            [2, 3, 0, 1]
        );
        assert_eq!(Candidates::starting_at(0, 1).collect::<Vec<_>>(), [0]);
        assert_eq!(Candidates::none().count(), 0);
        assert_eq!(Candidates::starting_at(1, 3).len(), 3);
    }

    #[test]
    fn build_gives_the_named_algorithm() {
        let rr = build(Balance::RoundRobin, &weighted(&[1, 1]));
        let firsts: Vec<usize> = (0..4).filter_map(|_| rr.select(b"").next()).collect();
        assert_eq!(firsts, [0, 1, 0, 1]);
        let random = build(Balance::Random, &weighted(&[1, 1]));
        assert_eq!(random.select(b"").len(), 2);
    }
}
