//! The request path in process, with a fake decision point and a raw app
//! that records every byte it receives, connection by connection: what
//! reaches the app is checked exactly, in milliseconds (the real binaries
//! are tried the same ways in `tests/tests/smuggling.rs`).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;
use crate::testing::fake_gate;

/// One request as the raw app parsed it, and the connection it came on.
#[derive(Debug, Clone)]
struct Parsed {
    connection: usize,
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    /// The body it read (only `/read` and `/search` read theirs).
    body: Vec<u8>,
}

/// An app as `http.server` is: HTTP/1.1 kept alive, a body read only by
/// `POST /read` (by its `content-length`), every other body left on the
/// connection to be parsed as the next request; closes after a request
/// that says `connection: close`. Answers name the request they answer.
#[derive(Debug, Clone, Default)]
struct RawApp {
    parsed: Arc<Mutex<Vec<Parsed>>>,
}

impl RawApp {
    async fn start() -> (RawApp, SocketAddr) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = RawApp::default();
        let serving = app.clone();
        tokio::spawn(async move {
            let mut n = 0;
            while let Ok((stream, _)) = listener.accept().await {
                n += 1;
                tokio::spawn(serving.clone().connection(stream, n));
            }
        });
        (app, addr)
    }

    fn parsed(&self) -> Vec<Parsed> {
        self.parsed.lock().unwrap().clone()
    }

    async fn connection(self, mut stream: tokio::net::TcpStream, connection: usize) {
        let mut buffer: Vec<u8> = Vec::new();
        loop {
            let head_end = loop {
                if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                    break end;
                }
                let mut chunk = [0u8; 4096];
                match stream.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buffer.extend_from_slice(&chunk[..n]),
                }
            };
            let head = String::from_utf8_lossy(&buffer[..head_end]).into_owned();
            buffer.drain(..head_end + 4);
            let mut lines = head.split("\r\n");
            let mut start = lines.next().unwrap_or("").split(' ');
            let method = start.next().unwrap_or("").to_string();
            let path = start.next().unwrap_or("").to_string();
            let headers: Vec<(String, String)> = lines
                .filter_map(|l| l.split_once(':'))
                .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
                .collect();
            let header = |name: &str| {
                headers
                    .iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, v)| v.clone())
            };
            let mut body = Vec::new();
            if path == "/read" || path == "/search" {
                let length: usize = header("content-length")
                    .and_then(|l| l.parse().ok())
                    .unwrap_or(0);
                while buffer.len() < length {
                    let mut chunk = [0u8; 4096];
                    match stream.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buffer.extend_from_slice(&chunk[..n]),
                    }
                }
                body = buffer.drain(..length).collect();
            }
            let close = header("connection").is_some_and(|c| c.eq_ignore_ascii_case("close"));
            let caller = header("x-caller").unwrap_or_default();
            self.parsed.lock().unwrap().push(Parsed {
                connection,
                method: method.clone(),
                path: path.clone(),
                headers,
                body,
            });
            let body = format!("answer to {method} {path} for {caller}\n");
            let response = format!(
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            );
            if stream.write_all(response.as_bytes()).await.is_err() || close {
                return;
            }
        }
    }
}

const ROUTES: &str = "routes:
  - http: /records/
    methods: [GET, HEAD]
    dataCategory: customer-data
  - http: /ignore
    methods: [POST]
    dataCategory: customer-data
  - http: /read
    methods: [POST]
    dataCategory: customer-data
  - http: /search
    allowBody: true
    dataCategory: customer-data
";

/// The proxy in process before `app`, on a free port, with `limits`.
async fn proxy_before(app: SocketAddr, limits: CallLimits, idle: Duration) -> SocketAddr {
    let gate = fake_gate();
    let (_revisions_tx, revisions) = tokio::sync::watch::channel(None);
    let supervisor = Supervisor::new(gate.clone(), revisions, Duration::from_secs(60), idle);
    let routes = Routes::parse("routes.yaml", ROUTES).unwrap();
    let upstream: Uri = format!("http://{app}").parse().unwrap();
    let proxy = Proxy::new(
        gate,
        routes,
        upstream,
        UpstreamProtocol::Auto,
        supervisor,
        limits,
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // The served listener lives as long as the runtime of the test.
    std::mem::forget(proxy.serve(
        listener,
        None,
        Limits::default(),
        purposegate_runtime::listen::never(),
        Default::default(),
    ));
    addr
}

const ROOMY: CallLimits = CallLimits {
    max_calls: 64,
    max_calls_per_peer: 64,
    max_streams_per_connection: 100,
    max_first_message_bytes: 65536,
    first_message_within: Duration::from_secs(10),
};

/// Writes `bytes` on a new connection to `addr` and reads one answer
/// back (its head and its `content-length` body; at most 2 s).
async fn raw(addr: SocketAddr, bytes: &[u8]) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let read = async {
        loop {
            let text = String::from_utf8_lossy(&out).into_owned();
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let length = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().to_string())
                    })
                    .and_then(|v| v.parse::<usize>().ok())
                    .unwrap_or(0);
                if body.len() >= length {
                    return;
                }
            }
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => out.extend_from_slice(&chunk[..n]),
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), read).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// A request of the attacker's that would be the next one on the app's
/// connection if the app left a body unread.
const SMUGGLED: &str = "GET /secrets/1 HTTP/1.1\r\nhost: app\r\nx-purpose: advertising\r\n\r\n";

#[tokio::test]
async fn a_body_on_a_get_is_refused_and_never_reaches_the_app() {
    let (app, app_addr) = RawApp::start().await;
    let proxy = proxy_before(app_addr, ROOMY, Duration::from_secs(60)).await;
    for framing in [
        format!("content-length: {}\r\n\r\n{SMUGGLED}", SMUGGLED.len()),
        format!(
            "transfer-encoding: chunked\r\n\r\n{:x}\r\n{SMUGGLED}\r\n0\r\n\r\n",
            SMUGGLED.len()
        ),
        "transfer-encoding: chunked\r\n\r\n0\r\n\r\n".to_string(),
    ] {
        let answer = raw(
            proxy,
            format!("GET /records/1 HTTP/1.1\r\nhost: s\r\nx-purpose: provide\r\n{framing}")
                .as_bytes(),
        )
        .await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{framing:?}: {answer}");
        assert!(answer.contains("carries no body"), "{answer}");
    }
    // HTTP/2: a GET whose stream goes on with data.
    let stream = tokio::net::TcpStream::connect(proxy).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let request = |body: &'static [u8]| {
        hyper::Request::get("http://s/records/1")
            .header("x-purpose", "provide")
            .body(Full::new(Bytes::from_static(body)))
            .unwrap()
    };
    let refused = sender
        .send_request(request(SMUGGLED.as_bytes()))
        .await
        .unwrap();
    assert_eq!(refused.status(), 400);
    // The same without a body goes through.
    let ok = sender.send_request(request(b"")).await.unwrap();
    assert_eq!(ok.status(), 200);
    let parsed = app.parsed();
    assert_eq!(parsed.len(), 1, "{parsed:?}");
    assert_eq!(
        (parsed[0].method.as_str(), parsed[0].path.as_str()),
        ("GET", "/records/1")
    );
}

#[tokio::test]
async fn a_body_the_app_leaves_unread_is_never_read_as_a_request() {
    let (app, app_addr) = RawApp::start().await;
    let proxy = proxy_before(app_addr, ROOMY, Duration::from_secs(60)).await;
    // The app answers `/ignore` without reading its body: the proxy has
    // told it to close the connection after, so the body is never parsed.
    for _ in 0..3 {
        let answer = raw(
            proxy,
            format!(
                "POST /ignore HTTP/1.1\r\nhost: s\r\nx-purpose: provide\r\ncontent-length: {}\r\n\r\n{SMUGGLED}",
                SMUGGLED.len()
            )
            .as_bytes(),
        )
        .await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }
    // A body the app reads, and a GET on a route that allows bodies.
    let read = raw(
        proxy,
        b"POST /read HTTP/1.1\r\nhost: s\r\nx-purpose: provide\r\ncontent-length: 5\r\n\r\nhello",
    )
    .await;
    assert!(read.starts_with("HTTP/1.1 200"), "{read}");
    let search = raw(
        proxy,
        b"GET /search HTTP/1.1\r\nhost: s\r\nx-purpose: provide\r\ncontent-length: 2\r\n\r\n{}",
    )
    .await;
    assert!(search.starts_with("HTTP/1.1 200"), "{search}");
    let parsed = app.parsed();
    assert!(
        parsed.iter().all(|p| p.path != "/secrets/1"),
        "a smuggled request reached the app: {parsed:?}"
    );
    assert_eq!(parsed.len(), 5, "{parsed:?}");
    for p in &parsed {
        let close = p
            .headers
            .iter()
            .any(|(n, v)| n == "connection" && v == "close");
        assert!(
            close,
            "a request with a body left its connection open: {p:?}"
        );
    }
}

#[tokio::test]
async fn no_two_callers_share_a_connection_to_the_app() {
    let (app, app_addr) = RawApp::start().await;
    let proxy = proxy_before(app_addr, ROOMY, Duration::from_secs(60)).await;
    // Two callers, each on a kept-alive connection, two calls each.
    let mut callers = Vec::new();
    for caller in ["alice", "bob"] {
        let stream = tokio::net::TcpStream::connect(proxy).await.unwrap();
        let (sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .unwrap();
        tokio::spawn(conn);
        callers.push((caller, sender));
    }
    for _ in 0..2 {
        for (caller, sender) in &mut callers {
            let request = hyper::Request::get("/records/1")
                .header("host", "s")
                .header("x-purpose", "provide")
                .header("x-caller", *caller)
                .body(Full::new(Bytes::new()))
                .unwrap();
            let response = sender.send_request(request).await.unwrap();
            let body = response.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(body, format!("answer to GET /records/1 for {caller}\n"));
        }
    }
    let parsed = app.parsed();
    let connection_of = |caller: &str| -> Vec<usize> {
        parsed
            .iter()
            .filter(|p| {
                p.headers
                    .iter()
                    .any(|(n, v)| n == "x-caller" && v == caller)
            })
            .map(|p| p.connection)
            .collect()
    };
    let (alice, bob) = (connection_of("alice"), connection_of("bob"));
    assert_eq!(alice.len(), 2);
    assert_eq!(alice[0], alice[1], "a caller's calls reuse its connection");
    assert_eq!(bob[0], bob[1]);
    assert_ne!(
        alice[0], bob[0],
        "two callers shared a connection to the app"
    );
}

#[tokio::test]
async fn one_peer_holds_only_its_share_of_the_calls() {
    let (_app, app_addr) = RawApp::start().await;
    let limits = CallLimits {
        max_calls: 3,
        max_calls_per_peer: 2,
        max_streams_per_connection: 100,
        ..ROOMY
    };
    let proxy = proxy_before(app_addr, limits, Duration::from_secs(60)).await;
    // Two uploads from 127.0.0.2 that never finish hold its share.
    let mut held = Vec::new();
    for _ in 0..2 {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
        let mut stream = socket.connect(proxy).await.unwrap();
        stream
            .write_all(b"POST /read HTTP/1.1\r\nhost: s\r\nx-purpose: provide\r\ncontent-length: 100\r\n\r\nabc")
            .await
            .unwrap();
        held.push(stream);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let from = |ip: &str| {
        let ip = ip.to_string();
        async move {
            let socket = tokio::net::TcpSocket::new_v4().unwrap();
            socket.bind(format!("{ip}:0").parse().unwrap()).unwrap();
            let mut stream = socket.connect(proxy).await.unwrap();
            stream
                .write_all(b"GET /records/1 HTTP/1.1\r\nhost: s\r\nx-purpose: provide\r\nconnection: close\r\n\r\n")
                .await
                .unwrap();
            let mut out = String::new();
            let _ = stream.read_to_string(&mut out).await;
            out
        }
    };
    let third = from("127.0.0.2").await;
    assert!(third.starts_with("HTTP/1.1 503"), "{third}");
    assert!(third.contains("--max-calls-per-peer"), "{third}");
    let other = from("127.0.0.3").await;
    assert!(other.starts_with("HTTP/1.1 200"), "{other}");
    drop(held);
}

/// The size of the future `f` returns, without calling it.
fn future_size<Fut: std::future::Future>(_f: &dyn Fn(Request<Incoming>) -> Fut) -> usize {
    std::mem::size_of::<Fut>()
}

#[tokio::test]
async fn a_call_refused_for_want_of_room_costs_a_small_future() {
    // Thousands of streams may arrive at once from callers past their
    // share: each holds only `handle`'s own future until it is refused.
    let (_app, app_addr) = RawApp::start().await;
    let (_tx, revisions) = tokio::sync::watch::channel(None);
    let gate = fake_gate();
    let supervisor = Supervisor::new(
        gate.clone(),
        revisions,
        Duration::from_secs(1),
        Duration::from_secs(1),
    );
    let upstream: Uri = format!("http://{app_addr}").parse().unwrap();
    let proxy = Proxy::new(
        gate,
        Routes::default(),
        upstream,
        UpstreamProtocol::Auto,
        supervisor,
        ROOMY,
    );
    let downstream = Downstream::new(
        purposegate_runtime::listen::Peer {
            addr: "127.0.0.1:1".parse().unwrap(),
            subject: None,
            names: Arc::from([]),
            closer: Default::default(),
        },
        &proxy.inner.calls,
    );
    let size = future_size(&|req| proxy.handle(req, &downstream));
    assert!(
        size <= 1024,
        "`handle` holds {size} bytes before a call has its place"
    );
}

#[tokio::test]
async fn a_body_goes_on_whole_and_with_one_length() {
    let (app, app_addr) = RawApp::start().await;
    let proxy = proxy_before(app_addr, ROOMY, Duration::from_secs(60)).await;
    // An HTTP/2 GET with a body where the route allows one: the frame read
    // to tell a body from none goes on first.
    let stream = tokio::net::TcpStream::connect(proxy).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let request = hyper::Request::get("http://s/search")
        .header("x-purpose", "provide")
        .header("content-length", "13")
        .body(Full::new(Bytes::from_static(b"{\"q\":\"ada\"}  ")))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    // A length written twice reaches the app once.
    let answer = raw(
        proxy,
        b"POST /read HTTP/1.1\r\nhost: s\r\nx-purpose: provide\r\ncontent-length: 5\r\ncontent-length: 5\r\n\r\nhello",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let parsed = app.parsed();
    assert_eq!(parsed.len(), 2, "{parsed:?}");
    assert_eq!(parsed[0].body, b"{\"q\":\"ada\"}  ");
    assert_eq!(parsed[1].body, b"hello");
    let lengths: Vec<&str> = parsed[1]
        .headers
        .iter()
        .filter(|(n, _)| n == "content-length")
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(lengths, ["5"]);
}
