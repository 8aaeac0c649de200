//! Load balancing: pick one backend of a group for each request.
//!
//! Three layers, each usable on its own:
//! - [`Endpoint`]: one backend and its live statistics (in-flight requests, latency EWMA,
//!   health). Statistics are atomics, so an `Arc<Endpoint>` is shared by the balancer, the
//!   health checker, the admin API and the request in flight, and survives a config reload
//!   when the backend is unchanged.
//! - [`Balancer`]: an algorithm. It is handed the eligible candidates and picks one.
//! - [`Upstream`]: a named group of endpoints plus a balancer plus health; what a proxy calls.
//!
//! ```
//! use scalewise::balance::{Upstream, EndpointConfig, PickContext, Outcome, Algorithm};
//! use std::time::Duration;
//!
//! let upstream = Upstream::builder("api")
//!     .algorithm(Algorithm::RoundRobin)
//!     .endpoint(EndpointConfig::new("127.0.0.1:9001".parse().unwrap()))
//!     .endpoint(EndpointConfig::new("127.0.0.1:9002".parse().unwrap()))
//!     .build();
//! let a = upstream.select(&PickContext::default()).unwrap();
//! let b = upstream.select(&PickContext::default()).unwrap();
//! assert_ne!(a.endpoint().addr(), b.endpoint().addr());
//! a.finish(Outcome::success(Duration::from_millis(3)));
//! b.finish(Outcome::success(Duration::from_millis(4)));
//! ```
mod endpoint;
mod round_robin;
mod upstream;

pub use endpoint::{Endpoint, EndpointConfig, EndpointSnapshot, HealthStatus};
pub use round_robin::RoundRobin;
pub use upstream::{Algorithm, Outcome, SelectError, Selection, Upstream, UpstreamBuilder};

use std::net::IpAddr;
use std::sync::Arc;

/// What a balancer may look at about the request being routed.
#[derive(Debug, Default, Clone, Copy)]
pub struct PickContext<'a> {
    /// The client's address (for IP-hash balancing).
    pub client_ip: Option<IpAddr>,
    /// The bytes a hashing balancer keys on (a header, cookie or path value), already chosen
    /// by the caller according to the upstream's hash-key setting. `None` falls back to
    /// `client_ip`, then to a non-hashing pick.
    pub hash_key: Option<&'a [u8]>,
    /// Endpoint ids that must not be picked (e.g. the one a failed attempt just went to).
    pub exclude: &'a [usize],
}

/// A load-balancing algorithm.
///
/// `candidates` holds only endpoints that may take traffic now (healthy, not drained, not
/// ejected, not excluded); it is never empty. Implementations return an index into it.
/// Algorithms that need a stable view of *all* endpoints (consistent hashing) rebuild it in
/// [`Balancer::rebuild`] and map back to candidates by [`Endpoint::id`].
pub trait Balancer: Send + Sync + 'static {
    /// Picks one of `candidates`.
    fn pick(&self, candidates: &[Arc<Endpoint>], ctx: &PickContext<'_>) -> usize;

    /// Called with every endpoint of the group whenever the set or a weight changes.
    fn rebuild(&self, _all: &[Arc<Endpoint>]) {}

    /// The algorithm's name as used in config (`round_robin`, `least_conn`, ...).
    fn name(&self) -> &'static str;
}
