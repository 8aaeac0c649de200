//! One backend and its live statistics.
use crate::clock::{Clock, SystemClock};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// Static settings of one backend.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointConfig {
    /// Where to connect.
    pub addr: SocketAddr,
    /// Relative share of traffic for weighted algorithms (default 1; 0 is treated as 1).
    #[serde(default = "one")]
    pub weight: u32,
    /// Maximum concurrent requests to this backend; `None` is unlimited.
    #[serde(default)]
    pub max_connections: Option<u32>,
}

fn one() -> u32 {
    1
}

impl EndpointConfig {
    /// A backend at `addr` with weight 1 and no connection limit.
    pub fn new(addr: SocketAddr) -> Self {
        Self {
            addr,
            weight: 1,
            max_connections: None,
        }
    }

    /// Sets the weight.
    pub fn weight(mut self, weight: u32) -> Self {
        self.weight = weight;
        self
    }

    /// Sets the connection limit.
    pub fn max_connections(mut self, max: u32) -> Self {
        self.max_connections = Some(max);
        self
    }
}

/// Health as active checks see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[repr(u8)]
pub enum HealthStatus {
    /// No check has run yet (takes no traffic).
    Unknown = 0,
    /// Passing checks.
    Healthy = 1,
    /// Failing checks.
    Unhealthy = 2,
}

impl HealthStatus {
    fn from_u8(v: u8) -> Self {
        match v {
            1 => Self::Healthy,
            2 => Self::Unhealthy,
            _ => Self::Unknown,
        }
    }
}

const NEVER: u64 = u64::MAX;

/// Per-upstream settings copied into each endpoint so that hot-path reads need no lock.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Tuning {
    pub slow_start_window: Duration,
    pub slow_start_min_percent: u8,
    pub ewma_decay: Duration,
    pub default_rtt: Duration,
}

#[derive(Debug, Default)]
pub(crate) struct OutlierState {
    pub consecutive_errors: u32,
    pub consecutive_connect_failures: u32,
    pub times_ejected: u32,
}

#[derive(Debug)]
struct Ewma {
    // Nanoseconds; f64 because the decay is exponential.
    value: f64,
    at: u64,
}

#[derive(Debug, Default)]
pub(crate) struct ActiveState {
    pub successes: u32,
    pub failures: u32,
    pub last_error: Option<String>,
}

/// One backend. Shared as `Arc<Endpoint>`; statistics are atomics or short critical sections.
pub struct Endpoint {
    id: usize,
    addr: SocketAddr,
    pin: u64,
    clock: Arc<dyn Clock>,
    weight: AtomicU32,
    max_connections: AtomicU32,
    in_flight: AtomicU64,
    requests: AtomicU64,
    failures: AtomicU64,
    health: AtomicU8,
    draining: AtomicBool,
    // When slow start began (last transition to healthy); NEVER if it does not apply.
    ramp_from: AtomicU64,
    slow_start_window: AtomicU64,
    slow_start_min_percent: AtomicU8,
    ewma_decay: AtomicU64,
    // Ejected while `now < ejected_until`; 0 = never ejected.
    ejected_until: AtomicU64,
    ejections: AtomicU64,
    pub(crate) outlier: Mutex<OutlierState>,
    pub(crate) active: Mutex<ActiveState>,
    ewma: Mutex<Ewma>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("id", &self.id)
            .field("addr", &self.addr)
            .field("health", &self.health())
            .finish_non_exhaustive()
    }
}

impl Endpoint {
    /// A new endpoint on the system clock. `id` is unique within its
    /// [`Upstream`](super::Upstream) and stable across reloads for an unchanged backend.
    pub fn new(id: usize, config: EndpointConfig, initial: HealthStatus) -> Arc<Self> {
        Self::with_clock(id, config, initial, Arc::new(SystemClock))
    }

    /// A new endpoint whose timers (slow start, ejection, EWMA decay) follow `clock`.
    pub fn with_clock(
        id: usize,
        config: EndpointConfig,
        initial: HealthStatus,
        clock: Arc<dyn Clock>,
    ) -> Arc<Self> {
        let now = clock.now_nanos();
        Arc::new(Self {
            id,
            addr: config.addr,
            pin: crate::balance::hash::hash_key(config.addr.to_string().as_bytes()),
            clock,
            weight: AtomicU32::new(config.weight.max(1)),
            max_connections: AtomicU32::new(config.max_connections.unwrap_or(0)),
            in_flight: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            health: AtomicU8::new(initial as u8),
            draining: AtomicBool::new(false),
            ramp_from: AtomicU64::new(NEVER),
            slow_start_window: AtomicU64::new(0),
            slow_start_min_percent: AtomicU8::new(10),
            ewma_decay: AtomicU64::new(10_000_000_000),
            ejected_until: AtomicU64::new(0),
            ejections: AtomicU64::new(0),
            outlier: Mutex::new(OutlierState::default()),
            active: Mutex::new(ActiveState::default()),
            ewma: Mutex::new(Ewma {
                value: 0.0,
                at: now,
            }),
        })
    }

    pub(crate) fn apply_tuning(&self, t: &Tuning) {
        self.slow_start_window
            .store(t.slow_start_window.as_nanos() as u64, Ordering::Relaxed);
        self.slow_start_min_percent
            .store(t.slow_start_min_percent.min(100), Ordering::Relaxed);
        self.ewma_decay
            .store(t.ewma_decay.as_nanos().max(1) as u64, Ordering::Relaxed);
        let mut e = lock(&self.ewma);
        if e.value == 0.0 {
            e.value = t.default_rtt.as_nanos() as f64;
        }
    }

    /// Stable id within the upstream.
    pub fn id(&self) -> usize {
        self.id
    }

    /// Address to connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The endpoint's current settings.
    pub fn config(&self) -> EndpointConfig {
        let max = self.max_connections.load(Ordering::Relaxed);
        EndpointConfig {
            addr: self.addr,
            weight: self.weight(),
            max_connections: (max > 0).then_some(max),
        }
    }

    pub(crate) fn set_config(&self, config: &EndpointConfig) {
        self.weight.store(config.weight.max(1), Ordering::Relaxed);
        self.max_connections
            .store(config.max_connections.unwrap_or(0), Ordering::Relaxed);
    }

    /// The sticky-session pin of this endpoint (see [`pin_for_addr`](super::pin_for_addr)).
    pub fn pin(&self) -> String {
        format!("{:016x}", self.pin)
    }

    pub(crate) fn pin_hash(&self) -> u64 {
        self.pin
    }

    /// Configured weight.
    pub fn weight(&self) -> u32 {
        self.weight.load(Ordering::Relaxed)
    }

    /// Weight in thousandths at clock time `now`, reduced during slow start (always ≥ 1).
    pub fn effective_weight_milli_at(&self, now: u64) -> u64 {
        let full = u64::from(self.weight()) * 1000;
        let window = self.slow_start_window.load(Ordering::Relaxed);
        if window == 0 {
            return full;
        }
        let mut start = self.ramp_from.load(Ordering::Relaxed);
        let until = self.ejected_until.load(Ordering::Relaxed);
        // Coming back from an ejection also ramps, from the moment the ejection ended.
        if until != 0 && until <= now && (start == NEVER || until > start) {
            start = until;
        }
        if start == NEVER || now >= start.saturating_add(window) {
            return full;
        }
        let elapsed = now.saturating_sub(start);
        let min = u64::from(self.slow_start_min_percent.load(Ordering::Relaxed)) * 10;
        let frac = ((u128::from(elapsed) * 1000) / u128::from(window)) as u64;
        (full * frac.max(min) / 1000).max(1)
    }

    /// Weight including slow start, now.
    pub fn effective_weight(&self) -> f64 {
        self.effective_weight_milli_at(self.clock.now_nanos()) as f64 / 1000.0
    }

    /// Requests currently in flight to this backend.
    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Current health as active checks see it.
    pub fn health(&self) -> HealthStatus {
        HealthStatus::from_u8(self.health.load(Ordering::Relaxed))
    }

    /// Sets the health (called by health checkers). A transition to healthy starts slow start.
    pub fn set_health(&self, status: HealthStatus) {
        let prev = HealthStatus::from_u8(self.health.swap(status as u8, Ordering::Relaxed));
        if status == HealthStatus::Healthy && prev != HealthStatus::Healthy {
            self.ramp_from
                .store(self.clock.now_nanos(), Ordering::Relaxed);
        }
    }

    pub(crate) fn active_state(&self) -> std::sync::MutexGuard<'_, ActiveState> {
        lock(&self.active)
    }

    pub(crate) fn start_ramp(&self, now: u64) {
        self.ramp_from.store(now, Ordering::Relaxed);
    }

    /// Whether an operator drained this backend (no new requests).
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Drains (`true`) or re-enables (`false`) the backend.
    pub fn set_draining(&self, draining: bool) {
        self.draining.store(draining, Ordering::Relaxed);
    }

    /// Whether passive outlier detection has ejected this backend at clock time `now`.
    pub fn is_ejected_at(&self, now: u64) -> bool {
        now < self.ejected_until.load(Ordering::Relaxed)
    }

    /// Whether passive outlier detection has ejected this backend now.
    pub fn is_ejected(&self) -> bool {
        self.is_ejected_at(self.clock.now_nanos())
    }

    pub(crate) fn ejected_until(&self) -> u64 {
        self.ejected_until.load(Ordering::Relaxed)
    }

    pub(crate) fn eject_until(&self, until: u64) {
        self.ejected_until.store(until, Ordering::Relaxed);
        self.ejections.fetch_add(1, Ordering::Relaxed);
    }

    /// Ends an ejection early (operator action).
    pub fn uneject(&self) {
        let now = self.clock.now_nanos();
        if self.is_ejected_at(now) {
            self.ejected_until.store(now, Ordering::Relaxed);
        }
    }

    /// Whether the endpoint may take traffic at `now` outside panic mode:
    /// healthy AND not ejected AND not draining.
    pub fn is_available_at(&self, now: u64) -> bool {
        self.health() == HealthStatus::Healthy && !self.is_ejected_at(now) && !self.is_draining()
    }

    /// Latency estimate (peak EWMA) at `now` in nanoseconds. It decays towards zero while no
    /// responses arrive, so an idle or penalised backend is eventually probed again.
    pub fn ewma_nanos_at(&self, now: u64) -> f64 {
        let e = lock(&self.ewma);
        let decay = self.ewma_decay.load(Ordering::Relaxed) as f64;
        let elapsed = now.saturating_sub(e.at) as f64;
        e.value * (-elapsed / decay).exp()
    }

    /// Feeds one latency sample (nanoseconds) into the peak EWMA: a sample above the
    /// estimate replaces it at once (react to slowness immediately), one below is blended in
    /// with weight `1 - exp(-elapsed / decay)` (trust recovery slowly).
    pub(crate) fn observe_latency(&self, sample: f64, now: u64) {
        let decay = self.ewma_decay.load(Ordering::Relaxed) as f64;
        let mut e = lock(&self.ewma);
        if sample > e.value {
            e.value = sample;
        } else {
            let elapsed = now.saturating_sub(e.at) as f64;
            let w = (-elapsed / decay).exp();
            e.value = e.value * w + sample * (1.0 - w);
        }
        e.at = e.at.max(now);
    }

    pub(crate) fn begin(&self) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn end(&self, failed: Option<bool>) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        if failed == Some(true) {
            self.failures.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A serialisable view for admin APIs.
    pub fn snapshot(&self) -> EndpointSnapshot {
        let now = self.clock.now_nanos();
        let until = self.ejected_until();
        let ejected = now < until;
        let (consecutive_errors, times_ejected) = {
            let o = lock(&self.outlier);
            (o.consecutive_errors, o.times_ejected)
        };
        let last_check_error = lock(&self.active).last_error.clone();
        EndpointSnapshot {
            id: self.id,
            addr: self.addr.to_string(),
            weight: self.weight(),
            effective_weight: self.effective_weight_milli_at(now) as f64 / 1000.0,
            health: self.health(),
            ejected,
            ejected_for_ms: ejected.then(|| (until - now) / 1_000_000),
            times_ejected,
            ejections: self.ejections.load(Ordering::Relaxed),
            consecutive_errors,
            draining: self.is_draining(),
            in_flight: self.in_flight(),
            ewma_ms: self.ewma_nanos_at(now) / 1e6,
            requests: self.requests.load(Ordering::Relaxed),
            failures: self.failures.load(Ordering::Relaxed),
            last_check_error,
        }
    }
}

/// Locks ignoring poison: every critical section leaves the state consistent.
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A point-in-time view of an [`Endpoint`] for admin APIs and logs.
#[derive(Debug, Clone, Serialize)]
pub struct EndpointSnapshot {
    /// Stable id.
    pub id: usize,
    /// Address.
    pub addr: String,
    /// Configured weight.
    pub weight: u32,
    /// Weight now, reduced during slow start.
    pub effective_weight: f64,
    /// Health as active checks see it.
    pub health: HealthStatus,
    /// Ejected by passive outlier detection.
    pub ejected: bool,
    /// Remaining ejection time in milliseconds, if ejected.
    pub ejected_for_ms: Option<u64>,
    /// Ejection multiplier (the next ejection lasts base × this + 1, capped).
    pub times_ejected: u32,
    /// Ejections in total.
    pub ejections: u64,
    /// Failures in a row seen by outlier detection.
    pub consecutive_errors: u32,
    /// Drained by an operator.
    pub draining: bool,
    /// Requests in flight.
    pub in_flight: u64,
    /// Peak-EWMA latency estimate in milliseconds.
    pub ewma_ms: f64,
    /// Requests sent in total.
    pub requests: u64,
    /// Requests that failed in total.
    pub failures: u64,
    /// Why the last active check failed, if it did.
    pub last_check_error: Option<String>,
}
