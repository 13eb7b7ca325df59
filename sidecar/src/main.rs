//! `purposegate-sidecar`: flags, listeners and signals around the library
//! (`src/lib.rs`).

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use purposegate_proto::limits::MessageLimits;
use purposegate_proto::v1 as pb;
use purposegate_proto::v1::decision_service_server::DecisionServiceServer;
use purposegate_runtime::grpc::set_status;
use purposegate_runtime::listen::{Face, Limits, Protocols};
use purposegate_runtime::log::{LogFormat, init_logging};
use purposegate_runtime::process::{refuse_to_start, run_until_done, wait_for_signal};
use purposegate_runtime::units::{parse_bytes, parse_drain, parse_duration, parse_timeout};
use tokio::sync::watch;
use tonic_health::ServingStatus;
use tracing::info;

use purposegate_sidecar::cache::{CacheLimits, DecisionCache};
use purposegate_sidecar::gate::Gate;
use purposegate_sidecar::local::LocalDecisions;
use purposegate_sidecar::metrics::SidecarMetrics;
use purposegate_sidecar::pdp::Pdp;
use purposegate_sidecar::proxy::UpstreamProtocol;
use purposegate_sidecar::supervise::Supervisor;
use purposegate_sidecar::{extauthz, proxy, routes};

/// purposegate sidecar: enforces purpose decisions on the calls to the data
/// service beside it.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "purposegate-sidecar",
    version,
    about,
    long_about = None,
    term_width = 100
)]
struct Args {
    /// Address of the proxy in front of the app (HTTP/2 gRPC and HTTP/1.1).
    #[arg(
        long,
        env = "PURPOSEGATE_SIDECAR_LISTEN",
        default_value = "0.0.0.0:15001"
    )]
    listen: SocketAddr,
    /// The app the proxy forwards permitted calls to.
    #[arg(
        long,
        env = "PURPOSEGATE_SIDECAR_UPSTREAM",
        default_value = "http://127.0.0.1:8080"
    )]
    upstream: hyper::Uri,
    /// The protocol the app speaks: `auto` forwards gRPC calls over HTTP/2
    /// and the rest over HTTP/1.1, whatever the caller used.
    #[arg(long, env = "PURPOSEGATE_SIDECAR_UPSTREAM_PROTOCOL", value_enum, default_value_t = UpstreamProtocol::Auto)]
    upstream_protocol: UpstreamProtocol,
    /// Routes file: which gRPC methods and HTTP paths touch which data
    /// category. Calls on no route are denied.
    #[arg(long, env = "PURPOSEGATE_SIDECAR_ROUTES")]
    routes: Option<std::path::PathBuf>,
    /// Obligations the app fulfils on every route (comma-separated ids; a
    /// route may add its own). A permit whose obligations are not all here
    /// is denied; callers cannot claim any.
    #[arg(long, env = "PURPOSEGATE_SIDECAR_OBLIGATIONS", value_delimiter = ',')]
    obligations: Vec<String>,
    /// Compute, log and trace every decision but let every call through
    /// (rolling out a policy log-only).
    #[arg(long, env = "PURPOSEGATE_SIDECAR_DRY_RUN")]
    dry_run: bool,
    /// Deny every call that carries no valid purpose context (W3C baggage
    /// entry `purposegate`): for services that must only be reached
    /// downstream of a permitted call. Per route: `requirePurposeContext`.
    #[arg(long, env = "PURPOSEGATE_SIDECAR_REQUIRE_PURPOSE_CONTEXT")]
    require_purpose_context: bool,
    /// Accept purpose contexts only when issued to one of these PEPs
    /// (globs over the issuer a context names: the mTLS identity of the
    /// sidecar that asked for it); others are refused [default: any the
    /// server signed].
    #[arg(
        long,
        env = "PURPOSEGATE_SIDECAR_PURPOSE_CONTEXT_FROM",
        value_name = "GLOBS",
        value_delimiter = ','
    )]
    purpose_context_from: Vec<String>,
    /// The decision server (PDP).
    #[arg(
        long,
        env = "PURPOSEGATE_SIDECAR_PDP",
        default_value = "http://127.0.0.1:50051"
    )]
    pdp: String,
    /// PEM certificate chain of the sidecar's identity: presented to the PDP
    /// as its client certificate, and served on the proxy port, which then
    /// refuses plaintext. Reloaded when the file changes.
    #[arg(long, env = "PURPOSEGATE_SIDECAR_TLS_CERT", requires_all = ["tls_key", "tls_client_ca"])]
    tls_cert: Option<std::path::PathBuf>,
    /// PEM private key of --tls-cert. Reloaded when the file changes.
    #[arg(long, env = "PURPOSEGATE_SIDECAR_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<std::path::PathBuf>,
    /// PEM CA bundle (the trust anchors): verifies the PDP's certificate,
    /// and the client certificates callers of the proxy must present; the
    /// URI SAN of a caller's certificate is its subject and `x-subject` is
    /// ignored. Reloaded when the file changes.
    #[arg(long, env = "PURPOSEGATE_SIDECAR_TLS_CLIENT_CA", requires = "tls_cert")]
    tls_client_ca: Option<std::path::PathBuf>,
    /// Address of the local decision API (purposegate.v1.DecisionService).
    #[arg(
        long,
        env = "PURPOSEGATE_SIDECAR_LOCAL_LISTEN",
        default_value = "127.0.0.1:15002"
    )]
    local_listen: SocketAddr,
    /// Address to serve Prometheus metrics on, at /metrics.
    #[arg(
        long,
        env = "PURPOSEGATE_SIDECAR_METRICS_LISTEN",
        default_value = "0.0.0.0:15090"
    )]
    metrics_listen: SocketAddr,
    /// How long to wait for the PDP before denying (e.g. 200ms, 1s).
    #[arg(long, env = "PURPOSEGATE_SIDECAR_PDP_TIMEOUT", default_value = "200ms", value_parser = parse_timeout)]
    pdp_timeout: Duration,
    /// How long past its TTL a cached decision may be served while the PDP
    /// cannot be reached (e.g. 30s); 0s serves nothing stale.
    #[arg(long, env = "PURPOSEGATE_SIDECAR_STALE_IF_ERROR", default_value = "0s", value_parser = parse_duration)]
    stale_if_error: Duration,
    /// How long the watch of choices may go without a word (it speaks
    /// every 250 ms) before cached decisions that read choices are kept no
    /// longer than their own TTL (1 s).
    #[arg(long, env = "PURPOSEGATE_SIDECAR_CHOICES_STALE_WINDOW", default_value = "1s", value_parser = parse_timeout)]
    choices_stale_window: Duration,
    /// Most decisions kept in the cache.
    #[arg(
        long,
        env = "PURPOSEGATE_SIDECAR_CACHE_MAX_ENTRIES",
        default_value_t = 100_000
    )]
    cache_max_entries: usize,
    /// Most bytes the cached decisions may take (e.g. 16Mi, 512Ki); the
    /// oldest go first.
    #[arg(long, env = "PURPOSEGATE_SIDECAR_CACHE_MAX_BYTES", default_value = "16Mi", value_parser = parse_bytes)]
    cache_max_bytes: usize,
    /// Longest time an answer other than PERMIT is cached.
    #[arg(long, env = "PURPOSEGATE_SIDECAR_CACHE_DENY_TTL", default_value = "5s", value_parser = parse_duration)]
    cache_deny_ttl: Duration,
    /// Longest time an open call goes without being judged again (a new
    /// revision re-judges every open call at once); a call no longer
    /// permitted is ended.
    #[arg(long, env = "PURPOSEGATE_SIDECAR_MAX_STREAM_AGE", default_value = "60s", value_parser = parse_timeout)]
    max_stream_age: Duration,
    /// Calls the proxy carries at once (a call counts from its arrival
    /// until both its directions end); more get 503 or RESOURCE_EXHAUSTED.
    #[arg(long, env = "PURPOSEGATE_SIDECAR_MAX_CALLS", default_value_t = 1024)]
    max_calls: usize,
    /// Calls one peer address may have in flight through the proxy at
    /// once, its share of --max-calls; more get 503 or RESOURCE_EXHAUSTED,
    /// other addresses are still served.
    #[arg(
        long,
        env = "PURPOSEGATE_SIDECAR_MAX_CALLS_PER_PEER",
        default_value_t = 128
    )]
    max_calls_per_peer: usize,
    /// How long a proxied call may go without moving body data in either
    /// direction (a held upload, a caller that stopped reading, an app that
    /// stopped answering) before it is ended: 408 or DEADLINE_EXCEEDED.
    #[arg(long, env = "PURPOSEGATE_SIDECAR_CALL_IDLE_TIMEOUT", default_value = "60s", value_parser = parse_timeout)]
    call_idle_timeout: Duration,
    /// Largest CheckBatch the local decision API accepts, checked before
    /// the batch is decoded.
    #[arg(long, env = "PURPOSEGATE_SIDECAR_MAX_BATCH", default_value_t = 1000)]
    max_batch: usize,
    /// Connections each listener holds at once; more are closed at once.
    #[arg(long, env = "PURPOSEGATE_SIDECAR_MAX_CONNECTIONS", default_value_t = Limits::default().max_connections)]
    max_connections: usize,
    /// Connections one peer address may hold on each listener.
    #[arg(long, env = "PURPOSEGATE_SIDECAR_MAX_CONNECTIONS_PER_PEER", default_value_t = Limits::default().max_connections_per_peer)]
    max_connections_per_peer: usize,
    /// How long a request head may take to arrive (HTTP/1.1); a new
    /// connection that sends nothing is closed after 5 s.
    #[arg(long, env = "PURPOSEGATE_SIDECAR_HEADER_READ_TIMEOUT", default_value = "10s", value_parser = parse_timeout)]
    header_read_timeout: Duration,
    /// How long a connection may stay open with no call in progress.
    #[arg(long, env = "PURPOSEGATE_SIDECAR_IDLE_TIMEOUT", default_value = "60s", value_parser = parse_timeout)]
    idle_timeout: Duration,
    /// Largest request head or HTTP/2 header list (e.g. 32Ki).
    #[arg(long, env = "PURPOSEGATE_SIDECAR_MAX_HEADER_BYTES", default_value = "32Ki", value_parser = parse_bytes)]
    max_header_bytes: usize,
    /// Largest first request message a `grpcField` route reads to find the
    /// data subject (e.g. 64Ki); a larger one is refused.
    #[arg(long, env = "PURPOSEGATE_SIDECAR_MAX_FIRST_MESSAGE_BYTES", default_value = "64Ki", value_parser = parse_bytes)]
    max_first_message_bytes: usize,
    /// Calls open at once on one HTTP/2 connection.
    #[arg(long, env = "PURPOSEGATE_SIDECAR_MAX_CONCURRENT_STREAMS", default_value_t = Limits::default().max_concurrent_streams)]
    max_concurrent_streams: u32,
    /// How long in-flight calls may take to finish after SIGTERM (e.g. 10s,
    /// 1m; a bare number is seconds).
    #[arg(long, env = "PURPOSEGATE_SIDECAR_DRAIN", value_name = "DURATION", default_value = "10s", value_parser = parse_drain)]
    drain: Duration,
    /// Log format of the sidecar's own log (stderr).
    #[arg(long, env = "PURPOSEGATE_SIDECAR_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

impl Args {
    /// The limits every listener of the sidecar applies.
    fn limits(&self) -> Limits {
        Limits {
            max_connections: self.max_connections,
            max_connections_per_peer: self.max_connections_per_peer,
            header_read_timeout: self.header_read_timeout,
            idle_timeout: self.idle_timeout,
            max_header_bytes: self.max_header_bytes,
            max_concurrent_streams: self.max_concurrent_streams,
            ..Limits::default()
        }
    }
}

/// Variables the sidecar read before it had its own prefix, and the flag
/// each stands for: still read, as a fallback, where no variable of the
/// server shares the name (`PURPOSEGATE_LISTEN`, `PURPOSEGATE_TLS_*`, ...
/// are the server's alone).
const OLD_NAMES: [(&str, &str); 8] = [
    ("PURPOSEGATE_PDP", "--pdp"),
    ("PURPOSEGATE_UPSTREAM", "--upstream"),
    ("PURPOSEGATE_ROUTES", "--routes"),
    ("PURPOSEGATE_LOCAL_LISTEN", "--local-listen"),
    ("PURPOSEGATE_PDP_TIMEOUT", "--pdp-timeout"),
    ("PURPOSEGATE_STALE_IF_ERROR", "--stale-if-error"),
    ("PURPOSEGATE_CACHE_MAX_ENTRIES", "--cache-max-entries"),
    ("PURPOSEGATE_DRY_RUN", "--dry-run"),
];

/// The command line with the old names' values added, for each flag that
/// neither the command line nor its new variable gives; the old names used.
fn with_old_names(
    mut argv: Vec<std::ffi::OsString>,
) -> (Vec<std::ffi::OsString>, Vec<&'static str>) {
    let mut used = Vec::new();
    for (old, flag) in OLD_NAMES {
        let new = old.replacen("PURPOSEGATE_", "PURPOSEGATE_SIDECAR_", 1);
        let given = argv.iter().any(|a| {
            a.to_str()
                .is_some_and(|a| a == flag || a.starts_with(&format!("{flag}=")))
        });
        let Some(value) = std::env::var_os(old) else {
            continue;
        };
        if given || std::env::var_os(&new).is_some() {
            continue;
        }
        if flag == "--dry-run" {
            if matches!(value.to_str(), Some("1" | "true" | "yes" | "on")) {
                argv.push(flag.into());
            }
        } else {
            argv.push(flag.into());
            argv.push(value);
        }
        used.push(old);
    }
    (argv, used)
}

fn main() -> ExitCode {
    let (argv, old_names) = with_old_names(std::env::args_os().collect());
    let args = Args::parse_from(argv);
    init_logging(args.log_format);
    for old in old_names {
        tracing::warn!(
            variable = old,
            "read as a fallback: rename it to {}",
            old.replacen("PURPOSEGATE_", "PURPOSEGATE_SIDECAR_", 1)
        );
    }
    let routes = match load_routes(args.routes.as_deref()) {
        Ok(routes) => routes.fulfilling(&args.obligations),
        Err(e) => {
            return refuse_to_start(
                args.log_format,
                "the sidecar did not start: cannot load the routes file",
                &e,
            );
        }
    };
    run_until_done("the sidecar", run(args, routes))
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

/// An `--upstream` that is one of the sidecar's own ports on this host
/// would send every permitted call back into the sidecar.
fn upstream_is_self(args: &Args) -> Option<SocketAddr> {
    let host = args
        .upstream
        .host()?
        .trim_start_matches('[')
        .trim_end_matches(']');
    let port = args.upstream.port_u16().unwrap_or(80);
    let local = host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback() || ip.is_unspecified());
    [args.listen, args.local_listen, args.metrics_listen]
        .into_iter()
        .find(|own| own.port() == port && (local || own.ip().to_string() == host))
}

async fn run(args: Args, routes: routes::Routes) -> Result<(), Box<dyn std::error::Error>> {
    // Signals are caught from here on: before anything says it listens.
    let signalled = wait_for_signal();
    if args.upstream.scheme_str() != Some("http") || args.upstream.authority().is_none() {
        return Err(format!(
            "--upstream `{}` must be an http://host:port address",
            args.upstream
        )
        .into());
    }
    if let Some(own) = upstream_is_self(&args) {
        return Err(format!(
            "--upstream `{}` is the sidecar's own {own}: permitted calls would come back to it",
            args.upstream
        )
        .into());
    }
    let limits = args.limits();
    let metrics = SidecarMetrics::new();
    purposegate_runtime::http::serve_metrics(
        args.metrics_listen,
        metrics.registry.clone(),
        limits,
        metrics.connections_refused("metrics"),
    )
    .await
    .map_err(|e| format!("cannot serve metrics on {}: {e}", args.metrics_listen))?;

    let cache = Arc::new(DecisionCache::new(
        CacheLimits {
            max_entries: args.cache_max_entries,
            max_bytes: args.cache_max_bytes,
            stale_window: args.stale_if_error,
            deny_ttl: args.cache_deny_ttl,
        },
        metrics.cache.clone(),
    ));
    cache.sweep_every(Duration::from_secs(1));
    // The reverse question is rarer and its answers larger: an eighth of
    // the byte bound, the same entry bound and windows.
    let purposes = Arc::new(DecisionCache::<pb::PermittedPurposesResponse>::new(
        CacheLimits {
            max_entries: args.cache_max_entries,
            max_bytes: args.cache_max_bytes / 8,
            stale_window: args.stale_if_error,
            deny_ttl: args.cache_deny_ttl,
        },
        metrics.purposes_cache.clone(),
    ));
    purposes.sweep_every(Duration::from_secs(1));
    let tls = purposegate_runtime::tls::TlsFiles::from_flags(
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
            Some(purposegate_runtime::tls::ClientTls::new(
                files.clone(),
                &[b"h2"],
            )?),
            Some(
                purposegate_runtime::tls::ServerTls::new(files, &[b"h2", b"http/1.1"])?
                    .counting_failures(metrics.tls_handshake_failures.clone()),
            ),
        ),
        None => (None, None),
    };
    let pdp = Pdp::new(&args.pdp, args.pdp_timeout, pdp_tls)?;
    let (revisions_tx, revisions) = watch::channel(None);
    let inheritance = Arc::new(
        purposegate_sidecar::inherit::Inheritance::new(
            args.require_purpose_context,
            metrics.contexts.clone(),
        )
        .from_issuers(&args.purpose_context_from),
    );
    // Open calls hear whose choices changed; 1,024 changes may wait for a
    // slow supervisor before it is told it missed some (and re-judges).
    let (choice_changes, _) = tokio::sync::broadcast::channel(1024);
    pdp.follow_choices(
        cache.clone(),
        args.choices_stale_window,
        choice_changes.clone(),
    );
    pdp.follow_revisions(
        cache.clone(),
        purposes.clone(),
        inheritance.clone(),
        revisions_tx,
    );
    let telemetry = purposegate_runtime::telemetry::Telemetry::from_env(
        "purposegate-sidecar",
        metrics.spans_dropped.clone(),
    )?;
    let gate = Gate {
        cache: cache.clone(),
        purposes,
        pdp: Arc::new(pdp),
        telemetry: telemetry.clone(),
        dry_run: args.dry_run,
        inheritance,
    };

    // Shutdown: health turns NOT_SERVING, the listeners stop accepting,
    // open connections close gracefully and watch streams end, bounded by
    // the drain time.
    let (shutdown_tx, shutdown) = watch::channel(false);

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
    let supervisor = Supervisor::new(
        gate.clone(),
        revisions.clone(),
        args.max_stream_age,
        args.call_idle_timeout,
    )
    .following_choices(choice_changes);
    let proxy = proxy::Proxy::new(
        gate.clone(),
        routes.clone(),
        args.upstream.clone(),
        args.upstream_protocol,
        supervisor,
        proxy::CallLimits {
            max_calls: args.max_calls,
            max_calls_per_peer: args.max_calls_per_peer,
            max_streams_per_connection: args.max_concurrent_streams,
            max_first_message_bytes: args.max_first_message_bytes,
            first_message_within: args.header_read_timeout,
        },
    )
    .serve(
        proxy_listener,
        proxy_tls,
        limits,
        shutdown.clone(),
        metrics.connections_refused("proxy"),
    );

    let health = tonic_health::server::HealthReporter::new();
    let health_service =
        purposegate_runtime::grpc::DrainingHealth::server(health.clone(), shutdown.clone());
    set_status::<DecisionServiceServer<LocalDecisions>>(&health, ServingStatus::Serving).await;
    let (reflection_v1, reflection_v1alpha) = purposegate_runtime::grpc::reflection(&[
        purposegate_proto::FILE_DESCRIPTOR_SET,
        extauthz::FILE_DESCRIPTOR_SET,
    ])?;

    let local_listener = tokio::net::TcpListener::bind(args.local_listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.local_listen))?;
    let local_addr = local_listener.local_addr()?;
    info!(local_addr = %local_addr, pdp = %args.pdp, "serving the local decision API and Envoy ext_authz");
    let grpc = tonic::service::Routes::new(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(DecisionServiceServer::new(LocalDecisions::new(
            gate.clone(),
            args.max_batch,
            revisions,
            shutdown.clone(),
        )))
        .add_service(envoy_types::ext_authz::v3::pb::AuthorizationServer::new(
            extauthz::ExtAuthz::new(
                gate.clone(),
                routes,
                tls_configured,
                args.max_first_message_bytes,
            ),
        ))
        .prepare();
    let grpc = MessageLimits::new(
        grpc,
        &purposegate_proto::limits::decision_limits(args.max_batch),
        purposegate_proto::limits::MESSAGE_BUDGET_BYTES,
    );
    let face = Face {
        name: "local",
        limits,
        protocols: Protocols::Http2,
        tls: None,
        refused: metrics.connections_refused("local"),
    };
    let local =
        purposegate_runtime::listen::serve(local_listener, face, shutdown.clone(), move |_peer| {
            hyper_util::service::TowerToHyperService::new(grpc.clone())
        });

    signalled.await;
    info!("shutting down: health NOT_SERVING, draining in-flight calls");
    set_status::<DecisionServiceServer<LocalDecisions>>(&health, ServingStatus::NotServing).await;
    let _ = shutdown_tx.send(true);
    purposegate_runtime::listen::drain(&[&proxy, &local], args.drain).await;
    if let Some(telemetry) = telemetry {
        telemetry.shutdown().await;
    }
    info!("stopped");
    Ok(())
}
