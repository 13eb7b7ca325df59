//! Choices over the real server and a real gRPC client: recorded through
//! `ChoicesService`, read back with their evidence, and enforced by the
//! next `Check`; writers only; hostile input refused with nothing stored.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test helpers: a failed setup must fail the test"
)]

use pb::choices_service_client::ChoicesServiceClient;
use pb::decision_service_client::DecisionServiceClient;
use purposegate_proto::v1 as pb;
use purposegate_tests::{ServerProcess, TempDir, channel, check_request};
use tonic::Code;

const POLICY: &str = "version: 1
name: choices
purposes:
  provide: Provide the service
  provide.personalization: Personalised experiences
  marketing: Marketing
  legal: Legal obligations
dataCategories:
  customer-data: Customer data
rules:
  - id: customer-data-uses
    effect: permit
    purposes: [provide, marketing, legal]
    dataCategories: [customer-data]
choices:
  - purposes: [provide.personalization]
    by: tenant
    default: granted
  - purposes: [marketing]
    by: data-subject
    basis: consent
restriction:
  allows: [legal]
";

fn server(dir: &TempDir, writers: Option<&str>) -> ServerProcess {
    let policy = dir.write("choices.yaml", POLICY);
    let mut args = vec!["--policy", policy.as_str(), "--decision-log", "off"];
    if let Some(w) = writers {
        args.extend(["--choices-writers", w]);
    }
    ServerProcess::start(&args)
}

fn ask(purpose: &str, tenant: &str, subject: &str) -> pb::CheckRequest {
    let mut r = check_request(purpose, "customer-data");
    let resource = r.resource.as_mut().unwrap();
    resource.owner_tenant = tenant.into();
    resource.data_subject = subject.into();
    r
}

fn choice(
    tenant: &str,
    subject: &str,
    purpose: &str,
    state: pb::ChoiceState,
) -> pb::RecordChoiceRequest {
    pb::RecordChoiceRequest {
        tenant: tenant.into(),
        data_subject: subject.into(),
        purpose: purpose.into(),
        state: state.into(),
        expires_at: None,
        basis: "consent".into(),
        evidence: [("notice".to_string(), "v3".to_string())].into(),
    }
}

async fn current(
    client: &mut ChoicesServiceClient<tonic::transport::Channel>,
    tenant: &str,
    data_subject: &str,
) -> Result<pb::GetChoicesResponse, tonic::Status> {
    let request = pb::GetChoicesRequest {
        tenant: tenant.into(),
        data_subject: data_subject.into(),
    };
    client
        .get_choices(request)
        .await
        .map(tonic::Response::into_inner)
}

/// Records a choice that must be accepted.
async fn record(
    client: &mut ChoicesServiceClient<tonic::transport::Channel>,
    request: pb::RecordChoiceRequest,
) -> pb::ChoiceRecord {
    client.record_choice(request).await.unwrap().into_inner()
}

/// The whole history of a tenant's data subject, as streamed.
async fn history_of(
    client: &mut ChoicesServiceClient<tonic::transport::Channel>,
    tenant: &str,
    data_subject: &str,
) -> Vec<pb::ChoiceRecord> {
    let request = pb::ChoiceHistoryRequest {
        tenant: tenant.into(),
        data_subject: data_subject.into(),
    };
    let mut stream = client.choice_history(request).await.unwrap().into_inner();
    let mut out = Vec::new();
    while let Some(event) = stream.message().await.unwrap() {
        out.push(event);
    }
    out
}

async fn decided(
    client: &mut DecisionServiceClient<tonic::transport::Channel>,
    req: pb::CheckRequest,
) -> (pb::Decision, String) {
    let answer = client.check(req).await.unwrap().into_inner();
    (answer.decision(), answer.reason)
}

#[tokio::test]
async fn a_withdrawal_is_enforced_by_the_next_check_and_kept_as_evidence() {
    let dir = TempDir::new("choices-api");
    let server = server(&dir, Some("*"));
    let mut checks = DecisionServiceClient::new(channel(&server.url()).await);
    let mut choices = ChoicesServiceClient::new(channel(&server.url()).await);

    let (decision, reason) = decided(&mut checks, ask("marketing", "contoso", "u-42")).await;
    assert_eq!(decision, pb::Decision::Deny);
    assert_eq!(
        reason,
        "`marketing` needs the consent of data subject `u-42` of `contoso`, and none is recorded"
    );
    let granted = record(
        &mut choices,
        choice("contoso", "u-42", "marketing", pb::ChoiceState::Granted),
    )
    .await;
    assert_eq!(granted.revision, 1);
    assert_eq!(granted.recorded_by, "-");
    assert_eq!(
        decided(&mut checks, ask("marketing", "contoso", "u-42"))
            .await
            .0,
        pb::Decision::Permit
    );
    // Another data subject is not granted by it.
    assert_eq!(
        decided(&mut checks, ask("marketing", "contoso", "u-7"))
            .await
            .0,
        pb::Decision::Deny
    );

    let withdrawn = record(
        &mut choices,
        choice("contoso", "u-42", "marketing", pb::ChoiceState::Withdrawn),
    )
    .await;
    let (decision, reason) = decided(&mut checks, ask("marketing", "contoso", "u-42")).await;
    assert_eq!(decision, pb::Decision::Deny);
    let at = purposegate_engine::rfc3339(withdrawn.recorded_at.unwrap().seconds);
    assert_eq!(
        reason,
        format!(
            "`marketing` needs the consent of data subject `u-42` of `contoso`, withdrawn {at}"
        )
    );

    let current = current(&mut choices, "contoso", "u-42").await.unwrap();
    assert_eq!(current.revision, 2);
    assert_eq!(current.choices.len(), 1);
    assert_eq!(current.choices[0].state(), pb::ChoiceState::Withdrawn);
    assert_eq!(current.choices[0].evidence["notice"], "v3");
    let states: Vec<_> = history_of(&mut choices, "contoso", "u-42")
        .await
        .iter()
        .map(|e| e.state())
        .collect();
    assert_eq!(
        states,
        [pb::ChoiceState::Granted, pb::ChoiceState::Withdrawn]
    );

    // The tenant's configuration: on by default, off once withdrawn; a
    // request naming no owner tenant cannot escape it.
    let personal = |tenant: &str| ask("provide.personalization", tenant, "");
    assert_eq!(
        decided(&mut checks, personal("contoso")).await.0,
        pb::Decision::Permit
    );
    assert_eq!(
        decided(&mut checks, personal("")).await.0,
        pb::Decision::Indeterminate
    );
    choices
        .record_choice(choice(
            "contoso",
            "",
            "provide.personalization",
            pb::ChoiceState::Withdrawn,
        ))
        .await
        .unwrap();
    let (decision, reason) = decided(&mut checks, personal("contoso")).await;
    assert_eq!(decision, pb::Decision::Deny);
    assert!(
        reason.contains("switched off by tenant `contoso`"),
        "{reason}"
    );
    assert_eq!(
        decided(&mut checks, personal("fabrikam")).await.0,
        pb::Decision::Permit
    );

    // Restriction: only what `restriction.allows` serves.
    choices
        .record_choice(choice("contoso", "u-9", "", pb::ChoiceState::Restricted))
        .await
        .unwrap();
    assert_eq!(
        decided(&mut checks, ask("provide", "contoso", "u-9"))
            .await
            .0,
        pb::Decision::Deny
    );
    assert_eq!(
        decided(&mut checks, ask("legal", "contoso", "u-9")).await.0,
        pb::Decision::Permit
    );
}

#[tokio::test]
async fn only_writers_record_and_hostile_choices_store_nothing() {
    let dir = TempDir::new("choices-writers");
    let closed = server(&dir, None);
    let mut choices = ChoicesServiceClient::new(channel(&closed.url()).await);
    let refused = choices
        .record_choice(choice(
            "contoso",
            "u-42",
            "marketing",
            pb::ChoiceState::Granted,
        ))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    assert!(
        refused.message().contains("--choices-writers"),
        "{refused:?}"
    );
    let read = current(&mut choices, "contoso", "u-42").await.unwrap_err();
    assert_eq!(read.code(), Code::PermissionDenied);
    // Nothing was stored: the consent is still missing.
    let mut checks = DecisionServiceClient::new(channel(&closed.url()).await);
    assert_eq!(
        decided(&mut checks, ask("marketing", "contoso", "u-42"))
            .await
            .0,
        pb::Decision::Deny
    );

    let open = server(&dir, Some("*"));
    let mut choices = ChoicesServiceClient::new(channel(&open.url()).await);
    let long = "t".repeat(4096);
    let cases = [
        (
            choice("contoso", "u-42", "marketting", pb::ChoiceState::Granted),
            "unknown purpose `marketting` (did you mean `marketing`?)",
        ),
        (
            choice(&long, "u-42", "marketing", pb::ChoiceState::Granted),
            "`tenant` is 4096 bytes long",
        ),
        (
            choice("contoso", "u-42", "marketing", pb::ChoiceState::Unspecified),
            "`state` is required",
        ),
        (
            choice("contoso", "u-42", "marketing", pb::ChoiceState::Restricted),
            "give no `purpose`",
        ),
        (
            pb::RecordChoiceRequest {
                expires_at: Some(prost_types::Timestamp {
                    seconds: 1_000,
                    nanos: 0,
                }),
                ..choice("contoso", "u-42", "marketing", pb::ChoiceState::Granted)
            },
            "is not in the future",
        ),
    ];
    for (request, words) in cases {
        let refused = choices.record_choice(request).await.unwrap_err();
        assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
        assert!(refused.message().contains(words), "{words}: {refused:?}");
    }
    let stored = current(&mut choices, "contoso", "u-42").await.unwrap();
    assert_eq!((stored.choices.len(), stored.revision), (0, 0));
}

#[tokio::test]
async fn a_restart_keeps_every_choice_and_its_history() {
    let dir = TempDir::new("choices-db");
    let policy = dir.write("choices.yaml", POLICY);
    let db = dir.path().join("choices.db").display().to_string();
    let args = [
        "--policy",
        policy.as_str(),
        "--decision-log",
        "off",
        "--choices-writers",
        "*",
        "--choices-db",
        db.as_str(),
    ];
    let mut first = ServerProcess::start(&args);
    let mut choices = ChoicesServiceClient::new(channel(&first.url()).await);
    for state in [pb::ChoiceState::Granted, pb::ChoiceState::Withdrawn] {
        choices
            .record_choice(choice("contoso", "u-42", "marketing", state))
            .await
            .unwrap();
    }
    first.signal("TERM");
    assert_eq!(
        first.exited(std::time::Duration::from_secs(10)).await,
        Some(0)
    );

    let second = ServerProcess::start(&args);
    let mut choices = ChoicesServiceClient::new(channel(&second.url()).await);
    let kept = current(&mut choices, "contoso", "u-42").await.unwrap();
    assert_eq!(kept.revision, 2);
    assert_eq!(kept.choices[0].state(), pb::ChoiceState::Withdrawn);
    let revisions: Vec<_> = history_of(&mut choices, "contoso", "u-42")
        .await
        .iter()
        .map(|e| e.revision)
        .collect();
    assert_eq!(revisions, [1, 2]);
    let mut checks = DecisionServiceClient::new(channel(&second.url()).await);
    let (decision, reason) = decided(&mut checks, ask("marketing", "contoso", "u-42")).await;
    assert_eq!(decision, pb::Decision::Deny, "{reason}");
    // The next write continues the revisions.
    let next = record(
        &mut choices,
        choice("contoso", "u-42", "marketing", pb::ChoiceState::Granted),
    )
    .await;
    assert_eq!(next.revision, 3);
}

#[tokio::test]
async fn a_long_history_is_streamed_whole_page_by_page() {
    let dir = TempDir::new("choices-history");
    let server = server(&dir, Some("*"));
    let mut choices = ChoicesServiceClient::new(channel(&server.url()).await);
    let states = [pb::ChoiceState::Granted, pb::ChoiceState::Withdrawn];
    for i in 0..1_100 {
        choices
            .record_choice(choice("contoso", "u-1", "marketing", states[i % 2]))
            .await
            .unwrap();
    }
    let revisions: Vec<_> = history_of(&mut choices, "contoso", "u-1")
        .await
        .iter()
        .map(|e| e.revision)
        .collect();
    assert_eq!(revisions, (1..=1_100).collect::<Vec<u64>>());
}

#[tokio::test]
async fn the_log_keeps_the_choices_read_so_replay_needs_no_store() {
    let dir = TempDir::new("choices-replay");
    let policy = dir.write("choices.yaml", POLICY);
    let log = dir.path().join("decisions.log").display().to_string();
    let mut server = ServerProcess::start(&[
        "--policy",
        policy.as_str(),
        "--decision-log",
        log.as_str(),
        "--choices-writers",
        "*",
    ]);
    let mut checks = DecisionServiceClient::new(channel(&server.url()).await);
    let mut choices = ChoicesServiceClient::new(channel(&server.url()).await);
    let granted = record(
        &mut choices,
        choice("contoso", "u-42", "marketing", pb::ChoiceState::Granted),
    )
    .await;
    let permit = checks
        .check(ask("marketing", "contoso", "u-42"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(permit.decision(), pb::Decision::Permit);
    assert_eq!(permit.choices_revision, Some(granted.revision));
    assert_eq!(permit.ttl_seconds, 1);
    record(
        &mut choices,
        choice("contoso", "u-42", "marketing", pb::ChoiceState::Withdrawn),
    )
    .await;
    assert_eq!(
        decided(&mut checks, ask("marketing", "contoso", "u-42"))
            .await
            .0,
        pb::Decision::Deny
    );
    // A decision that read no choices says so.
    let plain = checks
        .check(ask("provide", "contoso", ""))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((plain.choices_revision, plain.ttl_seconds), (None, 300));
    server.signal("TERM");
    assert_eq!(
        server.exited(std::time::Duration::from_secs(10)).await,
        Some(0)
    );

    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|l: &serde_json::Value| l["purpose"] == "marketing")
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["choices"]["subject"][0]["state"], "granted");
    assert_eq!(lines[1]["choices"]["subject"][0]["state"], "withdrawn");
    // Replayed under the same policy, without the store: nothing flips.
    let run = purposegate_tests::server_cli(
        &["replay", "--policy", &policy, "--format", "json", &log],
        None,
    );
    assert_eq!(run.code, Some(0), "{run:?}");
    let report: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(report["flipped"], 0, "{report}");
    assert_eq!(report["decisions"], 3, "{report}");
}

#[tokio::test]
async fn a_sidecar_reads_the_data_subject_and_enforces_a_withdrawal_within_a_second() {
    let dir = TempDir::new("choices-sidecar");
    let policy = dir.write("choices.yaml", POLICY);
    let routes = dir.write(
        "routes.yaml",
        "routes:\n  - http: /records/\n    methods: [GET]\n    dataCategory: customer-data\n",
    );
    let server = purposegate_tests::choices_server(&policy, &[]);
    let app = purposegate_tests::app::FrameworkApp::start();
    let upstream = app.url();
    let sidecar = purposegate_tests::SidecarProcess::start(
        &server.url(),
        &["--upstream", upstream.as_str(), "--routes", routes.as_str()],
        &[],
    );
    let get = |subject: &str| {
        let subject = format!("x-data-subject: {subject}");
        purposegate_tests::contexts::proxy_get(
            &sidecar,
            "/records/1",
            &[
                "x-purpose: marketing",
                "x-data-tenant: contoso",
                subject.as_str(),
            ],
        )
        .0
    };
    let mut choices = ChoicesServiceClient::new(channel(&server.url()).await);
    record(
        &mut choices,
        choice("contoso", "u-42", "marketing", pb::ChoiceState::Granted),
    )
    .await;
    assert_eq!(get("u-42"), 200);
    // Another data subject's call is not answered from u-42's permit.
    assert_eq!(get("u-7"), 403);
    assert_eq!(get("u-42"), 200);
    record(
        &mut choices,
        choice("contoso", "u-42", "marketing", pb::ChoiceState::Withdrawn),
    )
    .await;
    let withdrawn = std::time::Instant::now();
    let (_, took) = purposegate_tests::eventually("the withdrawal enforced", || {
        let status = get("u-42");
        async move { (status == 403).then_some(()) }
    })
    .await;
    assert!(
        took < std::time::Duration::from_millis(1500),
        "enforced {took:?} after ({:?} since the write)",
        withdrawn.elapsed()
    );
    // The app saw the data subject the sidecar decided on.
    let seen = app.seen();
    assert!(!seen.is_empty());
    assert!(
        seen.iter().all(|s| s.cgi_all("x-data-subject") == ["u-42"]),
        "{seen:?}"
    );
}
