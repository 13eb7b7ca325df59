//! The sidecar injection webhook: HTTPS on `--webhook-listen`, answering
//! `AdmissionReview`s on `POST /inject` (pods selected by their own label)
//! and `POST /inject-namespace` (pods selected by their namespace's label).
//!
//! The certificate and key are read again when their files change (a
//! cert-manager renewal or a rotated Secret), on the next TLS handshake; a
//! pair that fails to load leaves the last good one in use ([`purposegate_runtime::tls`]).

pub mod inject;

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::response::Response;
use axum::routing::{get, post};
use bytes::Bytes;
use http_body_util::BodyExt;
use tracing::warn;

use inject::{Selection, SidecarTemplate};

/// Reviews larger than this are refused: a Pod's review is a few
/// kilobytes, rarely more than a hundred.
const MAX_REVIEW_BYTES: usize = 512 * 1024;
/// A review past the limit is still read (and dropped) up to this many
/// bytes or [`DRAIN_TIME`], so its sender gets the answer.
const MAX_DRAINED_BYTES: usize = 16 * 1024 * 1024;
const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(2);

/// Serves the webhook on `listener` with TLS until the process ends, on
/// the bounded accept path; `refused` counts connections it closed at a
/// cap.
pub fn serve(
    listener: tokio::net::TcpListener,
    tls: purposegate_runtime::tls::ServerTls,
    template: Arc<SidecarTemplate>,
    refused: prometheus_client::metrics::counter::Counter,
) {
    let face = purposegate_runtime::listen::Face {
        name: "webhook",
        limits: purposegate_runtime::listen::Limits::default(),
        protocols: purposegate_runtime::listen::Protocols::Http1,
        tls: Some(tls),
        refused,
    };
    purposegate_runtime::http::serve_router(
        listener,
        face,
        purposegate_runtime::listen::never(),
        router(template),
    );
}

/// `POST /inject`, `POST /inject-namespace` and `GET /healthz`; anything
/// else is told where reviews go.
fn router(template: Arc<SidecarTemplate>) -> Router {
    let elsewhere = || async {
        reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            "POST an AdmissionReview to /inject or /inject-namespace\n".into(),
        )
    };
    Router::new()
        .route(
            "/inject",
            post(
                |State(template): State<Arc<SidecarTemplate>>, req: Request| async move {
                    review(req, &template, Selection::PodLabel).await
                },
            )
            .fallback(elsewhere),
        )
        .route(
            "/inject-namespace",
            post(
                |State(template): State<Arc<SidecarTemplate>>, req: Request| async move {
                    review(req, &template, Selection::Namespace).await
                },
            )
            .fallback(elsewhere),
        )
        .route(
            "/healthz",
            get(|| async { reply(StatusCode::OK, "text/plain", "ok\n".into()) })
                .fallback(elsewhere),
        )
        .fallback(elsewhere)
        .with_state(template)
}

async fn review(req: Request, template: &SidecarTemplate, selection: Selection) -> Response {
    let mut body = req.into_body();
    let mut read = Vec::new();
    let mut seen = 0usize;
    // Past the limit the rest is read and dropped (within a bound and a
    // time), so the caller, still sending, gets the 400 and not a reset.
    let drained = tokio::time::timeout(DRAIN_TIME, async {
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| e.to_string())?;
            if let Some(data) = frame.data_ref() {
                seen = seen.saturating_add(data.len());
                if seen <= MAX_REVIEW_BYTES {
                    read.extend_from_slice(data);
                } else if seen > MAX_DRAINED_BYTES {
                    break;
                }
            }
        }
        Ok::<(), String>(())
    })
    .await;
    let problem = match drained {
        Err(_) => Some("the review did not arrive in time".to_string()),
        Ok(Err(e)) => Some(e),
        Ok(Ok(())) if seen > MAX_REVIEW_BYTES => Some(format!(
            "length limit exceeded: over {MAX_REVIEW_BYTES} bytes"
        )),
        Ok(Ok(())) => None,
    };
    if let Some(e) = problem {
        return reply(
            StatusCode::BAD_REQUEST,
            "text/plain",
            format!("cannot read the review: {e}\n").into(),
        );
    }
    let body = Bytes::from(read);
    match inject::review(&body, template, selection) {
        Ok(answer) => reply(StatusCode::OK, "application/json", answer.into()),
        Err(problem) => {
            warn!(%problem, "malformed admission review");
            reply(
                StatusCode::BAD_REQUEST,
                "text/plain",
                format!("{problem}\n").into(),
            )
        }
    }
}

fn reply(status: StatusCode, content_type: &'static str, body: Bytes) -> Response {
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    response
}
