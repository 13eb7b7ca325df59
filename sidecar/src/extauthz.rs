//! Envoy external authorization: `envoy.service.auth.v3.Authorization/Check`
//! on the local port, so Envoy or Istio can use the sidecar as their
//! ext_authz server. The HTTP request Envoy describes is judged exactly as
//! the proxy judges a call: its path picks the route, its headers say the
//! purpose and the rest. When Envoy terminated mutual TLS, the peer's
//! principal (`attributes.source.principal`, its certificate's URI SAN) is
//! the subject and `x-subject` is ignored, as on the proxy; with the
//! sidecar's own TLS configured, a check without a principal names no
//! subject.

use envoy_types::ext_authz::v3::pb::{
    Authorization, CheckRequest, CheckResponse, DeniedHttpResponse, HeaderAppendAction,
    HttpStatusCode, OkHttpResponse,
};
use envoy_types::ext_authz::v3::{
    CheckResponseExt, DeniedHttpResponseBuilder, OkHttpResponseBuilder,
};
use envoy_types::pb::envoy::service::auth::v3::attribute_context::HttpRequest;
use tonic::{Request, Response, Status};

use crate::gate::Gate;
use crate::headers;
use crate::intercept::{Call, Enforcement, Permit, judge, refused_before_asking};
use crate::reading::{self, Described};
use crate::refusal::{Refusal, RefusalKind};
use crate::routes::Routes;
use crate::subject::FirstMessage;

/// The encoded descriptors of `envoy/service/auth/v3/external_auth.proto`
/// and its imports, for reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/envoy_auth_descriptor.bin"));

#[derive(Debug, Clone)]
pub struct ExtAuthz {
    gate: Gate,
    routes: Routes,
    /// With TLS configured the subject comes only from the principal Envoy
    /// verified; a call without one names no subject.
    require_principal: bool,
    /// The largest first request message read for its data subject.
    max_first_message: usize,
}

impl ExtAuthz {
    pub fn new(
        gate: Gate,
        routes: Routes,
        require_principal: bool,
        max_first_message: usize,
    ) -> Self {
        ExtAuthz {
            gate,
            routes,
            require_principal,
            max_first_message,
        }
    }
}

/// What Envoy sent of the body, for a route that reads the data subject
/// from the first request message: its bytes (`with_request_body`, best
/// with `pack_as_bytes`), or why they cannot be read.
fn first_message(http: &HttpRequest, headers: &[(&str, &[u8])]) -> Result<Vec<u8>, String> {
    let content_type = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-type"))
        .map_or(&b""[..], |(_, v)| v);
    crate::subject::readable_content_type(content_type)?;
    let body = if http.raw_body.is_empty() {
        http.body.as_bytes()
    } else {
        http.raw_body.as_slice()
    };
    if body.is_empty() && http.size != 0 {
        return Err("the route reads the data subject from the first request message, and Envoy sent no body: configure ext_authz with `with_request_body` (`pack_as_bytes: true`, `max_request_bytes` at least the message, `allow_partial_message: true`)".to_string());
    }
    Ok(body.to_vec())
}

fn denied(refusal: &Refusal) -> CheckResponse {
    let mut http = DeniedHttpResponseBuilder::new();
    http.set_http_status(match refusal.kind {
        RefusalKind::Denied => HttpStatusCode::Forbidden,
        RefusalKind::Malformed => HttpStatusCode::BadRequest,
        RefusalKind::Idle => HttpStatusCode::RequestTimeout,
    });
    for (name, value) in refusal.headers() {
        http.add_header(name, value, None, false);
    }
    http.set_body(format!("{}: {}\n", refusal.decision, refusal.reason));
    let http: DeniedHttpResponse = http.build();
    let mut response =
        CheckResponse::with_status(Status::permission_denied(refusal.reason.clone()));
    response.set_http_response(http);
    response
}

/// The request headers Envoy describes: the raw list when Envoy sends one
/// (`encode_raw_headers`, which keeps repeated headers apart), else its
/// map (where Envoy has joined repeated headers with commas).
fn described_headers(http: &HttpRequest) -> Vec<(&str, &[u8])> {
    match &http.header_map {
        Some(map) => map
            .headers
            .iter()
            .map(|h| {
                let value = if h.raw_value.is_empty() {
                    h.value.as_bytes()
                } else {
                    h.raw_value.as_slice()
                };
                (h.key.as_str(), value)
            })
            .collect(),
        None => http
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_bytes()))
            .collect(),
    }
}

/// Whether the request Envoy describes carries a body: its length, framing
/// that says one may come, or the body itself (Envoy sends it with
/// `with_request_body`; over HTTP/2 nothing else tells).
fn carries_body(http: &HttpRequest, headers: &[(&str, &[u8])]) -> bool {
    let header = |name: &str| headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name));
    http.size > 0
        || !http.body.is_empty()
        || !http.raw_body.is_empty()
        || header("transfer-encoding").is_some()
        || header("content-length")
            .is_some_and(|(_, v)| v.iter().any(|b| (b'1'..=b'9').contains(b)))
}

/// Names Envoy must remove before the app sees the call: every name the
/// proxy would remove (see [`crate::strip`]) but those Envoy frames or
/// sets itself (hop-by-hop headers, `x-forwarded-for`,
/// `x-forwarded-proto`).
fn to_remove(headers: &[(&str, &[u8])]) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for (name, _) in headers {
        let name = name.to_ascii_lowercase();
        let remove = match crate::strip::removed(&name) {
            None | Some(crate::strip::Removed::HopByHop) => false,
            Some(crate::strip::Removed::Forwarding) => {
                name != "x-forwarded-for" && name != "x-forwarded-proto"
            }
            Some(_) => true,
        };
        if remove && !names.contains(&name) {
            names.push(name);
        }
    }
    names
}

/// What Envoy is told to change if the call goes through: the names to
/// remove, and the baggage to set (the sidecar's own, as the proxy
/// forwards it: the context the call came with first, no look-alikes,
/// within the limits; `Some("")` removes it).
#[derive(Debug, Default)]
struct Rewrite {
    remove: Vec<String>,
    baggage: Option<String>,
}

/// Judges the request Envoy describes, as the proxy would judge it; what
/// Envoy must change if it goes through.
async fn judge_described(
    authz: &ExtAuthz,
    http: &HttpRequest,
    certified_subject: Option<&str>,
    parent: &opentelemetry::Context,
) -> (Enforcement, Rewrite) {
    let headers = described_headers(http);
    let mut rewrite = Rewrite {
        remove: to_remove(&headers),
        baggage: None,
    };
    let (raw_path, query) = match http.path.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (http.path.as_str(), None),
    };
    let described = Described {
        method: &http.method,
        path: raw_path,
        query,
        headers: || headers.iter().copied(),
        body: carries_body(http, &headers),
        // Envoy forwards the path it has, not ours.
        forwards_canonical: false,
    };
    let reading = match reading::read(&authz.routes, described) {
        Ok(reading) => reading,
        Err(refusal) => {
            let purpose = headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(headers::PURPOSE))
                .and_then(|(_, v)| std::str::from_utf8(v).ok())
                .unwrap_or("");
            return (
                refused_before_asking(&authz.gate, parent, purpose, raw_path, refusal),
                rewrite,
            );
        }
    };
    let reads_message = reading.route.is_some_and(|route| {
        matches!(
            route.data_subject,
            Some(crate::subject::SubjectFrom::GrpcField(_))
        )
    });
    let body = if reads_message {
        first_message(http, &headers)
    } else {
        Ok(Vec::new())
    };
    let call = Call {
        reading: &reading,
        certified_subject,
        issue_context: false,
        first_message: match &body {
            Ok(bytes) => FirstMessage::Read(bytes),
            Err(why) => FirstMessage::Unread(why),
        },
        max_first_message: authz.max_first_message,
    };
    if !reading.baggage.is_empty() {
        let values = || reading.baggage.iter().copied();
        let inherited = purposegate_proto::context::baggage_entries(values());
        let (owned, dropped) =
            purposegate_proto::context::owned_baggage(values(), inherited.first().copied());
        authz.gate.inheritance.trimmed(dropped);
        rewrite.baggage = Some(owned);
    }
    (judge(&authz.gate, &call, parent).await, rewrite)
}

/// Envoy's answer for a call that goes through: the decided values set,
/// every other spelling of them removed.
fn let_through(permit: &Permit, rewrite: Rewrite) -> CheckResponse {
    let Rewrite {
        remove: reserved,
        baggage,
    } = rewrite;
    let decided = permit.decided_headers();
    let mut ok = OkHttpResponseBuilder::new();
    for (name, value) in decided.iter() {
        ok.add_header(
            name.as_str(),
            value.to_string(),
            Some(HeaderAppendAction::OverwriteIfExistsOrAdd),
            false,
        );
    }
    let mut remove: Vec<String> = Vec::new();
    match baggage {
        Some(baggage) if baggage.is_empty() => remove.push("baggage".to_string()),
        Some(baggage) => {
            ok.add_header(
                "baggage",
                baggage,
                Some(HeaderAppendAction::OverwriteIfExistsOrAdd),
                false,
            );
        }
        None => {}
    }
    for name in reserved {
        // Only what is not set again: Envoy may remove after it sets.
        let decided_now = decided.names(&name);
        let keep_as_stated = permit.request.is_none() && headers::is_decided(&name);
        if !decided_now && !keep_as_stated && !remove.contains(&name) {
            remove.push(name);
        }
    }
    for name in remove {
        ok.remove_header(name);
    }
    let ok: OkHttpResponse = ok.build();
    let mut response = CheckResponse::with_status(Status::ok(""));
    response.set_http_response(ok);
    response
}

#[tonic::async_trait]
impl Authorization for ExtAuthz {
    async fn check(
        &self,
        request: Request<CheckRequest>,
    ) -> Result<Response<CheckResponse>, Status> {
        let check = request.into_inner();
        let Some(http) = check
            .attributes
            .as_ref()
            .and_then(|a| a.request.as_ref())
            .and_then(|r| r.http.as_ref())
        else {
            return Ok(Response::new(denied(&Refusal::refused(
                "the check describes no HTTP request (`attributes.request.http`)".into(),
            ))));
        };
        // The caller's certified identity, when Envoy terminated mutual TLS:
        // the principal of its certificate. It replaces `x-subject`, which
        // the caller could write; with the sidecar's own TLS configured,
        // only a principal names a subject.
        let principal = check
            .attributes
            .as_ref()
            .and_then(|a| a.source.as_ref())
            .map(|peer| peer.principal.trim())
            .filter(|p| !p.is_empty());
        let certified_subject = match principal {
            Some(principal) => Some(principal),
            None if self.require_principal => Some(""),
            None => None,
        };
        let parent = self
            .gate
            .parent(|| purposegate_runtime::telemetry::parent_context_of(&http.headers));
        let (judgement, rewrite) = judge_described(self, http, certified_subject, &parent).await;
        let response = match judgement {
            Enforcement::LetThrough(permit) => let_through(&permit, rewrite),
            Enforcement::Deny(refusal) => denied(&refusal),
        };
        Ok(Response::new(response))
    }
}
