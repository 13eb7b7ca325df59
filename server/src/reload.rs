//! Hot reload: watch the policy path and swap in each valid change.
//!
//! A file is watched through its directory, so editors that replace the
//! file and Kubernetes ConfigMap updates (an atomic swap of a `..data`
//! symlink) are both seen. Only events about the policy's own files count
//! (the file, or a directory's `*.yaml` files, and a ConfigMap's `..`
//! entries): a decision log or an editor's swap file changing beside it
//! never holds a reload back. Events are coalesced: after the first, the
//! reloader waits for a quiet spell of [`QUIET`], but never longer than
//! [`MAX_WAIT`] in all, then loads the whole policy off the runtime's
//! worker threads.
//!
//! The latest change wins: each load is started as soon as its change
//! settles, even while an earlier one is still loading, and a load's
//! result is used only if no later load has started since. A slow file
//! cannot hold back the revocation written after it.
//!
//! A valid policy replaces the serving one atomically; an invalid one is
//! logged with its diagnostics and recorded for `GetPolicy`, and the last
//! good revision keeps serving.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::Notify;
use tracing::{info, warn};

use crate::engine::PolicyLimits;
use crate::metrics::Metrics;
use crate::policy_files;
use crate::store::PolicyStore;

/// How long the files must be quiet before a reload.
const QUIET: Duration = Duration::from_millis(150);
/// The longest a change waits for quiet: a file written again and again
/// is still loaded this often.
const MAX_WAIT: Duration = Duration::from_millis(500);

/// Keeps the file watcher alive; dropping it stops reloading.
#[derive(Debug)]
pub struct Reloader {
    _watcher: notify::RecommendedWatcher,
}

/// Starts watching `path`; each change reloads the policy into `store`.
pub fn watch(
    path: PathBuf,
    limits: PolicyLimits,
    store: Arc<PolicyStore>,
    metrics: Metrics,
) -> Result<Reloader, notify::Error> {
    let changed = Arc::new(Notify::new());
    let signal = changed.clone();
    let directory = path.is_dir();
    let policy = path.clone();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        // A watcher error is a reason to look again; an event, only if it
        // is about the policy's files. A pending wake-up coalesces bursts.
        let relevant = match event {
            Err(_) => true,
            Ok(e) => {
                !e.kind.is_access()
                    && e.paths
                        .iter()
                        .any(|p| concerns_policy(p, &policy, directory))
            }
        };
        if relevant {
            signal.notify_one();
        }
    })?;
    let watched = watched_dir(&path);
    watcher.watch(&watched, RecursiveMode::NonRecursive)?;
    info!(path = %path.display(), watching = %watched.display(), "watching the policy for changes");
    tokio::spawn(reload_loop(path, limits, store, metrics, changed));
    Ok(Reloader { _watcher: watcher })
}

/// Whether an event on `changed` may change the policy at `policy` (a
/// file, or a `directory` of files).
fn concerns_policy(changed: &Path, policy: &Path, directory: bool) -> bool {
    let name = changed.file_name().and_then(|n| n.to_str()).unwrap_or("");
    // Kubernetes swaps a ConfigMap's files in through `..data` and
    // `..2026_12_01...` entries.
    if name.starts_with("..") {
        return true;
    }
    if directory {
        policy_files::is_policy_file(changed)
    } else {
        changed.file_name() == policy.file_name()
    }
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
    limits: PolicyLimits,
    store: Arc<PolicyStore>,
    metrics: Metrics,
    changed: Arc<Notify>,
) {
    // The latest load started; a load whose number is older is discarded.
    let latest = Arc::new(AtomicU64::new(0));
    loop {
        changed.notified().await;
        // Let a burst of writes finish: until QUIET passes without one,
        // but no longer than MAX_WAIT.
        let first = tokio::time::Instant::now();
        loop {
            let left = MAX_WAIT.saturating_sub(first.elapsed());
            if left.is_zero()
                || tokio::time::timeout(QUIET.min(left), changed.notified())
                    .await
                    .is_err()
            {
                break;
            }
        }
        let number = latest.fetch_add(1, Ordering::SeqCst) + 1;
        tokio::spawn(load(
            number,
            latest.clone(),
            path.clone(),
            limits,
            store.clone(),
            metrics.clone(),
        ));
    }
}

/// Loads the policy as it is now; applies the result only if no later
/// load has started meanwhile.
async fn load(
    number: u64,
    latest: Arc<AtomicU64>,
    path: PathBuf,
    limits: PolicyLimits,
    store: Arc<PolicyStore>,
    metrics: Metrics,
) {
    let loaded =
        tokio::task::spawn_blocking(move || policy_files::read_policy(&path, &limits)).await;
    if latest.load(Ordering::SeqCst) != number {
        // A later change is loading (or loaded): its result is the one.
        return;
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_policys_own_files_count() {
        let file = Path::new("/etc/pg/policy.yaml");
        assert!(concerns_policy(
            Path::new("/etc/pg/policy.yaml"),
            file,
            false
        ));
        assert!(concerns_policy(Path::new("/etc/pg/..data"), file, false));
        assert!(!concerns_policy(
            Path::new("/etc/pg/decisions.jsonl"),
            file,
            false
        ));
        assert!(!concerns_policy(
            Path::new("/etc/pg/.policy.yaml.swp"),
            file,
            false
        ));
        let dir = Path::new("/etc/pg");
        assert!(concerns_policy(Path::new("/etc/pg/rules.yaml"), dir, true));
        assert!(!concerns_policy(
            Path::new("/etc/pg/rules_test.yaml"),
            dir,
            true
        ));
        assert!(!concerns_policy(Path::new("/etc/pg/notes.txt"), dir, true));
    }
}
