//! Consistent hashing on a ketama ring (libketama, as in nginx `hash ... consistent`).
//!
//! Every backend owns `160 × weight` points on a 64-bit ring, placed by hashing its
//! *address* (not its id), so every gateway instance builds the same ring. A key goes to
//! the first point at or after its hash. Adding or removing one of N backends moves only
//! the keys of the arcs it gains or loses: about 1/N of them.
//!
//! An unavailable backend is skipped by walking on to the next point, so its keys spread
//! over the others while everyone else's keys stay put.
use crate::balance::hash::{hash_key, FastRng};
use crate::balance::{Balancer, Candidates, Endpoint, PickContext};
use arc_swap::ArcSwap;
use std::sync::Arc;

/// Points per unit of weight, as libketama.
const POINTS_PER_WEIGHT: u64 = 160;
/// Cap so a huge weight cannot make the ring unbounded.
const MAX_POINTS_PER_BACKEND: u64 = 16_000;

/// Ketama consistent-hash ring keyed by [`PickContext::key_hash`].
#[derive(Debug)]
pub struct Ketama {
    // Sorted by point: (point, endpoint id).
    ring: ArcSwap<Vec<(u64, usize)>>,
    rng: FastRng,
}

impl Default for Ketama {
    fn default() -> Self {
        Self {
            ring: ArcSwap::from_pointee(Vec::new()),
            rng: FastRng::random(),
        }
    }
}

impl Ketama {
    /// The endpoint id a key hash maps to when every endpoint is available.
    pub fn owner(&self, key_hash: u64) -> Option<usize> {
        let ring = self.ring.load();
        if ring.is_empty() {
            return None;
        }
        let start = ring.partition_point(|p| p.0 < key_hash) % ring.len();
        Some(ring[start].1)
    }
}

impl Balancer for Ketama {
    fn pick(&self, candidates: &Candidates<'_>, ctx: &PickContext<'_>) -> usize {
        let Some(h) = ctx.key_hash() else {
            return self.rng.below(candidates.len() as u64) as usize;
        };
        let ring = self.ring.load();
        if !ring.is_empty() {
            let start = ring.partition_point(|p| p.0 < h);
            let mut last = usize::MAX;
            for k in 0..ring.len() {
                let id = ring[(start + k) % ring.len()].1;
                if id == last {
                    continue;
                }
                last = id;
                if let Some(i) = candidates.position_of_id(id) {
                    return i;
                }
            }
        }
        // The ring is stale (a member added since the last rebuild) or empty.
        (h % candidates.len() as u64) as usize
    }

    fn rebuild(&self, all: &[Arc<Endpoint>]) {
        let mut ring = Vec::new();
        for e in all {
            let addr = e.addr().to_string();
            let points =
                (POINTS_PER_WEIGHT * u64::from(e.weight().max(1))).min(MAX_POINTS_PER_BACKEND);
            for p in 0..points {
                ring.push((hash_key(format!("{addr}-{p}").as_bytes()), e.id()));
            }
        }
        ring.sort_unstable();
        self.ring.store(Arc::new(ring));
    }

    fn name(&self) -> &'static str {
        "ketama"
    }
}
