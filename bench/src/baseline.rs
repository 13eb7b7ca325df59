//! The two baselines every ratio of the benchmark is taken against, each
//! served as a process of its own (`purposegate-baseline`) so that both
//! sides of a ratio pay the same process and scheduling costs:
//!
//! - a bare tonic server with purposegate's service and messages, answering
//!   a fixed `CheckResponse` (the cost of the RPC alone);
//! - a plain pass-through proxy (h2c, no decision), the baseline of the
//!   sidecar's own forwarding: the same hyper client and pooling, nothing
//!   else.
//!
//! And an app for the memory of held calls: the firehose, which streams as
//! fast as its callers' windows let it.

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;

use hyper::body::Incoming;
use hyper::{Request, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use purposegate_proto::v1 as pb;

/// Serves the plain pass-through proxy to `upstream` on `listener`.
pub async fn pass_through(listener: tokio::net::TcpListener, upstream: SocketAddr) {
    {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client: Client<HttpConnector, Incoming> = Client::builder(TokioExecutor::new())
            .http2_only(true)
            .build(connector);
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let client = client.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let client = client.clone();
                    async move {
                        let (mut parts, body) = req.into_parts();
                        let path = parts
                            .uri
                            .path_and_query()
                            .map_or("/", |p| p.as_str())
                            .to_string();
                        parts.uri = format!("http://{upstream}{path}")
                            .parse::<Uri>()
                            .unwrap_or_default();
                        let response = match client.request(Request::from_parts(parts, body)).await
                        {
                            Ok(r) => r.map(http_body_util::Either::Left),
                            Err(_) => {
                                let mut r = hyper::Response::new(http_body_util::Either::Right(
                                    http_body_util::Empty::<bytes::Bytes>::new(),
                                ));
                                *r.status_mut() = hyper::StatusCode::BAD_GATEWAY;
                                r
                            }
                        };
                        Ok::<_, Infallible>(response)
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    }
}

/// The benchmark's request: subject `id` asks for `provide`
/// on its own tenant's customer data.
pub fn check_request_from(id: &str) -> pb::CheckRequest {
    pb::CheckRequest {
        purpose: "provide".into(),
        subject: Some(pb::Subject {
            id: id.into(),
            tenant: "contoso".into(),
            roles: vec![],
        }),
        resource: Some(pb::Resource {
            category: "customer-data".into(),
            owner_tenant: "contoso".into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A tonic server with the same service and messages as purposegate's,
/// answering a fixed response: the cost of the RPC alone.
#[derive(Debug, Clone)]
struct Bare {
    answer: pb::CheckResponse,
}

#[tonic::async_trait]
impl pb::decision_service_server::DecisionService for Bare {
    async fn check(
        &self,
        request: tonic::Request<pb::CheckRequest>,
    ) -> Result<tonic::Response<pb::CheckResponse>, tonic::Status> {
        std::hint::black_box(request.into_inner());
        Ok(tonic::Response::new(self.answer.clone()))
    }
    async fn check_batch(
        &self,
        _request: tonic::Request<pb::CheckBatchRequest>,
    ) -> Result<tonic::Response<pb::CheckBatchResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("bare"))
    }
    async fn permitted_purposes(
        &self,
        _request: tonic::Request<pb::CheckRequest>,
    ) -> Result<tonic::Response<pb::PermittedPurposesResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("bare"))
    }
    type WatchPolicyStream = tokio_stream::Empty<Result<pb::PolicyRevision, tonic::Status>>;
    async fn watch_policy(
        &self,
        _request: tonic::Request<pb::WatchPolicyRequest>,
    ) -> Result<tonic::Response<Self::WatchPolicyStream>, tonic::Status> {
        Ok(tonic::Response::new(tokio_stream::empty()))
    }
    async fn get_policy(
        &self,
        _request: tonic::Request<pb::GetPolicyRequest>,
    ) -> Result<tonic::Response<pb::PolicyInfo>, tonic::Status> {
        Err(tonic::Status::unimplemented("bare"))
    }
    async fn permitted_subjects(
        &self,
        _request: tonic::Request<pb::PermittedSubjectsRequest>,
    ) -> Result<tonic::Response<pb::PermittedSubjectsResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("bare"))
    }
}

/// Serves the bare server on `listener`, answering `answer` to every Check.
pub async fn bare(listener: tokio::net::TcpListener, answer: pb::CheckResponse) {
    let _ = tonic::transport::Server::builder()
        .add_service(pb::decision_service_server::DecisionServiceServer::new(
            Bare { answer },
        ))
        .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
        .await;
}

/// Bytes of each chunk the firehose sends.
const CHUNK: usize = 16 * 1024;

/// The firehose: `GET` answers an endless stream of 16 KiB chunks; `POST`
/// reads its body to the end and then answers.
pub async fn firehose(listener: tokio::net::TcpListener) {
    while let Ok((stream, _)) = listener.accept().await {
        tokio::spawn(async move {
            let service = hyper::service::service_fn(|req: Request<Incoming>| async move {
                let body = if req.method() == hyper::Method::POST {
                    let _ = req.into_body().collect().await;
                    endless(0)
                } else {
                    endless(usize::MAX)
                };
                Ok::<_, Infallible>(hyper::Response::new(body))
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

type Endless = StreamBody<
    tokio_stream::Iter<
        std::iter::Map<std::iter::RepeatN<Bytes>, fn(Bytes) -> Result<Frame<Bytes>, Infallible>>,
    >,
>;

fn endless(chunks: usize) -> Endless {
    let frame: fn(Bytes) -> Result<Frame<Bytes>, Infallible> = |b| Ok(Frame::data(b));
    StreamBody::new(tokio_stream::iter(
        std::iter::repeat_n(Bytes::from(vec![b'x'; CHUNK]), chunks).map(frame),
    ))
}
