//! Sliding windows of call outcomes with O(1), lock-free updates.
//!
//! Both windows keep running aggregates (calls, failures, slow calls) next to their slots,
//! so judging the window is three loads rather than a scan. Aggregates are signed: under
//! contention an aggregate can be briefly off by the few updates in flight (one thread has
//! replaced a slot, another has not yet adjusted the sum), never drifting, and reads clamp
//! at zero.
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicU8, Ordering::Relaxed};

/// Largest count-based window, so that a window fits comfortably in memory.
pub(crate) const MAX_COUNT_WINDOW: u32 = 1 << 20;
/// Largest time-based window in seconds (one hour).
pub(crate) const MAX_TIME_WINDOW_SECS: u32 = 3600;

const EMPTY: u8 = 0;
const FAIL_BIT: u8 = 0b01;
const SLOW_BIT: u8 = 0b10;
const PRESENT_BIT: u8 = 0b100;

/// What one finished call contributes to a window.
#[inline]
pub(crate) fn code(failure: bool, slow: bool) -> u8 {
    PRESENT_BIT | (failure as u8) | ((slow as u8) << 1)
}

/// Totals over a window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct WindowCounts {
    /// Calls recorded in the window.
    pub calls: u64,
    /// Of those, failures.
    pub failures: u64,
    /// Of those, slow calls (failed or not).
    pub slow: u64,
}

#[derive(Default)]
struct Aggregate {
    calls: AtomicI64,
    failures: AtomicI64,
    slow: AtomicI64,
}

impl Aggregate {
    #[inline]
    fn apply(&self, old: u8, new: u8) {
        let present = |c: u8| (c & PRESENT_BIT != 0) as i64;
        let fail = |c: u8| (c & FAIL_BIT != 0) as i64;
        let slow = |c: u8| (c & SLOW_BIT != 0) as i64;
        // Only touch what changed: in the steady state of a healthy service a success
        // replaces a success and no aggregate is written at all.
        let d = present(new) - present(old);
        if d != 0 {
            self.calls.fetch_add(d, Relaxed);
        }
        let d = fail(new) - fail(old);
        if d != 0 {
            self.failures.fetch_add(d, Relaxed);
        }
        let d = slow(new) - slow(old);
        if d != 0 {
            self.slow.fetch_add(d, Relaxed);
        }
    }

    fn snapshot(&self) -> WindowCounts {
        let get = |a: &AtomicI64| a.load(Relaxed).max(0) as u64;
        let calls = get(&self.calls);
        WindowCounts {
            calls,
            failures: get(&self.failures).min(calls),
            slow: get(&self.slow).min(calls),
        }
    }

    fn sub(&self, calls: i64, failures: i64, slow: i64) {
        self.calls.fetch_sub(calls, Relaxed);
        self.failures.fetch_sub(failures, Relaxed);
        self.slow.fetch_sub(slow, Relaxed);
    }
}

/// The last `N` calls.
pub(crate) struct CountWindow {
    head: AtomicU64,
    slots: Box<[AtomicU8]>,
    agg: Aggregate,
}

impl CountWindow {
    pub(crate) fn new(size: u32) -> Self {
        let size = size.clamp(1, MAX_COUNT_WINDOW) as usize;
        Self {
            head: AtomicU64::new(0),
            slots: (0..size).map(|_| AtomicU8::new(EMPTY)).collect(),
            agg: Aggregate::default(),
        }
    }

    #[inline]
    pub(crate) fn record(&self, code: u8) {
        let i = (self.head.fetch_add(1, Relaxed) % self.slots.len() as u64) as usize;
        let old = self.slots[i].swap(code, Relaxed);
        if old != code {
            self.agg.apply(old, code);
        }
    }

    pub(crate) fn snapshot(&self) -> WindowCounts {
        self.agg.snapshot()
    }

    pub(crate) fn reset(&self) {
        for s in self.slots.iter() {
            let old = s.swap(EMPTY, Relaxed);
            if old != EMPTY {
                self.agg.apply(old, EMPTY);
            }
        }
    }
}

struct Bucket {
    calls: AtomicI64,
    failures: AtomicI64,
    slow: AtomicI64,
}

/// The calls of the last `S` whole seconds (the current, partial second included), one
/// bucket per second in a ring.
pub(crate) struct TimeWindow {
    buckets: Box<[Bucket]>,
    /// The second the newest bucket belongs to. Buckets of seconds that pass are cleared
    /// exactly once by the thread that advances this, so rotation costs O(1) amortised per
    /// second and nothing per call.
    latest_sec: AtomicU64,
    agg: Aggregate,
}

impl TimeWindow {
    pub(crate) fn new(secs: u32, now_nanos: u64) -> Self {
        let secs = secs.clamp(1, MAX_TIME_WINDOW_SECS) as usize;
        Self {
            buckets: (0..secs)
                .map(|_| Bucket {
                    calls: AtomicI64::new(0),
                    failures: AtomicI64::new(0),
                    slow: AtomicI64::new(0),
                })
                .collect(),
            latest_sec: AtomicU64::new(now_nanos / 1_000_000_000),
            agg: Aggregate::default(),
        }
    }

    fn rotate(&self, now_sec: u64) {
        let mut latest = self.latest_sec.load(Relaxed);
        while now_sec > latest {
            match self
                .latest_sec
                .compare_exchange_weak(latest, now_sec, Relaxed, Relaxed)
            {
                Ok(_) => {
                    let n = self.buckets.len() as u64;
                    let from = latest.max(now_sec.saturating_sub(n)) + 1;
                    for sec in from..=now_sec {
                        self.clear((sec % n) as usize);
                    }
                    return;
                }
                Err(cur) => latest = cur,
            }
        }
    }

    fn clear(&self, i: usize) {
        let b = &self.buckets[i];
        // Swapping hands over exactly what the bucket held, so the aggregate stays the sum
        // of the buckets even when a late update lands in a bucket being cleared.
        let c = b.calls.swap(0, Relaxed);
        let f = b.failures.swap(0, Relaxed);
        let s = b.slow.swap(0, Relaxed);
        self.agg.sub(c, f, s);
    }

    #[inline]
    pub(crate) fn record(&self, code: u8, now_nanos: u64) {
        let sec = now_nanos / 1_000_000_000;
        if sec > self.latest_sec.load(Relaxed) {
            self.rotate(sec);
        }
        let b = &self.buckets[(sec % self.buckets.len() as u64) as usize];
        b.calls.fetch_add(1, Relaxed);
        self.agg.calls.fetch_add(1, Relaxed);
        if code & FAIL_BIT != 0 {
            b.failures.fetch_add(1, Relaxed);
            self.agg.failures.fetch_add(1, Relaxed);
        }
        if code & SLOW_BIT != 0 {
            b.slow.fetch_add(1, Relaxed);
            self.agg.slow.fetch_add(1, Relaxed);
        }
    }

    pub(crate) fn snapshot(&self, now_nanos: u64) -> WindowCounts {
        let sec = now_nanos / 1_000_000_000;
        if sec > self.latest_sec.load(Relaxed) {
            self.rotate(sec);
        }
        self.agg.snapshot()
    }

    pub(crate) fn reset(&self) {
        for i in 0..self.buckets.len() {
            self.clear(i);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn count_window_slides() {
        let w = CountWindow::new(4);
        for _ in 0..4 {
            w.record(code(true, false));
        }
        assert_eq!(w.snapshot().failures, 4);
        w.record(code(false, true));
        w.record(code(false, false));
        assert_eq!(
            w.snapshot(),
            WindowCounts {
                calls: 4,
                failures: 2,
                slow: 1
            }
        );
        w.reset();
        assert_eq!(w.snapshot(), WindowCounts::default());
    }

    #[test]
    fn time_window_forgets_old_seconds() {
        let s = 1_000_000_000u64;
        let w = TimeWindow::new(3, 0);
        w.record(code(true, false), 0);
        w.record(code(false, false), s);
        w.record(code(false, true), 2 * s + 5);
        assert_eq!(w.snapshot(2 * s).calls, 3);
        // Second 0 leaves the window at second 3.
        assert_eq!(
            w.snapshot(3 * s),
            WindowCounts {
                calls: 2,
                failures: 0,
                slow: 1
            }
        );
        // A long idle gap clears everything, touching each bucket at most once.
        assert_eq!(w.snapshot(1000 * s), WindowCounts::default());
        w.record(code(true, true), 1000 * s);
        assert_eq!(w.snapshot(1000 * s).failures, 1);
    }
}
