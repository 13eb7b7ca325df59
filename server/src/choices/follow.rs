//! The follower of a store that several replicas write (PostgreSQL): it
//! reads the changes after the last revision it applied when woken (a
//! commit made here, or one the store announces) and at the latest every
//! [`POLL`], and applies them to this replica's cache, in the store's
//! revision order; the cache's feed, and so `WatchChoices`, carries every
//! replica's commits. A commit made through this replica is read back
//! like any other (its own cache entry is evicted at once). While the
//! store cannot be read, the cache stops serving after
//! [`super::cache::FRESH_WITHIN`]: a change another replica committed
//! just before cannot be missed for longer.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tracing::warn;

use super::{CachedChoices, ChoicesStore};

/// How often the store is read for changes.
pub const POLL: Duration = Duration::from_millis(100);
/// Changes read at a time.
const PAGE: usize = 1024;

/// Follows `store` for `cache` until `shutdown`.
pub fn follow(
    cache: Arc<CachedChoices>,
    store: Arc<dyn ChoicesStore>,
    mut shutdown: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing = false;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = cache.woken() => {}
                _ = shutdown.changed() => return,
            }
            // Page after page until the store has nothing newer.
            loop {
                let after = cache.applied();
                let reader = store.clone();
                let read = tokio::task::spawn_blocking(move || reader.changes(after, PAGE)).await;
                let page = match read {
                    Ok(Ok(page)) => page,
                    Ok(Err(e)) => {
                        if !failing {
                            warn!(error = %e, "cannot follow the choices store; decisions that need choices are INDETERMINATE until it answers");
                        }
                        failing = true;
                        break;
                    }
                    Err(_) => break,
                };
                if failing {
                    tracing::info!("following the choices store again");
                    failing = false;
                }
                let full = page.len() == PAGE;
                if cache.apply(&page).is_err() {
                    break;
                }
                if !full {
                    break;
                }
            }
        }
    })
}
