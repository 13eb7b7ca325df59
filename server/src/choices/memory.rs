//! Choices in memory: the store without `--choices-db`. Lost at restart
//! (the server says so at start); bounded in bytes: each event is charged
//! its strings, evidence and bookkeeping.

use std::collections::{BTreeMap, HashMap};
use std::sync::RwLock;

use super::{ChoiceChange, ChoiceRecord, ChoicesStore, NewChoice, StoreError};
use crate::engine::Choice;

/// Most bytes of events the in-memory store keeps; past it writes are
/// refused, saying to use `--choices-db`.
pub const MAX_BYTES: usize = 64 << 20;

/// What an event costs besides its strings: the record, its places in
/// the indexes, the current-state entry.
const EVENT_OVERHEAD: usize = 256;
/// What an evidence entry costs besides its key and value.
const ENTRY_OVERHEAD: usize = 64;

/// The bytes `record` holds in the store, about: its strings (the ids
/// twice, as the indexes keep them too), evidence and bookkeeping.
pub fn footprint(record: &ChoiceRecord) -> usize {
    let c = &record.choice;
    let ids = c.tenant.len() + c.data_subject.len() + c.purpose.len();
    let evidence: usize = c
        .evidence
        .iter()
        .map(|(k, v)| ENTRY_OVERHEAD + k.len() + v.len())
        .sum();
    EVENT_OVERHEAD + 2 * ids + c.basis.len() + record.recorded_by.len() + evidence
}

#[derive(Debug, Default)]
struct Held {
    /// By purpose, the event that is its current choice.
    current: BTreeMap<String, usize>,
    events: Vec<usize>,
}

#[derive(Debug, Default)]
struct State {
    revision: u64,
    /// By tenant, then data subject ("" for the tenant's own): the
    /// current choice of each purpose, and the events, by index into
    /// `events`.
    by_tenant: HashMap<String, HashMap<String, Held>>,
    events: Vec<ChoiceRecord>,
    /// The [`footprint`] of every event.
    bytes: usize,
}

/// The choices store kept in memory.
#[derive(Debug)]
pub struct MemoryChoices {
    state: RwLock<State>,
    max_bytes: usize,
}

impl Default for MemoryChoices {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryChoices {
    pub fn new() -> Self {
        MemoryChoices {
            state: RwLock::default(),
            max_bytes: MAX_BYTES,
        }
    }

    #[cfg(test)]
    pub fn with_max_bytes(max_bytes: usize) -> Self {
        MemoryChoices {
            state: RwLock::default(),
            max_bytes,
        }
    }
}

impl State {
    /// The current choices `held` names.
    fn choices(&self, held: &Held) -> Vec<Choice> {
        held.current
            .values()
            .filter_map(|&i| self.events.get(i))
            .map(|r| Choice {
                purpose: r.choice.purpose.clone(),
                state: r.choice.state,
                at: r.recorded_at,
                expires_at: r.choice.expires_at,
            })
            .collect()
    }

    fn held(&self, tenant: &str, data_subject: &str) -> Option<&Held> {
        self.by_tenant.get(tenant).and_then(|t| t.get(data_subject))
    }
}

fn unusable() -> StoreError {
    StoreError::Unavailable("the choices store is unusable".into())
}

impl ChoicesStore for MemoryChoices {
    fn record(
        &self,
        choice: NewChoice,
        recorded_by: &str,
        now: i64,
    ) -> Result<ChoiceRecord, StoreError> {
        let mut state = self.state.write().map_err(|_| unusable())?;
        let record = ChoiceRecord {
            choice,
            recorded_by: recorded_by.to_string(),
            recorded_at: now,
            revision: state.revision + 1,
        };
        let bytes = footprint(&record);
        if state.bytes.saturating_add(bytes) > self.max_bytes {
            return Err(StoreError::Unavailable(format!(
                "the in-memory choices store holds its most, {} MiB of events ({} events); give the server --choices-db to keep more",
                self.max_bytes >> 20,
                state.events.len()
            )));
        }
        state.revision = record.revision;
        state.bytes += bytes;
        let at = state.events.len();
        state.events.push(record.clone());
        let held = state
            .by_tenant
            .entry(record.choice.tenant.clone())
            .or_default()
            .entry(record.choice.data_subject.clone())
            .or_default();
        held.current.insert(record.choice.purpose.clone(), at);
        held.events.push(at);
        Ok(record)
    }

    fn current(&self, tenant: &str, data_subject: &str) -> Result<(Vec<Choice>, u64), StoreError> {
        let state = self.state.read().map_err(|_| unusable())?;
        let choices = state
            .held(tenant, data_subject)
            .map(|h| state.choices(h))
            .unwrap_or_default();
        Ok((choices, state.revision))
    }

    fn subjects(
        &self,
        tenant: &str,
        after: &str,
        limit: usize,
    ) -> Result<Vec<(String, Vec<Choice>)>, StoreError> {
        let state = self.state.read().map_err(|_| unusable())?;
        let Some(subjects) = state.by_tenant.get(tenant) else {
            return Ok(Vec::new());
        };
        let mut ids: Vec<&String> = subjects
            .keys()
            .filter(|s| !s.is_empty() && s.as_str() > after)
            .collect();
        ids.sort_unstable();
        Ok(ids
            .into_iter()
            .take(limit)
            .filter_map(|id| subjects.get(id).map(|h| (id.clone(), state.choices(h))))
            .collect())
    }

    fn current_records(
        &self,
        tenant: &str,
        data_subject: &str,
    ) -> Result<(Vec<ChoiceRecord>, u64), StoreError> {
        let state = self.state.read().map_err(|_| unusable())?;
        let records = state
            .held(tenant, data_subject)
            .map(|h| {
                h.current
                    .values()
                    .filter_map(|&i| state.events.get(i).cloned())
                    .collect()
            })
            .unwrap_or_default();
        Ok((records, state.revision))
    }

    fn history(
        &self,
        tenant: &str,
        data_subject: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<ChoiceRecord>, StoreError> {
        let state = self.state.read().map_err(|_| unusable())?;
        Ok(state
            .held(tenant, data_subject)
            .map(|h| {
                h.events
                    .iter()
                    .filter_map(|&i| state.events.get(i))
                    .filter(|r| r.revision > after)
                    .take(limit)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default())
    }

    fn changes(&self, after: u64, limit: usize) -> Result<Vec<ChoiceChange>, StoreError> {
        let state = self.state.read().map_err(|_| unusable())?;
        // Events are kept in revision order, the first at revision 1.
        let from = usize::try_from(after).unwrap_or(usize::MAX);
        Ok(state
            .events
            .iter()
            .skip(from)
            .take(limit)
            .map(|r| ChoiceChange {
                revision: r.revision,
                tenant: r.choice.tenant.clone(),
                data_subject: r.choice.data_subject.clone(),
            })
            .collect())
    }

    fn revision(&self) -> u64 {
        self.state.read().map_or(0, |s| s.revision)
    }
}
