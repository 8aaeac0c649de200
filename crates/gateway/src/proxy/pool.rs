//! Connections to one backend: a small LIFO pool of HTTP/1.1 connections (or one multiplexed
//! HTTP/2 client), the per-backend concurrency limit with its bounded wait queue, and the
//! backend's metrics.
//!
//! Why an own HTTP/1 pool instead of hyper-util's legacy client: the legacy client keys its
//! pool by URI authority behind a global mutex and wraps every request in several layers of
//! futures; one pool per backend handing out `SendRequest`s directly was measurably faster in
//! an earlier prototype, and lets a failed connect be told apart from a failed request (only
//! the former is always safe to retry).
use super::body::{BoxError, RequestBody};
use crate::config::{UpstreamConfig, UpstreamProtocol};
use crate::metrics::BackendMetrics;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The settings a backend's client is built from; an unchanged set lets a reload keep the
/// client and its warm connections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendSettings {
    addr: SocketAddr,
    protocol: UpstreamProtocol,
    connect_timeout: Duration,
    max_connections: Option<u32>,
    queue_size: usize,
    queue_timeout: Duration,
    max_idle: usize,
    idle_timeout: Duration,
}

impl BackendSettings {
    /// The settings of backend `addr` of upstream `u`.
    pub fn new(addr: SocketAddr, u: &UpstreamConfig) -> Self {
        Self {
            addr,
            protocol: u.protocol,
            connect_timeout: u.connect_timeout,
            max_connections: u.max_connections_per_backend,
            queue_size: u.queue_size,
            queue_timeout: u.queue_timeout,
            max_idle: u.pool_idle_per_backend,
            idle_timeout: u.pool_idle_timeout,
        }
    }
}

/// Why a request could not be handed to a backend.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SendError {
    /// TCP connect failed or timed out: nothing was sent.
    #[error("connect: {0}")]
    Connect(#[source] std::io::Error),
    /// The request failed on an established connection; it may have reached the backend.
    #[error("request: {0}")]
    Request(#[source] BoxError),
}

/// Why the backend's wait queue turned a request away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum QueueError {
    Full,
    Timeout,
}

type H1Conn = http1::Connection<TokioIo<TcpStream>, RequestBody>;

struct Idle {
    tx: http1::SendRequest<RequestBody>,
    conn: H1Conn,
    since: Instant,
}

struct H1Pool {
    idle: Mutex<Vec<Idle>>,
}

type H2Client = Client<Connector, RequestBody>;

enum Transport {
    H1(Arc<H1Pool>),
    H2(Box<H2Client>),
}

struct Limiter {
    sem: Arc<Semaphore>,
    waiting: AtomicUsize,
}

/// One backend's client side.
pub struct BackendClient {
    settings: BackendSettings,
    transport: Transport,
    limiter: Option<Limiter>,
    pub(crate) metrics: BackendMetrics,
}

impl std::fmt::Debug for BackendClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackendClient")
            .field("settings", &self.settings)
            .finish()
    }
}

/// An HTTP/1 connection lent out for one request; [`Pooled::release`] returns it.
///
/// The connection's I/O future is not spawned on a task of its own: whoever holds the
/// connection drives it ([`Pooled::poll_conn`]) — the request while waiting for the response
/// head, the response body while streaming. Client connection, backend connection and both
/// bodies then run on one task, which saves two task wake-ups per request; idle pooled
/// connections cost nothing until they are checked out again.
pub(crate) struct Pooled {
    tx: http1::SendRequest<RequestBody>,
    /// `None` once the connection future has completed (closed).
    conn: Option<H1Conn>,
    pool: Weak<H1Pool>,
    max_idle: usize,
}

impl Pooled {
    /// Makes progress on the backend connection's reads and writes.
    pub(crate) fn poll_conn(&mut self, cx: &mut Context<'_>) {
        if let Some(c) = self.conn.as_mut() {
            if Pin::new(c).poll(cx).is_ready() {
                self.conn = None;
            }
        }
    }

    pub(crate) fn release(self) {
        let Some(conn) = self.conn else { return };
        if let Some(pool) = self.pool.upgrade() {
            if let Ok(mut idle) = pool.idle.lock() {
                if idle.len() < self.max_idle {
                    idle.push(Idle {
                        tx: self.tx,
                        conn,
                        since: Instant::now(),
                    });
                }
            }
        }
    }

    /// Sends `req`, driving the connection until the response head (or an error) arrives.
    async fn send(
        &mut self,
        req: Request<RequestBody>,
    ) -> Result<Response<Incoming>, hyper::client::conn::TrySendError<Request<RequestBody>>> {
        let fut = self.tx.try_send_request(req);
        let mut fut = std::pin::pin!(fut);
        std::future::poll_fn(|cx| {
            self.poll_conn(cx);
            fut.as_mut().poll(cx)
        })
        .await
    }
}

/// Connects to one fixed address whatever the URI says, so the URI can carry the client's
/// authority (HTTP/2 `:authority`) while the socket goes to the backend.
#[derive(Clone)]
struct Connector {
    addr: SocketAddr,
    timeout: Duration,
}

impl tower::Service<http::Uri> for Connector {
    type Response = TokioIo<TcpStream>;
    type Error = std::io::Error;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = std::io::Result<TokioIo<TcpStream>>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: http::Uri) -> Self::Future {
        let (addr, timeout) = (self.addr, self.timeout);
        Box::pin(async move { connect(addr, timeout).await.map(TokioIo::new) })
    }
}

async fn connect(addr: SocketAddr, timeout: Duration) -> std::io::Result<TcpStream> {
    let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))??;
    stream.set_nodelay(true)?;
    Ok(stream)
}

impl BackendClient {
    pub(crate) fn new(settings: BackendSettings, metrics: BackendMetrics) -> Self {
        let transport = match settings.protocol {
            UpstreamProtocol::Http1 => Transport::H1(Arc::new(H1Pool {
                idle: Mutex::new(Vec::new()),
            })),
            UpstreamProtocol::Http2 => Transport::H2(Box::new(
                Client::builder(TokioExecutor::new())
                    .http2_only(true)
                    .pool_idle_timeout(settings.idle_timeout)
                    .timer(hyper_util::rt::TokioTimer::new())
                    .build(Connector {
                        addr: settings.addr,
                        timeout: settings.connect_timeout,
                    }),
            )),
        };
        let limiter = settings.max_connections.map(|n| Limiter {
            sem: Arc::new(Semaphore::new(n as usize)),
            waiting: AtomicUsize::new(0),
        });
        Self {
            settings,
            transport,
            limiter,
            metrics,
        }
    }

    pub(crate) fn settings(&self) -> &BackendSettings {
        &self.settings
    }

    /// The backend's address.
    pub fn addr(&self) -> SocketAddr {
        self.settings.addr
    }

    /// Whether requests to this backend go over HTTP/2.
    pub(crate) fn is_h2(&self) -> bool {
        matches!(self.transport, Transport::H2(_))
    }

    /// A slot without waiting: `Some` when there is no limit or a slot is free, `None` when
    /// the caller must [`acquire`](Self::acquire) (and possibly queue).
    pub(crate) fn acquire_now(&self) -> Option<Result<Option<OwnedSemaphorePermit>, QueueError>> {
        match &self.limiter {
            None => Some(Ok(None)),
            Some(l) => l.sem.clone().try_acquire_owned().ok().map(|p| Ok(Some(p))),
        }
    }

    /// Waits for a slot under `max_connections_per_backend`, if configured.
    pub(crate) async fn acquire(&self) -> Result<Option<OwnedSemaphorePermit>, QueueError> {
        let Some(l) = &self.limiter else {
            return Ok(None);
        };
        if let Ok(p) = l.sem.clone().try_acquire_owned() {
            return Ok(Some(p));
        }
        if l.waiting.fetch_add(1, Ordering::AcqRel) >= self.settings.queue_size {
            l.waiting.fetch_sub(1, Ordering::AcqRel);
            return Err(QueueError::Full);
        }
        let r =
            tokio::time::timeout(self.settings.queue_timeout, l.sem.clone().acquire_owned()).await;
        l.waiting.fetch_sub(1, Ordering::AcqRel);
        match r {
            // The semaphore is never closed.
            Ok(Ok(p)) => Ok(Some(p)),
            _ => Err(QueueError::Timeout),
        }
    }

    /// Sends `req`; on HTTP/1 also returns the connection to release after the body.
    pub(crate) async fn send(
        &self,
        req: Request<RequestBody>,
        upgrade: bool,
    ) -> Result<(Response<Incoming>, Option<Pooled>), SendError> {
        match &self.transport {
            Transport::H2(client) => match client.request(req).await {
                Ok(resp) => Ok((resp, None)),
                Err(e) if e.is_connect() => {
                    self.metrics.connect_errors.inc();
                    Err(SendError::Connect(std::io::Error::other(e)))
                }
                Err(e) => Err(SendError::Request(Box::new(e))),
            },
            Transport::H1(pool) if upgrade => {
                // Upgraded connections leave the pool for good; their I/O runs on its own
                // task so the upgrade can complete after the response head.
                let (mut tx, conn) = self.connect_h1().await?;
                tokio::spawn(async move {
                    // Errors here are the backend hanging up; the tunnel reports them.
                    let _ = conn.with_upgrades().await;
                });
                let _ = pool;
                match tx.send_request(req).await {
                    Ok(resp) => Ok((resp, None)),
                    Err(e) => Err(SendError::Request(Box::new(e))),
                }
            }
            Transport::H1(pool) => {
                let (mut pooled, reused) = match self.checkout(pool).await {
                    Some(p) => (p, true),
                    None => {
                        let (tx, conn) = self.connect_h1().await?;
                        (self.pooled(pool, tx, conn), false)
                    }
                };
                // A pooled connection may have been closed by the backend while idle; if
                // hyper hands the request back unsent, one fresh connection gets it.
                let req = match pooled.send(req).await {
                    Ok(resp) => return Ok((resp, Some(pooled))),
                    Err(mut e) => match e.take_message() {
                        Some(back) if reused => back,
                        _ => return Err(SendError::Request(Box::new(e.into_error()))),
                    },
                };
                let (tx, conn) = self.connect_h1().await?;
                let mut pooled = self.pooled(pool, tx, conn);
                match pooled.send(req).await {
                    Ok(resp) => Ok((resp, Some(pooled))),
                    Err(e) => Err(SendError::Request(Box::new(e.into_error()))),
                }
            }
        }
    }

    fn pooled(
        &self,
        pool: &Arc<H1Pool>,
        tx: http1::SendRequest<RequestBody>,
        conn: H1Conn,
    ) -> Pooled {
        Pooled {
            tx,
            conn: Some(conn),
            pool: Arc::downgrade(pool),
            max_idle: self.settings.max_idle,
        }
    }

    async fn checkout(&self, pool: &Arc<H1Pool>) -> Option<Pooled> {
        loop {
            let idle = pool.idle.lock().ok()?.pop()?;
            if idle.since.elapsed() > self.settings.idle_timeout || idle.tx.is_closed() {
                continue;
            }
            let mut p = self.pooled(pool, idle.tx, idle.conn);
            // One poll lets the connection finish its previous exchange (and notice a close
            // by the backend while idle); then it must want the next request.
            let ready = std::future::poll_fn(|cx| {
                p.poll_conn(cx);
                Poll::Ready(p.conn.is_some() && matches!(p.tx.poll_ready(cx), Poll::Ready(Ok(()))))
            })
            .await;
            if ready {
                return Some(p);
            }
        }
    }

    async fn connect_h1(&self) -> Result<(http1::SendRequest<RequestBody>, H1Conn), SendError> {
        let stream = connect(self.settings.addr, self.settings.connect_timeout)
            .await
            .map_err(|e| {
                self.metrics.connect_errors.inc();
                SendError::Connect(e)
            })?;
        let (tx, conn) = http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|e| SendError::Request(Box::new(e)))?;
        Ok((tx, conn))
    }
}
