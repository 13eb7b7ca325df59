//! The gRPC edge: `purposegate.v1.DecisionService` over the policy store.
//!
//! **Architecture Invariant:** generated types are converted to and from the
//! engine's types in `purposegate_proto::convert` only.

pub mod choices;
mod permitted_subjects;
pub mod watch_choices;

use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use opentelemetry::KeyValue;
use opentelemetry::trace::Span as _;
use opentelemetry_sdk::trace::Span;
use pb::decision_service_server::DecisionService;
use purposegate_proto::v1 as pb;
use tokio::sync::watch;

use crate::audit::Via;
use crate::decide::Logged;
use tokio_stream::{Stream, StreamExt, wrappers::WatchStream};
use tonic::{Request, Response, Status};

use crate::decide::Decider;
use crate::engine::InvalidRequest;
use purposegate_proto::convert;
use purposegate_runtime::grpc::end_on_shutdown;
use purposegate_runtime::telemetry::record_error;

/// Places for `WatchPolicy` streams: each holds one for as long as it is
/// open; with none left, a new watch is `RESOURCE_EXHAUSTED`.
#[derive(Debug, Clone)]
pub struct Watchers {
    places: Arc<tokio::sync::Semaphore>,
    /// What is watched, for the refusal (`policy`, `choices`).
    what: &'static str,
    max: usize,
    refused: prometheus_client::metrics::counter::Counter,
}

impl Watchers {
    pub fn new(
        what: &'static str,
        max: usize,
        refused: prometheus_client::metrics::counter::Counter,
    ) -> Self {
        Watchers {
            places: Arc::new(tokio::sync::Semaphore::new(max)),
            what,
            max,
            refused,
        }
    }

    /// `stream`, holding a place while it lives; or why there is none.
    pub fn hold<S>(&self, stream: S) -> Result<impl Stream<Item = S::Item> + Send + 'static, Status>
    where
        S: Stream + Send + 'static,
    {
        let Ok(place) = self.places.clone().try_acquire_owned() else {
            self.refused.inc();
            return Err(Status::resource_exhausted(format!(
                "{} {} watches are open (--max-watchers); try again later",
                self.max, self.what
            )));
        };
        Ok(stream.map(move |item| {
            let _held = &place;
            item
        }))
    }
}

/// The service's full name, as spans name it.
const SERVICE: &str = <pb::decision_service_server::DecisionServiceServer<DecisionServer> as tonic::server::NamedService>::NAME;

/// Serves decisions from the store's current policy.
#[derive(Debug, Clone)]
pub struct DecisionServer {
    decider: Decider,
    /// Signs purpose contexts on permits that ask for one.
    keys: std::sync::Arc<crate::purpose_context::PurposeKeys>,
    max_batch: usize,
    watchers: Watchers,
    /// Where batches and the reverse question run, off the async workers.
    pool: crate::work::WorkPool,
    /// Who may list data subjects (`PermittedSubjects`), and their store.
    choices: choices::ChoicesServer,
    /// Becomes true when the server begins to shut down; open watch streams
    /// end then, so they do not hold the drain open.
    shutdown: watch::Receiver<bool>,
}

impl DecisionServer {
    pub fn new(
        decider: Decider,
        keys: std::sync::Arc<crate::purpose_context::PurposeKeys>,
        max_batch: usize,
        max_watchers: usize,
        pool: crate::work::WorkPool,
        choices: choices::ChoicesServer,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        let refused = decider.metrics().watchers_refused.clone();
        DecisionServer {
            decider,
            keys,
            max_batch,
            watchers: Watchers::new("policy", max_watchers, refused),
            pool,
            choices,
            shutdown,
        }
    }

    fn span(&self, method: &'static str, metadata: &tonic::metadata::MetadataMap) -> Option<Span> {
        self.decider
            .telemetry()
            .map(|t| t.rpc_span(SERVICE, method, metadata))
    }

    /// Decides one request through the decider (counted, traced, logged);
    /// with `issue`, a permit carries a signed purpose context if the
    /// caller (`caller`, its mTLS names) is an issuer.
    fn evaluate(
        &self,
        policy: &crate::engine::Policy,
        question: crate::decide::Question,
        start: Instant,
        span: Option<&mut Span>,
        issue: Option<&CallerNames>,
        face: &'static str,
    ) -> pb::CheckResponse {
        let req = &question.req;
        let stated = issue.map(|caller| {
            (
                req.purpose.clone(),
                req.resource.category.clone(),
                req.subject.id.clone(),
                caller,
            )
        });
        let decided = self.decider.decide(
            policy,
            question,
            start,
            span,
            Via::face(face),
            Logged::Line { request_bytes: 0 },
        );
        let mut response = convert::response_with_reason(decided.evaluation, decided.reason);
        if let Some((purpose, category, subject, caller)) = stated {
            if response.decision() == pb::Decision::Permit {
                self.keys
                    .attach(&mut response, (purpose, category, subject), &caller.0);
            }
        }
        response
    }
}

/// Who a gRPC caller is, as its connection's mutual TLS says: every name
/// its verified certificate gives it (URI SANs, then DNS SANs); empty for
/// a plaintext caller. Put into each request's extensions by
/// [`Identified`], per connection.
#[derive(Debug, Clone, Default)]
pub struct CallerNames(pub std::sync::Arc<[String]>);

/// The caller's address, for its share of the work pool.
#[derive(Debug, Clone, Copy)]
pub struct CallerAddr(pub std::net::IpAddr);

fn caller_addr<T>(request: &Request<T>) -> std::net::IpAddr {
    request
        .extensions()
        .get::<CallerAddr>()
        .map_or(std::net::IpAddr::from([0, 0, 0, 0]), |a| a.0)
}

/// A job refused by the work pool.
fn busy(busy: crate::work::Busy) -> Status {
    Status::resource_exhausted(busy.to_string())
}

fn caller_names<T>(request: &Request<T>) -> CallerNames {
    request
        .extensions()
        .get::<CallerNames>()
        .cloned()
        .unwrap_or_default()
}

/// A connection's gRPC service that tells each request who the caller is
/// ([`CallerNames`]).
#[derive(Debug, Clone)]
pub struct Identified<S> {
    inner: S,
    names: CallerNames,
    addr: CallerAddr,
}

impl<S> Identified<S> {
    pub fn new(inner: S, names: std::sync::Arc<[String]>, addr: std::net::IpAddr) -> Self {
        Identified {
            inner,
            names: CallerNames(names),
            addr: CallerAddr(addr),
        }
    }
}

impl<S, B> tonic::codegen::Service<tonic::codegen::http::Request<B>> for Identified<S>
where
    S: tonic::codegen::Service<tonic::codegen::http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: tonic::codegen::http::Request<B>) -> Self::Future {
        request.extensions_mut().insert(self.names.clone());
        request.extensions_mut().insert(self.addr);
        self.inner.call(request)
    }
}

/// `INVALID_ARGUMENT` naming the field, also marked on the call's span.
fn invalid(e: InvalidRequest, span: Option<&mut Span>) -> Status {
    let status = Status::invalid_argument(e.to_string());
    if let Some(span) = span {
        record_error(span, &status);
    }
    status
}

#[tonic::async_trait]
impl DecisionService for DecisionServer {
    async fn check(
        &self,
        request: Request<pb::CheckRequest>,
    ) -> Result<Response<pb::CheckResponse>, Status> {
        let start = Instant::now();
        let mut span = self.span("Check", request.metadata());
        let caller = caller_names(&request);
        let request = request.into_inner();
        let issue = request.issue_purpose_context.then_some(&caller);
        let req = convert::request(request, "").map_err(|e| invalid(e, span.as_mut()))?;
        let policy = self.decider.policy();
        // The choices it needs, found without blocking this worker.
        let facts = self.decider.facts(&policy, &req).await;
        let question = crate::decide::Question { req, facts };
        let response = self.evaluate(&policy, question, start, span.as_mut(), issue, "grpc.Check");
        self.decider.metrics().answered(start.elapsed());
        Ok(Response::new(response))
    }

    async fn check_batch(
        &self,
        request: Request<pb::CheckBatchRequest>,
    ) -> Result<Response<pb::CheckBatchResponse>, Status> {
        let start = Instant::now();
        let mut span = self.span("CheckBatch", request.metadata());
        let caller = caller_names(&request);
        let peer = caller_addr(&request);
        let requests = request.into_inner().requests;
        self.decider.metrics().batch(requests.len());
        if let Some(span) = span.as_mut() {
            span.set_attribute(KeyValue::new(
                "purposegate.batch_size",
                i64::try_from(requests.len()).unwrap_or(i64::MAX),
            ));
        }
        if requests.len() > self.max_batch {
            let status = Status::invalid_argument(format!(
                "field `requests` holds {} requests; at most {} are accepted (--max-batch)",
                requests.len(),
                self.max_batch
            ));
            if let Some(span) = span.as_mut() {
                record_error(span, &status);
            }
            return Err(status);
        }
        // Converted and decided on the work pool: its cost grows with the
        // batch.
        let this = self.clone();
        // Its size for the work pool, in bytes as AuthZEN's are counted:
        // a typical request is about 128.
        let size = requests.len().saturating_mul(128);
        let job = move || -> Result<Vec<pb::CheckResponse>, InvalidRequest> {
            let converted = requests
                .into_iter()
                .enumerate()
                .map(|(i, r)| {
                    let issue = r.issue_purpose_context;
                    // The prefix is written only for the one that is invalid.
                    convert::request(r, "")
                        .map(|r| (r, issue))
                        .map_err(|mut e| {
                            e.field = format!("requests[{i}].{}", e.field);
                            e
                        })
                })
                .collect::<Result<Vec<_>, _>>()?;
            // One policy for the whole batch: every answer has the same
            // revision.
            let policy = this.decider.policy();
            Ok(converted
                .into_iter()
                .map(|(r, issue)| {
                    let issue = issue.then_some(&caller);
                    this.evaluate(&policy, r.into(), start, None, issue, "grpc.CheckBatch")
                })
                .collect())
        };
        let responses = self
            .pool
            .run(peer, size, job)
            .await
            .map_err(busy)?
            .map_err(|e| invalid(e, span.as_mut()))?;
        self.decider.metrics().answered(start.elapsed());
        Ok(Response::new(pb::CheckBatchResponse { responses }))
    }

    type WatchPolicyStream =
        Pin<Box<dyn Stream<Item = Result<pb::PolicyRevision, Status>> + Send + 'static>>;

    async fn watch_policy(
        &self,
        _request: Request<pb::WatchPolicyRequest>,
    ) -> Result<Response<Self::WatchPolicyStream>, Status> {
        // The watch stream yields the current policy first, then each
        // change; the stream ends when shutdown begins.
        // A revision, or the signing keys rotated: the sidecars learn both
        // from the same stream.
        let keys = self.keys.clone();
        let store = self.decider.store().clone();
        let rotated =
            WatchStream::from_changes(self.keys.subscribe()).map(move |_| store.current());
        let revisions = WatchStream::new(self.decider.store().subscribe())
            .merge(rotated)
            .map(move |policy| {
                let mut revision = convert::revision(&policy);
                revision.purpose_context_keys = keys.published();
                Ok(revision)
            });
        let revisions = self.watchers.hold(revisions)?;
        Ok(Response::new(Box::pin(end_on_shutdown(
            revisions,
            self.shutdown.clone(),
            None,
        ))))
    }

    async fn get_policy(
        &self,
        _request: Request<pb::GetPolicyRequest>,
    ) -> Result<Response<pb::PolicyInfo>, Status> {
        let store = self.decider.store();
        let mut info = convert::policy_info(&store.current(), store.last_reload_error());
        info.purpose_context_keys = self.keys.published();
        Ok(Response::new(info))
    }

    async fn permitted_purposes(
        &self,
        request: Request<pb::CheckRequest>,
    ) -> Result<Response<pb::PermittedPurposesResponse>, Status> {
        let start = Instant::now();
        let mut span = self.span("PermittedPurposes", request.metadata());
        let peer = caller_addr(&request);
        let req = convert::purposes_request(request.into_inner(), "")
            .map_err(|e| invalid(e, span.as_mut()))?;
        // On the work pool: its cost grows with the policy.
        let decider = self.decider.clone();
        let mut job_span = span.take();
        let job = move || {
            let via = Via::face("grpc.PermittedPurposes");
            let answer = decider.permitted_purposes(&req, job_span.as_mut(), via);
            (answer, job_span)
        };
        let (answer, back) = self.pool.run(peer, 128, job).await.map_err(busy)?;
        span = back;
        let answer = answer.map_err(|e| invalid(e, span.as_mut()))?;
        self.decider.metrics().answered(start.elapsed());
        Ok(Response::new(convert::permitted_purposes(answer)))
    }

    async fn permitted_subjects(
        &self,
        request: Request<pb::PermittedSubjectsRequest>,
    ) -> Result<Response<pb::PermittedSubjectsResponse>, Status> {
        self.choices
            .permitted_subjects(request, &self.decider, &self.pool)
            .await
    }
}
