//! OpenID AuthZEN Authorization API 1.0 over HTTP on `--authzen-listen`
//! (default `0.0.0.0:8181`; HTTP/1.1 and h2c, or TLS with the server's TLS
//! flags), for gateways and SDKs that speak AuthZEN rather than gRPC.
//!
//! - `POST /access/v1/evaluation`: one decision.
//! - `POST /access/v1/evaluations`: many, with top-level defaults and
//!   `options.evaluations_semantic`.
//! - `POST /access/v1/search/action`: the purposes a resource may serve
//!   (`PermittedPurposes`), paged.
//! - `GET /.well-known/authzen-configuration`: the metadata.
//!
//! Every decision goes through the same [`Decider`] as gRPC `Check`: the
//! same decision log line, metrics and span. The mapping of fields is in
//! [`mapping`]. A deny is `200 {"decision": false}`; HTTP errors are only
//! for requests that cannot be read (400 with a plain message naming what
//! was wrong, 413 past the body limit).

pub mod mapping;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use base64::Engine as _;
use bytes::Bytes;
use opentelemetry::KeyValue;
use opentelemetry::trace::Span as _;
use opentelemetry_sdk::trace::Span;
use purposegate_runtime::http::BodyError;
use purposegate_runtime::listen::{Face, Served};
use serde_json::{Map, Value};
use tokio::sync::watch;
use tracing::info;

use crate::audit::Via;
use crate::decide::Decider;
use crate::engine;
use mapping::{Asked, Problem, Semantic, Source};

/// How long a request body may take to arrive.
const BODY_TIME: Duration = Duration::from_secs(10);
/// Requests read and decided at once; each holds its body and its parsed
/// JSON (a few times the body), so memory stays bounded in bytes:
/// at most this many times `--authzen-max-body`, and some.
const REQUESTS_AT_ONCE: usize = 32;
const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

pub const EVALUATION: &str = "/access/v1/evaluation";
pub const EVALUATIONS: &str = "/access/v1/evaluations";
pub const SEARCH_ACTION: &str = "/access/v1/search/action";
pub const METADATA: &str = "/.well-known/authzen-configuration";

/// What the metadata declares beyond the endpoints: purposegate's own
/// capabilities (no capability is registered with IANA yet).
const CAPABILITIES: [&str; 2] = [
    // Actions are purposes of a tree: a permit of a purpose covers its
    // descendants, a prohibition of an ancestor or descendant counts too.
    "urn:purposegate:capability:purpose-tree",
    // Action search answers which purposes a resource may serve.
    "urn:purposegate:capability:permitted-purposes",
];

/// The AuthZEN face of the server.
#[derive(Debug)]
pub struct AuthZen {
    decider: Decider,
    max_batch: usize,
    max_body: usize,
    /// `--authzen-base-url`, without a trailing slash.
    base_url: Option<String>,
    /// Whether the listener speaks TLS: the scheme of a base URL made from
    /// the Host header.
    tls: bool,
    places: Arc<tokio::sync::Semaphore>,
}

impl AuthZen {
    pub fn new(
        decider: Decider,
        max_batch: usize,
        max_body: usize,
        base_url: Option<String>,
        tls: bool,
    ) -> Self {
        AuthZen {
            decider,
            max_batch,
            max_body,
            base_url,
            tls,
            places: Arc::new(tokio::sync::Semaphore::new(REQUESTS_AT_ONCE)),
        }
    }
}

/// Checks `--authzen-base-url`: an absolute `http` or `https` URL without
/// query or fragment; returned without a trailing slash.
pub fn parse_base_url(s: &str) -> Result<String, String> {
    let bad = |why: &str| format!("`{s}` is not a base URL for AuthZEN: {why}");
    let uri: axum::http::Uri = s.parse().map_err(|e| bad(&format!("{e}")))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => return Err(bad("it must start with https:// (or http://)")),
    }
    if uri.authority().is_none() {
        return Err(bad("it names no host"));
    }
    if uri.query().is_some() || s.contains('#') {
        return Err(bad("it must have no query or fragment"));
    }
    Ok(s.trim_end_matches('/').to_string())
}

/// Serves AuthZEN on `listener` as `face` until `shutdown`.
pub fn serve(
    listener: tokio::net::TcpListener,
    face: Face,
    shutdown: watch::Receiver<bool>,
    authzen: Arc<AuthZen>,
) -> std::io::Result<Served> {
    let bound: SocketAddr = listener.local_addr()?;
    let scheme = if face.tls.is_some() { "https" } else { "http" };
    info!(authzen_addr = %bound, "serving AuthZEN 1.0 on {scheme}://{bound}/");
    Ok(purposegate_runtime::http::serve_router(
        listener,
        face,
        shutdown,
        router(authzen),
    ))
}

fn router(authzen: Arc<AuthZen>) -> Router {
    let post_only = || async { not_allowed("POST") };
    Router::new()
        .route(
            EVALUATION,
            post(|State(az): State<Arc<AuthZen>>, req: Request| async move {
                az.answer(req, EVALUATION, AuthZen::evaluation).await
            })
            .fallback(post_only),
        )
        .route(
            EVALUATIONS,
            post(|State(az): State<Arc<AuthZen>>, req: Request| async move {
                az.answer(req, EVALUATIONS, AuthZen::evaluations).await
            })
            .fallback(post_only),
        )
        .route(
            SEARCH_ACTION,
            post(|State(az): State<Arc<AuthZen>>, req: Request| async move {
                az.answer(req, SEARCH_ACTION, AuthZen::search_action).await
            })
            .fallback(post_only),
        )
        .route(
            METADATA,
            get(|State(az): State<Arc<AuthZen>>, req: Request| async move { az.metadata(&req) })
                .fallback(|| async { not_allowed("GET, HEAD") }),
        )
        .fallback(|req: Request| async move {
            plain(
                StatusCode::NOT_FOUND,
                &format!(
                    "no AuthZEN endpoint at `{}`; see {METADATA}",
                    req.uri().path()
                ),
            )
        })
        .with_state(authzen)
        .layer(middleware::from_fn(echo_request_id))
}

/// The caller's `X-Request-ID`, checked: once, visible ASCII, short.
#[derive(Debug, Clone, Default)]
struct RequestId(String);

/// Reads `X-Request-ID` and echoes it on the answer, whatever the answer.
async fn echo_request_id(mut req: Request, next: Next) -> Response {
    let mut given = req.headers().get_all(&X_REQUEST_ID).iter();
    let first = given.next().cloned();
    if given.next().is_some() {
        return plain(
            StatusCode::BAD_REQUEST,
            "`X-Request-ID` is given more than once; send it once",
        );
    }
    let Some(value) = first else {
        return next.run(req).await;
    };
    let text = match value.to_str() {
        Ok(text) if text.len() <= engine::MAX_ID_BYTES => text.to_string(),
        Ok(_) => {
            return plain(
                StatusCode::BAD_REQUEST,
                &format!("`X-Request-ID` is over {} bytes", engine::MAX_ID_BYTES),
            );
        }
        Err(_) => {
            return plain(
                StatusCode::BAD_REQUEST,
                "`X-Request-ID` must be visible ASCII",
            );
        }
    };
    req.extensions_mut().insert(RequestId(text));
    let mut response = next.run(req).await;
    response.headers_mut().insert(X_REQUEST_ID, value);
    response
}

/// A body that is not an answer: a problem with the request, or the
/// server's.
#[derive(Debug)]
struct Refusal {
    status: StatusCode,
    message: String,
}

impl Refusal {
    fn bad(message: impl Into<String>) -> Self {
        Refusal {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
        }
    }
}

impl From<Problem> for Refusal {
    fn from(p: Problem) -> Self {
        Refusal::bad(p.0)
    }
}

/// A request of an endpoint, read: its JSON object and what came with it.
#[derive(Debug)]
struct Call {
    body: Map<String, Value>,
    request_id: String,
    start: Instant,
}

type Handler = fn(&AuthZen, Call, Option<&mut Span>) -> Result<Bytes, Refusal>;

impl AuthZen {
    /// Reads the request as JSON and answers it with `handler`, in a span
    /// of its own (a child of the caller's trace).
    async fn answer(&self, req: Request, route: &'static str, handler: Handler) -> Response {
        let start = Instant::now();
        let mut span = self
            .decider
            .telemetry()
            .map(|t| t.http_span("POST", route, req.headers()));
        let answer = match self.read(req, start).await {
            Ok(call) => handler(self, call, span.as_mut()),
            Err(refusal) => Err(refusal),
        };
        match answer {
            Ok(body) => {
                self.decider.metrics().answered(start.elapsed());
                reply(StatusCode::OK, "application/json", body)
            }
            Err(refusal) => {
                if let Some(span) = span.as_mut() {
                    span.set_status(opentelemetry::trace::Status::error(refusal.message.clone()));
                    span.set_attribute(KeyValue::new(
                        "http.response.status_code",
                        i64::from(refusal.status.as_u16()),
                    ));
                }
                plain(refusal.status, &refusal.message)
            }
        }
    }

    /// The body as a JSON object, sent as `application/json` within the
    /// body limit and time.
    async fn read(&self, req: Request, start: Instant) -> Result<Call, Refusal> {
        let json = purposegate_runtime::http::sends_json(req.headers());
        if !json {
            return Err(Refusal::bad(
                "send the request as `Content-Type: application/json`",
            ));
        }
        let request_id = req
            .extensions()
            .get::<RequestId>()
            .cloned()
            .unwrap_or_default()
            .0;
        // A place among the requests read at once, waited for no longer
        // than a body may take to arrive.
        let _place = tokio::time::timeout(BODY_TIME, self.places.clone().acquire_owned())
            .await
            .ok()
            .and_then(Result::ok)
            .ok_or(Refusal {
                status: StatusCode::SERVICE_UNAVAILABLE,
                message: "too many AuthZEN requests at once; try again".to_string(),
            })?;
        let bytes = purposegate_runtime::http::read_body(req.into_body(), self.max_body, BODY_TIME)
            .await
            .map_err(|e| match e {
                BodyError::TooLarge(limit) => Refusal {
                    status: StatusCode::PAYLOAD_TOO_LARGE,
                    message: format!("the request body is over {limit} bytes (--authzen-max-body)"),
                },
                BodyError::TooSlow(_) => Refusal {
                    status: StatusCode::REQUEST_TIMEOUT,
                    message: format!("the request body: {e}"),
                },
                BodyError::Broken(_) => {
                    Refusal::bad(format!("the request body could not be read: {e}"))
                }
            })?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Err(Refusal::bad(
                "the request body is empty; send a JSON object",
            ));
        }
        let body = match engine::json::parse_strict(&bytes) {
            Ok(Value::Object(body)) => body,
            Ok(other) => {
                return Err(Refusal::bad(format!(
                    "the request body must be a JSON object, not {}",
                    match other {
                        Value::Array(_) => "an array",
                        Value::String(_) => "a string",
                        Value::Number(_) => "a number",
                        Value::Bool(_) => "a boolean",
                        _ => "null",
                    }
                )));
            }
            Err(e) => return Err(Refusal::bad(format!("the request body is not JSON: {e}"))),
        };
        Ok(Call {
            body,
            request_id,
            start,
        })
    }

    /// One evaluation read from `src`, decided on `policy` (or why it could
    /// not be).
    fn decide(
        &self,
        policy: &engine::Policy,
        src: Source<'_>,
        call: &Call,
        span: Option<&mut Span>,
        face: &'static str,
    ) -> Result<mapping::Answer, Refusal> {
        let req = mapping::request(src, Asked::Evaluation, &call.request_id)?;
        req.validate()
            .map_err(|invalid| Refusal::bad(invalid.to_string()))?;
        let via = Via {
            face,
            subject_type: Some(mapping::subject_type(src)?),
        };
        let decided = self.decider.decide(policy, req, call.start, span, via);
        Ok(mapping::decision(&decided.evaluation, &decided.reason))
    }

    fn evaluation(&self, call: Call, span: Option<&mut Span>) -> Result<Bytes, Refusal> {
        let policy = self.decider.policy();
        let src = Source::alone(&call.body);
        let answer = self.decide(&policy, src, &call, span, "authzen.evaluation")?;
        encode(&answer)
    }

    fn evaluations(&self, call: Call, span: Option<&mut Span>) -> Result<Bytes, Refusal> {
        let semantic = Semantic::of(&call.body)?;
        let items = match call.body.get("evaluations") {
            None | Some(Value::Null) => None,
            Some(Value::Array(items)) if items.is_empty() => None,
            Some(Value::Array(items)) => Some(items),
            Some(_) => return Err(Refusal::bad("`evaluations` must be an array")),
        };
        // None or empty: the single evaluation, answered as one.
        let Some(items) = items else {
            return self.evaluation(call, span);
        };
        self.decider.metrics().batch(items.len());
        if let Some(span) = span {
            span.set_attribute(KeyValue::new(
                "purposegate.batch_size",
                i64::try_from(items.len()).unwrap_or(i64::MAX),
            ));
        }
        if items.len() > self.max_batch {
            return Err(Refusal::bad(format!(
                "`evaluations` holds {} evaluations; at most {} are accepted (--max-batch)",
                items.len(),
                self.max_batch
            )));
        }
        // One policy for the whole batch: every answer has the same revision.
        let policy = self.decider.policy();
        let mut answers = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            // The item's path is written only for an item that is not an
            // object: nothing is formatted per item on the way to a decision.
            let answer = match item.as_object() {
                None => {
                    mapping::failed(&mapping::not_an_object(item, &format!("evaluations[{i}]")).0)
                }
                Some(item) => {
                    let src = Source {
                        item,
                        defaults: Some(&call.body),
                    };
                    self.decide(&policy, src, &call, None, "authzen.evaluations")
                        .unwrap_or_else(|refusal| mapping::failed(&refusal.message))
                }
            };
            let decision = answer.decision;
            answers.push(answer);
            if semantic.stops_at(decision) {
                break;
            }
        }
        encode(&Evaluations {
            evaluations: answers,
        })
    }

    fn search_action(&self, call: Call, span: Option<&mut Span>) -> Result<Bytes, Refusal> {
        let req = mapping::request(
            Source::alone(&call.body),
            Asked::ActionSearch,
            &call.request_id,
        )?;
        let page = Page::of(&call.body)?;
        let via = Via {
            face: "authzen.search.action",
            subject_type: Some(mapping::subject_type(Source::alone(&call.body))?),
        };
        let permitted = self
            .decider
            .permitted_purposes(&req, span, via)
            .map_err(|invalid| Refusal::bad(invalid.to_string()))?;
        let fingerprint = fingerprint(&call.body);
        let (offset, limit) = match &page.token {
            None => (0, page.limit),
            Some(token) => {
                let (offset, limit) = read_token(token, fingerprint)?;
                if page.limit.is_some_and(|l| l != limit) {
                    return Err(Refusal::bad(format!(
                        "`page.limit` must stay {limit}, as on the first page, while `page.token` continues it"
                    )));
                }
                (offset, Some(limit))
            }
        };
        let total = permitted.purposes.len();
        let end = match limit {
            None => total,
            Some(limit) => offset.saturating_add(limit).min(total),
        };
        let shown = permitted
            .purposes
            .get(offset.min(total)..end.max(offset.min(total)))
            .unwrap_or_default();
        let next_token = match limit {
            Some(limit) if end < total && limit > 0 => write_token(end, limit, fingerprint),
            _ => String::new(),
        };
        let results: Vec<mapping::Action> = shown.iter().map(mapping::action).collect();
        encode(&SearchResults {
            page: PageOut {
                next_token,
                count: results.len(),
                total,
            },
            results,
            context: SearchContext {
                policy_revision: permitted.policy_revision.clone(),
                ttl_seconds: permitted.ttl_seconds,
            },
        })
    }

    /// The PDP metadata: the endpoints under the base URL, the
    /// capabilities, the obligation types answers carry.
    fn metadata(&self, req: &Request) -> Response {
        let base = match &self.base_url {
            Some(base) => base.clone(),
            None => match host(req) {
                Some(host) => {
                    let scheme = if self.tls { "https" } else { "http" };
                    format!("{scheme}://{host}")
                }
                None => {
                    return plain(
                        StatusCode::BAD_REQUEST,
                        "the request names no valid host (Host header); or start the server with --authzen-base-url",
                    );
                }
            },
        };
        let document = Metadata {
            access_evaluation_endpoint: format!("{base}{EVALUATION}"),
            access_evaluations_endpoint: format!("{base}{EVALUATIONS}"),
            search_action_endpoint: format!("{base}{SEARCH_ACTION}"),
            policy_decision_point: base,
            capabilities: &CAPABILITIES,
            supported_obligations: &["custom"],
        };
        // HEAD gets the same head (its Content-Length too); hyper sends no
        // body with it.
        match encode(&document) {
            Ok(body) => reply(StatusCode::OK, "application/json", body),
            Err(refusal) => plain(refusal.status, &refusal.message),
        }
    }
}

// The answers are structs, so their keys come in this order whatever
// features `serde_json` is built with.

#[derive(Debug, serde::Serialize)]
struct Evaluations {
    evaluations: Vec<mapping::Answer>,
}

/// An action search's answer: `page` first, as the specification
/// recommends, so a reader can show progress before the results.
#[derive(Debug, serde::Serialize)]
struct SearchResults {
    page: PageOut,
    results: Vec<mapping::Action>,
    context: SearchContext,
}

#[derive(Debug, serde::Serialize)]
struct PageOut {
    next_token: String,
    count: usize,
    total: usize,
}

#[derive(Debug, serde::Serialize)]
struct SearchContext {
    policy_revision: Arc<str>,
    ttl_seconds: u32,
}

#[derive(Debug, serde::Serialize)]
struct Metadata {
    policy_decision_point: String,
    access_evaluation_endpoint: String,
    access_evaluations_endpoint: String,
    search_action_endpoint: String,
    capabilities: &'static [&'static str],
    supported_obligations: &'static [&'static str],
}

/// The `page` of a search request.
#[derive(Debug, Default)]
struct Page {
    token: Option<String>,
    limit: Option<usize>,
}

impl Page {
    fn of(body: &Map<String, Value>) -> Result<Self, Refusal> {
        let Some(page) = body.get("page").filter(|v| !v.is_null()) else {
            return Ok(Page::default());
        };
        let page = mapping::object(page, "page")?;
        let token = match page.get("token") {
            None | Some(Value::Null) => None,
            Some(Value::String(t)) if t.is_empty() => None,
            Some(Value::String(t)) => Some(t.clone()),
            Some(_) => return Err(Refusal::bad("`page.token` must be a string")),
        };
        let limit = match page.get("limit") {
            None | Some(Value::Null) => None,
            Some(v) => Some(
                v.as_u64()
                    .and_then(|n| usize::try_from(n).ok())
                    .ok_or_else(|| {
                        Refusal::bad("`page.limit` must be a non-negative whole number")
                    })?,
            ),
        };
        Ok(Page { token, limit })
    }
}

/// What a page token is bound to: the request's entities, which the
/// specification says must not change between pages (read with keys in
/// order, so a client that writes them in another order is not refused).
fn fingerprint(body: &Map<String, Value>) -> u64 {
    use std::hash::{Hash, Hasher};
    fn feed(v: &Value, h: &mut std::hash::DefaultHasher) {
        match v {
            Value::Null => 0u8.hash(h),
            Value::Bool(b) => (1u8, b).hash(h),
            Value::Number(n) => (2u8, n.to_string()).hash(h),
            Value::String(s) => (3u8, s).hash(h),
            Value::Array(items) => {
                (4u8, items.len()).hash(h);
                items.iter().for_each(|i| feed(i, h));
            }
            Value::Object(fields) => {
                let mut keys: Vec<&String> = fields.keys().collect();
                keys.sort();
                (5u8, keys.len()).hash(h);
                for k in keys {
                    k.hash(h);
                    if let Some(v) = fields.get(k) {
                        feed(v, h);
                    }
                }
            }
        }
    }
    // Fixed keys: a token stays valid across the server's replicas.
    let mut hasher = std::hash::DefaultHasher::new();
    for key in ["subject", "resource", "context"] {
        feed(body.get(key).unwrap_or(&Value::Null), &mut hasher);
    }
    hasher.finish()
}

const TOKEN_VERSION: &str = "pg1";

/// A token for the page from `offset`, `limit` results long.
fn write_token(offset: usize, limit: usize, fingerprint: u64) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!(
        "{TOKEN_VERSION}:{offset}:{limit}:{fingerprint:016x}"
    ))
}

/// The offset and limit a token continues with, if it was made for this
/// request.
fn read_token(token: &str, fingerprint: u64) -> Result<(usize, usize), Refusal> {
    let garbled = || Refusal::bad("`page.token` is not a token this server gave out");
    let text = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(garbled)?;
    let mut parts = text.split(':');
    let (Some(TOKEN_VERSION), Some(offset), Some(limit), Some(made_for), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return Err(garbled());
    };
    let offset: usize = offset.parse().map_err(|_| garbled())?;
    let limit: usize = limit.parse().map_err(|_| garbled())?;
    if made_for != format!("{fingerprint:016x}") {
        return Err(Refusal::bad(
            "`page.token` was given for another request: the subject, resource and context must stay as they were on the first page",
        ));
    }
    Ok((offset, limit))
}

/// The host the caller named (`Host`, or the HTTP/2 `:authority`), if it
/// is a valid authority.
fn host(req: &Request) -> Option<String> {
    let named = req
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| req.uri().authority().map(|a| a.as_str().to_string()))?;
    let authority: axum::http::uri::Authority = named.parse().ok()?;
    // No user information in a URL this server hands out.
    if authority.as_str().contains('@') {
        return None;
    }
    Some(authority.as_str().to_string())
}

fn encode(value: &impl serde::Serialize) -> Result<Bytes, Refusal> {
    serde_json::to_vec(value)
        .map(Bytes::from)
        .map_err(|e| Refusal {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: format!("cannot encode the answer: {e}"),
        })
}

fn reply(status: StatusCode, content_type: &'static str, body: Bytes) -> Response {
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    let headers: &mut HeaderMap = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// An HTTP error: the specification's plain message.
fn plain(status: StatusCode, message: &str) -> Response {
    reply(
        status,
        "text/plain; charset=utf-8",
        Bytes::from(format!("{message}\n")),
    )
}

fn not_allowed(allow: &'static str) -> Response {
    let mut response = plain(
        StatusCode::METHOD_NOT_ALLOWED,
        &format!("method not allowed; this endpoint takes {allow}"),
    );
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_continues_only_the_request_it_was_made_for() {
        let token = write_token(2, 2, 7);
        assert_eq!(read_token(&token, 7).map_err(|r| r.message), Ok((2, 2)));
        assert!(read_token(&token, 8).is_err_and(|r| r.message.contains("another request")));
        for garbled in ["", "!!", "cGcxOjI", &write_token(2, 2, 7).replace('c', "d")] {
            assert!(read_token(garbled, 7).is_err(), "{garbled}");
        }
    }

    #[test]
    fn a_fingerprint_changes_with_the_entities_not_their_key_order() {
        let body = |text: &str| match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(map)) => map,
            other => panic!("{other:?}"),
        };
        let a =
            body(r#"{"subject": {"type": "u", "id": "a"}, "resource": {"type": "c", "id": "1"}}"#);
        let reordered = body(
            r#"{"resource": {"id": "1", "type": "c"}, "subject": {"id": "a", "type": "u"}, "page": {"token": "x"}}"#,
        );
        let b =
            body(r#"{"subject": {"type": "u", "id": "b"}, "resource": {"type": "c", "id": "1"}}"#);
        assert_eq!(fingerprint(&a), fingerprint(&reordered));
        assert_ne!(fingerprint(&a), fingerprint(&b));
    }

    #[test]
    fn base_urls_are_checked() {
        assert_eq!(
            parse_base_url("https://pdp.example.com/"),
            Ok("https://pdp.example.com".to_string())
        );
        assert_eq!(
            parse_base_url("https://gw.example.com/authz"),
            Ok("https://gw.example.com/authz".to_string())
        );
        for bad in [
            "pdp.example.com",
            "ftp://x",
            "https://x/?a=1",
            "https://x/#f",
            "/path",
        ] {
            assert!(parse_base_url(bad).is_err(), "{bad}");
        }
    }
}
