//! `purposegate-sidecar`: flags, listeners and signals around the library
//! (`src/lib.rs`).

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use purposegate_proto::v1::decision_service_server::DecisionServiceServer;
use purposegate_server::grpc::health::set_status;
use purposegate_server::serve::{LogFormat, init_logging, run_until_done, wait_for_signal};
use tokio::sync::watch;
use tokio_stream::wrappers::TcpListenerStream;
use tonic_health::ServingStatus;
use tracing::info;

use purposegate_sidecar::cache::DecisionCache;
use purposegate_sidecar::gate::Gate;
use purposegate_sidecar::local::LocalDecisions;
use purposegate_sidecar::metrics::SidecarMetrics;
use purposegate_sidecar::pdp::Pdp;
use purposegate_sidecar::{extauthz, proxy, routes};

/// purposegate sidecar: enforces purpose decisions on the calls to the data
/// service beside it.
#[derive(Debug, Clone, Parser)]
#[command(name = "purposegate-sidecar", version, about, long_about = None)]
struct Args {
    /// Address of the proxy in front of the app (HTTP/2 gRPC and HTTP/1.1).
    #[arg(long, env = "PURPOSEGATE_LISTEN", default_value = "0.0.0.0:15001")]
    listen: SocketAddr,
    /// The app the proxy forwards permitted calls to.
    #[arg(
        long,
        env = "PURPOSEGATE_UPSTREAM",
        default_value = "http://127.0.0.1:8080"
    )]
    upstream: hyper::Uri,
    /// Routes file: which gRPC methods and HTTP paths touch which data
    /// category. Calls on no route are denied.
    #[arg(long, env = "PURPOSEGATE_ROUTES")]
    routes: Option<std::path::PathBuf>,
    /// Compute, log and trace every decision but let every call through
    /// (rolling out a policy log-only).
    #[arg(long, env = "PURPOSEGATE_DRY_RUN")]
    dry_run: bool,
    /// The decision server (PDP).
    #[arg(
        long,
        env = "PURPOSEGATE_PDP",
        default_value = "http://127.0.0.1:50051"
    )]
    pdp: String,
    /// PEM certificate chain of the sidecar's identity: presented to the PDP
    /// as its client certificate, and served on the proxy port, which then
    /// refuses plaintext. Reloaded when the file changes.
    #[arg(long, env = "PURPOSEGATE_TLS_CERT", requires_all = ["tls_key", "tls_client_ca"])]
    tls_cert: Option<std::path::PathBuf>,
    /// PEM private key of --tls-cert. Reloaded when the file changes.
    #[arg(long, env = "PURPOSEGATE_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<std::path::PathBuf>,
    /// PEM CA bundle (the trust anchors): verifies the PDP's certificate,
    /// and the client certificates callers of the proxy must present; the
    /// URI SAN of a caller's certificate is its subject and `x-subject` is
    /// ignored. Reloaded when the file changes.
    #[arg(long, env = "PURPOSEGATE_TLS_CLIENT_CA", requires = "tls_cert")]
    tls_client_ca: Option<std::path::PathBuf>,
    /// Address of the local decision API (purposegate.v1.DecisionService).
    #[arg(
        long,
        env = "PURPOSEGATE_LOCAL_LISTEN",
        default_value = "127.0.0.1:15002"
    )]
    local_listen: SocketAddr,
    /// Address to serve Prometheus metrics on, at /metrics.
    #[arg(
        long,
        env = "PURPOSEGATE_METRICS_LISTEN",
        default_value = "0.0.0.0:15090"
    )]
    metrics_listen: SocketAddr,
    /// How long to wait for the PDP before denying (e.g. 200ms, 1s).
    #[arg(long, env = "PURPOSEGATE_PDP_TIMEOUT", default_value = "200ms", value_parser = parse_duration)]
    pdp_timeout: Duration,
    /// How long past its TTL a cached decision may be served while the PDP
    /// cannot be reached (e.g. 30s); 0s serves nothing stale.
    #[arg(long, env = "PURPOSEGATE_STALE_IF_ERROR", default_value = "0s", value_parser = parse_duration)]
    stale_if_error: Duration,
    /// Most decisions kept in the cache.
    #[arg(long, env = "PURPOSEGATE_CACHE_MAX_ENTRIES", default_value_t = 100_000)]
    cache_max_entries: usize,
    /// How long in-flight calls may take to finish after SIGTERM (e.g. 10s).
    #[arg(long, env = "PURPOSEGATE_DRAIN", default_value = "10s", value_parser = parse_duration)]
    drain: Duration,
    /// Log format of the sidecar's own log (stderr).
    #[arg(long, env = "PURPOSEGATE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

/// `200ms`, `2s`, `1.5s`, `1m`, or `0`.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (number, unit) = match s.find(|c: char| !(c.is_ascii_digit() || c == '.')) {
        Some(at) => s.split_at(at),
        None => (s, ""),
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("`{s}` is not a duration like 200ms, 2s or 1m"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        "" if value == 0.0 => 0.0,
        _ => return Err(format!("`{s}`: the unit must be ms, s or m")),
    };
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("`{s}`: {e}"))
}

fn main() -> ExitCode {
    let args = Args::parse();
    init_logging(args.log_format);
    run_until_done("the sidecar", run(args))
}

fn load_routes(path: Option<&std::path::Path>) -> Result<routes::Routes, String> {
    let Some(path) = path else {
        tracing::warn!("no --routes file: every proxied call is on no route and is denied");
        return Ok(routes::Routes::default());
    };
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the routes file `{}`: {e}", path.display()))?;
    routes::Routes::parse(&path.display().to_string(), &text).map_err(|d| d.to_string())
}

async fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    if args.upstream.scheme_str() != Some("http") || args.upstream.authority().is_none() {
        return Err(format!(
            "--upstream `{}` must be an http://host:port address",
            args.upstream
        )
        .into());
    }
    let routes = load_routes(args.routes.as_deref())?;
    let metrics = SidecarMetrics::new();
    purposegate_server::metrics::serve(args.metrics_listen, metrics.registry.clone())
        .await
        .map_err(|e| format!("cannot serve metrics on {}: {e}", args.metrics_listen))?;

    let cache = Arc::new(DecisionCache::new(
        args.cache_max_entries,
        args.stale_if_error,
        metrics.cache.clone(),
    ));
    let tls = purposegate_server::tls::TlsFiles::from_flags(
        args.tls_cert.as_ref(),
        args.tls_key.as_ref(),
        args.tls_client_ca.as_ref(),
    )?;
    if tls.is_some() && !args.local_listen.ip().is_loopback() {
        return Err(format!(
            "--local-listen {} must be a loopback address when TLS is configured: the local port is plaintext, for the pod's own processes",
            args.local_listen
        )
        .into());
    }
    let tls_configured = tls.is_some();
    let (pdp_tls, proxy_tls) = match tls {
        Some(files) => (
            Some(purposegate_server::tls::ClientTls::new(
                files.clone(),
                &[b"h2"],
            )?),
            Some(
                purposegate_server::tls::ServerTls::new(files, &[b"h2", b"http/1.1"])?
                    .counting_failures(metrics.tls_handshake_failures.clone()),
            ),
        ),
        None => (None, None),
    };
    let pdp = Pdp::new(&args.pdp, args.pdp_timeout, pdp_tls)?;
    let (revisions_tx, revisions) = watch::channel(None);
    pdp.follow_revisions(cache.clone(), revisions_tx);
    let tracing = purposegate_server::telemetry::Tracing::from_env(
        "purposegate-sidecar",
        metrics.spans_dropped.clone(),
    )?;
    let gate = Gate {
        cache: cache.clone(),
        pdp,
        tracing: tracing.clone(),
        dry_run: args.dry_run,
    };

    let proxy_listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    info!(
        proxy_addr = %proxy_listener.local_addr()?,
        upstream = %args.upstream,
        routes = routes.len(),
        dry_run = args.dry_run,
        tls = if proxy_tls.is_some() { "mutual" } else { "off" },
        "proxying to the app"
    );
    proxy::Proxy::new(gate.clone(), routes.clone(), args.upstream.clone())
        .serve(proxy_listener, proxy_tls);

    // Shutdown: health turns NOT_SERVING, open watch streams end, in-flight
    // calls finish, bounded by the drain time.
    let (shutdown_tx, shutdown) = watch::channel(false);
    let health = tonic_health::server::HealthReporter::new();
    let health_service =
        purposegate_server::grpc::health::DrainingHealth::server(health.clone(), shutdown.clone());
    set_status::<DecisionServiceServer<LocalDecisions>>(&health, ServingStatus::Serving).await;
    let (reflection_v1, reflection_v1alpha) =
        purposegate_server::grpc::reflection(&[extauthz::FILE_DESCRIPTOR_SET])?;

    let local = tokio::net::TcpListener::bind(args.local_listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.local_listen))?;
    let local_addr = local.local_addr()?;
    info!(local_addr = %local_addr, pdp = %args.pdp, "serving the local decision API and Envoy ext_authz");

    let server = tonic::transport::Server::builder()
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(DecisionServiceServer::new(LocalDecisions::new(
            gate.clone(),
            revisions,
            shutdown.clone(),
        )))
        .add_service(envoy_types::ext_authz::v3::pb::AuthorizationServer::new(
            extauthz::ExtAuthz::new(gate.clone(), routes, tls_configured),
        ))
        .serve_with_incoming_shutdown(TcpListenerStream::new(local), {
            let health = health.clone();
            async move {
                wait_for_signal().await;
                info!("shutting down: health NOT_SERVING, draining in-flight calls");
                set_status::<DecisionServiceServer<LocalDecisions>>(
                    &health,
                    ServingStatus::NotServing,
                )
                .await;
                let _ = shutdown_tx.send(true);
            }
        });
    let drain = args.drain;
    let mut down = shutdown;
    let deadline = async move {
        let _ = down.wait_for(|&d| d).await;
        tokio::time::sleep(drain).await;
    };
    tokio::select! {
        result = server => result?,
        () = deadline => tracing::warn!(seconds = drain.as_secs(), "drain time over; exiting with calls still open"),
    }
    if let Some(tracing) = tracing {
        tracing.shutdown().await;
    }
    info!("stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_like_the_flags_document() {
        assert_eq!(parse_duration("200ms"), Ok(Duration::from_millis(200)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("fast").is_err());
        assert!(parse_duration("3h").is_err());
    }
}
