//! Prometheus metrics of the real server, read over HTTP as Prometheus
//! would.

#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "test helpers: a failed setup must fail the test"
)]

use std::time::Duration;

use pb::decision_service_client::DecisionServiceClient;
use purposegate_proto::v1 as pb;
use purposegate_tests::{ServerProcess, channel, check_request, eventually, http_get, metric};

fn check(purpose: &str) -> pb::CheckRequest {
    check_request(purpose, "customer-data")
}

#[tokio::test]
async fn decisions_latency_batches_and_the_serving_revision_are_exported() {
    let server = ServerProcess::start(&["--decision-log", "off"]);
    let mut client = DecisionServiceClient::new(channel(&server.url()).await);
    let permit = client.check(check("provide")).await.unwrap().into_inner();
    client.check(check("advertising")).await.unwrap();
    client
        .check_batch(pb::CheckBatchRequest {
            requests: vec![check("provide"), check("improve"), check("astrology")],
        })
        .await
        .unwrap();

    let text = server.metrics();
    let value =
        |series: &str| metric(&text, series).unwrap_or_else(|| panic!("no `{series}` in:\n{text}"));
    assert_eq!(
        value(r#"purposegate_decisions_total{decision="PERMIT"}"#),
        3.0
    );
    assert_eq!(
        value(r#"purposegate_decisions_total{decision="DENY"}"#),
        1.0
    );
    assert_eq!(
        value(r#"purposegate_decisions_total{decision="NOT_APPLICABLE"}"#),
        1.0
    );
    assert_eq!(
        value(r#"purposegate_decisions_total{decision="INDETERMINATE"}"#),
        0.0
    );
    assert_eq!(value("purposegate_check_duration_seconds_count"), 3.0);
    assert!(value("purposegate_check_duration_seconds_sum") > 0.0);
    assert_eq!(value("purposegate_check_batch_size_count"), 1.0);
    assert_eq!(value("purposegate_check_batch_size_sum"), 3.0);
    assert_eq!(
        value(r#"purposegate_policy_reloads_total{result="success"}"#),
        0.0
    );
    assert_eq!(
        value(r#"purposegate_policy_reloads_total{result="failure"}"#),
        0.0
    );
    assert_eq!(value("purposegate_decision_log_dropped_total"), 0.0);
    let info = format!(
        r#"purposegate_policy_info{{name="online-services-dpa",revision="{}"}}"#,
        permit.policy_revision
    );
    assert_eq!(value(&info), 1.0);
    assert!(
        text.trim_end().ends_with("# EOF"),
        "OpenMetrics text ends with # EOF"
    );

    let (status, _) = http_get(server.metrics_addr, "/nothing-here");
    assert_eq!(status, 404);
}

/// A decision log that cannot keep up drops lines and counts them; no check
/// waits for it.
#[cfg(unix)]
#[tokio::test]
async fn a_full_decision_log_keeps_denials_and_says_what_it_dropped() {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;

    let dir = purposegate_tests::TempDir::new("full-log");
    let fifo = dir.path().join("decisions.fifo");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    // A reader that does not read yet: the pipe fills, then the writer
    // blocks.
    const O_NONBLOCK: i32 = 0o4000;
    let mut reader = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(O_NONBLOCK)
        .open(&fifo)
        .unwrap();

    let server = ServerProcess::start(&[
        "--decision-log",
        &fifo.display().to_string(),
        "--decision-log-queue",
        "64Ki",
    ]);
    let mut client = DecisionServiceClient::new(channel(&server.url()).await);
    // A flood of distinct permitted decisions, one denial in the middle of
    // it, and more flood.
    let flood = |round: usize| pb::CheckBatchRequest {
        requests: (0..1000)
            .map(|i| {
                let mut r = check("provide");
                r.subject.as_mut().unwrap().id = format!("noise-{round}-{i}");
                r
            })
            .collect(),
    };
    for round in 0..5 {
        let answers =
            tokio::time::timeout(Duration::from_secs(10), client.check_batch(flood(round)))
                .await
                .expect("a batch is answered while the log is stuck")
                .unwrap()
                .into_inner();
        assert_eq!(answers.responses.len(), 1000);
    }
    let mut insider = check("advertising");
    insider.subject.as_mut().unwrap().id = "insider".into();
    client.check(insider).await.unwrap();
    for round in 5..10 {
        client.check_batch(flood(round)).await.unwrap();
    }
    let (dropped, _) = eventually("dropped decisions are counted", || async {
        metric(&server.metrics(), "purposegate_decision_log_dropped_total").filter(|&d| d > 0.0)
    })
    .await;
    assert!(dropped > 1000.0, "dropped {dropped}");

    // The reader catches up: the denial is there, and so is a line saying
    // how many decisions were dropped.
    let mut text = String::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut quiet = 0;
    while quiet < 20 {
        match reader.read(&mut buf) {
            Ok(n) if n > 0 => {
                text.push_str(&String::from_utf8_lossy(&buf[..n]));
                quiet = 0;
            }
            _ => {
                quiet += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    assert!(
        text.lines()
            .any(|l| l.contains("\"subject\":\"insider\"") && l.contains("\"DENY\"")),
        "the denial was not logged"
    );
    let told: u64 = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v.get("dropped").and_then(serde_json::Value::as_u64))
        .sum();
    assert_eq!(told as f64, dropped, "every drop is told in the log");
    // The drop lines are links of the chain like any other line.
    let copy = dir.write("decisions.log", &text);
    let verified = purposegate_tests::server_cli(&["verify-log", &copy], None);
    assert_eq!(verified.code, Some(0), "{verified:?}");
    let peak = server.peak_resident_kib();
    assert!(peak < 64 * 1024, "the server reached {peak} KiB");
}
