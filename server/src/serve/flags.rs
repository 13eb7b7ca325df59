//! The server's flags, each with the environment variable it reads, and
//! what `serve` derives from them (the drain time, the gRPC port's limits,
//! the injected sidecars' template).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};
use purposegate_runtime::log::LogFormat;
use tracing::warn;

/// Flags of the server; each also reads the environment variable it names.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address to serve gRPC on.
    #[arg(long, env = "PURPOSEGATE_LISTEN", default_value = "0.0.0.0:50051")]
    pub listen: SocketAddr,
    /// Policy file, or directory whose *.yaml files form one policy
    /// (*_test.yaml skipped); watched and reloaded on change, keeping the
    /// last good revision when a change fails to load [default: the
    /// embedded default policy].
    #[arg(long, env = "PURPOSEGATE_POLICY")]
    pub policy: Option<PathBuf>,
    #[command(flatten)]
    pub policy_limits: crate::policy_files::PolicyLimitArgs,
    /// Address to serve Prometheus metrics on, at /metrics.
    #[arg(
        long,
        env = "PURPOSEGATE_METRICS_LISTEN",
        default_value = "0.0.0.0:9090"
    )]
    pub metrics_listen: SocketAddr,
    /// Address of the policy explorer (a web page for privacy officers and
    /// its JSON API), or `off`. Keep it off the public network.
    #[arg(long, env = "PURPOSEGATE_ADMIN_LISTEN", default_value = "127.0.0.1:9091", value_parser = parse_listen)]
    pub admin_listen: Listen,
    /// Address to serve the OpenID AuthZEN 1.0 API on (HTTP/1.1 and h2c;
    /// TLS with --tls-cert), or `off`.
    #[arg(long, env = "PURPOSEGATE_AUTHZEN_LISTEN", default_value = "0.0.0.0:8181", value_parser = parse_listen)]
    pub authzen_listen: Listen,
    /// The AuthZEN PDP's base URL as callers reach it (e.g.
    /// https://pdp.example.com), for the metadata at
    /// /.well-known/authzen-configuration [default: the request's scheme and
    /// Host].
    #[arg(long, env = "PURPOSEGATE_AUTHZEN_BASE_URL", value_parser = crate::authzen::parse_base_url)]
    pub authzen_base_url: Option<String>,
    /// Largest AuthZEN request body (e.g. 1Mi); larger ones are 413.
    #[arg(long, env = "PURPOSEGATE_AUTHZEN_MAX_BODY", default_value = "1Mi", value_parser = purposegate_runtime::units::parse_bytes)]
    pub authzen_max_body: usize,
    /// Largest CheckBatch (and AuthZEN evaluations) accepted; larger
    /// batches are INVALID_ARGUMENT (400), counted before they are decoded.
    #[arg(long, env = "PURPOSEGATE_MAX_BATCH", default_value_t = 1000)]
    pub max_batch: usize,
    /// WatchPolicy streams open at once, and as many WatchChoices streams;
    /// more are RESOURCE_EXHAUSTED.
    #[arg(long, env = "PURPOSEGATE_MAX_WATCHERS", default_value_t = 4096)]
    pub max_watchers: usize,
    /// Connections the gRPC port holds at once (each sidecar keeps one);
    /// more are closed at once.
    #[arg(long, env = "PURPOSEGATE_MAX_CONNECTIONS", default_value_t = 8192)]
    pub max_connections: usize,
    /// Connections one peer address may hold on the gRPC port.
    #[arg(
        long,
        env = "PURPOSEGATE_MAX_CONNECTIONS_PER_PEER",
        default_value_t = 64
    )]
    pub max_connections_per_peer: usize,
    /// How long a gRPC connection may stay open with no call in progress
    /// (a sidecar's policy watch is a call in progress); a new connection
    /// that sends nothing is closed after 5 s.
    #[arg(long, env = "PURPOSEGATE_IDLE_TIMEOUT", default_value = "5m", value_parser = purposegate_runtime::units::parse_timeout)]
    pub idle_timeout: Duration,
    /// Calls open at once on one gRPC connection.
    #[arg(
        long,
        env = "PURPOSEGATE_MAX_CONCURRENT_STREAMS",
        default_value_t = 100
    )]
    pub max_concurrent_streams: u32,
    /// How long in-flight calls may take to finish after SIGTERM (e.g. 10s,
    /// 1m; a bare number is seconds) [default: 10s]. The older names,
    /// --drain-seconds and PURPOSEGATE_DRAIN_SECONDS, are still read.
    #[arg(
        long,
        visible_alias = "drain-seconds",
        env = "PURPOSEGATE_DRAIN",
        value_name = "DURATION",
        value_parser = purposegate_runtime::units::parse_drain
    )]
    pub drain: Option<Duration>,
    /// Where every decision goes as one JSON line: `-` for stdout, a file
    /// path (appended), or `off`.
    #[arg(long, env = "PURPOSEGATE_DECISION_LOG", default_value = "-")]
    pub decision_log: crate::audit::Target,
    /// Bytes of decisions that may wait to be written (e.g. 8Mi). Past
    /// it, identical decisions are folded into one line, denials displace
    /// permits, and what is still dropped is counted and written as a line
    /// saying how many, between which times.
    #[arg(long, env = "PURPOSEGATE_DECISION_LOG_QUEUE", default_value = "8Mi", value_parser = purposegate_runtime::units::parse_bytes)]
    pub decision_log_queue: usize,
    /// Request fields the decision log leaves out or hashes:
    /// `FIELD[=drop|hash],...` (e.g. `subject=hash,roles`). A hashed value
    /// is `sha256:` and 16 hex digits, so equal values stay equal
    /// [default: none].
    #[arg(long, env = "PURPOSEGATE_DECISION_LOG_REDACT", value_name = "FIELDS")]
    pub decision_log_redact: Option<crate::audit::line::Redaction>,
    /// Rotate the decision log file once it would grow past this size
    /// (e.g. 100Mi; at least 4Ki): it is renamed FILE.<last seq> and a new
    /// FILE continues the chain [default: never].
    #[arg(long, env = "PURPOSEGATE_DECISION_LOG_MAX_BYTES", value_name = "BYTES", value_parser = parse_log_max_bytes)]
    pub decision_log_max_bytes: Option<u64>,
    /// With --decision-log-max-bytes: keep at most this many rotated
    /// files (FILE.<seq>), deleting the oldest, so the log's disk use is
    /// bounded at about (N + 1) times the size [default: keep all].
    #[arg(long, env = "PURPOSEGATE_DECISION_LOG_KEEP", value_name = "N", requires = "decision_log_max_bytes", value_parser = clap::value_parser!(u64).range(1..))]
    pub decision_log_keep: Option<u64>,
    /// Ed25519 private key (PKCS#8 PEM) to sign checkpoints of the
    /// decision log's hash chain with; `verify-log --public-key` checks
    /// them [default: no checkpoints].
    #[arg(long, env = "PURPOSEGATE_DECISION_LOG_SIGNING_KEY", value_name = "PEM")]
    pub decision_log_signing_key: Option<PathBuf>,
    /// With a signing key: a checkpoint after this many lines...
    #[arg(long, env = "PURPOSEGATE_DECISION_LOG_CHECKPOINT_LINES", value_name = "N", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
    pub decision_log_checkpoint_lines: u64,
    /// ...or this long after the last one (and at shutdown).
    #[arg(long, env = "PURPOSEGATE_DECISION_LOG_CHECKPOINT_INTERVAL", value_name = "DURATION", default_value = "60s", value_parser = purposegate_runtime::units::parse_duration)]
    pub decision_log_checkpoint_interval: Duration,
    /// The decision log's identity, signed into every checkpoint, so logs
    /// of servers that share a key cannot stand in for each other; keep it
    /// the same across restarts [default: this host's name and the log
    /// file's absolute path, `HOST:PATH`].
    #[arg(long, env = "PURPOSEGATE_DECISION_LOG_ORIGIN", value_name = "NAME", value_parser = parse_origin)]
    pub decision_log_origin: Option<String>,
    /// When the decision log is synced to disk: at every `checkpoint`, or
    /// after every `batch` of lines the writer takes (slower, loses less
    /// in a power cut).
    #[arg(long, env = "PURPOSEGATE_DECISION_LOG_SYNC", value_name = "WHEN", default_value = "checkpoint", value_parser = ["checkpoint", "batch"])]
    pub decision_log_sync: String,
    /// Ed25519 private key (PKCS#8 PEM) to sign purpose contexts with: a
    /// permit asked with `issue_purpose_context` by an issuer carries one,
    /// for the next hop to inherit. Followed on disk: a new key is used
    /// within a second, the one before stays published until its contexts
    /// expire; a file removed stops signing [default: no contexts].
    #[arg(long, env = "PURPOSEGATE_PURPOSE_SIGNING_KEY", value_name = "PEM")]
    pub purpose_signing_key: Option<PathBuf>,
    /// Who may obtain purpose contexts: globs over the mTLS identities of
    /// callers, the PEPs: their certificate's one SPIFFE ID, or one of its
    /// DNS names (`*` stays inside one `/` segment); `*` alone for any
    /// caller, plaintext ones included
    /// (contexts then prove nothing) [default: none, so none is issued].
    #[arg(
        long,
        env = "PURPOSEGATE_PURPOSE_CONTEXT_ISSUERS",
        value_name = "GLOBS",
        value_delimiter = ','
    )]
    pub purpose_context_issuers: Vec<String>,
    /// Who may record and read choices (`ChoicesService`): globs over the
    /// mTLS identities of callers, as for --purpose-context-issuers; `*`
    /// alone for any caller, plaintext ones included [default: none].
    #[arg(
        long,
        env = "PURPOSEGATE_CHOICES_WRITERS",
        value_name = "GLOBS",
        value_delimiter = ','
    )]
    pub choices_writers: Vec<String>,
    /// Where choices are kept: an SQLite database file, created (with its
    /// schema) if missing, or a PostgreSQL database shared by replicas
    /// (`postgres://user@host:5432/db`; its schema `purposegate` created
    /// if missing) [default: in memory, lost at stop].
    #[arg(long, env = "PURPOSEGATE_CHOICES_DB", value_name = "PATH|URL")]
    pub choices_db: Option<PathBuf>,
    /// PEM CA bundle that signed a PostgreSQL `--choices-db`'s certificate:
    /// the connection is then always TLS, the certificate verified
    /// against it and the URL's host.
    #[arg(long, env = "PURPOSEGATE_CHOICES_DB_CA", value_name = "PATH")]
    pub choices_db_ca: Option<PathBuf>,
    /// How long a purpose context is valid (answers carrying one are
    /// cached no longer).
    #[arg(long, env = "PURPOSEGATE_PURPOSE_CONTEXT_TTL", value_name = "DURATION", default_value = "60s", value_parser = purposegate_runtime::units::parse_duration)]
    pub purpose_context_ttl: Duration,
    /// PEM certificate chain to serve gRPC with over TLS; plaintext is then
    /// refused. Reloaded when the file changes.
    #[arg(long, env = "PURPOSEGATE_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert. Reloaded when the file changes.
    #[arg(long, env = "PURPOSEGATE_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// PEM CA bundle: clients must present a certificate that chains to it
    /// (mutual TLS). Reloaded when the file changes.
    #[arg(long, env = "PURPOSEGATE_TLS_CLIENT_CA", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,
    /// Address to serve the sidecar injection webhook on (HTTPS, paths
    /// /inject and /inject-namespace) [default: off].
    #[arg(long, env = "PURPOSEGATE_WEBHOOK_LISTEN", requires_all = ["webhook_cert", "webhook_key"])]
    pub webhook_listen: Option<SocketAddr>,
    /// PEM certificate chain of the webhook; reloaded when the file changes.
    #[arg(long, env = "PURPOSEGATE_WEBHOOK_CERT")]
    pub webhook_cert: Option<PathBuf>,
    /// PEM private key of the webhook; reloaded when the file changes.
    #[arg(long, env = "PURPOSEGATE_WEBHOOK_KEY")]
    pub webhook_key: Option<PathBuf>,
    /// What the webhook answers when it cannot inject a selected pod:
    /// `fail` refuses the pod, `ignore` admits it with a warning. Match the
    /// MutatingWebhookConfiguration's failurePolicy.
    #[arg(long, env = "PURPOSEGATE_WEBHOOK_FAILURE_POLICY", value_enum, default_value_t = crate::webhook::inject::FailurePolicy::Fail)]
    pub webhook_failure_policy: crate::webhook::inject::FailurePolicy,
    /// Image of the injected sidecar.
    #[arg(long, env = "PURPOSEGATE_WEBHOOK_SIDECAR_IMAGE", default_value = concat!("purposegate/purposegate:", env!("CARGO_PKG_VERSION")))]
    pub sidecar_image: String,
    /// The decision server as injected sidecars reach it.
    #[arg(
        long,
        env = "PURPOSEGATE_WEBHOOK_SIDECAR_PDP",
        default_value = "http://purposegate.purposegate.svc:50051"
    )]
    pub sidecar_pdp: String,
    /// CPU request of injected sidecars.
    #[arg(
        long,
        env = "PURPOSEGATE_WEBHOOK_SIDECAR_CPU_REQUEST",
        default_value = "50m"
    )]
    pub sidecar_cpu_request: String,
    /// Memory request of injected sidecars.
    #[arg(
        long,
        env = "PURPOSEGATE_WEBHOOK_SIDECAR_MEMORY_REQUEST",
        default_value = "32Mi"
    )]
    pub sidecar_memory_request: String,
    /// Memory limit of injected sidecars.
    #[arg(
        long,
        env = "PURPOSEGATE_WEBHOOK_SIDECAR_MEMORY_LIMIT",
        default_value = "128Mi"
    )]
    pub sidecar_memory_limit: String,
    /// Mutual TLS of injected sidecars with the server: `off`,
    /// `spiffe-csi` (each pod's certificate from a CSI driver such as
    /// cert-manager's csi-driver-spiffe) or `secret` (a Secret in the pod's
    /// namespace, --sidecar-tls-secret). Each source holds tls.crt, tls.key
    /// and ca.crt; --sidecar-pdp must then be https://.
    #[arg(long, env = "PURPOSEGATE_WEBHOOK_SIDECAR_TLS", value_enum, default_value_t = SidecarTlsSource::Off)]
    pub sidecar_tls: SidecarTlsSource,
    /// The Secret injected sidecars take their certificate from, with
    /// `--sidecar-tls secret`.
    #[arg(
        long,
        env = "PURPOSEGATE_WEBHOOK_SIDECAR_TLS_SECRET",
        default_value = "purposegate-sidecar-tls"
    )]
    pub sidecar_tls_secret: String,
    /// The CSI driver injected sidecars take their certificate from, with
    /// `--sidecar-tls spiffe-csi`.
    #[arg(
        long,
        env = "PURPOSEGATE_WEBHOOK_SIDECAR_TLS_CSI_DRIVER",
        default_value = "spiffe.csi.cert-manager.io"
    )]
    pub sidecar_tls_csi_driver: String,
    /// Log format of the server's own log (stderr).
    #[arg(long, env = "PURPOSEGATE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// Where injected sidecars get their TLS identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SidecarTlsSource {
    Off,
    SpiffeCsi,
    Secret,
}

/// The drain time when neither --drain nor PURPOSEGATE_DRAIN gives one.
const DRAIN: Duration = Duration::from_secs(10);

impl ServeArgs {
    /// The drain time: --drain (or --drain-seconds), PURPOSEGATE_DRAIN,
    /// then the older PURPOSEGATE_DRAIN_SECONDS (with a warning), then 10 s.
    pub(super) fn drain(&self) -> Result<Duration, String> {
        if let Some(drain) = self.drain {
            return Ok(drain);
        }
        let Some(old) = std::env::var_os("PURPOSEGATE_DRAIN_SECONDS") else {
            return Ok(DRAIN);
        };
        let value = old.to_string_lossy();
        let drain = purposegate_runtime::units::parse_drain(&value)
            .map_err(|e| format!("PURPOSEGATE_DRAIN_SECONDS={value:?}: {e}"))?;
        warn!(
            variable = "PURPOSEGATE_DRAIN_SECONDS",
            "read as a fallback: rename it to PURPOSEGATE_DRAIN"
        );
        Ok(drain)
    }

    /// The limits of the gRPC port.
    pub(super) fn limits(&self) -> purposegate_runtime::listen::Limits {
        purposegate_runtime::listen::Limits {
            max_connections: self.max_connections,
            max_connections_per_peer: self.max_connections_per_peer,
            idle_timeout: self.idle_timeout,
            max_concurrent_streams: self.max_concurrent_streams,
            ..purposegate_runtime::listen::Limits::default()
        }
    }

    /// How injected sidecars are configured, checked for consistency.
    pub(super) fn sidecar_template(
        &self,
    ) -> Result<crate::webhook::inject::SidecarTemplate, String> {
        use crate::webhook::inject::SidecarTls;
        let tls = match self.sidecar_tls {
            SidecarTlsSource::Off => SidecarTls::Off,
            SidecarTlsSource::SpiffeCsi => SidecarTls::Csi {
                driver: self.sidecar_tls_csi_driver.clone(),
            },
            SidecarTlsSource::Secret => SidecarTls::Secret {
                name: self.sidecar_tls_secret.clone(),
            },
        };
        let https = self.sidecar_pdp.starts_with("https://");
        match (&tls, https) {
            (SidecarTls::Off, true) => {
                return Err(format!(
                    "--sidecar-pdp `{}` is https but --sidecar-tls is off: injected sidecars would have no certificate",
                    self.sidecar_pdp
                ));
            }
            (SidecarTls::Csi { .. } | SidecarTls::Secret { .. }, false) => {
                return Err(format!(
                    "--sidecar-pdp `{}` must be https:// with --sidecar-tls",
                    self.sidecar_pdp
                ));
            }
            _ => {}
        }
        Ok(crate::webhook::inject::SidecarTemplate {
            image: self.sidecar_image.clone(),
            pdp: self.sidecar_pdp.clone(),
            cpu_request: self.sidecar_cpu_request.clone(),
            memory_request: self.sidecar_memory_request.clone(),
            memory_limit: self.sidecar_memory_limit.clone(),
            failure_policy: self.webhook_failure_policy,
            tls,
        })
    }
}

/// A listening address, or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listen(pub Option<SocketAddr>);

fn parse_listen(s: &str) -> Result<Listen, String> {
    if s == "off" {
        return Ok(Listen(None));
    }
    s.parse()
        .map(|addr| Listen(Some(addr)))
        .map_err(|e| format!("`{s}` is neither an address like 127.0.0.1:9091 nor `off`: {e}"))
}

fn parse_log_max_bytes(s: &str) -> Result<u64, String> {
    let bytes = purposegate_runtime::units::parse_bytes(s)?;
    if bytes < 4096 {
        return Err(format!("{bytes} bytes is too small; give at least 4Ki"));
    }
    Ok(bytes as u64)
}

/// An origin: printable, without line breaks, at most 256 bytes.
fn parse_origin(s: &str) -> Result<String, String> {
    if s.is_empty() || s.len() > 256 || s.chars().any(char::is_control) {
        return Err("give 1 to 256 bytes without control characters".to_string());
    }
    Ok(s.to_string())
}
