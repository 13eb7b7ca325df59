//! Open calls stay judged: a permit holds for the revision that gave it.
//!
//! A call lets data through for as long as it is open: a server stream, a
//! bidirectional stream, a slow upload. Each permitted call the proxy
//! forwards gets a supervisor that asks again when the decision server
//! announces a new revision, and every `--max-stream-age` in any case (so
//! a sidecar that cannot hear the server still re-judges, from its cache
//! while the answer's TTL lasts and not after). A call the new answer does
//! not permit is ended: the supervisor sends the denial and the proxy's
//! response body ends the call (gRPC: `PERMISSION_DENIED` in trailers;
//! HTTP: the stream or connection is reset).
//!
//! Re-judging goes through the gate, so a thousand open calls asking the
//! same question make one call to the decision server.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use purposegate_proto::v1 as pb;
use tokio::sync::{oneshot, watch};

use crate::gate::Gate;
use crate::intercept::{Denial, judge_again};

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

    /// Supervises a call permitted by `answer` to `request` until the
    /// returned handle is dropped.
    pub fn watch(&self, request: pb::CheckRequest, answer: &pb::CheckResponse) -> Supervised {
        let (ended_tx, ended) = oneshot::channel();
        let task = tokio::spawn(supervise(
            self.gate.clone(),
            request,
            answer.policy_revision.clone(),
            self.revisions.clone(),
            self.max_age,
            ended_tx,
        ));
        Supervised {
            ended: Some(ended),
            task: task.abort_handle(),
        }
    }
}

/// One supervised call: resolves with the denial that ends it.
#[derive(Debug)]
pub struct Supervised {
    ended: Option<oneshot::Receiver<Denial>>,
    task: tokio::task::AbortHandle,
}

impl Future for Supervised {
    type Output = Denial;

    /// Ready with the denial once the call must end; pending for as long
    /// as it may go on.
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Denial> {
        let Some(ended) = self.ended.as_mut() else {
            return Poll::Pending;
        };
        match Pin::new(ended).poll(cx) {
            Poll::Ready(Ok(denial)) => {
                self.ended = None;
                Poll::Ready(denial)
            }
            Poll::Ready(Err(_)) => {
                // The supervisor is gone without a denial: nothing more
                // will come.
                self.ended = None;
                Poll::Pending
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn supervise(
    gate: Gate,
    request: pb::CheckRequest,
    decided_under: String,
    mut revisions: watch::Receiver<Option<pb::PolicyRevision>>,
    max_age: Duration,
    mut ended: oneshot::Sender<Denial>,
) {
    // A revision announced since the decision was made: judge at once.
    let mut judge_now = revisions
        .borrow_and_update()
        .as_ref()
        .is_some_and(|r| r.revision != decided_under);
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
                () = ended.closed() => return,
            }
        }
        judge_now = false;
        if let Err(denial) = judge_again(&gate, &request).await {
            tracing::info!(
                purpose = %request.purpose,
                decision = denial.decision,
                reason = %denial.reason,
                "an open call is no longer permitted; ending it"
            );
            let _ = ended.send(denial);
            return;
        }
    }
}
