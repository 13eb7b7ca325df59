//! The PostgreSQL store's schema: SQLite's tables in the schema
//! `purposegate`, created by the first replica to start (an advisory lock
//! makes replicas starting together take turns) and its version checked
//! by every one.

use super::{Shared, unsigned};
use crate::choices::StoreError;

/// The schema this build writes and reads.
const SCHEMA_VERSION: i64 = 1;
/// Taken for the migration, so replicas starting together create the
/// schema one after the other.
const MIGRATION_LOCK: i64 = 0x7075_7270_6f73_6567;

const SCHEMA: &str = "
CREATE SCHEMA IF NOT EXISTS purposegate;
CREATE TABLE IF NOT EXISTS purposegate.meta (key TEXT PRIMARY KEY, value BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS purposegate.events (
    revision BIGINT PRIMARY KEY,
    tenant TEXT NOT NULL,
    data_subject TEXT NOT NULL,
    purpose TEXT NOT NULL,
    state TEXT NOT NULL,
    expires_at BIGINT,
    basis TEXT NOT NULL,
    evidence TEXT NOT NULL,
    recorded_by TEXT NOT NULL,
    recorded_at BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_of ON purposegate.events (tenant, data_subject, revision);
CREATE TABLE IF NOT EXISTS purposegate.current (
    tenant TEXT NOT NULL,
    data_subject TEXT NOT NULL,
    purpose TEXT NOT NULL,
    revision BIGINT NOT NULL,
    PRIMARY KEY (tenant, data_subject, purpose)
);
";

impl Shared {
    /// Creates the schema if it is not there, one replica at a time, and
    /// checks its version: the revision.
    pub(super) async fn migrate(&self) -> Result<u64, StoreError> {
        self.with_client("create its tables", false, |client| async move {
            // An error leaves the transaction open: the connection is then
            // dropped, which rolls it back.
            let tx = &*client;
            tx.batch_execute("BEGIN").await?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
                .await?;
            tx.batch_execute(SCHEMA).await?;
            tx.execute(
                "INSERT INTO purposegate.meta (key, value) VALUES ('schema', $1), ('revision', 0)
                 ON CONFLICT (key) DO NOTHING",
                &[&SCHEMA_VERSION],
            )
            .await?;
            let schema: i64 = tx
                .query_one(
                    "SELECT value FROM purposegate.meta WHERE key = 'schema'",
                    &[],
                )
                .await?
                .get(0);
            let revision: i64 = tx
                .query_one(
                    "SELECT value FROM purposegate.meta WHERE key = 'revision'",
                    &[],
                )
                .await?
                .get(0);
            tx.batch_execute("COMMIT").await?;
            Ok((schema, revision))
        })
        .await
        .and_then(|(schema, revision)| {
            if schema == SCHEMA_VERSION {
                Ok(unsigned(revision))
            } else {
                Err(StoreError::Unavailable(format!(
                    "the choices database has schema {schema}; this server reads schema {SCHEMA_VERSION}"
                )))
            }
        })
    }
}
