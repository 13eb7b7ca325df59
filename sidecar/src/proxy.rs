//! The proxy in front of the app: HTTP/2 (gRPC, h2c) and HTTP/1.1 on
//! `--listen`, forwarded to `--upstream` only on an enforced PERMIT.
//!
//! The request path, in order (each step refuses what it cannot read as
//! one thing, so what is judged is what the app gets):
//! 1. the listener's limits (`purposegate_runtime::listen`): connections,
//!    timeouts, header size, streams;
//! 2. a request that came back through this very sidecar is refused (a
//!    loop would exhaust it);
//! 3. the path is made canonical ([`crate::canonical`]); ambiguous paths
//!    are refused;
//! 4. the decided headers are read once ([`crate::headers`]): repeated or
//!    unreadable ones are refused;
//! 5. the route table is chosen by transport and shape, the route by the
//!    canonical path ([`crate::routes`]);
//! 6. the gate decides (cache, then PDP);
//! 7. on PERMIT (or `--dry-run`) the call is streamed to the app over a
//!    pooled connection in the upstream's own protocol, with the canonical
//!    path, the decided header values and the permit's obligations; bodies
//!    and trailers untouched. A supervisor ends it if a new revision (or
//!    the next look after `--max-stream-age`) no longer permits it.
//!    Otherwise the caller gets `PERMISSION_DENIED` (gRPC) or 403 (HTTP)
//!    with the reason, rule ids and revision in `x-purposegate-*` headers;
//!    the app never sees the call.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Request, Response, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tracing::warn;

use purposegate_runtime::listen::{Face, Limits, Peer, Protocols, Served};
use purposegate_runtime::telemetry::parent_context;
use purposegate_runtime::tls::ServerTls;

use crate::canonical;
use crate::gate::Gate;
use crate::headers::{self, Stated};
use crate::intercept::{Call, Enforcement, Permit, Refusal, judge, refused_before_asking};
use crate::routes::{Routes, Table};
use crate::supervise::{GuardedRequest, Revoked, Supervised, Supervisor};

mod reply;

use reply::{deny, refusal_trailers, too_many, upstream_error};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The header that marks a request this sidecar forwarded, so it knows
/// the request if it comes back (an upstream that points at the proxy).
const VIA: &str = "x-purposegate-via";

/// Which protocol the app speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum UpstreamProtocol {
    /// gRPC calls over HTTP/2 (prior knowledge), the rest over HTTP/1.1.
    Auto,
    /// Everything over HTTP/1.1.
    Http1,
    /// Everything over HTTP/2 (prior knowledge).
    Http2,
}

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
    protocol: UpstreamProtocol,
    supervisor: Supervisor,
    /// Places for calls in flight (`--max-calls`), from the decision until
    /// both directions end.
    calls: Arc<tokio::sync::Semaphore>,
    max_calls: usize,
    /// This process's mark in [`VIA`].
    via: HeaderValue,
    http1: Client<HttpConnector, Outgoing>,
    http2: Client<HttpConnector, Outgoing>,
}

/// A request body on its way to the app.
type Outgoing = GuardedRequest<Incoming>;

/// Idle connections to the app kept for reuse, and for how long.
const POOL_IDLE_PER_HOST: usize = 64;
const POOL_IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

impl Proxy {
    pub fn new(
        gate: Gate,
        routes: Routes,
        upstream: Uri,
        protocol: UpstreamProtocol,
        supervisor: Supervisor,
        max_calls: usize,
    ) -> Self {
        let max_calls = max_calls.max(1);
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(std::time::Duration::from_secs(5)));
        let http1 = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(POOL_IDLE_PER_HOST)
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .build(connector.clone());
        let http2 = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(POOL_IDLE_PER_HOST)
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .http2_only(true)
            .build(connector);
        Proxy {
            inner: Arc::new(Inner {
                gate,
                routes,
                upstream,
                protocol,
                supervisor,
                calls: Arc::new(tokio::sync::Semaphore::new(max_calls)),
                max_calls,
                via: HeaderValue::from_str(&instance_mark())
                    .unwrap_or_else(|_| HeaderValue::from_static("purposegate")),
                http1,
                http2,
            }),
        }
    }

    /// Serves `listener` within `limits` until `shutdown`; with `tls`
    /// only TLS connections are served, and a caller's verified client
    /// certificate names its subject.
    pub fn serve(
        self,
        listener: tokio::net::TcpListener,
        tls: Option<ServerTls>,
        limits: Limits,
        shutdown: tokio::sync::watch::Receiver<bool>,
        refused: prometheus_client::metrics::counter::Counter,
    ) -> Served {
        let face = Face {
            name: "proxy",
            limits,
            protocols: Protocols::Both,
            tls,
            refused,
        };
        purposegate_runtime::listen::serve(listener, face, shutdown, move |peer| {
            let proxy = self.clone();
            let peer = Arc::new(peer.clone());
            hyper::service::service_fn(move |req| {
                let proxy = proxy.clone();
                let peer = peer.clone();
                async move { Ok::<_, Infallible>(proxy.handle(req, &peer).await) }
            })
        })
    }

    /// One call from `peer`: judged, then forwarded or refused. On a TLS
    /// proxy, the peer's verified certificate names its subject.
    pub async fn handle(&self, req: Request<Incoming>, peer: &Peer) -> ProxyResponse {
        let certified = peer.subject.as_deref();
        let Ok(place) = self.inner.calls.clone().try_acquire_owned() else {
            return too_many(
                is_grpc_content_type(req.headers()),
                &format!(
                    "{} calls are in flight through the sidecar (--max-calls); try again",
                    self.inner.max_calls
                ),
            );
        };
        let place = Arc::new(place);
        let reply_grpc = is_grpc_content_type(req.headers());
        let gate = &self.inner.gate;
        let parent = gate.parent(|| parent_context(req.headers()));
        let purpose = || {
            req.headers()
                .get(headers::PURPOSE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
        };
        let raw_path = req.uri().path().to_string();
        let refused = |reason: String| {
            refused_before_asking(
                gate,
                &parent,
                purpose(),
                &raw_path,
                Refusal::refused(reason),
            )
        };
        let judgement = if req
            .headers()
            .get_all(VIA)
            .iter()
            .any(|v| v == self.inner.via)
        {
            // Never under --dry-run either: the loop would go on.
            return deny(
                reply_grpc,
                &Refusal::refused(
                    "the call came back through this sidecar: its upstream points at itself"
                        .to_string(),
                ),
            );
        } else if req.method() == Method::CONNECT {
            refused("CONNECT is not proxied".to_string())
        } else if req
            .uri()
            .query()
            .is_some_and(canonical::query_overrides_method)
        {
            refused(
                "the query names `_method`, which would make the app run another method than the one judged; it is refused"
                    .to_string(),
            )
        } else {
            match (
                canonical::path(&raw_path),
                Stated::read(
                    req.headers()
                        .iter()
                        .map(|(n, v)| (n.as_str(), v.as_bytes())),
                ),
                req.headers()
                    .get_all("baggage")
                    .iter()
                    .map(|v| v.to_str().ok())
                    .collect::<Option<Vec<&str>>>(),
            ) {
                (Err(ambiguous), _, _) => refused(ambiguous.to_string()),
                (_, Err(unreadable), _) => refused(unreadable.to_string()),
                // A purpose context hidden where the sidecar cannot read
                // it could still reach the app: unreadable baggage is
                // refused, not ignored.
                (_, _, None) => refused(
                    "header `baggage` holds bytes that are not visible ASCII; it is refused"
                        .to_string(),
                ),
                (Ok(path), Ok(stated), Some(baggage)) => {
                    let table = self.inner.routes.table(&path, reply_grpc);
                    let call = Call {
                        table,
                        path: &path,
                        method: req.method().as_str(),
                        stated: &stated,
                        certified_subject: certified,
                        baggage,
                        issue_context: true,
                    };
                    match judge(gate, &self.inner.routes, &call, &parent).await {
                        Enforcement::LetThrough(permit) => {
                            return self
                                .forward(req, peer, place, Some((&path, table)), permit)
                                .await;
                        }
                        denied => denied,
                    }
                }
            }
        };
        match judgement {
            // Under --dry-run a call refused before asking goes on as it came.
            Enforcement::LetThrough(permit) => self.forward(req, peer, place, None, permit).await,
            Enforcement::Deny(refusal) => deny(reply_grpc, &refusal),
        }
    }

    /// Streams the call to the app and its answer back. `canonical` is the
    /// path judged and its table (`None` only for a call refused before
    /// asking that `--dry-run` lets through as it came).
    async fn forward(
        &self,
        req: Request<Incoming>,
        peer: &Peer,
        place: Arc<tokio::sync::OwnedSemaphorePermit>,
        canonical: Option<(&str, Table)>,
        permit: Box<Permit>,
    ) -> ProxyResponse {
        let reply_grpc = is_grpc_content_type(req.headers());
        // Only gRPC over HTTP/2 can be told in trailers that its call ended;
        // HTTP/1.1 (and grpc-web) callers see it reset.
        let caller_takes_trailers = req.version() == hyper::Version::HTTP_2;
        let (mut parts, body) = req.into_parts();
        let path_and_query = match canonical {
            Some((path, _)) => canonical::request_target(path, parts.uri.query()),
            None => parts
                .uri
                .path_and_query()
                .map_or_else(|| "/".to_string(), ToString::to_string),
        };
        let mut uri = self.inner.upstream.clone().into_parts();
        uri.path_and_query = path_and_query.parse().ok();
        parts.uri = match Uri::from_parts(uri) {
            Ok(u) => u,
            Err(_) => return upstream_error(reply_grpc, "cannot build the upstream address"),
        };
        let grpc = canonical.map_or(reply_grpc, |(_, table)| table == Table::Grpc);
        strip_hop_by_hop(&mut parts.headers, grpc);
        // What the app reads as the question is what was decided: every
        // spelling of a decided header goes, the decided values come back;
        // what a proxy would say about the call is the sidecar's to say.
        // (A call let through by --dry-run without a question keeps what
        // it stated; only the sidecar's own headers never pass.)
        let reserved_name: fn(&str) -> bool = if permit.request.is_some() {
            |name| headers::is_reserved(name) || headers::is_forwarding(name)
        } else {
            |name| headers::is_own(name) || headers::is_forwarding(name)
        };
        let reserved: Vec<HeaderName> = parts
            .headers
            .keys()
            .filter(|name| reserved_name(name.as_str()))
            .cloned()
            .collect();
        for name in reserved {
            parts.headers.remove(name);
        }
        for (name, value) in permit.decided_headers() {
            if let Ok(value) = HeaderValue::from_str(&value) {
                parts.headers.insert(HeaderName::from_static(name), value);
            }
        }
        // The permit's purpose context goes on with the call, in its
        // baggage, for the next hop to inherit (replacing one it came with).
        if let Some(token) = permit
            .answer
            .as_ref()
            .map(|a| a.purpose_context.as_str())
            .filter(|t| !t.is_empty())
        {
            let merged = purposegate_proto::context::with_entry(
                parts
                    .headers
                    .get_all("baggage")
                    .iter()
                    .filter_map(|v| v.to_str().ok()),
                token,
            );
            if let Ok(value) = HeaderValue::from_str(&merged) {
                parts.headers.insert("baggage", value);
            }
        }
        if let Ok(ip) = HeaderValue::from_str(&peer.addr.ip().to_string()) {
            parts.headers.insert("x-forwarded-for", ip);
        }
        parts.headers.insert(
            "x-forwarded-proto",
            HeaderValue::from_static(if peer.subject.is_some() {
                "https"
            } else {
                "http"
            }),
        );
        announce_trailers_without_reserved(&mut parts.headers);
        parts.headers.append(VIA, self.inner.via.clone());
        // The client sets the version and authority of its own connection.
        parts.version = hyper::Version::HTTP_11;
        parts.headers.remove(hyper::header::HOST);
        let mut supervised = match (&permit.request, &permit.answer) {
            (Some(request), Some(answer)) if !self.inner.gate.dry_run => {
                Some(self.inner.supervisor.watch(request.clone(), answer))
            }
            _ => None,
        };
        let outgoing = Request::from_parts(
            parts,
            GuardedRequest::new(body, supervised.clone(), place.clone()),
        );
        let http2 = match self.inner.protocol {
            UpstreamProtocol::Auto => grpc,
            UpstreamProtocol::Http1 => false,
            UpstreamProtocol::Http2 => true,
        };
        let client = if http2 {
            &self.inner.http2
        } else {
            &self.inner.http1
        };
        let response = match supervised.as_mut() {
            Some(watch) => tokio::select! {
                response = client.request(outgoing) => response,
                refusal = watch.ended() => return deny(reply_grpc, &refusal),
            },
            None => client.request(outgoing).await,
        };
        match response {
            Ok(response) => {
                let trailers = caller_takes_trailers
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
                    grpc_trailers: trailers,
                    _place: place,
                })
            }
            Err(e) => {
                warn!(error = %e, upstream = %self.inner.upstream, "the app cannot be reached");
                upstream_error(reply_grpc, "the app behind the sidecar cannot be reached")
            }
        }
    }
}

/// A mark of this process, different for each run.
fn instance_mark() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    format!("{:016x}", h.finish())
}

pub type ProxyResponse = Response<ProxyBody>;

/// A response the proxy sends: the app's, streamed and supervised, or its
/// own.
#[derive(Debug)]
pub enum ProxyBody {
    Upstream {
        body: Incoming,
        /// Ends the call when its permit no longer holds.
        supervised: Option<Supervised>,
        /// Whether an ended call is told in gRPC trailers (gRPC over
        /// HTTP/2), rather than by a reset.
        grpc_trailers: bool,
        /// The call's place among those in flight.
        _place: Arc<tokio::sync::OwnedSemaphorePermit>,
    },
    Own(Full<Bytes>),
    /// Nothing more: the call was ended.
    Ended,
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match &mut *self {
            ProxyBody::Upstream {
                body,
                supervised,
                grpc_trailers,
                ..
            } => {
                if let Some(watch) = supervised.as_mut() {
                    if let Poll::Ready(refusal) = watch.poll_ended(cx) {
                        let grpc = *grpc_trailers;
                        // Dropping the app's body resets its stream.
                        *self = ProxyBody::Ended;
                        return Poll::Ready(Some(if grpc {
                            Ok(Frame::trailers(refusal_trailers(&refusal)))
                        } else {
                            // HTTP has no way to say it mid-body: the
                            // stream (HTTP/2) or connection (HTTP/1.1) is
                            // reset.
                            Err(Box::new(Revoked(refusal.reason)))
                        }));
                    }
                }
                match Pin::new(body).poll_frame(cx) {
                    Poll::Ready(None) => {
                        *self = ProxyBody::Ended;
                        Poll::Ready(None)
                    }
                    Poll::Ready(Some(frame)) => Poll::Ready(Some(frame.map_err(Into::into))),
                    Poll::Pending => Poll::Pending,
                }
            }
            ProxyBody::Own(full) => Pin::new(full)
                .poll_frame(cx)
                .map(|f| f.map(|f| f.map_err(|never| match never {}))),
            ProxyBody::Ended => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Upstream { body, .. } => body.is_end_stream(),
            ProxyBody::Own(full) => full.is_end_stream(),
            ProxyBody::Ended => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Upstream { body, .. } => body.size_hint(),
            ProxyBody::Own(full) => full.size_hint(),
            ProxyBody::Ended => SizeHint::with_exact(0),
        }
    }
}

fn is_grpc_content_type(headers: &HeaderMap) -> bool {
    headers
        .get(hyper::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/grpc"))
}

/// Keeps reserved names out of `trailer`, which announces the trailers a
/// request will end with (the trailers themselves are filtered as they
/// pass, by [`GuardedRequest`]).
fn announce_trailers_without_reserved(headers: &mut HeaderMap) {
    let announced: Vec<String> = headers
        .get_all(hyper::header::TRAILER)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|name| !name.is_empty() && !headers::is_reserved(name))
        .map(str::to_string)
        .collect();
    headers.remove(hyper::header::TRAILER);
    if let Ok(value) = HeaderValue::from_str(&announced.join(", ")) {
        if !announced.is_empty() {
            headers.insert(hyper::header::TRAILER, value);
        }
    }
}

/// Removes the headers that belong to one connection, including those the
/// caller names in `connection`.
fn strip_hop_by_hop(headers: &mut HeaderMap, grpc: bool) {
    let nominated: Vec<HeaderName> = headers
        .get_all(hyper::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in nominated {
        headers.remove(name);
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_a_caller_names_in_connection_are_not_passed_on() {
        let mut h = HeaderMap::new();
        h.insert(
            "connection",
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("te", HeaderValue::from_static("trailers"));
        h.insert("accept", HeaderValue::from_static("*/*"));
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h.len(), 1, "{h:?}");
        assert!(h.contains_key("accept"));
    }
}
