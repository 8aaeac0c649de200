//! Circuit breakers: stop calling a backend that is failing, give it time, then probe it.
//!
//! A [`CircuitBreaker`] judges a sliding window of recent calls (the last *N* calls, or the
//! last *N* seconds). When at least `minimum_calls` are in the window and the failure rate
//! or the slow-call rate reaches its threshold, the breaker **opens**: calls are rejected
//! at once with [`Rejected`]. After the open duration (growing exponentially, with jitter,
//! across consecutive openings) it lets a few **trial** calls through (**half-open**); if
//! they succeed it **closes**, if they fail it opens again. If the trials do not complete
//! within `half_open_max_wait`, it opens again too, so it can never get stuck half-open.
//!
//! ```text
//!   Closed --(rate >= threshold)--> Open --(open duration)--> HalfOpen --(trials ok)--> Closed
//!                                    ^                           |
//!                                    +--(trial failed / max wait)+
//! ```
//! `ForcedOpen` and `Disabled` are entered and left only by explicit calls
//! ([`CircuitBreaker::force_open`], [`CircuitBreaker::disable`], [`CircuitBreaker::reset`]).
//!
//! The closed state costs a couple of uncontended atomic operations per call and no lock
//! and, with a count-based window and slow-call tracking off, no clock read.
//!
//! ```
//! use scalewise::breaker::{BreakerConfig, CircuitBreaker, State, WindowConfig};
//!
//! let breaker = CircuitBreaker::new(BreakerConfig {
//!     window: WindowConfig::Count { size: 10 },
//!     minimum_calls: 4,
//!     failure_rate_threshold: 0.5,
//!     ..BreakerConfig::default()
//! });
//!
//! // Guard a call by hand...
//! for _ in 0..4 {
//!     let permit = breaker.try_acquire().expect("closed");
//!     permit.failure();
//! }
//! assert_eq!(breaker.state(), State::Open);
//! assert!(breaker.try_acquire().is_err());
//! ```
//!
//! ...or let [`CircuitBreaker::call`] do it, or put a [`BreakerLayer`] in a tower stack.
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rand::Rng;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use crate::clock::{Clock, SystemClock};
use crate::timeout::duration_serde;

pub mod classify;
mod layer;
mod registry;
mod window;

use classify::{Classify, ErrorsAreFailures, Verdict};
pub use layer::{BreakerLayer, BreakerService, ResponseFuture};
pub use registry::{BreakerRegistry, BreakerStats};
pub use window::WindowCounts;
use window::{CountWindow, TimeWindow};

/// Where a breaker is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Calls flow; outcomes are recorded and judged.
    Closed,
    /// Calls are rejected until the open duration has passed.
    Open,
    /// A limited number of trial calls decide between closing and opening again.
    HalfOpen,
    /// Rejects everything until [`CircuitBreaker::reset`] (operator action).
    ForcedOpen,
    /// Lets everything through and records nothing until [`CircuitBreaker::reset`].
    Disabled,
}

impl State {
    const ALL: [State; 5] = [
        State::Closed,
        State::Open,
        State::HalfOpen,
        State::ForcedOpen,
        State::Disabled,
    ];

    /// The name used in config, metrics and the admin API.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Closed => "closed",
            State::Open => "open",
            State::HalfOpen => "half_open",
            State::ForcedOpen => "forced_open",
            State::Disabled => "disabled",
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which calls the breaker judges.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum WindowConfig {
    /// The last `size` calls (at most 2^20).
    Count {
        /// Number of calls.
        size: u32,
    },
    /// The calls of the last `seconds` seconds (at most 3600), in one-second buckets.
    Time {
        /// Window length.
        seconds: u32,
    },
}

/// Breaker settings. Deserialises from config files with defaults for missing fields and
/// durations written as `"5s"`, `"250ms"`.
///
/// ```
/// use scalewise::breaker::BreakerConfig;
/// let c: BreakerConfig = serde_json::from_str(r#"{
///     "window": {"kind": "time", "seconds": 30},
///     "failure_rate_threshold": 0.25,
///     "open_duration": "2s"
/// }"#).unwrap();
/// assert!(c.validate().is_ok());
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BreakerConfig {
    /// The sliding window judged in the closed state.
    pub window: WindowConfig,
    /// Opens when failures / calls reaches this (0 < t <= 1).
    pub failure_rate_threshold: f64,
    /// Opens when slow calls / calls reaches this; `None` ignores slowness.
    pub slow_call_rate_threshold: Option<f64>,
    /// A call taking at least this long is slow.
    #[serde(with = "duration_serde")]
    pub slow_call_duration: Duration,
    /// No judgement until the window holds this many calls.
    pub minimum_calls: u32,
    /// How long the first opening lasts.
    #[serde(with = "duration_serde")]
    pub open_duration: Duration,
    /// Each consecutive opening (without closing in between) lasts this factor longer (>= 1).
    pub open_backoff_multiplier: f64,
    /// Cap on the open duration, jitter included.
    #[serde(with = "duration_serde")]
    pub max_open_duration: Duration,
    /// Random spread of each open duration, as a fraction (0.1 = +-10%), so that many
    /// breakers opened by one incident do not probe the backend in lockstep.
    pub open_jitter: f64,
    /// Trial calls let through when half-open.
    pub half_open_permitted_calls: u32,
    /// If the trials have not decided by then, the breaker opens again.
    #[serde(with = "duration_serde")]
    pub half_open_max_wait: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            window: WindowConfig::Count { size: 100 },
            failure_rate_threshold: 0.5,
            slow_call_rate_threshold: None,
            slow_call_duration: Duration::from_secs(1),
            minimum_calls: 20,
            open_duration: Duration::from_secs(5),
            open_backoff_multiplier: 2.0,
            max_open_duration: Duration::from_secs(60),
            open_jitter: 0.1,
            half_open_permitted_calls: 5,
            half_open_max_wait: Duration::from_secs(10),
        }
    }
}

/// A setting of [`BreakerConfig`] out of range.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("invalid breaker config: {field} {problem}")]
pub struct ConfigError {
    /// The field, as named in config files.
    pub field: &'static str,
    /// What is wrong with it.
    pub problem: String,
}

impl BreakerConfig {
    /// Checks every field. [`CircuitBreaker::new`] clamps instead; loaders of config files
    /// call this to report mistakes.
    ///
    /// # Errors
    /// The first field out of range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let err = |field, problem: &str| {
            Err(ConfigError {
                field,
                problem: problem.to_string(),
            })
        };
        let rate_ok = |r: f64| r > 0.0 && r <= 1.0;
        match self.window {
            WindowConfig::Count { size } if size == 0 || size > window::MAX_COUNT_WINDOW => {
                return err("window.size", "must be 1..=1048576")
            }
            WindowConfig::Time { seconds }
                if seconds == 0 || seconds > window::MAX_TIME_WINDOW_SECS =>
            {
                return err("window.seconds", "must be 1..=3600")
            }
            _ => {}
        }
        if !rate_ok(self.failure_rate_threshold) {
            return err("failure_rate_threshold", "must be in (0, 1]");
        }
        if let Some(r) = self.slow_call_rate_threshold {
            if !rate_ok(r) {
                return err("slow_call_rate_threshold", "must be in (0, 1]");
            }
        }
        if !(self.open_backoff_multiplier >= 1.0 && self.open_backoff_multiplier <= 1000.0) {
            return err("open_backoff_multiplier", "must be in [1, 1000]");
        }
        if !(0.0..=1.0).contains(&self.open_jitter) {
            return err("open_jitter", "must be in [0, 1]");
        }
        if self.half_open_permitted_calls == 0 {
            return err("half_open_permitted_calls", "must be at least 1");
        }
        if self.max_open_duration < self.open_duration {
            return err("max_open_duration", "must be at least open_duration");
        }
        if self.half_open_max_wait.is_zero() {
            return err("half_open_max_wait", "must be positive");
        }
        Ok(())
    }

    fn clamped(mut self) -> Self {
        let rate = |r: f64| if r.is_nan() { 1.0 } else { r.clamp(1e-6, 1.0) };
        self.window = match self.window {
            WindowConfig::Count { size } => WindowConfig::Count {
                size: size.clamp(1, window::MAX_COUNT_WINDOW),
            },
            WindowConfig::Time { seconds } => WindowConfig::Time {
                seconds: seconds.clamp(1, window::MAX_TIME_WINDOW_SECS),
            },
        };
        self.failure_rate_threshold = rate(self.failure_rate_threshold);
        self.slow_call_rate_threshold = self.slow_call_rate_threshold.map(rate);
        self.open_backoff_multiplier = if self.open_backoff_multiplier.is_nan() {
            1.0
        } else {
            self.open_backoff_multiplier.clamp(1.0, 1000.0)
        };
        self.open_jitter = if self.open_jitter.is_nan() {
            0.0
        } else {
            self.open_jitter.clamp(0.0, 1.0)
        };
        self.half_open_permitted_calls = self.half_open_permitted_calls.max(1);
        self.max_open_duration = self.max_open_duration.max(self.open_duration);
        self.half_open_max_wait = self.half_open_max_wait.max(Duration::from_nanos(1));
        self
    }
}

/// Why a breaker changed state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// The failure rate reached its threshold.
    FailureRate,
    /// The slow-call rate reached its threshold.
    SlowCallRate,
    /// The open duration passed.
    OpenElapsed,
    /// The half-open trials succeeded.
    TrialsSucceeded,
    /// The half-open trials failed.
    TrialsFailed,
    /// The trials did not decide within `half_open_max_wait`.
    HalfOpenTimeout,
    /// `force_open`, `disable` or `reset` was called.
    Manual,
}

/// A state change, as sent to [`CircuitBreaker::subscribe`]rs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StateChange {
    /// The breaker's name.
    pub breaker: String,
    /// The state left.
    pub from: State,
    /// The state entered.
    pub to: State,
    /// Why.
    pub reason: Reason,
    /// When, on the breaker's clock.
    #[serde(with = "duration_serde")]
    pub at: Duration,
    /// When entering `Open`: how long it stays open.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub open_for: Option<Duration>,
}

/// A call was not let through.
#[derive(Debug, Clone, thiserror::Error)]
#[error("circuit breaker `{name}` is {state}")]
pub struct Rejected {
    /// The breaker's name.
    pub name: Arc<str>,
    /// Its state when rejecting (`Open`, `HalfOpen` with all trials taken, or `ForcedOpen`).
    pub state: State,
    /// When to try again, if known.
    pub retry_after: Option<Duration>,
}

/// The error of [`CircuitBreaker::call`].
#[derive(Debug, thiserror::Error)]
pub enum CallError<E> {
    /// The breaker did not let the call through.
    #[error(transparent)]
    Rejected(Rejected),
    /// The call ran and failed.
    #[error(transparent)]
    Inner(E),
}

/// How a guarded call went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Outcome {
    /// Whether it failed.
    pub failure: bool,
    /// How long it took, to judge slowness. When `None` and the breaker tracks slow calls,
    /// the permit measures it from acquisition.
    pub duration: Option<Duration>,
}

impl Outcome {
    /// A success.
    pub fn success() -> Self {
        Self::default()
    }
    /// A failure.
    pub fn failure() -> Self {
        Self {
            failure: true,
            duration: None,
        }
    }
    /// With the call's duration.
    pub fn with_duration(mut self, d: Duration) -> Self {
        self.duration = Some(d);
        self
    }
}

const STATE_BITS: u64 = 8;
const STATE_MASK: u64 = (1 << STATE_BITS) - 1;

#[inline]
fn state_of(word: u64) -> State {
    State::ALL[((word & STATE_MASK) as usize).min(4)]
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Closed-state call: recorded in the window.
    Normal,
    /// Half-open trial: decides the next state.
    Trial,
    /// Disabled breaker: recorded nowhere.
    Untracked,
}

/// What a permit needs to report back: which generation of the state it was issued in, so
/// that outcomes arriving after a transition do not count for the new state.
#[derive(Debug, Clone, Copy)]
struct Ticket {
    word: u64,
    kind: Kind,
    start: Option<u64>,
}

enum Window {
    Count(CountWindow),
    Time(TimeWindow),
}

#[derive(Debug, Default)]
struct Machine {
    consecutive_opens: u32,
    half_open_since: u64,
    trials_issued: u32,
    trials_done: u32,
    trial_failures: u32,
    trial_slow: u32,
}

pub(crate) struct Inner {
    name: Arc<str>,
    cfg: BreakerConfig,
    /// `generation << 8 | state`. The only thing the closed-state hot path reads; written
    /// only under `machine`'s lock.
    word: AtomicU64,
    open_until: AtomicU64,
    window: Window,
    track_slow: bool,
    slow_nanos: u64,
    clock: Arc<dyn Clock>,
    machine: Mutex<Machine>,
    events: broadcast::Sender<StateChange>,
    rejected: AtomicU64,
}

/// A circuit breaker. Cheap to clone; clones share state.
#[derive(Clone)]
pub struct CircuitBreaker {
    inner: Arc<Inner>,
}

impl fmt::Debug for CircuitBreaker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreaker")
            .field("name", &self.inner.name)
            .field("state", &self.current_state())
            .finish()
    }
}

/// Builds a [`CircuitBreaker`] with a name, clock or shared event channel.
pub struct BreakerBuilder {
    name: Arc<str>,
    config: BreakerConfig,
    clock: Arc<dyn Clock>,
    events: Option<broadcast::Sender<StateChange>>,
}

impl BreakerBuilder {
    /// The settings.
    pub fn config(mut self, config: BreakerConfig) -> Self {
        self.config = config;
        self
    }
    /// The clock (default [`SystemClock`]).
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }
    /// Sends state changes to this channel (the registry shares one among its breakers).
    pub fn events(mut self, tx: broadcast::Sender<StateChange>) -> Self {
        self.events = Some(tx);
        self
    }

    /// Builds the breaker.
    ///
    /// # Errors
    /// The config does not pass [`BreakerConfig::validate`].
    pub fn build(self) -> Result<CircuitBreaker, ConfigError> {
        self.config.validate()?;
        Ok(self.build_clamped())
    }

    fn build_clamped(self) -> CircuitBreaker {
        let cfg = self.config.clamped();
        let now = self.clock.now_nanos();
        let window = match cfg.window {
            WindowConfig::Count { size } => Window::Count(CountWindow::new(size)),
            WindowConfig::Time { seconds } => Window::Time(TimeWindow::new(seconds, now)),
        };
        CircuitBreaker {
            inner: Arc::new(Inner {
                name: self.name,
                track_slow: cfg.slow_call_rate_threshold.is_some(),
                slow_nanos: cfg.slow_call_duration.as_nanos().min(u64::MAX as u128) as u64,
                cfg,
                word: AtomicU64::new(State::Closed as u64),
                open_until: AtomicU64::new(0),
                window,
                clock: self.clock,
                machine: Mutex::new(Machine::default()),
                events: self.events.unwrap_or_else(|| broadcast::channel(64).0),
                rejected: AtomicU64::new(0),
            }),
        }
    }
}

impl CircuitBreaker {
    /// A breaker named `"default"` on the system clock. Out-of-range settings are clamped
    /// into range; use [`CircuitBreaker::builder`] to have them reported instead.
    pub fn new(config: BreakerConfig) -> Self {
        Self::builder("default").config(config).build_clamped()
    }

    /// A builder for a breaker called `name`.
    pub fn builder(name: impl Into<Arc<str>>) -> BreakerBuilder {
        BreakerBuilder {
            name: name.into(),
            config: BreakerConfig::default(),
            clock: Arc::new(SystemClock),
            events: None,
        }
    }

    /// The breaker's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The settings in effect (after clamping).
    pub fn config(&self) -> &BreakerConfig {
        &self.inner.cfg
    }

    /// Asks to make a call. On success, report how the call went through the permit;
    /// a permit dropped without a report is ignored (a half-open trial slot is handed back).
    ///
    /// # Errors
    /// [`Rejected`] when open, forced open, or half-open with every trial slot taken.
    #[inline]
    pub fn try_acquire(&self) -> Result<Permit<'_>, Rejected> {
        let ticket = self.inner.acquire()?;
        Ok(Permit {
            inner: &self.inner,
            ticket: Some(ticket),
        })
    }

    /// Like [`CircuitBreaker::try_acquire`], for permits that must outlive the borrow
    /// (spawned tasks, futures returned from a service).
    ///
    /// # Errors
    /// As [`CircuitBreaker::try_acquire`].
    pub fn try_acquire_owned(&self) -> Result<OwnedPermit, Rejected> {
        let ticket = self.inner.acquire()?;
        Ok(OwnedPermit {
            inner: self.inner.clone(),
            ticket: Some(ticket),
        })
    }

    /// Runs `fut` if the breaker lets it, counting an `Err` as a failure.
    ///
    /// # Errors
    /// [`CallError::Rejected`] without running `fut`, or [`CallError::Inner`] with its error.
    pub async fn call<F, T, E>(&self, fut: F) -> Result<T, CallError<E>>
    where
        F: Future<Output = Result<T, E>>,
    {
        self.call_classified(&ErrorsAreFailures, fut).await
    }

    /// Runs `fut` if the breaker lets it, judging its result with `classifier`.
    ///
    /// # Errors
    /// As [`CircuitBreaker::call`].
    pub async fn call_classified<C, F, T, E>(
        &self,
        classifier: &C,
        fut: F,
    ) -> Result<T, CallError<E>>
    where
        C: Classify<T, E> + ?Sized,
        F: Future<Output = Result<T, E>>,
    {
        let permit = self.try_acquire().map_err(CallError::Rejected)?;
        let result = fut.await;
        permit.verdict(classifier.classify(&result));
        result.map_err(CallError::Inner)
    }

    /// Runs `fut` through the breaker; when it is rejected or fails, answers with
    /// `fallback` instead (a cached value, a default, another backend).
    ///
    /// ```
    /// use scalewise::breaker::{CircuitBreaker, BreakerConfig};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let b = CircuitBreaker::new(BreakerConfig::default());
    /// b.force_open();
    /// let v = b
    ///     .call_or_else(async { Ok::<_, std::io::Error>("fresh") }, |_err| async { Ok("cached") })
    ///     .await;
    /// assert_eq!(v.unwrap(), "cached");
    /// # }
    /// ```
    ///
    /// # Errors
    /// Whatever `fallback` returns.
    pub async fn call_or_else<F, T, E, FB, FF>(&self, fut: F, fallback: FB) -> Result<T, E>
    where
        F: Future<Output = Result<T, E>>,
        FB: FnOnce(CallError<E>) -> FF,
        FF: Future<Output = Result<T, E>>,
    {
        match self.call(fut).await {
            Ok(v) => Ok(v),
            Err(e) => fallback(e).await,
        }
    }

    /// The current state. Applies transitions that are due by time (open duration over,
    /// half-open max wait over), so a breaker is never reported half-open past its max wait.
    pub fn state(&self) -> State {
        let now = self.inner.clock.now_nanos();
        self.inner.tick(now);
        self.current_state()
    }

    fn current_state(&self) -> State {
        state_of(self.inner.word.load(Ordering::Acquire))
    }

    /// Rejects every call until [`CircuitBreaker::reset`].
    pub fn force_open(&self) {
        self.inner.manual(State::ForcedOpen);
    }

    /// Lets every call through, recording nothing, until [`CircuitBreaker::reset`].
    pub fn disable(&self) {
        self.inner.manual(State::Disabled);
    }

    /// Back to closed with an empty window and no backoff history.
    pub fn reset(&self) {
        self.inner.manual(State::Closed);
    }

    /// A stream of state changes. A slow receiver loses the oldest events (see
    /// [`broadcast::error::RecvError::Lagged`]) rather than slowing the breaker.
    pub fn subscribe(&self) -> broadcast::Receiver<StateChange> {
        self.inner.events.subscribe()
    }

    /// The outcomes in the current window (meaningful while closed).
    pub fn window(&self) -> WindowCounts {
        self.inner.snapshot(self.inner.clock.now_nanos())
    }

    /// A snapshot for metrics and the admin API.
    pub fn stats(&self) -> BreakerStats {
        let now = self.inner.clock.now_nanos();
        self.inner.tick(now);
        let w = self.inner.word.load(Ordering::Acquire);
        let state = state_of(w);
        let window = self.inner.snapshot(now);
        let rate = |n: u64| (window.calls > 0).then(|| n as f64 / window.calls as f64);
        let consecutive_opens = self.inner.lock().consecutive_opens;
        let open_until = self.inner.open_until.load(Ordering::Relaxed);
        BreakerStats {
            name: self.inner.name.to_string(),
            state,
            window,
            failure_rate: rate(window.failures),
            slow_call_rate: rate(window.slow),
            rejected: self.inner.rejected.load(Ordering::Relaxed),
            consecutive_opens,
            retry_after_ms: (state == State::Open)
                .then(|| open_until.saturating_sub(now) / 1_000_000),
        }
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, Machine> {
        // The machine's invariants hold between statements, so a panic elsewhere while
        // holding the lock leaves nothing half-done worth refusing service over.
        self.machine.lock().unwrap_or_else(|e| e.into_inner())
    }

    #[inline]
    fn acquire(&self) -> Result<Ticket, Rejected> {
        let word = self.word.load(Ordering::Acquire);
        if word & STATE_MASK == State::Closed as u64 {
            return Ok(Ticket {
                word,
                kind: Kind::Normal,
                start: self.track_slow.then(|| self.clock.now_nanos()),
            });
        }
        self.acquire_slow(word)
    }

    #[cold]
    fn acquire_slow(&self, word: u64) -> Result<Ticket, Rejected> {
        match state_of(word) {
            State::Disabled => {
                return Ok(Ticket {
                    word,
                    kind: Kind::Untracked,
                    start: None,
                })
            }
            State::ForcedOpen => return Err(self.reject(State::ForcedOpen, None)),
            State::Open => {
                let now = self.clock.now_nanos();
                let until = self.open_until.load(Ordering::Relaxed);
                if now < until {
                    return Err(self.reject(State::Open, Some(Duration::from_nanos(until - now))));
                }
            }
            State::Closed | State::HalfOpen => {}
        }
        let now = self.clock.now_nanos();
        let mut m = self.lock();
        self.tick_locked(&mut m, now);
        let word = self.word.load(Ordering::Relaxed);
        match state_of(word) {
            State::Closed => Ok(Ticket {
                word,
                kind: Kind::Normal,
                start: self.track_slow.then_some(now),
            }),
            State::Disabled => Ok(Ticket {
                word,
                kind: Kind::Untracked,
                start: None,
            }),
            State::HalfOpen if m.trials_issued < self.cfg.half_open_permitted_calls => {
                m.trials_issued += 1;
                Ok(Ticket {
                    word,
                    kind: Kind::Trial,
                    start: self.track_slow.then_some(now),
                })
            }
            State::HalfOpen => {
                let left = (m.half_open_since + self.max_wait_nanos()).saturating_sub(now);
                drop(m);
                Err(self.reject(State::HalfOpen, Some(Duration::from_nanos(left))))
            }
            State::Open => {
                let until = self.open_until.load(Ordering::Relaxed);
                drop(m);
                Err(self.reject(
                    State::Open,
                    Some(Duration::from_nanos(until.saturating_sub(now))),
                ))
            }
            State::ForcedOpen => {
                drop(m);
                Err(self.reject(State::ForcedOpen, None))
            }
        }
    }

    fn reject(&self, state: State, retry_after: Option<Duration>) -> Rejected {
        self.rejected.fetch_add(1, Ordering::Relaxed);
        Rejected {
            name: self.name.clone(),
            state,
            retry_after,
        }
    }

    fn max_wait_nanos(&self) -> u64 {
        self.cfg.half_open_max_wait.as_nanos().min(u64::MAX as u128) as u64
    }

    /// Applies transitions that are due by time alone.
    fn tick(&self, now: u64) {
        match state_of(self.word.load(Ordering::Acquire)) {
            State::Open if now >= self.open_until.load(Ordering::Relaxed) => {}
            State::HalfOpen => {}
            _ => return,
        }
        let mut m = self.lock();
        self.tick_locked(&mut m, now);
    }

    fn tick_locked(&self, m: &mut Machine, now: u64) {
        // A loop, because a breaker left alone for long may have both its open duration
        // and its half-open wait behind it; each step is still a single legal transition.
        for _ in 0..2 {
            match state_of(self.word.load(Ordering::Relaxed)) {
                State::Open if now >= self.open_until.load(Ordering::Relaxed) => {
                    self.transition(m, State::HalfOpen, Reason::OpenElapsed, now);
                }
                State::HalfOpen
                    if now.saturating_sub(m.half_open_since) >= self.max_wait_nanos() =>
                {
                    self.transition(m, State::Open, Reason::HalfOpenTimeout, now);
                }
                _ => return,
            }
        }
    }

    fn open_duration(&self, consecutive_opens: u32) -> Duration {
        let base = self.cfg.open_duration.as_secs_f64();
        let exp = consecutive_opens.saturating_sub(1).min(1000) as i32;
        let max = self.cfg.max_open_duration.as_secs_f64();
        let mut d = (base * self.cfg.open_backoff_multiplier.powi(exp)).min(max);
        if self.cfg.open_jitter > 0.0 {
            let j = self.cfg.open_jitter;
            d *= 1.0 + rand::thread_rng().gen_range(-j..=j);
        }
        Duration::from_secs_f64(d.clamp(0.0, max))
    }

    fn transition(&self, m: &mut Machine, to: State, reason: Reason, now: u64) {
        let word = self.word.load(Ordering::Relaxed);
        let from = state_of(word);
        let mut open_for = None;
        match to {
            State::Open => {
                m.consecutive_opens = m.consecutive_opens.saturating_add(1);
                let d = self.open_duration(m.consecutive_opens);
                let nanos = d.as_nanos().min(u64::MAX as u128) as u64;
                self.open_until
                    .store(now.saturating_add(nanos), Ordering::Relaxed);
                open_for = Some(d);
            }
            State::HalfOpen => {
                m.half_open_since = now;
                m.trials_issued = 0;
                m.trials_done = 0;
                m.trial_failures = 0;
                m.trial_slow = 0;
            }
            State::Closed => {
                m.consecutive_opens = 0;
                self.reset_window();
            }
            State::ForcedOpen | State::Disabled => {}
        }
        let generation = (word >> STATE_BITS).wrapping_add(1);
        self.word
            .store((generation << STATE_BITS) | to as u64, Ordering::Release);
        tracing::debug!(breaker = %self.name, %from, %to, ?reason, "circuit breaker state change");
        // No receivers is normal: nobody asked for events.
        let _ = self.events.send(StateChange {
            breaker: self.name.to_string(),
            from,
            to,
            reason,
            at: Duration::from_nanos(now),
            open_for,
        });
    }

    fn manual(&self, to: State) {
        let now = self.clock.now_nanos();
        let mut m = self.lock();
        if state_of(self.word.load(Ordering::Relaxed)) == to && to != State::Closed {
            return;
        }
        self.transition(&mut m, to, Reason::Manual, now);
    }

    fn reset_window(&self) {
        match &self.window {
            Window::Count(w) => w.reset(),
            Window::Time(w) => w.reset(),
        }
    }

    fn snapshot(&self, now: u64) -> WindowCounts {
        match &self.window {
            Window::Count(w) => w.snapshot(),
            Window::Time(w) => w.snapshot(now),
        }
    }

    fn is_slow(&self, t: &Ticket, o: &Outcome) -> bool {
        match (o.duration, t.start) {
            (Some(d), _) => d.as_nanos() >= self.slow_nanos as u128,
            (None, Some(start)) => self.clock.now_nanos().saturating_sub(start) >= self.slow_nanos,
            (None, None) => false,
        }
    }

    /// Too bad to stay closed (or to close)?
    fn judge(&self, calls: u64, failures: u64, slow: u64) -> Option<Reason> {
        if calls == 0 {
            return None;
        }
        if failures > 0 && failures as f64 >= self.cfg.failure_rate_threshold * calls as f64 {
            return Some(Reason::FailureRate);
        }
        match self.cfg.slow_call_rate_threshold {
            Some(t) if slow > 0 && slow as f64 >= t * calls as f64 => Some(Reason::SlowCallRate),
            _ => None,
        }
    }

    #[inline]
    fn finish(&self, t: Ticket, o: Outcome) {
        match t.kind {
            Kind::Untracked => {}
            Kind::Normal => {
                if self.word.load(Ordering::Relaxed) != t.word {
                    // Issued under an earlier state; it says nothing about this one.
                    return;
                }
                let slow = self.is_slow(&t, &o);
                let code = window::code(o.failure, slow);
                let now = match &self.window {
                    Window::Count(w) => {
                        w.record(code);
                        0
                    }
                    Window::Time(w) => {
                        let now = self.clock.now_nanos();
                        w.record(code, now);
                        now
                    }
                };
                // A success never opens the breaker, so only bad outcomes pay for a judgement.
                if o.failure || slow {
                    self.judge_closed(t.word, now);
                }
            }
            Kind::Trial => self.finish_trial(t, Some(o)),
        }
    }

    #[cold]
    fn judge_closed(&self, word: u64, now: u64) {
        let c = self.snapshot(now);
        if c.calls < self.cfg.minimum_calls.max(1) as u64 {
            return;
        }
        if let Some(reason) = self.judge(c.calls, c.failures, c.slow) {
            let now = self.clock.now_nanos();
            let mut m = self.lock();
            if self.word.load(Ordering::Relaxed) == word {
                self.transition(&mut m, State::Open, reason, now);
            }
        }
    }

    #[cold]
    fn finish_trial(&self, t: Ticket, o: Option<Outcome>) {
        let slow = o.as_ref().is_some_and(|o| self.is_slow(&t, o));
        let now = self.clock.now_nanos();
        let mut m = self.lock();
        if self.word.load(Ordering::Relaxed) != t.word {
            return;
        }
        let Some(o) = o else {
            // Abandoned: hand the slot to another caller.
            m.trials_issued = m.trials_issued.saturating_sub(1);
            return;
        };
        m.trials_done += 1;
        m.trial_failures += o.failure as u32;
        m.trial_slow += slow as u32;
        let permitted = self.cfg.half_open_permitted_calls;
        // Judged against all permitted trials, so a failure rate that the remaining trials
        // can no longer bring under the threshold opens at once.
        if self
            .judge(
                permitted as u64,
                m.trial_failures as u64,
                m.trial_slow as u64,
            )
            .is_some()
        {
            self.transition(&mut m, State::Open, Reason::TrialsFailed, now);
        } else if m.trials_done >= permitted {
            self.transition(&mut m, State::Closed, Reason::TrialsSucceeded, now);
        }
    }

    fn abandon(&self, t: Ticket) {
        if t.kind == Kind::Trial {
            self.finish_trial(t, None);
        }
    }
}

/// Permission for one call, from [`CircuitBreaker::try_acquire`]. Report the outcome with
/// [`Permit::success`], [`Permit::failure`] or [`Permit::record`]. Dropping it unreported
/// counts for nothing (a cancelled call says nothing about the backend); a half-open
/// trial's slot goes back to the pool.
#[must_use = "report the call's outcome, or the breaker learns nothing"]
pub struct Permit<'a> {
    inner: &'a Inner,
    ticket: Option<Ticket>,
}

impl Permit<'_> {
    /// The call succeeded.
    #[inline]
    pub fn success(self) {
        self.record(Outcome::success());
    }
    /// The call failed.
    pub fn failure(self) {
        self.record(Outcome::failure());
    }
    /// The call ended with `outcome`.
    #[inline]
    pub fn record(mut self, outcome: Outcome) {
        if let Some(t) = self.ticket.take() {
            self.inner.finish(t, outcome);
        }
    }
    /// Records a classifier's verdict (ignored verdicts are as if dropped).
    pub fn verdict(self, v: Verdict) {
        match v {
            Verdict::Success => self.success(),
            Verdict::Failure => self.failure(),
            Verdict::Ignored => drop(self),
        }
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if let Some(t) = self.ticket.take() {
            self.inner.abandon(t);
        }
    }
}

impl fmt::Debug for Permit<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Permit")
            .field("ticket", &self.ticket)
            .finish()
    }
}

/// A [`Permit`] that owns a handle to its breaker.
#[must_use = "report the call's outcome, or the breaker learns nothing"]
pub struct OwnedPermit {
    inner: Arc<Inner>,
    ticket: Option<Ticket>,
}

impl OwnedPermit {
    /// The call succeeded.
    pub fn success(self) {
        self.record(Outcome::success());
    }
    /// The call failed.
    pub fn failure(self) {
        self.record(Outcome::failure());
    }
    /// The call ended with `outcome`.
    pub fn record(mut self, outcome: Outcome) {
        if let Some(t) = self.ticket.take() {
            self.inner.finish(t, outcome);
        }
    }
    /// Records a classifier's verdict (ignored verdicts are as if dropped).
    pub fn verdict(self, v: Verdict) {
        match v {
            Verdict::Success => self.success(),
            Verdict::Failure => self.failure(),
            Verdict::Ignored => drop(self),
        }
    }
}

impl Drop for OwnedPermit {
    fn drop(&mut self) {
        if let Some(t) = self.ticket.take() {
            self.inner.abandon(t);
        }
    }
}

impl fmt::Debug for OwnedPermit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OwnedPermit")
            .field("breaker", &self.inner.name)
            .field("ticket", &self.ticket)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    fn breaker(clock: &ManualClock, cfg: BreakerConfig) -> CircuitBreaker {
        CircuitBreaker::builder("t")
            .config(cfg)
            .clock(clock.clone())
            .build()
            .unwrap()
    }

    fn cfg() -> BreakerConfig {
        BreakerConfig {
            window: WindowConfig::Count { size: 10 },
            minimum_calls: 4,
            open_jitter: 0.0,
            half_open_permitted_calls: 2,
            ..BreakerConfig::default()
        }
    }

    #[test]
    fn opens_half_opens_and_closes() {
        let clock = ManualClock::new();
        let b = breaker(&clock, cfg());
        for _ in 0..3 {
            b.try_acquire().unwrap().failure();
        }
        assert_eq!(b.state(), State::Closed, "below minimum calls");
        b.try_acquire().unwrap().failure();
        assert_eq!(b.state(), State::Open);
        let err = b.try_acquire().unwrap_err();
        assert_eq!(err.retry_after, Some(Duration::from_secs(5)));
        clock.advance(Duration::from_secs(5));
        assert_eq!(b.state(), State::HalfOpen);
        let t1 = b.try_acquire().unwrap();
        let t2 = b.try_acquire().unwrap();
        assert!(b.try_acquire().is_err(), "only two trials");
        t1.success();
        assert_eq!(b.state(), State::HalfOpen);
        t2.success();
        assert_eq!(b.state(), State::Closed);
        assert_eq!(b.window(), WindowCounts::default());
    }

    #[test]
    fn abandoned_trial_frees_its_slot() {
        let clock = ManualClock::new();
        let b = breaker(
            &clock,
            BreakerConfig {
                half_open_permitted_calls: 1,
                ..cfg()
            },
        );
        b.force_open();
        b.reset();
        for _ in 0..4 {
            b.try_acquire().unwrap().failure();
        }
        clock.advance(Duration::from_secs(5));
        let t = b.try_acquire().unwrap();
        assert!(b.try_acquire().is_err());
        drop(t);
        b.try_acquire().unwrap().success();
        assert_eq!(b.state(), State::Closed);
    }

    #[test]
    fn stale_permits_do_not_count() {
        let clock = ManualClock::new();
        let b = breaker(&clock, cfg());
        let old = b.try_acquire().unwrap();
        b.force_open();
        b.reset();
        old.failure();
        assert_eq!(b.window().calls, 0);
    }

    #[test]
    fn config_validation_names_the_field() {
        let e = BreakerConfig {
            failure_rate_threshold: 1.5,
            ..BreakerConfig::default()
        }
        .validate()
        .unwrap_err();
        assert_eq!(e.field, "failure_rate_threshold");
        let b = CircuitBreaker::new(BreakerConfig {
            failure_rate_threshold: f64::NAN,
            half_open_permitted_calls: 0,
            ..BreakerConfig::default()
        });
        assert_eq!(b.config().half_open_permitted_calls, 1);
    }
}
