//! Connections to one backend: our HTTP/1.1 client's pool ([`super::h1::client`]) or one
//! multiplexed HTTP/2 client (hyper's), the per-backend concurrency limit with its bounded
//! wait queue, and the backend's metrics.
//!
//! Both kinds are reached through [`BackendClient::send`], which tells a failed connect
//! (always safe to retry) from a failed request (which may have reached the backend). A
//! failed TLS handshake is a failed connect: nothing of the request was sent.
use super::body::{BoxError, ChannelBody, ForwardBody, OwnedBody, UpstreamBody};
use super::connect::{ClientStream, Target};
use super::h1::client as h1;
use crate::config::{UpstreamConfig, UpstreamProtocol};
use crate::metrics::BackendMetrics;
use crate::tls::{BackendTls, HandshakeError};
pub(crate) use h1::Outgoing;
use http::{Request, Response, Uri, Version};
use http_body_util::BodyExt as _;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The settings a backend's client is built from; an unchanged set lets a reload keep the
/// client and its warm connections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendSettings {
    target: Target,
    protocol: UpstreamProtocol,
    max_connections: Option<u32>,
    queue_size: usize,
    queue_timeout: Duration,
    max_idle: usize,
    idle_timeout: Duration,
}

impl BackendSettings {
    /// The settings of backend `addr` of upstream `u`, with `tls` if the upstream has it.
    pub fn new(addr: SocketAddr, u: &UpstreamConfig, tls: Option<BackendTls>) -> Self {
        Self {
            target: Target {
                addr,
                timeout: u.connect_timeout,
                tls,
            },
            protocol: u.protocol,
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

type H2Client = Client<Connector, OwnedBody>;

enum Transport {
    H1(Arc<h1::Pool>),
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

/// Connects to one fixed backend whatever the URI says, so the URI can carry the client's
/// authority (HTTP/2 `:authority`) while the socket goes to the backend.
#[derive(Clone)]
struct Connector {
    target: Arc<Target>,
}

impl tower::Service<http::Uri> for Connector {
    type Response = TokioIo<ClientStream>;
    type Error = std::io::Error;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = std::io::Result<TokioIo<ClientStream>>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: http::Uri) -> Self::Future {
        let target = self.target.clone();
        Box::pin(async move { target.connect().await.map(TokioIo::new) })
    }
}

impl BackendClient {
    pub(crate) fn new(settings: BackendSettings, metrics: BackendMetrics) -> Self {
        let transport = match settings.protocol {
            UpstreamProtocol::Http1 => Transport::H1(Arc::new(h1::Pool::new(
                settings.max_idle,
                settings.idle_timeout,
            ))),
            UpstreamProtocol::Http2 => Transport::H2(Box::new(
                Client::builder(TokioExecutor::new())
                    .http2_only(true)
                    .pool_idle_timeout(settings.idle_timeout)
                    .timer(hyper_util::rt::TokioTimer::new())
                    .build(Connector {
                        target: Arc::new(settings.target.clone()),
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
        self.settings.target.addr
    }

    /// Counts a failed connect, and logs a failed TLS handshake with its reason (a wrong CA
    /// or name is a configuration problem someone has to see, unlike a refused connect).
    fn connect_failed(&self, err: &(dyn std::error::Error + 'static)) {
        self.metrics.connect_errors.inc();
        if let Some(h) = HandshakeError::find(err) {
            self.metrics.tls_handshake_errors.inc();
            tracing::warn!(
                backend = %h.backend,
                server_name = %h.server_name,
                reason = %h.reason,
                "TLS handshake with backend failed"
            );
        }
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

    /// Sends the request described by `o` with `body`; returns the response head and its
    /// streaming body. `now` is the caller's clock reading, reused for the pool's idle
    /// bookkeeping.
    pub(crate) async fn send<B: ForwardBody>(
        &self,
        o: &Outgoing<'_>,
        body: &mut B,
        has_body: bool,
        now: std::time::Instant,
    ) -> Result<Response<UpstreamBody>, SendError> {
        match &self.transport {
            Transport::H1(pool) => {
                match h1::send(pool, &self.settings.target, o, body, has_body, now).await {
                    Ok((head, body)) => {
                        Ok(Response::from_parts(head.parts, UpstreamBody::H1(body)))
                    }
                    Err(Ok(e)) => {
                        self.connect_failed(&e);
                        Err(SendError::Connect(e))
                    }
                    Err(Err(e)) => Err(SendError::Request(e)),
                }
            }
            // Boxed (built in a plain fn, see `listener.rs`): hyper's client future and the
            // body pump are large, and most backends are HTTP/1.
            Transport::H2(client) => boxed_h2(self, client, o, body, has_body).await,
        }
    }

    async fn send_h2<B: ForwardBody>(
        &self,
        client: &H2Client,
        o: &Outgoing<'_>,
        body: &mut B,
        has_body: bool,
    ) -> Result<Response<UpstreamBody>, SendError> {
        // hyper's client owns its body; a body that borrows the client connection (native
        // HTTP/1 engine) is pumped to it through a channel by this task.
        let (owned, pump) = match body.take_owned() {
            Some(b) => (b, None),
            None if !has_body => (
                OwnedBody::new(http_body_util::Empty::new().map_err(|e| match e {})),
                None,
            ),
            None => {
                let (tx, rx) = tokio::sync::mpsc::channel(4);
                (OwnedBody::new(ChannelBody(rx)), Some(tx))
            }
        };
        let req = h2_request(o, owned, self.settings.target.tls.is_some());
        let sent = client.request(req);
        let result = match pump {
            None => sent.await,
            Some(tx) => {
                let pump = async move {
                    while let Some(frame) = body.frame().await {
                        let failed = frame.is_err();
                        if tx.send(frame).await.is_err() || failed {
                            break;
                        }
                    }
                };
                tokio::join!(sent, pump).0
            }
        };
        match result {
            Ok(resp) => {
                let (parts, incoming) = resp.into_parts();
                Ok(Response::from_parts(parts, UpstreamBody::H2(incoming)))
            }
            Err(e) if e.is_connect() => {
                self.connect_failed(&e);
                Err(SendError::Connect(std::io::Error::other(e)))
            }
            Err(e) => Err(SendError::Request(Box::new(e))),
        }
    }
}

type SendFuture<'a> = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<Response<UpstreamBody>, SendError>> + Send + 'a>,
>;

fn boxed_h2<'a, B: ForwardBody>(
    backend: &'a BackendClient,
    client: &'a H2Client,
    o: &'a Outgoing<'a>,
    body: &'a mut B,
    has_body: bool,
) -> SendFuture<'a> {
    Box::pin(backend.send_h2(client, o, body, has_body))
}

/// The request for hyper's HTTP/2 client: a header map of the end-to-end headers, the
/// client's authority as `:authority`, and `:scheme` as the hop to the backend is (`https`
/// over TLS).
fn h2_request(o: &Outgoing<'_>, body: OwnedBody, tls: bool) -> Request<OwnedBody> {
    let parts = o.parts;
    let mut h = super::headers::copy_end_to_end(&parts.headers, false);
    super::headers::add_forwarded_with(&mut h, o.forwarding);
    h.insert(super::headers::X_REQUEST_ID.clone(), o.request_id.clone());
    h.remove(http::header::EXPECT);
    let host = parts
        .uri
        .authority()
        .map(|a| a.as_str().to_owned())
        .or_else(|| {
            h.get(http::header::HOST)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        })
        .unwrap_or_else(|| "localhost".to_owned());
    h.remove(http::header::HOST);
    let path = parts
        .uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
    let uri = Uri::builder()
        .scheme(if tls { "https" } else { "http" })
        .authority(host)
        .path_and_query(path)
        .build()
        .unwrap_or_else(|_| Uri::from_static("/"));
    let mut req = Request::new(body);
    *req.method_mut() = parts.method.clone();
    *req.uri_mut() = uri;
    *req.version_mut() = Version::HTTP_2;
    *req.headers_mut() = h;
    req
}
