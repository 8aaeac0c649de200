//! A named group of endpoints with a balancer: what a proxy calls for every request.
use super::{Balancer, Endpoint, EndpointConfig, HealthStatus, PickContext, RoundRobin};
use arc_swap::ArcSwap;
use std::sync::Arc;
use std::time::Duration;

/// The algorithms an upstream can be configured with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Algorithm {
    /// [`RoundRobin`].
    #[default]
    RoundRobin,
}

impl Algorithm {
    fn balancer(self) -> Arc<dyn Balancer> {
        match self {
            Algorithm::RoundRobin => Arc::new(RoundRobin::default()),
        }
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

/// How a request to an endpoint ended, fed back to the balancer and outlier detection.
#[derive(Debug, Clone, Copy)]
pub struct Outcome {
    /// Time to the response head (or to the failure).
    pub latency: Duration,
    /// `false` for connect failures, resets, timeouts and 5xx.
    pub success: bool,
}

impl Outcome {
    /// A successful request.
    pub fn success(latency: Duration) -> Self {
        Self {
            latency,
            success: true,
        }
    }

    /// A failed request.
    pub fn failure(latency: Duration) -> Self {
        Self {
            latency,
            success: false,
        }
    }
}

struct Members {
    endpoints: Vec<Arc<Endpoint>>,
}

/// A named group of backends behind one balancer.
pub struct Upstream {
    name: String,
    balancer: Arc<dyn Balancer>,
    members: ArcSwap<Members>,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("name", &self.name)
            .field("algorithm", &self.balancer.name())
            .field("endpoints", &self.members.load().endpoints)
            .finish()
    }
}

/// Builds an [`Upstream`].
#[derive(Debug)]
pub struct UpstreamBuilder {
    name: String,
    algorithm: Algorithm,
    endpoints: Vec<EndpointConfig>,
}

impl UpstreamBuilder {
    /// Sets the algorithm.
    pub fn algorithm(mut self, algorithm: Algorithm) -> Self {
        self.algorithm = algorithm;
        self
    }

    /// Adds a backend.
    pub fn endpoint(mut self, endpoint: EndpointConfig) -> Self {
        self.endpoints.push(endpoint);
        self
    }

    /// Builds the upstream. Endpoints start healthy until a health checker says otherwise.
    pub fn build(self) -> Upstream {
        let endpoints: Vec<_> = self
            .endpoints
            .into_iter()
            .enumerate()
            .map(|(id, cfg)| Endpoint::new(id, cfg, HealthStatus::Healthy))
            .collect();
        let balancer = self.algorithm.balancer();
        balancer.rebuild(&endpoints);
        Upstream {
            name: self.name,
            balancer,
            members: ArcSwap::from_pointee(Members { endpoints }),
        }
    }
}

impl Upstream {
    /// Starts building an upstream called `name`.
    pub fn builder(name: impl Into<String>) -> UpstreamBuilder {
        UpstreamBuilder {
            name: name.into(),
            algorithm: Algorithm::default(),
            endpoints: Vec::new(),
        }
    }

    /// The upstream's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// All endpoints, healthy or not.
    pub fn endpoints(&self) -> Vec<Arc<Endpoint>> {
        self.members.load().endpoints.clone()
    }

    /// Picks an endpoint for one request.
    ///
    /// # Errors
    /// [`SelectError::NoHealthyBackend`] when no endpoint may take traffic.
    pub fn select(&self, ctx: &PickContext<'_>) -> Result<Selection, SelectError> {
        let members = self.members.load();
        let candidates: Vec<Arc<Endpoint>> = members
            .endpoints
            .iter()
            .filter(|e| {
                e.health() != HealthStatus::Unhealthy
                    && !e.is_draining()
                    && !ctx.exclude.contains(&e.id())
            })
            .cloned()
            .collect();
        if candidates.is_empty() {
            return Err(SelectError::NoHealthyBackend(self.name.clone()));
        }
        let i = self.balancer.pick(&candidates, ctx);
        let endpoint = candidates[i.min(candidates.len() - 1)].clone();
        endpoint.begin();
        Ok(Selection {
            endpoint,
            finished: false,
        })
    }
}

/// An endpoint chosen for one request. Report how it went with [`Selection::finish`];
/// dropping it unfinished counts as a cancelled (neither failed nor successful) request.
#[derive(Debug)]
#[must_use = "report the outcome with finish()"]
pub struct Selection {
    endpoint: Arc<Endpoint>,
    finished: bool,
}

impl Selection {
    /// The chosen endpoint.
    pub fn endpoint(&self) -> &Arc<Endpoint> {
        &self.endpoint
    }

    /// Records the outcome: updates in-flight counts, latency statistics and outlier detection.
    pub fn finish(mut self, outcome: Outcome) {
        self.finished = true;
        self.endpoint.end(outcome.success);
    }
}

impl Drop for Selection {
    fn drop(&mut self) {
        if !self.finished {
            self.endpoint.end(true);
        }
    }
}
