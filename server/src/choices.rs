//! The choices store: what each tenant configured and what each data
//! subject said, as events (the evidence) and the current state they
//! make, behind one interface ([`ChoicesStore`]) so the engine and the API
//! do not know where they live. Without `--choices-db` the server keeps
//! them in memory ([`MemoryChoices`]) and says so at start; with it, in
//! SQLite ([`SqliteChoices`]). In front of either, [`CachedChoices`] keeps
//! the choices asked about lately and announces every change.
//!
//! The server reads the current choices of a request's owner tenant and
//! data subject ([`ChoicesStore::facts`]) and hands them to the engine as
//! facts; a store that cannot answer gives none, and a decision that needs
//! them is `INDETERMINATE` (fail closed).

pub mod cache;
pub mod follow;
mod memory;
mod postgres;
mod postgres_listen;
mod postgres_tls;
mod sqlite;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

pub use cache::{CachedChoices, FEED_LEN};
pub use memory::MemoryChoices;
pub use postgres::PostgresChoices;
pub use sqlite::SqliteChoices;

use crate::engine::{Choice, ChoiceFacts, ChoiceState, DecisionRequest, Policy};

/// Longest tenant or data subject id, in bytes.
pub const MAX_ID_BYTES: usize = crate::engine::MAX_SUBJECT_ID_BYTES;
/// Most entries of an event's evidence, and longest key or value.
pub const MAX_EVIDENCE_ENTRIES: usize = 16;
pub const MAX_EVIDENCE_BYTES: usize = 1024;

/// A choice to record: one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewChoice {
    pub tenant: String,
    /// Empty: the tenant's own configuration.
    pub data_subject: String,
    /// Empty for a restriction.
    pub purpose: String,
    pub state: ChoiceState,
    pub expires_at: Option<i64>,
    pub basis: String,
    pub evidence: BTreeMap<String, String>,
}

/// An event as stored: the choice, who recorded it and when, and the
/// revision its commit made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChoiceRecord {
    pub choice: NewChoice,
    /// The certified identity of the writer (or `-` when there is none).
    pub recorded_by: String,
    /// Seconds since the Unix epoch.
    pub recorded_at: i64,
    pub revision: u64,
}

impl From<ChoiceRecord> for Choice {
    /// The current choice an event makes.
    fn from(record: ChoiceRecord) -> Self {
        Choice {
            purpose: record.choice.purpose,
            state: record.choice.state,
            at: record.recorded_at,
            expires_at: record.choice.expires_at,
        }
    }
}

/// Whose choices a commit changed, and the revision it made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChoiceChange {
    pub revision: u64,
    pub tenant: String,
    /// Empty: the tenant's own configuration.
    pub data_subject: String,
}

/// Why a store refused or failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreError {
    /// The request is wrong: the message says what.
    Invalid(String),
    /// The store is full or cannot be written now.
    Unavailable(String),
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreError::Invalid(m) | StoreError::Unavailable(m) => f.write_str(m),
        }
    }
}

/// Where choices are kept.
pub trait ChoicesStore: Send + Sync + std::fmt::Debug {
    /// Appends the event and updates the current state, advancing the
    /// revision, in one step.
    fn record(
        &self,
        choice: NewChoice,
        recorded_by: &str,
        now: i64,
    ) -> Result<ChoiceRecord, StoreError>;
    /// The current choices of a tenant (`data_subject` empty) or of a data
    /// subject, and the revision they were read at.
    fn current(&self, tenant: &str, data_subject: &str) -> Result<(Vec<Choice>, u64), StoreError>;
    /// The same as the events that made them (basis, evidence, writer).
    fn current_records(
        &self,
        tenant: &str,
        data_subject: &str,
    ) -> Result<(Vec<ChoiceRecord>, u64), StoreError>;
    /// The events of a tenant or data subject after revision `after`,
    /// oldest first, at most `limit` of them (a page of the history).
    fn history(
        &self,
        tenant: &str,
        data_subject: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<ChoiceRecord>, StoreError>;
    /// The data subjects of `tenant` with choices recorded, in id order
    /// after `after` (empty: from the first), at most `limit`, each with
    /// its current choices.
    fn subjects(
        &self,
        tenant: &str,
        after: &str,
        limit: usize,
    ) -> Result<Vec<(String, Vec<Choice>)>, StoreError>;
    /// Whose choices the commits after revision `after` changed, in
    /// revision order, at most `limit` of them.
    fn changes(&self, after: u64, limit: usize) -> Result<Vec<ChoiceChange>, StoreError>;
    /// The revision of the last commit.
    fn revision(&self) -> u64;
    /// The current choices of a tenant or data subject if they are at
    /// hand without reading the store (a cache holds them), as
    /// [`ChoicesStore::current`] would give them.
    fn cached(&self, _tenant: &str, _data_subject: &str) -> Option<(Vec<Choice>, u64)> {
        None
    }
}

/// `(data subject, choice)` rows in subject order, as the current choices
/// of each data subject.
pub fn by_subject(rows: Vec<(String, Choice)>) -> Vec<(String, Vec<Choice>)> {
    let mut subjects: Vec<(String, Vec<Choice>)> = Vec::new();
    for (subject, choice) in rows {
        match subjects.last_mut() {
            Some((last, choices)) if *last == subject => choices.push(choice),
            _ => subjects.push((subject, vec![choice])),
        }
    }
    subjects
}

/// Whether `--choices-db` names a PostgreSQL database (a URL) rather
/// than an SQLite file.
pub fn is_postgres(db: &std::path::Path) -> bool {
    let text = db.to_string_lossy();
    text.starts_with("postgres://") || text.starts_with("postgresql://")
}

/// Now, in seconds since the Unix epoch.
pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// The choices `req` may need, read from `store`: its owner tenant's and
/// its data subject's; `None` for what cannot be read.
pub fn facts(store: &dyn ChoicesStore, req: &DecisionRequest, now: i64) -> ChoiceFacts {
    facts_of(
        store,
        &req.resource.owner_tenant,
        &req.resource.data_subject,
        now,
    )
}

/// The same for a request of `tenant`'s data of `subject`.
pub fn facts_of(store: &dyn ChoicesStore, tenant: &str, subject: &str, now: i64) -> ChoiceFacts {
    let mut facts = unread(store, now);
    if tenant.is_empty() {
        return facts;
    }
    if let Ok((choices, revision)) = store.current(tenant, "") {
        facts.tenant = Some(choices);
        facts.revision = revision;
    }
    if !subject.is_empty() {
        if let Ok((choices, revision)) = store.current(tenant, subject) {
            facts.subject = Some(choices);
            facts.revision = facts.revision.max(revision);
        }
    }
    facts
}

/// The choices `req` may need if the store's cache holds every one of
/// them: `None` when one would have to be read from the store.
pub fn cached_facts(
    store: &dyn ChoicesStore,
    req: &DecisionRequest,
    now: i64,
) -> Option<ChoiceFacts> {
    let tenant = req.resource.owner_tenant.as_str();
    let subject = req.resource.data_subject.as_str();
    let mut facts = unread(store, now);
    if tenant.is_empty() {
        return Some(facts);
    }
    let (choices, revision) = store.cached(tenant, "")?;
    facts.tenant = Some(choices);
    facts.revision = revision;
    if !subject.is_empty() {
        let (choices, revision) = store.cached(tenant, subject)?;
        facts.subject = Some(choices);
        facts.revision = facts.revision.max(revision);
    }
    Some(facts)
}

/// How long an async face waits for the choices a decision needs (for a
/// place to read them, then for the read): past it, the decision is made
/// without them, `INDETERMINATE` where they are needed.
pub const CHOICES_WITHIN: std::time::Duration = std::time::Duration::from_secs(1);

/// The choices `req` may need, found without blocking an async worker:
/// from the cache when it holds them, else read from `store` on a
/// blocking thread, taking one of `places` (so a store that does not
/// answer holds only so many threads), within `within` (the faces give
/// [`CHOICES_WITHIN`]). `Err`: none could be read in time (the facts say
/// so).
pub async fn facts_off_worker(
    store: &Arc<dyn ChoicesStore>,
    places: &Arc<tokio::sync::Semaphore>,
    req: &DecisionRequest,
    within: std::time::Duration,
) -> Result<ChoiceFacts, ChoiceFacts> {
    let now = now();
    if let Some(facts) = cached_facts(&**store, req, now) {
        return Ok(facts);
    }
    let read = async {
        let place = places.clone().acquire_owned().await.ok()?;
        let store = store.clone();
        let (tenant, subject) = (
            req.resource.owner_tenant.clone(),
            req.resource.data_subject.clone(),
        );
        tokio::task::spawn_blocking(move || {
            let _place = place;
            facts_of(&*store, &tenant, &subject, now)
        })
        .await
        .ok()
    };
    match tokio::time::timeout(within, read).await {
        Ok(Some(facts)) => Ok(facts),
        Ok(None) | Err(_) => Err(unread(&**store, now)),
    }
}

/// No choices read: a decision that needs them is `INDETERMINATE`.
pub fn unread(store: &dyn ChoicesStore, now: i64) -> ChoiceFacts {
    ChoiceFacts {
        now,
        revision: store.revision(),
        ..ChoiceFacts::none()
    }
}

/// Checks a choice before it is stored: ids within their limits, the
/// purpose one the serving policy declares (none for a restriction, which
/// only a data subject records), an expiry still ahead, the evidence
/// bounded.
pub fn validate(choice: &NewChoice, policy: &Policy, now: i64) -> Result<(), StoreError> {
    let bad = |m: String| Err(StoreError::Invalid(m));
    let id = |name: &str, value: &str, required: bool| -> Result<(), StoreError> {
        if required && value.is_empty() {
            return bad(format!("`{name}` is required"));
        }
        if value.len() > MAX_ID_BYTES {
            return bad(format!(
                "`{name}` is {} bytes long; at most {MAX_ID_BYTES} are accepted",
                value.len()
            ));
        }
        if value.chars().any(char::is_control) {
            return bad(format!("`{name}` holds a control character"));
        }
        Ok(())
    };
    id("tenant", &choice.tenant, true)?;
    id("data_subject", &choice.data_subject, false)?;
    match (choice.state, choice.purpose.is_empty()) {
        (ChoiceState::Restricted, false) => {
            return bad(
                "a restriction covers every purpose of its data subject: give no `purpose`".into(),
            );
        }
        (ChoiceState::Restricted, true) if choice.data_subject.is_empty() => {
            return bad("only a data subject restricts processing: give `data_subject`".into());
        }
        (ChoiceState::Restricted, true) => {}
        (_, true) => return bad("`purpose` is required".into()),
        (_, false) => {
            if policy.purposes().lookup(&choice.purpose).is_none() {
                return bad(format!(
                    "unknown purpose `{}`{}",
                    choice.purpose,
                    crate::engine::did_you_mean(&choice.purpose, policy.purposes().ids())
                ));
            }
        }
    }
    if let Some(at) = choice.expires_at {
        if at <= now {
            return bad(format!(
                "`expires_at` {} is not in the future (now {})",
                crate::engine::rfc3339(at),
                crate::engine::rfc3339(now)
            ));
        }
    }
    if choice.basis.len() > MAX_EVIDENCE_BYTES {
        return bad(format!(
            "`basis` is {} bytes long; at most {MAX_EVIDENCE_BYTES} are accepted",
            choice.basis.len()
        ));
    }
    if choice.evidence.len() > MAX_EVIDENCE_ENTRIES {
        return bad(format!(
            "`evidence` holds {} entries; at most {MAX_EVIDENCE_ENTRIES} are accepted",
            choice.evidence.len()
        ));
    }
    for (k, v) in &choice.evidence {
        if k.len() > MAX_EVIDENCE_BYTES || v.len() > MAX_EVIDENCE_BYTES {
            return bad(format!(
                "`evidence` entry `{}` is longer than {MAX_EVIDENCE_BYTES} bytes",
                k.chars().take(64).collect::<String>()
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
