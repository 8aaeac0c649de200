//! Power of two choices on in-flight requests (Mitzenmacher): two random candidates, the
//! less loaded wins. Nearly as good as least connections, O(1), and it does not herd every
//! gateway instance onto the same momentarily idle backend.
use crate::balance::hash::FastRng;
use crate::balance::{Balancer, Candidates, PickContext};

/// Power of two choices comparing `(in_flight + 1) / effective_weight`.
#[derive(Debug)]
pub struct PowerOfTwo {
    rng: FastRng,
}

impl Default for PowerOfTwo {
    fn default() -> Self {
        Self {
            rng: FastRng::random(),
        }
    }
}

impl PowerOfTwo {
    /// With a fixed seed, for reproducible tests.
    pub fn with_seed(seed: u64) -> Self {
        Self {
            rng: FastRng::new(seed),
        }
    }
}

/// Two distinct random indices below `n` (`n >= 2`).
pub(crate) fn two(rng: &FastRng, n: usize) -> (usize, usize) {
    let a = rng.below(n as u64) as usize;
    let mut b = rng.below(n as u64 - 1) as usize;
    if b >= a {
        b += 1;
    }
    (a, b)
}

impl Balancer for PowerOfTwo {
    fn pick(&self, candidates: &Candidates<'_>, _ctx: &PickContext<'_>) -> usize {
        let n = candidates.len();
        if n < 2 {
            return 0;
        }
        let (a, b) = two(&self.rng, n);
        let la = u128::from(candidates.get(a).in_flight() + 1)
            * u128::from(candidates.effective_weight(b));
        let lb = u128::from(candidates.get(b).in_flight() + 1)
            * u128::from(candidates.effective_weight(a));
        if lb < la {
            b
        } else {
            a
        }
    }

    fn name(&self) -> &'static str {
        "p2c"
    }
}
