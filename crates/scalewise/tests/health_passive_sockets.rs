//! Ejection and recovery end to end with real loopback backends: a tiny client picks with
//! the upstream, sends a real HTTP request, and reports what happened.
mod common;

use common::status_server;
use scalewise::balance::{Algorithm, EndpointConfig, HealthStatus, Outcome, PickContext, Upstream};
use scalewise::clock::ManualClock;
use scalewise::health::{
    check_round, ActiveCheckConfig, HealthConfig, OutlierConfig, SlowStartConfig,
};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A closed port: bind, note the address, drop.
async fn dead_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap()
}

/// One request through the upstream; returns the backend it went to and the status
/// (0 = connect failure). Latencies are reported as fixed values: the manual clock
/// drives all health timing.
async fn request(up: &Upstream) -> Option<(SocketAddr, u16)> {
    let sel = up.select(&PickContext::default()).ok()?;
    let addr = sel.endpoint().addr();
    let mut sock = match TcpStream::connect(addr).await {
        Ok(s) => s,
        Err(_) => {
            sel.finish(Outcome::connect_failure(Duration::from_millis(1)));
            return Some((addr, 0));
        }
    };
    sock.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut resp = Vec::new();
    sock.read_to_end(&mut resp).await.unwrap();
    let status: u16 = std::str::from_utf8(&resp[9..12]).unwrap().parse().unwrap();
    sel.finish(Outcome::from_status(status, Duration::from_millis(2)));
    Some((addr, status))
}

#[tokio::test]
async fn failing_backends_are_ejected_and_recover_with_slow_start() {
    let good = status_server(200, None).await;
    let flaky = status_server(500, None).await;
    let dead = dead_addr().await;
    let clock = ManualClock::new();
    let up = Upstream::builder("t")
        .algorithm(Algorithm::WeightedRoundRobin)
        .clock(Arc::new(clock.clone()))
        .health(HealthConfig {
            outlier: Some(OutlierConfig {
                consecutive_5xx: 3,
                consecutive_connect_failures: 2,
                base_ejection_time: Duration::from_secs(30),
                max_ejection_percent: 100,
                ..Default::default()
            }),
            slow_start: Some(SlowStartConfig {
                window: Duration::from_secs(60),
                min_weight_percent: 10,
            }),
            ..Default::default()
        })
        .endpoints([good.addr, flaky.addr, dead].map(EndpointConfig::new))
        .build();

    // Round robin over three: the 5xx backend fails 3 times and the dead one twice
    // within the first 9 requests; after that only the good backend answers.
    for _ in 0..9 {
        request(&up).await.unwrap();
    }
    let eps = up.endpoints();
    assert!(eps[1].is_ejected(), "{:?}", eps[1].snapshot());
    assert!(eps[2].is_ejected(), "{:?}", eps[2].snapshot());
    for _ in 0..20 {
        assert_eq!(request(&up).await.unwrap(), (good.addr, 200));
    }

    // The 5xx backend is fixed; after the ejection time it comes back ramping.
    flaky.status.store(200, Ordering::SeqCst);
    clock.advance(Duration::from_secs(30));
    let dead_ep = eps[2].clone();
    // The dead one is back too but fails again at once and is re-ejected for 2 × 30s.
    let mut seen: HashMap<SocketAddr, usize> = HashMap::new();
    for _ in 0..110 {
        let (a, status) = request(&up).await.unwrap();
        *seen.entry(a).or_default() += 1;
        assert!(status == 200 || a == dead, "{a} {status}");
    }
    assert!(dead_ep.is_ejected());
    assert_eq!(dead_ep.snapshot().times_ejected, 2);
    assert_eq!(dead_ep.snapshot().ejected_for_ms, Some(60_000));
    // Slow start: 10% weight right after the ejection, so far fewer picks than the good one.
    let f = seen.get(&flaky.addr).copied().unwrap_or(0);
    let g = seen[&good.addr];
    assert!(f >= 5 && f * 5 < g, "flaky {f}, good {g}");

    // Half way through the ramp it is at ~50% weight.
    clock.advance(Duration::from_secs(30));
    let mut seen: HashMap<SocketAddr, usize> = HashMap::new();
    for _ in 0..150 {
        let (a, _) = request(&up).await.unwrap();
        *seen.entry(a).or_default() += 1;
    }
    assert_eq!(seen.get(&dead), None);
    assert_eq!(seen[&flaky.addr], 50, "{seen:?}");
}

#[tokio::test]
async fn active_and_passive_together() {
    let a = status_server(200, None).await;
    let b = status_server(200, None).await;
    let clock = ManualClock::new();
    let active = ActiveCheckConfig {
        rise: 1,
        fall: 1,
        ..ActiveCheckConfig::http("/health")
    };
    let up = Upstream::builder("t")
        .clock(Arc::new(clock.clone()))
        .health(HealthConfig {
            active: Some(active.clone()),
            outlier: Some(OutlierConfig {
                consecutive_5xx: 1,
                max_ejection_percent: 100,
                ..Default::default()
            }),
            ..Default::default()
        })
        .endpoints([a.addr, b.addr].map(EndpointConfig::new))
        .build();
    assert!(
        request(&up).await.is_none(),
        "no traffic before the first check"
    );
    check_round(&up, &active).await;
    let eps = up.endpoints();
    assert!(eps.iter().all(|e| e.health() == HealthStatus::Healthy));

    // b starts failing real requests: ejected although its health check still passes.
    b.status.store(503, Ordering::SeqCst);
    for _ in 0..2 {
        request(&up).await.unwrap();
    }
    assert!(eps[1].is_ejected());
    b.status.store(200, Ordering::SeqCst);
    check_round(&up, &active).await;
    assert!(
        eps[1].is_ejected(),
        "a passing check does not cut an ejection short"
    );

    // a fails its active check: unhealthy though never ejected; nothing is available.
    a.status.store(500, Ordering::SeqCst);
    check_round(&up, &active).await;
    assert_eq!(eps[0].health(), HealthStatus::Unhealthy);
    assert!(!eps[0].is_ejected());
    assert!(request(&up).await.is_none());

    // b's ejection ends: it is the only available backend.
    clock.advance(Duration::from_secs(30));
    for _ in 0..5 {
        assert_eq!(request(&up).await.unwrap(), (b.addr, 200));
    }
}
