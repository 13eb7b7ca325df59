//! The server's cache of choices, in front of the store: the current
//! choices of the tenants and data subjects asked about lately, so a
//! `Check` that depends on choices costs about what one that needs none
//! does. Bounded in bytes; the oldest go first.
//!
//! It is also where changes are announced: every commit made through it
//! evicts the entry it changed, joins the feed (the last changes, in
//! revision order, which `WatchChoices` streams) and wakes the watchers.
//!
//! **Invariant:** an entry is never older than a change the feed has
//! seen. A read that raced a write is kept only if [`RecentChanges`] shows
//! no change of its key after the revision it was read at; the write's
//! eviction and that check happen under the same lock.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, RwLock};

use purposegate_proto::changes::RecentChanges;
use tokio::sync::watch;

use super::{ChoiceChange, ChoiceRecord, ChoicesStore, NewChoice, StoreError};
use crate::engine::Choice;

/// Bytes the cache may hold by default.
pub const DEFAULT_MAX_BYTES: usize = 32 << 20;
/// Changes the feed keeps for watchers that fall behind; further back,
/// they are read from the store.
pub const FEED_LEN: usize = 8192;
/// What an entry costs beyond its ids and choices: the map's slot, the
/// queue's, the `Arc`.
const ENTRY_OVERHEAD: usize = 160;
const CHOICE_BYTES: usize = std::mem::size_of::<Choice>();

/// A tenant and data subject as one key: the tenant's length first, so
/// no two pairs make the same key.
type Key = String;

fn key(tenant: &str, subject: &str) -> Key {
    format!("{}:{tenant}{subject}", tenant.len())
}

#[derive(Debug)]
struct Entry {
    choices: Arc<[Choice]>,
    revision: u64,
    serial: u64,
    bytes: usize,
}

#[derive(Debug, Default)]
struct Held {
    entries: HashMap<Key, Entry>,
    /// Keys in the order they were stored, with their serial: the oldest
    /// go first.
    order: VecDeque<(Key, u64)>,
    bytes: usize,
    serial: u64,
    recent: RecentChanges,
}

/// The choices store, cached, with its feed of changes.
#[derive(Debug)]
pub struct CachedChoices {
    store: Arc<dyn ChoicesStore>,
    held: Mutex<Held>,
    max_bytes: usize,
    /// The last changes in revision order. Held only to add or copy a
    /// few entries, never across a store's I/O, so watchers read it on
    /// the async workers.
    feed: RwLock<VecDeque<ChoiceChange>>,
    /// Held across each write to a store this replica alone writes, so
    /// its changes join the feed in the order they were committed. A
    /// followed store orders its commits itself (the follower adds them):
    /// its writes go to it side by side.
    writing: Mutex<()>,
    latest: watch::Sender<u64>,
    /// For a store that other replicas write too: the changes join the
    /// feed as [`CachedChoices::apply`] reads them from the store, in its
    /// revision order, never as this replica commits them; and the cache
    /// serves only while the follower is in touch ([`Freshness`]).
    followed: Option<Freshness>,
    /// Wakes the follower: a commit made here, or announced by the store.
    wake: tokio::sync::Notify,
}

/// When the follower last read the store, for a followed cache: past
/// [`FRESH_WITHIN`] without a read, nothing is served from the cache
/// (another replica's change may be waiting) and watchers get no
/// heartbeat (so their PEPs stop trusting what they cached).
#[derive(Debug)]
struct Freshness {
    base: std::time::Instant,
    /// Milliseconds after `base` of the last read; 0: none yet.
    read_at: std::sync::atomic::AtomicU64,
}

/// How long a followed cache serves after the follower's last read of the
/// store.
pub const FRESH_WITHIN: std::time::Duration = std::time::Duration::from_millis(800);

fn unusable() -> StoreError {
    StoreError::Unavailable("the choices cache is unusable".into())
}

impl CachedChoices {
    pub fn new(store: Arc<dyn ChoicesStore>, max_bytes: usize) -> Self {
        let (latest, _) = watch::channel(store.revision());
        CachedChoices {
            store,
            held: Mutex::new(Held::default()),
            max_bytes,
            feed: RwLock::new(VecDeque::new()),
            writing: Mutex::new(()),
            latest,
            followed: None,
            wake: tokio::sync::Notify::new(),
        }
    }

    /// Tells the follower to read the store now.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Until [`CachedChoices::wake`] is called (at once if it was since
    /// the last wait).
    pub async fn woken(&self) {
        self.wake.notified().await;
    }

    /// The cache of a store other replicas write too: changes join the
    /// feed as [`CachedChoices::apply`] reads them.
    pub fn followed(store: Arc<dyn ChoicesStore>, max_bytes: usize) -> Self {
        CachedChoices {
            followed: Some(Freshness {
                base: std::time::Instant::now(),
                read_at: std::sync::atomic::AtomicU64::new(0),
            }),
            ..Self::new(store, max_bytes)
        }
    }

    /// Whether the cache may serve: always, unless it is followed and its
    /// follower has not read the store within [`FRESH_WITHIN`].
    pub fn fresh(&self) -> bool {
        self.followed.as_ref().is_none_or(|f| {
            let read_at = f.read_at.load(std::sync::atomic::Ordering::Acquire);
            let now = u64::try_from(f.base.elapsed().as_millis()).unwrap_or(u64::MAX);
            read_at != 0
                && now.saturating_sub(read_at)
                    <= u64::try_from(FRESH_WITHIN.as_millis()).unwrap_or(u64::MAX)
        })
    }

    /// The follower's reading: `changes`, read from the store after the
    /// last revision applied, in revision order, each evicting what it
    /// changed and joining the feed; and the store was in touch now.
    pub fn apply(&self, changes: &[ChoiceChange]) -> Result<(), StoreError> {
        if let Some(f) = &self.followed {
            let now = u64::try_from(f.base.elapsed().as_millis()).unwrap_or(u64::MAX);
            f.read_at
                .store(now.max(1), std::sync::atomic::Ordering::Release);
        }
        if changes.is_empty() {
            return Ok(());
        }
        let mut feed = self.feed.write().map_err(|_| unusable())?;
        let mut last = *self.latest.borrow();
        for change in changes {
            if change.revision <= last {
                continue;
            }
            if let Ok(mut held) = self.held.lock() {
                held.recent
                    .record(&change.tenant, &change.data_subject, change.revision);
                if let Some(gone) = held
                    .entries
                    .remove(&key(&change.tenant, &change.data_subject))
                {
                    held.bytes -= gone.bytes;
                }
            }
            if feed.len() >= FEED_LEN {
                feed.pop_front();
            }
            feed.push_back(change.clone());
            last = change.revision;
        }
        drop(feed);
        self.latest.send_replace(last);
        Ok(())
    }

    /// The last revision whose change joined the feed.
    pub fn applied(&self) -> u64 {
        *self.latest.borrow()
    }

    /// The revision of each commit, as it is made.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.latest.subscribe()
    }

    /// The changes after `after`, oldest first, at most `limit`: from the
    /// feed when it reaches back that far, else from the store.
    pub fn changes_after(&self, after: u64, limit: usize) -> Result<Vec<ChoiceChange>, StoreError> {
        match self.changes_in_feed(after, limit) {
            Some(found) => Ok(found),
            None => self.store.changes(after, limit),
        }
    }

    /// The same without reading the store: `None` when the feed does not
    /// reach back to `after`. For the watchers, on the async workers: the
    /// feed is only ever held for a moment.
    pub fn changes_in_feed(&self, after: u64, limit: usize) -> Option<Vec<ChoiceChange>> {
        let feed = self.feed.read().ok()?;
        // Empty since this replica started: what came before is in the
        // store only.
        if feed.is_empty() && after < *self.latest.borrow() {
            return None;
        }
        from_feed(&feed, after, limit)
    }

    /// Entries and bytes held now.
    pub fn held(&self) -> (usize, usize) {
        self.held
            .lock()
            .map_or((0, 0), |h| (h.entries.len(), h.bytes))
    }

    /// Keeps what was read at `revision`, unless a change came since.
    fn keep(&self, tenant: &str, subject: &str, choices: &[Choice], revision: u64) {
        let bytes = ENTRY_OVERHEAD
            + 2 * (tenant.len() + subject.len() + 8)
            + choices
                .iter()
                .map(|c| CHOICE_BYTES + c.purpose.len())
                .sum::<usize>();
        if bytes > self.max_bytes / 4 {
            return;
        }
        let Ok(mut held) = self.held.lock() else {
            return;
        };
        if !held
            .recent
            .unchanged_since(tenant, subject, revision, false)
        {
            return;
        }
        let key = key(tenant, subject);
        while held.bytes + bytes > self.max_bytes {
            let Some((oldest, serial)) = held.order.pop_front() else {
                break;
            };
            if held
                .entries
                .get(&oldest)
                .is_some_and(|e| e.serial == serial)
            {
                if let Some(gone) = held.entries.remove(&oldest) {
                    held.bytes -= gone.bytes;
                }
            }
        }
        held.serial += 1;
        let serial = held.serial;
        held.order.push_back((key.clone(), serial));
        held.bytes += bytes;
        let entry = Entry {
            choices: choices.into(),
            revision,
            serial,
            bytes,
        };
        if let Some(old) = held.entries.insert(key, entry) {
            held.bytes -= old.bytes;
        }
    }
}

/// The changes of `feed` after `after`, if it reaches back that far: found
/// by position (its revisions are in order), not by walking it.
fn from_feed(feed: &VecDeque<ChoiceChange>, after: u64, limit: usize) -> Option<Vec<ChoiceChange>> {
    match (feed.front(), feed.back()) {
        (_, None) => Some(Vec::new()),
        (_, Some(last)) if last.revision <= after => Some(Vec::new()),
        (Some(first), _) if first.revision <= after.saturating_add(1) => {
            let from = feed.partition_point(|c| c.revision <= after);
            Some(feed.range(from..).take(limit).cloned().collect())
        }
        _ => None,
    }
}

impl ChoicesStore for CachedChoices {
    fn record(
        &self,
        choice: NewChoice,
        recorded_by: &str,
        now: i64,
    ) -> Result<ChoiceRecord, StoreError> {
        // A store this replica alone writes: its commits join the feed in
        // their order.
        let _order = match self.followed {
            Some(_) => None,
            None => Some(self.writing.lock().map_err(|_| unusable())?),
        };
        let record = self.store.record(choice, recorded_by, now)?;
        let (tenant, subject) = (&record.choice.tenant, &record.choice.data_subject);
        if let Ok(mut held) = self.held.lock() {
            held.recent.record(tenant, subject, record.revision);
            if let Some(gone) = held.entries.remove(&key(tenant, subject)) {
                held.bytes -= gone.bytes;
            }
        }
        if self.followed.is_some() {
            // The follower brings it to the feed in the store's order,
            // after any other replica's commit before it: now.
            self.wake();
            return Ok(record);
        }
        {
            let mut feed = self.feed.write().map_err(|_| unusable())?;
            if feed.len() >= FEED_LEN {
                feed.pop_front();
            }
            feed.push_back(ChoiceChange {
                revision: record.revision,
                tenant: tenant.clone(),
                data_subject: subject.clone(),
            });
        }
        self.latest.send_replace(record.revision);
        Ok(record)
    }

    fn current(&self, tenant: &str, data_subject: &str) -> Result<(Vec<Choice>, u64), StoreError> {
        if let Some(found) = self.cached(tenant, data_subject) {
            return Ok(found);
        }
        let (choices, revision) = self.store.current(tenant, data_subject)?;
        self.keep(tenant, data_subject, &choices, revision);
        Ok((choices, revision))
    }

    fn current_records(
        &self,
        tenant: &str,
        data_subject: &str,
    ) -> Result<(Vec<ChoiceRecord>, u64), StoreError> {
        self.store.current_records(tenant, data_subject)
    }

    fn history(
        &self,
        tenant: &str,
        data_subject: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<ChoiceRecord>, StoreError> {
        self.store.history(tenant, data_subject, after, limit)
    }

    fn subjects(
        &self,
        tenant: &str,
        after: &str,
        limit: usize,
    ) -> Result<Vec<(String, Vec<Choice>)>, StoreError> {
        self.store.subjects(tenant, after, limit)
    }

    fn changes(&self, after: u64, limit: usize) -> Result<Vec<ChoiceChange>, StoreError> {
        self.changes_after(after, limit)
    }

    fn revision(&self) -> u64 {
        self.store.revision()
    }

    fn cached(&self, tenant: &str, data_subject: &str) -> Option<(Vec<Choice>, u64)> {
        if !self.fresh() {
            return None;
        }
        let held = self.held.lock().ok()?;
        let entry = held.entries.get(&key(tenant, data_subject))?;
        Some((
            entry.choices.to_vec(),
            entry.revision.max(held.recent.last()),
        ))
    }
}

#[cfg(test)]
#[path = "cache_tests.rs"]
mod tests;
