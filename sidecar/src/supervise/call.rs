//! What one supervised call's handles and its supervisor share: whether
//! the call must end (and why), whose tasks to wake when it must, how many
//! handles are left, and when data last moved.
//!
//! Every permitted call pays for this, most of them unary calls over in
//! well under a millisecond, so it costs one allocation when the call
//! opens and a few atomic operations as its bodies move: a handle
//! registers its task's waker once (again only when another task polls
//! it), and ending the call wakes each registered task once.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::refusal::Refusal;

/// One call's shared state.
#[derive(Debug)]
pub(super) struct CallState {
    /// Why the call must end, once it must.
    refusal: OnceLock<Refusal>,
    /// The supervision stopped without a refusal: the call ends too.
    stopped: AtomicBool,
    /// The tasks polling the handles, each by its handle's id.
    wakers: Mutex<Vec<(u32, Waker)>>,
    /// Handles alive.
    handles: AtomicUsize,
    next_id: AtomicU32,
    /// Told when the last handle goes.
    gone: Notify,
    /// When the call began.
    pub(super) began: Instant,
    /// When body data last moved: milliseconds since `began`.
    last_ms: AtomicU64,
}

impl CallState {
    /// A call opening now, with its first handle.
    pub(super) fn open() -> (Owner, Supervised) {
        let state = Arc::new(CallState {
            refusal: OnceLock::new(),
            stopped: AtomicBool::new(false),
            wakers: Mutex::new(Vec::new()),
            handles: AtomicUsize::new(1),
            next_id: AtomicU32::new(1),
            gone: Notify::new(),
            began: Instant::now(),
            last_ms: AtomicU64::new(0),
        });
        let handle = Supervised {
            state: state.clone(),
            id: 0,
            registered: None,
            ended: false,
        };
        (Owner(state), handle)
    }

    fn is_ended(&self) -> bool {
        self.refusal.get().is_some() || self.stopped.load(Ordering::Acquire)
    }

    /// Wakes every task that polled a handle; each sees the call ended.
    fn wake_all(&self) {
        let wakers = std::mem::take(&mut *self.wakers());
        for (_, waker) in wakers {
            waker.wake();
        }
    }

    fn wakers(&self) -> std::sync::MutexGuard<'_, Vec<(u32, Waker)>> {
        match self.wakers.lock() {
            Ok(wakers) => wakers,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    fn unregister(&self, id: u32) {
        self.wakers().retain(|(of, _)| *of != id);
    }

    fn register(&self, id: u32, waker: &Waker) {
        let mut wakers = self.wakers();
        match wakers.iter_mut().find(|(of, _)| *of == id) {
            Some((_, known)) => known.clone_from(waker),
            None => wakers.push((id, waker.clone())),
        }
    }

    /// When data last moved.
    pub(super) fn last_moved(&self) -> Instant {
        self.began + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }

    /// Handles alive.
    pub(super) fn handles(&self) -> usize {
        self.handles.load(Ordering::Acquire)
    }
}

/// The supervisor's side of a call (or, before it starts, the starter's):
/// ends the call. Dropped without ending it, the call ends too: nothing
/// goes on unsupervised.
#[derive(Debug)]
pub(super) struct Owner(Arc<CallState>);

impl Owner {
    pub(super) fn state(&self) -> &CallState {
        &self.0
    }

    /// Ends the call with `refusal`, waking whatever polls its handles.
    pub(super) fn end(&self, refusal: Refusal) {
        // A call is ended once; a second refusal is not news.
        if self.0.refusal.set(refusal).is_ok() {
            self.0.wake_all();
        }
    }

    /// Returns once every handle of the call is gone.
    pub(super) async fn all_gone(&self) {
        while self.0.handles() > 0 {
            self.0.gone.notified().await;
        }
    }
}

impl Drop for Owner {
    fn drop(&mut self) {
        if !self.0.is_ended() && self.0.handles() > 0 {
            self.0.stopped.store(true, Ordering::Release);
            self.0.wake_all();
        }
    }
}

/// One direction's handle on a supervised call: ready with the refusal once
/// the call must end.
#[derive(Debug)]
pub struct Supervised {
    state: Arc<CallState>,
    /// Which handle this is, for its waker's place.
    id: u32,
    /// The waker last registered for this handle.
    registered: Option<Waker>,
    /// Whether the end was seen.
    ended: bool,
}

impl Clone for Supervised {
    fn clone(&self) -> Self {
        self.state.handles.fetch_add(1, Ordering::AcqRel);
        Supervised {
            state: self.state.clone(),
            id: self.state.next_id.fetch_add(1, Ordering::Relaxed),
            registered: None,
            ended: self.ended,
        }
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        if self.registered.is_some() {
            // Its task's waker goes with it: a long call whose request
            // ended keeps no finished task alive.
            self.state.unregister(self.id);
        }
        if self.state.handles.fetch_sub(1, Ordering::AcqRel) == 1 {
            // Stored if no supervisor waits yet; none starts after this.
            self.state.gone.notify_one();
        }
    }
}

impl Supervised {
    /// Body data of the call moved now.
    pub fn moved(&self) {
        let state = &self.state;
        let ms = u64::try_from(state.began.elapsed().as_millis()).unwrap_or(u64::MAX);
        // Written only when it moves on: both directions' tasks report,
        // often on different threads, and a write each frame would bounce
        // the line between them.
        if ms > state.last_ms.load(Ordering::Relaxed) {
            state.last_ms.fetch_max(ms, Ordering::Relaxed);
        }
    }

    /// Ready with the refusal that ends the call; pending while it may go on.
    pub fn poll_ended(&mut self, cx: &mut Context<'_>) -> Poll<Refusal> {
        if self.ended || self.state.is_ended() {
            self.ended = true;
            return Poll::Ready(self.refusal_seen());
        }
        let waker = cx.waker();
        if !self.registered.as_ref().is_some_and(|r| r.will_wake(waker)) {
            self.state.register(self.id, waker);
            self.registered = Some(waker.clone());
            // Ended while registering: its wake may have missed this one.
            if self.state.is_ended() {
                self.ended = true;
                return Poll::Ready(self.refusal_seen());
            }
        }
        Poll::Pending
    }

    /// The refusal given; a supervision that stopped without one ends the
    /// call too.
    fn refusal_seen(&self) -> Refusal {
        self.state.refusal.get().cloned().unwrap_or_else(|| {
            Refusal::refused("the call's supervision stopped; it is ended".to_string())
        })
    }

    /// The refusal that ended the call, if it was ended.
    pub fn ended_now(&self) -> Option<Refusal> {
        self.state.refusal.get().cloned()
    }

    /// Waits for the refusal that ends the call.
    pub async fn ended(&mut self) -> Refusal {
        std::future::poll_fn(|cx| self.poll_ended(cx)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn ending_wakes_every_handle_whichever_task_polls_it() {
        let (owner, first) = CallState::open();
        let handles = [first.clone(), first.clone(), first];
        let waiting: Vec<_> = handles
            .into_iter()
            .map(|mut handle| tokio::spawn(async move { handle.ended().await }))
            .collect();
        tokio::task::yield_now().await;
        owner.end(Refusal::refused("no longer permitted".to_string()));
        for waiter in waiting {
            let refusal = tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
                .await
                .expect("woken");
            assert_eq!(refusal.unwrap().reason, "no longer permitted");
        }
        tokio::time::timeout(std::time::Duration::from_secs(5), owner.all_gone())
            .await
            .expect("every handle gone");
    }

    #[test]
    fn a_dropped_handle_takes_its_waker_with_it() {
        let (_owner, mut first) = CallState::open();
        let mut second = first.clone();
        let mut cx = Context::from_waker(Waker::noop());
        assert!(first.poll_ended(&mut cx).is_pending());
        assert!(second.poll_ended(&mut cx).is_pending());
        assert_eq!(first.state.wakers().len(), 2);
        let state = first.state.clone();
        drop(first);
        assert_eq!(state.wakers().len(), 1);
        drop(second);
        assert!(state.wakers().is_empty());
    }

    #[tokio::test]
    async fn an_owner_dropped_without_a_refusal_ends_the_call() {
        let (owner, mut handle) = CallState::open();
        let mut other = handle.clone();
        let waiting = tokio::spawn(async move { other.ended().await });
        tokio::task::yield_now().await;
        drop(owner);
        assert!(
            waiting
                .await
                .unwrap()
                .reason
                .contains("supervision stopped")
        );
        assert!(handle.ended().await.reason.contains("supervision stopped"));
        assert!(handle.ended_now().is_none());
    }

    #[tokio::test]
    async fn all_gone_returns_once_the_last_handle_goes() {
        let (owner, handle) = CallState::open();
        let other = handle.clone();
        assert_eq!(owner.state().handles(), 2);
        drop(handle);
        let gone = tokio::spawn(async move {
            owner.all_gone().await;
            owner
        });
        tokio::task::yield_now().await;
        assert!(!gone.is_finished());
        drop(other);
        let owner = gone.await.unwrap();
        assert_eq!(owner.state().handles(), 0);
    }
}
