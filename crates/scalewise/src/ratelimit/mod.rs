//! Rate limiting: six algorithms behind one [`Limiter`] trait, keyed limiters with bounded
//! memory, tower layers (generic and HTTP), and a Redis store for limits shared by several
//! processes (feature `redis`).
//!
//! | type | use |
//! |---|---|
//! | [`Gcra`], [`TokenBucket`], [`LeakyBucket`] (policing or shaping), [`FixedWindow`], [`SlidingWindowLog`], [`SlidingWindowCounter`] | the algorithms ([`Algorithm`]) |
//! | [`RateLimiter`] | one limit for everything (an [`Algorithm`] + a clock) |
//! | [`KeyedRateLimiter`] | one limit per key (client IP, API key), at most `max_keys` keys, idle keys expire |
//! | [`RateLimitLayer`], [`HttpRateLimitLayer`] | tower middleware; the HTTP one answers 429 with `Retry-After`/`RateLimit-*` headers |
//! | `redis::RedisRateLimiter` | global limits via one Lua script per check, with fallback behind a breaker |
//!
//! ```
//! use scalewise::ratelimit::{Gcra, KeyedRateLimiter, Quota};
//!
//! let quota: Quota = "100/s burst 10".parse().unwrap();
//! let limiter = KeyedRateLimiter::new(Gcra::new(quota));
//! let d = limiter.check(&"198.51.100.7");
//! assert!(d.allowed);
//! assert_eq!(d.remaining, 9);
//! ```
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use crate::clock::{Clock, QuantaClock};

mod algorithm;
mod config;
mod decision;
mod http_layer;
mod keyed;
mod layer;
mod rate;
#[cfg(feature = "redis")]
pub mod redis;

pub use algorithm::{
    Algorithm, AlgorithmKind, AnyAlgorithm, AnyState, FixedWindow, FixedWindowState, Gcra,
    LeakyBucket, LeakyBucketState, SlidingWindowCounter, SlidingWindowCounterState,
    SlidingWindowLog, SlidingWindowLogState, TokenBucket, TokenBucketState,
};
pub use config::{ConfigError, KeySource, RateLimitConfig};
pub use decision::{Decision, RATELIMIT_LIMIT, RATELIMIT_REMAINING, RATELIMIT_RESET};
pub use http_layer::{bound_key, ClientAddr, HttpRateLimit, HttpRateLimitLayer, MAX_KEY_BYTES};
pub use keyed::{KeyedConfig, KeyedRateLimiter, KeyedStats};
pub use layer::{
    DecisionFuture, Global, KeyExtractor, LimitStore, RateLimit, RateLimitLayer, RateLimited,
};
pub use rate::{parse_duration, Quota, Rate, RateError};

/// Something that admits or denies units right now.
pub trait Limiter: Send + Sync {
    /// Decides on `n` units at once (for example the bytes of a request, or a batch).
    fn check_n(&self, n: u32) -> Decision;

    /// Decides on one unit.
    fn check(&self) -> Decision {
        self.check_n(1)
    }
}

/// One limit for all callers: an [`Algorithm`] with its state behind a mutex (held for a
/// few arithmetic operations, never across I/O). For GCRA without a lock see [`GcraLimiter`].
///
/// ```
/// use scalewise::ratelimit::{FixedWindow, Limiter, Rate, RateLimiter};
/// let limiter = RateLimiter::new(FixedWindow::new("2/s".parse::<Rate>().unwrap()));
/// assert!(limiter.check_n(2).allowed);
/// assert!(!limiter.check().allowed);
/// ```
#[derive(Debug)]
pub struct RateLimiter<A: Algorithm, C: Clock = QuantaClock> {
    algorithm: A,
    state: Mutex<A::State>,
    clock: C,
}

impl<A: Algorithm> RateLimiter<A> {
    /// A limiter on the fast TSC clock.
    pub fn new(algorithm: A) -> Self {
        Self::with_clock(algorithm, QuantaClock::new())
    }
}

impl<A: Algorithm, C: Clock> RateLimiter<A, C> {
    /// A limiter reading time from `clock` (a `ManualClock` in tests).
    pub fn with_clock(algorithm: A, clock: C) -> Self {
        let state = Mutex::new(algorithm.initial_state(clock.now_nanos()));
        Self {
            algorithm,
            state,
            clock,
        }
    }

    /// The algorithm.
    pub fn algorithm(&self) -> &A {
        &self.algorithm
    }
}

impl<A: Algorithm, C: Clock> Limiter for RateLimiter<A, C> {
    fn check_n(&self, n: u32) -> Decision {
        let now = self.clock.now_nanos();
        // A panic cannot happen inside `check` (pure arithmetic), so a poisoned lock still
        // holds a consistent state.
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        self.algorithm.check(&mut state, now, u64::from(n))
    }
}

/// GCRA in a single `AtomicU64` (compare-and-swap, no lock): the fastest unkeyed limiter.
///
/// ```
/// use scalewise::ratelimit::{GcraLimiter, Limiter, Quota};
/// let limiter = GcraLimiter::new(Quota::per_second(5));
/// assert_eq!((0..10).filter(|_| limiter.check().allowed).count(), 5);
/// ```
#[derive(Debug)]
pub struct GcraLimiter<C: Clock = QuantaClock> {
    gcra: Gcra,
    tat: AtomicU64,
    clock: C,
}

impl GcraLimiter {
    /// A lock-free GCRA limiter for `quota` on the TSC clock.
    pub fn new(quota: impl Into<Quota>) -> Self {
        Self::with_clock(quota, QuantaClock::new())
    }
}

impl<C: Clock> GcraLimiter<C> {
    /// A lock-free GCRA limiter reading time from `clock`.
    pub fn with_clock(quota: impl Into<Quota>, clock: C) -> Self {
        Self {
            gcra: Gcra::new(quota),
            tat: AtomicU64::new(0),
            clock,
        }
    }
}

impl<C: Clock> Limiter for GcraLimiter<C> {
    fn check_n(&self, n: u32) -> Decision {
        let now = self.clock.now_nanos();
        let mut tat = self.tat.load(Ordering::Acquire);
        loop {
            let (decision, new) = self.gcra.step(tat, now, u64::from(n));
            let Some(new) = new else { return decision };
            match self
                .tat
                .compare_exchange_weak(tat, new, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return decision,
                Err(actual) => tat = actual,
            }
        }
    }
}

impl<L: Limiter + ?Sized> Limiter for std::sync::Arc<L> {
    fn check_n(&self, n: u32) -> Decision {
        (**self).check_n(n)
    }
}

/// Converts a duration to nanoseconds, saturating.
pub(crate) fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}
