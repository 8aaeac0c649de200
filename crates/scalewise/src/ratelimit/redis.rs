//! Global rate limits shared by several processes through Redis (feature `redis`).
//!
//! Each check is one `EVALSHA` of a Lua script that reads the server's clock (`TIME`),
//! decides and updates the key atomically, so instances never race each other and their
//! clocks need not agree. Checks go over one multiplexed [`ConnectionManager`], so many
//! concurrent checks are pipelined on one socket.
//!
//! When Redis fails or answers slower than `timeout`, the check is answered by the
//! configured [`Fallback`] instead, and a [`CircuitBreaker`] stops sending checks to Redis
//! once too many fail. After its open duration it lets a probe through; when the probe
//! succeeds the limiter is back on Redis ([`Mode::Redis`]) without any intervention.
//!
//! ```no_run
//! use scalewise::ratelimit::redis::{Fallback, RedisLimiterConfig, RedisRateLimiter};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let mut config = RedisLimiterConfig::new("redis://127.0.0.1:6379", "100/s".parse()?);
//! config.prefix = "myapp:rl:".into();
//! config.fallback = Fallback::Local { share: 0.25 };
//! let limiter = RedisRateLimiter::connect(config).await?;
//! let d = limiter.check("client-42").await;
//! println!("allowed={} remaining={} mode={:?}", d.allowed, d.remaining, limiter.mode());
//! # Ok(()) }
//! ```
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use serde::Deserialize;

use crate::clock::CoarseClock;

use super::rate::serde_duration;
use super::{
    AlgorithmKind, AnyAlgorithm, Decision, DecisionFuture, KeyedConfig, KeyedRateLimiter,
    LimitStore, Quota, Rate,
};
use crate::breaker::{BreakerConfig, CircuitBreaker, State, WindowConfig};

/// Which script runs in Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RedisAlgorithm {
    /// GCRA: one integer per key.
    #[default]
    Gcra,
    /// Sliding-window counter: a small hash per key.
    SlidingWindow,
    /// Token bucket: a small hash per key (credit and time of last refill).
    TokenBucket,
}

/// What answers checks while Redis is unreachable or slow.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Fallback {
    /// Admit everything (availability first).
    #[default]
    FailOpen,
    /// Deny everything (protection first).
    FailClosed,
    /// Limit in this process at `share` of the global rate (e.g. 1 / number of instances).
    Local {
        /// Fraction of the global rate, in (0, 1].
        share: f64,
    },
}

/// Whether checks are currently answered by Redis or by the fallback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Redis decides.
    Redis,
    /// The [`Fallback`] decides (the breaker is open or probing).
    Fallback,
}

/// Configuration of a [`RedisRateLimiter`].
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisLimiterConfig {
    /// `redis://host:port/db`.
    pub url: String,
    /// Prepended to every key; default `"scalewise:rl:"`.
    #[serde(default = "default_prefix")]
    pub prefix: String,
    /// `gcra` (default), `sliding_window` or `token_bucket`.
    #[serde(default)]
    pub algorithm: RedisAlgorithm,
    /// The global rate.
    pub rate: Rate,
    /// GCRA burst; default the rate's count.
    #[serde(default)]
    pub burst: Option<u64>,
    /// Longest wait for Redis per check (and per connection attempt); default 50 ms.
    #[serde(default, deserialize_with = "serde_duration::deserialize_opt")]
    pub timeout: Option<Duration>,
    /// What decides while Redis is away; default fail-open.
    #[serde(default)]
    pub fallback: Fallback,
    /// The circuit breaker in front of Redis; default [`RedisLimiterConfig::default_breaker`].
    /// Timeouts and errors count as failures.
    #[serde(default = "RedisLimiterConfig::default_breaker")]
    pub breaker: BreakerConfig,
    /// Key bound of the local fallback limiter; default 100 000.
    #[serde(default = "default_max_keys")]
    pub max_keys: usize,
}

fn default_prefix() -> String {
    "scalewise:rl:".to_string()
}
fn default_max_keys() -> usize {
    KeyedConfig::default().max_keys
}

impl RedisLimiterConfig {
    /// GCRA at `rate` on `url`, other settings default.
    pub fn new(url: impl Into<String>, rate: Rate) -> Self {
        Self {
            url: url.into(),
            prefix: default_prefix(),
            algorithm: RedisAlgorithm::Gcra,
            rate,
            burst: None,
            timeout: None,
            fallback: Fallback::FailOpen,
            breaker: Self::default_breaker(),
            max_keys: default_max_keys(),
        }
    }

    /// Judges the last 20 checks, opens at 50 % failures (after 5 checks), stays open 1 s
    /// (doubling up to 30 s while Redis stays away), then lets one probe through.
    pub fn default_breaker() -> BreakerConfig {
        BreakerConfig {
            window: WindowConfig::Count { size: 20 },
            failure_rate_threshold: 0.5,
            minimum_calls: 5,
            open_duration: Duration::from_secs(1),
            open_backoff_multiplier: 2.0,
            max_open_duration: Duration::from_secs(30),
            half_open_permitted_calls: 1,
            ..BreakerConfig::default()
        }
    }

    fn quota(&self) -> Quota {
        Quota::new(self.rate).with_burst(self.burst.unwrap_or(self.rate.count()))
    }
}

/// A Redis store could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum RedisStoreError {
    /// The URL is not a Redis URL.
    #[error("invalid redis url {url:?}: {source}")]
    Url {
        /// The URL.
        url: String,
        /// Why.
        source: redis::RedisError,
    },
    /// The first connection failed.
    #[error("cannot connect to redis at {url:?}: {source}")]
    Connect {
        /// The URL.
        url: String,
        /// Why.
        source: redis::RedisError,
    },
    /// The first connection did not complete within the timeout.
    #[error("connecting to redis at {url:?} timed out after {timeout:?}")]
    Timeout {
        /// The URL.
        url: String,
        /// The timeout.
        timeout: Duration,
    },
    /// The breaker settings are out of range.
    #[error(transparent)]
    Breaker(#[from] crate::breaker::ConfigError),
    /// `share` of a local fallback is not in (0, 1].
    #[error("fallback share must be in (0, 1], got {0}")]
    Share(f64),
}

/// Keys the GCRA state: the theoretical arrival time in server microseconds.
/// Returns {allowed, remaining, retry_after_us (-1: never), reset_after_us}.
const GCRA_SCRIPT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local n = tonumber(ARGV[3])
local tolerance = interval * burst
local tat = tonumber(redis.call('GET', KEYS[1]))
if not tat or tat < now then tat = now end
if n > burst then
  return {0, math.floor(math.max(0, tolerance - (tat - now)) / interval), -1, tat - now}
end
local new_tat = tat + n * interval
local horizon = now + tolerance
if new_tat <= horizon then
  redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', math.ceil((new_tat - now) / 1000) + 1)
  return {1, math.floor((horizon - new_tat) / interval), 0, new_tat - now}
end
return {0, math.floor(math.max(0, horizon - tat) / interval), new_tat - horizon, tat - now}
"#;

/// Token bucket in a hash {c = credit in microseconds of refill, ts = last refill}.
const TOKEN_BUCKET_SCRIPT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local n = tonumber(ARGV[3])
local cap = interval * burst
local v = redis.call('HMGET', KEYS[1], 'c', 'ts')
local credit = tonumber(v[1]) or cap
local ts = tonumber(v[2]) or now
if now > ts then
  credit = math.min(cap, credit + (now - ts))
  ts = now
end
if n > burst then return {0, math.floor(credit / interval), -1, cap - credit} end
local need = n * interval
if credit >= need then
  credit = credit - need
  redis.call('HSET', KEYS[1], 'c', string.format('%.0f', credit), 'ts', string.format('%.0f', ts))
  redis.call('PEXPIRE', KEYS[1], math.ceil((cap - credit) / 1000) + 1)
  return {1, math.floor(credit / interval), 0, cap - credit}
end
return {0, math.floor(credit / interval), need - credit, cap - credit}
"#;

/// Sliding-window counter in a hash {w = window index, p = previous count, c = current}.
const SLIDING_SCRIPT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local period = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local n = tonumber(ARGV[3])
local window = math.floor(now / period)
local v = redis.call('HMGET', KEYS[1], 'w', 'p', 'c')
local w = tonumber(v[1]) or window
local prev = tonumber(v[2]) or 0
local cur = tonumber(v[3]) or 0
if window > w then
  if window == w + 1 then prev = cur else prev = 0 end
  cur = 0
end
local elapsed = now - window * period
local to_edge = period - elapsed
local estimate = math.ceil(prev * to_edge / period) + cur
local remaining = math.max(0, limit - estimate)
if n > limit then return {0, remaining, -1, to_edge} end
if estimate + n <= limit then
  cur = cur + n
  redis.call('HSET', KEYS[1], 'w', string.format('%.0f', window), 'p', prev, 'c', cur)
  redis.call('PEXPIRE', KEYS[1], math.ceil((to_edge + period) / 1000) + 1)
  return {1, remaining - n, 0, to_edge + period}
end
local retry
if cur + n <= limit then
  retry = math.max(1, math.ceil(period - (limit - cur - n) * period / prev) - elapsed)
else
  retry = to_edge + period - math.floor(math.min(period, (limit - n) * period / math.max(cur, 1)))
end
return {0, remaining, retry, to_edge}
"#;

enum FallbackLimiter {
    Open,
    Closed,
    Local(KeyedRateLimiter<String, AnyAlgorithm, CoarseClock>),
}

struct Inner {
    conn: ConnectionManager,
    script: redis::Script,
    prefix: String,
    /// GCRA, token bucket: emission interval; sliding window: period. Microseconds
    /// (Redis `TIME`).
    arg_us: u64,
    /// GCRA, token bucket: burst; sliding window: limit per period.
    limit: u64,
    timeout: Duration,
    breaker: CircuitBreaker,
    fallback: FallbackLimiter,
    retry_hint: Duration,
    counters: [AtomicU64; 4],
}

const BY_REDIS: usize = 0;
const BY_FALLBACK: usize = 1;
const ERRORS: usize = 2;
const TIMEOUTS: usize = 3;

/// Counters of a [`RedisRateLimiter`] since creation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RedisStats {
    /// Checks decided by Redis.
    pub redis: u64,
    /// Checks decided by the fallback (breaker open, error or timeout).
    pub fallback: u64,
    /// Redis calls that failed with an error.
    pub errors: u64,
    /// Redis calls that took longer than the timeout.
    pub timeouts: u64,
}

/// A rate limiter whose state lives in Redis, shared by every process using the same prefix.
/// Cheap to clone.
#[derive(Clone)]
pub struct RedisRateLimiter {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for RedisRateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisRateLimiter")
            .field("prefix", &self.inner.prefix)
            .field("mode", &self.mode())
            .finish_non_exhaustive()
    }
}

impl RedisRateLimiter {
    /// Connects to Redis and prepares the limiter.
    ///
    /// # Errors
    /// If the URL is invalid, the first connection fails or times out, the breaker settings
    /// or a local fallback share are out of range (checked before connecting). Later Redis failures never error: they engage the fallback.
    pub async fn connect(config: RedisLimiterConfig) -> Result<Self, RedisStoreError> {
        let timeout = config.timeout.unwrap_or(Duration::from_millis(50));
        if let Fallback::Local { share } = config.fallback {
            if !(share > 0.0 && share <= 1.0) {
                return Err(RedisStoreError::Share(share));
            }
        }
        let breaker = CircuitBreaker::builder(format!("redis-ratelimit:{}", config.prefix))
            .config(config.breaker.clone())
            .build()?;
        let client =
            redis::Client::open(config.url.as_str()).map_err(|source| RedisStoreError::Url {
                url: config.url.clone(),
                source,
            })?;
        // No connection retries inside the manager: the breaker decides when to try again,
        // and every attempt is bounded by the timeout.
        let manager_config = ConnectionManagerConfig::new()
            .set_number_of_retries(0)
            .set_connection_timeout(timeout)
            .set_response_timeout(timeout);
        let conn = tokio::time::timeout(
            timeout.max(Duration::from_secs(1)),
            ConnectionManager::new_with_config(client, manager_config),
        )
        .await
        .map_err(|_| RedisStoreError::Timeout {
            url: config.url.clone(),
            timeout,
        })?
        .map_err(|source| RedisStoreError::Connect {
            url: config.url.clone(),
            source,
        })?;

        let quota = config.quota();
        let (script, arg_us, limit, kind) = match config.algorithm {
            RedisAlgorithm::Gcra => (
                GCRA_SCRIPT,
                quota.rate.interval_nanos().div_ceil(1000).max(1),
                quota.burst,
                AlgorithmKind::Gcra,
            ),
            RedisAlgorithm::TokenBucket => (
                TOKEN_BUCKET_SCRIPT,
                quota.rate.interval_nanos().div_ceil(1000).max(1),
                quota.burst,
                AlgorithmKind::TokenBucket,
            ),
            RedisAlgorithm::SlidingWindow => (
                SLIDING_SCRIPT,
                quota.rate.period_nanos().div_ceil(1000).max(1),
                quota.rate.count(),
                AlgorithmKind::SlidingWindowCounter,
            ),
        };
        let fallback = match config.fallback {
            Fallback::FailOpen => FallbackLimiter::Open,
            Fallback::FailClosed => FallbackLimiter::Closed,
            Fallback::Local { share } => {
                let rate = quota.rate.scaled(share);
                let burst = ((quota.burst as f64) * share).floor().max(1.0) as u64;
                let local = Quota::new(rate).with_burst(burst);
                FallbackLimiter::Local(KeyedRateLimiter::with_config(
                    AnyAlgorithm::new(kind, local, None),
                    KeyedConfig {
                        max_keys: config.max_keys.max(1),
                        ..KeyedConfig::default()
                    },
                    super::keyed::default_clock(),
                ))
            }
        };
        let retry_hint = config.breaker.open_duration;
        Ok(Self {
            inner: Arc::new(Inner {
                conn,
                script: redis::Script::new(script),
                prefix: config.prefix,
                arg_us,
                limit,
                timeout,
                breaker,
                fallback,
                retry_hint,
                counters: Default::default(),
            }),
        })
    }

    /// Who answers checks right now.
    pub fn mode(&self) -> Mode {
        match self.inner.breaker.state() {
            State::Closed | State::Disabled => Mode::Redis,
            State::Open | State::HalfOpen | State::ForcedOpen => Mode::Fallback,
        }
    }

    /// Counters since creation (for metrics and the admin API).
    pub fn stats(&self) -> RedisStats {
        let c = |i: usize| self.inner.counters[i].load(Ordering::Relaxed);
        RedisStats {
            redis: c(BY_REDIS),
            fallback: c(BY_FALLBACK),
            errors: c(ERRORS),
            timeouts: c(TIMEOUTS),
        }
    }

    /// The breaker in front of Redis, for stats, events, or forcing the fallback
    /// ([`CircuitBreaker::force_open`]).
    pub fn breaker(&self) -> &CircuitBreaker {
        &self.inner.breaker
    }

    /// Decides on one unit for `key`. Returns within about the configured timeout, whatever
    /// Redis does.
    pub async fn check(&self, key: &str) -> Decision {
        self.check_n(key, 1).await
    }

    /// Decides on `n` units for `key`.
    pub async fn check_n(&self, key: &str, n: u32) -> Decision {
        let inner = &*self.inner;
        if let Ok(permit) = inner.breaker.try_acquire() {
            match tokio::time::timeout(inner.timeout, self.eval(key, n)).await {
                Ok(Ok(d)) => {
                    permit.success();
                    inner.counters[BY_REDIS].fetch_add(1, Ordering::Relaxed);
                    return d;
                }
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "redis rate limit check failed; using fallback");
                    permit.failure();
                    // The connection's own response timeout (same value) may fire first.
                    let counter = if e.is_timeout() { TIMEOUTS } else { ERRORS };
                    inner.counters[counter].fetch_add(1, Ordering::Relaxed);
                }
                Err(_) => {
                    inner.counters[TIMEOUTS].fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(timeout = ?inner.timeout, "redis rate limit check timed out; using fallback");
                    permit.failure();
                }
            }
        }
        inner.counters[BY_FALLBACK].fetch_add(1, Ordering::Relaxed);
        match &inner.fallback {
            FallbackLimiter::Open => Decision::unlimited(),
            FallbackLimiter::Closed => Decision::denied_for(inner.limit, inner.retry_hint),
            FallbackLimiter::Local(l) => l.check_n(&key.to_string(), n),
        }
    }

    async fn eval(&self, key: &str, n: u32) -> redis::RedisResult<Decision> {
        let inner = &*self.inner;
        let mut conn = inner.conn.clone();
        let mut full_key = String::with_capacity(inner.prefix.len() + key.len());
        full_key.push_str(&inner.prefix);
        full_key.push_str(key);
        let (allowed, remaining, retry_us, reset_us): (i64, i64, i64, i64) = inner
            .script
            .key(full_key)
            .arg(inner.arg_us)
            .arg(inner.limit)
            .arg(n)
            .invoke_async(&mut conn)
            .await?;
        let us = |v: i64| Duration::from_micros(v.max(0) as u64);
        Ok(Decision {
            allowed: allowed == 1,
            limit: inner.limit,
            remaining: remaining.max(0) as u64,
            retry_after: match (allowed, retry_us) {
                (1, _) => Duration::ZERO,
                (_, r) if r < 0 => Duration::MAX,
                (_, r) => us(r).max(Duration::from_micros(1)),
            },
            reset_after: us(reset_us),
            delay: Duration::ZERO,
        })
    }
}

impl LimitStore<String> for RedisRateLimiter {
    fn check_key(&self, key: &String, n: u32) -> DecisionFuture {
        let this = self.clone();
        let key = key.clone();
        DecisionFuture::Pending(Box::pin(async move { this.check_n(&key, n).await }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_deserializes() {
        let c: RedisLimiterConfig = serde_json::from_str(
            r#"{"url":"redis://127.0.0.1/","rate":"100/s","algorithm":"sliding_window",
                "timeout":"20ms","fallback":{"local":{"share":0.5}}}"#,
        )
        .unwrap();
        assert_eq!(c.fallback, Fallback::Local { share: 0.5 });
        assert_eq!(c.timeout, Some(Duration::from_millis(20)));
        let c: RedisLimiterConfig =
            serde_json::from_str(r#"{"url":"redis://x/","rate":"1/s","fallback":"fail_closed"}"#)
                .unwrap();
        assert_eq!(c.fallback, Fallback::FailClosed);
    }
}
