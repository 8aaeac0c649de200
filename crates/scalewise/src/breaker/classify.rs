//! What counts as a failure.
//!
//! A [`Classify`] looks at a call's result and says whether the breaker (or retry) should
//! count it as a success, a failure, or not at all. Errors are failures by default; HTTP
//! responses are judged by status ranges.
use std::ops::RangeInclusive;

/// The verdict on one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Counts as a success.
    Success,
    /// Counts as a failure.
    Failure,
    /// Not counted (for example a client error such as 404, which says nothing about the
    /// health of the backend).
    Ignored,
}

/// Judges a call's result.
pub trait Classify<T, E>: Send + Sync {
    /// The verdict on `result`.
    fn classify(&self, result: &Result<T, E>) -> Verdict;
}

/// Every `Err` is a failure, every `Ok` a success.
#[derive(Debug, Clone, Copy, Default)]
pub struct ErrorsAreFailures;

impl<T, E> Classify<T, E> for ErrorsAreFailures {
    fn classify(&self, result: &Result<T, E>) -> Verdict {
        if result.is_ok() {
            Verdict::Success
        } else {
            Verdict::Failure
        }
    }
}

/// A classifier from a closure, e.g. `ClassifyFn(|r: &Result<u16, ()>| ...)`.
#[derive(Debug, Clone, Copy)]
pub struct ClassifyFn<F>(pub F);

impl<T, E, F> Classify<T, E> for ClassifyFn<F>
where
    F: Fn(&Result<T, E>) -> Verdict + Send + Sync,
{
    fn classify(&self, result: &Result<T, E>) -> Verdict {
        (self.0)(result)
    }
}

/// HTTP responses: a status in one of `failure` ranges is a failure (default: 500-599),
/// any other status a success; errors are failures. Timeouts are errors, so they count.
///
/// ```
/// use scalewise::breaker::classify::{Classify, HttpStatus, Verdict};
///
/// let c = HttpStatus::server_errors().with_failure(429..=429);
/// let resp = |code: u16| http::Response::builder().status(code).body(()).unwrap();
/// assert_eq!(c.classify(&Ok::<_, ()>(resp(503))), Verdict::Failure);
/// assert_eq!(c.classify(&Ok::<_, ()>(resp(429))), Verdict::Failure);
/// assert_eq!(c.classify(&Ok::<_, ()>(resp(404))), Verdict::Success);
/// ```
#[derive(Debug, Clone)]
pub struct HttpStatus {
    failure: Vec<RangeInclusive<u16>>,
    ignored: Vec<RangeInclusive<u16>>,
}

impl Default for HttpStatus {
    fn default() -> Self {
        Self::server_errors()
    }
}

impl HttpStatus {
    /// 5xx are failures.
    pub fn server_errors() -> Self {
        Self {
            failure: vec![500..=599],
            ignored: Vec::new(),
        }
    }

    /// Also counts statuses in `range` as failures.
    pub fn with_failure(mut self, range: RangeInclusive<u16>) -> Self {
        self.failure.push(range);
        self
    }

    /// Statuses in `range` are not counted at all.
    pub fn with_ignored(mut self, range: RangeInclusive<u16>) -> Self {
        self.ignored.push(range);
        self
    }

    /// The verdict for a bare status code.
    pub fn status(&self, code: u16) -> Verdict {
        if self.ignored.iter().any(|r| r.contains(&code)) {
            Verdict::Ignored
        } else if self.failure.iter().any(|r| r.contains(&code)) {
            Verdict::Failure
        } else {
            Verdict::Success
        }
    }
}

impl<B, E> Classify<http::Response<B>, E> for HttpStatus {
    fn classify(&self, result: &Result<http::Response<B>, E>) -> Verdict {
        match result {
            Ok(resp) => self.status(resp.status().as_u16()),
            Err(_) => Verdict::Failure,
        }
    }
}

/// Only deadlines (ours, tower's, or an I/O `TimedOut`) are failures; other errors are
/// ignored and successes are successes. For breakers that guard latency rather than errors.
#[derive(Debug, Clone, Copy, Default)]
pub struct TimeoutsAreFailures;

impl<T, E> Classify<T, E> for TimeoutsAreFailures
where
    E: AsRef<dyn std::error::Error + Send + Sync + 'static>,
{
    fn classify(&self, result: &Result<T, E>) -> Verdict {
        match result {
            Ok(_) => Verdict::Success,
            Err(e) => {
                let e: &(dyn std::error::Error + 'static) = e.as_ref();
                if crate::timeout::is_timeout(e) {
                    Verdict::Failure
                } else {
                    Verdict::Ignored
                }
            }
        }
    }
}
