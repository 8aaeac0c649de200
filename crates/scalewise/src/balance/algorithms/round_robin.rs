//! Plain round robin: each candidate in turn, ignoring weights.
use crate::balance::{Balancer, Candidates, PickContext};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Round robin over the eligible candidates. Ignores weights (and so slow start).
#[derive(Debug, Default)]
pub struct RoundRobin {
    next: AtomicUsize,
}

impl Balancer for RoundRobin {
    fn pick(&self, candidates: &Candidates<'_>, _ctx: &PickContext<'_>) -> usize {
        self.next.fetch_add(1, Ordering::Relaxed) % candidates.len()
    }

    fn name(&self) -> &'static str {
        "round_robin"
    }
}
