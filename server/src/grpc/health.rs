//! `grpc.health.v1.Health` whose watch streams end when the server drains.
//!
//! tonic-health keeps a `Watch` stream open for as long as its reporter
//! lives, which would hold a graceful shutdown open until the drain time
//! runs out. This wrapper answers `Check` as tonic-health does and ends each
//! `Watch` at shutdown, after a last `NOT_SERVING`.

use std::pin::Pin;

use tokio::sync::watch;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};
use tonic_health::server::{HealthReporter, HealthService};

use super::end_on_shutdown;

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
