//! Small HTTP faces (`/metrics`, the explorer, the webhook) are axum
//! routers served on the one accept path of [`crate::listen`]: axum gives
//! `HEAD`, `405` with `Allow` and routing; the listener gives the caps,
//! timeouts, TLS and drain every port has.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http_body_util::BodyExt;
use hyper_util::service::TowerToHyperService;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::info;

use crate::listen::{self, Face, Served};

/// Who sent a request, in its extensions: the connection's peer address
/// and what the connection's requests hold now (bytes of bodies being
/// read and handled), for shares per peer and per connection.
#[derive(Debug, Clone)]
pub struct Caller {
    pub addr: std::net::SocketAddr,
    pub holding: Arc<std::sync::atomic::AtomicUsize>,
}

/// Serves `router` on `listener` as `face` until `shutdown` turns true;
/// every request carries its [`Caller`].
pub fn serve_router(
    listener: TcpListener,
    face: Face,
    shutdown: watch::Receiver<bool>,
    router: Router,
) -> Served {
    listen::serve(listener, face, shutdown, move |peer| {
        let caller = Caller {
            addr: peer.addr,
            holding: Arc::default(),
        };
        TowerToHyperService::new(router.clone().layer(axum::Extension(caller)))
    })
}

/// Why a request body was not read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyError {
    /// Larger than the limit (in bytes).
    TooLarge(usize),
    /// Not all there within the time (the caller is slow or stopped).
    TooSlow(Duration),
    /// The connection broke while it arrived.
    Broken(String),
    /// What it holds could not be paid for (a budget of bytes spent).
    Unpaid,
}

impl std::fmt::Display for BodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BodyError::TooLarge(limit) => write!(f, "length limit exceeded: over {limit} bytes"),
            BodyError::TooSlow(within) => {
                write!(f, "it did not arrive within {} s", within.as_secs_f64())
            }
            BodyError::Broken(e) => write!(f, "{e}"),
            BodyError::Unpaid => write!(f, "too many request bodies are being read at once"),
        }
    }
}

/// How much of a body past its limit is read and dropped, so that a caller
/// still sending gets the answer rather than a reset connection.
const MAX_DROPPED_BYTES: usize = 16 * 1024 * 1024;

/// Reads a request body of at most `limit` bytes, all of it within
/// `within`. Past the limit the rest is read and dropped (at most 16 MiB
/// more, within the same time) before the answer, so the caller, still
/// sending, reads the refusal and not a reset. Memory stays at `limit`.
pub async fn read_body(body: Body, limit: usize, within: Duration) -> Result<Bytes, BodyError> {
    read_body_paid(body, limit, within, |_| true).await
}

/// As [`read_body`], paying as the bytes arrive: before keeping each
/// piece, `pay(bytes kept with it)` must say yes, or the read ends with
/// [`BodyError::Unpaid`]. A body that sends nothing costs nothing.
pub async fn read_body_paid(
    body: Body,
    limit: usize,
    within: Duration,
    mut pay: impl FnMut(usize) -> bool,
) -> Result<Bytes, BodyError> {
    let mut body = body;
    let mut read = Vec::new();
    let mut seen = 0usize;
    let outcome = tokio::time::timeout(within, async {
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| BodyError::Broken(e.to_string()))?;
            if let Some(data) = frame.data_ref() {
                seen = seen.saturating_add(data.len());
                if seen <= limit {
                    if !pay(seen) {
                        return Err(BodyError::Unpaid);
                    }
                    read.extend_from_slice(data);
                } else if seen > limit.saturating_add(MAX_DROPPED_BYTES) {
                    break;
                }
            }
        }
        Ok(())
    })
    .await;
    if seen > limit {
        return Err(BodyError::TooLarge(limit));
    }
    match outcome {
        Err(_) => Err(BodyError::TooSlow(within)),
        Ok(Err(e)) => Err(e),
        Ok(Ok(())) => Ok(Bytes::from(read)),
    }
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

/// Whether the request says its body is JSON (`Content-Type:
/// application/json`, parameters such as `charset` allowed, any case).
pub fn sends_json(headers: &axum::http::HeaderMap) -> bool {
    sends(headers, &["application/json"])
}

/// Whether the request's `Content-Type` (its parameters aside) is one of
/// `types`, in any case.
pub fn sends(headers: &axum::http::HeaderMap, types: &[&str]) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|t| types.iter().any(|y| t.trim().eq_ignore_ascii_case(y)))
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio_stream::StreamExt;

    use super::*;

    const TIME: Duration = Duration::from_secs(10);

    /// A body of `chunks` chunks of `size` bytes each, counting what is
    /// pulled from it into `pulled`.
    fn body(size: usize, chunks: usize, pulled: &Arc<AtomicUsize>) -> Body {
        let pulled = pulled.clone();
        Body::from_stream(
            tokio_stream::iter(std::iter::repeat_n(size, chunks)).map(move |n| {
                pulled.fetch_add(n, Ordering::Relaxed);
                Ok::<_, std::io::Error>(Bytes::from(vec![b'x'; n]))
            }),
        )
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_within_its_limit_is_read_whole() {
        let pulled = Arc::new(AtomicUsize::new(0));
        let read = read_body(body(10, 3, &pulled), 30, TIME).await;
        assert_eq!(read.map(|b| b.len()), Ok(30));
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_past_its_limit_is_refused_after_it_is_read_to_its_end() {
        let pulled = Arc::new(AtomicUsize::new(0));
        let read = read_body(body(1024, 100, &pulled), 4096, TIME).await;
        assert_eq!(read, Err(BodyError::TooLarge(4096)));
        assert_eq!(
            pulled.load(Ordering::Relaxed),
            100 * 1024,
            "read to its end"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_endless_body_is_dropped_at_most_16_mib_past_its_limit() {
        let pulled = Arc::new(AtomicUsize::new(0));
        let read = read_body(body(1 << 20, usize::MAX, &pulled), 4096, TIME).await;
        assert_eq!(read, Err(BodyError::TooLarge(4096)));
        let pulled = pulled.load(Ordering::Relaxed);
        assert!(pulled <= 4096 + MAX_DROPPED_BYTES + (1 << 20), "{pulled}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_that_never_ends_is_refused_when_its_time_is_up() {
        let pulled = Arc::new(AtomicUsize::new(0));
        let stalled = body(10, 1, &pulled).into_data_stream();
        let stalled = Body::from_stream(stalled.chain(tokio_stream::pending()));
        let started = tokio::time::Instant::now();
        let read = read_body(stalled, 4096, TIME).await;
        assert_eq!(read, Err(BodyError::TooSlow(TIME)));
        assert_eq!(started.elapsed(), TIME);
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_cut_off_says_why() {
        let broken = tokio_stream::iter([
            Ok(Bytes::from_static(b"{")),
            Err(std::io::Error::other("connection reset")),
        ]);
        let read = read_body(Body::from_stream(broken), 4096, TIME).await;
        assert!(
            matches!(&read, Err(BodyError::Broken(e)) if e.contains("connection reset")),
            "{read:?}"
        );
    }
}
