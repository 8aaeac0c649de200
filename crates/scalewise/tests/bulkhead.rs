//! Bulkhead on tokio's paused clock: queue full, wait timeout, FIFO hand-over,
//! cancellation, the tower layer, and reporting waits to a load shedder.
use std::sync::Arc;
use std::time::Duration;

use futures_util::poll;
use scalewise::bulkhead::{
    Bulkhead, BulkheadCallError, BulkheadConfig, BulkheadError, BulkheadLayer,
};
use scalewise::shed::{LoadShedder, ShedConfig, ShedReason};
use tokio::sync::Semaphore;
use tower::{service_fn, BoxError, Service, ServiceBuilder, ServiceExt};

fn bulkhead(max_concurrent: u32, max_waiting: u32) -> Bulkhead {
    Bulkhead::new(BulkheadConfig {
        max_concurrent,
        max_waiting,
        max_wait: Duration::from_millis(100),
    })
}

#[tokio::test(start_paused = true)]
async fn rejects_when_queue_is_full() {
    let b = bulkhead(2, 1);
    let _p1 = b.acquire().await.unwrap();
    let _p2 = b.acquire().await.unwrap();
    let waiter = b.acquire();
    tokio::pin!(waiter);
    assert!(poll!(waiter.as_mut()).is_pending());
    assert_eq!(b.stats().waiting, 1);
    let err = b.acquire().await.unwrap_err();
    assert_eq!(
        err,
        BulkheadError::QueueFull {
            max_concurrent: 2,
            max_waiting: 1
        }
    );
    assert!(b.try_acquire().is_err());
    let s = b.stats();
    assert_eq!((s.in_flight, s.waiting, s.rejected_queue_full), (2, 1, 2));
}

#[tokio::test(start_paused = true)]
async fn waiters_time_out() {
    let b = bulkhead(1, 5);
    let _held = b.acquire().await.unwrap();
    let start = tokio::time::Instant::now();
    let err = b.acquire().await.unwrap_err();
    assert_eq!(
        err,
        BulkheadError::WaitTimeout {
            waited: Duration::from_millis(100)
        }
    );
    assert_eq!(start.elapsed(), Duration::from_millis(100));
    let s = b.stats();
    assert_eq!((s.waiting, s.rejected_wait_timeout), (0, 1));
}

#[tokio::test(start_paused = true)]
async fn released_slots_go_to_waiters_in_order() {
    let b = bulkhead(1, 5);
    let held = b.acquire().await.unwrap();
    let first = b.acquire();
    let second = b.acquire();
    tokio::pin!(first, second);
    assert!(poll!(first.as_mut()).is_pending());
    assert!(poll!(second.as_mut()).is_pending());
    drop(held);
    // Someone arriving now cannot overtake the queue.
    assert!(b.try_acquire().is_err());
    assert!(poll!(second.as_mut()).is_pending());
    let p = first.await.unwrap();
    drop(p);
    assert!(second.await.is_ok());
}

#[tokio::test(start_paused = true)]
async fn cancelled_waiters_leave_the_queue() {
    let b = bulkhead(1, 1);
    let _held = b.acquire().await.unwrap();
    {
        let waiter = b.acquire();
        tokio::pin!(waiter);
        assert!(poll!(waiter.as_mut()).is_pending());
        assert_eq!(b.stats().waiting, 1);
    }
    assert_eq!(b.stats().waiting, 0);
    let waiter = b.acquire();
    tokio::pin!(waiter);
    assert!(
        poll!(waiter.as_mut()).is_pending(),
        "the place is free again"
    );
}

#[tokio::test(start_paused = true)]
async fn call_reports_rejection_and_inner_errors() {
    let b = bulkhead(1, 0);
    let r: Result<(), BulkheadCallError<&str>> = b.call(async { Err("boom") }).await;
    assert!(matches!(r, Err(BulkheadCallError::Inner("boom"))));
    let _held = b.acquire().await.unwrap();
    let r: Result<(), BulkheadCallError<&str>> = b.call(async { Ok(()) }).await;
    assert!(matches!(
        r,
        Err(BulkheadCallError::Rejected(BulkheadError::QueueFull { .. }))
    ));
}

#[tokio::test(start_paused = true)]
async fn layer_bounds_concurrency() {
    let gate = Arc::new(Semaphore::new(0));
    let backend = {
        let gate = gate.clone();
        service_fn(move |x: u32| {
            let gate = gate.clone();
            async move {
                let _p = gate.acquire().await.map_err(|e| Box::new(e) as BoxError)?;
                Ok::<_, BoxError>(x)
            }
        })
    };
    let b = bulkhead(1, 1);
    let mut svc = ServiceBuilder::new()
        .layer(BulkheadLayer::new(b.clone()))
        .service(backend);
    let running = svc.ready().await.unwrap().call(1);
    let queued = svc.ready().await.unwrap().call(2);
    tokio::pin!(running, queued);
    assert!(poll!(running.as_mut()).is_pending());
    assert!(poll!(queued.as_mut()).is_pending());
    assert_eq!((b.stats().in_flight, b.stats().waiting), (1, 1));
    let err = svc.ready().await.unwrap().call(3).await.unwrap_err();
    assert!(matches!(
        err.downcast_ref::<BulkheadError>(),
        Some(BulkheadError::QueueFull { .. })
    ));
    gate.add_permits(2);
    assert_eq!(running.await.unwrap(), 1);
    assert_eq!(queued.await.unwrap(), 2);
    assert_eq!(b.stats().in_flight, 0);
}

#[tokio::test(start_paused = true)]
async fn long_waits_make_the_shedder_refuse_work() {
    let shedder = LoadShedder::with_clock(
        ShedConfig {
            max_in_flight: 100,
            queue_target: Some(Duration::from_millis(20)),
            interval: Duration::from_millis(50),
        },
        scalewise::clock::TokioClock,
    );
    let b = bulkhead(1, 10).report_waits_to(shedder.clone());
    let held = b.acquire().await.unwrap();
    // Two callers wait past the target, the second one a whole interval after the first
    // went over: the queue is congested.
    let w1 = b.acquire();
    tokio::pin!(w1);
    assert!(poll!(w1.as_mut()).is_pending());
    tokio::time::advance(Duration::from_millis(30)).await;
    drop(held);
    let p = w1.await.unwrap();
    let w2 = b.acquire();
    tokio::pin!(w2);
    assert!(poll!(w2.as_mut()).is_pending());
    tokio::time::advance(Duration::from_millis(60)).await;
    drop(p);
    let _p2 = w2.await.unwrap();
    assert_eq!(
        shedder.try_enter().unwrap_err().reason,
        ShedReason::QueueLatency
    );
    assert!(shedder.stats().congested);
}

#[test]
fn config_reads_human_durations() {
    let c: BulkheadConfig =
        serde_json::from_str(r#"{"max_concurrent": 8, "max_waiting": 2, "max_wait": "250ms"}"#)
            .unwrap();
    assert_eq!(c.max_wait, Duration::from_millis(250));
    assert!(serde_json::from_str::<BulkheadConfig>(r#"{"max_wait": 5}"#).is_err());
}
