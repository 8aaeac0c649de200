//! The breaker as a tower middleware.
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use tower::BoxError;
use tower_layer::Layer;
use tower_service::Service;

use super::classify::{Classify, ErrorsAreFailures};
use super::{CircuitBreaker, OwnedPermit, Rejected};

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
#[derive(Debug, Clone)]
pub struct BreakerLayer<C = ErrorsAreFailures> {
    breaker: CircuitBreaker,
    classifier: Arc<C>,
}

impl BreakerLayer {
    /// A layer around `breaker`, counting errors as failures.
    pub fn new(breaker: CircuitBreaker) -> Self {
        Self {
            breaker,
            classifier: Arc::new(ErrorsAreFailures),
        }
    }
}

impl<C> BreakerLayer<C> {
    /// Judges responses with `classifier` instead.
    pub fn with_classifier<C2>(self, classifier: C2) -> BreakerLayer<C2> {
        BreakerLayer {
            breaker: self.breaker,
            classifier: Arc::new(classifier),
        }
    }
}

impl<S, C> Layer<S> for BreakerLayer<C> {
    type Service = BreakerService<S, C>;
    fn layer(&self, inner: S) -> Self::Service {
        BreakerService {
            inner,
            breaker: self.breaker.clone(),
            classifier: self.classifier.clone(),
        }
    }
}

/// The service made by [`BreakerLayer`].
#[derive(Debug, Clone)]
pub struct BreakerService<S, C = ErrorsAreFailures> {
    inner: S,
    breaker: CircuitBreaker,
    classifier: Arc<C>,
}

impl<S, C> BreakerService<S, C> {
    /// The breaker guarding this service.
    pub fn breaker(&self) -> &CircuitBreaker {
        &self.breaker
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
        match self.breaker.try_acquire_owned() {
            Ok(permit) => ResponseFuture {
                inner: Some(self.inner.call(req)),
                permit: Some(permit),
                rejected: None,
                classifier: self.classifier.clone(),
            },
            Err(rejected) => ResponseFuture {
                inner: None,
                permit: None,
                rejected: Some(rejected),
                classifier: self.classifier.clone(),
            },
        }
    }
}

pin_project_lite::pin_project! {
    /// The future of [`BreakerService`].
    pub struct ResponseFuture<F, C> {
        #[pin]
        inner: Option<F>,
        permit: Option<OwnedPermit>,
        rejected: Option<Rejected>,
        classifier: Arc<C>,
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
        if let Some(p) = this.permit.take() {
            p.verdict(this.classifier.classify(&result));
        }
        Poll::Ready(result.map_err(Into::into))
    }
}
