//! Cost of one pick + finish per algorithm over 10 endpoints (single thread).
//!
//! `cargo bench -p scalewise --bench balance -- --warm-up-time 1 --measurement-time 3`
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use scalewise::balance::{Algorithm, EndpointConfig, Outcome, PickContext, Upstream};
use std::hint::black_box;
use std::net::SocketAddr;
use std::time::Duration;

fn upstream(alg: Algorithm) -> Upstream {
    Upstream::builder("bench")
        .algorithm(alg)
        .endpoints((0..10u16).map(|i| {
            EndpointConfig::new(SocketAddr::from(([127, 0, 0, 1], 9000 + i)))
                .weight(u32::from(i % 3 + 1))
        }))
        .build()
}

fn pick_finish(c: &mut Criterion) {
    let mut g = c.benchmark_group("pick_finish_10");
    for alg in Algorithm::ALL {
        let up = upstream(alg);
        let mut n: u64 = 0;
        g.bench_function(BenchmarkId::from_parameter(alg), |b| {
            b.iter(|| {
                n = n.wrapping_add(1);
                let key = n.to_le_bytes();
                let ctx = PickContext {
                    hash_key: Some(&key),
                    ..Default::default()
                };
                let s = up.select(black_box(&ctx)).unwrap();
                black_box(s.endpoint().id());
                s.finish(Outcome::success(Duration::from_micros(500)));
            })
        });
    }
    g.finish();
}

fn pick_with_unavailable(c: &mut Criterion) {
    // Two of ten drained: exercises the candidate-subset path.
    let mut g = c.benchmark_group("pick_finish_10_two_drained");
    for alg in [
        Algorithm::RoundRobin,
        Algorithm::PeakEwma,
        Algorithm::Maglev,
    ] {
        let up = upstream(alg);
        up.endpoints()[3].set_draining(true);
        up.endpoints()[7].set_draining(true);
        let mut n: u64 = 0;
        g.bench_function(BenchmarkId::from_parameter(alg), |b| {
            b.iter(|| {
                n = n.wrapping_add(1);
                let key = n.to_le_bytes();
                let ctx = PickContext {
                    hash_key: Some(&key),
                    ..Default::default()
                };
                let s = up.select(&ctx).unwrap();
                s.finish(Outcome::success(Duration::from_micros(500)));
            })
        });
    }
    g.finish();
}

criterion_group!(benches, pick_finish, pick_with_unavailable);
criterion_main!(benches);
