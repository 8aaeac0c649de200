//! The limiting algorithms, as pure functions of (state, now, cost) so that the same code
//! runs in an unkeyed limiter, in every entry of a keyed limiter, and under a manual clock.
//!
//! All times are nanoseconds from a [`Clock`](crate::clock::Clock). Integer arithmetic only,
//! with intervals rounded up, so a limiter never admits more than its documented bound.
use std::collections::VecDeque;
use std::time::Duration;

use super::{Decision, Quota, Rate};

/// A rate-limiting algorithm. The state of one key lives in [`Algorithm::State`].
pub trait Algorithm: Send + Sync + 'static {
    /// Per-key state.
    type State: Send + 'static;

    /// State of a key never seen before.
    fn initial_state(&self, now: u64) -> Self::State;

    /// Decides whether `n` units may pass at `now`, updating `state` only when they do.
    fn check(&self, state: &mut Self::State, now: u64, n: u64) -> Decision;

    /// Inactivity after which a state behaves exactly like a fresh one: a keyed limiter can
    /// forget such a key without giving it any extra allowance.
    fn idle_after(&self) -> Duration;

    /// The most units this algorithm admits in any closed time window of length `window`:
    /// the guarantee the property tests check. Roughly `rate × window + burst`, where the
    /// effective burst of window algorithms is up to twice their limit (at a window edge).
    fn admission_bound(&self, window: Duration) -> u64;
}

fn mul(a: u64, b: u64) -> u64 {
    a.saturating_mul(b)
}

fn window_nanos(w: Duration) -> u64 {
    u64::try_from(w.as_nanos()).unwrap_or(u64::MAX)
}

/// GCRA (generic cell rate algorithm, ITU-T I.371): the state is a single "theoretical
/// arrival time" (TAT). A request of `n` units conforms if `max(TAT, now) + n·T` is no more
/// than `burst·T` ahead of now. One `u64` per key, no refill arithmetic.
///
/// ```
/// use scalewise::ratelimit::{Gcra, Limiter, Quota, RateLimiter};
/// let limiter = RateLimiter::new(Gcra::new("10/s burst 3".parse::<Quota>().unwrap()));
/// assert!(limiter.check_n(3).allowed);
/// assert!(!limiter.check().allowed);
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Gcra {
    interval: u64,
    burst: u64,
    tolerance: u64,
}

impl Gcra {
    /// A GCRA limiter for `quota`.
    pub fn new(quota: impl Into<Quota>) -> Self {
        let q = quota.into();
        let interval = q.rate.interval_nanos();
        Self {
            interval,
            burst: q.burst,
            tolerance: mul(interval, q.burst),
        }
    }

    /// The GCRA step on a bare TAT (shared with the lock-free and keyed variants).
    #[inline]
    pub(crate) fn step(&self, tat: u64, now: u64, n: u64) -> (Decision, Option<u64>) {
        let base = tat.max(now);
        if n > self.burst {
            let reset = base - now;
            let remaining = self.tolerance.saturating_sub(reset) / self.interval;
            return (Decision::deny(self.burst, remaining, u64::MAX, reset), None);
        }
        let new_tat = base.saturating_add(mul(n, self.interval));
        let horizon = now.saturating_add(self.tolerance);
        if new_tat <= horizon {
            let remaining = (horizon - new_tat) / self.interval;
            (
                Decision::allow(self.burst, remaining, new_tat - now),
                Some(new_tat),
            )
        } else {
            let remaining = horizon.saturating_sub(base) / self.interval;
            (
                Decision::deny(self.burst, remaining, new_tat - horizon, base - now),
                None,
            )
        }
    }
}

impl Algorithm for Gcra {
    type State = u64;

    fn initial_state(&self, _now: u64) -> u64 {
        0
    }

    #[inline]
    fn check(&self, tat: &mut u64, now: u64, n: u64) -> Decision {
        let (d, new) = self.step(*tat, now, n);
        if let Some(t) = new {
            *tat = t;
        }
        d
    }

    fn idle_after(&self) -> Duration {
        Duration::from_nanos(self.tolerance)
    }

    fn admission_bound(&self, window: Duration) -> u64 {
        self.burst
            .saturating_add(window_nanos(window) / self.interval)
    }
}

/// Token bucket: a bucket of `burst` tokens refilled continuously at the rate; a request
/// takes `n` tokens or is denied. Tokens are kept as nanoseconds of refill time so that
/// fractional tokens accumulate exactly.
#[derive(Debug, Clone, Copy)]
pub struct TokenBucket {
    interval: u64,
    burst: u64,
    capacity: u64,
}

/// State of a [`TokenBucket`].
#[derive(Debug, Clone, Copy)]
pub struct TokenBucketState {
    credit: u64,
    last: u64,
}

impl TokenBucket {
    /// A bucket of `quota.burst` tokens refilled at `quota.rate`.
    pub fn new(quota: impl Into<Quota>) -> Self {
        let q = quota.into();
        let interval = q.rate.interval_nanos();
        Self {
            interval,
            burst: q.burst,
            capacity: mul(interval, q.burst),
        }
    }
}

impl Algorithm for TokenBucket {
    type State = TokenBucketState;

    fn initial_state(&self, now: u64) -> TokenBucketState {
        TokenBucketState {
            credit: self.capacity,
            last: now,
        }
    }

    fn check(&self, s: &mut TokenBucketState, now: u64, n: u64) -> Decision {
        let elapsed = now.saturating_sub(s.last);
        s.credit = s.credit.saturating_add(elapsed).min(self.capacity);
        s.last = s.last.max(now);
        let need = mul(n, self.interval);
        if n > self.burst {
            return Decision::deny(
                self.burst,
                s.credit / self.interval,
                u64::MAX,
                self.capacity - s.credit,
            );
        }
        if s.credit >= need {
            s.credit -= need;
            Decision::allow(
                self.burst,
                s.credit / self.interval,
                self.capacity - s.credit,
            )
        } else {
            Decision::deny(
                self.burst,
                s.credit / self.interval,
                need - s.credit,
                self.capacity - s.credit,
            )
        }
    }

    fn idle_after(&self) -> Duration {
        Duration::from_nanos(self.capacity)
    }

    fn admission_bound(&self, window: Duration) -> u64 {
        self.burst
            .saturating_add(window_nanos(window) / self.interval)
    }
}

/// Leaky bucket as a meter (policing): each request pours `n` units into a bucket of size
/// `burst` that drains at the rate; a request that would overflow it is denied.
///
/// With [`LeakyBucket::shaping`] it becomes a queue instead: a request that does not fit
/// now is admitted with a [`Decision::delay`] (when it would have drained), as long as that
/// delay is at most `max_wait`; only beyond that is it denied. Callers (and
/// [`RateLimitLayer`](super::RateLimitLayer)) wait out the delay, which smooths bursts into
/// an even stream instead of rejecting them.
#[derive(Debug, Clone, Copy)]
pub struct LeakyBucket {
    interval: u64,
    burst: u64,
    capacity: u64,
    max_wait: u64,
}

/// State of a [`LeakyBucket`]: the bucket level in nanoseconds of drain time.
#[derive(Debug, Clone, Copy)]
pub struct LeakyBucketState {
    level: u64,
    last: u64,
}

impl LeakyBucket {
    /// A policing leaky bucket of size `quota.burst` draining at `quota.rate`.
    pub fn new(quota: impl Into<Quota>) -> Self {
        Self::shaping(quota, Duration::ZERO)
    }

    /// A shaping leaky bucket: admits with a delay of up to `max_wait`.
    pub fn shaping(quota: impl Into<Quota>, max_wait: Duration) -> Self {
        let q = quota.into();
        let interval = q.rate.interval_nanos();
        Self {
            interval,
            burst: q.burst,
            capacity: mul(interval, q.burst),
            max_wait: window_nanos(max_wait),
        }
    }

    /// The longest delay this bucket hands out.
    pub fn max_wait(&self) -> Duration {
        Duration::from_nanos(self.max_wait)
    }
}

impl Algorithm for LeakyBucket {
    type State = LeakyBucketState;

    fn initial_state(&self, now: u64) -> LeakyBucketState {
        LeakyBucketState {
            level: 0,
            last: now,
        }
    }

    fn check(&self, s: &mut LeakyBucketState, now: u64, n: u64) -> Decision {
        s.level = s.level.saturating_sub(now.saturating_sub(s.last));
        s.last = s.last.max(now);
        let remaining = self.capacity.saturating_sub(s.level) / self.interval;
        if n > self.burst {
            return Decision::deny(self.burst, remaining, u64::MAX, s.level);
        }
        let level = s.level.saturating_add(mul(n, self.interval));
        // The request's last unit leaves the bucket once the level is back at capacity.
        let delay = level.saturating_sub(self.capacity);
        if delay <= self.max_wait {
            s.level = level;
            let mut d = Decision::allow(
                self.burst,
                self.capacity.saturating_sub(level) / self.interval,
                level,
            );
            d.delay = Duration::from_nanos(delay);
            d
        } else {
            Decision::deny(self.burst, remaining, delay - self.max_wait, s.level)
        }
    }

    fn idle_after(&self) -> Duration {
        Duration::from_nanos(self.capacity.saturating_add(self.max_wait))
    }

    /// For a shaping bucket the bound holds for the times requests *proceed* (decision time
    /// plus delay), which is what the protected resource sees.
    fn admission_bound(&self, window: Duration) -> u64 {
        self.burst
            .saturating_add(window_nanos(window) / self.interval)
    }
}

/// Fixed window: at most `limit` units per aligned window of `period`. Cheapest state, but
/// up to `2 × limit` can pass around a window edge.
#[derive(Debug, Clone, Copy)]
pub struct FixedWindow {
    limit: u64,
    period: u64,
}

/// State of a [`FixedWindow`].
#[derive(Debug, Clone, Copy)]
pub struct FixedWindowState {
    window: u64,
    count: u64,
}

impl FixedWindow {
    /// `rate.count` units per window of `rate.period`.
    pub fn new(rate: Rate) -> Self {
        Self {
            limit: rate.count(),
            period: rate.period_nanos(),
        }
    }
}

impl Algorithm for FixedWindow {
    type State = FixedWindowState;

    fn initial_state(&self, now: u64) -> FixedWindowState {
        FixedWindowState {
            window: now / self.period,
            count: 0,
        }
    }

    fn check(&self, s: &mut FixedWindowState, now: u64, n: u64) -> Decision {
        let window = now / self.period;
        if window > s.window {
            s.window = window;
            s.count = 0;
        }
        let reset = (s.window + 1)
            .saturating_mul(self.period)
            .saturating_sub(now);
        let remaining = self.limit.saturating_sub(s.count);
        if n > self.limit {
            Decision::deny(self.limit, remaining, u64::MAX, reset)
        } else if s.count + n <= self.limit {
            s.count += n;
            Decision::allow(self.limit, self.limit - s.count, reset)
        } else {
            Decision::deny(self.limit, remaining, reset, reset)
        }
    }

    fn idle_after(&self) -> Duration {
        Duration::from_nanos(self.period)
    }

    fn admission_bound(&self, window: Duration) -> u64 {
        let windows = window_nanos(window).div_ceil(self.period).saturating_add(1);
        mul(self.limit, windows)
    }
}

/// Sliding-window log: remembers when each admitted unit passed and admits `n` more only if
/// fewer than `limit` passed in the last `period`. Exact, but the state holds up to `limit`
/// timestamps (batches are stored once with their size), so use it for small limits.
#[derive(Debug, Clone, Copy)]
pub struct SlidingWindowLog {
    limit: u64,
    period: u64,
}

/// State of a [`SlidingWindowLog`]: (time, units) of admissions within the last period.
#[derive(Debug, Clone, Default)]
pub struct SlidingWindowLogState {
    log: VecDeque<(u64, u64)>,
    total: u64,
}

impl SlidingWindowLog {
    /// At most `rate.count` units in any `rate.period`.
    pub fn new(rate: Rate) -> Self {
        Self {
            limit: rate.count(),
            period: rate.period_nanos(),
        }
    }
}

impl Algorithm for SlidingWindowLog {
    type State = SlidingWindowLogState;

    fn initial_state(&self, _now: u64) -> SlidingWindowLogState {
        SlidingWindowLogState::default()
    }

    fn check(&self, s: &mut SlidingWindowLogState, now: u64, n: u64) -> Decision {
        // Threads read the clock before taking the lock, so `now` can be slightly behind the
        // newest entry; keeping the log sorted keeps the arithmetic below from underflowing.
        let now = now.max(s.log.back().map_or(0, |&(t, _)| t));
        // Entries at or before now - period no longer count: the window is (now - period, now].
        while let Some(&(t, units)) = s.log.front() {
            if t.saturating_add(self.period) <= now {
                s.log.pop_front();
                s.total -= units;
            } else {
                break;
            }
        }
        let reset = s
            .log
            .back()
            .map_or(0, |&(t, _)| t.saturating_add(self.period) - now);
        let remaining = self.limit.saturating_sub(s.total);
        if n > self.limit {
            return Decision::deny(self.limit, remaining, u64::MAX, reset);
        }
        if s.total + n <= self.limit {
            s.total += n;
            match s.log.back_mut() {
                Some((t, units)) if *t == now => *units += n,
                _ => s.log.push_back((now, n)),
            }
            return Decision::allow(self.limit, self.limit - s.total, self.period);
        }
        // Wait until enough of the oldest units have expired.
        debug_assert!(s
            .log
            .iter()
            .all(|&(t, _)| t.saturating_add(self.period) > now));
        let mut must_free = s.total + n - self.limit;
        let mut retry = 0;
        for &(t, units) in &s.log {
            retry = t.saturating_add(self.period) - now;
            if units >= must_free {
                break;
            }
            must_free -= units;
        }
        Decision::deny(self.limit, remaining, retry, reset)
    }

    fn idle_after(&self) -> Duration {
        Duration::from_nanos(self.period)
    }

    fn admission_bound(&self, window: Duration) -> u64 {
        let windows = window_nanos(window).saturating_add(1).div_ceil(self.period);
        mul(self.limit, windows)
    }
}

/// Sliding-window counter: the previous fixed window's count, weighted by how much of it
/// still overlaps the sliding window, plus the current count. Constant state; smooths the
/// fixed window's edge burst under even traffic (it assumes the previous window's units
/// were spread evenly).
#[derive(Debug, Clone, Copy)]
pub struct SlidingWindowCounter {
    limit: u64,
    period: u64,
}

/// State of a [`SlidingWindowCounter`].
#[derive(Debug, Clone, Copy)]
pub struct SlidingWindowCounterState {
    window: u64,
    prev: u64,
    cur: u64,
}

impl SlidingWindowCounter {
    /// About `rate.count` units in any `rate.period`.
    pub fn new(rate: Rate) -> Self {
        Self {
            limit: rate.count(),
            period: rate.period_nanos(),
        }
    }

    fn weighted(&self, prev: u64, elapsed: u64) -> u64 {
        // Rounded up so that the estimate never under-counts the previous window.
        let rest = u128::from(self.period - elapsed.min(self.period));
        (u128::from(prev) * rest).div_ceil(u128::from(self.period)) as u64
    }
}

impl Algorithm for SlidingWindowCounter {
    type State = SlidingWindowCounterState;

    fn initial_state(&self, now: u64) -> SlidingWindowCounterState {
        SlidingWindowCounterState {
            window: now / self.period,
            prev: 0,
            cur: 0,
        }
    }

    fn check(&self, s: &mut SlidingWindowCounterState, now: u64, n: u64) -> Decision {
        let window = now / self.period;
        if window > s.window {
            s.prev = if window == s.window + 1 { s.cur } else { 0 };
            s.cur = 0;
            s.window = window;
        }
        let elapsed = now - window * self.period;
        let to_edge = self.period - elapsed;
        let estimate = self.weighted(s.prev, elapsed) + s.cur;
        let remaining = self.limit.saturating_sub(estimate);
        // Until the current window's units have slid out: the end of the next window.
        let reset = if s.cur > 0 {
            to_edge + self.period
        } else {
            to_edge
        };
        if n > self.limit {
            return Decision::deny(self.limit, remaining, u64::MAX, reset);
        }
        if estimate + n <= self.limit {
            s.cur += n;
            return Decision::allow(self.limit, remaining - n, reset);
        }
        // Find when the weighted previous count has decayed enough.
        let retry = if s.cur + n <= self.limit {
            let allowed_prev = self.limit - s.cur - n;
            // weighted(prev, e) <= allowed_prev  <=>  e >= period - allowed_prev*period/prev
            let need = self.period
                - (u128::from(allowed_prev) * u128::from(self.period) / u128::from(s.prev.max(1)))
                    as u64;
            need.saturating_sub(elapsed).max(1)
        } else {
            // Next window: prev = cur, cur = 0.
            let allowed_prev = self.limit - n;
            let need = self.period
                - (u128::from(allowed_prev) * u128::from(self.period) / u128::from(s.cur.max(1)))
                    .min(u128::from(self.period)) as u64;
            to_edge + need
        };
        Decision::deny(self.limit, remaining, retry, reset)
    }

    fn idle_after(&self) -> Duration {
        Duration::from_nanos(self.period.saturating_mul(2))
    }

    fn admission_bound(&self, window: Duration) -> u64 {
        // The current count alone never exceeds the limit, so the fixed-window bound holds.
        let windows = window_nanos(window).div_ceil(self.period).saturating_add(1);
        mul(self.limit, windows)
    }
}

/// Which algorithm, by name; used by configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlgorithmKind {
    /// [`Gcra`].
    #[default]
    Gcra,
    /// [`TokenBucket`].
    TokenBucket,
    /// [`LeakyBucket`] (shaping when a `max_wait` is configured).
    LeakyBucket,
    /// [`FixedWindow`].
    FixedWindow,
    /// [`SlidingWindowLog`].
    SlidingWindowLog,
    /// [`SlidingWindowCounter`]; `sliding_window` is accepted too.
    #[serde(alias = "sliding_window")]
    SlidingWindowCounter,
}

/// Any of the algorithms, chosen at run time (from configuration).
#[derive(Debug, Clone, Copy)]
pub enum AnyAlgorithm {
    /// See [`Gcra`].
    Gcra(Gcra),
    /// See [`TokenBucket`].
    TokenBucket(TokenBucket),
    /// See [`LeakyBucket`].
    LeakyBucket(LeakyBucket),
    /// See [`FixedWindow`].
    FixedWindow(FixedWindow),
    /// See [`SlidingWindowLog`].
    SlidingWindowLog(SlidingWindowLog),
    /// See [`SlidingWindowCounter`].
    SlidingWindowCounter(SlidingWindowCounter),
}

/// State of an [`AnyAlgorithm`].
#[derive(Debug, Clone)]
pub enum AnyState {
    /// GCRA's TAT.
    Gcra(u64),
    /// Token bucket state.
    TokenBucket(TokenBucketState),
    /// Leaky bucket state.
    LeakyBucket(LeakyBucketState),
    /// Fixed window state.
    FixedWindow(FixedWindowState),
    /// Sliding log state.
    SlidingWindowLog(SlidingWindowLogState),
    /// Sliding counter state.
    SlidingWindowCounter(SlidingWindowCounterState),
}

impl AnyAlgorithm {
    /// Builds `kind` for `quota`; `max_wait` makes a leaky bucket shape instead of police.
    pub fn new(kind: AlgorithmKind, quota: Quota, max_wait: Option<Duration>) -> Self {
        match kind {
            AlgorithmKind::Gcra => Self::Gcra(Gcra::new(quota)),
            AlgorithmKind::TokenBucket => Self::TokenBucket(TokenBucket::new(quota)),
            AlgorithmKind::LeakyBucket => Self::LeakyBucket(LeakyBucket::shaping(
                quota,
                max_wait.unwrap_or(Duration::ZERO),
            )),
            AlgorithmKind::FixedWindow => Self::FixedWindow(FixedWindow::new(quota.rate)),
            AlgorithmKind::SlidingWindowLog => {
                Self::SlidingWindowLog(SlidingWindowLog::new(quota.rate))
            }
            AlgorithmKind::SlidingWindowCounter => {
                Self::SlidingWindowCounter(SlidingWindowCounter::new(quota.rate))
            }
        }
    }
}

macro_rules! dispatch {
    ($self:expr, $a:ident => $e:expr) => {
        match $self {
            AnyAlgorithm::Gcra($a) => $e,
            AnyAlgorithm::TokenBucket($a) => $e,
            AnyAlgorithm::LeakyBucket($a) => $e,
            AnyAlgorithm::FixedWindow($a) => $e,
            AnyAlgorithm::SlidingWindowLog($a) => $e,
            AnyAlgorithm::SlidingWindowCounter($a) => $e,
        }
    };
}

impl Algorithm for AnyAlgorithm {
    type State = AnyState;

    fn initial_state(&self, now: u64) -> AnyState {
        match self {
            Self::Gcra(a) => AnyState::Gcra(a.initial_state(now)),
            Self::TokenBucket(a) => AnyState::TokenBucket(a.initial_state(now)),
            Self::LeakyBucket(a) => AnyState::LeakyBucket(a.initial_state(now)),
            Self::FixedWindow(a) => AnyState::FixedWindow(a.initial_state(now)),
            Self::SlidingWindowLog(a) => AnyState::SlidingWindowLog(a.initial_state(now)),
            Self::SlidingWindowCounter(a) => AnyState::SlidingWindowCounter(a.initial_state(now)),
        }
    }

    fn check(&self, state: &mut AnyState, now: u64, n: u64) -> Decision {
        match (self, state) {
            (Self::Gcra(a), AnyState::Gcra(s)) => a.check(s, now, n),
            (Self::TokenBucket(a), AnyState::TokenBucket(s)) => a.check(s, now, n),
            (Self::LeakyBucket(a), AnyState::LeakyBucket(s)) => a.check(s, now, n),
            (Self::FixedWindow(a), AnyState::FixedWindow(s)) => a.check(s, now, n),
            (Self::SlidingWindowLog(a), AnyState::SlidingWindowLog(s)) => a.check(s, now, n),
            (Self::SlidingWindowCounter(a), AnyState::SlidingWindowCounter(s)) => {
                a.check(s, now, n)
            }
            // A state always comes from `initial_state` of the same algorithm value; if
            // that were ever violated, restarting the key is the safe answer.
            (alg, state) => {
                *state = alg.initial_state(now);
                alg.check(state, now, n)
            }
        }
    }

    fn idle_after(&self) -> Duration {
        dispatch!(self, a => a.idle_after())
    }

    fn admission_bound(&self, window: Duration) -> u64 {
        dispatch!(self, a => a.admission_bound(window))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Clocks are read before the lock, so a check may carry an earlier time than the last.
    #[test]
    fn earlier_times_than_the_last_check_are_harmless() {
        let rate: Rate = "3/s".parse().unwrap();
        let q = Quota::new(rate);
        let algs = [
            AnyAlgorithm::Gcra(Gcra::new(q)),
            AnyAlgorithm::TokenBucket(TokenBucket::new(q)),
            AnyAlgorithm::LeakyBucket(LeakyBucket::shaping(q, Duration::from_secs(1))),
            AnyAlgorithm::FixedWindow(FixedWindow::new(rate)),
            AnyAlgorithm::SlidingWindowLog(SlidingWindowLog::new(rate)),
            AnyAlgorithm::SlidingWindowCounter(SlidingWindowCounter::new(rate)),
        ];
        for alg in algs {
            let mut st = alg.initial_state(0);
            let mut admitted = 0;
            for t in [
                5_000_000_000u64,
                4_000_000_000,
                5_000_000_001,
                4_999_999_999,
                6_500_000_000,
                6_000_000_000,
            ] {
                admitted += u64::from(alg.check(&mut st, t, 1).allowed);
            }
            assert!(
                admitted <= alg.admission_bound(Duration::from_millis(2500)),
                "{alg:?}"
            );
        }
    }
}
