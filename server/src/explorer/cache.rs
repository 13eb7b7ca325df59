//! What the explorer computes once per revision and shares: the matrix,
//! the `/api/policy` body and the plain page, each in a task of its own (a
//! caller that gives up neither cancels nor restarts it); and pages drawn
//! a few at a time on the blocking pool, off the threads that answer
//! `Check`.

use std::sync::Arc;

use bytes::Bytes;

use super::document::policy_document;
use super::{DocumentCell, Explorer, MatrixCell, etag};
use crate::engine::{Matrix, Policy};

/// Draws a page on the blocking pool, waiting for one of the places.
async fn draw(
    drawing: Arc<tokio::sync::Semaphore>,
    render: impl FnOnce() -> Bytes + Send + 'static,
) -> Result<Bytes, String> {
    let place = drawing
        .acquire_owned()
        .await
        .map_err(|e| format!("the page could not be drawn: {e}"))?;
    // The place goes with the work: a caller that gives up does not free
    // it while the drawing still runs.
    tokio::task::spawn_blocking(move || {
        let page = render();
        drop(place);
        page
    })
    .await
    .map_err(|e| format!("the page could not be drawn: {e}"))
}

impl Explorer {
    /// The matrix of `policy`, computed once per revision on the blocking
    /// pool, off the threads that answer `Check`.
    ///
    /// The computation is a task of its own: a caller that goes away
    /// (a closed tab, a timed-out client) neither cancels it nor leaves it
    /// orphaned for the next caller to start again.
    pub(super) async fn matrix_of(&self, policy: &Arc<Policy>) -> Result<Arc<Matrix>, String> {
        let cell = {
            let mut cached = self
                .matrix
                .lock()
                .map_err(|_| "the matrix cache is unusable".to_string())?;
            match &*cached {
                Some((revision, cell)) if revision == policy.revision() => cell.clone(),
                _ => {
                    let cell = MatrixCell::default();
                    *cached = Some((policy.revision().clone(), cell.clone()));
                    cell
                }
            }
        };
        if let Some(matrix) = cell.get() {
            return Ok(matrix.clone());
        }
        let computing = policy.clone();
        let task = tokio::spawn(async move {
            cell.get_or_try_init(|| async move {
                tokio::task::spawn_blocking(move || Arc::new(computing.matrix()))
                    .await
                    .map_err(|e| format!("the matrix could not be computed: {e}"))
            })
            .await
            .cloned()
        });
        task.await
            .map_err(|e| format!("the matrix could not be computed: {e}"))?
    }

    /// The `/api/policy` body for `etag` (revision and reload error),
    /// written once and shared by every request that asks for it.
    pub(super) async fn document_of(
        &self,
        policy: &Arc<Policy>,
        reload_error: &str,
        etag: &str,
    ) -> Result<Bytes, String> {
        let cell = {
            let mut cached = self
                .document
                .lock()
                .map_err(|_| "the document cache is unusable".to_string())?;
            match &*cached {
                Some((tag, cell)) if tag == etag => cell.clone(),
                _ => {
                    let cell = DocumentCell::default();
                    *cached = Some((etag.to_string(), cell.clone()));
                    cell
                }
            }
        };
        if let Some(body) = cell.get() {
            return Ok(body.clone());
        }
        let matrix = self.matrix_of(policy).await?;
        let (policy, reload_error) = (policy.clone(), reload_error.to_string());
        let task = tokio::spawn(async move {
            cell.get_or_try_init(|| async move {
                tokio::task::spawn_blocking(move || {
                    policy_document(&policy, &matrix, &reload_error)
                })
                .await
                .map_err(|e| format!("the policy could not be encoded: {e}"))?
            })
            .await
            .cloned()
        });
        task.await
            .map_err(|e| format!("the policy could not be encoded: {e}"))?
    }

    /// The page without a tried request, drawn once for the serving
    /// revision (and reload error).
    pub(super) async fn plain_page(
        &self,
        render: impl FnOnce() -> Bytes + Send + 'static,
    ) -> Result<Bytes, String> {
        let policy = self.store.current();
        let tag = etag(&policy, &self.store.last_reload_error());
        let cell = {
            let mut cached = self
                .page
                .lock()
                .map_err(|_| "the page cache is unusable".to_string())?;
            match &*cached {
                Some((t, cell)) if *t == tag => cell.clone(),
                _ => {
                    let cell = DocumentCell::default();
                    *cached = Some((tag, cell.clone()));
                    cell
                }
            }
        };
        if let Some(page) = cell.get() {
            return Ok(page.clone());
        }
        let drawing = self.drawing.clone();
        let task = tokio::spawn(async move {
            cell.get_or_try_init(|| draw(drawing, render))
                .await
                .cloned()
        });
        task.await
            .map_err(|e| format!("the page could not be drawn: {e}"))?
    }

    /// A page drawn for one request.
    pub(super) async fn drawn(
        &self,
        render: impl FnOnce() -> Bytes + Send + 'static,
    ) -> Result<Bytes, String> {
        draw(self.drawing.clone(), render).await
    }
}
