//! TEMPORARY stand-in for the data path's state (owned by the `gateway` branch); removed
//! before merging it.
use crate::config::Config;
use arc_swap::ArcSwap;
use scalewise::balance::{EndpointConfig, Upstream};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Stand-in.
#[derive(Debug)]
pub struct GatewayState {
    upstreams: BTreeMap<String, Arc<Upstream>>,
}

impl GatewayState {
    /// Stand-in.
    ///
    /// # Errors
    /// Never.
    pub fn build(cfg: &Config, _prev: Option<&GatewayState>) -> anyhow::Result<Self> {
        let upstreams = cfg
            .upstreams
            .iter()
            .map(|(n, u)| {
                let mut b = Upstream::builder(n.clone());
                for be in &u.backends {
                    b = b.endpoint(EndpointConfig::new(be.addr));
                }
                (n.clone(), Arc::new(b.build()))
            })
            .collect();
        Ok(Self { upstreams })
    }

    /// Stand-in.
    pub fn upstreams(&self) -> impl Iterator<Item = (&String, &Arc<Upstream>)> {
        self.upstreams.iter()
    }
}

/// Stand-in.
#[derive(Debug, Default)]
pub struct GatewayMetrics;

impl GatewayMetrics {
    /// Stand-in.
    pub fn register(&self, _r: &mut prometheus_client::registry::Registry) {}
}

/// Stand-in.
#[derive(Debug)]
pub struct Shared {
    state: ArcSwap<GatewayState>,
    metrics: GatewayMetrics,
}

impl Shared {
    /// Stand-in.
    pub fn new(state: GatewayState) -> Arc<Self> {
        Arc::new(Self {
            state: ArcSwap::from_pointee(state),
            metrics: GatewayMetrics,
        })
    }
    /// Stand-in.
    pub fn state(&self) -> Arc<GatewayState> {
        self.state.load_full()
    }
    /// Stand-in.
    pub fn swap(&self, s: GatewayState) {
        self.state.store(Arc::new(s));
    }
    /// Stand-in.
    pub fn metrics(&self) -> &GatewayMetrics {
        &self.metrics
    }
}
