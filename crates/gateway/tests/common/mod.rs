//! Test backends (small hyper servers on loopback), a gateway launcher and clients.
#![allow(dead_code)]
pub mod pki;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use scalewise_gateway::config::{AlgorithmName, Config};
use scalewise_gateway::listener::{self, Listening};
use scalewise_gateway::metrics::GatewayMetrics;
use scalewise_gateway::state::Shared;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;

pub type Body = BoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

/// A running test backend.
pub struct Backend {
    pub addr: SocketAddr,
    pub name: &'static str,
    /// Requests seen.
    pub hits: Arc<AtomicUsize>,
    /// TCP connections accepted.
    pub conns: Arc<AtomicUsize>,
    /// `/hang` requests report here when they arrive...
    pub entered: tokio::sync::Mutex<mpsc::UnboundedReceiver<()>>,
    /// ...and answer once this is notified.
    pub release: Arc<Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Backend {
    /// Waits until a `/hang` request has arrived.
    pub async fn wait_entered(&self) {
        self.entered.lock().await.recv().await;
    }
}

fn full(s: impl Into<Bytes>) -> Body {
    Full::new(s.into()).map_err(|e| match e {}).boxed()
}

struct Ctx {
    name: &'static str,
    hits: Arc<AtomicUsize>,
    entered: mpsc::UnboundedSender<()>,
    release: Arc<Notify>,
}

async fn handle(req: Request<Incoming>, ctx: Arc<Ctx>) -> Result<Response<Body>, Infallible> {
    ctx.hits.fetch_add(1, Ordering::SeqCst);
    let path = req.uri().path().to_owned();
    let resp = match path.as_str() {
        // Streams the request body straight back.
        "/echo" => Response::new(req.into_body().map_err(Into::into).boxed()),
        // Reads the whole body, then answers with its length.
        "/sink" => {
            let n = match req.into_body().collect().await {
                Ok(b) => b.to_bytes().len(),
                Err(_) => 0,
            };
            Response::new(full(n.to_string()))
        }
        // `n` bytes in 64 KiB chunks, generated as they are sent.
        p if p.starts_with("/big/") => {
            let n: usize = p[5..].parse().unwrap_or(0);
            let chunks = (0..n.div_ceil(65536)).map(move |i| {
                let len = 65536.min(n - i * 65536);
                Ok::<_, Box<dyn std::error::Error + Send + Sync>>(Frame::data(Bytes::from(
                    vec![b'x'; len],
                )))
            });
            Response::new(BoxBody::new(StreamBody::new(futures_util::stream::iter(
                chunks,
            ))))
        }
        "/hang" => {
            let _ = ctx.entered.send(());
            ctx.release.notified().await;
            Response::new(full("released"))
        }
        p if p.starts_with("/status/") => {
            let code: u16 = p[8..].parse().unwrap_or(500);
            let mut r = Response::new(full("status"));
            *r.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::IM_A_TEAPOT);
            r
        }
        _ => {
            // Reflect what the gateway forwarded.
            let h = req.headers();
            let get = |n: &str| {
                h.get(n)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("-")
                    .to_owned()
            };
            let text = format!(
                "backend={}\nmethod={}\npath={}\nversion={:?}\nhost={}\nxff={}\nxfp={}\nforwarded={}\nrequest-id={}\nconnection={}\nx-secret={}\nx-custom={}\nxfcc={}\n",
                ctx.name,
                req.method(),
                req.uri().path_and_query().map_or("/", |p| p.as_str()),
                req.version(),
                get("host"),
                get("x-forwarded-for"),
                get("x-forwarded-proto"),
                get("forwarded"),
                get("x-request-id"),
                get("connection"),
                get("x-secret"),
                get("x-custom"),
                // Every value, so a duplicate would show.
                h.get_all("x-forwarded-client-cert")
                    .iter()
                    .map(|v| v.to_str().unwrap_or("<not text>"))
                    .collect::<Vec<_>>()
                    .join(" | "),
            );
            let mut r = Response::new(full(text));
            r.headers_mut()
                .insert("x-backend", http::HeaderValue::from_static(ctx.name));
            // A hop-by-hop header the gateway must not pass on.
            r.headers_mut()
                .insert("keep-alive", http::HeaderValue::from_static("timeout=5"));
            r
        }
    };
    Ok(resp)
}

/// Starts a backend answering HTTP/1.1 and h2c.
pub async fn backend(name: &'static str) -> Backend {
    backend_with(name, None).await
}

/// Starts a backend answering HTTP/1.1 and HTTP/2, behind TLS with `tls` (ALPN as the
/// acceptor offers); `conns` counts TCP connections, `hits` requests, so a failed handshake
/// shows as a connection without a hit.
pub async fn backend_with(name: &'static str, tls: Option<tokio_rustls::TlsAcceptor>) -> Backend {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let conns = Arc::new(AtomicUsize::new(0));
    let (tx, rx) = mpsc::unbounded_channel();
    let release = Arc::new(Notify::new());
    let ctx = Arc::new(Ctx {
        name,
        hits: hits.clone(),
        entered: tx,
        release: release.clone(),
    });
    let conns2 = conns.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            conns2.fetch_add(1, Ordering::SeqCst);
            let ctx = ctx.clone();
            let tls = tls.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| handle(req, ctx.clone()));
                let server = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                let _ = match tls {
                    None => {
                        server
                            .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                            .await
                    }
                    Some(acceptor) => match acceptor.accept(stream).await {
                        Ok(s) => {
                            server
                                .serve_connection_with_upgrades(TokioIo::new(s), svc)
                                .await
                        }
                        Err(_) => return,
                    },
                };
            });
        }
    });
    Backend {
        addr,
        name,
        hits,
        conns,
        entered: tokio::sync::Mutex::new(rx),
        release,
        task,
    }
}

/// Starts a WebSocket echo backend (tokio-tungstenite), returns its address.
pub async fn ws_backend() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    use futures_util::{SinkExt, StreamExt};
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                    return;
                };
                while let Some(Ok(msg)) = ws.next().await {
                    if (msg.is_text() || msg.is_binary()) && ws.send(msg).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    (addr, task)
}

/// An address nothing listens on (bound, then closed).
pub async fn dead_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap()
}

/// A running gateway.
pub struct Gateway {
    pub addr: SocketAddr,
    pub shared: Arc<Shared>,
    pub cancel: CancellationToken,
    pub listening: Option<Listening>,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// A one-listener gateway config on an ephemeral port in front of `backends`.
pub fn config(backends: &[SocketAddr]) -> Config {
    Config::from_backends(
        "127.0.0.1:0".parse().unwrap(),
        backends.iter().copied(),
        AlgorithmName::RoundRobin,
    )
}

/// Starts a gateway serving the first listener of `config`.
pub async fn gateway(config: Config) -> Gateway {
    let shared = Shared::new(config.clone(), GatewayMetrics::new()).unwrap();
    let cancel = CancellationToken::new();
    let listening = listener::serve(&config.listeners[0], shared.clone(), cancel.clone()).unwrap();
    Gateway {
        addr: listening.local_addr,
        shared,
        cancel,
        listening: Some(listening),
    }
}

/// The error building the gateway's state from `config` fails with.
pub fn build_error(config: &Config) -> String {
    scalewise_gateway::state::GatewayState::build(config, None, &GatewayMetrics::new())
        .unwrap_err()
        .to_string()
}

/// An HTTP/1.1 client connection.
pub async fn h1(addr: SocketAddr) -> hyper::client::conn::http1::SendRequest<Body> {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(async move {
        let _ = conn.with_upgrades().await;
    });
    tx
}

/// A GET request with a Host header.
pub fn get(path: &str) -> Request<Body> {
    Request::get(path)
        .header("host", "example.test")
        .body(full(Bytes::new()))
        .unwrap()
}

/// Sends `req` on a fresh connection and returns status and body text.
/// An HTTP/2 client connection (prior knowledge or TLS with ALPN h2).
pub async fn h2_client<I>(io: I) -> hyper::client::conn::http2::SendRequest<Body>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (tx, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(io))
        .await
        .unwrap();
    tokio::spawn(conn);
    tx
}

pub async fn send(addr: SocketAddr, req: Request<Body>) -> (StatusCode, http::HeaderMap, String) {
    let mut tx = h1(addr).await;
    let resp = tx.send_request(req).await.unwrap();
    read(resp).await
}

pub async fn read(resp: Response<Incoming>) -> (StatusCode, http::HeaderMap, String) {
    let (parts, body) = resp.into_parts();
    let bytes = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    (
        parts.status,
        parts.headers,
        String::from_utf8_lossy(&bytes).into_owned(),
    )
}

pub fn body(b: impl Into<Bytes>) -> Body {
    full(b)
}

/// Writes raw bytes and returns the status code of the first response line.
pub async fn raw_status(addr: SocketAddr, bytes: &[u8]) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = TcpStream::connect(addr).await.unwrap();
    // The server may answer and close before reading everything; ignore write errors.
    let _ = s.write_all(bytes).await;
    let mut buf = vec![0u8; 1024];
    let mut got = 0;
    while got < 12 {
        match s.read(&mut buf[got..]).await {
            Ok(0) | Err(_) => break,
            Ok(n) => got += n,
        }
    }
    let line = String::from_utf8_lossy(&buf[..got]);
    line.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0)
}
