//! The view of eligible endpoints a [`Balancer`](super::Balancer) picks from.
use super::Endpoint;
use std::sync::Arc;

/// The endpoints that may take the current request, plus the time of the pick.
///
/// Borrowed from the upstream's member list; when every member is eligible (the common
/// case) no index list is allocated.
#[derive(Debug, Clone, Copy)]
pub struct Candidates<'a> {
    all: &'a [Arc<Endpoint>],
    // Indices into `all`; `None` means every member.
    eligible: Option<&'a [u32]>,
    now_nanos: u64,
}

impl<'a> Candidates<'a> {
    /// Every endpoint of `all` as a candidate, at clock time `now_nanos`.
    pub fn all(all: &'a [Arc<Endpoint>], now_nanos: u64) -> Self {
        Self {
            all,
            eligible: None,
            now_nanos,
        }
    }

    /// The endpoints of `all` at `indices`.
    ///
    /// # Panics
    /// Accessors panic if an index is out of range of `all`.
    pub fn subset(all: &'a [Arc<Endpoint>], indices: &'a [u32], now_nanos: u64) -> Self {
        Self {
            all,
            eligible: Some(indices),
            now_nanos,
        }
    }

    /// Number of candidates.
    pub fn len(&self) -> usize {
        match self.eligible {
            Some(e) => e.len(),
            None => self.all.len(),
        }
    }

    /// Whether there are none (never the case inside [`Balancer::pick`](super::Balancer::pick)).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The `i`th candidate.
    ///
    /// # Panics
    /// If `i >= len()`.
    #[inline]
    pub fn get(&self, i: usize) -> &'a Arc<Endpoint> {
        match self.eligible {
            Some(e) => &self.all[e[i] as usize],
            None => &self.all[i],
        }
    }

    /// All candidates in order.
    pub fn iter(&self) -> impl Iterator<Item = &'a Arc<Endpoint>> + '_ {
        (0..self.len()).map(move |i| self.get(i))
    }

    /// Clock time of this pick (nanoseconds of the upstream's clock).
    pub fn now_nanos(&self) -> u64 {
        self.now_nanos
    }

    /// The `i`th candidate's weight in thousandths, including slow start (always ≥ 1).
    #[inline]
    pub fn effective_weight(&self, i: usize) -> u64 {
        self.get(i).effective_weight_milli_at(self.now_nanos)
    }

    /// The candidate index of the endpoint with id `id`, if it is a candidate.
    pub fn position_of_id(&self, id: usize) -> Option<usize> {
        (0..self.len()).find(|&i| self.get(i).id() == id)
    }
}
