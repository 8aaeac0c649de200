//! The breaker as a tower middleware.
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use tower::BoxError;
use tower_layer::Layer;
use tower_service::Service;

use super::classify::{Classify, ErrorsAreFailures, Verdict};
use super::{CircuitBreaker, Outcome, Rejected, Ticket};

/// Guards a service with a [`CircuitBreaker`]. When the breaker rejects, the service is not
/// called and the error is a boxed [`Rejected`] (find it with `err.downcast_ref::<Rejected>()`).
/// Responses are judged by the classifier (default: errors are failures; use
/// [`HttpStatus`](super::classify::HttpStatus) for HTTP services).
///
/// ```
/// use scalewise::breaker::{BreakerLayer, CircuitBreaker, BreakerConfig, Rejected};
/// use tower::{service_fn, BoxError, Service, ServiceBuilder, ServiceExt};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let breaker = CircuitBreaker::new(BreakerConfig::default());
/// let mut svc = ServiceBuilder::new()
///     .layer(BreakerLayer::new(breaker.clone()))
///     .service(service_fn(|x: u32| async move { Ok::<_, BoxError>(x * 2) }));
/// assert_eq!(svc.ready().await.unwrap().call(21).await.unwrap(), 42);
///
/// breaker.force_open();
/// let err = svc.ready().await.unwrap().call(1).await.unwrap_err();
/// assert!(err.downcast_ref::<Rejected>().is_some());
/// # }
/// ```
#[derive(Clone)]
pub struct BreakerLayer<C = ErrorsAreFailures> {
    shared: Arc<Shared<C>>,
}

/// The breaker and classifier, behind one `Arc` so that each call clones a single pointer.
struct Shared<C> {
    breaker: CircuitBreaker,
    classifier: C,
}

impl<C> fmt::Debug for BreakerLayer<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BreakerLayer")
            .field("breaker", &self.shared.breaker)
            .finish()
    }
}

impl BreakerLayer {
    /// A layer around `breaker`, counting errors as failures.
    pub fn new(breaker: CircuitBreaker) -> Self {
        Self {
            shared: Arc::new(Shared {
                breaker,
                classifier: ErrorsAreFailures,
            }),
        }
    }
}

impl<C> BreakerLayer<C> {
    /// Judges responses with `classifier` instead.
    pub fn with_classifier<C2>(self, classifier: C2) -> BreakerLayer<C2> {
        BreakerLayer {
            shared: Arc::new(Shared {
                breaker: self.shared.breaker.clone(),
                classifier,
            }),
        }
    }
}

impl<S, C> Layer<S> for BreakerLayer<C> {
    type Service = BreakerService<S, C>;
    fn layer(&self, inner: S) -> Self::Service {
        BreakerService {
            inner,
            shared: self.shared.clone(),
        }
    }
}

/// The service made by [`BreakerLayer`].
#[derive(Clone)]
pub struct BreakerService<S, C = ErrorsAreFailures> {
    inner: S,
    shared: Arc<Shared<C>>,
}

impl<S: fmt::Debug, C> fmt::Debug for BreakerService<S, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BreakerService")
            .field("inner", &self.inner)
            .field("breaker", &self.shared.breaker)
            .finish()
    }
}

impl<S, C> BreakerService<S, C> {
    /// The breaker guarding this service.
    pub fn breaker(&self) -> &CircuitBreaker {
        &self.shared.breaker
    }
}

impl<S, C, Req> Service<Req> for BreakerService<S, C>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    C: Classify<S::Response, S::Error>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, C>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        match self.shared.breaker.inner.acquire() {
            Ok(ticket) => ResponseFuture {
                inner: Some(self.inner.call(req)),
                guard: Some(Guard {
                    shared: self.shared.clone(),
                    ticket: Some(ticket),
                }),
                rejected: None,
            },
            Err(rejected) => ResponseFuture {
                inner: None,
                guard: None,
                rejected: Some(rejected),
            },
        }
    }
}

/// A permit in flight; abandons its ticket if the future is dropped before completion.
struct Guard<C> {
    shared: Arc<Shared<C>>,
    ticket: Option<Ticket>,
}

impl<C> Guard<C> {
    fn finish<T, E>(mut self, result: &Result<T, E>)
    where
        C: Classify<T, E>,
    {
        let Some(t) = self.ticket.take() else { return };
        let inner = &self.shared.breaker.inner;
        match self.shared.classifier.classify(result) {
            Verdict::Success => inner.finish(t, Outcome::success()),
            Verdict::Failure => inner.finish(t, Outcome::failure()),
            Verdict::Ignored => inner.abandon(t),
        }
    }
}

impl<C> Drop for Guard<C> {
    fn drop(&mut self) {
        if let Some(t) = self.ticket.take() {
            self.shared.breaker.inner.abandon(t);
        }
    }
}

pin_project_lite::pin_project! {
    /// The future of [`BreakerService`].
    pub struct ResponseFuture<F, C> {
        #[pin]
        inner: Option<F>,
        guard: Option<Guard<C>>,
        rejected: Option<Rejected>,
    }
}

impl<F, C, T, E> Future for ResponseFuture<F, C>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
    C: Classify<T, E>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Some(r) = this.rejected.take() {
            return Poll::Ready(Err(Box::new(r)));
        }
        let Some(fut) = this.inner.as_pin_mut() else {
            // Polled again after completion (a caller bug); answer rather than panic.
            return Poll::Ready(Err("breaker response future polled after completion".into()));
        };
        let result = ready!(fut.poll(cx));
        if let Some(g) = this.guard.take() {
            g.finish(&result);
        }
        Poll::Ready(result.map_err(Into::into))
    }
}
