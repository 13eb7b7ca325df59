//! The answers the proxy gives itself, never the app's: a refusal (403,
//! or gRPC `PERMISSION_DENIED` trailers-only; 400 or `INVALID_ARGUMENT`
//! for a call that cannot be forwarded as one request; 408 or
//! `DEADLINE_EXCEEDED` for one that idled), no room (503 or
//! `RESOURCE_EXHAUSTED`, with `Retry-After`), an unreachable app (502 or
//! `UNAVAILABLE`). Free text goes into headers as printable ASCII and into
//! `grpc-message` percent-encoded.

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use hyper::{Response, StatusCode};

use super::{ProxyBody, ProxyResponse};
use crate::refusal::Refusal;

/// A header value from free text: printable ASCII kept, the rest `?`.
fn header_text(text: &str) -> HeaderValue {
    let clean: String = text
        .chars()
        .map(|c| if (' '..='~').contains(&c) { c } else { '?' })
        .collect();
    HeaderValue::from_str(&clean).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// `grpc-message` is percent-encoded (gRPC over HTTP/2 spec).
fn grpc_message(text: &str) -> HeaderValue {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    HeaderValue::from_str(&out).unwrap_or_else(|_| HeaderValue::from_static("denied"))
}

/// The refusal's `grpc-status` (7 for a denial) and `x-purposegate-*`
/// headers.
pub(super) fn refusal_trailers(refusal: &Refusal) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(
        "grpc-status",
        HeaderValue::from_static(refusal.grpc_status()),
    );
    h.insert("grpc-message", grpc_message(&refusal.reason));
    for (name, value) in refusal.headers() {
        h.insert(HeaderName::from_static(name), header_text(&value));
    }
    h
}

pub(super) fn deny(grpc: bool, refusal: &Refusal) -> ProxyResponse {
    if grpc {
        // Trailers-only: the status in the headers, no body.
        let mut r = Response::new(ProxyBody::Own(Full::new(Bytes::new())));
        r.headers_mut().insert(
            hyper::header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        r.headers_mut().extend(refusal_trailers(refusal));
        return r;
    }
    let mut r = Response::new(ProxyBody::Own(Full::new(Bytes::from(format!(
        "{}: {}\n",
        refusal.decision, refusal.reason
    )))));
    *r.status_mut() = refusal.http_status();
    let h = r.headers_mut();
    h.insert(
        hyper::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    for (name, value) in refusal.headers() {
        h.insert(HeaderName::from_static(name), header_text(&value));
    }
    r
}

/// `RESOURCE_EXHAUSTED` (gRPC) or 503: the sidecar has no room now.
pub(super) fn too_many(grpc: bool, reason: &str) -> ProxyResponse {
    let mut r = if grpc {
        let mut r = Response::new(ProxyBody::Own(Full::new(Bytes::new())));
        r.headers_mut().insert(
            hyper::header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        r.headers_mut()
            .insert("grpc-status", HeaderValue::from_static("8"));
        r.headers_mut().insert("grpc-message", grpc_message(reason));
        r
    } else {
        let mut r = Response::new(ProxyBody::Own(Full::new(Bytes::from(format!(
            "{reason}\n"
        )))));
        *r.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
        r
    };
    r.headers_mut()
        .insert(hyper::header::RETRY_AFTER, HeaderValue::from_static("1"));
    r
}

pub(super) fn upstream_error(grpc: bool, reason: &str) -> ProxyResponse {
    if grpc {
        let mut r = Response::new(ProxyBody::Own(Full::new(Bytes::new())));
        let h = r.headers_mut();
        h.insert(
            hyper::header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        h.insert("grpc-status", HeaderValue::from_static("14"));
        h.insert("grpc-message", grpc_message(reason));
        r
    } else {
        let mut r = Response::new(ProxyBody::Own(Full::new(Bytes::from(format!(
            "{reason}\n"
        )))));
        *r.status_mut() = StatusCode::BAD_GATEWAY;
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_messages_are_percent_encoded() {
        assert_eq!(grpc_message("a b"), "a b");
        assert_eq!(grpc_message("100% über"), "100%25 %C3%BCber");
    }
}
