//! What a connection does besides its calls: how many calls it has open
//! and since when none ([`Activity`], counted by [`Tracked`] around the
//! service), and what may end it (idleness, shutdown, its service asking),
//! watched by a task of its own that raises [`Signals`] for the
//! connection's task. The connection's task is woken on every frame: what
//! it polls then is the connection and one atomic load, not a timer, a
//! watch channel and a notification each time.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::task::AtomicWaker;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::{Request, Response};
use tokio::sync::watch;
use tokio::time::Instant;

use super::{Closer, until_down};

/// What the watcher of a connection raised and its task has not seen yet.
#[derive(Debug, Default)]
pub(super) struct Signals {
    raised: AtomicU8,
    waker: AtomicWaker,
}

impl Signals {
    /// No call for the idle timeout.
    pub(super) const IDLE: u8 = 1;
    /// The process is shutting down.
    pub(super) const DOWN: u8 = 2;
    /// The connection's service asked to close it.
    pub(super) const CLOSE: u8 = 4;

    fn raise(&self, signal: u8) {
        self.raised.fetch_or(signal, Ordering::AcqRel);
        self.waker.wake();
    }

    /// The signals raised since last asked, once there is one.
    pub(super) fn next(&self) -> impl Future<Output = u8> + '_ {
        std::future::poll_fn(|cx| {
            let raised = self.raised.swap(0, Ordering::AcqRel);
            if raised != 0 {
                return Poll::Ready(raised);
            }
            self.waker.register(cx.waker());
            match self.raised.swap(0, Ordering::AcqRel) {
                0 => Poll::Pending,
                raised => Poll::Ready(raised),
            }
        })
    }
}

/// Watches what may end a connection until it is served (`served` sends
/// or drops): raises each signal once.
pub(super) async fn watch_connection(
    signals: Arc<Signals>,
    activity: Arc<Activity>,
    idle_timeout: Duration,
    (mut shutdown, closer): (watch::Receiver<bool>, Closer),
    mut served: tokio::sync::oneshot::Receiver<()>,
) {
    let (mut idle, mut down, mut asked) = (false, false, false);
    loop {
        tokio::select! {
            _ = &mut served => return,
            () = activity.idle_for(idle_timeout), if !idle => {
                idle = true;
                signals.raise(Signals::IDLE);
            }
            () = until_down(&mut shutdown), if !down => {
                down = true;
                signals.raise(Signals::DOWN);
            }
            () = closer.asked(), if !asked => {
                asked = true;
                signals.raise(Signals::CLOSE);
            }
        }
    }
}

/// How many calls a connection has open, and since when it has had none.
#[derive(Debug)]
pub(super) struct Activity {
    open: AtomicUsize,
    idle_since: Mutex<Instant>,
}

impl Activity {
    pub(super) fn new() -> Self {
        Activity {
            open: AtomicUsize::new(0),
            idle_since: Mutex::new(Instant::now()),
        }
    }

    pub(super) fn start(self: &Arc<Self>) -> CallOpen {
        self.open.fetch_add(1, Ordering::SeqCst);
        CallOpen(self.clone())
    }

    /// Resolves once no call has been open for `timeout`.
    pub(super) async fn idle_for(&self, timeout: Duration) {
        loop {
            let idle_since = self
                .idle_since
                .lock()
                .map(|t| *t)
                .unwrap_or_else(|_| Instant::now());
            let busy = self.open.load(Ordering::SeqCst) > 0;
            let now = Instant::now();
            if !busy && now >= idle_since + timeout {
                return;
            }
            let next = if busy {
                now + timeout
            } else {
                idle_since + timeout
            };
            tokio::time::sleep_until(next).await;
        }
    }
}

/// A call in progress; dropped when its response is done (or abandoned).
#[derive(Debug)]
pub(super) struct CallOpen(Arc<Activity>);

impl Drop for CallOpen {
    fn drop(&mut self) {
        if self.0.open.fetch_sub(1, Ordering::SeqCst) == 1 {
            if let Ok(mut since) = self.0.idle_since.lock() {
                *since = Instant::now();
            }
        }
    }
}

/// A service whose calls count as activity until their responses end.
#[derive(Debug)]
pub(super) struct Tracked<S> {
    pub(super) inner: Arc<S>,
    pub(super) activity: Arc<Activity>,
}

impl<S> Clone for Tracked<S> {
    fn clone(&self) -> Self {
        Tracked {
            inner: self.inner.clone(),
            activity: self.activity.clone(),
        }
    }
}

impl<S, B> hyper::service::Service<Request<Incoming>> for Tracked<S>
where
    S: hyper::service::Service<Request<Incoming>, Response = Response<B>>,
    S::Future: Send + 'static,
    B: Body,
{
    type Response = Response<TrackedBody<B>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        let open = self.activity.start();
        let future = self.inner.call(req);
        Box::pin(async move {
            let response = future.await?;
            Ok(response.map(|body| TrackedBody { body, _open: open }))
        })
    }
}

/// A response body that keeps its call counted as open until it is done.
#[derive(Debug)]
pub struct TrackedBody<B> {
    body: B,
    _open: CallOpen,
}

impl<B: Body + Unpin> Body for TrackedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
