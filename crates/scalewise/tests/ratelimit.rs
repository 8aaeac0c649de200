//! Rate limiting: bounds (property tests), decision fields, shaping, keyed memory bounds,
//! concurrency and the tower layers. Time is a `ManualClock` or tokio's paused clock.
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response, StatusCode};
use proptest::prelude::*;
use scalewise::clock::ManualClock;
use scalewise::ratelimit::{
    Algorithm, AnyAlgorithm, ClientAddr, Decision, FixedWindow, Gcra, GcraLimiter,
    HttpRateLimitLayer, KeySource, KeyedConfig, KeyedRateLimiter, LeakyBucket, LimitStore, Limiter,
    Quota, Rate, RateLimitLayer, RateLimited, RateLimiter, SlidingWindowCounter, SlidingWindowLog,
    TokenBucket,
};
use tower::{service_fn, Layer, Service, ServiceExt};

fn quota(count: u64, period_ms: u64, burst: u64) -> Quota {
    Quota::new(Rate::new(count, Duration::from_millis(period_ms)).unwrap()).with_burst(burst)
}

fn all_algorithms(q: Quota, max_wait: Duration) -> Vec<(&'static str, AnyAlgorithm)> {
    vec![
        ("gcra", AnyAlgorithm::Gcra(Gcra::new(q))),
        (
            "token_bucket",
            AnyAlgorithm::TokenBucket(TokenBucket::new(q)),
        ),
        (
            "leaky_bucket",
            AnyAlgorithm::LeakyBucket(LeakyBucket::new(q)),
        ),
        (
            "leaky_bucket_shaping",
            AnyAlgorithm::LeakyBucket(LeakyBucket::shaping(q, max_wait)),
        ),
        (
            "fixed_window",
            AnyAlgorithm::FixedWindow(FixedWindow::new(q.rate)),
        ),
        (
            "sliding_window_log",
            AnyAlgorithm::SlidingWindowLog(SlidingWindowLog::new(q.rate)),
        ),
        (
            "sliding_window_counter",
            AnyAlgorithm::SlidingWindowCounter(SlidingWindowCounter::new(q.rate)),
        ),
    ]
}

/// Largest number of units whose (proceed) times fall in any closed window of `w` nanos.
fn max_in_window(events: &[(u64, u64)], w: u64) -> u64 {
    let mut sorted = events.to_vec();
    sorted.sort_unstable();
    let (mut best, mut sum, mut lo) = (0, 0, 0);
    for hi in 0..sorted.len() {
        sum += sorted[hi].1;
        while sorted[hi].0 - sorted[lo].0 > w {
            sum -= sorted[lo].1;
            lo += 1;
        }
        best = best.max(sum);
    }
    best
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    /// No algorithm admits more than its rate × window + burst in any window.
    #[test]
    fn no_algorithm_exceeds_its_bound(
        count in 1u64..20,
        period_ms in 1u64..2_000,
        burst in 1u64..12,
        max_wait_ms in 0u64..500,
        ops in prop::collection::vec((0u64..400_000_000, 1u32..4, any::<bool>()), 1..300),
    ) {
        let q = quota(count, period_ms, burst);
        let period = period_ms * 1_000_000;
        for (name, alg) in all_algorithms(q, Duration::from_millis(max_wait_ms)) {
            let clock = ManualClock::new();
            let limiter = RateLimiter::with_clock(alg, clock.clone());
            let mut admitted = Vec::new();
            let mut now = 0u64;
            for &(advance, n, quiet) in &ops {
                // Mostly dense traffic (small steps) with occasional long gaps.
                let step = if quiet { advance } else { advance % (period / 4 + 1) };
                clock.advance(Duration::from_nanos(step));
                now += step;
                let d = limiter.check_n(n);
                prop_assert!(d.delay <= Duration::from_millis(max_wait_ms), "{name}: delay {:?}", d.delay);
                if d.allowed {
                    admitted.push((now + d.delay.as_nanos() as u64, u64::from(n)));
                } else {
                    prop_assert!(d.retry_after > Duration::ZERO, "{name}: denied without retry_after");
                }
            }
            for w in [0, period / 3, period, period * 3 / 2, period * 4] {
                let bound = limiter.algorithm().admission_bound(Duration::from_nanos(w));
                let seen = max_in_window(&admitted, w);
                prop_assert!(seen <= bound, "{name}: {seen} units in a {w} ns window, bound {bound}");
            }
        }
    }

    /// A denied request is admitted once its `retry_after` has passed (for a single caller).
    #[test]
    fn retry_after_is_enough(
        count in 1u64..20,
        period_ms in 1u64..1000,
        burst in 1u64..8,
        n in 1u32..4,
    ) {
        let q = quota(count, period_ms, burst);
        for (name, alg) in all_algorithms(q, Duration::ZERO) {
            let clock = ManualClock::new();
            let limiter = RateLimiter::with_clock(alg, clock.clone());
            let mut denied = None;
            for _ in 0..200 {
                let d = limiter.check_n(n);
                if !d.allowed {
                    denied = Some(d);
                    break;
                }
            }
            let Some(d) = denied else { continue };
            if d.retry_after == Duration::MAX {
                continue; // n exceeds the limit: never admitted, and said so.
            }
            clock.advance(d.retry_after);
            prop_assert!(limiter.check_n(n).allowed, "{name}: still denied after retry_after {:?}", d.retry_after);
        }
    }
}

#[test]
fn gcra_decision_fields() {
    let clock = ManualClock::new();
    let l = RateLimiter::with_clock(Gcra::new(quota(10, 1000, 5)), clock.clone());
    for expect in (0..5).rev() {
        let d = l.check();
        assert!(d.allowed);
        assert_eq!((d.limit, d.remaining), (5, expect));
        assert_eq!(d.retry_after, Duration::ZERO);
    }
    let d = l.check();
    assert!(!d.allowed);
    assert_eq!(d.remaining, 0);
    assert_eq!(d.retry_after, Duration::from_millis(100));
    assert_eq!(d.reset_after, Duration::from_millis(500));
    clock.advance(Duration::from_millis(100));
    assert!(l.check().allowed);
    let d = l.check_n(6);
    assert_eq!(d.retry_after, Duration::MAX, "larger than the burst: never");
}

#[test]
fn window_decision_fields() {
    let clock = ManualClock::new();
    clock.advance(Duration::from_millis(250));
    let fixed = RateLimiter::with_clock(FixedWindow::new("3/s".parse().unwrap()), clock.clone());
    assert_eq!(fixed.check_n(3).remaining, 0);
    let d = fixed.check();
    assert!(!d.allowed);
    assert_eq!(d.retry_after, Duration::from_millis(750));
    assert_eq!(d.reset_after, Duration::from_millis(750));

    let log = RateLimiter::with_clock(SlidingWindowLog::new("2/s".parse().unwrap()), clock.clone());
    assert!(log.check().allowed);
    clock.advance(Duration::from_millis(400));
    assert!(log.check().allowed);
    let d = log.check();
    assert!(!d.allowed);
    // The first unit leaves the window 600 ms from now.
    assert_eq!(d.retry_after, Duration::from_millis(600));
    clock.advance(d.retry_after);
    assert!(log.check().allowed);

    let counter = RateLimiter::with_clock(
        SlidingWindowCounter::new("4/s".parse().unwrap()),
        clock.clone(),
    );
    assert!(counter.check_n(4).allowed);
    let d = counter.check();
    assert!(!d.allowed);
    assert_eq!(d.remaining, 0);
}

#[test]
fn token_bucket_refills_fractionally() {
    let clock = ManualClock::new();
    let l = RateLimiter::with_clock(TokenBucket::new(quota(4, 1000, 2)), clock.clone());
    assert!(l.check_n(2).allowed);
    clock.advance(Duration::from_millis(125));
    assert!(!l.check().allowed, "half a token is not a token");
    clock.advance(Duration::from_millis(125));
    let d = l.check();
    assert!(d.allowed);
    assert_eq!(d.reset_after, Duration::from_millis(500));
}

#[test]
fn shaping_delays_are_bounded_then_denied() {
    let clock = ManualClock::new();
    let l = RateLimiter::with_clock(
        LeakyBucket::shaping(quota(10, 1000, 1), Duration::from_millis(300)),
        clock.clone(),
    );
    let delays: Vec<_> = (0..4).map(|_| l.check()).collect();
    assert!(delays.iter().all(|d| d.allowed));
    assert_eq!(
        delays
            .iter()
            .map(|d| d.delay.as_millis())
            .collect::<Vec<_>>(),
        vec![0, 100, 200, 300]
    );
    let d = l.check();
    assert!(!d.allowed);
    assert_eq!(d.retry_after, Duration::from_millis(100));
    clock.advance(Duration::from_millis(100));
    assert_eq!(l.check().delay, Duration::from_millis(300));
}

#[test]
fn keyed_memory_is_bounded_under_rotating_keys() {
    let clock = ManualClock::new();
    let l = KeyedRateLimiter::with_config(
        Gcra::new(Quota::per_second(10)),
        KeyedConfig {
            max_keys: 10_000,
            idle_timeout: Some(Duration::from_secs(60)),
            shards: 32,
        },
        clock.clone(),
    );
    // A client walking through its /64: every request a new IPv6 address.
    let base: u128 = 0x2001_0db8_0000_0000_0000_0000_0000_0000;
    for i in 0..1_000_000u128 {
        assert!(l.check(&std::net::Ipv6Addr::from(base + i)).allowed);
        if i % 100_000 == 0 {
            assert!(l.len() <= 10_000);
        }
    }
    assert!(l.len() <= 10_000, "len {}", l.len());
    assert!(
        l.len() >= 5_000,
        "the budget should be used, len {}",
        l.len()
    );
}

#[test]
fn keyed_idle_keys_expire_and_restart_fresh() {
    let clock = ManualClock::new();
    let l = KeyedRateLimiter::with_config(
        Gcra::new(quota(1, 1000, 1)),
        KeyedConfig {
            max_keys: 1000,
            idle_timeout: Some(Duration::from_secs(30)),
            shards: 4,
        },
        clock.clone(),
    );
    for k in 0..500u32 {
        assert!(l.check(&k).allowed);
        assert!(!l.check(&k).allowed);
    }
    assert_eq!(l.len(), 500);
    clock.advance(Duration::from_secs(29));
    assert_eq!(l.purge_idle(), 0);
    assert!(l.check(&7).allowed, "refilled after 29 s");
    clock.advance(Duration::from_secs(1));
    assert_eq!(l.purge_idle(), 499, "all but key 7 idle for 30 s");
    assert_eq!(l.len(), 1);
}

#[test]
fn default_idle_timeout_never_grants_extra_allowance() {
    let clock = ManualClock::new();
    let l = KeyedRateLimiter::with_config(
        Gcra::new(quota(1, 10_000, 3)),
        KeyedConfig::default(),
        clock.clone(),
    );
    assert!(l.check_n(&"k", 3).allowed);
    clock.advance(Duration::from_secs(20));
    // 20 s into a 30 s refill: forgetting the key now would be a fresh burst of 3.
    l.purge_idle();
    assert!(!l.check_n(&"k", 3).allowed);
}

#[test]
fn many_threads_on_one_limiter_admit_exactly_the_burst() {
    let clock = ManualClock::new();
    let keyed = Arc::new(KeyedRateLimiter::with_config(
        Gcra::new(quota(1, 1000, 1000)),
        KeyedConfig::default(),
        clock.clone(),
    ));
    let atomic = Arc::new(GcraLimiter::with_clock(quota(1, 1000, 1000), clock.clone()));
    let bucket = Arc::new(RateLimiter::with_clock(
        TokenBucket::new(quota(1, 1000, 1000)),
        clock.clone(),
    ));
    let counts: Vec<[u64; 3]> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let (keyed, atomic, bucket) = (keyed.clone(), atomic.clone(), bucket.clone());
                s.spawn(move || {
                    let mut c = [0u64; 3];
                    for _ in 0..5_000 {
                        c[0] += u64::from(keyed.check(&"shared").allowed);
                        c[1] += u64::from(atomic.check().allowed);
                        c[2] += u64::from(bucket.check().allowed);
                    }
                    c
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (i, name) in ["keyed", "atomic gcra", "token bucket"].iter().enumerate() {
        let total: u64 = counts.iter().map(|c| c[i]).sum();
        assert_eq!(total, 1000, "{name} admitted {total}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_tasks_with_moving_time_stay_under_the_bound() {
    let clock = ManualClock::new();
    let q = quota(100, 1000, 10);
    let limiter = Arc::new(KeyedRateLimiter::with_config(
        Gcra::new(q),
        KeyedConfig::default(),
        clock.clone(),
    ));
    let mut tasks = Vec::new();
    for t in 0..16u64 {
        let (limiter, clock) = (limiter.clone(), clock.clone());
        tasks.push(tokio::spawn(async move {
            let mut admitted = 0u64;
            for i in 0..2_000u64 {
                if t == 0 && i % 10 == 0 {
                    clock.advance(Duration::from_millis(1));
                }
                admitted += u64::from(limiter.check(&1u8).allowed);
                tokio::task::yield_now().await;
            }
            admitted
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    // Task 0 moves time by 200 ms in total.
    let bound = Gcra::new(q).admission_bound(Duration::from_millis(200));
    assert!(total <= bound, "admitted {total}, bound {bound}");
    assert!(total >= 10, "at least the burst, got {total}");
}

fn request_from(ip: &str) -> Request<()> {
    let mut r = Request::new(());
    r.extensions_mut()
        .insert(ClientAddr(format!("{ip}:40000").parse().unwrap()));
    r
}

#[tokio::test]
async fn http_layer_answers_429_with_headers() {
    let clock = ManualClock::new();
    let limiter = Arc::new(KeyedRateLimiter::with_config(
        Gcra::new(quota(2, 1000, 2)),
        KeyedConfig::default(),
        clock.clone(),
    ));
    let calls = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let calls2 = calls.clone();
    let svc = HttpRateLimitLayer::new(limiter, KeySource::ClientIp).layer(service_fn(
        move |_req: Request<()>| {
            calls2.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            async { Ok::<_, Infallible>(Response::new(String::from("ok"))) }
        },
    ));
    let ok = svc
        .clone()
        .oneshot(request_from("192.0.2.1"))
        .await
        .unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
    assert_eq!(ok.headers()["ratelimit-limit"], "2");
    assert_eq!(ok.headers()["ratelimit-remaining"], "1");
    assert_eq!(ok.headers()["ratelimit-reset"], "1");
    assert!(ok.headers().get("retry-after").is_none());
    svc.clone()
        .oneshot(request_from("192.0.2.1"))
        .await
        .unwrap();

    let denied = svc
        .clone()
        .oneshot(request_from("192.0.2.1"))
        .await
        .unwrap();
    assert_eq!(denied.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(denied.headers()["retry-after"], "1");
    assert_eq!(denied.headers()["ratelimit-remaining"], "0");
    assert_eq!(denied.headers()["ratelimit-limit"], "2");
    assert_eq!(denied.body(), "");
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 2);

    // Another client is not affected; time heals the first.
    let other = svc
        .clone()
        .oneshot(request_from("192.0.2.2"))
        .await
        .unwrap();
    assert_eq!(other.status(), StatusCode::OK);
    clock.advance(Duration::from_millis(500));
    let again = svc.oneshot(request_from("192.0.2.1")).await.unwrap();
    assert_eq!(again.status(), StatusCode::OK);
}

#[tokio::test]
async fn http_layer_keys_by_header() {
    // A store chosen at run time (as a gateway does per route) works as a trait object.
    let limiter: Arc<dyn LimitStore<String>> = Arc::new(KeyedRateLimiter::with_config(
        Gcra::new(quota(1, 60_000, 1)),
        KeyedConfig::default(),
        ManualClock::new(),
    ));
    let svc = HttpRateLimitLayer::new(
        limiter,
        KeySource::Header(http::HeaderName::from_static("x-api-key")),
    )
    .layer(service_fn(|_req: Request<()>| async {
        Ok::<_, Infallible>(Response::new(()))
    }));
    let req = |key: &str| {
        Request::builder()
            .header("x-api-key", key)
            .body(())
            .unwrap()
    };
    let status = |r: Response<()>| r.status();
    assert_eq!(status(svc.clone().oneshot(req("a")).await.unwrap()), 200);
    assert_eq!(status(svc.clone().oneshot(req("b")).await.unwrap()), 200);
    let denied = svc.clone().oneshot(req("a")).await.unwrap();
    assert_eq!(denied.status(), 429);
    assert_eq!(denied.headers()["retry-after"], "60");
}

#[tokio::test(start_paused = true)]
async fn generic_layer_errors_and_waits_out_shaping_delays() {
    let clock = scalewise::clock::TokioClock;
    let shaper = Arc::new(RateLimiter::with_clock(
        LeakyBucket::shaping(quota(10, 1000, 1), Duration::from_millis(250)),
        clock,
    ));
    let mut svc = RateLimitLayer::unkeyed(shaper).layer(service_fn(|x: u32| async move {
        Ok::<_, Infallible>((x, tokio::time::Instant::now()))
    }));
    let start = tokio::time::Instant::now();
    let mut finished = Vec::new();
    for i in 0..3 {
        let (_, at) = svc.ready().await.unwrap().call(i).await.unwrap();
        finished.push(at - start);
    }
    // Sequential calls: each waits for its slot 100 ms after the previous one.
    assert_eq!(
        finished,
        vec![
            Duration::ZERO,
            Duration::from_millis(100),
            Duration::from_millis(200)
        ]
    );

    let limiter = Arc::new(KeyedRateLimiter::with_config(
        Gcra::new(quota(1, 1000, 1)),
        KeyedConfig::default(),
        ManualClock::new(),
    ));
    let mut svc = RateLimitLayer::new(limiter, |req: &(u32, &'static str)| req.1).layer(
        service_fn(|req: (u32, &'static str)| async move { Ok::<_, Infallible>(req.0) }),
    );
    assert_eq!(svc.ready().await.unwrap().call((1, "a")).await.unwrap(), 1);
    let err = svc.ready().await.unwrap().call((2, "a")).await.unwrap_err();
    let limited = err
        .downcast_ref::<RateLimited>()
        .expect("a RateLimited error");
    assert!(!limited.0.allowed);
    assert_eq!(svc.ready().await.unwrap().call((3, "b")).await.unwrap(), 3);
}

#[test]
fn decision_headers_for_fail_open_are_omitted() {
    let mut h = http::HeaderMap::new();
    Decision::unlimited().write_headers(&mut h);
    assert!(h.is_empty());
}
