//! The gateway's configuration: plain serde types for every setting, their defaults, and the
//! semantic checks serde cannot express ([`Config::validate`]).
//!
//! Reading files, environment overrides and turning errors into messages that name the file
//! live with the command-line front end; this module only knows the shape of the data. Every
//! struct rejects unknown keys so a typo is an error rather than a silently ignored setting.
//! Durations are humantime strings (`"250ms"`, `"5s"`, `"1m 30s"`).
//!
//! ```
//! use scalewise_gateway::config::Config;
//!
//! let config: Config = toml::from_str(r#"
//!     [[listeners]]
//!     name = "public"
//!     addr = "127.0.0.1:8080"
//!
//!     [[routes]]
//!     path_prefix = "/api"
//!     upstream = "api"
//!
//!     [upstreams.api]
//!     algorithm = "least_conn"
//!     backends = [{ addr = "127.0.0.1:9001" }, { addr = "127.0.0.1:9002", weight = 3 }]
//! "#).unwrap();
//! config.validate().unwrap();
//! assert_eq!(config.upstreams["api"].backends[1].weight, 3);
//! ```
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

/// The whole gateway configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Sockets that accept client connections.
    #[serde(default)]
    pub listeners: Vec<ListenerConfig>,
    /// Request routing rules, tried in order; the first match wins.
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
    /// Named backend groups.
    #[serde(default)]
    pub upstreams: BTreeMap<String, UpstreamConfig>,
    /// The admin API.
    #[serde(default)]
    pub admin: AdminConfig,
    /// Logging.
    #[serde(default)]
    pub log: LogConfig,
    /// Process-level settings (`[server]`).
    #[serde(default)]
    pub server: ServerConfig,
    /// Named rate limits that routes refer to (`routes[].rate_limit`); see
    /// docs/gateway-policies.md.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub rate_limits: BTreeMap<String, crate::policy::RateLimitSpec>,
}

/// One listening socket (`[[listeners]]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    /// Name that routes refer to (`routes[].listener`). Unique.
    #[serde(default = "defaults::listener_name")]
    pub name: String,
    /// Address to bind.
    pub addr: SocketAddr,
    /// Serve TLS with this certificate; ALPN offers `h2` (if `http2`) and `http/1.1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsConfig>,
    /// Accept HTTP/2: over TLS via ALPN, in clear text (h2c) by detecting the prior-knowledge
    /// preface on each connection.
    #[serde(default = "defaults::yes")]
    pub http2: bool,
    /// Maximum concurrent client connections; while full, the listener stops accepting (the
    /// kernel backlog holds new connections) instead of failing.
    #[serde(default = "defaults::max_connections")]
    pub max_connections: usize,
    /// Listen backlog.
    #[serde(default = "defaults::backlog")]
    pub backlog: u32,
    /// `TCP_NODELAY` on accepted connections.
    #[serde(default = "defaults::yes")]
    pub nodelay: bool,
    /// TCP keepalive idle time on accepted connections; absent disables keepalive probes.
    #[serde(
        default = "defaults::tcp_keepalive",
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub keepalive: Option<Duration>,
    /// `SO_RCVBUF` for accepted connections; absent keeps the OS default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recv_buffer_size: Option<usize>,
    /// `SO_SNDBUF` for accepted connections; absent keeps the OS default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub send_buffer_size: Option<usize>,
    /// Time a client has to send a complete request head (HTTP/1); then the connection closes
    /// (408 if nothing of the next request was answered yet).
    #[serde(default = "defaults::header_read_timeout", with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// An idle keep-alive connection (no request in progress) is closed after this.
    #[serde(default = "defaults::idle_timeout", with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Time the upstream has to answer with a response head, per request (504 after);
    /// a route's `timeout` overrides it.
    #[serde(default = "defaults::request_timeout", with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Largest request head (request line plus headers) accepted; larger gets 431.
    /// At least 8192.
    #[serde(default = "defaults::max_header_bytes")]
    pub max_header_bytes: usize,
    /// Largest request body accepted; a larger `Content-Length` gets 413 before anything is
    /// forwarded, a streamed body that grows past it is cut off. Absent means unlimited.
    #[serde(default = "defaults::max_body_bytes")]
    pub max_body_bytes: Option<u64>,
    /// Proxies (CIDRs like `10.0.0.0/8`, or addresses) whose `X-Forwarded-For` is believed:
    /// for a request from one of them, rate-limit keys and `client_ip` hashing use the
    /// right-most untrusted address of that header instead of the peer (see
    /// [`crate::client_ip::client_ip`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trusted_proxies: Vec<crate::client_ip::Cidr>,
    /// What an `X-Forwarded-Client-Cert` header sent by one of `trusted_proxies` becomes
    /// (Envoy's `forward_client_cert_details`). From any other peer the header is always
    /// removed, whatever this says.
    #[serde(default, skip_serializing_if = "TrustedXfcc::is_replace")]
    pub xfcc_from_trusted_proxies: TrustedXfcc,
}

/// What a listener does with the `X-Forwarded-Client-Cert` header of a request whose peer is
/// one of its `trusted_proxies` (`listeners[].xfcc_from_trusted_proxies`). Requests from
/// other peers always get [`TrustedXfcc::Replace`]: a client cannot speak for a certificate
/// it did not present.
///
/// ```
/// use scalewise_gateway::config::{Config, TrustedXfcc};
///
/// let config: Config = toml::from_str(r#"
///     [[listeners]]
///     addr = "0.0.0.0:8080"
///     trusted_proxies = ["10.20.0.0/16"]    # the edge proxies terminating client TLS
///     xfcc_from_trusted_proxies = "forward"  # their X-Forwarded-Client-Cert passes
///     [[routes]]
///     upstream = "api"
///     [upstreams.api]
///     backends = [{ addr = "10.0.0.5:8080" }]
/// "#).unwrap();
/// config.validate().unwrap();
/// assert_eq!(config.listeners[0].xfcc_from_trusted_proxies, TrustedXfcc::Forward);
///
/// // Without trusted proxies there is nobody to keep the header from.
/// let mut bad = config.clone();
/// bad.listeners[0].trusted_proxies.clear();
/// let errs = bad.validate().unwrap_err();
/// assert_eq!(errs[0].key_path, "listeners[0].xfcc_from_trusted_proxies");
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrustedXfcc {
    /// The header is removed; the gateway's own element is set if it verified a client
    /// certificate and `forward_client_cert` is on (Envoy's `SANITIZE_SET` / `SANITIZE`).
    #[default]
    Replace,
    /// The proxy's header passes unchanged and the gateway adds nothing (Envoy's
    /// `FORWARD_ONLY`).
    Forward,
    /// The proxy's header passes with the gateway's own element, if it has one, appended
    /// after a comma (Envoy's `APPEND_FORWARD`).
    Append,
}

impl TrustedXfcc {
    /// Whether this is the default.
    pub fn is_replace(&self) -> bool {
        *self == Self::Replace
    }

    fn as_str(self) -> &'static str {
        match self {
            Self::Replace => "replace",
            Self::Forward => "forward",
            Self::Append => "append",
        }
    }
}

impl ListenerConfig {
    /// A listener on `addr` with every other setting at its default.
    pub fn new(name: impl Into<String>, addr: SocketAddr) -> Self {
        Self {
            name: name.into(),
            addr,
            tls: None,
            http2: true,
            max_connections: defaults::max_connections(),
            backlog: defaults::backlog(),
            nodelay: true,
            keepalive: defaults::tcp_keepalive(),
            recv_buffer_size: None,
            send_buffer_size: None,
            header_read_timeout: defaults::header_read_timeout(),
            idle_timeout: defaults::idle_timeout(),
            request_timeout: defaults::request_timeout(),
            max_header_bytes: defaults::max_header_bytes(),
            max_body_bytes: defaults::max_body_bytes(),
            trusted_proxies: Vec::new(),
            xfcc_from_trusted_proxies: TrustedXfcc::Replace,
        }
    }
}

/// Certificate and key for a TLS listener (PEM files), and optionally client certificate
/// authentication (mutual TLS).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// Certificate chain, leaf first.
    pub cert: PathBuf,
    /// Private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// Ask clients for a certificate and verify it (`[listeners.tls.client_auth]`); absent:
    /// no client certificates are requested.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_auth: Option<ClientAuthConfig>,
}

impl TlsConfig {
    /// A TLS listener with `cert` and `key` and no client certificate authentication.
    pub fn new(cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        Self {
            cert: cert.into(),
            key: key.into(),
            client_auth: None,
        }
    }
}

/// Client certificate authentication on a TLS listener (`[listeners.tls.client_auth]`), as
/// nginx's `ssl_verify_client`, `ssl_client_certificate` and `ssl_crl`, or HAProxy's
/// `verify required ca-file ... crl-file ...`.
///
/// ```
/// use scalewise_gateway::config::{ClientAuthMode, Config, CrlScope, XfccDetail};
///
/// let config: Config = toml::from_str(r#"
///     [[listeners]]
///     addr = "127.0.0.1:8443"
///     [listeners.tls]
///     cert = "/etc/scalewise/gw.pem"
///     key = "/etc/scalewise/gw.key"
///     [listeners.tls.client_auth]
///     ca_file = "/etc/scalewise/clients-ca.pem"
///     crl_files = ["/etc/scalewise/clients.crl.pem"]
///     crl_enforce_next_update = true
///     forward_client_cert_details = ["by", "subject", "uri"]
///     [[routes]]
///     upstream = "api"
///     [upstreams.api]
///     backends = [{ addr = "10.0.0.5:8080" }]
/// "#).unwrap();
/// config.validate().unwrap();
/// let auth = config.listeners[0].tls.as_ref().unwrap().client_auth.as_ref().unwrap();
/// assert_eq!(auth.mode, ClientAuthMode::Required);
/// assert!(auth.forward_client_cert);
/// assert_eq!(auth.forward_client_cert_details, [XfccDetail::By, XfccDetail::Subject, XfccDetail::Uri]);
/// assert_eq!(auth.crl_scope, CrlScope::Chain);
/// assert!(auth.crl_enforce_next_update);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientAuthConfig {
    /// CA certificates (PEM) that client certificates must chain to.
    pub ca_file: PathBuf,
    /// `required`: a client without a valid certificate cannot connect. `optional`: a
    /// certificate is requested; a client may send none, but one it sends must be valid.
    #[serde(default)]
    pub mode: ClientAuthMode,
    /// Certificate revocation lists (PEM, `-----BEGIN X509 CRL-----`); a client certificate
    /// listed in one is refused. With CRLs, every certificate of the client's chain below
    /// the CA must be covered by one of them (as nginx's `ssl_crl`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub crl_files: Vec<PathBuf>,
    /// Pass the verified client certificate to backends in `X-Forwarded-Client-Cert`
    /// (Envoy's format). The header a client sends itself is removed (see
    /// [`ListenerConfig::xfcc_from_trusted_proxies`] for proxies in front of the gateway).
    #[serde(default = "defaults::yes")]
    pub forward_client_cert: bool,
    /// The parts of the `X-Forwarded-Client-Cert` element besides `Hash`, which is always
    /// there (Envoy's `set_current_client_cert_details`).
    #[serde(default = "defaults::xfcc_details")]
    pub forward_client_cert_details: Vec<XfccDetail>,
    /// Which certificates of the client's chain the CRLs must cover.
    #[serde(default, skip_serializing_if = "CrlScope::is_chain")]
    pub crl_scope: CrlScope,
    /// What happens to a certificate none of the CRLs covers (issued by a CA without a list).
    #[serde(default, skip_serializing_if = "UnknownRevocationStatus::is_refuse")]
    pub crl_unknown_status: UnknownRevocationStatus,
    /// Refuse certificates checked against a CRL that is past its `nextUpdate`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub crl_enforce_next_update: bool,
}

impl ClientAuthConfig {
    /// Required client certificates issued by the CAs in `ca_file`, no CRLs, forwarded to
    /// backends.
    pub fn new(ca_file: impl Into<PathBuf>) -> Self {
        Self {
            ca_file: ca_file.into(),
            mode: ClientAuthMode::Required,
            crl_files: Vec::new(),
            forward_client_cert: true,
            forward_client_cert_details: defaults::xfcc_details(),
            crl_scope: CrlScope::Chain,
            crl_unknown_status: UnknownRevocationStatus::Refuse,
            crl_enforce_next_update: false,
        }
    }

    /// How its CRLs are applied.
    pub fn crl_policy(&self) -> CrlPolicy {
        CrlPolicy {
            scope: self.crl_scope,
            unknown_status: self.crl_unknown_status,
            enforce_next_update: self.crl_enforce_next_update,
        }
    }
}

/// One part of the `X-Forwarded-Client-Cert` element the gateway writes
/// (`tls.client_auth.forward_client_cert_details`); they are written in Envoy's order:
/// `By`, `Hash`, `Cert`, `Chain`, `Subject`, then `URI` and `DNS` in the certificate's order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum XfccDetail {
    /// `By=`: each URI subject alternative name of the gateway's own certificate.
    By,
    /// `Cert="..."`: the client's leaf certificate, URL-encoded PEM.
    Cert,
    /// `Chain="..."`: the whole chain the client sent, leaf first, URL-encoded PEM.
    Chain,
    /// `Subject="..."`: the subject DN (RFC 4514).
    Subject,
    /// `URI=`: each URI subject alternative name.
    Uri,
    /// `DNS=`: each DNS subject alternative name.
    Dns,
}

impl XfccDetail {
    /// The name as written in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::By => "by",
            Self::Cert => "cert",
            Self::Chain => "chain",
            Self::Subject => "subject",
            Self::Uri => "uri",
            Self::Dns => "dns",
        }
    }
}

/// Which certificates of a peer's chain revocation lists are checked for (`crl_scope`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CrlScope {
    /// Every certificate below the trusted CA (the leaf and any intermediates), as nginx's
    /// `ssl_crl`.
    #[default]
    Chain,
    /// The leaf only: intermediates need no list of their own.
    Leaf,
}

impl CrlScope {
    /// Whether this is the default.
    pub fn is_chain(&self) -> bool {
        *self == Self::Chain
    }
}

/// What happens to a certificate whose issuer none of the CRLs covers
/// (`crl_unknown_status`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnknownRevocationStatus {
    /// Refused: with CRLs configured, every certificate checked must be covered.
    #[default]
    Refuse,
    /// Accepted (revocation is checked where a list exists).
    Allow,
}

impl UnknownRevocationStatus {
    /// Whether this is the default.
    pub fn is_refuse(&self) -> bool {
        *self == Self::Refuse
    }
}

/// How revocation lists are applied, for client and backend certificates alike.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CrlPolicy {
    /// `crl_scope`.
    pub scope: CrlScope,
    /// `crl_unknown_status`.
    pub unknown_status: UnknownRevocationStatus,
    /// `crl_enforce_next_update`.
    pub enforce_next_update: bool,
}

impl CrlPolicy {
    /// The settings that are not at their defaults, by key: they mean something only with
    /// `crl_files`.
    fn non_default_keys(&self) -> Vec<(&'static str, String)> {
        let mut v = Vec::new();
        if !self.scope.is_chain() {
            v.push(("crl_scope", "\"leaf\"".to_owned()));
        }
        if !self.unknown_status.is_refuse() {
            v.push(("crl_unknown_status", "\"allow\"".to_owned()));
        }
        if self.enforce_next_update {
            v.push(("crl_enforce_next_update", "true".to_owned()));
        }
        v
    }
}

/// Whether a TLS listener insists on a client certificate.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuthMode {
    /// Every client must present a valid certificate (nginx's `ssl_verify_client on`).
    #[default]
    Required,
    /// A certificate is requested; clients without one are served too (nginx's
    /// `ssl_verify_client optional`).
    Optional,
}

/// One routing rule (`[[routes]]`). Every condition that is present must match.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Label in metrics and logs (default: the route's index).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Only requests arriving on this listener (by name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listener: Option<String>,
    /// Only this host (case-insensitive, port ignored); `*.example.com` matches any
    /// subdomain (not `example.com` itself).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Only paths starting with this (must start with `/`). Matches on segment boundaries:
    /// `/api` matches `/api` and `/api/x`, not `/apix`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_prefix: Option<String>,
    /// Only these methods (e.g. `["GET", "HEAD"]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub methods: Option<Vec<String>>,
    /// The upstream group that serves matching requests.
    pub upstream: String,
    /// Overrides the listener's `request_timeout` for matching requests.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub timeout: Option<Duration>,
    /// Name of a `[rate_limits.NAME]` entry that guards this route (429 beyond it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<String>,
    /// Retries of idempotent, bodiless requests after a failure before any response,
    /// each on another backend while there is one, and only while the upstream's
    /// `retry_budget` allows (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<u32>,
    /// Request body bytes kept while a request streams to its first backend, so that the
    /// request can be retried with its body (default 65536; 0 keeps none). A body with a
    /// larger `Content-Length`, or a chunked one that grows past it, streams as before and
    /// is not retried. See docs/gateway-policies.md.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_buffer_bytes: Option<u64>,
    /// Retry non-idempotent requests (`POST`, `PATCH`, ...) too, like nginx's
    /// `proxy_next_upstream non_idempotent`: only for backends known to tolerate a request
    /// that may have reached them twice.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub retry_non_idempotent: bool,
    /// Concurrency limit of the route (a bulkhead: `max_concurrent`, `max_waiting`,
    /// `max_wait`); beyond it, 503.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<scalewise::bulkhead::BulkheadConfig>,
    /// Load shedding of the route (`max_in_flight`, `queue_target`, `interval`); shed
    /// requests get 503 at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shed: Option<scalewise::shed::ShedConfig>,
    /// Adaptive concurrency limit of the route (`algorithm` = `aimd` or `gradient2`,
    /// `initial`, `min`, `max`): the limit follows the backend's latency and drops;
    /// beyond it, 503.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adaptive_concurrency: Option<crate::policy::AdaptiveSpec>,
}

impl RouteConfig {
    /// A catch-all route to `upstream`.
    pub fn to_upstream(upstream: impl Into<String>) -> Self {
        Self {
            name: None,
            listener: None,
            host: None,
            path_prefix: None,
            methods: None,
            upstream: upstream.into(),
            timeout: None,
            rate_limit: None,
            retries: None,
            retry_buffer_bytes: None,
            retry_non_idempotent: false,
            concurrency: None,
            shed: None,
            adaptive_concurrency: None,
        }
    }
}

/// Load-balancing algorithm of an upstream, by its config name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlgorithmName {
    /// Each backend in turn, ignoring weights.
    #[default]
    RoundRobin,
    /// Smooth weighted round robin (nginx's algorithm).
    #[serde(alias = "wrr", alias = "smooth_weighted_round_robin")]
    WeightedRoundRobin,
    /// Fewest active requests relative to weight.
    #[serde(alias = "least_connections")]
    LeastConn,
    /// Least response time: peak EWMA with power-of-two-choices.
    #[serde(alias = "ewma", alias = "least_time")]
    PeakEwma,
    /// Power-of-two-choices on in-flight requests.
    #[serde(alias = "power_of_two_choices")]
    P2c,
    /// Weighted random.
    #[serde(alias = "weighted_random")]
    Random,
    /// Consistent hashing on a ketama ring with virtual nodes.
    #[serde(rename = "ketama", alias = "ring_hash", alias = "consistent_hash")]
    RingHash,
    /// Consistent hashing with a Maglev lookup table.
    Maglev,
}

impl AlgorithmName {
    /// Every algorithm, for help texts.
    pub const ALL: [AlgorithmName; 8] = [
        Self::RoundRobin,
        Self::WeightedRoundRobin,
        Self::LeastConn,
        Self::PeakEwma,
        Self::P2c,
        Self::Random,
        Self::RingHash,
        Self::Maglev,
    ];

    /// The config name (`round_robin`, `least_conn`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RoundRobin => "round_robin",
            Self::WeightedRoundRobin => "weighted_round_robin",
            Self::LeastConn => "least_conn",
            Self::PeakEwma => "peak_ewma",
            Self::P2c => "p2c",
            Self::Random => "random",
            Self::RingHash => "ketama",
            Self::Maglev => "maglev",
        }
    }

    /// The library's algorithm of this name.
    pub fn algorithm(self) -> scalewise::balance::Algorithm {
        use scalewise::balance::Algorithm;
        match self {
            Self::RoundRobin => Algorithm::RoundRobin,
            Self::WeightedRoundRobin => Algorithm::WeightedRoundRobin,
            Self::LeastConn => Algorithm::LeastConn,
            Self::PeakEwma => Algorithm::PeakEwma,
            Self::P2c => Algorithm::PowerOfTwo,
            Self::Random => Algorithm::Random,
            Self::RingHash => Algorithm::Ketama,
            Self::Maglev => Algorithm::Maglev,
        }
    }

    /// Whether the algorithm picks by [`HashKey`].
    pub fn is_hashing(self) -> bool {
        matches!(self, Self::RingHash | Self::Maglev)
    }
}

impl fmt::Display for AlgorithmName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for AlgorithmName {
    type Err = String;

    /// Accepts the config names and their aliases (`wrr`, `ketama`, ...).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        AlgorithmName::deserialize(
            serde::de::value::StrDeserializer::<serde::de::value::Error>::new(s),
        )
        .map_err(|_| {
            let names: Vec<_> = Self::ALL.iter().map(|a| a.as_str()).collect();
            format!(
                "unknown algorithm `{s}`, expected one of {}",
                names.join(", ")
            )
        })
    }
}

/// What a hashing balancer keys on: `client_ip`, `header:NAME`, `cookie:NAME` or `path`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum HashKey {
    /// The client's IP address (after no proxy headers: the TCP peer).
    #[default]
    ClientIp,
    /// The value of a request header (lower-cased name).
    Header(String),
    /// The value of a request cookie.
    Cookie(String),
    /// The request path (without the query).
    Path,
}

impl FromStr for HashKey {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("`{s}` is not client_ip, path, header:NAME or cookie:NAME");
        match s {
            "client_ip" => Ok(Self::ClientIp),
            "path" => Ok(Self::Path),
            _ => {
                let (kind, name) = s.split_once(':').ok_or_else(bad)?;
                if name.is_empty() || !name.bytes().all(is_token_byte) {
                    return Err(bad());
                }
                match kind {
                    "header" => Ok(Self::Header(name.to_ascii_lowercase())),
                    "cookie" => Ok(Self::Cookie(name.to_owned())),
                    _ => Err(bad()),
                }
            }
        }
    }
}

impl TryFrom<String> for HashKey {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<HashKey> for String {
    fn from(k: HashKey) -> String {
        k.to_string()
    }
}

impl fmt::Display for HashKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ClientIp => f.write_str("client_ip"),
            Self::Path => f.write_str("path"),
            Self::Header(n) => write!(f, "header:{n}"),
            Self::Cookie(n) => write!(f, "cookie:{n}"),
        }
    }
}

/// Protocol spoken to an upstream's backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UpstreamProtocol {
    /// HTTP/1.1 with pooled keep-alive connections.
    #[default]
    Http1,
    /// HTTP/2, multiplexed on one connection per backend: prior knowledge in clear text, or
    /// ALPN `h2` over TLS.
    Http2,
}

/// One backend group (`[upstreams.NAME]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// Balancing algorithm.
    #[serde(default)]
    pub algorithm: AlgorithmName,
    /// What hashing algorithms key on (ignored by the others).
    #[serde(default)]
    pub hash_key: HashKey,
    /// Sticky sessions: the gateway sets this cookie to pin a client to a backend, and moves
    /// the client when that backend is unhealthy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sticky_cookie: Option<String>,
    /// Protocol to the backends.
    #[serde(default)]
    pub protocol: UpstreamProtocol,
    /// TLS to the backends (`[upstreams.NAME.tls]`); absent is plain TCP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<UpstreamTlsConfig>,
    /// Time to establish a connection to a backend, TCP and (for TLS backends) the TLS
    /// handshake (a failure is retried elsewhere for idempotent requests).
    #[serde(default = "defaults::connect_timeout", with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Maximum concurrent requests per backend; more wait in a queue. Absent is unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections_per_backend: Option<u32>,
    /// Requests that may wait per backend when it is at `max_connections_per_backend`;
    /// beyond that they get 503 at once.
    #[serde(default = "defaults::queue_size")]
    pub queue_size: usize,
    /// Longest wait in that queue; then 503.
    #[serde(default = "defaults::queue_timeout", with = "humantime_serde")]
    pub queue_timeout: Duration,
    /// Idle pooled connections kept per backend.
    #[serde(default = "defaults::pool_idle_per_backend")]
    pub pool_idle_per_backend: usize,
    /// Pooled connections idle longer than this are closed.
    #[serde(default = "defaults::pool_idle_timeout", with = "humantime_serde")]
    pub pool_idle_timeout: Duration,
    /// The backends.
    pub backends: Vec<BackendConfig>,
    /// How often the DNS names among `backends` are looked up again (after the previous
    /// lookup finished). Ignored when every backend is an IP address.
    #[serde(default = "defaults::resolve_interval", with = "humantime_serde")]
    pub resolve_interval: Duration,
    /// Active and passive health checking.
    #[serde(default)]
    pub health: HealthConfig,
    /// A circuit breaker per backend; an open breaker takes the backend out of selection
    /// like an outlier ejection. Absent: no breakers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub circuit_breaker: Option<scalewise::breaker::BreakerConfig>,
    /// The budget all retries to this upstream draw from.
    #[serde(default)]
    pub retry_budget: scalewise::retry::BudgetConfig,
}

impl UpstreamConfig {
    /// An upstream of `backends` (weight 1 each) with every other setting at its default.
    pub fn new(algorithm: AlgorithmName, backends: impl IntoIterator<Item = SocketAddr>) -> Self {
        Self {
            algorithm,
            hash_key: HashKey::default(),
            sticky_cookie: None,
            protocol: UpstreamProtocol::default(),
            tls: None,
            connect_timeout: defaults::connect_timeout(),
            max_connections_per_backend: None,
            queue_size: defaults::queue_size(),
            queue_timeout: defaults::queue_timeout(),
            pool_idle_per_backend: defaults::pool_idle_per_backend(),
            pool_idle_timeout: defaults::pool_idle_timeout(),
            backends: backends.into_iter().map(BackendConfig::new).collect(),
            resolve_interval: defaults::resolve_interval(),
            health: HealthConfig::default(),
            circuit_breaker: None,
            retry_budget: scalewise::retry::BudgetConfig::default(),
        }
    }
}

/// TLS to an upstream's backends (`[upstreams.NAME.tls]`), nginx's `proxy_pass https://`
/// with `proxy_ssl_verify on`.
///
/// ```
/// use scalewise_gateway::config::Config;
///
/// let config: Config = toml::from_str(r#"
///     [[listeners]]
///     addr = "127.0.0.1:8080"
///     [[routes]]
///     upstream = "api"
///     [upstreams.api]
///     backends = [{ addr = "10.0.0.5:443" }]
///     [upstreams.api.tls]
///     ca_file = "/etc/scalewise/internal-ca.pem"
///     server_name = "api.internal"
/// "#).unwrap();
/// config.validate().unwrap();
/// assert!(config.upstreams["api"].tls.as_ref().unwrap().enabled);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTlsConfig {
    /// Speak TLS to the backends; `false` keeps the section but connects in clear text.
    #[serde(default = "defaults::yes")]
    pub enabled: bool,
    /// CA certificates (PEM) that backend certificates must chain to. Absent: the system's
    /// trusted roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// Name sent as SNI and that backend certificates must be valid for. Absent: the
    /// backend's host name; required for IP backends unless `insecure_skip_verify`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
    /// Accept any backend certificate (encryption without authentication; for tests).
    #[serde(default)]
    pub insecure_skip_verify: bool,
    /// Client certificate chain (PEM) presented to backends that require one (mTLS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<PathBuf>,
    /// Private key of `cert_file` (PEM: PKCS#8, PKCS#1 or SEC1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
    /// ALPN protocols offered. Absent: `http/1.1` for `protocol = "http1"`, `h2` for
    /// `protocol = "http2"`; a list must include that protocol's token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alpn: Option<Vec<String>>,
    /// Certificate revocation lists (PEM); a backend whose certificate one of them lists is
    /// refused (a failed handshake). Every certificate of the backend's chain below the CA
    /// must be covered by one of them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub crl_files: Vec<PathBuf>,
    /// Which certificates of a backend's chain the CRLs must cover.
    #[serde(default, skip_serializing_if = "CrlScope::is_chain")]
    pub crl_scope: CrlScope,
    /// What happens to a certificate none of the CRLs covers.
    #[serde(default, skip_serializing_if = "UnknownRevocationStatus::is_refuse")]
    pub crl_unknown_status: UnknownRevocationStatus,
    /// Refuse backend certificates checked against a CRL past its `nextUpdate`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub crl_enforce_next_update: bool,
}

impl UpstreamTlsConfig {
    /// TLS with every setting at its default: system roots, the backend's host name.
    pub fn new() -> Self {
        Self {
            enabled: true,
            ca_file: None,
            server_name: None,
            insecure_skip_verify: false,
            cert_file: None,
            key_file: None,
            alpn: None,
            crl_files: Vec::new(),
            crl_scope: CrlScope::Chain,
            crl_unknown_status: UnknownRevocationStatus::Refuse,
            crl_enforce_next_update: false,
        }
    }

    /// How its CRLs are applied.
    pub fn crl_policy(&self) -> CrlPolicy {
        CrlPolicy {
            scope: self.crl_scope,
            unknown_status: self.crl_unknown_status,
            enforce_next_update: self.crl_enforce_next_update,
        }
    }
}

impl Default for UpstreamTlsConfig {
    fn default() -> Self {
        Self::new()
    }
}

impl UpstreamProtocol {
    /// The ALPN token of the protocol (`http/1.1`, `h2`).
    pub fn alpn(self) -> &'static str {
        match self {
            Self::Http1 => "http/1.1",
            Self::Http2 => "h2",
        }
    }
}

/// One backend of an upstream.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendConfig {
    /// Address to connect to: `ip:port`, `[ipv6]:port`, or `host:port` for a DNS name
    /// (every address the name resolves to becomes a backend of this weight).
    pub addr: BackendAddr,
    /// Relative share of traffic for weighted algorithms.
    #[serde(default = "defaults::weight")]
    pub weight: u32,
}

impl BackendConfig {
    /// A backend at `addr` with weight 1.
    pub fn new(addr: SocketAddr) -> Self {
        Self::at(BackendAddr::Ip(addr))
    }

    /// A backend at `addr` (an IP address or a DNS name) with weight 1.
    pub fn at(addr: BackendAddr) -> Self {
        Self { addr, weight: 1 }
    }
}

/// Where a backend is: a socket address, or a DNS name and port that the gateway resolves at
/// start and again every `resolve_interval`.
///
/// ```
/// use scalewise_gateway::config::BackendAddr;
///
/// assert!(matches!("10.0.0.1:80".parse(), Ok(BackendAddr::Ip(_))));
/// assert!(matches!("[::1]:80".parse(), Ok(BackendAddr::Ip(_))));
/// let name: BackendAddr = "Backend.Internal:8080".parse().unwrap();
/// assert_eq!(name.to_string(), "backend.internal:8080");
/// assert!("backend.internal".parse::<BackendAddr>().is_err()); // no port
/// assert!("::1:80".parse::<BackendAddr>().is_err()); // IPv6 needs brackets
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum BackendAddr {
    /// A literal address.
    Ip(SocketAddr),
    /// A DNS name (lower-cased) and port.
    Name {
        /// The host name, e.g. `backend.internal`.
        host: String,
        /// The port.
        port: u16,
    },
}

impl BackendAddr {
    /// The port.
    pub fn port(&self) -> u16 {
        match self {
            Self::Ip(a) => a.port(),
            Self::Name { port, .. } => *port,
        }
    }

    /// The host name, for a DNS backend.
    pub fn host(&self) -> Option<&str> {
        match self {
            Self::Ip(_) => None,
            Self::Name { host, .. } => Some(host),
        }
    }
}

impl From<SocketAddr> for BackendAddr {
    fn from(a: SocketAddr) -> Self {
        Self::Ip(a)
    }
}

impl FromStr for BackendAddr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Ok(a) = s.parse::<SocketAddr>() {
            return Ok(Self::Ip(a));
        }
        let bad = |why: &str| format!("`{s}` is not ip:port, [ipv6]:port or host:port: {why}");
        let (host, port) = s.rsplit_once(':').ok_or_else(|| bad("no port"))?;
        let port: u16 = port
            .parse()
            .map_err(|_| bad("the port is not a number from 0 to 65535"))?;
        if host.starts_with('[') || host.contains(':') {
            return Err(bad("an IPv6 address must be written in brackets, [::1]:80"));
        }
        if !is_dns_name(host) {
            return Err(bad(
                "the host is not a DNS name (labels of letters, digits, `-`, `_`)",
            ));
        }
        Ok(Self::Name {
            host: host.to_ascii_lowercase(),
            port,
        })
    }
}

/// A syntactically valid DNS name: at most 253 characters, dot-separated labels of 1–63
/// letters, digits, `-` or `_` (a trailing dot is allowed).
fn is_dns_name(host: &str) -> bool {
    let h = host.strip_suffix('.').unwrap_or(host);
    !h.is_empty()
        && h.len() <= 253
        && h.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

impl TryFrom<String> for BackendAddr {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<BackendAddr> for String {
    fn from(a: BackendAddr) -> String {
        a.to_string()
    }
}

impl fmt::Display for BackendAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Ip(a) => a.fmt(f),
            Self::Name { host, port } => write!(f, "{host}:{port}"),
        }
    }
}

/// Health checking of an upstream (`[upstreams.NAME.health]`): the library's settings,
/// see [`scalewise::health::HealthConfig`] and docs/health.md.
pub use scalewise::health::HealthConfig;

/// The admin API (`[admin]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Serve the admin API at all; `false` is what `--admin off` does.
    #[serde(default = "defaults::yes")]
    pub enabled: bool,
    /// Address of the admin listener.
    #[serde(default = "defaults::admin_addr")]
    pub addr: SocketAddr,
    /// Bearer token required on every admin request, if set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            addr: defaults::admin_addr(),
            token: None,
        }
    }
}

/// Process-level settings (`[server]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// How long SIGTERM/SIGINT wait for in-flight requests before the remaining connections
    /// are closed and the process exits. `--shutdown-timeout` overrides it.
    #[serde(default = "defaults::shutdown_timeout", with = "humantime_serde")]
    pub shutdown_timeout: Duration,
    /// Request body bytes all requests together may keep for retries
    /// (`routes[].retry_buffer_bytes`); a body that would go over it streams unkept.
    #[serde(default = "defaults::retry_buffer_total_bytes")]
    pub retry_buffer_total_bytes: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            shutdown_timeout: defaults::shutdown_timeout(),
            retry_buffer_total_bytes: defaults::retry_buffer_total_bytes(),
        }
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Human,
    /// One JSON object per line.
    Json,
}

/// Logging (`[log]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// Output format.
    #[serde(default)]
    pub format: LogFormat,
    /// Filter in `tracing` env-filter syntax (`info`, `scalewise_gateway=debug`).
    #[serde(default = "defaults::log_level")]
    pub level: String,
    /// Log one line per proxied request.
    #[serde(default)]
    pub access_log: bool,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::default(),
            level: defaults::log_level(),
            access_log: false,
        }
    }
}

/// One semantic problem in a configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key_path}: got {value}, expected {expected}")]
pub struct ConfigError {
    /// Where, e.g. `upstreams.api.backends[1].weight`.
    pub key_path: String,
    /// The offending value as written.
    pub value: String,
    /// What would have been accepted.
    pub expected: String,
}

impl ConfigError {
    fn new(
        key_path: impl Into<String>,
        value: impl fmt::Display,
        expected: impl Into<String>,
    ) -> Self {
        Self {
            key_path: key_path.into(),
            value: value.to_string(),
            expected: expected.into(),
        }
    }
}

/// Smallest `max_header_bytes`: the HTTP/1 parser needs a buffer of at least this size.
pub const MIN_HEADER_BYTES: usize = 8192;

impl Config {
    /// The configuration of the one-line start: one listener on `listen`, one upstream
    /// `default` of `backends` with `algorithm`, one catch-all route to it.
    pub fn from_backends(
        listen: SocketAddr,
        backends: impl IntoIterator<Item = SocketAddr>,
        algorithm: AlgorithmName,
    ) -> Self {
        let mut upstreams = BTreeMap::new();
        upstreams.insert(
            "default".to_owned(),
            UpstreamConfig::new(algorithm, backends),
        );
        Self {
            listeners: vec![ListenerConfig::new("default", listen)],
            routes: vec![RouteConfig::to_upstream("default")],
            upstreams,
            admin: AdminConfig::default(),
            log: LogConfig::default(),
            server: ServerConfig::default(),
            rate_limits: BTreeMap::new(),
        }
    }

    /// [`Config::from_backends`] with backends that may be DNS names (`--backend host:port`).
    pub fn from_backend_addrs(
        listen: SocketAddr,
        backends: impl IntoIterator<Item = BackendAddr>,
        algorithm: AlgorithmName,
    ) -> Self {
        let mut config = Self::from_backends(listen, [], algorithm);
        if let Some(u) = config.upstreams.get_mut("default") {
            u.backends = backends.into_iter().map(BackendConfig::at).collect();
        }
        config
    }

    /// Checks what the types cannot: references between sections, ranges, uniqueness.
    /// Files (TLS certificates) are not opened here.
    ///
    /// # Errors
    /// Every problem found, each naming the key, the value and what was expected.
    pub fn validate(&self) -> Result<(), Vec<ConfigError>> {
        let mut errs = Vec::new();
        let mut e = |k: String, v: &dyn fmt::Display, x: &str| errs.push(ConfigError::new(k, v, x));

        if self.listeners.is_empty() {
            e(
                "listeners".into(),
                &"[]",
                "at least one [[listeners]] entry",
            );
        }
        let mut names = HashSet::new();
        let mut addrs = HashSet::new();
        for (i, l) in self.listeners.iter().enumerate() {
            let k = |f: &str| format!("listeners[{i}].{f}");
            if l.name.is_empty() {
                e(k("name"), &"\"\"", "a non-empty name");
            } else if !names.insert(l.name.as_str()) {
                e(k("name"), &l.name, "a name no other listener has");
            }
            if !addrs.insert(l.addr) {
                e(k("addr"), &l.addr, "an address no other listener binds");
            }
            if l.max_connections == 0 || l.max_connections > 10_000_000 {
                e(k("max_connections"), &l.max_connections, "1 to 10000000");
            }
            if l.backlog == 0 {
                e(k("backlog"), &0, "at least 1");
            }
            if l.max_header_bytes < MIN_HEADER_BYTES || l.max_header_bytes > (1 << 24) {
                e(
                    k("max_header_bytes"),
                    &l.max_header_bytes,
                    "8192 to 16777216",
                );
            }
            for (f, d) in [
                ("header_read_timeout", l.header_read_timeout),
                ("idle_timeout", l.idle_timeout),
                ("request_timeout", l.request_timeout),
            ] {
                if d.is_zero() || too_long(d) {
                    e(
                        k(f),
                        &humantime::format_duration(d),
                        "a duration above zero, at most 30 days",
                    );
                }
            }
            if l.keepalive.is_some_and(too_long) {
                e(
                    k("keepalive"),
                    &humantime::format_duration(l.keepalive.unwrap_or_default()),
                    "at most 30 days",
                );
            }
            if l.keepalive.is_some_and(|d| d.as_secs() == 0) {
                e(
                    k("keepalive"),
                    &humantime::format_duration(l.keepalive.unwrap_or_default()),
                    "at least 1s, or leave it out",
                );
            }
            for (f, v) in [
                ("recv_buffer_size", l.recv_buffer_size),
                ("send_buffer_size", l.send_buffer_size),
            ] {
                if v == Some(0) {
                    e(k(f), &0, "a size above zero, or leave it out");
                }
            }
            if let Some(tls) = &l.tls {
                if tls.cert.as_os_str().is_empty() {
                    e(k("tls.cert"), &"\"\"", "a PEM certificate file path");
                }
                if tls.key.as_os_str().is_empty() {
                    e(k("tls.key"), &"\"\"", "a PEM private key file path");
                }
                if let Some(auth) = &tls.client_auth {
                    if auth.ca_file.as_os_str().is_empty() {
                        e(
                            k("tls.client_auth.ca_file"),
                            &"\"\"",
                            "a PEM file of the CA certificates client certificates must chain to",
                        );
                    }
                    for (j, p) in auth.crl_files.iter().enumerate() {
                        if p.as_os_str().is_empty() {
                            e(
                                k(&format!("tls.client_auth.crl_files[{j}]")),
                                &"\"\"",
                                "a PEM certificate revocation list file path",
                            );
                        }
                    }
                    if auth.crl_files.is_empty() {
                        for (key, value) in auth.crl_policy().non_default_keys() {
                            e(
                                k(&format!("tls.client_auth.{key}")),
                                &value,
                                "to be left out: it applies to crl_files, and there are none",
                            );
                        }
                    }
                    let details = &auth.forward_client_cert_details;
                    if let Some(dup) = details
                        .iter()
                        .enumerate()
                        .find(|(j, d)| details[..*j].contains(d))
                    {
                        e(
                            k(&format!(
                                "tls.client_auth.forward_client_cert_details[{}]",
                                dup.0
                            )),
                            &quoted(dup.1.as_str()),
                            "each of by, cert, chain, subject, uri, dns at most once",
                        );
                    }
                    if !auth.forward_client_cert && *details != defaults::xfcc_details() {
                        let names: Vec<_> = details.iter().map(|d| quoted(d.as_str())).collect();
                        e(
                            k("tls.client_auth.forward_client_cert_details"),
                            &format!("[{}]", names.join(", ")),
                            "to be left out with forward_client_cert = false (no header is sent)",
                        );
                    }
                }
            }
            if !l.xfcc_from_trusted_proxies.is_replace() && l.trusted_proxies.is_empty() {
                e(
                    k("xfcc_from_trusted_proxies"),
                    &quoted(l.xfcc_from_trusted_proxies.as_str()),
                    "\"replace\" (the default), or trusted_proxies listing the proxies whose \
                     X-Forwarded-Client-Cert is kept",
                );
            }
        }

        if self.routes.is_empty() {
            e("routes".into(), &"[]", "at least one [[routes]] entry");
        }
        for (i, r) in self.routes.iter().enumerate() {
            let k = |f: &str| format!("routes[{i}].{f}");
            if !self.upstreams.contains_key(&r.upstream) {
                let known: Vec<_> = self.upstreams.keys().map(String::as_str).collect();
                e(
                    k("upstream"),
                    &quoted(&r.upstream),
                    &format!("one of the [upstreams] names ({})", known.join(", ")),
                );
            }
            if let Some(name) = &r.listener {
                if !self.listeners.iter().any(|l| &l.name == name) {
                    e(
                        k("listener"),
                        &quoted(name),
                        "the name of a [[listeners]] entry",
                    );
                }
            }
            if let Some(host) = &r.host {
                let h = host.strip_prefix("*.").unwrap_or(host);
                if h.is_empty()
                    || !h
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
                {
                    e(
                        k("host"),
                        &quoted(host),
                        "a host name like `example.com` or `*.example.com`",
                    );
                }
            }
            if let Some(p) = &r.path_prefix {
                if !p.starts_with('/') {
                    e(k("path_prefix"), &quoted(p), "a path starting with `/`");
                }
            }
            if let Some(methods) = &r.methods {
                if methods.is_empty() {
                    e(k("methods"), &"[]", "at least one method, or leave it out");
                }
                for (j, m) in methods.iter().enumerate() {
                    if m.is_empty()
                        || !m.bytes().all(|b| b.is_ascii_uppercase())
                        || http::Method::from_bytes(m.as_bytes()).is_err()
                    {
                        e(
                            format!("routes[{i}].methods[{j}]"),
                            &quoted(m),
                            "an upper-case HTTP method like GET",
                        );
                    }
                }
            }
            if let Some(d) = r.timeout.filter(|d| d.is_zero() || too_long(*d)) {
                e(
                    k("timeout"),
                    &humantime::format_duration(d),
                    "a duration above zero, at most 30 days",
                );
            }
        }

        for (name, u) in &self.upstreams {
            let k = |f: &str| format!("upstreams.{name}.{f}");
            if name.is_empty()
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
            {
                e(
                    format!("upstreams.{name}"),
                    &quoted(name),
                    "a name of letters, digits, `-`, `_`, `.`",
                );
            }
            if u.backends.is_empty() {
                e(k("backends"), &"[]", "at least one backend");
            }
            let mut seen = HashSet::new();
            for (j, b) in u.backends.iter().enumerate() {
                if b.weight == 0 || b.weight > 10_000 {
                    e(
                        format!("upstreams.{name}.backends[{j}].weight"),
                        &b.weight,
                        "1 to 10000",
                    );
                }
                if !seen.insert(&b.addr) {
                    e(
                        format!("upstreams.{name}.backends[{j}].addr"),
                        &b.addr,
                        "an address listed once per upstream",
                    );
                }
                if b.addr.port() == 0 {
                    e(
                        format!("upstreams.{name}.backends[{j}].addr"),
                        &b.addr,
                        "an address with a port",
                    );
                }
            }
            if let Some(c) = &u.sticky_cookie {
                if c.is_empty() || !c.bytes().all(is_token_byte) {
                    e(
                        k("sticky_cookie"),
                        &quoted(c),
                        "a cookie name (letters, digits, `-`, `_`)",
                    );
                }
            }
            if u.resolve_interval < Duration::from_secs(1) || too_long(u.resolve_interval) {
                e(
                    k("resolve_interval"),
                    &humantime::format_duration(u.resolve_interval),
                    "at least 1s, at most 30 days",
                );
            }
            for (f, d) in [
                ("connect_timeout", u.connect_timeout),
                ("queue_timeout", u.queue_timeout),
                ("pool_idle_timeout", u.pool_idle_timeout),
            ] {
                if too_long(d) || (f == "connect_timeout" && d.is_zero()) {
                    e(
                        k(f),
                        &humantime::format_duration(d),
                        "a duration above zero, at most 30 days",
                    );
                }
            }
            if let Some(t) = u.tls.as_ref().filter(|t| t.enabled) {
                validate_upstream_tls(name, u, t, &mut e);
            }
            if u.max_connections_per_backend == Some(0) {
                e(
                    k("max_connections_per_backend"),
                    &0,
                    "at least 1, or leave it out",
                );
            }
            if u.max_connections_per_backend.is_some()
                && u.queue_size > 0
                && u.queue_timeout.is_zero()
            {
                e(
                    k("queue_timeout"),
                    &"0s",
                    "a duration above zero when queue_size > 0",
                );
            }
            let h = &u.health;
            if let Some(a) = &h.active {
                let k = |f: &str| format!("upstreams.{name}.health.active.{f}");
                for (f, d) in [("interval", a.interval), ("timeout", a.timeout)] {
                    if d.is_zero() || too_long(d) {
                        e(
                            k(f),
                            &humantime::format_duration(d),
                            "a duration above zero, at most 30 days",
                        );
                    }
                }
                if a.rise == 0 {
                    e(k("rise"), &0, "at least 1");
                }
                if a.fall == 0 {
                    e(k("fall"), &0, "at least 1");
                }
                if !a.path.starts_with('/') {
                    e(k("path"), &quoted(&a.path), "a path starting with `/`");
                }
            }
            if let Some(o) = &h.outlier {
                let k = |f: &str| format!("upstreams.{name}.health.outlier.{f}");
                if o.base_ejection_time.is_zero() || too_long(o.base_ejection_time) {
                    e(
                        k("base_ejection_time"),
                        &humantime::format_duration(o.base_ejection_time),
                        "a duration above zero, at most 30 days",
                    );
                }
                if too_long(o.max_ejection_time) {
                    e(
                        k("max_ejection_time"),
                        &humantime::format_duration(o.max_ejection_time),
                        "at most 30 days",
                    );
                }
                if o.max_ejection_time < o.base_ejection_time {
                    e(
                        k("max_ejection_time"),
                        &humantime::format_duration(o.max_ejection_time),
                        "at least base_ejection_time",
                    );
                }
                if o.max_ejection_percent > 100 {
                    e(
                        k("max_ejection_percent"),
                        &o.max_ejection_percent,
                        "0 to 100",
                    );
                }
            }
            if let Some(w) = &h.slow_start {
                if too_long(w.window) {
                    e(
                        format!("upstreams.{name}.health.slow_start.window"),
                        &humantime::format_duration(w.window),
                        "at most 30 days",
                    );
                }
                if w.min_weight_percent > 100 {
                    e(
                        format!("upstreams.{name}.health.slow_start.min_weight_percent"),
                        &w.min_weight_percent,
                        "0 to 100",
                    );
                }
            }
            if h.panic_threshold > 100 {
                e(k("health.panic_threshold"), &h.panic_threshold, "0 to 100");
            }
        }

        if let Some(t) = &self.admin.token {
            if t.is_empty() {
                e(
                    "admin.token".into(),
                    &"\"\"",
                    "a non-empty token, or leave it out",
                );
            }
        }

        if too_long(self.server.shutdown_timeout) {
            e(
                "server.shutdown_timeout".into(),
                &humantime::format_duration(self.server.shutdown_timeout),
                "at most 30 days",
            );
        }

        crate::policy::validate(self, &mut errs);
        if errs.is_empty() {
            Ok(())
        } else {
            Err(errs)
        }
    }
}

/// The checks of an enabled `[upstreams.NAME.tls]`.
fn validate_upstream_tls(
    name: &str,
    u: &UpstreamConfig,
    t: &UpstreamTlsConfig,
    e: &mut impl FnMut(String, &dyn fmt::Display, &str),
) {
    let k = |f: &str| format!("upstreams.{name}.tls.{f}");
    for (f, p) in [
        ("ca_file", &t.ca_file),
        ("cert_file", &t.cert_file),
        ("key_file", &t.key_file),
    ] {
        if p.as_ref().is_some_and(|p| p.as_os_str().is_empty()) {
            e(k(f), &"\"\"", "a PEM file path, or leave it out");
        }
    }
    match (&t.cert_file, &t.key_file) {
        (Some(_), None) => e(
            k("key_file"),
            &"(absent)",
            "the private key of cert_file (both or neither)",
        ),
        (None, Some(_)) => e(
            k("cert_file"),
            &"(absent)",
            "the certificate of key_file (both or neither)",
        ),
        _ => {}
    }
    if t.insecure_skip_verify {
        if let Some(ca) = &t.ca_file {
            e(
                k("ca_file"),
                &quoted(&ca.display().to_string()),
                "no ca_file with insecure_skip_verify = true (nothing is verified)",
            );
        }
        if !t.crl_files.is_empty() {
            e(
                k("crl_files"),
                &format!("{:?}", t.crl_files),
                "no crl_files with insecure_skip_verify = true (nothing is verified)",
            );
        }
    }
    for (i, p) in t.crl_files.iter().enumerate() {
        if p.as_os_str().is_empty() {
            e(
                format!("upstreams.{name}.tls.crl_files[{i}]"),
                &"\"\"",
                "a PEM certificate revocation list file path",
            );
        }
    }
    if t.crl_files.is_empty() {
        for (key, value) in t.crl_policy().non_default_keys() {
            e(
                k(key),
                &value,
                "to be left out: it applies to crl_files, and there are none",
            );
        }
    }
    match &t.server_name {
        Some(n) if rustls::pki_types::ServerName::try_from(n.as_str()).is_err() => {
            e(
                k("server_name"),
                &quoted(n),
                "a DNS name like `api.internal` or an IP address",
            );
        }
        Some(_) => {}
        None if !t.insecure_skip_verify => {
            if let Some(b) = u.backends.iter().find(|b| b.addr.host().is_none()) {
                e(
                    k("server_name"),
                    &"(absent)",
                    &format!(
                        "the name backend {} presents a certificate for (an IP backend has \
                         no host name to verify), or insecure_skip_verify = true",
                        b.addr
                    ),
                );
            }
        }
        None => {}
    }
    if let Some(alpn) = &t.alpn {
        for (i, p) in alpn.iter().enumerate() {
            if p.is_empty() || p.len() > 255 {
                e(
                    format!("upstreams.{name}.tls.alpn[{i}]"),
                    &quoted(p),
                    "a protocol name of 1 to 255 bytes",
                );
            }
        }
        let token = u.protocol.alpn();
        if !alpn.iter().any(|p| p == token) {
            e(
                k("alpn"),
                &format!("{alpn:?}"),
                &format!("a list that includes \"{token}\" (the upstream's protocol)"),
            );
        }
    }
}

/// Longest accepted duration for any timeout: far beyond any sensible setting, short enough
/// that `now + timeout` can never overflow a clock.
pub const MAX_DURATION: Duration = Duration::from_secs(30 * 24 * 3600);

fn too_long(d: Duration) -> bool {
    d > MAX_DURATION
}

fn quoted(s: &str) -> String {
    format!("{s:?}")
}

/// RFC 9110 `tchar`.
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

mod defaults {
    use std::net::{Ipv4Addr, SocketAddr};
    use std::time::Duration;

    pub fn yes() -> bool {
        true
    }
    pub fn xfcc_details() -> Vec<super::XfccDetail> {
        use super::XfccDetail::{Dns, Subject, Uri};
        vec![Subject, Uri, Dns]
    }
    pub fn listener_name() -> String {
        "default".into()
    }
    pub fn max_connections() -> usize {
        // High enough for tens of thousands of idle keep-alive clients; the limit guards
        // file descriptors, not memory (an idle connection costs a few KiB).
        50_000
    }
    pub fn backlog() -> u32 {
        1024
    }
    pub fn tcp_keepalive() -> Option<Duration> {
        Some(Duration::from_secs(60))
    }
    pub fn header_read_timeout() -> Duration {
        Duration::from_secs(10)
    }
    pub fn idle_timeout() -> Duration {
        Duration::from_secs(60)
    }
    pub fn request_timeout() -> Duration {
        Duration::from_secs(60)
    }
    pub fn max_header_bytes() -> usize {
        64 * 1024
    }
    pub fn max_body_bytes() -> Option<u64> {
        Some(100 * 1024 * 1024)
    }
    pub fn connect_timeout() -> Duration {
        Duration::from_secs(5)
    }
    pub fn queue_size() -> usize {
        128
    }
    pub fn queue_timeout() -> Duration {
        Duration::from_secs(5)
    }
    pub fn pool_idle_per_backend() -> usize {
        256
    }
    pub fn pool_idle_timeout() -> Duration {
        Duration::from_secs(90)
    }
    pub fn weight() -> u32 {
        1
    }
    pub fn admin_addr() -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, 9090))
    }
    pub fn resolve_interval() -> Duration {
        Duration::from_secs(30)
    }
    pub fn shutdown_timeout() -> Duration {
        Duration::from_secs(30)
    }
    pub fn retry_buffer_total_bytes() -> u64 {
        64 * 1024 * 1024
    }
    pub fn log_level() -> String {
        "info".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Config, toml::de::Error> {
        toml::from_str(s)
    }

    const MINIMAL: &str = r#"
        [[listeners]]
        addr = "127.0.0.1:8080"
        [[routes]]
        upstream = "api"
        [upstreams.api]
        backends = [{ addr = "127.0.0.1:9001" }]
    "#;

    #[test]
    fn minimal_config_gets_defaults() {
        let c = parse(MINIMAL).unwrap();
        c.validate().unwrap();
        let l = &c.listeners[0];
        assert_eq!(l.name, "default");
        assert!(l.http2 && l.nodelay);
        assert_eq!(l.max_header_bytes, 64 * 1024);
        assert_eq!(c.upstreams["api"].algorithm, AlgorithmName::RoundRobin);
        assert_eq!(c.upstreams["api"].backends[0].weight, 1);
        assert_eq!(c.admin.addr, "127.0.0.1:9090".parse().unwrap());
    }

    #[test]
    fn unknown_keys_are_rejected_everywhere() {
        for extra in [
            "[[listeners]]\naddr = \"127.0.0.1:1\"\nbogus = 1",
            "[admin]\nbogus = 1",
            "[log]\nbogus = 1",
            "[server]\nbogus = 1",
            "[upstreams.x]\nbackends = []\nbogus = 1",
            "[upstreams.x]\nbackends = [{ addr = \"127.0.0.1:1\", bogus = 1 }]",
            "[upstreams.x]\nbackends = []\n[upstreams.x.health]\nbogus = 1",
            "[upstreams.x]\nbackends = []\n[upstreams.x.tls]\nbogus = 1",
            "[[routes]]\nupstream = \"x\"\nbogus = 1",
            "bogus = 1",
        ] {
            let err = parse(extra).unwrap_err().to_string();
            assert!(err.contains("bogus"), "{extra}: {err}");
        }
    }

    #[test]
    fn durations_and_hash_keys_parse() {
        let c = parse(
            r#"
            [[listeners]]
            addr = "127.0.0.1:8080"
            idle_timeout = "1m 30s"
            request_timeout = "250ms"
            [[routes]]
            upstream = "api"
            timeout = "2s"
            [upstreams.api]
            algorithm = "ketama"
            hash_key = "header:X-User"
            backends = [{ addr = "127.0.0.1:9001" }]
        "#,
        )
        .unwrap();
        assert_eq!(c.listeners[0].idle_timeout, Duration::from_secs(90));
        assert_eq!(c.listeners[0].request_timeout, Duration::from_millis(250));
        assert_eq!(c.routes[0].timeout, Some(Duration::from_secs(2)));
        assert_eq!(c.upstreams["api"].algorithm, AlgorithmName::RingHash);
        assert_eq!(
            c.upstreams["api"].hash_key,
            HashKey::Header("x-user".into())
        );
        assert!(parse(&MINIMAL.replace("backends", "hash_key = \"header:\"\nbackends")).is_err());
        assert!(parse(&MINIMAL.replace("backends", "hash_key = \"ip\"\nbackends")).is_err());
    }

    #[test]
    fn round_trips_through_toml_and_json() {
        let c = parse(MINIMAL).unwrap();
        let again: Config = toml::from_str(&toml::to_string(&c).unwrap()).unwrap();
        assert_eq!(c, again);
        let again: Config = serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
        assert_eq!(c, again);
    }

    #[test]
    fn validation_names_key_value_and_expectation() {
        let mut c = parse(MINIMAL).unwrap();
        c.routes[0].upstream = "nope".into();
        c.upstreams.get_mut("api").unwrap().backends[0].weight = 0;
        c.listeners[0].max_header_bytes = 100;
        c.listeners[0].idle_timeout = Duration::from_secs(u64::MAX / 4);
        c.routes.push(RouteConfig {
            path_prefix: Some("api".into()),
            methods: Some(vec!["get".into()]),
            listener: Some("ghost".into()),
            ..RouteConfig::to_upstream("api")
        });
        let errs = c.validate().unwrap_err();
        let keys: Vec<_> = errs.iter().map(|e| e.key_path.as_str()).collect();
        assert_eq!(
            keys,
            [
                "listeners[0].max_header_bytes",
                "listeners[0].idle_timeout",
                "routes[0].upstream",
                "routes[1].listener",
                "routes[1].path_prefix",
                "routes[1].methods[0]",
                "upstreams.api.backends[0].weight",
            ]
        );
        assert_eq!(
            errs[2].to_string(),
            "routes[0].upstream: got \"nope\", expected one of the [upstreams] names (api)"
        );
    }

    #[test]
    fn backends_may_be_dns_names() {
        let c = parse(&MINIMAL.replace(
            "backends = [{ addr = \"127.0.0.1:9001\" }]",
            "resolve_interval = \"5s\"\nbackends = [{ addr = \"127.0.0.1:9001\" }, \
             { addr = \"Backend.Internal:8080\", weight = 2 }, { addr = \"[::1]:9\" }]",
        ))
        .unwrap();
        c.validate().unwrap();
        let u = &c.upstreams["api"];
        assert_eq!(u.resolve_interval, Duration::from_secs(5));
        assert_eq!(
            u.backends[1].addr,
            BackendAddr::Name {
                host: "backend.internal".into(),
                port: 8080
            }
        );
        assert_eq!(
            u.backends[2].addr,
            BackendAddr::Ip("[::1]:9".parse().unwrap())
        );
        // Round trip keeps the name.
        let again: Config = toml::from_str(&toml::to_string(&c).unwrap()).unwrap();
        assert_eq!(c, again);

        for bad in [
            "backend.internal",
            "backend.internal:http",
            "backend.internal:70000",
            "::1:80",
            "[::1:80",
            "bad host:80",
            "-x.example:80",
            "a..b:80",
            ":80",
        ] {
            let text = MINIMAL.replace("127.0.0.1:9001", bad);
            let err = parse(&text).unwrap_err().to_string();
            assert!(
                err.contains("is not ip:port, [ipv6]:port or host:port"),
                "{bad}: {err}"
            );
        }

        let mut c = parse(MINIMAL).unwrap();
        let u = c.upstreams.get_mut("api").unwrap();
        u.backends = vec![
            BackendConfig::at("svc.test:0".parse().unwrap()),
            BackendConfig::at("svc.test:80".parse().unwrap()),
            BackendConfig::at("SVC.test:80".parse().unwrap()),
        ];
        u.resolve_interval = Duration::from_millis(10);
        let keys: Vec<_> = c
            .validate()
            .unwrap_err()
            .into_iter()
            .map(|e| e.key_path)
            .collect();
        assert_eq!(
            keys,
            [
                "upstreams.api.backends[0].addr",
                "upstreams.api.backends[2].addr",
                "upstreams.api.resolve_interval",
            ]
        );
    }

    #[test]
    fn server_and_admin_sections() {
        let c = parse(MINIMAL).unwrap();
        assert_eq!(c.server.shutdown_timeout, Duration::from_secs(30));
        assert!(c.admin.enabled);
        let c = parse(&format!(
            "{MINIMAL}\n[server]\nshutdown_timeout = \"2s\"\n[admin]\nenabled = false\n"
        ))
        .unwrap();
        c.validate().unwrap();
        assert_eq!(c.server.shutdown_timeout, Duration::from_secs(2));
        assert!(!c.admin.enabled);
        let mut c = c;
        c.server.shutdown_timeout = MAX_DURATION * 2;
        assert_eq!(
            c.validate().unwrap_err()[0].key_path,
            "server.shutdown_timeout"
        );
    }

    #[test]
    fn trusted_proxies_are_cidrs() {
        let c = parse(&MINIMAL.replace(
            "addr = \"127.0.0.1:8080\"",
            "addr = \"127.0.0.1:8080\"\ntrusted_proxies = [\"10.0.0.0/8\", \"::1\"]",
        ))
        .unwrap();
        let t = &c.listeners[0].trusted_proxies;
        assert_eq!(t.len(), 2);
        assert!(t[0].contains("10.2.3.4".parse().unwrap()));
        assert_eq!(t[1].to_string(), "::1/128");
        let err = parse(&MINIMAL.replace(
            "addr = \"127.0.0.1:8080\"",
            "addr = \"127.0.0.1:8080\"\ntrusted_proxies = [\"10.0.0.1/8\"]",
        ))
        .unwrap_err()
        .to_string();
        assert!(err.contains("host bits are set"), "{err}");
    }

    #[test]
    fn one_line_start_config_is_valid() {
        let c = Config::from_backends(
            "127.0.0.1:8080".parse().unwrap(),
            [
                "127.0.0.1:9001".parse().unwrap(),
                "127.0.0.1:9002".parse().unwrap(),
            ],
            "wrr".parse().unwrap(),
        );
        c.validate().unwrap();
        assert_eq!(
            c.upstreams["default"].algorithm,
            AlgorithmName::WeightedRoundRobin
        );
        assert!("nonsense"
            .parse::<AlgorithmName>()
            .unwrap_err()
            .contains("maglev"));
    }
}
