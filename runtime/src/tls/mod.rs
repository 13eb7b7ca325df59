//! TLS from PEM files (rustls, ring), read again when the files change.
//!
//! Used on every TLS face of the project: the server's gRPC port
//! (`--tls-cert/--tls-key/--tls-client-ca`), the sidecar's proxy port and
//! its connection to the server, and the injection webhook. A certificate
//! rotated on disk (cert-manager, a renewed Secret, a ConfigMap symlink
//! swap) is picked up on the next handshake; a set of files that fails to
//! load leaves the last good configuration in use and is logged.

pub mod connect;
pub mod x509;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use prometheus_client::metrics::counter::Counter;

use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tracing::{info, warn};

/// The PEM files of one TLS identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// Certificate chain, leaf first.
    pub cert: PathBuf,
    pub key: PathBuf,
    /// CA bundle that peers' certificates must chain to. On a server: the
    /// client certificates, which are then required. On a client: the
    /// server's certificate.
    pub ca: Option<PathBuf>,
}

impl TlsFiles {
    /// From the three flags, which must come as cert and key together.
    pub fn from_flags(
        cert: Option<&PathBuf>,
        key: Option<&PathBuf>,
        ca: Option<&PathBuf>,
    ) -> Result<Option<TlsFiles>, String> {
        match (cert, key) {
            (Some(cert), Some(key)) => Ok(Some(TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
                ca: ca.cloned(),
            })),
            (None, None) if ca.is_none() => Ok(None),
            (None, None) => Err("--tls-client-ca needs --tls-cert and --tls-key".to_string()),
            (Some(_), None) => Err("--tls-cert needs --tls-key".to_string()),
            (None, Some(_)) => Err("--tls-key needs --tls-cert".to_string()),
        }
    }

    fn paths(&self) -> impl Iterator<Item = &Path> {
        [Some(&self.cert), Some(&self.key), self.ca.as_ref()]
            .into_iter()
            .flatten()
            .map(PathBuf::as_path)
    }

    /// What the files look like now, to notice a change.
    fn stamp(&self) -> Stamp {
        self.paths()
            .map(|p| {
                std::fs::metadata(p)
                    .ok()
                    .and_then(|m| Some((m.modified().ok()?, m.len())))
            })
            .collect()
    }

    fn chain(&self) -> Result<Vec<CertificateDer<'static>>, String> {
        let chain = read_certificates(&self.cert)?;
        if chain.is_empty() {
            return Err(format!("`{}` holds no certificate", self.cert.display()));
        }
        Ok(chain)
    }

    fn private_key(&self) -> Result<PrivateKeyDer<'static>, String> {
        let pem = std::fs::read(&self.key)
            .map_err(|e| format!("cannot read `{}`: {e}", self.key.display()))?;
        PrivateKeyDer::from_pem_slice(&pem)
            .map_err(|e| format!("`{}` is not a PEM private key: {e}", self.key.display()))
    }

    fn unusable_pair(&self, e: &rustls::Error) -> String {
        format!(
            "`{}` and `{}` are not a usable pair: {e}",
            self.cert.display(),
            self.key.display()
        )
    }

    fn roots(&self) -> Result<Option<Arc<RootCertStore>>, String> {
        let Some(ca) = &self.ca else { return Ok(None) };
        let mut roots = RootCertStore::empty();
        for cert in read_certificates(ca)? {
            roots
                .add(cert)
                .map_err(|e| format!("`{}`: not a usable CA certificate: {e}", ca.display()))?;
        }
        if roots.is_empty() {
            return Err(format!("`{}` holds no CA certificate", ca.display()));
        }
        Ok(Some(Arc::new(roots)))
    }
}

/// Modification time and length of each file (`None`: unreadable).
type Stamp = Vec<Option<(SystemTime, u64)>>;

fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("cannot read `{}`: {e}", path.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("`{}` is not PEM certificates: {e}", path.display()))
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// How often the files are looked at, at most.
const CHECK_EVERY: Duration = Duration::from_secs(1);
/// How long after a failed load it is tried again, changed or not (a key
/// made readable by `chmod` changes neither time nor length).
const RETRY_AFTER: Duration = Duration::from_secs(10);

/// A rustls configuration built from [`TlsFiles`], rebuilt when they change.
#[derive(Debug)]
struct Reloading<C> {
    files: TlsFiles,
    alpn: Vec<Vec<u8>>,
    build: fn(&TlsFiles, Vec<Vec<u8>>) -> Result<C, String>,
    /// Read lock-free by every handshake.
    current: ArcSwap<C>,
    /// Taken by one handshake at a time to look at the files; the others
    /// meanwhile use `current`.
    check: Mutex<Check>,
}

#[derive(Debug)]
struct Check {
    at: Instant,
    stamp: Stamp,
    retry: Option<Instant>,
}

impl<C> Reloading<C> {
    /// Builds once, so bad files at startup are an error.
    fn new(
        files: TlsFiles,
        alpn: &[&[u8]],
        build: fn(&TlsFiles, Vec<Vec<u8>>) -> Result<C, String>,
    ) -> Result<Self, String> {
        let alpn: Vec<Vec<u8>> = alpn.iter().map(|p| p.to_vec()).collect();
        let stamp = files.stamp();
        let config = build(&files, alpn.clone())?;
        Ok(Reloading {
            files,
            alpn,
            build,
            current: ArcSwap::from_pointee(config),
            check: Mutex::new(Check {
                at: Instant::now(),
                stamp,
                retry: None,
            }),
        })
    }

    /// The configuration to use for the next handshake: the files are
    /// looked at no more than once a second, by one caller at a time.
    fn get(&self) -> Arc<C> {
        if let Ok(mut check) = self.check.try_lock() {
            let now = Instant::now();
            if now.duration_since(check.at) >= CHECK_EVERY {
                check.at = now;
                let stamp = self.files.stamp();
                let retry_due = check.retry.is_some_and(|at| now >= at);
                if stamp != check.stamp || retry_due {
                    check.stamp = stamp;
                    match (self.build)(&self.files, self.alpn.clone()) {
                        Ok(config) => {
                            info!(cert = %self.files.cert.display(), "TLS files changed; reloaded");
                            self.current.store(Arc::new(config));
                            check.retry = None;
                        }
                        Err(e) => {
                            warn!(error = %e, retry_in_seconds = RETRY_AFTER.as_secs(), "TLS files changed but cannot be loaded; keeping the last good ones");
                            check.retry = Some(now + RETRY_AFTER);
                        }
                    }
                }
            }
        }
        self.current.load_full()
    }
}

/// Most TLS handshakes in progress on one listener; past it new
/// connections are closed at once, so idle sockets cannot pile up.
const MAX_HANDSHAKES: usize = 1024;

/// The server side of TLS: a certificate, and with a CA bundle, client
/// certificates required and verified against it.
#[derive(Debug, Clone)]
pub struct ServerTls {
    config: Arc<Reloading<rustls::ServerConfig>>,
    handshakes: Arc<tokio::sync::Semaphore>,
    /// Connections that never completed a handshake: plaintext, no or an
    /// untrusted certificate, a stall, or no room.
    failures: Counter,
}

impl ServerTls {
    /// `alpn`: the protocols offered, e.g. `h2` for gRPC.
    pub fn new(files: TlsFiles, alpn: &[&[u8]]) -> Result<Self, String> {
        Ok(ServerTls {
            config: Arc::new(Reloading::new(files, alpn, build_server)?),
            handshakes: Arc::new(tokio::sync::Semaphore::new(MAX_HANDSHAKES)),
            failures: Counter::default(),
        })
    }

    /// Counts failed handshakes in `counter` (a metric).
    pub fn counting_failures(mut self, counter: Counter) -> Self {
        self.failures = counter;
        self
    }

    /// Whether clients must present a certificate.
    pub fn verifies_clients(&self) -> bool {
        self.config.files.ca.is_some()
    }

    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.config.get())
    }
}

fn build_server(files: &TlsFiles, alpn: Vec<Vec<u8>>) -> Result<rustls::ServerConfig, String> {
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?;
    let builder = match files.roots()? {
        Some(roots) => {
            let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider())
                .build()
                .map_err(|e| format!("client CA bundle: {e}"))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(files.chain()?, files.private_key()?)
        .map_err(|e| files.unusable_pair(&e))?;
    config.alpn_protocols = alpn;
    Ok(config)
}

/// The client side of mutual TLS: presents a certificate and verifies the
/// server's against the CA bundle (which is required).
#[derive(Debug, Clone)]
pub struct ClientTls(Arc<Reloading<rustls::ClientConfig>>);

impl ClientTls {
    pub fn new(files: TlsFiles, alpn: &[&[u8]]) -> Result<Self, String> {
        if files.ca.is_none() {
            return Err("a TLS client needs a CA bundle to verify the server".to_string());
        }
        Reloading::new(files, alpn, build_client).map(|r| ClientTls(Arc::new(r)))
    }

    pub fn connector(&self) -> tokio_rustls::TlsConnector {
        tokio_rustls::TlsConnector::from(self.0.get())
    }
}

/// A client configuration that verifies the server's certificate against
/// the CA bundle at `ca` and presents none of its own (a database's
/// server-authenticated TLS).
pub fn verifying_client(ca: &Path) -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    for certificate in read_certificates(ca)? {
        roots.add(certificate).map_err(|e| {
            format!(
                "`{}` holds a certificate that is not a CA: {e}",
                ca.display()
            )
        })?;
    }
    if roots.is_empty() {
        return Err(format!("`{}` holds no certificate", ca.display()));
    }
    Ok(rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

fn build_client(files: &TlsFiles, alpn: Vec<Vec<u8>>) -> Result<rustls::ClientConfig, String> {
    let roots = files
        .roots()?
        .ok_or_else(|| "a TLS client needs a CA bundle".to_string())?;
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .with_root_certificates(roots)
        .with_client_auth_cert(files.chain()?, files.private_key()?)
        .map_err(|e| files.unusable_pair(&e))?;
    config.alpn_protocols = alpn;
    Ok(config)
}

/// The subject a verified client certificate names: its one URI subject
/// alternative name (a SPIFFE ID, which has exactly one). Empty when it has
/// none, several, or cannot be read (logged): such a caller names no one.
/// `None` when the peer presented no certificate.
pub fn peer_subject(certificates: Option<&[CertificateDer<'_>]>) -> Option<String> {
    let leaf = certificates?.first()?;
    Some(match x509::uri_sans(leaf) {
        Ok(uris) if uris.len() == 1 => uris.into_iter().next().unwrap_or_default(),
        Ok(uris) if uris.is_empty() => String::new(),
        Ok(uris) => {
            warn!(uris = ?uris, "a client certificate has several URI SANs; it names no subject");
            String::new()
        }
        Err(e) => {
            warn!(error = %e, "a client certificate's SANs cannot be read; it names no subject");
            String::new()
        }
    })
}

/// The names a verified client certificate gives its holder: its URI
/// subject alternative name (the SPIFFE ID) when it has exactly one, as
/// for [`peer_subject`], then each DNS one that is a plain host name
/// (letters, digits, `-` and `.`, lowercased; a wildcard or anything else
/// names no one), so a DNS name can never pass for a URI. Empty when the
/// peer presented no certificate or its names cannot be read (logged).
pub fn peer_names(certificates: Option<&[CertificateDer<'_>]>) -> Vec<String> {
    let Some(leaf) = certificates.and_then(<[_]>::first) else {
        return Vec::new();
    };
    match (x509::uri_sans(leaf), x509::dns_sans(leaf)) {
        (Ok(uris), Ok(dns)) => {
            let mut names = if uris.len() == 1 { uris } else { Vec::new() };
            names.extend(dns.iter().filter_map(|name| host_name(name)));
            names
        }
        (Err(e), _) | (_, Err(e)) => {
            warn!(error = %e, "a client certificate's SANs cannot be read; it names no one");
            Vec::new()
        }
    }
}

/// A DNS subject alternative name as a host name a glob can match:
/// lowercased, only letters, digits, `-` and `.`, at most 253 bytes.
fn host_name(name: &str) -> Option<String> {
    let plain = !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    if !plain {
        warn!(name = %name.escape_debug(), "a client certificate's DNS name is no plain host name; it names no one");
    }
    plain.then(|| name.to_ascii_lowercase())
}

/// How long a client may take over its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Completes the server side of a handshake within [`HANDSHAKE_TIMEOUT`];
/// `None` (logged at debug) when the peer spoke plaintext, presented no or
/// a wrong certificate, or stalled.
pub async fn handshake(
    tls: &ServerTls,
    stream: tokio::net::TcpStream,
    peer: std::net::SocketAddr,
    what: &'static str,
) -> Option<tokio_rustls::server::TlsStream<tokio::net::TcpStream>> {
    let Ok(_permit) = tls.handshakes.try_acquire() else {
        tls.failures.inc();
        tracing::debug!(%peer, "{what}: {MAX_HANDSHAKES} TLS handshakes in progress; connection closed");
        return None;
    };
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.acceptor().accept(stream)).await {
        Ok(Ok(stream)) => Some(stream),
        Ok(Err(e)) => {
            tls.failures.inc();
            tracing::debug!(error = %e, %peer, "{what}: TLS handshake failed");
            None
        }
        Err(_) => {
            tls.failures.inc();
            tracing::debug!(%peer, "{what}: TLS handshake timed out");
            None
        }
    }
}
