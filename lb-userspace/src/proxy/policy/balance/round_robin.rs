//! Smooth weighted round robin (nginx's): each pick, every backend gains its weight and the
//! one with the most credit is chosen and pays the total back, so weights 3:1 give A A B A
//! rather than A A A B, and every window of `sum(weights)` picks honours the weights exactly.

use std::net::SocketAddr;
use std::sync::{Mutex, MutexGuard};

use super::{BackendSelection, Candidates};

/// The smooth weighted round robin state over a fixed set of backends.
#[derive(Debug)]
pub struct RoundRobin {
    weights: Vec<i64>,
    total: i64,
    /// Each backend's current credit.
    credit: Mutex<Vec<i64>>,
}

impl RoundRobin {
    /// The next backend's index, or `None` when built over no backend.
    pub fn pick(&self) -> Option<usize> {
        let mut credit = self.lock();
        let mut best: Option<usize> = None;
        for i in 0..credit.len() {
            credit[i] += self.weights[i];
            // Ties go to the earlier backend, which makes the order reproducible.
            if best.is_none_or(|b| credit[i] > credit[b]) {
                best = Some(i);
            }
        }
        let best = best?;
        credit[best] -= self.total;
        Some(best)
    }

    fn lock(&self) -> MutexGuard<'_, Vec<i64>> {
        self.credit
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl BackendSelection for RoundRobin {
    fn build(backends: &[(SocketAddr, u32)]) -> RoundRobin {
        let weights: Vec<i64> = backends.iter().map(|&(_, w)| i64::from(w.max(1))).collect();
        RoundRobin {
            total: weights.iter().sum(),
            credit: Mutex::new(vec![0; weights.len()]),
            weights,
        }
    }

    fn select(&self, _key: &[u8]) -> Candidates {
        match self.pick() {
            Some(first) => Candidates::starting_at(first, self.weights.len()),
            None => Candidates::none(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::policy::balance::weighted;

    fn picks(weights: &[u32], n: usize) -> Vec<usize> {
        let rr = RoundRobin::build(&weighted(weights));
        (0..n).map(|_| rr.pick().expect("backends")).collect()
    }

    #[test]
    fn equal_weights_alternate() {
        assert_eq!(picks(&[1, 1, 1], 6), [0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn weights_three_to_one_interleave() {
        assert_eq!(picks(&[3, 1], 8), [0, 0, 1, 0, 0, 0, 1, 0]);
    }

    #[test]
    fn heavy_backend_is_spread_not_bunched() {
        // nginx's example: a:5 b:1 c:1 gives a a b a c a a.
        assert_eq!(picks(&[5, 1, 1], 7), [0, 0, 1, 0, 2, 0, 0]);
    }

    #[test]
    fn every_window_of_the_total_weight_is_exact() {
        let weights = [7u32, 2, 4, 1];
        let total: u32 = weights.iter().sum();
        let all = picks(&weights, total as usize * 10);
        for window in all.chunks(total as usize) {
            for (i, &w) in weights.iter().enumerate() {
                let got = window.iter().filter(|&&p| p == i).count();
                assert_eq!(got, w as usize, "backend {i} in window {window:?}");
            }
        }
    }

    #[test]
    fn candidates_put_the_pick_first_then_the_rest() {
        let rr = RoundRobin::build(&weighted(&[1, 1, 1]));
        assert_eq!(rr.select(b"").collect::<Vec<_>>(), [0, 1, 2]);
        assert_eq!(rr.select(b"").collect::<Vec<_>>(), [1, 2, 0]);
        assert_eq!(RoundRobin::build(&[]).select(b"").count(), 0);
        assert_eq!(RoundRobin::build(&[]).pick(), None);
    }
}
