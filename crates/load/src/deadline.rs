//! A virtual user's request timeout that touches the runtime's timer wheel about once per
//! timeout period instead of once per request.
//!
//! Why: `tokio::time::timeout` registers a timer entry for every request and removes it when
//! the response comes first — at ~200k requests/s on one thread that insert/remove pair (and
//! its clock read) is a measurable share of the generator's user-space time. Here one `Sleep`
//! per user stays armed at the deadline of an *earlier* request; when it fires, the current
//! request's deadline is checked and the sleep is moved to it if it has not passed yet. Since
//! a user's deadlines only move forward, the sleep never fires late.
use std::future::Future;
use std::pin::{pin, Pin};
use std::task::Poll;
use std::time::Duration;

use tokio::time::{Instant, Sleep};

/// The request did not finish before its deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TimedOut;

/// One user's reusable request timeout (see the module docs).
#[derive(Debug)]
pub(crate) struct RequestDeadline {
    sleep: Option<Pin<Box<Sleep>>>,
}

impl RequestDeadline {
    pub(crate) fn new() -> Self {
        Self { sleep: None }
    }

    /// Runs `fut` until it completes or `timeout` after `started` has passed.
    pub(crate) async fn run<F: Future>(
        &mut self,
        started: std::time::Instant,
        timeout: Duration,
        fut: F,
    ) -> Result<F::Output, TimedOut> {
        let deadline = Instant::from_std(started) + timeout;
        let sleep = self
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if sleep.deadline() > deadline {
            // A shorter timeout than before (never for one user's constant timeout).
            sleep.as_mut().reset(deadline);
        }
        let mut fut = pin!(fut);
        std::future::poll_fn(|cx| {
            if let Poll::Ready(v) = fut.as_mut().poll(cx) {
                return Poll::Ready(Ok(v));
            }
            loop {
                match sleep.as_mut().poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(()) if sleep.deadline() >= deadline => {
                        return Poll::Ready(Err(TimedOut))
                    }
                    // An earlier request's deadline: move on to this one's.
                    Poll::Ready(()) => sleep.as_mut().reset(deadline),
                }
            }
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> std::time::Instant {
        Instant::now().into_std()
    }

    #[tokio::test(start_paused = true)]
    async fn each_request_gets_its_own_deadline() {
        let t = Duration::from_secs(10);
        let mut d = RequestDeadline::new();
        let start = Instant::now();
        // Fast requests leave the sleep armed at the first deadline (t = 10 s).
        assert_eq!(d.run(now(), t, async { 1 }).await, Ok(1));
        tokio::time::advance(Duration::from_secs(7)).await;
        // Started at 7 s: must not be cut at 10 s by the first request's deadline, but at 17 s.
        let r = d.run(now(), t, std::future::pending::<()>()).await;
        assert_eq!(r, Err(TimedOut));
        assert_eq!(start.elapsed(), Duration::from_secs(17));
        // After a timeout the next request again gets its full period.
        let at = Instant::now();
        let slow = async {
            tokio::time::sleep(Duration::from_secs(9)).await;
            2
        };
        assert_eq!(d.run(now(), t, slow).await, Ok(2));
        assert_eq!(at.elapsed(), Duration::from_secs(9));
        let r = d.run(now(), t, std::future::pending::<()>()).await;
        assert_eq!(r, Err(TimedOut));
        assert_eq!(at.elapsed(), Duration::from_secs(19));
    }

    #[tokio::test(start_paused = true)]
    async fn a_shorter_timeout_moves_the_armed_deadline_back() {
        let mut d = RequestDeadline::new();
        let start = Instant::now();
        assert_eq!(
            d.run(now(), Duration::from_secs(60), async {}).await,
            Ok(())
        );
        let r = d
            .run(now(), Duration::from_secs(1), std::future::pending::<()>())
            .await;
        assert_eq!(r, Err(TimedOut));
        assert_eq!(start.elapsed(), Duration::from_secs(1));
    }
}
