//! `scalewise gateway`: an L7 load-balancing reverse proxy for HTTP/1.1, HTTP/2 and
//! WebSocket, built on the [`scalewise`] library.
//!
//! The data path (listeners, routing, balancing, proxying) reads one immutable
//! `GatewayState` that a reload swaps atomically; the operations side ([`server`]) starts
//! everything, reloads on SIGHUP or an admin `PUT /api/config`, serves the [`admin`] API and
//! drains on SIGTERM/SIGINT. See `docs/gateway.md`.
#![forbid(unsafe_code)]

pub mod admin;
mod cancel;
pub mod client_cert;
pub mod client_ip;
pub mod config;
pub mod config_file;
pub mod dns;
pub mod listener;
pub mod logging;
pub mod metrics;
pub mod policy;
pub mod proxy;
pub mod route;
pub mod server;
pub mod state;
pub mod tls;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Command-line arguments of `scalewise gateway`.
///
/// Either a one-line start (`--listen` and at least one `--backend`) or `--config FILE`.
/// The admin and log flags override the file's `[admin]` and `[log]` sections, on start and on
/// every reload.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Address to accept client connections on (one-line start).
    #[arg(
        long,
        value_name = "ADDR",
        required_unless_present = "config",
        conflicts_with = "config"
    )]
    pub listen: Option<SocketAddr>,
    /// A backend: `ip:port` or `host:port` (a DNS name, resolved at start and every 30s),
    /// optionally `https://host:port` for TLS to it (verified against the system's roots
    /// and the host name); repeat for several, all with or all without `https://`
    /// (one-line start).
    #[arg(
        long = "backend",
        value_name = "ADDR",
        required_unless_present = "config",
        conflicts_with = "config",
        value_parser = parse_backend
    )]
    pub backends: Vec<CliBackend>,
    /// Balancing algorithm of the one-line start: round_robin, weighted_round_robin,
    /// least_conn, peak_ewma, p2c, random, ring_hash, maglev.
    #[arg(long, value_name = "NAME", conflicts_with = "config", value_parser = parse_algorithm)]
    pub algorithm: Option<config::AlgorithmName>,
    /// Runtime worker threads (default: one per core). 1 runs a single-threaded runtime.
    #[arg(long, value_name = "N", value_parser = parse_workers)]
    pub workers: Option<usize>,
    /// Configuration file: TOML, or JSON if the name ends in `.json`.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Admin API address, or `off` to disable it [default: 127.0.0.1:9090].
    #[arg(long, value_name = "ADDR|off", value_parser = parse_admin)]
    pub admin: Option<AdminAddr>,
    /// Bearer token the admin API requires.
    #[arg(long, value_name = "TOKEN")]
    pub admin_token: Option<String>,
    /// Log format.
    #[arg(long, value_name = "FORMAT", value_parser = parse_log_format)]
    pub log_format: Option<config::LogFormat>,
    /// Log one line per proxied request.
    #[arg(long)]
    pub access_log: bool,
    /// Rate limit every route per client IP, locally (`100/s`, `6000/min`); routes with
    /// their own `rate_limit` keep it.
    #[arg(long, value_name = "RATE", value_parser = parse_rate)]
    pub rate_limit: Option<scalewise::ratelimit::Rate>,
    /// How long a shutdown waits for in-flight requests before closing them
    /// [default: `server.shutdown_timeout` of the file, else 30s].
    #[arg(long, value_name = "DURATION", value_parser = parse_shutdown_timeout)]
    pub shutdown_timeout: Option<Duration>,
}

/// One `--backend`: an address, and whether it was written `https://ADDR`.
///
/// ```
/// use scalewise_gateway::CliBackend;
///
/// let b: CliBackend = "https://api.internal:8443".parse().unwrap();
/// assert!(b.tls);
/// assert_eq!(b.addr.to_string(), "api.internal:8443");
/// assert!(!"127.0.0.1:9001".parse::<CliBackend>().unwrap().tls);
/// assert!("ftp://x:1".parse::<CliBackend>().is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CliBackend {
    /// Where the backend is.
    pub addr: config::BackendAddr,
    /// Connect with TLS.
    pub tls: bool,
}

impl std::str::FromStr for CliBackend {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (tls, rest) = match s.split_once("://") {
            None => (false, s),
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("https") => (true, rest),
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => (false, rest),
            Some((scheme, _)) => {
                return Err(format!(
                    "`{s}`: unknown scheme `{scheme}`, expected http:// or https://"
                ))
            }
        };
        // `https://host:port/` is how nginx users write it; a path means nothing here.
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        Ok(Self {
            addr: rest.parse()?,
            tls,
        })
    }
}

impl Args {
    /// The configuration of the one-line start (`--listen`, `--backend`, `--algorithm`),
    /// before environment overrides: one upstream `default`, with TLS if the backends are
    /// `https://`.
    ///
    /// # Errors
    /// No `--listen`, or backends that mix `https://` and plain addresses.
    pub fn command_line_config(&self) -> anyhow::Result<config::Config> {
        let listen = self
            .listen
            .ok_or_else(|| anyhow::anyhow!("--listen is required without --config"))?;
        let tls = self.backends.iter().any(|b| b.tls);
        if self.backends.iter().any(|b| b.tls != tls) {
            anyhow::bail!(
                "--backend: either every backend is https://host:port or none is \
                 (TLS is set per upstream)"
            );
        }
        let mut built = config::Config::from_backend_addrs(
            listen,
            self.backends.iter().map(|b| b.addr.clone()),
            self.algorithm.unwrap_or_default(),
        );
        if tls {
            // An IP backend needs SCALEWISE_UPSTREAMS__DEFAULT__TLS__SERVER_NAME (or
            // __INSECURE_SKIP_VERIFY); the validation error says which key.
            for u in built.upstreams.values_mut() {
                u.tls = Some(config::UpstreamTlsConfig::new());
            }
        }
        Ok(built)
    }
}

/// The `--admin` setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminAddr {
    /// Serve the admin API here.
    At(SocketAddr),
    /// No admin API.
    Off,
}

fn parse_algorithm(s: &str) -> Result<config::AlgorithmName, String> {
    s.parse()
}

fn parse_backend(s: &str) -> Result<CliBackend, String> {
    s.parse()
}

fn parse_shutdown_timeout(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| format!("`{s}`: {e}"))?;
    if d > config::MAX_DURATION {
        return Err(format!("`{s}` is longer than 30 days"));
    }
    Ok(d)
}

fn parse_rate(s: &str) -> Result<scalewise::ratelimit::Rate, String> {
    s.parse().map_err(|e| format!("{e}"))
}

fn parse_workers(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if (1..=1024).contains(&n) => Ok(n),
        _ => Err(format!("`{s}` is not a thread count from 1 to 1024")),
    }
}

fn parse_admin(s: &str) -> Result<AdminAddr, String> {
    if s.eq_ignore_ascii_case("off") {
        return Ok(AdminAddr::Off);
    }
    s.parse()
        .map(AdminAddr::At)
        .map_err(|_| format!("`{s}` is neither an address like 127.0.0.1:9090 nor `off`"))
}

fn parse_log_format(s: &str) -> Result<config::LogFormat, String> {
    match s {
        "human" => Ok(config::LogFormat::Human),
        "json" => Ok(config::LogFormat::Json),
        _ => Err(format!("`{s}` is not a log format: expected human or json")),
    }
}

/// Runs the gateway until SIGTERM or SIGINT, reloading on SIGHUP.
///
/// # Errors
/// Invalid configuration, or a listener that cannot bind.
pub async fn run(args: Args) -> anyhow::Result<()> {
    server::run(args).await
}
