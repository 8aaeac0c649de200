//! Retry: backoff timing on tokio's paused clock, attempt limits, classifiers, the retry
//! budget (including under contention), and the tower layer.
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use scalewise::breaker::classify::{ClassifyFn, HttpStatus, Verdict};
use scalewise::clock::ManualClock;
use scalewise::retry::{BudgetConfig, Jitter, Retry, RetryBudget, RetryConfig};
use tokio::time::Instant;
use tower::{service_fn, BoxError, Service, ServiceBuilder, ServiceExt};

fn config(max_attempts: u32) -> RetryConfig {
    RetryConfig {
        max_attempts,
        initial_backoff: Duration::from_millis(100),
        max_backoff: Duration::from_millis(300),
        backoff_multiplier: 2.0,
        jitter: Jitter::None,
    }
}

#[tokio::test(start_paused = true)]
async fn retries_with_exponential_delays_until_success() {
    let retry = Retry::new(config(5));
    let start = Instant::now();
    let times = std::sync::Mutex::new(Vec::new());
    let r = retry
        .run(|n| {
            times.lock().unwrap().push(start.elapsed().as_millis());
            async move {
                if n < 5 {
                    Err(n)
                } else {
                    Ok(n)
                }
            }
        })
        .await;
    assert_eq!(r, Ok(5));
    // Delays 100, 200, 300 (capped), 300.
    assert_eq!(*times.lock().unwrap(), vec![0, 100, 300, 600, 900]);
    let s = retry.stats();
    assert_eq!((s.calls, s.retries, s.exhausted), (1, 4, 0));
}

#[tokio::test(start_paused = true)]
async fn gives_up_after_max_attempts_with_last_error() {
    let retry = Retry::new(config(3));
    let r: Result<(), u32> = retry.run(|n| async move { Err(n) }).await;
    assert_eq!(r, Err(3));
    assert_eq!(retry.stats().exhausted, 1);
}

#[tokio::test(start_paused = true)]
async fn classifier_decides_what_is_retried() {
    let retry = Retry::new(config(5)).with_classifier(ClassifyFn(|r: &Result<u16, ()>| match r {
        Ok(503) => Verdict::Failure,
        _ => Verdict::Success,
    }));
    let calls = AtomicU32::new(0);
    let r = retry
        .run(|_| {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            async move { Ok(if n == 0 { 503 } else { 404 }) }
        })
        .await;
    assert_eq!(r, Ok(404), "404 is not retried");
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn retries_stop_when_the_budget_is_spent_and_resume_later() {
    let clock = ManualClock::new();
    let budget = Arc::new(RetryBudget::with_clock(
        BudgetConfig {
            retry_ratio: 0.1,
            min_retries_per_second: 1,
            window: Duration::from_secs(10),
        },
        clock.clone(),
    ));
    let retry = Retry::new(config(3)).with_budget(budget.clone());
    let attempts = AtomicU32::new(0);
    for _ in 0..20 {
        let r: Result<(), ()> = retry
            .run(|_| {
                attempts.fetch_add(1, Ordering::SeqCst);
                async { Err(()) }
            })
            .await;
        assert!(r.is_err());
    }
    // 10 from the floor (1/s over 10 s) plus 20 requests x 0.1.
    let s = retry.stats();
    assert_eq!(s.retries, 12);
    assert_eq!(attempts.load(Ordering::SeqCst), 20 + 12);
    assert!(s.budget_denied > 0);
    let b = s.budget.unwrap();
    assert_eq!(b.retries_spent, 12);
    assert!(b.available < 1.0);
    // An outage of 20 requests caused 32 attempts, not 60.

    // Once the window has passed, spent retries no longer count.
    clock.advance(Duration::from_secs(11));
    assert!(budget.available() >= 10.0);
    let r: Result<(), ()> = retry.run(|_| async { Err(()) }).await;
    assert!(r.is_err());
    assert_eq!(retry.stats().retries, 14);
}

#[test]
fn budget_never_overdraws_under_contention() {
    let budget = RetryBudget::with_clock(
        BudgetConfig {
            retry_ratio: 0.5,
            min_retries_per_second: 10,
            window: Duration::from_secs(10),
        },
        ManualClock::new(),
    );
    for _ in 0..200 {
        budget.deposit();
    }
    let granted = AtomicU32::new(0);
    std::thread::scope(|s| {
        for _ in 0..8 {
            s.spawn(|| {
                for _ in 0..1_000 {
                    if budget.withdraw() {
                        granted.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
    });
    // 100 reserve + 200 x 0.5.
    assert_eq!(granted.load(Ordering::Relaxed), 200);
    let s = budget.stats();
    assert_eq!((s.retries_spent, s.retries_denied), (200, 7_800));
    assert_eq!(s.available, 0.0);
}

#[tokio::test(start_paused = true)]
async fn layer_retries_5xx_and_counts_requests_once() {
    let budget = Arc::new(RetryBudget::with_clock(
        BudgetConfig::default(),
        ManualClock::new(),
    ));
    let retry = Retry::new(config(3))
        .with_budget(budget.clone())
        .with_classifier(HttpStatus::server_errors());
    let hits = Arc::new(AtomicU32::new(0));
    let backend = {
        let hits = hits.clone();
        service_fn(move |_req: &'static str| {
            let n = hits.fetch_add(1, Ordering::SeqCst);
            async move {
                let status = if n % 2 == 0 { 503 } else { 200 };
                Ok::<_, BoxError>(http::Response::builder().status(status).body(()).unwrap())
            }
        })
    };
    let mut svc = ServiceBuilder::new().layer(retry.layer()).service(backend);
    for _ in 0..3 {
        let r = svc.ready().await.unwrap().call("GET /").await.unwrap();
        assert_eq!(r.status(), 200);
    }
    assert_eq!(hits.load(Ordering::SeqCst), 6);
    let s = retry.stats();
    assert_eq!((s.calls, s.retries), (3, 3));
    assert_eq!(budget.stats().deposits, 3);
}

#[tokio::test(start_paused = true)]
async fn layer_gives_up_with_the_last_response() {
    let retry = Retry::new(config(4)).with_classifier(HttpStatus::server_errors());
    let hits = Arc::new(AtomicU32::new(0));
    let backend = {
        let hits = hits.clone();
        service_fn(move |_req: ()| {
            hits.fetch_add(1, Ordering::SeqCst);
            async { Ok::<_, BoxError>(http::Response::builder().status(502).body(()).unwrap()) }
        })
    };
    let mut svc = ServiceBuilder::new().layer(retry.layer()).service(backend);
    let start = Instant::now();
    let r = svc.ready().await.unwrap().call(()).await.unwrap();
    assert_eq!(r.status(), 502);
    assert_eq!(hits.load(Ordering::SeqCst), 4);
    assert_eq!(start.elapsed(), Duration::from_millis(100 + 200 + 300));
    assert_eq!(retry.stats().exhausted, 1);
}
