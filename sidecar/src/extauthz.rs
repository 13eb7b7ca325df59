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
    Authorization, CheckRequest, CheckResponse, DeniedHttpResponse, HttpStatusCode, OkHttpResponse,
};
use envoy_types::ext_authz::v3::{
    CheckResponseExt, DeniedHttpResponseBuilder, OkHttpResponseBuilder,
};
use tonic::{Request, Response, Status};

use crate::gate::Gate;
use crate::intercept::{Call, Denial, Judgement, judge};
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

fn denied(denial: &Denial) -> CheckResponse {
    let mut http = DeniedHttpResponseBuilder::new();
    http.set_http_status(HttpStatusCode::Forbidden);
    for (name, value) in denial.headers() {
        http.add_header(name, value, None, false);
    }
    http.set_body(format!("{}: {}\n", denial.decision, denial.reason));
    let http: DeniedHttpResponse = http.build();
    let mut response = CheckResponse::with_status(Status::permission_denied(denial.reason.clone()));
    response.set_http_response(http);
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
            return Ok(Response::new(denied(&Denial::refused(
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
        // Envoy sends header names lower-cased.
        let header = |name: &str| -> String {
            http.headers
                .get(name)
                .map(|v| v.trim().to_string())
                .unwrap_or_default()
        };
        let path = http.path.split('?').next().unwrap_or("");
        let call = Call {
            grpc: header("content-type").starts_with("application/grpc"),
            path,
            method: &http.method,
            header: &header,
            certified_subject,
        };
        let parent = self
            .gate
            .parent(|| purposegate_server::telemetry::parent_context_of(&http.headers));
        let response = match judge(&self.gate, &self.routes, &call, &parent).await {
            Judgement::LetThrough => {
                let ok: OkHttpResponse = OkHttpResponseBuilder::new().build();
                let mut response = CheckResponse::with_status(Status::ok(""));
                response.set_http_response(ok);
                response
            }
            Judgement::Deny(denial) => denied(&denial),
        };
        Ok(Response::new(response))
    }
}
