//! One caller against everyone: `Check` timed on 127.0.0.1 while four
//! callers from other addresses flood the server for 10 s each with what
//! used to starve it (heavy AuthZEN batches, the reverse question on a
//! policy of 10,000 purposes, slow bodies and silent streams), and a real
//! AuthZEN caller asking beside them. Release build; the figures of
//! BENCHMARKS.md's fairness section.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use pb::decision_service_client::DecisionServiceClient;
use purposegate_proto::v1 as pb;
use purposegate_tests::floods::{checks_asking, connect_from, heavy_batch, post_from};
use purposegate_tests::{AuthZenClient, ServerProcess, TempDir, channel, organisation_policy};
use serde::Serialize;
use serde_json::json;
use tokio::io::AsyncWriteExt;

/// How long each flood runs while `Check` is timed.
const FLOOD: Duration = Duration::from_secs(10);

#[derive(Debug, Serialize, Default)]
pub struct Fairness {
    pub phases: Vec<Phase>,
}

/// `Check` beside one flood.
#[derive(Debug, Serialize)]
pub struct Phase {
    pub flood: String,
    pub checks: usize,
    pub p50_us: f64,
    pub p99_us: f64,
    pub max_us: f64,
    /// Flood requests answered 200 (the work the flood got done).
    pub flood_answered: u64,
    /// The slowest real AuthZEN evaluation asked every 200 ms beside it,
    /// and whether every one was answered 200.
    pub real_authzen_max_ms: f64,
    pub real_authzen_all_answered: bool,
    /// The server's peak resident memory by the end of the phase.
    pub server_peak_kib: u64,
}

/// A flood: started on the server's addresses, stopped by the flag.
type Flood =
    fn(&ServerProcess, Arc<AtomicBool>, Arc<AtomicU64>) -> Vec<tokio::task::JoinHandle<()>>;

fn batches(
    server: &ServerProcess,
    stop: Arc<AtomicBool>,
    answered: Arc<AtomicU64>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let Some(authzen) = server.authzen_addr else {
        return Vec::new();
    };
    let body = Arc::new(heavy_batch());
    (0..4u8)
        .map(|caller| {
            let (body, stop, answered) = (body.clone(), stop.clone(), answered.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    if post_from(2 + caller, authzen, "/access/v1/evaluations", &body).await == 200
                    {
                        answered.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect()
}

fn reverse_questions(
    server: &ServerProcess,
    stop: Arc<AtomicBool>,
    answered: Arc<AtomicU64>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..4)
        .map(|_| {
            let (stop, answered, url) = (stop.clone(), answered.clone(), server.url());
            tokio::spawn(async move {
                let mut client = DecisionServiceClient::new(channel(&url).await);
                while !stop.load(Ordering::Relaxed) {
                    let mut question = purposegate_tests::check_request("", "cat-1");
                    question.purpose.clear();
                    if client.permitted_purposes(question).await.is_ok() {
                        answered.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect()
}

fn slow_bodies(
    server: &ServerProcess,
    stop: Arc<AtomicBool>,
    _answered: Arc<AtomicU64>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let Some(authzen) = server.authzen_addr else {
        return Vec::new();
    };
    // Four addresses, ten connections each, declaring 1 MiB and sending a
    // byte every 200 ms.
    let mut out = Vec::new();
    for caller in 0..4u8 {
        for _ in 0..10 {
            let stop = stop.clone();
            out.push(tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    slow_body(10 + caller, authzen, &stop).await;
                }
            }));
        }
    }
    out
}

fn explorer_pages(
    server: &ServerProcess,
    stop: Arc<AtomicBool>,
    answered: Arc<AtomicU64>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let Some(admin) = server.admin_addr else {
        return Vec::new();
    };
    (0..4)
        .map(|caller| {
            let (stop, answered) = (stop.clone(), answered.clone());
            tokio::task::spawn_blocking(move || {
                let mut n = caller;
                while !stop.load(Ordering::Relaxed) {
                    let path = if n % 2 == 0 { "/" } else { "/api/policy" };
                    n += 1;
                    if purposegate_tests::http_get(admin, path).0 == 200 {
                        answered.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect()
}

async fn slow_body(from: u8, authzen: SocketAddr, stop: &AtomicBool) {
    let mut stream = connect_from(from, authzen).await;
    let head = "POST /access/v1/evaluations HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 1048576\r\n\r\n";
    if stream.write_all(head.as_bytes()).await.is_err() {
        return;
    }
    while !stop.load(Ordering::Relaxed) {
        if stream.write_all(b" ").await.is_err() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A real AuthZEN evaluation every 200 ms until `stop`: the slowest, and
/// whether every one was answered.
async fn real_caller(authzen: String, stop: Arc<AtomicBool>) -> (Duration, bool) {
    let client = AuthZenClient::new(&authzen);
    let (mut slowest, mut all) = (Duration::ZERO, true);
    while !stop.load(Ordering::Relaxed) {
        let started = Instant::now();
        let (status, _) = client
            .post(
                "/access/v1/evaluation",
                &json!({"subject": {"type": "user", "id": "crm"}, "action": {"name": "provide"},
                        "resource": {"type": "customer-data", "id": "c-1"}}),
            )
            .await;
        slowest = slowest.max(started.elapsed());
        all &= status == 200;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    (slowest, all)
}

async fn phase(
    server: &ServerProcess,
    asked: &pb::CheckRequest,
    name: &str,
    flood: Option<Flood>,
) -> Phase {
    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicU64::new(0));
    let floods = flood.map_or_else(Vec::new, |f| f(server, stop.clone(), answered.clone()));
    let real = server
        .authzen_addr
        .map(|_| tokio::spawn(real_caller(server.authzen_url(), stop.clone())));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let took = checks_asking(&server.url(), FLOOD, asked.clone()).await;
    stop.store(true, Ordering::Relaxed);
    for f in floods {
        f.abort();
    }
    let (slowest, all) = match real {
        Some(real) => real.await.unwrap_or((Duration::MAX, false)),
        None => (Duration::ZERO, true),
    };
    let at = |q: f64| {
        let i = ((took.len() as f64 * q) as usize).min(took.len().saturating_sub(1));
        took.get(i).map_or(0.0, |d| d.as_nanos() as f64 / 1000.0)
    };
    let out = Phase {
        flood: name.to_string(),
        checks: took.len(),
        p50_us: at(0.5),
        p99_us: at(0.99),
        max_us: at(1.0),
        flood_answered: answered.load(Ordering::Relaxed),
        real_authzen_max_ms: slowest.as_secs_f64() * 1000.0,
        real_authzen_all_answered: all,
        server_peak_kib: server.peak_resident_kib(),
    };
    println!(
        "{:>58}: Check p50 {:>8.1} us, p99 {:>9.1} us, max {:>9.1} us ({} calls); flood answered {}; real AuthZEN max {:.1} ms; peak {} KiB",
        out.flood,
        out.p50_us,
        out.p99_us,
        out.max_us,
        out.checks,
        out.flood_answered,
        out.real_authzen_max_ms,
        out.server_peak_kib
    );
    out
}

pub async fn run() -> Result<Fairness, String> {
    let mut out = Fairness::default();
    let server = ServerProcess::start(&["--decision-log", "off"]);
    let asked = purposegate_tests::check_request("provide", "customer-data");
    out.phases.push(phase(&server, &asked, "quiet", None).await);
    out.phases.push(
        phase(
            &server,
            &asked,
            "4 callers of 1,000-item AuthZEN batches (60 KB of shared defaults)",
            Some(batches),
        )
        .await,
    );
    out.phases.push(
        phase(
            &server,
            &asked,
            "40 slow AuthZEN bodies from 4 addresses (1 MiB declared, a byte / 200 ms)",
            Some(slow_bodies),
        )
        .await,
    );
    drop(server);
    // The reverse question and the explorer where they cost most:
    // policies of 10,000 and 100,000 purposes, `Check` asking one of
    // their permitted pairs.
    let dir = TempDir::new("bench-fairness");
    let asked = purposegate_tests::check_request("area-00049.task-6", "cat-1");
    for purposes in [10_000, 100_000] {
        let policy = dir.write("organisation.yaml", &organisation_policy(purposes));
        let wide = ServerProcess::start(&["--decision-log", "off", "--policy", &policy]);
        let n = if purposes == 10_000 {
            "10,000"
        } else {
            "100,000"
        };
        out.phases
            .push(phase(&wide, &asked, &format!("quiet, {n} purposes"), None).await);
        out.phases.push(
            phase(
                &wide,
                &asked,
                &format!("4 callers of PermittedPurposes on {n} purposes"),
                Some(reverse_questions),
            )
            .await,
        );
        if purposes == 100_000 {
            out.phases.push(
                phase(
                    &wide,
                    &asked,
                    "4 callers of the explorer's page and /api/policy (12 and 14 MB) on 100,000 purposes",
                    Some(explorer_pages),
                )
                .await,
            );
        }
    }
    Ok(out)
}
