//! Floods one caller can send the decision server, for the fairness tests
//! and the benchmark: connections from other loopback addresses
//! (127.0.0.2 and up: every address of 127/8 is this machine), heavy
//! AuthZEN batches, and `Check` timed beside them.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use pb::decision_service_client::DecisionServiceClient;
use purposegate_proto::v1 as pb;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::{channel, check_request};

/// A connection to `addr` from the loopback address 127.0.0.`from`.
pub async fn connect_from(from: u8, addr: SocketAddr) -> tokio::net::TcpStream {
    try_connect_from(from, addr)
        .await
        .unwrap_or_else(|e| panic!("connect from 127.0.0.{from}: {e}"))
}

async fn try_connect_from(from: u8, addr: SocketAddr) -> std::io::Result<tokio::net::TcpStream> {
    crate::attacks::connect_from(std::net::IpAddr::from([127, 0, 0, from]), addr).await
}

/// POSTs `body` to `path` over HTTP/1.1 from 127.0.0.`from`: the status.
pub async fn post_from(from: u8, addr: SocketAddr, path: &str, body: &[u8]) -> u16 {
    let Ok(mut stream) = try_connect_from(from, addr).await else {
        return 0;
    };
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    if stream.write_all(head.as_bytes()).await.is_err() || stream.write_all(body).await.is_err() {
        return 0;
    }
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer).await;
    String::from_utf8_lossy(&answer)
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// A 1,000-item AuthZEN batch with large shared defaults.
pub fn heavy_batch() -> Vec<u8> {
    let attributes: serde_json::Map<String, serde_json::Value> = (0..32)
        .map(|i| (format!("a{i}"), json!("v".repeat(900))))
        .collect();
    let roles: Vec<String> = (0..32)
        .map(|i| format!("role-{i}-{}", "r".repeat(60)))
        .collect();
    let items: Vec<serde_json::Value> = (0..1000)
        .map(|i| json!({"action": {"name": if i % 2 == 0 { "provide" } else { "improve" }}}))
        .collect();
    serde_json::to_vec(&json!({
        "subject": {"type": "user", "id": "crm", "properties": {"tenant": "contoso", "roles": roles}},
        "resource": {"type": "customer-data", "id": "c-1", "properties": {"attributes": attributes}},
        "evaluations": items,
    }))
    .unwrap_or_else(|e| panic!("a batch: {e}"))
}

/// `Check` asked one after another for `within`: every latency, sorted.
pub async fn checks_for(url: &str, within: Duration) -> Vec<Duration> {
    checks_asking(url, within, check_request("provide", "customer-data")).await
}

/// `request` asked one after another for `within`: every latency, sorted.
pub async fn checks_asking(
    url: &str,
    within: Duration,
    request: pb::CheckRequest,
) -> Vec<Duration> {
    let mut client = DecisionServiceClient::new(channel(url).await);
    let mut took = Vec::new();
    let until = Instant::now() + within;
    while Instant::now() < until {
        let started = Instant::now();
        client
            .check(request.clone())
            .await
            .unwrap_or_else(|e| panic!("a real Check failed: {e}"));
        took.push(started.elapsed());
    }
    took.sort();
    took
}
