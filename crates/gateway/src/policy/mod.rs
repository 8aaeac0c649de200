//! Resilience policies on the data path, from the library's primitives: rate limits per
//! route (local or Redis-global), a concurrency limit and load shedding per route, retries
//! under a retry budget per upstream, and a circuit breaker per backend that takes the
//! backend out of selection while open (as an outlier ejection does).
//!
//! Policies are part of the immutable `GatewayState`: a reload builds them anew, keeping
//! what is cheap and meaningful to keep — limiters whose spec is unchanged (their counts),
//! retry budgets whose settings are unchanged, breakers of backends whose address and breaker
//! settings are unchanged (their state and window), and route bulkheads and shedders with
//! unchanged settings (their in-flight counts). See docs/gateway-policies.md.
//!
//! ```
//! use scalewise_gateway::config::Config;
//! use scalewise_gateway::metrics::GatewayMetrics;
//! use scalewise_gateway::state::Shared;
//!
//! let config: Config = toml::from_str(r#"
//!     [[listeners]]
//!     addr = "127.0.0.1:8080"
//!
//!     [[routes]]
//!     upstream = "api"
//!     rate_limit = "per_key"
//!     retries = 2
//!     concurrency = { max_concurrent = 100, max_waiting = 50, max_wait = "500ms" }
//!
//!     [rate_limits.per_key]
//!     rate = "600/min"
//!     key = "header:x-api-key"
//!
//!     [upstreams.api]
//!     backends = [{ addr = "127.0.0.1:9001" }]
//!     circuit_breaker = { failure_rate_threshold = 0.5, minimum_calls = 20, open_duration = "5s" }
//!     retry_budget = { retry_ratio = 0.1, min_retries_per_second = 5, window = "10s" }
//! "#).unwrap();
//! config.validate().unwrap();
//! let shared = Shared::new(config, GatewayMetrics::new()).unwrap();
//! let state = shared.load();
//! let policies = scalewise_gateway::policy::snapshot(&state);
//! assert_eq!(policies["rate_limits"]["per_key"]["mode"], "local");
//! assert_eq!(policies["upstreams"]["api"]["breakers"]["127.0.0.1:9001"]["state"], "closed");
//! ```
pub mod config;
mod limit;

pub(crate) use config::validate;
pub use config::{
    apply_rate_limit_flag, AdaptiveAlgorithm, AdaptiveSpec, FallbackSpec, RateLimitSpec, RedisSpec,
    FLAG_LIMIT_NAME,
};
pub use limit::NamedLimiter;

use crate::config::{Config, RouteConfig, UpstreamConfig};
use crate::state::GatewayState;
use http::StatusCode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use scalewise::balance::Endpoint;
use scalewise::breaker::{CircuitBreaker, OwnedPermit, Rejected, State};
use scalewise::bulkhead::{Bulkhead, BulkheadError, BulkheadPermit};
use scalewise::concurrency::{AdaptiveLimiter, Aimd, Gradient2, LimitToken};
use scalewise::metrics::Samples;
use scalewise::ratelimit::Decision;
use scalewise::retry::RetryBudget;
use scalewise::shed::{LoadShedder, ShedGuard};
use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

/// Retries per request when a route does not say (the gateway's behaviour before policies:
/// one retry on another backend).
pub const DEFAULT_RETRIES: u32 = 1;

/// Request body bytes kept for retries when a route does not say (`retry_buffer_bytes`):
/// enough for typical API bodies (JSON, forms), small enough to keep for many requests.
pub const DEFAULT_RETRY_BUFFER_BYTES: u64 = 64 * 1024;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecisionLabels {
    route: String,
    limit: String,
    decision: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RejectLabels {
    route: String,
    reason: &'static str,
}

/// Metric families of the policies, registered with the gateway's (`gateway_` prefix).
#[derive(Debug, Clone, Default)]
pub struct PolicyMetrics {
    decisions: Family<DecisionLabels, Counter>,
    rejections: Family<RejectLabels, Counter>,
}

impl PolicyMetrics {
    pub(crate) fn register(&self, r: &mut Registry) {
        r.register(
            "ratelimit_decisions",
            "Rate-limit decisions by route, limit and decision (allowed, denied)",
            self.decisions.clone(),
        );
        r.register(
            "policy_rejections",
            "Requests refused with 503 by a route's concurrency limit or load shedding, by reason",
            self.rejections.clone(),
        );
    }

    fn route(&self, route: &str, limit: Option<&str>) -> RouteCounters {
        let d = |decision| {
            self.decisions
                .get_or_create(&DecisionLabels {
                    route: route.to_owned(),
                    limit: limit.unwrap_or_default().to_owned(),
                    decision,
                })
                .clone()
        };
        let r = |reason| {
            self.rejections
                .get_or_create(&RejectLabels {
                    route: route.to_owned(),
                    reason,
                })
                .clone()
        };
        RouteCounters {
            allowed: limit.map(|_| d("allowed")),
            denied: limit.map(|_| d("denied")),
            concurrency_full: r("concurrency_full"),
            concurrency_timeout: r("concurrency_timeout"),
            shed: r("shed"),
            adaptive: r("adaptive_limit"),
        }
    }
}

#[derive(Debug, Clone)]
struct RouteCounters {
    allowed: Option<Counter>,
    denied: Option<Counter>,
    concurrency_full: Counter,
    concurrency_timeout: Counter,
    shed: Counter,
    adaptive: Counter,
}

/// The named limiters of one state.
#[derive(Debug, Default)]
pub(crate) struct Limiters {
    by_name: BTreeMap<String, Arc<NamedLimiter>>,
}

impl Limiters {
    /// Builds `config`'s limiters, keeping those of `prev` whose spec is unchanged.
    pub(crate) fn build(config: &Config, prev: Option<&GatewayState>) -> Self {
        let mut by_name = BTreeMap::new();
        for (name, spec) in &config.rate_limits {
            let kept = prev
                .and_then(|p| p.limiters().by_name.get(name))
                .filter(|l| l.spec == *spec)
                .cloned();
            if let Some(l) = kept.or_else(|| NamedLimiter::build(name, spec).map(Arc::new)) {
                by_name.insert(name.clone(), l);
            }
        }
        Self { by_name }
    }
}

/// The policies of one route.
#[derive(Debug)]
pub struct RoutePolicy {
    limiter: Option<Arc<NamedLimiter>>,
    concurrency: Option<(scalewise::bulkhead::BulkheadConfig, Bulkhead)>,
    shed: Option<(scalewise::shed::ShedConfig, LoadShedder)>,
    adaptive: Option<(AdaptiveSpec, AdaptiveLimiter)>,
    /// Retries after the first attempt (before any budget check).
    pub retries: u32,
    /// Request body bytes kept for a retry (`retry_buffer_bytes`); 0: bodies are not kept.
    pub retry_buffer_bytes: u64,
    /// Whether non-idempotent requests may be retried too (`retry_non_idempotent`).
    pub retry_non_idempotent: bool,
    counters: RouteCounters,
}

impl RoutePolicy {
    /// Builds the policies of route `cfg` labelled `label`; `prev` is the same-labelled
    /// route's policy of the previous state, whose bulkhead and shedder are kept when their
    /// settings are unchanged.
    pub(crate) fn build(
        label: &str,
        cfg: &RouteConfig,
        limiters: &Limiters,
        prev: Option<&RoutePolicy>,
        metrics: &PolicyMetrics,
    ) -> Self {
        let limiter = cfg
            .rate_limit
            .as_ref()
            .and_then(|n| limiters.by_name.get(n))
            .cloned();
        let concurrency = cfg.concurrency.as_ref().map(|c| {
            prev.and_then(|p| p.concurrency.as_ref())
                .filter(|(old, _)| old == c)
                .cloned()
                .unwrap_or_else(|| (c.clone(), Bulkhead::new(c.clone())))
        });
        let shed = cfg.shed.as_ref().map(|c| {
            prev.and_then(|p| p.shed.as_ref())
                .filter(|(old, _)| old == c)
                .cloned()
                .unwrap_or_else(|| (c.clone(), LoadShedder::new(c.clone())))
        });
        let adaptive = cfg.adaptive_concurrency.as_ref().map(|c| {
            prev.and_then(|p| p.adaptive.as_ref())
                .filter(|(old, _)| old == c)
                .cloned()
                .unwrap_or_else(|| {
                    let limiter = match c.algorithm {
                        AdaptiveAlgorithm::Aimd => {
                            AdaptiveLimiter::new(Aimd::new(c.initial, c.min, c.max))
                        }
                        AdaptiveAlgorithm::Gradient2 => {
                            AdaptiveLimiter::new(Gradient2::new(c.initial, c.min, c.max))
                        }
                    };
                    (c.clone(), limiter)
                })
        });
        Self {
            adaptive,
            counters: metrics.route(label, limiter.as_ref().map(|l| l.name.as_str())),
            limiter,
            concurrency,
            shed,
            retries: cfg.retries.unwrap_or(DEFAULT_RETRIES),
            retry_buffer_bytes: cfg.retry_buffer_bytes.unwrap_or(DEFAULT_RETRY_BUFFER_BYTES),
            retry_non_idempotent: cfg.retry_non_idempotent,
        }
    }

    /// Whether [`admit`](Self::admit) lets every request through with nothing to hold:
    /// the route has no rate limit, load shedding or concurrency limit (fixed or
    /// adaptive). The request path then skips `admit` and its future, which has room for
    /// a Redis round trip and a queue wait.
    pub(crate) fn admits_all(&self) -> bool {
        self.limiter.is_none()
            && self.concurrency.is_none()
            && self.shed.is_none()
            && self.adaptive.is_none()
    }

    /// Runs the route's admission policies: rate limit, load shedding, concurrency limit.
    /// On refusal returns the status to answer and the rate-limit decision for its headers.
    pub(crate) async fn admit(
        &self,
        parts: &http::request::Parts,
        peer: IpAddr,
    ) -> Result<Admitted, Refused> {
        let mut decision = None;
        if let Some(l) = &self.limiter {
            let d = l.check(&l.key_of(parts, peer)).await;
            if !d.allowed {
                if let Some(c) = &self.counters.denied {
                    c.inc();
                }
                return Err(Refused {
                    status: StatusCode::TOO_MANY_REQUESTS,
                    kind: "rate_limited",
                    decision: Some(d),
                });
            }
            if let Some(c) = &self.counters.allowed {
                c.inc();
            }
            decision = Some(d);
        }
        let refuse = |kind, counter: &Counter| {
            counter.inc();
            Refused {
                status: StatusCode::SERVICE_UNAVAILABLE,
                kind,
                decision,
            }
        };
        let shed = match &self.shed {
            Some((_, s)) => Some(
                s.try_enter()
                    .map_err(|_| refuse("shed", &self.counters.shed))?,
            ),
            None => None,
        };
        let token = match &self.adaptive {
            Some((_, a)) => Some(
                a.try_acquire()
                    .map_err(|_| refuse("adaptive_limit", &self.counters.adaptive))?,
            ),
            None => None,
        };
        let permit = match &self.concurrency {
            Some((_, b)) => Some(b.acquire().await.map_err(|e| match e {
                BulkheadError::QueueFull { .. } => {
                    refuse("concurrency_full", &self.counters.concurrency_full)
                }
                BulkheadError::WaitTimeout { .. } => {
                    refuse("concurrency_timeout", &self.counters.concurrency_timeout)
                }
            })?),
            None => None,
        };
        Ok(Admitted {
            decision,
            guard: RouteGuard {
                _permit: permit,
                _shed: shed,
                token,
            },
        })
    }

    /// Reports how long a request queued before it was sent (route concurrency limit plus
    /// backend queue), for shedding by queueing delay (`shed.queue_target`).
    pub(crate) fn observe_queue_delay(&self, delay: std::time::Duration) {
        if let Some((_, s)) = &self.shed {
            s.observe_queue_delay(delay);
        }
    }

    fn snapshot(&self) -> serde_json::Value {
        serde_json::json!({
            "rate_limit": self.limiter.as_ref().map(|l| l.name.clone()),
            "retries": self.retries,
            "retry_buffer_bytes": self.retry_buffer_bytes,
            "retry_non_idempotent": self.retry_non_idempotent,
            "concurrency": self.concurrency.as_ref().map(|(c, b)| serde_json::json!({
                "config": c,
                "stats": b.stats(),
            })),
            "adaptive_concurrency": self.adaptive.as_ref().map(|(c, a)| serde_json::json!({
                "config": c,
                "stats": a.stats(),
            })),
            "rejected_adaptive_limit": self.counters.adaptive.get(),
            "shed": self.shed.as_ref().map(|(c, s)| serde_json::json!({
                "config": c,
                "stats": s.stats(),
            })),
            "rate_limit_allowed": self.counters.allowed.as_ref().map(Counter::get),
            "rate_limit_denied": self.counters.denied.as_ref().map(Counter::get),
            "rejected_concurrency_full": self.counters.concurrency_full.get(),
            "rejected_concurrency_timeout": self.counters.concurrency_timeout.get(),
            "shed_count": self.counters.shed.get(),
        })
    }
}

/// A request the route's policies let in.
#[derive(Debug)]
pub(crate) struct Admitted {
    /// The rate-limit decision, for the `RateLimit-*` headers of the response.
    pub(crate) decision: Option<Decision>,
    /// Held until the response is complete.
    pub(crate) guard: RouteGuard,
}

impl Admitted {
    /// What [`RoutePolicy::admit`] returns for a route that [admits all](RoutePolicy::admits_all).
    pub(crate) fn unconditional() -> Self {
        Self {
            decision: None,
            guard: RouteGuard {
                _permit: None,
                _shed: None,
                token: None,
            },
        }
    }
}

/// A request the route's policies refused.
#[derive(Debug)]
pub(crate) struct Refused {
    pub(crate) status: StatusCode,
    pub(crate) kind: &'static str,
    pub(crate) decision: Option<Decision>,
}

/// The route's concurrency slot and shedding place of one request; dropping it frees them.
#[derive(Debug)]
pub struct RouteGuard {
    _permit: Option<BulkheadPermit>,
    _shed: Option<ShedGuard>,
    token: Option<LimitToken>,
}

impl RouteGuard {
    /// Teaches the route's adaptive limit how the backend answered: `Some(true)` a
    /// success, `Some(false)` a drop (timeout or overload answer), `None` nothing.
    pub(crate) fn outcome(&mut self, ok: Option<bool>) {
        if let Some(t) = self.token.take() {
            match ok {
                Some(true) => t.success(),
                Some(false) => t.dropped(),
                None => t.ignore(),
            }
        }
    }
}

/// The policies of one upstream: its retry budget and a breaker per backend.
#[derive(Debug)]
pub struct UpstreamPolicy {
    budget: Arc<RetryBudget>,
    budget_config: scalewise::retry::BudgetConfig,
    breaker_config: Option<scalewise::breaker::BreakerConfig>,
    /// By endpoint id; `None` where the upstream has no breakers.
    breakers: Vec<Option<(SocketAddr, CircuitBreaker)>>,
}

impl UpstreamPolicy {
    /// Builds the policies of upstream `name` for the endpoints of `balancer`, keeping
    /// `prev`'s budget if its settings are unchanged and the breakers of unchanged backends.
    /// Breakers and budget run on the balancer's clock, the one outlier ejections use.
    pub(crate) fn build(
        name: &str,
        cfg: &UpstreamConfig,
        balancer: &scalewise::balance::Upstream,
        prev: Option<&UpstreamPolicy>,
    ) -> Self {
        let clock = balancer.clock().clone();
        let endpoints = balancer.endpoints();
        let budget = prev
            .filter(|p| p.budget_config == cfg.retry_budget)
            .map(|p| p.budget.clone())
            .unwrap_or_else(|| {
                Arc::new(RetryBudget::with_clock(
                    cfg.retry_budget.clone(),
                    clock.clone(),
                ))
            });
        let mut breakers = Vec::new();
        if let Some(bc) = &cfg.circuit_breaker {
            let same_cfg = prev.filter(|p| p.breaker_config.as_ref() == Some(bc));
            for ep in &endpoints {
                let addr = ep.addr();
                let kept = same_cfg.and_then(|p| {
                    p.breakers
                        .iter()
                        .flatten()
                        .find(|(a, _)| *a == addr)
                        .map(|(_, b)| b.clone())
                });
                let b = kept.unwrap_or_else(|| {
                    // validate() has checked the settings; `new` clamps if it had not.
                    CircuitBreaker::builder(format!("{name}/{addr}"))
                        .config(bc.clone())
                        .clock(clock.clone())
                        .build()
                        .unwrap_or_else(|_| CircuitBreaker::new(bc.clone()))
                });
                if breakers.len() <= ep.id() {
                    breakers.resize(ep.id() + 1, None);
                }
                breakers[ep.id()] = Some((addr, b));
            }
        }
        Self {
            budget,
            budget_config: cfg.retry_budget.clone(),
            breaker_config: cfg.circuit_breaker.clone(),
            breakers,
        }
    }

    /// The breaker of the endpoint with this id and address, if the upstream has breakers.
    pub fn breaker(&self, endpoint_id: usize, addr: SocketAddr) -> Option<&CircuitBreaker> {
        match self.breakers.get(endpoint_id)? {
            Some((a, b)) if *a == addr => Some(b),
            _ => None,
        }
    }

    /// The upstream's retry budget.
    pub fn budget(&self) -> &Arc<RetryBudget> {
        &self.budget
    }

    /// Asks the endpoint's breaker for a call permit; `Ok(None)` if there is no breaker.
    ///
    /// # Errors
    /// [`Rejected`] while the breaker is open (or half-open with every trial slot taken):
    /// pick another backend.
    pub fn permit(&self, endpoint: &Endpoint) -> Result<Option<OwnedPermit>, Rejected> {
        match self.breaker(endpoint.id(), endpoint.addr()) {
            None => Ok(None),
            Some(b) => b.try_acquire_owned().map(Some),
        }
    }

    /// The breaker state of a backend as JSON for the admin API (`null` without breakers).
    pub fn breaker_json(&self, endpoint: &Endpoint) -> serde_json::Value {
        self.breaker(endpoint.id(), endpoint.addr())
            .map(|b| serde_json::to_value(b.stats()).unwrap_or_default())
            .unwrap_or(serde_json::Value::Null)
    }
}

/// `POST /api/backends/{upstream}/{id or addr}/breaker/{action}`: `open` forces the breaker
/// open (the backend gets no traffic), `disable` lets everything through unjudged, `reset`
/// closes it with an empty window. Forced states hold until the next `reset` (or a reload
/// that changes the breaker settings).
///
/// # Errors
/// No such upstream or backend, no breakers on the upstream, or an unknown action.
pub fn set_breaker(
    state: &GatewayState,
    upstream: &str,
    backend: &str,
    action: &str,
) -> Result<serde_json::Value, String> {
    let (up, endpoint) = state.backend(upstream, backend)?;
    let breaker = up
        .policy
        .breaker(endpoint.id(), endpoint.addr())
        .ok_or_else(|| format!("upstream `{upstream}` has no circuit_breaker configured"))?;
    match action {
        "open" => breaker.force_open(),
        "disable" => breaker.disable(),
        "reset" => breaker.reset(),
        _ => {
            return Err(format!(
                "unknown breaker action `{action}`: open, disable or reset"
            ))
        }
    }
    tracing::info!(upstream, backend = %endpoint.addr(), action, "circuit breaker changed by admin");
    Ok(serde_json::to_value(breaker.stats()).unwrap_or_default())
}

/// The limiter `[rate_limits.NAME]` of a running state.
pub fn limiter(state: &GatewayState, name: &str) -> Option<Arc<NamedLimiter>> {
    state.limiters().by_name.get(name).cloned()
}

/// `GET /api/policies`: limiters, route policies, retry budgets and breakers.
pub fn snapshot(state: &GatewayState) -> serde_json::Value {
    let limits: serde_json::Map<_, _> = state
        .limiters()
        .by_name
        .iter()
        .map(|(name, l)| {
            (
                name.clone(),
                serde_json::json!({
                    "rate": l.spec.rate.to_string(),
                    "burst": l.spec.burst,
                    "key": l.spec.key.to_string(),
                    "algorithm": l.spec.algorithm,
                    "mode": l.mode(),
                    "keys": l.keys(),
                }),
            )
        })
        .collect();
    let mut routes = serde_json::Map::new();
    let mut seen = std::collections::HashSet::new();
    for name in state.config().listeners.iter().map(|l| &l.name) {
        let Some(l) = state.listener(name) else {
            continue;
        };
        for r in l.router.routes() {
            if seen.insert(Arc::as_ptr(r)) {
                let mut v = r.policy.snapshot();
                if let Some(o) = v.as_object_mut() {
                    o.insert("upstream".into(), r.upstream.name.clone().into());
                }
                routes.insert(r.label.clone(), v);
            }
        }
    }
    let upstreams: serde_json::Map<_, _> = state
        .upstreams()
        .iter()
        .map(|(name, up)| {
            let breakers: serde_json::Map<_, _> = up
                .policy
                .breakers
                .iter()
                .flatten()
                .map(|(a, b)| {
                    (
                        a.to_string(),
                        serde_json::to_value(b.stats()).unwrap_or_default(),
                    )
                })
                .collect();
            (
                name.clone(),
                serde_json::json!({
                    "retry_budget": up.policy.budget.stats(),
                    "retries": up.retries.get(),
                    "breakers": breakers,
                }),
            )
        })
        .collect();
    serde_json::json!({ "rate_limits": limits, "routes": routes, "upstreams": upstreams })
}

/// Scrape-time series: breaker states and retry budgets (both depend on the time of asking).
pub fn samples(state: &GatewayState, out: &mut Samples) {
    for (name, up) in state.upstreams() {
        let labels = [("upstream", name.as_str())];
        let s = up.policy.budget.stats();
        out.gauge(
            "gateway_retry_budget_available",
            "Retries the upstream's retry budget allows right now",
            &labels,
            s.available,
        );
        out.counter(
            "gateway_retry_budget_spent",
            "Retries taken from the upstream's budget",
            &labels,
            s.retries_spent as f64,
        );
        out.counter(
            "gateway_retry_budget_denied",
            "Retries refused because the upstream's budget was spent",
            &labels,
            s.retries_denied as f64,
        );
        for (addr, b) in up.policy.breakers.iter().flatten() {
            let addr = addr.to_string();
            let stats = b.stats();
            for st in [
                State::Closed,
                State::Open,
                State::HalfOpen,
                State::ForcedOpen,
                State::Disabled,
            ] {
                out.gauge(
                    "gateway_breaker_state",
                    "1 for the state each backend's circuit breaker is in",
                    &[
                        ("upstream", name.as_str()),
                        ("backend", addr.as_str()),
                        ("state", st.as_str()),
                    ],
                    f64::from(u8::from(stats.state == st)),
                );
            }
            out.counter(
                "gateway_breaker_rejected",
                "Backend picks refused by an open circuit breaker",
                &[("upstream", name.as_str()), ("backend", addr.as_str())],
                stats.rejected as f64,
            );
        }
    }
}

/// Route policies of `prev` by route label, for [`RoutePolicy::build`].
pub(crate) fn previous_routes(
    prev: Option<&GatewayState>,
) -> HashMap<String, Arc<crate::route::Route>> {
    let mut out = HashMap::new();
    if let Some(p) = prev {
        for l in &p.config().listeners {
            if let Some(rt) = p.listener(&l.name) {
                for r in rt.router.routes() {
                    out.entry(r.label.clone()).or_insert_with(|| r.clone());
                }
            }
        }
    }
    out
}
