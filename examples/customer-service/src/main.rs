//! `purposegate-demo-service`: customer records over gRPC and HTTP/1.1.

use std::net::SocketAddr;
use std::process::ExitCode;

use clap::Parser;
use http_body_util::BodyExt;
use hyper_util::rt::{TokioExecutor, TokioIo};
use purposegate_demo_service::{CustomerService, FILE_DESCRIPTOR_SET, pb};
use purposegate_runtime::log::{LogFormat, init_logging};
use purposegate_runtime::process::{run_until_done, wait_for_signal};
use tracing::{debug, info};

/// A demo customer-records service to put the purposegate sidecar in front of.
#[derive(Debug, Parser)]
#[command(
    name = "purposegate-demo-service",
    version,
    about,
    long_about = None,
    term_width = 100
)]
struct Args {
    /// Address of both APIs: gRPC (demo.v1.CustomerService) over HTTP/2,
    /// and the HTTP API (GET /customers/{id}, POST /echo) over HTTP/1.1.
    #[arg(long, env = "DEMO_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// A second address with the HTTP/1.1 API alone.
    #[arg(long, env = "DEMO_HTTP_LISTEN", default_value = "127.0.0.1:8081")]
    http_listen: SocketAddr,
    /// The second service, as `GET /relay/customers/{id}` reaches it
    /// (HOST:PORT: its sidecar's proxy) [default: none].
    #[arg(long, env = "DEMO_DOWNSTREAM")]
    downstream: Option<String>,
    /// Log format (stderr).
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Body = http_body_util::combinators::UnsyncBoxBody<bytes::Bytes, BoxError>;

fn main() -> ExitCode {
    let args = Args::parse();
    init_logging(args.log_format);
    run_until_done("the demo service", run(args))
}

async fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let signalled = wait_for_signal();
    if let Some(downstream) = args.downstream.clone() {
        let _ = purposegate_demo_service::DOWNSTREAM.set(downstream);
    }
    let http = tokio::net::TcpListener::bind(args.http_listen).await?;
    info!(http_addr = %http.local_addr()?, "serving the HTTP/1.1 API");
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = http.accept().await else {
                continue;
            };
            // Small answers go out at once, as a real service sends them.
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(purposegate_demo_service::http);
                if let Err(e) = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await
                {
                    debug!(error = %e, "HTTP connection ended");
                }
            });
        }
    });

    let both = tokio::net::TcpListener::bind(args.listen).await?;
    info!(addr = %both.local_addr()?, "serving demo.v1.CustomerService (HTTP/2) and the HTTP/1.1 API");
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;
    let grpc = tonic::service::Routes::new(reflection)
        .add_service(pb::customer_service_server::CustomerServiceServer::new(
            CustomerService,
        ))
        .prepare();
    let accept = async move {
        loop {
            let Ok((stream, _)) = both.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let grpc = grpc.clone();
            tokio::spawn(async move {
                // gRPC over HTTP/2, the HTTP API over HTTP/1.1, one port.
                let service = hyper::service::service_fn(move |req| route(grpc.clone(), req));
                if let Err(e) = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await
                {
                    debug!(error = %e, "connection ended");
                }
            });
        }
    };
    tokio::select! {
        () = accept => {}
        () = signalled => info!("stopped"),
    }
    Ok(())
}

/// gRPC over HTTP/2 to the tonic services, anything else to the HTTP API.
async fn route(
    grpc: tonic::service::Routes,
    req: hyper::Request<hyper::body::Incoming>,
) -> Result<hyper::Response<Body>, std::convert::Infallible> {
    if req.version() == hyper::Version::HTTP_2 {
        let Ok(response) = tower::ServiceExt::oneshot(grpc, req).await;
        return Ok(response.map(|b| {
            b.map_err(|e: tonic::Status| -> BoxError { Box::new(e) })
                .boxed_unsync()
        }));
    }
    let response = match purposegate_demo_service::http(req).await {
        Ok(response) => response.map(|b| b.map_err(|never| match never {}).boxed_unsync()),
        Err(e) => {
            let mut r = hyper::Response::new(
                http_body_util::Full::new(bytes::Bytes::from(format!("{e}\n")))
                    .map_err(|never| match never {})
                    .boxed_unsync(),
            );
            *r.status_mut() = hyper::StatusCode::BAD_REQUEST;
            r
        }
    };
    Ok(response)
}
