//! Passive outlier detection, panic mode and slow start, driven by a manual clock.
use scalewise::balance::{Algorithm, EndpointConfig, HealthStatus, Outcome, PickContext, Upstream};
use scalewise::clock::ManualClock;
use scalewise::health::{HealthConfig, OutlierConfig, SlowStartConfig};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

fn addr(i: usize) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9100 + i as u16))
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn outlier() -> OutlierConfig {
    OutlierConfig {
        consecutive_5xx: 3,
        consecutive_connect_failures: 2,
        base_ejection_time: secs(10),
        max_ejection_time: secs(25),
        max_ejection_percent: 50,
    }
}

fn setup(n: usize, health: HealthConfig) -> (Upstream, ManualClock) {
    let clock = ManualClock::new();
    let up = Upstream::builder("t")
        .algorithm(Algorithm::RoundRobin)
        .clock(Arc::new(clock.clone()))
        .health(health)
        .endpoints((0..n).map(|i| EndpointConfig::new(addr(i))))
        .build();
    (up, clock)
}

fn with_outlier(n: usize) -> (Upstream, ManualClock) {
    setup(
        n,
        HealthConfig {
            outlier: Some(outlier()),
            ..Default::default()
        },
    )
}

/// Sends one request to endpoint `id` (by excluding the others) with `outcome`.
fn hit(up: &Upstream, id: usize, outcome: Outcome) {
    let others: Vec<usize> = up
        .endpoints()
        .iter()
        .map(|e| e.id())
        .filter(|&i| i != id)
        .collect();
    let s = up
        .select(&PickContext {
            exclude: &others,
            ..Default::default()
        })
        .expect("endpoint selectable");
    assert_eq!(s.endpoint().id(), id);
    s.finish(outcome);
}

fn picks(up: &Upstream, n: usize) -> HashMap<usize, usize> {
    let mut c = HashMap::new();
    for _ in 0..n {
        let s = up.select(&PickContext::default()).unwrap();
        *c.entry(s.endpoint().id()).or_default() += 1;
        s.finish(Outcome::success(ms(1)));
    }
    c
}

#[test]
fn consecutive_5xx_eject_and_success_resets_the_count() {
    let (up, clock) = with_outlier(4);
    let e = up.endpoint(0).unwrap();
    hit(&up, 0, Outcome::server_error(ms(1)));
    hit(&up, 0, Outcome::server_error(ms(1)));
    hit(&up, 0, Outcome::success(ms(1)));
    hit(&up, 0, Outcome::server_error(ms(1)));
    hit(&up, 0, Outcome::failure(ms(1)));
    assert!(!e.is_ejected());
    hit(&up, 0, Outcome::server_error(ms(1)));
    assert!(e.is_ejected());
    // Ejected: no traffic.
    assert_eq!(picks(&up, 300).get(&0), None);
    let snap = e.snapshot();
    assert!(snap.ejected);
    assert_eq!(snap.ejected_for_ms, Some(10_000));
    assert_eq!(snap.times_ejected, 1);
    // Back by itself after the base ejection time.
    clock.advance(secs(10));
    assert!(!e.is_ejected());
    assert_eq!(picks(&up, 400)[&0], 100);
}

#[test]
fn connect_failures_eject_sooner() {
    let (up, _clock) = with_outlier(4);
    let e = up.endpoint(1).unwrap();
    hit(&up, 1, Outcome::connect_failure(ms(1)));
    assert!(!e.is_ejected());
    hit(&up, 1, Outcome::connect_failure(ms(1)));
    assert!(e.is_ejected());
}

#[test]
fn ejection_time_grows_with_each_ejection_and_is_capped() {
    let (up, clock) = with_outlier(4);
    let e = up.endpoint(0).unwrap();
    let eject = || {
        for _ in 0..3 {
            hit(&up, 0, Outcome::server_error(ms(1)));
        }
        assert!(e.is_ejected());
        e.snapshot().ejected_for_ms.unwrap()
    };
    assert_eq!(eject(), 10_000);
    clock.advance(secs(10));
    assert_eq!(eject(), 20_000);
    clock.advance(secs(20));
    // 3 × 10s = 30s, capped at 25s.
    assert_eq!(eject(), 25_000);
    clock.advance(secs(25));
    assert_eq!(eject(), 25_000);
    // A long quiet period decays the multiplier: 40s without ejection = 4 steps back.
    clock.advance(secs(25 + 40));
    assert_eq!(eject(), 10_000);
}

#[test]
fn max_ejection_percent_caps_ejections_and_keeps_one() {
    let (up, clock) = with_outlier(4);
    for id in 0..3 {
        for _ in 0..3 {
            hit(&up, id, Outcome::server_error(ms(1)));
        }
    }
    let ejected: Vec<bool> = up.endpoints().iter().map(|e| e.is_ejected()).collect();
    // 50% of 4 = 2.
    assert_eq!(ejected, [true, true, false, false]);
    // Endpoint 2 is still tripped: once a slot frees, its next failure ejects it.
    clock.advance(secs(10));
    hit(&up, 2, Outcome::server_error(ms(1)));
    assert!(up.endpoint(2).unwrap().is_ejected());

    // With a tiny percentage one host may still be ejected, but not two.
    let (up, _clock) = setup(
        3,
        HealthConfig {
            outlier: Some(OutlierConfig {
                max_ejection_percent: 1,
                ..outlier()
            }),
            ..Default::default()
        },
    );
    for id in 0..2 {
        for _ in 0..3 {
            hit(&up, id, Outcome::server_error(ms(1)));
        }
    }
    let ejected: Vec<bool> = up.endpoints().iter().map(|e| e.is_ejected()).collect();
    assert_eq!(ejected, [true, false, false]);
}

#[test]
fn no_backend_when_all_are_out_and_no_panic_mode() {
    let (up, _clock) = setup(
        2,
        HealthConfig {
            outlier: Some(OutlierConfig {
                max_ejection_percent: 100,
                ..outlier()
            }),
            ..Default::default()
        },
    );
    for id in 0..2 {
        for _ in 0..3 {
            hit_raw(&up, id);
        }
    }
    assert!(up.select(&PickContext::default()).is_err());
}

fn hit_raw(up: &Upstream, id: usize) {
    hit(up, id, Outcome::server_error(ms(1)));
}

#[test]
fn panic_threshold_sends_traffic_to_all_hosts() {
    let (up, _clock) = setup(
        4,
        HealthConfig {
            outlier: Some(OutlierConfig {
                max_ejection_percent: 100,
                ..outlier()
            }),
            panic_threshold: 50,
            ..Default::default()
        },
    );
    // One of four out: 75% available, no panic.
    for _ in 0..3 {
        hit_raw(&up, 0);
    }
    assert!(!up.in_panic());
    assert_eq!(picks(&up, 300).get(&0), None);
    // Two of four out: 50% is not below 50%.
    for _ in 0..3 {
        hit_raw(&up, 1);
    }
    assert!(!up.in_panic());
    // Three of four out: panic, everyone gets traffic again.
    for _ in 0..3 {
        hit_raw(&up, 2);
    }
    assert!(up.in_panic());
    assert!(up.snapshot().panic);
    let c = picks(&up, 400);
    assert!((0..4).all(|i| c[&i] == 100), "{c:?}");
    // Drained hosts stay out even in panic.
    up.endpoint(3).unwrap().set_draining(true);
    let c = picks(&up, 300);
    assert_eq!(c.get(&3), None);
}

#[test]
fn active_unhealthy_and_ejected_combine_with_and() {
    let (up, clock) = with_outlier(3);
    let a = up.endpoint(0).unwrap();
    let b = up.endpoint(1).unwrap();
    // Active-unhealthy but not ejected: out.
    a.set_health(HealthStatus::Unhealthy);
    // Active-healthy but ejected: out.
    for _ in 0..3 {
        hit_raw(&up, 1);
    }
    assert!(b.is_ejected() && b.health() == HealthStatus::Healthy);
    let c = picks(&up, 100);
    assert_eq!(c.len(), 1);
    assert_eq!(c[&2], 100);
    // The ejection ends on its own; active health is not consulted for that.
    clock.advance(secs(10));
    assert!(b.is_available_at(up.clock().now_nanos()));
    assert!(!a.is_available_at(up.clock().now_nanos()));
    a.set_health(HealthStatus::Healthy);
    assert_eq!(picks(&up, 300).len(), 3);
}

#[test]
fn slow_start_ramps_weight_linearly() {
    let (up, clock) = setup(
        2,
        HealthConfig {
            slow_start: Some(SlowStartConfig {
                window: secs(100),
                min_weight_percent: 10,
            }),
            ..Default::default()
        },
    );
    up.set_algorithm(Algorithm::WeightedRoundRobin);
    let fresh = up.endpoint(1).unwrap();
    fresh.set_health(HealthStatus::Unhealthy);
    clock.advance(secs(1));
    fresh.set_health(HealthStatus::Healthy);
    assert_eq!(fresh.effective_weight(), 0.1); // floor of 10%
    clock.advance(secs(5));
    assert_eq!(fresh.effective_weight(), 0.1);
    clock.advance(secs(45));
    assert_eq!(fresh.effective_weight(), 0.5);
    assert_eq!(fresh.snapshot().effective_weight, 0.5);
    // At half weight it takes 1/3 of the traffic (0.5 vs 1.0).
    let c = picks(&up, 3000);
    assert_eq!(c[&1], 1000, "{c:?}");
    clock.advance(secs(50));
    assert_eq!(fresh.effective_weight(), 1.0);
    let c = picks(&up, 3000);
    assert_eq!(c[&1], 1500, "{c:?}");
}

#[test]
fn slow_start_after_ejection_and_for_added_backends() {
    let (up, clock) = setup(
        2,
        HealthConfig {
            outlier: Some(outlier()),
            slow_start: Some(SlowStartConfig {
                window: secs(20),
                min_weight_percent: 0,
            }),
            ..Default::default()
        },
    );
    // Backends present at start take full weight at once.
    assert_eq!(up.endpoint(0).unwrap().effective_weight(), 1.0);
    for _ in 0..3 {
        hit_raw(&up, 0);
    }
    clock.advance(secs(10)); // ejection over
    clock.advance(secs(5));
    assert_eq!(up.endpoint(0).unwrap().effective_weight(), 0.25);

    // A backend added by reload ramps from the reload.
    up.update((0..3).map(|i| EndpointConfig::new(addr(i))).collect());
    let added = up.endpoint(2).unwrap();
    assert!(added.effective_weight() <= 0.001);
    clock.advance(secs(10));
    assert_eq!(added.effective_weight(), 0.5);
}
