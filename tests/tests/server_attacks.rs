//! The decision server, tried as an attacker would: every sidecar denies
//! everything when the server is gone, so no one caller may take it down
//! or hold back a policy change. Each attack is against the real binary;
//! its peak resident memory (`VmHWM`) must stay under 64 MiB, and a real
//! `Check` is answered in time while it goes on.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test helpers: a failed setup must fail the test"
)]

use std::net::IpAddr;
use std::time::{Duration, Instant};

use pb::decision_service_client::DecisionServiceClient;
use purposegate_proto::v1 as pb;
use purposegate_tests::attacks::{connect_from, grpc_frame, h2_request, percent_decode};
use purposegate_tests::{Daemon, ServerProcess, channel, check_request, metric};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const MAX_SERVER_KIB: u64 = 64 * 1024;
const ATTACKER: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 2));

fn assert_within_memory(server: &Daemon, attack: &str) {
    let peak = server.peak_resident_kib();
    assert!(
        peak < MAX_SERVER_KIB,
        "{attack}: the server reached {peak} KiB (limit {MAX_SERVER_KIB} KiB)"
    );
}

/// A real `Check` from 127.0.0.1, answered (whatever the policy says)
/// within the sidecar's 200 ms.
async fn check_in_time(addr: std::net::SocketAddr) {
    let mut client = DecisionServiceClient::new(channel(&format!("http://{addr}")).await);
    let start = Instant::now();
    let answer = client
        .check(check_request("provide", "customer-data"))
        .await
        .unwrap()
        .into_inner();
    let took = start.elapsed();
    assert!(!answer.policy_revision.is_empty(), "{answer:?}");
    assert!(took < Duration::from_millis(200), "a Check took {took:?}");
}

/// A raw gRPC call: (grpc-status, grpc-message).
async fn call(addr: std::net::SocketAddr, method: &str, message: &[u8]) -> (String, String) {
    let (status, head, _, trailers) = h2_request(
        addr,
        "POST",
        &format!("/purposegate.v1.DecisionService/{method}"),
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
            .map(percent_decode)
            .unwrap_or_default()
    };
    (get("grpc-status"), get("grpc-message"))
}

#[tokio::test]
async fn batches_are_measured_and_counted_before_they_are_decoded() {
    let server = ServerProcess::start(&["--decision-log", "off"]);
    // 2,000,000 empty requests in 4 MB: refused from the frame header.
    let bomb = [0x0a, 0x00].repeat(2_000_000);
    let (code, message) = call(server.addr, "CheckBatch", &bomb).await;
    assert_eq!(code, "11", "{message}");
    assert!(message.contains("at most 1048576"), "{message}");
    // 500,000 in 1 MB: counted on the wire, refused, never built.
    let (code, message) = call(server.addr, "CheckBatch", &bomb[..1_000_000]).await;
    assert_eq!(code, "3", "{message}");
    assert!(
        message.contains("holds 500000 requests; at most 1000"),
        "{message}"
    );
    // A second frame behind one.
    let mut two = grpc_frame(&bomb[..100]);
    two.extend_from_slice(&grpc_frame(&[]));
    let (status, head, _, trailers) = h2_request(
        server.addr,
        "POST",
        "/purposegate.v1.DecisionService/CheckBatch",
        &[("content-type", "application/grpc"), ("te", "trailers")],
        two,
    )
    .await
    .unwrap();
    assert_eq!(status, 200);
    let code = head
        .get("grpc-status")
        .or(trailers.as_ref().and_then(|t| t.get("grpc-status")))
        .unwrap();
    assert_eq!(code, "3");
    // A Check larger than any valid one: refused from its header too.
    let (code, message) = call(server.addr, "Check", &vec![0u8; 200_000]).await;
    assert_eq!(code, "11", "{message}");

    // Eight of the 1 MB bombs at once, while a real caller checks.
    let bombs: Vec<_> = (0..8)
        .map(|_| {
            let addr = server.addr;
            let bomb = bomb[..1_000_000].to_vec();
            tokio::spawn(async move { call(addr, "CheckBatch", &bomb).await })
        })
        .collect();
    check_in_time(server.addr).await;
    for bomb in bombs {
        assert_eq!(bomb.await.unwrap().0, "3");
    }
    assert_within_memory(&server, "batch bombs");
}

#[tokio::test]
async fn the_grpc_port_bounds_streams_watchers_and_connections() {
    let server = ServerProcess::start(&[
        "--decision-log",
        "off",
        "--max-watchers",
        "50",
        "--idle-timeout",
        "2s",
    ]);
    // The server tells every client how many streams a connection may open.
    let mut raw = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    raw.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .unwrap();
    let mut settings = vec![0u8; 9];
    raw.read_exact(&mut settings).await.unwrap();
    assert_eq!(settings[3], 0x4, "the server's first frame is SETTINGS");
    let len =
        usize::from(settings[0]) << 16 | usize::from(settings[1]) << 8 | usize::from(settings[2]);
    let mut params = vec![0u8; len];
    raw.read_exact(&mut params).await.unwrap();
    let max_streams = params.chunks(6).find_map(|p| {
        (u16::from_be_bytes([p[0], p[1]]) == 0x3)
            .then(|| u32::from_be_bytes([p[2], p[3], p[4], p[5]]))
    });
    assert_eq!(max_streams, Some(100));

    // Watchers past the cap are refused; the open ones keep their streams.
    let mut client = DecisionServiceClient::new(channel(&server.url()).await);
    let mut open = Vec::new();
    let mut refused = 0;
    for _ in 0..60 {
        match client.watch_policy(pb::WatchPolicyRequest {}).await {
            Ok(stream) => open.push(stream.into_inner()),
            Err(status) => {
                assert_eq!(status.code(), tonic::Code::ResourceExhausted);
                assert!(status.message().contains("--max-watchers"), "{status:?}");
                refused += 1;
            }
        }
    }
    assert_eq!((open.len(), refused), (50, 10));
    drop(open);

    // Silent sockets, half a preface, a preface and SETTINGS with nothing
    // after: all closed (first byte 5 s, idle 2 s).
    let mut silent = connect_from(ATTACKER, server.addr).await.unwrap();
    let mut half = connect_from(ATTACKER, server.addr).await.unwrap();
    half.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
    let mut idle = connect_from(ATTACKER, server.addr).await.unwrap();
    idle.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .unwrap();
    for (socket, what) in [
        (&mut idle, "idle"),
        (&mut half, "half"),
        (&mut silent, "silent"),
    ] {
        assert!(
            closed_within(socket, Duration::from_secs(8)).await,
            "{what}"
        );
    }

    // 500 connections from one address: 64 held, the rest closed at once;
    // a real caller from another address is served meanwhile.
    let mut held = Vec::new();
    for _ in 0..500 {
        if let Ok(socket) = connect_from(ATTACKER, server.addr).await {
            held.push(socket);
        }
    }
    check_in_time(server.addr).await;
    let refused = metric(
        &server.metrics(),
        r#"purposegate_connections_refused_total{listener="grpc"}"#,
    )
    .unwrap();
    assert!(refused >= 400.0, "{refused} refused");
    assert_within_memory(&server, "streams, watchers and connections");
}

async fn closed_within(socket: &mut tokio::net::TcpStream, limit: Duration) -> bool {
    let mut buf = vec![0u8; 4096];
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, socket.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

#[tokio::test]
async fn out_of_descriptors_the_server_backs_off_and_recovers() {
    // 128 descriptors; four attacking addresses hold 64 connections each.
    let server = Daemon::start_limited(
        "purposegate-server",
        &[
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
            "--admin-listen",
            "off",
            "--authzen-listen",
            "off",
            "--decision-log",
            "off",
        ],
        &[],
        &["addr", "metrics_addr"],
        Some(128),
    );
    let addr = server.addr("addr");
    let mut held = Vec::new();
    for last in 2..6u8 {
        for _ in 0..64 {
            if let Ok(socket) = connect_from([127, 0, 0, last].into(), addr).await {
                held.push(socket);
            }
        }
    }
    // While the process is out of descriptors, accepting fails: it must
    // not spin a core on it.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = server.cpu_time();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let spent = server.cpu_time() - before;
    assert!(
        spent < Duration::from_millis(500),
        "the server spent {spent:?} of CPU in 2 s"
    );
    // The attackers go: the server serves again.
    drop(held);
    let start = Instant::now();
    loop {
        let ok = tokio::time::timeout(Duration::from_secs(2), async {
            let mut client = DecisionServiceClient::new(
                tonic::transport::Channel::from_shared(format!("http://{addr}"))
                    .unwrap()
                    .connect()
                    .await
                    .ok()?,
            );
            client
                .check(check_request("provide", "customer-data"))
                .await
                .ok()
        })
        .await;
        if let Ok(Some(_)) = ok {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "never served again"
        );
    }
    let text = purposegate_tests::http_get(server.addr("metrics_addr"), "/metrics").1;
    let refused = metric(
        &text,
        r#"purposegate_connections_refused_total{listener="grpc"}"#,
    );
    assert!(refused.is_some_and(|r| r > 0.0), "{text}");
}

/// A valid policy with `purposes` × `categories` cells, ids 250
/// characters long, and two rules (one of them conditional on a list of
/// `listed` subjects).
fn wide_policy(purposes: usize, categories: usize, listed: usize) -> String {
    let id = |kind: &str, i: usize| format!("{kind}-{i:04}-{}", "x".repeat(240));
    let mut text = String::from("version: 1\nname: wide\npurposes:\n");
    for i in 0..purposes {
        text.push_str(&format!("  {}: Purpose {i}\n", id("p", i)));
    }
    text.push_str("dataCategories:\n");
    for i in 0..categories {
        text.push_str(&format!("  {}: Category {i}\n", id("c", i)));
    }
    let subjects: Vec<String> = (0..listed).map(|i| format!("s{i}")).collect();
    text.push_str(&format!(
        "rules:\n  - id: all\n    effect: permit\n    purposes: [{}]\n    when: {{ subject: {{ id: [{}] }} }}\n  - id: none\n    effect: deny\n    purposes: [{}]\n    unless: {{ customerInstruction: present }}\n",
        id("p", 0),
        subjects.join(", "),
        id("p", 1)
    ));
    text
}

/// `GET /api/policy` on the explorer; (status, body length).
async fn api_policy(addr: std::net::SocketAddr) -> (u16, usize) {
    tokio::task::spawn_blocking(move || {
        let (status, body) = purposegate_tests::http_get(addr, "/api/policy");
        (status, body.len())
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn the_explorer_matrix_is_bounded_in_work_and_size() {
    let dir = purposegate_tests::TempDir::new("wide");
    // 100 × 40 cells with 250-character ids: past the matrix's cap, so the
    // matrix is left out (saying why) and decisions go on.
    let text = wide_policy(100, 40, 10);
    assert!(text.len() < 128 * 1024);
    let path = dir.write("wide.yaml", &text);
    let server = ServerProcess::start(&["--decision-log", "off", "--policy", &path]);
    let admin = server.admin_addr.unwrap();
    let (status, length) = api_policy(admin).await;
    assert_eq!(status, 200);
    assert!(length < 256 * 1024, "{length} bytes");
    let (_, body) = purposegate_tests::http_get(admin, "/api/policy");
    assert!(
        body.contains("the matrix is drawn for at most 2500"),
        "{}",
        &body[..200]
    );
    assert_within_memory(&server, "a matrix past its cap");

    // 50 × 50 cells, each conditional on a list of 5,000 subjects: drawn,
    // bounded in work and size, computed once however many ask at once.
    let text = wide_policy(50, 50, 5_000);
    assert!(text.len() < 128 * 1024, "{}", text.len());
    std::fs::write(dir.path().join("wide.yaml"), &text).unwrap();
    let (_, took) = purposegate_tests::eventually("the wide policy is loaded", || async {
        let (_, body) =
            tokio::task::spawn_blocking(move || purposegate_tests::http_get(admin, "/api/policy"))
                .await
                .unwrap();
        (!body.contains("the matrix is drawn for at most")).then_some(())
    })
    .await;
    let started = Instant::now();
    let askers: Vec<_> = (0..8).map(|_| tokio::spawn(api_policy(admin))).collect();
    check_in_time(server.addr).await;
    for asker in askers {
        let (status, length) = asker.await.unwrap();
        assert_eq!(status, 200);
        assert!(length < 8 * 1024 * 1024, "{length} bytes");
    }
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "the matrix took {:?} (after {took:?})",
        started.elapsed()
    );
    assert_within_memory(&server, "a wide matrix asked for eight times at once");
    // And the page drawn from it.
    let pages: Vec<_> = (0..8)
        .map(|_| tokio::task::spawn_blocking(move || purposegate_tests::http_get(admin, "/").0))
        .collect();
    for page in pages {
        assert_eq!(page.await.unwrap(), 200);
    }
    assert_within_memory(&server, "the page of a wide matrix eight times at once");
}
