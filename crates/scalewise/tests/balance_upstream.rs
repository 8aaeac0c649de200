//! Upstream behaviour: reload state survival, algorithm names, snapshots, the tower layer.
use scalewise::balance::{
    Algorithm, BalanceError, BalanceLayer, Endpoint, EndpointConfig, HashKeySource, Outcome,
    PickContext, SelectError, Upstream,
};
use scalewise::clock::ManualClock;
use scalewise::health::{HealthConfig, OutlierConfig};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tower::{service_fn, Layer, ServiceExt};

fn addr(i: usize) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9300 + i as u16))
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[test]
fn algorithm_names_round_trip() {
    let names: Vec<String> = Algorithm::ALL.iter().map(|a| a.to_string()).collect();
    assert_eq!(
        names,
        [
            "round_robin",
            "weighted_round_robin",
            "least_conn",
            "peak_ewma",
            "p2c",
            "random",
            "ketama",
            "maglev"
        ]
    );
    for a in Algorithm::ALL {
        assert_eq!(a.name().parse::<Algorithm>().unwrap(), a);
        assert_eq!(a.balancer().name(), a.name());
        let json = serde_json::to_string(&a).unwrap();
        assert_eq!(serde_json::from_str::<Algorithm>(&json).unwrap(), a);
    }
    let err = "fastest".parse::<Algorithm>().unwrap_err().to_string();
    assert!(err.contains("fastest") && err.contains("maglev"), "{err}");
    assert!(Algorithm::Maglev.is_hashing() && !Algorithm::LeastConn.is_hashing());
}

#[test]
fn reload_keeps_state_of_unchanged_backends() {
    let clock = ManualClock::new();
    let up = Upstream::builder("t")
        .algorithm(Algorithm::PeakEwma)
        .clock(Arc::new(clock.clone()))
        .health(HealthConfig {
            outlier: Some(OutlierConfig {
                consecutive_5xx: 1,
                ..Default::default()
            }),
            ..Default::default()
        })
        .endpoints((0..3).map(|i| EndpointConfig::new(addr(i))))
        .build();
    let before = up.endpoints();
    let held = up
        .select(&PickContext {
            exclude: &[1, 2],
            ..Default::default()
        })
        .unwrap();
    let s = up
        .select(&PickContext {
            exclude: &[0, 2],
            ..Default::default()
        })
        .unwrap();
    s.finish(Outcome::server_error(ms(3)));
    assert!(before[1].is_ejected());
    let ewma = before[1].snapshot().ewma_ms;
    assert!(ewma >= 1000.0, "failure penalty in EWMA: {ewma}");

    // Reload: drop backend 2, add 3, reweight 1.
    up.update(vec![
        EndpointConfig::new(addr(0)),
        EndpointConfig::new(addr(1)).weight(4),
        EndpointConfig::new(addr(3)),
        EndpointConfig::new(addr(1)), // duplicate, ignored
    ]);
    let after = up.endpoints();
    assert_eq!(after.len(), 3);
    assert!(Arc::ptr_eq(&before[0], &after[0]));
    assert!(Arc::ptr_eq(&before[1], &after[1]));
    assert_eq!(after[0].in_flight(), 1, "in-flight count survives");
    let snap = after[1].snapshot();
    assert!(snap.ejected, "ejection survives");
    assert_eq!(snap.weight, 4);
    assert_eq!(snap.requests, 1);
    assert_eq!(snap.failures, 1);
    assert_eq!(snap.ewma_ms, ewma, "EWMA survives");
    assert_eq!(after[2].id(), 3, "new backends get fresh ids");
    assert_eq!(after[2].snapshot().requests, 0);
    held.finish(Outcome::success(ms(1)));
    assert_eq!(after[0].in_flight(), 0);

    // The upstream snapshot serialises for the admin API.
    let json = serde_json::to_value(up.snapshot()).unwrap();
    assert_eq!(json["algorithm"], "peak_ewma");
    assert_eq!(json["available"], 2);
    assert_eq!(json["endpoints"][1]["ejected"], true);
    assert_eq!(json["endpoints"][1]["health"], "healthy");
}

#[test]
fn switching_algorithm_keeps_endpoints() {
    let up = Upstream::builder("t")
        .endpoints((0..3).map(|i| EndpointConfig::new(addr(i))))
        .build();
    let before = up.endpoints();
    up.set_algorithm(Algorithm::Maglev);
    assert_eq!(up.algorithm_name(), "maglev");
    assert!(Arc::ptr_eq(&before[2], &up.endpoints()[2]));
    let k = b"session-1".to_vec();
    let ctx = PickContext {
        hash_key: Some(&k),
        ..Default::default()
    };
    let first = up.select(&ctx).unwrap().endpoint().id();
    for _ in 0..10 {
        assert_eq!(up.select(&ctx).unwrap().endpoint().id(), first);
    }
}

#[test]
fn drained_backends_get_nothing_and_no_backend_is_an_error() {
    let up = Upstream::builder("api")
        .endpoints((0..2).map(|i| EndpointConfig::new(addr(i))))
        .build();
    up.endpoints()[0].set_draining(true);
    for _ in 0..10 {
        assert_eq!(
            up.select(&PickContext::default()).unwrap().endpoint().id(),
            1
        );
    }
    up.endpoints()[1].set_draining(true);
    assert_eq!(
        up.select(&PickContext::default()).unwrap_err(),
        SelectError::NoHealthyBackend("api".into())
    );
    let empty = Upstream::builder("none").build();
    assert!(empty.select(&PickContext::default()).is_err());
}

#[test]
fn hash_key_sources_extract_from_requests() {
    let req = http::Request::builder()
        .uri("/users/42?x=1")
        .header("x-user", "alice")
        .header("cookie", "theme=dark; sid=abc123")
        .body(())
        .unwrap();
    let path = req.uri().path();
    let h = req.headers();
    let get = |s: &str| s.parse::<HashKeySource>().unwrap().extract(h, path);
    assert_eq!(get("header:x-user"), Some(&b"alice"[..]));
    assert_eq!(get("cookie:sid"), Some(&b"abc123"[..]));
    assert_eq!(get("path"), Some(&b"/users/42"[..]));
    assert_eq!(get("client_ip"), None);
    assert_eq!(get("header:missing"), None);
    assert_eq!(get("cookie:missing"), None);
}

#[tokio::test]
async fn balance_layer_records_outcomes() {
    let up = Upstream::builder("t")
        .algorithm(Algorithm::RoundRobin)
        .endpoints((0..2).map(|i| EndpointConfig::new(addr(i))))
        .build();
    let svc = BalanceLayer::new(up.clone()).layer(|e: &Arc<Endpoint>| {
        let fail = e.id() == 1;
        service_fn(move |x: u32| async move {
            if fail {
                Err("backend down")
            } else {
                Ok(x * 2)
            }
        })
    });
    let mut ok = 0;
    let mut failed = 0;
    for i in 0..10 {
        match svc.clone().oneshot(i).await {
            Ok(v) => {
                assert_eq!(v, i * 2);
                ok += 1;
            }
            Err(BalanceError::Inner(_)) => failed += 1,
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!((ok, failed), (5, 5));
    let snaps: Vec<_> = up.endpoints().iter().map(|e| e.snapshot()).collect();
    assert_eq!((snaps[0].requests, snaps[0].failures), (5, 0));
    assert_eq!((snaps[1].requests, snaps[1].failures), (5, 5));
    assert_eq!(snaps[0].in_flight + snaps[1].in_flight, 0);

    up.endpoints()[0].set_draining(true);
    up.endpoints()[1].set_draining(true);
    assert!(matches!(
        svc.oneshot(1).await,
        Err(BalanceError::NoBackend(_))
    ));
}

#[test]
fn health_config_deserialises_strictly() {
    let cfg: HealthConfig = serde_json::from_str(
        r#"{"active":{"kind":"tcp","interval":"500ms","timeout":"1s","rise":1,"fall":2,"expected_status":"200-204"},
            "outlier":{"max_ejection_time":"2m"},"panic_threshold":30}"#,
    )
    .unwrap();
    let active = cfg.active.unwrap();
    assert_eq!(active.interval, ms(500));
    assert_eq!(active.expected_status.max, 204);
    assert_eq!(
        cfg.outlier.unwrap().max_ejection_time,
        Duration::from_secs(120)
    );
    assert!(serde_json::from_str::<HealthConfig>(r#"{"actve":{}}"#).is_err());
    assert!(serde_json::from_str::<HealthConfig>(r#"{"active":{"interval":"soon"}}"#).is_err());
    assert!(
        serde_json::from_str::<HealthConfig>(r#"{"active":{"expected_status":"abc"}}"#).is_err()
    );
}
