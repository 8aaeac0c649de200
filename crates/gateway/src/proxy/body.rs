//! Streaming bodies in both directions. Neither is ever collected: frames pass through as
//! they arrive, so memory per request is bounded by the connections' buffers, not by body
//! size — except the copy a request body keeps for retries ([`Replay`]), bounded per request
//! by `routes[].retry_buffer_bytes` and for the process by `server.retry_buffer_total_bytes`.
use super::h1::client::H1Body;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use scalewise::balance::{Outcome, Selection};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use tokio::sync::OwnedSemaphorePermit;

/// Boxed error of bodies on the proxy path.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A request body that hyper's HTTP/2 client can own (`'static`).
pub(crate) type OwnedBody = http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>;

/// The client sent more body than `max_body_bytes` allows.
#[derive(Debug, thiserror::Error)]
#[error("request body larger than the configured limit")]
pub struct BodyTooLarge;

/// The client's request body could not be read to its end: bad chunked framing, or the
/// client closed or failed midway. The client's doing, not the backend's: answered 400 and
/// not counted against the backend (a client must not be able to trip a backend's breaker
/// or outlier detection by sending broken bodies).
#[derive(Debug, thiserror::Error)]
#[error("malformed or incomplete request body: {0}")]
pub struct BadRequestBody(#[source] pub std::io::Error);

/// Whether `err` or anything in its source chain is a `T` (such as [`BadRequestBody`] or
/// [`BodyTooLarge`], whatever the backend client wrapped them in).
pub(crate) fn in_chain<T: std::error::Error + 'static>(
    err: &(dyn std::error::Error + 'static),
) -> bool {
    std::iter::successors(Some(err), |e| e.source()).any(|e| e.is::<T>())
}

/// A request body on its way upstream, from either client-side engine.
///
/// The native HTTP/1 engine's body borrows the client connection (it is read inline by the
/// task that forwards it), so it cannot be handed to hyper's HTTP/2 client, which wants to
/// own its body: [`take_owned`](ForwardBody::take_owned) says whether this body can be
/// handed over as is; if not, the HTTP/2 client pumps it through a channel.
pub(crate) trait ForwardBody: Body<Data = Bytes, Error = BoxError> + Unpin + Send {
    /// This body as an owned one, leaving an empty body behind; `None` if it borrows.
    fn take_owned(&mut self) -> Option<OwnedBody>;

    /// Passes an interim (1xx) response head from the backend on to the client, ahead of
    /// the final response. The body is what holds the client connection while the request
    /// is forwarded, so it is the one that can write there. By default the head is dropped
    /// (hyper's HTTP/2 server has no way to send one).
    fn interim(
        &mut self,
        _head: http::response::Parts,
    ) -> Pin<Box<dyn std::future::Future<Output = ()> + Send + '_>> {
        Box::pin(std::future::ready(()))
    }
}

/// A request body from hyper's server (HTTP/2 clients).
#[derive(Debug)]
pub(crate) struct HyperBody(pub(crate) Option<Incoming>);

impl Body for HyperBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let Some(inner) = self.0.as_mut() else {
            return Poll::Ready(None);
        };
        Pin::new(inner)
            .poll_frame(cx)
            .map(|f| f.map(|r| r.map_err(Into::into)))
    }

    fn is_end_stream(&self) -> bool {
        self.0.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.0
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), Body::size_hint)
    }
}

impl ForwardBody for HyperBody {
    fn take_owned(&mut self) -> Option<OwnedBody> {
        Some(OwnedBody::new(HyperBody(self.0.take())))
    }
}

/// How the client's side of a request body went, as seen by [`Limited`] wherever the body
/// ended up (it may be handed to hyper's HTTP/2 client and polled by its task). The
/// pipeline reads it after a failed or timed-out attempt to tell the client's failures
/// from the backend's: only the backend's may reach its breaker, its outlier detection and
/// the retry logic (a client must not be able to get a healthy backend ejected).
#[derive(Debug, Default)]
pub(crate) struct ClientBodyWatch(AtomicU8);

/// What the client did to its request body, if anything went wrong there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ClientFault {
    /// More body than `max_body_bytes` allows: 413.
    TooLarge,
    /// A body that cannot be decoded (bad chunked framing): 400.
    Malformed,
    /// The client closed, reset the stream (HTTP/2 `RST_STREAM`) or dropped the connection
    /// midway: nobody to answer; logged as 499, like nginx.
    Gone,
}

const WAITING: u8 = 1;
const TOO_LARGE: u8 = 2;
const MALFORMED: u8 = 4;
const GONE: u8 = 8;

impl ClientBodyWatch {
    fn set(&self, bit: u8) {
        self.0.fetch_or(bit, Ordering::AcqRel);
    }

    fn clear(&self, bit: u8) {
        self.0.fetch_and(!bit, Ordering::AcqRel);
    }

    /// The client's failure, if its body failed.
    pub(crate) fn fault(&self) -> Option<ClientFault> {
        let v = self.0.load(Ordering::Acquire);
        if v & TOO_LARGE != 0 {
            Some(ClientFault::TooLarge)
        } else if v & MALFORMED != 0 {
            Some(ClientFault::Malformed)
        } else if v & GONE != 0 {
            Some(ClientFault::Gone)
        } else {
            None
        }
    }

    /// Whether the body's last read is still waiting for the client: the backend client
    /// asked for more body and the client has not sent it. A timeout then is the client's
    /// (408), not the backend's (504). A backend that stops reading is never waited on
    /// here: its client does not poll the body while the backend's window is full.
    pub(crate) fn waiting_for_client(&self) -> bool {
        self.0.load(Ordering::Acquire) & WAITING != 0
    }
}

/// Whether a failed read of the client's body means the client went away (as opposed to
/// sending something undecodable). HTTP/2 body errors (hyper's) are resets and closed
/// connections; HTTP/1 ones are I/O errors wrapped in [`BadRequestBody`].
fn client_gone(err: &(dyn std::error::Error + 'static)) -> bool {
    use std::io::ErrorKind as K;
    std::iter::successors(Some(err), |e| e.source()).any(|cur| {
        cur.is::<hyper::Error>()
            || cur.downcast_ref::<std::io::Error>().is_some_and(|io| {
                matches!(
                    io.kind(),
                    K::UnexpectedEof | K::ConnectionReset | K::ConnectionAborted | K::BrokenPipe
                )
            })
    })
}

/// A request body cut off at the listener's size limit, which reports the client's side
/// of the body to a [`ClientBodyWatch`].
#[derive(Debug)]
pub(crate) struct Limited<B> {
    inner: B,
    remaining: u64,
    failed: bool,
    watch: Option<Arc<ClientBodyWatch>>,
}

impl<B> Limited<B> {
    pub(crate) fn new(inner: B, limit: Option<u64>, watch: Option<Arc<ClientBodyWatch>>) -> Self {
        Self {
            inner,
            remaining: limit.unwrap_or(u64::MAX),
            failed: false,
            watch,
        }
    }

    fn mark(&self, set: u8) {
        if let Some(w) = &self.watch {
            w.clear(WAITING);
            w.set(set);
        }
    }
}

impl<B: Body<Data = Bytes, Error = BoxError> + Unpin> Body for Limited<B> {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if self.failed {
            return Poll::Ready(None);
        }
        let Poll::Ready(r) = Pin::new(&mut self.inner).poll_frame(cx) else {
            self.mark(WAITING);
            return Poll::Pending;
        };
        match r {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    let len = data.len() as u64;
                    if len > self.remaining {
                        self.failed = true;
                        self.mark(TOO_LARGE);
                        return Poll::Ready(Some(Err(Box::new(BodyTooLarge))));
                    }
                    self.remaining -= len;
                }
                self.mark(0);
                Poll::Ready(Some(Ok(frame)))
            }
            Some(Err(e)) => {
                self.failed = true;
                self.mark(if client_gone(e.as_ref()) {
                    GONE
                } else {
                    MALFORMED
                });
                Poll::Ready(Some(Err(e)))
            }
            None => {
                self.mark(0);
                Poll::Ready(None)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.failed || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B: ForwardBody> ForwardBody for Limited<B> {
    fn take_owned(&mut self) -> Option<OwnedBody> {
        let inner = self.inner.take_owned()?;
        Some(OwnedBody::new(Limited {
            inner,
            remaining: self.remaining,
            failed: self.failed,
            watch: self.watch.clone(),
        }))
    }

    fn interim(
        &mut self,
        head: http::response::Parts,
    ) -> Pin<Box<dyn std::future::Future<Output = ()> + Send + '_>> {
        self.inner.interim(head)
    }
}

/// A request body that keeps a copy of what it passed on, up to a limit, so that a failed
/// attempt can be sent again to another backend (nginx's `proxy_next_upstream` with a
/// buffered body, Envoy's retry buffer).
///
/// Frames are copied as they stream to the first backend (copies, not the `Bytes` the
/// engine hands out: those share the connection's read buffer, whose whole allocation
/// would stay pinned). A body that goes over the limit, or over the process-wide cap
/// `global`, drops its copy at once and streams on unkept; it can then be sent again only
/// if none of it was read yet (a connect failure). A body never polled costs nothing: a
/// bodiless request builds this with `limit` 0 and never allocates.
pub(crate) struct Replay<'a, B> {
    inner: B,
    /// Copies of the data frames read from `inner`, in order, while `keeping`.
    kept: Vec<Bytes>,
    kept_bytes: u64,
    trailers: Option<http::HeaderMap>,
    limit: u64,
    keeping: bool,
    /// Something was read from `inner` (or it was handed over whole).
    consumed: bool,
    /// `inner` ended (`None`), or failed.
    ended: bool,
    failed: bool,
    /// During a replay: the next kept frame to send, and whether the trailers are still due.
    next: usize,
    trailers_due: bool,
    global: Option<(&'a AtomicU64, u64)>,
}

impl<'a, B> Replay<'a, B> {
    /// Keeps up to `limit` bytes of `inner` (0: nothing), charged to `global` = (bytes kept
    /// by all requests, cap). `declared`: the body's `Content-Length`, if known; a body
    /// declared larger than `limit` is not kept at all.
    pub(crate) fn new(
        inner: B,
        limit: u64,
        declared: Option<u64>,
        global: Option<(&'a AtomicU64, u64)>,
    ) -> Self {
        Self {
            inner,
            kept: Vec::new(),
            kept_bytes: 0,
            trailers: None,
            limit,
            keeping: limit > 0 && declared.is_none_or(|n| n <= limit),
            consumed: false,
            ended: false,
            failed: false,
            next: 0,
            trailers_due: false,
            global,
        }
    }

    /// Prepares the body to be sent again from its start. `false` if it cannot be: part of
    /// it was read and not kept, or reading it failed.
    pub(crate) fn rewind(&mut self) -> bool {
        if !self.consumed {
            return true;
        }
        if !self.keeping || self.failed {
            return false;
        }
        self.next = 0;
        self.trailers_due = self.ended && self.trailers.is_some();
        true
    }

    fn stop_keeping(&mut self) {
        self.keeping = false;
        self.release();
        self.kept = Vec::new();
        self.trailers = None;
    }

    fn release(&mut self) {
        if let Some((used, _)) = self.global {
            used.fetch_sub(self.kept_bytes, Ordering::AcqRel);
        }
        self.kept_bytes = 0;
    }

    fn keep(&mut self, data: &Bytes) {
        let len = data.len() as u64;
        if self.kept_bytes + len > self.limit {
            return self.stop_keeping();
        }
        if let Some((used, cap)) = self.global {
            if used.fetch_add(len, Ordering::AcqRel) + len > cap {
                used.fetch_sub(len, Ordering::AcqRel);
                return self.stop_keeping();
            }
        }
        self.kept_bytes += len;
        self.kept.push(Bytes::copy_from_slice(data));
    }

    fn replaying(&self) -> bool {
        self.next < self.kept.len() || self.trailers_due
    }
}

impl<B> Drop for Replay<'_, B> {
    fn drop(&mut self) {
        self.release();
    }
}

impl<B: Body<Data = Bytes, Error = BoxError> + Unpin> Body for Replay<'_, B> {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if let Some(b) = this.kept.get(this.next) {
            this.next += 1;
            return Poll::Ready(Some(Ok(Frame::data(b.clone()))));
        }
        if this.ended {
            if this.trailers_due {
                this.trailers_due = false;
                if let Some(t) = this.trailers.clone() {
                    return Poll::Ready(Some(Ok(Frame::trailers(t))));
                }
            }
            return Poll::Ready(None);
        }
        this.consumed = true;
        let r = ready!(Pin::new(&mut this.inner).poll_frame(cx));
        match &r {
            Some(Ok(frame)) if this.keeping => {
                if let Some(data) = frame.data_ref() {
                    this.keep(data);
                } else if let Some(t) = frame.trailers_ref() {
                    this.trailers = Some(t.clone());
                }
            }
            Some(Ok(_)) => {}
            Some(Err(_)) => {
                this.failed = true;
                this.ended = true;
                this.stop_keeping();
            }
            None => this.ended = true,
        }
        // Kept frames replayed so far are all sent: the cursor follows the end.
        this.next = this.kept.len();
        Poll::Ready(r)
    }

    fn is_end_stream(&self) -> bool {
        !self.replaying() && (self.ended || self.inner.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        let inner = if self.ended {
            SizeHint::with_exact(0)
        } else {
            self.inner.size_hint()
        };
        let kept: u64 = self.kept[self.next.min(self.kept.len())..]
            .iter()
            .map(|b| b.len() as u64)
            .sum();
        let mut h = SizeHint::new();
        h.set_lower(inner.lower() + kept);
        if let Some(u) = inner.upper() {
            h.set_upper(u + kept);
        }
        h
    }
}

impl<B: ForwardBody> ForwardBody for Replay<'_, B> {
    /// While it keeps a copy the body must pass through `poll_frame` here, so it is not
    /// handed over (the HTTP/2 client pumps it instead).
    fn take_owned(&mut self) -> Option<OwnedBody> {
        if self.keeping || self.replaying() {
            return None;
        }
        self.consumed = true;
        self.inner.take_owned()
    }

    fn interim(
        &mut self,
        head: http::response::Parts,
    ) -> Pin<Box<dyn std::future::Future<Output = ()> + Send + '_>> {
        self.inner.interim(head)
    }
}

/// An owned body fed by a task-local pump (see [`ForwardBody`]).
pub(crate) struct ChannelBody(
    pub(crate) tokio::sync::mpsc::Receiver<Result<Frame<Bytes>, BoxError>>,
);

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.0.poll_recv(cx)
    }
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

/// What a proxied response holds until its body has been passed on: the balancer's
/// selection (its in-flight count covers the whole transfer), the backend queue permit,
/// the route's concurrency slot. (The backend connection itself goes back to its pool from
/// the body, which knows when the response ended.)
pub(crate) struct Upstreamed {
    pub(crate) selection: Option<(Selection, Outcome)>,
    pub(crate) permit: Option<OwnedSemaphorePermit>,
    pub(crate) in_flight: prometheus_client::metrics::gauge::Gauge,
    /// The route's concurrency slot, freed with the rest when the response completes.
    pub(crate) policy: Option<crate::policy::RouteGuard>,
}

impl Upstreamed {
    fn complete(&mut self) {
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
        self.complete();
    }
}

/// A backend's response body: our HTTP/1 client's, or hyper's HTTP/2 client's.
pub(crate) enum UpstreamBody {
    H1(H1Body),
    H2(Incoming),
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            Self::H1(b) => Pin::new(b).poll_frame(cx),
            Self::H2(b) => Pin::new(b)
                .poll_frame(cx)
                .map(|f| f.map(|r| r.map_err(Into::into))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::H1(b) => b.is_end_stream(),
            Self::H2(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::H1(b) => b.size_hint(),
            Self::H2(b) => b.size_hint(),
        }
    }
}

enum Kind {
    Full(Option<Bytes>),
    Upstream(UpstreamBody, Box<Upstreamed>),
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

/// A backend connection switched to another protocol (101), with everything the response
/// held: the splice keeps them until it ends.
pub(crate) struct Upgraded {
    pub(crate) io: super::connect::ClientStream,
    /// Bytes the backend sent after its 101 head.
    pub(crate) leftover: bytes::BytesMut,
    pub(crate) guard: Box<Upstreamed>,
    pub(crate) active: Option<ActiveGuard>,
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
        body: UpstreamBody,
        up: Box<Upstreamed>,
        active: Option<ActiveGuard>,
    ) -> Self {
        let mut this = Self {
            kind: Kind::Upstream(body, up),
            _active: active,
        };
        // Bodiless answers (HEAD, 204, 304) are never polled: finish now.
        this.finish_if_ended();
        this
    }

    fn finish_if_ended(&mut self) {
        if let Kind::Upstream(b, up) = &mut self.kind {
            if b.is_end_stream() {
                up.complete();
            }
        }
    }

    /// The backend connection of a 101 answer, for splicing.
    pub(crate) fn take_upgraded(&mut self) -> Option<Upgraded> {
        let kind = std::mem::replace(&mut self.kind, Kind::Full(None));
        match kind {
            Kind::Upstream(UpstreamBody::H1(b), guard) => match b.into_upgraded() {
                Some((io, leftover)) => Some(Upgraded {
                    io,
                    leftover,
                    guard,
                    active: self._active.take(),
                }),
                None => None,
            },
            other => {
                self.kind = other;
                None
            }
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match &mut self.kind {
            Kind::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Kind::Upstream(body, up) => {
                let r = ready!(Pin::new(body).poll_frame(cx));
                match &r {
                    None => up.complete(),
                    Some(Err(_)) => {
                        if let Some((_, outcome)) = up.selection.as_mut() {
                            outcome.success = false;
                        }
                        up.complete();
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

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt as _, StreamBody};

    type Frames = StreamBody<futures_util::stream::Iter<std::vec::IntoIter<FrameResult>>>;
    type FrameResult = Result<Frame<Bytes>, BoxError>;

    fn frames(parts: &[&'static str], trailers: bool) -> Frames {
        let mut v: Vec<FrameResult> = parts
            .iter()
            .map(|p| Ok(Frame::data(Bytes::from_static(p.as_bytes()))))
            .collect();
        if trailers {
            let mut t = http::HeaderMap::new();
            t.insert("x-sum", http::HeaderValue::from_static("1"));
            v.push(Ok(Frame::trailers(t)));
        }
        StreamBody::new(futures_util::stream::iter(v))
    }

    /// Reads `n` frames (all if `None`): the data joined, and whether trailers came.
    async fn take<B: Body<Data = Bytes, Error = BoxError> + Unpin>(
        b: &mut B,
        n: Option<usize>,
    ) -> (String, bool) {
        let (mut data, mut trailers) = (String::new(), false);
        let mut left = n.unwrap_or(usize::MAX);
        while left > 0 {
            let Some(f) = b.frame().await else { break };
            let f = f.unwrap();
            match f.into_data() {
                Ok(d) => data.push_str(std::str::from_utf8(&d).unwrap()),
                Err(f) => trailers |= f.is_trailers(),
            }
            left -= 1;
        }
        (data, trailers)
    }

    #[tokio::test]
    async fn a_kept_body_replays_whole_even_after_a_partial_attempt() {
        let used = AtomicU64::new(0);
        let mut b = Replay::new(
            frames(&["ab", "cd", "ef"], true),
            64,
            None,
            Some((&used, 1024)),
        );
        assert!(b.rewind(), "nothing read yet");
        // The first attempt fails after two frames.
        assert_eq!(take(&mut b, Some(2)).await, ("abcd".into(), false));
        assert_eq!(used.load(Ordering::SeqCst), 4);
        assert!(b.rewind());
        assert!(!b.is_end_stream());
        // The second reads the kept frames, then the rest from the client, and fails too.
        assert_eq!(take(&mut b, None).await, ("abcdef".into(), true));
        assert!(b.rewind());
        assert_eq!(b.size_hint().exact(), Some(6));
        assert_eq!(take(&mut b, None).await, ("abcdef".into(), true));
        assert!(b.is_end_stream());
        drop(b);
        assert_eq!(used.load(Ordering::SeqCst), 0, "released with the body");
    }

    #[tokio::test]
    async fn a_body_over_the_limit_or_the_global_cap_is_not_kept() {
        let used = AtomicU64::new(0);
        // Chunked past the limit: the copy is dropped as soon as it would not fit.
        let mut b = Replay::new(frames(&["abc", "def"], false), 4, None, Some((&used, 1024)));
        assert_eq!(take(&mut b, None).await.0, "abcdef");
        assert!(!b.rewind());
        assert_eq!(used.load(Ordering::SeqCst), 0);
        // Declared larger than the limit: never kept.
        let mut b = Replay::new(frames(&["ab"], false), 4, Some(5), Some((&used, 1024)));
        take(&mut b, None).await;
        assert!(!b.rewind());
        // Over the process-wide cap (another request holds most of it).
        used.store(1020, Ordering::SeqCst);
        let mut b = Replay::new(frames(&["abcdef"], false), 64, None, Some((&used, 1024)));
        take(&mut b, None).await;
        assert!(!b.rewind());
        assert_eq!(used.load(Ordering::SeqCst), 1020);
        // Limit 0 (bodiless requests): nothing kept, nothing allocated.
        let b = Replay::new(frames(&[], false), 0, None, None);
        assert_eq!(b.kept.capacity(), 0);
    }

    #[tokio::test]
    async fn a_failed_client_body_is_not_replayed() {
        let v: Vec<FrameResult> = vec![
            Ok(Frame::data(Bytes::from_static(b"ab"))),
            Err(Box::new(std::io::Error::other("client went away"))),
        ];
        let mut b = Replay::new(
            StreamBody::new(futures_util::stream::iter(v)),
            64,
            None,
            None,
        );
        assert!(b.frame().await.unwrap().is_ok());
        assert!(b.frame().await.unwrap().is_err());
        assert!(!b.rewind());
    }
}
