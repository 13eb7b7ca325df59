//! Open calls stay judged: a permit holds for the revision that gave it.
//!
//! A call lets data through for as long as it is open: a server stream, a
//! bidirectional stream, a slow upload. Each permitted call the proxy
//! forwards and that is still open [`START_AFTER`] it began (most unary
//! calls are not) gets a supervisor that asks again when the decision server
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
//! Every forwarded call is also watched for idleness: a call on which no
//! body data moves in either direction for `--call-idle-timeout` (a held
//! slow upload, a caller that stopped reading, an app that stopped
//! answering) is ended the same way (HTTP 408, gRPC `DEADLINE_EXCEEDED`).
//!
//! An ended call whose bodies are still held a second later (its caller
//! does not read, so its response body is never asked for its next frame,
//! and HTTP/2 gives a server no way to reset one stream from outside it)
//! has its connection closed.
//!
//! The supervisor lives until both bodies are done. If it stops without a
//! refusal, the call is ended too: nothing goes on unsupervised.
//!
//! A call whose permit read choices (a data subject's consent, a tenant's
//! configuration) is also judged again when the follower of `WatchChoices`
//! announces a change of its tenant's or data subject's choices (or missed
//! changes): a withdrawal ends the open calls it no longer permits.
//!
//! Re-judging goes through the gate, so a thousand open calls asking the
//! same question make one call to the decision server.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use purposegate_proto::v1 as pb;
use purposegate_runtime::listen::Closer;
use tokio::sync::watch;
use tokio::time::Instant;

mod call;
mod opened;
#[cfg(test)]
mod tests;

pub use call::Supervised;
use call::{CallState, Owner};
use opened::Opened;

use crate::cache::Answer;
use crate::gate::Gate;
use crate::intercept::judge_again;
use crate::refusal::Refusal;

/// How long an ended call's bodies may stay held before its connection is
/// closed under them.
const ENDING_GRACE: Duration = Duration::from_secs(1);

/// A call's supervisor starts this long after the call opened: most unary
/// calls are over by then and never cost a task or a timer. What happens
/// meanwhile is not missed: a revision announced since the permit is
/// judged at once when it starts, and choice changes wait in the
/// subscription taken when the call opened.
pub const START_AFTER: Duration = Duration::from_millis(20);

/// The starter wakes at most once a tick: a call's supervisor starts
/// between [`START_AFTER`] and that plus a tick after the call opened.
const TICK: Duration = Duration::from_millis(10);

/// What supervises open calls: the gate, the revisions the sidecar hears
/// of, and how long a call may go without being judged again.
#[derive(Debug, Clone)]
pub struct Supervisor {
    gate: Gate,
    revisions: watch::Receiver<Option<pb::PolicyRevision>>,
    /// Whose choices changed: a call whose permit read them is judged
    /// again when they are its tenant's or data subject's.
    choices: Option<tokio::sync::broadcast::Sender<crate::pdp::ChoiceChanged>>,
    max_age: Duration,
    /// `--call-idle-timeout`.
    idle: Duration,
    /// Calls opened whose supervisors are still to start.
    opened: Arc<Opened<Start>>,
    /// Supervisors started so far.
    started: Arc<AtomicU64>,
}

/// A call whose supervisor is to start [`START_AFTER`] it opened.
#[derive(Debug)]
struct Start {
    call: Watched,
    owner: Owner,
    /// Changes of the choices its permit read, from when it opened.
    choices: Option<tokio::sync::broadcast::Receiver<crate::pdp::ChoiceChanged>>,
    /// When its inherited context expires (and the Unix second it names).
    ceiling_gone: Option<(Instant, u64)>,
}

/// A call to watch: the question it was permitted on (`None` for a call
/// `--dry-run` let through, which is only watched for idleness), and the
/// connection to close if it cannot be ended otherwise.
#[derive(Debug)]
pub struct Watched {
    pub permitted: Option<(pb::CheckRequest, Answer)>,
    pub closer: Closer,
    /// When the purpose context the call inherited expires (Unix
    /// seconds): the call ends then, its ceiling gone.
    pub inherited_until: Option<u64>,
}

impl Supervisor {
    pub fn new(
        gate: Gate,
        revisions: watch::Receiver<Option<pb::PolicyRevision>>,
        max_age: Duration,
        idle: Duration,
    ) -> Self {
        let supervisor = Supervisor {
            gate,
            revisions,
            choices: None,
            max_age,
            idle,
            opened: Arc::new(Opened::new()),
            started: Arc::default(),
        };
        tokio::spawn(starter(supervisor.clone()));
        supervisor
    }

    /// The same, judging a call again when the choices its permit read
    /// change (as the follower of `WatchChoices` announces them).
    pub fn following_choices(
        mut self,
        changes: tokio::sync::broadcast::Sender<crate::pdp::ChoiceChanged>,
    ) -> Self {
        self.choices = Some(changes);
        self
    }

    /// Supervisors started so far (calls open longer than [`START_AFTER`]).
    pub fn started(&self) -> u64 {
        self.started.load(Ordering::Relaxed)
    }

    /// Supervises `call` until every [`Supervised`] handle of it is
    /// dropped.
    pub fn watch(&self, call: Watched) -> Supervised {
        let (owner, handle) = CallState::open();
        let choices = whose(call.permitted.as_ref())
            .and(self.choices.as_ref())
            .map(tokio::sync::broadcast::Sender::subscribe);
        let ceiling_gone = call.inherited_until.map(ceiling_gone);
        let start = Start {
            call,
            owner,
            choices,
            ceiling_gone,
        };
        if let Err(start) = self.opened.push(start.owner.state().began, start) {
            // No starter (the runtime is ending): supervised at once.
            tokio::spawn(supervise(self.clone(), start));
        }
        handle
    }
}

/// Starts the supervisors of the calls opened, each [`START_AFTER`] its
/// call opened, unless the call is over by then (no handle of it is left).
/// The calls wait in the order they opened, so one timer at a time serves
/// them all, and a burst of calls costs one wake-up.
async fn starter(supervisor: Supervisor) {
    /// Closes the queue when the starter goes (its runtime ends).
    struct Closing(Arc<Opened<Start>>);
    impl Drop for Closing {
        fn drop(&mut self) {
            self.0.close();
        }
    }
    let opened = supervisor.opened.clone();
    let _closing = Closing(opened.clone());
    let mut due = Vec::new();
    let mut last = Instant::now();
    loop {
        match opened.oldest() {
            None => {
                opened.came().await;
                continue;
            }
            // At most one wake-up a tick: under load a wake-up serves
            // every call opened within it.
            Some(began) => tokio::time::sleep_until((began + START_AFTER).max(last + TICK)).await,
        }
        let now = Instant::now();
        last = now;
        opened.take_opened_by(now.checked_sub(START_AFTER).unwrap_or(now), &mut due);
        // Over by now (the most): dropped here, off every call's path.
        for start in due.drain(..) {
            if start.owner.state().handles() > 0 {
                tokio::spawn(supervise(supervisor.clone(), start));
            }
        }
    }
}

/// When a context expiring at `expires` (Unix s) is gone: its second past.
fn ceiling_gone(expires: u64) -> (Instant, u64) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let at = Duration::from_secs(expires.saturating_add(1));
    (Instant::now() + at.saturating_sub(now), expires)
}

/// Whose choices a permit read: its tenant and data subject.
fn whose(permitted: Option<&(pb::CheckRequest, Answer)>) -> Option<(String, String)> {
    let (request, permit) = permitted?;
    permit.choices_revision?;
    let resource = request.resource.as_ref()?;
    Some((resource.owner_tenant.clone(), resource.data_subject.clone()))
}

async fn supervise(supervisor: Supervisor, start: Start) {
    supervisor.started.fetch_add(1, Ordering::Relaxed);
    let Start {
        call,
        owner,
        choices,
        ceiling_gone,
    } = start;
    let refusal = until_ended(&supervisor, (call.permitted, choices), ceiling_gone, &owner).await;
    let Some(refusal) = refusal else {
        // Both bodies are done.
        return;
    };
    tracing::info!(
        kind = ?refusal.kind,
        decision = refusal.decision,
        reason = %refusal.reason,
        "ending an open call"
    );
    owner.end(refusal);
    // Stay until the call's bodies are gone, so they see the refusal
    // rather than a stopped supervisor. A body never asked for its next
    // frame (its caller stopped reading) cannot see it: its connection is
    // closed under it.
    if tokio::time::timeout(ENDING_GRACE, owner.all_gone())
        .await
        .is_err()
    {
        tracing::info!("an ended call's caller is not reading; closing its connection");
        call.closer.close();
        owner.all_gone().await;
    }
}

/// Watches a call until it must end (the refusal) or both its bodies are
/// done (`None`).
async fn until_ended(
    supervisor: &Supervisor,
    (permitted, mut choices): (
        Option<(pb::CheckRequest, Answer)>,
        Option<tokio::sync::broadcast::Receiver<crate::pdp::ChoiceChanged>>,
    ),
    ceiling_gone: Option<(Instant, u64)>,
    owner: &Owner,
) -> Option<Refusal> {
    let mut revisions = supervisor.revisions.clone();
    // A revision announced since the decision was made: judge at once.
    let mut judge_now = permitted.as_ref().is_some_and(|(_, permit)| {
        revisions
            .borrow_and_update()
            .as_ref()
            .is_some_and(|r| r.revision != permit.policy_revision)
    });
    let judged = permitted.is_some();
    let mut hearing = judged;
    // Calls whose permit read choices hear of their changes (subscribed
    // when the call opened).
    let whose = whose(permitted.as_ref());
    let call = owner.state();
    let mut next_age = call.began + supervisor.max_age;
    loop {
        if !judge_now {
            let idle_at = call.last_moved() + supervisor.idle;
            tokio::select! {
                changed = revisions.changed(), if hearing => {
                    // The follower of revisions is gone: only the age is left.
                    if changed.is_err() {
                        hearing = false;
                        continue;
                    }
                }
                () = tokio::time::sleep_until(next_age), if judged => {}
                changed = next_change(&mut choices) => {
                    let touched = match &changed {
                        Ok(c) => whose.as_ref().is_some_and(|(t, s)| c.touches(t, s)),
                        // Changes were missed: judge again to be sure.
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => true,
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                            choices = None;
                            false
                        }
                    };
                    if !touched {
                        continue;
                    }
                }
                () = sleep_until_some(ceiling_gone.map(|(at, _)| at)) => {
                    let expires = ceiling_gone.map_or(0, |(_, expires)| expires);
                    return Some(Refusal::refused(format!(
                        "the purpose context the call inherited expired (at {expires}, Unix seconds); it is ended"
                    )));
                }
                () = tokio::time::sleep_until(idle_at) => {
                    if call.last_moved() + supervisor.idle <= Instant::now() {
                        return Some(Refusal::idle(format!(
                            "the call moved no data for {:?} (--call-idle-timeout); it is ended",
                            supervisor.idle
                        )));
                    }
                    continue;
                }
                () = owner.all_gone() => return None,
            }
        }
        judge_now = false;
        next_age = Instant::now() + supervisor.max_age;
        let Some((request, permit)) = &permitted else {
            continue;
        };
        // Boxed: asking is rare, and an open call's supervisor should
        // weigh little while it waits.
        let refusal = match Box::pin(judge_again(&supervisor.gate, request)).await {
            Ok(answer) if answer.obligations == permit.obligations => continue,
            Ok(_) => Refusal::refused(
                "the permit's obligations changed since the call began; call again to learn them"
                    .to_string(),
            ),
            Err(refusal) => refusal,
        };
        tracing::debug!(purpose = %request.purpose, "re-judged: no longer permitted");
        return Some(refusal);
    }
}

/// The next change of choices, or never without a receiver.
async fn next_change(
    choices: &mut Option<tokio::sync::broadcast::Receiver<crate::pdp::ChoiceChanged>>,
) -> Result<crate::pdp::ChoiceChanged, tokio::sync::broadcast::error::RecvError> {
    match choices {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
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
