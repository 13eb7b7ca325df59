#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "test helpers: a failed setup must fail the test"
)]

//! How large a policy may be: flags with generous defaults
//! (`--max-policy-bytes`, `--max-policy-file-bytes`, 16 MiB each), honoured
//! by `validate`, `serve` and reload; a real organisation's policy of
//! 100,000 purposes validates and serves.

use std::time::{Duration, Instant};

use pb::decision_service_client::DecisionServiceClient;
use purposegate_proto::v1 as pb;
use purposegate_tests::{
    ServerProcess, SidecarProcess, TempDir, channel, check_request, default_policy_text,
    organisation_policy, reload_error_shown, replace_file, server_cli,
};

/// A policy of 100,000 purposes (4.1 MB, eight times the old 512 KiB cap)
/// validates and serves: loading is near-linear. The bounds are loose for
/// a debug build on a loaded machine; RELIABILITY.md has the release
/// figures.
#[tokio::test]
async fn a_policy_of_100000_purposes_validates_and_serves() {
    let dir = TempDir::new("policy-100k");
    let text = organisation_policy(100_000);
    assert!(text.len() > 2_000_000, "{} bytes", text.len());
    let path = dir.write("organisation.yaml", &text);

    let start = Instant::now();
    let run = server_cli(&["validate", &path], None);
    let took = start.elapsed();
    assert_eq!(run.code, Some(0), "{run:?}");
    assert!(
        run.stdout
            .contains("100000 purposes, 20 data categories, 200 rules"),
        "{}",
        run.stdout
    );
    assert!(took < Duration::from_secs(30), "validate took {took:?}");

    // Served: started, and answering Check by the rules.
    let start = Instant::now();
    let server = ServerProcess::start(&["--policy", &path, "--decision-log", "off"]);
    let mut client = DecisionServiceClient::new(channel(&server.url()).await);
    // rule-1 permits purpose 497 (area 49's seventh, `task-6`) on cat-1.
    let permitted = client
        .check(check_request("area-00049.task-6", "cat-1"))
        .await
        .unwrap()
        .into_inner();
    let took = start.elapsed();
    assert_eq!(permitted.decision(), pb::Decision::Permit, "{permitted:?}");
    assert_eq!(permitted.rule_ids, ["rule-1"]);
    assert!(
        took < Duration::from_secs(30),
        "first answer after {took:?}"
    );
    // An unknown purpose gets the nearest of the 100,000 declared ids.
    let unknown = client
        .check(check_request("area-00049.tsak-6", "cat-1"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(unknown.decision(), pb::Decision::NotApplicable);
    assert!(
        unknown.reason.contains("did you mean `area-00049.task-6`"),
        "{}",
        unknown.reason
    );
    let peak = server.peak_resident_kib();
    assert!(peak < 256 * 1024, "the server reached {peak} KiB");

    // The explorer's page and `/api/policy` (12 and 14 MB) are drawn
    // without a JSON tree of the policy (which took 200 MB at once).
    let admin = server.admin_addr.unwrap();
    for path in ["/api/policy", "/"] {
        let (status, body) = purposegate_tests::http_get(admin, path);
        assert_eq!(status, 200, "{path}");
        assert!(body.len() > 10_000_000, "{path}: {} bytes", body.len());
    }
    let peak = server.peak_resident_kib();
    assert!(
        peak < 160 * 1024,
        "the explorer took the server to {peak} KiB"
    );

    // A sidecar passes it on (its local `GetPolicy`): the 4 MB PolicyInfo
    // is past gRPC's default 4 MiB, which cut the sidecar's answer off.
    let sidecar = SidecarProcess::start(&server.url(), &[], &[]);
    let mut local = DecisionServiceClient::new(channel(&sidecar.local_url()).await)
        .max_decoding_message_size(64 << 20);
    let info = local
        .get_policy(pb::GetPolicyRequest {})
        .await
        .unwrap_or_else(|e| panic!("the sidecar's GetPolicy: {e}"))
        .into_inner();
    assert_eq!(info.purposes.len(), 10_000, "the roots: one area a ten");
    let permitted = local
        .check(check_request("area-00049.task-6", "cat-1"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(permitted.decision(), pb::Decision::Permit);

    // The same policy under a smaller limit is refused at start, the
    // error naming the size and the flag that raises it.
    let run = server_cli(
        &[
            "--policy",
            &path,
            "--max-policy-file-bytes",
            "1Mi",
            "--listen",
            "127.0.0.1:0",
        ],
        None,
    );
    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(
        run.stderr.contains(&format!(
            "the file is {} bytes; a policy file may be at most 1048576 bytes (1 MiB); raise --max-policy-file-bytes to load it",
            text.len()
        )),
        "{}",
        run.stderr
    );
}

/// Each limit refuses with the size and the flag to raise; raising it
/// loads the policy, lowering it refuses a smaller one.
#[test]
fn the_size_limits_are_flags_that_name_themselves() {
    let dir = TempDir::new("policy-limits");
    // 17 MiB, nearly all of it a comment: over the default 16 MiB, cheap
    // to load once let in.
    let padding = format!("# {}\n", "x".repeat(17 << 20));
    let big = dir.write("big.yaml", &format!("{}{padding}", default_policy_text()));
    let run = server_cli(&["validate", &big], None);
    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(
        run.stderr.contains("a policy file may be at most 16777216 bytes (16 MiB); raise --max-policy-file-bytes to load it"),
        "{}",
        run.stderr
    );
    let run = server_cli(&["validate", "--max-policy-file-bytes", "32Mi", &big], None);
    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(
        run.stderr.contains(
            "a policy may be at most 16777216 bytes (16 MiB); raise --max-policy-bytes to load it"
        ),
        "{}",
        run.stderr
    );
    let raised = [
        "--max-policy-file-bytes",
        "32Mi",
        "--max-policy-bytes",
        "32Mi",
    ];
    let run = server_cli(&[&["validate"], &raised[..], &[&big]].concat(), None);
    assert_eq!(run.code, Some(0), "{run:?}");
    // `test`, `check`, `diff` and `replay` read the same flags.
    let cases = purposegate_tests::repo_root().join("engine/policies/default_test.yaml");
    let cases = cases.display().to_string();
    for command in [
        vec!["test", &big, &cases],
        vec![
            "check",
            "--policy",
            &big,
            "--purpose",
            "provide",
            "--category",
            "customer-data",
        ],
        vec!["diff", &big, &big],
    ] {
        let run = server_cli(&command, None);
        assert_ne!(run.code, Some(0), "{command:?}: {run:?}");
        assert!(
            run.stderr.contains("raise --max-policy-file-bytes"),
            "{command:?}: {}",
            run.stderr
        );
        let run = server_cli(&[&command[..1], &raised[..], &command[1..]].concat(), None);
        assert!(
            !run.stderr.contains("may be at most"),
            "{command:?}: {}",
            run.stderr
        );
    }
    let log = dir.write("decisions.jsonl", "");
    let run = server_cli(&["replay", "--policy", &big, &log], None);
    assert_eq!(run.code, Some(2), "{run:?}");
    assert!(run.stderr.contains("raise --max-policy-file-bytes"));

    // Lowered: a file over it, two files over the whole, and a file with
    // more values than its size allows (one per 8 bytes of the limit, at
    // least 50,000).
    let small = format!("{}# {}\n", default_policy_text(), "x".repeat(70 << 10));
    let small = dir.write("small.yaml", &small);
    let run = server_cli(
        &["validate", "--max-policy-file-bytes", "64Ki", &small],
        None,
    );
    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(
        run.stderr.contains(
            "a policy file may be at most 65536 bytes (64 KiB); raise --max-policy-file-bytes"
        ),
        "{}",
        run.stderr
    );
    let split = TempDir::new("policy-limits-split");
    let half = format!("# {}\n", "x".repeat(40 << 10));
    split.write("a.yaml", &format!("{}{half}", default_policy_text()));
    split.write("b.yaml", &format!("version: 1\n{half}"));
    let split_dir = split.path().display().to_string();
    let run = server_cli(
        &["validate", "--max-policy-bytes", "64Ki", &split_dir],
        None,
    );
    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(
        run.stderr
            .contains("a policy may be at most 65536 bytes (64 KiB); raise --max-policy-bytes"),
        "{}",
        run.stderr
    );
    let values = format!(
        "{}x-values: [{}]\n",
        default_policy_text(),
        vec!["a"; 70_000].join(",")
    );
    let values = dir.write("values.yaml", &values);
    let run = server_cli(
        &["validate", "--max-policy-file-bytes", "512Ki", &values],
        None,
    );
    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(
        run.stderr.contains("the document holds more than 65536 values; it is refused (a policy file may hold one value for every 8 bytes of --max-policy-file-bytes; raise it to load this one)"),
        "{}",
        run.stderr
    );
}

/// A reload honours the server's limit: a change over it is refused and
/// recorded naming the flag, the last good revision keeps serving.
#[tokio::test]
async fn a_reload_over_the_limit_keeps_the_last_good_revision() {
    let dir = TempDir::new("policy-limits-reload");
    let path = dir.path().join("policy.yaml");
    std::fs::write(&path, default_policy_text()).unwrap();
    let server = ServerProcess::start(&[
        "--policy",
        &path.display().to_string(),
        "--max-policy-file-bytes",
        "64Ki",
        "--decision-log",
        "off",
    ]);
    let mut client = DecisionServiceClient::new(channel(&server.url()).await);
    let before = client
        .check(check_request("advertising", "customer-data"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(before.decision(), pb::Decision::Deny);

    let grown = format!(
        "{}# {}\n",
        default_policy_text().replace("name: ", "name: grown-"),
        "x".repeat(70 << 10)
    );
    replace_file(&path, &grown);
    let info = reload_error_shown(&client).await;
    assert!(
        info.last_reload_error.contains(
            "a policy file may be at most 65536 bytes (64 KiB); raise --max-policy-file-bytes"
        ),
        "{}",
        info.last_reload_error
    );
    assert_eq!(info.revision, before.policy_revision);
}
