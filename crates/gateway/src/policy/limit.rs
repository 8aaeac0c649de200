//! Named rate limiters built from `[rate_limits.NAME]`: local keyed limiters, or Redis-global
//! ones that connect in the background and answer with their fallback until connected.
use super::config::{FallbackSpec, RateLimitSpec};
use crate::config::HashKey;
use scalewise::clock::CoarseClock;
use scalewise::ratelimit::redis::{Fallback, Mode, RedisLimiterConfig, RedisRateLimiter};
use scalewise::ratelimit::{AnyAlgorithm, Decision, KeyedRateLimiter, Quota, RateLimitConfig};
use std::net::IpAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

type Local = KeyedRateLimiter<String, AnyAlgorithm, CoarseClock>;

/// One `[rate_limits.NAME]` at run time, shared by every route that names it.
pub struct NamedLimiter {
    pub(crate) name: String,
    pub(crate) spec: RateLimitSpec,
    kind: Kind,
}

enum Kind {
    Local(Local),
    Redis(RedisGlobal),
}

struct RedisGlobal {
    connected: Arc<OnceLock<RedisRateLimiter>>,
    ready: tokio::sync::watch::Receiver<bool>,
    fallback: Option<Local>,
    fail_closed: bool,
    connector: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for RedisGlobal {
    fn drop(&mut self) {
        if let Some(t) = self.connector.take() {
            t.abort();
        }
    }
}

impl std::fmt::Debug for NamedLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NamedLimiter")
            .field("name", &self.name)
            .field("spec", &self.spec)
            .finish_non_exhaustive()
    }
}

fn local(spec: &RateLimitSpec, rate_share: f64) -> Option<Local> {
    let kind = spec.local_algorithm().unwrap_or_default();
    let rate = if rate_share < 1.0 {
        spec.rate.scaled(rate_share)
    } else {
        spec.rate
    };
    let burst = spec
        .burst
        .map(|b| ((b as f64) * rate_share).floor().max(1.0) as u64);
    let cfg = RateLimitConfig {
        algorithm: kind,
        burst,
        max_keys: spec.max_keys,
        ..RateLimitConfig::per_client_ip(rate)
    };
    cfg.build_keyed::<String>().ok()
}

impl NamedLimiter {
    /// Builds the limiter; `None` if the spec does not build (validation rejects those).
    pub(crate) fn build(name: &str, spec: &RateLimitSpec) -> Option<Self> {
        let kind = match &spec.redis {
            None => Kind::Local(local(spec, 1.0)?),
            Some(r) => {
                let mut cfg = RedisLimiterConfig::new(r.connect_url(), spec.rate);
                cfg.prefix = r
                    .prefix
                    .clone()
                    .unwrap_or_else(|| format!("scalewise:gw:{name}:"));
                cfg.algorithm = spec.redis_algorithm().unwrap_or_default();
                cfg.burst = spec.burst;
                cfg.timeout = Some(r.timeout);
                cfg.max_keys = spec.max_keys;
                cfg.fallback = match r.fallback {
                    FallbackSpec::FailOpen => Fallback::FailOpen,
                    FallbackSpec::FailClosed => Fallback::FailClosed,
                    FallbackSpec::Local => Fallback::Local {
                        share: r.local_share,
                    },
                };
                let connected = Arc::new(OnceLock::new());
                let (tx, ready) = tokio::sync::watch::channel(false);
                Kind::Redis(RedisGlobal {
                    connector: spawn_connector(name, cfg, connected.clone(), tx),
                    connected,
                    ready,
                    fallback: (r.fallback == FallbackSpec::Local)
                        .then(|| local(spec, r.local_share))
                        .flatten(),
                    fail_closed: r.fallback == FallbackSpec::FailClosed,
                })
            }
        };
        Some(Self {
            name: name.to_owned(),
            spec: spec.clone(),
            kind,
        })
    }

    /// Decides one request with key `key`.
    pub(crate) async fn check(&self, key: &str) -> Decision {
        match &self.kind {
            Kind::Local(l) => l.check(&key.to_owned()),
            Kind::Redis(r) => match r.connected.get() {
                Some(limiter) => limiter.check(key).await,
                None => match &r.fallback {
                    Some(l) => l.check(&key.to_owned()),
                    None if r.fail_closed => Decision::denied_for(
                        Quota::new(self.spec.rate).burst,
                        Duration::from_secs(1),
                    ),
                    None => Decision::unlimited(),
                },
            },
        }
    }

    /// Waits until a Redis-global limiter has connected (at once for local ones); `false`
    /// if it cannot any more (its connector is gone).
    pub async fn connected(&self) -> bool {
        match &self.kind {
            Kind::Local(_) => true,
            Kind::Redis(r) => r.ready.clone().wait_for(|c| *c).await.is_ok(),
        }
    }

    /// `local`, `redis`, `fallback` (Redis breaker open) or `connecting`.
    pub(crate) fn mode(&self) -> &'static str {
        match &self.kind {
            Kind::Local(_) => "local",
            Kind::Redis(r) => match r.connected.get().map(RedisRateLimiter::mode) {
                Some(Mode::Redis) => "redis",
                Some(Mode::Fallback) => "fallback",
                None => "connecting",
            },
        }
    }

    /// Keys held in memory by the local limiter (or the local fallback).
    pub(crate) fn keys(&self) -> usize {
        match &self.kind {
            Kind::Local(l) => l.len(),
            Kind::Redis(r) => r.fallback.as_ref().map_or(0, Local::len),
        }
    }

    /// The key of a request: client IP, header value or cookie value.
    pub(crate) fn key_of(&self, parts: &http::request::Parts, peer: IpAddr) -> String {
        let mut key = match &self.spec.key {
            HashKey::ClientIp | HashKey::Path => peer.to_canonical().to_string(),
            HashKey::Header(name) => parts
                .headers
                .get(name.as_str())
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                .unwrap_or_default(),
            HashKey::Cookie(name) => crate::proxy::cookie(&parts.headers, name)
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .unwrap_or_default(),
        };
        scalewise::ratelimit::bound_key(&mut key);
        key
    }
}

/// Connects in the background, retrying with backoff, so a gateway starts (and reloads)
/// while Redis is down; until connected the fallback answers.
fn spawn_connector(
    name: &str,
    cfg: RedisLimiterConfig,
    slot: Arc<OnceLock<RedisRateLimiter>>,
    ready: tokio::sync::watch::Sender<bool>,
) -> Option<tokio::task::JoinHandle<()>> {
    let handle = tokio::runtime::Handle::try_current().ok()?;
    let name = name.to_owned();
    Some(handle.spawn(async move {
        let mut wait = Duration::from_millis(100);
        loop {
            match RedisRateLimiter::connect(cfg.clone()).await {
                Ok(l) => {
                    tracing::info!(rate_limit = %name, "connected to Redis");
                    let _ = slot.set(l);
                    ready.send_replace(true);
                    return;
                }
                Err(e) => {
                    tracing::warn!(rate_limit = %name, error = %e, retry_in = ?wait, "Redis unavailable; the fallback answers");
                }
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_secs(30));
        }
    }))
}
