//! Helpers for the operations tests: loopback backends, a tiny HTTP client, gateway start-up.
#![allow(dead_code)]

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use scalewise_gateway::config::Config;
use scalewise_gateway::server::{Gateway, StartOptions};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};

/// A loopback HTTP backend answering every request with its own name.
pub struct Backend {
    pub addr: SocketAddr,
    pub name: String,
    pub hits: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub async fn backend(name: &str) -> Backend {
    backend_at(name, "127.0.0.1:0".parse().unwrap()).await
}

/// [`backend`] bound to `addr` (e.g. another loopback address with the same port).
pub async fn backend_at(name: &str, addr: SocketAddr) -> Backend {
    let listener = TcpListener::bind(addr)
        .await
        .unwrap_or_else(|e| panic!("bind {addr}: {e}"));
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicU64::new(0));
    let body: Bytes = Bytes::from(name.to_owned());
    let h = hits.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let body = body.clone();
            let h = h.clone();
            tokio::spawn(async move {
                let svc =
                    hyper::service::service_fn(move |_req: Request<hyper::body::Incoming>| {
                        h.fetch_add(1, Ordering::Relaxed);
                        let body = body.clone();
                        async move { Ok::<_, Infallible>(Response::new(Full::new(body))) }
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Backend {
        addr,
        name: name.to_owned(),
        hits,
        task,
    }
}

/// One HTTP/1.1 request on a fresh connection.
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Result<(StatusCode, String), String> {
    let stream = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr.to_string());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(Full::new(Bytes::from(body.to_owned()))).unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(10), send.send_request(req))
        .await
        .map_err(|_| "timed out".to_string())?
        .map_err(|e| e.to_string())?;
    let status = resp.status();
    let bytes = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, String::from_utf8_lossy(&bytes).into_owned()))
}

pub async fn get(addr: SocketAddr, path: &str) -> (StatusCode, String) {
    request(addr, "GET", path, &[], "").await.unwrap()
}

pub async fn get_json(addr: SocketAddr, path: &str) -> serde_json::Value {
    let (status, body) = get(addr, path).await;
    assert_eq!(status, StatusCode::OK, "{path}: {body}");
    serde_json::from_str(&body).unwrap()
}

/// A TOML config: one listener on an ephemeral port, admin on an ephemeral port, upstream
/// `app` of `backends`, plus `extra` lines appended.
pub fn toml_config(backends: &[SocketAddr], extra: &str) -> String {
    let list: Vec<String> = backends
        .iter()
        .map(|a| format!("{{ addr = \"{a}\" }}"))
        .collect();
    format!(
        r#"[[listeners]]
name = "main"
addr = "127.0.0.1:0"

[[routes]]
upstream = "app"

[upstreams.app]
backends = [{}]

[admin]
addr = "127.0.0.1:0"
{extra}"#,
        list.join(", ")
    )
}

pub fn parse(text: &str) -> Config {
    scalewise_gateway::config_file::parse_config(
        text,
        scalewise_gateway::config_file::Format::Toml,
        "test.toml",
        [],
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

pub async fn start(config: Config, options: StartOptions) -> (Gateway, SocketAddr, SocketAddr) {
    let gw = Gateway::start(config, options).await.unwrap();
    let listen = gw.listener_addrs()[0].1;
    let admin = gw.admin_addr().unwrap();
    (gw, listen, admin)
}

/// Bodies (backend names) of `n` sequential requests through the gateway.
pub async fn names(listen: SocketAddr, n: usize) -> Vec<String> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let (status, body) = get(listen, "/").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        out.push(body);
    }
    out
}

/// A fresh scratch directory for config files.
pub fn scratch_dir(test: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("scalewise-ops-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
