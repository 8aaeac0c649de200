//! Waiting for a [`CancellationToken`] in a task that is polled for other reasons all the
//! time (a client connection: every read, backend answer and write wakes it).
//!
//! Why: `token.cancelled()` answers every poll by taking the token's mutex (tokio-util
//! checks `is_cancelled` under it) and then the waiter list's mutex of tokio's `Notify`
//! (to refresh the waker): two locks per poll, several polls per request, and all the
//! connections of a listener share the token. [`Cancelled`] asks the token only when the
//! token itself woke it (or on the first poll, or when the task's waker changed); any other
//! poll costs an atomic load. Used by every client connection's task (`listener.rs`) and
//! the HTTP/1 connection loop (`proxy::h1::server`).
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};

pin_project_lite::pin_project! {
    /// [`CancellationToken::cancelled`] with cheap polls: see the module docs.
    pub(crate) struct Cancelled<'a> {
        #[pin]
        wait: WaitForCancellationFuture<'a>,
        signal: Arc<Signal>,
        // The task's waker as `signal` holds it; `None` before the first poll (or after
        // the token fired: then every poll asks it).
        registered: Option<Waker>,
    }
}

/// The waker the token's future gets: notes the wake-up, then wakes the task.
struct Signal {
    woken: AtomicBool,
    task: Mutex<Option<Waker>>,
}

impl Wake for Signal {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        // Cloned out of the lock: the task is woken without holding it.
        let task = self.task.lock().ok().and_then(|t| t.clone());
        if let Some(t) = task {
            t.wake();
        }
    }
}

impl<'a> Cancelled<'a> {
    pub(crate) fn new(token: &'a CancellationToken) -> Self {
        Self {
            wait: token.cancelled(),
            signal: Arc::new(Signal {
                woken: AtomicBool::new(false),
                task: Mutex::new(None),
            }),
            registered: None,
        }
    }
}

impl Future for Cancelled<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.project();
        if let Some(w) = this.registered.as_ref() {
            if w.will_wake(cx.waker()) && !this.signal.woken.load(Ordering::Acquire) {
                return Poll::Pending;
            }
        }
        // The first poll, a wake-up from the token, or another task's waker: ask the token.
        // Cleared before asking, so that a wake-up that comes while it is asked is kept.
        this.signal.woken.store(false, Ordering::Release);
        if !this
            .registered
            .as_ref()
            .is_some_and(|w| w.will_wake(cx.waker()))
        {
            if let Ok(mut t) = this.signal.task.lock() {
                *t = Some(cx.waker().clone());
            }
            *this.registered = Some(cx.waker().clone());
        }
        let waker = Waker::from(this.signal.clone());
        let r = this.wait.poll(&mut Context::from_waker(&waker));
        if r.is_ready() {
            *this.registered = None;
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// A waker that counts its wake-ups.
    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn wakes_the_task_once_the_token_fires_and_then_stays_ready() {
        let token = CancellationToken::new();
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(count.clone());
        let mut cx = Context::from_waker(&waker);
        let mut c = std::pin::pin!(Cancelled::new(&token));
        assert!(c.as_mut().poll(&mut cx).is_pending());
        // Polls for other reasons: nothing changes.
        assert!(c.as_mut().poll(&mut cx).is_pending());
        assert_eq!(count.0.load(Ordering::SeqCst), 0);
        token.cancel();
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        assert!(c.as_mut().poll(&mut cx).is_ready());
        assert!(c.as_mut().poll(&mut cx).is_ready());
    }

    #[test]
    fn a_token_cancelled_before_the_first_poll_is_seen_at_once() {
        let token = CancellationToken::new();
        token.cancel();
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(count.clone());
        let mut c = std::pin::pin!(Cancelled::new(&token));
        assert!(c.as_mut().poll(&mut Context::from_waker(&waker)).is_ready());
    }

    #[test]
    fn a_new_task_waker_is_the_one_woken() {
        let token = CancellationToken::new();
        let first = Arc::new(Count(AtomicUsize::new(0)));
        let second = Arc::new(Count(AtomicUsize::new(0)));
        let mut c = std::pin::pin!(Cancelled::new(&token));
        let w1 = Waker::from(first.clone());
        assert!(c.as_mut().poll(&mut Context::from_waker(&w1)).is_pending());
        let w2 = Waker::from(second.clone());
        assert!(c.as_mut().poll(&mut Context::from_waker(&w2)).is_pending());
        token.cancel();
        assert_eq!(first.0.load(Ordering::SeqCst), 0);
        assert_eq!(second.0.load(Ordering::SeqCst), 1);
        assert!(c.as_mut().poll(&mut Context::from_waker(&w2)).is_ready());
    }

    #[tokio::test]
    async fn a_token_cancelled_from_another_task_ends_the_wait() {
        let token = CancellationToken::new();
        let t = token.clone();
        let waiter = tokio::spawn(async move { Cancelled::new(&t).await });
        tokio::task::yield_now().await;
        token.cancel();
        waiter.await.unwrap();
    }
}
