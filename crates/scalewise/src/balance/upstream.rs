//! A named group of endpoints with a balancer and health: what a proxy calls per request.
use super::endpoint::{lock, Tuning};
use super::hash::parse_pin;
use super::{
    Balancer, Candidates, Endpoint, EndpointConfig, EndpointSnapshot, HealthStatus, Ketama,
    LeastConn, Maglev, PeakEwma, PickContext, PowerOfTwo, RoundRobin, WeightedRandom,
    WeightedRoundRobin,
};
use crate::clock::{Clock, SystemClock};
use crate::health::{HealthConfig, OutlierConfig};
use arc_swap::ArcSwap;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The algorithms an upstream can be configured with. Config names in parentheses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Algorithm {
    /// [`RoundRobin`] (`round_robin`).
    #[default]
    RoundRobin,
    /// [`WeightedRoundRobin`], nginx's smooth WRR (`weighted_round_robin`).
    WeightedRoundRobin,
    /// [`LeastConn`], weighted least connections (`least_conn`).
    LeastConn,
    /// [`PeakEwma`], least response time (`peak_ewma`).
    PeakEwma,
    /// [`PowerOfTwo`] choices on in-flight requests (`p2c`).
    PowerOfTwo,
    /// [`WeightedRandom`] (`random`).
    Random,
    /// [`Ketama`] consistent-hash ring (`ketama`).
    Ketama,
    /// [`Maglev`] consistent-hash table (`maglev`).
    Maglev,
}

impl Algorithm {
    /// Every algorithm, in documentation order.
    pub const ALL: [Algorithm; 8] = [
        Algorithm::RoundRobin,
        Algorithm::WeightedRoundRobin,
        Algorithm::LeastConn,
        Algorithm::PeakEwma,
        Algorithm::PowerOfTwo,
        Algorithm::Random,
        Algorithm::Ketama,
        Algorithm::Maglev,
    ];

    /// The config name.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::RoundRobin => "round_robin",
            Algorithm::WeightedRoundRobin => "weighted_round_robin",
            Algorithm::LeastConn => "least_conn",
            Algorithm::PeakEwma => "peak_ewma",
            Algorithm::PowerOfTwo => "p2c",
            Algorithm::Random => "random",
            Algorithm::Ketama => "ketama",
            Algorithm::Maglev => "maglev",
        }
    }

    /// Whether the algorithm hashes a request key (see [`HashKeySource`](super::HashKeySource)).
    pub fn is_hashing(self) -> bool {
        matches!(self, Algorithm::Ketama | Algorithm::Maglev)
    }

    /// A fresh balancer of this kind.
    pub fn balancer(self) -> Arc<dyn Balancer> {
        match self {
            Algorithm::RoundRobin => Arc::new(RoundRobin::default()),
            Algorithm::WeightedRoundRobin => Arc::new(WeightedRoundRobin::default()),
            Algorithm::LeastConn => Arc::new(LeastConn::default()),
            Algorithm::PeakEwma => Arc::new(PeakEwma::default()),
            Algorithm::PowerOfTwo => Arc::new(PowerOfTwo::default()),
            Algorithm::Random => Arc::new(WeightedRandom::default()),
            Algorithm::Ketama => Arc::new(Ketama::default()),
            Algorithm::Maglev => Arc::new(Maglev::default()),
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An algorithm name that is not one of [`Algorithm::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown balancing algorithm {0:?}: expected one of round_robin, weighted_round_robin, least_conn, peak_ewma, p2c, random, ketama, maglev")]
pub struct UnknownAlgorithm(pub String);

impl FromStr for Algorithm {
    type Err = UnknownAlgorithm;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Algorithm::ALL
            .into_iter()
            .find(|a| a.name() == s)
            .ok_or_else(|| UnknownAlgorithm(s.to_string()))
    }
}

impl<'de> Deserialize<'de> for Algorithm {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl Serialize for Algorithm {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

/// Why no endpoint could be selected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SelectError {
    /// Every endpoint is unhealthy, ejected, drained or excluded.
    #[error("no healthy backend in upstream {0}")]
    NoHealthyBackend(String),
}

/// What kind of result a request had, as far as outlier detection cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OutcomeKind {
    /// A response that is not a 5xx.
    Success,
    /// A 5xx response from the backend.
    ServerError,
    /// The TCP (or TLS) connection could not be established.
    ConnectFailure,
    /// Any other failure: reset, timeout, protocol error.
    Failure,
}

/// How a request to an endpoint ended, fed back to the balancer and outlier detection.
#[derive(Debug, Clone, Copy)]
pub struct Outcome {
    /// Time to the response head (or to the failure).
    pub latency: Duration,
    /// `false` for connect failures, resets, timeouts and 5xx.
    pub success: bool,
    /// What kind of failure, if any.
    pub kind: OutcomeKind,
}

impl Outcome {
    /// An outcome of `kind`.
    pub fn new(kind: OutcomeKind, latency: Duration) -> Self {
        Self {
            latency,
            success: kind == OutcomeKind::Success,
            kind,
        }
    }

    /// A successful request.
    pub fn success(latency: Duration) -> Self {
        Self::new(OutcomeKind::Success, latency)
    }

    /// A failed request (reset, timeout, ...).
    pub fn failure(latency: Duration) -> Self {
        Self::new(OutcomeKind::Failure, latency)
    }

    /// A 5xx response.
    pub fn server_error(latency: Duration) -> Self {
        Self::new(OutcomeKind::ServerError, latency)
    }

    /// A failed connection attempt.
    pub fn connect_failure(latency: Duration) -> Self {
        Self::new(OutcomeKind::ConnectFailure, latency)
    }

    /// From a response status: 5xx is a server error, anything else success.
    pub fn from_status(status: u16, latency: Duration) -> Self {
        if (500..600).contains(&status) {
            Self::server_error(latency)
        } else {
            Self::success(latency)
        }
    }

    fn effective_kind(&self) -> OutcomeKind {
        if !self.success && self.kind == OutcomeKind::Success {
            OutcomeKind::Failure
        } else {
            self.kind
        }
    }
}

/// The parts of an upstream swapped as one on reload, so a pick never sees a balancer
/// built for another member list.
struct Members {
    endpoints: Vec<Arc<Endpoint>>,
    balancer: Arc<dyn Balancer>,
    health: Arc<HealthConfig>,
}

struct Shared {
    name: String,
    clock: Arc<dyn Clock>,
    members: ArcSwap<Members>,
    // Serialises reloads (read-modify-write of `members`).
    update_lock: Mutex<()>,
    // Serialises ejection decisions so the max-ejection-percent cap holds under races.
    eject_lock: Mutex<()>,
    next_id: AtomicUsize,
    ewma_decay: Duration,
    default_rtt: Duration,
    failure_penalty: Duration,
}

impl Shared {
    fn tuning(&self, health: &HealthConfig) -> Tuning {
        let ss = health.slow_start.clone().unwrap_or_default();
        Tuning {
            slow_start_window: if health.slow_start.is_some() {
                ss.window
            } else {
                Duration::ZERO
            },
            slow_start_min_percent: ss.min_weight_percent,
            ewma_decay: self.ewma_decay,
            default_rtt: self.default_rtt,
        }
    }
}

/// A named group of backends behind one balancer. Cheap to clone (shared state).
///
/// ```
/// use scalewise::balance::{Algorithm, EndpointConfig, Outcome, PickContext, Upstream};
/// use std::time::Duration;
///
/// let up = Upstream::builder("web")
///     .algorithm("weighted_round_robin".parse::<Algorithm>().unwrap())
///     .endpoint(EndpointConfig::new("10.0.0.1:80".parse().unwrap()).weight(3))
///     .endpoint(EndpointConfig::new("10.0.0.2:80".parse().unwrap()))
///     .build();
/// let sel = up.select(&PickContext::default()).unwrap();
/// assert_eq!(sel.endpoint().addr().to_string(), "10.0.0.1:80");
/// sel.finish(Outcome::from_status(200, Duration::from_millis(2)));
/// // Config reload: the first backend keeps its statistics.
/// up.update(vec![EndpointConfig::new("10.0.0.1:80".parse().unwrap())]);
/// assert_eq!(up.endpoints()[0].snapshot().requests, 1);
/// ```
#[derive(Clone)]
pub struct Upstream {
    shared: Arc<Shared>,
}

impl fmt::Debug for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.shared.members.load();
        f.debug_struct("Upstream")
            .field("name", &self.shared.name)
            .field("algorithm", &m.balancer.name())
            .field("endpoints", &m.endpoints)
            .finish()
    }
}

/// Builds an [`Upstream`].
pub struct UpstreamBuilder {
    name: String,
    balancer: Arc<dyn Balancer>,
    endpoints: Vec<EndpointConfig>,
    health: HealthConfig,
    clock: Arc<dyn Clock>,
    ewma_decay: Duration,
    default_rtt: Duration,
    failure_penalty: Duration,
}

impl fmt::Debug for UpstreamBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpstreamBuilder")
            .field("name", &self.name)
            .field("algorithm", &self.balancer.name())
            .field("endpoints", &self.endpoints)
            .finish_non_exhaustive()
    }
}

impl UpstreamBuilder {
    /// Sets the algorithm.
    pub fn algorithm(mut self, algorithm: Algorithm) -> Self {
        self.balancer = algorithm.balancer();
        self
    }

    /// Uses a custom or pre-configured (e.g. seeded) balancer.
    pub fn balancer(mut self, balancer: Arc<dyn Balancer>) -> Self {
        self.balancer = balancer;
        self
    }

    /// Adds a backend.
    pub fn endpoint(mut self, endpoint: EndpointConfig) -> Self {
        self.endpoints.push(endpoint);
        self
    }

    /// Adds backends.
    pub fn endpoints(mut self, endpoints: impl IntoIterator<Item = EndpointConfig>) -> Self {
        self.endpoints.extend(endpoints);
        self
    }

    /// Health settings (active checks, outlier detection, slow start, panic threshold).
    pub fn health(mut self, health: HealthConfig) -> Self {
        self.health = health;
        self
    }

    /// The clock for ejection timers, slow start and EWMA decay (default [`SystemClock`]).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// How fast the peak-EWMA latency estimate forgets (default 10s).
    pub fn ewma_decay(mut self, decay: Duration) -> Self {
        self.ewma_decay = decay;
        self
    }

    /// Latency charged to the EWMA for a failed request, at least (default 1s).
    pub fn failure_penalty(mut self, penalty: Duration) -> Self {
        self.failure_penalty = penalty;
        self
    }

    /// Builds the upstream. Without active checks (or with `healthy_on_start`), endpoints
    /// start healthy; otherwise they take no traffic until their first check passes.
    pub fn build(self) -> Upstream {
        let shared = Arc::new(Shared {
            name: self.name,
            clock: self.clock,
            members: ArcSwap::from_pointee(Members {
                endpoints: Vec::new(),
                balancer: self.balancer.clone(),
                health: Arc::new(self.health.clone()),
            }),
            update_lock: Mutex::new(()),
            eject_lock: Mutex::new(()),
            next_id: AtomicUsize::new(0),
            ewma_decay: self.ewma_decay,
            default_rtt: self.default_rtt,
            failure_penalty: self.failure_penalty,
        });
        let up = Upstream { shared };
        up.apply(self.endpoints, false);
        up
    }
}

fn initial_status(health: &HealthConfig) -> HealthStatus {
    if health.active.is_some() && !health.healthy_on_start {
        HealthStatus::Unknown
    } else {
        HealthStatus::Healthy
    }
}

impl Upstream {
    /// Starts building an upstream called `name`.
    pub fn builder(name: impl Into<String>) -> UpstreamBuilder {
        UpstreamBuilder {
            name: name.into(),
            balancer: Algorithm::default().balancer(),
            endpoints: Vec::new(),
            health: HealthConfig::default(),
            clock: Arc::new(SystemClock),
            ewma_decay: Duration::from_secs(10),
            default_rtt: Duration::from_millis(1),
            failure_penalty: Duration::from_secs(1),
        }
    }

    /// The upstream's name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// The balancer's config name.
    pub fn algorithm_name(&self) -> &'static str {
        self.shared.members.load().balancer.name()
    }

    /// The clock this upstream runs on.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.shared.clock
    }

    /// The current health settings.
    pub fn health_config(&self) -> Arc<HealthConfig> {
        self.shared.members.load().health.clone()
    }

    /// All endpoints, available or not.
    pub fn endpoints(&self) -> Vec<Arc<Endpoint>> {
        self.shared.members.load().endpoints.clone()
    }

    /// The endpoint with id `id`.
    pub fn endpoint(&self, id: usize) -> Option<Arc<Endpoint>> {
        self.shared
            .members
            .load()
            .endpoints
            .iter()
            .find(|e| e.id() == id)
            .cloned()
    }

    /// Replaces the backend list (config reload). Endpoints whose address is unchanged keep
    /// their identity and all state (id, counters, EWMA, health, ejections, stick pins);
    /// their weight and connection limit are updated. New addresses start as a freshly
    /// built upstream's would, and ramp up if slow start is on. Duplicate addresses are
    /// ignored after the first. Requests in flight to removed endpoints finish normally.
    pub fn update(&self, configs: Vec<EndpointConfig>) {
        self.apply(configs, true);
    }

    fn apply(&self, configs: Vec<EndpointConfig>, ramp_new: bool) {
        let s = &self.shared;
        let _g = lock(&s.update_lock);
        let old = s.members.load_full();
        let now = s.clock.now_nanos();
        let initial = initial_status(&old.health);
        let tuning = s.tuning(&old.health);
        let mut seen = HashSet::new();
        let mut endpoints = Vec::with_capacity(configs.len());
        for cfg in configs {
            if !seen.insert(cfg.addr) {
                continue;
            }
            if let Some(e) = old.endpoints.iter().find(|e| e.addr() == cfg.addr) {
                e.set_config(&cfg);
                endpoints.push(e.clone());
                continue;
            }
            let id = s.next_id.fetch_add(1, Ordering::Relaxed);
            let e = Endpoint::with_clock(id, cfg, initial, s.clock.clone());
            e.apply_tuning(&tuning);
            if ramp_new && initial == HealthStatus::Healthy {
                e.start_ramp(now);
            }
            endpoints.push(e);
        }
        old.balancer.rebuild(&endpoints);
        s.members.store(Arc::new(Members {
            endpoints,
            balancer: old.balancer.clone(),
            health: old.health.clone(),
        }));
    }

    /// Switches the algorithm (config reload). Endpoint state is kept; algorithm-private
    /// state (e.g. smooth-WRR counters) starts afresh.
    pub fn set_algorithm(&self, algorithm: Algorithm) {
        if self.algorithm_name() != algorithm.name() {
            self.set_balancer(algorithm.balancer());
        }
    }

    /// Switches to a custom balancer.
    pub fn set_balancer(&self, balancer: Arc<dyn Balancer>) {
        let s = &self.shared;
        let _g = lock(&s.update_lock);
        let old = s.members.load_full();
        balancer.rebuild(&old.endpoints);
        s.members.store(Arc::new(Members {
            endpoints: old.endpoints.clone(),
            balancer,
            health: old.health.clone(),
        }));
    }

    /// Replaces the health settings (config reload). Existing endpoints keep their health
    /// status; new ones start according to the new settings.
    pub fn set_health_config(&self, health: HealthConfig) {
        let s = &self.shared;
        let _g = lock(&s.update_lock);
        let old = s.members.load_full();
        let tuning = s.tuning(&health);
        for e in &old.endpoints {
            e.apply_tuning(&tuning);
        }
        s.members.store(Arc::new(Members {
            endpoints: old.endpoints.clone(),
            balancer: old.balancer.clone(),
            health: Arc::new(health),
        }));
    }

    /// Picks an endpoint for one request.
    ///
    /// # Errors
    /// [`SelectError::NoHealthyBackend`] when no endpoint may take traffic.
    pub fn select(&self, ctx: &PickContext<'_>) -> Result<Selection, SelectError> {
        let m = self.shared.members.load();
        let now = self.shared.clock.now_nanos();
        let endpoint = self.pick(&m, ctx, now)?;
        Ok(self.start(endpoint, now))
    }

    fn start(&self, endpoint: Arc<Endpoint>, now: u64) -> Selection {
        endpoint.begin();
        Selection {
            endpoint,
            shared: self.shared.clone(),
            started: now,
            finished: false,
        }
    }

    fn pick(
        &self,
        m: &Members,
        ctx: &PickContext<'_>,
        now: u64,
    ) -> Result<Arc<Endpoint>, SelectError> {
        let eps = &m.endpoints;
        let ok = |e: &Arc<Endpoint>| e.is_available_at(now) && !ctx.exclude.contains(&e.id());
        if !eps.is_empty() && eps.iter().all(ok) {
            let c = Candidates::all(eps, now);
            let i = m.balancer.pick(&c, ctx).min(eps.len() - 1);
            return Ok(eps[i].clone());
        }
        let idx: Vec<u32> = if in_panic(m, now) {
            eligible(eps, |e| {
                !e.is_draining()
                    && e.health() != HealthStatus::Unknown
                    && !ctx.exclude.contains(&e.id())
            })
        } else {
            eligible(eps, ok)
        };
        if idx.is_empty() {
            return Err(SelectError::NoHealthyBackend(self.shared.name.clone()));
        }
        let c = Candidates::subset(eps, &idx, now);
        let i = m.balancer.pick(&c, ctx).min(idx.len() - 1);
        Ok(c.get(i).clone())
    }

    /// Picks an endpoint honouring a sticky-session pin (the value of the cookie the
    /// gateway sets, see [`Endpoint::pin`]).
    ///
    /// The pin is derived from the backend address alone, so every gateway instance
    /// understands every other's cookies and a reload does not break sessions. If the pinned
    /// backend is gone, unavailable or excluded, another is picked by the balancer and
    /// [`Pinned::set_cookie`] says what the caller must set the cookie to.
    ///
    /// # Errors
    /// [`SelectError::NoHealthyBackend`] when no endpoint may take traffic.
    pub fn select_pinned(
        &self,
        pin: Option<&str>,
        ctx: &PickContext<'_>,
    ) -> Result<Pinned, SelectError> {
        let m = self.shared.members.load();
        let now = self.shared.clock.now_nanos();
        if let Some(h) = pin.and_then(parse_pin) {
            if let Some(e) = m.endpoints.iter().find(|e| e.pin_hash() == h) {
                if e.is_available_at(now) && !ctx.exclude.contains(&e.id()) {
                    return Ok(Pinned {
                        selection: self.start(e.clone(), now),
                        set_cookie: None,
                        moved: false,
                    });
                }
            }
        }
        let e = self.pick(&m, ctx, now)?;
        Ok(Pinned {
            set_cookie: Some(e.pin()),
            moved: pin.is_some(),
            selection: self.start(e, now),
        })
    }

    /// Whether the upstream is in panic mode now (see [`HealthConfig::panic_threshold`]).
    pub fn in_panic(&self) -> bool {
        in_panic(&self.shared.members.load(), self.shared.clock.now_nanos())
    }

    /// A serialisable view of the upstream and every endpoint, for admin APIs.
    pub fn snapshot(&self) -> UpstreamSnapshot {
        let m = self.shared.members.load();
        let now = self.shared.clock.now_nanos();
        UpstreamSnapshot {
            name: self.shared.name.clone(),
            algorithm: m.balancer.name().to_string(),
            panic: in_panic(&m, now),
            available: m
                .endpoints
                .iter()
                .filter(|e| e.is_available_at(now))
                .count(),
            endpoints: m.endpoints.iter().map(|e| e.snapshot()).collect(),
        }
    }
}

fn eligible(eps: &[Arc<Endpoint>], f: impl Fn(&Arc<Endpoint>) -> bool) -> Vec<u32> {
    eps.iter()
        .enumerate()
        .filter(|(_, e)| f(e))
        .map(|(i, _)| i as u32)
        .collect()
}

// Panic mode (Envoy): when too few hosts are available, spreading load over all of them —
// some of which may be fine but flagged — beats overloading the few. Hosts never checked
// and drained hosts are left out: they were never meant to take traffic.
fn in_panic(m: &Members, now: u64) -> bool {
    let threshold = u64::from(m.health.panic_threshold.min(100));
    if threshold == 0 {
        return false;
    }
    let considered = m
        .endpoints
        .iter()
        .filter(|e| !e.is_draining() && e.health() != HealthStatus::Unknown)
        .count() as u64;
    let available = m
        .endpoints
        .iter()
        .filter(|e| e.is_available_at(now))
        .count() as u64;
    considered > 0 && available * 100 < threshold * considered
}

/// A point-in-time view of an [`Upstream`].
#[derive(Debug, Clone, Serialize)]
pub struct UpstreamSnapshot {
    /// Name.
    pub name: String,
    /// Balancer config name.
    pub algorithm: String,
    /// In panic mode.
    pub panic: bool,
    /// Endpoints that may take traffic (healthy, not ejected, not draining).
    pub available: usize,
    /// Every endpoint.
    pub endpoints: Vec<EndpointSnapshot>,
}

/// The result of [`Upstream::select_pinned`].
#[derive(Debug)]
pub struct Pinned {
    /// The chosen endpoint.
    pub selection: Selection,
    /// `Some(value)` when the caller must (re)set the sticky cookie to `value`.
    pub set_cookie: Option<String>,
    /// The request carried a pin that could not be honoured.
    pub moved: bool,
}

/// An endpoint chosen for one request. Report how it went with [`Selection::finish`];
/// dropping it unfinished counts as a cancelled request (neither failed nor successful).
#[must_use = "report the outcome with finish()"]
pub struct Selection {
    endpoint: Arc<Endpoint>,
    shared: Arc<Shared>,
    started: u64,
    finished: bool,
}

impl fmt::Debug for Selection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Selection")
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

impl Selection {
    /// The chosen endpoint.
    pub fn endpoint(&self) -> &Arc<Endpoint> {
        &self.endpoint
    }

    /// Time since the selection, on the upstream's clock.
    pub fn elapsed(&self) -> Duration {
        Duration::from_nanos(self.shared.clock.now_nanos().saturating_sub(self.started))
    }

    /// Records the outcome: in-flight count, latency estimate and outlier detection.
    pub fn finish(mut self, outcome: Outcome) {
        self.finished = true;
        let kind = outcome.effective_kind();
        let failed = kind != OutcomeKind::Success;
        self.endpoint.end(Some(failed));
        let now = self.shared.clock.now_nanos();
        let mut sample = outcome.latency;
        if failed {
            sample = sample.max(self.shared.failure_penalty);
        }
        self.endpoint.observe_latency(sample.as_nanos() as f64, now);
        let m = self.shared.members.load();
        if let Some(cfg) = &m.health.outlier {
            observe_outlier(&self.shared, &m, &self.endpoint, kind, now, cfg);
        }
    }
}

impl Drop for Selection {
    fn drop(&mut self) {
        if !self.finished {
            self.endpoint.end(None);
        }
    }
}

fn observe_outlier(
    shared: &Shared,
    m: &Members,
    e: &Arc<Endpoint>,
    kind: OutcomeKind,
    now: u64,
    cfg: &OutlierConfig,
) {
    {
        let mut st = lock(&e.outlier);
        match kind {
            OutcomeKind::Success => {
                st.consecutive_errors = 0;
                st.consecutive_connect_failures = 0;
                return;
            }
            OutcomeKind::ConnectFailure => {
                st.consecutive_errors += 1;
                st.consecutive_connect_failures += 1;
            }
            OutcomeKind::ServerError | OutcomeKind::Failure => {
                st.consecutive_errors += 1;
                st.consecutive_connect_failures = 0;
            }
        }
        let tripped = (cfg.consecutive_5xx > 0 && st.consecutive_errors >= cfg.consecutive_5xx)
            || (cfg.consecutive_connect_failures > 0
                && st.consecutive_connect_failures >= cfg.consecutive_connect_failures);
        if !tripped || e.is_ejected_at(now) {
            return;
        }
    }
    let _g = lock(&shared.eject_lock);
    if e.is_ejected_at(now) {
        return;
    }
    let total = m.endpoints.len();
    let pct = usize::from(cfg.max_ejection_percent.min(100));
    let cap = if pct == 0 {
        0
    } else {
        (total * pct / 100).max(1)
    };
    let ejected = m.endpoints.iter().filter(|x| x.is_ejected_at(now)).count();
    if ejected >= cap {
        // Counters stay tripped: the next failure tries again once a slot frees up.
        return;
    }
    let mut st = lock(&e.outlier);
    let base = cfg.base_ejection_time.as_nanos().max(1) as u64;
    let prev_until = e.ejected_until();
    // The multiplier decays one step per base ejection time spent un-ejected, so a host
    // that failed once long ago is not punished like a flapping one.
    if prev_until != 0 {
        let quiet = now.saturating_sub(prev_until) / base;
        st.times_ejected = st
            .times_ejected
            .saturating_sub(u32::try_from(quiet).unwrap_or(u32::MAX));
    }
    st.times_ejected = st.times_ejected.saturating_add(1);
    let cap_nanos = (cfg.max_ejection_time.as_nanos() as u64).max(base);
    let dur = base
        .saturating_mul(u64::from(st.times_ejected))
        .min(cap_nanos);
    e.eject_until(now.saturating_add(dur));
    st.consecutive_errors = 0;
    st.consecutive_connect_failures = 0;
    tracing::warn!(
        upstream = %shared.name,
        backend = %e.addr(),
        ejection_ms = dur / 1_000_000,
        times_ejected = st.times_ejected,
        "outlier detection ejected backend"
    );
}
