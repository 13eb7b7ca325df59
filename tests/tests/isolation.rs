//! No caller can affect another's call. Behind the sidecar, a grpcio
//! service (`tests/apps/grpc_app.py`); an attacker that opens feeds and
//! never reads them, or holds thousands of slow uploads from one address,
//! while a real caller from another address makes unary calls and reads
//! a 500-message stream: every one of its calls completes, correct, with
//! no 503, and the sidecar stays under 64 MiB.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test helpers: a failed setup must fail the test"
)]

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use purposegate_tests::attacks::{connect_from, grpc_frame, h2_from};
use purposegate_tests::python_apps::{PythonApp, PythonStack};

const MAX_SIDECAR_KIB: u64 = 64 * 1024;

const FEED_ROUTES: &str = "routes:
  - grpc: /test.v1.Feed/*
    dataCategory: customer-data
";

fn grpc_stack(extra: &[&str]) -> PythonStack {
    PythonStack::start(PythonApp::grpc(), FEED_ROUTES, extra)
}

type Sender = hyper::client::conn::http2::SendRequest<Full<Bytes>>;

fn grpc_call(method: &str, message: &[u8]) -> hyper::Request<Full<Bytes>> {
    hyper::Request::builder()
        .method("POST")
        .uri(format!("http://sidecar/test.v1.Feed/{method}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("x-purpose", "provide")
        .body(Full::new(Bytes::from(grpc_frame(message))))
        .unwrap()
}

/// The gRPC messages in `body`, in order.
fn messages(mut body: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while body.len() >= 5 {
        let len = u32::from_be_bytes(body[1..5].try_into().unwrap()) as usize;
        out.push(body[5..5 + len].to_vec());
        body = &body[5 + len..];
    }
    out
}

/// A unary call and a 500-message stream, as a real caller makes them:
/// both must complete, whole and in order, with `grpc-status: 0`.
async fn real_caller_is_served(sender: &mut Sender, round: usize) {
    let payload = format!("round {round}");
    let unary = sender.send_request(grpc_call("Get", payload.as_bytes()));
    let stream = sender.clone().send_request(grpc_call("Stream", b"500:100"));
    let (unary, stream) = tokio::time::timeout(Duration::from_secs(20), async {
        tokio::join!(
            async {
                let response = unary.await.unwrap();
                assert_eq!(response.status(), 200);
                response.into_body().collect().await.unwrap()
            },
            async {
                let response = stream.await.unwrap();
                assert_eq!(response.status(), 200);
                response.into_body().collect().await.unwrap()
            }
        )
    })
    .await
    .unwrap_or_else(|_| panic!("round {round}: the real caller's calls did not end in 20 s"));
    let status = |c: &http_body_util::Collected<Bytes>| {
        c.trailers()
            .and_then(|t| t.get("grpc-status"))
            .map(|v| v.to_str().unwrap().to_string())
    };
    assert_eq!(status(&unary).as_deref(), Some("0"), "round {round}");
    assert_eq!(
        messages(&unary.to_bytes()),
        [format!("got:{payload}").into_bytes()]
    );
    assert_eq!(status(&stream).as_deref(), Some("0"), "round {round}");
    let feed = messages(&stream.to_bytes());
    assert_eq!(feed.len(), 500, "round {round}");
    for (n, message) in feed.iter().enumerate() {
        assert!(
            message.starts_with(format!("{n}:").as_bytes()),
            "round {round}, {n}"
        );
        assert_eq!(message.len(), 100);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_that_stops_reading_stalls_only_its_own_calls() {
    let stack = grpc_stack(&[]);
    let proxy = stack.sidecar.proxy_addr;
    let attacker_ip = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
    let caller_ip = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3));
    let mut caller = h2_from(caller_ip, proxy).await;
    real_caller_is_served(&mut caller, 0).await;

    // The attacker opens big feeds and never reads them: their bodies are
    // held, never polled, so its flow-control windows stay shut.
    let mut held = Vec::new();
    let mut senders = Vec::new();
    // Within the app's own capacity (grpcio serves 64 calls at once here):
    // what is tried is the sidecar's isolation, not the app's threads.
    for _ in 0..2 {
        let mut attacker = h2_from(attacker_ip, proxy).await;
        for _ in 0..8 {
            // The attacker's own calls may stall: that is its business.
            let call = attacker.send_request(grpc_call("Stream", b"4000:16384"));
            if let Ok(Ok(response)) = tokio::time::timeout(Duration::from_secs(2), call).await {
                held.push(response);
            }
        }
        senders.push(attacker);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let started = Instant::now();
    for round in 1..=3 {
        real_caller_is_served(&mut caller, round).await;
    }
    // A new connection from the caller is served too.
    let mut fresh = h2_from(caller_ip, proxy).await;
    real_caller_is_served(&mut fresh, 4).await;
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    let peak = stack.sidecar.peak_resident_kib();
    assert!(peak < MAX_SIDECAR_KIB, "the sidecar reached {peak} KiB");
    drop((held, senders));
    assert!(!stack.app.seen().is_empty());
}

const UPLOAD_ROUTES: &str = "routes:
  - http: /read
    methods: [POST]
    dataCategory: customer-data
  - http: /records/
    methods: [GET]
    dataCategory: customer-data
";

/// A body that sends `first` and then holds the stream open, sending
/// nothing more, for as long as it lives.
fn held_body(
    first: &'static [u8],
) -> http_body_util::StreamBody<
    tokio_stream::wrappers::ReceiverStream<
        Result<hyper::body::Frame<Bytes>, std::convert::Infallible>,
    >,
> {
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let _ = tx.try_send(Ok(hyper::body::Frame::data(Bytes::from_static(first))));
    // The sender lives in a task that never ends before the runtime.
    tokio::spawn(async move {
        let _tx = tx;
        std::future::pending::<()>().await;
    });
    http_body_util::StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(rx))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_slow_uploads_from_one_address_leave_others_served() {
    let stack = PythonStack::start(PythonApp::plain(), UPLOAD_ROUTES, &[]);
    let sidecar = &stack.sidecar;
    let proxy = sidecar.proxy_addr;
    let attacker_ip = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
    let caller_ip = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3));

    // 100 connections of 100 streams: 10,000 uploads of which each sends
    // one byte of the 1,000 it announced, and then nothing.
    let mut statuses = std::collections::BTreeMap::<u16, usize>::new();
    let mut held = Vec::new();
    let mut connections = Vec::new();
    for _ in 0..100 {
        let stream = connect_from(attacker_ip, proxy).await.unwrap();
        let (sender, conn) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(stream),
        )
        .await
        .unwrap();
        tokio::spawn(conn);
        let mut calls = Vec::new();
        for _ in 0..100 {
            let request = hyper::Request::post("http://sidecar/read")
                .header("x-purpose", "provide")
                .header("content-length", "1000")
                .body(held_body(b"x"))
                .unwrap();
            calls.push(sender.clone().send_request(request));
        }
        connections.push((sender, calls));
    }
    // Every answer that comes (the refused ones come at once; the held
    // ones never do).
    for (sender, calls) in connections {
        for call in calls {
            match tokio::time::timeout(Duration::from_millis(20), call).await {
                Ok(Ok(response)) => *statuses.entry(response.status().as_u16()).or_default() += 1,
                Ok(Err(_)) => *statuses.entry(0).or_default() += 1,
                Err(_) => *statuses.entry(1).or_default() += 1,
            }
        }
        held.push(sender);
    }
    let refused = statuses.get(&503).copied().unwrap_or(0);
    assert!(refused >= 9_000, "{statuses:?}");

    // A real caller from another address: served, never a 503.
    let mut caller = h2_from(caller_ip, proxy).await;
    for n in 0..50 {
        let request = hyper::Request::get(format!("http://sidecar/records/{n}"))
            .header("x-purpose", "provide")
            .body(Full::new(Bytes::new()))
            .unwrap();
        let response = tokio::time::timeout(Duration::from_secs(10), caller.send_request(request))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(response.status(), 200, "call {n}");
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert!(String::from_utf8_lossy(&body).contains(&format!("/records/{n}")));
    }
    let peak = sidecar.peak_resident_kib();
    assert!(
        peak < MAX_SIDECAR_KIB,
        "the sidecar reached {peak} KiB: {statuses:?}"
    );
    drop(held);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_call_ends_once_it_moves_no_data_for_the_idle_timeout() {
    let stack = grpc_stack(&["--call-idle-timeout", "1s", "--max-calls-per-peer", "1"]);
    let proxy = stack.sidecar.proxy_addr;
    let attacker_ip = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 4));
    // A feed the caller never reads: its window shuts, nothing moves.
    let stream = connect_from(attacker_ip, proxy).await.unwrap();
    let (mut attacker, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    let connection = tokio::spawn(conn);
    let started = Instant::now();
    let held = attacker
        .send_request(grpc_call("Stream", b"4000:16384"))
        .await
        .unwrap();
    assert_eq!(held.status(), 200);
    // Its share is one call: a second one from the address waits its turn.
    let mut second = h2_from(attacker_ip, proxy).await;
    let refused = second.send_request(grpc_call("Get", b"x")).await.unwrap();
    assert_eq!(
        refused
            .headers()
            .get("grpc-status")
            .map(|v| v.to_str().unwrap()),
        Some("8"),
        "{:?}",
        refused.headers()
    );
    // Ended after a second of nothing, and its connection closed a second
    // later since the caller never asks for the end: well within 5 s.
    let ended = tokio::time::timeout(Duration::from_secs(5), connection).await;
    assert!(
        ended.is_ok(),
        "the stalled caller's connection is still open"
    );
    assert!(started.elapsed() >= Duration::from_secs(1));
    drop(held);
    // Its place is free again: at once, or within a second of its
    // connection closing (the sidecar's tasks for the ended call let the
    // place go as they wind down, after the caller sees the close).
    let mut tries = 0;
    let unary = loop {
        let unary = second
            .send_request(grpc_call("Get", b"again"))
            .await
            .unwrap();
        let waits_its_turn = unary.headers().get("grpc-status").is_some_and(|v| v == "8");
        tries += 1;
        if !waits_its_turn || tries == 50 {
            break unary;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let unary = unary.into_body().collect().await.unwrap();
    assert_eq!(
        unary.trailers().and_then(|t| t.get("grpc-status")).unwrap(),
        "0"
    );
    assert_eq!(messages(&unary.to_bytes()), [b"got:again".to_vec()]);

    // An upload that stops sending: 408 once a second has passed.
    let answer = tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(proxy).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        stream
            .write_all(b"POST /test.v1.Feed/Get HTTP/1.1\r\nhost: s\r\nx-purpose: provide\r\nte: trailers\r\ncontent-type: application/grpc\r\ncontent-length: 100\r\n\r\nabc")
            .unwrap();
        let mut out = vec![0u8; 4096];
        let n = stream.read(&mut out).unwrap_or(0);
        String::from_utf8_lossy(&out[..n]).into_owned()
    })
    .await
    .unwrap();
    assert!(
        answer.contains("grpc-status: 4") || answer.starts_with("HTTP/1.1 408"),
        "{answer}\n{}",
        stack.sidecar.log().join("\n")
    );
}
