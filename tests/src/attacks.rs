//! What an attacker sends, shared by the attack tests and the fuzz seeds:
//! request paths that a lenient app resolves elsewhere than they look,
//! and clients that speak HTTP byte for byte, with nothing normalised on
//! the way (curl and most clients would clean a path before sending it).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};

/// Paths under `/records/` (routed) that a framework serves from
/// `/secrets/` (not routed): each must be refused or judged as what it is.
pub const PATHS_TO_SECRETS: &[&str] = &[
    "/records/../secrets/1",
    "/records/%2e%2e/secrets/1",
    "/records/%2E%2E/secrets/1",
    "/records/%2E%2E%2Fsecrets%2F1",
    "/records//..//secrets/1",
    "/records/..%2fsecrets/1",
    "/records/..%2Fsecrets/1",
    "/records/..%5csecrets/1",
    "/records/..%5Csecrets/1",
    "/records/..\\secrets/1",
    "/records/.%2e/secrets/1",
    "/records/%252e%252e/secrets/1",
    "/records/..;/secrets/1",
    "/records/%2e%2e;/secrets/1",
    "/records/x/../../secrets/1",
    "/records/%c0%ae%c0%ae/secrets/1",
    "/records/./../secrets/1",
    "/records/%00/../../secrets/1",
    "//records/../secrets/1",
    "/records/..//secrets/1",
];

/// What came back from a raw request.
#[derive(Debug)]
pub struct Answer {
    /// 0 when the connection closed without a status line.
    pub status: u16,
    /// The head, lower-cased.
    pub head: String,
    pub body: String,
}

/// Sends `head` (request line and headers, without the final blank line)
/// byte for byte over HTTP/1.1 with `Connection: close`, and reads the
/// whole answer (at most 10 s). A `head` with a blank line in it carries
/// a body after it (chunked, ending with trailers, say), sent as given.
pub fn http1_raw(addr: SocketAddr, head: &str) -> Answer {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    // A head that brings its own body (a chunked upload) ends with it.
    let request = match head.split_once("\r\n\r\n") {
        Some((head, body)) => {
            format!("{head}\r\nHost: {addr}\r\nConnection: close\r\n\r\n{body}\r\n\r\n")
        }
        None => format!("{head}\r\nHost: {addr}\r\nConnection: close\r\n\r\n"),
    };
    stream
        .write_all(request.as_bytes())
        .unwrap_or_else(|e| panic!("write: {e}"));
    let mut bytes = Vec::new();
    let _ = stream.read_to_end(&mut bytes);
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    Answer {
        status: head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0),
        head: head.to_lowercase(),
        body: body.to_string(),
    }
}

/// A GET of `path` with `headers`, byte for byte.
pub fn http1_get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Answer {
    let mut head = format!("GET {path} HTTP/1.1");
    for (name, value) in headers {
        head.push_str(&format!("\r\n{name}: {value}"));
    }
    http1_raw(addr, &head)
}

/// One HTTP/2 request (prior knowledge, h2c) with `headers` and `body`;
/// the path goes out as given. `Err` when the call failed below HTTP.
pub async fn h2_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> Result<(u16, hyper::HeaderMap, Bytes, Option<hyper::HeaderMap>), String> {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect {addr}: {e}"))?;
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .map_err(|e| format!("h2 handshake: {e}"))?;
    tokio::spawn(conn);
    let mut request = hyper::Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| format!("request: {e}"))?;
    let response = tokio::time::timeout(Duration::from_secs(10), sender.send_request(request))
        .await
        .map_err(|_| "no answer in 10 s".to_string())?
        .map_err(|e| format!("send: {e}"))?;
    let status = response.status().as_u16();
    let head = response.headers().clone();
    let collected = tokio::time::timeout(Duration::from_secs(10), response.into_body().collect())
        .await
        .map_err(|_| "the body did not end in 10 s".to_string())?
        .map_err(|e| format!("body: {e}"))?;
    let trailers = collected.trailers().cloned();
    Ok((status, head, collected.to_bytes(), trailers))
}

/// A gRPC message in its frame: flag 0, length, bytes.
pub fn grpc_frame(message: &[u8]) -> Vec<u8> {
    let mut out = vec![0];
    out.extend_from_slice(
        &u32::try_from(message.len())
            .unwrap_or(u32::MAX)
            .to_be_bytes(),
    );
    out.extend_from_slice(message);
    out
}

/// A TCP connection to `to` from the loopback address `from` (any of
/// 127.0.0.0/8), so a test can be several peers at once.
pub async fn connect_from(
    from: std::net::IpAddr,
    to: SocketAddr,
) -> std::io::Result<tokio::net::TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(from, 0))?;
    socket.connect(to).await
}

/// `%XX` decoded (a `grpc-message`, say).
pub fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (b, hex) {
            (b'%', Some(v)) => {
                out.push(v);
                i += 3;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// An HTTP/2 connection (prior knowledge) to `to` from the loopback
/// address `from`, driven by a task of its own.
pub async fn h2_from<B>(
    from: std::net::IpAddr,
    to: SocketAddr,
) -> hyper::client::conn::http2::SendRequest<B>
where
    B: hyper::body::Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let stream = connect_from(from, to)
        .await
        .unwrap_or_else(|e| panic!("connect {to} from {from}: {e}"));
    let (sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap_or_else(|e| panic!("h2 handshake: {e}"));
    tokio::spawn(conn);
    sender
}
