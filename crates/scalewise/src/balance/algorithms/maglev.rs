//! Consistent hashing with a Maglev lookup table (Eisenbud et al., NSDI 2016, §3.4).
//!
//! Each backend walks its own permutation of the table's slots (offset and skip from two
//! hashes of its address) and claims the next free slot in turn until the table is full.
//! Shares differ by at most one slot per turn, so load is even (better than a ring), a
//! lookup is one array index, and adding or removing a backend moves little more than 1/N
//! of the keys. Weights give a backend that many claims per round.
//!
//! An unavailable backend's slots are skipped by probing the following slots, which belong
//! to backends in a pseudo-random order, so its keys spread evenly.
use crate::balance::hash::{hash_key, mix64, FastRng};
use crate::balance::{Balancer, Candidates, Endpoint, PickContext};
use arc_swap::ArcSwap;
use std::sync::Arc;

/// Table size: a prime well above 100 × backends, as the paper recommends.
const SIZES: [usize; 3] = [65_537, 655_373, 6_553_577];

/// Maglev consistent hashing keyed by [`PickContext::key_hash`].
#[derive(Debug)]
pub struct Maglev {
    table: ArcSwap<Vec<usize>>,
    rng: FastRng,
}

impl Default for Maglev {
    fn default() -> Self {
        Self {
            table: ArcSwap::from_pointee(Vec::new()),
            rng: FastRng::random(),
        }
    }
}

impl Maglev {
    /// The lookup table: slot → endpoint id.
    pub fn table(&self) -> Arc<Vec<usize>> {
        self.table.load_full()
    }

    /// The endpoint id a key hash maps to when every endpoint is available.
    pub fn owner(&self, key_hash: u64) -> Option<usize> {
        let t = self.table.load();
        (!t.is_empty()).then(|| t[(key_hash % t.len() as u64) as usize])
    }

    fn populate(all: &[Arc<Endpoint>]) -> Vec<usize> {
        if all.is_empty() {
            return Vec::new();
        }
        // Order by address so every gateway instance builds the same table.
        let mut backends: Vec<(String, usize, u64)> = all
            .iter()
            .map(|e| (e.addr().to_string(), e.id(), u64::from(e.weight().max(1))))
            .collect();
        backends.sort();
        let total_weight: u64 = backends.iter().map(|b| b.2).sum();
        let m = SIZES
            .iter()
            .copied()
            .find(|&m| m as u64 >= total_weight * 100)
            .unwrap_or(SIZES[SIZES.len() - 1]);
        let perms: Vec<(u64, u64)> = backends
            .iter()
            .map(|(addr, _, _)| {
                let h = hash_key(addr.as_bytes());
                let offset = h % m as u64;
                let skip = mix64(h ^ 0x5bd1_e995) % (m as u64 - 1) + 1;
                (offset, skip)
            })
            .collect();
        let mut next = vec![0u64; backends.len()];
        let mut table = vec![usize::MAX; m];
        let mut filled = 0;
        'outer: loop {
            for (b, (_, id, w)) in backends.iter().enumerate() {
                for _ in 0..*w {
                    let (offset, skip) = perms[b];
                    let mut slot = ((offset + next[b] * skip) % m as u64) as usize;
                    while table[slot] != usize::MAX {
                        next[b] += 1;
                        slot = ((offset + next[b] * skip) % m as u64) as usize;
                    }
                    table[slot] = *id;
                    next[b] += 1;
                    filled += 1;
                    if filled == m {
                        break 'outer;
                    }
                }
            }
        }
        table
    }
}

impl Balancer for Maglev {
    fn pick(&self, candidates: &Candidates<'_>, ctx: &PickContext<'_>) -> usize {
        let Some(h) = ctx.key_hash() else {
            return self.rng.below(candidates.len() as u64) as usize;
        };
        let table = self.table.load();
        if !table.is_empty() {
            let m = table.len();
            let start = (h % m as u64) as usize;
            // Bounded: with at least one candidate in the table, a hit comes within a few
            // probes on average; a stale table falls through to the modulo below.
            for k in 0..m {
                if let Some(i) = candidates.position_of_id(table[(start + k) % m]) {
                    return i;
                }
            }
        }
        (h % candidates.len() as u64) as usize
    }

    fn rebuild(&self, all: &[Arc<Endpoint>]) {
        self.table.store(Arc::new(Self::populate(all)));
    }

    fn name(&self) -> &'static str {
        "maglev"
    }
}
