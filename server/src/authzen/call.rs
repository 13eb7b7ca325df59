//! The HTTP around every AuthZEN endpoint: `X-Request-ID` checked and
//! echoed on every answer, a request's body read as a JSON object within
//! the body limit, the time and the places of requests at once (a
//! [`Call`]), and the answer or the [`Refusal`] written back.

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::Request;
use axum::http::StatusCode;
use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use bytes::Bytes;
use opentelemetry::KeyValue;
use opentelemetry::trace::Span as _;
use opentelemetry_sdk::trace::Span;
use purposegate_runtime::http::BodyError;
use serde_json::{Map, Value};

use super::AuthZen;
use super::mapping::Problem;
use crate::engine;

/// How long a request body may take to arrive.
const BODY_TIME: Duration = Duration::from_secs(10);
const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The caller's `X-Request-ID`, checked: once, visible ASCII, short.
#[derive(Debug, Clone, Default)]
struct RequestId(String);

/// Reads `X-Request-ID` and echoes it on the answer, whatever the answer.
pub(super) async fn echo_request_id(mut req: Request, next: Next) -> Response {
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
pub(super) struct Refusal {
    pub(super) status: StatusCode,
    pub(super) message: String,
}

impl Refusal {
    pub(super) fn bad(message: impl Into<String>) -> Self {
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
pub(super) struct Call {
    pub(super) body: Map<String, Value>,
    pub(super) request_id: String,
    pub(super) start: Instant,
}

type Handler = fn(&AuthZen, Call, Option<&mut Span>) -> Result<Bytes, Refusal>;

impl AuthZen {
    /// Reads the request as JSON and answers it with `handler`, in a span
    /// of its own (a child of the caller's trace).
    pub(super) async fn answer(
        &self,
        req: Request,
        route: &'static str,
        handler: Handler,
    ) -> Response {
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
}

pub(super) fn encode(value: &impl serde::Serialize) -> Result<Bytes, Refusal> {
    serde_json::to_vec(value)
        .map(Bytes::from)
        .map_err(|e| Refusal {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: format!("cannot encode the answer: {e}"),
        })
}

pub(super) fn reply(status: StatusCode, content_type: &'static str, body: Bytes) -> Response {
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
pub(super) fn plain(status: StatusCode, message: &str) -> Response {
    reply(
        status,
        "text/plain; charset=utf-8",
        Bytes::from(format!("{message}\n")),
    )
}

pub(super) fn not_allowed(allow: &'static str) -> Response {
    let mut response = plain(
        StatusCode::METHOD_NOT_ALLOWED,
        &format!("method not allowed; this endpoint takes {allow}"),
    );
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    response
}
