//! `WatchChoices`: whose choices changed, in revision order, from a
//! revision the caller names; a heartbeat every [`HEARTBEAT`] so a PEP
//! can tell a quiet store from a dead stream.
//!
//! The stream names the tenant and data subject whose choices changed,
//! never what they changed to; any caller may watch, as any caller may
//! `Check` (whose reasons name the choice that decided).

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use purposegate_proto::v1 as pb;
use tokio::sync::mpsc;
use tonic::Status;

use crate::choices::{CachedChoices, ChoiceChange, FEED_LEN};

/// How often a watch says it is alive when nothing changes.
pub const HEARTBEAT: Duration = Duration::from_millis(250);
/// Changes read at a time.
const PAGE: usize = 512;
/// How long a watcher may leave its stream full (64 messages waiting)
/// before it is cut off: its stream ends, and it resumes from its last
/// revision when it is ready, reading what it missed then, instead of
/// holding a task and a place that wait on it.
pub const SLOW_WATCHER: Duration = Duration::from_secs(10);

type Sender = mpsc::Sender<Result<pb::ChoiceChange, Status>>;

/// Sends `item`: `false` when the watcher is gone, or took longer than
/// [`SLOW_WATCHER`] to make room for it.
async fn send(tx: &Sender, item: Result<pb::ChoiceChange, Status>) -> bool {
    matches!(
        tokio::time::timeout(SLOW_WATCHER, tx.send(item)).await,
        Ok(Ok(()))
    )
}

pub type ChangeStream =
    Pin<Box<dyn tokio_stream::Stream<Item = Result<pb::ChoiceChange, Status>> + Send>>;

fn heartbeat(revision: u64) -> pb::ChoiceChange {
    pb::ChoiceChange {
        revision,
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

/// The changes after `after` (0: from now), then each as it commits.
pub fn changes(
    choices: Arc<CachedChoices>,
    after: u64,
) -> mpsc::Receiver<Result<pb::ChoiceChange, Status>> {
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        let mut latest = choices.subscribe();
        let current = *latest.borrow_and_update();
        // From now, or from where the caller was, unless that is ahead of
        // the store (it went back) or too far behind to be worth replaying:
        // then everything may have changed.
        let mut last = if after == 0 {
            if !send(&tx, Ok(heartbeat(current))).await {
                return;
            }
            current
        } else if after > current || current - after > FEED_LEN as u64 {
            let flush = pb::ChoiceChange {
                revision: current,
                everything: true,
                ..Default::default()
            };
            if !send(&tx, Ok(flush)).await {
                return;
            }
            current
        } else {
            after
        };
        let mut beat = tokio::time::interval(HEARTBEAT);
        beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            // Catch up with every commit, a page at a time.
            loop {
                // Most wake-ups (every heartbeat) find what they need in
                // the feed at once; only a feed being written or too short
                // sends the read to a blocking thread.
                let page = match choices.changes_in_feed(last, PAGE) {
                    Some(found) => Ok(Ok(found)),
                    None => {
                        let choices = choices.clone();
                        tokio::task::spawn_blocking(move || choices.changes_after(last, PAGE)).await
                    }
                };
                let page = match page {
                    Ok(Ok(page)) => page,
                    Ok(Err(e)) => {
                        let _ = tx.send(Err(Status::unavailable(e.to_string()))).await;
                        return;
                    }
                    Err(e) => {
                        let _ = tx
                            .send(Err(Status::internal(format!(
                                "the changes were not read: {e}"
                            ))))
                            .await;
                        return;
                    }
                };
                let full = page.len() == PAGE;
                for change in page {
                    last = change.revision;
                    if !send(&tx, Ok(to_pb(change))).await {
                        return;
                    }
                }
                if !full {
                    break;
                }
            }
            tokio::select! {
                changed = latest.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
                _ = beat.tick() => {
                    // A replica out of touch with a shared store says
                    // nothing: its PEPs' stale window runs.
                    if choices.fresh() && !send(&tx, Ok(heartbeat(last))).await {
                        return;
                    }
                }
                () = tx.closed() => return,
            }
        }
    });
    rx
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]

    use super::*;
    use crate::choices::{ChoicesStore, MemoryChoices, NewChoice};
    use crate::engine::ChoiceState;

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

    #[tokio::test(start_paused = true)]
    async fn a_watcher_that_does_not_read_is_cut_off_and_resumes_where_it_was() {
        let choices = Arc::new(CachedChoices::new(
            Arc::new(MemoryChoices::new()),
            crate::choices::cache::DEFAULT_MAX_BYTES,
        ));
        choices.record(withdrawal("u-0"), "-", 0).unwrap();
        // From revision 1: every change after it is the watcher's to read.
        let mut slow = changes(choices.clone(), 1);
        for i in 1..200 {
            choices
                .record(withdrawal(&format!("u-{i}")), "-", 0)
                .unwrap();
        }
        // It reads nothing for longer than it may: what it was sent stays
        // readable, then its stream ends.
        tokio::time::sleep(SLOW_WATCHER + Duration::from_secs(1)).await;
        let mut got = Vec::new();
        while let Some(item) = slow.recv().await {
            got.push(item.unwrap().revision);
            assert!(got.len() <= 200, "the stream went on");
        }
        assert!(got.len() < 199, "{} messages", got.len());
        let last = *got.last().unwrap();
        // Resuming from its last revision, it misses nothing.
        let mut again = changes(choices.clone(), last);
        let mut next = Vec::new();
        while next.last() != Some(&200) {
            let change = again.recv().await.unwrap().unwrap();
            assert!(
                !change.tenant.is_empty(),
                "a heartbeat before the catch-up ended"
            );
            next.push(change.revision);
        }
        assert_eq!(next, ((last + 1)..=200).collect::<Vec<_>>());
    }
}
