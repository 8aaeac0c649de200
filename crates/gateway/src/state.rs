//! The runtime built from a [`Config`]: compiled routes, balancers, backend clients, TLS
//! acceptors, metric handles. One [`GatewayState`] is immutable; a reload builds a new one
//! and swaps it into [`Shared::state`]. Requests load the current state once when they start
//! and keep that `Arc` to the end, so a swap never disturbs a request in flight, and the old
//! state is freed when its last request finishes.
//!
//! ```no_run
//! use scalewise_gateway::config::{AlgorithmName, Config};
//! use scalewise_gateway::metrics::GatewayMetrics;
//! use scalewise_gateway::state::Shared;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let config = Config::from_backends(
//!     "127.0.0.1:8080".parse()?,
//!     ["127.0.0.1:9001".parse()?],
//!     AlgorithmName::RoundRobin,
//! );
//! let shared = Shared::new(config.clone(), GatewayMetrics::new())?;
//! // later, on SIGHUP or PUT /api/config:
//! shared.apply(config)?;
//! # Ok(()) }
//! ```
use crate::config::{BackendAddr, Config, ConfigError, UpstreamConfig};
use crate::dns::{Name, Resolved};
use crate::metrics::GatewayMetrics;
use crate::proxy::connect::CheckTargets;
use crate::proxy::pool::{BackendClient, BackendSettings};
use crate::route::{Route, Router};
use crate::tls::{self, BackendTls, UpstreamTls};
use arc_swap::ArcSwap;
use prometheus_client::metrics::counter::Counter;
use scalewise::balance::{Endpoint, EndpointConfig, Upstream};
use scalewise::clock::{Clock, QuantaClock};
use scalewise::health::ActiveHealthChecks;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio_rustls::TlsAcceptor;

/// Why a state could not be built.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// [`Config::validate`] failed.
    #[error("invalid configuration: {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Invalid(Vec<ConfigError>),
    /// A backend's DNS name has no answer in the resolution table the state is built with.
    #[error("{key}: \"{name}\" has not been resolved (names are resolved by Gateway::start and on reload)")]
    Unresolved {
        /// The key naming it, e.g. `upstreams.app.backends[0].addr`.
        key: String,
        /// The name as written.
        name: String,
    },
    /// A listener's certificate, key, client CA file or CRLs could not be loaded.
    #[error("listener {listener}: {source}")]
    Tls {
        /// Listener name.
        listener: String,
        /// The key under `tls` and what went wrong, naming the file (boxed, as below).
        source: Box<tls::ListenerTlsError>,
    },
    /// An upstream's TLS files (CA, CRLs, client certificate or key) could not be loaded.
    #[error("upstreams.{upstream}.tls.{source}")]
    UpstreamTls {
        /// Upstream name.
        upstream: String,
        /// The key and what went wrong, naming the file (boxed: a rare error should not
        /// make every `Result` of a state build larger).
        source: Box<tls::UpstreamTlsError>,
    },
}

/// The per-request settings of one listener.
pub struct ListenerRuntime {
    /// Listener name.
    pub name: String,
    /// Routes that apply to this listener, in order.
    pub router: Router,
    /// Default upstream response-head timeout.
    pub request_timeout: Duration,
    /// Request body limit.
    pub max_body_bytes: Option<u64>,
    /// TLS acceptor, for TLS listeners.
    pub tls: Option<TlsAcceptor>,
    /// How verified client certificates are passed to backends in
    /// `X-Forwarded-Client-Cert` (`tls.client_auth.forward_client_cert` and
    /// `forward_client_cert_details`); `None`: they are not.
    pub forward_client_cert: Option<Arc<crate::client_cert::XfccFormat>>,
    /// What a trusted proxy's `X-Forwarded-Client-Cert` becomes.
    pub xfcc_from_trusted_proxies: crate::config::TrustedXfcc,
    /// Proxies whose `X-Forwarded-For` is believed; pass to
    /// [`crate::client_ip::client_ip`].
    pub trusted_proxies: crate::client_ip::TrustedProxies,
}

impl std::fmt::Debug for ListenerRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ListenerRuntime")
            .field("name", &self.name)
            .field("router", &self.router)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

/// One upstream group at run time.
pub struct UpstreamRuntime {
    /// Upstream name.
    pub name: String,
    /// Its configuration.
    pub config: UpstreamConfig,
    /// The balancer (endpoints, health, statistics) from the library. Kept across reloads
    /// while the upstream's name stays.
    pub balancer: Upstream,
    checks: Option<Arc<ActiveHealthChecks>>,
    /// How the checks connect (TLS per backend); kept across reloads with the checks.
    check_targets: CheckTargets,
    /// TLS to the backends, if enabled.
    tls: Option<UpstreamTls>,
    /// Backend clients by endpoint id.
    backends: Vec<Option<Arc<BackendClient>>>,
    /// The endpoint list the balancer was last given (config plus DNS answers).
    endpoint_configs: Vec<EndpointConfig>,
    /// The DNS name each resolved endpoint address came from.
    hostnames: HashMap<SocketAddr, Name>,
    pub(crate) retries: Counter,
    /// Retry budget and per-backend circuit breakers.
    pub policy: crate::policy::UpstreamPolicy,
}

impl std::fmt::Debug for UpstreamRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamRuntime")
            .field("name", &self.name)
            .field("balancer", &self.balancer)
            .finish()
    }
}

impl UpstreamRuntime {
    /// The client for the endpoint with this id.
    pub fn backend(&self, endpoint_id: usize) -> Option<&Arc<BackendClient>> {
        self.backends.get(endpoint_id).and_then(Option::as_ref)
    }

    /// All backend clients.
    pub fn backends(&self) -> impl Iterator<Item = &Arc<BackendClient>> {
        self.backends.iter().flatten()
    }

    /// Completed rounds of the active health checks (`changed()` resolves after each);
    /// `None` without active checks.
    pub fn check_rounds(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        self.checks.as_ref().map(|c| c.rounds())
    }

    /// The TLS for backend `addr` of this upstream: as the newest state build set it up, else
    /// (an address this state never knew) from this state's settings; `None` for a plain
    /// upstream.
    pub fn backend_tls(&self, addr: SocketAddr) -> Option<BackendTls> {
        let tls = self.tls.as_ref()?;
        Some(self.check_targets.get(addr).unwrap_or_else(|| {
            let host = self.hostnames.get(&addr).map(|n| n.host.as_str());
            tls.for_backend(host, addr)
        }))
    }

    /// The DNS name (`host:port` as configured) an endpoint address was resolved from;
    /// `None` for a backend configured as an IP address.
    pub fn hostname(&self, addr: SocketAddr) -> Option<&Name> {
        self.hostnames.get(&addr)
    }
}

/// Everything the data path needs, built from one [`Config`].
#[derive(Debug)]
pub struct GatewayState {
    config: Arc<Config>,
    listeners: HashMap<String, ListenerRuntime>,
    upstreams: BTreeMap<String, Arc<UpstreamRuntime>>,
    limiters: crate::policy::Limiters,
    resolved: Arc<Resolved>,
}

/// The endpoints of an upstream: its IP backends as they are, every address of each DNS
/// backend (sorted) with that backend's weight, in config order. An address listed twice
/// (say `127.0.0.1:9001` and `localhost:9001`) is kept once, as the first entry made it
/// (weight, and host name if any).
fn endpoint_configs(
    name: &str,
    cfg: &UpstreamConfig,
    resolved: &Resolved,
) -> Result<(Vec<EndpointConfig>, HashMap<SocketAddr, Name>), StateError> {
    let mut out = Vec::with_capacity(cfg.backends.len());
    let mut hostnames = HashMap::new();
    let mut seen = HashSet::new();
    // Whether the address is new (later duplicates are dropped).
    let mut push = |addr: SocketAddr, weight: u32| {
        if !seen.insert(addr) {
            return false;
        }
        let e = EndpointConfig::new(addr).weight(weight);
        out.push(match cfg.max_connections_per_backend {
            Some(n) => e.max_connections(n),
            None => e,
        });
        true
    };
    for (j, b) in cfg.backends.iter().enumerate() {
        match &b.addr {
            BackendAddr::Ip(addr) => {
                push(*addr, b.weight);
            }
            BackendAddr::Name { .. } => {
                let n = Name::of(&b.addr).ok_or_else(|| StateError::Unresolved {
                    key: format!("upstreams.{name}.backends[{j}].addr"),
                    name: b.addr.to_string(),
                })?;
                let addrs = resolved.get(&n).ok_or_else(|| StateError::Unresolved {
                    key: format!("upstreams.{name}.backends[{j}].addr"),
                    name: b.addr.to_string(),
                })?;
                for a in addrs {
                    if push(*a, b.weight) {
                        hostnames.insert(*a, n.clone());
                    }
                }
            }
        }
    }
    Ok((out, hostnames))
}

/// The clock the gateway runs on unless a test injects one. The balancer, its breakers and the
/// retry budget read it several times per request; the TSC-backed clock is as precise as
/// `Instant` and cheaper to read on VMs.
pub(crate) fn default_clock() -> Arc<dyn Clock> {
    Arc::new(QuantaClock::new())
}

fn build_upstream(
    name: &str,
    cfg: &UpstreamConfig,
    endpoints: &[EndpointConfig],
    clock: &Arc<dyn Clock>,
) -> Upstream {
    Upstream::builder(name)
        .clock(clock.clone())
        .algorithm(cfg.algorithm.algorithm())
        .health(cfg.health.clone())
        .endpoints(endpoints.iter().cloned())
        .build()
}

/// Brings the live balancer of a kept upstream to `new`: endpoints with unchanged addresses
/// keep their counters, latency estimate, health and ejections (the library's
/// `Upstream::update`). The endpoint lists compared are after DNS resolution, so a changed
/// DNS answer takes the same path as an edited backend list.
fn update_upstream(
    up: &Upstream,
    old: &UpstreamRuntime,
    new: &UpstreamConfig,
    endpoints: &[EndpointConfig],
) {
    if old.config.health != new.health {
        up.set_health_config(new.health.clone());
    }
    if old.config.algorithm != new.algorithm {
        up.set_algorithm(new.algorithm.algorithm());
    }
    if old.endpoint_configs != endpoints {
        up.update(endpoints.to_vec());
    }
}

fn spawn_checks(
    up: &Upstream,
    cfg: &UpstreamConfig,
    targets: &CheckTargets,
) -> Option<Arc<ActiveHealthChecks>> {
    let active = cfg.health.active.clone()?;
    // Without a runtime (a state built in a plain unit test) there is nothing to run on;
    // every real caller is async.
    tokio::runtime::Handle::try_current().ok()?;
    Some(Arc::new(ActiveHealthChecks::spawn_with(
        targets.clone(),
        up.clone(),
        active,
    )))
}

/// The TLS of each endpoint of a TLS upstream: verified against `server_name`, else the DNS
/// name the address came from.
fn endpoint_tls(
    tls: Option<&UpstreamTls>,
    eps: &[EndpointConfig],
    hostnames: &HashMap<SocketAddr, Name>,
) -> HashMap<SocketAddr, BackendTls> {
    let Some(tls) = tls else {
        return HashMap::new();
    };
    eps.iter()
        .map(|e| {
            let host = hostnames.get(&e.addr).map(|n| n.host.as_str());
            (e.addr, tls.for_backend(host, e.addr))
        })
        .collect()
}

impl GatewayState {
    /// Builds the runtime for `config`. With `prev`, upstreams that keep their name keep
    /// their balancer, updated in place: backends with unchanged addresses keep counters,
    /// latency averages, health, ejections and sticky pins; clients of backends with unchanged
    /// connection settings keep their warm connections; unchanged active checks keep running.
    ///
    /// # Errors
    /// [`StateError::Invalid`] if the config does not validate, [`StateError::Tls`] if a
    /// listener's certificate cannot be loaded, [`StateError::UpstreamTls`] if an
    /// upstream's TLS files cannot be.
    pub fn build(
        config: &Config,
        prev: Option<&GatewayState>,
        metrics: &GatewayMetrics,
    ) -> Result<Self, StateError> {
        Self::build_with_clock(config, prev, metrics, &default_clock())
    }

    /// [`GatewayState::build`] with the clock that new upstreams run on: their ejection
    /// timers, slow start and latency decay, and the circuit breakers and retry budget built
    /// on them. Kept upstreams keep the clock they were built with.
    ///
    /// # Errors
    /// As [`GatewayState::build`].
    pub fn build_with_clock(
        config: &Config,
        prev: Option<&GatewayState>,
        metrics: &GatewayMetrics,
        clock: &Arc<dyn Clock>,
    ) -> Result<Self, StateError> {
        let resolved = prev.map(|p| p.resolved.clone()).unwrap_or_default();
        Self::build_resolved(config, prev, metrics, clock, resolved)
    }

    /// [`GatewayState::build_with_clock`] with the DNS answers for the config's backend
    /// names (see [`crate::dns`]); every name must have one.
    ///
    /// # Errors
    /// As [`GatewayState::build`], and [`StateError::Unresolved`] for a name without an
    /// answer in `resolved`.
    pub fn build_resolved(
        config: &Config,
        prev: Option<&GatewayState>,
        metrics: &GatewayMetrics,
        clock: &Arc<dyn Clock>,
        resolved: Arc<Resolved>,
    ) -> Result<Self, StateError> {
        config.validate().map_err(StateError::Invalid)?;

        // Everything fallible first: a failed build must leave the live balancers untouched.
        let mut tls_acceptors = HashMap::new();
        for l in &config.listeners {
            if let Some(t) = &l.tls {
                let acc = tls::acceptor(t, l.http2).map_err(|source| StateError::Tls {
                    listener: l.name.clone(),
                    source: Box::new(source),
                })?;
                tls_acceptors.insert(l.name.clone(), acc);
            }
        }

        let mut upstream_tls = HashMap::new();
        for (name, ucfg) in &config.upstreams {
            if let Some(t) = ucfg.tls.as_ref().filter(|t| t.enabled) {
                let tls = UpstreamTls::load(t, ucfg.protocol).map_err(|source| {
                    StateError::UpstreamTls {
                        upstream: name.clone(),
                        source: Box::new(source),
                    }
                })?;
                upstream_tls.insert(name, tls);
            }
        }

        let mut resolved_eps = BTreeMap::new();
        for (name, ucfg) in &config.upstreams {
            resolved_eps.insert(name, endpoint_configs(name, ucfg, &resolved)?);
        }

        let mut upstreams = BTreeMap::new();
        for (name, ucfg) in &config.upstreams {
            let old = prev.and_then(|p| p.upstreams.get(name));
            let (eps, hostnames) = resolved_eps.remove(name).unwrap_or_default();
            let mut tls_by_addr = endpoint_tls(upstream_tls.get(name), &eps, &hostnames);
            // Before the balancer learns of new endpoints, so no check finds one without
            // its TLS settings.
            let check_targets = old.map(|o| o.check_targets.clone()).unwrap_or_default();
            check_targets.set(tls_by_addr.clone());
            let (balancer, checks) = match old {
                Some(o) => {
                    update_upstream(&o.balancer, o, ucfg, &eps);
                    let checks = if o.config.health.active == ucfg.health.active {
                        o.checks.clone()
                    } else {
                        spawn_checks(&o.balancer, ucfg, &check_targets)
                    };
                    (o.balancer.clone(), checks)
                }
                None => {
                    let up = build_upstream(name, ucfg, &eps, clock);
                    let checks = spawn_checks(&up, ucfg, &check_targets);
                    (up, checks)
                }
            };
            let mut backends: Vec<Option<Arc<BackendClient>>> = Vec::new();
            for ep in balancer.endpoints() {
                let tls = tls_by_addr.remove(&ep.addr());
                let settings = BackendSettings::new(ep.addr(), ucfg, tls);
                let reused = old
                    .and_then(|o| o.backends().find(|b| *b.settings() == settings))
                    .cloned();
                let client = reused.unwrap_or_else(|| {
                    Arc::new(BackendClient::new(
                        settings,
                        metrics.backend(name, &ep.addr().to_string()),
                    ))
                });
                if backends.len() <= ep.id() {
                    backends.resize(ep.id() + 1, None);
                }
                backends[ep.id()] = Some(client);
            }
            let policy =
                crate::policy::UpstreamPolicy::build(name, ucfg, &balancer, old.map(|o| &o.policy));
            upstreams.insert(
                name.clone(),
                Arc::new(UpstreamRuntime {
                    policy,
                    name: name.clone(),
                    config: ucfg.clone(),
                    balancer,
                    checks,
                    check_targets,
                    tls: upstream_tls.remove(name),
                    backends,
                    endpoint_configs: eps,
                    hostnames,
                    retries: metrics.retries(name),
                }),
            );
        }

        let limiters = crate::policy::Limiters::build(config, prev);
        let prev_routes = crate::policy::previous_routes(prev);
        let routes: Vec<Arc<Route>> = config
            .routes
            .iter()
            .enumerate()
            .filter_map(|(i, r)| {
                // validate() guarantees the upstream exists.
                let up = upstreams.get(&r.upstream)?.clone();
                let label = r.name.clone().unwrap_or_else(|| i.to_string());
                let m = metrics.route(&label, &r.upstream);
                let policy = crate::policy::RoutePolicy::build(
                    &label,
                    r,
                    &limiters,
                    prev_routes.get(&label).map(|p| &p.policy),
                    &metrics.policy,
                );
                Some(Arc::new(Route::new(i, r, up, m, policy)))
            })
            .collect();

        let mut listeners = HashMap::new();
        for l in &config.listeners {
            let tls = tls_acceptors.remove(&l.name);
            let forward_client_cert = l
                .tls
                .as_ref()
                .and_then(|t| t.client_auth.as_ref())
                .filter(|a| a.forward_client_cert)
                .map(|a| {
                    let by = tls.as_ref().map(|t| t.uri_sans.clone()).unwrap_or_default();
                    Arc::new(crate::client_cert::XfccFormat::new(
                        &a.forward_client_cert_details,
                        by,
                    ))
                });
            let tls = tls.map(|t| t.acceptor);
            let router = Router::new(
                routes
                    .iter()
                    .filter(|r| r.applies_to_listener(&l.name))
                    .cloned()
                    .collect(),
            );
            listeners.insert(
                l.name.clone(),
                ListenerRuntime {
                    name: l.name.clone(),
                    router,
                    request_timeout: l.request_timeout,
                    max_body_bytes: l.max_body_bytes,
                    tls,
                    forward_client_cert,
                    xfcc_from_trusted_proxies: l.xfcc_from_trusted_proxies,
                    trusted_proxies: l.trusted_proxies.iter().copied().collect(),
                },
            );
        }

        Ok(Self {
            config: Arc::new(config.clone()),
            listeners,
            upstreams,
            limiters,
            resolved,
        })
    }

    /// The DNS answers this state was built with.
    pub fn resolved(&self) -> &Arc<Resolved> {
        &self.resolved
    }

    /// The configuration this state was built from.
    pub fn config(&self) -> &Arc<Config> {
        &self.config
    }

    /// A listener's runtime by name.
    pub fn listener(&self, name: &str) -> Option<&ListenerRuntime> {
        self.listeners.get(name)
    }

    pub(crate) fn limiters(&self) -> &crate::policy::Limiters {
        &self.limiters
    }

    /// An upstream by name.
    pub fn upstream(&self, name: &str) -> Option<&Arc<UpstreamRuntime>> {
        self.upstreams.get(name)
    }

    /// The upstream `upstream` and its backend `backend`, named by endpoint id or address
    /// (as the admin API names them).
    ///
    /// # Errors
    /// No such upstream or backend; the message says which.
    pub fn backend(
        &self,
        upstream: &str,
        backend: &str,
    ) -> Result<(&Arc<UpstreamRuntime>, Arc<Endpoint>), String> {
        let up = self
            .upstream(upstream)
            .ok_or_else(|| format!("no upstream `{upstream}`"))?;
        let endpoint = up
            .balancer
            .endpoints()
            .into_iter()
            .find(|e| match backend.parse::<usize>() {
                Ok(i) => e.id() == i,
                Err(_) => backend.parse::<SocketAddr>().is_ok_and(|a| a == e.addr()),
            })
            .ok_or_else(|| format!("no backend `{backend}` in upstream `{upstream}`"))?;
        Ok((up, endpoint))
    }

    /// All upstreams by name (for the admin API: endpoints, health, statistics).
    pub fn upstreams(&self) -> &BTreeMap<String, Arc<UpstreamRuntime>> {
        &self.upstreams
    }

    /// The addresses of the listeners, by name.
    pub fn listener_addrs(&self) -> impl Iterator<Item = (&str, SocketAddr)> {
        self.config
            .listeners
            .iter()
            .map(|l| (l.name.as_str(), l.addr))
    }
}

/// What every connection and request shares: the current state and the metrics.
pub struct Shared {
    /// The current state; swap it to reload.
    pub state: ArcSwap<GatewayState>,
    /// Data-path metrics.
    pub metrics: GatewayMetrics,
    clock: Arc<dyn Clock>,
    /// Request body bytes kept for retries by all requests in flight, held under
    /// `server.retry_buffer_total_bytes`.
    pub(crate) retry_buffered: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("state", &self.state)
            .field("metrics", &self.metrics)
            .finish_non_exhaustive()
    }
}

impl Shared {
    /// Request body bytes that requests in flight keep for retries now.
    pub fn retry_buffered_bytes(&self) -> u64 {
        self.retry_buffered
            .load(std::sync::atomic::Ordering::Acquire)
    }

    /// Builds the first state, on the default monotonic clock.
    ///
    /// # Errors
    /// As [`GatewayState::build`].
    pub fn new(config: Config, metrics: GatewayMetrics) -> Result<Arc<Self>, StateError> {
        Self::with_clock(config, metrics, default_clock())
    }

    /// Builds the first state with every time-dependent upstream policy (outlier ejections,
    /// slow start, circuit breakers, retry budgets) on `clock`, here and in every reload; a
    /// [`scalewise::clock::ManualClock`] makes them testable without sleeping.
    ///
    /// # Errors
    /// As [`GatewayState::build`].
    pub fn with_clock(
        config: Config,
        metrics: GatewayMetrics,
        clock: Arc<dyn Clock>,
    ) -> Result<Arc<Self>, StateError> {
        Self::with_resolved(config, metrics, clock, Resolved::default())
    }

    /// [`Shared::with_clock`] with the DNS answers for the config's backend names.
    ///
    /// # Errors
    /// As [`GatewayState::build_resolved`].
    pub fn with_resolved(
        config: Config,
        metrics: GatewayMetrics,
        clock: Arc<dyn Clock>,
        resolved: Resolved,
    ) -> Result<Arc<Self>, StateError> {
        let state =
            GatewayState::build_resolved(&config, None, &metrics, &clock, Arc::new(resolved))?;
        Ok(Arc::new(Self {
            state: ArcSwap::from_pointee(state),
            metrics,
            clock,
            retry_buffered: std::sync::atomic::AtomicU64::new(0),
        }))
    }

    /// The clock the upstream policies run on.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// Builds a state for `config` from the current one and swaps it in. Requests in flight
    /// finish on the state they started with. Listener socket settings (address, backlog,
    /// connection limit, buffer sizes) take effect only for listeners served anew; routes,
    /// timeouts, body limits, TLS certificates and upstreams take effect at once.
    ///
    /// # Errors
    /// As [`GatewayState::build`]; the current state stays in place.
    pub fn apply(&self, config: Config) -> Result<(), StateError> {
        let current = self.state.load_full();
        let next =
            GatewayState::build_with_clock(&config, Some(&current), &self.metrics, &self.clock)?;
        self.swap(&current, next);
        Ok(())
    }

    /// Swaps `next` in for `current` and deletes the per-backend metric label sets of the
    /// backends `next` no longer has (removed from the config, or gone from a DNS answer), so
    /// a DNS name whose addresses churn does not grow the registry for ever. Requests in
    /// flight to a removed backend keep their handles; they just are not exported any more.
    /// Applies are serialised by the caller (the server's reload lock): an apply racing
    /// another that brings the address back could delete the label sets the other uses.
    fn swap(&self, current: &GatewayState, next: GatewayState) {
        let next = Arc::new(next);
        self.state.store(next.clone());
        for (name, up) in current.upstreams() {
            let kept: HashSet<SocketAddr> = next
                .upstream(name)
                .map(|u| u.backends().map(|b| b.addr()).collect())
                .unwrap_or_default();
            for b in up.backends() {
                if !kept.contains(&b.addr()) {
                    self.metrics.forget_backend(name, &b.addr().to_string());
                }
            }
        }
    }

    /// [`Shared::apply`] with new DNS answers: what a reload of a config with new names
    /// does, and what a changed DNS answer does with the running config.
    ///
    /// # Errors
    /// As [`GatewayState::build_resolved`]; the current state stays in place.
    pub fn apply_resolved(&self, config: Config, resolved: Resolved) -> Result<(), StateError> {
        let current = self.state.load_full();
        let next = GatewayState::build_resolved(
            &config,
            Some(&current),
            &self.metrics,
            &self.clock,
            Arc::new(resolved),
        )?;
        self.swap(&current, next);
        Ok(())
    }

    /// The current state.
    pub fn load(&self) -> Arc<GatewayState> {
        self.state.load_full()
    }
}
