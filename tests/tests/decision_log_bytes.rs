//! What an AuthZEN caller can make the decision log write, against the
//! real server: under 4 bytes of log for every byte of request body,
//! whatever the body (a batch's shared defaults, repeated or alternating
//! items, distinct values, a batch larger than a line), and the log it
//! writes still verifies and replays every decision.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test helpers: a failed setup must fail the test"
)]

use std::time::Duration;

use purposegate_tests::decision_log::{lines_of, passes};
use purposegate_tests::{AuthZenClient, ServerProcess, TempDir, server_cli};
use serde_json::{Value, json};

/// The most log bytes a request byte may cost.
const MOST: f64 = 4.0;

/// What one body shape made the log write.
struct Written {
    body_bytes: usize,
    log_bytes: usize,
    lines: Vec<Value>,
    log: std::path::PathBuf,
    _dir: TempDir,
}

impl Written {
    fn ratio(&self) -> f64 {
        self.log_bytes as f64 / self.body_bytes as f64
    }
}

/// Sends `body` to `path` `times` times, stops the server and measures
/// the log's lines after its opener.
async fn sent(tag: &str, path: &str, body: &Value, times: usize) -> Written {
    let dir = TempDir::new(tag);
    let log = dir.path().join("decisions.log");
    let file = log.display().to_string();
    let mut server = ServerProcess::start(&["--decision-log", &file, "--admin-listen", "off"]);
    let client = AuthZenClient::new(&server.authzen_url());
    let text = body.to_string();
    for _ in 0..times {
        let (status, answer) = client.post(path, body).await;
        let answer = answer.to_string();
        let head = answer.get(..400).unwrap_or(&answer);
        assert_eq!(status, 200, "{tag}: {head}");
        assert!(!answer.contains("\"error\""), "{tag}: {head}");
    }
    server.signal("TERM");
    assert_eq!(server.exited(Duration::from_secs(10)).await, Some(0));
    let lines = lines_of(&log);
    // The opener is the run's, not the requests'.
    let log_bytes = lines.iter().skip(1).map(|l| l.len() + 1).sum();
    Written {
        body_bytes: text.len() * times,
        log_bytes,
        lines: lines
            .iter()
            .skip(1)
            .map(|l| serde_json::from_str(l).unwrap())
            .collect(),
        log,
        _dir: dir,
    }
}

fn subject() -> Value {
    json!({"type": "workload", "id": "alice", "properties": {"tenant": "contoso"}})
}

/// 5,000 bytes of context (values are at most 1,024 bytes each).
fn big_context() -> Value {
    let attributes: serde_json::Map<String, Value> = (1..=5)
        .map(|i| (format!("t{i}"), Value::from("x".repeat(1000))))
        .collect();
    json!({ "attributes": attributes })
}

/// A batch of `items` under defaults with a 5,000-byte context.
fn batch(items: Vec<Value>) -> Value {
    json!({
        "subject": subject(),
        "action": {"name": "provide"},
        "resource": {"type": "customer-data", "id": "r-1"},
        "context": big_context(),
        "evaluations": items,
    })
}

/// Replays the log under the default policy: the decisions it holds.
fn replayed(written: &Written) -> Value {
    let policy = purposegate_tests::repo_root().join("engine/policies/online-services-dpa.yaml");
    let run = server_cli(
        &[
            "replay",
            "--policy",
            &policy.display().to_string(),
            "--format",
            "json",
            &written.log.display().to_string(),
        ],
        None,
    );
    assert_eq!(run.code, Some(0), "{run:?}");
    serde_json::from_str(&run.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_smallest_single_evaluations_write_under_four_bytes_a_byte() {
    for (tag, body) in [
        (
            "unknown-purpose",
            json!({"subject":{"type":"u","id":"a"},"action":{"name":"b"},"resource":{"type":"c","id":"d"}}),
        ),
        (
            "unknown-category",
            json!({"subject":{"type":"u","id":"a"},"action":{"name":"provide"},"resource":{"type":"c","id":"d"}}),
        ),
        (
            "permit",
            json!({"subject":{"type":"u","id":"a","properties":{"tenant":"t"}},"action":{"name":"provide"},"resource":{"type":"customer-data","id":"d"}}),
        ),
        (
            "prohibited",
            json!({"subject":{"type":"u","id":"a"},"action":{"name":"advertising"},"resource":{"type":"customer-data","id":"d"}}),
        ),
    ] {
        let written = sent(tag, "/access/v1/evaluation", &body, 30).await;
        assert_eq!(written.lines.len(), 30, "{tag}: a line per decision");
        assert!(
            written.ratio() < MOST,
            "{tag}: {} log bytes for {} body bytes ({:.2})",
            written.log_bytes,
            written.body_bytes,
            written.ratio()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_defaults_are_written_once_per_batch_not_per_item() {
    // The attack of the issue: a thousand empty items under 5 KB of
    // defaults wrote the defaults a thousand times.
    let written = sent(
        "shared-defaults",
        "/access/v1/evaluations",
        &batch(vec![json!({}); 1000]),
        5,
    )
    .await;
    assert!(written.ratio() < 1.0, "{:.2}", written.ratio());
    assert_eq!(written.lines.len(), 5, "one line per batch");
    let line = &written.lines[0];
    assert_eq!(line["batch"]["items"], 1000);
    assert_eq!(line["batch"]["shared"]["purpose"], "provide");
    assert_eq!(
        line["batch"]["shared"]["context_attributes"]["t1"]
            .as_str()
            .map(str::len),
        Some(1000)
    );
    passes(&[&written.log], &["--allow-open-end"]);
    let report = replayed(&written);
    assert_eq!(report["decisions"], 5000);
    assert_eq!(report["unreplayed"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_mix_of_items_makes_a_batch_write_four_bytes_a_byte() {
    let alternating: Vec<Value> = (0..1000)
        .map(|i| {
            if i % 2 == 0 {
                json!({})
            } else {
                json!({"action": {"name": "x"}})
            }
        })
        .collect();
    // Each item its own purpose, all under the big defaults: a line per
    // item would copy 5 KB a thousand times; a diff against the first
    // item would too.
    let distinct_purposes: Vec<Value> = (0..1000)
        .map(|i| json!({"action": {"name": format!("p{i}")}}))
        .collect();
    // Half the items drop the context, all differ: the defaults' context
    // is still one value.
    let context_flip: Vec<Value> = (0..1000)
        .map(|i| {
            if i % 2 == 0 {
                json!({"context": {}, "resource": {"type": "customer-data", "id": format!("{i}")}})
            } else {
                json!({"resource": {"type": "customer-data", "id": format!("{i}")}})
            }
        })
        .collect();
    let own_contexts: Vec<Value> = (0..300)
        .map(|i| json!({"context": {"attributes": {"a": format!("{i}"), "b": "1", "c": "2"}}}))
        .collect();
    // Distinct 1 KB values: more than one 64 KiB line's worth.
    let wide: Vec<Value> = (0..100)
        .map(|i| json!({"resource": {"type": "customer-data", "id": format!("{i}-{}", "w".repeat(1000))}}))
        .collect();
    for (tag, items, expect_items) in [
        ("alternating", alternating, 1000),
        ("distinct-purposes", distinct_purposes, 1000),
        ("context-flip", context_flip, 1000),
        ("own-contexts", own_contexts, 300),
        ("wide", wide, 100),
    ] {
        let written = sent(tag, "/access/v1/evaluations", &batch(items), 3).await;
        assert!(
            written.ratio() < MOST,
            "{tag}: {} log bytes for {} body bytes ({:.2})",
            written.log_bytes,
            written.body_bytes,
            written.ratio()
        );
        for line in &written.lines {
            assert!(
                line.to_string().len() <= 64 * 1024,
                "{tag}: a line over 64 KiB"
            );
            assert!(line.get("truncated").is_none(), "{tag}: {line}");
        }
        passes(&[&written.log], &["--allow-open-end"]);
        let report = replayed(&written);
        assert_eq!(report["decisions"], expect_items * 3, "{tag}: {report}");
        assert_eq!(report["unreplayed"], 0, "{tag}: {report}");
    }
}
