//! Bulkhead: at most `max_concurrent` calls at once, at most `max_waiting` callers queued
//! (first come, first served) for at most `max_wait` each. Everything beyond is rejected
//! at once with a typed error, so a slow dependency ties up a bounded share of the
//! service instead of all of its tasks and memory.
//!
//! ```
//! use scalewise::bulkhead::{Bulkhead, BulkheadConfig, BulkheadError};
//! use std::time::Duration;
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! let bulkhead = Bulkhead::new(BulkheadConfig {
//!     max_concurrent: 1,
//!     max_waiting: 0,
//!     max_wait: Duration::from_millis(100),
//! });
//! let held = bulkhead.acquire().await.unwrap();
//! assert!(matches!(bulkhead.acquire().await, Err(BulkheadError::QueueFull { .. })));
//! drop(held);
//! assert_eq!(bulkhead.call(async { Ok::<_, std::io::Error>(1) }).await.unwrap(), 1);
//! # }
//! ```
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tower::BoxError;
use tower_layer::Layer;
use tower_service::Service;

use crate::shed::LoadShedder;
use crate::timeout::duration_serde;

/// Bulkhead settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BulkheadConfig {
    /// Calls running at once.
    pub max_concurrent: u32,
    /// Callers allowed to wait for a slot; more are rejected with
    /// [`BulkheadError::QueueFull`].
    pub max_waiting: u32,
    /// How long a caller waits before [`BulkheadError::WaitTimeout`].
    #[serde(with = "duration_serde")]
    pub max_wait: Duration,
}

impl Default for BulkheadConfig {
    fn default() -> Self {
        Self {
            max_concurrent: 100,
            max_waiting: 100,
            max_wait: Duration::from_secs(1),
        }
    }
}

/// Why the bulkhead did not let a call in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BulkheadError {
    /// All slots busy and the wait queue full.
    #[error("bulkhead full: {max_concurrent} running and {max_waiting} waiting")]
    QueueFull {
        /// The concurrency limit.
        max_concurrent: u32,
        /// The queue limit.
        max_waiting: u32,
    },
    /// Waited the maximum time without getting a slot.
    #[error("no bulkhead slot within {waited:?}")]
    WaitTimeout {
        /// How long the caller waited.
        waited: Duration,
    },
}

/// The error of [`Bulkhead::call`].
#[derive(Debug, thiserror::Error)]
pub enum BulkheadCallError<E> {
    /// Not let in.
    #[error(transparent)]
    Rejected(BulkheadError),
    /// Ran and failed.
    #[error(transparent)]
    Inner(E),
}

/// A bulkhead's numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct BulkheadStats {
    /// Calls running now.
    pub in_flight: u32,
    /// Callers waiting now.
    pub waiting: u32,
    /// Rejected because the queue was full, since creation.
    pub rejected_queue_full: u64,
    /// Rejected after waiting too long, since creation.
    pub rejected_wait_timeout: u64,
}

struct Inner {
    cfg: BulkheadConfig,
    slots: Arc<Semaphore>,
    waiting: AtomicU32,
    queue_full: AtomicU64,
    wait_timeout: AtomicU64,
    shedder: Option<LoadShedder>,
}

/// A bulkhead; see the [module docs](self). Cheap to clone; clones share slots.
#[derive(Clone)]
pub struct Bulkhead {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Bulkhead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bulkhead")
            .field("config", &self.inner.cfg)
            .field("stats", &self.stats())
            .finish()
    }
}

/// A slot, released on drop.
#[derive(Debug)]
pub struct BulkheadPermit {
    _permit: OwnedSemaphorePermit,
}

/// Decrements the waiter count however the wait ends, cancellation included.
struct Waiting<'a>(&'a AtomicU32);
impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}

impl Bulkhead {
    /// A bulkhead with `config` (a `max_concurrent` of 0 is taken as 1).
    pub fn new(config: BulkheadConfig) -> Self {
        Self::build(config, None)
    }

    fn build(mut config: BulkheadConfig, shedder: Option<LoadShedder>) -> Self {
        config.max_concurrent = config
            .max_concurrent
            .clamp(1, Semaphore::MAX_PERMITS.min(u32::MAX as usize) as u32);
        Self {
            inner: Arc::new(Inner {
                slots: Arc::new(Semaphore::new(config.max_concurrent as usize)),
                cfg: config,
                waiting: AtomicU32::new(0),
                queue_full: AtomicU64::new(0),
                wait_timeout: AtomicU64::new(0),
                shedder,
            }),
        }
    }

    /// Reports every wait for a slot to `shedder` as queueing delay, so a
    /// [`LoadShedder`] in front can refuse work while this queue is congested.
    pub fn report_waits_to(self, shedder: LoadShedder) -> Self {
        Self::build(self.inner.cfg.clone(), Some(shedder))
    }

    /// The settings in effect.
    pub fn config(&self) -> &BulkheadConfig {
        &self.inner.cfg
    }

    /// A slot if one is free now.
    ///
    /// # Errors
    /// [`BulkheadError::QueueFull`] if none is free.
    pub fn try_acquire(&self) -> Result<BulkheadPermit, BulkheadError> {
        match self.inner.slots.clone().try_acquire_owned() {
            Ok(p) => Ok(BulkheadPermit { _permit: p }),
            Err(_) => Err(self.full()),
        }
    }

    fn full(&self) -> BulkheadError {
        self.inner.queue_full.fetch_add(1, Relaxed);
        BulkheadError::QueueFull {
            max_concurrent: self.inner.cfg.max_concurrent,
            max_waiting: self.inner.cfg.max_waiting,
        }
    }

    /// A slot, waiting in line for one if needed.
    ///
    /// # Errors
    /// [`BulkheadError::QueueFull`] when `max_waiting` callers are already waiting,
    /// [`BulkheadError::WaitTimeout`] after `max_wait`.
    pub async fn acquire(&self) -> Result<BulkheadPermit, BulkheadError> {
        let inner = &self.inner;
        // tokio's semaphore hands released slots to waiters first, so this fast path
        // cannot overtake anyone already in line.
        if let Ok(p) = inner.slots.clone().try_acquire_owned() {
            if let Some(s) = &inner.shedder {
                s.observe_queue_delay(Duration::ZERO);
            }
            return Ok(BulkheadPermit { _permit: p });
        }
        if inner.waiting.fetch_add(1, Relaxed) >= inner.cfg.max_waiting {
            inner.waiting.fetch_sub(1, Relaxed);
            return Err(self.full());
        }
        let _waiting = Waiting(&inner.waiting);
        let start = tokio::time::Instant::now();
        match tokio::time::timeout(inner.cfg.max_wait, inner.slots.clone().acquire_owned()).await {
            Ok(Ok(p)) => {
                if let Some(s) = &inner.shedder {
                    s.observe_queue_delay(start.elapsed());
                }
                Ok(BulkheadPermit { _permit: p })
            }
            // The semaphore is never closed; if it were, no slot would ever come.
            Ok(Err(_)) => Err(self.full()),
            Err(_) => {
                inner.wait_timeout.fetch_add(1, Relaxed);
                if let Some(s) = &inner.shedder {
                    s.observe_queue_delay(start.elapsed());
                }
                Err(BulkheadError::WaitTimeout {
                    waited: start.elapsed(),
                })
            }
        }
    }

    /// Runs `fut` in a slot.
    ///
    /// # Errors
    /// [`BulkheadCallError::Rejected`] as for [`Bulkhead::acquire`], or the future's error.
    pub async fn call<F, T, E>(&self, fut: F) -> Result<T, BulkheadCallError<E>>
    where
        F: Future<Output = Result<T, E>>,
    {
        let _permit = self.acquire().await.map_err(BulkheadCallError::Rejected)?;
        fut.await.map_err(BulkheadCallError::Inner)
    }

    /// Current numbers.
    pub fn stats(&self) -> BulkheadStats {
        let i = &self.inner;
        BulkheadStats {
            in_flight: i
                .cfg
                .max_concurrent
                .saturating_sub(i.slots.available_permits() as u32),
            waiting: i.waiting.load(Relaxed),
            rejected_queue_full: i.queue_full.load(Relaxed),
            rejected_wait_timeout: i.wait_timeout.load(Relaxed),
        }
    }
}

/// A tower layer putting services behind a [`Bulkhead`]. Rejections are boxed
/// [`BulkheadError`]s. The wrapped service must be `Clone` (the call waits for a slot
/// before using it), as with tower's `Buffer`.
///
/// ```
/// use scalewise::bulkhead::{Bulkhead, BulkheadConfig, BulkheadLayer};
/// use tower::{service_fn, BoxError, Service, ServiceBuilder, ServiceExt};
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let mut svc = ServiceBuilder::new()
///     .layer(BulkheadLayer::new(Bulkhead::new(BulkheadConfig::default())))
///     .service(service_fn(|x: u8| async move { Ok::<_, BoxError>(x + 1) }));
/// assert_eq!(svc.ready().await.unwrap().call(1).await.unwrap(), 2);
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct BulkheadLayer {
    bulkhead: Bulkhead,
}

impl BulkheadLayer {
    /// A layer sharing `bulkhead` among every service it wraps.
    pub fn new(bulkhead: Bulkhead) -> Self {
        Self { bulkhead }
    }
}

impl<S> Layer<S> for BulkheadLayer {
    type Service = BulkheadService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        BulkheadService {
            inner,
            bulkhead: self.bulkhead.clone(),
        }
    }
}

/// The service made by [`BulkheadLayer`].
#[derive(Debug, Clone)]
pub struct BulkheadService<S> {
    inner: S,
    bulkhead: Bulkhead,
}

impl<S, Req> Service<Req> for BulkheadService<S>
where
    S: Service<Req> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    Req: Send + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Readiness of the inner service is awaited inside the call, after the slot: a
        // bulkhead must not hold up callers that it is about to reject.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let bulkhead = self.bulkhead.clone();
        let svc = self.inner.clone();
        Box::pin(async move {
            use tower::ServiceExt;
            let _permit = bulkhead.acquire().await?;
            svc.oneshot(req).await.map_err(Into::into)
        })
    }
}
