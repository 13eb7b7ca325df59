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

mod call;
pub mod mapping;
mod search;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::http::header;
use axum::middleware;
use axum::response::Response;
use axum::routing::{get, post};
use bytes::Bytes;
use opentelemetry::KeyValue;
use opentelemetry::trace::Span as _;
use opentelemetry_sdk::trace::Span;
use purposegate_runtime::listen::{Face, Served};
use serde_json::Value;
use tokio::sync::watch;
use tracing::info;

use crate::audit::Via;
use crate::decide::{Decider, Logged};
use crate::engine;
use call::{Call, Place, Refusal, echo_request_id, encode, not_allowed, plain, reply};
use mapping::{Asked, Semantic, Source};

/// The body budget, in bodies at `--authzen-max-body`: each request holds
/// what it has sent and its parsed JSON (a few times that), so memory
/// stays bounded in bytes at about this many times the limit.
const REQUESTS_AT_ONCE: usize = 32;

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
    /// Body bytes being read and answered at once, in KiB, shared by
    /// peers.
    bodies: Arc<purposegate_runtime::shares::Shares>,
    /// Where batches and searches run.
    pool: crate::work::WorkPool,
    /// Action search's page tokens and kept answers.
    pages: search::Pages,
}

impl AuthZen {
    pub fn new(
        decider: Decider,
        max_batch: usize,
        max_body: usize,
        base_url: Option<String>,
        tls: bool,
        pool: crate::work::WorkPool,
    ) -> Result<Self, String> {
        // As many bytes as REQUESTS_AT_ONCE bodies at the limit; an
        // eighth of them for one address.
        let kib = (max_body / 1024 + 1).saturating_mul(REQUESTS_AT_ONCE);
        Ok(AuthZen {
            decider,
            max_batch,
            max_body,
            base_url,
            tls,
            bodies: purposegate_runtime::shares::Shares::new(kib, kib / 8),
            pool,
            pages: search::Pages::new()?,
        })
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
                az.answer(req, EVALUATION, AuthZen::evaluation, Place::Inline)
                    .await
            })
            .fallback(post_only),
        )
        .route(
            EVALUATIONS,
            post(|State(az): State<Arc<AuthZen>>, req: Request| async move {
                az.answer(req, EVALUATIONS, AuthZen::evaluations, Place::Pool)
                    .await
            })
            .fallback(post_only),
        )
        .route(
            SEARCH_ACTION,
            post(|State(az): State<Arc<AuthZen>>, req: Request| async move {
                az.answer(req, SEARCH_ACTION, AuthZen::search_action, Place::Pool)
                    .await
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

impl AuthZen {
    /// One evaluation read from `src`, decided on `policy` (or why it could
    /// not be), written to the decision log as `log` says.
    fn decide(
        &self,
        policy: &engine::Policy,
        src: Source<'_>,
        call: &Call,
        span: Option<&mut Span>,
        face: &'static str,
        log: Logged<'_>,
    ) -> Result<mapping::Answer, Refusal> {
        let req = mapping::request(src, Asked::Evaluation, &call.request_id)?;
        req.validate()
            .map_err(|invalid| Refusal::bad(invalid.to_string()))?;
        let via = Via {
            face,
            subject_type: Some(mapping::subject_type(src)?),
        };
        let question = crate::decide::Question {
            req,
            facts: call.facts.clone(),
        };
        let decided = self
            .decider
            .decide(policy, question, call.start, span, via, log);
        Ok(mapping::decision(&decided.evaluation, &decided.reason))
    }

    fn evaluation(&self, call: Call, span: Option<&mut Span>) -> Result<Bytes, Refusal> {
        let policy = self.decider.policy();
        let src = Source::alone(&call.body);
        let log = Logged::Line {
            request_bytes: call.body_bytes,
        };
        let answer = self.decide(&policy, src, &call, span, "authzen.evaluation", log)?;
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
        let mut batch = self
            .decider
            .decision_log()
            .batch("authzen.evaluations", call.body_bytes);
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
                    let log = Logged::In(&mut batch);
                    self.decide(&policy, src, &call, None, "authzen.evaluations", log)
                        .unwrap_or_else(|refusal| mapping::failed(&refusal.message))
                }
            };
            let decision = answer.decision;
            answers.push(answer);
            if semantic.stops_at(decision) {
                break;
            }
        }
        batch.finish();
        encode(&Evaluations {
            evaluations: answers,
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

#[derive(Debug, serde::Serialize)]
struct Metadata {
    policy_decision_point: String,
    access_evaluation_endpoint: String,
    access_evaluations_endpoint: String,
    search_action_endpoint: String,
    capabilities: &'static [&'static str],
    supported_obligations: &'static [&'static str],
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

#[cfg(test)]
mod tests {
    use super::*;

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
