//! Smooth weighted round robin, nginx's algorithm (`ngx_http_upstream_get_peer`).
//!
//! Each pick adds every candidate's weight to its running `current`, takes the largest
//! `current` and subtracts the total from it. Weights {5,1,1} give a,a,b,a,c,a,a: the heavy
//! backend's turns are spread out instead of sent as a burst of five.
use crate::balance::endpoint::lock;
use crate::balance::{Balancer, Candidates, Endpoint, PickContext};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Smooth weighted round robin over effective weights (slow start included).
#[derive(Debug, Default)]
pub struct WeightedRoundRobin {
    // Endpoint id -> current weight. Keyed by id so the state survives reloads for unchanged
    // backends; pruned to the member set on rebuild, so bounded by the number of backends.
    current: Mutex<HashMap<usize, i64>>,
}

impl Balancer for WeightedRoundRobin {
    fn pick(&self, candidates: &Candidates<'_>, _ctx: &PickContext<'_>) -> usize {
        let mut current = lock(&self.current);
        let mut total: i64 = 0;
        let mut best = 0;
        let mut best_cw = i64::MIN;
        for i in 0..candidates.len() {
            let w = candidates.effective_weight(i) as i64;
            let cw = current.entry(candidates.get(i).id()).or_insert(0);
            *cw += w;
            total += w;
            if *cw > best_cw {
                best_cw = *cw;
                best = i;
            }
        }
        if let Some(cw) = current.get_mut(&candidates.get(best).id()) {
            *cw -= total;
        }
        best
    }

    fn rebuild(&self, all: &[Arc<Endpoint>]) {
        let mut current = lock(&self.current);
        current.retain(|id, _| all.iter().any(|e| e.id() == *id));
    }

    fn name(&self) -> &'static str {
        "weighted_round_robin"
    }
}
