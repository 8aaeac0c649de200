//! Configuration (serde) for a local keyed limiter, as written in a gateway config file.
use std::fmt;
use std::hash::Hash;
use std::time::Duration;

use http::HeaderName;
use serde::de::{self, Deserializer};
use serde::Deserialize;

use crate::clock::CoarseClock;

use super::rate::serde_duration;
use super::{AlgorithmKind, AnyAlgorithm, KeyedConfig, KeyedRateLimiter, Quota, Rate};

/// A limiter configuration that cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// `burst` is zero.
    #[error("rate limit `burst` must be at least 1")]
    ZeroBurst,
    /// A sliding-window log would hold too many timestamps per key.
    #[error("rate limit `sliding_window_log` keeps one entry per admitted request; {0} per window is too many (max {max}), use `sliding_window_counter`", max = MAX_LOG_LIMIT)]
    LogTooLarge(u64),
    /// `max_keys` is zero.
    #[error("rate limit `max_keys` must be at least 1")]
    ZeroKeys,
}

const MAX_LOG_LIMIT: u64 = 10_000;

/// Where the key of an HTTP request comes from.
///
/// In configuration: `"ip"` (or `"client_ip"`), `{ header = "x-api-key" }`,
/// `{ cookie = "session" }`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum KeySource {
    /// The peer IP address ([`ClientAddr`](super::ClientAddr) request extension).
    #[default]
    ClientIp,
    /// The value of a request header, such as an API key.
    Header(HeaderName),
    /// The value of a cookie.
    Cookie(String),
}

impl fmt::Display for KeySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ClientIp => f.write_str("ip"),
            Self::Header(h) => write!(f, "header {h}"),
            Self::Cookie(c) => write!(f, "cookie {c}"),
        }
    }
}

impl<'de> Deserialize<'de> for KeySource {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(rename_all = "snake_case", deny_unknown_fields)]
        enum Tagged {
            Header(String),
            Cookie(String),
        }
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Repr {
            Name(String),
            Tagged(Tagged),
        }
        match Repr::deserialize(d)? {
            Repr::Name(n) if n == "ip" || n == "client_ip" => Ok(Self::ClientIp),
            Repr::Name(n) => Err(de::Error::custom(format!(
                "unknown rate limit key {n:?}: expected \"ip\", {{ header = \"NAME\" }} or {{ cookie = \"NAME\" }}"
            ))),
            Repr::Tagged(Tagged::Header(h)) => HeaderName::from_bytes(h.as_bytes())
                .map(Self::Header)
                .map_err(|_| de::Error::custom(format!("invalid header name {h:?}"))),
            Repr::Tagged(Tagged::Cookie(c)) => Ok(Self::Cookie(c)),
        }
    }
}

/// A local (in-process) keyed rate limit.
///
/// ```
/// use scalewise::ratelimit::{KeySource, RateLimitConfig};
///
/// let cfg: RateLimitConfig = serde_json::from_str(r#"{
///     "algorithm": "sliding_window_counter",
///     "rate": "600/min",
///     "key": { "header": "x-api-key" },
///     "max_keys": 50000,
///     "idle_timeout": "5min"
/// }"#).unwrap();
/// assert_eq!(cfg.key, KeySource::Header(http::HeaderName::from_static("x-api-key")));
/// let limiter = cfg.build_keyed::<String>().unwrap();
/// assert!(limiter.check(&"k".to_string()).allowed);
///
/// // The gateway's `--rate-limit 100/s` flag:
/// let quick = RateLimitConfig::per_client_ip("100/s".parse().unwrap());
/// assert_eq!(quick.quota().unwrap().burst, 100);
/// ```
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Which algorithm; default `gcra`.
    #[serde(default)]
    pub algorithm: AlgorithmKind,
    /// The rate, such as `"100/s"`.
    pub rate: Rate,
    /// Units admitted at once; default: the rate's count. Ignored by window algorithms,
    /// whose limit per window is the rate's count.
    #[serde(default)]
    pub burst: Option<u64>,
    /// For `leaky_bucket`: delay requests by up to this long instead of rejecting them
    /// (shaping). Default: no delay (policing).
    #[serde(default, deserialize_with = "serde_duration::deserialize_opt")]
    pub max_wait: Option<Duration>,
    /// What a request is keyed by; default the client IP.
    #[serde(default)]
    pub key: KeySource,
    /// Most keys held in memory; default 100 000.
    #[serde(default = "default_max_keys")]
    pub max_keys: usize,
    /// Forget keys idle this long; default: when their state is back to fresh (≥ 1 s).
    #[serde(default, deserialize_with = "serde_duration::deserialize_opt")]
    pub idle_timeout: Option<Duration>,
}

fn default_max_keys() -> usize {
    KeyedConfig::default().max_keys
}

impl RateLimitConfig {
    /// GCRA at `rate` per client IP with default sizing (the gateway's quick flag).
    pub fn per_client_ip(rate: Rate) -> Self {
        Self {
            algorithm: AlgorithmKind::Gcra,
            rate,
            burst: None,
            max_wait: None,
            key: KeySource::ClientIp,
            max_keys: default_max_keys(),
            idle_timeout: None,
        }
    }

    /// The rate with its burst.
    ///
    /// # Errors
    /// [`ConfigError::ZeroBurst`] for `burst = 0`.
    pub fn quota(&self) -> Result<Quota, ConfigError> {
        match self.burst {
            Some(0) => Err(ConfigError::ZeroBurst),
            Some(b) => Ok(Quota::new(self.rate).with_burst(b)),
            None => Ok(Quota::new(self.rate)),
        }
    }

    /// The configured algorithm.
    ///
    /// # Errors
    /// See [`ConfigError`].
    pub fn build_algorithm(&self) -> Result<AnyAlgorithm, ConfigError> {
        if self.algorithm == AlgorithmKind::SlidingWindowLog && self.rate.count() > MAX_LOG_LIMIT {
            return Err(ConfigError::LogTooLarge(self.rate.count()));
        }
        Ok(AnyAlgorithm::new(
            self.algorithm,
            self.quota()?,
            self.max_wait,
        ))
    }

    /// The keyed limiter this configuration describes.
    ///
    /// # Errors
    /// See [`ConfigError`].
    pub fn build_keyed<K: Hash + Eq + Clone + Send + 'static>(
        &self,
    ) -> Result<KeyedRateLimiter<K, AnyAlgorithm, CoarseClock>, ConfigError> {
        if self.max_keys == 0 {
            return Err(ConfigError::ZeroKeys);
        }
        Ok(KeyedRateLimiter::with_config(
            self.build_algorithm()?,
            KeyedConfig {
                max_keys: self.max_keys,
                idle_timeout: self.idle_timeout,
                ..KeyedConfig::default()
            },
            super::keyed::default_clock(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_sources_parse() {
        let k: KeySource = serde_json::from_str(r#""ip""#).unwrap();
        assert_eq!(k, KeySource::ClientIp);
        let k: KeySource = serde_json::from_str(r#"{"cookie":"sid"}"#).unwrap();
        assert_eq!(k, KeySource::Cookie("sid".into()));
        assert!(serde_json::from_str::<KeySource>(r#""host""#).is_err());
        assert!(serde_json::from_str::<KeySource>(r#"{"header":"bad header"}"#).is_err());
    }

    #[test]
    fn config_errors_name_the_problem() {
        let cfg: RateLimitConfig =
            serde_json::from_str(r#"{"rate":"100000/s","algorithm":"sliding_window_log"}"#)
                .unwrap();
        assert_eq!(
            cfg.build_algorithm().unwrap_err(),
            ConfigError::LogTooLarge(100_000)
        );
        let cfg: RateLimitConfig = serde_json::from_str(r#"{"rate":"1/s","burst":0}"#).unwrap();
        assert!(cfg.build_keyed::<String>().is_err());
        let err = serde_json::from_str::<RateLimitConfig>(r#"{"rate":"1/parsec"}"#).unwrap_err();
        assert!(err.to_string().contains("COUNT/PERIOD"), "{err}");
        let cfg: RateLimitConfig =
            serde_json::from_str(r#"{"rate":"1/s","algorithm":"leaky_bucket","max_wait":"250ms"}"#)
                .unwrap();
        assert_eq!(cfg.max_wait, Some(Duration::from_millis(250)));
    }
}
