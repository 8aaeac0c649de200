//! HTTP rate limiting: key by client IP, header or cookie; answer 429 with headers.
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{header, Request, Response, StatusCode};
use tower_layer::Layer;
use tower_service::Service;

use super::{KeySource, LimitStore};

/// The peer address of a request's connection. Servers insert it into request extensions
/// (a bare `SocketAddr` or `IpAddr` extension is understood too).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub SocketAddr);

/// Keys longer than this are cut: the limiter holds up to `max_keys` of them, so their size
/// must be bounded too, and a real API key or session id is far shorter.
pub const MAX_KEY_BYTES: usize = 256;

/// Cuts a client-supplied limiter key to at most [`MAX_KEY_BYTES`], at a character
/// boundary, so that memory per key stays bounded whatever a client sends.
///
/// ```
/// use scalewise::ratelimit::{bound_key, MAX_KEY_BYTES};
///
/// let mut key = "é".repeat(500);
/// bound_key(&mut key);
/// assert!(key.len() <= MAX_KEY_BYTES);
/// assert!(key.chars().all(|c| c == 'é'));
/// ```
pub fn bound_key(key: &mut String) {
    if key.len() > MAX_KEY_BYTES {
        let mut end = MAX_KEY_BYTES;
        while !key.is_char_boundary(end) {
            end -= 1;
        }
        key.truncate(end);
    }
}

impl KeySource {
    /// The limiter key of `req`. Requests without the key (no peer address, header or
    /// cookie) share the key `""`, so leaving it out is no way around the limit.
    pub fn key_of<B>(&self, req: &Request<B>) -> String {
        let mut key = match self {
            KeySource::ClientIp => client_ip(req).map(|ip| ip.to_string()),
            KeySource::Header(name) => req
                .headers()
                .get(name.as_str())
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()),
            KeySource::Cookie(name) => cookie(req, name),
        }
        .unwrap_or_default();
        bound_key(&mut key);
        key
    }
}

fn client_ip<B>(req: &Request<B>) -> Option<IpAddr> {
    let ext = req.extensions();
    ext.get::<ClientAddr>()
        .map(|a| a.0.ip())
        .or_else(|| ext.get::<SocketAddr>().map(SocketAddr::ip))
        .or_else(|| ext.get::<IpAddr>().copied())
        // An IPv4 client seen through a dual-stack socket is the same client.
        .map(|ip| ip.to_canonical())
}

fn cookie<B>(req: &Request<B>, name: &str) -> Option<String> {
    req.headers()
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim_matches('"').to_string())
}

/// Tower layer for `http` services: a limit per client IP, header or cookie
/// ([`KeySource`]). A denied request gets `429 Too Many Requests` with `Retry-After` and
/// `RateLimit-*` headers and an empty (`Default`) body, without reaching the inner service;
/// an admitted one gets the `RateLimit-*` headers on its response.
///
/// The store may be chosen at run time: `Arc<dyn LimitStore<String>>` works too (a local
/// [`KeyedRateLimiter`](super::KeyedRateLimiter) for one route, Redis for another).
///
/// ```
/// use scalewise::ratelimit::{ClientAddr, Gcra, HttpRateLimitLayer, KeySource, KeyedRateLimiter, Quota};
/// use http::{Request, Response, StatusCode};
/// use http_body_util::Full;
/// use bytes::Bytes;
/// use std::sync::Arc;
/// use tower::{service_fn, Layer, ServiceExt};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let limiter = Arc::new(KeyedRateLimiter::new(Gcra::new(Quota::per_second(1))));
/// let svc = HttpRateLimitLayer::new(limiter, KeySource::ClientIp).layer(service_fn(
///     |_req: Request<()>| async { Ok::<_, std::convert::Infallible>(Response::new(Full::<Bytes>::default())) },
/// ));
/// let req = || {
///     let mut r = Request::new(());
///     r.extensions_mut().insert(ClientAddr("192.0.2.1:5000".parse().unwrap()));
///     r
/// };
/// assert_eq!(svc.clone().oneshot(req()).await.unwrap().status(), StatusCode::OK);
/// let denied = svc.oneshot(req()).await.unwrap();
/// assert_eq!(denied.status(), StatusCode::TOO_MANY_REQUESTS);
/// assert_eq!(denied.headers()["retry-after"], "1");
/// # }
/// ```
pub struct HttpRateLimitLayer<S: ?Sized> {
    store: Arc<S>,
    key: Arc<KeySource>,
}

impl<S: ?Sized> Clone for HttpRateLimitLayer<S> {
    fn clone(&self) -> Self {
        Self {
            store: self.store.clone(),
            key: self.key.clone(),
        }
    }
}

impl<S: LimitStore<String> + ?Sized> HttpRateLimitLayer<S> {
    /// Limits requests per `key` with `store`.
    pub fn new(store: Arc<S>, key: KeySource) -> Self {
        Self {
            store,
            key: Arc::new(key),
        }
    }
}

impl<S: ?Sized, Inner> Layer<Inner> for HttpRateLimitLayer<S> {
    type Service = HttpRateLimit<S, Inner>;

    fn layer(&self, inner: Inner) -> Self::Service {
        HttpRateLimit {
            store: self.store.clone(),
            key: self.key.clone(),
            inner,
        }
    }
}

/// The service built by [`HttpRateLimitLayer`].
pub struct HttpRateLimit<S: ?Sized, Inner> {
    store: Arc<S>,
    key: Arc<KeySource>,
    inner: Inner,
}

impl<S: ?Sized, Inner: Clone> Clone for HttpRateLimit<S, Inner> {
    fn clone(&self) -> Self {
        Self {
            store: self.store.clone(),
            key: self.key.clone(),
            inner: self.inner.clone(),
        }
    }
}

impl<S, Inner, ReqB, ResB> Service<Request<ReqB>> for HttpRateLimit<S, Inner>
where
    S: LimitStore<String> + ?Sized,
    Inner: Service<Request<ReqB>, Response = Response<ResB>> + Clone + Send + 'static,
    Inner::Future: Send,
    Inner::Error: Send,
    ReqB: Send + 'static,
    ResB: Default + Send + 'static,
{
    type Response = Response<ResB>;
    type Error = Inner::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<ResB>, Inner::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqB>) -> Self::Future {
        let decision = self.store.check_key(&self.key.key_of(&req), 1);
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            let d = decision.await;
            if !d.allowed {
                let mut resp = Response::new(ResB::default());
                *resp.status_mut() = StatusCode::TOO_MANY_REQUESTS;
                d.write_headers(resp.headers_mut());
                return Ok(resp);
            }
            if !d.delay.is_zero() {
                tokio::time::sleep(d.delay).await;
            }
            let mut resp = inner.call(req).await?;
            d.write_headers(resp.headers_mut());
            Ok(resp)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_from_ip_header_and_cookie() {
        let mut req = Request::builder()
            .header("x-api-key", "k1")
            .header("cookie", "a=1; session=\"abc\"; b=2")
            .body(())
            .unwrap();
        req.extensions_mut()
            .insert(ClientAddr("[::ffff:192.0.2.9]:80".parse().unwrap()));
        assert_eq!(KeySource::ClientIp.key_of(&req), "192.0.2.9");
        let h = KeySource::Header(http::HeaderName::from_static("x-api-key"));
        assert_eq!(h.key_of(&req), "k1");
        assert_eq!(KeySource::Cookie("session".into()).key_of(&req), "abc");
        assert_eq!(KeySource::Cookie("none".into()).key_of(&req), "");
        let long = Request::builder()
            .header("x-api-key", "é".repeat(500))
            .body(())
            .unwrap();
        assert!(h.key_of(&long).len() <= MAX_KEY_BYTES);
    }
}
