//! `DecisionCache`: decisions of the PDP, kept for their `ttl_seconds`.
//!
//! - A question is every field a decision depends on, written canonically
//!   into bytes ([`question`]). Entries are found by a keyed 64-bit digest
//!   of those bytes and the whole question compared on a hit, so no two
//!   questions ever share an answer; each entry also names the revision's
//!   generation it was answered under, so a new revision never serves an
//!   old answer. A hit writes the question
//!   into a reused buffer, hashes it once and clones one pointer: it
//!   allocates nothing.
//! - Answers are stored once behind an `Arc`: answers alike (most are:
//!   the same permit for every subject of a route) share one copy.
//! - Concurrent identical misses make one PDP call: the first caller asks,
//!   the others wait for its answer.
//! - Bounded in entries and in bytes (each entry's question, each shared
//!   answer once, with a fixed overhead): at a bound the oldest entries go
//!   first, found from queues in insertion order, never by walking the map.
//!   Every field is within the request limits, so no one entry is large.
//! - Denials (every answer but PERMIT) are kept only briefly
//!   (`--cache-deny-ttl`): a caller cycling through questions that are all
//!   refused fills nothing for long.
//! - Expired entries are swept every second, oldest first, without walking
//!   the map.
//! - Flushed when `WatchPolicy` reports a new revision.
//! - With a stale window, an expired answer may be served while the PDP
//!   cannot be reached, and only then; nothing else is ever permitted.

mod answer;
mod books;
mod choices;
mod question;

pub use answer::{Answer, Cacheable, Source};
use answer::{ENTRY_OVERHEAD, SLOT_BYTES};
use choices::{ChoiceIndex, INDEX_BYTES, Liveness, ReadChoices};

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher, RandomState};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use dashmap::DashMap;
use purposegate_proto::v1 as pb;
use tokio::sync::OnceCell;
use tokio::time::Instant;

use crate::metrics::CacheMetrics;

/// The map's hasher for digests that are already keyed hashes: it passes
/// them through.
#[derive(Debug, Default, Clone, Copy)]
struct Digested(u64);

impl Hasher for Digested {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only digests (`write_u64`) are hashed with it; anything else is
        // folded in rather than lost.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

#[derive(Debug)]
struct Cached<A> {
    question: Box<[u8]>,
    answer: Arc<A>,
    /// The digest of the answer's content, its place in the table of
    /// answers; `None` when it has a copy of its own.
    shared_as: Option<u64>,
    /// The revision's generation it was answered under.
    generation: u64,
    /// When it expires, in milliseconds of the cache's clock.
    expires: u64,
    /// Which store this is, to tell it from a later one of the question.
    serial: u64,
    bytes: u32,
    /// Whose choices it read, if it read any.
    read: Option<ReadChoices>,
}

/// An entry's place in a queue, oldest first.
#[derive(Debug)]
struct Slot {
    digest: u64,
    serial: u64,
    /// When it may be dropped (past its TTL and the stale window), in
    /// milliseconds of the cache's clock.
    dead_at: u64,
}

type Pending<A> = Arc<OnceCell<Result<Arc<A>, tonic::Status>>>;

/// What the cache changes only under its lock: the queues (insertion
/// order of the entries, one per kind of TTL, permits and denials, so each
/// is also in order of expiry) and the table of answers.
#[derive(Debug)]
struct Books<A> {
    queues: [VecDeque<Slot>; 2],
    /// Each answer once, by the digest of its content.
    answers: HashMap<u64, Arc<A>>,
    /// The entries that read choices, and the last changes of choices.
    choices: ChoiceIndex,
}

impl<A> Default for Books<A> {
    fn default() -> Self {
        Books {
            queues: Default::default(),
            answers: HashMap::new(),
            choices: ChoiceIndex::default(),
        }
    }
}

/// The revision the cache answers for, and its generation: a number that
/// changes with every revision and begins every question.
#[derive(Debug, Default)]
struct Revision {
    id: String,
    generation: u64,
}

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

/// Answers of `Check` by default; `DecisionCache<pb::PermittedPurposesResponse>`
/// keeps those of the reverse question.
#[derive(Debug)]
pub struct DecisionCache<A = pb::CheckResponse> {
    /// Entries by the digest of their question.
    entries: DashMap<u64, Cached<A>, BuildHasherDefault<Digested>>,
    /// Flights by the generation and question they ask.
    in_flight: DashMap<Flight, Pending<A>>,
    /// Keyed with random keys of this process, so no caller can choose
    /// questions whose digests collide.
    hasher: RandomState,
    books: Mutex<Books<A>>,
    bytes: AtomicUsize,
    /// Entries held (`DashMap::len` would lock every shard).
    count: AtomicUsize,
    serial: AtomicU64,
    /// The revision the PDP announced last; empty until the first one.
    revision: ArcSwap<Revision>,
    /// Where the cache's clock starts: times are milliseconds from it.
    epoch: Instant,
    /// The stale window in milliseconds.
    stale_ms: u64,
    /// Whether the watch of choices is live.
    watch: Liveness,
    limits: CacheLimits,
    metrics: CacheMetrics,
}

/// What a flight asks: a question, under a generation.
type Flight = (u64, Box<[u8]>);

/// A duration in whole milliseconds (saturating).
fn millis(d: Duration) -> u64 {
    d.as_secs()
        .saturating_mul(1000)
        .saturating_add(u64::from(d.subsec_millis()))
}

impl<A: Cacheable> DecisionCache<A> {
    pub fn new(limits: CacheLimits, metrics: CacheMetrics) -> Self {
        DecisionCache {
            entries: DashMap::default(),
            in_flight: DashMap::new(),
            hasher: RandomState::new(),
            books: Mutex::new(Books::default()),
            bytes: AtomicUsize::new(0),
            count: AtomicUsize::new(0),
            serial: AtomicU64::new(0),
            revision: ArcSwap::from_pointee(Revision::default()),
            epoch: Instant::now(),
            stale_ms: millis(limits.stale_window),
            watch: Liveness::default(),
            limits: CacheLimits {
                max_entries: limits.max_entries.max(1),
                ..limits
            },
            metrics,
        }
    }

    /// A new revision: everything cached belongs to an older one.
    pub fn set_revision(&self, revision: &str) -> bool {
        // Under the lock, as every store is: no store can land between the
        // map and its books, and every byte counted goes.
        let Ok(mut books) = self.books.lock() else {
            return false;
        };
        let current = self.revision.load();
        if current.id == revision {
            return false;
        }
        self.revision.store(Arc::new(Revision {
            id: revision.to_string(),
            generation: current.generation.wrapping_add(1),
        }));
        self.entries.clear();
        // What changed in the choices lately stays known: it is about
        // choices, not the policy.
        let choices = std::mem::take(&mut books.choices).forget_entries();
        *books = Books {
            choices,
            ..Books::default()
        };
        self.bytes.store(0, Ordering::Relaxed);
        self.count.store(0, Ordering::Relaxed);
        drop(books);
        self.count_entries();
        true
    }

    /// The answer for `req`: from the cache, or from `ask` (the PDP), once
    /// for all concurrent identical requests.
    pub async fn get_or_ask<F, Fut>(
        &self,
        req: &pb::CheckRequest,
        ask: F,
    ) -> Result<(Arc<A>, Source), tonic::Status>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<A, tonic::Status>>,
    {
        let revision = self.revision.load();
        let generation = revision.generation;
        let found = question::with_question(req, |question| {
            let digest = self.hasher.hash_one(question);
            match self.fresh(digest, generation, question) {
                Some(answer) => Ok(answer),
                None => Err((digest, Box::<[u8]>::from(question))),
            }
        });
        let (digest, question) = match found {
            Ok(answer) => {
                self.metrics.hits.inc();
                return Ok((answer, Source::Hit));
            }
            Err(miss) => miss,
        };
        let revision = arc_swap::Guard::into_inner(revision);
        let flight: Flight = (generation, question);
        let cell = match self.in_flight.entry(flight.clone()) {
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
                    flight: &flight,
                    cell: &cell,
                };
                // A caller who came after the last flight landed finds its
                // answer here instead of asking again.
                if let Some(answer) = self.fresh(digest, generation, &flight.1) {
                    self.metrics.hits.inc();
                    found_cached.store(true, Ordering::Relaxed);
                    return Ok(answer);
                }
                self.metrics.misses.inc();
                match ask().await {
                    Ok(answer) => Ok(self.store(digest, &flight.1, &revision, req, answer)),
                    Err(status) => {
                        self.metrics.pdp_errors.inc();
                        Err(status)
                    }
                }
            })
            .await
            .clone();
        match result {
            Ok(answer) if found_cached.load(Ordering::Relaxed) => Ok((answer, Source::Hit)),
            Ok(answer) => Ok((answer, Source::Miss)),
            Err(status) => match self.stale(digest, generation, &flight.1) {
                Some(answer) => {
                    self.metrics.stale.inc();
                    Ok((answer, Source::Stale))
                }
                None => Err(status),
            },
        }
    }

    /// Milliseconds since the cache's clock started.
    fn now(&self) -> u64 {
        millis(Instant::now().saturating_duration_since(self.epoch))
    }

    fn fresh(&self, digest: u64, generation: u64, question: &[u8]) -> Option<Arc<A>> {
        let entry = self.entries.get(&digest)?;
        let now = self.now();
        // An answer that read choices is kept past its short TTL only
        // while the watch of choices is live.
        let expires = match entry.read {
            Some(read) if !self.watch.live(now) => entry.expires.min(read.unwatched_expires),
            _ => entry.expires,
        };
        (entry.generation == generation && *entry.question == *question && expires > now)
            .then(|| entry.answer.clone())
    }

    fn stale(&self, digest: u64, generation: u64, question: &[u8]) -> Option<Arc<A>> {
        if self.stale_ms == 0 {
            return None;
        }
        let entry = self.entries.get(&digest)?;
        // Never an answer that read choices: one may have been withdrawn
        // while the PDP was away.
        (entry.generation == generation
            && entry.read.is_none()
            && *entry.question == *question
            && entry.expires.saturating_add(self.stale_ms) > self.now())
        .then(|| entry.answer.clone())
    }

    /// Keeps `answer` for `question` (asked under `revision`) for its TTL,
    /// and gives it back shared.
    fn store(
        &self,
        digest: u64,
        question: &[u8],
        revision: &Revision,
        req: &pb::CheckRequest,
        mut answer: A,
    ) -> Arc<A> {
        // An answer from another revision than the question's (a reload the
        // watch has not announced yet) is used once, not cached.
        if answer.ttl_seconds() == 0 || answer.policy_revision() != revision.id {
            return Arc::new(answer);
        }
        let permit = answer.lets_through();
        let read_choices = answer.choices_revision();
        let deny_cap = |ttl: Duration| {
            if permit {
                ttl
            } else {
                ttl.min(self.limits.deny_ttl)
            }
        };
        let unwatched_ttl = deny_cap(Duration::from_secs(u64::from(answer.ttl_seconds())));
        // One that read choices: as long as the watch allows while it is
        // live ([`DecisionCache::fresh`]).
        let ttl = match read_choices {
            Some(_) => deny_cap(Duration::from_secs(u64::from(
                answer.watched_ttl_seconds().max(answer.ttl_seconds()),
            ))),
            None => unwatched_ttl,
        };
        if ttl.is_zero() {
            return Arc::new(answer);
        }
        // What the caller asked with is the caller's, not the answer's.
        answer.clear_request_id();
        let answer_cost = answer.heap_bytes();
        let entry_cost = ENTRY_OVERHEAD
            + question.len()
            + if read_choices.is_some() {
                INDEX_BYTES
            } else {
                0
            };
        if entry_cost + answer_cost + SLOT_BYTES > self.limits.max_bytes {
            return Arc::new(answer);
        }
        let content = self.hasher.hash_one(answer.encode_to_vec());
        let now = self.now();
        let expires = now.saturating_add(millis(ttl));
        let serial = self.serial.fetch_add(1, Ordering::Relaxed);
        // Everything below under the lock: the map, its books and the
        // counts change together.
        let Ok(mut books) = self.books.lock() else {
            return Arc::new(answer);
        };
        // A flush that came while the answer was on its way: it belongs to
        // a revision nothing will ask about again.
        if self.revision.load().generation != revision.generation {
            return Arc::new(answer);
        }
        // A change of its choices that came while it was on its way (or
        // one too long ago to tell): used once, not kept.
        let resource = req.resource.as_ref();
        let tenant = resource.map_or("", |r| r.owner_tenant.as_str());
        let subject = resource.map_or("", |r| r.data_subject.as_str());
        let read = match read_choices {
            Some(read_at) => {
                if !books
                    .choices
                    .recent
                    .unchanged_since(tenant, subject, read_at, true)
                {
                    return Arc::new(answer);
                }
                let (tenant, subject) = books.choices.recent.digest(tenant, subject);
                Some(ReadChoices {
                    tenant,
                    subject,
                    unwatched_expires: now.saturating_add(millis(unwatched_ttl)),
                })
            }
            None => None,
        };
        // The answer's one copy: the one kept already, or this one, kept
        // (and counted) once room is made. A different answer whose
        // content hashes alike keeps a copy of its own.
        let (answer, shared_as, new_in_table, own_cost) = match books.answers.get(&content) {
            Some(kept) if **kept == answer => (kept.clone(), Some(content), false, 0),
            Some(_) => (Arc::new(answer), None, false, answer_cost),
            None => (Arc::new(answer), Some(content), true, 0),
        };
        let needed =
            entry_cost + own_cost + SLOT_BYTES + if new_in_table { answer_cost } else { 0 };
        // Room first, oldest first: never past either bound.
        self.sweep_locked(&mut books, now);
        while self.bytes.load(Ordering::Relaxed) + needed > self.limits.max_bytes
            || self.len() >= self.limits.max_entries
        {
            if !self.evict_oldest(&mut books) {
                // Nothing left to evict: only answers no entry holds (a hit
                // still had them) remain; let them go too.
                self.drop_unheld_answers(&mut books);
                break;
            }
        }
        let Books {
            queues,
            answers,
            choices,
        } = &mut *books;
        if new_in_table {
            answers.insert(content, answer.clone());
        }
        if let Some(queue) = queues.get_mut(usize::from(!permit)) {
            queue.push_back(Slot {
                digest,
                serial,
                dead_at: expires.saturating_add(self.stale_ms),
            });
        }
        self.bytes.fetch_add(needed, Ordering::Relaxed);
        let replaced = self.entries.insert(
            digest,
            Cached {
                question: question.into(),
                answer: answer.clone(),
                shared_as,
                generation: revision.generation,
                expires,
                serial,
                bytes: u32::try_from(entry_cost + own_cost).unwrap_or(u32::MAX),
                read,
            },
        );
        if let Some(read) = read {
            choices.insert(read, digest, serial);
        }
        match replaced {
            Some(old) => self.release(answers, choices, digest, old),
            None => {
                self.count.fetch_add(1, Ordering::Relaxed);
            }
        }
        drop(books);
        self.count_entries();
        answer
    }

    /// Drops what has expired, and answers no one holds; called every
    /// second by [`DecisionCache::sweep_every`].
    pub fn sweep(&self) -> usize {
        let swept = match self.books.lock() {
            Ok(mut books) => {
                let swept = self.sweep_locked(&mut books, self.now());
                self.drop_unheld_answers(&mut books);
                swept
            }
            Err(_) => 0,
        };
        self.count_entries();
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

    /// Answers held once for all the entries that share them.
    pub fn answers(&self) -> usize {
        self.books.lock().map_or(0, |books| books.answers.len())
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
/// flight for the same question has taken its place.
struct Landed<'a, A> {
    in_flight: &'a DashMap<Flight, Pending<A>>,
    flight: &'a Flight,
    cell: &'a Pending<A>,
}

impl<A> Drop for Landed<'_, A> {
    fn drop(&mut self) {
        self.in_flight
            .remove_if(self.flight, |_, flight| Arc::ptr_eq(flight, self.cell));
    }
}

#[cfg(test)]
mod choices_tests;
#[cfg(test)]
mod tests;
