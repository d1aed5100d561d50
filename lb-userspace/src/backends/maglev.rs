//! Maglev consistent hashing (Eisenbud et al., NSDI 2016), weighted: one lookup table per
//! service that maps a hash to a backend.
//!
//! Both planes choose backends with it: the XDP program and the userspace relay look up L4
//! flows by [`lb_common::flow_hash`] of their 5-tuple, and the proxy looks up L7 session keys
//! by [`hash_key`]. The table depends only on the backends' identities and weights (not on
//! their order, not on the node, not on a random seed), so both nodes of a pair build the same
//! table and a flow keeps its backend across a failover without any state transfer.
//!
//! Each backend walks its own permutation of the table's slots (offset and skip from two hashes
//! of its identity); backends take turns claiming their next free slot until the table is full.
//! Weights are turns: a backend with weight w gets w turns for every `max_weight` a round offers,
//! so its share of the table is w / sum(weights) to within one slot per backend. When a backend
//! goes away the others keep almost all their slots, which is what keeps established flows
//! (without a connection entry) on their backends. What this module does not do: health,
//! config, or maps; callers pass the backends that are up.

pub use lb_common::MAGLEV_TABLE_SIZE;

/// The table size used by the data plane and the proxy (a prime).
pub const DEFAULT_TABLE_SIZE: usize = MAGLEV_TABLE_SIZE as usize;

/// Seeds of the two hashes that give a backend its permutation (offset and skip). Fixed: a
/// change moves every flow on every node.
const OFFSET_SEED: u64 = 0x6d61_676c_6576_0001;
const SKIP_SEED: u64 = 0x6d61_676c_6576_0002;

/// Marks a slot nobody claimed yet while the table is built.
const EMPTY: u32 = u32::MAX;

/// A Maglev lookup table over a list of weighted backends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Maglev {
    /// Slot -> index into the backends slice given to [`Maglev::new`].
    table: Vec<u32>,
    /// How many backends the table was built from (some may own no slot).
    backends: usize,
}

impl Maglev {
    /// Builds the table for `backends`, each an identity (e.g. `b"198.18.0.102:80"`) and a
    /// weight. `table_size` must be a prime (checked in debug builds) and should be much larger
    /// than the number of backends; [`DEFAULT_TABLE_SIZE`] is. Backends of weight 0 get no
    /// slot. With no backend of non-zero weight the table is empty and every lookup is `None`.
    pub fn new(backends: &[(&[u8], u32)], table_size: usize) -> Maglev {
        debug_assert!(
            table_size == 0 || is_prime(table_size),
            "Maglev table size {table_size} is not a prime"
        );
        let empty = Maglev {
            table: Vec::new(),
            backends: backends.len(),
        };
        let max_weight = backends.iter().map(|(_, w)| *w).max().unwrap_or(0);
        if max_weight == 0 || table_size < 2 || backends.len() >= EMPTY as usize {
            return empty;
        }
        let size = table_size as u64;

        // Turns go in identity order, not in the caller's order, so the same set of backends
        // gives the same table whatever order a config lists them in.
        let mut order: Vec<usize> = (0..backends.len()).filter(|&i| backends[i].1 > 0).collect();
        order.sort_by(|&a, &b| backends[a].0.cmp(backends[b].0).then(a.cmp(&b)));

        struct Walker {
            index: u32,
            weight: u64,
            position: u64,
            skip: u64,
            credit: u64,
        }
        let mut walkers: Vec<Walker> = order
            .iter()
            .map(|&i| {
                let (identity, weight) = backends[i];
                Walker {
                    index: i as u32,
                    weight: u64::from(weight),
                    position: lb_common::hash_bytes(identity, OFFSET_SEED) % size,
                    skip: lb_common::hash_bytes(identity, SKIP_SEED) % (size - 1) + 1,
                    credit: 0,
                }
            })
            .collect();

        let max_weight = u64::from(max_weight);
        let mut table = vec![EMPTY; table_size];
        let mut filled = 0usize;
        'fill: loop {
            for walker in &mut walkers {
                walker.credit += walker.weight;
                if walker.credit < max_weight {
                    continue;
                }
                walker.credit -= max_weight;
                // The permutation visits every slot once (skip and size are coprime because
                // size is prime), and the table is not full, so this finds a free slot.
                loop {
                    let slot = walker.position as usize;
                    walker.position = (walker.position + walker.skip) % size;
                    if table[slot] == EMPTY {
                        table[slot] = walker.index;
                        filled += 1;
                        break;
                    }
                }
                if filled == table_size {
                    break 'fill;
                }
            }
        }
        Maglev {
            table,
            backends: backends.len(),
        }
    }

    /// The backend for `hash`, as an index into the slice given to [`Maglev::new`]; `None` when
    /// the table is empty.
    pub fn lookup(&self, hash: u64) -> Option<usize> {
        if self.table.is_empty() {
            return None;
        }
        let slot = (hash % self.table.len() as u64) as usize;
        Some(self.table[slot] as usize)
    }

    /// The table itself, slot by slot (what the data plane copies into its kernel map). Empty
    /// when there is no backend to choose.
    pub fn table(&self) -> &[u32] {
        &self.table
    }

    /// How many slots each backend owns, indexed like the backends slice.
    pub fn shares(&self) -> Vec<usize> {
        let mut shares = vec![0usize; self.backends];
        for &b in &self.table {
            shares[b as usize] += 1;
        }
        shares
    }
}

/// Hashes a key (an L7 session id, a backend identity) to 64 bits. Deterministic across nodes,
/// builds and versions: no random seed. Feed the result to [`Maglev::lookup`].
pub fn hash_key(bytes: &[u8]) -> u64 {
    lb_common::hash_bytes(bytes, 0)
}

fn is_prime(n: usize) -> bool {
    if n < 2 {
        return false;
    }
    let mut d = 2usize;
    while d.saturating_mul(d) <= n {
        if n.is_multiple_of(d) {
            return false;
        }
        d += 1;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("198.18.1.{}:80", i + 1)).collect()
    }

    fn build(names: &[String], weights: &[u32]) -> Maglev {
        let backends: Vec<(&[u8], u32)> = names
            .iter()
            .zip(weights)
            .map(|(n, w)| (n.as_bytes(), *w))
            .collect();
        Maglev::new(&backends, DEFAULT_TABLE_SIZE)
    }

    /// The identity owning each slot, so tables over different backend lists compare.
    fn owners<'a>(m: &Maglev, names: &'a [String]) -> Vec<&'a str> {
        m.table()
            .iter()
            .map(|&i| names[i as usize].as_str())
            .collect()
    }

    #[test]
    fn no_backends_means_an_empty_table_and_no_choice() {
        let m = Maglev::new(&[], DEFAULT_TABLE_SIZE);
        assert!(m.table().is_empty());
        assert_eq!(m.lookup(12345), None);
        assert!(m.shares().is_empty());

        let m = Maglev::new(&[(b"a".as_slice(), 0), (b"b".as_slice(), 0)], 7);
        assert!(m.table().is_empty());
        assert_eq!(m.lookup(1), None);
        assert_eq!(m.shares(), vec![0, 0]);
    }

    #[test]
    fn every_slot_is_owned_and_lookup_returns_the_slot_owner() {
        let n = names(3);
        let m = build(&n, &[1, 1, 1]);
        assert_eq!(m.table().len(), DEFAULT_TABLE_SIZE);
        assert!(m.table().iter().all(|&b| b < 3));
        for hash in [0u64, 1, 65536, 65537, u64::MAX, 0xdead_beef] {
            let slot = (hash % DEFAULT_TABLE_SIZE as u64) as usize;
            assert_eq!(m.lookup(hash), Some(m.table()[slot] as usize));
        }
    }

    #[test]
    fn equal_weights_share_the_table_equally_within_one_percent() {
        for count in [2, 3, 5, 10, 50] {
            let n = names(count);
            let m = build(&n, &vec![1; count]);
            let expected = 1.0 / count as f64;
            for share in m.shares() {
                let got = share as f64 / DEFAULT_TABLE_SIZE as f64;
                assert!(
                    (got - expected).abs() < 0.01,
                    "{count} backends: share {got:.4}, expected {expected:.4}"
                );
            }
        }
    }

    #[test]
    fn weights_are_honoured_within_one_percent() {
        for weights in [
            vec![1u32, 2, 3, 4],
            vec![1, 100],
            vec![5, 5, 1],
            vec![10, 0, 30],
            vec![7, 13, 29, 1, 50],
        ] {
            let n = names(weights.len());
            let m = build(&n, &weights);
            let total: u32 = weights.iter().sum();
            for (share, w) in m.shares().iter().zip(&weights) {
                let got = *share as f64 / DEFAULT_TABLE_SIZE as f64;
                let expected = *w as f64 / total as f64;
                assert!(
                    (got - expected).abs() < 0.01,
                    "weights {weights:?}: weight {w} got {got:.4}, expected {expected:.4}"
                );
            }
        }
    }

    #[test]
    fn zero_weight_backends_get_no_slot() {
        let n = names(3);
        let m = build(&n, &[1, 0, 1]);
        assert_eq!(m.shares()[1], 0);
        assert_eq!(m.shares()[0] + m.shares()[2], DEFAULT_TABLE_SIZE);
    }

    #[test]
    fn removing_one_backend_moves_only_its_slots_within_one_percent() {
        for count in [2usize, 3, 5, 10, 20] {
            let all = names(count);
            let before = build(&all, &vec![1; count]);
            let before_owners = owners(&before, &all);
            for removed in 0..count {
                let rest: Vec<String> = all
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| *i != removed)
                    .map(|(_, n)| n.clone())
                    .collect();
                let after = build(&rest, &vec![1; count - 1]);
                let after_owners = owners(&after, &rest);
                let moved_elsewhere = before_owners
                    .iter()
                    .zip(&after_owners)
                    .filter(|(b, a)| **b != all[removed].as_str() && b != a)
                    .count();
                let fraction = moved_elsewhere as f64 / DEFAULT_TABLE_SIZE as f64;
                assert!(
                    fraction < 0.01,
                    "{count} backends, removed #{removed}: {fraction:.4} of the table moved \
                     between backends that stayed"
                );
            }
        }
    }

    #[test]
    fn adding_a_backend_takes_about_its_share_and_moves_little_else() {
        let all = names(5);
        let four = build(&all[..4], &[1; 4]);
        let five = build(&all, &[1; 5]);
        let (a, b) = (owners(&four, &all[..4]), owners(&five, &all));
        let moved_to_others = a
            .iter()
            .zip(&b)
            .filter(|(x, y)| x != y && **y != all[4].as_str())
            .count();
        assert!((moved_to_others as f64 / DEFAULT_TABLE_SIZE as f64) < 0.01);
    }

    #[test]
    fn the_table_does_not_depend_on_the_order_backends_are_listed_in() {
        let n = names(4);
        let forward = build(&n, &[1, 2, 3, 4]);
        let reversed_names: Vec<String> = n.iter().rev().cloned().collect();
        let reversed = build(&reversed_names, &[4, 3, 2, 1]);
        assert_eq!(owners(&forward, &n), owners(&reversed, &reversed_names));
    }

    #[test]
    fn choices_are_fixed_across_builds_and_versions() {
        // Two nodes (or two versions) must pick the same backend for the same key; these pinned
        // values catch an accidental change of the hash or of the table construction.
        let n = vec!["198.18.0.102:80".to_string(), "198.18.0.103:80".to_string()];
        let m = build(&n, &[1, 1]);
        let picks: Vec<usize> = ["JSESSIONID=a", "JSESSIONID=b", "JSESSIONID=c", "x"]
            .iter()
            .map(|k| m.lookup(hash_key(k.as_bytes())).unwrap())
            .collect();
        assert_eq!(picks, PINNED_PICKS);
        assert_eq!(hash_key(b"198.18.0.102:80"), 0xb9fb_4ac3_4c17_7869);
    }
    const PINNED_PICKS: [usize; 4] = [1, 0, 0, 0];

    #[test]
    fn small_prime_tables_work_too() {
        let m = Maglev::new(&[(b"a".as_slice(), 1), (b"b".as_slice(), 1)], 7);
        assert_eq!(m.table().len(), 7);
        assert_eq!(m.shares().iter().sum::<usize>(), 7);
        assert!(m.shares().iter().all(|&s| s >= 3));
    }
}
