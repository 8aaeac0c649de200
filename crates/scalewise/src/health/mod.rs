//! Health: active checks, passive outlier detection, panic mode and slow start.
//!
//! An endpoint takes traffic iff it is **active-healthy AND not ejected AND not draining**
//! ([`Endpoint::is_available_at`](crate::balance::Endpoint::is_available_at)). The two
//! signals are independent and both must allow it:
//! - [`ActiveHealthChecks`] probe every backend on a timer (HTTP `GET` or TCP connect) and
//!   flip its [`HealthStatus`](crate::balance::HealthStatus) after `fall` failures or
//!   `rise` passes in a row. A never-checked backend is `Unknown` and takes no traffic
//!   unless `healthy_on_start` is set.
//! - Outlier detection ([`OutlierConfig`]) watches real traffic via
//!   [`Selection::finish`](crate::balance::Selection::finish) and ejects a backend for
//!   `base × n` (capped) after consecutive failures; it returns by itself when that ends.
//!   A passing active check does not end an ejection early: the health endpoint can be
//!   fine while real requests fail.
//! - Panic mode: if fewer than `panic_threshold`% of checked, non-drained backends are
//!   available, every one of them gets traffic regardless.
//! - Slow start ramps a backend's weight after it becomes available again.
//!
//! See `docs/health.md` for the full rules.
//!
//! ```
//! use scalewise::balance::{EndpointConfig, Outcome, PickContext, Upstream};
//! use scalewise::clock::ManualClock;
//! use scalewise::health::{HealthConfig, OutlierConfig};
//! use std::{sync::Arc, time::Duration};
//!
//! let clock = ManualClock::new();
//! let up = Upstream::builder("api")
//!     .clock(Arc::new(clock.clone()))
//!     .health(HealthConfig {
//!         outlier: Some(OutlierConfig { consecutive_5xx: 2, ..Default::default() }),
//!         ..Default::default()
//!     })
//!     .endpoint(EndpointConfig::new("127.0.0.1:9001".parse().unwrap()))
//!     .endpoint(EndpointConfig::new("127.0.0.1:9002".parse().unwrap()))
//!     .build();
//! let bad = up.endpoints()[0].clone();
//! for _ in 0..2 {
//!     let ctx = PickContext { exclude: &[1], ..Default::default() };
//!     up.select(&ctx).unwrap().finish(Outcome::server_error(Duration::from_millis(1)));
//! }
//! assert!(bad.is_ejected());
//! clock.advance(Duration::from_secs(30));
//! assert!(!bad.is_ejected());
//! ```
mod active;
mod config;

pub use active::{
    check_round, check_round_with, probe, probe_with, ActiveHealthChecks, CheckError,
    CheckTransport, Tcp,
};
pub use config::{
    ActiveCheckConfig, CheckKind, HealthConfig, OutlierConfig, ParseStatusRangeError,
    SlowStartConfig, StatusRange,
};
