//! Streaming bodies in both directions. Neither is ever collected: frames pass through as
//! they arrive, so memory per request is bounded by hyper's buffers, not by body size.
use super::pool::Pooled;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use scalewise::balance::{Outcome, Selection};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use tokio::sync::OwnedSemaphorePermit;

/// Boxed error of the request body, as hyper's client wants it.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The client sent more body than `max_body_bytes` allows.
#[derive(Debug, thiserror::Error)]
#[error("request body larger than the configured limit")]
pub struct BodyTooLarge;

/// A client's request body on its way upstream, cut off at the listener's size limit.
#[derive(Debug)]
pub struct RequestBody {
    inner: Option<Incoming>,
    remaining: u64,
}

impl RequestBody {
    pub(crate) fn new(inner: Incoming, limit: Option<u64>) -> Self {
        Self {
            inner: Some(inner),
            remaining: limit.unwrap_or(u64::MAX),
        }
    }

    /// No body (retries resend bodiless requests only).
    pub(crate) fn empty() -> Self {
        Self {
            inner: None,
            remaining: 0,
        }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let Some(inner) = self.inner.as_mut() else {
            return Poll::Ready(None);
        };
        match ready!(Pin::new(inner).poll_frame(cx)) {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    let len = data.len() as u64;
                    if len > self.remaining {
                        self.inner = None;
                        return Poll::Ready(Some(Err(Box::new(BodyTooLarge))));
                    }
                    self.remaining -= len;
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Some(Err(e)) => Poll::Ready(Some(Err(Box::new(e)))),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), Body::size_hint)
    }
}

/// Whether `err` (or anything in its source chain) is [`BodyTooLarge`].
pub(crate) fn is_body_too_large(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut e = Some(err);
    while let Some(cur) = e {
        if cur.is::<BodyTooLarge>() {
            return true;
        }
        e = cur.source();
    }
    false
}

/// Counts requests in progress on one client connection; the connection's idle timer runs
/// only while it is zero.
#[derive(Debug, Default)]
pub(crate) struct Activity {
    pub(crate) active: AtomicUsize,
}

/// One request in progress on a client connection; dropped with the response body.
#[derive(Debug)]
pub(crate) struct ActiveGuard(Arc<Activity>);

impl ActiveGuard {
    pub(crate) fn new(a: &Arc<Activity>) -> Self {
        a.active.fetch_add(1, Ordering::AcqRel);
        Self(a.clone())
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What a proxied response holds until its body has been passed on: the backend's
/// connection (back to the pool only if the body was read to the end), the balancer's
/// selection (its in-flight count covers the whole transfer), the backend queue permit.
pub(crate) struct Upstreamed {
    pub(crate) pooled: Option<Pooled>,
    pub(crate) selection: Option<(Selection, Outcome)>,
    pub(crate) permit: Option<OwnedSemaphorePermit>,
    pub(crate) in_flight: prometheus_client::metrics::gauge::Gauge,
    /// The route's concurrency slot, freed with the rest when the response completes.
    pub(crate) policy: Option<crate::policy::RouteGuard>,
}

impl Upstreamed {
    fn complete(&mut self, body_done: bool) {
        if let Some(p) = self.pooled.take() {
            if body_done {
                p.release();
            }
        }
        if let Some((sel, outcome)) = self.selection.take() {
            sel.finish(outcome);
            self.in_flight.dec();
        }
        self.permit = None;
        self.policy = None;
    }
}

impl Drop for Upstreamed {
    fn drop(&mut self) {
        self.complete(false);
    }
}

enum Kind {
    Full(Option<Bytes>),
    Upstream(Incoming, Box<Upstreamed>),
}

/// The body of every response the gateway sends: a backend's streamed body, or a short
/// local answer.
pub struct ResponseBody {
    kind: Kind,
    _active: Option<ActiveGuard>,
}

impl std::fmt::Debug for ResponseBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ResponseBody")
    }
}

impl ResponseBody {
    pub(crate) fn full(b: impl Into<Bytes>, active: Option<ActiveGuard>) -> Self {
        let b = b.into();
        Self {
            kind: Kind::Full((!b.is_empty()).then_some(b)),
            _active: active,
        }
    }

    pub(crate) fn upstream(
        body: Incoming,
        up: Box<Upstreamed>,
        active: Option<ActiveGuard>,
    ) -> Self {
        let mut this = Self {
            kind: Kind::Upstream(body, up),
            _active: active,
        };
        // Bodiless answers (HEAD, 204, 304) are never polled: release their connection now.
        this.finish_if_ended();
        this
    }

    fn finish_if_ended(&mut self) {
        if let Kind::Upstream(b, up) = &mut self.kind {
            if b.is_end_stream() {
                up.complete(true);
            }
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match &mut self.kind {
            Kind::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Kind::Upstream(body, up) => {
                if let Some(p) = up.pooled.as_mut() {
                    p.poll_conn(cx);
                }
                let r = ready!(Pin::new(body).poll_frame(cx));
                match &r {
                    None => up.complete(true),
                    Some(Err(_)) => {
                        if let Some((_, outcome)) = up.selection.as_mut() {
                            outcome.success = false;
                        }
                        up.complete(false);
                    }
                    Some(Ok(_)) => self.finish_if_ended(),
                }
                Poll::Ready(r)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Full(b) => b.is_none(),
            Kind::Upstream(b, _) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            Kind::Upstream(b, _) => b.size_hint(),
        }
    }
}
