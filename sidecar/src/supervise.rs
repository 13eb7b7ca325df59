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

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use purposegate_proto::v1 as pb;
use purposegate_runtime::listen::Closer;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_stream::Stream;
use tokio_stream::wrappers::WatchStream;

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
    /// Calls opened, to the task that starts their supervisors.
    starts: tokio::sync::mpsc::UnboundedSender<Start>,
    /// Supervisors started so far.
    started: Arc<AtomicU64>,
}

/// A call whose supervisor is to start [`START_AFTER`] it opened.
#[derive(Debug)]
struct Start {
    call: Watched,
    progress: Progress,
    ending: watch::Sender<Option<Refusal>>,
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
        let (starts, opened) = tokio::sync::mpsc::unbounded_channel();
        let supervisor = Supervisor {
            gate,
            revisions,
            choices: None,
            max_age,
            idle,
            starts,
            started: Arc::default(),
        };
        tokio::spawn(starter(supervisor.clone(), opened));
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
        let (ending, refusal) = watch::channel(None);
        let progress = Progress::new();
        let choices = whose(call.permitted.as_ref())
            .and(self.choices.as_ref())
            .map(tokio::sync::broadcast::Sender::subscribe);
        let ceiling_gone = call.inherited_until.map(ceiling_gone);
        let start = Start {
            call,
            progress: progress.clone(),
            ending,
            choices,
            ceiling_gone,
        };
        if let Err(unsent) = self.starts.send(start) {
            // No starter (the runtime is ending): supervised at once.
            tokio::spawn(supervise(self.clone(), unsent.0));
        }
        Supervised {
            changes: WatchStream::from_changes(refusal.clone()),
            refusal,
            ended: false,
            progress,
        }
    }
}

/// When a call last moved body data, in either direction: milliseconds
/// since the call began, written by its bodies with each frame.
#[derive(Debug, Clone)]
pub struct Progress {
    began: Instant,
    last_ms: Arc<AtomicU64>,
}

impl Progress {
    fn new() -> Self {
        Progress {
            began: Instant::now(),
            last_ms: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Data moved now.
    pub fn moved(&self) {
        let ms = u64::try_from(self.began.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.fetch_max(ms, Ordering::Relaxed);
    }

    /// When data last moved.
    fn last(&self) -> Instant {
        self.began + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }
}

/// Starts the supervisors of the calls opened, each [`START_AFTER`] its
/// call opened, unless the call is over by then (no handle of it is left).
/// The calls come in the order they opened, so one timer at a time serves
/// them all.
async fn starter(supervisor: Supervisor, mut opened: tokio::sync::mpsc::UnboundedReceiver<Start>) {
    let mut next = None;
    loop {
        let start = match next.take() {
            Some(start) => start,
            None => match opened.recv().await {
                Some(start) => start,
                None => return,
            },
        };
        tokio::time::sleep_until(start.progress.began + START_AFTER).await;
        begin(&supervisor, start);
        // And every other call due by now.
        while let Ok(start) = opened.try_recv() {
            if start.progress.began + START_AFTER > Instant::now() {
                next = Some(start);
                break;
            }
            begin(&supervisor, start);
        }
    }
}

fn begin(supervisor: &Supervisor, start: Start) {
    if !start.ending.is_closed() {
        tokio::spawn(supervise(supervisor.clone(), start));
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

/// One direction's handle on a supervised call: ready with the refusal once
/// the call must end.
#[derive(Debug)]
pub struct Supervised {
    refusal: watch::Receiver<Option<Refusal>>,
    /// Wakes the body that polls it when the refusal changes.
    changes: WatchStream<Option<Refusal>>,
    /// Whether the refusal was seen (it stays in `refusal`; a flag keeps
    /// the handle small, as each call's bodies carry one).
    ended: bool,
    progress: Progress,
}

impl Clone for Supervised {
    fn clone(&self) -> Self {
        Supervised {
            refusal: self.refusal.clone(),
            changes: WatchStream::from_changes(self.refusal.clone()),
            ended: self.ended,
            progress: self.progress.clone(),
        }
    }
}

impl Supervised {
    /// Body data of the call moved now (see [`Progress`]).
    pub fn moved(&self) {
        self.progress.moved();
    }

    /// Ready with the refusal that ends the call; pending while it may go on.
    pub fn poll_ended(&mut self, cx: &mut Context<'_>) -> Poll<Refusal> {
        // Seen before, or given before this handle first looked.
        if self.ended || self.refusal.borrow().is_some() {
            self.ended = true;
            return Poll::Ready(self.refusal_seen());
        }
        loop {
            match Pin::new(&mut self.changes).poll_next(cx) {
                Poll::Ready(Some(Some(_))) | Poll::Ready(None) => {
                    self.ended = true;
                    return Poll::Ready(self.refusal_seen());
                }
                Poll::Ready(Some(None)) => continue,
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    /// The refusal given; a supervisor that stopped without one ends the
    /// call too: nothing goes on unsupervised.
    fn refusal_seen(&self) -> Refusal {
        self.refusal.borrow().clone().unwrap_or_else(|| {
            Refusal::refused("the call's supervision stopped; it is ended".to_string())
        })
    }

    /// The refusal that ended the call, if it was ended.
    pub fn ended_now(&self) -> Option<Refusal> {
        self.refusal.borrow().clone()
    }

    /// Waits for the refusal that ends the call.
    pub async fn ended(&mut self) -> Refusal {
        std::future::poll_fn(|cx| self.poll_ended(cx)).await
    }
}

async fn supervise(supervisor: Supervisor, start: Start) {
    supervisor.started.fetch_add(1, Ordering::Relaxed);
    let Start {
        call,
        progress,
        ending,
        choices,
        ceiling_gone,
    } = start;
    let refusal = until_ended(
        &supervisor,
        (call.permitted, choices),
        ceiling_gone,
        &progress,
        &ending,
    )
    .await;
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
    ending.send_replace(Some(refusal));
    // Stay until the call's bodies are gone, so they see the refusal
    // rather than a stopped supervisor. A body never asked for its next
    // frame (its caller stopped reading) cannot see it: its connection is
    // closed under it.
    if tokio::time::timeout(ENDING_GRACE, ending.closed())
        .await
        .is_err()
    {
        tracing::info!("an ended call's caller is not reading; closing its connection");
        call.closer.close();
        ending.closed().await;
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
    progress: &Progress,
    ending: &watch::Sender<Option<Refusal>>,
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
    let mut next_age = progress.began + supervisor.max_age;
    loop {
        if !judge_now {
            let idle_at = progress.last() + supervisor.idle;
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
                    if progress.last() + supervisor.idle <= Instant::now() {
                        return Some(Refusal::idle(format!(
                            "the call moved no data for {:?} (--call-idle-timeout); it is ended",
                            supervisor.idle
                        )));
                    }
                    continue;
                }
                () = ending.closed() => return None,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::fake_gate;

    fn supervisor(idle: Duration) -> (Supervisor, watch::Sender<Option<pb::PolicyRevision>>) {
        let (tx, revisions) = watch::channel(None);
        (
            Supervisor::new(fake_gate(), revisions, Duration::from_secs(3600), idle),
            tx,
        )
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_that_moves_no_data_ends_after_the_idle_timeout() {
        let (supervisor, _tx) = supervisor(Duration::from_secs(60));
        let closer = Closer::default();
        let mut call = supervisor.watch(Watched {
            permitted: None,
            closer: closer.clone(),
            inherited_until: None,
        });
        let start = Instant::now();
        // Data moves at 30 s: the call idles from then on.
        let mover = call.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(30)).await;
            mover.moved();
        });
        let refusal = call.ended().await;
        assert_eq!(refusal.kind, crate::refusal::RefusalKind::Idle);
        assert!(
            refusal.reason.contains("--call-idle-timeout"),
            "{refusal:?}"
        );
        assert_eq!(start.elapsed(), Duration::from_secs(90));
        // Its bodies still held a second later (a caller that does not
        // read): the connection is closed under them.
        tokio::time::timeout(Duration::from_millis(1100), closer.asked())
            .await
            .expect("the connection was asked to close");
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_ends_when_the_context_it_inherited_expires() {
        let (supervisor, _tx) = supervisor(Duration::from_secs(600));
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let mut call = supervisor.watch(Watched {
            permitted: None,
            closer: Closer::default(),
            inherited_until: Some(now + 2),
        });
        let start = Instant::now();
        let refusal = call.ended().await;
        assert!(refusal.reason.contains("inherited expired"), "{refusal:?}");
        // Past its last second, and no later than a second after it.
        let took = start.elapsed();
        assert!(
            took > Duration::from_secs(2) && took <= Duration::from_secs(3),
            "{took:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_ended_call_whose_bodies_go_leaves_its_connection_open() {
        let (supervisor, _tx) = supervisor(Duration::from_secs(5));
        let closer = Closer::default();
        let mut call = supervisor.watch(Watched {
            permitted: None,
            closer: closer.clone(),
            inherited_until: None,
        });
        call.ended().await;
        drop(call);
        assert!(
            tokio::time::timeout(Duration::from_secs(10), closer.asked())
                .await
                .is_err(),
            "a call whose bodies went does not close its connection"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_over_before_its_supervisor_would_start_costs_none() {
        let (supervisor, _tx) = supervisor(Duration::from_secs(5));
        let watched = || Watched {
            permitted: None,
            closer: Closer::default(),
            inherited_until: None,
        };
        // Over within START_AFTER: never supervised.
        let quick = supervisor.watch(watched());
        tokio::time::sleep(START_AFTER / 2).await;
        drop(quick);
        tokio::time::sleep(START_AFTER * 2).await;
        assert_eq!(supervisor.started(), 0);
        // Open past it: supervised.
        let _held = supervisor.watch(watched());
        tokio::time::sleep(START_AFTER * 2).await;
        assert_eq!(supervisor.started(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_is_watched_while_any_handle_of_it_remains() {
        let (supervisor, _tx) = supervisor(Duration::from_secs(5));
        let call = supervisor.watch(Watched {
            permitted: None,
            closer: Closer::default(),
            inherited_until: None,
        });
        let mut other = call.clone();
        drop(call);
        // One handle left: still watched, ended when idle.
        let refusal = tokio::time::timeout(Duration::from_secs(6), other.ended()).await;
        assert!(refusal.is_ok());
    }
}
