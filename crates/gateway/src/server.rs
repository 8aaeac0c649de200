//! Running the gateway: start listeners, health checks and the admin API from a config; reload
//! on SIGHUP or `PUT /api/config`; drain and stop on SIGTERM/SIGINT.
//!
//! A reload builds a complete new `GatewayState` next to the running one (reusing balancer
//! state of unchanged backends) and swaps it in atomically, so requests in flight finish on
//! the state they started with and new ones see the new state; nothing is dropped. Active
//! health checks belong to the state's upstreams and follow it. Settings bound to sockets or
//! the log subscriber at start (a listener's socket settings, `admin`, `log.format`,
//! `log.level`) cannot change on reload: such a reload is refused and the running config
//! stays.
use crate::config::{Config, LogFormat};
use crate::config_file::{self, Format, LoadError, LoadErrors};
use crate::dns::{self, Resolve, Resolved};
use crate::metrics::GatewayMetrics;
use crate::state::Shared;
use crate::{admin, listener, AdminAddr, Args};
use arc_swap::ArcSwap;
use prometheus_client::registry::Registry;
use scalewise::metrics::{Samples, SnapshotCollector};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Settings given on the command line that win over the file's, on start and on every reload.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--admin`.
    pub admin: Option<AdminAddr>,
    /// `--admin-token`.
    pub admin_token: Option<String>,
    /// `--log-format`.
    pub log_format: Option<LogFormat>,
    /// `--access-log`.
    pub access_log: bool,
    /// `--rate-limit`: see [`crate::policy::apply_rate_limit_flag`].
    pub rate_limit: Option<scalewise::ratelimit::Rate>,
    /// `--shutdown-timeout`.
    pub shutdown_timeout: Option<Duration>,
}

impl Overrides {
    /// The overriding flags of `args`.
    pub fn from_args(args: &Args) -> Self {
        Self {
            admin: args.admin,
            admin_token: args.admin_token.clone(),
            log_format: args.log_format,
            access_log: args.access_log,
            rate_limit: args.rate_limit,
            shutdown_timeout: args.shutdown_timeout,
        }
    }

    /// Applies the flags to a config (on start and on every reload).
    pub fn apply(&self, config: &mut Config) {
        match self.admin {
            Some(AdminAddr::At(addr)) => {
                config.admin.addr = addr;
                config.admin.enabled = true;
            }
            Some(AdminAddr::Off) => config.admin.enabled = false,
            None => {}
        }
        if let Some(d) = self.shutdown_timeout {
            config.server.shutdown_timeout = d;
        }
        if let Some(token) = &self.admin_token {
            config.admin.token = Some(token.clone());
        }
        if let Some(format) = self.log_format {
            config.log.format = format;
        }
        config.log.access_log |= self.access_log;
        if let Some(rate) = self.rate_limit {
            crate::policy::apply_rate_limit_flag(config, rate);
        }
    }
}

/// How the gateway was started, beyond its config.
#[derive(Clone, Default)]
pub struct StartOptions {
    /// The file SIGHUP re-reads; `None` for a one-line start (SIGHUP then reports an error).
    pub config_path: Option<PathBuf>,
    /// Command-line overrides.
    pub overrides: Overrides,
    /// The clock of the upstream policies (see [`Shared::with_clock`]); `None` for the
    /// default monotonic clock. Tests pass a [`scalewise::clock::ManualClock`].
    pub clock: Option<Arc<dyn scalewise::clock::Clock>>,
    /// The resolver of DNS backends; `None` for the system's ([`dns::SystemResolver`]).
    /// Tests pass one whose answers they control.
    pub resolver: Option<Arc<dyn Resolve>>,
}

impl std::fmt::Debug for StartOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StartOptions")
            .field("config_path", &self.config_path)
            .field("overrides", &self.overrides)
            .field("clock", &self.clock.as_ref().map(|_| "custom"))
            .field("resolver", &self.resolver.as_ref().map(|_| "custom"))
            .finish()
    }
}

/// Why a reload did not happen. The running config is unchanged in every case.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The new config does not parse or validate.
    #[error("{0}")]
    Invalid(LoadErrors),
    /// The new config changes a setting that is fixed at start.
    #[error("{0}")]
    Fixed(String),
    /// Started without `--config`: there is no file to re-read.
    #[error("no config file to reload: the gateway was started without --config")]
    NoFile,
    /// The new state could not be built (e.g. a TLS file is unreadable).
    #[error("cannot apply the new config: {0}")]
    Build(String),
}

/// The shared handle the admin API and signal handlers act through.
pub struct Controller {
    shared: Arc<Shared>,
    config: ArcSwap<Config>,
    reload_lock: tokio::sync::Mutex<()>,
    options: StartOptions,
    started: Instant,
    listeners: std::sync::OnceLock<Vec<(String, SocketAddr)>>,
    admin_addr: std::sync::OnceLock<SocketAddr>,
    reloads: AtomicU64,
    failed_reloads: AtomicU64,
    resolver: Arc<dyn Resolve>,
    /// Wakes the DNS refresh task after a reload, which may have changed names or intervals.
    dns_wake: Arc<tokio::sync::Notify>,
    dns_updates: AtomicU64,
}

/// What one DNS refresh round did ([`Controller::refresh_dns`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DnsRefresh {
    /// Names looked up.
    pub looked_up: usize,
    /// Lookups that failed or came back empty (their last good answer stays).
    pub failed: usize,
    /// Whether an answer changed and the endpoints were updated.
    pub changed: bool,
}

impl std::fmt::Debug for Controller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Controller")
            .field("listeners", &self.listeners.get())
            .finish_non_exhaustive()
    }
}

impl Controller {
    /// The running config.
    pub fn config(&self) -> Arc<Config> {
        self.config.load_full()
    }

    /// The state the data path runs on.
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    pub(crate) fn admin_token(&self) -> Option<String> {
        self.config.load().admin.token.clone()
    }

    /// `GET /api/status`.
    pub fn status(&self) -> serde_json::Value {
        let state = self.shared.load();
        let upstreams: Vec<_> = state
            .upstreams()
            .iter()
            .map(|(name, up)| {
                let eps = up.balancer.endpoints();
                let snaps: Vec<_> = eps.iter().map(|e| e.snapshot()).collect();
                serde_json::json!({
                    "name": name,
                    "algorithm": self.config.load().upstreams.get(name.as_str()).map(|u| u.algorithm.as_str()),
                    "backends": snaps.len(),
                    "healthy": snaps.iter().filter(|s| s.health == scalewise::balance::HealthStatus::Healthy).count(),
                    "draining": snaps.iter().filter(|s| s.draining).count(),
                })
            })
            .collect();
        let listeners: Vec<_> = self
            .listeners
            .get()
            .map(|l| {
                l.iter()
                    .map(|(name, addr)| serde_json::json!({ "name": name, "addr": addr.to_string() }))
                    .collect()
            })
            .unwrap_or_default();
        serde_json::json!({
            "version": env!("CARGO_PKG_VERSION"),
            "uptime_seconds": self.started.elapsed().as_secs_f64(),
            "listeners": listeners,
            "admin": self.admin_addr.get().map(ToString::to_string),
            "config_file": self.options.config_path.as_ref().map(|p| p.display().to_string()),
            "reloads": self.reloads.load(Ordering::Relaxed),
            "failed_reloads": self.failed_reloads.load(Ordering::Relaxed),
            "dns_updates": self.dns_updates.load(Ordering::Relaxed),
            "upstreams": upstreams,
        })
    }

    /// `GET /api/backends`: every backend's library snapshot plus its admin id.
    pub fn backends(&self) -> serde_json::Value {
        let state = self.shared.load();
        let mut out = serde_json::Map::new();
        for (name, up) in state.upstreams() {
            let list: Vec<_> = up
                .balancer
                .endpoints()
                .iter()
                .map(|e| {
                    let mut v = serde_json::to_value(e.snapshot()).unwrap_or_default();
                    if let Some(obj) = v.as_object_mut() {
                        obj.insert("id".into(), format!("{name}/{}", e.id()).into());
                        obj.insert("upstream".into(), name.clone().into());
                        obj.insert(
                            "hostname".into(),
                            up.hostname(e.addr()).map(|n| n.host.clone()).into(),
                        );
                        obj.insert("breaker".into(), up.policy.breaker_json(e));
                    }
                    v
                })
                .collect();
            out.insert(name.clone(), list.into());
        }
        serde_json::json!({ "upstreams": out })
    }

    /// Drains (`true`) or re-enables a backend named `upstream/id` or `upstream/addr`.
    ///
    /// # Errors
    /// No such upstream or backend (the message says which).
    pub fn set_draining(&self, id: &str, draining: bool) -> Result<serde_json::Value, String> {
        let (upstream, backend) = id
            .split_once('/')
            .ok_or_else(|| format!("backend id `{id}` is not `upstream/id` or `upstream/addr`"))?;
        let state = self.shared.load();
        let (_, endpoint) = state.backend(upstream, backend)?;
        endpoint.set_draining(draining);
        tracing::info!(
            backend = id,
            draining,
            "backend drain state changed by admin"
        );
        let mut v = serde_json::to_value(endpoint.snapshot()).unwrap_or_default();
        if let Some(obj) = v.as_object_mut() {
            obj.insert("id".into(), format!("{upstream}/{}", endpoint.id()).into());
        }
        Ok(v)
    }

    /// `GET /api/policies`: rate limits, route policies, retry budgets, breakers.
    pub fn policies(&self) -> serde_json::Value {
        crate::policy::snapshot(&self.shared.load())
    }

    /// `GET /api/config`, with tokens and keys replaced by `<redacted>`.
    pub fn config_redacted(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(&**self.config.load()).unwrap_or_default();
        config_file::redact(&mut v);
        v
    }

    /// `GET /metrics`.
    pub fn metrics_text(&self) -> String {
        self.shared.metrics.encode()
    }

    /// Re-reads the config file (what SIGHUP does).
    ///
    /// # Errors
    /// See [`ReloadError`]; the running config stays.
    pub async fn reload_from_file(&self) -> Result<(), ReloadError> {
        let loaded = match &self.options.config_path {
            Some(path) => config_file::load_config(path).map_err(ReloadError::Invalid),
            None => Err(ReloadError::NoFile),
        };
        self.finish_reload(loaded).await
    }

    /// Replaces the config with `text` (what `PUT /api/config` does). Environment overrides
    /// and command-line flags apply to it as they do to the file.
    ///
    /// # Errors
    /// See [`ReloadError`]; the running config stays.
    pub async fn reload_from_text(&self, text: &str, format: Format) -> Result<(), ReloadError> {
        let parsed =
            config_file::parse_config(text, format, "<request body>", config_file::env_overrides())
                .map_err(ReloadError::Invalid);
        self.finish_reload(parsed).await
    }

    /// Applies an already-parsed config: validation, fixed-key check, state build, swap.
    ///
    /// # Errors
    /// See [`ReloadError`]; the running config stays.
    pub async fn apply(&self, mut config: Config) -> Result<(), ReloadError> {
        self.options.overrides.apply(&mut config);
        let result = self.apply_inner(config).await;
        match &result {
            Ok(()) => {
                self.reloads.fetch_add(1, Ordering::Relaxed);
                tracing::info!("configuration reloaded");
            }
            Err(e) => {
                self.failed_reloads.fetch_add(1, Ordering::Relaxed);
                tracing::error!(error = %e, "reload refused; the running configuration stays");
            }
        }
        result
    }

    async fn finish_reload(&self, loaded: Result<Config, ReloadError>) -> Result<(), ReloadError> {
        match loaded {
            Ok(config) => self.apply(config).await,
            Err(e) => {
                self.failed_reloads.fetch_add(1, Ordering::Relaxed);
                tracing::error!(error = %e, "reload refused; the running configuration stays");
                Err(e)
            }
        }
    }

    async fn apply_inner(&self, config: Config) -> Result<(), ReloadError> {
        if let Err(errs) = config.validate() {
            let origin = "<new config>";
            return Err(ReloadError::Invalid(LoadErrors(
                errs.into_iter()
                    .map(|e| LoadError {
                        key: Some(e.key_path),
                        message: format!("got {}, expected {}", e.value, e.expected),
                        ..LoadError::new(origin, "")
                    })
                    .collect(),
            )));
        }
        // Names the running config does not have are looked up before taking the lock, so a
        // slow DNS server holds up neither other reloads nor DNS refreshes; known names keep
        // their current answer (the refresh task keeps those fresh).
        let known = self.shared.load().resolved().clone();
        let fresh = dns::resolve_new(&config, &known, &*self.resolver)
            .await
            .map_err(|errs| ReloadError::Invalid(unresolved_errors("<new config>", errs)))?;
        // One reload at a time: two concurrent builds from the same old state would each
        // carry over balancer state and the second swap would discard the first's.
        let _guard = self.reload_lock.lock().await;
        let old = self.config.load_full();
        fixed_keys_unchanged(&old, &config).map_err(ReloadError::Fixed)?;
        // Answers refreshed while this reload waited for the lock win over the ones it
        // started from.
        let mut table = (**self.shared.load().resolved()).clone();
        for (name, addrs) in fresh.iter() {
            if table.get(name).is_none() {
                table.insert(name.clone(), addrs.to_vec());
            }
        }
        table.retain_used(&config);
        self.shared
            .apply_resolved(config.clone(), table)
            .map_err(|e| ReloadError::Build(e.to_string()))?;
        self.config.store(Arc::new(config));
        self.dns_wake.notify_one();
        Ok(())
    }

    /// Looks up the DNS backend names of `upstreams` (of every upstream for `None`) again
    /// and, if an answer changed, rebuilds the state from the running config with the new
    /// answers: endpoints whose address stays keep all their state and pooled connections,
    /// new addresses become endpoints, vanished ones are removed (requests in flight to them
    /// finish). A failed or empty lookup keeps the name's last good answer, logs a warning and
    /// counts in `gateway_dns_resolve_failures_total{upstream}`.
    ///
    /// The gateway runs this every `resolve_interval` per upstream; tests and operators can
    /// call it to resolve at once.
    pub async fn refresh_dns(&self, upstreams: Option<&BTreeSet<String>>) -> DnsRefresh {
        let config = self.config();
        let (answers, failures) = dns::refresh(&config, upstreams, &*self.resolver).await;
        let mut report = DnsRefresh {
            looked_up: answers.len() + failures.len(),
            failed: failures.len(),
            changed: false,
        };
        for f in &failures {
            tracing::warn!(
                name = %f.name,
                upstreams = ?f.upstreams,
                error = %f.error,
                "DNS lookup failed; keeping the last good addresses"
            );
            for u in &f.upstreams {
                self.shared.metrics.dns_failure(u);
            }
        }
        if answers.is_empty() {
            return report;
        }
        let _guard = self.reload_lock.lock().await;
        // A reload may have happened during the lookups: apply to what runs now.
        let config = self.config();
        let state = self.shared.load();
        let current = state.resolved();
        let mut table = (**current).clone();
        for (name, addrs) in answers {
            table.insert(name, addrs);
        }
        table.retain_used(&config);
        if table == **current {
            return report;
        }
        for (name, addrs) in table.iter() {
            if current.get(name) != Some(addrs) {
                tracing::info!(
                    %name,
                    addrs = ?addrs,
                    before = ?current.get(name).unwrap_or_default(),
                    "DNS answer changed; updating the endpoints"
                );
            }
        }
        match self.shared.apply_resolved((*config).clone(), table) {
            Ok(()) => {
                self.dns_updates.fetch_add(1, Ordering::Relaxed);
                report.changed = true;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot apply the new DNS answers; keeping the old ones");
            }
        }
        report
    }
}

/// Unresolvable names as load errors naming key and value.
fn unresolved_errors(origin: &str, errs: Vec<dns::Unresolved>) -> LoadErrors {
    LoadErrors(
        errs.into_iter()
            .map(|e| LoadError {
                key: Some(e.key),
                message: format!("\"{}\" does not resolve: {}", e.name, e.error),
                ..LoadError::new(origin, "")
            })
            .collect(),
    )
}

/// Re-resolves DNS backend names: each upstream that has any, `resolve_interval` after its
/// previous lookup finished. Sleeps on Tokio's timer, so a paused test clock drives it.
///
/// Each upstream's lookups run on their own (concurrently, in this task): a resolver that
/// is slow for one upstream's names (up to [`dns::LOOKUP_TIMEOUT`]) delays only that
/// upstream's next round, never another's. A name several upstreams use is looked up for
/// each of them.
async fn dns_refresh_loop(
    ctl: Weak<Controller>,
    wake: Arc<tokio::sync::Notify>,
    stop: CancellationToken,
) {
    use futures_util::stream::{FuturesUnordered, StreamExt as _};
    use tokio::time::Instant;
    // Upstream → (next lookup, the interval that was scheduled with).
    let mut due: HashMap<String, (Instant, Duration)> = HashMap::new();
    // Rounds in progress, each yielding its upstream's name when done.
    let mut running = FuturesUnordered::new();
    let mut busy: HashSet<String> = HashSet::new();
    loop {
        let Some(ctl) = ctl.upgrade() else { return };
        let config = ctl.config();
        let now = Instant::now();
        let mut next: Option<Instant> = None;
        let mut live = HashSet::new();
        for (name, u) in &config.upstreams {
            if !u.backends.iter().any(|b| b.addr.host().is_some()) {
                continue;
            }
            live.insert(name.as_str());
            let interval = u.resolve_interval;
            let entry = due
                .entry(name.clone())
                .or_insert((now + interval, interval));
            if entry.1 != interval {
                *entry = (now + interval, interval);
            }
            if busy.contains(name) {
                // Rescheduled when its round finishes.
                continue;
            }
            if entry.0 <= now {
                busy.insert(name.clone());
                let (ctl, name) = (ctl.clone(), name.clone());
                running.push(async move {
                    let only = BTreeSet::from([name.clone()]);
                    ctl.refresh_dns(Some(&only)).await;
                    name
                });
            } else {
                next = Some(next.map_or(entry.0, |n: Instant| n.min(entry.0)));
            }
        }
        due.retain(|n, _| live.contains(n.as_str()));
        // Only the rounds in progress keep the controller alive (each for one bounded lookup).
        drop(config);
        drop(ctl);
        let sleep = async {
            match next {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = stop.cancelled() => return,
            () = wake.notified() => {}
            () = sleep => {}
            Some(done) = running.next(), if !running.is_empty() => {
                busy.remove(&done);
                if let Some(e) = due.get_mut(&done) {
                    e.0 = Instant::now() + e.1;
                }
            }
        }
    }
}

/// Settings bound to sockets or global subscribers at start.
fn fixed_keys_unchanged(old: &Config, new: &Config) -> Result<(), String> {
    let restart = "is fixed at start; restart the gateway to change it";
    if old.listeners.len() != new.listeners.len() {
        return Err(format!(
            "listeners: the number of listeners changed ({} → {}), which {restart}",
            old.listeners.len(),
            new.listeners.len()
        ));
    }
    for (i, (a, b)) in old.listeners.iter().zip(&new.listeners).enumerate() {
        if a.addr != b.addr {
            return Err(format!(
                "listeners[{i}].addr: changed from {} to {}, which {restart}",
                a.addr, b.addr
            ));
        }
        // TLS certificates, the request timeout, the body limit and the trusted proxies (and
        // what their X-Forwarded-Client-Cert becomes) are read per request or connection from
        // the state; everything else was applied to the socket or the
        // connection builder.
        let socket_part = |l: &crate::config::ListenerConfig| crate::config::ListenerConfig {
            tls: None,
            request_timeout: Duration::ZERO,
            max_body_bytes: None,
            trusted_proxies: Vec::new(),
            xfcc_from_trusted_proxies: crate::config::TrustedXfcc::Replace,
            ..l.clone()
        };
        if socket_part(a) != socket_part(b) {
            return Err(format!(
                "listeners[{i}] ({}): only tls, request_timeout, max_body_bytes, trusted_proxies and \
                 xfcc_from_trusted_proxies can change on reload; the other listener settings are bound to its socket and {restart}",
                a.name
            ));
        }
    }
    if old.admin != new.admin {
        return Err(format!("admin: the admin listener and token {restart}"));
    }
    if old.log.format != new.log.format || old.log.level != new.log.level {
        return Err(format!("log.format and log.level {restart}"));
    }
    Ok(())
}

/// A running gateway.
///
/// ```no_run
/// use scalewise_gateway::config::{AlgorithmName, Config};
/// use scalewise_gateway::server::{Gateway, StartOptions};
/// use std::time::Duration;
///
/// # async fn run() -> anyhow::Result<()> {
/// let config = Config::from_backends(
///     "127.0.0.1:8080".parse()?,
///     ["127.0.0.1:9001".parse()?, "127.0.0.1:9002".parse()?],
///     AlgorithmName::LeastConn,
/// );
/// let gateway = Gateway::start(config.clone(), StartOptions::default()).await?;
/// println!("admin API on {:?}", gateway.admin_addr());
/// // What `PUT /api/config` does:
/// gateway.controller().apply(config).await?;
/// // What SIGTERM does:
/// gateway.shutdown(Duration::from_secs(30)).await;
/// # Ok(()) }
/// ```
pub struct Gateway {
    controller: Arc<Controller>,
    shutdown: CancellationToken,
    listening: Vec<listener::Listening>,
    admin_task: Option<JoinHandle<()>>,
    dns_task: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("controller", &self.controller)
            .finish_non_exhaustive()
    }
}

impl Gateway {
    /// Starts listeners, health checks and the admin API for a validated `config`.
    ///
    /// # Errors
    /// A listener or the admin address cannot be bound, the admin API would be reachable
    /// from other hosts without a token, or the state cannot be built.
    pub async fn start(mut config: Config, options: StartOptions) -> anyhow::Result<Self> {
        options.overrides.apply(&mut config);
        config.validate().map_err(|errs| {
            anyhow::anyhow!(LoadErrors(
                errs.into_iter()
                    .map(|e| LoadError {
                        key: Some(e.key_path),
                        message: format!("got {}, expected {}", e.value, e.expected),
                        ..LoadError::new("config", "")
                    })
                    .collect()
            ))
        })?;
        let admin_enabled = config.admin.enabled;
        if admin_enabled && !config.admin.addr.ip().is_loopback() && config.admin.token.is_none() {
            anyhow::bail!(
                "admin.addr {} is reachable from other hosts: set admin.token (or --admin-token), \
                 bind a loopback address, or disable it (admin.enabled = false, --admin off)",
                config.admin.addr
            );
        }
        // The backend collector needs the Shared that owns the registry it is registered in:
        // hand it a weak slot filled right after, so the two don't keep each other alive.
        let slot: Arc<std::sync::OnceLock<Weak<Shared>>> = Arc::default();
        let mut registry = Registry::default();
        let collector_slot = slot.clone();
        registry.register_collector(Box::new(SnapshotCollector::new(move |out| {
            if let Some(shared) = collector_slot.get().and_then(Weak::upgrade) {
                upstream_samples(&shared, out);
                crate::policy::samples(&shared.load(), out);
            }
        })));
        let metrics = GatewayMetrics::with_registry(registry);
        let resolver = options.resolver.clone().unwrap_or_else(dns::system);
        let origin = options
            .config_path
            .as_ref()
            .map_or_else(|| "config".to_owned(), |p| p.display().to_string());
        let resolved = dns::resolve_new(&config, &Resolved::default(), &*resolver)
            .await
            .map_err(|errs| anyhow::anyhow!(unresolved_errors(&origin, errs)))?;
        let clock = options
            .clock
            .clone()
            .unwrap_or_else(crate::state::default_clock);
        let shared = Shared::with_resolved(config.clone(), metrics, clock, resolved)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let _ = slot.set(Arc::downgrade(&shared));
        let shutdown = CancellationToken::new();

        let mut listening = Vec::new();
        let mut bound = Vec::new();
        for l in &config.listeners {
            let handle = listener::serve(l, shared.clone(), shutdown.child_token())
                .map_err(|e| anyhow::anyhow!("listener `{}` ({}): {e}", l.name, l.addr))?;
            bound.push((l.name.clone(), handle.local_addr));
            listening.push(handle);
        }

        let controller = Arc::new(Controller {
            shared,
            config: ArcSwap::from_pointee(config.clone()),
            reload_lock: tokio::sync::Mutex::new(()),
            options,
            started: Instant::now(),
            listeners: std::sync::OnceLock::new(),
            admin_addr: std::sync::OnceLock::new(),
            reloads: AtomicU64::new(0),
            failed_reloads: AtomicU64::new(0),
            resolver,
            dns_wake: Arc::default(),
            dns_updates: AtomicU64::new(0),
        });
        let dns_task = Some(tokio::spawn(dns_refresh_loop(
            Arc::downgrade(&controller),
            controller.dns_wake.clone(),
            shutdown.child_token(),
        )));
        let _ = controller.listeners.set(bound);

        let admin_task = if admin_enabled {
            let socket = tokio::net::TcpListener::bind(config.admin.addr)
                .await
                .map_err(|e| anyhow::anyhow!("admin.addr {}: {e}", config.admin.addr))?;
            let addr = socket.local_addr()?;
            let _ = controller.admin_addr.set(addr);
            tracing::info!(%addr, "admin API listening");
            Some(tokio::spawn(admin::serve(
                socket,
                controller.clone(),
                shutdown.child_token(),
            )))
        } else {
            None
        };
        for (name, addr) in controller.listeners.get().into_iter().flatten() {
            tracing::info!(listener = %name, %addr, "accepting connections");
        }
        Ok(Self {
            controller,
            shutdown,
            listening,
            admin_task,
            dns_task,
        })
    }

    /// The handle reloads and the admin API go through.
    pub fn controller(&self) -> &Arc<Controller> {
        &self.controller
    }

    /// Bound address of each listener, by name (useful with port 0).
    pub fn listener_addrs(&self) -> Vec<(String, SocketAddr)> {
        self.controller.listeners.get().cloned().unwrap_or_default()
    }

    /// Bound address of the admin API, if enabled.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.controller.admin_addr.get().copied()
    }

    /// The drain deadline of a shutdown: `server.shutdown_timeout` of the running config
    /// (after `--shutdown-timeout`).
    pub fn shutdown_timeout(&self) -> Duration {
        self.controller.config().server.shutdown_timeout
    }

    /// Stops accepting, lets in-flight requests finish for up to `deadline`, then closes the
    /// connections still open (their clients see them close; their backend requests are
    /// abandoned). Returns whether everything finished in time.
    pub async fn shutdown(mut self, deadline: Duration) -> bool {
        self.shutdown.cancel();
        if let Some(task) = self.dns_task.take() {
            task.abort();
        }
        let mut listening = std::mem::take(&mut self.listening);
        let drained = tokio::time::timeout(deadline, async {
            for l in &mut listening {
                let _ = (&mut l.join).await;
            }
        })
        .await
        .is_ok();
        if !drained {
            for l in &listening {
                l.close_connections();
            }
            // Prompt now: every connection task ends at its next poll. (A join that already
            // completed above is not awaited twice.)
            for l in listening {
                if !l.join.is_finished() {
                    let _ = l.join.await;
                }
            }
        }
        if let Some(task) = self.admin_task.take() {
            task.abort();
        }
        drained
    }
}

impl Drop for Gateway {
    /// A gateway dropped without [`Gateway::shutdown`] stops accepting at once.
    fn drop(&mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.dns_task.take() {
            task.abort();
        }
    }
}

/// Per-backend gauges and counters read from the library's endpoint snapshots at scrape time.
/// Every numeric field of the snapshot becomes a metric, so fields the library adds later
/// (ejections, EWMA, effective weight) are exported without a change here.
fn upstream_samples(shared: &Shared, out: &mut Samples) {
    const COUNTERS: [&str; 3] = ["requests", "failures", "ejections"];
    let state = shared.load();
    for (name, up) in state.upstreams() {
        for e in up.balancer.endpoints() {
            let addr = e.addr().to_string();
            let labels = [("upstream", name.as_str()), ("backend", addr.as_str())];
            let snap = serde_json::to_value(e.snapshot()).unwrap_or_default();
            let Some(fields) = snap.as_object() else {
                continue;
            };
            for (field, value) in fields {
                if field == "id" {
                    continue;
                }
                let metric = format!("scalewise_backend_{field}");
                let number = match value {
                    serde_json::Value::Number(n) => n.as_f64(),
                    serde_json::Value::Bool(b) => Some(f64::from(u8::from(*b))),
                    serde_json::Value::String(s) if field == "health" => {
                        out.gauge(
                            "scalewise_backend_healthy",
                            "1 if the backend is healthy, 0 otherwise",
                            &labels,
                            f64::from(u8::from(s == "healthy")),
                        );
                        None
                    }
                    _ => None,
                };
                let Some(v) = number else { continue };
                let help = format!("Backend `{field}` from the balancer's endpoint snapshot");
                if COUNTERS.contains(&field.as_str()) {
                    out.counter(&metric, &help, &labels, v);
                } else {
                    out.gauge(&metric, &help, &labels, v);
                }
            }
        }
    }
}

/// `scalewise gateway`: load the config, start, serve signals until told to stop.
///
/// # Errors
/// Invalid configuration, a socket that cannot be bound, or signal handlers that cannot be
/// installed.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let overrides = Overrides::from_args(&args);
    let mut config = match &args.config {
        Some(path) => config_file::load_config(path).map_err(|e| anyhow::anyhow!("{e}"))?,
        None => {
            let built = args.command_line_config()?;
            config_file::finish_built(&built, "command line").map_err(|e| anyhow::anyhow!("{e}"))?
        }
    };
    overrides.apply(&mut config);
    crate::logging::init(config.log.format, &config.log.level).map_err(|e| anyhow::anyhow!(e))?;

    let options = StartOptions {
        config_path: args.config.clone(),
        overrides,
        clock: None,
        resolver: None,
    };
    let gateway = Gateway::start(config, options).await?;
    wait_for_signals(gateway.controller()).await?;
    // Read at the signal: a reload may have changed it.
    let deadline = gateway.shutdown_timeout();
    tracing::info!(?deadline, "shutting down: draining in-flight requests");
    tokio::select! {
        drained = gateway.shutdown(deadline) => {
            if drained {
                tracing::info!("drained; bye");
            } else {
                tracing::warn!("shutdown deadline passed; closed the remaining connections");
            }
        }
        // An operator who signals again does not want to wait for the drain.
        () = second_signal() => {
            tracing::warn!("second signal: exiting without waiting for the drain");
        }
    }
    Ok(())
}

#[cfg(unix)]
async fn wait_for_signals(controller: &Arc<Controller>) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = signal(SignalKind::hangup())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    loop {
        tokio::select! {
            _ = hup.recv() => {
                tracing::info!("SIGHUP: reloading configuration");
                // Errors are logged inside; the gateway keeps running on the old config.
                let _ = controller.reload_from_file().await;
            }
            _ = term.recv() => return Ok(()),
            _ = int.recv() => return Ok(()),
        }
    }
}

#[cfg(unix)]
async fn second_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => std::future::pending().await,
    }
}

#[cfg(not(unix))]
async fn second_signal() {
    let _ = tokio::signal::ctrl_c().await;
}

#[cfg(not(unix))]
async fn wait_for_signals(_controller: &Arc<Controller>) -> anyhow::Result<()> {
    tokio::signal::ctrl_c().await?;
    Ok(())
}
