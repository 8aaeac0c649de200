//! The generic tower middleware, and [`LimitStore`]: what the layers need from a limiter,
//! local or remote.
use std::future::Future;
use std::hash::Hash;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tower::BoxError;
use tower_layer::Layer;
use tower_service::Service;

use super::{Algorithm, Decision, KeyedRateLimiter, Limiter};
use crate::clock::Clock;

/// A decision that is either known now (local limiters) or on its way (Redis).
pub enum DecisionFuture {
    /// Decided synchronously; no allocation.
    Ready(Option<Decision>),
    /// Decided by I/O.
    Pending(Pin<Box<dyn Future<Output = Decision> + Send>>),
}

impl std::fmt::Debug for DecisionFuture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Ready(d) => f.debug_tuple("Ready").field(d).finish(),
            Self::Pending(_) => f.write_str("Pending"),
        }
    }
}

impl Future for DecisionFuture {
    type Output = Decision;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Decision> {
        match self.get_mut() {
            // Polling again after completion is a caller bug; answer "denied" rather than panic.
            Self::Ready(d) => Poll::Ready(
                d.take()
                    .unwrap_or_else(|| Decision::denied_for(0, std::time::Duration::from_secs(1))),
            ),
            Self::Pending(f) => f.as_mut().poll(cx),
        }
    }
}

/// Where the layers get decisions for a key: a [`KeyedRateLimiter`], any unkeyed
/// [`Limiter`] (key `()`), or the Redis store.
pub trait LimitStore<K>: Send + Sync + 'static {
    /// Decides on `n` units for `key`.
    fn check_key(&self, key: &K, n: u32) -> DecisionFuture;
}

impl<K, A, C> LimitStore<K> for KeyedRateLimiter<K, A, C>
where
    K: Hash + Eq + Clone + Send + 'static,
    A: Algorithm,
    C: Clock,
{
    fn check_key(&self, key: &K, n: u32) -> DecisionFuture {
        DecisionFuture::Ready(Some(self.check_n(key, n)))
    }
}

impl<L: Limiter + 'static> LimitStore<()> for L {
    fn check_key(&self, _key: &(), n: u32) -> DecisionFuture {
        DecisionFuture::Ready(Some(self.check_n(n)))
    }
}

/// The error a [`RateLimit`] service returns for a denied request (boxed in
/// [`tower::BoxError`]; downcast to read the decision).
#[derive(Debug, Clone, thiserror::Error)]
#[error("rate limited; retry after {:?}", .0.retry_after)]
pub struct RateLimited(pub Decision);

/// Tower layer limiting requests by a key taken from each request.
///
/// Denied requests fail with [`RateLimited`]; shaping decisions are waited out before the
/// inner service is called. For HTTP with 429 responses use
/// [`HttpRateLimitLayer`](super::HttpRateLimitLayer).
///
/// ```
/// use scalewise::ratelimit::{GcraLimiter, Quota, RateLimitLayer, RateLimited};
/// use std::sync::Arc;
/// use tower::{service_fn, Layer, Service, ServiceExt};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let layer = RateLimitLayer::unkeyed(Arc::new(GcraLimiter::new(Quota::per_second(1))));
/// let mut svc = layer.layer(service_fn(|x: u32| async move { Ok::<_, std::convert::Infallible>(x) }));
/// assert_eq!(svc.ready().await.unwrap().call(7).await.unwrap(), 7);
/// let err = svc.ready().await.unwrap().call(8).await.unwrap_err();
/// assert!(err.downcast_ref::<RateLimited>().is_some());
/// # }
/// ```
pub struct RateLimitLayer<S: ?Sized, F> {
    store: Arc<S>,
    key: F,
}

impl<S: ?Sized, F: Clone> Clone for RateLimitLayer<S, F> {
    fn clone(&self) -> Self {
        Self {
            store: self.store.clone(),
            key: self.key.clone(),
        }
    }
}

/// How a layer finds the key of a request. Implemented by closures `Fn(&Req) -> K` and by
/// [`Global`].
pub trait KeyExtractor<Req> {
    /// The key type.
    type Key;
    /// The key of `req`.
    fn key(&self, req: &Req) -> Self::Key;
}

impl<Req, K, F: Fn(&Req) -> K> KeyExtractor<Req> for F {
    type Key = K;
    fn key(&self, req: &Req) -> K {
        self(req)
    }
}

/// The key extractor that puts every request under one key, `()`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Global;

impl<Req> KeyExtractor<Req> for Global {
    type Key = ();
    fn key(&self, _req: &Req) {}
}

impl<S: LimitStore<()>> RateLimitLayer<S, Global> {
    /// One limit for every request.
    pub fn unkeyed(store: Arc<S>) -> Self {
        Self { store, key: Global }
    }
}

impl<S: ?Sized, F> RateLimitLayer<S, F> {
    /// A limit per `key(request)`.
    pub fn new(store: Arc<S>, key: F) -> Self {
        Self { store, key }
    }
}

impl<S: ?Sized, F: Clone, Inner> Layer<Inner> for RateLimitLayer<S, F> {
    type Service = RateLimit<S, F, Inner>;

    fn layer(&self, inner: Inner) -> Self::Service {
        RateLimit {
            store: self.store.clone(),
            key: self.key.clone(),
            inner,
        }
    }
}

/// The service built by [`RateLimitLayer`].
pub struct RateLimit<S: ?Sized, F, Inner> {
    store: Arc<S>,
    key: F,
    inner: Inner,
}

impl<S: ?Sized, F: Clone, Inner: Clone> Clone for RateLimit<S, F, Inner> {
    fn clone(&self) -> Self {
        Self {
            store: self.store.clone(),
            key: self.key.clone(),
            inner: self.inner.clone(),
        }
    }
}

impl<S, F, Inner, Req> Service<Req> for RateLimit<S, F, Inner>
where
    F: KeyExtractor<Req>,
    S: LimitStore<F::Key> + ?Sized,
    Inner: Service<Req> + Clone + Send + 'static,
    Inner::Future: Send,
    Inner::Error: Into<BoxError>,
    Req: Send + 'static,
{
    type Response = Inner::Response;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Inner::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let decision = self.store.check_key(&self.key.key(&req), 1);
        // The readied service goes with this call; the clone waits for the next poll_ready.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            let d = decision.await;
            if !d.allowed {
                return Err(Box::new(RateLimited(d)) as BoxError);
            }
            if !d.delay.is_zero() {
                tokio::time::sleep(d.delay).await;
            }
            inner.call(req).await.map_err(Into::into)
        })
    }
}
