//! Property tests over arbitrary weights, exclusions and drained sets.
use proptest::prelude::*;
use scalewise::balance::{Algorithm, EndpointConfig, Outcome, PickContext, Upstream};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

fn addr(i: usize) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9400 + i as u16))
}

fn build(alg: Algorithm, weights: &[u32]) -> Upstream {
    Upstream::builder("p")
        .algorithm(alg)
        .endpoints(
            weights
                .iter()
                .enumerate()
                .map(|(i, &w)| EndpointConfig::new(addr(i)).weight(w)),
        )
        .build()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Every algorithm picks only eligible endpoints, and errors only when none is.
    #[test]
    fn picks_are_always_eligible(
        weights in prop::collection::vec(1u32..10, 1..12),
        drained in prop::collection::vec(any::<bool>(), 12),
        excluded in prop::collection::vec(0usize..12, 0..4),
        keys in prop::collection::vec(any::<u64>(), 1..20),
        alg in prop::sample::select(Algorithm::ALL.to_vec()),
    ) {
        let up = build(alg, &weights);
        for (i, e) in up.endpoints().iter().enumerate() {
            e.set_draining(drained[i]);
        }
        let eligible: Vec<usize> = (0..weights.len())
            .filter(|i| !drained[*i] && !excluded.contains(i))
            .collect();
        for k in keys {
            let key = k.to_le_bytes();
            let ctx = PickContext { hash_key: Some(&key), exclude: &excluded, ..Default::default() };
            match up.select(&ctx) {
                Ok(s) => {
                    prop_assert!(eligible.contains(&s.endpoint().id()));
                    s.finish(Outcome::success(Duration::from_millis(1)));
                }
                Err(_) => prop_assert!(eligible.is_empty()),
            }
        }
    }

    /// Smooth WRR: every window of sum(weights) picks contains each backend exactly
    /// `weight` times.
    #[test]
    fn swrr_cycle_is_exact(weights in prop::collection::vec(1u32..8, 1..8)) {
        let up = build(Algorithm::WeightedRoundRobin, &weights);
        let total: u32 = weights.iter().sum();
        for _cycle in 0..3 {
            let mut c: HashMap<usize, u32> = HashMap::new();
            for _ in 0..total {
                let s = up.select(&PickContext::default()).unwrap();
                *c.entry(s.endpoint().id()).or_default() += 1;
                s.finish(Outcome::success(Duration::from_millis(1)));
            }
            for (i, &w) in weights.iter().enumerate() {
                prop_assert_eq!(c.get(&i).copied().unwrap_or(0), w);
            }
        }
    }

    /// Consistent hashing is a function of the key and the member addresses only: two
    /// upstreams with the same backends listed in different orders agree.
    #[test]
    fn hashing_agrees_across_instances(
        n in 1usize..10,
        keys in prop::collection::vec(any::<u64>(), 1..50),
        alg in prop::sample::select(vec![Algorithm::Ketama, Algorithm::Maglev]),
    ) {
        let a = Upstream::builder("a").algorithm(alg)
            .endpoints((0..n).map(|i| EndpointConfig::new(addr(i)))).build();
        let b = Upstream::builder("b").algorithm(alg)
            .endpoints((0..n).rev().map(|i| EndpointConfig::new(addr(i)))).build();
        for k in keys {
            let key = k.to_le_bytes();
            let ctx = PickContext { hash_key: Some(&key), ..Default::default() };
            let x = a.select(&ctx).unwrap();
            let y = b.select(&ctx).unwrap();
            prop_assert_eq!(x.endpoint().addr(), y.endpoint().addr());
        }
    }
}
