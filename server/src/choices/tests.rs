//! The in-memory store and the checks before a choice is stored.

#![allow(clippy::unwrap_used, clippy::panic, clippy::indexing_slicing)]

use std::sync::Arc;

use super::*;

const T: i64 = 1_796_637_600;

fn policy() -> Policy {
    Policy::parse(
        "p.yaml",
        "version: 1\nname: p\npurposes:\n  marketing: M\n  marketing.email: E\n  legal: L\ndataCategories:\n  c: C\n",
    )
    .unwrap()
}

fn new(tenant: &str, subject: &str, purpose: &str, state: ChoiceState) -> NewChoice {
    NewChoice {
        tenant: tenant.into(),
        data_subject: subject.into(),
        purpose: purpose.into(),
        state,
        expires_at: None,
        basis: "consent".into(),
        evidence: BTreeMap::from([("notice".to_string(), "v3".to_string())]),
    }
}

#[test]
fn the_latest_event_is_the_current_choice_and_every_event_is_kept() {
    let store = MemoryChoices::new();
    let granted = new("contoso", "u-42", "marketing", ChoiceState::Granted);
    let first = store.record(granted, "spiffe://w", T).unwrap();
    assert_eq!(first.revision, 1);
    let withdrawn = new("contoso", "u-42", "marketing", ChoiceState::Withdrawn);
    store.record(withdrawn, "spiffe://w", T + 5).unwrap();
    let (current, revision) = store.current("contoso", "u-42").unwrap();
    assert_eq!(revision, 2);
    assert_eq!(current.len(), 1);
    assert_eq!(current[0].state, ChoiceState::Withdrawn);
    assert_eq!(current[0].at, T + 5);
    let history = store.history("contoso", "u-42", 0, usize::MAX).unwrap();
    assert_eq!(history.len(), 2);
    assert_eq!(history[0].choice.state, ChoiceState::Granted);
    assert_eq!(history[0].recorded_by, "spiffe://w");
    // The tenant's own choices are apart from its data subjects'.
    assert!(store.current("contoso", "").unwrap().0.is_empty());
    assert!(store.current("fabrikam", "u-42").unwrap().0.is_empty());
}

#[test]
fn facts_are_read_for_the_owner_tenant_and_the_data_subject() {
    let store = MemoryChoices::new();
    store
        .record(
            new("contoso", "", "marketing", ChoiceState::Withdrawn),
            "-",
            T,
        )
        .unwrap();
    let mut req = DecisionRequest::default();
    let none = facts(&store, &req, T);
    assert_eq!((none.tenant, none.subject), (None, None));
    req.resource.owner_tenant = "contoso".into();
    req.resource.data_subject = "u-42".into();
    let read = facts(&store, &req, T);
    assert_eq!(read.tenant.unwrap().len(), 1);
    assert_eq!(read.subject, Some(Vec::new()));
    assert_eq!(read.revision, 1);
}

#[test]
fn hostile_choices_are_refused_naming_what_is_wrong() {
    let p = policy();
    let refused = |c: NewChoice| match validate(&c, &p, T) {
        Err(StoreError::Invalid(m)) => m,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        refused(new("contoso", "u-42", "marketting", ChoiceState::Granted)),
        "unknown purpose `marketting` (did you mean `marketing`?)"
    );
    assert!(
        refused(new(&"t".repeat(4096), "u", "legal", ChoiceState::Granted)).contains("4096 bytes")
    );
    assert!(
        refused(new(
            "contoso",
            &"s".repeat(4096),
            "legal",
            ChoiceState::Granted
        ))
        .contains("`data_subject`")
    );
    assert_eq!(
        refused(new("", "u", "legal", ChoiceState::Granted)),
        "`tenant` is required"
    );
    assert!(
        refused(new("contoso", "u", "legal", ChoiceState::Restricted))
            .contains("give no `purpose`")
    );
    assert!(
        refused(new("contoso", "", "", ChoiceState::Restricted)).contains("give `data_subject`")
    );
    assert_eq!(
        refused(new("contoso", "u", "", ChoiceState::Granted)),
        "`purpose` is required"
    );
    let past = NewChoice {
        expires_at: Some(T - 1),
        ..new("contoso", "u", "legal", ChoiceState::Granted)
    };
    assert!(refused(past).contains("is not in the future"));
    let mut stuffed = new("contoso", "u", "legal", ChoiceState::Granted);
    for i in 0..17 {
        stuffed.evidence.insert(format!("k{i}"), "v".into());
    }
    assert!(refused(stuffed).contains("18 entries"));
    assert!(validate(&new("contoso", "u", "", ChoiceState::Restricted), &p, T).is_ok());
}

#[test]
fn a_full_memory_store_refuses_and_keeps_what_it_has() {
    let small = new("contoso", "u", "legal", ChoiceState::Granted);
    let one = super::memory::footprint(&ChoiceRecord {
        choice: small.clone(),
        recorded_by: "-".into(),
        recorded_at: T,
        revision: 1,
    });
    let store = MemoryChoices::with_max_bytes(3 * one);
    for _ in 0..3 {
        store.record(small.clone(), "-", T).unwrap();
    }
    let full = store.record(new("contoso", "u", "legal", ChoiceState::Withdrawn), "-", T);
    assert!(matches!(full, Err(StoreError::Unavailable(m)) if m.contains("--choices-db")));
    assert_eq!(store.revision(), 3);
    assert_eq!(
        store.current("contoso", "u").unwrap().0[0].state,
        ChoiceState::Granted
    );
    // Bounded in bytes, not events: one event with 16 KiB of evidence
    // takes the room of many small ones.
    let store = MemoryChoices::with_max_bytes(8 * one);
    let mut fat = small.clone();
    fat.evidence = (0..16)
        .map(|i| (format!("k{i}"), "x".repeat(1024)))
        .collect();
    assert!(store.record(fat, "-", T).is_err());
    assert_eq!(store.revision(), 0, "nothing stored");
    store.record(small, "-", T).unwrap();
    assert_eq!(store.revision(), 1);
}

#[test]
fn concurrent_writers_leave_history_and_current_state_agreeing() {
    let store = Arc::new(MemoryChoices::new());
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let store = store.clone();
            std::thread::spawn(move || {
                for i in 0..200 {
                    let state = if (w + i) % 2 == 0 {
                        ChoiceState::Granted
                    } else {
                        ChoiceState::Withdrawn
                    };
                    let purpose = if i % 3 == 0 { "marketing" } else { "legal" };
                    store
                        .record(new("contoso", "u-1", purpose, state), "-", T + i)
                        .unwrap();
                }
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    let history = store.history("contoso", "u-1", 0, usize::MAX).unwrap();
    assert_eq!(history.len(), 1600);
    // Revisions advance in commit order, one an event.
    assert!(
        history
            .windows(2)
            .all(|w| w[0].revision + 1 == w[1].revision)
    );
    // The history, replayed, gives the current state.
    let mut replayed: BTreeMap<String, ChoiceState> = BTreeMap::new();
    for r in &history {
        replayed.insert(r.choice.purpose.clone(), r.choice.state);
    }
    let current: BTreeMap<String, ChoiceState> = store
        .current("contoso", "u-1")
        .unwrap()
        .0
        .into_iter()
        .map(|c| (c.purpose, c.state))
        .collect();
    assert_eq!(replayed, current);
}

#[test]
fn sqlite_keeps_every_choice_and_its_history_across_a_restart() {
    let dir = std::env::temp_dir().join(format!("pg-choices-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let path = dir.join("restart.db");
    let _ = std::fs::remove_file(&path);
    {
        let store = SqliteChoices::open(&path).unwrap();
        store
            .record(
                new("contoso", "u-42", "marketing", ChoiceState::Granted),
                "spiffe://w",
                T,
            )
            .unwrap();
        store
            .record(
                new("contoso", "u-42", "marketing", ChoiceState::Withdrawn),
                "spiffe://w",
                T + 1,
            )
            .unwrap();
        store
            .record(
                new("contoso", "", "legal", ChoiceState::Granted),
                "-",
                T + 2,
            )
            .unwrap();
    }
    let store = SqliteChoices::open(&path).unwrap();
    assert_eq!(store.revision(), 3);
    let (current, revision) = store.current("contoso", "u-42").unwrap();
    assert_eq!(revision, 3);
    assert_eq!(current.len(), 1);
    assert_eq!(
        (current[0].state, current[0].at),
        (ChoiceState::Withdrawn, T + 1)
    );
    let history = store.history("contoso", "u-42", 0, usize::MAX).unwrap();
    assert_eq!(history.len(), 2);
    assert_eq!(history[0].choice.evidence["notice"], "v3");
    assert_eq!(history[0].recorded_by, "spiffe://w");
    // Pages: after a revision, at most a limit.
    let page = store.history("contoso", "u-42", 1, 10).unwrap();
    assert_eq!(page.len(), 1);
    assert_eq!(page[0].revision, 2);
    assert_eq!(store.current("contoso", "").unwrap().0.len(), 1);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn sqlite_under_concurrent_writers_keeps_history_and_state_agreeing() {
    let dir = std::env::temp_dir().join(format!("pg-choices-c-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let path = dir.join("concurrent.db");
    let _ = std::fs::remove_file(&path);
    let store = Arc::new(SqliteChoices::open(&path).unwrap());
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let store = store.clone();
            std::thread::spawn(move || {
                for i in 0..50 {
                    let state = if (w + i) % 2 == 0 {
                        ChoiceState::Granted
                    } else {
                        ChoiceState::Objected
                    };
                    store
                        .record(new("contoso", "u-1", "marketing", state), "-", T + i)
                        .unwrap();
                }
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    let history = store.history("contoso", "u-1", 0, usize::MAX).unwrap();
    assert_eq!(history.len(), 200);
    assert!(
        history
            .windows(2)
            .all(|w| w[0].revision + 1 == w[1].revision)
    );
    let last = history.last().unwrap().choice.state;
    assert_eq!(store.current("contoso", "u-1").unwrap().0[0].state, last);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_database_of_a_newer_schema_is_refused() {
    let dir = std::env::temp_dir().join(format!("pg-choices-s-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let path = dir.join("newer.db");
    let _ = std::fs::remove_file(&path);
    drop(SqliteChoices::open(&path).unwrap());
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute("UPDATE meta SET value = 99 WHERE key = 'schema'", [])
        .unwrap();
    drop(conn);
    let refused = SqliteChoices::open(&path).unwrap_err();
    assert!(
        refused.contains("has schema 99; this server reads schema 1"),
        "{refused}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A store whose reads never answer until it is let go.
#[derive(Debug)]
struct Stuck(std::sync::Mutex<std::sync::mpsc::Receiver<()>>);

impl ChoicesStore for Stuck {
    fn record(&self, _: NewChoice, _: &str, _: i64) -> Result<ChoiceRecord, StoreError> {
        Err(StoreError::Unavailable("stuck".into()))
    }
    fn current(&self, _: &str, _: &str) -> Result<(Vec<Choice>, u64), StoreError> {
        if let Ok(waiting) = self.0.lock() {
            let _ = waiting.recv();
        }
        Err(StoreError::Unavailable("stuck".into()))
    }
    fn current_records(&self, _: &str, _: &str) -> Result<(Vec<ChoiceRecord>, u64), StoreError> {
        Ok((Vec::new(), 0))
    }
    fn history(&self, _: &str, _: &str, _: u64, _: usize) -> Result<Vec<ChoiceRecord>, StoreError> {
        Ok(Vec::new())
    }
    fn subjects(
        &self,
        _: &str,
        _: &str,
        _: usize,
    ) -> Result<Vec<(String, Vec<Choice>)>, StoreError> {
        Ok(Vec::new())
    }
    fn changes(&self, _: u64, _: usize) -> Result<Vec<ChoiceChange>, StoreError> {
        Ok(Vec::new())
    }
    fn revision(&self) -> u64 {
        9
    }
}

#[tokio::test]
async fn a_store_that_does_not_answer_gives_no_choices_and_holds_few_threads() {
    let (release, waiting) = std::sync::mpsc::channel();
    let store: Arc<dyn ChoicesStore> = Arc::new(Stuck(std::sync::Mutex::new(waiting)));
    let places = Arc::new(tokio::sync::Semaphore::new(1));
    let mut req = DecisionRequest::default();
    req.resource.owner_tenant = "contoso".into();
    req.resource.data_subject = "u-42".into();
    // Each waits its time at most (a second for the faces), then decides
    // without the choices; the one place stays taken by the read that does
    // not end. (Real time: a paused clock does not advance while a
    // blocking thread runs.)
    let within = std::time::Duration::from_millis(50);
    for _ in 0..3 {
        let unread = facts_off_worker(&store, &places, &req, within)
            .await
            .unwrap_err();
        assert_eq!(
            (unread.tenant, unread.subject, unread.revision),
            (None, None, 9)
        );
    }
    assert_eq!(places.available_permits(), 0);
    drop(release);
    // A cached store answers from its cache, without a place.
    let cached: Arc<dyn ChoicesStore> = Arc::new(CachedChoices::new(
        Arc::new(MemoryChoices::new()),
        cache::DEFAULT_MAX_BYTES,
    ));
    cached.current("contoso", "").unwrap();
    cached.current("contoso", "u-42").unwrap();
    let none = Arc::new(tokio::sync::Semaphore::new(0));
    let facts = facts_off_worker(&cached, &none, &req, within)
        .await
        .unwrap();
    assert_eq!((facts.tenant, facts.subject), (Some(vec![]), Some(vec![])));
}
