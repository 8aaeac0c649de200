//! The native HTTP/1.1 connection loop: one task per client connection reads a request
//! head, runs the request pipeline ([`crate::proxy::forward`]) — which reads the request
//! body inline while it writes it to the backend — and writes the response head and body,
//! then waits for the next request. No channels, no extra tasks, no second header map.
//!
//! Requests on a connection are handled one after the other, so pipelined requests are
//! safe: the next head is parsed from whatever followed the previous request in the buffer.
//!
//! Idle memory: while a keep-alive connection waits for its next request it holds no read
//! or write buffer. On plain TCP the loop waits for readability first and takes a buffer
//! only when bytes are there (10 000 idle connections cost sockets and a small task each).
//! TLS streams report readiness at once (rustls keeps its own buffers), so they read with
//! a buffer.
use super::codec::{self, BodyDecoder, HeadError, RequestHead, READ_CHUNK};
use crate::logging::AccessEntry;
use crate::proxy::body::{BadRequestBody, BoxError, ForwardBody, OwnedBody, ResponseBody};
use crate::proxy::{self, ConnInfo};
use bytes::{Buf, Bytes, BytesMut};
use futures_util::FutureExt as _;
use http::{header, Method, StatusCode, Version};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt as _;
use prometheus_client::metrics::gauge::Gauge;
use scalewise::timeout::timeout_on;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Response bytes gathered before a write.
const WRITE_BATCH: usize = 16 * 1024;

/// A client transport the loop can serve.
pub(crate) trait ClientIo: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    /// Ready when reading would make progress, without reading (so without a buffer).
    fn poll_readable(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;

    /// Reads what is there without waiting. `None` if the transport cannot tell.
    ///
    /// Why: readiness stays set until a read reports `WouldBlock`, and the request reads
    /// usually stop before that. One read that finds nothing (nginx does the same before
    /// it frees a keep-alive connection's buffer) makes [`poll_readable`](Self::poll_readable)
    /// wait for the next request for real.
    fn try_read_now(&mut self, buf: &mut BytesMut) -> Option<io::Result<usize>>;
}

impl ClientIo for TcpStream {
    fn poll_readable(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_read_ready(cx)
    }

    fn try_read_now(&mut self, buf: &mut BytesMut) -> Option<io::Result<usize>> {
        Some(self.try_read_buf(buf))
    }
}

impl ClientIo for tokio_rustls::server::TlsStream<TcpStream> {
    fn poll_readable(&self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        // rustls may hold decrypted bytes already: only a read can tell.
        Poll::Ready(Ok(()))
    }

    fn try_read_now(&mut self, _: &mut BytesMut) -> Option<io::Result<usize>> {
        None
    }
}

/// Client-side limits of one listener.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Settings {
    /// Time for a complete request head once its first byte arrived (and for the first
    /// request of a connection).
    pub(crate) header_read: Duration,
    /// Time a keep-alive connection may wait for its next request.
    pub(crate) idle: Duration,
    pub(crate) max_header_bytes: usize,
}

/// What the connections of one listener share.
#[derive(Debug)]
pub(crate) struct Listener {
    pub(crate) settings: Settings,
    /// `gateway_client_buffers`: connections holding buffers right now.
    pub(crate) buffers: Gauge,
    /// Set when the listener drains: responses then say `Connection: close`. An atomic
    /// read per response, where the cancellation token would take its lock.
    pub(crate) draining: std::sync::atomic::AtomicBool,
}

/// One client connection and the buffers it holds while busy.
struct Client<S> {
    io: S,
    rbuf: BytesMut,
    wbuf: Vec<u8>,
    /// `gateway_client_buffers`: connections holding buffers right now.
    gauge: Gauge,
    held: bool,
}

/// Buffers kept per thread for the next busy connection, so that a request does not cost
/// a malloc and free of each buffer. Bounded: beyond it, buffers go back to the allocator.
const SPARE_BUFFERS: usize = 64;

thread_local! {
    static SPARE: std::cell::RefCell<Vec<(BytesMut, Vec<u8>)>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl<S> Client<S> {
    fn hold(&mut self) {
        if !self.held {
            self.held = true;
            self.gauge.inc();
            if self.rbuf.capacity() == 0 {
                if let Some((r, w)) = SPARE.try_with(|s| s.borrow_mut().pop()).ok().flatten() {
                    self.rbuf = r;
                    self.wbuf = w;
                }
            }
        }
        if self.rbuf.capacity() - self.rbuf.len() < 1024 {
            self.rbuf.reserve(READ_CHUNK);
        }
    }

    /// Gives the buffers back while the connection waits.
    fn release(&mut self) {
        if self.held {
            self.held = false;
            self.gauge.dec();
        }
        let mut r = std::mem::take(&mut self.rbuf);
        let mut w = std::mem::take(&mut self.wbuf);
        // Only a buffer no body frame still points into can be handed on as it is.
        r.clear();
        if r.try_reclaim(READ_CHUNK) && w.capacity() <= 4 * WRITE_BATCH {
            w.clear();
            // `try_with`: a connection dropped while its thread shuts down finds no list.
            let _ = SPARE.try_with(|s| {
                let mut s = s.borrow_mut();
                if s.len() < SPARE_BUFFERS {
                    s.push((r, w));
                }
            });
        }
    }
}

impl<S> Drop for Client<S> {
    fn drop(&mut self) {
        self.release();
    }
}

/// `now + d`, saturating: a listener config that skipped validation must not panic here.
/// (Also the HTTP/2 path's deadlines, in `listener`.)
pub(crate) fn after(d: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(d)
        .unwrap_or_else(|| now + Duration::from_secs(365 * 24 * 3600))
}

/// Serves one client connection until it closes, times out, or `cancel` fires (then the
/// request in progress is finished and answered with `Connection: close`). `initial`
/// holds bytes already read from `io` (protocol detection).
pub(crate) async fn serve<S: ClientIo>(
    io: S,
    initial: BytesMut,
    ci: Arc<ConnInfo>,
    listener: Arc<Listener>,
    cancel: CancellationToken,
) {
    let settings = listener.settings;
    let mut c = Client {
        io,
        rbuf: initial,
        wbuf: Vec::new(),
        gauge: listener.buffers.clone(),
        held: false,
    };
    let mut first = true;
    // One registration with the token for the connection's life, not one per idle spell
    // (each registration takes the token's lock); polls cost no lock (`Cancelled`).
    let cancelled = crate::cancel::Cancelled::new(&cancel);
    tokio::pin!(cancelled);
    // The connection's one timer, re-armed lazily, for the idle clock and for each request's
    // response deadline, both through `timeout_on`: each idle spell and each request has its
    // deadline, but the timer is moved only when it fires before that deadline (it was set
    // for an earlier one) or when the deadline is earlier than the timer: with requests
    // coming faster than the timeouts, the timer is touched about once per timeout instead
    // of registered and cleared for every request.
    let idle_timer = tokio::time::sleep_until(after(settings.header_read));
    tokio::pin!(idle_timer);
    loop {
        if c.rbuf.is_empty() {
            c.release();
            let deadline = after(if first {
                settings.header_read
            } else {
                settings.idle
            });
            let readable = std::future::poll_fn(|cx| c.io.poll_readable(cx));
            tokio::select! {
                biased;
                () = &mut cancelled => return,
                r = timeout_on(idle_timer.as_mut(), deadline, readable) => {
                    // Timed out, or the socket failed.
                    if !matches!(r, Some(Ok(()))) {
                        return;
                    }
                }
            }
        }
        c.hold();
        let head = match read_head(&mut c, first, &settings).await {
            Ok(Some(h)) => h,
            Ok(None) => return,
            Err(e) => {
                let status = match e {
                    HeadError::Malformed => StatusCode::BAD_REQUEST,
                    HeadError::TooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                    HeadError::UnsupportedCoding => StatusCode::NOT_IMPLEMENTED,
                };
                if reply(&mut c.io, status).await.is_ok() {
                    linger_close(&mut c.io).await;
                }
                return;
            }
        };
        first = false;
        if !exchange(&mut c, head, &ci, &listener.draining, idle_timer.as_mut()).await {
            c.release();
            linger_close(&mut c.io).await;
            return;
        }
        if c.rbuf.is_empty() {
            c.hold();
            match c.io.try_read_now(&mut c.rbuf) {
                Some(Ok(0)) => return,
                Some(Err(e)) if e.kind() != io::ErrorKind::WouldBlock => return,
                _ => {}
            }
        }
    }
}

/// Reads until a complete request head is buffered. `Ok(None)`: the client closed, or a
/// deadline passed (one per phase, not re-armed per read: the idle one until a byte
/// arrives, then the header one).
async fn read_head<S: ClientIo>(
    c: &mut Client<S>,
    first: bool,
    s: &Settings,
) -> Result<Option<RequestHead>, HeadError> {
    let mut head_deadline = None;
    let mut idle_deadline = None;
    loop {
        if !c.rbuf.is_empty() {
            if let Some(h) = codec::parse_request(&c.rbuf, s.max_header_bytes)? {
                c.rbuf.advance(h.len);
                return Ok(Some(h));
            }
        }
        if c.rbuf.capacity() - c.rbuf.len() < 1024 {
            c.rbuf.reserve(READ_CHUNK);
        }
        // Most heads are there already (the loop waited for readability): read without a
        // timer, and build one (a clock read and a timer entry) only if the read would wait.
        // `read_buf`, not `try_read_now`: a short read clears the socket's readiness, which
        // spares the probe after the response a `recv` that would find nothing.
        match c.io.read_buf(&mut c.rbuf).now_or_never() {
            Some(Ok(n)) if n > 0 => continue,
            Some(_) => return Ok(None),
            None => {}
        }
        let at = if c.rbuf.is_empty() && !first {
            *idle_deadline.get_or_insert_with(|| after(s.idle))
        } else {
            *head_deadline.get_or_insert_with(|| after(s.header_read))
        };
        match tokio::time::timeout_at(at, c.io.read_buf(&mut c.rbuf)).await {
            Ok(Ok(n)) if n > 0 => {}
            _ => return Ok(None),
        }
    }
}

/// The pipeline's future in a box of its own, built outside the async fn (see
/// `listener.rs`): it is large, and a task keeps room for its largest state for its whole
/// life; boxed, an idle connection's task holds none of it.
fn boxed_forward<'a, S: ClientIo>(
    parts: http::request::Parts,
    body: ClientBody<'a, S>,
    has_body: bool,
    ci: &'a ConnInfo,
    timer: Pin<&'a mut tokio::time::Sleep>,
) -> Pin<Box<dyn std::future::Future<Output = http::Response<ResponseBody>> + Send + 'a>> {
    Box::pin(proxy::forward(parts, body, has_body, ci, Some(timer)))
}

/// Bytes of the box [`boxed_forward`] makes for a bodiless request on `io` (the
/// `future_sizes` test in `listener.rs`).
#[cfg(test)]
pub(crate) fn forward_future_size<S: ClientIo>(
    io: &mut S,
    parts: http::request::Parts,
    ci: &ConnInfo,
    timer: Pin<&mut tokio::time::Sleep>,
) -> usize {
    let mut buf = BytesMut::new();
    let mut decoder = BodyDecoder::new(codec::Framing::Empty);
    let body = ClientBody {
        io,
        buf: &mut buf,
        decoder: &mut decoder,
        cont: None,
        interim: true,
    };
    let fut = boxed_forward(parts, body, false, ci, timer);
    std::mem::size_of_val(&*fut)
}

/// One request and its response. Returns whether the connection may carry another.
async fn exchange<S: ClientIo>(
    c: &mut Client<S>,
    head: RequestHead,
    ci: &Arc<ConnInfo>,
    draining: &std::sync::atomic::AtomicBool,
    timer: Pin<&mut tokio::time::Sleep>,
) -> bool {
    let RequestHead {
        parts,
        framing,
        keep_alive,
        expect_continue,
        ..
    } = head;
    let mut decoder = BodyDecoder::new(framing);
    let has_body = !decoder.is_done();
    let version = parts.version;
    let head_request = parts.method == Method::HEAD;
    let log = AccessEntry::start(&parts, ci.peer, ci.client_cert.as_ref(), access_log(ci));
    let resp = {
        let body = ClientBody {
            io: &mut c.io,
            buf: &mut c.rbuf,
            decoder: &mut decoder,
            // HTTP/1.0 clients do not know interim responses.
            cont: (expect_continue && version == Version::HTTP_11).then_some(0),
            interim: version == Version::HTTP_11,
        };
        boxed_forward(parts, body, has_body, ci, timer).await
    };
    // A body the pipeline did not read (a local answer) is still on the wire: rather than
    // read it, close after the answer.
    let mut keep =
        keep_alive && decoder.is_done() && !draining.load(std::sync::atomic::Ordering::Relaxed);
    let (parts, mut body) = resp.into_parts();

    if parts.status == StatusCode::SWITCHING_PROTOCOLS {
        if let Some(up) = body.take_upgraded() {
            c.wbuf.clear();
            put_status_line(&mut c.wbuf, parts.status);
            codec::put_headers(&mut c.wbuf, &parts.headers);
            c.wbuf.extend_from_slice(b"\r\n");
            if let Some(e) = log {
                e.finish_sent(parts.status, &parts.headers, &parts.extensions, 0);
            }
            // Boxed: upgrades are rare, the splice future is not small.
            let spliced: Pin<Box<dyn std::future::Future<Output = ()> + Send + '_>> =
                Box::pin(splice(c, up));
            spliced.await;
            return false;
        }
    }

    let sent = write_response(c, &parts, &mut body, head_request, version, &mut keep).await;
    drop(body);
    if let Some(e) = log {
        e.finish_sent(
            parts.status,
            &parts.headers,
            &parts.extensions,
            sent.unwrap_or_else(|n| n),
        );
    }
    sent.is_ok() && keep
}

fn access_log(ci: &ConnInfo) -> bool {
    ci.shared.state.load().config().log.access_log
}

fn put_status_line(out: &mut Vec<u8>, status: StatusCode) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Out {
    None,
    Raw,
    Chunked,
    Close,
}

/// Writes the response head and streams the body. Returns the body bytes written, as
/// `Err` if the connection broke or the backend's body failed midway (then the client
/// sees a cut-off response and the connection closes).
async fn write_response<S: ClientIo>(
    c: &mut Client<S>,
    parts: &http::response::Parts,
    body: &mut ResponseBody,
    head_request: bool,
    version: Version,
    keep: &mut bool,
) -> Result<u64, u64> {
    let status = parts.status;
    let bodiless = head_request
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let mut add_length = None;
    let out = if bodiless {
        Out::None
    } else if parts.headers.contains_key(header::CONTENT_LENGTH) {
        Out::Raw
    } else if let Some(n) = body.size_hint().exact() {
        add_length = Some(n);
        Out::Raw
    } else if version == Version::HTTP_11 {
        Out::Chunked
    } else {
        // An HTTP/1.0 client learns where the body ends from the close.
        *keep = false;
        Out::Close
    };
    let w = &mut c.wbuf;
    w.clear();
    put_status_line(w, status);
    codec::put_headers(w, &parts.headers);
    if let Some(n) = add_length {
        w.extend_from_slice(b"content-length: ");
        codec::put_u64(w, n);
        w.extend_from_slice(b"\r\n");
    }
    if out == Out::Chunked {
        w.extend_from_slice(b"transfer-encoding: chunked\r\n");
    }
    if !*keep {
        w.extend_from_slice(b"connection: close\r\n");
    } else if version == Version::HTTP_10 {
        w.extend_from_slice(b"connection: keep-alive\r\n");
    }
    w.extend_from_slice(b"\r\n");

    let mut sent = 0u64;
    if out == Out::None {
        return c.io.write_all(&c.wbuf).await.map(|()| 0).map_err(|_| 0);
    }
    let mut trailers = None;
    loop {
        // Gather what is ready; write before waiting for more, so a trickling body (server
        // sent events) is not held back, and a small one goes out with its head at once.
        let next = match body.frame().now_or_never() {
            Some(f) => f,
            None => {
                if !c.wbuf.is_empty() {
                    c.io.write_all(&c.wbuf).await.map_err(|_| sent)?;
                    c.wbuf.clear();
                }
                body.frame().await
            }
        };
        let frame = match next {
            None => break,
            Some(Ok(f)) => f,
            Some(Err(e)) => {
                tracing::debug!(error = %e, "response body failed midway");
                let _ = c.io.write_all(&c.wbuf).await;
                return Err(sent);
            }
        };
        let data = match frame.into_data() {
            Ok(d) => d,
            Err(f) => {
                if let Ok(t) = f.into_trailers() {
                    trailers = Some(t);
                }
                continue;
            }
        };
        if data.is_empty() {
            continue;
        }
        sent += data.len() as u64;
        if out == Out::Chunked {
            codec::put_chunk_size(&mut c.wbuf, data.len());
        }
        if data.len() >= WRITE_BATCH {
            c.io.write_all(&c.wbuf).await.map_err(|_| sent)?;
            c.wbuf.clear();
            c.io.write_all(&data).await.map_err(|_| sent)?;
        } else {
            c.wbuf.extend_from_slice(&data);
        }
        if out == Out::Chunked {
            c.wbuf.extend_from_slice(b"\r\n");
        }
        if c.wbuf.len() >= WRITE_BATCH {
            c.io.write_all(&c.wbuf).await.map_err(|_| sent)?;
            c.wbuf.clear();
        }
    }
    if out == Out::Chunked {
        codec::put_chunked_end(&mut c.wbuf, trailers.as_ref());
    }
    if !c.wbuf.is_empty() {
        c.io.write_all(&c.wbuf).await.map_err(|_| sent)?;
        c.wbuf.clear();
    }
    Ok(sent)
}

/// Writes the 101 head (in `c.wbuf`) and splices client and backend until either side
/// closes. The backend connection, the balancer selection and the connection's activity
/// are held for as long as the tunnel runs.
async fn splice<S: ClientIo>(c: &mut Client<S>, up: crate::proxy::body::Upgraded) {
    let mut backend = up.io;
    c.wbuf.extend_from_slice(&up.leftover);
    if c.io.write_all(&c.wbuf).await.is_err() {
        return;
    }
    if !c.rbuf.is_empty() && backend.write_all(&c.rbuf).await.is_err() {
        return;
    }
    // copy_bidirectional has buffers of its own.
    c.release();
    let _ = tokio::io::copy_bidirectional(&mut c.io, &mut backend).await;
    drop(up.guard);
    drop(up.active);
}

/// How long a closing connection goes on reading what the client still sends: at most
/// this long between reads, and at most `LINGER_TOTAL` in all (nginx's `lingering_timeout`
/// and `lingering_time`).
const LINGER_IDLE: Duration = Duration::from_secs(5);
const LINGER_TOTAL: Duration = Duration::from_secs(30);

/// Closes a connection whose client may still be sending (an answer given before the request
/// body was read: 413, an early backend answer, a malformed request). Closing a socket the
/// peer is still writing to makes the kernel answer with a reset, and a reset can destroy the
/// answer in the client's receive buffer before the client has read it: a client that sends
/// its whole body before reading would see "connection reset" instead of the 413. So, like
/// nginx's lingering close: half-close (the client sees the answer end), then read and
/// discard until the client closes too, within `LINGER_IDLE`/`LINGER_TOTAL`. The discard
/// buffer is allocated here, only while lingering, so it costs idle connections nothing.
async fn linger_close<S: ClientIo>(io: &mut S) {
    if io.shutdown().await.is_err() {
        return;
    }
    let end = Instant::now() + LINGER_TOTAL;
    let mut sink = vec![0u8; READ_CHUNK];
    loop {
        let wait = LINGER_IDLE.min(end.saturating_duration_since(Instant::now()));
        match tokio::time::timeout(wait, io.read(&mut sink)).await {
            Ok(Ok(n)) if n > 0 => {}
            // The client closed (or failed), or kept quiet too long.
            _ => return,
        }
    }
}

/// Answers an unreadable request (the caller then closes).
async fn reply<S: ClientIo>(io: &mut S, status: StatusCode) -> io::Result<()> {
    let text = format!(
        "{} {}\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("Error")
    );
    let mut out = Vec::with_capacity(160);
    put_status_line(&mut out, status);
    codec::put_header(&mut out, b"content-type", b"text/plain; charset=utf-8");
    out.extend_from_slice(b"content-length: ");
    codec::put_u64(&mut out, text.len() as u64);
    out.extend_from_slice(b"\r\nconnection: close\r\n\r\n");
    out.extend_from_slice(text.as_bytes());
    io.write_all(&out).await
}

const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// The request body, read from the client connection as the backend client takes it.
/// The first read sends `100 Continue` if the client waits for one: only a request that
/// passed routing and admission and has a backend connection gets the client to send.
struct ClientBody<'a, S> {
    io: &'a mut S,
    buf: &'a mut BytesMut,
    decoder: &'a mut BodyDecoder,
    /// Bytes of `100 Continue` written so far, while one is owed.
    cont: Option<usize>,
    /// Whether the client may get interim (1xx) responses: HTTP/1.1 clients only (RFC 9110
    /// §15.2: never to an HTTP/1.0 client).
    interim: bool,
}

impl<S: ClientIo> Body for ClientBody<'_, S> {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        while let Some(off) = this.cont {
            // Unless the client sent the body without waiting.
            if !this.buf.is_empty() {
                this.cont = None;
                break;
            }
            match ready!(Pin::new(&mut *this.io).poll_write(cx, &CONTINUE[off..])) {
                Ok(0) => {
                    return Poll::Ready(Some(Err(Box::new(io::Error::from(
                        io::ErrorKind::WriteZero,
                    )))))
                }
                Ok(n) if off + n < CONTINUE.len() => this.cont = Some(off + n),
                Ok(_) => this.cont = None,
                Err(e) => return Poll::Ready(Some(Err(Box::new(e)))),
            }
        }
        // Marked as the client's fault: the pipeline answers 400 and does not blame the
        // backend it was streaming to.
        this.decoder
            .poll_frame(&mut *this.io, this.buf, cx)
            .map(|f| f.map(|r| r.map_err(|e| Box::new(BadRequestBody(e)) as BoxError)))
    }

    fn is_end_stream(&self) -> bool {
        self.decoder.is_done()
    }

    fn size_hint(&self) -> SizeHint {
        match self.decoder.exact_remaining() {
            Some(n) => SizeHint::with_exact(n),
            None => SizeHint::default(),
        }
    }
}

impl<S: ClientIo> ForwardBody for ClientBody<'_, S> {
    fn take_owned(&mut self) -> Option<OwnedBody> {
        None
    }

    /// Writes the interim response (hop-by-hop headers removed) to an HTTP/1.1 client at
    /// once. A failed write is only logged: the client is gone, and the final response's
    /// write will find that out and close the connection.
    fn interim(
        &mut self,
        mut head: http::response::Parts,
    ) -> Pin<Box<dyn std::future::Future<Output = ()> + Send + '_>> {
        if !self.interim {
            return Box::pin(std::future::ready(()));
        }
        Box::pin(async move {
            crate::proxy::headers::strip_hop_by_hop(&mut head.headers, false);
            let mut out = Vec::with_capacity(256);
            put_status_line(&mut out, head.status);
            codec::put_headers(&mut out, &head.headers);
            out.extend_from_slice(b"\r\n");
            if let Err(e) = self.io.write_all(&out).await {
                tracing::debug!(error = %e, status = %head.status, "interim response not written");
            }
        })
    }
}
