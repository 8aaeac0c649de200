//! The clock every time-dependent primitive takes, so that windows, backoff and expiry
//! can be tested exactly (with [`ManualClock`]) instead of with sleeps.
//!
//! Time is a monotonic count of nanoseconds since an arbitrary origin: a `u64` fits in an
//! atomic, which lets limiters and breakers keep their state lock-free.
//!
//! ```
//! use scalewise::clock::{Clock, ManualClock};
//! use std::time::Duration;
//!
//! let clock = ManualClock::new();
//! let t0 = clock.now_nanos();
//! clock.advance(Duration::from_millis(5));
//! assert_eq!(clock.now_nanos() - t0, 5_000_000);
//! ```
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// A monotonic clock.
pub trait Clock: Send + Sync + 'static {
    /// Nanoseconds since this clock's origin. Never decreases.
    fn now_nanos(&self) -> u64;

    /// [`Clock::now_nanos`] as a [`Duration`] since the origin.
    fn now(&self) -> Duration {
        Duration::from_nanos(self.now_nanos())
    }
}

/// The real monotonic clock ([`Instant`]), with its origin at first use in this process.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

fn origin() -> Instant {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    *ORIGIN.get_or_init(Instant::now)
}

impl Clock for SystemClock {
    #[inline]
    fn now_nanos(&self) -> u64 {
        // u64 nanoseconds overflow after 584 years of uptime.
        origin().elapsed().as_nanos() as u64
    }
}

/// A fast monotonic clock backed by the CPU's time-stamp counter (via `quanta`), for hot
/// paths such as rate-limiter checks where reading [`Instant`] (~20 ns) would dominate the
/// cost. Falls back to the OS clock where no stable TSC is available. Clones share an origin.
#[derive(Debug, Clone)]
pub struct QuantaClock {
    clock: quanta::Clock,
    origin: u64,
}

impl QuantaClock {
    /// A clock with its origin now.
    pub fn new() -> Self {
        let clock = quanta::Clock::new();
        let origin = clock.raw();
        Self { clock, origin }
    }
}

impl Default for QuantaClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for QuantaClock {
    #[inline]
    fn now_nanos(&self) -> u64 {
        self.clock.delta_as_nanos(self.origin, self.clock.raw())
    }
}

/// A coarse clock: reads a timestamp cached by a background thread (quanta's "recent"
/// time), which costs one atomic load instead of a TSC read. Time advances in steps of the
/// refresh interval, so a limiter using it can be off by up to one interval; use it where a
/// check must cost as little as possible and millisecond precision is plenty.
#[derive(Debug, Clone)]
pub struct CoarseClock {
    origin: quanta::Instant,
}

impl CoarseClock {
    /// Starts, once per process, the thread that refreshes the cached time every
    /// `resolution` (later calls share the first thread and its resolution). If the thread
    /// cannot be started, reads fall back to the precise clock.
    pub fn start(resolution: Duration) -> Self {
        static UPKEEP: OnceLock<Option<quanta::Handle>> = OnceLock::new();
        UPKEEP.get_or_init(|| quanta::Upkeep::new(resolution).start().ok());
        Self {
            origin: quanta::Instant::recent(),
        }
    }
}

impl Clock for CoarseClock {
    #[inline]
    fn now_nanos(&self) -> u64 {
        quanta::Instant::recent()
            .saturating_duration_since(self.origin)
            .as_nanos() as u64
    }
}

/// tokio's clock: follows `tokio::time::pause`/`advance` in tests, real time otherwise.
#[derive(Debug, Clone, Copy, Default)]
pub struct TokioClock;

impl Clock for TokioClock {
    fn now_nanos(&self) -> u64 {
        static ORIGIN: OnceLock<tokio::time::Instant> = OnceLock::new();
        let origin = *ORIGIN.get_or_init(tokio::time::Instant::now);
        tokio::time::Instant::now()
            .saturating_duration_since(origin)
            .as_nanos() as u64
    }
}

/// A clock that moves only when told to. Clones share the same time.
#[derive(Clone, Default)]
pub struct ManualClock {
    nanos: Arc<AtomicU64>,
}

impl ManualClock {
    /// A clock at time zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        self.nanos.fetch_add(by.as_nanos() as u64, Ordering::SeqCst);
    }

    /// Sets the clock to `nanos` since the origin. Setting it backwards is ignored, since a
    /// monotonic clock never goes back.
    pub fn set_nanos(&self, nanos: u64) {
        self.nanos.fetch_max(nanos, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_nanos(&self) -> u64 {
        self.nanos.load(Ordering::SeqCst)
    }
}

impl fmt::Debug for ManualClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ManualClock")
            .field("nanos", &self.now_nanos())
            .finish()
    }
}

impl<C: Clock + ?Sized> Clock for Arc<C> {
    fn now_nanos(&self) -> u64 {
        (**self).now_nanos()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_only_moves_forward() {
        let c = ManualClock::new();
        c.advance(Duration::from_secs(2));
        c.set_nanos(1);
        assert_eq!(c.now(), Duration::from_secs(2));
    }

    #[test]
    fn quanta_clock_is_monotonic() {
        let c = QuantaClock::new();
        let a = c.now_nanos();
        let b = c.now_nanos();
        assert!(b >= a);
    }

    #[test]
    fn coarse_clock_never_goes_back() {
        let c = CoarseClock::start(Duration::from_millis(1));
        let a = c.now_nanos();
        let b = c.now_nanos();
        assert!(b >= a);
    }

    #[test]
    fn system_clock_is_monotonic() {
        let a = SystemClock.now_nanos();
        let b = SystemClock.now_nanos();
        assert!(b >= a);
    }
}
