//! Step 7 of the request path: a permitted call on its way to the app, and
//! the app's answer back, in named steps:
//!
//! 1. [`target`]: the app's address with the canonical path judged and the
//!    query as sent;
//! 2. [`app_headers`]: the list of removed headers applied
//!    ([`crate::strip`]), the decided values set, the permit's purpose
//!    context in the baggage, `x-forwarded-for` and `x-forwarded-proto`,
//!    the loop mark;
//! 3. framing: no body at all where the call carries none; and
//!    `connection: close` on an HTTP/1.1 request that carries a body (the
//!    app may leave it unread, and would then read it as the next request)
//!    or is a `HEAD` (whose answer's framing is the request's, not the
//!    bytes'), so that connection is never used again;
//! 4. [`send`]: over the caller's own connection to the app, under the
//!    call's supervisor;
//! 5. [`relay`]: the app's answer streamed back; an informational or
//!    upgrade answer, which the sidecar never asks for, is a 502.

use std::sync::Arc;

use hyper::body::Incoming;
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use hyper::http::uri::PathAndQuery;
use hyper::{Method, Request, Uri};
use purposegate_runtime::shares::Share;
use tracing::warn;

use super::body::{GuardedRequest, ProxyBody};
use super::reply::{deny, upstream_error};
use super::upstream::Upstream;
use super::{BodyLook, Downstream, Proxy, ProxyResponse, VIA, is_grpc_content_type};
use crate::canonical;
use crate::headers::name::BAGGAGE;
use crate::intercept::Permit;
use crate::refusal::Refusal;
use crate::routes::Table;
use crate::supervise::{Supervised, Watched};

/// Sends the call to the app and streams its answer back. `judged` is the
/// canonical path (`None` when the path came canonical) and its table
/// (`None` only for a call refused before asking that `--dry-run` lets
/// through as it came); `body`, what was learnt of its body.
pub(super) async fn forward(
    proxy: &Proxy,
    req: Request<Incoming>,
    downstream: &Downstream,
    place: Arc<Share>,
    judged: Option<(Option<&str>, Table)>,
    permit: Permit,
    body: BodyLook,
) -> ProxyResponse {
    let reply_grpc = is_grpc_content_type(req.headers());
    // Only gRPC over HTTP/2 can be told in trailers that its call ended;
    // HTTP/1.1 (and grpc-web) callers see it reset.
    let caller_takes_trailers = req.version() == hyper::Version::HTTP_2;
    let (mut parts, incoming) = req.into_parts();
    let grpc = judged.map_or(reply_grpc, |(_, table)| table == Table::Grpc);
    let upstream = proxy.upstream();
    let Some(uri) = target(upstream, judged, &parts.uri) else {
        return upstream_error(reply_grpc, "cannot build the upstream address");
    };
    parts.uri = uri;
    app_headers(
        &mut parts.headers,
        &permit,
        grpc,
        downstream,
        proxy.via(),
        |dropped| proxy.baggage_trimmed(dropped),
    );
    let http2 = upstream.http2(grpc);
    // The length is the sidecar's to say, once: none for a body that does
    // not come (the app would wait for bytes, or read the next request's),
    // the declared one as a single number (never `5, 5` as a caller may
    // write it), or none for a body of unknown length (chunked to an
    // HTTP/1.1 app).
    match (body.present, body.length) {
        // Said once already, as the sidecar would say it: left as it is.
        (true, Some(length)) if says_once(&parts.headers, length) => {}
        (true, Some(length)) => {
            parts
                .headers
                .insert(hyper::header::CONTENT_LENGTH, HeaderValue::from(length));
        }
        _ => {
            parts.headers.remove(hyper::header::CONTENT_LENGTH);
        }
    }
    if !http2 && (body.present || parts.method == Method::HEAD) {
        parts
            .headers
            .insert(hyper::header::CONNECTION, HeaderValue::from_static("close"));
    }
    // The client sets the version and authority of its own connection.
    parts.version = hyper::Version::HTTP_11;
    let permitted = match (permit.request, permit.answer) {
        (Some(request), Some(answer)) if !proxy.dry_run() => Some((request, answer)),
        _ => None,
    };
    let supervised = proxy.supervisor().watch(Watched {
        permitted,
        closer: downstream.peer.closer.clone(),
        // Under --dry-run nothing is ended for its decision.
        inherited_until: permit.inherited_until.filter(|_| !proxy.dry_run()),
    });
    let outgoing = Request::from_parts(
        parts,
        GuardedRequest::new(
            body.present.then_some((body.first, incoming)),
            supervised.clone(),
            place.clone(),
        ),
    );
    match send(proxy, downstream, outgoing, http2, supervised.clone()).await {
        Ok(response) => relay(
            response,
            caller_takes_trailers,
            reply_grpc,
            supervised,
            place,
            upstream,
        ),
        Err(refusal) => deny(reply_grpc, &refusal),
    }
}

/// Whether `headers` carry one `content-length`, `length` in plain decimal
/// digits (no sign, no leading zero, no list): written on the stack and
/// compared, as the sidecar would say it.
fn says_once(headers: &HeaderMap, length: u64) -> bool {
    use std::io::Write;
    let mut digits = [0u8; 20];
    let mut out = std::io::Cursor::new(&mut digits[..]);
    if write!(out, "{length}").is_err() {
        return false;
    }
    let written = usize::try_from(out.position()).unwrap_or(0);
    digits
        .get(..written)
        .is_some_and(|said| says_exactly(headers, &hyper::header::CONTENT_LENGTH, said))
}

/// 1. The app's address with the canonical path judged (or, for a path
///    that came canonical and a call let through as it came, the target
///    as sent) and the query as sent.
fn target(upstream: &Upstream, judged: Option<(Option<&str>, Table)>, sent: &Uri) -> Option<Uri> {
    let path_and_query = match (judged, sent.path_and_query()) {
        (Some((Some(path), _)), _) => canonical::request_target(path, sent.query()).parse().ok()?,
        // The path came canonical (as nearly every path does): the target
        // as sent, not parsed again. Only a target that starts with its
        // path: one of a query alone (`?a=b`, whose path reads as `/`) is
        // written out whole, as the app must get it.
        (Some((None, _)), Some(as_sent)) if as_sent.as_str().starts_with('/') => as_sent.clone(),
        (Some((None, _)), _) => canonical::request_target(sent.path(), sent.query())
            .parse()
            .ok()?,
        (None, Some(as_sent)) => as_sent.clone(),
        (None, None) => PathAndQuery::from_static("/"),
    };
    let mut uri = upstream.uri.clone().into_parts();
    uri.path_and_query = Some(path_and_query);
    Uri::from_parts(uri).ok()
}

/// 2. The headers the app receives: what is left of the caller's once the
///    list of removed headers is applied, and the values the sidecar
///    decided or sets itself. (A call let through by `--dry-run` without a
///    question keeps the decided headers it stated; only the sidecar's own
///    and the other removed ones never pass.)
fn app_headers(
    headers: &mut HeaderMap,
    permit: &Permit,
    grpc: bool,
    downstream: &Downstream,
    via: &HeaderValue,
    trimmed: impl FnOnce(usize),
) {
    let decided = permit.decided_headers();
    let left = crate::strip::request_headers(headers, grpc, permit.request.is_none(), |name| {
        decided.names(name)
    });
    for (name, value) in decided.iter() {
        // Said once already, exactly as decided (as nearly every caller
        // states its purpose): left as it is.
        if says_exactly(headers, name, value.as_bytes()) {
            continue;
        }
        // A decided value that cannot be a header value (a subject from a
        // certificate or a message may hold any character) is not sent,
        // and neither is what the caller wrote in its place.
        match HeaderValue::from_str(value) {
            Ok(value) => {
                headers.insert(name.clone(), value);
            }
            Err(_) => {
                headers.remove(name);
            }
        }
    }
    // The baggage is the sidecar's: the permit's purpose context first (or
    // the one the call came with, when the permit carries none), for the
    // next hop to inherit; look-alike keys gone; the caller's members kept
    // within the W3C limits, so no propagator drops the entry.
    let inherited;
    let token = match permit
        .answer
        .as_ref()
        .map(|a| a.purpose_context.as_str())
        .filter(|t| !t.is_empty())
    {
        Some(token) => Some(token),
        None if left.baggage => {
            inherited = purposegate_proto::context::baggage_entries(
                headers
                    .get_all(BAGGAGE)
                    .iter()
                    .filter_map(|v| v.to_str().ok()),
            )
            .first()
            .map(|t| t.to_string());
            inherited.as_deref()
        }
        None => None,
    };
    if token.is_some() || left.baggage {
        let (owned, dropped) = purposegate_proto::context::owned_baggage(
            headers
                .get_all(BAGGAGE)
                .iter()
                .filter_map(|v| v.to_str().ok()),
            token,
        );
        trimmed(dropped);
        match HeaderValue::from_str(&owned) {
            Ok(value) if !owned.is_empty() => {
                headers.insert(BAGGAGE, value);
            }
            _ => {
                headers.remove(BAGGAGE);
            }
        }
    }
    // Every `x-forwarded-*` the caller sent is gone: these are the
    // sidecar's, appended to no value.
    if let Some(ip) = &downstream.forwarded_for {
        headers.append(X_FORWARDED_FOR, ip.clone());
    }
    headers.append(
        X_FORWARDED_PROTO,
        HeaderValue::from_static(if downstream.peer.subject.is_some() {
            "https"
        } else {
            "http"
        }),
    );
    headers.append(VIA, via.clone());
    if left.host {
        headers.remove(hyper::header::HOST);
    }
}

/// Whether `headers` carry `name` once, with exactly `value`.
fn says_exactly(headers: &HeaderMap, name: &HeaderName, value: &[u8]) -> bool {
    let mut values = headers.get_all(name).iter();
    matches!((values.next(), values.next()), (Some(only), None) if only.as_bytes() == value)
}

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

/// 4. The request, over the caller's own connection to the app; the
///    caller's refusal instead if the call is ended before the app answers.
async fn send(
    proxy: &Proxy,
    downstream: &Downstream,
    outgoing: Request<GuardedRequest>,
    http2: bool,
    mut supervised: Supervised,
) -> Result<Result<hyper::Response<Incoming>, AppError>, Refusal> {
    let client = proxy.upstream().client(&downstream.apps, http2);
    let response = tokio::select! {
        biased;
        refusal = supervised.ended() => return Err(refusal),
        response = client.request(outgoing) => response,
    };
    // A request body ended by the supervisor fails the request too: the
    // caller learns why, not that the app could not be reached.
    match (response, supervised.ended_now()) {
        (Err(_), Some(refusal)) => Err(refusal),
        (response, _) => Ok(response),
    }
}

type AppError = hyper_util::client::legacy::Error;

/// 5. The app's answer, streamed back under the supervisor; a 502 when
///    the app cannot be reached or answers what the sidecar never asked
///    for (`101 Switching Protocols`, any 1xx as a final answer).
fn relay(
    response: Result<hyper::Response<Incoming>, AppError>,
    caller_takes_trailers: bool,
    reply_grpc: bool,
    supervised: Supervised,
    place: Arc<Share>,
    upstream: &Upstream,
) -> ProxyResponse {
    match response {
        Ok(response) if response.status().is_informational() => {
            warn!(status = %response.status(), upstream = %upstream.uri, "the app answered with an informational status the sidecar did not ask for");
            upstream_error(
                reply_grpc,
                "the app behind the sidecar answered with an informational status",
            )
        }
        Ok(response) => {
            let grpc_trailers = caller_takes_trailers
                && response
                    .headers()
                    .get(hyper::header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|ct| {
                        ct.starts_with("application/grpc")
                            && !ct.starts_with("application/grpc-web")
                    });
            response.map(|body| ProxyBody::Upstream {
                body,
                supervised,
                grpc_trailers,
                _place: place,
            })
        }
        Err(e) => {
            warn!(error = %e, upstream = %upstream.uri, "the app cannot be reached");
            upstream_error(reply_grpc, "the app behind the sidecar cannot be reached")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use purposegate_proto::v1 as pb;

    /// A permit to `provide` for `subject`, and a caller at `addr`.
    fn provide_for(subject: &str, addr: &str) -> (Permit, Downstream) {
        let permit = Permit {
            request: Some(pb::CheckRequest {
                purpose: "provide".into(),
                subject: Some(pb::Subject {
                    id: subject.into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let downstream = Downstream::new(
            purposegate_runtime::listen::Peer {
                addr: addr.parse().unwrap(),
                subject: None,
                names: std::sync::Arc::from(Vec::new()),
                closer: purposegate_runtime::listen::Closer::default(),
            },
            &purposegate_runtime::shares::Shares::new(1, 1),
        );
        (permit, downstream)
    }

    #[test]
    fn a_decided_value_that_cannot_be_sent_leaves_nothing_of_the_callers() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-subject",
            HeaderValue::from_static("written-by-the-caller"),
        );
        headers.insert("x-purpose", HeaderValue::from_static("provide"));
        let (permit, downstream) = provide_for("judged\nsubject", "127.0.0.1:1");
        let via = HeaderValue::from_static("me");
        app_headers(&mut headers, &permit, true, &downstream, &via, |_| {});
        assert!(headers.get("x-subject").is_none(), "{headers:?}");
        assert_eq!(headers["x-purpose"], "provide");
        assert_eq!(headers["x-forwarded-for"], "127.0.0.1");
    }

    #[test]
    fn the_app_gets_each_decided_value_once_whatever_the_caller_sent() {
        let (permit, downstream) = provide_for("alice", "10.0.0.7:1");
        let via = HeaderValue::from_static("me");
        for sent in [
            &[("x-purpose", "provide"), ("x-subject", "alice")][..],
            &[("x-purpose", "provide"), ("x-purpose", "provide")],
            &[("x-purpose", "market"), ("x-subject", "mallory")],
            &[("x_purpose", "provide"), ("x-forwarded-for", "1.2.3.4")],
            &[("x-forwarded-proto", "https"), ("x-purposegate-via", "me")],
        ] {
            let mut headers = HeaderMap::new();
            for (name, value) in sent {
                headers.append(
                    HeaderName::from_static(name),
                    HeaderValue::from_static(value),
                );
            }
            app_headers(&mut headers, &permit, true, &downstream, &via, |_| {});
            let all = |name: &str| headers.get_all(name).iter().cloned().collect::<Vec<_>>();
            assert_eq!(all("x-purpose"), ["provide"], "{sent:?}");
            assert_eq!(all("x-subject"), ["alice"], "{sent:?}");
            assert!(all("x_purpose").is_empty(), "{sent:?}");
            assert_eq!(all("x-forwarded-for"), ["10.0.0.7"], "{sent:?}");
            assert_eq!(all("x-forwarded-proto"), ["http"], "{sent:?}");
            assert_eq!(all("x-purposegate-via"), ["me"], "{sent:?}");
        }
    }

    #[test]
    fn a_target_goes_on_as_sent_only_when_it_starts_with_the_path_judged() {
        let upstream = Upstream::new(
            "http://app:8080".parse().unwrap(),
            super::super::UpstreamProtocol::Auto,
            1,
        );
        for (sent, rewritten, expected) in [
            ("http://x/a/b?q=1", None, "/a/b?q=1"),
            // A query alone reads as the path `/`: the app gets `/?a=b`.
            ("http://x?a=b", None, "/?a=b"),
            ("http://x/a/./b?q=1", Some("/a/b"), "/a/b?q=1"),
        ] {
            let sent: Uri = sent.parse().unwrap();
            let uri = target(&upstream, Some((rewritten, Table::Http)), &sent).unwrap();
            // As HTTP/2 sends it (`Display` would add the `/` itself).
            let on_the_wire = uri.path_and_query().map(PathAndQuery::as_str);
            assert_eq!(on_the_wire, Some(expected), "{sent}");
            assert_eq!(uri.authority().map(|a| a.as_str()), Some("app:8080"));
        }
    }

    #[test]
    fn a_length_is_kept_only_as_the_sidecar_would_say_it() {
        let with = |values: &[&'static str]| {
            let mut headers = HeaderMap::new();
            for v in values {
                headers.append(hyper::header::CONTENT_LENGTH, HeaderValue::from_static(v));
            }
            says_once(&headers, 5)
        };
        assert!(with(&["5"]));
        for sent in [
            &["05"][..],
            &["+5"],
            &["5, 5"],
            &["5", "5"],
            &["6"],
            &[""],
            &[],
        ] {
            assert!(!with(sent), "{sent:?}");
        }
    }
}
