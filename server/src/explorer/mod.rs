//! The policy explorer on `--admin-listen` (default `127.0.0.1:9091`, off
//! the public port): a page for privacy officers and auditors showing what
//! the serving policy allows, and the JSON behind it.
//!
//! - `GET /`: the page, rendered here from the policy and its matrix
//!   (readable without JavaScript; `explorer.js` only reloads it when the
//!   revision changes). With the try form's fields in the query, the page
//!   carries the decision for that request.
//! - `GET /api/policy`: name, revision, trees, rules, claims, the matrix and
//!   the last reload error, as JSON; its `ETag` is the revision (and the
//!   reload error), so polling with `If-None-Match` costs a 304.
//! - `POST /api/check`: a `CheckRequest` in its JSON form (as the CLI's
//!   `check` reads it); the answer `Check` gives, in its JSON form.
//! - `POST /api/permitted-purposes`: the same request without a purpose;
//!   the purposes `Check` would permit, as `PermittedPurposes` names them.
//! - `GET /compare`, `POST /compare` (the form) and `POST /api/diff` (a
//!   candidate policy as `application/yaml`): what the candidate changes
//!   against the serving policy, cell by cell with example requests
//!   (`compare.rs`; the engine's `Policy::diff`). The candidate is only
//!   evaluated, never served; comparisons are drawn two at a time on the
//!   blocking pool, as pages are.
//!
//! Everything is embedded in the binary; nothing is fetched at run time.

mod cache;
mod candidate;
mod compare;
mod document;
mod reply;
mod view;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{RawQuery, Request, State};
use axum::http::header::{self, HeaderValue};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use bytes::Bytes;
use tracing::info;

use crate::audit::{DecisionLog, Via};
use crate::engine::{DecisionRequest, Evaluation, Matrix, PermittedPurposes, Policy};
use crate::store::PolicyStore;
use document::form_request;
use reply::{asset, error, json_reply, not_allowed, read_request, reply};
use view::{Form, Page, Tried};

const PAGE_CSS: &str = include_str!("explorer.css");
const PAGE_JS: &str = include_str!("explorer.js");

/// A revision's matrix, once computed.
type MatrixCell = Arc<tokio::sync::OnceCell<Arc<Matrix>>>;
/// An `/api/policy` body or a page, once written.
type DocumentCell = Arc<tokio::sync::OnceCell<Bytes>>;

/// Pages drawn at once: a wide matrix makes a page of megabytes.
const PAGES_AT_ONCE: usize = 2;

/// The explorer's state: the store, and the matrix of the serving
/// revision, computed once per revision.
#[derive(Debug)]
pub struct Explorer {
    store: Arc<PolicyStore>,
    /// What tenants configured and data subjects said, read for every
    /// question as `Check` reads them.
    choices: Arc<dyn crate::choices::ChoicesStore>,
    /// Every question the explorer answers on the serving policy is
    /// written here, as the API's are.
    log: DecisionLog,
    /// The matrix of one revision, being computed or computed: concurrent
    /// page loads after a reload wait for one computation instead of each
    /// starting their own.
    matrix: std::sync::Mutex<Option<(Arc<str>, MatrixCell)>>,
    /// The `/api/policy` body of one ETag, written once.
    document: std::sync::Mutex<Option<(String, DocumentCell)>>,
    /// The page without a tried request, of one ETag, drawn once.
    page: std::sync::Mutex<Option<(String, DocumentCell)>>,
    /// Pages drawn at once.
    drawing: Arc<tokio::sync::Semaphore>,
    /// Choices store reads at once, off the async workers.
    reads: Arc<tokio::sync::Semaphore>,
    /// On a loopback address, only requests naming this machine by address
    /// or `localhost` are answered; bound elsewhere on purpose, any name.
    loopback_only: bool,
}

impl Explorer {
    pub fn new(
        store: Arc<PolicyStore>,
        choices: Arc<dyn crate::choices::ChoicesStore>,
        log: DecisionLog,
        loopback_only: bool,
    ) -> Self {
        Explorer {
            store,
            choices,
            log,
            matrix: std::sync::Mutex::new(None),
            document: std::sync::Mutex::new(None),
            page: std::sync::Mutex::new(None),
            drawing: Arc::new(tokio::sync::Semaphore::new(PAGES_AT_ONCE)),
            reads: Arc::new(tokio::sync::Semaphore::new(PAGES_AT_ONCE)),
            loopback_only,
        }
    }

    async fn page(&self, query: &str) -> Response {
        // One read of the store: the ETag, the body and the reload error
        // all describe the same moment.
        let policy = self.store.current();
        let reload_error = self.store.last_reload_error();
        let matrix = match self.matrix_of(&policy).await {
            Ok(matrix) => matrix,
            Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, &e),
        };
        let form = Form {
            fields: form_urlencoded::parse(query.as_bytes())
                .map(|(k, v)| (k.into_owned(), v.trim().to_string()))
                .collect(),
        };
        // A purpose asks `Check`'s question; none (with a category chosen:
        // the form was sent) asks the reverse one.
        let asked = !form.get("purpose").is_empty() || !form.get("category").is_empty();
        let tried = match asked.then(|| form_request(&form)) {
            None => None,
            Some(Ok(request)) if request.purpose.is_empty() => {
                Some(match self.reverse(&policy, request, "explorer.try") {
                    Ok(permitted) => Tried::Purposes(Box::new(permitted)),
                    Err(invalid) => Tried::Invalid(invalid.to_string()),
                })
            }
            Some(Ok(request)) => Some(match request.validate() {
                Ok(()) => Tried::Answer(Box::new(
                    self.decide(&policy, request, "explorer.try").await,
                )),
                Err(invalid) => Tried::Invalid(invalid.to_string()),
            }),
            Some(Err(problem)) => Some(Tried::Invalid(problem)),
        };
        let etag = etag(&policy, &reload_error);
        let render = move || -> Bytes {
            Bytes::from(
                Page {
                    policy: &policy,
                    matrix: &matrix,
                    etag: &etag,
                    last_reload_error: &reload_error,
                    form: &form,
                    tried: tried.as_ref(),
                }
                .render(),
            )
        };
        // The plain page is drawn once per revision and shared; a page with
        // a tried request is drawn for it, a few at a time, off the
        // threads that answer `Check`.
        let html = if query.is_empty() {
            self.plain_page(render).await
        } else {
            self.drawn(render).await
        };
        let html = match html {
            Ok(html) => html,
            Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, &e),
        };
        let mut response = reply(StatusCode::OK, "text/html; charset=utf-8", html);
        response.headers_mut().insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(
                "default-src 'none'; style-src 'self'; script-src 'self'; connect-src 'self'; form-action 'self'; img-src 'self'",
            ),
        );
        response
    }

    async fn policy_json(&self, headers: &HeaderMap) -> Response {
        let policy = self.store.current();
        let reload_error = self.store.last_reload_error();
        let etag = etag(&policy, &reload_error);
        let unchanged = headers
            .get(header::IF_NONE_MATCH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v == etag);
        let mut response = if unchanged {
            reply(StatusCode::NOT_MODIFIED, "application/json", Bytes::new())
        } else {
            match self.document_of(&policy, &reload_error, &etag).await {
                Ok(body) => reply(StatusCode::OK, "application/json", body),
                Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, &e),
            }
        };
        if let Ok(value) = HeaderValue::from_str(&etag) {
            response.headers_mut().insert(header::ETAG, value);
        }
        response
    }

    async fn check(&self, req: Request) -> Response {
        let request = match read_request(req).await {
            Ok(request) => request,
            Err(refused) => return refused,
        };
        if let Err(invalid) = request.validate() {
            return error(
                StatusCode::BAD_REQUEST,
                &format!("invalid request: {invalid}"),
            );
        }
        json_reply(
            &self
                .decide(&self.store.current(), request, "explorer.api.check")
                .await,
        )
    }

    /// Decides `request` on `policy` (the serving one) and logs it; the
    /// choices it needs found as `Check` finds them, off the async workers.
    async fn decide(
        &self,
        policy: &Policy,
        request: DecisionRequest,
        face: &'static str,
    ) -> Evaluation {
        let start = std::time::Instant::now();
        let facts = if policy.choices().is_empty() {
            crate::engine::ChoiceFacts::none()
        } else {
            crate::choices::facts_off_worker(
                &self.choices,
                &self.reads,
                &request,
                crate::choices::CHOICES_WITHIN,
            )
            .await
            .unwrap_or_else(|unread| unread)
        };
        let answer = policy.evaluate_with(&request, &facts);
        let reason = answer.reason.to_string();
        self.log.record(
            Via::face(face),
            request,
            &answer,
            reason,
            start.elapsed(),
            0,
        );
        answer
    }

    /// The reverse question on `policy` (the serving one), logged.
    fn reverse(
        &self,
        policy: &Policy,
        request: DecisionRequest,
        face: &'static str,
    ) -> Result<PermittedPurposes, crate::engine::InvalidRequest> {
        let start = std::time::Instant::now();
        let answer = policy.permitted_purposes(&request)?;
        self.log
            .record_permitted(Via::face(face), request, &answer, start.elapsed());
        Ok(answer)
    }

    /// The reverse question: the request without a purpose, the purposes
    /// `Check` would permit for it.
    async fn permitted_purposes(&self, req: Request) -> Response {
        let request = match read_request(req).await {
            Ok(request) => request,
            Err(refused) => return refused,
        };
        let serving = self.store.current();
        match self.reverse(&serving, request, "explorer.api.permitted-purposes") {
            Ok(permitted) => json_reply(&permitted),
            Err(invalid) => error(
                StatusCode::BAD_REQUEST,
                &format!("invalid request: {invalid}"),
            ),
        }
    }
}

/// The validator of what `/` and `/api/policy` show: the revision, and the
/// reload error if there is one.
fn etag(policy: &Policy, reload_error: &str) -> String {
    if reload_error.is_empty() {
        format!("\"{}\"", policy.revision())
    } else {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::hash::DefaultHasher::new();
        reload_error.hash(&mut hasher);
        format!("\"{}-e{:x}\"", policy.revision(), hasher.finish())
    }
}

/// Whether the Host header names this machine by address or `localhost`
/// (absent: an HTTP/1.0 client on a socket, allowed).
fn local_host(req: &Request) -> bool {
    let Some(host) = req
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
    else {
        return req.headers().get(header::HOST).is_none();
    };
    let name = match host.rsplit_once(':') {
        Some((name, port)) if port.chars().all(|c| c.is_ascii_digit()) => name,
        _ => host,
    };
    let name = name.trim_start_matches('[').trim_end_matches(']');
    name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::IpAddr>().is_ok()
}

/// The explorer's pages and API as a router. When it serves on a loopback
/// address, every request must name the machine in its Host header first.
fn router(explorer: Arc<Explorer>) -> Router {
    let page_only = || async { not_allowed("GET, HEAD") };
    let loopback_only = explorer.loopback_only;
    Router::new()
        .route(
            "/",
            get(
                |State(explorer): State<Arc<Explorer>>, RawQuery(query): RawQuery| async move {
                    explorer.page(query.as_deref().unwrap_or("")).await
                },
            )
            .fallback(page_only),
        )
        .route(
            "/explorer.css",
            get(|| async { asset("text/css; charset=utf-8", PAGE_CSS) }).fallback(page_only),
        )
        .route(
            "/explorer.js",
            get(|| async { asset("text/javascript; charset=utf-8", PAGE_JS) }).fallback(page_only),
        )
        .route(
            "/api/policy",
            get(
                |State(explorer): State<Arc<Explorer>>, headers: HeaderMap| async move {
                    explorer.policy_json(&headers).await
                },
            )
            .fallback(page_only),
        )
        // Browsers ask; there is none.
        .route(
            "/favicon.ico",
            get(|| async { reply(StatusCode::NO_CONTENT, "image/x-icon", Bytes::new()) })
                .fallback(page_only),
        )
        .route(
            "/api/check",
            post(
                |State(explorer): State<Arc<Explorer>>, req: Request| async move {
                    explorer.check(req).await
                },
            )
            .fallback(|| async { not_allowed("POST") }),
        )
        .route(
            "/api/permitted-purposes",
            post(
                |State(explorer): State<Arc<Explorer>>, req: Request| async move {
                    explorer.permitted_purposes(req).await
                },
            )
            .fallback(|| async { not_allowed("POST") }),
        )
        .route(
            "/compare",
            get(|State(explorer): State<Arc<Explorer>>| async move {
                explorer.compare_page(None).await
            })
            .post(
                |State(explorer): State<Arc<Explorer>>, req: Request| async move {
                    explorer.compare_page(Some(req)).await
                },
            )
            .fallback(|| async { not_allowed("GET, HEAD, POST") }),
        )
        .route(
            "/api/diff",
            post(
                |State(explorer): State<Arc<Explorer>>, req: Request| async move {
                    explorer.diff_json(req).await
                },
            )
            .fallback(|| async { not_allowed("POST") }),
        )
        .fallback(|uri: Uri| async move {
            error(
                StatusCode::NOT_FOUND,
                &format!("no page at `{}`", uri.path()),
            )
        })
        .with_state(explorer)
        .layer(middleware::from_fn_with_state(loopback_only, named_host))
}

/// A page on another site that rebinds its own name to this address would
/// otherwise read the policy (DNS rebinding).
async fn named_host(State(loopback_only): State<bool>, req: Request, next: Next) -> Response {
    if loopback_only && !local_host(&req) {
        return error(
            StatusCode::MISDIRECTED_REQUEST,
            "the explorer answers only to an IP address or `localhost` in the Host header",
        );
    }
    next.run(req).await
}

/// Serves the explorer on `addr` until the process ends; the bound address.
pub async fn serve(
    addr: SocketAddr,
    store: Arc<PolicyStore>,
    choices: Arc<dyn crate::choices::ChoicesStore>,
    log: DecisionLog,
    refused: prometheus_client::metrics::counter::Counter,
) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    info!(admin_addr = %bound, "serving the policy explorer on http://{bound}/");
    let explorer = Arc::new(Explorer::new(store, choices, log, bound.ip().is_loopback()));
    let face = purposegate_runtime::listen::Face {
        name: "explorer",
        limits: purposegate_runtime::listen::Limits::default(),
        protocols: purposegate_runtime::listen::Protocols::Http1,
        tls: None,
        refused,
    };
    purposegate_runtime::http::serve_router(
        listener,
        face,
        purposegate_runtime::listen::never(),
        router(explorer),
    );
    Ok(bound)
}
