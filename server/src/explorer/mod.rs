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

mod compare;
mod document;
mod view;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{RawQuery, Request, State};
use axum::http::header::{self, HeaderValue};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use bytes::Bytes;
use purposegate_runtime::http::BodyError;
use serde_json::json;
use tracing::info;

use crate::audit::{DecisionLog, Via};
use crate::engine::{self, DecisionRequest, Evaluation, Matrix, PermittedPurposes, Policy};
use crate::store::PolicyStore;
use document::{form_request, policy_document};
use view::{Form, Page, Tried};

const PAGE_CSS: &str = include_str!("explorer.css");
const PAGE_JS: &str = include_str!("explorer.js");
/// Requests to `/api/check` larger than this are refused.
const MAX_CHECK_BYTES: usize = 64 * 1024;
/// How long a request to `/api/check` may take to arrive.
const CHECK_TIME: std::time::Duration = std::time::Duration::from_secs(10);

/// A revision's matrix, once computed.
type MatrixCell = Arc<tokio::sync::OnceCell<Arc<Matrix>>>;
/// An `/api/policy` body or a page, once written.
type DocumentCell = Arc<tokio::sync::OnceCell<Bytes>>;

/// The largest candidate policy `/api/diff` and `/compare` take: one
/// policy file.
const MAX_CANDIDATE_BYTES: usize = engine::MAX_POLICY_FILE_BYTES;
/// The compare form's body: the candidate, URL-encoded (up to three bytes
/// a byte).
const MAX_COMPARE_FORM_BYTES: usize = 3 * MAX_CANDIDATE_BYTES + 1024;

/// Pages drawn at once: a wide matrix makes a page of megabytes.
const PAGES_AT_ONCE: usize = 2;

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

/// The explorer's state: the store, and the matrix of the serving
/// revision, computed once per revision.
#[derive(Debug)]
pub struct Explorer {
    store: Arc<PolicyStore>,
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
    /// On a loopback address, only requests naming this machine by address
    /// or `localhost` are answered; bound elsewhere on purpose, any name.
    loopback_only: bool,
}

impl Explorer {
    pub fn new(store: Arc<PolicyStore>, log: DecisionLog, loopback_only: bool) -> Self {
        Explorer {
            store,
            log,
            matrix: std::sync::Mutex::new(None),
            document: std::sync::Mutex::new(None),
            page: std::sync::Mutex::new(None),
            drawing: Arc::new(tokio::sync::Semaphore::new(PAGES_AT_ONCE)),
            loopback_only,
        }
    }

    /// The matrix of `policy`, computed once per revision on the blocking
    /// pool, off the threads that answer `Check`.
    ///
    /// The computation is a task of its own: a caller that goes away
    /// (a closed tab, a timed-out client) neither cancels it nor leaves it
    /// orphaned for the next caller to start again.
    async fn matrix_of(&self, policy: &Arc<Policy>) -> Result<Arc<Matrix>, String> {
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
    async fn document_of(
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
    async fn plain_page(
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
    async fn drawn(
        &self,
        render: impl FnOnce() -> Bytes + Send + 'static,
    ) -> Result<Bytes, String> {
        draw(self.drawing.clone(), render).await
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
        let tried = asked.then(|| match form_request(&form) {
            Ok(request) if request.purpose.is_empty() => {
                match self.reverse(&policy, request, "explorer.try") {
                    Ok(permitted) => Tried::Purposes(Box::new(permitted)),
                    Err(invalid) => Tried::Invalid(invalid.to_string()),
                }
            }
            Ok(request) => match request.validate() {
                Ok(()) => Tried::Answer(Box::new(self.decide(&policy, request, "explorer.try"))),
                Err(invalid) => Tried::Invalid(invalid.to_string()),
            },
            Err(problem) => Tried::Invalid(problem),
        });
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
        json_reply(&self.decide(&self.store.current(), request, "explorer.api.check"))
    }

    /// Decides `request` on `policy` (the serving one) and logs it.
    fn decide(&self, policy: &Policy, request: DecisionRequest, face: &'static str) -> Evaluation {
        let start = std::time::Instant::now();
        let answer = policy.evaluate(&request);
        let reason = answer.reason.to_string();
        self.log
            .record(Via::face(face), request, &answer, reason, start.elapsed());
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

    /// Compares `candidate` (a policy's text) with the serving policy on
    /// the blocking pool, a few at a time: the diff and the candidate's
    /// matrix, or the candidate's diagnostics.
    async fn compare(&self, candidate: String) -> Result<compare::Outcome, String> {
        let serving = self.store.current();
        let place = self
            .drawing
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| format!("the comparison could not be made: {e}"))?;
        // The place goes with the work, as for pages: a caller that gives
        // up does not let another comparison start beside this one.
        tokio::task::spawn_blocking(move || {
            let _place = place;
            match Policy::parse("candidate.yaml", &candidate) {
                Err(diagnostics) => compare::Outcome::Invalid(
                    diagnostics
                        .iter()
                        .take(engine::MAX_SHOWN)
                        .map(ToString::to_string)
                        .collect(),
                ),
                Ok(policy) => compare::Outcome::Compared {
                    diff: Box::new(serving.diff(&policy)),
                    candidate: Box::new(policy.matrix()),
                },
            }
        })
        .await
        .map_err(|e| format!("the comparison could not be made: {e}"))
    }

    /// `GET /compare` (no candidate) and `POST /compare` (the form).
    async fn compare_page(&self, req: Option<Request>) -> Response {
        let serving = self.store.current();
        let (candidate, outcome) = match req {
            None => (String::new(), compare::Outcome::Empty),
            Some(req) => {
                // A form any site could post: only this page's own.
                let cross_site = req
                    .headers()
                    .get("sec-fetch-site")
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|site| site != "same-origin" && site != "none");
                if cross_site {
                    return error(
                        StatusCode::FORBIDDEN,
                        "the compare form is answered only when it is sent from this page",
                    );
                }
                if !purposegate_runtime::http::sends(
                    req.headers(),
                    &["application/x-www-form-urlencoded"],
                ) {
                    return error(
                        StatusCode::UNSUPPORTED_MEDIA_TYPE,
                        "send the form as `application/x-www-form-urlencoded`",
                    );
                }
                let body = match read_limited(req, MAX_COMPARE_FORM_BYTES).await {
                    Ok(body) => body,
                    Err(refused) => return refused,
                };
                let candidate = form_urlencoded::parse(&body)
                    .find(|(k, _)| k == "policy")
                    .map(|(_, v)| v.into_owned())
                    .unwrap_or_default();
                let outcome = if candidate.trim().is_empty() {
                    compare::Outcome::Invalid(vec!["the form's `policy` is empty".into()])
                } else {
                    match self.compare(candidate.clone()).await {
                        Ok(outcome) => outcome,
                        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, &e),
                    }
                };
                (candidate, outcome)
            }
        };
        let html = compare::render(serving.name(), serving.revision(), &candidate, &outcome);
        let mut response = reply(
            StatusCode::OK,
            "text/html; charset=utf-8",
            Bytes::from(html),
        );
        response.headers_mut().insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(
                "default-src 'none'; style-src 'self'; form-action 'self'; img-src 'self'",
            ),
        );
        response
    }

    /// `POST /api/diff`: the candidate as YAML; the diff as JSON.
    async fn diff_json(&self, req: Request) -> Response {
        // A YAML type is not one a page on another site may send without
        // asking first (CORS preflight), which this server never grants.
        if !purposegate_runtime::http::sends(
            req.headers(),
            &["application/yaml", "application/x-yaml", "text/yaml"],
        ) {
            return error(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "send the candidate policy as `Content-Type: application/yaml`",
            );
        }
        let body = match read_limited(req, MAX_CANDIDATE_BYTES).await {
            Ok(body) => body,
            Err(refused) => return refused,
        };
        let Ok(text) = String::from_utf8(body.to_vec()) else {
            return error(StatusCode::BAD_REQUEST, "the candidate policy is not UTF-8");
        };
        match self.compare(text).await {
            Ok(compare::Outcome::Compared { diff, .. }) => json_reply(&diff),
            Ok(compare::Outcome::Invalid(diagnostics)) => reply(
                StatusCode::BAD_REQUEST,
                "application/json",
                Bytes::from(
                    json!({
                        "error": "the candidate policy is invalid",
                        "diagnostics": diagnostics,
                    })
                    .to_string(),
                ),
            ),
            Ok(compare::Outcome::Empty) => error(StatusCode::BAD_REQUEST, "no candidate policy"),
            Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e),
        }
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

/// A `CheckRequest` in its JSON form, sent as `application/json` within
/// [`MAX_CHECK_BYTES`] and [`CHECK_TIME`]; otherwise the answer refusing it.
async fn read_request(req: Request) -> Result<engine::DecisionRequest, Response> {
    // JSON only: a page on another site cannot send it without asking
    // first (CORS preflight), which this server never grants.
    let json = purposegate_runtime::http::sends_json(req.headers());
    if !json {
        return Err(error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "send the request as `Content-Type: application/json`",
        ));
    }
    let body = read_limited(req, MAX_CHECK_BYTES).await?;
    engine::request_from_json_text("request", &body)
        .map_err(|diagnostics| error(StatusCode::BAD_REQUEST, &diagnostics.to_string()))
}

/// A request's body within `limit` bytes and [`CHECK_TIME`]; otherwise
/// the answer refusing it.
async fn read_limited(req: Request, limit: usize) -> Result<Bytes, Response> {
    match purposegate_runtime::http::read_body(req.into_body(), limit, CHECK_TIME).await {
        Ok(body) => Ok(body),
        Err(BodyError::TooLarge(_)) => Err(error(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("the request is over {limit} bytes"),
        )),
        Err(e @ BodyError::TooSlow(_)) => Err(error(
            StatusCode::REQUEST_TIMEOUT,
            &format!("the request: {e}"),
        )),
        Err(e) => Err(error(
            StatusCode::BAD_REQUEST,
            &format!("the request body could not be read: {e}"),
        )),
    }
}

fn json_reply(answer: &impl serde::Serialize) -> Response {
    match serde_json::to_vec(answer) {
        Ok(body) => reply(StatusCode::OK, "application/json", Bytes::from(body)),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("cannot encode the answer: {e}"),
        ),
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

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut response = reply(
        StatusCode::OK,
        content_type,
        Bytes::from_static(body.as_bytes()),
    );
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

fn reply(status: StatusCode, content_type: &'static str, body: Bytes) -> Response {
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

fn not_allowed(allow: &'static str) -> Response {
    let mut response = error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    response
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

fn error(status: StatusCode, message: &str) -> Response {
    reply(
        status,
        "application/json",
        Bytes::from(json!({ "error": message }).to_string()),
    )
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
    log: DecisionLog,
    refused: prometheus_client::metrics::counter::Counter,
) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    info!(admin_addr = %bound, "serving the policy explorer on http://{bound}/");
    let explorer = Arc::new(Explorer::new(store, log, bound.ip().is_loopback()));
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
