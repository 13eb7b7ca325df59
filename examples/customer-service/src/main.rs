//! `purposegate-demo-service`: customer records over gRPC and HTTP/1.1.

use std::net::SocketAddr;
use std::process::ExitCode;

use clap::Parser;
use hyper_util::rt::TokioIo;
use purposegate_demo_service::{CustomerService, FILE_DESCRIPTOR_SET, pb};
use purposegate_server::serve::{LogFormat, init_logging, run_until_done, wait_for_signal};
use tokio_stream::wrappers::TcpListenerStream;
use tracing::{debug, info};

/// A demo customer-records service to put the purposegate sidecar in front of.
#[derive(Debug, Parser)]
#[command(name = "purposegate-demo-service", version, about, long_about = None)]
struct Args {
    /// Address of the gRPC API (demo.v1.CustomerService).
    #[arg(long, env = "DEMO_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Address of the HTTP/1.1 API (GET /customers/{id}, POST /echo).
    #[arg(long, env = "DEMO_HTTP_LISTEN", default_value = "127.0.0.1:8081")]
    http_listen: SocketAddr,
    /// Log format (stderr).
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

fn main() -> ExitCode {
    let args = Args::parse();
    init_logging(args.log_format);
    run_until_done("the demo service", run(args))
}

async fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let signalled = wait_for_signal();
    let http = tokio::net::TcpListener::bind(args.http_listen).await?;
    info!(http_addr = %http.local_addr()?, "serving the HTTP/1.1 API");
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = http.accept().await else {
                continue;
            };
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

    let grpc = tokio::net::TcpListener::bind(args.listen).await?;
    info!(addr = %grpc.local_addr()?, "serving demo.v1.CustomerService");
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;
    tonic::transport::Server::builder()
        .add_service(reflection)
        .add_service(pb::customer_service_server::CustomerServiceServer::new(
            CustomerService,
        ))
        .serve_with_incoming_shutdown(TcpListenerStream::new(grpc), signalled)
        .await?;
    Ok(())
}
