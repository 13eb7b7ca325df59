//! The choices store against hostile writers, over the real server with
//! its SQLite store: concurrent writers to one data subject, a long
//! history, ids and evidence past their limits. Whatever comes, the
//! current state is exactly what the history says, before and after a
//! restart, and the operators' CLI reads the same.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test helpers: a failed setup must fail the test"
)]

use std::collections::BTreeMap;

use pb::choices_service_client::ChoicesServiceClient;
use purposegate_proto::v1 as pb;
use purposegate_tests::{ServerProcess, TempDir, channel, server_cli};
use tokio_stream::StreamExt;
use tonic::Code;

const POLICY: &str = "version: 1
name: choices
purposes:
  marketing: Marketing
  marketing.email: Email
  marketing.post: Post
  analytics: Analytics
dataCategories:
  customer-data: Customer data
rules:
  - id: uses
    effect: permit
    purposes: [marketing, analytics]
    dataCategories: [customer-data]
choices:
  - purposes: [marketing]
    by: data-subject
    basis: consent
  - purposes: [analytics]
    by: data-subject
    basis: legitimate-interest
";

const PURPOSES: [&str; 4] = [
    "marketing",
    "marketing.email",
    "marketing.post",
    "analytics",
];
const STATES: [pb::ChoiceState; 3] = [
    pb::ChoiceState::Granted,
    pb::ChoiceState::Withdrawn,
    pb::ChoiceState::Objected,
];

fn start(dir: &TempDir) -> ServerProcess {
    let policy = dir.write("choices.yaml", POLICY);
    let db = dir.path().join("choices.db").display().to_string();
    ServerProcess::start(&[
        "--policy",
        policy.as_str(),
        "--decision-log",
        "off",
        "--choices-writers",
        "*",
        "--choices-db",
        db.as_str(),
    ])
}

/// The current state the history makes: per purpose, the latest event.
async fn replayed(
    client: &mut ChoicesServiceClient<tonic::transport::Channel>,
    subject: &str,
) -> (BTreeMap<String, (i32, u64)>, usize) {
    let mut history = client
        .choice_history(pb::ChoiceHistoryRequest {
            tenant: "contoso".into(),
            data_subject: subject.into(),
        })
        .await
        .unwrap()
        .into_inner();
    let mut state = BTreeMap::new();
    let mut count = 0;
    let mut last = 0;
    while let Some(event) = history.next().await {
        let event = event.unwrap();
        assert!(event.revision > last, "oldest first, no revision twice");
        last = event.revision;
        count += 1;
        state.insert(event.purpose, (event.state, event.revision));
    }
    (state, count)
}

async fn current(
    client: &mut ChoicesServiceClient<tonic::transport::Channel>,
    subject: &str,
) -> BTreeMap<String, (i32, u64)> {
    client
        .get_choices(pb::GetChoicesRequest {
            tenant: "contoso".into(),
            data_subject: subject.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .choices
        .into_iter()
        .map(|c| (c.purpose, (c.state, c.revision)))
        .collect()
}

#[tokio::test]
async fn concurrent_writers_to_one_subject_leave_the_history_and_the_state_agreeing() {
    let dir = TempDir::new("choices-hostile");
    let server = start(&dir);
    let url = server.url();
    // Eight writers, 150 events each, all on one data subject.
    let mut writers = Vec::new();
    for w in 0..8usize {
        let url = url.clone();
        writers.push(tokio::spawn(async move {
            let mut client = ChoicesServiceClient::new(channel(&url).await);
            for i in 0..150usize {
                let purpose = PURPOSES[(w + i) % PURPOSES.len()];
                let state = STATES[(w * 7 + i) % STATES.len()];
                client
                    .record_choice(pb::RecordChoiceRequest {
                        tenant: "contoso".into(),
                        data_subject: "u-42".into(),
                        purpose: purpose.into(),
                        state: state.into(),
                        basis: "consent".into(),
                        evidence: [("writer".to_string(), w.to_string())].into(),
                        ..Default::default()
                    })
                    .await
                    .unwrap();
            }
        }));
    }
    for w in writers {
        w.await.unwrap();
    }
    let mut client = ChoicesServiceClient::new(channel(&url).await);
    let (from_history, events) = replayed(&mut client, "u-42").await;
    assert_eq!(events, 1200);
    assert_eq!(current(&mut client, "u-42").await, from_history);
    assert_eq!(from_history.len(), PURPOSES.len());

    // Hostile input: refused, naming what was wrong, nothing stored.
    let long = "x".repeat(4096);
    let cases: [(pb::RecordChoiceRequest, &str); 5] = [
        (
            pb::RecordChoiceRequest {
                tenant: long.clone(),
                purpose: "marketing".into(),
                state: pb::ChoiceState::Granted.into(),
                ..Default::default()
            },
            "`tenant` is 4096 bytes long",
        ),
        (
            pb::RecordChoiceRequest {
                tenant: "contoso".into(),
                data_subject: long.clone(),
                purpose: "marketing".into(),
                state: pb::ChoiceState::Granted.into(),
                ..Default::default()
            },
            "`data_subject` is 4096 bytes long",
        ),
        (
            pb::RecordChoiceRequest {
                tenant: "contoso".into(),
                data_subject: "u-42".into(),
                purpose: "marketting".into(),
                state: pb::ChoiceState::Granted.into(),
                ..Default::default()
            },
            "unknown purpose `marketting`",
        ),
        (
            pb::RecordChoiceRequest {
                tenant: "contoso".into(),
                data_subject: "u-42".into(),
                purpose: "marketing".into(),
                state: pb::ChoiceState::Granted.into(),
                expires_at: Some(prost_types::Timestamp {
                    seconds: 1_000_000_000,
                    nanos: 0,
                }),
                ..Default::default()
            },
            "is not in the future",
        ),
        (
            pb::RecordChoiceRequest {
                tenant: "contoso".into(),
                data_subject: "u-42".into(),
                purpose: "marketing".into(),
                state: pb::ChoiceState::Granted.into(),
                evidence: (0..17)
                    .map(|i| (format!("k{i}"), "v".to_string()))
                    .collect(),
                ..Default::default()
            },
            "`evidence` holds 17 entries",
        ),
    ];
    for (request, says) in cases {
        let refused = client.record_choice(request).await.unwrap_err();
        assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
        assert!(refused.message().contains(says), "{}", refused.message());
    }
    assert_eq!(replayed(&mut client, "u-42").await.1, 1200);

    // A restart keeps it all, and the CLI reads what gRPC reads.
    drop(client);
    drop(server);
    let server = start(&dir);
    let mut client = ChoicesServiceClient::new(channel(&server.url()).await);
    let (after, events) = replayed(&mut client, "u-42").await;
    assert_eq!((events, &after), (1200, &from_history));
    let url = server.url();
    let shown = server_cli(
        &[
            "choices",
            "show",
            "--server",
            &url,
            "--tenant",
            "contoso",
            "--data-subject",
            "u-42",
        ],
        None,
    );
    assert_eq!(shown.code, Some(0), "{shown:?}");
    let shown: serde_json::Value = serde_json::from_str(&shown.stdout).unwrap();
    assert_eq!(shown["choices"].as_array().unwrap().len(), PURPOSES.len());
    assert_eq!(shown["revision"], "1200");
    let history = server_cli(
        &[
            "choices",
            "history",
            "--server",
            &url,
            "--tenant",
            "contoso",
            "--data-subject",
            "u-42",
        ],
        None,
    );
    assert_eq!(history.code, Some(0));
    assert_eq!(history.stdout.lines().count(), 1200);
}

#[tokio::test]
async fn the_cli_records_withdraws_and_is_refused_like_grpc() {
    let dir = TempDir::new("choices-cli");
    let policy = dir.write("choices.yaml", POLICY);
    let server = purposegate_tests::choices_server(&policy, &[]);
    let url = server.url();
    let record = |state: &str, extra: &[&str]| {
        let mut args = vec![
            "choices",
            "record",
            "--server",
            &url,
            "--tenant",
            "contoso",
            "--data-subject",
            "u-42",
            "--purpose",
            "marketing",
            "--state",
            state,
            "--basis",
            "consent",
        ];
        args.extend_from_slice(extra);
        server_cli(&args, None)
    };
    let granted = record(
        "granted",
        &["--evidence", "notice=v3", "--expires-in", "365d"],
    );
    assert_eq!(granted.code, Some(0), "{granted:?}");
    let granted: serde_json::Value = serde_json::from_str(&granted.stdout).unwrap();
    assert_eq!(granted["state"], "CHOICE_STATE_GRANTED");
    assert_eq!(granted["evidence"]["notice"], "v3");
    assert_eq!(granted["recordedBy"], "-");
    assert!(granted["expiresAt"].as_str().unwrap().ends_with('Z'));
    let mut checks = pb::decision_service_client::DecisionServiceClient::new(channel(&url).await);
    let mut ask = purposegate_tests::check_request("marketing", "customer-data");
    let resource = ask.resource.as_mut().unwrap();
    resource.owner_tenant = "contoso".into();
    resource.data_subject = "u-42".into();
    let decided = checks.check(ask.clone()).await.unwrap().into_inner();
    assert_eq!(decided.decision(), pb::Decision::Permit);
    let withdrawn = record("withdrawn", &[]);
    assert_eq!(withdrawn.code, Some(0), "{withdrawn:?}");
    let decided = checks.check(ask).await.unwrap().into_inner();
    assert_eq!(decided.decision(), pb::Decision::Deny, "{}", decided.reason);
    assert!(decided.reason.contains("withdrawn"), "{}", decided.reason);

    // Refused by the server: exit 1, the server's words on stderr.
    let unknown = server_cli(
        &[
            "choices",
            "record",
            "--server",
            &url,
            "--tenant",
            "contoso",
            "--purpose",
            "nope",
            "--state",
            "granted",
        ],
        None,
    );
    assert_eq!(unknown.code, Some(1), "{unknown:?}");
    assert!(
        unknown.stderr.contains("unknown purpose `nope`"),
        "{}",
        unknown.stderr
    );
    // Bad flags: exit 2 before anything is sent.
    for bad in [
        ["--state", "maybe"],
        ["--expires-at", "2027-02-30T00:00:00Z"],
        ["--expires-in", "90"],
    ] {
        let mut args = vec![
            "choices",
            "record",
            "--server",
            url.as_str(),
            "--tenant",
            "contoso",
            "--purpose",
            "marketing",
        ];
        if bad[0] != "--state" {
            args.extend(["--state", "granted"]);
        }
        args.extend(bad);
        let run = server_cli(&args, None);
        assert_eq!(run.code, Some(2), "{bad:?}: {run:?}");
    }
    // No server there: exit 2, saying so.
    let away = server_cli(
        &[
            "choices",
            "show",
            "--server",
            "http://127.0.0.1:9",
            "--tenant",
            "contoso",
            "--timeout",
            "2s",
        ],
        None,
    );
    assert_eq!(away.code, Some(2), "{away:?}");
    // A server that lets no one write: refused, exit 1.
    let closed = ServerProcess::start(&["--policy", policy.as_str(), "--decision-log", "off"]);
    let run = server_cli(
        &[
            "choices",
            "show",
            "--server",
            &closed.url(),
            "--tenant",
            "contoso",
        ],
        None,
    );
    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(run.stderr.contains("--choices-writers"), "{}", run.stderr);
}

#[tokio::test]
async fn an_import_is_all_or_nothing_and_the_server_serves_it() {
    let dir = TempDir::new("choices-import");
    let policy = dir.write("choices.yaml", POLICY);
    let db = dir.path().join("choices.db").display().to_string();
    let good = dir.write(
        "good.jsonl",
        concat!(
            r#"{"tenant":"contoso","dataSubject":"u-1","purpose":"marketing","state":"granted","basis":"consent","evidence":{"notice":"v3"}}"#,
            "\n\n",
            r#"{"tenant":"contoso","dataSubject":"u-2","purpose":"marketing","state":"CHOICE_STATE_WITHDRAWN","expiresAt":"2099-01-01T00:00:00Z"}"#,
            "\n",
        ),
    );
    let bad = dir.write(
        "bad.jsonl",
        concat!(
            r#"{"tenant":"contoso","dataSubject":"u-3","purpose":"marketing","state":"granted"}"#,
            "\n",
            r#"{"tenant":"contoso","dataSubject":"u-4","purpose":"marketting","state":"granted"}"#,
            "\n",
        ),
    );
    let import = |file: &str| {
        server_cli(
            &[
                "choices",
                "import",
                "--choices-db",
                &db,
                "--policy",
                &policy,
                file,
            ],
            None,
        )
    };
    let run = import(&good);
    assert_eq!(run.code, Some(0), "{run:?}");
    assert!(run.stdout.contains("imported 2 choices"), "{}", run.stdout);
    let run = import(&bad);
    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(
        run.stderr.contains("line 2: unknown purpose `marketting`"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("nothing was imported"),
        "{}",
        run.stderr
    );
    for hostile in [
        r#"{"tenant":"contoso","state":"granted","purpose":"marketing","recordedBy":"me"}"#,
        r#"{"tenant":"contoso","state":"granted","purpose":"marketing","expiresAt":"2000-01-01T00:00:00Z"}"#,
        "not json",
    ] {
        let file = dir.write("hostile.jsonl", hostile);
        let run = import(&file);
        assert_eq!(run.code, Some(1), "{hostile}: {run:?}");
        assert!(run.stderr.contains("line 1:"), "{}", run.stderr);
    }
    let server = purposegate_tests::choices_server(&policy, &["--choices-db", db.as_str()]);
    let mut client = ChoicesServiceClient::new(channel(&server.url()).await);
    let (state, events) = replayed(&mut client, "u-1").await;
    assert_eq!(events, 1);
    assert_eq!(state["marketing"].0, pb::ChoiceState::Granted as i32);
    assert_eq!(
        replayed(&mut client, "u-3").await.1,
        0,
        "the bad file left nothing"
    );
    let mut checks =
        pb::decision_service_client::DecisionServiceClient::new(channel(&server.url()).await);
    for (subject, want) in [("u-1", pb::Decision::Permit), ("u-2", pb::Decision::Deny)] {
        let mut ask = purposegate_tests::check_request("marketing", "customer-data");
        let resource = ask.resource.as_mut().unwrap();
        resource.owner_tenant = "contoso".into();
        resource.data_subject = subject.into();
        let answer = checks.check(ask).await.unwrap().into_inner();
        assert_eq!(answer.decision(), want, "{subject}: {}", answer.reason);
    }
}
