//! `DecisionCache`: decisions of the PDP, kept for their `ttl_seconds`.
//!
//! - Keyed by every field a decision depends on plus the policy revision the
//!   sidecar knows, so a new revision never serves an old answer.
//! - Concurrent identical misses make one PDP call: the first caller asks,
//!   the others wait for its answer.
//! - Bounded in entries and in bytes (each entry's keys and answer are
//!   counted, with a fixed overhead): at a bound the oldest entries go
//!   first. Every field is within the request limits, so no one entry is
//!   large.
//! - Denials (every answer but PERMIT) are kept only briefly
//!   (`--cache-deny-ttl`): a caller cycling through questions that are all
//!   refused fills nothing for long.
//! - Expired entries are swept every second, oldest first, without walking
//!   the map.
//! - Flushed when `WatchPolicy` reports a new revision.
//! - With a stale window, an expired answer may be served while the PDP
//!   cannot be reached, and only then; nothing else is ever permitted.

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use dashmap::DashMap;
use purposegate_proto::v1 as pb;
use tokio::sync::OnceCell;
use tokio::time::Instant;

use crate::metrics::CacheMetrics;

/// Everything a decision depends on, and the revision it was made under.
/// `action` and `request_id` are left out: the policy does not decide on
/// them.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DecisionKey {
    revision: Arc<String>,
    purpose: String,
    subject_id: String,
    tenant: String,
    roles: Vec<String>,
    category: String,
    owner_tenant: String,
    deidentification: i32,
    group_size: u64,
    origin: Vec<String>,
    resource_attributes: BTreeMap<String, String>,
    customer_instruction: String,
    context_attributes: BTreeMap<String, String>,
    supported_obligations: Vec<String>,
}

impl DecisionKey {
    pub fn new(revision: Arc<String>, req: &pb::CheckRequest) -> Self {
        let subject = req.subject.clone().unwrap_or_default();
        let resource = req.resource.clone().unwrap_or_default();
        let context = req.context.clone().unwrap_or_default();
        DecisionKey {
            revision,
            purpose: req.purpose.clone(),
            subject_id: subject.id,
            tenant: subject.tenant,
            roles: subject.roles,
            category: resource.category,
            owner_tenant: resource.owner_tenant,
            deidentification: resource.deidentification,
            group_size: resource.group_size,
            origin: resource.origin,
            resource_attributes: resource.attributes.into_iter().collect(),
            customer_instruction: context.customer_instruction,
            context_attributes: context.attributes.into_iter().collect(),
            supported_obligations: req.supported_obligations.clone(),
        }
    }

    /// The bytes its strings and lists take on the heap.
    fn heap_bytes(&self) -> usize {
        let list = |l: &[String]| l.iter().map(|s| s.len() + STRING).sum::<usize>();
        let map = |m: &BTreeMap<String, String>| {
            m.iter()
                .map(|(k, v)| k.len() + v.len() + 2 * STRING + MAP_NODE)
                .sum::<usize>()
        };
        self.purpose.len()
            + self.subject_id.len()
            + self.tenant.len()
            + list(&self.roles)
            + self.category.len()
            + self.owner_tenant.len()
            + list(&self.origin)
            + map(&self.resource_attributes)
            + self.customer_instruction.len()
            + map(&self.context_attributes)
            + list(&self.supported_obligations)
    }
}

/// Size of a `String` (or `Vec`) header, and a share of a `BTreeMap` node.
const STRING: usize = 24;
const MAP_NODE: usize = 16;
/// What an entry costs besides its strings: the key and value structs, the
/// map's slot, the allocator's rounding.
const ENTRY_OVERHEAD: usize = 640;
/// What one place in a queue costs. A key stored again (after its TTL, its
/// old place not yet gone under a stale window) has two places; each is
/// counted until it leaves its queue.
const SLOT_BYTES: usize = 64;

/// The bytes an answer takes on the heap.
fn answer_bytes(answer: &pb::CheckResponse) -> usize {
    answer.reason.len()
        + answer.policy_revision.len()
        + answer
            .rule_ids
            .iter()
            .map(|r| r.len() + STRING)
            .sum::<usize>()
        + answer
            .obligations
            .iter()
            .map(|o| {
                o.id.len()
                    + STRING
                    + o.params
                        .iter()
                        .map(|(k, v)| k.len() + v.len() + 2 * STRING + MAP_NODE)
                        .sum::<usize>()
            })
            .sum::<usize>()
        + answer.monitor.as_ref().map_or(0, |m| {
            m.rule_ids.iter().map(|r| r.len() + STRING).sum::<usize>()
        })
}

/// Where an answer came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Hit,
    Miss,
    /// An expired answer, served inside the stale window because the PDP
    /// could not be reached.
    Stale,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Hit => "hit",
            Source::Miss => "miss",
            Source::Stale => "stale",
        }
    }
}

#[derive(Debug, Clone)]
struct Cached {
    answer: pb::CheckResponse,
    expires: Instant,
    /// Which store this is, to tell it from a later one of the same key.
    serial: u64,
    bytes: usize,
}

/// An entry's place in a queue, oldest first.
#[derive(Debug)]
struct Slot {
    key: Arc<DecisionKey>,
    serial: u64,
    /// When it may be dropped: past its TTL and the stale window.
    dead_at: Instant,
}

type Pending = Arc<OnceCell<Result<pb::CheckResponse, tonic::Status>>>;

/// How the cache is bounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheLimits {
    pub max_entries: usize,
    pub max_bytes: usize,
    /// How long a past its TTL a cached answer may serve while the PDP
    /// cannot be reached.
    pub stale_window: Duration,
    /// Longest time an answer other than PERMIT is kept.
    pub deny_ttl: Duration,
}

#[derive(Debug)]
pub struct DecisionCache {
    entries: DashMap<Arc<DecisionKey>, Cached>,
    in_flight: DashMap<DecisionKey, Pending>,
    /// Insertion order of the entries, one queue per kind of TTL (permits,
    /// denials), so each is also in order of expiry.
    queues: Mutex<[VecDeque<Slot>; 2]>,
    bytes: AtomicUsize,
    /// Entries held (`DashMap::len` would lock every shard).
    count: AtomicUsize,
    serial: AtomicU64,
    /// The revision the PDP announced last; empty until the first one.
    revision: ArcSwap<String>,
    limits: CacheLimits,
    metrics: CacheMetrics,
}

impl DecisionCache {
    pub fn new(limits: CacheLimits, metrics: CacheMetrics) -> Self {
        DecisionCache {
            entries: DashMap::new(),
            in_flight: DashMap::new(),
            queues: Mutex::new([VecDeque::new(), VecDeque::new()]),
            bytes: AtomicUsize::new(0),
            count: AtomicUsize::new(0),
            serial: AtomicU64::new(0),
            revision: ArcSwap::from_pointee(String::new()),
            limits: CacheLimits {
                max_entries: limits.max_entries.max(1),
                ..limits
            },
            metrics,
        }
    }

    pub fn revision(&self) -> Arc<String> {
        self.revision.load_full()
    }

    /// A new revision: everything cached belongs to an older one.
    pub fn set_revision(&self, revision: &str) -> bool {
        if **self.revision.load() == revision {
            return false;
        }
        self.revision.store(Arc::new(revision.to_string()));
        // Under the queues' lock, as every store is: no store can land
        // between the map and its queues.
        if let Ok(mut queues) = self.queues.lock() {
            let (mut freed, mut gone) = (0, 0);
            self.entries.retain(|_, cached| {
                freed += cached.bytes;
                gone += 1;
                false
            });
            for queue in queues.iter_mut() {
                freed += queue.len() * SLOT_BYTES;
                queue.clear();
            }
            self.bytes.fetch_sub(freed, Ordering::Relaxed);
            self.count.fetch_sub(gone, Ordering::Relaxed);
        }
        self.count_entries();
        true
    }

    /// The answer for `req`: from the cache, or from `ask` (the PDP), once
    /// for all concurrent identical requests.
    pub async fn get_or_ask<F, Fut>(
        &self,
        req: &pb::CheckRequest,
        ask: F,
    ) -> Result<(pb::CheckResponse, Source), tonic::Status>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<pb::CheckResponse, tonic::Status>>,
    {
        let key = DecisionKey::new(self.revision(), req);
        if let Some(answer) = self.fresh(&key) {
            self.metrics.hits.inc();
            return Ok((answer, Source::Hit));
        }
        let cell = match self.in_flight.entry(key.clone()) {
            dashmap::Entry::Occupied(e) => {
                self.metrics.coalesced.inc();
                e.get().clone()
            }
            dashmap::Entry::Vacant(e) => e.insert(Arc::new(OnceCell::new())).clone(),
        };
        // Set only if this caller ran the flight: whether it found the
        // answer cached after all.
        let found_cached = std::sync::atomic::AtomicBool::new(false);
        let result = cell
            .get_or_init(|| async {
                // However this flight ends, answered or cancelled, it leaves
                // the in-flight map so the next miss asks afresh.
                let _landed = Landed {
                    in_flight: &self.in_flight,
                    key: &key,
                    cell: &cell,
                };
                // A caller who came after the last flight landed finds its
                // answer here instead of asking again.
                if let Some(answer) = self.fresh(&key) {
                    self.metrics.hits.inc();
                    found_cached.store(true, Ordering::Relaxed);
                    return Ok(answer);
                }
                self.metrics.misses.inc();
                let result = ask().await;
                match &result {
                    Ok(answer) => self.store(&key, answer),
                    Err(_) => {
                        self.metrics.pdp_errors.inc();
                    }
                }
                result
            })
            .await
            .clone();
        match result {
            Ok(answer) if found_cached.load(Ordering::Relaxed) => Ok((answer, Source::Hit)),
            Ok(answer) => Ok((answer, Source::Miss)),
            Err(status) => match self.stale(&key) {
                Some(answer) => {
                    self.metrics.stale.inc();
                    Ok((answer, Source::Stale))
                }
                None => Err(status),
            },
        }
    }

    fn fresh(&self, key: &DecisionKey) -> Option<pb::CheckResponse> {
        let entry = self.entries.get(key)?;
        (entry.expires > Instant::now()).then(|| entry.answer.clone())
    }

    fn stale(&self, key: &DecisionKey) -> Option<pb::CheckResponse> {
        if self.limits.stale_window.is_zero() {
            return None;
        }
        let entry = self.entries.get(key)?;
        (entry.expires + self.limits.stale_window > Instant::now()).then(|| entry.answer.clone())
    }

    fn store(&self, key: &DecisionKey, answer: &pb::CheckResponse) {
        // An answer from another revision than the key's (a reload the watch
        // has not announced yet) is used once, not cached.
        if answer.ttl_seconds == 0 || *key.revision != answer.policy_revision {
            return;
        }
        let permit = answer.decision() == pb::Decision::Permit;
        let mut ttl = Duration::from_secs(u64::from(answer.ttl_seconds));
        if !permit {
            ttl = ttl.min(self.limits.deny_ttl);
        }
        if ttl.is_zero() {
            return;
        }
        let mut answer = answer.clone();
        answer.request_id.clear();
        let bytes = ENTRY_OVERHEAD + key.heap_bytes() + answer_bytes(&answer);
        if bytes + SLOT_BYTES > self.limits.max_bytes {
            return;
        }
        let now = Instant::now();
        let expires = now + ttl;
        let serial = self.serial.fetch_add(1, Ordering::Relaxed);
        // Everything below under the queues' lock: the map, its queues and
        // the counts change together.
        let Ok(mut queues) = self.queues.lock() else {
            return;
        };
        // A flush that came while the answer was on its way: it belongs to
        // a revision nothing will ask about again.
        if **self.revision.load() != *key.revision {
            return;
        }
        // A key stored before keeps its one copy; a new store shares it.
        let existing = self.entries.get(key).map(|e| e.key().clone());
        let key = existing.unwrap_or_else(|| Arc::new(key.clone()));
        // Room first, oldest first: never past either bound.
        self.sweep_locked(&mut queues, now);
        while self.bytes.load(Ordering::Relaxed) + bytes + SLOT_BYTES > self.limits.max_bytes
            || self.len() >= self.limits.max_entries
        {
            if !self.evict_oldest(&mut queues) {
                break;
            }
        }
        if let Some(queue) = queues.get_mut(usize::from(!permit)) {
            queue.push_back(Slot {
                key: key.clone(),
                serial,
                dead_at: expires + self.limits.stale_window,
            });
        }
        self.bytes.fetch_add(bytes + SLOT_BYTES, Ordering::Relaxed);
        let replaced = self.entries.insert(
            key,
            Cached {
                answer,
                expires,
                serial,
                bytes,
            },
        );
        match replaced {
            Some(old) => {
                self.bytes.fetch_sub(old.bytes, Ordering::Relaxed);
            }
            None => {
                self.count.fetch_add(1, Ordering::Relaxed);
            }
        }
        drop(queues);
        self.count_entries();
    }

    /// Drops the entry of the oldest slot of either queue; false when both
    /// are empty.
    fn evict_oldest(&self, queues: &mut [VecDeque<Slot>; 2]) -> bool {
        let [permits, denials] = queues;
        let queue = match (permits.front(), denials.front()) {
            (Some(p), Some(d)) => {
                if p.serial < d.serial {
                    permits
                } else {
                    denials
                }
            }
            (Some(_), None) => permits,
            (None, Some(_)) => denials,
            (None, None) => return false,
        };
        if let Some(slot) = queue.pop_front() {
            self.bytes.fetch_sub(SLOT_BYTES, Ordering::Relaxed);
            if self.remove(&slot) {
                self.metrics.evictions.inc();
            }
        }
        true
    }

    /// Removes the entry a slot stands for, unless a later store replaced
    /// it. True if an entry went.
    fn remove(&self, slot: &Slot) -> bool {
        match self
            .entries
            .remove_if(&*slot.key, |_, cached| cached.serial == slot.serial)
        {
            Some((_, cached)) => {
                self.bytes.fetch_sub(cached.bytes, Ordering::Relaxed);
                self.count.fetch_sub(1, Ordering::Relaxed);
                true
            }
            None => false,
        }
    }

    /// Drops entries past their TTL and the stale window, oldest first.
    fn sweep_locked(&self, queues: &mut [VecDeque<Slot>; 2], now: Instant) -> usize {
        let mut swept = 0;
        for queue in queues.iter_mut() {
            while queue.front().is_some_and(|slot| slot.dead_at <= now) {
                if let Some(slot) = queue.pop_front() {
                    self.bytes.fetch_sub(SLOT_BYTES, Ordering::Relaxed);
                    if self.remove(&slot) {
                        swept += 1;
                    }
                }
            }
        }
        swept
    }

    /// Drops what has expired; called every second by [`DecisionCache::sweep_every`].
    pub fn sweep(&self) -> usize {
        let swept = match self.queues.lock() {
            Ok(mut queues) => self.sweep_locked(&mut queues, Instant::now()),
            Err(_) => 0,
        };
        if swept > 0 {
            self.count_entries();
        }
        swept
    }

    /// Sweeps expired entries every `period` for as long as the cache lives.
    pub fn sweep_every(self: &Arc<Self>, period: Duration) {
        let cache = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(cache) = cache.upgrade() else { return };
                cache.sweep();
            }
        });
    }

    /// Entries held now.
    pub fn len(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes held now, as counted.
    pub fn bytes(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }

    fn count_entries(&self) {
        self.metrics
            .entries
            .set(i64::try_from(self.len()).unwrap_or(i64::MAX));
        self.metrics
            .bytes
            .set(i64::try_from(self.bytes()).unwrap_or(i64::MAX));
    }
}

/// Removes a flight from the in-flight map when it ends, unless a newer
/// flight for the same key has taken its place.
struct Landed<'a> {
    in_flight: &'a DashMap<DecisionKey, Pending>,
    key: &'a DecisionKey,
    cell: &'a Pending,
}

impl Drop for Landed<'_> {
    fn drop(&mut self) {
        self.in_flight
            .remove_if(self.key, |_, flight| Arc::ptr_eq(flight, self.cell));
    }
}

#[cfg(test)]
mod tests;
