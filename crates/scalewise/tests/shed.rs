//! Load shedding: in-flight limit, queue-latency congestion (CoDel-like), the layer.
use std::sync::Arc;
use std::time::Duration;

use futures_util::poll;
use scalewise::clock::ManualClock;
use scalewise::shed::{LoadShedLayer, LoadShedder, Overloaded, ShedConfig, ShedReason};
use tokio::sync::Semaphore;
use tower::{service_fn, BoxError, Service, ServiceBuilder, ServiceExt};

fn latency_shedder(clock: &ManualClock) -> LoadShedder {
    LoadShedder::with_clock(
        ShedConfig {
            max_in_flight: 10,
            queue_target: Some(Duration::from_millis(5)),
            interval: Duration::from_millis(100),
        },
        clock.clone(),
    )
}

#[test]
fn sheds_over_the_in_flight_limit() {
    let s = LoadShedder::new(ShedConfig {
        max_in_flight: 3,
        ..ShedConfig::default()
    });
    let guards: Vec<_> = (0..3).map(|_| s.try_enter().unwrap()).collect();
    for _ in 0..5 {
        assert_eq!(s.try_enter().unwrap_err().reason, ShedReason::InFlight);
    }
    assert_eq!(s.stats().in_flight, 3);
    drop(guards);
    assert_eq!(s.stats().in_flight, 0);
    assert!(s.try_enter().is_ok());
    assert_eq!(s.stats().shed_in_flight, 5);
}

#[test]
fn brief_queueing_is_tolerated() {
    let clock = ManualClock::new();
    let s = latency_shedder(&clock);
    for _ in 0..9 {
        s.observe_queue_delay(Duration::from_millis(50));
        clock.advance(Duration::from_millis(10));
    }
    // 90 ms over target: not yet a whole interval.
    assert!(s.try_enter().is_ok());
    // One delay under target ends the episode.
    s.observe_queue_delay(Duration::from_millis(1));
    clock.advance(Duration::from_millis(50));
    s.observe_queue_delay(Duration::from_millis(50));
    assert!(s.try_enter().is_ok());
}

#[test]
fn persistent_queueing_sheds_until_it_clears() {
    let clock = ManualClock::new();
    let s = latency_shedder(&clock);
    for _ in 0..=10 {
        s.observe_queue_delay(Duration::from_millis(50));
        clock.advance(Duration::from_millis(10));
    }
    assert_eq!(s.try_enter().unwrap_err().reason, ShedReason::QueueLatency);
    assert!(s.stats().congested);
    // No more reports (the queue drained or nothing gets in): shedding ends after one
    // interval by itself.
    clock.advance(Duration::from_millis(100));
    assert!(s.try_enter().is_ok());
    assert!(!s.stats().congested);
    assert_eq!(s.stats().shed_queue_latency, 1);
}

#[tokio::test]
async fn layer_sheds_with_overloaded_and_frees_places() {
    let gate = Arc::new(Semaphore::new(0));
    let backend = {
        let gate = gate.clone();
        service_fn(move |_: ()| {
            let gate = gate.clone();
            async move {
                let _p = gate.acquire().await.map_err(|e| Box::new(e) as BoxError)?;
                Ok::<_, BoxError>("ok")
            }
        })
    };
    let shedder = LoadShedder::new(ShedConfig {
        max_in_flight: 2,
        ..ShedConfig::default()
    });
    let mut svc = ServiceBuilder::new()
        .layer(LoadShedLayer::new(shedder.clone()))
        .service(backend);
    let a = svc.ready().await.unwrap().call(());
    let b = svc.ready().await.unwrap().call(());
    tokio::pin!(a, b);
    assert!(poll!(a.as_mut()).is_pending());
    assert!(poll!(b.as_mut()).is_pending());
    let err = svc.ready().await.unwrap().call(()).await.unwrap_err();
    assert_eq!(
        err.downcast_ref::<Overloaded>().map(|o| o.reason),
        Some(ShedReason::InFlight)
    );
    gate.add_permits(2);
    assert_eq!(a.await.unwrap(), "ok");
    assert_eq!(b.await.unwrap(), "ok");
    assert_eq!(shedder.stats().in_flight, 0);
    gate.add_permits(1);
    assert_eq!(svc.ready().await.unwrap().call(()).await.unwrap(), "ok");
}

#[test]
fn configs_read_human_durations() {
    let c: ShedConfig =
        serde_json::from_str(r#"{"max_in_flight": 5, "queue_target": "20ms"}"#).unwrap();
    assert_eq!(c.queue_target, Some(Duration::from_millis(20)));
    assert_eq!(c.interval, Duration::from_millis(100));
    let c: ShedConfig = serde_json::from_str(r#"{"queue_target": null}"#).unwrap();
    assert_eq!(c.queue_target, None);
    assert!(serde_json::from_str::<ShedConfig>(r#"{"queue_targt": "1s"}"#).is_err());
}
