//! One judged request is exactly one request at the app. Behind the
//! sidecar: Python's own `http.server`, kept alive, which never reads a
//! body it does not need (`tests/apps/plain_app.py`): whatever body the
//! sidecar forwards and the app leaves unread, the app parses as the next
//! request on that connection. An attacker permitted `provide` on
//! `/records/` tries to get `/secrets/` served (no route covers it) or to
//! make a later caller's request complete its own, from HTTP/1.1 and
//! HTTP/2, many times over; a victim calling beside it must only ever
//! receive the answers to its own requests.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test helpers: a failed setup must fail the test"
)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use purposegate_tests::attacks::h2_from;
use purposegate_tests::python_apps::{PythonApp, PythonStack};

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
";

fn stack() -> PythonStack {
    PythonStack::start(PythonApp::plain(), ROUTES, &[])
}

/// A whole request the attacker wants served: no route covers it.
const SMUGGLED: &str =
    "GET /secrets/1 HTTP/1.1\r\nHost: app\r\nx-purpose: advertising\r\nx-caller: attacker\r\n\r\n";
/// The start of one, to be finished by whoever comes next on the app's
/// connection: their request line and headers become a header value.
const PREFIX: &str = "GET /secrets/2 HTTP/1.1\r\nHost: app\r\nx-caller: attacker\r\nx-ignore: ";

/// Sends `bytes` on a new connection and reads until the sidecar closes
/// it or 3 s pass; the whole text that came back.
fn send_raw(addr: SocketAddr, bytes: &[u8]) -> String {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    stream.write_all(bytes).unwrap();
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let mut out = Vec::new();
    let _ = stream.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// The attacks over HTTP/1.1: each a request the sidecar may judge,
/// carrying bytes an app could read as another request.
fn http1_attacks() -> Vec<(&'static str, String)> {
    let head = "Host: sidecar\r\nx-purpose: provide\r\nx-caller: attacker";
    let chunk = |payload: &str| format!("{:x}\r\n{payload}\r\n0\r\n\r\n", payload.len());
    vec![
        (
            "GET with a content-length body",
            format!(
                "GET /records/1 HTTP/1.1\r\n{head}\r\ncontent-length: {}\r\n\r\n{SMUGGLED}",
                SMUGGLED.len()
            ),
        ),
        (
            "GET with a chunked body",
            format!(
                "GET /records/1 HTTP/1.1\r\n{head}\r\ntransfer-encoding: chunked\r\n\r\n{}",
                chunk(SMUGGLED)
            ),
        ),
        (
            "GET with an unfinished request as body",
            format!(
                "GET /records/1 HTTP/1.1\r\n{head}\r\ncontent-length: {}\r\n\r\n{PREFIX}",
                PREFIX.len()
            ),
        ),
        (
            "HEAD with a body",
            format!(
                "HEAD /records/1 HTTP/1.1\r\n{head}\r\ncontent-length: {}\r\n\r\n{SMUGGLED}",
                SMUGGLED.len()
            ),
        ),
        (
            "HTTP/1.0 keep-alive GET with a body",
            format!(
                "GET /records/1 HTTP/1.0\r\n{head}\r\nconnection: keep-alive\r\ncontent-length: {}\r\n\r\n{SMUGGLED}",
                SMUGGLED.len()
            ),
        ),
        (
            "POST whose body the app leaves unread",
            format!(
                "POST /ignore HTTP/1.1\r\n{head}\r\ncontent-length: {}\r\n\r\n{SMUGGLED}",
                SMUGGLED.len()
            ),
        ),
        (
            "POST chunked, which http.server cannot read",
            format!(
                "POST /ignore HTTP/1.1\r\n{head}\r\ntransfer-encoding: chunked\r\n\r\n{}",
                chunk(SMUGGLED)
            ),
        ),
        (
            "POST with an unfinished request as body",
            format!(
                "POST /ignore HTTP/1.1\r\n{head}\r\ncontent-length: {}\r\n\r\n{PREFIX}",
                PREFIX.len()
            ),
        ),
        (
            "POST with expect: 100-continue",
            format!(
                "POST /ignore HTTP/1.1\r\n{head}\r\nexpect: 100-continue\r\ncontent-length: {}\r\n\r\n{SMUGGLED}",
                SMUGGLED.len()
            ),
        ),
        (
            "content-length and transfer-encoding",
            format!(
                "POST /ignore HTTP/1.1\r\n{head}\r\ncontent-length: 4\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n{SMUGGLED}"
            ),
        ),
        (
            "transfer-encoding not chunked last",
            format!(
                "POST /ignore HTTP/1.1\r\n{head}\r\ntransfer-encoding: chunked, identity\r\n\r\n{}",
                chunk(SMUGGLED)
            ),
        ),
        (
            "transfer-encoding xchunked",
            format!(
                "POST /ignore HTTP/1.1\r\n{head}\r\ntransfer-encoding: xchunked\r\ncontent-length: {}\r\n\r\n{SMUGGLED}",
                SMUGGLED.len()
            ),
        ),
        (
            "two different content-lengths",
            format!(
                "POST /ignore HTTP/1.1\r\n{head}\r\ncontent-length: 0\r\ncontent-length: {}\r\n\r\n{SMUGGLED}",
                SMUGGLED.len()
            ),
        ),
        (
            "a signed content-length",
            format!(
                "POST /ignore HTTP/1.1\r\n{head}\r\ncontent-length: +{}\r\n\r\n{SMUGGLED}",
                SMUGGLED.len()
            ),
        ),
        (
            "a folded header line",
            format!(
                "POST /ignore HTTP/1.1\r\n{head}\r\ncontent-length: 0\r\nx-fold: a\r\n transfer-encoding: chunked\r\n\r\n{SMUGGLED}"
            ),
        ),
        (
            "bare LF line ends",
            format!(
                "GET /records/1 HTTP/1.1\n{}\ncontent-length: {}\n\n{SMUGGLED}",
                head.replace("\r\n", "\n"),
                SMUGGLED.len()
            ),
        ),
        (
            "two requests pipelined",
            format!("GET /records/1 HTTP/1.1\r\n{head}\r\n\r\n{SMUGGLED}"),
        ),
        (
            "an upgrade to h2c",
            format!(
                "GET /records/1 HTTP/1.1\r\n{head}\r\nconnection: upgrade, http2-settings\r\nupgrade: h2c\r\nhttp2-settings: AAMAAABkAAQAAP__\r\n\r\n{SMUGGLED}"
            ),
        ),
    ]
}

/// The victim, on a kept-alive connection of its own: `GET /records/{n}`
/// with `x-caller: victim-{n}`; it must receive exactly its own answer.
async fn victim_call(sender: &mut hyper::client::conn::http1::SendRequest<Full<Bytes>>, n: usize) {
    let request = hyper::Request::get(format!("/records/{n}"))
        .header("host", "sidecar")
        .header("x-purpose", "provide")
        .header("x-caller", format!("victim-{n}"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    // The connection takes its next request once the last answer is done
    // with (hyper's client says so with `ready`).
    tokio::time::timeout(Duration::from_secs(10), sender.ready())
        .await
        .unwrap()
        .unwrap();
    let response = tokio::time::timeout(Duration::from_secs(10), sender.send_request(request))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(response.status(), 200);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let answer: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(answer["path"], format!("/records/{n}"), "{answer}");
    assert_eq!(answer["caller"], format!("victim-{n}"), "{answer}");
}

/// Nothing but judged requests reached the app: no `/secrets/`, nothing
/// the attacker's `x-caller` marks that is not a judged path, every
/// purpose the decided one.
fn only_judged_requests_reached(app: &PythonApp) {
    let seen = app.seen();
    assert!(!seen.is_empty());
    for request in &seen {
        let path = request["path"].as_str().unwrap();
        assert!(
            path.starts_with("/records/") || path == "/ignore" || path == "/read",
            "an unjudged request reached the app: {request}"
        );
        let purposes: Vec<&str> = request["headers"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|h| h[0].as_str().unwrap().eq_ignore_ascii_case("x-purpose"))
            .map(|h| h[1].as_str().unwrap())
            .collect();
        assert_eq!(purposes, ["provide"], "{request}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_smuggled_request_reaches_the_app_from_http1_callers() {
    let stack = stack();
    let proxy = stack.sidecar.proxy_addr;
    let stream = tokio::net::TcpStream::connect(proxy).await.unwrap();
    let (mut victim, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let attacks = http1_attacks();
    let mut n = 0;
    for round in 0..100 / attacks.len() + 1 {
        for (name, bytes) in &attacks {
            let answer = tokio::task::spawn_blocking({
                let bytes = bytes.clone();
                move || send_raw(proxy, bytes.as_bytes())
            })
            .await
            .unwrap();
            assert!(
                !answer.contains("SECRET"),
                "round {round}, {name}: {answer}"
            );
            n += 1;
            victim_call(&mut victim, n).await;
        }
    }
    assert!(n >= 100);
    only_judged_requests_reached(&stack.app);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_smuggled_request_reaches_the_app_from_http2_callers() {
    let stack = stack();
    let proxy = stack.sidecar.proxy_addr;
    let stream = tokio::net::TcpStream::connect(proxy).await.unwrap();
    let (mut victim, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let mut attacker = h2_from([127, 0, 0, 1].into(), proxy).await;
    let attacks: [(&str, &str, &str); 5] = [
        ("GET", "/records/1", SMUGGLED),
        ("GET", "/records/1", PREFIX),
        ("DELETE", "/records/1", SMUGGLED),
        ("POST", "/ignore", SMUGGLED),
        ("POST", "/ignore", PREFIX),
    ];
    let mut n = 1000;
    for _ in 0..20 {
        for (method, path, body) in attacks {
            let request = hyper::Request::builder()
                .method(method)
                .uri(format!("http://sidecar{path}"))
                .header("x-purpose", "provide")
                .header("x-caller", "attacker")
                .body(Full::new(Bytes::from_static(body.as_bytes())))
                .unwrap();
            let response = attacker.send_request(request).await.unwrap();
            let status = response.status().as_u16();
            let body = response.into_body().collect().await.unwrap().to_bytes();
            assert!(!String::from_utf8_lossy(&body).contains("SECRET"));
            if method == "POST" {
                assert_eq!(status, 200, "{method} {path}");
            } else {
                assert_eq!(status, 400, "{method} {path}");
            }
            n += 1;
            victim_call(&mut victim, n).await;
        }
    }
    only_judged_requests_reached(&stack.app);
}
