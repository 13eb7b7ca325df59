//! The sidecar injection webhook: HTTPS on `--webhook-listen`, answering
//! `AdmissionReview`s on `POST /inject` (pods selected by their own label)
//! and `POST /inject-namespace` (pods selected by their namespace's label).
//!
//! The certificate and key are read again when their files change (a
//! cert-manager renewal or a rotated Secret), on the next TLS handshake; a
//! pair that fails to load leaves the last good one in use.

pub mod inject;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tracing::{debug, info, warn};

use inject::{Selection, SidecarTemplate};

/// Reviews larger than this are refused (the API server's own limit is
/// about 3 MiB).
const MAX_REVIEW_BYTES: usize = 8 * 1024 * 1024;

/// A certificate and key read from files, read again when they change.
#[derive(Debug)]
pub struct ReloadingCert {
    cert: PathBuf,
    key: PathBuf,
    current: Mutex<(Option<SystemTime>, Option<Arc<CertifiedKey>>)>,
}

impl ReloadingCert {
    /// Loads the pair once, so a bad pair at startup is an error.
    pub fn new(cert: PathBuf, key: PathBuf) -> Result<Self, String> {
        let loaded = load_pair(&cert, &key)?;
        let stamp = stamp(&cert, &key);
        Ok(ReloadingCert {
            cert,
            key,
            current: Mutex::new((stamp, Some(Arc::new(loaded)))),
        })
    }

    fn get(&self) -> Option<Arc<CertifiedKey>> {
        let mut current = self.current.lock().ok()?;
        let now = stamp(&self.cert, &self.key);
        if now != current.0 {
            match load_pair(&self.cert, &self.key) {
                Ok(pair) => {
                    info!(cert = %self.cert.display(), "webhook certificate reloaded");
                    *current = (now, Some(Arc::new(pair)));
                }
                Err(e) => {
                    warn!(error = %e, "webhook certificate changed but cannot be loaded; keeping the last good one");
                    current.0 = now;
                }
            }
        }
        current.1.clone()
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.get()
    }
}

/// When the pair last changed, to notice a new one.
fn stamp(cert: &std::path::Path, key: &std::path::Path) -> Option<SystemTime> {
    let modified = |p: &std::path::Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    Some(modified(cert)?.max(modified(key)?))
}

fn load_pair(cert: &std::path::Path, key: &std::path::Path) -> Result<CertifiedKey, String> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| format!("cannot read `{}`: {e}", cert.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("`{}` is not a PEM certificate chain: {e}", cert.display()))?;
    if chain.is_empty() {
        return Err(format!("`{}` holds no certificate", cert.display()));
    }
    let key_der = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| format!("`{}` is not a PEM private key: {e}", key.display()))?;
    let provider = rustls::crypto::ring::default_provider();
    let signing = provider
        .key_provider
        .load_private_key(key_der)
        .map_err(|e| format!("`{}`: {e}", key.display()))?;
    Ok(CertifiedKey::new(chain, signing))
}

/// Serves the webhook on `listener` with TLS from `cert` until the process
/// ends.
pub fn serve(
    listener: tokio::net::TcpListener,
    cert: Arc<ReloadingCert>,
    template: Arc<SidecarTemplate>,
) -> Result<(), String> {
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| format!("TLS setup: {e}"))?
    .with_no_client_auth()
    .with_cert_resolver(cert);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    crate::serve::accept_loop(listener, "webhook", move |stream, peer| {
        let acceptor = acceptor.clone();
        let template = template.clone();
        async move {
            let tls = match acceptor.accept(stream).await {
                Ok(tls) => tls,
                Err(e) => {
                    debug!(error = %e, %peer, "webhook TLS handshake failed");
                    return;
                }
            };
            let service = hyper::service::service_fn(move |req| {
                let template = template.clone();
                async move { Ok::<_, std::convert::Infallible>(handle(req, &template).await) }
            });
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tls), service)
                .await
            {
                debug!(error = %e, %peer, "webhook connection ended");
            }
        }
    });
    Ok(())
}

async fn handle(req: Request<Incoming>, template: &SidecarTemplate) -> Response<Full<Bytes>> {
    let selection = match (req.method(), req.uri().path()) {
        (&Method::POST, "/inject") => Selection::PodLabel,
        (&Method::POST, "/inject-namespace") => Selection::Namespace,
        (&Method::GET, "/healthz") => return reply(StatusCode::OK, "text/plain", "ok\n".into()),
        _ => {
            return reply(
                StatusCode::NOT_FOUND,
                "text/plain",
                "POST an AdmissionReview to /inject or /inject-namespace\n".into(),
            );
        }
    };
    let body = match Limited::new(req.into_body(), MAX_REVIEW_BYTES)
        .collect()
        .await
    {
        Ok(body) => body.to_bytes(),
        Err(e) => {
            return reply(
                StatusCode::BAD_REQUEST,
                "text/plain",
                format!("cannot read the review: {e}\n").into(),
            );
        }
    };
    match inject::review(&body, template, selection) {
        Ok(answer) => reply(StatusCode::OK, "application/json", answer.into()),
        Err(problem) => {
            warn!(%problem, "malformed admission review");
            reply(
                StatusCode::BAD_REQUEST,
                "text/plain",
                format!("{problem}\n").into(),
            )
        }
    }
}

fn reply(status: StatusCode, content_type: &'static str, body: Bytes) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(content_type),
    );
    response
}
