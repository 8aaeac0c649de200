//! One backend and its live statistics.
use serde::Serialize;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;

/// Static settings of one backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointConfig {
    /// Where to connect.
    pub addr: SocketAddr,
    /// Relative share of traffic for weighted algorithms (default 1).
    pub weight: u32,
    /// Maximum concurrent requests to this backend; `None` is unlimited.
    pub max_connections: Option<u32>,
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
}

/// Health as the balancer sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[repr(u8)]
pub enum HealthStatus {
    /// No check has passed yet.
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

/// One backend. Shared as `Arc<Endpoint>`; all statistics are atomics.
#[derive(Debug)]
pub struct Endpoint {
    id: usize,
    config: EndpointConfig,
    weight: AtomicU32,
    in_flight: AtomicU64,
    requests: AtomicU64,
    failures: AtomicU64,
    health: AtomicU8,
    draining: AtomicBool,
}

impl Endpoint {
    /// A new endpoint. `id` is unique within its [`Upstream`](super::Upstream) and stable
    /// across reloads for an unchanged backend.
    pub fn new(id: usize, config: EndpointConfig, initial: HealthStatus) -> Arc<Self> {
        Arc::new(Self {
            id,
            weight: AtomicU32::new(config.weight),
            config,
            in_flight: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            health: AtomicU8::new(initial as u8),
            draining: AtomicBool::new(false),
        })
    }

    /// Stable id within the upstream.
    pub fn id(&self) -> usize {
        self.id
    }

    /// Address to connect to.
    pub fn addr(&self) -> SocketAddr {
        self.config.addr
    }

    /// Static settings.
    pub fn config(&self) -> &EndpointConfig {
        &self.config
    }

    /// Configured weight.
    pub fn weight(&self) -> u32 {
        self.weight.load(Ordering::Relaxed)
    }

    /// Requests currently in flight to this backend.
    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Current health.
    pub fn health(&self) -> HealthStatus {
        HealthStatus::from_u8(self.health.load(Ordering::Relaxed))
    }

    /// Sets the health (called by health checkers).
    pub fn set_health(&self, status: HealthStatus) {
        self.health.store(status as u8, Ordering::Relaxed);
    }

    /// Whether an operator drained this backend (no new requests).
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Drains (`true`) or re-enables (`false`) the backend.
    pub fn set_draining(&self, draining: bool) {
        self.draining.store(draining, Ordering::Relaxed);
    }

    pub(crate) fn begin(&self) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn end(&self, ok: bool) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        if !ok {
            self.failures.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A serialisable view for admin APIs.
    pub fn snapshot(&self) -> EndpointSnapshot {
        EndpointSnapshot {
            id: self.id,
            addr: self.config.addr.to_string(),
            weight: self.weight(),
            health: self.health(),
            draining: self.is_draining(),
            in_flight: self.in_flight(),
            requests: self.requests.load(Ordering::Relaxed),
            failures: self.failures.load(Ordering::Relaxed),
        }
    }
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
    /// Health.
    pub health: HealthStatus,
    /// Drained by an operator.
    pub draining: bool,
    /// Requests in flight.
    pub in_flight: u64,
    /// Requests sent in total.
    pub requests: u64,
    /// Requests that failed in total.
    pub failures: u64,
}
