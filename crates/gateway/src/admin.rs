//! The admin API: a small HTTP/1.1 JSON server on its own listener (loopback by default) for
//! status, backend state, draining, config reload and Prometheus metrics.
//!
//! | method | path | what |
//! |---|---|---|
//! | GET | `/api/status` | version, uptime, listeners, upstream and backend counts |
//! | GET | `/api/backends` | every backend: address (and DNS host name), health, ejections, in-flight, EWMA, weight, draining, breaker |
//! | GET | `/api/policies` | rate limits, route policies, retry budgets, circuit breakers |
//! | POST | `/api/backends/{upstream}/{id or addr}/drain` | stop sending new requests to it |
//! | POST | `/api/backends/{upstream}/{id or addr}/enable` | undo a drain |
//! | POST | `/api/backends/{upstream}/{id or addr}/breaker/{open,disable,reset}` | force a backend's circuit breaker open, disable it, or reset it to closed |
//! | GET | `/api/config` | the running config, secrets redacted |
//! | PUT | `/api/config` | replace the config (TOML or JSON body), validated, then reloaded |
//! | GET | `/metrics` | Prometheus/OpenMetrics text |
//!
//! With a token configured every request needs `Authorization: Bearer <token>`, else 401.
use crate::config_file::Format;
use crate::server::{Controller, ReloadError};
use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Largest `PUT /api/config` body accepted.
const MAX_BODY: usize = 1 << 20;
/// Concurrent admin connections; more wait in the backlog.
const MAX_CONNECTIONS: usize = 64;
/// Time an admin client has to send a request head.
const HEADER_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

type Body = Full<Bytes>;

/// Serves the admin API on `listener` until `shutdown` is cancelled; requests in progress
/// then finish.
pub async fn serve(listener: TcpListener, ctl: Arc<Controller>, shutdown: CancellationToken) {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    // The admin API is for a few operators and scrapers: cap its connections and give each a
    // head deadline so a stuck or hostile local client cannot hold file descriptors.
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    let builder = builder.http1_only();
    loop {
        let permit = tokio::select! {
            () = shutdown.cancelled() => break,
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let stream = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // EMFILE and friends: back off briefly rather than spin.
                    tracing::warn!(error = %e, "admin accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let ctl = ctl.clone();
        let service = hyper::service::service_fn(move |req| {
            let ctl = ctl.clone();
            async move { Ok::<_, std::convert::Infallible>(handle(&ctl, req).await) }
        });
        let conn = builder
            .serve_connection(TokioIo::new(stream), service)
            .into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            let _ = conn.await;
            drop(permit);
        });
    }
    graceful.shutdown().await;
}

/// Answers one admin request.
pub async fn handle(ctl: &Controller, req: Request<Incoming>) -> Response<Body> {
    if let Some(token) = ctl.admin_token() {
        if !authorized(&req, &token) {
            let mut resp = error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                http::HeaderValue::from_static("Bearer"),
            );
            return resp;
        }
    }
    let path = req.uri().path().trim_end_matches('/').to_owned();
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    let method = req.method().clone();
    match segments.as_slice() {
        ["api", "status"] => {
            only_get(&method).unwrap_or_else(|| json(StatusCode::OK, &ctl.status()))
        }
        ["api", "policies"] => {
            only_get(&method).unwrap_or_else(|| json(StatusCode::OK, &ctl.policies()))
        }
        ["api", "backends"] => {
            only_get(&method).unwrap_or_else(|| json(StatusCode::OK, &ctl.backends()))
        }
        ["api", "backends", upstream, backend, action @ ("drain" | "enable")] => {
            if method != Method::POST {
                return not_allowed("POST");
            }
            let id = format!("{upstream}/{}", percent_decode(backend));
            match ctl.set_draining(&id, *action == "drain") {
                Ok(snapshot) => json(StatusCode::OK, &snapshot),
                Err(msg) => error(StatusCode::NOT_FOUND, &msg),
            }
        }
        ["api", "backends", upstream, backend, "breaker", action] => {
            if method != Method::POST {
                return not_allowed("POST");
            }
            let state = ctl.shared().load();
            match crate::policy::set_breaker(&state, upstream, &percent_decode(backend), action) {
                Ok(stats) => json(StatusCode::OK, &stats),
                Err(msg) => error(StatusCode::NOT_FOUND, &msg),
            }
        }
        ["api", "config"] => match method {
            Method::GET | Method::HEAD => json(StatusCode::OK, &ctl.config_redacted()),
            Method::PUT => put_config(ctl, req).await,
            _ => not_allowed("GET, PUT"),
        },
        ["metrics"] => only_get(&method).unwrap_or_else(|| {
            let mut resp = Response::new(Body::from(ctl.metrics_text()));
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                http::HeaderValue::from_static(scalewise::metrics::CONTENT_TYPE),
            );
            resp
        }),
        _ => error(StatusCode::NOT_FOUND, "no such admin endpoint"),
    }
}

async fn put_config(ctl: &Controller, req: Request<Incoming>) -> Response<Body> {
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "config body unreadable or larger than 1 MiB",
            )
        }
    };
    let Ok(text) = std::str::from_utf8(&body) else {
        return error(StatusCode::BAD_REQUEST, "config body is not UTF-8");
    };
    let format = Format::sniff(content_type.as_deref(), text);
    match ctl.reload_from_text(text, format).await {
        Ok(()) => json(StatusCode::OK, &serde_json::json!({ "reloaded": true })),
        Err(ReloadError::Invalid(errs)) => {
            let list: Vec<String> = errs.0.iter().map(ToString::to_string).collect();
            json(
                StatusCode::BAD_REQUEST,
                &serde_json::json!({ "error": errs.to_string(), "errors": list }),
            )
        }
        Err(e @ ReloadError::Fixed(_)) => error(StatusCode::CONFLICT, &e.to_string()),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

fn authorized<B>(req: &Request<B>, token: &str) -> bool {
    let Some(given) = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return false;
    };
    // Compare without an early exit so the time taken says nothing about the prefix matched.
    let (a, b) = (given.trim().as_bytes(), token.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn only_get(method: &Method) -> Option<Response<Body>> {
    (method != Method::GET && method != Method::HEAD).then(|| not_allowed("GET"))
}

fn not_allowed(allow: &'static str) -> Response<Body> {
    let mut resp = error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed here");
    resp.headers_mut()
        .insert(header::ALLOW, http::HeaderValue::from_static(allow));
    resp
}

fn json(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    let mut body = serde_json::to_vec_pretty(value).unwrap_or_default();
    body.push(b'\n');
    let mut resp = Response::new(Body::from(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    resp
}

fn error(status: StatusCode, message: &str) -> Response<Body> {
    json(status, &serde_json::json!({ "error": message }))
}

/// Decodes `%3A` and friends so `127.0.0.1%3A9001` works as well as `127.0.0.1:9001`.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            if let Some(v) = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
