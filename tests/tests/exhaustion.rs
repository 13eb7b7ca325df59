//! No one caller can exhaust the sidecar: each flood an attacker could
//! send with single requests or a few sockets stays within the limits in
//! force, the sidecar's memory stays under 64 MiB throughout (its peak
//! resident memory, `VmHWM`, is read after each attack), and a real caller
//! is served while the flood goes on.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test helpers: a failed setup must fail the test"
)]

use std::io::{Read, Write};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use prost::Message;
use purposegate_proto::v1 as pb;
use purposegate_tests::app::FrameworkApp;
use purposegate_tests::attacks::{connect_from, grpc_frame, h2_request, http1_get, percent_decode};
use purposegate_tests::{
    AppStack, ServerProcess, SidecarProcess, SlowRelay, TempDir, binary, check_request, free_addr,
    metric,
};
use tokio::io::AsyncWriteExt;

/// The memory a sidecar may reach under any one attack.
const MAX_SIDECAR_KIB: u64 = 64 * 1024;

const ROUTES: &str = "routes:
  - http: /records/
    dataCategory: customer-data
";

fn stack(extra: &[&str]) -> AppStack {
    AppStack::start(None, ROUTES, extra)
}

fn assert_within_memory(sidecar: &SidecarProcess, attack: &str) {
    let peak = sidecar.peak_resident_kib();
    assert!(
        peak < MAX_SIDECAR_KIB,
        "{attack}: the sidecar reached {peak} KiB (limit {MAX_SIDECAR_KIB} KiB)"
    );
}

/// A real caller's call through the proxy, from 127.0.0.1.
fn real_call_is_served(sidecar: &SidecarProcess) {
    let answer = http1_get(
        sidecar.proxy_addr,
        "/records/7",
        &[("x-purpose", "provide"), ("x-subject", "crm")],
    );
    assert_eq!(
        answer.status, 200,
        "a real caller was not served: {answer:?}"
    );
}

/// `CheckBatch` on the sidecar's local port with `message` as its body.
async fn check_batch(sidecar: &SidecarProcess, message: &[u8]) -> (String, String) {
    let (status, head, _, trailers) = h2_request(
        sidecar.local_addr,
        "POST",
        "/purposegate.v1.DecisionService/CheckBatch",
        &[("content-type", "application/grpc"), ("te", "trailers")],
        grpc_frame(message),
    )
    .await
    .unwrap();
    assert_eq!(status, 200);
    let get = |name: &str| {
        head.get(name)
            .or(trailers.as_ref().and_then(|t| t.get(name)))
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    (get("grpc-status"), get("grpc-message"))
}

#[tokio::test]
async fn a_batch_is_counted_before_it_is_decoded() {
    let stack = stack(&[]);
    // 2,000,000 empty requests in 4 MB: refused from its frame header,
    // before its bytes are read.
    let bomb: Vec<u8> = [0x0a, 0x00].repeat(2_000_000);
    let (code, message) = check_batch(&stack.sidecar, &bomb).await;
    assert_eq!(code, "11", "{message}");
    assert!(
        percent_decode(&message).contains("at most 1048576 are accepted"),
        "{message}"
    );
    assert_within_memory(&stack.sidecar, "a 4 MB batch of empty requests");
    // 500,000 in 1 MB, within the size: counted on the wire, not built.
    let bomb: Vec<u8> = [0x0a, 0x00].repeat(500_000);
    let (code, message) = check_batch(&stack.sidecar, &bomb).await;
    assert_eq!(code, "3", "{message}");
    let message = percent_decode(&message);
    assert!(
        message.contains("500000 requests; at most 1000"),
        "{message}"
    );
    assert_within_memory(&stack.sidecar, "a 1 MB batch of empty requests");

    // The same bomb with a second, empty frame behind it (which tonic would
    // drain after decoding the first): refused.
    let mut two_frames = grpc_frame(&bomb[..1000]);
    two_frames.extend_from_slice(&grpc_frame(&[]));
    let (status, head, _, trailers) = h2_request(
        stack.sidecar.local_addr,
        "POST",
        "/purposegate.v1.DecisionService/CheckBatch",
        &[("content-type", "application/grpc"), ("te", "trailers")],
        two_frames,
    )
    .await
    .unwrap();
    assert_eq!(status, 200);
    let code = head
        .get("grpc-status")
        .or(trailers.as_ref().and_then(|t| t.get("grpc-status")))
        .unwrap();
    assert_eq!(code, "3");
    assert_within_memory(&stack.sidecar, "a batch bomb with a second frame");

    // 20,000 distinct valid questions (within the size): refused by their
    // count, no PDP call.
    let many = pb::CheckBatchRequest {
        requests: (0..20_000)
            .map(|i| {
                let mut r = check_request("provide", "customer-data");
                r.subject.as_mut().unwrap().id = format!("s{i}");
                r
            })
            .collect(),
    };
    let (code, _) = check_batch(&stack.sidecar, &many.encode_to_vec()).await;
    assert_eq!(code, "3");

    // Within the limit, a batch of distinct questions is answered in order.
    let batch = pb::CheckBatchRequest {
        requests: (0..1000)
            .map(|i| {
                let purpose = if i % 2 == 0 { "provide" } else { "advertising" };
                let mut r = check_request(purpose, "customer-data");
                r.subject.as_mut().unwrap().id = format!("s{i}");
                r
            })
            .collect(),
    };
    let mut client = pb::decision_service_client::DecisionServiceClient::new(
        purposegate_tests::channel(&stack.sidecar.local_url()).await,
    );
    let answers = client
        .check_batch(batch)
        .await
        .unwrap()
        .into_inner()
        .responses;
    assert_eq!(answers.len(), 1000);
    for (i, answer) in answers.iter().enumerate() {
        let expected = if i % 2 == 0 {
            pb::Decision::Permit
        } else {
            pb::Decision::Deny
        };
        assert_eq!(answer.decision(), expected, "answer {i}");
    }
    assert_within_memory(&stack.sidecar, "batches");
    real_call_is_served(&stack.sidecar);
}

#[tokio::test]
async fn distinct_questions_stay_within_the_cache_bytes_and_denials_expire() {
    let stack = stack(&["--cache-max-bytes", "1Mi", "--cache-deny-ttl", "1s"]);
    let mut client = pb::decision_service_client::DecisionServiceClient::new(
        purposegate_tests::channel(&stack.sidecar.local_url()).await,
    );
    // Wait until the sidecar knows the revision (before, it caches nothing).
    let mut revisions = client
        .watch_policy(pb::WatchPolicyRequest {})
        .await
        .unwrap()
        .into_inner();
    tokio_stream::StreamExt::next(&mut revisions).await;
    // 10,000 denied questions with the longest subject a header may carry
    // (in batches of 400: 800 KB each, within the batch size).
    for round in 0..25 {
        let batch = pb::CheckBatchRequest {
            requests: (0..400)
                .map(|i| {
                    let mut r = check_request("advertising", "customer-data");
                    r.subject.as_mut().unwrap().id = format!("{round}-{i}-{}", "s".repeat(2000));
                    r
                })
                .collect(),
        };
        client.check_batch(batch).await.unwrap();
        let held = metric(&stack.sidecar.metrics(), "purposegate_sidecar_cache_bytes").unwrap();
        assert!(held <= 1024.0 * 1024.0, "{held} bytes cached");
    }
    let evicted = metric(
        &stack.sidecar.metrics(),
        "purposegate_sidecar_cache_evictions_total",
    )
    .unwrap();
    assert!(evicted > 5000.0, "{evicted} evictions");
    assert_within_memory(&stack.sidecar, "10,000 distinct denied questions");

    // Header values larger than any field may be are refused, not cached.
    for _ in 0..50 {
        let huge = "x".repeat(20_000);
        let answer = http1_get(
            stack.sidecar.proxy_addr,
            "/records/1",
            &[("x-purpose", "advertising"), ("x-subject", &huge)],
        );
        assert_eq!(answer.status, 403, "{:?}", answer.head);
    }
    // Denials are kept a second, then swept.
    let start = Instant::now();
    loop {
        let entries = metric(
            &stack.sidecar.metrics(),
            "purposegate_sidecar_cache_entries",
        )
        .unwrap();
        if entries == 0.0 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{entries} denials still cached"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    real_call_is_served(&stack.sidecar);
}

const ATTACKER: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 2));
const OTHER_ATTACKER: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 3));

/// Whether the sidecar closed `socket` (EOF or reset) within `limit`.
async fn closed_within(socket: &mut tokio::net::TcpStream, limit: Duration) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buf = vec![0u8; 4096];
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, socket.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0) | Err(_)) => return true,
            // An error answer (431) before closing.
            Ok(Ok(_)) => {}
        }
    }
}

#[tokio::test]
async fn half_sent_requests_and_silent_sockets_are_cut_off() {
    let stack = stack(&["--header-read-timeout", "5s", "--idle-timeout", "3s"]);
    let proxy = stack.sidecar.proxy_addr;
    let mut held = Vec::new();
    let flood = Instant::now();
    // 2,000 connections from one peer, each sending half a request head
    // with a long unfinished header: past the peer's cap they are closed
    // at once; the rest wait for a head that never ends.
    for _ in 0..2000 {
        let Ok(mut socket) = connect_from(ATTACKER, proxy).await else {
            continue;
        };
        let head = format!(
            "GET /records/1 HTTP/1.1\r\nHost: x\r\nx-purpose: provide\r\nx-filler: {}",
            "a".repeat(30_000)
        );
        if socket.write_all(head.as_bytes()).await.is_ok() {
            held.push(socket);
        }
    }
    let flooded = flood.elapsed();
    real_call_is_served(&stack.sidecar);
    let refused = metric(
        &stack.sidecar.metrics(),
        r#"purposegate_sidecar_connections_refused_total{listener="proxy"}"#,
    )
    .unwrap();
    assert!(
        refused >= 1800.0 || flooded > Duration::from_secs(4),
        "{refused} connections refused at the cap"
    );
    assert_within_memory(&stack.sidecar, "2,000 half-sent 30 KB request heads");

    // 300 KB of unfinished headers: cut off at the header size limit.
    let mut big = connect_from(OTHER_ATTACKER, proxy).await.unwrap();
    let head = format!(
        "GET /records/1 HTTP/1.1\r\nHost: x\r\nx-filler: {}",
        "a".repeat(300_000)
    );
    let _ = big.write_all(head.as_bytes()).await;
    // A socket that never sends a byte, and HTTP/2 connections (proxy and
    // local gRPC port) that send their preface and settings, then nothing.
    let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";
    let mut silent = connect_from(OTHER_ATTACKER, proxy).await.unwrap();
    let mut idle = connect_from(OTHER_ATTACKER, proxy).await.unwrap();
    idle.write_all(preface).await.unwrap();
    let mut local = connect_from(OTHER_ATTACKER, stack.sidecar.local_addr)
        .await
        .unwrap();
    local.write_all(preface).await.unwrap();

    // The heads that never end are dropped after the header-read timeout.
    let start = Instant::now();
    for socket in &mut held {
        assert!(
            closed_within(socket, Duration::from_secs(8)).await,
            "a half-sent request was held {:?}",
            start.elapsed()
        );
    }
    drop(held);
    assert!(closed_within(&mut big, Duration::from_secs(1)).await);
    assert!(closed_within(&mut idle, Duration::from_secs(6)).await);
    assert!(closed_within(&mut local, Duration::from_secs(6)).await);
    assert!(closed_within(&mut silent, Duration::from_secs(6)).await);
    assert_within_memory(&stack.sidecar, "slow and silent connections");
    real_call_is_served(&stack.sidecar);
    assert!(stack.app.served_under("/records/1").is_empty());
}

#[test]
fn an_upstream_that_is_the_sidecar_itself_is_refused() {
    let server = ServerProcess::start(&["--decision-log", "off"]);
    // Pointed at its own port: refused at startup.
    let own = free_addr();
    let run: purposegate_tests::Run = std::process::Command::new(binary("purposegate-sidecar"))
        .args([
            "--pdp",
            &server.url(),
            "--listen",
            &own.to_string(),
            "--upstream",
            &format!("http://127.0.0.1:{}", own.port()),
            "--local-listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
        ])
        .output()
        .unwrap()
        .into();
    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(
        run.stderr.contains("is the sidecar's own"),
        "{}",
        run.stderr
    );
}

#[tokio::test]
async fn a_call_that_comes_back_through_the_sidecar_is_refused() {
    // Pointed at itself through a relay it cannot recognise by address:
    // the call comes back marked and is refused; the sidecar lives on.
    let server = ServerProcess::start(&["--decision-log", "off"]);
    let dir = TempDir::new("loop");
    let routes = dir.write("routes.yaml", ROUTES);
    let proxy = free_addr();
    let relay = SlowRelay::start(proxy, Duration::ZERO).await;
    let sidecar = SidecarProcess::start(
        &server.url(),
        &[
            "--listen",
            &proxy.to_string(),
            "--upstream",
            &format!("http://{}", relay.addr),
            "--routes",
            &routes,
        ],
        &[],
    );
    let answer = tokio::task::spawn_blocking(move || {
        http1_get(
            proxy,
            "/records/1",
            &[("x-purpose", "provide"), ("x-subject", "crm")],
        )
    })
    .await
    .unwrap();
    assert_eq!(answer.status, 403, "{answer:?}");
    assert!(
        answer.body.contains("came back through this sidecar"),
        "{answer:?}"
    );
    assert_within_memory(&sidecar, "a forwarding loop");
}

/// Reads one HTTP/1.1 response with a `content-length` from a kept-alive
/// connection: its status and body.
fn read_response(stream: &mut std::net::TcpStream) -> (u16, String) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        stream.read_exact(&mut byte).unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_lowercase();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).unwrap();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[test]
fn a_log_reader_that_stalls_slows_no_call() {
    // The sidecar's stderr is a pipe nobody reads: once it is full, log
    // lines are dropped and counted, and every call is still answered.
    let server = ServerProcess::start(&["--decision-log", "off"]);
    let dir = TempDir::new("stalled-log");
    let routes = dir.write("routes.yaml", ROUTES);
    let app = FrameworkApp::start();
    let (proxy, metrics) = (free_addr(), free_addr());
    let mut child = std::process::Command::new(binary("purposegate-sidecar"))
        .args([
            "--pdp",
            &server.url(),
            "--listen",
            &proxy.to_string(),
            "--upstream",
            &app.url(),
            "--routes",
            &routes,
            "--local-listen",
            "127.0.0.1:0",
            "--metrics-listen",
            &metrics.to_string(),
            "--log-format",
            "json",
        ])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while std::net::TcpStream::connect(proxy).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the sidecar never listened"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Each denied call logs a line of about 2 KB (its path twice): the
    // 64 KB pipe and then the 1 MiB queue fill after a few hundred.
    let start = Instant::now();
    let mut stream = std::net::TcpStream::connect(proxy).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream.set_nodelay(true).unwrap();
    let long = "x".repeat(1000);
    for i in 0..1500 {
        let request =
            format!("GET /nowhere/{i}/{long} HTTP/1.1\r\nHost: x\r\nx-purpose: provide\r\n\r\n");
        stream.write_all(request.as_bytes()).unwrap();
        let (status, _) = read_response(&mut stream);
        assert_eq!(status, 403, "call {i}");
    }
    let took = start.elapsed();
    let text = purposegate_tests::http_get(metrics, "/metrics").1;
    let dropped = metric(&text, "purposegate_sidecar_log_lines_dropped_total").unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert!(dropped > 0.0, "no line was dropped: {text}");
    assert!(
        took < Duration::from_secs(30),
        "1,500 denied calls took {took:?} with a stalled log"
    );
}

#[test]
fn calls_in_flight_are_bounded() {
    let stack = AppStack::start(
        None,
        "routes:\n  - http: /stream\n    dataCategory: customer-data\n  - http: /records/\n    dataCategory: customer-data\n",
        &["--max-calls", "2"],
    );
    let proxy = stack.sidecar.proxy_addr;
    // Two feeds that stay open hold both places.
    let open = |n: usize| {
        let mut stream = std::net::TcpStream::connect(proxy).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        stream
            .write_all(b"GET /stream HTTP/1.1\r\nHost: x\r\nx-purpose: provide\r\n\r\n")
            .unwrap();
        let mut first = [0u8; 64];
        let got = stream.read(&mut first).unwrap();
        assert!(
            String::from_utf8_lossy(&first[..got]).starts_with("HTTP/1.1 200"),
            "feed {n}"
        );
        stream
    };
    let feeds: Vec<_> = (0..2).map(open).collect();
    let third = http1_get(proxy, "/records/1", &[("x-purpose", "provide")]);
    assert_eq!(third.status, 503, "{third:?}");
    assert!(third.body.contains("--max-calls"), "{third:?}");
    // A place freed is a place again.
    drop(feeds);
    let start = Instant::now();
    loop {
        let again = http1_get(proxy, "/records/1", &[("x-purpose", "provide")]);
        if again.status == 200 {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(5), "{again:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}
