//! In-process test servers with controllable latency, stalls and failures.
#![allow(dead_code)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};

/// Behaviour switches shared by all connections of one server.
#[derive(Debug, Default)]
pub struct State {
    /// Requests seen.
    pub count: AtomicU64,
    /// Connections accepted (plain server only).
    pub conns: AtomicU64,
    /// Requests that came over HTTP/2.
    pub h2: AtomicU64,
    /// The request with this 1-based number stalls for `stall_ms` (0 = never).
    pub stall_at: AtomicU64,
    pub stall_ms: AtomicU64,
    /// Signalled (one permit) when request number `notify_at` arrives.
    pub notify_at: AtomicU64,
    pub reached: tokio::sync::Notify,
    /// Requests seen by `/every/K` (counted apart from the others, so its answers are exact
    /// whatever else a scenario requests).
    pub every: AtomicU64,
    /// `/hold` requests wait until [`State::release`]; afterwards `/hold` answers at once.
    released: AtomicBool,
    release: tokio::sync::Notify,
    /// `/hold` requests that had to wait (answered 202; those that did not, 200).
    pub held: AtomicU64,
    held_more: tokio::sync::Notify,
}

impl State {
    /// Waits until `n` `/hold` requests are being held.
    pub async fn held(&self, n: u64) {
        while self.held.load(Ordering::SeqCst) < n {
            // `notify_one` keeps a permit when nobody waits, so an increment between the check
            // and this wait still wakes it.
            self.held_more.notified().await;
        }
    }

    /// Answers every held `/hold` request, and every later one at once.
    pub fn release(&self) {
        self.released.store(true, Ordering::SeqCst);
        self.release.notify_waiters();
    }

    async fn hold(&self) -> bool {
        let mut waited = false;
        loop {
            // Register before checking the flag, so a release in between is not missed.
            let notified = self.release.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.released.load(Ordering::SeqCst) {
                return waited;
            }
            if !waited {
                waited = true;
                self.held.fetch_add(1, Ordering::SeqCst);
                self.held_more.notify_one();
            }
            notified.await;
        }
    }
}

async fn handle(
    req: Request<hyper::body::Incoming>,
    st: Arc<State>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    use http_body_util::BodyExt;
    let n = st.count.fetch_add(1, Ordering::SeqCst) + 1;
    if req.version() == hyper::Version::HTTP_2 {
        st.h2.fetch_add(1, Ordering::SeqCst);
    }
    if n == st.notify_at.load(Ordering::SeqCst) {
        st.reached.notify_one();
    }
    let stall_at = st.stall_at.load(Ordering::SeqCst);
    if stall_at != 0 && n == stall_at {
        tokio::time::sleep(Duration::from_millis(st.stall_ms.load(Ordering::SeqCst))).await;
    }
    let path = req.uri().path().to_string();
    let auth = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let resp = |code: u16, body: String| {
        Response::builder()
            .status(code)
            .header("x-request", n.to_string())
            .body(Full::new(Bytes::from(body)))
            .unwrap()
    };
    Ok(match parts.as_slice() {
        ["delay", ms] => {
            let ms: u64 = ms.parse().unwrap_or(0);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            resp(200, "ok".into())
        }
        ["status", code] => resp(code.parse().unwrap_or(500), "status".into()),
        ["hold"] => {
            let waited = st.hold().await;
            resp(if waited { 202 } else { 200 }, "held".into())
        }
        // JSON `{"ok":true,"n":N,"items":[{"id":7}]}`, except that every K-th request to this
        // route gets `{"ok":false,"n":N}`.
        ["every", k] => {
            let k: u64 = k.parse().unwrap_or(1).max(1);
            let m = st.every.fetch_add(1, Ordering::SeqCst) + 1;
            let body = if m % k == 0 {
                serde_json::json!({"ok": false, "n": m})
            } else {
                serde_json::json!({"ok": true, "n": m, "items": [{"id": 7}]})
            };
            let mut r = resp(200, body.to_string());
            r.headers_mut().insert(
                "content-type",
                hyper::header::HeaderValue::from_static("application/json"),
            );
            r
        }
        ["login"] => {
            let user: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            let name = user.get("user").and_then(|u| u.as_str()).unwrap_or("anon");
            resp(200, serde_json::json!({"token": format!("tok-{name}"), "items": [{"id": 7}, {"id": 8}]}).to_string())
        }
        ["me"] => match auth.as_deref() {
            Some(a) if a.starts_with("Bearer tok-") => {
                resp(200, a.trim_start_matches("Bearer ").to_string())
            }
            _ => resp(401, "no".into()),
        },
        ["item", id] if *id == "7" => resp(200, "item7".into()),
        ["item", _] => resp(404, "missing".into()),
        _ => resp(200, "hello".into()),
    })
}

/// Starts an HTTP/1.1 + h2c server on loopback.
pub async fn server() -> (SocketAddr, Arc<State>) {
    let st = Arc::new(State::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let state = st.clone();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = listener.accept().await else {
                continue;
            };
            state.conns.fetch_add(1, Ordering::SeqCst);
            let st = state.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| handle(req, st.clone()));
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    (addr, st)
}

/// One WebSocket session: echoes every data message; a client that sends `subscribe` instead
/// gets 1000 timestamped messages, 5 ms apart.
async fn ws_session<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(s: S) {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let Ok(mut ws) = tokio_tungstenite::accept_async(s).await else {
        return;
    };
    while let Some(Ok(msg)) = ws.next().await {
        match msg {
            Message::Text(t) if t == "subscribe" => {
                for i in 0..1000u32 {
                    let ts = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .unwrap()
                        .as_micros();
                    let m = format!("{{\"seq\":{i},\"ts_us\":{ts}}}");
                    if ws.send(Message::Text(m)).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
            Message::Text(_) | Message::Binary(_) => {
                let Ok(()) = ws.send(msg).await else { return };
            }
            _ => {}
        }
    }
}

/// A WebSocket server on loopback (see [`ws_session`]).
pub async fn ws_server() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(ws_session(s));
        }
    });
    addr
}

/// A WebSocket server on loopback that runs `session` on each connection after a successful
/// handshake: for servers that misbehave in one particular way.
pub async fn ws_server_with<F, Fut>(session: F) -> SocketAddr
where
    F: Fn(tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let session = Arc::new(session);
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = listener.accept().await else {
                continue;
            };
            let session = session.clone();
            tokio::spawn(async move {
                if let Ok(ws) = tokio_tungstenite::accept_async(s).await {
                    session(ws).await;
                }
            });
        }
    });
    addr
}

/// A chat server on loopback: the upgrade needs `?token=tok-…` in the URL (401 otherwise);
/// the server greets with `{"type":"welcome"}` and answers each `{"say":TEXT}` with
/// `{"type":"said","id":7,"from":TOKEN,"text":TEXT}` — except `{"say":"silence"}`, which gets
/// no answer at all.
pub async fn chat_server() -> SocketAddr {
    chat_server_counting().await.0
}

/// What a [`chat_server_counting`] saw.
#[derive(Debug, Default)]
pub struct Chat {
    /// WebSocket connections accepted.
    pub opened: std::sync::atomic::AtomicUsize,
    /// `{"say":"silence"}` messages received (they get no answer).
    pub silences: AtomicU64,
    silenced: tokio::sync::Notify,
}

impl Chat {
    /// Waits until `n` `silence` messages have arrived.
    pub async fn silences(&self, n: u64) {
        while self.silences.load(Ordering::SeqCst) < n {
            // `notify_one` keeps a permit when nobody waits: an arrival between the check and
            // this wait still wakes it.
            self.silenced.notified().await;
        }
    }
}

/// [`chat_server`], also counting what it saw.
pub async fn chat_server_counting() -> (SocketAddr, Arc<Chat>) {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
    use tokio_tungstenite::tungstenite::Message;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let count = Arc::new(Chat::default());
    let counted = count.clone();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = listener.accept().await else {
                continue;
            };
            let opened = counted.clone();
            tokio::spawn(async move {
                let mut token = String::new();
                // The callback type is tungstenite's; its error response is large by design.
                #[allow(clippy::result_large_err)]
                let check = |req: &Request, resp: Response| -> Result<Response, ErrorResponse> {
                    let t = req
                        .uri()
                        .query()
                        .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("token=")))
                        .filter(|t| t.starts_with("tok-"));
                    match t {
                        Some(t) => {
                            token = t.to_string();
                            Ok(resp)
                        }
                        None => {
                            let mut no = ErrorResponse::new(Some("token required".into()));
                            *no.status_mut() = hyper::StatusCode::UNAUTHORIZED;
                            Err(no)
                        }
                    }
                };
                let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(s, check).await else {
                    return;
                };
                opened.opened.fetch_add(1, Ordering::SeqCst);
                let hello = serde_json::json!({"type": "welcome"}).to_string();
                if ws.send(Message::Text(hello)).await.is_err() {
                    return;
                }
                while let Some(Ok(msg)) = ws.next().await {
                    let Message::Text(t) = msg else { continue };
                    let v: serde_json::Value = serde_json::from_str(&t).unwrap_or_default();
                    let say = v.get("say").and_then(|s| s.as_str()).unwrap_or_default();
                    if say == "silence" {
                        opened.silences.fetch_add(1, Ordering::SeqCst);
                        opened.silenced.notify_one();
                        continue;
                    }
                    let reply =
                        serde_json::json!({"type": "said", "id": 7, "from": token, "text": say});
                    if ws.send(Message::Text(reply.to_string())).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, count)
}

/// A self-signed certificate for 127.0.0.1 (PEM) and a TLS acceptor offering `alpn`.
fn acceptor(alpn: Vec<Vec<u8>>) -> (tokio_rustls::TlsAcceptor, String) {
    let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    let pem = ck.cert.pem();
    let cert = ck.cert.der().clone();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(ck.key_pair.serialize_der().into());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .unwrap();
    config.alpn_protocols = alpn;
    (tokio_rustls::TlsAcceptor::from(Arc::new(config)), pem)
}

/// A WebSocket server over TLS; returns the address and the certificate in PEM.
pub async fn wss_server() -> (SocketAddr, String) {
    let (acceptor, pem) = acceptor(vec![b"http/1.1".to_vec()]);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = listener.accept().await else {
                continue;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                if let Ok(tls) = acceptor.accept(s).await {
                    ws_session(tls).await;
                }
            });
        }
    });
    (addr, pem)
}

/// A unique temporary file path.
pub fn temp_path(name: &str) -> std::path::PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::SeqCst);
    std::env::temp_dir().join(format!("scalewise-load-{}-{n}-{name}", std::process::id()))
}

/// A loopback port with nothing listening.
pub fn dead_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// An HTTPS server (HTTP/1.1 and HTTP/2 by ALPN) with a fresh self-signed certificate for
/// 127.0.0.1; returns the address and the certificate in PEM.
pub async fn tls_server() -> (SocketAddr, String) {
    let (acceptor, pem) = acceptor(vec![b"h2".to_vec(), b"http/1.1".to_vec()]);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let st = Arc::new(State::default());
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = listener.accept().await else {
                continue;
            };
            let acceptor = acceptor.clone();
            let st = st.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(s).await else {
                    return;
                };
                let svc = hyper::service::service_fn(move |req| handle(req, st.clone()));
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    (addr, pem)
}
