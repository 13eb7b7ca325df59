//! Choices in PostgreSQL (`--choices-db postgres://…`), shared by server
//! replicas: the same tables as SQLite's, in a schema of their own
//! (`purposegate.events`, the append-only evidence; `purposegate.current`,
//! each (tenant, data subject, purpose)'s latest event; the revision in
//! `purposegate.meta`). A write takes the revision row's lock, so
//! revisions advance in commit order: a reader that sees revision N has
//! seen every one before it. Each commit also sends a notification on
//! [`CHANNEL`], a wake-up for the replicas that follow the store (the
//! revision, polled, is what counts: a notification is lost while a
//! listener is away).
//!
//! The store's methods are blocking, as the [`ChoicesStore`] trait's are:
//! each runs on a runtime of its own (two threads) and is waited for with
//! a bound, so a database that does not answer holds no async worker of
//! the server and no caller longer than [`QUERY_WITHIN`]. Connections are
//! made on first use and made again after an error.

use std::future::Future;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio_postgres::config::SslMode;
use tokio_postgres::{Client, Config, NoTls, Row};

use super::{ChoiceChange, ChoiceRecord, ChoicesStore, NewChoice, StoreError};
use crate::engine::{Choice, ChoiceState};

mod schema;

/// The notification channel each commit wakes the followers on.
pub const CHANNEL: &str = "purposegate_choices";
/// How long one operation may take, connecting included.
pub const QUERY_WITHIN: Duration = Duration::from_secs(2);
/// A read that failed sooner than this is tried once more.
const RETRY_WITHIN: Duration = Duration::from_millis(500);
/// Connections each replica keeps.
const CONNECTIONS: usize = 4;

const COLUMNS: &str = "e.revision, e.tenant, e.data_subject, e.purpose, e.state, e.expires_at, e.basis, e.evidence, e.recorded_by, e.recorded_at";

/// The choices store in PostgreSQL.
#[derive(Debug)]
pub struct PostgresChoices {
    /// Shut down (in the background) when the store goes.
    runtime: Option<tokio::runtime::Runtime>,
    handle: tokio::runtime::Handle,
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    config: Config,
    /// TLS to the database, verified against `--choices-db-ca`; `None`:
    /// plaintext.
    tls: Option<super::postgres_tls::RustlsConnect>,
    slots: Vec<Arc<tokio::sync::Mutex<Option<Arc<Client>>>>>,
    next: AtomicUsize,
    /// The highest revision this replica knows of: its own commits', and
    /// what it read.
    revision: AtomicU64,
}

fn failed(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("the choices database could not {what}: {e}"))
}

impl Drop for PostgresChoices {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl PostgresChoices {
    /// Connects to the database `url` names, creating its schema if it is
    /// not there (one replica at a time) and checking its version; over
    /// TLS verified against the CA bundle `ca` when one is given (then
    /// always: a server that offers no TLS is refused, never used in
    /// plaintext).
    pub fn open(url: &str, ca: Option<&std::path::Path>) -> Result<Self, String> {
        // The URL may hold a password: it is never repeated in an error.
        let mut config = Config::from_str(url)
            .map_err(|e| format!("--choices-db is not a PostgreSQL connection URL: {e}"))?;
        let tls = match (ca, config.get_ssl_mode()) {
            (Some(_), SslMode::Disable) => {
                return Err(
                    "--choices-db-ca is given and the --choices-db URL says sslmode=disable: drop one"
                        .to_string(),
                );
            }
            (Some(ca), _) => {
                config.ssl_mode(SslMode::Require);
                let client = purposegate_runtime::tls::verifying_client(ca)
                    .map_err(|e| format!("--choices-db-ca: {e}"))?;
                Some(super::postgres_tls::RustlsConnect(Arc::new(client)))
            }
            (None, SslMode::Require) => {
                return Err("the --choices-db URL says sslmode=require: give --choices-db-ca, the CA bundle that signed the database's certificate".to_string());
            }
            (None, _) => {
                // `prefer` without a CA to verify against would be TLS
                // that proves nothing: plaintext, as said.
                config.ssl_mode(SslMode::Disable);
                None
            }
        };
        config.connect_timeout(QUERY_WITHIN);
        config.application_name("purposegate-server");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("purposegate-postgres")
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the PostgreSQL client: {e}"))?;
        let shared = Arc::new(Shared {
            config,
            tls,
            slots: (0..CONNECTIONS)
                .map(|_| Arc::new(tokio::sync::Mutex::new(None)))
                .collect(),
            next: AtomicUsize::new(0),
            revision: AtomicU64::new(0),
        });
        let store = PostgresChoices {
            handle: runtime.handle().clone(),
            runtime: Some(runtime),
            shared,
        };
        let shared = store.shared.clone();
        let revision = store
            .block(async move { shared.migrate().await })
            .map_err(|e| e.to_string())?;
        store.shared.revision.fetch_max(revision, Ordering::AcqRel);
        Ok(store)
    }

    /// Runs `op` on the store's runtime and waits for it, at most
    /// [`QUERY_WITHIN`] (and a little more, should its runtime be stuck).
    fn block<T, F>(&self, op: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: Future<Output = Result<T, StoreError>> + Send + 'static,
    {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.handle.spawn(async move {
            let _ = tx.send(op.await);
        });
        rx.recv_timeout(QUERY_WITHIN + Duration::from_millis(500))
            .unwrap_or_else(|_| Err(unanswered()))
    }

    /// Runs `op` with a connection of its own, within [`QUERY_WITHIN`]; a
    /// connection that failed or timed out is closed and made again next
    /// time.
    fn with_client<T, F, Fut>(&self, what: &'static str, op: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(Arc<Client>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, tokio_postgres::Error>> + Send,
    {
        self.with_connection(what, false, op)
    }

    /// [`PostgresChoices::with_client`] on a connection made for it when
    /// `fresh` (a retry: the one it had may be as dead as the last).
    fn with_connection<T, F, Fut>(
        &self,
        what: &'static str,
        fresh: bool,
        op: F,
    ) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(Arc<Client>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, tokio_postgres::Error>> + Send,
    {
        let shared = self.shared.clone();
        self.block(async move { shared.with_client(what, fresh, op).await })
    }

    /// Calls `wake` on every commit any replica makes (a notification on
    /// [`CHANNEL`]) and whenever it (re)connects, from a connection of its
    /// own, made again a second after it is lost. Only a wake-up: what
    /// changed is read by revision, so nothing is lost while it is away.
    pub fn listen(&self, wake: impl Fn() + Send + Sync + 'static) {
        let shared = self.shared.clone();
        self.handle.spawn(async move {
            let mut failing = false;
            loop {
                let outcome = match &shared.tls {
                    Some(tls) => super::postgres_listen::listen_once(&shared.config, tls.clone(), &wake).await,
                    None => super::postgres_listen::listen_once(&shared.config, NoTls, &wake).await,
                };
                if let Err(e) = outcome {
                    if !failing {
                        tracing::warn!(error = %described(&e), "cannot listen for choices committed by other replicas; they are read every 100 ms");
                    }
                    failing = true;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
    }

    /// A read: run as [`PostgresChoices::with_client`] runs it, and once
    /// more on a new connection if it failed at once (a connection the
    /// database closed, a restarted server): a read has no effect to
    /// repeat. One that took its time is not tried again.
    fn read<T, F, Fut>(&self, op: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(Arc<Client>) -> Fut + Clone + Send + 'static,
        Fut: Future<Output = Result<T, tokio_postgres::Error>> + Send,
    {
        let start = std::time::Instant::now();
        match self.with_client("read", op.clone()) {
            Err(_) if start.elapsed() < RETRY_WITHIN => self.with_connection("read", true, op),
            answer => answer,
        }
    }
}

/// What went wrong, in the database's words where it said any (its
/// message, never the detail, which may quote the data).
pub(super) fn described(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => match std::error::Error::source(e) {
            Some(source) => format!("{e}: {source}"),
            None => e.to_string(),
        },
    }
}

/// Whether `e` says the database ended the session before the statement
/// ran (`57P01`, admin shutdown: `pg_terminate_backend`, a fast stop).
fn terminated(e: &StoreError) -> bool {
    matches!(e, StoreError::Unavailable(m) if m.contains("(57P01)"))
}

fn unanswered() -> StoreError {
    StoreError::Unavailable(format!(
        "the choices database did not answer within {}s",
        QUERY_WITHIN.as_secs()
    ))
}

fn unsigned(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

fn signed(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

impl Shared {
    async fn with_client<T, F, Fut>(
        &self,
        what: &'static str,
        fresh: bool,
        op: F,
    ) -> Result<T, StoreError>
    where
        F: FnOnce(Arc<Client>) -> Fut,
        Fut: Future<Output = Result<T, tokio_postgres::Error>>,
    {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.slots.len().max(1);
        let Some(slot) = self.slots.get(i) else {
            return Err(unanswered());
        };
        let outcome = tokio::time::timeout(QUERY_WITHIN, async {
            let mut slot = slot.lock().await;
            if fresh || slot.as_ref().is_none_or(|c| c.is_closed()) {
                let client = match &self.tls {
                    Some(tls) => {
                        let (client, connection) = self
                            .config
                            .connect(tls.clone())
                            .await
                            .map_err(|e| failed("be reached", described(&e)))?;
                        tokio::spawn(connection);
                        client
                    }
                    None => {
                        let (client, connection) = self
                            .config
                            .connect(NoTls)
                            .await
                            .map_err(|e| failed("be reached", described(&e)))?;
                        tokio::spawn(connection);
                        client
                    }
                };
                *slot = Some(Arc::new(client));
            }
            let Some(client) = slot.clone() else {
                return Err(unanswered());
            };
            // The slot stays locked: the connection is this operation's
            // alone (a transaction is its statements, in order).
            let result = op(client).await;
            if result.is_err() {
                // Whatever state it was left in, it is not used again.
                *slot = None;
            }
            result.map_err(|e| failed(what, described(&e)))
        })
        .await;
        match outcome {
            Ok(result) => result,
            Err(_) => {
                // The operation was dropped mid-way: so is its connection.
                if let Ok(mut slot) = slot.try_lock() {
                    *slot = None;
                }
                Err(unanswered())
            }
        }
    }
}

fn state_of(text: &str) -> ChoiceState {
    // Only this server writes the column; an unknown state reads as the
    // narrowest one.
    ChoiceState::parse(text).unwrap_or(ChoiceState::Withdrawn)
}

/// The event in [`COLUMNS`] of `row`, from its column `at` on.
fn record_at(row: &Row, at: usize) -> ChoiceRecord {
    let evidence: String = row.get(at + 7);
    ChoiceRecord {
        choice: NewChoice {
            tenant: row.get(at + 1),
            data_subject: row.get(at + 2),
            purpose: row.get(at + 3),
            state: state_of(row.get(at + 4)),
            expires_at: row.get(at + 5),
            basis: row.get(at + 6),
            evidence: serde_json::from_str(&evidence).unwrap_or_default(),
        },
        recorded_by: row.get(at + 8),
        recorded_at: row.get(at + 9),
        revision: unsigned(row.get(at)),
    }
}

impl ChoicesStore for PostgresChoices {
    fn record(
        &self,
        choice: NewChoice,
        recorded_by: &str,
        now: i64,
    ) -> Result<ChoiceRecord, StoreError> {
        let evidence = serde_json::to_string(&choice.evidence).unwrap_or_else(|_| "{}".into());
        let (c, by) = (choice.clone(), recorded_by.to_string());
        let write = move |client: Arc<Client>| async move {
            // One statement, so one transaction and one round trip: the
            // revision row's lock, which orders commits, is held only
            // while it runs and commits. The event, the current state and
            // the wake-up of the followers all happen or none does.
            let row = client
                .query_one(
                    "WITH r AS (
                         UPDATE purposegate.meta SET value = value + 1 WHERE key = 'revision' RETURNING value
                     ), e AS (
                         INSERT INTO purposegate.events (revision, tenant, data_subject, purpose, state, expires_at, basis, evidence, recorded_by, recorded_at)
                         SELECT value, $1, $2, $3, $4, $5, $6, $7, $8, $9 FROM r
                     ), c AS (
                         INSERT INTO purposegate.current (tenant, data_subject, purpose, revision)
                         SELECT $1, $2, $3, value FROM r
                         ON CONFLICT (tenant, data_subject, purpose) DO UPDATE SET revision = excluded.revision
                     )
                     SELECT value, pg_notify($10, value::text) FROM r",
                    &[
                        &c.tenant,
                        &c.data_subject,
                        &c.purpose,
                        &c.state.as_str(),
                        &c.expires_at,
                        &c.basis,
                        &evidence,
                        &by,
                        &now,
                        &CHANNEL,
                    ],
                )
                .await?;
            Ok(unsigned(row.get::<_, i64>(0)))
        };
        // A session the database ended before running the statement
        // (admin shutdown) wrote nothing: tried once more, on a new
        // connection. Any other failure may have committed; it is
        // reported, not repeated.
        let revision = match self.with_client("record the choice", write.clone()) {
            Err(e) if terminated(&e) => self.with_connection("record the choice", true, write)?,
            answer => answer?,
        };
        self.shared.revision.fetch_max(revision, Ordering::AcqRel);
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
        let (tenant, subject) = (tenant.to_string(), data_subject.to_string());
        // One statement, one snapshot: the revision is the one the choices
        // were read at.
        let (records, revision) = self.read(move |client| {
            async move {
                let rows = client
                    .query(
                        &format!(
                            "WITH r AS (SELECT value FROM purposegate.meta WHERE key = 'revision')
                             SELECT r.value, {COLUMNS} FROM r LEFT JOIN (
                                 purposegate.current c JOIN purposegate.events e ON e.revision = c.revision
                             ) ON c.tenant = $1 AND c.data_subject = $2
                             ORDER BY e.purpose"
                        ),
                        &[&tenant, &subject],
                    )
                    .await?;
                let revision = rows.first().map_or(0, |r| unsigned(r.get(0)));
                let records = rows
                    .iter()
                    .filter(|r| r.get::<_, Option<i64>>(1).is_some())
                    .map(|r| record_at(r, 1))
                    .collect::<Vec<_>>();
                Ok((records, revision))
            }
        })?;
        self.shared.revision.fetch_max(revision, Ordering::AcqRel);
        Ok((records, revision))
    }

    fn history(
        &self,
        tenant: &str,
        data_subject: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<ChoiceRecord>, StoreError> {
        let (tenant, subject) = (tenant.to_string(), data_subject.to_string());
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(move |client| async move {
            let rows = client
                .query(
                    &format!(
                        "SELECT {COLUMNS} FROM purposegate.events e
                             WHERE e.tenant = $1 AND e.data_subject = $2 AND e.revision > $3
                             ORDER BY e.revision LIMIT $4"
                    ),
                    &[&tenant, &subject, &signed(after), &limit],
                )
                .await?;
            Ok(rows.iter().map(|r| record_at(r, 0)).collect())
        })
    }

    fn subjects(
        &self,
        tenant: &str,
        after: &str,
        limit: usize,
    ) -> Result<Vec<(String, Vec<Choice>)>, StoreError> {
        let (tenant, after) = (tenant.to_string(), after.to_string());
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = self.read(move |client| {
            async move {
                let rows = client
                    .query(
                        "SELECT c.data_subject, e.purpose, e.state, e.recorded_at, e.expires_at
                         FROM purposegate.current c JOIN purposegate.events e ON e.revision = c.revision
                         WHERE c.tenant = $1 AND c.data_subject IN (
                             SELECT DISTINCT data_subject FROM purposegate.current
                             WHERE tenant = $1 AND data_subject > $2 ORDER BY data_subject LIMIT $3)
                         ORDER BY c.data_subject, c.purpose",
                        &[&tenant, &after, &limit],
                    )
                    .await?;
                Ok(rows
                    .iter()
                    .map(|row| {
                        (
                            row.get::<_, String>(0),
                            Choice {
                                purpose: row.get(1),
                                state: state_of(row.get(2)),
                                at: row.get(3),
                                expires_at: row.get(4),
                            },
                        )
                    })
                    .collect::<Vec<_>>())
            }
        })?;
        Ok(super::by_subject(rows))
    }

    fn changes(&self, after: u64, limit: usize) -> Result<Vec<ChoiceChange>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let changes = self.read(move |client| async move {
            let rows = client
                .query(
                    "SELECT revision, tenant, data_subject FROM purposegate.events
                         WHERE revision > $1 ORDER BY revision LIMIT $2",
                    &[&signed(after), &limit],
                )
                .await?;
            Ok(rows
                .iter()
                .map(|row| ChoiceChange {
                    revision: unsigned(row.get(0)),
                    tenant: row.get(1),
                    data_subject: row.get(2),
                })
                .collect::<Vec<_>>())
        })?;
        if let Some(last) = changes.last() {
            self.shared
                .revision
                .fetch_max(last.revision, Ordering::AcqRel);
        }
        Ok(changes)
    }

    fn revision(&self) -> u64 {
        self.shared.revision.load(Ordering::Acquire)
    }
}
