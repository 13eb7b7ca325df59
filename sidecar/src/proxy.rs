//! The proxy in front of the app: HTTP/2 (gRPC, h2c) and HTTP/1.1 on
//! `--listen`, forwarded to `--upstream` only on an enforced PERMIT.
//!
//! The request path, in order (each step refuses what it cannot read as
//! one thing, so what is judged is what the app gets):
//! 1. the listener's limits (`purposegate_runtime::listen`): connections
//!    and each peer's share of them, timeouts, header size, streams;
//! 2. a place among the calls in flight (`--max-calls`), within the
//!    caller's share (`--max-calls-per-peer`);
//! 3. a request that came back through this very sidecar is refused (a
//!    loop would exhaust it);
//! 4. whether the call carries a body ([`carries_body`]);
//! 5. on a route that reads the data subject from a gRPC call's first
//!    request message, that message ([`first`]);
//! 6. the call read as one thing ([`reading`]): body and method,
//!    query, canonical path, decided headers, baggage, table and route;
//! 7. the gate decides (cache, then PDP) ([`judge`]);
//! 8. on PERMIT (or `--dry-run`) the call goes to the app
//!    ([`forward`]) over a connection of the caller's own
//!    ([`upstream`]), with the canonical path, the decided header values
//!    and the permit's obligations, under a supervisor that ends it if a
//!    new revision no longer permits it or it idles; otherwise the caller
//!    gets one of the proxy's own replies ([`reply`]): 403 or
//!    `PERMISSION_DENIED` with the reason, rule ids and revision in
//!    `x-purposegate-*` headers, 400 for a body where none belongs, 503 when
//!    there is no room. The app never sees a refused call.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::{Body, Frame, Incoming};
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use hyper::{Request, Response, Uri};

use purposegate_runtime::listen::{Face, Limits, Peer, Protocols, Served};
use purposegate_runtime::shares::{Account, Full, Share, Shares};
use purposegate_runtime::telemetry::parent_context;
use purposegate_runtime::tls::ServerTls;

use crate::canonical;
use crate::gate::Gate;
use crate::headers;
use crate::intercept::{Call, Enforcement, judge, refused_before_asking};
use crate::reading::{self, Described};
use crate::refusal::Refusal;
use crate::routes::Routes;
use crate::subject::{FirstMessage, SubjectFrom};
use crate::supervise::Supervisor;

mod body;
mod first;
mod forward;
mod reply;
pub mod upstream;

pub use body::ProxyBody;
use reply::{deny, too_many};
use upstream::{AppConnections, Upstream};

/// The header that marks a request this sidecar forwarded, so it knows
/// the request if it comes back (an upstream that points at the proxy).
const VIA: HeaderName = HeaderName::from_static("x-purposegate-via");

/// How long the proxy reads an HTTP/2 stream that did not end with its
/// headers, to tell a body from an empty end (for methods without one).
const BODY_LOOK: Duration = Duration::from_secs(1);

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

/// How many calls the proxy carries at once, and how many of them one
/// peer address may hold.
#[derive(Debug, Clone, Copy)]
pub struct CallLimits {
    pub max_calls: usize,
    pub max_calls_per_peer: usize,
    /// Calls at once on one caller's HTTP/2 connection
    /// (`--max-concurrent-streams`).
    pub max_streams_per_connection: u32,
    /// The largest first request message read for its data subject
    /// (`--max-first-message-bytes`).
    pub max_first_message_bytes: usize,
    /// How long that message may take to come (`--header-read-timeout`).
    pub first_message_within: Duration,
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
    upstream: Upstream,
    supervisor: Supervisor,
    /// Places for calls in flight, from the decision until both
    /// directions end, and each peer's share of them.
    calls: Arc<Shares>,
    /// This process's mark in [`VIA`].
    via: HeaderValue,
    limits: CallLimits,
}

/// One caller connection, as its calls see it: who it is, its account of
/// places among the calls in flight, and its own connections to the app.
#[derive(Debug)]
pub struct Downstream {
    pub peer: Peer,
    /// The caller's account with `--max-calls`, found once per connection:
    /// each call takes its place without a lock.
    calls: Account,
    apps: AppConnections,
    /// The caller's address as `x-forwarded-for` says it, written once per
    /// connection rather than on every call.
    forwarded_for: Option<HeaderValue>,
}

impl Downstream {
    /// A connection from `peer`, whose calls take their places from
    /// `calls`.
    pub fn new(peer: Peer, calls: &Arc<Shares>) -> Self {
        let forwarded_for = HeaderValue::from_str(&peer.addr.ip().to_string()).ok();
        Downstream {
            calls: calls.account(peer.addr.ip()),
            peer,
            apps: AppConnections::default(),
            forwarded_for,
        }
    }
}

pub type ProxyResponse = Response<ProxyBody>;

impl Proxy {
    pub fn new(
        gate: Gate,
        routes: Routes,
        upstream: Uri,
        protocol: UpstreamProtocol,
        supervisor: Supervisor,
        limits: CallLimits,
    ) -> Self {
        Proxy {
            inner: Arc::new(Inner {
                gate,
                routes,
                upstream: Upstream::new(upstream, protocol, limits.max_streams_per_connection),
                supervisor,
                calls: Shares::new(limits.max_calls, limits.max_calls_per_peer),
                via: HeaderValue::from_str(&instance_mark())
                    .unwrap_or_else(|_| HeaderValue::from_static("purposegate")),
                limits,
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
            let downstream = Arc::new(Downstream::new(peer.clone(), &proxy.inner.calls));
            hyper::service::service_fn(move |req| {
                let proxy = proxy.clone();
                let downstream = downstream.clone();
                async move { Ok::<_, Infallible>(proxy.handle(req, &downstream).await) }
            })
        })
    }

    /// One call on `downstream`: judged, then forwarded or refused.
    pub async fn handle(&self, req: Request<Incoming>, downstream: &Downstream) -> ProxyResponse {
        match downstream.calls.take() {
            // The call's own steps, boxed: a call refused for want of
            // room costs only this small future, however many come.
            Ok(place) => Box::pin(self.admitted(req, downstream, Arc::new(place))).await,
            Err(full) => too_many(is_grpc_content_type(req.headers()), &self.no_room(full)),
        }
    }

    /// A call that has its place: judged, then forwarded or refused.
    async fn admitted(
        &self,
        mut req: Request<Incoming>,
        downstream: &Downstream,
        place: Arc<Share>,
    ) -> ProxyResponse {
        let reply_grpc = is_grpc_content_type(req.headers());
        if self.came_back(req.headers()) {
            // Never under --dry-run either: the loop would go on.
            return deny(
                reply_grpc,
                &Refusal::refused(
                    "the call came back through this sidecar: its upstream points at itself"
                        .to_string(),
                ),
            );
        }
        let mut look = carries_body(&mut req).await;
        // Only on a route that reads the data subject there: the rest
        // pay nothing for it.
        let first_read = if self.reads_first_message(&req) {
            let limits = &self.inner.limits;
            Some(
                first::read(
                    &mut req,
                    &mut look,
                    limits.max_first_message_bytes,
                    limits.first_message_within,
                )
                .await,
            )
        } else {
            None
        };
        let body = look.present;
        let gate = &self.inner.gate;
        let parent = gate.parent(|| parent_context(req.headers()));
        let described = Described {
            method: req.method().as_str(),
            path: req.uri().path(),
            query: req.uri().query(),
            headers: || {
                req.headers()
                    .iter()
                    .map(|(n, v)| (n.as_str(), v.as_bytes()))
            },
            body,
            forwards_canonical: true,
        };
        let judged = match reading::read(&self.inner.routes, described) {
            Ok(reading) => {
                let call = Call {
                    reading: &reading,
                    certified_subject: downstream.peer.subject.as_deref(),
                    issue_context: true,
                    first_message: match look.first.as_ref().and_then(Frame::data_ref) {
                        Some(data) => FirstMessage::Read(data),
                        None => FirstMessage::Read(&[]),
                    },
                    max_first_message: self.inner.limits.max_first_message_bytes,
                };
                let judged = match first_read {
                    Some(Err(refusal)) => {
                        let purpose = reading.stated.get(headers::PURPOSE);
                        refused_before_asking(gate, &parent, purpose, &reading.path, refusal)
                    }
                    Some(Ok(())) | None => judge(gate, &call, &parent).await,
                };
                match judged {
                    Enforcement::LetThrough(permit) => {
                        // A path that came canonical goes on as sent.
                        let rewritten = match reading.path {
                            std::borrow::Cow::Borrowed(_) => None,
                            std::borrow::Cow::Owned(path) => Some(path),
                        };
                        Ok((permit, Some((rewritten, reading.table))))
                    }
                    Enforcement::Deny(refusal) => Err(refusal),
                }
            }
            Err(refusal) => {
                let purpose = req
                    .headers()
                    .get(headers::PURPOSE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                match refused_before_asking(gate, &parent, purpose, req.uri().path(), refusal) {
                    // Under --dry-run a call refused before asking goes on
                    // as it came.
                    Enforcement::LetThrough(permit) => Ok((permit, None)),
                    Enforcement::Deny(refusal) => Err(refusal),
                }
            }
        };
        match judged {
            Ok((permit, canonical)) => {
                let canonical = canonical
                    .as_ref()
                    .map(|(path, table)| (path.as_deref(), *table));
                forward::forward(self, req, downstream, place, canonical, *permit, look).await
            }
            Err(refusal) => deny(reply_grpc, &refusal),
        }
    }

    /// Whether `req`'s route reads the data subject from its first request
    /// message: a `grpc` route (which then judges it, whatever the call's
    /// shape) with `grpcField`.
    fn reads_first_message(&self, req: &Request<Incoming>) -> bool {
        let routes = &self.inner.routes;
        routes.reads_first_messages()
            && canonical::path(req.uri().path())
                .ok()
                .and_then(|path| routes.grpc(&path))
                .is_some_and(|route| matches!(route.data_subject, Some(SubjectFrom::GrpcField(_))))
    }

    fn came_back(&self, headers: &HeaderMap) -> bool {
        headers.get_all(VIA).iter().any(|v| v == self.inner.via)
    }

    fn no_room(&self, full: Full) -> String {
        let calls = &self.inner.calls;
        match full {
            Full::Everyone => format!(
                "{} calls are in flight through the sidecar (--max-calls); try again",
                calls.total()
            ),
            Full::Peer => format!(
                "this address holds {} calls through the sidecar, its share (--max-calls-per-peer); try again",
                calls.per_peer()
            ),
        }
    }
}

/// What the proxy learnt of a call's body before reading the call.
#[derive(Debug, Default)]
pub struct BodyLook {
    /// Whether the call carries a body.
    pub present: bool,
    /// A frame read to find that out, to be sent on before the rest.
    pub first: Option<hyper::body::Frame<bytes::Bytes>>,
    /// The length the body was declared with, when it was.
    pub length: Option<u64>,
}

/// Whether a call carries a body. An HTTP/1.1 request says so in its
/// framing (`content-length` above 0, or chunked); an HTTP/2 stream did
/// not end with its headers. Only for methods without a body is an HTTP/2
/// stream read a moment ([`BODY_LOOK`]), since some clients end one with
/// an empty DATA frame: empty frames that end it are no body; a frame with
/// bytes is kept to go on first (where a route allows the body).
async fn carries_body(req: &mut Request<Incoming>) -> BodyLook {
    let body = req.body();
    let length = body.size_hint().exact();
    if body.is_end_stream() || length == Some(0) {
        return BodyLook::default();
    }
    let mut look = BodyLook {
        present: true,
        first: None,
        length,
    };
    if req.version() != hyper::Version::HTTP_2 || reading::takes_body(req.method().as_str()) {
        return look;
    }
    let read = async {
        // At most a few frames: a stream of empty frames is no way to
        // hold the proxy.
        for _ in 0..4 {
            match http_body_util::BodyExt::frame(req.body_mut()).await {
                None => return (false, None),
                Some(Ok(frame)) => {
                    let empty = frame
                        .data_ref()
                        .is_some_and(|data| !bytes::Buf::has_remaining(data));
                    if !empty {
                        return (true, Some(frame));
                    }
                    if req.body().is_end_stream() {
                        return (false, None);
                    }
                }
                Some(Err(_)) => return (true, None),
            }
        }
        (true, None)
    };
    let (present, first) = tokio::time::timeout(BODY_LOOK, read)
        .await
        .unwrap_or((true, None));
    look.present = present;
    look.first = first;
    look
}

/// A mark of this process, different for each run.
fn instance_mark() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    format!("{:016x}", h.finish())
}

fn is_grpc_content_type(headers: &HeaderMap) -> bool {
    headers
        .get(hyper::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/grpc"))
}

/// What [`forward`] needs of the proxy.
impl Proxy {
    fn upstream(&self) -> &Upstream {
        &self.inner.upstream
    }

    fn supervisor(&self) -> &Supervisor {
        &self.inner.supervisor
    }

    fn dry_run(&self) -> bool {
        self.inner.gate.dry_run
    }

    fn via(&self) -> &HeaderValue {
        &self.inner.via
    }

    fn baggage_trimmed(&self, members: usize) {
        self.inner.gate.inheritance.trimmed(members);
    }
}

#[cfg(test)]
mod tests;
