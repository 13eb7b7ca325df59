//! `WatchChoices`: whose choices changed, in revision order, from a
//! revision the caller names; a heartbeat every [`HEARTBEAT`] so a PEP
//! can tell a quiet store from a dead stream.
//!
//! The stream names the tenant and data subject whose choices changed,
//! never what they changed to; any caller may watch, as any caller may
//! `Check` (whose reasons name the choice that decided).
//!
//! A watcher costs a place in the feed, nothing more: no task and no
//! queue of its own. Its stream is read from the shared feed when its
//! connection can take more, so every change ready by then goes out in
//! one write (gRPC messages batched in one HTTP/2 frame); one that does
//! not read is not read for (what waits for it is bounded by its
//! HTTP/2 window), and one that fell more than the feed behind is told
//! `everything` and resyncs instead of being replayed what it missed.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use purposegate_proto::v1 as pb;
use tokio::sync::watch;
use tonic::Status;

use crate::choices::{CachedChoices, ChoiceChange, FEED_LEN};

/// How often a watch says it is alive when nothing changes.
pub const HEARTBEAT: Duration = Duration::from_millis(250);
/// Changes read at a time.
const PAGE: usize = 512;
/// Under a stream of changes, a watcher is sent what committed at most
/// once in this long: a change after a quiet spell goes out at once, the
/// ones that follow it within this go out together (one write for many
/// changes, instead of one per change per watcher).
pub const BATCH: Duration = Duration::from_millis(10);

pub type ChangeStream =
    Pin<Box<dyn tokio_stream::Stream<Item = Result<pb::ChoiceChange, Status>> + Send>>;

fn heartbeat(revision: u64) -> pb::ChoiceChange {
    pb::ChoiceChange {
        revision,
        ..Default::default()
    }
}

/// Anything up to `revision` may have changed.
fn everything(revision: u64) -> pb::ChoiceChange {
    pb::ChoiceChange {
        revision,
        everything: true,
        ..Default::default()
    }
}

fn to_pb(c: ChoiceChange) -> pb::ChoiceChange {
    pb::ChoiceChange {
        tenant: c.tenant,
        data_subject: c.data_subject,
        revision: c.revision,
        everything: false,
    }
}

/// One watcher's place in the changes.
struct Watcher {
    choices: Arc<CachedChoices>,
    latest: watch::Receiver<u64>,
    /// The last revision taken for this watcher (sent, or in `page`).
    last: u64,
    /// Read from the feed, not yet sent: at most [`PAGE`].
    page: std::vec::IntoIter<ChoiceChange>,
    beat: tokio::time::Interval,
    /// When it was last sent changes (see [`BATCH`]).
    batched: Option<tokio::time::Instant>,
    /// An error was sent: the stream ends.
    ended: bool,
}

/// The changes after `after` (0: from now), then each as it commits.
pub fn changes(choices: Arc<CachedChoices>, after: u64) -> ChangeStream {
    let mut latest = choices.subscribe();
    let current = *latest.borrow_and_update();
    // From now, or from where the caller was, unless that is ahead of the
    // store (it went back) or too far behind to be worth replaying: then
    // everything may have changed.
    let (first, last) = if after == 0 {
        (Some(heartbeat(current)), current)
    } else if after > current || current - after > FEED_LEN as u64 {
        (Some(everything(current)), current)
    } else {
        (None, after)
    };
    let mut beat = tokio::time::interval(HEARTBEAT);
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let watcher = Watcher {
        choices,
        latest,
        last,
        page: Vec::new().into_iter(),
        beat,
        batched: None,
        ended: false,
    };
    let first = tokio_stream::iter(first.map(Ok));
    let rest = futures_util::stream::unfold(watcher, next);
    Box::pin(tokio_stream::StreamExt::chain(first, rest))
}

/// What `w` is sent next: what it has not been sent yet, else what
/// commits next or a heartbeat, whichever comes first.
async fn next(mut w: Watcher) -> Option<(Result<pb::ChoiceChange, Status>, Watcher)> {
    if w.ended {
        return None;
    }
    loop {
        if let Some(change) = w.page.next() {
            return Some((Ok(to_pb(change)), w));
        }
        // It fell more than the feed behind (it did not read): resync.
        let current = *w.latest.borrow();
        if current.saturating_sub(w.last) > FEED_LEN as u64 {
            w.last = current;
            return Some((Ok(everything(current)), w));
        }
        // Sent changes a moment ago: what commits until the moment is
        // over goes out together.
        if let Some(at) = w.batched.take() {
            tokio::time::sleep_until(at + BATCH).await;
        }
        match read(&w.choices, w.last).await {
            Ok(page) if !page.is_empty() => {
                w.batched = Some(tokio::time::Instant::now());
                w.last = page.last().map_or(w.last, |c| c.revision);
                w.page = page.into_iter();
                continue;
            }
            Ok(_) => {}
            Err(status) => {
                w.ended = true;
                return Some((Err(status), w));
            }
        }
        tokio::select! {
            changed = w.latest.changed() => {
                if changed.is_err() {
                    return None;
                }
            }
            _ = w.beat.tick() => {
                // A replica out of touch with a shared store says
                // nothing: its PEPs' stale window runs.
                if w.choices.fresh() {
                    return Some((Ok(heartbeat(w.last)), w));
                }
            }
        }
    }
}

/// The changes after `after`, a page at most: from the feed in place,
/// from the store on a blocking thread when the feed does not reach back
/// (a watcher resuming from before this replica's feed began).
async fn read(choices: &Arc<CachedChoices>, after: u64) -> Result<Vec<ChoiceChange>, Status> {
    if let Some(found) = choices.changes_in_feed(after, PAGE) {
        return Ok(found);
    }
    let choices = choices.clone();
    match tokio::task::spawn_blocking(move || choices.changes_after(after, PAGE)).await {
        Ok(Ok(page)) => Ok(page),
        Ok(Err(e)) => Err(Status::unavailable(e.to_string())),
        Err(e) => Err(Status::internal(format!("the changes were not read: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]

    use super::*;
    use crate::choices::{ChoicesStore, MemoryChoices, NewChoice};
    use crate::engine::ChoiceState;
    use tokio_stream::StreamExt as _;

    fn withdrawal(subject: &str) -> NewChoice {
        NewChoice {
            tenant: "contoso".into(),
            data_subject: subject.into(),
            purpose: "marketing".into(),
            state: ChoiceState::Withdrawn,
            expires_at: None,
            basis: "consent".into(),
            evidence: Default::default(),
        }
    }

    fn cache() -> Arc<CachedChoices> {
        Arc::new(CachedChoices::new(
            Arc::new(MemoryChoices::new()),
            crate::choices::cache::DEFAULT_MAX_BYTES,
        ))
    }

    /// The next message that is not a heartbeat.
    async fn next_change(stream: &mut ChangeStream) -> pb::ChoiceChange {
        loop {
            let change = stream.next().await.unwrap().unwrap();
            if change.everything || !change.tenant.is_empty() {
                return change;
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_watcher_that_does_not_read_for_a_while_is_sent_what_it_missed_in_order() {
        let choices = cache();
        choices.record(withdrawal("u-0"), "-", 0).unwrap();
        // From revision 1: every change after it is the watcher's to read.
        let mut slow = changes(choices.clone(), 1);
        for i in 1..200 {
            choices
                .record(withdrawal(&format!("u-{i}")), "-", 0)
                .unwrap();
        }
        // Nothing was read or held for it meanwhile: it is read when it
        // reads.
        tokio::time::sleep(Duration::from_secs(60)).await;
        let mut got = Vec::new();
        for _ in 1..200 {
            let change = slow.next().await.unwrap().unwrap();
            assert!(
                !change.tenant.is_empty(),
                "a heartbeat before the catch-up ended"
            );
            got.push(change.revision);
        }
        assert_eq!(got, (2..=200).collect::<Vec<_>>());
        // Then, nothing changing, heartbeats at its revision.
        let beat = slow.next().await.unwrap().unwrap();
        assert_eq!((beat.revision, beat.tenant.as_str()), (200, ""));
        choices.record(withdrawal("u-200"), "-", 0).unwrap();
        assert_eq!(next_change(&mut slow).await.revision, 201);
    }

    #[tokio::test(start_paused = true)]
    async fn changes_that_follow_one_another_closely_are_sent_together() {
        use futures_util::FutureExt as _;
        let choices = cache();
        let mut watch = changes(choices.clone(), 0);
        // A change after a quiet spell goes out at once.
        choices.record(withdrawal("u-1"), "-", 0).unwrap();
        let start = tokio::time::Instant::now();
        assert_eq!(next_change(&mut watch).await.revision, 1);
        assert_eq!(start.elapsed(), Duration::ZERO);
        // The next, right after it, waits for the moment to end and takes
        // with it what committed meanwhile.
        choices.record(withdrawal("u-2"), "-", 0).unwrap();
        let later = choices.clone();
        let third = tokio::spawn(async move {
            tokio::time::sleep(BATCH / 2).await;
            later.record(withdrawal("u-3"), "-", 0).unwrap();
        });
        assert_eq!(next_change(&mut watch).await.revision, 2);
        assert_eq!(start.elapsed(), BATCH);
        third.await.unwrap();
        let with_it = watch.next().now_or_never().flatten().unwrap().unwrap();
        assert_eq!(with_it.revision, 3, "not sent with the one before");
    }

    #[tokio::test(start_paused = true)]
    async fn a_watcher_that_fell_more_than_the_feed_behind_is_told_everything() {
        let choices = cache();
        choices.record(withdrawal("u-0"), "-", 0).unwrap();
        let mut slow = changes(choices.clone(), 1);
        let behind = FEED_LEN as u64 + 10;
        for i in 0..behind {
            choices
                .record(withdrawal(&format!("u-{i}")), "-", 0)
                .unwrap();
        }
        // Not replayed what it missed: told to forget what it cached.
        let flush = slow.next().await.unwrap().unwrap();
        assert!(flush.everything, "{flush:?}");
        assert_eq!(flush.revision, behind + 1);
        // And followed from there.
        choices.record(withdrawal("u-x"), "-", 0).unwrap();
        let change = next_change(&mut slow).await;
        assert_eq!(
            (change.revision, change.data_subject.as_str()),
            (behind + 2, "u-x")
        );
    }

    #[tokio::test]
    async fn a_watcher_resuming_on_a_replica_that_just_started_reads_what_it_missed_from_the_store()
    {
        // Three changes committed before this replica's cache began: its
        // feed is empty, the store has them.
        let store = Arc::new(MemoryChoices::new());
        for i in 0..3 {
            store.record(withdrawal(&format!("u-{i}")), "-", 0).unwrap();
        }
        let choices = Arc::new(CachedChoices::new(
            store,
            crate::choices::cache::DEFAULT_MAX_BYTES,
        ));
        let mut resumed = changes(choices, 1);
        let got = tokio::time::timeout(Duration::from_secs(5), async {
            [
                next_change(&mut resumed).await,
                next_change(&mut resumed).await,
            ]
        })
        .await
        .expect("the changes before this replica began were never sent");
        let got: Vec<(u64, &str)> = got
            .iter()
            .map(|c| (c.revision, c.data_subject.as_str()))
            .collect();
        assert_eq!(got, [(2, "u-1"), (3, "u-2")]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_watcher_from_ahead_of_the_store_is_told_everything_first() {
        let choices = cache();
        for i in 0..3 {
            choices
                .record(withdrawal(&format!("u-{i}")), "-", 0)
                .unwrap();
        }
        for after in [4, 99] {
            let first = changes(choices.clone(), after)
                .next()
                .await
                .unwrap()
                .unwrap();
            assert!(first.everything && first.revision == 3, "{first:?}");
        }
        // From now: a heartbeat at the current revision.
        let first = changes(choices.clone(), 0).next().await.unwrap().unwrap();
        assert!(!first.everything && first.revision == 3 && first.tenant.is_empty());
    }
}
