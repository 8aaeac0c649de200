//! Least response time: peak EWMA with power of two choices (Finagle, linkerd).
//!
//! Cost = latency estimate × (in-flight + 1) / weight. The estimate jumps to any slower
//! sample at once and decays slowly, so a backend that turns slow is avoided immediately.
//! Failures are fed in as a latency of at least the failure penalty
//! ([`UpstreamBuilder::failure_penalty`](crate::balance::UpstreamBuilder::failure_penalty)):
//! otherwise a backend answering 5xx in a microsecond would look like the fastest of all
//! and attract the traffic it is failing.
use super::p2c::two;
use crate::balance::hash::FastRng;
use crate::balance::{Balancer, Candidates, PickContext};

/// Peak-EWMA power of two choices.
#[derive(Debug)]
pub struct PeakEwma {
    rng: FastRng,
}

impl Default for PeakEwma {
    fn default() -> Self {
        Self {
            rng: FastRng::random(),
        }
    }
}

impl PeakEwma {
    /// With a fixed seed, for reproducible tests.
    pub fn with_seed(seed: u64) -> Self {
        Self {
            rng: FastRng::new(seed),
        }
    }

    fn cost(candidates: &Candidates<'_>, i: usize) -> f64 {
        let e = candidates.get(i);
        // +1ns keeps a zero estimate from erasing the in-flight term.
        (e.ewma_nanos_at(candidates.now_nanos()) + 1.0) * (e.in_flight() + 1) as f64
            / candidates.effective_weight(i) as f64
    }
}

impl Balancer for PeakEwma {
    fn pick(&self, candidates: &Candidates<'_>, _ctx: &PickContext<'_>) -> usize {
        let n = candidates.len();
        if n < 2 {
            return 0;
        }
        let (a, b) = two(&self.rng, n);
        if Self::cost(candidates, b) < Self::cost(candidates, a) {
            b
        } else {
            a
        }
    }

    fn name(&self) -> &'static str {
        "peak_ewma"
    }
}
