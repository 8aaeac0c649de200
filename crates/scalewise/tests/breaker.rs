//! Circuit breaker behaviour on a manual clock: state machine properties, window math,
//! slow calls, open-duration backoff, half-open max wait, concurrency, the tower layer.
use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use scalewise::breaker::classify::HttpStatus;
use scalewise::breaker::{
    BreakerConfig, BreakerLayer, BreakerRegistry, CallError, CircuitBreaker, Outcome, Reason,
    Rejected, State, StateChange, WindowConfig,
};
use scalewise::clock::{Clock, ManualClock};
use tokio::sync::broadcast::error::TryRecvError;
use tower::{service_fn, BoxError, Service, ServiceExt};

fn config() -> BreakerConfig {
    BreakerConfig {
        window: WindowConfig::Count { size: 10 },
        minimum_calls: 4,
        failure_rate_threshold: 0.5,
        open_duration: Duration::from_secs(1),
        open_backoff_multiplier: 2.0,
        max_open_duration: Duration::from_secs(5),
        open_jitter: 0.0,
        half_open_permitted_calls: 2,
        half_open_max_wait: Duration::from_secs(3),
        ..BreakerConfig::default()
    }
}

fn breaker(clock: &ManualClock, cfg: BreakerConfig) -> CircuitBreaker {
    CircuitBreaker::builder("test")
        .config(cfg)
        .clock(clock.clone())
        .build()
        .unwrap()
}

fn trip(b: &CircuitBreaker) {
    while b.state() == State::Closed {
        b.try_acquire().unwrap().failure();
    }
}

fn drain(rx: &mut tokio::sync::broadcast::Receiver<StateChange>) -> Vec<StateChange> {
    let mut out = Vec::new();
    loop {
        match rx.try_recv() {
            Ok(e) => out.push(e),
            Err(TryRecvError::Empty) => return out,
            Err(e) => panic!("event stream broken: {e:?}"),
        }
    }
}

#[derive(Debug, Clone)]
enum Op {
    Success,
    Failure,
    Slow,
    Hold,
    ReleaseHeld(bool),
    DropHeld,
    Advance(u64),
    Observe,
    ForceOpen,
    Disable,
    Reset,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => Just(Op::Success),
        6 => Just(Op::Failure),
        2 => Just(Op::Slow),
        2 => Just(Op::Hold),
        2 => any::<bool>().prop_map(Op::ReleaseHeld),
        1 => Just(Op::DropHeld),
        5 => (0u64..4_000).prop_map(Op::Advance),
        3 => Just(Op::Observe),
        1 => Just(Op::ForceOpen),
        1 => Just(Op::Disable),
        1 => Just(Op::Reset),
    ]
}

fn legal(e: &StateChange) -> bool {
    use State::*;
    if e.reason == Reason::Manual {
        return matches!(e.to, Closed | ForcedOpen | Disabled);
    }
    matches!(
        (e.from, e.to),
        (Closed, Open) | (Open, HalfOpen) | (HalfOpen, Closed) | (HalfOpen, Open)
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Every transition is one of the legal edges, transitions chain (each starts where
    /// the previous ended), forced/disabled are only entered by hand, and the breaker is
    /// never observed half-open at or past its max wait.
    #[test]
    fn state_machine_never_skips_or_sticks(
        ops in prop::collection::vec(op(), 1..200),
        slow_threshold in prop::option::of(0.2f64..1.0),
        time_window in any::<bool>(),
    ) {
        let clock = ManualClock::new();
        let cfg = BreakerConfig {
            slow_call_rate_threshold: slow_threshold,
            slow_call_duration: Duration::from_millis(100),
            window: if time_window { WindowConfig::Time { seconds: 5 } } else { WindowConfig::Count { size: 10 } },
            ..config()
        };
        let max_wait = cfg.half_open_max_wait;
        let b = breaker(&clock, cfg);
        let mut rx = b.subscribe();
        let mut held = Vec::new();
        let mut current = State::Closed;
        let mut half_open_since = Duration::ZERO;
        for op in ops {
            match op {
                Op::Success => { if let Ok(p) = b.try_acquire() { p.success() } }
                Op::Failure => { if let Ok(p) = b.try_acquire() { p.failure() } }
                Op::Slow => {
                    if let Ok(p) = b.try_acquire() {
                        p.record(Outcome::success().with_duration(Duration::from_millis(150)))
                    }
                }
                Op::Hold => { if let Ok(p) = b.try_acquire_owned() { held.push(p) } }
                Op::ReleaseHeld(ok) => {
                    if let Some(p) = held.pop() { if ok { p.success() } else { p.failure() } }
                }
                Op::DropHeld => { held.pop(); }
                Op::Advance(ms) => clock.advance(Duration::from_millis(ms)),
                Op::Observe => {}
                Op::ForceOpen => b.force_open(),
                Op::Disable => b.disable(),
                Op::Reset => b.reset(),
            }
            let observed = b.state();
            for e in drain(&mut rx) {
                prop_assert!(legal(&e), "illegal transition {:?}", e);
                prop_assert_eq!(e.from, current, "transition does not start where the last ended: {:?}", e);
                current = e.to;
                if e.to == State::HalfOpen {
                    half_open_since = e.at;
                }
            }
            prop_assert_eq!(observed, current);
            if observed == State::HalfOpen {
                prop_assert!(clock.now() - half_open_since < max_wait, "stuck half-open");
            }
        }
    }

    /// The count window judges exactly the last `size` outcomes.
    #[test]
    fn count_window_math(outcomes in prop::collection::vec(any::<bool>(), 0..60), size in 1u32..20) {
        let clock = ManualClock::new();
        let b = breaker(&clock, BreakerConfig {
            window: WindowConfig::Count { size },
            minimum_calls: u32::MAX,
            ..config()
        });
        for &failed in &outcomes {
            let p = b.try_acquire().unwrap();
            if failed { p.failure() } else { p.success() }
        }
        let tail: Vec<bool> = outcomes.iter().rev().take(size as usize).copied().collect();
        let w = b.window();
        prop_assert_eq!(w.calls, tail.len() as u64);
        prop_assert_eq!(w.failures, tail.iter().filter(|f| **f).count() as u64);
    }
}

#[test]
fn minimum_calls_and_threshold() {
    let clock = ManualClock::new();
    let b = breaker(&clock, config());
    // 3 failures and 3 successes interleaved: rate 50% once 4 calls are in.
    b.try_acquire().unwrap().success();
    b.try_acquire().unwrap().failure();
    b.try_acquire().unwrap().success();
    assert_eq!(b.state(), State::Closed);
    b.try_acquire().unwrap().failure();
    assert_eq!(b.state(), State::Open, "2 of 4 failed = 50%");
}

#[test]
fn successes_keep_it_closed_below_threshold() {
    let clock = ManualClock::new();
    let b = breaker(&clock, config());
    for i in 0..100 {
        let p = b.try_acquire().unwrap();
        if i % 3 == 2 {
            p.failure()
        } else {
            p.success()
        }
    }
    assert_eq!(b.state(), State::Closed);
    let w = b.window();
    assert_eq!(w.calls, 10);
}

#[test]
fn time_window_forgets_old_failures() {
    let clock = ManualClock::new();
    let b = breaker(
        &clock,
        BreakerConfig {
            window: WindowConfig::Time { seconds: 2 },
            ..config()
        },
    );
    for _ in 0..3 {
        b.try_acquire().unwrap().failure();
    }
    clock.advance(Duration::from_secs(2));
    // The three failures are out of the window; one more failure is 1 of 1 < minimum.
    b.try_acquire().unwrap().failure();
    assert_eq!(b.state(), State::Closed);
    assert_eq!(b.window().calls, 1);
    for _ in 0..3 {
        b.try_acquire().unwrap().failure();
    }
    assert_eq!(b.state(), State::Open);
}

#[test]
fn slow_call_rate_opens() {
    let clock = ManualClock::new();
    let b = breaker(
        &clock,
        BreakerConfig {
            slow_call_rate_threshold: Some(0.5),
            slow_call_duration: Duration::from_millis(100),
            ..config()
        },
    );
    let mut rx = b.subscribe();
    b.try_acquire()
        .unwrap()
        .record(Outcome::success().with_duration(Duration::from_millis(99)));
    b.try_acquire().unwrap().success();
    // Measured by the permit from the clock.
    let p = b.try_acquire().unwrap();
    clock.advance(Duration::from_millis(100));
    p.success();
    assert_eq!(b.window().slow, 1);
    b.try_acquire()
        .unwrap()
        .record(Outcome::success().with_duration(Duration::from_secs(1)));
    assert_eq!(b.state(), State::Open);
    let e = rx.try_recv().unwrap();
    assert_eq!(e.reason, Reason::SlowCallRate);
}

#[test]
fn open_duration_backs_off_and_is_capped() {
    let clock = ManualClock::new();
    let b = breaker(&clock, config());
    let mut rx = b.subscribe();
    trip(&b);
    let mut durations = Vec::new();
    for _ in 0..5 {
        let e = drain(&mut rx)
            .into_iter()
            .rfind(|e| e.to == State::Open)
            .unwrap();
        let d = e.open_for.unwrap();
        durations.push(d.as_secs());
        clock.advance(d);
        b.try_acquire().unwrap().failure();
        assert_eq!(b.state(), State::Open);
    }
    let e = drain(&mut rx)
        .into_iter()
        .rfind(|e| e.to == State::Open)
        .unwrap();
    durations.push(e.open_for.unwrap().as_secs());
    assert_eq!(durations, vec![1, 2, 4, 5, 5, 5]);
    // Closing forgets the history.
    clock.advance(Duration::from_secs(5));
    b.try_acquire().unwrap().success();
    b.try_acquire().unwrap().success();
    assert_eq!(b.state(), State::Closed);
    trip(&b);
    let e = drain(&mut rx).pop().unwrap();
    assert_eq!(e.open_for, Some(Duration::from_secs(1)));
}

#[test]
fn jitter_stays_within_bounds_and_cap() {
    let clock = ManualClock::new();
    let b = breaker(
        &clock,
        BreakerConfig {
            open_jitter: 0.5,
            open_duration: Duration::from_secs(4),
            max_open_duration: Duration::from_secs(5),
            ..config()
        },
    );
    let mut rx = b.subscribe();
    let mut seen = Vec::new();
    for _ in 0..50 {
        b.reset();
        trip(&b);
        let d = drain(&mut rx).pop().unwrap().open_for.unwrap();
        assert!(
            d >= Duration::from_secs(2) && d <= Duration::from_secs(5),
            "{d:?}"
        );
        seen.push(d);
    }
    seen.dedup();
    assert!(seen.len() > 1, "jitter should vary the duration");
}

#[test]
fn half_open_gives_up_after_max_wait() {
    let clock = ManualClock::new();
    let b = breaker(&clock, config());
    let mut rx = b.subscribe();
    trip(&b);
    clock.advance(Duration::from_secs(1));
    let stuck = b.try_acquire_owned().unwrap();
    assert_eq!(b.state(), State::HalfOpen);
    clock.advance(Duration::from_millis(2_999));
    assert_eq!(b.state(), State::HalfOpen);
    clock.advance(Duration::from_millis(1));
    assert_eq!(b.state(), State::Open);
    let reasons: Vec<Reason> = drain(&mut rx).iter().map(|e| e.reason).collect();
    assert_eq!(
        reasons,
        vec![
            Reason::FailureRate,
            Reason::OpenElapsed,
            Reason::HalfOpenTimeout
        ]
    );
    // The late trial's report belongs to a past state and changes nothing.
    stuck.success();
    assert_eq!(b.state(), State::Open);
}

#[test]
fn failed_trial_reopens() {
    let clock = ManualClock::new();
    let b = breaker(&clock, config());
    trip(&b);
    clock.advance(Duration::from_secs(1));
    b.try_acquire().unwrap().failure();
    assert_eq!(b.state(), State::Open);
    assert!(b.try_acquire().is_err());
}

#[test]
fn forced_open_and_disabled() {
    let clock = ManualClock::new();
    let b = breaker(&clock, config());
    b.force_open();
    let err = b.try_acquire().unwrap_err();
    assert_eq!(err.state, State::ForcedOpen);
    clock.advance(Duration::from_secs(3600));
    assert_eq!(
        b.state(),
        State::ForcedOpen,
        "only reset leaves forced open"
    );
    b.disable();
    for _ in 0..100 {
        b.try_acquire().unwrap().failure();
    }
    assert_eq!(b.state(), State::Disabled);
    assert_eq!(b.window().calls, 0);
    b.reset();
    assert_eq!(b.state(), State::Closed);
}

#[tokio::test]
async fn call_and_fallback() {
    let clock = ManualClock::new();
    let b = breaker(&clock, config());
    let r: Result<u32, CallError<&str>> = b.call(async { Err("boom") }).await;
    assert!(matches!(r, Err(CallError::Inner("boom"))));
    trip(&b);
    let r: Result<u32, CallError<&str>> = b.call(async { Ok(1) }).await;
    let Err(CallError::Rejected(rej)) = r else {
        panic!("expected rejection")
    };
    assert_eq!(rej.retry_after, Some(Duration::from_secs(1)));
    let v = b
        .call_or_else(async { Ok::<_, &str>(1) }, |_| async { Ok(2) })
        .await;
    assert_eq!(v, Ok(2));
}

#[test]
fn many_threads_hammering_one_breaker_keep_counts_consistent() {
    const THREADS: u64 = 8;
    const CALLS: u64 = 5_000;
    let clock = ManualClock::new();
    let b = breaker(
        &clock,
        BreakerConfig {
            window: WindowConfig::Count {
                size: (THREADS * CALLS) as u32,
            },
            minimum_calls: u32::MAX,
            ..config()
        },
    );
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let b = &b;
            s.spawn(move || {
                for i in 0..CALLS {
                    let p = b.try_acquire().unwrap();
                    if (i + t) % 4 == 0 {
                        p.failure()
                    } else {
                        p.success()
                    }
                }
            });
        }
    });
    let w = b.window();
    assert_eq!(w.calls, THREADS * CALLS);
    assert_eq!(w.failures, THREADS * CALLS / 4);

    // Under contention the window slides without drifting: overwrite everything with
    // successes from many threads and the failures must all be gone.
    std::thread::scope(|s| {
        for _ in 0..THREADS {
            let b = &b;
            s.spawn(move || {
                for _ in 0..CALLS {
                    b.try_acquire().unwrap().success();
                }
            });
        }
    });
    let w = b.window();
    assert_eq!((w.calls, w.failures), (THREADS * CALLS, 0));
}

#[test]
fn many_threads_trip_it_once() {
    let clock = ManualClock::new();
    let b = breaker(&clock, config());
    let mut rx = b.subscribe();
    std::thread::scope(|s| {
        for _ in 0..8 {
            let b = &b;
            s.spawn(move || {
                for _ in 0..1_000 {
                    if let Ok(p) = b.try_acquire() {
                        p.failure();
                    }
                }
            });
        }
    });
    assert_eq!(b.state(), State::Open);
    let events = drain(&mut rx);
    assert_eq!(events.len(), 1, "{events:?}");
    assert!(b.stats().rejected > 0);
}

#[tokio::test]
async fn layer_opens_on_5xx_and_closes_after_recovery() {
    let clock = ManualClock::new();
    let b = breaker(&clock, config());
    let healthy = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let calls = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let backend = {
        let healthy = healthy.clone();
        let calls = calls.clone();
        service_fn(move |_req: ()| {
            calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let status = if healthy.load(std::sync::atomic::Ordering::SeqCst) {
                200
            } else {
                503
            };
            async move { Ok::<_, BoxError>(http::Response::builder().status(status).body(()).unwrap()) }
        })
    };
    let mut svc = tower::ServiceBuilder::new()
        .layer(BreakerLayer::new(b.clone()).with_classifier(HttpStatus::server_errors()))
        .service(backend);
    for _ in 0..4 {
        let r = svc.ready().await.unwrap().call(()).await.unwrap();
        assert_eq!(r.status(), 503);
    }
    assert_eq!(b.state(), State::Open);
    let err = svc.ready().await.unwrap().call(()).await.unwrap_err();
    assert!(err.downcast_ref::<Rejected>().is_some());
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 4);

    healthy.store(true, std::sync::atomic::Ordering::SeqCst);
    clock.advance(Duration::from_secs(1));
    for _ in 0..2 {
        let r = svc.ready().await.unwrap().call(()).await.unwrap();
        assert_eq!(r.status(), 200);
    }
    assert_eq!(b.state(), State::Closed);
}

#[test]
fn registry_shares_events_and_serialises_stats() {
    let clock = ManualClock::new();
    let reg = BreakerRegistry::with_clock(config(), clock.clone());
    let mut rx = reg.subscribe();
    let a = reg.get_or_create("a");
    let _b = reg.get_or_create_with("b", || BreakerConfig {
        minimum_calls: 1,
        ..config()
    });
    trip(&a);
    reg.get("b").unwrap().try_acquire().unwrap().failure();
    let names: Vec<String> = drain(&mut rx).into_iter().map(|e| e.breaker).collect();
    assert_eq!(names, vec!["a", "b"]);
    let stats = reg.stats();
    assert_eq!(stats.len(), 2);
    assert_eq!(stats[0].retry_after_ms, Some(1000));
    let json = serde_json::to_value(&stats).unwrap();
    assert_eq!(json[0]["state"], "open");
    assert_eq!(json[1]["window"]["failures"], 1);
    clock.advance(Duration::from_millis(400));
    assert_eq!(reg.stats()[0].retry_after_ms, Some(600));
    assert!(clock.now_nanos() > 0);
}
