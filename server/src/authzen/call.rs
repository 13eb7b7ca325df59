//! The HTTP around every AuthZEN endpoint: `X-Request-ID` checked and
//! echoed on every answer, a request's body read as a JSON object within
//! the body limit, the time and the places of requests at once (a
//! [`Call`]), and the answer or the [`Refusal`] written back.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
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
use purposegate_runtime::http::{BodyError, Caller};
use purposegate_runtime::shares::Full;
use serde_json::{Map, Value};

use super::AuthZen;
use super::mapping::Problem;
use crate::engine;

/// The largest body answered on the async worker it arrived on: its cost
/// (parse, map, decide) stays that of a `Check`.
const INLINE_BYTES: usize = 16 * 1024;

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
        return closing_after_refusal(next.run(req).await);
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
    closing_after_refusal(response)
}

/// A refusal may come before its request's body was read: the connection
/// then cannot carry another request, and says so (HTTP/1.1; HTTP/2 drops
/// the header), so a client does not send its next request into a
/// connection being closed.
fn closing_after_refusal(mut response: Response) -> Response {
    if !response.status().is_success() {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
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
    /// The body's length in bytes, as received: what the decision log may
    /// write for it is bounded by it.
    pub(super) body_bytes: usize,
    pub(super) request_id: String,
    pub(super) start: Instant,
    /// The choices a single evaluation needs, found before it is answered
    /// on an async worker; `None`: read where it is decided (the pool).
    pub(super) facts: Option<engine::ChoiceFacts>,
}

pub(super) type Handler = fn(&AuthZen, Call, Option<&mut Span>) -> Result<Bytes, Refusal>;

/// Where a request is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Place {
    /// On the async worker: one evaluation whose body is at most
    /// [`INLINE_BYTES`] (a larger one goes to the pool).
    Inline,
    /// On the work pool: batches and searches, whose cost grows with the
    /// request.
    Pool,
}

/// A body's bytes admitted and read: its place in the budget is held
/// until the answer is written.
pub(super) struct Received {
    bytes: Bytes,
    request_id: String,
    _admitted: Admitted,
}

/// Bytes of the body budget held by one request, for its peer and its
/// connection; given back on drop.
struct Admitted {
    shares: Vec<purposegate_runtime::shares::Share>,
    bodies: Arc<purposegate_runtime::shares::Shares>,
    peer: IpAddr,
    holding: Arc<AtomicUsize>,
    /// KiB held, by the peer's shares and the connection's count.
    kib: usize,
}

impl Admitted {
    /// Holds enough for `bytes` of body: `false` when the connection's or
    /// the address's share, or the budget, cannot cover it.
    fn cover(&mut self, bytes: usize) -> Result<(), Full> {
        let need = bytes / 1024 + 1;
        if need <= self.kib {
            return Ok(());
        }
        let more = need - self.kib;
        let per_connection = (self.bodies.per_peer() / 2).max(1);
        if self.holding.fetch_add(more, Ordering::AcqRel) + more > per_connection {
            self.holding.fetch_sub(more, Ordering::AcqRel);
            return Err(Full::Peer);
        }
        match self.bodies.take_many(self.peer, more) {
            Ok(share) => {
                self.shares.push(share);
                self.kib = need;
                Ok(())
            }
            Err(full) => {
                self.holding.fetch_sub(more, Ordering::AcqRel);
                Err(full)
            }
        }
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.holding.fetch_sub(self.kib, Ordering::AcqRel);
    }
}

/// 503 for a body the budget cannot cover.
fn unpaid(full: Full) -> Refusal {
    Refusal {
        status: StatusCode::SERVICE_UNAVAILABLE,
        message: match full {
            Full::Peer => "your address is sending too many request bodies at once; try again",
            Full::Everyone => "too many request bodies at once; try again",
        }
        .to_string(),
    }
}

impl AuthZen {
    /// Reads the request as JSON and answers it with `handler` in `place`,
    /// in a span of its own (a child of the caller's trace).
    pub(super) async fn answer(
        self: Arc<Self>,
        req: Request,
        route: &'static str,
        handler: Handler,
        place: Place,
    ) -> Response {
        let start = Instant::now();
        let mut span = self
            .decider
            .telemetry()
            .map(|t| t.http_span("POST", route, req.headers()));
        let peer = req
            .extensions()
            .get::<Caller>()
            .map_or(IpAddr::from([0, 0, 0, 0]), |c| c.addr.ip());
        let answer = match self.receive(req).await {
            Err(refusal) => Err(refusal),
            // A small single evaluation is answered where it arrived; a
            // larger body is parsed and mapped on the pool like a batch.
            Ok(received) if place == Place::Inline && received.bytes.len() <= INLINE_BYTES => {
                match self.inline_call(&received, start).await {
                    Ok(call) => handler(&self, call, span.as_mut()),
                    Err(refusal) => Err(refusal),
                }
            }
            Ok(received) => {
                let this = self.clone();
                let size = received.bytes.len();
                let mut job_span = span.take();
                let job = move || {
                    let answer = answer_now(&this, received, start, handler, job_span.as_mut());
                    (answer, job_span)
                };
                match self.pool.run(peer, size, job).await {
                    Ok((answer, back)) => {
                        span = back;
                        answer
                    }
                    Err(busy) => Err(Refusal {
                        status: StatusCode::SERVICE_UNAVAILABLE,
                        message: busy.to_string(),
                    }),
                }
            }
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

    /// The body, sent as `application/json`, admitted into the budget of
    /// bytes being read at once (paid for as it arrives) and read within
    /// the body limit and time.
    async fn receive(&self, req: Request) -> Result<Received, Refusal> {
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
        // Paid for as the bytes arrive: a body that sends nothing holds
        // nothing but its first KiB.
        let mut admitted = self.admit(&req)?;
        let mut refused = None;
        let pay = |bytes: usize| match admitted.cover(bytes) {
            Ok(()) => true,
            Err(full) => {
                refused = Some(full);
                false
            }
        };
        let read = purposegate_runtime::http::read_body_paid(
            req.into_body(),
            self.max_body,
            BODY_TIME,
            pay,
        )
        .await;
        let bytes = read.map_err(|e| match e {
            BodyError::TooLarge(limit) => too_large(limit),
            BodyError::TooSlow(_) => Refusal {
                status: StatusCode::REQUEST_TIMEOUT,
                message: format!("the request body: {e}"),
            },
            BodyError::Unpaid => unpaid(refused.unwrap_or(Full::Everyone)),
            BodyError::Broken(_) => {
                Refusal::bad(format!("the request body could not be read: {e}"))
            }
        })?;
        Ok(Received {
            bytes,
            request_id,
            _admitted: admitted,
        })
    }

    /// The request's first KiB in the budget of body bytes (the rest is
    /// paid as it arrives): refused at once (503) when its address or its
    /// connection holds its share, or the budget is spent.
    fn admit(&self, req: &Request) -> Result<Admitted, Refusal> {
        let (peer, holding) = match req.extensions().get::<Caller>() {
            Some(c) => (c.addr.ip(), c.holding.clone()),
            None => (IpAddr::from([0, 0, 0, 0]), Arc::default()),
        };
        let mut admitted = Admitted {
            shares: Vec::new(),
            bodies: self.bodies.clone(),
            peer,
            holding,
            kib: 0,
        };
        admitted.cover(0).map_err(unpaid)?;
        Ok(admitted)
    }
}

fn too_large(limit: usize) -> Refusal {
    Refusal {
        status: StatusCode::PAYLOAD_TOO_LARGE,
        message: format!("the request body is over {limit} bytes (--authzen-max-body)"),
    }
}

/// Parses a received body and answers it with `handler`.
fn answer_now(
    az: &AuthZen,
    received: Received,
    start: Instant,
    handler: Handler,
    span: Option<&mut Span>,
) -> Result<Bytes, Refusal> {
    let body = parse(&received.bytes)?;
    let call = Call {
        body,
        body_bytes: received.bytes.len(),
        request_id: received.request_id.clone(),
        start,
        facts: None,
    };
    handler(az, call, span)
}

impl AuthZen {
    /// A single evaluation read for an async worker: with the choices it
    /// needs found first, without blocking the worker.
    async fn inline_call(&self, received: &Received, start: Instant) -> Result<Call, Refusal> {
        let mut call = Call {
            body: parse(&received.bytes)?,
            body_bytes: received.bytes.len(),
            request_id: received.request_id.clone(),
            start,
            facts: None,
        };
        let policy = self.decider.policy();
        if !policy.choices().is_empty() {
            let src = super::mapping::Source::alone(&call.body);
            // A request that cannot be read is refused by the handler.
            if let Ok(req) = super::mapping::request(src, super::mapping::Asked::Evaluation, "") {
                call.facts = self.decider.facts(&policy, &req).await;
            }
        }
        Ok(call)
    }
}

/// A body as the JSON object it must be.
fn parse(bytes: &[u8]) -> Result<Map<String, Value>, Refusal> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(Refusal::bad(
            "the request body is empty; send a JSON object",
        ));
    }
    match engine::json::parse_strict(bytes) {
        Ok(Value::Object(body)) => Ok(body),
        Ok(other) => Err(Refusal::bad(format!(
            "the request body must be a JSON object, not {}",
            match other {
                Value::Array(_) => "an array",
                Value::String(_) => "a string",
                Value::Number(_) => "a number",
                Value::Bool(_) => "a boolean",
                _ => "null",
            }
        ))),
        Err(e) => Err(Refusal::bad(format!("the request body is not JSON: {e}"))),
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
