//! Retries with exponential backoff, jitter and a retry budget.
//!
//! A [`Retry`] re-runs a call that its classifier judges a failure, up to `max_attempts`
//! attempts in all, sleeping an exponentially growing, jittered delay in between. With a
//! [`RetryBudget`] it also refuses to retry once retries exceed a share of recent traffic
//! (plus a small floor per second), so that when a backend is down retries cannot multiply
//! the load on it: the budget design of Finagle and linkerd.
//!
//! ```
//! use scalewise::retry::{Jitter, Retry, RetryConfig};
//! use std::sync::atomic::{AtomicU32, Ordering};
//! use std::time::Duration;
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! let retry = Retry::new(RetryConfig {
//!     max_attempts: 3,
//!     initial_backoff: Duration::from_millis(10),
//!     jitter: Jitter::None,
//!     ..RetryConfig::default()
//! });
//! let tries = AtomicU32::new(0);
//! let r = retry
//!     .run(|_attempt| async {
//!         if tries.fetch_add(1, Ordering::SeqCst) < 2 { Err("flaky") } else { Ok("done") }
//!     })
//!     .await;
//! assert_eq!(r, Ok("done"));
//! assert_eq!(retry.stats().retries, 2);
//! # }
//! ```
//!
//! For tower services, [`Retry::layer`] gives a [`tower::retry::RetryLayer`] driven by
//! [`RetryPolicy`], with the same classifier, backoff and budget.
use std::future::Future;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::breaker::classify::{Classify, ErrorsAreFailures, Verdict};
use crate::clock::{Clock, SystemClock};
use crate::timeout::duration_serde;

/// How each delay is randomised (see the AWS architecture blog, "Exponential Backoff And
/// Jitter"). Without jitter, clients that failed together retry together.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Jitter {
    /// Exactly `initial * multiplier^(n-1)`, capped.
    None,
    /// Uniform in `[0, d]` where `d` is the capped exponential delay.
    #[default]
    Full,
    /// `d/2` plus uniform in `[0, d/2]`.
    Equal,
    /// Uniform in `[initial, 3 * previous delay]`, capped.
    Decorrelated,
}

/// Retry settings. Durations in config files read `"50ms"`, `"2s"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryConfig {
    /// Attempts in all, the first included (1 = no retries).
    pub max_attempts: u32,
    /// The delay before the first retry.
    #[serde(with = "duration_serde")]
    pub initial_backoff: Duration,
    /// Cap on any delay.
    #[serde(with = "duration_serde")]
    pub max_backoff: Duration,
    /// Growth per retry.
    pub backoff_multiplier: f64,
    /// Randomisation of each delay.
    pub jitter: Jitter,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(2),
            backoff_multiplier: 2.0,
            jitter: Jitter::Full,
        }
    }
}

impl RetryConfig {
    /// The delay before retry number `retry` (1-based), given the previous delay (used by
    /// decorrelated jitter).
    pub fn backoff(&self, retry: u32, previous: Duration) -> Duration {
        let initial = self.initial_backoff.as_secs_f64();
        let max = self.max_backoff.as_secs_f64().max(initial);
        let mult = if self.backoff_multiplier.is_finite() {
            self.backoff_multiplier.max(1.0)
        } else {
            1.0
        };
        let exp = retry.saturating_sub(1).min(1000) as i32;
        let d = (initial * mult.powi(exp)).min(max);
        let mut rng = rand::thread_rng();
        let secs = match self.jitter {
            Jitter::None => d,
            Jitter::Full => rng.gen_range(0.0..=d),
            Jitter::Equal => d / 2.0 + rng.gen_range(0.0..=d / 2.0),
            Jitter::Decorrelated => {
                let hi = (previous.as_secs_f64().max(initial) * 3.0).min(max);
                if hi > initial {
                    rng.gen_range(initial..=hi)
                } else {
                    initial
                }
            }
        };
        Duration::from_secs_f64(secs.clamp(0.0, max))
    }
}

/// Retry-budget settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BudgetConfig {
    /// Retries allowed per original request (0.2 = retries may add 20% to the load).
    pub retry_ratio: f64,
    /// Retries allowed per second regardless of traffic, so that a quiet service can
    /// still retry.
    pub min_retries_per_second: u32,
    /// How long a request's deposit (and a retry's withdrawal) counts.
    #[serde(with = "duration_serde")]
    pub window: Duration,
}

impl Default for BudgetConfig {
    fn default() -> Self {
        Self {
            retry_ratio: 0.2,
            min_retries_per_second: 10,
            window: Duration::from_secs(10),
        }
    }
}

/// Fixed-point unit: one retry costs `UNIT`, one request deposits `ratio * UNIT`.
const UNIT: i64 = 1000;
const SLICES: usize = 10;

/// A budget of retries: each request deposits `retry_ratio` of a retry, each retry withdraws
/// one, and both expire after `window`; `min_retries_per_second * window` are always
/// available on top. Lock-free: deposits and withdrawals are a few atomic additions into a
/// ring of time slices, with a running balance.
///
/// ```
/// use scalewise::retry::{BudgetConfig, RetryBudget};
/// use scalewise::clock::ManualClock;
/// use std::time::Duration;
///
/// let budget = RetryBudget::with_clock(
///     BudgetConfig { retry_ratio: 0.5, min_retries_per_second: 0, window: Duration::from_secs(10) },
///     ManualClock::new(),
/// );
/// budget.deposit();
/// budget.deposit();
/// assert!(budget.withdraw(), "two requests earn one retry");
/// assert!(!budget.withdraw());
/// ```
pub struct RetryBudget {
    slots: Box<[AtomicI64]>,
    slice_nanos: u64,
    latest_slice: AtomicU64,
    balance: AtomicI64,
    reserve: i64,
    deposit_amount: i64,
    clock: Arc<dyn Clock>,
    deposits: AtomicU64,
    spent: AtomicU64,
    denied: AtomicU64,
}

impl std::fmt::Debug for RetryBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RetryBudget")
            .field("stats", &self.stats())
            .finish()
    }
}

/// A budget's numbers, for metrics and the admin API.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct BudgetStats {
    /// Retries that could be made now.
    pub available: f64,
    /// Requests deposited since creation.
    pub deposits: u64,
    /// Retries made since creation.
    pub retries_spent: u64,
    /// Retries refused for lack of budget since creation.
    pub retries_denied: u64,
}

impl RetryBudget {
    /// A budget on the system clock.
    pub fn new(config: BudgetConfig) -> Self {
        Self::with_clock(config, SystemClock)
    }

    /// A budget on `clock`.
    pub fn with_clock(config: BudgetConfig, clock: impl Clock) -> Self {
        let window = config.window.max(Duration::from_millis(SLICES as u64));
        let ratio = if config.retry_ratio.is_finite() {
            config.retry_ratio.clamp(0.0, 1000.0)
        } else {
            0.0
        };
        let reserve = (config.min_retries_per_second as f64 * window.as_secs_f64() * UNIT as f64)
            .min(i64::MAX as f64 / 4.0) as i64;
        let clock: Arc<dyn Clock> = Arc::new(clock);
        let slice_nanos = (window.as_nanos() / SLICES as u128).min(u64::MAX as u128) as u64;
        Self {
            slots: (0..SLICES).map(|_| AtomicI64::new(0)).collect(),
            slice_nanos,
            latest_slice: AtomicU64::new(clock.now_nanos() / slice_nanos),
            balance: AtomicI64::new(0),
            reserve,
            deposit_amount: (ratio * UNIT as f64).round() as i64,
            clock,
            deposits: AtomicU64::new(0),
            spent: AtomicU64::new(0),
            denied: AtomicU64::new(0),
        }
    }

    /// The slot for now, clearing the slices that fell out of the window on the way.
    #[inline]
    fn slot(&self) -> &AtomicI64 {
        let slice = self.clock.now_nanos() / self.slice_nanos;
        let mut latest = self.latest_slice.load(Relaxed);
        while slice > latest {
            match self
                .latest_slice
                .compare_exchange_weak(latest, slice, Relaxed, Relaxed)
            {
                Ok(_) => {
                    let from = latest.max(slice.saturating_sub(SLICES as u64)) + 1;
                    for s in from..=slice {
                        let old = self.slots[(s % SLICES as u64) as usize].swap(0, Relaxed);
                        self.balance.fetch_sub(old, Relaxed);
                    }
                    break;
                }
                Err(cur) => latest = cur,
            }
        }
        &self.slots[(slice % SLICES as u64) as usize]
    }

    /// Records one original request.
    #[inline]
    pub fn deposit(&self) {
        self.deposits.fetch_add(1, Relaxed);
        if self.deposit_amount > 0 {
            self.slot().fetch_add(self.deposit_amount, Relaxed);
            self.balance.fetch_add(self.deposit_amount, Relaxed);
        }
    }

    /// Takes one retry from the budget; `false` if there is none left.
    #[inline]
    pub fn withdraw(&self) -> bool {
        let slot = self.slot();
        // Take first, check after: two racing callers can never both spend the last retry.
        let before = self.balance.fetch_sub(UNIT, Relaxed);
        if before - UNIT + self.reserve < 0 {
            self.balance.fetch_add(UNIT, Relaxed);
            self.denied.fetch_add(1, Relaxed);
            return false;
        }
        slot.fetch_sub(UNIT, Relaxed);
        self.spent.fetch_add(1, Relaxed);
        true
    }

    /// Retries that could be made now.
    pub fn available(&self) -> f64 {
        let _ = self.slot();
        (self.balance.load(Relaxed) + self.reserve).max(0) as f64 / UNIT as f64
    }

    /// Counters and what is left.
    pub fn stats(&self) -> BudgetStats {
        BudgetStats {
            available: self.available(),
            deposits: self.deposits.load(Relaxed),
            retries_spent: self.spent.load(Relaxed),
            retries_denied: self.denied.load(Relaxed),
        }
    }
}

/// Counters of a [`Retry`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct RetryStats {
    /// Original calls.
    pub calls: u64,
    /// Retries made.
    pub retries: u64,
    /// Calls that failed on their last allowed attempt.
    pub exhausted: u64,
    /// Retries refused by the budget.
    pub budget_denied: u64,
    /// The budget, if any.
    pub budget: Option<BudgetStats>,
}

struct Shared<C> {
    config: RetryConfig,
    budget: Option<Arc<RetryBudget>>,
    classifier: C,
    calls: AtomicU64,
    retries: AtomicU64,
    exhausted: AtomicU64,
    budget_denied: AtomicU64,
}

impl<C> Shared<C> {
    /// Whether to retry after the failed attempt number `attempt` (1-based).
    fn may_retry(&self, attempt: u32) -> bool {
        if attempt >= self.config.max_attempts {
            self.exhausted.fetch_add(1, Relaxed);
            return false;
        }
        if let Some(b) = &self.budget {
            if !b.withdraw() {
                self.budget_denied.fetch_add(1, Relaxed);
                return false;
            }
        }
        self.retries.fetch_add(1, Relaxed);
        true
    }

    fn start(&self) {
        self.calls.fetch_add(1, Relaxed);
        if let Some(b) = &self.budget {
            b.deposit();
        }
    }
}

/// Retries calls; see the [module docs](self). Cheap to clone; clones share counters.
pub struct Retry<C = ErrorsAreFailures> {
    shared: Arc<Shared<C>>,
}

impl<C> Clone for Retry<C> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
        }
    }
}

impl<C> std::fmt::Debug for Retry<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Retry")
            .field("config", &self.shared.config)
            .field("budget", &self.shared.budget)
            .finish()
    }
}

impl Retry {
    /// Retries every `Err`, with no budget.
    pub fn new(config: RetryConfig) -> Self {
        Self::build(config, None, ErrorsAreFailures)
    }
}

impl<C> Retry<C> {
    fn build(config: RetryConfig, budget: Option<Arc<RetryBudget>>, classifier: C) -> Self {
        Self {
            shared: Arc::new(Shared {
                config,
                budget,
                classifier,
                calls: AtomicU64::new(0),
                retries: AtomicU64::new(0),
                exhausted: AtomicU64::new(0),
                budget_denied: AtomicU64::new(0),
            }),
        }
    }

    /// Retries only what `classifier` judges a [`Verdict::Failure`] (for example
    /// [`HttpStatus`](crate::breaker::classify::HttpStatus) for 5xx responses).
    pub fn with_classifier<C2>(self, classifier: C2) -> Retry<C2> {
        Retry::build(
            self.shared.config.clone(),
            self.shared.budget.clone(),
            classifier,
        )
    }

    /// Draws retries from `budget` (which may be shared with other `Retry`s, e.g. all
    /// routes to one backend).
    pub fn with_budget(self, budget: Arc<RetryBudget>) -> Self
    where
        C: Clone,
    {
        Retry::build(
            self.shared.config.clone(),
            Some(budget),
            self.shared.classifier.clone(),
        )
    }

    /// The settings.
    pub fn config(&self) -> &RetryConfig {
        &self.shared.config
    }

    /// The budget, if any.
    pub fn budget(&self) -> Option<&Arc<RetryBudget>> {
        self.shared.budget.as_ref()
    }

    /// Counters, with the budget's.
    pub fn stats(&self) -> RetryStats {
        let s = &self.shared;
        RetryStats {
            calls: s.calls.load(Relaxed),
            retries: s.retries.load(Relaxed),
            exhausted: s.exhausted.load(Relaxed),
            budget_denied: s.budget_denied.load(Relaxed),
            budget: s.budget.as_ref().map(|b| b.stats()),
        }
    }

    /// Runs `attempt(n)` for n = 1, 2, ... until it succeeds, its result is not retryable,
    /// attempts run out or the budget refuses; returns the last result. Delays use tokio's
    /// timer (so paused-time tests are exact).
    ///
    /// # Errors
    /// The last attempt's error.
    pub async fn run<F, Fut, T, E>(&self, mut attempt: F) -> Result<T, E>
    where
        F: FnMut(u32) -> Fut,
        Fut: Future<Output = Result<T, E>>,
        C: Classify<T, E>,
    {
        let s = &self.shared;
        s.start();
        let mut n = 1;
        let mut delay = Duration::ZERO;
        loop {
            let result = attempt(n).await;
            if s.classifier.classify(&result) != Verdict::Failure || !s.may_retry(n) {
                return result;
            }
            delay = s.config.backoff(n, delay);
            tokio::time::sleep(delay).await;
            n += 1;
        }
    }

    /// A tower layer retrying with this policy, classifier and budget. Requests must be
    /// `Clone` (buffer bodies first, and retry only idempotent requests).
    pub fn layer(&self) -> tower::retry::RetryLayer<RetryPolicy<C>> {
        tower::retry::RetryLayer::new(RetryPolicy {
            shared: self.shared.clone(),
            attempt: 1,
            delay: Duration::ZERO,
        })
    }
}

/// The [`tower::retry::Policy`] behind [`Retry::layer`]. tower clones the policy for each
/// request, so `attempt` and `delay` are per request.
pub struct RetryPolicy<C> {
    shared: Arc<Shared<C>>,
    attempt: u32,
    delay: Duration,
}

impl<C> Clone for RetryPolicy<C> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
            attempt: self.attempt,
            delay: self.delay,
        }
    }
}

impl<C> std::fmt::Debug for RetryPolicy<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RetryPolicy")
            .field("attempt", &self.attempt)
            .finish()
    }
}

impl<Req, Res, E, C> tower::retry::Policy<Req, Res, E> for RetryPolicy<C>
where
    Req: Clone,
    C: Classify<Res, E>,
{
    type Future = tokio::time::Sleep;

    fn retry(&mut self, _req: &mut Req, result: &mut Result<Res, E>) -> Option<Self::Future> {
        let s = &self.shared;
        if s.classifier.classify(result) != Verdict::Failure || !s.may_retry(self.attempt) {
            return None;
        }
        self.delay = s.config.backoff(self.attempt, self.delay);
        self.attempt += 1;
        Some(tokio::time::sleep(self.delay))
    }

    fn clone_request(&mut self, req: &Req) -> Option<Req> {
        // tower calls this once when the request arrives (on the service's own policy,
        // always at attempt 1) and again after every retry (on the request's copy): only
        // the first is a new request for the budget.
        if self.attempt == 1 {
            self.shared.start();
        }
        Some(req.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_caps() {
        let c = RetryConfig {
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(500),
            backoff_multiplier: 2.0,
            jitter: Jitter::None,
            ..RetryConfig::default()
        };
        let ds: Vec<u128> = (1..=5)
            .map(|n| c.backoff(n, Duration::ZERO).as_millis())
            .collect();
        assert_eq!(ds, vec![100, 200, 400, 500, 500]);
    }

    #[test]
    fn jitters_stay_in_range() {
        for jitter in [Jitter::Full, Jitter::Equal, Jitter::Decorrelated] {
            let c = RetryConfig {
                initial_backoff: Duration::from_millis(100),
                max_backoff: Duration::from_millis(1000),
                jitter,
                ..RetryConfig::default()
            };
            let mut prev = Duration::ZERO;
            for n in 1..50 {
                let d = c.backoff(n, prev);
                let exp = Duration::from_millis(100 * 2u64.pow(n.min(10) - 1)).min(c.max_backoff);
                match jitter {
                    Jitter::Full => assert!(d <= exp),
                    Jitter::Equal => assert!(d >= exp / 2 && d <= exp),
                    _ => assert!(d >= c.initial_backoff && d <= c.max_backoff),
                }
                prev = d;
            }
        }
    }
}
