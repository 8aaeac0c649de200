//! Adaptive concurrency limits: AIMD and Gradient2 driving a limiter on a manual clock,
//! the limit being enforced under contention, and the tower layer.
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::poll;
use scalewise::breaker::classify::HttpStatus;
use scalewise::clock::ManualClock;
use scalewise::concurrency::{AdaptiveLimitLayer, AdaptiveLimiter, Aimd, Gradient2, LimitExceeded};
use tokio::sync::Semaphore;
use tower::{service_fn, BoxError, Service, ServiceBuilder, ServiceExt};

#[test]
fn aimd_decreases_on_drops_and_increases_on_success() {
    let limiter = AdaptiveLimiter::with_clock(Aimd::new(10, 2, 20), ManualClock::new());
    // Using the limit fully and succeeding: +1 per call.
    for expected in 11..=15 {
        let tokens: Vec<_> = (0..limiter.limit())
            .map(|_| limiter.try_acquire().unwrap())
            .collect();
        for t in tokens {
            t.success();
        }
        assert!(limiter.limit() >= expected);
    }
    let grown = limiter.limit();
    assert!(grown > 10);
    // Drops cut it multiplicatively.
    for _ in 0..3 {
        limiter.try_acquire().unwrap().dropped();
    }
    let cut = limiter.limit();
    assert!(
        cut <= (grown as f64 * 0.9 * 0.9 * 0.9).ceil() as u32,
        "{grown} -> {cut}"
    );
    // Down to the floor, not below.
    for _ in 0..100 {
        limiter.try_acquire().unwrap().dropped();
    }
    assert_eq!(limiter.limit(), 2);
    // A service using less than half its limit does not grow it.
    let idle = AdaptiveLimiter::with_clock(Aimd::new(10, 1, 20), ManualClock::new());
    for _ in 0..10 {
        idle.try_acquire().unwrap().success();
    }
    assert_eq!(idle.limit(), 10);
}

#[test]
fn limit_is_enforced_and_tokens_free_places() {
    let limiter = AdaptiveLimiter::with_clock(Aimd::new(3, 1, 10), ManualClock::new());
    let held: Vec<_> = (0..3).map(|_| limiter.try_acquire().unwrap()).collect();
    assert_eq!(
        limiter.try_acquire().unwrap_err(),
        LimitExceeded { limit: 3 }
    );
    drop(held);
    assert_eq!(limiter.in_flight(), 0);
    assert_eq!(limiter.limit(), 3, "unreported tokens teach nothing");
    assert_eq!(limiter.stats().rejected, 1);
}

#[test]
fn in_flight_never_exceeds_the_limit_under_contention() {
    let limiter = AdaptiveLimiter::with_clock(Aimd::new(4, 4, 4), ManualClock::new());
    let max_seen = AtomicU32::new(0);
    let admitted = AtomicU32::new(0);
    std::thread::scope(|s| {
        for _ in 0..8 {
            s.spawn(|| {
                for _ in 0..2_000 {
                    if let Ok(t) = limiter.try_acquire() {
                        admitted.fetch_add(1, Ordering::Relaxed);
                        max_seen.fetch_max(limiter.in_flight(), Ordering::Relaxed);
                        t.success();
                    }
                }
            });
        }
    });
    assert!(max_seen.load(Ordering::Relaxed) <= 4);
    assert!(admitted.load(Ordering::Relaxed) > 0);
    assert_eq!(limiter.in_flight(), 0);
}

#[test]
fn gradient_limiter_backs_off_when_latency_rises() {
    let clock = ManualClock::new();
    let limiter = AdaptiveLimiter::with_clock(Gradient2::new(20, 2, 100), clock.clone());
    let round = |rtt: Duration| {
        let tokens: Vec<_> = (0..limiter.limit())
            .map(|_| limiter.try_acquire().unwrap())
            .collect();
        clock.advance(rtt);
        for t in tokens {
            t.success();
        }
    };
    for _ in 0..30 {
        round(Duration::from_millis(10));
    }
    let healthy = limiter.limit();
    for _ in 0..10 {
        round(Duration::from_millis(80));
    }
    let congested = limiter.limit();
    assert!(
        congested < healthy,
        "latency x8 must shrink the limit: {healthy} -> {congested}"
    );
}

#[tokio::test]
async fn layer_rejects_over_limit_and_learns_from_5xx() {
    let gate = Arc::new(Semaphore::new(0));
    let status = Arc::new(AtomicU32::new(200));
    let backend = {
        let gate = gate.clone();
        let status = status.clone();
        service_fn(move |_: ()| {
            let gate = gate.clone();
            let code = status.load(Ordering::SeqCst) as u16;
            async move {
                let _p = gate.acquire().await.map_err(|e| Box::new(e) as BoxError)?;
                Ok::<_, BoxError>(http::Response::builder().status(code).body(()).unwrap())
            }
        })
    };
    let limiter = AdaptiveLimiter::with_clock(Aimd::new(2, 1, 10), ManualClock::new());
    let mut svc = ServiceBuilder::new()
        .layer(
            AdaptiveLimitLayer::new(limiter.clone()).with_classifier(HttpStatus::server_errors()),
        )
        .service(backend);
    let a = svc.ready().await.unwrap().call(());
    let b = svc.ready().await.unwrap().call(());
    tokio::pin!(a, b);
    assert!(poll!(a.as_mut()).is_pending());
    assert!(poll!(b.as_mut()).is_pending());
    let err = svc.ready().await.unwrap().call(()).await.unwrap_err();
    assert!(err.downcast_ref::<LimitExceeded>().is_some());
    gate.add_permits(100);
    a.await.unwrap();
    b.await.unwrap();
    assert_eq!(limiter.limit(), 4, "two successes at full use");
    status.store(503, Ordering::SeqCst);
    for _ in 0..5 {
        let r = svc.ready().await.unwrap().call(()).await.unwrap();
        assert_eq!(r.status(), 503);
    }
    assert!(
        limiter.limit() < 4,
        "503s count as drops: {}",
        limiter.limit()
    );
    assert_eq!(limiter.in_flight(), 0);
}
