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

use crate::canonical;
use crate::gate::Gate;
use crate::headers::{self, Stated};
use crate::intercept::{Call, Enforcement, Permit, Refusal, judge, refused_before_asking};
use crate::routes::Routes;

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
}

impl ExtAuthz {
    pub fn new(gate: Gate, routes: Routes, require_principal: bool) -> Self {
        ExtAuthz {
            gate,
            routes,
            require_principal,
        }
    }
}

fn denied(refusal: &Refusal) -> CheckResponse {
    let mut http = DeniedHttpResponseBuilder::new();
    http.set_http_status(HttpStatusCode::Forbidden);
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

/// Judges the request Envoy describes, as the proxy would judge it.
async fn judge_described(
    authz: &ExtAuthz,
    http: &HttpRequest,
    certified_subject: Option<&str>,
    parent: &opentelemetry::Context,
) -> (Enforcement, Vec<String>) {
    let headers = described_headers(http);
    let header = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .and_then(|(_, v)| std::str::from_utf8(v).ok())
            .unwrap_or("")
    };
    // Spellings of decided headers (and forged `x-purposegate-*`) Envoy
    // must remove before the app sees them.
    let reserved: Vec<String> = headers
        .iter()
        .map(|(n, _)| n.to_ascii_lowercase())
        .filter(|n| headers::is_reserved(n))
        .collect();
    let raw_path = http.path.split('?').next().unwrap_or("");
    let refused = |reason: String| {
        refused_before_asking(
            &authz.gate,
            parent,
            header(headers::PURPOSE),
            raw_path,
            Refusal::refused(reason),
        )
    };
    // Envoy forwards the path it has, not ours: only a path that is
    // already canonical can be judged as the one the app will get.
    let path = match canonical::path(raw_path) {
        Err(ambiguous) => return (refused(ambiguous.to_string()), reserved),
        Ok(path) if path != raw_path => {
            return (
                refused(format!(
                    "the request path `{raw_path}` is not in canonical form (`{path}`); configure Envoy with normalize_path, merge_slashes and path_with_escaped_slashes_action: REJECT_REQUEST"
                )),
                reserved,
            );
        }
        Ok(path) => path,
    };
    if http
        .path
        .split_once('?')
        .is_some_and(|(_, query)| canonical::query_overrides_method(query))
    {
        return (
            refused(
                "the query names `_method`, which would make the app run another method than the one judged; it is refused"
                    .to_string(),
            ),
            reserved,
        );
    }
    let stated = match Stated::read(headers.iter().copied()) {
        Ok(stated) => stated,
        Err(unreadable) => return (refused(unreadable.to_string()), reserved),
    };
    let table = authz.routes.table(
        &path,
        header("content-type").starts_with("application/grpc"),
    );
    let baggage = header("baggage");
    let call = Call {
        table,
        path: &path,
        method: &http.method,
        stated: &stated,
        certified_subject,
        baggage: if baggage.is_empty() {
            Vec::new()
        } else {
            vec![baggage]
        },
        issue_context: false,
    };
    (
        judge(&authz.gate, &authz.routes, &call, parent).await,
        reserved,
    )
}

/// Envoy's answer for a call that goes through: the decided values set,
/// every other spelling of them removed.
fn let_through(permit: &Permit, reserved: Vec<String>) -> CheckResponse {
    let decided = permit.decided_headers();
    let mut ok = OkHttpResponseBuilder::new();
    for (name, value) in &decided {
        ok.add_header(
            *name,
            value.clone(),
            Some(HeaderAppendAction::OverwriteIfExistsOrAdd),
            false,
        );
    }
    let mut remove: Vec<String> = Vec::new();
    for name in reserved {
        // Only what is not set again: Envoy may remove after it sets.
        let decided_now = decided.iter().any(|(n, _)| *n == name);
        let forged = headers::is_own(&name);
        let keep_as_stated = permit.request.is_none() && !forged;
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
        let (judgement, reserved) = judge_described(self, http, certified_subject, &parent).await;
        let response = match judgement {
            Enforcement::LetThrough(permit) => let_through(&permit, reserved),
            Enforcement::Deny(refusal) => denied(&refusal),
        };
        Ok(Response::new(response))
    }
}
