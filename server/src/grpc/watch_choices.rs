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
            if tx.send(Ok(heartbeat(current))).await.is_err() {
                return;
            }
            current
        } else if after > current || current - after > FEED_LEN as u64 {
            let flush = pb::ChoiceChange {
                revision: current,
                everything: true,
                ..Default::default()
            };
            if tx.send(Ok(flush)).await.is_err() {
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
                    if tx.send(Ok(to_pb(change))).await.is_err() {
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
                    if choices.fresh() && tx.send(Ok(heartbeat(last))).await.is_err() {
                        return;
                    }
                }
                () = tx.closed() => return,
            }
        }
    });
    rx
}
