//! A gRPC channel to one of our servers, for both our clients (the
//! sidecar's PDP, the operators' `choices` command): plaintext to an
//! `http://` address, mutual TLS to an `https://` one with a connector of
//! our own (the server's name or IP checked against its certificate, ALPN
//! `h2`, the files as they are at connect time). It connects on first use.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use tonic::codegen::http::Uri;
use tonic::transport::{Channel, Endpoint};

use super::ClientTls;

/// A lazy channel to `url` (the value of flag `flag`, for errors), each
/// connection attempt bounded by `connect_timeout`. With `tls` the URL
/// must be `https://`; without, `http://`.
/// `tls_flags` names the flags that configure TLS, for the error when
/// they are missing.
pub fn channel(
    url: &str,
    flag: &str,
    connect_timeout: Duration,
    tls: Option<ClientTls>,
    tls_flags: &str,
) -> Result<Channel, String> {
    let uri: Uri = url
        .parse()
        .map_err(|e| format!("invalid {flag} `{url}`: {e}"))?;
    let endpoint = |uri: Uri| {
        Endpoint::from(uri)
            .connect_timeout(connect_timeout)
            .tcp_nodelay(true)
    };
    match (uri.scheme_str(), tls) {
        (Some("http"), None) => Ok(endpoint(uri).connect_lazy()),
        (Some("https"), Some(tls)) => {
            // tonic refuses `https` with a connector of its own making;
            // ours does the TLS, so tonic is told plain `http`.
            let mut parts = uri.into_parts();
            parts.scheme = Some(tonic::codegen::http::uri::Scheme::HTTP);
            let uri = Uri::from_parts(parts).map_err(|e| format!("invalid {flag} `{url}`: {e}"))?;
            Ok(endpoint(uri).connect_with_connector_lazy(TlsConnect { tls }))
        }
        (Some("http"), Some(_)) => Err(format!(
            "{flag} `{url}` is plaintext but TLS is configured; use https://"
        )),
        (Some("https"), None) => Err(format!("{flag} `{url}` is https: give {tls_flags}")),
        _ => Err(format!(
            "{flag} `{url}` must be an http:// or https:// address"
        )),
    }
}

/// Opens a connection: TCP, then mutual TLS with ALPN `h2`, the server's
/// name (or IP) checked against its certificate.
#[derive(Debug, Clone)]
struct TlsConnect {
    tls: ClientTls,
}

type TlsIo = TokioIo<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;

impl tonic::codegen::Service<Uri> for TlsConnect {
    type Response = TlsIo;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<TlsIo, std::io::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let connector = self.tls.connector();
        Box::pin(async move {
            let invalid =
                |what: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, what);
            let host = uri
                .host()
                .ok_or_else(|| invalid(format!("`{uri}` names no host")))?
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string();
            let port = uri.port_u16().unwrap_or(443);
            let name = ServerName::try_from(host.clone())
                .map_err(|e| invalid(format!("`{host}` is no server name: {e}")))?;
            let tcp = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
            tcp.set_nodelay(true)?;
            let tls = connector.connect(name, tcp).await?;
            Ok(TokioIo::new(tls))
        })
    }
}
