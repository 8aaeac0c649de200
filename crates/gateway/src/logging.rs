//! Logs: `tracing` events printed as human-readable lines or one JSON object per line, and the
//! access log, one event per proxied request on the target [`ACCESS_TARGET`].
//!
//! The access log goes through `tracing` like everything else so it shares the format, the
//! output and the filter; `RUST_LOG=access=off` silences it without a config change.
use crate::config::LogFormat;
use std::net::SocketAddr;
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
    /// Time from request head received to response head sent.
    pub duration: Duration,
    /// The backend that answered (`upstream/addr`), if any did.
    pub backend: Option<&'a str>,
    /// Response body bytes, when known.
    pub bytes: Option<u64>,
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
        "{} {} {}",
        r.method,
        r.path,
        r.status,
    );
}
