//! Recording of results: full HDR histograms, error categories, status codes and a per-second
//! timeline.
//!
//! Every virtual user owns a `Local` buffer and flushes it in batches into one of a few
//! mutex-protected shards. Batching keeps the lock off the per-request path (one lock per
//! `BATCH` requests), and sharding keeps memory independent of the number of connections: a
//! histogram covering 1 µs – 60 s at 3 significant figures is ~140 KB, far too much to own per
//! connection when the goal is ≤ 64 KiB per connection at 10,000 connections. Nothing is sampled:
//! every latency lands in the merged histogram.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

/// Samples buffered per virtual user before a flush into its shard.
const BATCH: usize = 64;
/// A buffer older than this is flushed even when not full, so the per-second timeline and the
/// live progress stay current at low request rates.
const MAX_BUFFER_AGE: Duration = Duration::from_millis(100);

/// Longest error message kept (server-controlled text: bounded).
const MAX_MESSAGE: usize = 200;

/// Lowest trackable latency (µs), default highest (µs) and precision of every histogram.
pub(crate) const HIST_LOW: u64 = 1;
pub(crate) const HIST_HIGH: u64 = 60_000_000;
pub(crate) const HIST_SIGFIG: u8 = 3;

/// The widest range a run's histograms get (2^40 µs, about 12.7 days): a histogram grows by one
/// bucket of 1024 counters (8 KiB) per doubling of its range, so this caps every histogram at
/// 32 buckets of 1024 counters (256 KiB) against 17 (136 KiB) for the default 60 s, whatever
/// `--timeout` says.
pub(crate) const HIST_HIGHEST: u64 = 1 << 40;

/// A new, empty latency histogram (µs, 1 µs – 60 s, 3 significant figures).
#[must_use]
pub fn new_histogram() -> Histogram<u64> {
    histogram_to(HIST_HIGH)
}

/// A new, empty latency histogram reaching `high` µs (clamped to 60 s ..= [`HIST_HIGHEST`]).
fn histogram_to(high: u64) -> Histogram<u64> {
    // Bounds clamped to a valid range: this cannot fail at runtime.
    Histogram::new_with_bounds(HIST_LOW, high.clamp(HIST_HIGH, HIST_HIGHEST), HIST_SIGFIG)
        .expect("clamped histogram bounds are valid")
}

/// The highest value (µs) a run's histograms must track so that no latency the run can measure
/// is cut to the range's end: at least 60 s, and at least `longest` (the longest time any
/// request may take, e.g. `--timeout` or a scenario `recv` timeout). Capped at [`HIST_HIGHEST`].
#[must_use]
pub(crate) fn histogram_high(longest: Duration) -> u64 {
    micros(longest).clamp(HIST_HIGH, HIST_HIGHEST)
}

/// Categories of failed requests, as reported in the `errors` object of the JSON report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// TCP connect failed (refused, unreachable, connect timeout).
    Connect,
    /// No complete response within `--timeout`.
    Timeout,
    /// The peer reset or closed the connection mid-request.
    Reset,
    /// TLS handshake or certificate failure.
    Tls,
    /// The response could not be parsed (bad status line, headers, chunking, WebSocket frame).
    Protocol,
    /// The server answered with a 4xx status.
    Http4xx,
    /// The server answered with a 5xx status.
    Http5xx,
}

impl ErrorKind {
    /// All categories, in report order.
    pub const ALL: [ErrorKind; 7] = [
        ErrorKind::Connect,
        ErrorKind::Timeout,
        ErrorKind::Reset,
        ErrorKind::Tls,
        ErrorKind::Protocol,
        ErrorKind::Http4xx,
        ErrorKind::Http5xx,
    ];

    /// The key used in reports (`connect`, `timeout`, `reset`, `tls`, `protocol`, `http_4xx`,
    /// `http_5xx`).
    #[must_use]
    pub fn key(self) -> &'static str {
        match self {
            ErrorKind::Connect => "connect",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Reset => "reset",
            ErrorKind::Tls => "tls",
            ErrorKind::Protocol => "protocol",
            ErrorKind::Http4xx => "http_4xx",
            ErrorKind::Http5xx => "http_5xx",
        }
    }

    fn index(self) -> usize {
        self as usize
    }

    /// Classifies an I/O error from a connection that was already established.
    #[must_use]
    pub fn from_io(err: &std::io::Error) -> ErrorKind {
        use std::io::ErrorKind as K;
        match err.kind() {
            K::TimedOut => ErrorKind::Timeout,
            K::InvalidData => ErrorKind::Protocol,
            _ => ErrorKind::Reset,
        }
    }
}

/// Plain counters, summed across shards.
#[derive(Debug, Clone, Default)]
pub struct Counts {
    /// Finished attempts (responses of any status plus failed attempts).
    pub requests: u64,
    /// Response bytes received (headers and body).
    pub bytes: u64,
    /// Failures by [`ErrorKind`] index.
    pub errors: [u64; 7],
    /// Open model: requests that started later than their scheduled time.
    pub late: u64,
    /// WebSocket: messages sent.
    pub ws_sent: u64,
    /// WebSocket: messages received.
    pub ws_received: u64,
    /// Requests still in flight when the run abandoned them (after the graceful stop, or at
    /// once on Ctrl-C); they are not in `requests`.
    pub interrupted: u64,
}

impl Counts {
    fn add(&mut self, other: &Counts) {
        self.requests += other.requests;
        self.bytes += other.bytes;
        for (a, b) in self.errors.iter_mut().zip(other.errors.iter()) {
            *a += b;
        }
        self.late += other.late;
        self.ws_sent += other.ws_sent;
        self.ws_received += other.ws_received;
        self.interrupted += other.interrupted;
    }

    /// Sum of all error categories.
    #[must_use]
    pub fn error_total(&self) -> u64 {
        self.errors.iter().sum()
    }

    /// Count for one category.
    #[must_use]
    pub fn error(&self, kind: ErrorKind) -> u64 {
        self.errors[kind.index()]
    }
}

/// Per scenario-step statistics.
#[derive(Debug, Clone)]
pub struct StepStats {
    /// Latency from scheduled (open model) or actual (closed model) start, µs.
    pub hist: Histogram<u64>,
    /// Finished attempts of this step.
    pub requests: u64,
    /// Failed attempts of this step.
    pub errors: u64,
}

impl StepStats {
    fn new(high: u64) -> Self {
        StepStats {
            hist: histogram_to(high),
            requests: 0,
            errors: 0,
        }
    }
}

/// Everything recorded by a set of virtual users.
#[derive(Debug, Clone)]
pub struct Totals {
    /// Latency measured from the scheduled send time (equals `uncorrected` in the closed model), µs.
    pub corrected: Histogram<u64>,
    /// Latency measured from the actual send time, µs.
    pub uncorrected: Histogram<u64>,
    /// Counters.
    pub counts: Counts,
    /// Status code → count.
    pub statuses: BTreeMap<u16, u64>,
    /// Per scenario step (index = step number).
    pub steps: Vec<StepStats>,
    /// Per scenario check (index = check number): (passes, fails).
    pub checks: Vec<(u64, u64)>,
    /// The first error message seen per [`ErrorKind`] (by index), so a report can say *why*
    /// requests failed; one short string per category, whatever the server sends.
    pub first_errors: [Option<String>; 7],
}

impl Totals {
    /// Empty totals whose histograms reach `high` µs.
    fn to(high: u64) -> Self {
        Totals {
            corrected: histogram_to(high),
            uncorrected: histogram_to(high),
            counts: Counts::default(),
            statuses: BTreeMap::new(),
            steps: Vec::new(),
            checks: Vec::new(),
            first_errors: Default::default(),
        }
    }

    fn merge(&mut self, other: &Totals) {
        // Histograms share bounds, so `add` cannot fail; ignore the impossible error rather than
        // panic in a reporting path.
        let _ = self.corrected.add(&other.corrected);
        let _ = self.uncorrected.add(&other.uncorrected);
        self.counts.add(&other.counts);
        for (code, n) in &other.statuses {
            *self.statuses.entry(*code).or_insert(0) += n;
        }
        for (i, s) in other.steps.iter().enumerate() {
            let mine = self.step_mut(i);
            let _ = mine.hist.add(&s.hist);
            mine.requests += s.requests;
            mine.errors += s.errors;
        }
        add_checks(&mut self.checks, &other.checks);
        for (mine, theirs) in self.first_errors.iter_mut().zip(&other.first_errors) {
            if mine.is_none() {
                mine.clone_from(theirs);
            }
        }
    }

    fn step_mut(&mut self, i: usize) -> &mut StepStats {
        while self.steps.len() <= i {
            // Same range as the run's other histograms, so that merging them loses nothing.
            self.steps.push(StepStats::new(self.corrected.high()));
        }
        &mut self.steps[i]
    }
}

/// Adds check counters `from` into `into`, growing it as needed.
fn add_checks(into: &mut Vec<(u64, u64)>, from: &[(u64, u64)]) {
    if into.len() < from.len() {
        into.resize(from.len(), (0, 0));
    }
    for (a, b) in into.iter_mut().zip(from) {
        a.0 += b.0;
        a.1 += b.1;
    }
}

/// One second (or interval) of the timeline, drained by the ticker.
#[derive(Debug, Clone)]
pub struct Interval {
    /// Latency histogram of the interval (corrected), µs.
    pub hist: Histogram<u64>,
    /// Counters of the interval.
    pub counts: Counts,
}

struct Shard {
    total: Totals,
    interval: Interval,
}

/// State shared by every virtual user of a run.
pub struct Recorder {
    shards: Vec<Mutex<Shard>>,
    /// Highest trackable latency (µs) of every histogram of the run.
    high: u64,
    /// Per [`ErrorKind`]: a message was already taken, so later errors skip formatting one.
    messaged: [AtomicBool; 7],
    per_step: bool,
    uncorrected: bool,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder")
            .field("shards", &self.shards.len())
            .finish()
    }
}

impl Recorder {
    /// A recorder with `shards` independently locked shards (at least one).
    #[must_use]
    pub fn new(shards: usize) -> Self {
        Self::with_high(shards, HIST_HIGH)
    }

    /// A recorder whose histograms track latencies up to `longest` (at least 60 s, at most
    /// about 12.7 days), e.g. a `--timeout` beyond 60 s: a latency above the range would be
    /// recorded as the range's end. Memory grows with the logarithm of the range (8 KiB per
    /// histogram per doubling).
    #[must_use]
    pub fn reaching(shards: usize, longest: Duration) -> Self {
        Self::with_high(shards, histogram_high(longest))
    }

    fn with_high(shards: usize, high: u64) -> Self {
        let shards = (0..shards.max(1))
            .map(|_| {
                Mutex::new(Shard {
                    total: Totals::to(high),
                    interval: Interval {
                        hist: histogram_to(high),
                        counts: Counts::default(),
                    },
                })
            })
            .collect();
        Recorder {
            shards,
            high,
            messaged: Default::default(),
            per_step: true,
            uncorrected: true,
        }
    }

    /// Skips per-step histograms and the separate uncorrected histogram: a plain closed-model
    /// run has one step and measures from the actual send, so both would only duplicate the
    /// main histogram (and cost two of the four histogram writes per request).
    #[must_use]
    pub fn single_closed(mut self) -> Self {
        self.per_step = false;
        self.uncorrected = false;
        self
    }

    /// A per-virtual-user buffer that flushes into shard `id % shards`.
    #[must_use]
    pub fn local(&self, id: usize) -> Local<'_> {
        Local {
            recorder: self,
            shard: id % self.shards.len(),
            samples: Vec::with_capacity(BATCH),
            counts: Counts::default(),
            statuses: Vec::new(),
            checks: Vec::new(),
            checks_pending: false,
            first_errors: Default::default(),
            in_flight: false,
            last_flush: Instant::now(),
        }
    }

    fn lock(&self, i: usize) -> std::sync::MutexGuard<'_, Shard> {
        // A poisoned shard only means a recording thread panicked mid-update; the counters are
        // still usable for a report.
        self.shards[i]
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Takes and resets the interval statistics of all shards.
    pub fn drain_interval(&self) -> Interval {
        let mut out = Interval {
            hist: histogram_to(self.high),
            counts: Counts::default(),
        };
        for i in 0..self.shards.len() {
            let mut shard = self.lock(i);
            let _ = out.hist.add(&shard.interval.hist);
            out.counts.add(&shard.interval.counts);
            shard.interval.hist.reset();
            shard.interval.counts = Counts::default();
        }
        out
    }

    /// Merges all shards into one [`Totals`].
    #[must_use]
    pub fn totals(&self) -> Totals {
        let mut out = Totals::to(self.high);
        for i in 0..self.shards.len() {
            let shard = self.lock(i);
            out.merge(&shard.total);
        }
        if !self.uncorrected {
            out.uncorrected = out.corrected.clone();
        }
        if !self.per_step {
            out.steps = vec![StepStats {
                hist: out.corrected.clone(),
                requests: out.counts.requests,
                errors: out.counts.error_total(),
            }];
        }
        out
    }
}

#[derive(Clone, Copy)]
struct Sample {
    step: u16,
    corrected_us: u64,
    uncorrected_us: u64,
    error: bool,
}

/// A virtual user's recording buffer. Flushes on drop.
pub struct Local<'a> {
    recorder: &'a Recorder,
    shard: usize,
    samples: Vec<Sample>,
    counts: Counts,
    statuses: Vec<(u16, u64)>,
    /// Scenario checks (passes, fails) by check number; empty outside scenarios with checks.
    checks: Vec<(u64, u64)>,
    checks_pending: bool,
    /// First error messages taken by this user, not flushed yet (see [`Local::error_because`]).
    first_errors: [Option<String>; 7],
    /// A request of this user has started and its result is not recorded yet: if the buffer
    /// is dropped in this state (the run aborted the user's task), it counts as interrupted.
    in_flight: bool,
    last_flush: Instant,
}

impl Local<'_> {
    /// Marks the start of a request (or of one run of a scenario step, or one WebSocket
    /// action): until its result is recorded, or [`settle`](Self::settle) is called, dropping
    /// this buffer counts it as interrupted. The runner calls it whenever a user gets its turn.
    pub fn start_request(&mut self) {
        self.in_flight = true;
    }

    /// Ends a request that records nothing on success (a WebSocket `send`, a subscription that
    /// is established), so that a later abort of the idle user is not counted as interrupted.
    pub fn settle(&mut self) {
        self.in_flight = false;
    }

    /// Records a finished response. `scheduled` is the intended start (open model) or the actual
    /// start (closed model); `sent` is when the request was actually started.
    #[inline]
    pub fn response(
        &mut self,
        step: u16,
        scheduled: Instant,
        sent: Instant,
        status: u16,
        bytes: u64,
    ) {
        self.response_as(step, scheduled, sent, status, bytes, false);
    }

    /// [`response`](Self::response), where `expected` says the status is not an error even
    /// if it is ≥ 400 (a scenario step's `expected_status`).
    pub fn response_as(
        &mut self,
        step: u16,
        scheduled: Instant,
        sent: Instant,
        status: u16,
        bytes: u64,
        expected: bool,
    ) {
        let now = Instant::now();
        self.in_flight = false;
        self.counts.requests += 1;
        self.counts.bytes += bytes;
        let error = !expected
            && match status {
                400..=499 => {
                    self.counts.errors[ErrorKind::Http4xx.index()] += 1;
                    true
                }
                500..=599 => {
                    self.counts.errors[ErrorKind::Http5xx.index()] += 1;
                    true
                }
                _ => false,
            };
        // Status 0: a WebSocket message, which has no HTTP status.
        if status != 0 {
            match self.statuses.iter_mut().find(|(c, _)| *c == status) {
                Some((_, n)) => *n += 1,
                None => self.statuses.push((status, 1)),
            }
        }
        self.samples.push(Sample {
            step,
            corrected_us: micros(now.saturating_duration_since(scheduled)),
            uncorrected_us: micros(now.saturating_duration_since(sent)),
            error,
        });
        self.maybe_flush(now);
    }

    /// Records a failed attempt (no latency sample: a failure has no meaningful response time).
    pub fn error(&mut self, step: u16, kind: ErrorKind, bytes: u64) {
        self.in_flight = false;
        self.counts.requests += 1;
        self.counts.bytes += bytes;
        self.counts.errors[kind.index()] += 1;
        self.samples.push(Sample {
            step,
            corrected_us: 0,
            uncorrected_us: 0,
            error: true,
        });
        self.maybe_flush(Instant::now());
    }

    /// [`error`](Self::error), keeping `why` as the category's example message when it is the
    /// first of its category in the run. Only the first few errors format a message: later ones
    /// cost one atomic load.
    pub fn error_because(
        &mut self,
        step: u16,
        kind: ErrorKind,
        bytes: u64,
        why: &dyn std::fmt::Display,
    ) {
        let k = kind.index();
        if !self.recorder.messaged[k].load(Ordering::Relaxed)
            && !self.recorder.messaged[k].swap(true, Ordering::Relaxed)
        {
            let mut m = why.to_string();
            if m.len() > MAX_MESSAGE {
                let mut end = MAX_MESSAGE;
                while !m.is_char_boundary(end) {
                    end -= 1;
                }
                m.truncate(end);
                m.push('…');
            }
            self.first_errors[k] = Some(m);
        }
        self.error(step, kind, bytes);
    }

    /// Counts one evaluation of scenario check number `check`. Not a flush point: checks are
    /// recorded next to their step's response or error, which flushes.
    pub fn check(&mut self, check: usize, pass: bool) {
        if self.checks.len() <= check {
            self.checks.resize(check + 1, (0, 0));
        }
        let c = &mut self.checks[check];
        if pass {
            c.0 += 1;
        } else {
            c.1 += 1;
        }
        self.checks_pending = true;
    }

    /// Counts a request that started later than scheduled.
    pub fn late(&mut self) {
        self.counts.late += 1;
    }

    /// Counts WebSocket messages.
    pub fn ws(&mut self, sent: u64, received: u64) {
        self.counts.ws_sent += sent;
        self.counts.ws_received += received;
    }

    /// Records a received WebSocket message whose latency is known from its timestamp.
    pub fn message_latency(&mut self, latency: Duration, bytes: u64) {
        let us = micros(latency);
        self.in_flight = false;
        self.counts.requests += 1;
        self.counts.bytes += bytes;
        self.samples.push(Sample {
            step: 0,
            corrected_us: us,
            uncorrected_us: us,
            error: false,
        });
        self.maybe_flush(Instant::now());
    }

    /// Records a received WebSocket message without a latency.
    pub fn message(&mut self, bytes: u64) {
        self.in_flight = false;
        self.counts.requests += 1;
        self.counts.bytes += bytes;
        self.maybe_flush(Instant::now());
    }

    fn maybe_flush(&mut self, now: Instant) {
        if self.samples.len() >= BATCH || now.duration_since(self.last_flush) >= MAX_BUFFER_AGE {
            self.flush_at(now);
        }
    }

    /// Moves buffered data into the shared shard.
    pub fn flush(&mut self) {
        self.flush_at(Instant::now());
    }

    fn flush_at(&mut self, now: Instant) {
        self.last_flush = now;
        if self.samples.is_empty()
            && self.counts.requests == 0
            && self.counts.late == 0
            && self.counts.ws_sent == 0
            && self.counts.ws_received == 0
            && self.counts.interrupted == 0
            && !self.checks_pending
        {
            return;
        }
        let mut shard = self.recorder.lock(self.shard);
        let shard = &mut *shard;
        let (per_step, uncorrected) = (self.recorder.per_step, self.recorder.uncorrected);
        for s in &self.samples {
            if s.corrected_us > 0 {
                shard.total.corrected.saturating_record(s.corrected_us);
                if uncorrected {
                    shard.total.uncorrected.saturating_record(s.uncorrected_us);
                }
                shard.interval.hist.saturating_record(s.corrected_us);
            }
            if !per_step {
                continue;
            }
            let step = shard.total.step_mut(usize::from(s.step));
            step.requests += 1;
            if s.error {
                step.errors += 1;
            }
            if s.corrected_us > 0 {
                step.hist.saturating_record(s.corrected_us);
            }
        }
        shard.total.counts.add(&self.counts);
        shard.interval.counts.add(&self.counts);
        for (code, n) in self.statuses.drain(..) {
            *shard.total.statuses.entry(code).or_insert(0) += n;
        }
        for (mine, shared) in self
            .first_errors
            .iter_mut()
            .zip(shard.total.first_errors.iter_mut())
        {
            if let Some(m) = mine.take() {
                shared.get_or_insert(m);
            }
        }
        if self.checks_pending {
            add_checks(&mut shard.total.checks, &self.checks);
            self.checks.iter_mut().for_each(|c| *c = (0, 0));
            self.checks_pending = false;
        }
        self.samples.clear();
        self.counts = Counts::default();
    }
}

impl Drop for Local<'_> {
    fn drop(&mut self) {
        // The runner aborts the tasks of users still busy after the graceful stop; the abort
        // drops this buffer mid-request, which is how such a request gets counted.
        if self.in_flight {
            self.in_flight = false;
            self.counts.interrupted += 1;
        }
        self.flush();
    }
}

/// Duration → whole microseconds, at least 1 (the histogram's lowest trackable value) so a
/// sub-microsecond response is still counted.
fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latencies_beyond_60_s_keep_their_value_when_the_timeout_is_longer() {
        let long = Duration::from_secs(90);
        // The default range cuts a 90 s latency to its end (60 s)...
        let rec = Recorder::new(2);
        rec.local(0).message_latency(long, 1);
        let cut = rec.totals().corrected.max();
        assert!(cut < 61_000_000, "{cut}");
        // ...a range that reaches a 2 min timeout keeps it (3 significant figures), in the
        // totals, the per-step entries and the timeline alike.
        let rec = Recorder::reaching(2, Duration::from_secs(120));
        {
            let mut l = rec.local(1);
            l.message_latency(long, 1);
            l.message_latency(Duration::from_millis(5), 1);
        }
        let t = rec.totals();
        for h in [&t.corrected, &t.uncorrected, &t.steps[0].hist] {
            assert!(h.equivalent(h.max(), 90_000_000), "{}", h.max());
            assert_eq!(h.len(), 2);
        }
        let i = rec.drain_interval();
        assert!(
            i.hist.equivalent(i.hist.max(), 90_000_000),
            "{}",
            i.hist.max()
        );
    }

    #[test]
    fn the_histogram_range_follows_the_timeout_with_bounded_memory() {
        let counters = |d: Duration| histogram_to(histogram_high(d)).distinct_values();
        // Below 60 s nothing changes: 17 buckets of 1024 counters.
        assert_eq!(histogram_high(Duration::from_secs(5)), HIST_HIGH);
        assert_eq!(counters(Duration::from_secs(5)), 17 * 1024);
        // One bucket more per doubling: 1 h costs 6 more (48 KiB per histogram)...
        assert!(histogram_to(histogram_high(Duration::from_secs(3600))).high() >= 3_600_000_000);
        assert_eq!(counters(Duration::from_secs(3600)), 23 * 1024);
        // ...and any timeout at all at most 15 more: 256 KiB per histogram.
        assert_eq!(histogram_high(Duration::MAX), HIST_HIGHEST);
        assert_eq!(counters(Duration::MAX), 32 * 1024);
    }

    #[test]
    fn one_bounded_message_per_error_category_whatever_the_errors_say() {
        let rec = Recorder::new(4);
        for user in 0..100 {
            let mut l = rec.local(user);
            for i in 0..50 {
                // Server-controlled text: distinct and long every time.
                let why = format!("bad header {user}-{i}: {}", "é".repeat(500));
                l.error_because(0, ErrorKind::Protocol, 0, &why);
            }
            l.error_because(0, ErrorKind::Connect, 0, &"refused");
        }
        let t = rec.totals();
        assert_eq!(t.counts.error(ErrorKind::Protocol), 5000);
        let kept: Vec<&String> = t.first_errors.iter().flatten().collect();
        assert_eq!(kept.len(), 2, "{kept:?}");
        let protocol = t.first_errors[ErrorKind::Protocol.index()]
            .as_ref()
            .unwrap();
        assert!(protocol.starts_with("bad header ") && protocol.ends_with('…'));
        assert!(
            protocol.len() <= MAX_MESSAGE + '…'.len_utf8(),
            "{}",
            protocol.len()
        );
        assert_eq!(
            t.first_errors[ErrorKind::Connect.index()].as_deref(),
            Some("refused")
        );
    }

    #[test]
    fn local_flushes_into_totals_on_drop() {
        let rec = Recorder::new(2);
        {
            let mut l = rec.local(1);
            let t0 = Instant::now();
            l.response(0, t0, t0, 200, 10);
            l.response(0, t0, t0, 503, 10);
            l.error(0, ErrorKind::Timeout, 0);
        }
        let t = rec.totals();
        assert_eq!(t.counts.requests, 3);
        assert_eq!(t.counts.bytes, 20);
        assert_eq!(t.counts.error(ErrorKind::Http5xx), 1);
        assert_eq!(t.counts.error(ErrorKind::Timeout), 1);
        assert_eq!(t.corrected.len(), 2);
        assert_eq!(t.statuses.get(&200), Some(&1));
        assert_eq!(t.steps[0].errors, 2);
        let i = rec.drain_interval();
        assert_eq!(i.counts.requests, 3);
        assert_eq!(rec.drain_interval().counts.requests, 0);
    }

    #[test]
    fn checks_are_summed_across_users_and_flushed_without_a_sample() {
        let rec = Recorder::new(2);
        {
            let mut a = rec.local(0);
            let mut b = rec.local(1);
            a.check(0, true);
            a.check(2, false);
            b.check(0, false);
            b.check(0, true);
            // Checks recorded after their step's sample was flushed still reach the totals.
            a.flush();
            a.check(1, true);
        }
        assert_eq!(rec.totals().checks, [(2, 1), (1, 0), (0, 1)]);
    }

    #[test]
    fn a_buffer_dropped_mid_request_counts_it_as_interrupted() {
        let rec = Recorder::new(1);
        {
            let mut done = rec.local(0);
            let t0 = Instant::now();
            done.start_request();
            done.response(0, t0, t0, 200, 1);
            let mut failed = rec.local(1);
            failed.start_request();
            failed.error(0, ErrorKind::Reset, 0);
            let mut settled = rec.local(2);
            settled.start_request();
            settled.settle();
            let mut abandoned = rec.local(3);
            abandoned.start_request();
        }
        let t = rec.totals();
        assert_eq!((t.counts.requests, t.counts.interrupted), (2, 1));
    }

    #[test]
    fn single_closed_mirrors_the_main_histogram() {
        let rec = Recorder::new(1).single_closed();
        {
            let mut l = rec.local(0);
            let t0 = Instant::now() - Duration::from_millis(5);
            l.response(0, t0, t0, 200, 1);
            l.error(0, ErrorKind::Reset, 0);
        }
        let t = rec.totals();
        assert_eq!(t.uncorrected, t.corrected);
        assert_eq!(t.corrected.len(), 1);
        assert!(t.corrected.max() >= 5000);
        assert_eq!(
            (t.steps.len(), t.steps[0].requests, t.steps[0].errors),
            (1, 2, 1)
        );
    }
}
