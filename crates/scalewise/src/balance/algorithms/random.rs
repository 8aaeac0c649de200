//! Weighted random.
use crate::balance::hash::FastRng;
use crate::balance::{Balancer, Candidates, PickContext};

/// Picks a candidate with probability proportional to its effective weight.
#[derive(Debug)]
pub struct WeightedRandom {
    rng: FastRng,
}

impl Default for WeightedRandom {
    fn default() -> Self {
        Self {
            rng: FastRng::random(),
        }
    }
}

impl WeightedRandom {
    /// With a fixed seed, for reproducible tests.
    pub fn with_seed(seed: u64) -> Self {
        Self {
            rng: FastRng::new(seed),
        }
    }
}

impl Balancer for WeightedRandom {
    fn pick(&self, candidates: &Candidates<'_>, _ctx: &PickContext<'_>) -> usize {
        let n = candidates.len();
        let total: u64 = (0..n).map(|i| candidates.effective_weight(i)).sum();
        let mut r = self.rng.below(total.max(1));
        for i in 0..n {
            let w = candidates.effective_weight(i);
            if r < w {
                return i;
            }
            r -= w;
        }
        n - 1
    }

    fn name(&self) -> &'static str {
        "random"
    }
}
