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
use tracing::warn;

use inject::{Selection, SidecarTemplate};

/// Reviews larger than this are refused: a Pod's review is a few
/// kilobytes, rarely more than a hundred.
const MAX_REVIEW_BYTES: usize = 512 * 1024;
/// How long a review may take to arrive: the API server gives up on a
/// webhook after its `timeoutSeconds`, 10 by default.
const REVIEW_TIME: std::time::Duration = std::time::Duration::from_secs(10);

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

/// `POST /inject`, `POST /inject-namespace` and `GET /healthz`; another
/// method on them is `405` with `Allow`, any other path is told where
/// reviews go.
fn router(template: Arc<SidecarTemplate>) -> Router {
    use purposegate_runtime::http::method_not_allowed;
    // The two review paths differ only in how a pod is selected.
    let reviews = |selection: Selection| {
        post(
            move |State(template): State<Arc<SidecarTemplate>>, req: Request| async move {
                review(req, &template, selection).await
            },
        )
        .fallback(|| async { method_not_allowed("POST", "POST an AdmissionReview here\n") })
    };
    Router::new()
        .route("/inject", reviews(Selection::PodLabel))
        .route("/inject-namespace", reviews(Selection::Namespace))
        .route(
            "/healthz",
            get(|| async { reply(StatusCode::OK, "text/plain", "ok\n".into()) })
                .fallback(|| async { method_not_allowed("GET, HEAD", "only GET is served\n") }),
        )
        .fallback(|| async {
            reply(
                StatusCode::NOT_FOUND,
                "text/plain",
                "POST an AdmissionReview to /inject or /inject-namespace\n".into(),
            )
        })
        .with_state(template)
}

async fn review(req: Request, template: &SidecarTemplate, selection: Selection) -> Response {
    let body =
        match purposegate_runtime::http::read_body(req.into_body(), MAX_REVIEW_BYTES, REVIEW_TIME)
            .await
        {
            Ok(body) => body,
            Err(e) => {
                return reply(
                    StatusCode::BAD_REQUEST,
                    "text/plain",
                    format!("cannot read the review: {e}\n").into(),
                );
            }
        };
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
