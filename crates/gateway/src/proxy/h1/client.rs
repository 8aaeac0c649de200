//! The HTTP/1.1 backend client: a LIFO pool of connections (plain TCP or TLS, see
//! [`crate::proxy::connect`]) per backend, the request
//! head written straight from the client's parsed request into one buffer, the response
//! head parsed with `httparse`, and a response body that streams from the socket and puts
//! the connection back into the pool when the body has been read to its end.
//!
//! Why not hyper's client: hyper would need the request as a second `HeaderMap` (the
//! end-to-end copy) which it then serialises, and it parses the response into a map of its
//! own; each backend connection also wants a dispatcher. Writing the head from the parsed
//! request and reading the answer in the task that forwards it does one read and one write
//! per side per request, as nginx does.
//!
//! A request body is sent full duplex: the response is watched for while the body goes out,
//! so a backend that answers early with an error (413 to an upload) is heard at once; its
//! connection is then not reused, since the unsent rest of the body would precede the next
//! request.
use super::codec::{self, BodyDecoder, Framing, ResponseHead};
use crate::proxy::body::{BoxError, ForwardBody};
use crate::proxy::connect::{ClientStream, Target};
use crate::proxy::headers::{self, Forwarding};
use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderValue};
use http::Method;
use http_body::{Body, Frame, SizeHint};
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};

/// Largest response head accepted from a backend.
const MAX_RESPONSE_HEAD: usize = 64 * 1024;
/// Request body bytes gathered before a write.
const WRITE_BATCH: usize = 64 * 1024;

/// One backend connection and its read buffer (which may hold the start of the next
/// response only if the backend misbehaves; such connections are not reused).
#[derive(Debug)]
pub(crate) struct Conn {
    io: ClientStream,
    rbuf: BytesMut,
}

/// Idle connections to one backend, most recently used first out.
#[derive(Debug)]
pub(crate) struct Pool {
    idle: Mutex<Vec<(Conn, Instant)>>,
    max_idle: usize,
    idle_timeout: Duration,
}

impl Pool {
    pub(crate) fn new(max_idle: usize, idle_timeout: Duration) -> Self {
        Self {
            idle: Mutex::new(Vec::new()),
            max_idle,
            idle_timeout,
        }
    }

    fn checkout(&self, now: Instant) -> Option<Conn> {
        let mut idle = self.idle.lock().ok()?;
        while let Some((conn, since)) = idle.pop() {
            if now.saturating_duration_since(since) <= self.idle_timeout {
                return Some(conn);
            }
        }
        None
    }

    /// Takes `conn` back; `since` is when its last request started (close enough to when
    /// it went idle for an idle timeout, and saves reading the clock).
    fn release(&self, conn: Conn, since: Instant) {
        // A response that left bytes behind was framed wrongly: do not trust the connection.
        if !conn.rbuf.is_empty() {
            return;
        }
        if let Ok(mut idle) = self.idle.lock() {
            if idle.len() < self.max_idle {
                idle.push((conn, since));
            }
        }
    }

    /// Idle connections (tests).
    #[cfg(test)]
    fn idle_len(&self) -> usize {
        self.idle.lock().map_or(0, |i| i.len())
    }
}

/// Why an exchange failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ExchangeError {
    /// The connection was found closed before any byte of a response: on a reused
    /// connection this is the backend having closed it while idle.
    #[error("connection closed before a response: {0}")]
    Stale(io::Error),
    /// Anything else after the connection was established.
    #[error("{0}")]
    Other(BoxError),
}

impl ExchangeError {
    pub(crate) fn into_box(self) -> BoxError {
        match self {
            Self::Stale(e) => Box::new(e),
            Self::Other(e) => e,
        }
    }
}

/// The parts of an outgoing request besides the client's head.
pub(crate) struct Outgoing<'a> {
    pub(crate) parts: &'a http::request::Parts,
    /// `parts`' `Content-Length`, which the caller has looked up already.
    pub(crate) content_length: Option<&'a HeaderValue>,
    pub(crate) request_id: &'a HeaderValue,
    pub(crate) forwarding: &'a Forwarding,
    pub(crate) upgrade: bool,
}

/// How the request body goes upstream: as the client declared its length (`content_length`,
/// the request's `Content-Length`), else chunked.
pub(crate) fn request_framing(content_length: Option<&HeaderValue>, has_body: bool) -> Framing {
    let declared = content_length
        .and_then(|v| std::str::from_utf8(v.as_bytes()).ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    match declared {
        Some(n) => Framing::Length(n),
        None if has_body => Framing::Chunked,
        None => Framing::Empty,
    }
}

/// Writes the request head for a backend: the client's end-to-end headers (hop-by-hop
/// ones and those named in `Connection` dropped, as are `Expect`, which the gateway answers
/// itself, and the framing headers, which are this hop's), the forwarding headers and the
/// request id.
pub(crate) fn write_request_head(out: &mut Vec<u8>, o: &Outgoing<'_>, framing: Framing) {
    let parts = o.parts;
    out.extend_from_slice(parts.method.as_str().as_bytes());
    out.push(b' ');
    let target = match parts.uri.path_and_query() {
        Some(pq) if parts.method != Method::CONNECT => pq.as_str(),
        _ => "/",
    };
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    // An absolute-form or HTTP/2 request names its authority in the URI: that is the Host.
    let authority = parts.uri.authority();
    if let Some(a) = authority {
        codec::put_header(out, b"host", a.as_str().as_bytes());
    }
    let h = &parts.headers;
    // One lookup (no allocation without a `Connection` header).
    let listed = headers::connection_listed(h);
    for (name, value) in h {
        if headers::is_hop_by_hop(name)
            || name == header::CONTENT_LENGTH
            || name == header::EXPECT
            || name == headers::X_REQUEST_ID
            || headers::is_forwarding(name)
            || (authority.is_some() && name == header::HOST)
            || (!listed.is_empty() && listed.iter().any(|l| l == name.as_str()))
        {
            continue;
        }
        codec::put_header(out, name.as_str().as_bytes(), value.as_bytes());
    }
    if o.upgrade {
        if let Some(up) = h.get(header::UPGRADE) {
            codec::put_header(out, b"upgrade", up.as_bytes());
            codec::put_header(out, b"connection", b"upgrade");
        }
    }
    let (xff, proto, fwd) = o.forwarding.values(h);
    codec::put_header(out, b"x-forwarded-for", xff.as_bytes());
    codec::put_header(out, b"x-forwarded-proto", proto.as_bytes());
    codec::put_header(out, b"forwarded", fwd.as_bytes());
    if let Some(xfcc) = o.forwarding.client_cert(h) {
        codec::put_header(out, b"x-forwarded-client-cert", xfcc.as_bytes());
    }
    codec::put_header(out, b"x-request-id", o.request_id.as_bytes());
    match framing {
        Framing::Length(n) => {
            out.extend_from_slice(b"content-length: ");
            codec::put_u64(out, n);
            out.extend_from_slice(b"\r\n");
        }
        Framing::Chunked => codec::put_header(out, b"transfer-encoding", b"chunked"),
        Framing::Empty | Framing::Close => {}
    }
    out.extend_from_slice(b"\r\n");
}

impl Conn {
    /// Connects to the backend (with a TLS handshake for a TLS upstream).
    pub(crate) async fn connect(target: &Target) -> io::Result<Self> {
        Ok(Self {
            io: target.connect().await?,
            rbuf: BytesMut::new(),
        })
    }

    /// Whether the backend has closed (or written to) this idle connection; only spent
    /// before requests whose body cannot be sent twice.
    fn looks_closed(&self) -> bool {
        self.io.looks_closed()
    }

    /// Writes the request (head, then the body as it arrives) and reads the response head.
    /// Interim 1xx answers other than 101 are handed to `body` to pass on to the client
    /// (103 Early Hints, 102 Processing); `100 Continue` is dropped, since the gateway
    /// answers `Expect` itself and does not forward it.
    ///
    /// Returns the head and whether the whole request was sent: a backend may answer before
    /// it has read the body (a 413 or 401 to an upload), and then the rest of the body is
    /// not sent and the connection must not be reused.
    async fn exchange<B: ForwardBody>(
        &mut self,
        head: &mut Vec<u8>,
        body: &mut B,
        framing: Framing,
        head_request: bool,
    ) -> Result<(ResponseHead, bool), ExchangeError> {
        let stale = |e: io::Error| ExchangeError::Stale(e);
        let head_len = head.len();
        if framing == Framing::Empty {
            self.io.write_all(head).await.map_err(stale)?;
        } else {
            // Boxed (in a plain fn, see `listener.rs`): the body pump's state (the writer,
            // an early answer) would otherwise take room in every request's future, bodiless
            // ones included, and be moved with it.
            let r = send_body_boxed(self, head, body, framing, head_request).await;
            head.truncate(head_len);
            if let Some(answer) = r? {
                return Ok(answer);
            }
        }
        let mut got_any = false;
        loop {
            if !self.rbuf.is_empty() {
                got_any = true;
                // The match ends before the await: a scrutinee held across it would keep
                // room for a whole response head in this future.
                let interim = match self.parse_head(head_request)? {
                    Some(Answer::Final(h)) => return Ok((h, true)),
                    Some(Answer::Interim(parts)) => Some(body.interim(parts)),
                    None => None,
                };
                if let Some(passed_on) = interim {
                    passed_on.await;
                    continue;
                }
            }
            if self.rbuf.capacity() - self.rbuf.len() < 1024 {
                self.rbuf.reserve(codec::READ_CHUNK);
            }
            match self.io.read_buf(&mut self.rbuf).await {
                Ok(0) => return Err(closed(got_any)),
                Ok(_) => {}
                Err(e) if !got_any => return Err(stale(e)),
                Err(e) => return Err(ExchangeError::Other(Box::new(e))),
            }
        }
    }

    /// Parses what `rbuf` holds: a final head, an interim one to pass on, or not enough yet.
    /// `100 Continue` is skipped here.
    fn parse_head(&mut self, head_request: bool) -> Result<Option<Answer>, ExchangeError> {
        loop {
            if self.rbuf.is_empty() {
                return Ok(None);
            }
            let parsed = codec::parse_response(&mut self.rbuf, MAX_RESPONSE_HEAD, head_request)
                .map_err(|e| ExchangeError::Other(Box::new(e)))?;
            let Some(h) = parsed else {
                return Ok(None);
            };
            let status = h.parts.status;
            if !status.is_informational() || status == http::StatusCode::SWITCHING_PROTOCOLS {
                return Ok(Some(Answer::Final(h)));
            }
            if status != http::StatusCode::CONTINUE {
                return Ok(Some(Answer::Interim(h.parts)));
            }
        }
    }

    /// Streams the request body after `out` (the head) while watching for the response:
    /// full duplex, so a backend that answers without reading the body (413, 401) is heard
    /// at once instead of after the route timeout. Returns the final response head if it
    /// came while the body was going out, with whether the body had been written whole (if
    /// not, the rest is not sent); `None` when the body was sent and no answer came yet.
    ///
    /// Frames are gathered up to a batch and written when the body has nothing more ready,
    /// so a streaming upload is not held back and a small one goes out with its head in one
    /// write. Watching the response costs nothing while the backend is silent: a socket
    /// that has not been readable answers the read poll without a system call.
    async fn send_body<B: ForwardBody>(
        &mut self,
        out: &mut Vec<u8>,
        body: &mut B,
        framing: Framing,
        head_request: bool,
    ) -> Result<Option<(ResponseHead, bool)>, ExchangeError> {
        let mut w = BodyWriter {
            chunked: framing == Framing::Chunked,
            written: 0,
            big: None,
            body_done: false,
            trailers: None,
            write_failed: false,
            answered: None,
        };
        loop {
            let step =
                std::future::poll_fn(|cx| self.poll_send(cx, out, body, &mut w, head_request))
                    .await?;
            match step {
                Step::Sent => return Ok(w.answered.take().map(|h| (h, true))),
                Step::Answer(Answer::Final(h)) => {
                    let whole = w.body_done && w.written == out.len() && w.big.is_none();
                    return Ok(Some((h, whole)));
                }
                Step::Answer(Answer::Interim(parts)) => body.interim(parts).await,
            }
        }
    }

    /// One turn of [`send_body`](Self::send_body): reads and parses what the backend sent,
    /// gathers ready body frames, writes. Pending only when the socket cannot take more,
    /// the body has nothing ready and the backend has said nothing (each has registered a
    /// wake-up).
    fn poll_send<B: ForwardBody>(
        &mut self,
        cx: &mut Context<'_>,
        out: &mut Vec<u8>,
        body: &mut B,
        w: &mut BodyWriter,
        head_request: bool,
    ) -> Poll<Result<Step, ExchangeError>> {
        loop {
            // The response side first. An error answer ends the upload (RFC 9112 §9.5: the
            // server does not want the rest). A success that comes early is a backend that
            // streams its answer while it reads (an echo): the body must go out whole, so
            // the head is put aside and the socket not read further until it has.
            while w.answered.is_none() {
                match self.parse_head(head_request)? {
                    Some(Answer::Final(h)) if h.parts.status.as_u16() < 400 => {
                        w.answered = Some(h);
                    }
                    Some(a) => return Poll::Ready(Ok(Step::Answer(a))),
                    None => break,
                }
            }
            if let Some(h) = w.answered.take_if(|_| w.write_failed) {
                // The answer is all there is now; the request did not go out whole.
                return Poll::Ready(Ok(Step::Answer(Answer::Final(h))));
            }
            if w.answered.is_some() {
                // Response bytes stay in the socket for the response body to read.
                if let Some(step) = std::task::ready!(self.poll_write_body(cx, out, body, w)) {
                    return Poll::Ready(step);
                }
                continue;
            }
            if self.rbuf.capacity() - self.rbuf.len() < 1024 {
                self.rbuf.reserve(codec::READ_CHUNK);
            }
            let had = !self.rbuf.is_empty();
            match tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut self.rbuf) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(closed(had))),
                Poll::Ready(Ok(_)) => continue,
                Poll::Ready(Err(e)) if had => {
                    return Poll::Ready(Err(ExchangeError::Other(Box::new(e))))
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(ExchangeError::Stale(e))),
                Poll::Pending => {}
            }
            if w.write_failed {
                // The backend stopped taking the body; it may still have answered (a 413
                // and a close): wait for the answer or the close on the read side.
                return Poll::Pending;
            }

            match std::task::ready!(self.poll_write_body(cx, out, body, w)) {
                Some(step) => return Poll::Ready(step),
                None => continue,
            }
        }
    }

    /// The request side of [`poll_send`](Self::poll_send): gathers what the body has ready
    /// (up to a batch) and writes some of it. `Ready(None)`: progress was made, go round
    /// again; `Ready(Some(_))`: the body is sent, or failed; `Pending`: the socket is full
    /// or the body has nothing ready (a wake-up is registered).
    fn poll_write_body<B: ForwardBody>(
        &mut self,
        cx: &mut Context<'_>,
        out: &mut Vec<u8>,
        body: &mut B,
        w: &mut BodyWriter,
    ) -> Poll<Option<Result<Step, ExchangeError>>> {
        // The request side: gather what the body has ready, up to a batch.
        while !w.body_done && w.big.is_none() && out.len() < WRITE_BATCH {
            match Pin::new(&mut *body).poll_frame(cx) {
                Poll::Ready(None) => {
                    w.body_done = true;
                    if w.chunked {
                        codec::put_chunked_end(out, w.trailers.as_ref());
                    }
                }
                Poll::Ready(Some(Err(e))) => {
                    return Poll::Ready(Some(Err(ExchangeError::Other(e))))
                }
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) if data.is_empty() => {}
                    Ok(data) => {
                        if w.chunked {
                            codec::put_chunk_size(out, data.len());
                        }
                        if data.len() >= WRITE_BATCH {
                            // Written from where it is rather than copied into `out`.
                            w.big = Some((data, 0));
                        } else {
                            out.extend_from_slice(&data);
                            if w.chunked {
                                out.extend_from_slice(b"\r\n");
                            }
                        }
                    }
                    Err(frame) => {
                        if let Ok(t) = frame.into_trailers() {
                            w.trailers = Some(t);
                        }
                    }
                },
                Poll::Pending => break,
            }
        }

        // Then write it.
        let pending: &[u8] = if w.written < out.len() {
            &out[w.written..]
        } else if let Some((data, at)) = &w.big {
            &data[*at..]
        } else if w.body_done {
            return match Pin::new(&mut self.io).poll_flush(cx) {
                Poll::Ready(Ok(())) => Poll::Ready(Some(Ok(Step::Sent))),
                Poll::Ready(Err(_)) => {
                    w.write_failed = true;
                    Poll::Ready(None)
                }
                Poll::Pending => Poll::Pending,
            };
        } else {
            // Everything gathered is written and the body has nothing ready.
            return Poll::Pending;
        };
        match Pin::new(&mut self.io).poll_write(cx, pending) {
            Poll::Ready(Ok(n)) if n > 0 => {
                if w.written < out.len() {
                    w.written += n;
                    if w.written == out.len() {
                        out.clear();
                        w.written = 0;
                    }
                } else if let Some((data, at)) = &mut w.big {
                    *at += n;
                    if *at == data.len() {
                        w.big = None;
                        if w.chunked {
                            out.extend_from_slice(b"\r\n");
                        }
                    }
                }
            }
            Poll::Ready(_) => w.write_failed = true,
            Poll::Pending => return Poll::Pending,
        }
        Poll::Ready(None)
    }
}

/// What the backend sent back while the body was going out.
enum Answer {
    Final(ResponseHead),
    Interim(http::response::Parts),
}

enum Step {
    /// The whole body was written.
    Sent,
    Answer(Answer),
}

/// Where [`Conn::send_body`] stands.
struct BodyWriter {
    chunked: bool,
    /// Bytes of `out` already written.
    written: usize,
    /// A large frame being written as it is, after `out`, and how much of it is written.
    big: Option<(Bytes, usize)>,
    body_done: bool,
    trailers: Option<http::HeaderMap>,
    /// A write failed: only the answer (or the close) is awaited now.
    write_failed: bool,
    /// A success answer that came before the body was all sent.
    answered: Option<ResponseHead>,
}

/// The backend closed the connection before a complete response head; `got_any`: after
/// some of one.
fn closed(got_any: bool) -> ExchangeError {
    if got_any {
        ExchangeError::Other(Box::new(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "backend closed the connection in a response head",
        )))
    } else {
        ExchangeError::Stale(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "backend closed the connection",
        ))
    }
}

/// Sends one request over a pooled (or new) connection. A pooled connection the backend
/// closed while idle gets the request again on a fresh connection if nothing was lost:
/// bodiless requests after the fact, requests with a body only after a probe beforehand.
///
/// # Errors
/// `Err(Ok(io))` if connecting failed (nothing was sent), `Err(Err(e))` if the exchange
/// failed on an established connection.
pub(crate) async fn send<B: ForwardBody>(
    pool: &Arc<Pool>,
    target: &Target,
    o: &Outgoing<'_>,
    body: &mut B,
    has_body: bool,
    now: Instant,
) -> Result<(ResponseHead, H1Body), Result<io::Error, BoxError>> {
    let framing = request_framing(o.content_length, has_body);
    let mut head = Vec::with_capacity(512);
    write_request_head(&mut head, o, framing);
    let head_request = o.parts.method == Method::HEAD;
    let mut fresh_only = o.upgrade;
    loop {
        let pooled = if fresh_only { None } else { pool.checkout(now) };
        let reused = pooled.is_some();
        let mut conn = match pooled {
            Some(c) if has_body && c.looks_closed() => continue,
            Some(c) => c,
            // Boxed (in a plain fn, see `listener.rs`): the connect future (TCP connect,
            // TLS handshake, their timer) is most of this one's size, and a warm pool
            // rarely needs it; unboxed, every request would carry and move its room.
            None => connect_boxed(target).await.map_err(Ok)?,
        };
        match conn.exchange(&mut head, body, framing, head_request).await {
            Ok((h, whole)) => {
                // Unsent request bytes would be taken for the next request's: when the
                // backend answered early, the connection ends with the response.
                let body = H1Body::new(conn, &h, pool, now, whole);
                return Ok((h, body));
            }
            Err(ExchangeError::Stale(_)) if reused && !has_body => fresh_only = true,
            Err(e) => return Err(Err(e.into_box())),
        }
    }
}

type SendBodyFuture<'a> = Pin<
    Box<
        dyn std::future::Future<Output = Result<Option<(ResponseHead, bool)>, ExchangeError>>
            + Send
            + 'a,
    >,
>;

fn send_body_boxed<'a, B: ForwardBody>(
    conn: &'a mut Conn,
    out: &'a mut Vec<u8>,
    body: &'a mut B,
    framing: Framing,
    head_request: bool,
) -> SendBodyFuture<'a> {
    Box::pin(conn.send_body(out, body, framing, head_request))
}

fn connect_boxed(
    target: &Target,
) -> Pin<Box<dyn std::future::Future<Output = io::Result<Conn>> + Send + '_>> {
    Box::pin(Conn::connect(target))
}

/// A backend's HTTP/1 response body, read from its connection as the client takes it.
#[derive(Debug)]
pub(crate) struct H1Body {
    conn: Option<Conn>,
    decoder: BodyDecoder,
    keep_alive: bool,
    upgraded: bool,
    pool: Weak<Pool>,
    started: Instant,
}

impl H1Body {
    /// `reusable`: whether the request went out whole, so the connection may be pooled
    /// after the response if the backend keeps it alive.
    fn new(
        conn: Conn,
        head: &ResponseHead,
        pool: &Arc<Pool>,
        started: Instant,
        reusable: bool,
    ) -> Self {
        let upgraded = head.parts.status == http::StatusCode::SWITCHING_PROTOCOLS;
        let mut this = Self {
            conn: Some(conn),
            decoder: if upgraded {
                BodyDecoder::Done
            } else {
                BodyDecoder::new(head.framing)
            },
            keep_alive: head.keep_alive && reusable,
            upgraded,
            pool: Arc::downgrade(pool),
            started,
        };
        this.release_if_done();
        this
    }

    fn release_if_done(&mut self) {
        if self.upgraded || !self.decoder.is_done() {
            return;
        }
        if let Some(conn) = self.conn.take() {
            if self.keep_alive {
                if let Some(pool) = self.pool.upgrade() {
                    pool.release(conn, self.started);
                }
            }
        }
    }

    /// The connection of a 101 answer and what the backend sent after the head.
    pub(crate) fn into_upgraded(mut self) -> Option<(ClientStream, BytesMut)> {
        if !self.upgraded {
            return None;
        }
        self.conn.take().map(|c| (c.io, c.rbuf))
    }
}

impl Body for H1Body {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let Some(conn) = this.conn.as_mut() else {
            return Poll::Ready(None);
        };
        let r = std::task::ready!(this.decoder.poll_frame(&mut conn.io, &mut conn.rbuf, cx));
        match r {
            Some(Ok(f)) => {
                this.release_if_done();
                Poll::Ready(Some(Ok(f)))
            }
            Some(Err(e)) => {
                this.conn = None;
                Poll::Ready(Some(Err(Box::new(e))))
            }
            None => {
                this.release_if_done();
                Poll::Ready(None)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.upgraded || self.decoder.is_done()
    }

    fn size_hint(&self) -> SizeHint {
        match self.decoder.exact_remaining() {
            Some(n) => SizeHint::with_exact(n),
            None => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Request;
    use http_body_util::BodyExt as _;

    fn outgoing_head(req: Request<()>, upgrade: bool) -> String {
        let (parts, ()) = req.into_parts();
        let f = Forwarding::new("10.0.0.9".parse().unwrap(), false);
        let id = HeaderValue::from_static("rid");
        let o = Outgoing {
            parts: &parts,
            content_length: parts.headers.get(header::CONTENT_LENGTH),
            request_id: &id,
            forwarding: &f,
            upgrade,
        };
        let mut out = Vec::new();
        write_request_head(&mut out, &o, request_framing(o.content_length, false));
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn request_head_drops_hop_by_hop_and_adds_forwarding() {
        let req = Request::builder()
            .uri("/p?q=1")
            .header("host", "example.com")
            .header("connection", "keep-alive, x-secret")
            .header("x-secret", "1")
            .header("te", "trailers")
            .header("expect", "100-continue")
            .header("x-forwarded-for", "1.1.1.1")
            .header("x-kept", "yes")
            .header("content-length", "0")
            .body(())
            .unwrap();
        let head = outgoing_head(req, false);
        assert_eq!(
            head,
            "GET /p?q=1 HTTP/1.1\r\nhost: example.com\r\nx-kept: yes\r\n\
             x-forwarded-for: 1.1.1.1, 10.0.0.9\r\nx-forwarded-proto: http\r\n\
             forwarded: for=10.0.0.9;proto=http\r\nx-request-id: rid\r\ncontent-length: 0\r\n\r\n"
        );
    }

    #[test]
    fn a_client_xfcc_is_dropped_and_the_connection_one_written() {
        let (parts, ()) = Request::builder()
            .uri("/")
            .header("host", "a")
            .header("X-Forwarded-Client-Cert", "Hash=forged")
            .body(())
            .unwrap()
            .into_parts();
        let id = HeaderValue::from_static("rid");
        let head = |f: &Forwarding| {
            let o = Outgoing {
                parts: &parts,
                content_length: parts.headers.get(header::CONTENT_LENGTH),
                request_id: &id,
                forwarding: f,
                upgrade: false,
            };
            let mut out = Vec::new();
            write_request_head(&mut out, &o, Framing::Empty);
            String::from_utf8(out).unwrap()
        };
        let plain = Forwarding::new("10.0.0.9".parse().unwrap(), true);
        assert!(!head(&plain).contains("forged"), "{}", head(&plain));
        let verified = plain.with_client_cert(Some(HeaderValue::from_static("Hash=ab")), None);
        let h = head(&verified);
        assert!(!h.contains("forged"), "{h}");
        assert_eq!(h.matches("x-forwarded-client-cert").count(), 1, "{h}");
        assert!(h.contains("x-forwarded-client-cert: Hash=ab\r\n"), "{h}");
    }

    #[test]
    fn absolute_form_authority_becomes_host_and_upgrade_survives() {
        let req = Request::builder()
            .uri("http://a.example:8080/ws")
            .header("host", "ignored")
            .header("connection", "Upgrade")
            .header("upgrade", "websocket")
            .body(())
            .unwrap();
        let head = outgoing_head(req, true);
        assert!(
            head.starts_with("GET /ws HTTP/1.1\r\nhost: a.example:8080\r\n"),
            "{head}"
        );
        assert!(!head.contains("ignored"));
        assert!(
            head.contains("upgrade: websocket\r\nconnection: upgrade\r\n"),
            "{head}"
        );
    }

    #[tokio::test]
    async fn pooled_connection_closed_by_backend_is_retried_on_a_fresh_one() {
        use tokio::net::TcpListener;
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        // The backend answers one request per connection and then closes without saying so.
        let server = tokio::spawn(async move {
            let mut served = 0;
            while served < 2 {
                let (mut s, _) = l.accept().await.unwrap();
                let mut buf = vec![0u8; 4096];
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    let n = s.read(&mut buf).await.unwrap();
                    got.extend_from_slice(&buf[..n]);
                }
                s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                    .await
                    .unwrap();
                served += 1;
                drop(s);
            }
        });
        let pool = Arc::new(Pool::new(8, Duration::from_secs(60)));
        let (parts, ()) = Request::builder()
            .uri("/")
            .header("host", "x")
            .body(())
            .unwrap()
            .into_parts();
        let f = Forwarding::new("127.0.0.1".parse().unwrap(), false);
        let id = HeaderValue::from_static("r");
        let o = Outgoing {
            parts: &parts,
            content_length: parts.headers.get(header::CONTENT_LENGTH),
            request_id: &id,
            forwarding: &f,
            upgrade: false,
        };
        for _ in 0..2 {
            let mut empty = crate::proxy::body::HyperBody(None);
            let (h, body) = send(
                &pool,
                &Target {
                    addr,
                    timeout: Duration::from_secs(1),
                    tls: None,
                },
                &o,
                &mut empty,
                false,
                Instant::now(),
            )
            .await
            .unwrap_or_else(|e| panic!("{e:?}"));
            assert_eq!(h.parts.status, 200);
            let data = body.collect().await.unwrap().to_bytes();
            assert_eq!(&data[..], b"ok");
            // Keep-alive by the headers: the connection went back to the pool.
            assert_eq!(pool.idle_len(), 1);
        }
        server.await.unwrap();
    }
}
