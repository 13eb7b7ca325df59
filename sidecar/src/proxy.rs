//! The proxy in front of the app: HTTP/2 (gRPC, h2c) and HTTP/1.1 on
//! `--listen`, forwarded to `--upstream` only on an enforced PERMIT.
//!
//! The request path, in order:
//! 1. match the call to a route (gRPC method or HTTP path and method);
//! 2. build the `CheckRequest` from the route and the `x-*` headers;
//! 3. ask the gate (cache, then PDP);
//! 4. on PERMIT (or `--dry-run`) stream the call to the app over a pooled
//!    connection, bodies and trailers untouched; otherwise answer
//!    `PERMISSION_DENIED` (gRPC) or 403 (HTTP) with the reason, rule ids and
//!    revision in `x-purposegate-*` headers. The app never sees it.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use hyper::{Request, Response, StatusCode, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tracing::{debug, warn};

use purposegate_server::telemetry::parent_context;
use purposegate_server::tls::ServerTls;

use crate::gate::Gate;
use crate::intercept::{Call, Denial, Judgement, judge};
use crate::routes::Routes;

type Body = Either<Incoming, Full<Bytes>>;

/// Everything the proxy needs per call. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Proxy {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    gate: Gate,
    routes: Routes,
    upstream: Uri,
    http1: Client<HttpConnector, Incoming>,
    http2: Client<HttpConnector, Incoming>,
}

impl Proxy {
    pub fn new(gate: Gate, routes: Routes, upstream: Uri) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let http1 = Client::builder(TokioExecutor::new()).build(connector.clone());
        let http2 = Client::builder(TokioExecutor::new())
            .http2_only(true)
            .build(connector);
        Proxy {
            inner: Arc::new(Inner {
                gate,
                routes,
                upstream,
                http1,
                http2,
            }),
        }
    }

    /// Accepts connections on `listener` until the process ends. With
    /// `tls`, only TLS connections are served (plaintext fails the
    /// handshake); a caller's verified client certificate names its subject.
    pub fn serve(self, listener: tokio::net::TcpListener, tls: Option<ServerTls>) {
        purposegate_server::serve::accept_loop(listener, "proxy", move |stream, peer| {
            let proxy = self.clone();
            let tls = tls.clone();
            async move {
                let _ = stream.set_nodelay(true);
                match tls {
                    None => proxy.serve_connection(stream, None, peer).await,
                    Some(tls) => {
                        let Some(stream) =
                            purposegate_server::tls::handshake(&tls, stream, peer, "proxy").await
                        else {
                            return;
                        };
                        let subject = purposegate_server::tls::peer_subject(
                            stream.get_ref().1.peer_certificates(),
                        );
                        proxy
                            .serve_connection(stream, subject.map(Arc::from), peer)
                            .await;
                    }
                }
            }
        });
    }

    /// Serves the calls of one connection; `subject` is the caller's
    /// certified identity, when it presented a client certificate.
    async fn serve_connection<IO>(
        self,
        io: IO,
        subject: Option<Arc<str>>,
        peer: std::net::SocketAddr,
    ) where
        IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        // The subject and its header value are the same for every call on
        // the connection.
        let certified = subject.map(|s| (header_text(&s), s));
        let service = hyper::service::service_fn(move |req| {
            let proxy = self.clone();
            let certified = certified.clone();
            async move { Ok::<_, Infallible>(proxy.handle(req, certified.as_ref()).await) }
        });
        if let Err(e) = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
            .serve_connection(TokioIo::new(io), service)
            .await
        {
            debug!(error = %e, %peer, "proxy connection ended");
        }
    }

    async fn handle(
        &self,
        mut req: Request<Incoming>,
        certified: Option<&(HeaderValue, Arc<str>)>,
    ) -> Response<Body> {
        let grpc = is_grpc(req.headers());
        if let Some((value, _)) = certified {
            // The certificate names the caller; what it says in `x-subject`
            // is not believed, and the app sees the certified subject.
            req.headers_mut().insert("x-subject", value.clone());
        }
        let subject = certified.map(|(_, s)| &**s);
        let headers = req.headers();
        let header = |name: &str| -> String {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .trim()
                .to_string()
        };
        let call = Call {
            grpc,
            path: req.uri().path(),
            method: req.method().as_str(),
            header: &header,
            certified_subject: subject,
        };
        let parent = self.inner.gate.parent(|| parent_context(headers));
        match judge(&self.inner.gate, &self.inner.routes, &call, &parent).await {
            Judgement::LetThrough => self.forward(req, grpc).await,
            Judgement::Deny(denial) => deny(grpc, &denial),
        }
    }

    /// Streams the call to the app and its answer back.
    async fn forward(&self, req: Request<Incoming>, grpc: bool) -> Response<Body> {
        let (mut parts, body) = req.into_parts();
        let mut uri = self.inner.upstream.clone().into_parts();
        uri.path_and_query = Some(
            parts
                .uri
                .path_and_query()
                .cloned()
                .unwrap_or_else(|| hyper::http::uri::PathAndQuery::from_static("/")),
        );
        parts.uri = match Uri::from_parts(uri) {
            Ok(u) => u,
            Err(_) => return upstream_error(grpc, "cannot build the upstream address"),
        };
        strip_hop_by_hop(&mut parts.headers, grpc);
        let http2 = parts.version == hyper::Version::HTTP_2;
        // The client sets the version and authority of its own connection.
        parts.version = hyper::Version::HTTP_11;
        parts.headers.remove(hyper::header::HOST);
        let outgoing = Request::from_parts(parts, body);
        let client = if http2 || grpc {
            &self.inner.http2
        } else {
            &self.inner.http1
        };
        match client.request(outgoing).await {
            Ok(response) => response.map(Either::Left),
            Err(e) => {
                warn!(error = %e, upstream = %self.inner.upstream, "the app cannot be reached");
                upstream_error(grpc, "the app behind the sidecar cannot be reached")
            }
        }
    }
}

fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(hyper::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/grpc"))
}

fn strip_hop_by_hop(headers: &mut HeaderMap, grpc: bool) {
    for name in [
        "connection",
        "keep-alive",
        "proxy-connection",
        "transfer-encoding",
        "upgrade",
    ] {
        headers.remove(name);
    }
    // gRPC needs `te: trailers`; plain HTTP/1.1 must not pass `te` on.
    if !grpc {
        headers.remove("te");
    }
}

/// A header value from free text: printable ASCII kept, the rest `?`.
fn header_text(text: &str) -> HeaderValue {
    let clean: String = text
        .chars()
        .map(|c| if (' '..='~').contains(&c) { c } else { '?' })
        .collect();
    HeaderValue::from_str(&clean).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// `grpc-message` is percent-encoded (gRPC over HTTP/2 spec).
fn grpc_message(text: &str) -> HeaderValue {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    HeaderValue::from_str(&out).unwrap_or_else(|_| HeaderValue::from_static("denied"))
}

fn deny(grpc: bool, denial: &Denial) -> Response<Body> {
    let mut response = if grpc {
        grpc_status("7", &denial.reason)
    } else {
        let mut r = Response::new(Either::Right(Full::new(Bytes::from(format!(
            "{}: {}\n",
            denial.decision, denial.reason
        )))));
        *r.status_mut() = StatusCode::FORBIDDEN;
        r.headers_mut().insert(
            hyper::header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        r
    };
    let h = response.headers_mut();
    for (name, value) in denial.headers() {
        h.insert(HeaderName::from_static(name), header_text(&value));
    }
    response
}

/// A trailers-only gRPC response: the status in the headers, no body.
fn grpc_status(code: &'static str, message: &str) -> Response<Body> {
    let mut r = Response::new(Either::Right(Full::new(Bytes::new())));
    let h = r.headers_mut();
    h.insert(
        hyper::header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    h.insert("grpc-status", HeaderValue::from_static(code));
    h.insert("grpc-message", grpc_message(message));
    r
}

fn upstream_error(grpc: bool, reason: &str) -> Response<Body> {
    if grpc {
        grpc_status("14", reason)
    } else {
        let mut r = Response::new(Either::Right(Full::new(Bytes::from(format!("{reason}\n")))));
        *r.status_mut() = StatusCode::BAD_GATEWAY;
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_messages_are_percent_encoded() {
        assert_eq!(grpc_message("a b"), "a b");
        assert_eq!(grpc_message("100% über"), "100%25 %C3%BCber");
    }
}
