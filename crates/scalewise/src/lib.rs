//! # scalewise
//!
//! Scalability primitives for Rust services. Each primitive has a plain, direct API for
//! code that is not a tower service, and a [`tower::Layer`] for code that is.
//!
//! | module | what it does |
//! |---|---|
//! | [`balance`] | load-balancing algorithms and the [`balance::Upstream`] group that combines them with health |
//! | [`health`] | active health checks, passive outlier detection, slow start |
//! | [`metrics`] | Prometheus metrics shared by every primitive |
//! | [`ratelimit`] | token/leaky bucket, windows, GCRA; bounded keyed limiters; Redis-global store |
//! | [`breaker`] | circuit breakers with sliding windows and a registry |
//! | [`retry`] | retries with backoff, jitter and a retry budget |
//! | [`timeout`] | per-call deadlines |
//! | [`bulkhead`] | concurrency limit with a bounded wait queue |
//! | [`concurrency`] | adaptive concurrency limits (AIMD, gradient) |
//! | [`shed`] | load shedding when saturated |
//! | [`clock`] | the injectable clock every time-dependent primitive takes |
//! | `tls` | (feature `tls`) the plain-or-TLS client stream and the `--insecure` certificate verifier |
#![forbid(unsafe_code)]

pub mod balance;
pub mod breaker;
pub mod bulkhead;
pub mod clock;
pub mod concurrency;
pub mod health;
pub mod metrics;
pub mod ratelimit;
pub mod retry;
pub mod shed;
pub mod timeout;
#[cfg(feature = "tls")]
pub mod tls;
