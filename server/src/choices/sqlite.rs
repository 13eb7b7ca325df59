//! Choices in an embedded SQLite database (`--choices-db PATH`, WAL mode,
//! synced at every commit): an append-only `events` table (the evidence),
//! a `current` table naming each (tenant, data subject, purpose)'s latest
//! event, and the revision in `meta`, all written in one transaction. The
//! schema is created on first open and its version checked on every open.

use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use super::{ChoiceChange, ChoiceRecord, ChoicesStore, NewChoice, StoreError};
use crate::engine::{Choice, ChoiceState};

/// The schema this build writes and reads.
const SCHEMA_VERSION: i64 = 1;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS events (
    revision INTEGER PRIMARY KEY,
    tenant TEXT NOT NULL,
    data_subject TEXT NOT NULL,
    purpose TEXT NOT NULL,
    state TEXT NOT NULL,
    expires_at INTEGER,
    basis TEXT NOT NULL,
    evidence TEXT NOT NULL,
    recorded_by TEXT NOT NULL,
    recorded_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS events_of ON events (tenant, data_subject, revision);
CREATE TABLE IF NOT EXISTS current (
    tenant TEXT NOT NULL,
    data_subject TEXT NOT NULL,
    purpose TEXT NOT NULL,
    revision INTEGER NOT NULL,
    PRIMARY KEY (tenant, data_subject, purpose)
) WITHOUT ROWID;
";

/// The choices store in SQLite.
#[derive(Debug)]
pub struct SqliteChoices {
    writer: Mutex<Connection>,
    reader: Mutex<Connection>,
    revision: AtomicU64,
}

fn failed(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("the choices database could not {what}: {e}"))
}

impl SqliteChoices {
    /// Opens (creating and migrating) the database at `path`.
    pub fn open(path: &Path) -> Result<Self, String> {
        let place = path.display();
        let open = || {
            Connection::open(path)
                .map_err(|e| format!("cannot open the choices database {place}: {e}"))
        };
        let writer = open()?;
        let setup = |c: &Connection| -> rusqlite::Result<()> {
            c.busy_timeout(std::time::Duration::from_secs(5))?;
            c.pragma_update(None, "journal_mode", "WAL")?;
            c.pragma_update(None, "synchronous", "FULL")?;
            Ok(())
        };
        setup(&writer).map_err(|e| format!("cannot set up the choices database {place}: {e}"))?;
        writer
            .execute_batch(SCHEMA)
            .map_err(|e| format!("cannot create the choices database's tables in {place}: {e}"))?;
        let version: Option<i64> = writer
            .query_row("SELECT value FROM meta WHERE key = 'schema'", [], |r| {
                r.get(0)
            })
            .optional()
            .map_err(|e| format!("cannot read the choices database {place}: {e}"))?;
        match version {
            None => {
                writer
                    .execute(
                        "INSERT INTO meta (key, value) VALUES ('schema', ?1), ('revision', 0)",
                        [SCHEMA_VERSION],
                    )
                    .map_err(|e| format!("cannot initialise the choices database {place}: {e}"))?;
            }
            Some(SCHEMA_VERSION) => {}
            Some(other) => {
                return Err(format!(
                    "the choices database {place} has schema {other}; this server reads schema {SCHEMA_VERSION}"
                ));
            }
        }
        let revision: i64 = writer
            .query_row("SELECT value FROM meta WHERE key = 'revision'", [], |r| {
                r.get(0)
            })
            .map_err(|e| format!("cannot read the choices database {place}: {e}"))?;
        let reader = open()?;
        setup(&reader).map_err(|e| format!("cannot set up the choices database {place}: {e}"))?;
        Ok(SqliteChoices {
            writer: Mutex::new(writer),
            reader: Mutex::new(reader),
            revision: AtomicU64::new(u64::try_from(revision).unwrap_or(0)),
        })
    }
}

fn state_of(text: &str) -> rusqlite::Result<ChoiceState> {
    ChoiceState::parse(text).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            0,
            rusqlite::types::Type::Text,
            format!("`{text}` is not a choice state").into(),
        )
    })
}

fn record_of(row: &rusqlite::Row<'_>) -> rusqlite::Result<ChoiceRecord> {
    let state: String = row.get(4)?;
    let evidence: String = row.get(7)?;
    let revision: i64 = row.get(0)?;
    Ok(ChoiceRecord {
        choice: NewChoice {
            tenant: row.get(1)?,
            data_subject: row.get(2)?,
            purpose: row.get(3)?,
            state: state_of(&state)?,
            expires_at: row.get(5)?,
            basis: row.get(6)?,
            evidence: serde_json::from_str(&evidence).unwrap_or_default(),
        },
        recorded_by: row.get(8)?,
        recorded_at: row.get(9)?,
        revision: u64::try_from(revision).unwrap_or(0),
    })
}

/// Appends `choice` as the event of `revision` and makes it the current
/// state of its (tenant, data subject, purpose), inside `tx`.
fn append(
    tx: &rusqlite::Transaction<'_>,
    choice: &NewChoice,
    revision: i64,
    recorded_by: &str,
    now: i64,
) -> Result<(), StoreError> {
    let evidence = serde_json::to_string(&choice.evidence).unwrap_or_else(|_| "{}".into());
    tx.prepare_cached(
        "INSERT INTO events (revision, tenant, data_subject, purpose, state, expires_at, basis, evidence, recorded_by, recorded_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )
    .and_then(|mut insert| {
        insert.execute(params![
            revision,
            choice.tenant,
            choice.data_subject,
            choice.purpose,
            choice.state.as_str(),
            choice.expires_at,
            choice.basis,
            evidence,
            recorded_by,
            now
        ])
    })
    .map_err(|e| failed("append the event", e))?;
    tx.prepare_cached(
        "INSERT INTO current (tenant, data_subject, purpose, revision) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (tenant, data_subject, purpose) DO UPDATE SET revision = excluded.revision",
    )
    .and_then(|mut upsert| {
        upsert.execute(params![
            choice.tenant,
            choice.data_subject,
            choice.purpose,
            revision
        ])
    })
    .map_err(|e| failed("update the current state", e))?;
    Ok(())
}

impl SqliteChoices {
    /// Records every choice `choices` gives in one transaction, each its
    /// own event and revision: all of them, or none when one is an error
    /// (which is returned). For `choices import`, into a database no
    /// server has open: a running server would not hear of the import.
    pub fn import(
        &self,
        choices: impl IntoIterator<Item = Result<NewChoice, String>>,
        recorded_by: &str,
        now: i64,
    ) -> Result<(u64, u64), String> {
        let mut conn = self
            .writer
            .lock()
            .map_err(|_| "the choices database is unusable".to_string())?;
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| failed("begin a write", e).to_string())?;
        let mut revision: i64 = tx
            .query_row("SELECT value FROM meta WHERE key = 'revision'", [], |r| {
                r.get(0)
            })
            .map_err(|e| failed("read its revision", e).to_string())?;
        let mut count = 0u64;
        for choice in choices {
            let choice = choice?;
            revision += 1;
            append(&tx, &choice, revision, recorded_by, now).map_err(|e| e.to_string())?;
            count += 1;
        }
        tx.execute(
            "UPDATE meta SET value = ?1 WHERE key = 'revision'",
            [revision],
        )
        .map_err(|e| failed("advance its revision", e).to_string())?;
        tx.commit().map_err(|e| failed("commit", e).to_string())?;
        let revision = u64::try_from(revision).unwrap_or(0);
        self.revision.fetch_max(revision, Ordering::AcqRel);
        Ok((count, revision))
    }
}

const COLUMNS: &str = "e.revision, e.tenant, e.data_subject, e.purpose, e.state, e.expires_at, e.basis, e.evidence, e.recorded_by, e.recorded_at";

impl ChoicesStore for SqliteChoices {
    fn record(
        &self,
        choice: NewChoice,
        recorded_by: &str,
        now: i64,
    ) -> Result<ChoiceRecord, StoreError> {
        let mut conn = self
            .writer
            .lock()
            .map_err(|_| StoreError::Unavailable("the choices database is unusable".into()))?;
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| failed("begin a write", e))?;
        let revision: i64 = tx
            .query_row("SELECT value FROM meta WHERE key = 'revision'", [], |r| {
                r.get(0)
            })
            .map_err(|e| failed("read its revision", e))?;
        let revision = revision + 1;
        append(&tx, &choice, revision, recorded_by, now)?;
        tx.execute(
            "UPDATE meta SET value = ?1 WHERE key = 'revision'",
            [revision],
        )
        .map_err(|e| failed("advance its revision", e))?;
        tx.commit().map_err(|e| failed("commit", e))?;
        let revision = u64::try_from(revision).unwrap_or(0);
        self.revision.fetch_max(revision, Ordering::AcqRel);
        Ok(ChoiceRecord {
            choice,
            recorded_by: recorded_by.to_string(),
            recorded_at: now,
            revision,
        })
    }

    fn current(&self, tenant: &str, data_subject: &str) -> Result<(Vec<Choice>, u64), StoreError> {
        let (records, revision) = self.current_records(tenant, data_subject)?;
        Ok((records.into_iter().map(Choice::from).collect(), revision))
    }

    fn current_records(
        &self,
        tenant: &str,
        data_subject: &str,
    ) -> Result<(Vec<ChoiceRecord>, u64), StoreError> {
        let conn = self
            .reader
            .lock()
            .map_err(|_| StoreError::Unavailable("the choices database is unusable".into()))?;
        let revision = self.revision.load(Ordering::Acquire);
        let mut statement = conn
            .prepare_cached(&format!(
                "SELECT {COLUMNS} FROM current c JOIN events e ON e.revision = c.revision
                 WHERE c.tenant = ?1 AND c.data_subject = ?2 ORDER BY c.purpose"
            ))
            .map_err(|e| failed("read", e))?;
        let records = statement
            .query_map(params![tenant, data_subject], record_of)
            .and_then(Iterator::collect::<rusqlite::Result<Vec<_>>>)
            .map_err(|e| failed("read", e))?;
        Ok((records, revision))
    }

    fn history(
        &self,
        tenant: &str,
        data_subject: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<ChoiceRecord>, StoreError> {
        let conn = self
            .reader
            .lock()
            .map_err(|_| StoreError::Unavailable("the choices database is unusable".into()))?;
        let mut statement = conn
            .prepare_cached(&format!(
                "SELECT {COLUMNS} FROM events e WHERE e.tenant = ?1 AND e.data_subject = ?2 AND e.revision > ?3
                 ORDER BY e.revision LIMIT ?4"
            ))
            .map_err(|e| failed("read", e))?;
        statement
            .query_map(
                params![
                    tenant,
                    data_subject,
                    i64::try_from(after).unwrap_or(i64::MAX),
                    i64::try_from(limit).unwrap_or(i64::MAX)
                ],
                record_of,
            )
            .and_then(Iterator::collect::<rusqlite::Result<Vec<_>>>)
            .map_err(|e| failed("read", e))
    }

    fn subjects(
        &self,
        tenant: &str,
        after: &str,
        limit: usize,
    ) -> Result<Vec<(String, Vec<Choice>)>, StoreError> {
        let conn = self
            .reader
            .lock()
            .map_err(|_| StoreError::Unavailable("the choices database is unusable".into()))?;
        let mut statement = conn
            .prepare_cached(
                "SELECT c.data_subject, e.purpose, e.state, e.recorded_at, e.expires_at
                 FROM current c JOIN events e ON e.revision = c.revision
                 WHERE c.tenant = ?1 AND c.data_subject IN (
                     SELECT DISTINCT data_subject FROM current
                     WHERE tenant = ?1 AND data_subject > ?2 ORDER BY data_subject LIMIT ?3)
                 ORDER BY c.data_subject, c.purpose",
            )
            .map_err(|e| failed("read", e))?;
        let rows = statement
            .query_map(
                params![tenant, after, i64::try_from(limit).unwrap_or(i64::MAX)],
                |row| {
                    let state: String = row.get(2)?;
                    Ok((
                        row.get::<_, String>(0)?,
                        Choice {
                            purpose: row.get(1)?,
                            state: state_of(&state)?,
                            at: row.get(3)?,
                            expires_at: row.get(4)?,
                        },
                    ))
                },
            )
            .and_then(Iterator::collect::<rusqlite::Result<Vec<_>>>)
            .map_err(|e| failed("read", e))?;
        Ok(super::by_subject(rows))
    }

    fn changes(&self, after: u64, limit: usize) -> Result<Vec<ChoiceChange>, StoreError> {
        let conn = self
            .reader
            .lock()
            .map_err(|_| StoreError::Unavailable("the choices database is unusable".into()))?;
        let mut statement = conn
            .prepare_cached(
                "SELECT revision, tenant, data_subject FROM events WHERE revision > ?1
                 ORDER BY revision LIMIT ?2",
            )
            .map_err(|e| failed("read", e))?;
        statement
            .query_map(
                params![
                    i64::try_from(after).unwrap_or(i64::MAX),
                    i64::try_from(limit).unwrap_or(i64::MAX)
                ],
                |row| {
                    let revision: i64 = row.get(0)?;
                    Ok(ChoiceChange {
                        revision: u64::try_from(revision).unwrap_or(0),
                        tenant: row.get(1)?,
                        data_subject: row.get(2)?,
                    })
                },
            )
            .and_then(Iterator::collect::<rusqlite::Result<Vec<_>>>)
            .map_err(|e| failed("read", e))
    }

    fn revision(&self) -> u64 {
        self.revision.load(Ordering::Acquire)
    }
}
