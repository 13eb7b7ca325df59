//! Hot reload: watch the policy path and swap in each valid change.
//!
//! A file is watched through its directory, so editors that replace the
//! file and Kubernetes ConfigMap updates (an atomic swap of a `..data`
//! symlink) are both seen. Events are coalesced: after the first, the
//! reloader waits for a short quiet spell, then loads the whole policy off
//! the runtime's worker threads. A valid policy replaces the serving one
//! atomically; an invalid one is logged with its diagnostics and recorded
//! for `GetPolicy`, and the last good revision keeps serving.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::Notify;
use tracing::{info, warn};

use crate::metrics::Metrics;
use crate::policy_files;
use crate::store::PolicyStore;

/// How long the files must be quiet before a reload.
const QUIET: Duration = Duration::from_millis(150);

/// Keeps the file watcher alive; dropping it stops reloading.
#[derive(Debug)]
pub struct Reloader {
    _watcher: notify::RecommendedWatcher,
}

/// Starts watching `path`; each change reloads the policy into `store`.
pub fn watch(
    path: PathBuf,
    store: Arc<PolicyStore>,
    metrics: Metrics,
) -> Result<Reloader, notify::Error> {
    let changed = Arc::new(Notify::new());
    let signal = changed.clone();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        // Any event (or watcher error) is a reason to look again; a
        // pending wake-up coalesces bursts into one reload.
        if event.map(|e| !e.kind.is_access()).unwrap_or(true) {
            signal.notify_one();
        }
    })?;
    let watched = watched_dir(&path);
    watcher.watch(&watched, RecursiveMode::NonRecursive)?;
    info!(path = %path.display(), watching = %watched.display(), "watching the policy for changes");
    tokio::spawn(reload_loop(path, store, metrics, changed));
    Ok(Reloader { _watcher: watcher })
}

/// The directory to watch for `path`.
fn watched_dir(path: &Path) -> PathBuf {
    if path.is_dir() {
        return path.to_path_buf();
    }
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

async fn reload_loop(
    path: PathBuf,
    store: Arc<PolicyStore>,
    metrics: Metrics,
    changed: Arc<Notify>,
) {
    loop {
        changed.notified().await;
        // Let a burst of writes finish: wait until QUIET passes without one.
        while tokio::time::timeout(QUIET, changed.notified())
            .await
            .is_ok()
        {}
        let from = path.clone();
        let loaded = tokio::task::spawn_blocking(move || policy_files::read_policy(&from)).await;
        match loaded {
            Ok(Ok(policy)) => {
                let name = policy.name().clone();
                let revision = policy.revision().clone();
                metrics.reloads_succeeded.inc();
                if store.replace(policy) {
                    info!(policy = %name, %revision, "policy reloaded");
                }
            }
            Ok(Err(e)) => {
                metrics.reloads_failed.inc();
                store.set_reload_error(e.to_string());
                warn!(
                    error = %e,
                    serving = %store.current().revision(),
                    "policy reload failed; the last good revision keeps serving"
                );
            }
            Err(e) => {
                metrics.reloads_failed.inc();
                store.set_reload_error("the reload task failed".to_string());
                warn!(error = %e, "policy reload task failed");
            }
        }
    }
}
