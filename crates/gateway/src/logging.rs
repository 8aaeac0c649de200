//! Logs: `tracing` events printed as human-readable lines or one JSON object per line, and the
//! access log, one event per proxied request on the target [`ACCESS_TARGET`].
//!
//! The access log goes through `tracing` like everything else so it shares the format, the
//! output and the filter; `RUST_LOG=access=off` silences it without a config change.
use crate::client_cert::ClientCert;
use crate::config::LogFormat;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tracing_subscriber::EnvFilter;

/// `tracing` target of access-log events.
pub const ACCESS_TARGET: &str = "access";

/// Installs the global subscriber. `level` is an env-filter directive (`info`,
/// `scalewise_gateway=debug`); `RUST_LOG`, when set, wins. Calling it again (tests, reloads)
/// leaves the first subscriber in place.
///
/// # Errors
/// `level` is not a valid filter.
pub fn init(format: LogFormat, level: &str) -> Result<(), String> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(env) if !env.is_empty() => EnvFilter::try_new(env),
        _ => EnvFilter::try_new(level),
    }
    .map_err(|e| format!("log.level `{level}` is not a valid filter: {e}"))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // Err means a subscriber is already installed, which is fine.
    let _ = match format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    Ok(())
}

/// One proxied request, as the access log records it.
#[derive(Debug, Clone)]
pub struct AccessRecord<'a> {
    /// Request id (`X-Request-Id`).
    pub request_id: &'a str,
    /// The client's address.
    pub client: Option<SocketAddr>,
    /// Request method.
    pub method: &'a str,
    /// Request path and query.
    pub path: &'a str,
    /// Response status sent to the client.
    pub status: u16,
    /// Time from request head received to response head sent (HTTP/2) or to the response
    /// body written (HTTP/1).
    pub duration: Duration,
    /// The backend that answered (`upstream/addr`), if any did.
    pub backend: Option<&'a str>,
    /// Response body bytes: those written (HTTP/1), or the `Content-Length` (HTTP/2).
    pub bytes: Option<u64>,
    /// The subject DN (RFC 4514) of the client certificate the TLS handshake verified.
    pub client_cert_subject: Option<&'a str>,
    /// The SHA-256 (lower-case hex) of that certificate, as in `X-Forwarded-Client-Cert`'s
    /// `Hash`.
    pub client_cert_hash: Option<&'a str>,
}

/// Emits one access-log event.
pub fn access(r: &AccessRecord<'_>) {
    tracing::info!(
        target: ACCESS_TARGET,
        request_id = r.request_id,
        client = r.client.map(tracing::field::display),
        method = r.method,
        path = r.path,
        status = r.status,
        duration_ms = r.duration.as_secs_f64() * 1000.0,
        backend = r.backend,
        bytes = r.bytes,
        client_cert_subject = r.client_cert_subject,
        client_cert_hash = r.client_cert_hash,
        "{} {} {}",
        r.method,
        r.path,
        r.status,
    );
}

/// Put into a response's extensions by the proxy to name the backend that answered
/// (`upstream/addr`); the access log prints it when present.
#[derive(Debug, Clone)]
pub struct AnsweredBy(pub String);

/// Put into a local answer's extensions when the client went away while its request body
/// was being forwarded: the access log then says 499 (nginx's "client closed request"),
/// whatever status the unread answer carried.
#[derive(Debug, Clone, Copy)]
pub struct ClientClosed;

/// The status the access log shows for requests whose client went away.
const CLIENT_CLOSED: u16 = 499;

/// An access-log entry in progress: what is known when the request head arrives.
/// `None` when the access log is off, so a disabled log costs one branch per request.
#[derive(Debug)]
pub struct AccessEntry {
    started: std::time::Instant,
    client: SocketAddr,
    method: http::Method,
    path: String,
    request_id: Option<String>,
    client_cert: Option<Arc<ClientCert>>,
}

impl AccessEntry {
    /// Records the request head if `enabled` and the `access` target is not filtered out;
    /// `client_cert` is the certificate the client's TLS handshake verified, if any.
    pub fn start(
        req: &http::request::Parts,
        client: SocketAddr,
        client_cert: Option<&Arc<ClientCert>>,
        enabled: bool,
    ) -> Option<Self> {
        if !enabled || !tracing::enabled!(target: ACCESS_TARGET, tracing::Level::INFO) {
            return None;
        }
        Some(Self {
            started: std::time::Instant::now(),
            client,
            method: req.method.clone(),
            path: req
                .uri
                .path_and_query()
                .map_or_else(|| "/".to_owned(), ToString::to_string),
            request_id: header_str(&req.headers, "x-request-id"),
            client_cert: client_cert.cloned(),
        })
    }

    /// Logs the entry once the response head is ready, and passes the response through
    /// (HTTP/2 clients, whose bodies hyper writes). The byte count is the response's
    /// `Content-Length`, when it has one.
    pub fn finish<B>(entry: Option<Self>, resp: http::Response<B>) -> http::Response<B> {
        if let Some(e) = entry {
            let bytes = header_str(resp.headers(), "content-length").and_then(|v| v.parse().ok());
            e.log(resp.status(), resp.headers(), resp.extensions(), bytes);
        }
        resp
    }

    /// Logs the entry of a request abandoned before its answer was ready (an HTTP/2 client
    /// reset the stream or closed the connection, and the request was dropped) as 499.
    pub fn abandoned(self) {
        let status =
            http::StatusCode::from_u16(CLIENT_CLOSED).unwrap_or(http::StatusCode::BAD_REQUEST);
        self.log(
            status,
            &http::HeaderMap::new(),
            &http::Extensions::new(),
            Some(0),
        );
    }

    /// Logs the entry after the response body has been written (the native HTTP/1
    /// engine), with the body bytes actually sent.
    pub fn finish_sent(
        self,
        status: http::StatusCode,
        headers: &http::HeaderMap,
        extensions: &http::Extensions,
        bytes: u64,
    ) {
        self.log(status, headers, extensions, Some(bytes));
    }

    fn log(
        self,
        status: http::StatusCode,
        headers: &http::HeaderMap,
        extensions: &http::Extensions,
        bytes: Option<u64>,
    ) {
        let request_id = self
            .request_id
            .or_else(|| header_str(headers, "x-request-id"))
            .unwrap_or_default();
        let backend = extensions.get::<AnsweredBy>().map(|b| b.0.as_str());
        access(&AccessRecord {
            request_id: &request_id,
            client: Some(self.client),
            method: self.method.as_str(),
            path: &self.path,
            status: if extensions.get::<ClientClosed>().is_some() {
                CLIENT_CLOSED
            } else {
                status.as_u16()
            },
            duration: self.started.elapsed(),
            backend,
            bytes,
            client_cert_subject: self.client_cert.as_ref().and_then(|c| c.subject.as_deref()),
            client_cert_hash: self.client_cert.as_ref().map(|c| c.hash.as_str()),
        });
    }
}

fn header_str(h: &http::HeaderMap, name: &str) -> Option<String> {
    h.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned)
}
