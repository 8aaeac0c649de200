//! The answer of every limiter, and its HTTP header form.
use std::time::Duration;

use http::header::{HeaderMap, HeaderName, HeaderValue, RETRY_AFTER};

/// `RateLimit-Limit` (IETF draft `draft-ietf-httpapi-ratelimit-headers`).
pub static RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("ratelimit-limit");
/// `RateLimit-Remaining`.
pub static RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("ratelimit-remaining");
/// `RateLimit-Reset`: seconds until the quota is fully available again.
pub static RATELIMIT_RESET: HeaderName = HeaderName::from_static("ratelimit-reset");

/// The outcome of one rate-limit check.
///
/// ```
/// use scalewise::ratelimit::{Decision, Limiter, Quota, RateLimiter, TokenBucket};
/// use scalewise::clock::ManualClock;
/// use http::HeaderMap;
///
/// let limiter = RateLimiter::with_clock(TokenBucket::new(Quota::per_second(2)), ManualClock::new());
/// assert!(limiter.check().allowed);
/// assert!(limiter.check().allowed);
/// let denied = limiter.check();
/// assert!(!denied.allowed);
/// assert_eq!(denied.retry_after.as_millis(), 500);
///
/// let mut headers = HeaderMap::new();
/// denied.write_headers(&mut headers);
/// assert_eq!(headers["retry-after"], "1");
/// assert_eq!(headers["ratelimit-remaining"], "0");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// Whether the request may proceed (after [`Decision::delay`], for shaping limiters).
    pub allowed: bool,
    /// The most units this limiter admits at once (its burst or window limit).
    pub limit: u64,
    /// Units that could be admitted right now after this decision.
    pub remaining: u64,
    /// When denied: how long until the same request would be admitted. Zero when allowed.
    /// [`Duration::MAX`] when the request is larger than the limit and can never be admitted.
    pub retry_after: Duration,
    /// How long until the limiter is back to its full `limit` if nothing else arrives.
    pub reset_after: Duration,
    /// For shaping limiters: how long the caller should wait before proceeding. Zero for
    /// policing limiters, which admit or deny immediately.
    pub delay: Duration,
}

impl Decision {
    pub(crate) fn allow(limit: u64, remaining: u64, reset_after_nanos: u64) -> Self {
        Self {
            allowed: true,
            limit,
            remaining,
            retry_after: Duration::ZERO,
            reset_after: Duration::from_nanos(reset_after_nanos),
            delay: Duration::ZERO,
        }
    }

    pub(crate) fn deny(
        limit: u64,
        remaining: u64,
        retry_nanos: u64,
        reset_after_nanos: u64,
    ) -> Self {
        Self {
            allowed: false,
            limit,
            remaining,
            retry_after: if retry_nanos == u64::MAX {
                Duration::MAX
            } else {
                Duration::from_nanos(retry_nanos.max(1))
            },
            reset_after: Duration::from_nanos(reset_after_nanos),
            delay: Duration::ZERO,
        }
    }

    /// A decision that admits without limiting anything (used by fail-open fallbacks).
    pub fn unlimited() -> Self {
        Self::allow(u64::MAX, u64::MAX, 0)
    }

    /// Denies with nothing known about when it will pass (used by fail-closed fallbacks).
    pub fn denied_for(limit: u64, retry_after: Duration) -> Self {
        Self {
            allowed: false,
            limit,
            remaining: 0,
            retry_after,
            reset_after: retry_after,
            delay: Duration::ZERO,
        }
    }

    /// Writes `RateLimit-Limit`, `RateLimit-Remaining`, `RateLimit-Reset` and, when denied,
    /// `Retry-After`. Durations are whole seconds rounded up, since a client that retries
    /// after a rounded-down value would be denied again.
    pub fn write_headers(&self, headers: &mut HeaderMap) {
        if self.limit != u64::MAX {
            headers.insert(RATELIMIT_LIMIT.clone(), HeaderValue::from(self.limit));
            headers.insert(
                RATELIMIT_REMAINING.clone(),
                HeaderValue::from(self.remaining),
            );
            headers.insert(
                RATELIMIT_RESET.clone(),
                HeaderValue::from(ceil_secs(self.reset_after)),
            );
        }
        if !self.allowed {
            headers.insert(RETRY_AFTER, HeaderValue::from(ceil_secs(self.retry_after)));
        }
    }
}

fn ceil_secs(d: Duration) -> u64 {
    if d.subsec_nanos() > 0 {
        d.as_secs().saturating_add(1)
    } else {
        d.as_secs()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_round_up_and_survive_huge_values() {
        let d = Decision::deny(10, 0, u64::MAX, 1_500_000_000);
        let mut h = HeaderMap::new();
        d.write_headers(&mut h);
        assert_eq!(h["retry-after"], u64::MAX.to_string().as_str());
        assert_eq!(h["ratelimit-reset"], "2");
        assert_eq!(h["ratelimit-limit"], "10");

        let mut h = HeaderMap::new();
        Decision::allow(10, 9, 0).write_headers(&mut h);
        assert!(h.get("retry-after").is_none());
        assert_eq!(h["ratelimit-reset"], "0");
    }
}
