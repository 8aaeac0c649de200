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
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use tokio::time::{Instant, Sleep};

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

/// Runs `fut` until `deadline` on `timer`, a timer the caller keeps for many calls (one per
/// connection, say); `None` if the deadline passed first and `fut` was dropped.
///
/// Why: [`tokio::time::timeout`] inserts a timer-wheel entry for every call and removes it
/// when the call wins, which shows in the profile of anything doing 100k+ calls a second on
/// one thread. Here `timer` is moved only when `deadline` is earlier than where it stands,
/// or when it fires before `deadline` (it was armed for an earlier call): with a fixed
/// timeout and calls that finish in time, about once per timeout period. Deadlines that
/// only move forward — successive requests on one connection — never fire late.
///
/// ```
/// use scalewise::timeout::timeout_on;
/// use std::time::Duration;
/// use tokio::time::{sleep_until, Instant};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let mut timer = Box::pin(sleep_until(Instant::now()));
/// for _ in 0..1000 {
///     let deadline = Instant::now() + Duration::from_secs(5);
///     assert_eq!(timeout_on(timer.as_mut(), deadline, async { 7 }).await, Some(7));
/// }
/// let deadline = Instant::now() + Duration::from_secs(5);
/// assert_eq!(timeout_on(timer.as_mut(), deadline, std::future::pending::<()>()).await, None);
/// # }
/// ```
pub async fn timeout_on<F: Future>(
    mut timer: Pin<&mut Sleep>,
    deadline: Instant,
    fut: F,
) -> Option<F::Output> {
    if deadline < timer.deadline() {
        timer.as_mut().reset(deadline);
    }
    let mut fut = std::pin::pin!(fut);
    std::future::poll_fn(|cx| {
        if let Poll::Ready(v) = fut.as_mut().poll(cx) {
            return Poll::Ready(Some(v));
        }
        while timer.as_mut().poll(cx).is_ready() {
            // Fired: now >= timer.deadline(), so no clock read is needed to know whether
            // this call's deadline has passed too.
            if timer.deadline() >= deadline {
                return Poll::Ready(None);
            }
            timer.as_mut().reset(deadline);
        }
        Poll::Pending
    })
    .await
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
    async fn timeout_on_gives_each_call_its_own_deadline() {
        let t = Duration::from_secs(10);
        let mut timer = Box::pin(tokio::time::sleep_until(Instant::now()));
        let start = Instant::now();
        // A call that finishes in time leaves the timer armed at its deadline (t = 10 s).
        assert_eq!(
            timeout_on(timer.as_mut(), start + t, async { 1 }).await,
            Some(1)
        );
        tokio::time::advance(Duration::from_secs(7)).await;
        // Started at 7 s: not cut at 10 s by the first call's deadline, but at 17 s.
        let r = timeout_on(
            timer.as_mut(),
            Instant::now() + t,
            std::future::pending::<()>(),
        )
        .await;
        assert_eq!(r, None);
        assert_eq!(start.elapsed(), Duration::from_secs(17));
        // After a timeout the next call again gets its full period.
        let at = Instant::now();
        let slow = async {
            tokio::time::sleep(Duration::from_secs(9)).await;
            2
        };
        assert_eq!(timeout_on(timer.as_mut(), at + t, slow).await, Some(2));
        assert_eq!(at.elapsed(), Duration::from_secs(9));
        let r = timeout_on(
            timer.as_mut(),
            Instant::now() + t,
            std::future::pending::<()>(),
        )
        .await;
        assert_eq!(r, None);
        assert_eq!(at.elapsed(), Duration::from_secs(19));
    }

    #[tokio::test(start_paused = true)]
    async fn timeout_on_moves_the_timer_back_for_an_earlier_deadline() {
        let start = Instant::now();
        let mut timer = Box::pin(tokio::time::sleep(Duration::from_secs(60)));
        let early = start + Duration::from_secs(1);
        assert_eq!(
            timeout_on(timer.as_mut(), early, std::future::pending::<()>()).await,
            None
        );
        assert_eq!(start.elapsed(), Duration::from_secs(1));
    }

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
