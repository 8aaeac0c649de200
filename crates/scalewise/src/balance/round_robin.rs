//! Plain round robin: each candidate in turn, ignoring weights.
use super::{Balancer, Endpoint, PickContext};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Round robin over the eligible candidates.
#[derive(Debug, Default)]
pub struct RoundRobin {
    next: AtomicUsize,
}

impl Balancer for RoundRobin {
    fn pick(&self, candidates: &[Arc<Endpoint>], _ctx: &PickContext<'_>) -> usize {
        self.next.fetch_add(1, Ordering::Relaxed) % candidates.len()
    }

    fn name(&self) -> &'static str {
        "round_robin"
    }
}
