//! Overhead of the resilience primitives on the happy path.
//!
//! `cargo bench -p scalewise --bench breaker -- --warm-up-time 1 --measurement-time 3`
//!
//! Futures are polled once with `now_or_never` (they are ready at once), so the figures are
//! the primitives' cost without an async runtime's.
use std::future::ready;
use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use futures_util::FutureExt;
use scalewise::breaker::{BreakerConfig, BreakerLayer, CircuitBreaker, WindowConfig};
use scalewise::retry::{BudgetConfig, RetryBudget};
use tower::{service_fn, Layer, Service};

fn breaker(window: WindowConfig) -> CircuitBreaker {
    CircuitBreaker::new(BreakerConfig {
        window,
        ..BreakerConfig::default()
    })
}

fn closed_state(c: &mut Criterion) {
    let mut g = c.benchmark_group("breaker_closed");
    // The floor: the closed path makes one atomic read-modify-write (advancing the window).
    let counter = std::sync::atomic::AtomicUsize::new(0);
    g.bench_function("baseline_one_atomic_fetch_add", |b| {
        b.iter(|| black_box(&counter).fetch_add(1, std::sync::atomic::Ordering::Relaxed))
    });
    let count = breaker(WindowConfig::Count { size: 100 });
    g.bench_function("try_acquire_success/count_window", |b| {
        b.iter(|| black_box(&count).try_acquire().unwrap().success())
    });
    let time = breaker(WindowConfig::Time { seconds: 10 });
    g.bench_function("try_acquire_success/time_window", |b| {
        b.iter(|| black_box(&time).try_acquire().unwrap().success())
    });
    let slow = CircuitBreaker::new(BreakerConfig {
        slow_call_rate_threshold: Some(0.5),
        slow_call_duration: Duration::from_secs(1),
        ..BreakerConfig::default()
    });
    g.bench_function("try_acquire_success/count_window+slow_tracking", |b| {
        b.iter(|| black_box(&slow).try_acquire().unwrap().success())
    });
    g.bench_function("call", |b| {
        b.iter(|| {
            count
                .call(ready(Ok::<u32, ()>(black_box(1))))
                .now_or_never()
                .unwrap()
        })
    });

    let mut raw = service_fn(|x: u32| ready(Ok::<_, tower::BoxError>(x)));
    g.bench_function("service_fn_baseline", |b| {
        b.iter(|| raw.call(black_box(1)).now_or_never().unwrap())
    });
    let mut layered = BreakerLayer::new(count.clone())
        .layer(service_fn(|x: u32| ready(Ok::<_, tower::BoxError>(x))));
    g.bench_function("via_layer", |b| {
        b.iter(|| layered.call(black_box(1)).now_or_never().unwrap())
    });
    g.finish();

    let threads = 2;
    let shared = Arc::new(breaker(WindowConfig::Count { size: 100 }));
    c.bench_function("breaker_closed/try_acquire_success/2_threads", |b| {
        b.iter_custom(|iters| {
            let start = std::time::Instant::now();
            std::thread::scope(|s| {
                for _ in 0..threads {
                    let shared = &shared;
                    s.spawn(move || {
                        for _ in 0..iters {
                            shared.try_acquire().unwrap().success();
                        }
                    });
                }
            });
            // Time per call per thread: equal to the single-thread figure if it scales.
            start.elapsed()
        })
    });
}

fn retry_budget(c: &mut Criterion) {
    let mut g = c.benchmark_group("retry_budget");
    let budget = RetryBudget::new(BudgetConfig {
        retry_ratio: 0.2,
        min_retries_per_second: 1_000_000_000,
        window: Duration::from_secs(10),
    });
    g.bench_function("deposit", |b| b.iter(|| black_box(&budget).deposit()));
    g.bench_function("withdraw", |b| {
        b.iter(|| black_box(black_box(&budget).withdraw()))
    });
    g.finish();
}

criterion_group!(benches, closed_state, retry_budget);
criterion_main!(benches);
