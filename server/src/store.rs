//! The serving policy: swapped atomically on reload, watched by anyone who
//! must know about a new revision.
//!
//! Readers on the request path take the current `Arc<Policy>` from an
//! `ArcSwap` (no lock); a reload builds the whole new policy first and then
//! swaps the pointer, so no request ever sees a half-loaded policy.

use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use tokio::sync::watch;

use crate::engine::Policy;

#[derive(Debug)]
pub struct PolicyStore {
    current: ArcSwap<Policy>,
    changes: watch::Sender<Arc<Policy>>,
    last_reload_error: Mutex<String>,
}

impl PolicyStore {
    pub fn new(policy: Policy) -> Self {
        let policy = Arc::new(policy);
        let (changes, _) = watch::channel(policy.clone());
        PolicyStore {
            current: ArcSwap::new(policy),
            changes,
            last_reload_error: Mutex::new(String::new()),
        }
    }

    /// The policy serving now.
    pub fn current(&self) -> Arc<Policy> {
        self.current.load_full()
    }

    /// Serves `policy` from now on and clears the last reload error.
    /// Returns false (and changes nothing) when it has the serving revision.
    pub fn replace(&self, policy: Policy) -> bool {
        self.set_reload_error(String::new());
        if policy.revision() == self.current.load().revision() {
            return false;
        }
        let policy = Arc::new(policy);
        self.current.store(policy.clone());
        self.changes.send_replace(policy);
        true
    }

    /// Records why the last reload failed; the serving policy stays.
    pub fn set_reload_error(&self, error: String) {
        if let Ok(mut last) = self.last_reload_error.lock() {
            *last = error;
        }
    }

    pub fn last_reload_error(&self) -> String {
        self.last_reload_error
            .lock()
            .map(|e| e.clone())
            .unwrap_or_default()
    }

    /// A receiver that sees the current policy, then every change.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Policy>> {
        self.changes.subscribe()
    }
}
