//! Load balancing: pick one backend of a group for each request.
//!
//! Three layers, each usable on its own:
//! - [`Endpoint`]: one backend and its live statistics (in-flight requests, latency EWMA,
//!   health, outlier ejections). Statistics are atomics, so an `Arc<Endpoint>` is shared by
//!   the balancer, the health checker, the admin API and the request in flight, and survives
//!   a config reload when the backend's address is unchanged.
//! - [`Balancer`]: an algorithm. It is handed the eligible [`Candidates`] and picks one.
//! - [`Upstream`]: a named group of endpoints plus a balancer plus health; what a proxy calls.
//!
//! [`BalanceLayer`] wraps the same thing as a `tower` service.
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
//! b.finish(Outcome::server_error(Duration::from_millis(4)));
//! ```
mod algorithms;
mod candidates;
mod endpoint;
mod hash;
mod layer;
mod upstream;

pub use algorithms::{
    Ketama, LeastConn, Maglev, PeakEwma, PowerOfTwo, RoundRobin, WeightedRandom, WeightedRoundRobin,
};
pub use candidates::Candidates;
pub use endpoint::{Endpoint, EndpointConfig, EndpointSnapshot, HealthStatus};
pub use hash::{hash_key, pin_for_addr, HashKeySource, ParseHashKeySourceError};
pub use layer::{Balance, BalanceError, BalanceLayer};
pub use upstream::{
    Algorithm, Outcome, OutcomeKind, Pinned, SelectError, Selection, UnknownAlgorithm, Upstream,
    UpstreamBuilder, UpstreamSnapshot,
};

use std::net::IpAddr;
use std::sync::Arc;

/// What a balancer may look at about the request being routed.
#[derive(Debug, Default, Clone, Copy)]
pub struct PickContext<'a> {
    /// The client's address (for IP-hash balancing).
    pub client_ip: Option<IpAddr>,
    /// The bytes a hashing balancer keys on (a header, cookie or path value), already chosen
    /// by the caller according to the upstream's [`HashKeySource`]. `None` falls back to
    /// `client_ip`, then to a non-hashing pick.
    pub hash_key: Option<&'a [u8]>,
    /// Endpoint ids that must not be picked (e.g. the one a failed attempt just went to).
    pub exclude: &'a [usize],
}

impl PickContext<'_> {
    /// The 64-bit key hashing balancers use: `hash_key` if set, else `client_ip`.
    pub fn key_hash(&self) -> Option<u64> {
        if let Some(k) = self.hash_key {
            return Some(hash_key(k));
        }
        match self.client_ip? {
            IpAddr::V4(v4) => Some(hash_key(&v4.octets())),
            IpAddr::V6(v6) => Some(hash_key(&v6.octets())),
        }
    }
}

/// A load-balancing algorithm.
///
/// `candidates` holds only endpoints that may take traffic now (healthy, not drained, not
/// ejected, not excluded — or every host in panic mode); it is never empty.
/// Implementations return an index into it; an out-of-range index is clamped.
/// Algorithms that need a stable view of *all* endpoints (consistent hashing) rebuild it in
/// [`Balancer::rebuild`] and map back to candidates by [`Endpoint::id`].
pub trait Balancer: Send + Sync + 'static {
    /// Picks one of `candidates`.
    fn pick(&self, candidates: &Candidates<'_>, ctx: &PickContext<'_>) -> usize;

    /// Called with every endpoint of the group whenever the set or a weight changes.
    fn rebuild(&self, _all: &[Arc<Endpoint>]) {}

    /// The algorithm's name as used in config (`round_robin`, `least_conn`, ...).
    fn name(&self) -> &'static str;
}
