//! Small HTTP faces (`/metrics`, the explorer, the webhook) are axum
//! routers served on the one accept path of [`crate::listen`]: axum gives
//! `HEAD`, `405` with `Allow` and routing; the listener gives the caps,
//! timeouts, TLS and drain every port has.

use std::sync::Arc;

use axum::Router;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hyper_util::service::TowerToHyperService;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::info;

use crate::listen::{self, Face, Served};

/// Serves `router` on `listener` as `face` until `shutdown` turns true.
pub fn serve_router(
    listener: TcpListener,
    face: Face,
    shutdown: watch::Receiver<bool>,
    router: Router,
) -> Served {
    listen::serve(listener, face, shutdown, move |_peer| {
        TowerToHyperService::new(router.clone())
    })
}

/// A plain-text response: `status` and `body`, `text/plain; charset=utf-8`.
pub fn text(status: StatusCode, body: impl Into<String>) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body.into(),
    )
        .into_response()
}

/// `405 Method Not Allowed` naming the methods that are (`Allow`).
pub fn method_not_allowed(allow: &'static str, body: &str) -> Response {
    let mut response = text(StatusCode::METHOD_NOT_ALLOWED, body);
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    response
}

/// The content type of the Prometheus text exposition (OpenMetrics).
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A registry as Prometheus text (OpenMetrics).
pub fn encode(registry: &Registry) -> String {
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, registry);
    out
}

/// `GET /metrics`: `registry` as Prometheus text. Anything else is `404`
/// (a `GET` elsewhere) or `405` (another method).
pub fn metrics_router(registry: Arc<Registry>) -> Router {
    let metrics = get(move || {
        let registry = registry.clone();
        async move { ([(header::CONTENT_TYPE, OPENMETRICS)], encode(&registry)) }
    })
    .fallback(|| async { method_not_allowed("GET, HEAD", "only GET is served\n") });
    Router::new()
        .route("/metrics", metrics)
        .fallback(|method: Method| async move {
            if method == Method::GET || method == Method::HEAD {
                text(
                    StatusCode::NOT_FOUND,
                    "not found: metrics are at /metrics\n",
                )
            } else {
                method_not_allowed("GET, HEAD", "only GET is served\n")
            }
        })
}

/// Serves `registry` as `/metrics` on `addr` until the process ends, as
/// `face` (its name is `metrics`, plaintext HTTP/1.1).
pub async fn serve_metrics(
    addr: std::net::SocketAddr,
    registry: Arc<Registry>,
    limits: listen::Limits,
    refused: prometheus_client::metrics::counter::Counter,
) -> std::io::Result<std::net::SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    info!(metrics_addr = %bound, "serving metrics on /metrics");
    let face = Face {
        name: "metrics",
        limits,
        protocols: listen::Protocols::Http1,
        tls: None,
        refused,
    };
    serve_router(listener, face, listen::never(), metrics_router(registry));
    Ok(bound)
}
