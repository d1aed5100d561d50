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

pub mod consistent;
pub mod random;
pub mod round_robin;

use std::fmt::Debug;

use crate::config::Balance;

pub use consistent::Consistent;
pub use random::Random;
pub use round_robin::RoundRobin;

/// A way to order backends for one request without a session.
pub trait BackendSelection: Send + Sync + Debug {
    /// The selection over backends with these weights (each at least 1), indexed as given.
    fn build(weights: &[u32]) -> Self
    where
        Self: Sized;

    /// Every backend, each once, best first. Empty when built over no backend.
    fn select(&self) -> Candidates;
}

/// The selection `balance` names, over backends with `weights`.
pub fn build(balance: Balance, weights: &[u32]) -> Box<dyn BackendSelection> {
    match balance {
        Balance::RoundRobin => Box::new(RoundRobin::build(weights)),
        Balance::Random => Box::new(Random::build(weights)),
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
        let rr = build(Balance::RoundRobin, &[1, 1]);
        let firsts: Vec<usize> = (0..4).filter_map(|_| rr.select().next()).collect();
        assert_eq!(firsts, [0, 1, 0, 1]);
        let random = build(Balance::Random, &[1, 1]);
        assert_eq!(random.select().len(), 2);
    }
}
