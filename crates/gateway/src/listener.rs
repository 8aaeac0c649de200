//! Accepting client connections: socket options, the connection limit, TLS, HTTP/1.1 and
//! HTTP/2 (h2c prior knowledge is detected per connection, h2 over TLS by ALPN), client-side
//! timeouts, and graceful drain.
//!
//! HTTP/1 connections are served by the gateway's own engine ([`crate::proxy::h1`]);
//! HTTP/2 connections by hyper.
//!
//! ```no_run
//! use scalewise_gateway::{config::*, listener, metrics::GatewayMetrics, state::Shared};
//! use tokio_util::sync::CancellationToken;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let config = Config::from_backends("127.0.0.1:8080".parse()?, ["127.0.0.1:9001".parse()?],
//!     AlgorithmName::RoundRobin);
//! let shared = Shared::new(config.clone(), GatewayMetrics::new())?;
//! let stop = CancellationToken::new();
//! let mut listening = listener::serve(&config.listeners[0], shared, stop.clone())?;
//! println!("listening on {}", listening.local_addr);
//! stop.cancel(); // stop accepting; open connections finish their requests
//! let drain = std::time::Duration::from_secs(30);
//! if tokio::time::timeout(drain, &mut listening.join).await.is_err() {
//!     listening.close_connections(); // the deadline passed: close what is left
//!     listening.join.await?;
//! }
//! # Ok(()) }
//! ```
use crate::cancel::Cancelled;
use crate::config::ListenerConfig;
use crate::metrics::ClientTlsErrors;
use crate::proxy::body::Activity;
use crate::proxy::h1::server as h1;
use crate::proxy::{self, ConnInfo};
use crate::state::Shared;
use bytes::{Buf, BytesMut};
use hyper::server::conn::http2;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use prometheus_client::metrics::gauge::Gauge;
use socket2::{Domain, Protocol, SockRef, Socket, TcpKeepalive, Type};
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Sleep;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// A running listener.
#[derive(Debug)]
pub struct Listening {
    /// The bound address (useful with port 0).
    pub local_addr: SocketAddr,
    /// Completes after cancellation once every connection has closed.
    pub join: tokio::task::JoinHandle<()>,
    /// Fired by [`Listening::close_connections`].
    close: CancellationToken,
}

impl Listening {
    /// Closes every connection of this listener at once, whatever it is doing (a drain
    /// deadline passed): each connection's task drops its sockets, so clients see the
    /// connection close and backend requests in progress are abandoned. Use after
    /// cancelling the listener's token; `join` then completes promptly.
    pub fn close_connections(&self) {
        self.close.cancel();
    }
}

fn bind(cfg: &ListenerConfig) -> io::Result<TcpListener> {
    let socket = Socket::new(
        Domain::for_address(cfg.addr),
        Type::STREAM,
        Some(Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&cfg.addr.into())?;
    socket.listen(i32::try_from(cfg.backlog).unwrap_or(i32::MAX))?;
    TcpListener::from_std(socket.into())
}

fn tune(stream: &TcpStream, cfg: &ListenerConfig) -> io::Result<()> {
    stream.set_nodelay(cfg.nodelay)?;
    let s = SockRef::from(stream);
    if let Some(idle) = cfg.keepalive {
        s.set_tcp_keepalive(&TcpKeepalive::new().with_time(idle))?;
    }
    if let Some(n) = cfg.recv_buffer_size {
        s.set_recv_buffer_size(n)?;
    }
    if let Some(n) = cfg.send_buffer_size {
        s.set_send_buffer_size(n)?;
    }
    Ok(())
}

/// Client-side timeouts of one connection.
#[derive(Debug, Clone, Copy)]
struct Timeouts {
    header_read: Duration,
    idle: Duration,
}

/// Binds `cfg.addr` and serves it until `cancel` fires, then stops accepting, lets open
/// connections finish the requests they have (HTTP/1 closes after the current response,
/// HTTP/2 sends GOAWAY) and completes `join` when all are closed. Callers that want a drain
/// deadline wrap `join` in a timeout and, when it passes, call
/// [`Listening::close_connections`].
///
/// Socket settings come from `cfg`; everything per request (routes, timeouts, body limit,
/// TLS certificate) comes from the current state in `shared`, looked up by `cfg.name`.
/// Must be called within a Tokio runtime.
///
/// # Errors
/// The address cannot be bound.
pub fn serve(
    cfg: &ListenerConfig,
    shared: Arc<Shared>,
    cancel: CancellationToken,
) -> io::Result<Listening> {
    let listener = bind(cfg)?;
    let local_addr = listener.local_addr()?;
    let cfg = cfg.clone();
    let close = CancellationToken::new();
    let join = tokio::spawn(accept_loop(listener, cfg, shared, cancel, close.clone()));
    Ok(Listening {
        local_addr,
        join,
        close,
    })
}

fn h2_builder(cfg: &ListenerConfig) -> http2::Builder<TokioExecutor> {
    let mut b = http2::Builder::new(TokioExecutor::new());
    b.timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(cfg.max_header_bytes).unwrap_or(u32::MAX))
        .max_concurrent_streams(256)
        // WebSocket over HTTP/2 (RFC 8441), see `proxy::websocket`.
        .enable_connect_protocol();
    b
}

/// What every connection of a listener shares.
struct ConnSetup {
    shared: Arc<Shared>,
    name: Arc<str>,
    /// `gateway_client_connections` of this listener.
    gauge: Gauge,
    /// The listener's drain signal: stop taking requests, finish the ones in progress.
    cancel: CancellationToken,
    /// [`Listening::close_connections`]: drop every connection at once.
    close: CancellationToken,
    h2: http2::Builder<TokioExecutor>,
    http2: bool,
    timeouts: Timeouts,
    h1: Arc<h1::Listener>,
    /// Failed TLS handshakes; resolved at start for a TLS listener, on the first failure
    /// for one a reload made TLS (no series for listeners that never speak TLS).
    tls_errors: std::sync::OnceLock<ClientTlsErrors>,
}

impl ConnSetup {
    fn tls_errors(&self) -> &ClientTlsErrors {
        self.tls_errors
            .get_or_init(|| self.shared.metrics.client_tls_errors(&self.name))
    }
}

/// What the connections of listener `cfg` share.
fn conn_setup(
    cfg: &ListenerConfig,
    shared: Arc<Shared>,
    cancel: CancellationToken,
    close: CancellationToken,
) -> ConnSetup {
    ConnSetup {
        name: Arc::from(cfg.name.as_str()),
        gauge: shared.metrics.client_connections(&cfg.name),
        cancel,
        close,
        h2: h2_builder(cfg),
        http2: cfg.http2,
        timeouts: Timeouts {
            header_read: cfg.header_read_timeout,
            idle: cfg.idle_timeout,
        },
        h1: Arc::new(h1::Listener {
            settings: h1::Settings {
                header_read: cfg.header_read_timeout,
                idle: cfg.idle_timeout,
                max_header_bytes: cfg.max_header_bytes.max(crate::config::MIN_HEADER_BYTES),
            },
            buffers: shared.metrics.client_buffers(&cfg.name),
            draining: std::sync::atomic::AtomicBool::new(false),
        }),
        tls_errors: std::sync::OnceLock::new(),
        shared,
    }
}

/// The task of one accepted connection, holding its slot under `max_connections`.
async fn connection_task(
    stream: TcpStream,
    peer: SocketAddr,
    setup: Arc<ConnSetup>,
    permit: OwnedSemaphorePermit,
) {
    setup.gauge.inc();
    // Dropping the connection's future at `close` drops its sockets: the hard stop
    // at a drain deadline. (HTTP/2 streams and WebSocket relays run on tasks of
    // their own; they end when the connection they belong to is gone.)
    // (`select!` rather than `close.run_until_cancelled(..)`: that async fn takes the
    // connection future by value, and its state machine then holds it twice — 2 KiB
    // more per idle connection, measured with bench/idle_conns.py.) `Cancelled`, not
    // `close.cancelled()`: the select polls it at every wake-up of the connection,
    // several per request, and the token's own future takes two locks per poll.
    tokio::select! {
        () = serve_connection(stream, peer, &setup) => {}
        () = Cancelled::new(&setup.close) => {}
    }
    setup.gauge.dec();
    drop(permit);
}

async fn accept_loop(
    listener: TcpListener,
    cfg: ListenerConfig,
    shared: Arc<Shared>,
    cancel: CancellationToken,
    close: CancellationToken,
) {
    let limit = Arc::new(Semaphore::new(
        cfg.max_connections.clamp(1, Semaphore::MAX_PERMITS),
    ));
    let tracker = TaskTracker::new();
    let setup = Arc::new(conn_setup(&cfg, shared, cancel.clone(), close));
    if cfg.tls.is_some() {
        setup.tls_errors();
    }
    loop {
        // Take a slot before accepting: while all are in use the listener stops accepting
        // and new connections wait in the kernel backlog instead of being reset.
        let permit = tokio::select! {
            biased;
            _ = cancel.cancelled() => break,
            p = limit.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            biased;
            _ = cancel.cancelled() => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE/ENFILE and friends: back off instead of spinning; the listener
                    // keeps running.
                    tracing::warn!(listener = %setup.name, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        if let Err(e) = tune(&stream, &cfg) {
            tracing::debug!(error = %e, "socket options");
        }
        tracker.spawn(connection_task(stream, peer, setup.clone(), permit));
    }
    setup.h1.draining.store(true, Ordering::Relaxed);
    drop(listener);
    tracker.close();
    tracker.wait().await;
}

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Reads until the first bytes tell HTTP/2 prior knowledge from HTTP/1. `None`: the client
/// closed or sent nothing within `wait`.
async fn sniff_h2(stream: &TcpStream, buf: &mut BytesMut, wait: Duration) -> Option<bool> {
    let deadline = h1::after(wait);
    loop {
        // Readable first: the buffer is taken only when there is something to read.
        tokio::time::timeout_at(deadline, stream.readable())
            .await
            .ok()?
            .ok()?;
        if buf.capacity() == 0 {
            buf.reserve(crate::proxy::h1::codec::READ_CHUNK);
        }
        match stream.try_read_buf(buf) {
            Ok(0) => return None,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(_) => return None,
        }
        let n = buf.len().min(H2_PREFACE.len());
        if buf[..n] != H2_PREFACE[..n] {
            return Some(false);
        }
        if n == H2_PREFACE.len() {
            return Some(true);
        }
    }
}

async fn serve_connection(stream: TcpStream, peer: SocketAddr, setup: &ConnSetup) {
    let shared = setup.shared.clone();
    let listener = setup.name.clone();
    let cancel = setup.cancel.clone();
    let (tls, forward_client_cert, trusted) = {
        let state = shared.state.load();
        match state.listener(&listener) {
            Some(l) => (
                l.tls.clone(),
                l.forward_client_cert.clone(),
                // A trusted proxy's X-Forwarded-Client-Cert may be kept; anyone else's never.
                l.trusted_proxies
                    .contains(peer.ip())
                    .then_some(l.xfcc_from_trusted_proxies),
            ),
            None => (None, None, None),
        }
    };
    let Some(acceptor) = tls else {
        let activity = Arc::new(Activity::default());
        let info = Arc::new(ConnInfo {
            shared,
            listener,
            peer,
            activity: activity.clone(),
            forwarding: crate::proxy::headers::Forwarding::new(peer.ip(), false)
                .with_client_cert(None, trusted),
            client_cert: None,
        });
        if !setup.http2 {
            h1::serve(stream, BytesMut::new(), info, setup.h1.clone(), cancel).await;
            return;
        }
        let mut buf = BytesMut::new();
        match sniff_h2(&stream, &mut buf, setup.timeouts.header_read).await {
            None => {}
            Some(false) => {
                h1::serve(stream, buf, info, setup.h1.clone(), cancel).await;
            }
            Some(true) => boxed_h2(stream, buf, info, activity, setup, cancel).await,
        }
        return;
    };
    let client = TlsClient {
        shared,
        listener,
        peer,
        forward_client_cert,
        trusted,
    };
    boxed_tls(acceptor, stream, client, setup, cancel).await;
}

/// A TLS client connection before its handshake: what its [`ConnInfo`] is made of once the
/// client certificate (if any) is known.
struct TlsClient {
    shared: Arc<Shared>,
    listener: Arc<str>,
    peer: SocketAddr,
    /// The XFCC element's format, if the listener forwards client certificates.
    forward_client_cert: Option<Arc<crate::client_cert::XfccFormat>>,
    /// The listener's `xfcc_from_trusted_proxies` if the peer is a trusted proxy.
    trusted: Option<crate::config::TrustedXfcc>,
}

// A task keeps room for its future's largest state for its whole life, and most
// connections are plain HTTP/1: the HTTP/2 and TLS states (hyper's connection, the
// handshake) live in boxes of their own. Built in plain functions, because a future
// moved into `Box::pin` inside an async fn may still take room in the outer one.

type BoxFuture<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

fn boxed_h2<'a, I>(
    io: I,
    prefix: BytesMut,
    info: Arc<ConnInfo>,
    activity: Arc<Activity>,
    setup: &'a ConnSetup,
    cancel: CancellationToken,
) -> BoxFuture<'a>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    Box::pin(serve_h2(io, prefix, info, activity, setup, cancel))
}

fn boxed_tls(
    acceptor: tokio_rustls::TlsAcceptor,
    stream: TcpStream,
    client: TlsClient,
    setup: &ConnSetup,
    cancel: CancellationToken,
) -> BoxFuture<'_> {
    Box::pin(async move {
        let accept = acceptor.accept(stream).into_fallible();
        let s = match tokio::time::timeout(setup.timeouts.header_read, accept).await {
            Ok(Ok(s)) => s,
            Ok(Err((e, tcp))) => {
                let errors = setup.tls_errors();
                if crate::tls::is_client_cert_error(&e) {
                    errors.client_cert.inc();
                    tracing::info!(
                        listener = %client.listener,
                        peer = %client.peer,
                        reason = %e,
                        "client certificate refused"
                    );
                } else {
                    errors.other.inc();
                    tracing::debug!(peer = %client.peer, error = %e, "TLS handshake with client");
                }
                // Closed only now, after counting: a client that saw the close finds the
                // failure in the metrics.
                drop(tcp);
                return;
            }
            Err(_) => {
                setup.tls_errors().timeout.inc();
                return;
            }
        };
        // Parsed and formatted once per connection; every request on it carries the same
        // values.
        let chain = s.get_ref().1.peer_certificates().filter(|c| !c.is_empty());
        let cert = chain.map(|c| Arc::new(crate::client_cert::ClientCert::parse(&c[0])));
        let xfcc = match (&client.forward_client_cert, &cert, chain) {
            (Some(format), Some(cert), Some(chain)) => {
                http::HeaderValue::from_str(&format.element(cert, chain)).ok()
            }
            _ => None,
        };
        let activity = Arc::new(Activity::default());
        let info = Arc::new(ConnInfo {
            forwarding: crate::proxy::headers::Forwarding::new(client.peer.ip(), true)
                .with_client_cert(xfcc, client.trusted),
            client_cert: cert,
            shared: client.shared,
            listener: client.listener,
            peer: client.peer,
            activity: activity.clone(),
        });
        if s.get_ref().1.alpn_protocol() == Some(b"h2") {
            serve_h2(s, BytesMut::new(), info, activity, setup, cancel).await;
        } else {
            h1::serve(s, BytesMut::new(), info, setup.h1.clone(), cancel).await;
        }
    })
}

/// Serves an HTTP/2 connection with hyper; `prefix` holds bytes protocol detection already
/// read from `io` (the start of the preface).
async fn serve_h2<I>(
    io: I,
    prefix: BytesMut,
    info: Arc<ConnInfo>,
    activity: Arc<Activity>,
    setup: &ConnSetup,
    cancel: CancellationToken,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        let info = info.clone();
        async move {
            let (parts, body) = req.into_parts();
            let mut log = Abandoned(crate::logging::AccessEntry::start(
                &parts,
                info.peer,
                info.client_cert.as_ref(),
                access_log(&info),
            ));
            let resp = proxy::handle(hyper::Request::from_parts(parts, body), &info).await;
            Ok::<_, Infallible>(crate::logging::AccessEntry::finish(log.0.take(), resp))
        }
    });
    let io = Watched::new(io, prefix, activity, setup.timeouts);
    let conn = setup.h2.serve_connection(TokioIo::new(io), svc);
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(error = %e, "client connection");
            }
            return;
        }
        // Polled at every wake-up of the connection (see `connection_task`).
        () = Cancelled::new(&cancel) => {}
    }
    conn.as_mut().graceful_shutdown();
    let _ = conn.await;
}

/// An access-log entry that logs 499 if it is dropped unfinished: hyper drops a request's
/// future when its HTTP/2 client resets the stream or goes away (nginx logs those as 499).
struct Abandoned(Option<crate::logging::AccessEntry>);

impl Drop for Abandoned {
    fn drop(&mut self) {
        if let Some(e) = self.0.take() {
            e.abandoned();
        }
    }
}

fn access_log(info: &ConnInfo) -> bool {
    info.shared.state.load().config().log.access_log
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Before the first bytes: the preface must arrive within the header-read timeout.
    Preface,
    /// A request is in progress: no client-side deadline (the upstream one applies).
    Busy,
    /// No request in progress.
    Idle,
}

/// An HTTP/2 client stream (hyper's server reads it), with the header-read timeout for the
/// connection preface and the idle timeout after it. Only these two: a PING or SETTINGS
/// frame from an idle client must not start a clock of its own. HTTP/1 connections are
/// served by the native engine, which keeps its own deadlines.
///
/// Enforced on reads because that is where a slow or idle client shows. While no request
/// is in progress (`Activity` is zero) the connection is idle; a deadline that passes turns
/// the read into a `TimedOut` error and hyper closes the connection. `prefix` holds bytes
/// protocol detection already read; they are read again first.
struct Watched<I> {
    inner: I,
    prefix: BytesMut,
    activity: Arc<Activity>,
    timeouts: Timeouts,
    phase: Phase,
    deadline: Pin<Box<Sleep>>,
}

impl<I> Watched<I> {
    fn new(inner: I, prefix: BytesMut, activity: Arc<Activity>, timeouts: Timeouts) -> Self {
        Self {
            inner,
            prefix,
            activity,
            timeouts,
            phase: Phase::Preface,
            deadline: Box::pin(tokio::time::sleep(timeouts.header_read)),
        }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Watched<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.prefix.is_empty() {
            let n = this.prefix.len().min(buf.remaining());
            buf.put_slice(&this.prefix[..n]);
            this.prefix.advance(n);
            if this.prefix.is_empty() {
                this.prefix = BytesMut::new();
            }
            // The preface has started: the next pending read starts the idle clock.
            this.phase = Phase::Busy;
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        if this.activity.active.load(Ordering::Acquire) > 0 {
            this.phase = Phase::Busy;
            return r;
        }
        match &r {
            Poll::Ready(Ok(())) if buf.filled().len() > before => {
                if this.phase == Phase::Preface {
                    // As above: the next pending read starts the idle clock.
                    this.phase = Phase::Busy;
                }
                r
            }
            Poll::Ready(_) => r,
            Poll::Pending => {
                if this.phase == Phase::Busy {
                    this.phase = Phase::Idle;
                    let at = h1::after(this.timeouts.idle);
                    this.deadline.as_mut().reset(at);
                }
                if this.deadline.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "client timed out",
                    )));
                }
                Poll::Pending
            }
        }
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Watched<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_flush(cx);
        // The last response of a busy spell has just been written out: start the idle clock
        // here, where hyper always passes after a response, instead of waking the task.
        if r.is_ready()
            && this.phase == Phase::Busy
            && this.activity.active.load(Ordering::Acquire) == 0
        {
            this.phase = Phase::Idle;
            let at = h1::after(this.timeouts.idle);
            this.deadline.as_mut().reset(at);
            let _ = this.deadline.as_mut().poll(cx);
        }
        r
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{AlgorithmName, Config};
    use crate::metrics::GatewayMetrics;

    /// The futures of the plain HTTP/1 path, in bytes. Why it matters: a task keeps room for
    /// its future's largest state for its whole life (the connection task: memory per open
    /// connection), and the request pipeline's future is built on the stack and moved into
    /// its box for every request (`boxed_forward`): each of its bytes is copied per request,
    /// and so is every large sub-future moved within it. The bounds are what this code
    /// reaches in the test build on x86_64, with a little room; a change that grows one
    /// past its bound should box the new state (as rare paths are: connect, admission
    /// policies, the request body pump, HTTP/2, TLS, upgrades) or say why not.
    #[tokio::test]
    async fn future_sizes() {
        let config = Config::from_backends(
            "127.0.0.1:0".parse().unwrap(),
            ["127.0.0.1:9".parse().unwrap()],
            AlgorithmName::RoundRobin,
        );
        let shared = Shared::new(config.clone(), GatewayMetrics::new()).unwrap();
        let setup = Arc::new(conn_setup(
            &config.listeners[0],
            shared.clone(),
            CancellationToken::new(),
            CancellationToken::new(),
        ));
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let _client = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (mut stream, peer) = l.accept().await.unwrap();

        let info = Arc::new(ConnInfo {
            shared: shared.clone(),
            listener: setup.name.clone(),
            peer,
            activity: Arc::new(Activity::default()),
            forwarding: crate::proxy::headers::Forwarding::new(peer.ip(), false),
            client_cert: None,
        });
        let (parts, ()) = http::Request::builder()
            .uri("/")
            .header("host", "a")
            .body(())
            .unwrap()
            .into_parts();
        let timer = tokio::time::sleep(Duration::from_secs(1));
        tokio::pin!(timer);
        let forward = h1::forward_future_size(&mut stream, parts, &info, timer.as_mut());

        let serve = std::mem::size_of_val(&h1::serve(
            stream,
            BytesMut::new(),
            info,
            setup.h1.clone(),
            CancellationToken::new(),
        ));
        let (stream, _) = {
            let _c = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
            l.accept().await.unwrap()
        };
        let conn = std::mem::size_of_val(&serve_connection(stream, peer, &setup));
        let (stream, _) = {
            let _c = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
            l.accept().await.unwrap()
        };
        let permit = Arc::new(Semaphore::new(1)).try_acquire_owned().unwrap();
        let task = std::mem::size_of_val(&connection_task(stream, peer, setup, permit));
        println!("forward {forward}, h1::serve {serve}, serve_connection {conn}, task {task}");
        // Were: forward 5256 (the connect, admission and body pump futures inline, the
        // send future held twice by `timeout_on`), task 2552.
        assert!(forward <= 2304, "request pipeline future: {forward} bytes");
        assert!(
            serve <= 2176,
            "HTTP/1 connection loop future: {serve} bytes"
        );
        assert!(conn <= 2432, "connection future: {conn} bytes");
        assert!(task <= 2688, "connection task future: {task} bytes");
    }
}
