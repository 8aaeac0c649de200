//! Weighted least connections: the candidate with the highest `weight / (active + 1)`.
use crate::balance::{Balancer, Candidates, PickContext};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Weighted least connections. Ties are broken round robin, so an idle group is not
/// hammered on its first member.
#[derive(Debug, Default)]
pub struct LeastConn {
    start: AtomicUsize,
}

impl Balancer for LeastConn {
    fn pick(&self, candidates: &Candidates<'_>, _ctx: &PickContext<'_>) -> usize {
        let n = candidates.len();
        let start = self.start.fetch_add(1, Ordering::Relaxed) % n;
        let mut best = start;
        let mut best_load = (
            candidates.get(start).in_flight() + 1,
            candidates.effective_weight(start),
        );
        for k in 1..n {
            let i = (start + k) % n;
            let load = (
                candidates.get(i).in_flight() + 1,
                candidates.effective_weight(i),
            );
            // load.0 / load.1 < best.0 / best.1, cross-multiplied to stay in integers.
            if u128::from(load.0) * u128::from(best_load.1)
                < u128::from(best_load.0) * u128::from(load.1)
            {
                best = i;
                best_load = load;
            }
        }
        best
    }

    fn name(&self) -> &'static str {
        "least_conn"
    }
}
