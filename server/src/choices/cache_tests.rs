//! The server's cache of choices and its feed of changes.

#![allow(clippy::unwrap_used, clippy::panic, clippy::indexing_slicing)]

use std::collections::BTreeMap;
use std::sync::Arc;

use super::*;
use crate::choices::MemoryChoices;
use crate::engine::ChoiceState;

const T: i64 = 1_796_637_600;

fn new(subject: &str, state: ChoiceState) -> NewChoice {
    NewChoice {
        tenant: "contoso".into(),
        data_subject: subject.into(),
        purpose: "marketing".into(),
        state,
        expires_at: None,
        basis: "consent".into(),
        evidence: BTreeMap::new(),
    }
}

/// A store that counts its reads, and can be written behind the cache's
/// back (as a read racing a write sees it).
#[derive(Debug, Default)]
struct Counted {
    inner: MemoryChoices,
    reads: std::sync::atomic::AtomicUsize,
}

impl ChoicesStore for Counted {
    fn record(&self, c: NewChoice, by: &str, now: i64) -> Result<ChoiceRecord, StoreError> {
        self.inner.record(c, by, now)
    }
    fn current(&self, t: &str, s: &str) -> Result<(Vec<Choice>, u64), StoreError> {
        self.reads
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.inner.current(t, s)
    }
    fn current_records(&self, t: &str, s: &str) -> Result<(Vec<ChoiceRecord>, u64), StoreError> {
        self.inner.current_records(t, s)
    }
    fn history(&self, t: &str, s: &str, a: u64, l: usize) -> Result<Vec<ChoiceRecord>, StoreError> {
        self.inner.history(t, s, a, l)
    }
    fn subjects(
        &self,
        t: &str,
        a: &str,
        l: usize,
    ) -> Result<Vec<(String, Vec<Choice>)>, StoreError> {
        self.inner.subjects(t, a, l)
    }
    fn changes(&self, after: u64, limit: usize) -> Result<Vec<ChoiceChange>, StoreError> {
        self.inner.changes(after, limit)
    }
    fn revision(&self) -> u64 {
        self.inner.revision()
    }
}

#[test]
fn reads_are_cached_and_a_write_evicts_its_key_only() {
    let store = Arc::new(Counted::default());
    let cache = CachedChoices::new(store.clone(), DEFAULT_MAX_BYTES);
    cache
        .record(new("u-1", ChoiceState::Granted), "w", T)
        .unwrap();
    for _ in 0..3 {
        assert_eq!(cache.current("contoso", "u-1").unwrap().0.len(), 1);
        assert!(cache.current("contoso", "u-2").unwrap().0.is_empty());
    }
    let reads = || store.reads.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(reads(), 2, "each key read once");
    cache
        .record(new("u-1", ChoiceState::Withdrawn), "w", T)
        .unwrap();
    let (choices, revision) = cache.current("contoso", "u-1").unwrap();
    assert_eq!((choices[0].state, revision), (ChoiceState::Withdrawn, 2));
    cache.current("contoso", "u-2").unwrap();
    assert_eq!(reads(), 3, "only u-1 read again");
    // The feed: every change in order, from any revision.
    let changes = cache.changes_after(0, 10).unwrap();
    let revisions: Vec<u64> = changes.iter().map(|c| c.revision).collect();
    assert_eq!(revisions, [1, 2]);
    assert_eq!(cache.changes_after(1, 10).unwrap()[0].revision, 2);
    assert!(cache.changes_after(2, 10).unwrap().is_empty());
    assert_eq!(cache.changes_in_feed(0, 1).unwrap().len(), 1);
    assert_eq!(cache.changes_in_feed(1, 10).unwrap()[0].revision, 2);
    assert!(cache.changes_in_feed(2, 10).unwrap().is_empty());
}

#[test]
fn a_read_that_raced_a_write_is_not_kept() {
    let store = Arc::new(Counted::default());
    let cache = CachedChoices::new(store.clone(), DEFAULT_MAX_BYTES);
    cache
        .record(new("u-1", ChoiceState::Granted), "w", T)
        .unwrap();
    // Read at revision 1, then the write at 2 lands before it is kept.
    let (read, at) = store.current("contoso", "u-1").unwrap();
    cache
        .record(new("u-1", ChoiceState::Withdrawn), "w", T)
        .unwrap();
    cache.keep("contoso", "u-1", &read, at);
    let (choices, _) = cache.current("contoso", "u-1").unwrap();
    assert_eq!(choices[0].state, ChoiceState::Withdrawn);
}

#[test]
fn the_cache_stays_within_its_bytes() {
    let store = Arc::new(Counted::default());
    let cache = CachedChoices::new(store, 64 * 1024);
    for i in 0..5000 {
        cache.current("contoso", &format!("subject-{i}")).unwrap();
        assert!(cache.held().1 <= 64 * 1024);
    }
    assert!(cache.held().0 > 100, "{:?}", cache.held());
}
