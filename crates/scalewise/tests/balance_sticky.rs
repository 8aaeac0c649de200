//! Sticky sessions at the library level: stateless pins, failover, cross-instance cookies.
use scalewise::balance::{
    pin_for_addr, Algorithm, EndpointConfig, HealthStatus, Outcome, PickContext, Upstream,
};
use scalewise::clock::ManualClock;
use scalewise::health::{HealthConfig, OutlierConfig};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

fn addr(i: usize) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9200 + i as u16))
}

fn up_with(addrs: &[usize]) -> Upstream {
    Upstream::builder("t")
        .algorithm(Algorithm::RoundRobin)
        .endpoints(addrs.iter().map(|&i| EndpointConfig::new(addr(i))))
        .build()
}

/// Selects with `pin`, finishes, returns (addr, cookie to set, moved).
fn go(up: &Upstream, pin: Option<&str>) -> (SocketAddr, Option<String>, bool) {
    let p = up.select_pinned(pin, &PickContext::default()).unwrap();
    let a = p.selection.endpoint().addr();
    p.selection
        .finish(Outcome::success(Duration::from_millis(1)));
    (a, p.set_cookie, p.moved)
}

#[test]
fn first_request_gets_a_cookie_and_then_sticks() {
    let up = up_with(&[0, 1, 2]);
    let (first, cookie, moved) = go(&up, None);
    assert!(!moved);
    let cookie = cookie.expect("new session gets a cookie");
    assert_eq!(cookie, pin_for_addr(first));
    // Round robin would rotate; the pin holds.
    for _ in 0..10 {
        let (a, set, moved) = go(&up, Some(&cookie));
        assert_eq!(a, first);
        assert_eq!(set, None);
        assert!(!moved);
    }
}

#[test]
fn unhealthy_or_drained_pin_moves_and_resets_the_cookie() {
    let up = up_with(&[0, 1, 2]);
    let (first, cookie, _) = go(&up, None);
    let cookie = cookie.unwrap();
    let pinned = up
        .endpoints()
        .into_iter()
        .find(|e| e.addr() == first)
        .unwrap();

    pinned.set_health(HealthStatus::Unhealthy);
    let (second, set, moved) = go(&up, Some(&cookie));
    assert!(moved);
    assert_ne!(second, first);
    let new_cookie = set.expect("caller must re-set the cookie");
    assert_eq!(new_cookie, pin_for_addr(second));

    // The session now sticks to its new backend, even after the old one recovers.
    pinned.set_health(HealthStatus::Healthy);
    for _ in 0..5 {
        let (a, set, _) = go(&up, Some(&new_cookie));
        assert_eq!((a, set), (second, None));
    }

    // Draining moves it too.
    let second_ep = up
        .endpoints()
        .into_iter()
        .find(|e| e.addr() == second)
        .unwrap();
    second_ep.set_draining(true);
    let (third, set, moved) = go(&up, Some(&new_cookie));
    assert!(moved && third != second && set.is_some());
}

#[test]
fn ejected_pin_moves() {
    let clock = ManualClock::new();
    let up = Upstream::builder("t")
        .clock(Arc::new(clock.clone()))
        .health(HealthConfig {
            outlier: Some(OutlierConfig {
                consecutive_5xx: 2,
                ..Default::default()
            }),
            ..Default::default()
        })
        .endpoints((0..2).map(|i| EndpointConfig::new(addr(i))))
        .build();
    let cookie = pin_for_addr(addr(0));
    for _ in 0..2 {
        let p = up
            .select_pinned(Some(&cookie), &PickContext::default())
            .unwrap();
        assert_eq!(p.selection.endpoint().addr(), addr(0));
        p.selection
            .finish(Outcome::server_error(Duration::from_millis(1)));
    }
    let (a, set, moved) = go(&up, Some(&cookie));
    assert_eq!(a, addr(1));
    assert!(moved);
    assert_eq!(set, Some(pin_for_addr(addr(1))));
}

#[test]
fn cookies_work_across_instances_and_reloads() {
    // Another gateway instance with a different backend order (and so different ids).
    let a = up_with(&[0, 1, 2]);
    let b = up_with(&[2, 1, 0]);
    let cookie = pin_for_addr(addr(1));
    assert_eq!(go(&a, Some(&cookie)).0, addr(1));
    assert_eq!(go(&b, Some(&cookie)).0, addr(1));

    // Reload adding and removing other backends keeps the session.
    a.update(vec![
        EndpointConfig::new(addr(3)),
        EndpointConfig::new(addr(1)),
    ]);
    let (got, set, moved) = go(&a, Some(&cookie));
    assert_eq!((got, set, moved), (addr(1), None, false));

    // Its backend removed: moves.
    a.update(vec![EndpointConfig::new(addr(3))]);
    let (got, set, moved) = go(&a, Some(&cookie));
    assert_eq!(got, addr(3));
    assert!(moved && set.is_some());
}

#[test]
fn garbage_cookies_are_treated_as_new_sessions() {
    let up = up_with(&[0, 1]);
    for bad in ["", "zzzz", "0123456789abcdef0", "ffffffffffffffff", "é€"] {
        let (_, set, moved) = go(&up, Some(bad));
        assert!(set.is_some() && moved, "{bad:?}");
    }
}

#[test]
fn pin_respects_exclusion_for_retries() {
    let up = up_with(&[0, 1]);
    let cookie = pin_for_addr(addr(0));
    let p = up
        .select_pinned(
            Some(&cookie),
            &PickContext {
                exclude: &[0],
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(p.selection.endpoint().addr(), addr(1));
    assert!(p.moved);
}
