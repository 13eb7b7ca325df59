//! Choices at scale: `Check` on a purpose that depends on a data subject's
//! consent (the subject's choices cached in the server) against one that
//! needs none; a decision whose subject's choices must first be read from
//! SQLite with 1,000,000 data subjects stored; the server's memory after
//! it all. Release build; the figures of BENCHMARKS.md's choices section.

use std::io::Write;
use std::time::{Duration, Instant};

use pb::decision_service_client::DecisionServiceClient;
use purposegate_proto::v1 as pb;
use purposegate_tests::{ServerProcess, TempDir, channel, server_cli};
use serde::Serialize;

/// Data subjects stored, each with a granted consent.
pub const SUBJECTS: usize = 1_000_000;
/// Checks timed for each figure.
const ROUNDS: usize = 10;
const PER_ROUND: usize = 2_000;
/// Distinct subjects asked uncached.
const UNCACHED: usize = 20_000;

const POLICY: &str = "version: 1
name: bench-choices
purposes:
  provide: Provide the service
  marketing: Marketing
dataCategories:
  customer-data: Customer data
rules:
  - id: uses
    effect: permit
    purposes: [provide, marketing]
    dataCategories: [customer-data]
choices:
  - purposes: [marketing]
    by: data-subject
    basis: consent
";

#[derive(Debug, Serialize, Default)]
pub struct ChoicesBench {
    pub subjects: usize,
    /// `choices import` of every subject's consent, one transaction.
    pub import_s: f64,
    /// `Check` on `provide` (reads no choices), p50.
    pub plain_p50_us: f64,
    /// `Check` on `marketing` for one data subject (choices cached), p50.
    pub cached_p50_us: f64,
    pub cached_vs_plain: f64,
    /// `Check` on `marketing`, each for a subject not asked before (its
    /// choices read from SQLite), p50 and p99.
    pub uncached_p50_us: f64,
    pub uncached_p99_us: f64,
    pub uncached_checks: usize,
    /// Checks timed for each of the plain and the cached figure.
    pub timed_checks: usize,
    pub server_peak_kib: u64,
    pub database_mib: f64,
}

fn ask(purpose: &str, subject: &str) -> pb::CheckRequest {
    pb::CheckRequest {
        purpose: purpose.into(),
        resource: Some(pb::Resource {
            category: "customer-data".into(),
            owner_tenant: "contoso".into(),
            data_subject: subject.into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn percentile(sorted: &[Duration], q: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted.get(i).map_or(0.0, |d| d.as_secs_f64() * 1e6)
}

/// Times `n` checks of `request`, one after another.
async fn timed(
    client: &mut DecisionServiceClient<tonic::transport::Channel>,
    n: usize,
    mut request: impl FnMut(usize) -> pb::CheckRequest,
    want: pb::Decision,
) -> Result<Vec<Duration>, String> {
    let mut took = Vec::with_capacity(n);
    for i in 0..n {
        let req = request(i);
        let start = Instant::now();
        let answer = client
            .check(req)
            .await
            .map_err(|e| format!("check: {e}"))?
            .into_inner();
        took.push(start.elapsed());
        if answer.decision() != want {
            return Err(format!(
                "check {i}: {:?}: {}",
                answer.decision(),
                answer.reason
            ));
        }
    }
    Ok(took)
}

pub async fn run() -> Result<ChoicesBench, String> {
    let dir = TempDir::new("bench-choices");
    let policy = dir.write("policy.yaml", POLICY);
    let lines = dir.path().join("consents.jsonl");
    let db = dir.path().join("choices.db");
    {
        let file = std::fs::File::create(&lines).map_err(|e| e.to_string())?;
        let mut out = std::io::BufWriter::new(file);
        for i in 0..SUBJECTS {
            writeln!(
                out,
                r#"{{"tenant":"contoso","dataSubject":"u-{i}","purpose":"marketing","state":"granted","basis":"consent","evidence":{{"notice":"v3"}}}}"#
            )
            .map_err(|e| e.to_string())?;
        }
        out.flush().map_err(|e| e.to_string())?;
    }
    let (lines, db) = (lines.display().to_string(), db.display().to_string());
    let start = Instant::now();
    let import = server_cli(
        &[
            "choices",
            "import",
            "--choices-db",
            &db,
            "--policy",
            &policy,
            &lines,
        ],
        None,
    );
    let import_s = start.elapsed().as_secs_f64();
    if import.code != Some(0) {
        return Err(format!("choices import: {import:?}"));
    }
    println!(
        "imported {SUBJECTS} consents in {import_s:.1} s: {}",
        import.stdout.trim()
    );
    let database_mib = std::fs::metadata(&db).map_or(0.0, |m| m.len() as f64 / (1 << 20) as f64);
    let server = ServerProcess::start(&[
        "--policy",
        &policy,
        "--decision-log",
        "off",
        "--choices-db",
        &db,
    ]);
    let mut client = DecisionServiceClient::new(channel(&server.url()).await);
    // Warm: the connection, and u-1's choices into the server's cache.
    timed(
        &mut client,
        500,
        |_| ask("provide", ""),
        pb::Decision::Permit,
    )
    .await?;
    timed(
        &mut client,
        500,
        |_| ask("marketing", "u-1"),
        pb::Decision::Permit,
    )
    .await?;
    // Interleaved rounds, so both see the same machine.
    let (mut plain, mut cached) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        plain.extend(
            timed(
                &mut client,
                PER_ROUND,
                |_| ask("provide", ""),
                pb::Decision::Permit,
            )
            .await?,
        );
        cached.extend(
            timed(
                &mut client,
                PER_ROUND,
                |_| ask("marketing", "u-1"),
                pb::Decision::Permit,
            )
            .await?,
        );
    }
    // Subjects spread over the million, each asked once.
    let stride = SUBJECTS / UNCACHED;
    let mut uncached = timed(
        &mut client,
        UNCACHED,
        |i| ask("marketing", &format!("u-{}", (i * stride + 7) % SUBJECTS)),
        pb::Decision::Permit,
    )
    .await?;
    plain.sort();
    cached.sort();
    uncached.sort();
    let plain_p50_us = percentile(&plain, 0.5);
    let cached_p50_us = percentile(&cached, 0.5);
    let bench = ChoicesBench {
        subjects: SUBJECTS,
        import_s,
        plain_p50_us,
        cached_p50_us,
        cached_vs_plain: cached_p50_us / plain_p50_us.max(f64::MIN_POSITIVE),
        uncached_p50_us: percentile(&uncached, 0.5),
        uncached_p99_us: percentile(&uncached, 0.99),
        uncached_checks: uncached.len(),
        timed_checks: plain.len(),
        server_peak_kib: server.peak_resident_kib(),
        database_mib,
    };
    println!(
        "choices: plain p50 {:.0} us, cached p50 {:.0} us ({:.3}x), uncached p50 {:.0} us p99 {:.0} us, server peak {} MiB, database {:.0} MiB",
        bench.plain_p50_us,
        bench.cached_p50_us,
        bench.cached_vs_plain,
        bench.uncached_p50_us,
        bench.uncached_p99_us,
        bench.server_peak_kib / 1024,
        bench.database_mib
    );
    Ok(bench)
}
