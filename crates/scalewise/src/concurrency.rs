//! Adaptive concurrency limits, after Netflix's `concurrency-limits`: instead of a fixed
//! bulkhead size that is wrong as soon as the backend changes, the limit follows what the
//! backend can take, measured from round-trip times and drops.
//!
//! - [`Aimd`]: additive increase while calls succeed with the limit in use, multiplicative
//!   decrease on a drop (a timeout, a rejection, an overload answer). Simple and robust.
//! - [`Gradient2`]: compares a short-term RTT with a long-term average; when queueing
//!   makes calls slower than usual the gradient falls below one and the limit shrinks
//!   before anything times out.
//!
//! ```
//! use scalewise::concurrency::{Aimd, AdaptiveLimiter};
//!
//! let limiter = AdaptiveLimiter::new(Aimd::new(10, 1, 100));
//! let token = limiter.try_acquire().expect("under the limit");
//! token.dropped(); // the backend shed it: back off
//! assert_eq!(limiter.limit(), 9);
//! ```
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use serde::Serialize;
use tower::BoxError;
use tower_layer::Layer;
use tower_service::Service;

use crate::breaker::classify::{Classify, ErrorsAreFailures, Verdict};
use crate::clock::{Clock, SystemClock};

/// One finished call, as seen by a limit algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    /// Its round-trip time.
    pub rtt: Duration,
    /// Calls in flight when it started (itself included).
    pub in_flight: u32,
    /// Whether it was dropped (timed out, rejected, overloaded).
    pub dropped: bool,
}

/// An algorithm computing a new limit from a sample.
pub trait LimitAlgorithm: Send + 'static {
    /// The limit before any sample.
    fn initial_limit(&self) -> u32;
    /// The limit after `sample`, given the current `limit`.
    fn update(&mut self, limit: u32, sample: Sample) -> u32;
}

/// Additive increase, multiplicative decrease.
#[derive(Debug, Clone)]
pub struct Aimd {
    initial: u32,
    min: u32,
    max: u32,
    /// Factor applied on a drop.
    pub backoff_ratio: f64,
    /// A success slower than this counts as a drop.
    pub timeout: Option<Duration>,
}

impl Aimd {
    /// Starting at `initial`, kept within `[min, max]`, backing off by 0.9 on a drop.
    pub fn new(initial: u32, min: u32, max: u32) -> Self {
        let min = min.max(1);
        let max = max.max(min);
        Self {
            initial: initial.clamp(min, max),
            min,
            max,
            backoff_ratio: 0.9,
            timeout: None,
        }
    }
}

impl LimitAlgorithm for Aimd {
    fn initial_limit(&self) -> u32 {
        self.initial
    }

    fn update(&mut self, limit: u32, s: Sample) -> u32 {
        let dropped = s.dropped || self.timeout.is_some_and(|t| s.rtt >= t);
        let next = if dropped {
            ((limit as f64) * self.backoff_ratio.clamp(0.0, 1.0)).floor() as u32
        } else if s.in_flight.saturating_mul(2) >= limit {
            // Grow only when the limit is actually in use: an idle service proves nothing
            // about how much more it could take.
            limit.saturating_add(1)
        } else {
            limit
        };
        next.clamp(self.min, self.max)
    }
}

/// Netflix's Gradient2: `limit * clamp(tolerance * long_rtt / short_rtt, 0.5, 1) + queue`,
/// smoothed, where `long_rtt` is an exponential average over many samples and `queue` is
/// `sqrt(limit)` headroom for bursts.
#[derive(Debug, Clone)]
pub struct Gradient2 {
    initial: u32,
    min: u32,
    max: u32,
    /// How much slower than the long-term RTT calls may get before the limit shrinks.
    pub tolerance: f64,
    /// Weight of a new estimate (0..1).
    pub smoothing: f64,
    /// Samples the long-term average spans.
    pub long_window: u32,
    long_rtt: Option<f64>,
    estimate: f64,
}

impl Gradient2 {
    /// Starting at `initial`, kept within `[min, max]`, tolerance 1.5, smoothing 0.2,
    /// long window 600 samples.
    pub fn new(initial: u32, min: u32, max: u32) -> Self {
        let min = min.max(1);
        let max = max.max(min);
        let initial = initial.clamp(min, max);
        Self {
            initial,
            min,
            max,
            tolerance: 1.5,
            smoothing: 0.2,
            long_window: 600,
            long_rtt: None,
            estimate: initial as f64,
        }
    }
}

impl LimitAlgorithm for Gradient2 {
    fn initial_limit(&self) -> u32 {
        self.initial
    }

    fn update(&mut self, limit: u32, s: Sample) -> u32 {
        let short = s.rtt.as_secs_f64().max(1e-9);
        let long = match self.long_rtt {
            None => short,
            Some(l) => {
                let n = self.long_window.max(1) as f64;
                let mut l = l + (short - l) / n;
                // After a long stretch of slow calls the average has drifted up; let it
                // come back down fast once they are fast again, or the limit would sit
                // at its maximum through the next overload.
                if l / short > 2.0 {
                    l *= 0.95;
                }
                l
            }
        };
        self.long_rtt = Some(long);
        // App-limited: with little in flight the RTT says nothing about capacity.
        if (s.in_flight as f64) < self.estimate / 2.0 && !s.dropped {
            return limit;
        }
        let gradient = (self.tolerance * long / short).clamp(0.5, 1.0);
        let queue = self.estimate.sqrt();
        let mut next = self.estimate * gradient + queue;
        if s.dropped {
            next = next.min(self.estimate * 0.9);
        }
        let sm = self.smoothing.clamp(0.0, 1.0);
        self.estimate =
            (self.estimate * (1.0 - sm) + next * sm).clamp(self.min as f64, self.max as f64);
        self.estimate as u32
    }
}

/// Why [`AdaptiveLimiter`] refused a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("concurrency limit of {limit} reached")]
pub struct LimitExceeded {
    /// The limit at the time.
    pub limit: u32,
}

/// A limiter's numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct LimiterStats {
    /// The current limit.
    pub limit: u32,
    /// Calls in flight.
    pub in_flight: u32,
    /// Calls refused since creation.
    pub rejected: u64,
}

struct Inner {
    limit: AtomicU32,
    in_flight: AtomicU32,
    rejected: AtomicU64,
    algorithm: Mutex<Box<dyn LimitAlgorithm>>,
    clock: Arc<dyn Clock>,
}

/// Admits calls while fewer than the current limit are in flight, and adapts the limit
/// from each call's outcome. Cheap to clone; clones share state.
#[derive(Clone)]
pub struct AdaptiveLimiter {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for AdaptiveLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdaptiveLimiter")
            .field("stats", &self.stats())
            .finish()
    }
}

impl AdaptiveLimiter {
    /// A limiter driven by `algorithm` on the system clock.
    pub fn new(algorithm: impl LimitAlgorithm) -> Self {
        Self::with_clock(algorithm, SystemClock)
    }

    /// A limiter on `clock` (which times the calls).
    pub fn with_clock(algorithm: impl LimitAlgorithm, clock: impl Clock) -> Self {
        Self {
            inner: Arc::new(Inner {
                limit: AtomicU32::new(algorithm.initial_limit().max(1)),
                in_flight: AtomicU32::new(0),
                rejected: AtomicU64::new(0),
                algorithm: Mutex::new(Box::new(algorithm)),
                clock: Arc::new(clock),
            }),
        }
    }

    /// The current limit.
    pub fn limit(&self) -> u32 {
        self.inner.limit.load(Relaxed)
    }

    /// Calls in flight.
    pub fn in_flight(&self) -> u32 {
        self.inner.in_flight.load(Relaxed)
    }

    /// Current numbers.
    pub fn stats(&self) -> LimiterStats {
        LimiterStats {
            limit: self.limit(),
            in_flight: self.in_flight(),
            rejected: self.inner.rejected.load(Relaxed),
        }
    }

    /// Admits a call if under the limit. Report its outcome through the token.
    ///
    /// # Errors
    /// [`LimitExceeded`] when the limit is reached.
    pub fn try_acquire(&self) -> Result<LimitToken, LimitExceeded> {
        let i = &self.inner;
        let limit = i.limit.load(Relaxed);
        let mut cur = i.in_flight.load(Relaxed);
        loop {
            if cur >= limit {
                i.rejected.fetch_add(1, Relaxed);
                return Err(LimitExceeded { limit });
            }
            match i
                .in_flight
                .compare_exchange_weak(cur, cur + 1, Relaxed, Relaxed)
            {
                Ok(_) => break,
                Err(now) => cur = now,
            }
        }
        Ok(LimitToken {
            inner: Some(i.clone()),
            start: i.clock.now_nanos(),
            in_flight: cur + 1,
        })
    }
}

/// An admitted call. Report [`LimitToken::success`] or [`LimitToken::dropped`]; dropping
/// the token unreported (or [`LimitToken::ignore`]) frees its place without a sample.
#[derive(Debug)]
#[must_use = "report the call's outcome so the limit can adapt"]
pub struct LimitToken {
    inner: Option<Arc<Inner>>,
    start: u64,
    in_flight: u32,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdaptiveLimiter").finish_non_exhaustive()
    }
}

impl LimitToken {
    /// The call succeeded; its RTT is measured from acquisition.
    pub fn success(self) {
        self.finish(false);
    }
    /// The call was dropped: timed out, rejected or shed downstream.
    pub fn dropped(self) {
        self.finish(true);
    }
    /// Frees the place without teaching the limiter anything.
    pub fn ignore(self) {}

    fn finish(mut self, dropped: bool) {
        let Some(i) = self.inner.take() else { return };
        i.in_flight.fetch_sub(1, Relaxed);
        let sample = Sample {
            rtt: Duration::from_nanos(i.clock.now_nanos().saturating_sub(self.start)),
            in_flight: self.in_flight,
            dropped,
        };
        let mut algo = i.algorithm.lock().unwrap_or_else(|e| e.into_inner());
        let limit = algo.update(i.limit.load(Relaxed), sample);
        i.limit.store(limit.max(1), Relaxed);
    }
}

impl Drop for LimitToken {
    fn drop(&mut self) {
        if let Some(i) = self.inner.take() {
            i.in_flight.fetch_sub(1, Relaxed);
        }
    }
}

/// A tower layer limiting concurrency adaptively. Over the limit, calls fail at once with
/// a boxed [`LimitExceeded`]. The classifier's [`Verdict::Failure`] counts as a drop
/// (use it for timeouts and overload answers such as 503), `Ignored` teaches nothing.
///
/// ```
/// use scalewise::concurrency::{AdaptiveLimiter, AdaptiveLimitLayer, Gradient2};
/// use tower::{service_fn, BoxError, Service, ServiceBuilder, ServiceExt};
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let limiter = AdaptiveLimiter::new(Gradient2::new(20, 1, 200));
/// let mut svc = ServiceBuilder::new()
///     .layer(AdaptiveLimitLayer::new(limiter.clone()))
///     .service(service_fn(|x: u8| async move { Ok::<_, BoxError>(x) }));
/// assert_eq!(svc.ready().await.unwrap().call(3).await.unwrap(), 3);
/// assert_eq!(limiter.in_flight(), 0);
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct AdaptiveLimitLayer<C = ErrorsAreFailures> {
    limiter: AdaptiveLimiter,
    classifier: Arc<C>,
}

impl AdaptiveLimitLayer {
    /// A layer sharing `limiter`, counting errors as drops.
    pub fn new(limiter: AdaptiveLimiter) -> Self {
        Self {
            limiter,
            classifier: Arc::new(ErrorsAreFailures),
        }
    }
}

impl<C> AdaptiveLimitLayer<C> {
    /// Judges results with `classifier` instead.
    pub fn with_classifier<C2>(self, classifier: C2) -> AdaptiveLimitLayer<C2> {
        AdaptiveLimitLayer {
            limiter: self.limiter,
            classifier: Arc::new(classifier),
        }
    }
}

impl<S, C> Layer<S> for AdaptiveLimitLayer<C> {
    type Service = AdaptiveLimitService<S, C>;
    fn layer(&self, inner: S) -> Self::Service {
        AdaptiveLimitService {
            inner,
            limiter: self.limiter.clone(),
            classifier: self.classifier.clone(),
        }
    }
}

/// The service made by [`AdaptiveLimitLayer`].
#[derive(Debug, Clone)]
pub struct AdaptiveLimitService<S, C = ErrorsAreFailures> {
    inner: S,
    limiter: AdaptiveLimiter,
    classifier: Arc<C>,
}

impl<S, C, Req> Service<Req> for AdaptiveLimitService<S, C>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    C: Classify<S::Response, S::Error>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = LimitFuture<S::Future, C>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        match self.limiter.try_acquire() {
            Ok(token) => LimitFuture {
                inner: Some(self.inner.call(req)),
                token: Some(token),
                rejected: None,
                classifier: self.classifier.clone(),
            },
            Err(e) => LimitFuture {
                inner: None,
                token: None,
                rejected: Some(e),
                classifier: self.classifier.clone(),
            },
        }
    }
}

pin_project_lite::pin_project! {
    /// The future of [`AdaptiveLimitService`].
    pub struct LimitFuture<F, C> {
        #[pin]
        inner: Option<F>,
        token: Option<LimitToken>,
        rejected: Option<LimitExceeded>,
        classifier: Arc<C>,
    }
}

impl<F, C, T, E> Future for LimitFuture<F, C>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
    C: Classify<T, E>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Some(e) = this.rejected.take() {
            return Poll::Ready(Err(Box::new(e)));
        }
        let Some(fut) = this.inner.as_pin_mut() else {
            return Poll::Ready(Err("limit future polled after completion".into()));
        };
        let r = ready!(fut.poll(cx));
        if let Some(t) = this.token.take() {
            match this.classifier.classify(&r) {
                Verdict::Success => t.success(),
                Verdict::Failure => t.dropped(),
                Verdict::Ignored => t.ignore(),
            }
        }
        Poll::Ready(r.map_err(Into::into))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(rtt_ms: u64, in_flight: u32, dropped: bool) -> Sample {
        Sample {
            rtt: Duration::from_millis(rtt_ms),
            in_flight,
            dropped,
        }
    }

    #[test]
    fn aimd_grows_only_when_used() {
        let mut a = Aimd::new(10, 1, 12);
        assert_eq!(a.update(10, s(5, 2, false)), 10);
        assert_eq!(a.update(10, s(5, 5, false)), 11);
        assert_eq!(a.update(12, s(5, 12, false)), 12, "capped");
        assert_eq!(a.update(10, s(5, 5, true)), 9);
        assert_eq!(a.update(1, s(5, 1, true)), 1, "floored");
    }

    #[test]
    fn gradient_shrinks_when_rtt_rises_and_recovers() {
        let mut g = Gradient2::new(50, 5, 200);
        let mut limit = 50;
        for _ in 0..200 {
            limit = g.update(limit, s(10, limit, false));
        }
        let steady = limit;
        assert!(steady > 50, "headroom lets a healthy limit grow: {steady}");
        for _ in 0..50 {
            limit = g.update(limit, s(100, limit, false));
        }
        assert!(
            limit < steady / 2,
            "queueing shrinks it: {steady} -> {limit}"
        );
        for _ in 0..200 {
            limit = g.update(limit, s(10, limit, false));
        }
        assert!(limit > steady / 2, "recovers: {limit}");
    }
}
