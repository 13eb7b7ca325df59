//! One caller cannot starve the decision server: floods of AuthZEN
//! batches, reverse questions, slow bodies and silent streams from other
//! addresses (127.0.0.2 and up: every address of 127/8 is this machine)
//! while a real caller on 127.0.0.1 asks `Check` and AuthZEN. The bounds
//! here are loose enough for a loaded 2-core CI; BENCHMARKS.md has the
//! tight figures.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test helpers: a failed setup must fail the test"
)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use pb::decision_service_client::DecisionServiceClient;
use purposegate_proto::v1 as pb;
use purposegate_tests::floods::{checks_for, connect_from, heavy_batch, post_from};
use purposegate_tests::{AuthZenClient, ServerProcess, channel, check_request};
use serde_json::json;
use tokio::io::AsyncWriteExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn floods_of_batches_and_reverse_questions_leave_check_fast() {
    let server = ServerProcess::start(&["--decision-log", "off"]);
    let authzen: SocketAddr = server.authzen_addr.unwrap();
    let body = Arc::new(heavy_batch());
    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicU64::new(0));
    let mut floods = Vec::new();
    for attacker in 0..4u8 {
        let (body, stop, answered) = (body.clone(), stop.clone(), answered.clone());
        floods.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let status =
                    post_from(2 + attacker, authzen, "/access/v1/evaluations", &body).await;
                if status == 200 {
                    answered.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    // The reverse question over gRPC too, from yet other addresses.
    for attacker in 0..2u8 {
        let stop = stop.clone();
        let url = server.url();
        floods.push(tokio::spawn(async move {
            let _ = attacker;
            let mut client = DecisionServiceClient::new(channel(&url).await);
            while !stop.load(Ordering::Relaxed) {
                let mut reverse = check_request("", "customer-data");
                reverse.purpose.clear();
                let _ = client.permitted_purposes(reverse).await;
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let took = checks_for(&server.url(), Duration::from_secs(4)).await;
    // A real AuthZEN caller is answered too.
    let real = AuthZenClient::new(&server.authzen_url());
    let started = Instant::now();
    let (status, _) = real
        .post(
            "/access/v1/evaluation",
            &json!({"subject": {"type": "user", "id": "crm"}, "action": {"name": "provide"},
                    "resource": {"type": "customer-data", "id": "c-1"}}),
        )
        .await;
    let authzen_took = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    for flood in floods {
        let _ = flood.await;
    }
    let p50 = took[took.len() / 2];
    let max = took[took.len() - 1];
    let figures = format!(
        "Check under the flood: {} calls, p50 {p50:?}, max {max:?}; {} batches answered; \
         AuthZEN evaluation {authzen_took:?}",
        took.len(),
        answered.load(Ordering::Relaxed)
    );
    assert!(
        answered.load(Ordering::Relaxed) > 0,
        "the flood never ran: {figures}"
    );
    assert!(p50 < Duration::from_millis(50), "{figures}");
    assert!(max < Duration::from_secs(2), "{figures}");
    assert_eq!(status, 200, "{figures}");
    assert!(authzen_took < Duration::from_secs(2), "{figures}");
    let peak_mib = server.peak_resident_kib() / 1024;
    assert!(peak_mib < 128, "peak RSS {peak_mib} MiB; {figures}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slow_bodies_and_silent_streams_leave_real_callers_served() {
    let server = ServerProcess::start(&["--decision-log", "off"]);
    let authzen: SocketAddr = server.authzen_addr.unwrap();
    // 40 callers from one address that declare a body and send it a byte
    // every 200 ms.
    let mut slow = Vec::new();
    for _ in 0..40 {
        slow.push(tokio::spawn(async move {
            let mut stream = connect_from(2, authzen).await;
            let head = "POST /access/v1/evaluation HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 4000\r\n\r\n";
            if stream.write_all(head.as_bytes()).await.is_err() {
                return;
            }
            for _ in 0..40 {
                if stream.write_all(b" ").await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }));
    }
    // Eight more addresses, four connections each, that declare the
    // largest body and send none of it: a declared length costs nothing
    // until its bytes arrive.
    for from in 10..18u8 {
        for _ in 0..4 {
            slow.push(tokio::spawn(async move {
                let mut stream = connect_from(from, authzen).await;
                let head = "POST /access/v1/evaluation HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 1048576\r\n\r\n";
                let _ = stream.write_all(head.as_bytes()).await;
                tokio::time::sleep(Duration::from_secs(9)).await;
            }));
        }
    }
    // One h2c connection from another address with 100 streams whose
    // bodies never come.
    let silent = tokio::spawn(async move {
        let stream = connect_from(3, authzen).await;
        let (mut sender, conn) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(stream),
        )
        .await
        .unwrap();
        tokio::spawn(conn);
        let mut held = Vec::new();
        for _ in 0..100 {
            let (tx, body) = tokio::sync::mpsc::channel::<
                Result<hyper::body::Frame<bytes::Bytes>, std::convert::Infallible>,
            >(1);
            let request = hyper::Request::post(format!("http://{authzen}/access/v1/evaluations"))
                .header("content-type", "application/json")
                .body(http_body_util::StreamBody::new(
                    tokio_stream::wrappers::ReceiverStream::new(body),
                ))
                .unwrap();
            if sender.ready().await.is_err() {
                break;
            }
            held.push((tx, sender.send_request(request)));
        }
        tokio::time::sleep(Duration::from_secs(8)).await;
        drop(held);
    });
    tokio::time::sleep(Duration::from_millis(700)).await;
    let real = AuthZenClient::new(&server.authzen_url());
    for _ in 0..5 {
        let started = Instant::now();
        let (status, answer) = real
            .post(
                "/access/v1/evaluation",
                &json!({"subject": {"type": "user", "id": "crm"}, "action": {"name": "provide"},
                        "resource": {"type": "customer-data", "id": "c-1"}}),
            )
            .await;
        assert_eq!(status, 200, "{answer}");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
    }
    let took = checks_for(&server.url(), Duration::from_millis(500)).await;
    assert!(took[took.len() / 2] < Duration::from_millis(50), "{took:?}");
    silent.abort();
    for s in slow {
        s.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_flooding_addresses_leave_a_real_batch_its_turn() {
    let server = ServerProcess::start(&["--decision-log", "off"]);
    let authzen: SocketAddr = server.authzen_addr.unwrap();
    let body = Arc::new(heavy_batch());
    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicU64::new(0));
    let mut floods = Vec::new();
    // 24 addresses, four batches in flight each: more than the pool's 64
    // places, each address queueing past its turn.
    for attacker in 0..24u8 {
        for _ in 0..4 {
            let (body, stop, answered) = (body.clone(), stop.clone(), answered.clone());
            floods.push(tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let status =
                        post_from(20 + attacker, authzen, "/access/v1/evaluations", &body).await;
                    if status == 200 {
                        answered.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }));
        }
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let real = AuthZenClient::new(&server.authzen_url());
    let mut took = Vec::new();
    for _ in 0..5 {
        let started = Instant::now();
        let (status, answer) = real
            .post(
                "/access/v1/evaluations",
                &json!({"subject": {"type": "user", "id": "crm"},
                        "resource": {"type": "customer-data", "id": "c-1"},
                        "evaluations": [{"action": {"name": "provide"}}, {"action": {"name": "improve"}}]}),
            )
            .await;
        took.push(started.elapsed());
        assert_eq!(status, 200, "{answer} after {took:?}");
    }
    stop.store(true, Ordering::Relaxed);
    for flood in floods {
        let _ = flood.await;
    }
    let figures = format!(
        "a real batch took {took:?}; {} flood batches answered",
        answered.load(Ordering::Relaxed)
    );
    assert!(answered.load(Ordering::Relaxed) > 0, "{figures}");
    assert!(
        took.iter().all(|t| *t < Duration::from_secs(2)),
        "{figures}"
    );
}
