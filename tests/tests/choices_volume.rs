//! A million events for one data subject (a hostile writer, or years of
//! a consent toggled back and forth): the store takes them; the server
//! starts on them and decides that subject on its current choice alone,
//! shows its current state (one choice) and streams its history a page
//! at a time, never holding it whole.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test helpers: a failed setup must fail the test"
)]

use std::io::Write;

use pb::choices_service_client::ChoicesServiceClient;
use pb::decision_service_client::DecisionServiceClient;
use purposegate_proto::v1 as pb;
use purposegate_tests::{CONSENT_POLICY, TempDir, binary, channel, marketing_check};
use tokio_stream::StreamExt;

const EVENTS: usize = 1_000_000;

#[tokio::test]
async fn a_million_events_for_one_data_subject_leave_its_decisions_and_its_state_small() {
    let dir = TempDir::new("choices-volume");
    let policy = dir.write("choices.yaml", CONSENT_POLICY);
    let db = dir.path().join("choices.db").display().to_string();
    // Granted and withdrawn in turn, ending granted; streamed to the
    // import's stdin.
    let mut import = std::process::Command::new(binary("purposegate-server"))
        .args([
            "choices",
            "import",
            "--choices-db",
            &db,
            "--policy",
            &policy,
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        let mut stdin = std::io::BufWriter::new(import.stdin.take().unwrap());
        for i in 0..EVENTS {
            let state = if i % 2 == 1 { "granted" } else { "withdrawn" };
            writeln!(
                stdin,
                r#"{{"tenant":"contoso","dataSubject":"u-42","purpose":"marketing","state":"{state}","basis":"consent"}}"#
            )
            .unwrap();
        }
    }
    let imported = import.wait_with_output().unwrap();
    assert!(imported.status.success(), "{imported:?}");
    let server = purposegate_tests::choices_server(&policy, &["--choices-db", db.as_str()]);
    let mut decisions = DecisionServiceClient::new(channel(&server.url()).await);
    let answer = decisions
        .check(marketing_check("u-42"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answer.decision(), pb::Decision::Permit, "{answer:?}");
    assert_eq!(answer.choices_revision, Some(EVENTS as u64));
    // Another subject of the tenant, with nothing recorded: no consent.
    let other = decisions
        .check(marketing_check("u-7"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(other.decision(), pb::Decision::Deny, "{other:?}");
    // The current state is one choice, the last event.
    let mut choices = ChoicesServiceClient::new(channel(&server.url()).await);
    let current = choices
        .get_choices(pb::GetChoicesRequest {
            tenant: "contoso".into(),
            data_subject: "u-42".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(current.choices.len(), 1, "{current:?}");
    assert_eq!(current.choices[0].revision, EVENTS as u64);
    // The history streams from the first event, a page at a time; a
    // reader that stops early costs the server nothing more.
    let mut history = choices
        .choice_history(pb::ChoiceHistoryRequest {
            tenant: "contoso".into(),
            data_subject: "u-42".into(),
        })
        .await
        .unwrap()
        .into_inner();
    for revision in 1..=5_000u64 {
        let record = history.next().await.unwrap().unwrap();
        assert_eq!(record.revision, revision);
    }
    drop(history);
    let resident_mib = server.resident_kib() / 1024;
    assert!(resident_mib < 256, "{resident_mib} MiB resident");
    // And a withdrawal on top of the million is the next decision.
    choices
        .record_choice(pb::RecordChoiceRequest {
            tenant: "contoso".into(),
            data_subject: "u-42".into(),
            purpose: "marketing".into(),
            state: pb::ChoiceState::Withdrawn.into(),
            basis: "consent".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let after = decisions
        .check(marketing_check("u-42"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(after.decision(), pb::Decision::Deny, "{after:?}");
    assert_eq!(after.choices_revision, Some(EVENTS as u64 + 1));
}
