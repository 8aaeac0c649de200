//! Per-call deadlines.
//!
//! For tower services use [`tower::timeout::TimeoutLayer`] (re-exported here as
//! [`TimeoutLayer`]); its error, [`tower::timeout::error::Elapsed`], is recognised by the
//! breaker's and retry's classifiers just like this module's [`Elapsed`]. For plain futures,
//! [`timeout`] returns a typed error instead of tokio's opaque one, so that callers can tell a
//! deadline from the future's own error.
//!
//! ```
//! use scalewise::timeout::{timeout, TimeoutError};
//! use std::time::Duration;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let fast = timeout(Duration::from_secs(1), async { Ok::<_, std::io::Error>(7) }).await;
//! assert_eq!(fast.unwrap(), 7);
//!
//! let slow = timeout(Duration::from_millis(1), std::future::pending::<Result<(), std::io::Error>>()).await;
//! assert!(matches!(slow, Err(TimeoutError::Elapsed(_))));
//! # }
//! ```
use std::future::Future;
use std::time::Duration;

pub use tower::timeout::{Timeout, TimeoutLayer};

/// A deadline passed before the call completed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("deadline of {limit:?} elapsed")]
pub struct Elapsed {
    /// The deadline that was exceeded.
    pub limit: Duration,
}

/// The error of [`timeout`]: either the deadline or the wrapped future's own error.
#[derive(Debug, thiserror::Error)]
pub enum TimeoutError<E> {
    /// The deadline passed first.
    #[error(transparent)]
    Elapsed(Elapsed),
    /// The future finished in time with an error.
    #[error(transparent)]
    Inner(E),
}

impl<E> TimeoutError<E> {
    /// Whether the deadline passed (as opposed to the call failing by itself).
    pub fn is_elapsed(&self) -> bool {
        matches!(self, TimeoutError::Elapsed(_))
    }
}

/// Runs `fut` with a deadline of `limit`; the future is dropped (cancelled) if it elapses.
///
/// # Errors
/// [`TimeoutError::Elapsed`] when `limit` passes first, [`TimeoutError::Inner`] with the
/// future's own error otherwise.
pub async fn timeout<F, T, E>(limit: Duration, fut: F) -> Result<T, TimeoutError<E>>
where
    F: Future<Output = Result<T, E>>,
{
    match tokio::time::timeout(limit, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(TimeoutError::Inner(e)),
        Err(_) => Err(TimeoutError::Elapsed(Elapsed { limit })),
    }
}

/// Whether a boxed error (as tower services return) is a deadline: ours or tower's.
pub fn is_timeout(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if e.is::<Elapsed>() || e.is::<tower::timeout::error::Elapsed>() {
            return true;
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::TimedOut {
                return true;
            }
        }
        cur = e.source();
    }
    false
}

/// Serde support for durations written the human way (`"250ms"`, `"30s"`, `"1m 30s"`), as
/// used by every config struct of the resilience primitives:
/// `#[serde(with = "scalewise::timeout::duration_serde")]`.
pub mod duration_serde {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    /// Writes `d` as a humantime string.
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_duration(*d))
    }

    /// Reads a humantime string such as `"250ms"`.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s)
            .map_err(|e| serde::de::Error::custom(format!("invalid duration {s:?}: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn elapsed_is_typed_and_detected() {
        let r = timeout(
            Duration::from_millis(10),
            std::future::pending::<Result<(), std::io::Error>>(),
        )
        .await;
        let Err(TimeoutError::Elapsed(e)) = r else {
            panic!("expected elapsed")
        };
        assert!(is_timeout(&e));
        let boxed: tower::BoxError = Box::new(e);
        assert!(is_timeout(boxed.as_ref()));
        let other = std::io::Error::other("x");
        assert!(!is_timeout(&other));
    }

    #[test]
    fn durations_parse_human_strings() {
        #[derive(serde::Deserialize, serde::Serialize)]
        struct C {
            #[serde(with = "duration_serde")]
            d: Duration,
        }
        let c: C = serde_json::from_str(r#"{"d":"1m 30s"}"#).unwrap();
        assert_eq!(c.d, Duration::from_secs(90));
        assert!(serde_json::from_str::<C>(r#"{"d":"soon"}"#).is_err());
        assert_eq!(serde_json::to_string(&c).unwrap(), r#"{"d":"1m 30s"}"#);
    }
}
