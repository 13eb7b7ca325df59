//! The proxy in front of the app: HTTP/2 (gRPC, h2c) and HTTP/1.1 on
//! `--listen`, forwarded to `--upstream` only on an enforced PERMIT.
//!
//! The request path, in order:
//! 1. match the call to a route (gRPC method or HTTP path and method);
//! 2. build the `CheckRequest` from the route and the `x-*` headers;
//! 3. ask the gate (cache, then PDP);
//! 4. on PERMIT (or `--dry-run`) stream the call to the app over a pooled
//!    connection, bodies and trailers untouched; otherwise answer
//!    `PERMISSION_DENIED` (gRPC) or 403 (HTTP) with the reason, rule ids and
//!    revision in `x-purposegate-*` headers. The app never sees it.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use hyper::{Request, Response, StatusCode, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use purposegate_proto::v1 as pb;
use tracing::{debug, info, warn};

use purposegate_server::telemetry::parent_context;

use crate::gate::{Gate, Verdict};
use crate::routes::Routes;

type Body = Either<Incoming, Full<Bytes>>;

/// Everything the proxy needs per call. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Proxy {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    gate: Gate,
    routes: Routes,
    upstream: Uri,
    http1: Client<HttpConnector, Incoming>,
    http2: Client<HttpConnector, Incoming>,
}

/// Why a call is not let through, before or after asking.
#[derive(Debug)]
struct Denial {
    decision: &'static str,
    reason: String,
    rule_ids: Vec<String>,
    revision: String,
}

impl Proxy {
    pub fn new(gate: Gate, routes: Routes, upstream: Uri) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let http1 = Client::builder(TokioExecutor::new()).build(connector.clone());
        let http2 = Client::builder(TokioExecutor::new())
            .http2_only(true)
            .build(connector);
        Proxy {
            inner: Arc::new(Inner {
                gate,
                routes,
                upstream,
                http1,
                http2,
            }),
        }
    }

    /// Accepts connections on `listener` until the process ends.
    pub fn serve(self, listener: tokio::net::TcpListener) {
        tokio::spawn(async move {
            loop {
                let (stream, peer) = match listener.accept().await {
                    Ok(s) => s,
                    Err(e) => {
                        warn!(error = %e, "proxy accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let proxy = self.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let proxy = proxy.clone();
                        async move { Ok::<_, Infallible>(proxy.handle(req, peer).await) }
                    });
                    if let Err(e) =
                        hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                            .serve_connection(TokioIo::new(stream), service)
                            .await
                    {
                        debug!(error = %e, %peer, "proxy connection ended");
                    }
                });
            }
        });
    }

    async fn handle(&self, req: Request<Incoming>, _peer: SocketAddr) -> Response<Body> {
        let grpc = is_grpc(req.headers());
        let path = req.uri().path().to_string();
        let method = req.method().as_str().to_string();
        let parent = parent_context(req.headers());
        let verdict = match self.check_request(&req, grpc, &path, &method) {
            Ok(check) => Ok(self.inner.gate.decide(check, &parent).await),
            Err(denial) => {
                let purpose = req
                    .headers()
                    .get("x-purpose")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                self.inner.gate.refused(&parent, purpose, &denial.reason);
                Err(denial)
            }
        };
        let denial = match &verdict {
            Ok(v) => denial_of(v),
            Err(d) => Some(Denial {
                decision: d.decision,
                reason: d.reason.clone(),
                rule_ids: Vec::new(),
                revision: String::new(),
            }),
        };
        match denial {
            None => self.forward(req, grpc).await,
            Some(denial) if self.inner.gate.dry_run => {
                info!(
                    %path,
                    decision = denial.decision,
                    reason = %denial.reason,
                    enforced = false,
                    "dry run: a call that would be denied goes through"
                );
                self.forward(req, grpc).await
            }
            Some(denial) => {
                info!(%path, decision = denial.decision, reason = %denial.reason, "denied");
                deny(grpc, &denial)
            }
        }
    }

    /// The question the call asks, from its route and headers.
    fn check_request(
        &self,
        req: &Request<Incoming>,
        grpc: bool,
        path: &str,
        method: &str,
    ) -> Result<pb::CheckRequest, Denial> {
        let refuse = |reason: String| Denial {
            decision: "DENY",
            reason,
            rule_ids: Vec::new(),
            revision: String::new(),
        };
        let route = if grpc {
            self.inner.routes.grpc(path)
        } else {
            self.inner.routes.http(method, path)
        };
        let Some(route) = route else {
            return Err(refuse(format!(
                "no route covers {} `{path}`; calls on no route are denied",
                if grpc { "gRPC method" } else { method }
            )));
        };
        let headers = req.headers();
        let header = |name: &str| -> String {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .trim()
                .to_string()
        };
        let purpose = header("x-purpose");
        if purpose.is_empty() {
            return Err(refuse(
                "the call states no purpose (header `x-purpose`); it is denied".to_string(),
            ));
        }
        let deidentification = match route.deidentification {
            Some(fixed) => fixed,
            None => match header("x-data-deidentification").as_str() {
                "" => 0,
                name => match purposegate_server::engine::Deidentification::parse(name) {
                    Some(state) => crate::routes::api_number(state),
                    None => {
                        return Err(refuse(format!(
                            "header `x-data-deidentification`: unknown state `{name}`"
                        )));
                    }
                },
            },
        };
        let group_size = match header("x-data-group-size").as_str() {
            "" => 0,
            k => k.parse::<u64>().map_err(|_| {
                refuse(format!(
                    "header `x-data-group-size`: `{k}` is not a whole number"
                ))
            })?,
        };
        let list = |value: String| -> Vec<String> {
            value
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect()
        };
        Ok(pb::CheckRequest {
            subject: Some(pb::Subject {
                id: header("x-subject"),
                tenant: header("x-tenant"),
                roles: list(header("x-subject-roles")),
            }),
            resource: Some(pb::Resource {
                category: route.category.clone(),
                owner_tenant: route
                    .owner_tenant
                    .clone()
                    .unwrap_or_else(|| header("x-data-tenant")),
                deidentification,
                group_size,
                origin: list(header("x-data-origin")),
                attributes: route
                    .attributes
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            }),
            purpose,
            action: if grpc {
                path.rsplit('/').next().unwrap_or("").to_string()
            } else {
                method.to_string()
            },
            context: Some(pb::Context {
                customer_instruction: header("x-customer-instruction"),
                attributes: Default::default(),
            }),
            supported_obligations: list(header("x-supported-obligations")),
            request_id: header("x-request-id"),
        })
    }

    /// Streams the call to the app and its answer back.
    async fn forward(&self, req: Request<Incoming>, grpc: bool) -> Response<Body> {
        let (mut parts, body) = req.into_parts();
        let path_and_query = parts
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_string();
        let mut uri = self.inner.upstream.clone().into_parts();
        uri.path_and_query = path_and_query.parse().ok();
        parts.uri = match Uri::from_parts(uri) {
            Ok(u) => u,
            Err(_) => return upstream_error(grpc, "cannot build the upstream address"),
        };
        strip_hop_by_hop(&mut parts.headers, grpc);
        let http2 = parts.version == hyper::Version::HTTP_2;
        // The client sets the version and authority of its own connection.
        parts.version = hyper::Version::HTTP_11;
        parts.headers.remove(hyper::header::HOST);
        let outgoing = Request::from_parts(parts, body);
        let client = if http2 || grpc {
            &self.inner.http2
        } else {
            &self.inner.http1
        };
        match client.request(outgoing).await {
            Ok(response) => response.map(Either::Left),
            Err(e) => {
                warn!(error = %e, upstream = %self.inner.upstream, "the app cannot be reached");
                upstream_error(grpc, "the app behind the sidecar cannot be reached")
            }
        }
    }
}

/// The denial a verdict amounts to, if it is not an enforced PERMIT.
fn denial_of(verdict: &Verdict) -> Option<Denial> {
    match &verdict.answer {
        Ok(answer) if answer.decision() == pb::Decision::Permit => None,
        Ok(answer) => Some(Denial {
            decision: answer.decision().as_str_name(),
            reason: answer.reason.clone(),
            rule_ids: answer.rule_ids.clone(),
            revision: answer.policy_revision.clone(),
        }),
        Err(status) => Some(Denial {
            decision: "DENY",
            reason: format!(
                "the decision point could not answer ({:?}); nothing is permitted without it",
                status.code()
            ),
            rule_ids: Vec::new(),
            revision: String::new(),
        }),
    }
}

fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(hyper::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/grpc"))
}

fn strip_hop_by_hop(headers: &mut HeaderMap, grpc: bool) {
    for name in [
        "connection",
        "keep-alive",
        "proxy-connection",
        "transfer-encoding",
        "upgrade",
    ] {
        headers.remove(name);
    }
    // gRPC needs `te: trailers`; plain HTTP/1.1 must not pass `te` on.
    if !grpc {
        headers.remove("te");
    }
}

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

fn deny(grpc: bool, denial: &Denial) -> Response<Body> {
    let mut response = if grpc {
        // A trailers-only gRPC response: status in the headers, no body.
        let mut r = Response::new(Either::Right(Full::new(Bytes::new())));
        let h = r.headers_mut();
        h.insert(
            hyper::header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        h.insert("grpc-status", HeaderValue::from_static("7"));
        h.insert("grpc-message", grpc_message(&denial.reason));
        r
    } else {
        let mut r = Response::new(Either::Right(Full::new(Bytes::from(format!(
            "{}: {}\n",
            denial.decision, denial.reason
        )))));
        *r.status_mut() = StatusCode::FORBIDDEN;
        r.headers_mut().insert(
            hyper::header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        r
    };
    let h = response.headers_mut();
    for (name, value) in [
        ("x-purposegate-decision", header_text(denial.decision)),
        ("x-purposegate-reason", header_text(&denial.reason)),
        (
            "x-purposegate-rule-ids",
            header_text(&denial.rule_ids.join(",")),
        ),
        ("x-purposegate-revision", header_text(&denial.revision)),
    ] {
        h.insert(HeaderName::from_static(name), value);
    }
    response
}

fn upstream_error(grpc: bool, reason: &str) -> Response<Body> {
    if grpc {
        let mut r = Response::new(Either::Right(Full::new(Bytes::new())));
        let h = r.headers_mut();
        h.insert(
            hyper::header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        h.insert("grpc-status", HeaderValue::from_static("14"));
        h.insert("grpc-message", grpc_message(reason));
        r
    } else {
        let mut r = Response::new(Either::Right(Full::new(Bytes::from(format!("{reason}\n")))));
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
