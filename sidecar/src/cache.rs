//! `DecisionCache`: decisions of the PDP, kept for their `ttl_seconds`.
//!
//! - Keyed by every field a decision depends on plus the policy revision the
//!   sidecar knows, so a new revision never serves an old answer.
//! - Concurrent identical misses make one PDP call: the first caller asks,
//!   the others wait for its answer.
//! - Bounded: at the limit, expired entries go first, then arbitrary ones.
//! - Flushed when `WatchPolicy` reports a new revision.
//! - With a stale window, an expired answer may be served while the PDP
//!   cannot be reached, and only then; nothing else is ever permitted.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use dashmap::DashMap;
use purposegate_proto::v1 as pb;
use tokio::sync::OnceCell;

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
}

type Pending = Arc<OnceCell<Result<pb::CheckResponse, tonic::Status>>>;

#[derive(Debug)]
pub struct DecisionCache {
    entries: DashMap<DecisionKey, Cached>,
    in_flight: DashMap<DecisionKey, Pending>,
    /// The revision the PDP announced last; empty until the first one.
    revision: ArcSwap<String>,
    max_entries: usize,
    stale_window: Duration,
    metrics: CacheMetrics,
}

impl DecisionCache {
    pub fn new(max_entries: usize, stale_window: Duration, metrics: CacheMetrics) -> Self {
        DecisionCache {
            entries: DashMap::new(),
            in_flight: DashMap::new(),
            revision: ArcSwap::from_pointee(String::new()),
            max_entries: max_entries.max(1),
            stale_window,
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
        self.entries.clear();
        self.count_entries();
        true
    }

    /// The answer for `req`: from the cache, or from `ask` (the PDP), once
    /// for all concurrent identical requests.
    pub async fn decide<F, Fut>(
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
                    found_cached.store(true, std::sync::atomic::Ordering::Relaxed);
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
            Ok(answer) if found_cached.load(std::sync::atomic::Ordering::Relaxed) => {
                Ok((answer, Source::Hit))
            }
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
        if self.stale_window.is_zero() {
            return None;
        }
        let entry = self.entries.get(key)?;
        (entry.expires + self.stale_window > Instant::now()).then(|| entry.answer.clone())
    }

    fn store(&self, key: &DecisionKey, answer: &pb::CheckResponse) {
        // An answer from another revision than the key's (a reload the watch
        // has not announced yet) is used once, not cached.
        if answer.ttl_seconds == 0 || *key.revision != answer.policy_revision {
            return;
        }
        if self.entries.len() >= self.max_entries && !self.entries.contains_key(key) {
            self.evict();
        }
        let expires = Instant::now() + Duration::from_secs(u64::from(answer.ttl_seconds));
        let mut answer = answer.clone();
        answer.request_id.clear();
        self.entries.insert(key.clone(), Cached { answer, expires });
        self.count_entries();
    }

    fn count_entries(&self) {
        self.metrics
            .entries
            .set(i64::try_from(self.entries.len()).unwrap_or(i64::MAX));
    }

    /// Makes room: expired entries first, then about 1% of the others.
    fn evict(&self) {
        let now = Instant::now();
        let before = self.entries.len();
        self.entries
            .retain(|_, v| v.expires + self.stale_window > now);
        let mut removed = before.saturating_sub(self.entries.len());
        if self.entries.len() >= self.max_entries {
            let target = (self.max_entries / 100).max(1);
            let victims: Vec<DecisionKey> = self
                .entries
                .iter()
                .take(target)
                .map(|e| e.key().clone())
                .collect();
            for key in victims {
                if self.entries.remove(&key).is_some() {
                    removed += 1;
                }
            }
        }
        self.metrics.evictions.inc_by(removed as u64);
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
