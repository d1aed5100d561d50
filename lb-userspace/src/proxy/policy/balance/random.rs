//! Weighted random: each request picks backend i with probability weight_i / sum(weights),
//! independently of every other request (no shared state but a lock-free generator).

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher as _, Hasher as _};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use super::{BackendSelection, Candidates};

/// Weighted random choice over a fixed set of backends.
#[derive(Debug)]
pub struct Random {
    /// Running sums of the weights: backend i owns `cumulative[i-1]..cumulative[i]`.
    cumulative: Vec<u64>,
    /// SplitMix64 state: each pick advances it by one step, so concurrent picks never share
    /// a number and need no lock.
    state: AtomicU64,
}

/// SplitMix64's increment (the golden ratio in 64 bits).
const GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;

impl Random {
    /// A selection whose picks are fully determined by `seed` (for tests).
    pub fn with_seed(weights: &[u32], seed: u64) -> Random {
        let mut sum = 0u64;
        let cumulative = weights
            .iter()
            .map(|&w| {
                sum += u64::from(w.max(1));
                sum
            })
            .collect();
        Random {
            cumulative,
            state: AtomicU64::new(seed),
        }
    }

    /// The next backend's index, or `None` when built over no backend.
    pub fn pick(&self) -> Option<usize> {
        let total = *self.cumulative.last()?;
        let point = self.next_u64() % total;
        // The first backend whose range ends after the point.
        Some(self.cumulative.partition_point(|&end| end <= point))
    }

    fn next_u64(&self) -> u64 {
        let mut z = self
            .state
            .fetch_add(GAMMA, Ordering::Relaxed)
            .wrapping_add(GAMMA);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

impl BackendSelection for Random {
    /// Seeded from the process's random hasher keys, so two nodes do not pick in lockstep.
    fn build(backends: &[(SocketAddr, u32)]) -> Random {
        let mut hasher = RandomState::new().build_hasher();
        hasher.write_usize(backends.len());
        let weights: Vec<u32> = backends.iter().map(|&(_, weight)| weight).collect();
        Random::with_seed(&weights, hasher.finish())
    }

    fn select(&self, _key: &[u8]) -> Candidates {
        match self.pick() {
            Some(first) => Candidates::starting_at(first, self.cumulative.len()),
            None => Candidates::none(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(weights: &[u32], seed: u64, n: usize) -> Vec<usize> {
        let random = Random::with_seed(weights, seed);
        let mut counts = vec![0usize; weights.len()];
        for _ in 0..n {
            counts[random.pick().expect("backends")] += 1;
        }
        counts
    }

    #[test]
    fn picks_follow_the_weights() {
        let weights = [1u32, 3, 6];
        let n = 100_000;
        for seed in [1u64, 42, 0xdead_beef] {
            let counts = counts(&weights, seed, n);
            for (count, weight) in counts.iter().zip(weights) {
                let share = *count as f64 / n as f64;
                let expected = f64::from(weight) / 10.0;
                assert!(
                    (share - expected).abs() < 0.01,
                    "seed {seed}: weight {weight} got {share:.4}, expected {expected}"
                );
            }
        }
    }

    #[test]
    fn equal_weights_are_uniform_and_the_seed_fixes_the_sequence() {
        let counts = counts(&[1, 1], 7, 20_000);
        assert!((9_500..=10_500).contains(&counts[0]), "{counts:?}");
        let a = Random::with_seed(&[1, 1, 1], 99);
        let b = Random::with_seed(&[1, 1, 1], 99);
        let sequence = |r: &Random| (0..32).map(|_| r.pick()).collect::<Vec<_>>();
        assert_eq!(sequence(&a), sequence(&b));
    }

    #[test]
    fn candidates_list_every_backend_once() {
        let random = Random::with_seed(&[2, 1, 1], 5);
        for _ in 0..10 {
            let mut all: Vec<usize> = random.select(b"").collect();
            all.sort_unstable();
            assert_eq!(all, [0, 1, 2]);
        }
        assert_eq!(Random::with_seed(&[], 1).pick(), None);
    }
}
