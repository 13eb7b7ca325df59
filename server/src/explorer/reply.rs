//! The explorer's HTTP on both sides: a request's body read within a size
//! and a time (a `CheckRequest` as JSON), and the replies with their
//! headers: JSON, errors as JSON, the embedded assets, 405.

use axum::body::Body;
use axum::extract::Request;
use axum::http::StatusCode;
use axum::http::header::{self, HeaderValue};
use axum::response::Response;
use bytes::Bytes;
use purposegate_runtime::http::BodyError;
use serde_json::json;

use crate::engine;

/// Requests to `/api/check` larger than this are refused.
const MAX_CHECK_BYTES: usize = 64 * 1024;
/// How long a request to `/api/check` may take to arrive.
const CHECK_TIME: std::time::Duration = std::time::Duration::from_secs(10);

/// A `CheckRequest` in its JSON form, sent as `application/json` within
/// [`MAX_CHECK_BYTES`] and [`CHECK_TIME`]; otherwise the answer refusing it.
pub(super) async fn read_request(req: Request) -> Result<engine::DecisionRequest, Response> {
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
pub(super) async fn read_limited(req: Request, limit: usize) -> Result<Bytes, Response> {
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

pub(super) fn json_reply(answer: &impl serde::Serialize) -> Response {
    match serde_json::to_vec(answer) {
        Ok(body) => reply(StatusCode::OK, "application/json", Bytes::from(body)),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("cannot encode the answer: {e}"),
        ),
    }
}

pub(super) fn asset(content_type: &'static str, body: &'static str) -> Response {
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

pub(super) fn reply(status: StatusCode, content_type: &'static str, body: Bytes) -> Response {
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

pub(super) fn not_allowed(allow: &'static str) -> Response {
    let mut response = error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    response
}

pub(super) fn error(status: StatusCode, message: &str) -> Response {
    reply(
        status,
        "application/json",
        Bytes::from(json!({ "error": message }).to_string()),
    )
}
