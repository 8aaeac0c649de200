//! Configuration of the gateway's policies: named rate limits (`[rate_limits.NAME]`) that
//! routes refer to, and the checks [`Config::validate`](crate::config::Config::validate)
//! runs on every policy setting. Route and upstream policy keys (`rate_limit`, `retries`,
//! `concurrency`, `shed`, `circuit_breaker`, `retry_budget`) live on those sections and
//! reuse the library's serde types; see docs/gateway-policies.md.
use crate::config::{Config, ConfigError, HashKey};
use scalewise::ratelimit::redis::RedisAlgorithm;
use scalewise::ratelimit::{AlgorithmKind, Rate};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// A rate limit (`[rate_limits.NAME]`), local to this process or global through Redis.
///
/// ```
/// use scalewise_gateway::policy::RateLimitSpec;
///
/// let spec: RateLimitSpec = toml::from_str(r#"
///     rate = "100/s"
///     burst = 20
///     key = "header:x-api-key"
/// "#).unwrap();
/// assert_eq!(spec.rate.count(), 100);
/// assert!(spec.redis.is_none());
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitSpec {
    /// Sustained rate, `COUNT/PERIOD` (`"100/s"`, `"6000/min"`, `"10/100ms"`).
    #[serde(serialize_with = "display")]
    pub rate: Rate,
    /// Requests admitted at once after a quiet period; default: the rate's count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u64>,
    /// Local algorithm: `gcra` (default), `token_bucket`, `leaky_bucket`, `fixed_window`,
    /// `sliding_window_log`, `sliding_window_counter`. With `redis`: `gcra` or
    /// `sliding_window`.
    #[serde(default = "default_algorithm")]
    pub algorithm: String,
    /// What requests are counted by: `client_ip` (default), `header:NAME` or `cookie:NAME`.
    /// Requests without the header or cookie share one key.
    #[serde(default)]
    pub key: HashKey,
    /// Most keys held in memory (least recently seen evicted first).
    #[serde(default = "default_max_keys")]
    pub max_keys: usize,
    /// Make the limit global: all gateways using this Redis share one budget per key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis: Option<RedisSpec>,
}

impl RateLimitSpec {
    /// A local GCRA limit at `rate` per client IP (the `--rate-limit` flag).
    pub fn per_client_ip(rate: Rate) -> Self {
        Self {
            rate,
            burst: None,
            algorithm: default_algorithm(),
            key: HashKey::ClientIp,
            max_keys: default_max_keys(),
            redis: None,
        }
    }

    pub(crate) fn local_algorithm(&self) -> Option<AlgorithmKind> {
        AlgorithmKind::deserialize(
            serde::de::value::StrDeserializer::<serde::de::value::Error>::new(&self.algorithm),
        )
        .ok()
    }

    pub(crate) fn redis_algorithm(&self) -> Option<RedisAlgorithm> {
        match self.algorithm.as_str() {
            "gcra" => Some(RedisAlgorithm::Gcra),
            "sliding_window" | "sliding_window_counter" => Some(RedisAlgorithm::SlidingWindow),
            _ => None,
        }
    }
}

/// Redis settings of a global rate limit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisSpec {
    /// `redis://host:port/db`, without a password (the admin API shows this URL).
    pub url: String,
    /// Redis password (AUTH); redacted in `GET /api/config`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// Key prefix; default `scalewise:gw:NAME:`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// Longest wait for Redis per check before the fallback answers.
    #[serde(default = "default_redis_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// While Redis is unreachable: `fail_open` (default), `fail_closed`, or `local`
    /// (limit in this process at `local_share` of the rate).
    #[serde(default)]
    pub fallback: FallbackSpec,
    /// For `fallback = "local"`: the share of the global rate this gateway allows on its
    /// own, e.g. 1 / number of gateways. In (0, 1].
    #[serde(default = "default_share")]
    pub local_share: f64,
}

impl RedisSpec {
    /// The URL to connect to: `url` with `password` in its user-info part.
    pub(crate) fn connect_url(&self) -> String {
        let Some(pw) = &self.password else {
            return self.url.clone();
        };
        let Some((scheme, rest)) = self.url.split_once("://") else {
            return self.url.clone();
        };
        let encoded: String = pw
            .bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect();
        match rest.split_once('@') {
            Some((user, host)) => format!("{scheme}://{user}:{encoded}@{host}"),
            None => format!("{scheme}://:{encoded}@{rest}"),
        }
    }

    fn url_has_password(&self) -> bool {
        let rest = self.url.split_once("://").map_or("", |(_, r)| r);
        let authority = rest.split('/').next().unwrap_or("");
        authority
            .rsplit_once('@')
            .is_some_and(|(userinfo, _)| userinfo.contains(':'))
    }
}

/// What answers a Redis-global limit while Redis is away.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FallbackSpec {
    /// Admit.
    #[default]
    FailOpen,
    /// Deny (429).
    FailClosed,
    /// Limit locally at `local_share` of the rate.
    Local,
}

/// An adaptive concurrency limit of a route (`routes[].adaptive_concurrency`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdaptiveSpec {
    /// `aimd` (default: additive increase, multiplicative decrease on drops) or `gradient2`
    /// (shrinks when latency rises above its long-term average).
    #[serde(default)]
    pub algorithm: AdaptiveAlgorithm,
    /// Starting limit.
    #[serde(default = "default_initial")]
    pub initial: u32,
    /// Lowest limit.
    #[serde(default = "default_min")]
    pub min: u32,
    /// Highest limit.
    #[serde(default = "default_max")]
    pub max: u32,
}

/// Algorithm of an [`AdaptiveSpec`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AdaptiveAlgorithm {
    /// [`scalewise::concurrency::Aimd`].
    #[default]
    Aimd,
    /// [`scalewise::concurrency::Gradient2`].
    Gradient2,
}

fn default_initial() -> u32 {
    20
}
fn default_min() -> u32 {
    1
}
fn default_max() -> u32 {
    1000
}

fn display<S: serde::Serializer>(v: &impl std::fmt::Display, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

fn default_algorithm() -> String {
    "gcra".into()
}
fn default_max_keys() -> usize {
    100_000
}
fn default_redis_timeout() -> Duration {
    Duration::from_millis(50)
}
fn default_share() -> f64 {
    1.0
}

/// Name of the rate limit the `--rate-limit` flag adds.
pub const FLAG_LIMIT_NAME: &str = "cli";

/// What `--rate-limit RATE` does to a config: adds `[rate_limits.cli]` (local, per client
/// IP) and makes every route without a `rate_limit` use it. Applied on start and on every
/// reload, like the other command-line overrides.
pub fn apply_rate_limit_flag(config: &mut Config, rate: Rate) {
    config
        .rate_limits
        .insert(FLAG_LIMIT_NAME.into(), RateLimitSpec::per_client_ip(rate));
    for r in &mut config.routes {
        if r.rate_limit.is_none() {
            r.rate_limit = Some(FLAG_LIMIT_NAME.into());
        }
    }
}

/// Policy checks of [`Config::validate`](crate::config::Config::validate).
pub(crate) fn validate(c: &Config, errs: &mut Vec<ConfigError>) {
    let mut e = |k: String, v: &dyn std::fmt::Display, x: &str| {
        errs.push(ConfigError {
            key_path: k,
            value: v.to_string(),
            expected: x.into(),
        })
    };
    for (name, l) in &c.rate_limits {
        let k = |f: &str| format!("rate_limits.{name}.{f}");
        if l.burst == Some(0) {
            e(k("burst"), &0, "at least 1, or leave it out");
        }
        if l.max_keys == 0 {
            e(k("max_keys"), &0, "at least 1");
        }
        if l.key == HashKey::Path {
            e(k("key"), &"path", "client_ip, header:NAME or cookie:NAME");
        }
        match &l.redis {
            None => match l.local_algorithm() {
                None => e(
                    k("algorithm"),
                    &format!("{:?}", l.algorithm),
                    "gcra, token_bucket, leaky_bucket, fixed_window, sliding_window_log or sliding_window_counter",
                ),
                Some(AlgorithmKind::SlidingWindowLog) if l.rate.count() > 10_000 => e(
                    k("rate"),
                    &l.rate,
                    "at most 10000 per window for sliding_window_log (use sliding_window_counter)",
                ),
                Some(_) => {}
            },
            Some(r) => {
                if l.redis_algorithm().is_none() {
                    e(
                        k("algorithm"),
                        &format!("{:?}", l.algorithm),
                        "gcra or sliding_window for a Redis-global limit",
                    );
                }
                if !r.url.starts_with("redis://") && !r.url.starts_with("rediss://") {
                    e(k("redis.url"), &format!("{:?}", r.url), "a redis:// URL");
                }
                if r.url_has_password() {
                    e(
                        k("redis.url"),
                        &"a URL with a password",
                        "a URL without one: put the password in redis.password, which the admin API redacts",
                    );
                }
                if r.timeout.is_zero() {
                    e(k("redis.timeout"), &"0s", "a duration above zero");
                }
                if !(r.local_share > 0.0 && r.local_share <= 1.0) {
                    e(k("redis.local_share"), &r.local_share, "a share in (0, 1]");
                }
            }
        }
    }
    for (i, r) in c.routes.iter().enumerate() {
        let k = |f: &str| format!("routes[{i}].{f}");
        if let Some(name) = &r.rate_limit {
            if !c.rate_limits.contains_key(name) {
                let known: Vec<_> = c.rate_limits.keys().map(String::as_str).collect();
                e(
                    k("rate_limit"),
                    &format!("{name:?}"),
                    &format!("one of the [rate_limits] names ({})", known.join(", ")),
                );
            }
        }
        if r.retries.is_some_and(|n| n > 10) {
            e(k("retries"), &r.retries.unwrap_or_default(), "0 to 10");
        }
        if let Some(n) = r.retry_buffer_bytes {
            let total = c.server.retry_buffer_total_bytes;
            if n > total {
                e(
                    k("retry_buffer_bytes"),
                    &n,
                    &format!("at most server.retry_buffer_total_bytes ({total})"),
                );
            }
        }
        if let Some(b) = &r.concurrency {
            if b.max_concurrent == 0 {
                e(k("concurrency.max_concurrent"), &0, "at least 1");
            }
            if b.max_waiting > 0 && b.max_wait.is_zero() {
                e(
                    k("concurrency.max_wait"),
                    &"0s",
                    "a duration above zero when max_waiting > 0",
                );
            }
        }
        if let Some(a) = &r.adaptive_concurrency {
            if a.min == 0 || a.min > a.initial || a.initial > a.max {
                e(
                    k("adaptive_concurrency"),
                    &format!("min {} initial {} max {}", a.min, a.initial, a.max),
                    "1 <= min <= initial <= max",
                );
            }
        }
        if let Some(s) = &r.shed {
            if s.max_in_flight == 0 {
                e(k("shed.max_in_flight"), &0, "at least 1");
            }
        }
    }
    for (name, u) in &c.upstreams {
        if let Some(b) = &u.circuit_breaker {
            if let Err(err) = b.validate() {
                e(
                    format!("upstreams.{name}.circuit_breaker.{}", err.field),
                    &"an invalid value",
                    &format!("a value that {}", err.problem),
                );
            }
        }
        let b = &u.retry_budget;
        if !(b.retry_ratio.is_finite() && (0.0..=1000.0).contains(&b.retry_ratio)) {
            e(
                format!("upstreams.{name}.retry_budget.retry_ratio"),
                &b.retry_ratio,
                "0 to 1000",
            );
        }
        if b.window.is_zero() {
            e(
                format!("upstreams.{name}.retry_budget.window"),
                &"0s",
                "a duration above zero",
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: &str) -> Config {
        toml::from_str(&format!(
            r#"
            [[listeners]]
            addr = "127.0.0.1:8080"
            [[routes]]
            upstream = "api"
            rate_limit = "rl"
            [upstreams.api]
            backends = [{{ addr = "127.0.0.1:9001" }}]
            {extra}
            "#
        ))
        .unwrap()
    }

    fn keys(c: &Config) -> Vec<String> {
        c.validate()
            .err()
            .unwrap_or_default()
            .into_iter()
            .map(|e| e.key_path)
            .collect()
    }

    #[test]
    fn policy_settings_are_checked() {
        assert_eq!(keys(&config("")), ["routes[0].rate_limit"]);
        assert!(keys(&config("[rate_limits.rl]\nrate = \"10/s\"")).is_empty());
        assert_eq!(
            keys(&config(
                "[rate_limits.rl]\nrate = \"10/s\"\nburst = 0\nalgorithm = \"magic\"\nkey = \"path\""
            )),
            [
                "rate_limits.rl.burst",
                "rate_limits.rl.key",
                "rate_limits.rl.algorithm"
            ]
        );
        assert_eq!(
            keys(&config(
                "[rate_limits.rl]\nrate = \"10/s\"\nalgorithm = \"token_bucket\"\nredis = { url = \"redis://:pw@127.0.0.1\", local_share = 2.0 }"
            )),
            [
                "rate_limits.rl.algorithm",
                "rate_limits.rl.redis.url",
                "rate_limits.rl.redis.local_share"
            ]
        );
        let mut c = config("[rate_limits.rl]\nrate = \"10/s\"");
        c.routes[0].retries = Some(11);
        c.routes[0].retry_buffer_bytes = Some(c.server.retry_buffer_total_bytes + 1);
        c.upstreams.get_mut("api").unwrap().retry_budget.retry_ratio = -1.0;
        assert_eq!(
            keys(&c),
            [
                "routes[0].retries",
                "routes[0].retry_buffer_bytes",
                "upstreams.api.retry_budget.retry_ratio"
            ]
        );
        assert!(toml::from_str::<Config>("[rate_limits.x]\nrate = \"fast\"").is_err());
    }

    #[test]
    fn flag_adds_a_limit_to_routes_without_one_and_round_trips() {
        let mut c = config("[rate_limits.rl]\nrate = \"10/s\"");
        c.routes
            .push(crate::config::RouteConfig::to_upstream("api"));
        apply_rate_limit_flag(&mut c, "100/s".parse().unwrap());
        assert_eq!(c.routes[0].rate_limit.as_deref(), Some("rl"));
        assert_eq!(c.routes[1].rate_limit.as_deref(), Some(FLAG_LIMIT_NAME));
        c.validate().unwrap();
        let again: Config = toml::from_str(&toml::to_string(&c).unwrap()).unwrap();
        assert_eq!(again, c);
    }

    #[test]
    fn password_goes_into_the_connect_url_only() {
        let r: RedisSpec =
            toml::from_str("url = \"redis://10.0.0.1:6379/2\"\npassword = \"p@ss:w\"").unwrap();
        assert_eq!(r.connect_url(), "redis://:p%40ss%3Aw@10.0.0.1:6379/2");
        assert!(!r.url_has_password());
        let mut v = serde_json::to_value(&r).unwrap();
        crate::config_file::redact(&mut v);
        assert_eq!(v["password"], "<redacted>");
    }
}
