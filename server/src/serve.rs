//! `purposegate-server` with no command: the decision server.
//!
//! Serves `purposegate.v1.DecisionService`, `grpc.health.v1.Health` and
//! server reflection (v1 and v1alpha, so grpcurl needs no proto file) on one
//! port. On SIGTERM or SIGINT health turns `NOT_SERVING`, open watch streams
//! end, in-flight calls finish, and the process exits 0 within the drain
//! time.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use purposegate_proto::v1::decision_service_server::DecisionServiceServer;
use purposegate_runtime::log::init_logging;
use purposegate_runtime::process::{refuse_to_start, run_until_done, wait_for_signal};
use tokio::sync::watch;
use tonic_health::ServingStatus;
use tracing::{info, warn};

use crate::engine::{Policy, PolicyLimits, default_policy};
use crate::grpc::DecisionServer;
use crate::metrics::Metrics;
use crate::policy_files::{self, PolicyError};
use crate::store::PolicyStore;

mod flags;

pub use flags::{Listen, ServeArgs, SidecarTlsSource};

fn load_policy(path: Option<&PathBuf>, limits: &PolicyLimits) -> Result<Policy, PolicyError> {
    match path {
        Some(path) => policy_files::read_policy(path, limits),
        None => default_policy::load().map_err(PolicyError::Invalid),
    }
}

/// Runs the server until a signal; the exit code for `main`.
pub fn run(args: ServeArgs) -> ExitCode {
    init_logging(args.log_format);
    let policy = match load_policy(args.policy.as_ref(), &args.policy_limits.limits()) {
        Ok(p) => p,
        Err(e) => {
            return refuse_to_start(
                args.log_format,
                "the server did not start: cannot load the policy",
                &e.to_string(),
            );
        }
    };
    run_until_done("the server", serve(args, policy))
}

async fn serve(args: ServeArgs, policy: Policy) -> Result<(), Box<dyn std::error::Error>> {
    // Signals are caught from here on: before anything says it listens.
    let signalled = wait_for_signal();
    // Settings that contradict each other fail before anything listens.
    let template = match args.webhook_listen {
        Some(_) => Some(args.sidecar_template()?),
        None => None,
    };
    let drain = args.drain()?;
    info!(
        policy = %policy.name(),
        revision = %policy.revision(),
        source = %args.policy.as_ref().map_or("embedded default".to_string(), |p| p.display().to_string()),
        "policy loaded"
    );
    let store = Arc::new(PolicyStore::new(policy));
    let metrics = Metrics::new();
    let telemetry = purposegate_runtime::telemetry::Telemetry::from_env(
        "purposegate-server",
        metrics.spans_dropped.clone(),
    )?;
    metrics.follow(store.subscribe());
    purposegate_runtime::http::serve_metrics(
        args.metrics_listen,
        metrics.registry(),
        purposegate_runtime::listen::Limits::default(),
        metrics.connections_refused("metrics"),
    )
    .await
    .map_err(|e| format!("cannot serve metrics on {}: {e}", args.metrics_listen))?;
    // Keep the watcher alive for as long as the server runs.
    let _reloader = match &args.policy {
        Some(path) => Some(
            crate::reload::watch(
                path.clone(),
                args.policy_limits.limits(),
                store.clone(),
                metrics.clone(),
            )
            .map_err(|e| format!("cannot watch `{}`: {e}", path.display()))?,
        ),
        None => None,
    };
    let (shutdown_tx, shutdown_rx) = watch::channel(false);

    let health = tonic_health::server::HealthReporter::new();
    let health_service =
        purposegate_runtime::grpc::DrainingHealth::server(health.clone(), shutdown_rx.clone());
    purposegate_runtime::grpc::set_status::<DecisionServiceServer<DecisionServer>>(
        &health,
        ServingStatus::Serving,
    )
    .await;
    let (reflection_v1, reflection_v1alpha) =
        purposegate_runtime::grpc::reflection(&[purposegate_proto::FILE_DESCRIPTOR_SET])?;

    let signer = args
        .decision_log_signing_key
        .as_deref()
        .map(crate::signing::Signer::from_file)
        .transpose()
        .map_err(|e| format!("--decision-log-signing-key: {e}"))?;
    let decision_log = crate::audit::DecisionLog::start(
        &args.decision_log,
        args.decision_log_queue,
        crate::audit::Options {
            redaction: args.decision_log_redact.clone().unwrap_or_default(),
            max_bytes: args.decision_log_max_bytes,
            keep: args
                .decision_log_keep
                .map(|n| usize::try_from(n).unwrap_or(usize::MAX)),
            signer,
            checkpoint_lines: args.decision_log_checkpoint_lines,
            checkpoint_interval: args.decision_log_checkpoint_interval,
            origin: args
                .decision_log_origin
                .clone()
                .unwrap_or_else(|| crate::audit::default_origin(&args.decision_log)),
            sync_every_batch: args.decision_log_sync == "batch",
        },
        metrics.decision_log_dropped.clone(),
        metrics.decision_log_write_errors.clone(),
    )
    .map_err(|e| format!("cannot open the decision log {:?}: {e}", args.decision_log))?;
    let tls_failures = metrics.tls_handshake_failures.clone();
    let metrics_refused = metrics.connections_refused("grpc");
    let metrics_webhook_refused = metrics.connections_refused("webhook");
    let metrics_authzen_refused = metrics.connections_refused("authzen");
    // Choices: in PostgreSQL (shared by replicas, followed) or SQLite with
    // --choices-db, else in memory (a restart loses them). In front of the
    // store: the choices asked about lately, and the feed of changes that
    // WatchChoices streams.
    let max = crate::choices::cache::DEFAULT_MAX_BYTES;
    let choices = match &args.choices_db {
        Some(db) if crate::choices::is_postgres(db) => {
            let postgres = Arc::new(crate::choices::PostgresChoices::open(
                &db.to_string_lossy(),
                args.choices_db_ca.as_deref(),
            )?);
            let store: Arc<dyn crate::choices::ChoicesStore> = postgres.clone();
            info!(
                revision = store.revision(),
                "choices kept in PostgreSQL, followed on every commit's notification and every {:?}",
                crate::choices::follow::POLL
            );
            let cache = Arc::new(crate::choices::CachedChoices::followed(store.clone(), max));
            postgres.listen({
                let cache = cache.clone();
                move || cache.wake()
            });
            crate::choices::follow::follow(cache.clone(), store, shutdown_rx.clone());
            cache
        }
        _ if args.choices_db_ca.is_some() => {
            return Err("--choices-db-ca is for a PostgreSQL --choices-db (postgres://…)".into());
        }
        Some(path) => {
            let db = crate::choices::SqliteChoices::open(path)?;
            info!(db = %path.display(), revision = crate::choices::ChoicesStore::revision(&db), "choices kept in SQLite");
            Arc::new(crate::choices::CachedChoices::new(Arc::new(db), max))
        }
        None => {
            info!(
                "choices (ChoicesService) are kept in memory and lost when the server stops; --choices-db keeps them"
            );
            Arc::new(crate::choices::CachedChoices::new(
                Arc::new(crate::choices::MemoryChoices::new()),
                max,
            ))
        }
    };
    if args.choices_writers.iter().any(|w| w.trim() == "*") {
        warn!(
            "--choices-writers '*': any caller, plaintext ones included, records and reads choices"
        );
    }
    if let Listen(Some(addr)) = args.admin_listen {
        let refused = metrics.connections_refused("explorer");
        crate::explorer::serve(
            addr,
            store.clone(),
            choices.clone(),
            decision_log.clone(),
            refused,
        )
        .await
        .map_err(|e| format!("cannot serve the policy explorer on {addr}: {e}"))?;
    }
    let choice_watchers = crate::grpc::Watchers::new(
        "choices",
        args.max_watchers,
        metrics.watchers_refused.clone(),
    );
    let decider =
        crate::decide::Decider::new(store.clone(), decision_log, metrics, telemetry.clone())
            .with_choices(choices.clone());
    let choices_api = crate::grpc::choices::ChoicesServer::new(
        choices,
        store.clone(),
        &args.choices_writers,
        choice_watchers,
        shutdown_rx.clone(),
    );
    let purpose_keys = crate::purpose_context::PurposeKeys::from_flags(
        args.purpose_signing_key.as_deref(),
        args.purpose_context_ttl,
        &args.purpose_context_issuers,
        decider.metrics().purpose_contexts_not_issued.clone(),
    )?;
    // Batches, the reverse question and searches, of every face.
    let pool = crate::work::WorkPool::for_this_machine();
    let decisions = DecisionServer::new(
        decider.clone(),
        purpose_keys,
        args.max_batch,
        args.max_watchers,
        pool.clone(),
        choices_api.clone(),
        shutdown_rx.clone(),
    );

    if let (Some(addr), Some(cert), Some(key), Some(template)) = (
        args.webhook_listen,
        &args.webhook_cert,
        &args.webhook_key,
        template,
    ) {
        let tls = purposegate_runtime::tls::ServerTls::new(
            purposegate_runtime::tls::TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
                ca: None,
            },
            &[b"http/1.1"],
        )?;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
        info!(webhook_addr = %listener.local_addr()?, "serving the sidecar injection webhook");
        crate::webhook::serve(
            listener,
            tls,
            Arc::new(template),
            metrics_webhook_refused.clone(),
        );
    }

    let tls_files = purposegate_runtime::tls::TlsFiles::from_flags(
        args.tls_cert.as_ref(),
        args.tls_key.as_ref(),
        args.tls_client_ca.as_ref(),
    )?;
    let authzen = match args.authzen_listen {
        Listen(None) => None,
        Listen(Some(addr)) => {
            let tls = tls_files
                .clone()
                .map(|files| {
                    purposegate_runtime::tls::ServerTls::new(files, &[b"h2", b"http/1.1"])
                        .map(|tls| tls.counting_failures(tls_failures.clone()))
                })
                .transpose()?;
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| format!("cannot listen on {addr} (--authzen-listen): {e}"))?;
            let api = Arc::new(crate::authzen::AuthZen::new(
                decider.clone(),
                args.max_batch,
                args.authzen_max_body,
                args.authzen_base_url.clone(),
                tls.is_some(),
                pool.clone(),
            )?);
            let face = purposegate_runtime::listen::Face {
                name: "authzen",
                limits: purposegate_runtime::listen::Limits::default(),
                protocols: purposegate_runtime::listen::Protocols::Both,
                tls,
                refused: metrics_authzen_refused,
            };
            Some(crate::authzen::serve(
                listener,
                face,
                shutdown_rx.clone(),
                api,
            )?)
        }
    };
    let tls = tls_files
        .map(|files| {
            purposegate_runtime::tls::ServerTls::new(files, &[b"h2"])
                .map(|tls| tls.counting_failures(tls_failures))
        })
        .transpose()?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    let addr = listener.local_addr()?;
    info!(
        %addr,
        tls = match &tls {
            Some(tls) if tls.verifies_clients() => "mutual",
            Some(_) => "server",
            None => "off",
        },
        "serving purposegate.v1.DecisionService"
    );

    let grpc = tonic::service::Routes::new(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(
            DecisionServiceServer::new(decisions)
                .max_decoding_message_size(purposegate_proto::limits::MAX_BATCH_BYTES),
        )
        .add_service(
            purposegate_proto::v1::choices_service_server::ChoicesServiceServer::new(choices_api)
                .max_decoding_message_size(purposegate_proto::limits::MAX_CHECK_BYTES),
        )
        .prepare();
    let grpc = purposegate_proto::limits::MessageLimits::new(
        grpc,
        &purposegate_proto::limits::decision_limits(args.max_batch),
        purposegate_proto::limits::MESSAGE_BUDGET_BYTES,
    );
    let face = purposegate_runtime::listen::Face {
        name: "grpc",
        limits: args.limits(),
        protocols: purposegate_runtime::listen::Protocols::Http2,
        tls,
        refused: metrics_refused.clone(),
    };
    let served =
        purposegate_runtime::listen::serve(listener, face, shutdown_rx.clone(), move |peer| {
            // Each request learns who its caller is (the purpose contexts'
            // issuers are callers by their mTLS names).
            hyper_util::service::TowerToHyperService::new(crate::grpc::Identified::new(
                grpc.clone(),
                peer.names.clone(),
                peer.addr.ip(),
            ))
        });

    signalled.await;
    info!("shutting down: health NOT_SERVING, draining in-flight calls");
    purposegate_runtime::grpc::set_status::<DecisionServiceServer<DecisionServer>>(
        &health,
        ServingStatus::NotServing,
    )
    .await;
    let _ = shutdown_tx.send(true);
    let mut listeners = vec![&served];
    listeners.extend(authzen.as_ref());
    purposegate_runtime::listen::drain(&listeners, drain).await;
    let log = decider.decision_log().clone();
    let _ = tokio::task::spawn_blocking(move || log.finish(Duration::from_secs(2))).await;
    if let Some(telemetry) = telemetry {
        telemetry.shutdown().await;
    }
    info!("stopped");
    Ok(())
}
