//! Active health checks: a tokio task probing every backend of an upstream on a timer.
use super::{ActiveCheckConfig, CheckKind};
use crate::balance::{Endpoint, HealthStatus, Upstream};
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How a check reaches a backend: plain TCP ([`Tcp`]), or a stream the caller layers on
/// it (the gateway's TLS to TLS backends), so checks travel the way requests do.
///
/// A `tcp` check passes once `connect` succeeds, so a transport that also handshakes makes
/// the handshake part of that check.
pub trait CheckTransport: Send + Sync + 'static {
    /// The connected stream.
    type Stream: AsyncRead + AsyncWrite + Unpin + Send;

    /// Connects to `addr`; an error counts as [`CheckError::Connect`].
    fn connect(&self, addr: SocketAddr) -> impl Future<Output = io::Result<Self::Stream>> + Send;

    /// The `Host` of HTTP checks to `addr` when the check config sets none; `None` (the
    /// default) means the address itself. A TLS transport returns the name it verifies, so
    /// a name-based virtual host answers the check as it answers requests.
    fn host(&self, addr: SocketAddr) -> Option<String> {
        let _ = addr;
        None
    }
}

/// Checks over plain TCP.
#[derive(Debug, Clone, Copy, Default)]
pub struct Tcp;

impl CheckTransport for Tcp {
    type Stream = TcpStream;

    fn connect(&self, addr: SocketAddr) -> impl Future<Output = io::Result<TcpStream>> + Send {
        TcpStream::connect(addr)
    }
}

/// Why one probe failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CheckError {
    /// The TCP connection failed.
    #[error("connect failed: {0}")]
    Connect(io::Error),
    /// Reading or writing the check request failed.
    #[error("i/o error: {0}")]
    Io(io::Error),
    /// No (complete) answer within the timeout.
    #[error("timed out")]
    Timeout,
    /// The answer was not an HTTP/1.x status line.
    #[error("malformed response")]
    BadResponse,
    /// A status outside the expected range.
    #[error("unexpected status {0}")]
    Status(u16),
}

// Enough for any sane status line; a backend sending more without CRLF is broken.
const MAX_STATUS_LINE: usize = 1024;

/// Probes one backend once over plain TCP.
///
/// # Errors
/// Why the backend counts as failing this check.
pub async fn probe(addr: SocketAddr, cfg: &ActiveCheckConfig) -> Result<(), CheckError> {
    probe_with(&Tcp, addr, cfg).await
}

/// Probes one backend once over `transport`.
///
/// # Errors
/// Why the backend counts as failing this check.
pub async fn probe_with<T: CheckTransport>(
    transport: &T,
    addr: SocketAddr,
    cfg: &ActiveCheckConfig,
) -> Result<(), CheckError> {
    match tokio::time::timeout(cfg.timeout, probe_inner(transport, addr, cfg)).await {
        Ok(r) => r,
        Err(_) => Err(CheckError::Timeout),
    }
}

async fn probe_inner<T: CheckTransport>(
    transport: &T,
    addr: SocketAddr,
    cfg: &ActiveCheckConfig,
) -> Result<(), CheckError> {
    let mut stream = transport.connect(addr).await.map_err(CheckError::Connect)?;
    if cfg.kind == CheckKind::Tcp {
        return Ok(());
    }
    // Control characters would let a config value inject header lines.
    let clean = |s: &str| s.chars().filter(|c| !c.is_control()).collect::<String>();
    let host = cfg
        .host
        .clone()
        .or_else(|| transport.host(addr))
        .unwrap_or_else(|| addr.to_string());
    let host = clean(&host);
    let path = clean(&cfg.path);
    let path = if path.starts_with('/') {
        path
    } else {
        format!("/{path}")
    };
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: scalewise-health\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    );
    stream
        .write_all(req.as_bytes())
        .await
        .map_err(CheckError::Io)?;
    let mut buf = Vec::with_capacity(256);
    let mut chunk = [0u8; 256];
    let line_end = loop {
        if let Some(p) = buf.windows(2).position(|w| w == b"\r\n") {
            break p;
        }
        if buf.len() > MAX_STATUS_LINE {
            return Err(CheckError::BadResponse);
        }
        let n = stream.read(&mut chunk).await.map_err(CheckError::Io)?;
        if n == 0 {
            return Err(CheckError::BadResponse);
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let status = parse_status_line(&buf[..line_end]).ok_or(CheckError::BadResponse)?;
    if cfg.expected_status.contains(status) {
        Ok(())
    } else {
        Err(CheckError::Status(status))
    }
}

/// `HTTP/1.1 200 OK` -> 200.
fn parse_status_line(line: &[u8]) -> Option<u16> {
    let mut parts = line.split(|&b| b == b' ');
    let version = parts.next()?;
    if !version.starts_with(b"HTTP/1.") {
        return None;
    }
    let code = parts.next()?;
    if code.len() != 3 || !code.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(code).ok()?.parse().ok()
}

/// Applies one probe result to an endpoint's rise/fall counters and health.
fn record(
    upstream: &Upstream,
    e: &Endpoint,
    result: Result<(), CheckError>,
    cfg: &ActiveCheckConfig,
) {
    let prev = e.health();
    let next = {
        let mut st = e.active_state();
        match &result {
            Ok(()) => {
                st.successes = st.successes.saturating_add(1);
                st.failures = 0;
                st.last_error = None;
            }
            Err(err) => {
                st.failures = st.failures.saturating_add(1);
                st.successes = 0;
                st.last_error = Some(err.to_string());
            }
        }
        match prev {
            // The first verdict on a new backend is taken at once (Envoy does the same):
            // waiting `rise` intervals would delay every start-up for no safety gain.
            HealthStatus::Unknown if result.is_ok() => HealthStatus::Healthy,
            HealthStatus::Unknown => HealthStatus::Unhealthy,
            HealthStatus::Healthy if st.failures >= cfg.fall.max(1) => HealthStatus::Unhealthy,
            HealthStatus::Unhealthy if st.successes >= cfg.rise.max(1) => HealthStatus::Healthy,
            s => s,
        }
    };
    if next != prev {
        e.set_health(next);
        match &result {
            Ok(()) => {
                tracing::info!(upstream = upstream.name(), backend = %e.addr(), "backend healthy")
            }
            Err(err) => {
                tracing::warn!(upstream = upstream.name(), backend = %e.addr(), error = %err, "backend unhealthy")
            }
        }
    }
}

/// Probes every endpoint of `upstream` once over plain TCP, concurrently, and applies the
/// results.
pub async fn check_round(upstream: &Upstream, cfg: &ActiveCheckConfig) {
    check_round_with(&Tcp, upstream, cfg).await;
}

/// [`check_round`] over `transport`.
pub async fn check_round_with<T: CheckTransport>(
    transport: &T,
    upstream: &Upstream,
    cfg: &ActiveCheckConfig,
) {
    let endpoints = upstream.endpoints();
    let results = futures_util::future::join_all(
        endpoints
            .iter()
            .map(|e| probe_with(transport, e.addr(), cfg)),
    )
    .await;
    for (e, r) in endpoints.iter().zip(results) {
        record(upstream, e, r, cfg);
    }
}

/// A running active-check task. Dropping it stops the checks.
///
/// ```no_run
/// # async fn demo() {
/// use scalewise::balance::{EndpointConfig, Upstream};
/// use scalewise::health::{ActiveCheckConfig, ActiveHealthChecks, HealthConfig};
///
/// let cfg = ActiveCheckConfig::http("/healthz");
/// let up = Upstream::builder("api")
///     .health(HealthConfig { active: Some(cfg.clone()), ..Default::default() })
///     .endpoint(EndpointConfig::new("127.0.0.1:9001".parse().unwrap()))
///     .build();
/// let checks = ActiveHealthChecks::spawn(up.clone(), cfg);
/// let mut rounds = checks.rounds();
/// rounds.changed().await.unwrap(); // the first round has run
/// # }
/// ```
#[derive(Debug)]
pub struct ActiveHealthChecks {
    task: JoinHandle<()>,
    rounds: watch::Receiver<u64>,
}

impl ActiveHealthChecks {
    /// Starts checking `upstream` every `config.interval` (the first round at once) over
    /// plain TCP. Each round probes the endpoints current at that moment, so reloads are
    /// followed.
    ///
    /// # Panics
    /// Outside a tokio runtime.
    pub fn spawn(upstream: Upstream, config: ActiveCheckConfig) -> Self {
        Self::spawn_with(Tcp, upstream, config)
    }

    /// [`ActiveHealthChecks::spawn`] over `transport`.
    ///
    /// # Panics
    /// Outside a tokio runtime.
    pub fn spawn_with<T: CheckTransport>(
        transport: T,
        upstream: Upstream,
        config: ActiveCheckConfig,
    ) -> Self {
        let (tx, rounds) = watch::channel(0u64);
        let config = Arc::new(config);
        let task = tokio::spawn(async move {
            let mut interval =
                tokio::time::interval(config.interval.max(std::time::Duration::from_millis(1)));
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut round = 0u64;
            loop {
                interval.tick().await;
                check_round_with(&transport, &upstream, &config).await;
                round += 1;
                tx.send_replace(round);
            }
        });
        Self { task, rounds }
    }

    /// A receiver of the number of completed rounds; `changed()` resolves after each round.
    pub fn rounds(&self) -> watch::Receiver<u64> {
        self.rounds.clone()
    }

    /// Stops the checks.
    pub fn stop(self) {}
}

impl Drop for ActiveHealthChecks {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::parse_status_line;

    #[test]
    fn status_lines() {
        assert_eq!(parse_status_line(b"HTTP/1.1 200 OK"), Some(200));
        assert_eq!(parse_status_line(b"HTTP/1.0 503"), Some(503));
        assert_eq!(parse_status_line(b"SSH-2.0"), None);
        assert_eq!(parse_status_line(b"HTTP/1.1 2000 x"), None);
        assert_eq!(parse_status_line(b""), None);
    }
}
