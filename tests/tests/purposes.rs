//! The reverse question against the real binaries: `PermittedPurposes` on
//! the server and on the sidecar's local API names exactly the purposes for
//! which `Check` answers PERMIT, over a grid of requests on the default
//! policy and on a policy with claims, obligations and monitor rules; and
//! on the same grid, AuthZEN's evaluations and action search answer as
//! `Check` and `PermittedPurposes` do.

#![allow(
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test helpers: a failed call must fail the test"
)]

use pb::decision_service_client::DecisionServiceClient;
use purposegate_proto::v1 as pb;
use purposegate_tests::{
    AuthZenClient, ServerProcess, SidecarProcess, authzen_request, channel, get_policy, repo_root,
};
use serde_json::{Value, json};
use tonic::transport::Channel;

/// The values one dimension of the grid takes.
struct Grid {
    subjects: &'static [(&'static str, &'static str, &'static [&'static str])],
    categories: &'static [&'static str],
    origins: &'static [&'static [&'static str]],
    owners: &'static [&'static str],
    deidentification: &'static [pb::Deidentification],
    group_sizes: &'static [u64],
    instructions: &'static [&'static str],
    supported: &'static [&'static [&'static str]],
}

const DEIDENTIFICATION: &[pb::Deidentification] = &[
    pb::Deidentification::Unspecified,
    pb::Deidentification::Identified,
    pb::Deidentification::Pseudonymized,
    pb::Deidentification::UnlinkedPseudonymized,
    pb::Deidentification::Anonymized,
    pb::Deidentification::Aggregated,
];

const DEFAULT_GRID: Grid = Grid {
    subjects: &[
        ("crm", "contoso", &[]),
        ("consultant", "fabrikam", &["consultant"]),
        ("analyst", "", &[]),
    ],
    categories: &[
        "customer-data",
        "diagnostic-data",
        "service-generated-data",
        "professional-services-data",
    ],
    origins: &[&[], &["customer-data"], &["professional-services-data"]],
    owners: &["contoso", "fabrikam", ""],
    deidentification: DEIDENTIFICATION,
    group_sizes: &[0, 10, 50, 1000],
    instructions: &["", "contract-7"],
    supported: &[&[]],
};

const CLAIMS_GRID: Grid = Grid {
    subjects: &[
        ("support-7", "contoso", &[]),
        ("analyst", "contoso", &["bi"]),
        ("spiffe://cluster.local/ns/bi/sa/jobs", "fabrikam", &[]),
        ("crm", "", &[]),
    ],
    categories: &["tickets", "tickets.attachments", "events"],
    origins: &[&[], &["events"]],
    owners: &["contoso", "fabrikam"],
    deidentification: DEIDENTIFICATION,
    group_sizes: &[0, 50],
    instructions: &["", "ticket-42"],
    supported: &[&[], &["log-access"], &["log-access", "ask-consent"]],
};

impl Grid {
    /// `n` requests without a purpose, spread over the grid: each
    /// dimension is picked by its own stride so that neighbouring requests
    /// differ in several facts at once.
    fn requests(&self, n: usize) -> Vec<pb::CheckRequest> {
        fn pick<T: Copy>(values: &[T], i: usize, stride: usize) -> T {
            values[(i * stride + i / values.len()) % values.len()]
        }
        (0..n)
            .map(|i| {
                let (id, tenant, roles) = pick(self.subjects, i, 1);
                pb::CheckRequest {
                    subject: Some(pb::Subject {
                        id: id.into(),
                        tenant: tenant.into(),
                        roles: roles.iter().map(|r| r.to_string()).collect(),
                    }),
                    resource: Some(pb::Resource {
                        category: pick(self.categories, i, 3).into(),
                        owner_tenant: pick(self.owners, i, 5).into(),
                        data_subject: String::new(),
                        deidentification: pick(self.deidentification, i, 7).into(),
                        group_size: pick(self.group_sizes, i, 11),
                        origin: pick(self.origins, i, 13)
                            .iter()
                            .map(|o| o.to_string())
                            .collect(),
                        // AuthZEN's `resource.id`; no rule reads it.
                        attributes: [("id".to_string(), format!("doc-{i}"))].into(),
                    }),
                    context: Some(pb::Context {
                        customer_instruction: pick(self.instructions, i, 17).into(),
                        attributes: Default::default(),
                    }),
                    supported_obligations: pick(self.supported, i, 19)
                        .iter()
                        .map(|o| o.to_string())
                        .collect(),
                    request_id: format!("grid-{i}"),
                    ..Default::default()
                }
            })
            .collect()
    }
}

/// Every purpose of the serving policy, in tree order.
async fn purposes_of(client: &mut DecisionServiceClient<Channel>) -> Vec<String> {
    fn walk(nodes: &[pb::PurposeNode], into: &mut Vec<String>) {
        for node in nodes {
            into.push(node.id.clone());
            walk(&node.children, into);
        }
    }
    let mut all = Vec::new();
    walk(&get_policy(client).await.purposes, &mut all);
    all
}

/// What `Check` answers for `req`, asked once per purpose.
async fn checks(
    client: &mut DecisionServiceClient<Channel>,
    purposes: &[String],
    req: &pb::CheckRequest,
) -> Vec<pb::CheckResponse> {
    let mut answers = Vec::new();
    for purpose in purposes {
        let mut one = req.clone();
        one.purpose = purpose.clone();
        answers.push(
            client
                .check(one)
                .await
                .unwrap_or_else(|e| panic!("Check {purpose}: {e}"))
                .into_inner(),
        );
    }
    answers
}

/// The permitted ones, in tree order, with their rules and obligations, as
/// `PermittedPurposes` must name them.
/// The purposes `Check` permitted, as the reverse question lists them:
/// those whose permit read no choices (a purpose that depends on choices
/// is never listed, whatever they say now).
fn permitted(purposes: &[String], answers: &[pb::CheckResponse]) -> Vec<pb::PermittedPurpose> {
    purposes
        .iter()
        .zip(answers)
        .filter(|(_, a)| a.decision() == pb::Decision::Permit && a.choices_revision.is_none())
        .map(|(purpose, a)| pb::PermittedPurpose {
            purpose: purpose.clone(),
            rule_ids: a.rule_ids.clone(),
            obligations: a.obligations.clone(),
        })
        .collect()
}

/// An AuthZEN Decision says what `Check` said: `decision` is true exactly
/// on PERMIT, and its context carries the same decision, rules, reason and
/// obligations.
fn same_answer(authzen: &Value, check: &pb::CheckResponse, what: &str) {
    assert_eq!(
        authzen["decision"],
        json!(check.decision() == pb::Decision::Permit),
        "{what}: {authzen} vs {check:?}"
    );
    let context = &authzen["context"];
    assert_eq!(
        context["decision"],
        json!(check.decision().as_str_name()),
        "{what}"
    );
    assert_eq!(context["rule_ids"], json!(check.rule_ids), "{what}");
    assert_eq!(context["reason"], json!(check.reason), "{what}");
    assert_eq!(
        context["policy_revision"],
        json!(check.policy_revision),
        "{what}"
    );
    let obligations: Vec<&str> = context["obligations"]
        .as_array()
        .map(|o| o.iter().filter_map(|o| o["id"].as_str()).collect())
        .unwrap_or_default();
    let want: Vec<&str> = check.obligations.iter().map(|o| o.id.as_str()).collect();
    assert_eq!(obligations, want, "{what}");
    assert_eq!(
        context["monitor"]["decision"].as_str(),
        check.monitor.as_ref().map(|m| m.decision().as_str_name()),
        "{what}"
    );
}

/// AuthZEN on `req`: one batch of evaluations (the request's facts as
/// defaults, one item per purpose), single evaluations when `singly`, and
/// the action search; each compared with `Check` and `PermittedPurposes`.
async fn agree_over_authzen(
    authzen: &AuthZenClient,
    purposes: &[String],
    req: &pb::CheckRequest,
    answers: &[pb::CheckResponse],
    singly: bool,
) {
    let defaults = authzen_request(req);
    let mut batch = defaults.clone();
    batch["evaluations"] = purposes
        .iter()
        .map(|p| json!({ "action": { "name": p } }))
        .collect();
    let (status, got) = authzen.post("/access/v1/evaluations", &batch).await;
    assert_eq!(status, 200, "{got}");
    let items = got["evaluations"].as_array().cloned().unwrap_or_default();
    assert_eq!(items.len(), purposes.len(), "{got}");
    for ((purpose, item), check) in purposes.iter().zip(&items).zip(answers) {
        same_answer(item, check, &format!("evaluations {purpose} on {req:?}"));
    }
    if singly {
        for (purpose, check) in purposes.iter().zip(answers) {
            let mut one = defaults.clone();
            one["action"] = json!({ "name": purpose });
            let (status, got) = authzen.post("/access/v1/evaluation", &one).await;
            assert_eq!(status, 200, "{got}");
            same_answer(&got, check, &format!("evaluation {purpose} on {req:?}"));
        }
    }
    let (status, found) = authzen.post("/access/v1/search/action", &defaults).await;
    assert_eq!(status, 200, "{found}");
    let names: Vec<&str> = found["results"]
        .as_array()
        .map(|r| r.iter().filter_map(|r| r["name"].as_str()).collect())
        .unwrap_or_default();
    let want: Vec<String> = permitted(purposes, answers)
        .into_iter()
        .map(|p| p.purpose)
        .collect();
    assert_eq!(names, want, "action search on {req:?}");
    assert_eq!(found["page"]["next_token"], "", "{found}");
}

/// Asks the grid's requests of the server (and of a sidecar in front of
/// it) on `policy` (the default when `None`) and compares every answer
/// with `Check`'s, purpose by purpose; returns how many purposes were
/// permitted in all, so a grid that permits nothing cannot pass unnoticed.
/// The AuthZEN API answers the same grid (see [`agree_over_authzen`]).
async fn agree_on_grid(policy: Option<&str>, grid: &Grid, n: usize) -> usize {
    let mut args = vec!["--decision-log", "off"];
    if let Some(path) = policy {
        args.extend(["--policy", path]);
    }
    let server = ServerProcess::start(&args);
    let sidecar = SidecarProcess::start(&server.url(), &[], &[]);
    let mut probe = DecisionServiceClient::new(channel(&server.url()).await);
    let purposes = purposes_of(&mut probe).await;
    let revision = get_policy(&mut probe).await.revision;
    let requests = grid.requests(n);

    // Eight clients at once, each over its share of the grid.
    let mut tasks = tokio::task::JoinSet::new();
    for share in 0..8 {
        let mine: Vec<_> = requests.iter().skip(share).step_by(8).cloned().collect();
        let server_url = server.url();
        let local_url = sidecar.local_url();
        let authzen = AuthZenClient::new(&server.authzen_url());
        let purposes = purposes.clone();
        let revision = revision.clone();
        tasks.spawn(async move {
            let mut server = DecisionServiceClient::new(channel(&server_url).await);
            let mut local = DecisionServiceClient::new(channel(&local_url).await);
            let mut count = 0;
            for (n, req) in mine.into_iter().enumerate() {
                let answers = checks(&mut server, &purposes, &req).await;
                let want = permitted(&purposes, &answers);
                count += want.len();
                agree_over_authzen(&authzen, &purposes, &req, &answers, n % 8 == 0).await;
                let mut reverse = req.clone();
                reverse.purpose.clear();
                for (who, client) in [("server", &mut server), ("sidecar", &mut local)] {
                    let got = client
                        .permitted_purposes(reverse.clone())
                        .await
                        .unwrap_or_else(|e| panic!("{who} PermittedPurposes {req:?}: {e}"))
                        .into_inner();
                    assert_eq!(got.purposes, want, "{who} on {req:?}");
                    assert_eq!(got.request_id, req.request_id, "{who}");
                    assert_eq!(got.policy_revision, revision, "{who}");
                    assert!(got.ttl_seconds > 0, "{who}: {got:?}");
                }
            }
            count
        });
    }
    let mut permitted = 0;
    while let Some(done) = tasks.join_next().await {
        permitted += done.unwrap_or_else(|e| panic!("a grid client failed: {e}"));
    }
    permitted
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permitted_purposes_and_authzen_agree_with_check_on_the_default_policy() {
    let permitted = agree_on_grid(None, &DEFAULT_GRID, 520).await;
    assert!(
        permitted > 500,
        "the grid permits too little to test: {permitted}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permitted_purposes_and_authzen_agree_with_check_on_claims_obligations_and_monitor() {
    let policy = repo_root().join("tests/fixtures/grid-policy.yaml");
    let permitted = agree_on_grid(Some(&policy.display().to_string()), &CLAIMS_GRID, 520).await;
    assert!(
        permitted > 200,
        "the grid permits too little to test: {permitted}"
    );
}

#[tokio::test]
async fn permitted_purposes_refuses_a_request_that_names_a_purpose() {
    let server = ServerProcess::start(&["--decision-log", "off"]);
    let sidecar = SidecarProcess::start(&server.url(), &[], &[]);
    for url in [server.url(), sidecar.local_url()] {
        let mut client = DecisionServiceClient::new(channel(&url).await);
        let mut req = DEFAULT_GRID.requests(1).remove(0);
        req.purpose = "provide".into();
        let refused = client
            .permitted_purposes(req)
            .await
            .expect_err("a purpose in the question is refused");
        assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{url}");
        assert!(
            refused.message().contains("purpose") && refused.message().contains("must be empty"),
            "{url}: {}",
            refused.message()
        );
    }
}
