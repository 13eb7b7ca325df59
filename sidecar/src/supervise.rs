//! Open calls stay judged: a permit holds for the revision that gave it.
//!
//! A call lets data through for as long as it is open: a server stream, a
//! bidirectional stream, a slow upload. Each permitted call the proxy
//! forwards gets a supervisor that asks again when the decision server
//! announces a new revision, and every `--max-stream-age` in any case (so
//! a sidecar that cannot hear the server still re-judges, from its cache
//! while the answer's TTL lasts and not after). A call the new answer does
//! not permit (or permits with other obligations than the app was given)
//! is ended, in both directions: the request body the proxy streams to the
//! app fails, so the app's stream is reset (HTTP/1.1: its connection
//! closed), and the response body the caller reads ends (gRPC over
//! HTTP/2: `PERMISSION_DENIED` in trailers; otherwise the stream or
//! connection is reset).
//!
//! The supervisor lives until both bodies are done. If it stops without a
//! refusal, the call is ended too: nothing goes on unsupervised.
//!
//! Re-judging goes through the gate, so a thousand open calls asking the
//! same question make one call to the decision server.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use purposegate_proto::v1 as pb;
use tokio::sync::watch;
use tokio_stream::Stream;
use tokio_stream::wrappers::WatchStream;

use crate::cache::Answer;
use crate::gate::Gate;
use crate::intercept::{Refusal, judge_again};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What supervises open calls: the gate, the revisions the sidecar hears
/// of, and how long a call may go without being judged again.
#[derive(Debug, Clone)]
pub struct Supervisor {
    gate: Gate,
    revisions: watch::Receiver<Option<pb::PolicyRevision>>,
    max_age: Duration,
}

impl Supervisor {
    pub fn new(
        gate: Gate,
        revisions: watch::Receiver<Option<pb::PolicyRevision>>,
        max_age: Duration,
    ) -> Self {
        Supervisor {
            gate,
            revisions,
            max_age,
        }
    }

    /// Supervises a call permitted by `answer` to `request` until every
    /// [`Supervised`] handle of it is dropped.
    pub fn watch(&self, request: pb::CheckRequest, answer: &Answer) -> Supervised {
        let (ending, refusal) = watch::channel(None);
        let task = tokio::spawn(supervise(
            self.gate.clone(),
            request,
            answer.clone(),
            self.revisions.clone(),
            self.max_age,
            ending,
        ));
        Supervised {
            changes: WatchStream::from_changes(refusal.clone()),
            refusal,
            task: Arc::new(AbortOnDrop(task.abort_handle())),
            ended: None,
        }
    }
}

/// Aborts the supervisor when the last handle of its call goes.
#[derive(Debug)]
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// One direction's handle on a supervised call: ready with the refusal once
/// the call must end.
#[derive(Debug)]
pub struct Supervised {
    refusal: watch::Receiver<Option<Refusal>>,
    /// Wakes the body that polls it when the refusal changes.
    changes: WatchStream<Option<Refusal>>,
    task: Arc<AbortOnDrop>,
    /// The refusal, once seen.
    ended: Option<Refusal>,
}

impl Clone for Supervised {
    fn clone(&self) -> Self {
        Supervised {
            refusal: self.refusal.clone(),
            changes: WatchStream::from_changes(self.refusal.clone()),
            task: self.task.clone(),
            ended: self.ended.clone(),
        }
    }
}

impl Supervised {
    /// Ready with the refusal that ends the call; pending while it may go on.
    pub fn poll_ended(&mut self, cx: &mut Context<'_>) -> Poll<Refusal> {
        if let Some(refusal) = &self.ended {
            return Poll::Ready(refusal.clone());
        }
        // A refusal given before this handle first looked.
        if let Some(refusal) = self.refusal.borrow().clone() {
            self.ended = Some(refusal.clone());
            return Poll::Ready(refusal);
        }
        loop {
            match Pin::new(&mut self.changes).poll_next(cx) {
                Poll::Ready(Some(Some(refusal))) => {
                    self.ended = Some(refusal.clone());
                    return Poll::Ready(refusal);
                }
                Poll::Ready(Some(None)) => continue,
                // The supervisor stopped without a refusal: nothing goes on
                // unsupervised.
                Poll::Ready(None) => {
                    let refusal =
                        Refusal::refused("the call's supervision stopped; it is ended".to_string());
                    self.ended = Some(refusal.clone());
                    return Poll::Ready(refusal);
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    /// Waits for the refusal that ends the call.
    pub async fn ended(&mut self) -> Refusal {
        std::future::poll_fn(|cx| self.poll_ended(cx)).await
    }
}

async fn supervise(
    gate: Gate,
    request: pb::CheckRequest,
    permit: Answer,
    mut revisions: watch::Receiver<Option<pb::PolicyRevision>>,
    max_age: Duration,
    ending: watch::Sender<Option<Refusal>>,
) {
    // A revision announced since the decision was made: judge at once.
    let mut judge_now = revisions
        .borrow_and_update()
        .as_ref()
        .is_some_and(|r| r.revision != permit.policy_revision);
    let mut hearing = true;
    loop {
        if !judge_now {
            tokio::select! {
                changed = revisions.changed(), if hearing => {
                    // The follower of revisions is gone: only the age is left.
                    if changed.is_err() {
                        hearing = false;
                        continue;
                    }
                }
                () = tokio::time::sleep(max_age) => {}
                () = ending.closed() => return,
            }
        }
        judge_now = false;
        let refusal = match judge_again(&gate, &request).await {
            Ok(answer) if answer.obligations == permit.obligations => continue,
            Ok(_) => Refusal::refused(
                "the permit's obligations changed since the call began; call again to learn them"
                    .to_string(),
            ),
            Err(refusal) => refusal,
        };
        tracing::info!(
            purpose = %request.purpose,
            decision = refusal.decision,
            reason = %refusal.reason,
            "an open call is no longer permitted; ending it"
        );
        ending.send_replace(Some(refusal));
        // Stay until the call's bodies are gone, so they see the refusal
        // rather than a stopped supervisor.
        ending.closed().await;
        return;
    }
}

/// Why a body ended before its end.
#[derive(Debug)]
pub struct Revoked(pub String);

impl std::fmt::Display for Revoked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the call is no longer permitted: {}", self.0)
    }
}

impl std::error::Error for Revoked {}

/// The caller's request body on its way to the app: fails once the call
/// is ended (so the app's stream is reset), and drops reserved names from
/// trailers (a caller must not slip `x-purpose` in after the decision).
#[derive(Debug)]
pub struct GuardedRequest<B> {
    body: B,
    supervised: Option<Supervised>,
    /// The call's place among those in flight, held while either
    /// direction is open.
    _place: Arc<tokio::sync::OwnedSemaphorePermit>,
}

impl<B> GuardedRequest<B> {
    pub fn new(
        body: B,
        supervised: Option<Supervised>,
        place: Arc<tokio::sync::OwnedSemaphorePermit>,
    ) -> Self {
        GuardedRequest {
            body,
            supervised,
            _place: place,
        }
    }
}

impl<B> Body for GuardedRequest<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Some(supervised) = self.supervised.as_mut() {
            if let Poll::Ready(refusal) = supervised.poll_ended(cx) {
                return Poll::Ready(Some(Err(Box::new(Revoked(refusal.reason)))));
            }
        }
        match Pin::new(&mut self.body).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => Poll::Ready(Some(Ok(match frame.into_trailers() {
                Ok(mut trailers) => {
                    crate::headers::remove_reserved(&mut trailers);
                    Frame::trailers(trailers)
                }
                Err(frame) => frame,
            }))),
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
