//! The balancer as a `tower` service.
use super::{Endpoint, Outcome, PickContext, SelectError, Upstream};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tower::ServiceExt;
use tower_layer::Layer;
use tower_service::Service;

/// Turns a per-endpoint service factory `Fn(&Arc<Endpoint>) -> S` into one service that
/// balances over an [`Upstream`].
///
/// For each request it selects an endpoint, makes (or looks up, if the factory caches) the
/// endpoint's service, calls it and reports the outcome: `Ok` counts as success, `Err` as a
/// failure. Requests carry no hashing key here; use [`Upstream::select`] directly for
/// consistent hashing or stickiness.
///
/// ```
/// use scalewise::balance::{BalanceLayer, EndpointConfig, Upstream};
/// use tower::{service_fn, Layer, ServiceExt};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let up = Upstream::builder("echo")
///     .endpoint(EndpointConfig::new("127.0.0.1:9001".parse().unwrap()))
///     .build();
/// let svc = BalanceLayer::new(up).layer(|e: &std::sync::Arc<scalewise::balance::Endpoint>| {
///     let addr = e.addr();
///     service_fn(move |req: String| async move {
///         Ok::<_, std::convert::Infallible>(format!("{addr} got {req}"))
///     })
/// });
/// let resp = svc.oneshot("hi".to_string()).await.unwrap();
/// assert_eq!(resp, "127.0.0.1:9001 got hi");
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct BalanceLayer {
    upstream: Upstream,
}

impl BalanceLayer {
    /// Balances over `upstream`.
    pub fn new(upstream: Upstream) -> Self {
        Self { upstream }
    }
}

impl<F> Layer<F> for BalanceLayer {
    type Service = Balance<F>;

    fn layer(&self, factory: F) -> Balance<F> {
        Balance {
            upstream: self.upstream.clone(),
            factory,
        }
    }
}

/// The service made by [`BalanceLayer`].
#[derive(Debug, Clone)]
pub struct Balance<F> {
    upstream: Upstream,
    factory: F,
}

/// Error of a [`Balance`] service.
#[derive(Debug, thiserror::Error)]
pub enum BalanceError<E> {
    /// No endpoint could take the request.
    #[error(transparent)]
    NoBackend(SelectError),
    /// The endpoint's service failed.
    #[error("backend failed: {0}")]
    Inner(E),
}

impl<F, S, Req> Service<Req> for Balance<F>
where
    F: Fn(&Arc<Endpoint>) -> S,
    S: Service<Req> + Send + 'static,
    S::Future: Send,
    S::Response: Send + 'static,
    S::Error: Send + 'static,
    Req: Send + 'static,
{
    type Response = S::Response;
    type Error = BalanceError<S::Error>;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, BalanceError<S::Error>>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Readiness is per endpoint and only known after the pick; `oneshot` waits for it.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let sel = match self.upstream.select(&PickContext::default()) {
            Ok(sel) => sel,
            Err(e) => return Box::pin(std::future::ready(Err(BalanceError::NoBackend(e)))),
        };
        let svc = (self.factory)(sel.endpoint());
        Box::pin(async move {
            let result = svc.oneshot(req).await;
            let latency = sel.elapsed();
            match result {
                Ok(resp) => {
                    sel.finish(Outcome::success(latency));
                    Ok(resp)
                }
                Err(e) => {
                    sel.finish(Outcome::failure(latency));
                    Err(BalanceError::Inner(e))
                }
            }
        })
    }
}
