//! The decision cache and the choices: which cached answers read which
//! tenant's and data subject's choices, so a change `WatchChoices`
//! reports evicts exactly those, and whether the watch is live, without
//! which an answer that read choices is kept no longer than its
//! `ttl_seconds` (one second).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use purposegate_proto::changes::RecentChanges;

use super::answer::Cacheable;
use super::{DecisionCache, millis};

/// Whose choices a cached answer read, by the digests of
/// [`RecentChanges::digest`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct ReadChoices {
    pub tenant: u64,
    pub subject: Option<u64>,
    /// When it expires if the watch is not live, in milliseconds of the
    /// cache's clock.
    pub unwatched_expires: u64,
}

/// What an entry of the index costs, counted in the entry's bytes.
pub(super) const INDEX_BYTES: usize = 64;

/// Entries by (digest, serial).
type Entries = Vec<(u64, u64)>;

/// The cached answers that read choices, by tenant and data subject
/// (`None`: only the tenant's own), as (digest, serial) of their entries.
#[derive(Debug, Default)]
pub(super) struct ChoiceIndex {
    by_tenant: HashMap<u64, HashMap<Option<u64>, Entries>>,
    pub recent: RecentChanges,
}

impl ChoiceIndex {
    pub fn insert(&mut self, read: ReadChoices, digest: u64, serial: u64) {
        self.by_tenant
            .entry(read.tenant)
            .or_default()
            .entry(read.subject)
            .or_default()
            .push((digest, serial));
    }

    /// Forgets an entry that left the cache.
    pub fn remove(&mut self, read: ReadChoices, digest: u64, serial: u64) {
        let Some(subjects) = self.by_tenant.get_mut(&read.tenant) else {
            return;
        };
        if let Some(entries) = subjects.get_mut(&read.subject) {
            entries.retain(|&e| e != (digest, serial));
            if entries.is_empty() {
                subjects.remove(&read.subject);
            }
        }
        if subjects.is_empty() {
            self.by_tenant.remove(&read.tenant);
        }
    }

    /// Takes the entries a change of `(tenant, subject)` touches: a data
    /// subject's, or with no subject every entry of the tenant.
    pub fn take(&mut self, tenant: &str, subject: &str) -> Vec<(u64, u64)> {
        let (tenant, subject) = self.recent.digest(tenant, subject);
        match subject {
            None => self
                .by_tenant
                .remove(&tenant)
                .map(|subjects| subjects.into_values().flatten().collect())
                .unwrap_or_default(),
            Some(_) => {
                let Some(subjects) = self.by_tenant.get_mut(&tenant) else {
                    return Vec::new();
                };
                let taken = subjects.remove(&subject).unwrap_or_default();
                if subjects.is_empty() {
                    self.by_tenant.remove(&tenant);
                }
                taken
            }
        }
    }

    /// The same, with no entry indexed (they all left the cache); what
    /// changed lately is kept.
    pub fn forget_entries(mut self) -> Self {
        self.by_tenant.clear();
        self
    }

    /// Takes every entry that read choices.
    pub fn take_all(&mut self) -> Vec<(u64, u64)> {
        std::mem::take(&mut self.by_tenant)
            .into_values()
            .flat_map(HashMap::into_values)
            .flatten()
            .collect()
    }
}

/// Until when (milliseconds of the cache's clock) the watch counts as
/// live: each message from it moves this on by the stale window.
#[derive(Debug, Default)]
pub(super) struct Liveness {
    until: AtomicU64,
}

impl Liveness {
    pub fn renew(&self, until: u64) {
        self.until.fetch_max(until, Ordering::Relaxed);
    }

    pub fn end(&self) {
        self.until.store(0, Ordering::Relaxed);
    }

    pub fn live(&self, now: u64) -> bool {
        now < self.until.load(Ordering::Relaxed)
    }
}

impl<A: Cacheable> DecisionCache<A> {
    /// Whose choices changed at `revision` (the next one after the last
    /// seen): their entries go.
    pub fn choices_changed(&self, tenant: &str, subject: &str, revision: u64) -> usize {
        let Ok(mut books) = self.books.lock() else {
            return 0;
        };
        books.choices.recent.record(tenant, subject, revision);
        let taken = books.choices.take(tenant, subject);
        self.remove_taken(&mut books, taken)
    }

    /// Anything up to `revision` may have changed: every entry that read
    /// choices goes, and no answer read before it is kept.
    pub fn choices_flushed(&self, revision: u64) -> usize {
        let Ok(mut books) = self.books.lock() else {
            return 0;
        };
        books.choices.recent.flush(revision);
        let taken = books.choices.take_all();
        self.remove_taken(&mut books, taken)
    }

    fn remove_taken(&self, books: &mut super::Books<A>, taken: Vec<(u64, u64)>) -> usize {
        let super::Books {
            answers, choices, ..
        } = books;
        let gone = taken
            .into_iter()
            .filter(|&(digest, serial)| self.remove(answers, choices, digest, serial))
            .count();
        self.count_entries();
        gone
    }

    /// The watch of choices spoke: it counts as live for `window` more.
    pub fn choices_watch_alive(&self, window: std::time::Duration) {
        self.watch.renew(self.now().saturating_add(millis(window)));
    }

    /// The watch of choices ended: answers that read choices are kept no
    /// longer than their own TTL from now on.
    pub fn choices_watch_ended(&self) {
        self.watch.end();
    }

    /// Whether the watch of choices is live now.
    pub fn choices_watched(&self) -> bool {
        self.watch.live(self.now())
    }
}
