//! What the cache keeps (an answer of the PDP, shared behind an `Arc`)
//! and what each part weighs in the byte bound; where a lookup's answer
//! came from.

use std::collections::HashMap;
use std::sync::Arc;

use purposegate_proto::v1 as pb;

/// An answer as the cache hands it out: shared, never copied.
pub type Answer = Arc<pb::CheckResponse>;

/// What the cache keeps: an answer of the PDP (`Check`'s, or
/// `PermittedPurposes`'), with what the cache reads of it.
pub trait Cacheable: prost::Message + PartialEq + Default + Clone + Send + Sync + 'static {
    /// How long the PDP lets it be cached.
    fn ttl_seconds(&self) -> u32;
    /// The revision of the choices it read, if it read any.
    fn choices_revision(&self) -> Option<u64> {
        None
    }
    /// How long it may be kept while the watch of choices is live (when
    /// it read choices).
    fn watched_ttl_seconds(&self) -> u32 {
        0
    }
    /// The revision that decided it.
    fn policy_revision(&self) -> &str;
    /// Whether it lets anything through: kept for its TTL; others at most
    /// `--cache-deny-ttl`.
    fn lets_through(&self) -> bool;
    /// The caller's request id is the caller's, not the answer's.
    fn clear_request_id(&mut self);
    /// The bytes it takes on the heap.
    fn heap_bytes(&self) -> usize;
}

impl Cacheable for pb::CheckResponse {
    fn ttl_seconds(&self) -> u32 {
        self.ttl_seconds
    }

    fn choices_revision(&self) -> Option<u64> {
        self.choices_revision
    }

    fn watched_ttl_seconds(&self) -> u32 {
        self.watched_ttl_seconds
    }

    fn policy_revision(&self) -> &str {
        &self.policy_revision
    }

    fn lets_through(&self) -> bool {
        self.decision() == pb::Decision::Permit
    }

    fn clear_request_id(&mut self) {
        self.request_id.clear();
    }

    fn heap_bytes(&self) -> usize {
        answer_bytes(self)
    }
}

impl Cacheable for pb::PermittedPurposesResponse {
    fn ttl_seconds(&self) -> u32 {
        self.ttl_seconds
    }

    fn policy_revision(&self) -> &str {
        &self.policy_revision
    }

    fn lets_through(&self) -> bool {
        !self.purposes.is_empty()
    }

    fn clear_request_id(&mut self) {
        self.request_id.clear();
    }

    fn heap_bytes(&self) -> usize {
        ANSWER_OVERHEAD
            + self.policy_revision.len()
            + self.request_id.len()
            + self
                .purposes
                .iter()
                .map(|p| {
                    STRING
                        + p.purpose.len()
                        + p.rule_ids.iter().map(|r| r.len() + STRING).sum::<usize>()
                        + p.obligations
                            .iter()
                            .map(|o| o.id.len() + STRING + pairs(&o.params))
                            .sum::<usize>()
                })
                .sum::<usize>()
    }
}

/// What an entry costs besides its question's bytes: its place in the map
/// (digest, entry, the table's spare room) and the question's allocation.
pub(super) const ENTRY_OVERHEAD: usize = 160;
/// What an answer costs besides its strings: the message, the `Arc`, its
/// place in the table of answers.
pub(super) const ANSWER_OVERHEAD: usize = 320;
/// Size of a `String` (or `Vec`) header, and a share of a map node.
pub(super) const STRING: usize = 24;
pub(super) const MAP_NODE: usize = 16;
/// What one place in a queue costs. A question stored again (after its
/// TTL, its old place not yet gone under a stale window) has two places;
/// each is counted until it leaves its queue.
pub(super) const SLOT_BYTES: usize = 64;

/// The bytes of a map of strings.
fn pairs(m: &HashMap<String, String>) -> usize {
    m.iter()
        .map(|(k, v)| k.len() + v.len() + 2 * STRING + MAP_NODE)
        .sum::<usize>()
}

/// The bytes an answer takes on the heap.
fn answer_bytes(answer: &pb::CheckResponse) -> usize {
    ANSWER_OVERHEAD
        + answer.reason.len()
        + answer.policy_revision.len()
        + answer.request_id.len()
        + answer
            .rule_ids
            .iter()
            .map(|r| r.len() + STRING)
            .sum::<usize>()
        + answer
            .obligations
            .iter()
            .map(|o| o.id.len() + STRING + pairs(&o.params))
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
