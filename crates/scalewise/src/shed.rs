//! Load shedding: refuse work at the door, cheaply, when the service is saturated, so that
//! the work already admitted finishes in time instead of everything timing out together.
//!
//! A [`LoadShedder`] refuses a call with [`Overloaded`] when
//! - `max_in_flight` calls are already running, or
//! - queueing delay is over target: callers report how long work waited before being
//!   served ([`LoadShedder::observe_queue_delay`], which a [`Bulkhead`](crate::bulkhead::Bulkhead)
//!   does by itself via `report_waits_to`). As in CoDel, a delay over `queue_target`
//!   that persists for a whole `interval` marks the queue congested; congestion lasts for
//!   one `interval` after the last over-target report, so shedding stops by itself once
//!   reports stop or come back under target.
//!
//! tower's `load_shed` sheds when the inner service is not ready; this one is usable
//! without a tower stack and sheds on its own measurements.
//!
//! ```
//! use scalewise::shed::{LoadShedder, ShedConfig, ShedReason};
//!
//! let shedder = LoadShedder::new(ShedConfig { max_in_flight: 1, ..ShedConfig::default() });
//! let running = shedder.try_enter().unwrap();
//! assert_eq!(shedder.try_enter().unwrap_err().reason, ShedReason::InFlight);
//! drop(running);
//! assert!(shedder.try_enter().is_ok());
//! ```
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tower::BoxError;
use tower_layer::Layer;
use tower_service::Service;

use crate::clock::{Clock, SystemClock};
use crate::timeout::duration_serde;

/// Shedding settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ShedConfig {
    /// Calls running at once before new ones are shed.
    pub max_in_flight: u32,
    /// Acceptable queueing delay; `None` sheds on in-flight count only.
    #[serde(default, with = "opt_duration")]
    pub queue_target: Option<Duration>,
    /// How long the delay must stay over target before shedding starts, and how long
    /// shedding lasts after the last over-target report.
    #[serde(with = "duration_serde")]
    pub interval: Duration,
}

impl Default for ShedConfig {
    fn default() -> Self {
        Self {
            max_in_flight: 1000,
            queue_target: None,
            interval: Duration::from_millis(100),
        }
    }
}

mod opt_duration {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => crate::timeout::duration_serde::serialize(d, s),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        match Option::<String>::deserialize(d)? {
            None => Ok(None),
            Some(s) => humantime::parse_duration(&s)
                .map(Some)
                .map_err(|e| serde::de::Error::custom(format!("invalid duration {s:?}: {e}"))),
        }
    }
}

/// Why a call was shed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ShedReason {
    /// `max_in_flight` reached.
    InFlight,
    /// Queueing delay over target.
    QueueLatency,
}

/// The service is saturated; the call was not started. Safe to retry elsewhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("overloaded ({reason:?}), request shed")]
pub struct Overloaded {
    /// Why.
    pub reason: ShedReason,
}

/// A shedder's numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ShedStats {
    /// Calls running now.
    pub in_flight: u32,
    /// Whether queueing delay currently counts as congested.
    pub congested: bool,
    /// Shed for in-flight count, since creation.
    pub shed_in_flight: u64,
    /// Shed for queueing delay, since creation.
    pub shed_queue_latency: u64,
}

struct Inner {
    cfg: ShedConfig,
    target_nanos: Option<u64>,
    interval_nanos: u64,
    in_flight: AtomicU32,
    /// When the delay went over target, `u64::MAX` while it is under.
    above_since: AtomicU64,
    congested_until: AtomicU64,
    shed_in_flight: AtomicU64,
    shed_latency: AtomicU64,
    clock: Arc<dyn Clock>,
}

/// See the [module docs](self). Cheap to clone; clones share state.
#[derive(Clone)]
pub struct LoadShedder {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for LoadShedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadShedder")
            .field("config", &self.inner.cfg)
            .field("stats", &self.stats())
            .finish()
    }
}

/// A running call; leaving it (drop) frees its place.
pub struct ShedGuard {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for ShedGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShedGuard").finish_non_exhaustive()
    }
}

impl Drop for ShedGuard {
    fn drop(&mut self) {
        self.inner.in_flight.fetch_sub(1, Relaxed);
    }
}

fn nanos(d: Duration) -> u64 {
    d.as_nanos().min(u64::MAX as u128) as u64
}

impl LoadShedder {
    /// A shedder on the system clock.
    pub fn new(config: ShedConfig) -> Self {
        Self::with_clock(config, SystemClock)
    }

    /// A shedder on `clock`.
    pub fn with_clock(config: ShedConfig, clock: impl Clock) -> Self {
        Self {
            inner: Arc::new(Inner {
                target_nanos: config.queue_target.map(nanos),
                interval_nanos: nanos(config.interval).max(1),
                cfg: config,
                in_flight: AtomicU32::new(0),
                above_since: AtomicU64::new(u64::MAX),
                congested_until: AtomicU64::new(0),
                shed_in_flight: AtomicU64::new(0),
                shed_latency: AtomicU64::new(0),
                clock: Arc::new(clock),
            }),
        }
    }

    /// Admits a call, or sheds it.
    ///
    /// # Errors
    /// [`Overloaded`] with the reason.
    #[inline]
    pub fn try_enter(&self) -> Result<ShedGuard, Overloaded> {
        let i = &self.inner;
        if i.target_nanos.is_some() && i.clock.now_nanos() < i.congested_until.load(Relaxed) {
            i.shed_latency.fetch_add(1, Relaxed);
            return Err(Overloaded {
                reason: ShedReason::QueueLatency,
            });
        }
        if i.in_flight.fetch_add(1, Relaxed) >= i.cfg.max_in_flight {
            i.in_flight.fetch_sub(1, Relaxed);
            i.shed_in_flight.fetch_add(1, Relaxed);
            return Err(Overloaded {
                reason: ShedReason::InFlight,
            });
        }
        Ok(ShedGuard { inner: i.clone() })
    }

    /// Reports how long one piece of work waited before being served.
    pub fn observe_queue_delay(&self, delay: Duration) {
        let i = &self.inner;
        let Some(target) = i.target_nanos else {
            return;
        };
        let now = i.clock.now_nanos();
        if nanos(delay) <= target {
            i.above_since.store(u64::MAX, Relaxed);
            return;
        }
        let since = match i
            .above_since
            .compare_exchange(u64::MAX, now, Relaxed, Relaxed)
        {
            Ok(_) => now,
            Err(since) => since,
        };
        if now.saturating_sub(since) >= i.interval_nanos {
            i.congested_until
                .fetch_max(now.saturating_add(i.interval_nanos), Relaxed);
        }
    }

    /// Current numbers.
    pub fn stats(&self) -> ShedStats {
        let i = &self.inner;
        ShedStats {
            in_flight: i.in_flight.load(Relaxed),
            congested: i.target_nanos.is_some()
                && i.clock.now_nanos() < i.congested_until.load(Relaxed),
            shed_in_flight: i.shed_in_flight.load(Relaxed),
            shed_queue_latency: i.shed_latency.load(Relaxed),
        }
    }
}

/// A tower layer shedding with a [`LoadShedder`]; shed calls fail at once with a boxed
/// [`Overloaded`] (answer 503 to HTTP clients).
///
/// ```
/// use scalewise::shed::{LoadShedLayer, LoadShedder, Overloaded, ShedConfig};
/// use tower::{service_fn, BoxError, Service, ServiceBuilder, ServiceExt};
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let shedder = LoadShedder::new(ShedConfig { max_in_flight: 0, ..ShedConfig::default() });
/// let mut svc = ServiceBuilder::new()
///     .layer(LoadShedLayer::new(shedder))
///     .service(service_fn(|_: ()| async { Ok::<_, BoxError>(()) }));
/// let err = svc.ready().await.unwrap().call(()).await.unwrap_err();
/// assert!(err.is::<Overloaded>());
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct LoadShedLayer {
    shedder: LoadShedder,
}

impl LoadShedLayer {
    /// A layer sharing `shedder` among every service it wraps.
    pub fn new(shedder: LoadShedder) -> Self {
        Self { shedder }
    }
}

impl<S> Layer<S> for LoadShedLayer {
    type Service = LoadShedService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        LoadShedService {
            inner,
            shedder: self.shedder.clone(),
        }
    }
}

/// The service made by [`LoadShedLayer`].
#[derive(Debug, Clone)]
pub struct LoadShedService<S> {
    inner: S,
    shedder: LoadShedder,
}

impl<S, Req> Service<Req> for LoadShedService<S>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ShedFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        match self.shedder.try_enter() {
            Ok(guard) => ShedFuture {
                inner: Some(self.inner.call(req)),
                guard: Some(guard),
                shed: None,
            },
            Err(e) => ShedFuture {
                inner: None,
                guard: None,
                shed: Some(e),
            },
        }
    }
}

pin_project_lite::pin_project! {
    /// The future of [`LoadShedService`].
    pub struct ShedFuture<F> {
        #[pin]
        inner: Option<F>,
        guard: Option<ShedGuard>,
        shed: Option<Overloaded>,
    }
}

impl<F, T, E> Future for ShedFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Some(e) = this.shed.take() {
            return Poll::Ready(Err(Box::new(e)));
        }
        let Some(fut) = this.inner.as_pin_mut() else {
            return Poll::Ready(Err("shed future polled after completion".into()));
        };
        let r = ready!(fut.poll(cx));
        this.guard.take();
        Poll::Ready(r.map_err(Into::into))
    }
}
