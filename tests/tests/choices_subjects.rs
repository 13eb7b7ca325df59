//! `PermittedSubjects` over the real server: which data subjects of a
//! tenant a purpose may serve, paged, decided as `Check` decides them; for
//! writers only; bad pages refused.

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
name: subjects
purposes:
  marketing: Marketing
  analytics: Analytics
  legal: Legal obligations
dataCategories:
  customer-data: Customer data
rules:
  - id: uses
    effect: permit
    purposes: [marketing, analytics, legal]
    dataCategories: [customer-data]
choices:
  - purposes: [marketing]
    by: data-subject
    basis: consent
  - purposes: [analytics]
    by: data-subject
    basis: legitimate-interest
restriction:
  allows: [legal]
";

fn choice(subject: &str, purpose: &str, state: pb::ChoiceState) -> pb::RecordChoiceRequest {
    pb::RecordChoiceRequest {
        tenant: "contoso".into(),
        data_subject: subject.into(),
        purpose: purpose.into(),
        state: state.into(),
        basis: "consent".into(),
        ..Default::default()
    }
}

fn question(purpose: &str, page_size: u32, page_token: &str) -> pb::PermittedSubjectsRequest {
    let mut request = check_request(purpose, "customer-data");
    request.resource.as_mut().unwrap().owner_tenant = "contoso".into();
    pb::PermittedSubjectsRequest {
        request: Some(request),
        page_size,
        page_token: page_token.into(),
    }
}

/// Every page of the answer: the subjects listed, what the unlisted get,
/// and how many pages it took.
async fn all_pages(
    client: &mut DecisionServiceClient<tonic::transport::Channel>,
    purpose: &str,
) -> (Vec<String>, pb::Decision, usize) {
    let (mut listed, mut token, mut pages) = (Vec::new(), String::new(), 0);
    loop {
        let page = client
            .permitted_subjects(question(purpose, 100, &token))
            .await
            .unwrap()
            .into_inner();
        pages += 1;
        listed.extend(page.data_subjects.iter().cloned());
        assert!(page.examined <= 100);
        if page.next_page_token.is_empty() {
            return (listed, page.unlisted(), pages);
        }
        token = page.next_page_token;
        assert!(pages < 20, "the pages end");
    }
}

#[tokio::test]
async fn the_permitted_subjects_are_those_check_permits_page_by_page() {
    permitted_subjects(false).await;
}

#[tokio::test]
async fn the_sqlite_store_lists_the_same_subjects() {
    permitted_subjects(true).await;
}

async fn permitted_subjects(sqlite: bool) {
    let dir = TempDir::new("choices-subjects");
    let policy = dir.write("subjects.yaml", POLICY);
    let db = dir.path().join("choices.db").display().to_string();
    let mut args = vec![
        "--policy",
        policy.as_str(),
        "--decision-log",
        "off",
        "--choices-writers",
        "*",
    ];
    if sqlite {
        args.extend(["--choices-db", db.as_str()]);
    }
    let server = ServerProcess::start(&args);
    let mut choices = ChoicesServiceClient::new(channel(&server.url()).await);
    use pb::ChoiceState::{Granted, Objected, Restricted, Withdrawn};
    let mut writes = vec![
        choice("u-1", "marketing", Granted),
        choice("u-2", "marketing", Withdrawn),
        choice("u-3", "marketing", Granted),
        choice("u-3", "marketing", Withdrawn),
        choice("u-4", "marketing", Granted),
        choice("u-4", "", Restricted),
        choice("u-5", "analytics", Objected),
    ];
    writes.extend((100..350).map(|i| choice(&format!("u-{i}"), "marketing", Granted)));
    for w in writes {
        choices.record_choice(w).await.unwrap();
    }
    let mut client = DecisionServiceClient::new(channel(&server.url()).await);
    let (marketing, unlisted, pages) = all_pages(&mut client, "marketing").await;
    let mut want: Vec<String> = std::iter::once("u-1".to_string())
        .chain((100..350).map(|i| format!("u-{i}")))
        .collect();
    want.sort();
    assert_eq!(marketing, want);
    assert_eq!(unlisted, pb::Decision::Deny, "consent is needed");
    assert_eq!(pages, 3, "255 subjects, 100 a page");
    // Each listed subject is one Check permits, and the others are not.
    for subject in ["u-1", "u-2", "u-3", "u-4", "u-200"] {
        let mut ask = check_request("marketing", "customer-data");
        let resource = ask.resource.as_mut().unwrap();
        resource.owner_tenant = "contoso".into();
        resource.data_subject = subject.into();
        let permitted =
            client.check(ask).await.unwrap().into_inner().decision() == pb::Decision::Permit;
        assert_eq!(
            permitted,
            marketing.contains(&subject.to_string()),
            "{subject}"
        );
    }
    // Opt-out: everyone not objecting (nor restricted), and the unlisted.
    let (analytics, unlisted, _) = all_pages(&mut client, "analytics").await;
    assert_eq!(unlisted, pb::Decision::Permit);
    assert!(!analytics.contains(&"u-5".to_string()) && !analytics.contains(&"u-4".to_string()));
    assert_eq!(analytics.len(), 255 - 2);
    // Restricted data still serves what restriction allows.
    let (legal, _, _) = all_pages(&mut client, "legal").await;
    assert!(legal.contains(&"u-4".to_string()));

    // Refused, saying why.
    let refusals = [
        (
            pb::PermittedSubjectsRequest {
                request: None,
                ..question("marketing", 0, "")
            },
            "`request` is required",
        ),
        (
            question("marketing", 5000, ""),
            "`page_size` 5000 is over 1000",
        ),
        (question("marketing", 10, "zz"), "`page_token`"),
        (question("marketing", 10, &"ab".repeat(400)), "`page_token`"),
    ];
    for (request, says) in refusals {
        let refused = client.permitted_subjects(request).await.unwrap_err();
        assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
        assert!(refused.message().contains(says), "{}", refused.message());
    }
    let mut no_tenant = question("marketing", 10, "");
    no_tenant
        .request
        .as_mut()
        .unwrap()
        .resource
        .as_mut()
        .unwrap()
        .owner_tenant
        .clear();
    let refused = client.permitted_subjects(no_tenant).await.unwrap_err();
    assert!(
        refused.message().contains("owner_tenant"),
        "{}",
        refused.message()
    );
    // Not a writer: it lists data subjects, so refused.
    let closed = ServerProcess::start(&["--policy", policy.as_str(), "--decision-log", "off"]);
    let mut other = DecisionServiceClient::new(channel(&closed.url()).await);
    let refused = other
        .permitted_subjects(question("marketing", 10, ""))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
}
