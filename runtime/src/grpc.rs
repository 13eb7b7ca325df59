//! gRPC pieces every port of the project serves the same way: health whose
//! watch streams end when the binary drains, streams that end at shutdown,
//! and server reflection.
//!
//! tonic-health keeps a `Watch` stream open for as long as its reporter
//! lives, which would hold a graceful shutdown open until the drain time
//! runs out. This wrapper answers `Check` as tonic-health does and ends each
//! `Watch` at shutdown, after a last `NOT_SERVING`.

use std::pin::Pin;

use tokio::sync::watch;
use tokio_stream::wrappers::WatchStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};
use tonic_health::server::{HealthReporter, HealthService};

#[derive(Debug)]
pub struct DrainingHealth {
    inner: HealthService,
    shutdown: watch::Receiver<bool>,
}

impl DrainingHealth {
    pub fn server(reporter: HealthReporter, shutdown: watch::Receiver<bool>) -> HealthServer<Self> {
        HealthServer::new(DrainingHealth {
            inner: HealthService::from_health_reporter(reporter),
            shutdown,
        })
    }
}

#[tonic::async_trait]
impl Health for DrainingHealth {
    async fn check(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        self.inner.check(request).await
    }

    type WatchStream =
        Pin<Box<dyn Stream<Item = Result<HealthCheckResponse, Status>> + Send + 'static>>;

    async fn watch(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let statuses = self.inner.watch(request).await?.into_inner();
        let last = Ok(HealthCheckResponse {
            status: ServingStatus::NotServing.into(),
        });
        Ok(Response::new(Box::pin(end_on_shutdown(
            statuses,
            self.shutdown.clone(),
            Some(last),
        ))))
    }
}

/// Sets the status of the whole server (`""`, what a Kubernetes gRPC probe
/// asks by default) and of the service `S` together, so the two never
/// disagree: SERVING at start, NOT_SERVING when the drain begins.
pub async fn set_status<S: tonic::server::NamedService>(
    reporter: &HealthReporter,
    status: tonic_health::ServingStatus,
) {
    reporter.set_service_status("", status).await;
    reporter.set_service_status(S::NAME, status).await;
}

/// `stream` until `shutdown` turns true, then `last` (if any) and the end:
/// a long-lived stream must not hold a graceful drain open.
pub fn end_on_shutdown<S, T>(
    stream: S,
    shutdown: watch::Receiver<bool>,
    last: Option<T>,
) -> impl Stream<Item = T> + Send + 'static
where
    S: Stream<Item = T> + Send + 'static,
    T: Send + 'static,
{
    enum Item<T> {
        Next(T),
        Last(Option<T>),
        Stop,
    }
    let mut last = Some(last);
    let ending = WatchStream::new(shutdown)
        .filter(|&down| down)
        .take(1)
        .map(move |_| Item::Last(last.take().flatten()))
        .chain(tokio_stream::once(Item::Stop));
    stream
        .map(Item::Next)
        .merge(ending)
        .take_while(|item| !matches!(item, Item::Stop))
        .filter_map(|item| match item {
            Item::Next(t) => Some(t),
            Item::Last(t) => t,
            Item::Stop => None,
        })
}

/// Server reflection, v1 and v1alpha (grpcurl asks either), describing
/// health and the encoded descriptor sets `services` (the binary's own
/// APIs).
pub fn reflection(
    services: &[&'static [u8]],
) -> Result<
    (
        tonic_reflection::server::v1::ServerReflectionServer<
            impl tonic_reflection::server::v1::ServerReflection,
        >,
        tonic_reflection::server::v1alpha::ServerReflectionServer<
            impl tonic_reflection::server::v1alpha::ServerReflection,
        >,
    ),
    tonic_reflection::server::Error,
> {
    let builder = || {
        let mut b = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET);
        for set in services {
            b = b.register_encoded_file_descriptor_set(set);
        }
        b
    };
    Ok((builder().build_v1()?, builder().build_v1alpha()?))
}
