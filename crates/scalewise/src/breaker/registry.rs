//! Named breakers and their stats, for the gateway's per-backend breakers and the admin API.
use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use serde::Serialize;
use tokio::sync::broadcast;

use super::{BreakerConfig, CircuitBreaker, State, StateChange, WindowCounts};
use crate::clock::{Clock, SystemClock};

/// A breaker's state and numbers at one moment. Serialises for the admin API.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BreakerStats {
    /// The breaker's name.
    pub name: String,
    /// Its state.
    pub state: State,
    /// The current window.
    pub window: WindowCounts,
    /// failures / calls in the window, if any calls.
    pub failure_rate: Option<f64>,
    /// slow calls / calls in the window, if any calls.
    pub slow_call_rate: Option<f64>,
    /// Calls rejected since creation.
    pub rejected: u64,
    /// Openings since it last closed (drives the open-duration backoff).
    pub consecutive_opens: u32,
    /// While open: milliseconds until it lets trial calls through.
    pub retry_after_ms: Option<u64>,
}

/// Breakers by name, sharing one clock and one event stream.
///
/// Names come from configuration (one per backend or route), not from clients, so the
/// registry holds as many breakers as the operator configured.
///
/// ```
/// use scalewise::breaker::{BreakerConfig, BreakerRegistry, State};
///
/// let registry = BreakerRegistry::new(BreakerConfig::default());
/// let a = registry.get_or_create("backend-a");
/// assert_eq!(registry.get_or_create("backend-a").name(), a.name());
/// a.force_open();
/// let stats = registry.stats();
/// assert_eq!(stats[0].state, State::ForcedOpen);
/// ```
pub struct BreakerRegistry {
    defaults: BreakerConfig,
    clock: Arc<dyn Clock>,
    events: broadcast::Sender<StateChange>,
    breakers: RwLock<BTreeMap<String, CircuitBreaker>>,
}

impl std::fmt::Debug for BreakerRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BreakerRegistry")
            .field("breakers", &self.names())
            .finish()
    }
}

impl BreakerRegistry {
    /// An empty registry whose new breakers use `defaults` and the system clock.
    pub fn new(defaults: BreakerConfig) -> Self {
        Self::with_clock(defaults, SystemClock)
    }

    /// An empty registry on `clock`.
    pub fn with_clock(defaults: BreakerConfig, clock: impl Clock) -> Self {
        Self {
            defaults,
            clock: Arc::new(clock),
            events: broadcast::channel(256).0,
            breakers: RwLock::new(BTreeMap::new()),
        }
    }

    /// The breaker called `name`, created with the default config if new.
    pub fn get_or_create(&self, name: &str) -> CircuitBreaker {
        self.get_or_create_with(name, || self.defaults.clone())
    }

    /// The breaker called `name`, created with `config()` if new.
    pub fn get_or_create_with(
        &self,
        name: &str,
        config: impl FnOnce() -> BreakerConfig,
    ) -> CircuitBreaker {
        if let Some(b) = self.get(name) {
            return b;
        }
        let mut map = self.breakers.write().unwrap_or_else(|e| e.into_inner());
        map.entry(name.to_string())
            .or_insert_with(|| {
                CircuitBreaker::builder(name)
                    .config(config())
                    .clock(self.clock.clone())
                    .events(self.events.clone())
                    .build_clamped()
            })
            .clone()
    }

    /// The breaker called `name`, if any.
    pub fn get(&self, name: &str) -> Option<CircuitBreaker> {
        let map = self.breakers.read().unwrap_or_else(|e| e.into_inner());
        map.get(name).cloned()
    }

    /// Removes the breaker called `name` (handles already given out keep working).
    pub fn remove(&self, name: &str) -> Option<CircuitBreaker> {
        let mut map = self.breakers.write().unwrap_or_else(|e| e.into_inner());
        map.remove(name)
    }

    /// The names, sorted.
    pub fn names(&self) -> Vec<String> {
        let map = self.breakers.read().unwrap_or_else(|e| e.into_inner());
        map.keys().cloned().collect()
    }

    /// Stats of every breaker, sorted by name.
    pub fn stats(&self) -> Vec<BreakerStats> {
        let breakers: Vec<CircuitBreaker> = {
            let map = self.breakers.read().unwrap_or_else(|e| e.into_inner());
            map.values().cloned().collect()
        };
        breakers.iter().map(CircuitBreaker::stats).collect()
    }

    /// State changes of every breaker in the registry.
    pub fn subscribe(&self) -> broadcast::Receiver<StateChange> {
        self.events.subscribe()
    }
}
