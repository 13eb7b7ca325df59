//! The reverse question on a 10,000-purpose policy over the real server:
//! gRPC `PermittedPurposes` and AuthZEN action search answer within a
//! loose bound and agree with `Check` purpose by purpose on a sample;
//! search pages come from one answer per (question, revision), each page
//! request still logged; page tokens are keyed: a forged, tampered or
//! foreign token is refused (400) before any work, and a new revision
//! ends the tokens of the one before.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::print_stdout,
    reason = "test helpers: a failed setup must fail the test; the figures are printed"
)]

use std::time::{Duration, Instant};

use base64::Engine as _;
use pb::decision_service_client::DecisionServiceClient;
use purposegate_proto::v1 as pb;
use purposegate_tests::{AuthZenClient, ServerProcess, TempDir, channel, eventually, get_policy};
use serde_json::{Value, json};

const ROOTS: usize = 1_000;
const SEARCH: &str = "/access/v1/search/action";

/// A policy of `ROOTS` roots with nine children each (10,000 purposes),
/// in files each within the size a policy file may have: permits of every
/// root on `c0`, a prohibition of every seventh root when the subject acts
/// for another tenant. `extra` purposes go into the last file.
fn write_wide_policy(dir: &TempDir, extra: &str) {
    let mut files = Vec::new();
    let mut text = String::from("version: 1\nname: wide\npurposes:\n");
    let roots: Vec<String> = (0..ROOTS).map(|r| format!("p{r}")).collect();
    for root in &roots {
        if text.len() > 100 * 1024 {
            files.push(std::mem::replace(
                &mut text,
                String::from("version: 1\npurposes:\n"),
            ));
        }
        text.push_str(&format!("  {root}: P\n"));
        for c in 0..9 {
            text.push_str(&format!("  {root}.{c}: P\n"));
        }
    }
    text.push_str(extra);
    files.push(text);
    let mut rules = String::from("version: 1\ndataCategories:\n  c0: C\n  c1: C\nrules:\n");
    for (i, chunk) in roots.chunks(100).enumerate() {
        rules.push_str(&format!(
            "  - id: permit{i}\n    effect: permit\n    purposes: [{}]\n    dataCategories: [c0]\n",
            chunk.join(", ")
        ));
    }
    let denied: Vec<&str> = roots.iter().step_by(7).map(String::as_str).collect();
    rules.push_str(&format!(
        "  - id: foreign\n    effect: deny\n    purposes: [{}]\n    when: {{ sameTenant: false }}\n",
        denied.join(", ")
    ));
    files.push(rules);
    for (i, text) in files.iter().enumerate() {
        dir.write(&format!("wide-{i}.yaml"), text);
    }
}

fn wide_server(dir: &TempDir, extra: &[&str]) -> ServerProcess {
    write_wide_policy(dir, "");
    let path = dir.path().display().to_string();
    let mut args = vec!["--policy", path.as_str()];
    args.extend_from_slice(extra);
    ServerProcess::start(&args)
}

fn facts(tenant: &str) -> pb::CheckRequest {
    pb::CheckRequest {
        subject: Some(pb::Subject {
            id: "etl".into(),
            tenant: tenant.into(),
            roles: Vec::new(),
        }),
        resource: Some(pb::Resource {
            category: "c0".into(),
            owner_tenant: "acme".into(),
            data_subject: String::new(),
            ..pb::Resource::default()
        }),
        ..pb::CheckRequest::default()
    }
}

fn search(tenant: &str, page: Value) -> Value {
    json!({
        "subject": {"type": "workload", "id": "etl", "properties": {"tenant": tenant}},
        "action": {},
        "resource": {"type": "c0", "id": "t-1", "properties": {"owner_tenant": "acme"}},
        "page": page,
    })
}

fn names(found: &Value) -> Vec<String> {
    found["results"]
        .as_array()
        .unwrap_or_else(|| panic!("no results: {found}"))
        .iter()
        .map(|r| r["name"].as_str().unwrap().to_string())
        .collect()
}

/// Every page of a search with `limit`, following the tokens.
async fn all_pages(authzen: &AuthZenClient, tenant: &str, limit: usize) -> Vec<String> {
    let mut out = Vec::new();
    let mut page = json!({ "limit": limit });
    loop {
        let (status, found) = authzen.post(SEARCH, &search(tenant, page)).await;
        assert_eq!(status, 200, "{found}");
        out.extend(names(&found));
        let token = found["page"]["next_token"].as_str().unwrap().to_string();
        if token.is_empty() {
            return out;
        }
        page = json!({ "token": token });
    }
}

#[tokio::test]
async fn ten_thousand_purposes_answer_within_a_loose_bound_and_agree_with_check() {
    let dir = TempDir::new("reverse-wide");
    let server = wide_server(&dir, &["--decision-log", "off"]);
    let mut client = DecisionServiceClient::new(channel(&server.url()).await);
    let info = get_policy(&mut client).await;
    assert_eq!(info.purposes.len(), ROOTS, "roots");

    // gRPC: the same tenant is permitted every purpose; another tenant
    // loses every seventh root's subtree.
    for (tenant, want) in [("acme", ROOTS * 10), ("globex", ROOTS * 10 - 143 * 10)] {
        let started = Instant::now();
        let cpu = server.cpu_time();
        let calls = 5;
        let mut got = pb::PermittedPurposesResponse::default();
        for _ in 0..calls {
            got = client
                .permitted_purposes(facts(tenant))
                .await
                .unwrap()
                .into_inner();
        }
        let took = started.elapsed() / calls;
        let cpu = server.cpu_time().saturating_sub(cpu) / calls;
        println!("PermittedPurposes, 10,000 purposes ({tenant}): {took:?} a call, {cpu:?} CPU");
        assert_eq!(got.purposes.len(), want, "{tenant}");
        assert!(took < Duration::from_secs(2), "{took:?} a call");

        // Check agrees on a sample: every 37th purpose, permitted or not.
        let listed: std::collections::HashSet<String> =
            got.purposes.iter().map(|p| p.purpose.clone()).collect();
        for (i, purpose) in (0..ROOTS)
            .flat_map(|r| {
                std::iter::once(format!("p{r}")).chain((0..9).map(move |c| format!("p{r}.{c}")))
            })
            .enumerate()
            .filter(|(i, _)| i % 37 == 0)
        {
            let mut one = facts(tenant);
            one.purpose = purpose.clone();
            let answer = client.check(one).await.unwrap().into_inner();
            assert_eq!(
                answer.decision() == pb::Decision::Permit,
                listed.contains(&purpose),
                "#{i} {purpose} for {tenant}: {answer:?}"
            );
        }
    }

    // Action search, paged by 1,000: the pages make up gRPC's answer.
    let authzen = AuthZenClient::new(&server.authzen_url());
    let started = Instant::now();
    let paged = all_pages(&authzen, "globex", 1_000).await;
    println!(
        "action search, 10,000 purposes, 9 pages: {:?}",
        started.elapsed()
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    let grpc: Vec<String> = client
        .permitted_purposes(facts("globex"))
        .await
        .unwrap()
        .into_inner()
        .purposes
        .into_iter()
        .map(|p| p.purpose)
        .collect();
    assert_eq!(paged, grpc);
}

#[tokio::test]
async fn pages_of_one_question_are_consistent_and_each_request_is_logged() {
    let dir = TempDir::new("reverse-pages");
    let log = dir.path().join("decisions.log");
    let policy_dir = TempDir::new("reverse-pages-policy");
    let server = wide_server(&policy_dir, &["--decision-log", &log.display().to_string()]);
    let authzen = AuthZenClient::new(&server.authzen_url());
    let first = |page| search("acme", page);
    let (status, a) = authzen.post(SEARCH, &first(json!({"limit": 25}))).await;
    assert_eq!(status, 200, "{a}");
    let (_, b) = authzen.post(SEARCH, &first(json!({"limit": 25}))).await;
    assert_eq!(a, b, "the same first page twice");
    let token = a["page"]["next_token"].as_str().unwrap();
    assert!(!token.is_empty());
    let (status, second) = authzen.post(SEARCH, &first(json!({"token": token}))).await;
    assert_eq!(status, 200, "{second}");
    let (_, again) = authzen.post(SEARCH, &first(json!({"token": token}))).await;
    assert_eq!(second, again, "the same token twice");
    assert_eq!(names(&second)[0], "p2.4", "{second}");
    assert_eq!(second["page"]["total"], 10_000);

    // Four searches, four lines, each with the question's answer.
    let lines = eventually("four search lines", || {
        let log = log.clone();
        async move {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let lines: Vec<Value> = text
                .lines()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .filter(|v| v["via"] == "authzen.search.action")
                .collect();
            (lines.len() == 4).then_some(lines)
        }
    })
    .await
    .0;
    for line in &lines {
        // Long values are cut in the log; the answer's start is there.
        assert_eq!(line["permitted"][0], "p0", "{line}");
        assert_eq!(line["tenant"], "acme", "{line}");
    }
}

fn decode(token: &str) -> String {
    String::from_utf8(
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(token)
            .unwrap(),
    )
    .unwrap()
}

fn encode(text: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text)
}

#[tokio::test]
async fn forged_tampered_and_foreign_tokens_are_refused_before_any_work() {
    let dir = TempDir::new("reverse-tokens");
    // Every answer computed is logged: a refused token must add no line.
    let log = dir.path().join("decisions.log");
    let log_flag = log.display().to_string();
    let server = wide_server(&dir, &["--decision-log", &log_flag]);
    let authzen = AuthZenClient::new(&server.authzen_url());
    let (status, first) = authzen
        .post(SEARCH, &search("acme", json!({"limit": 10})))
        .await;
    assert_eq!(status, 200, "{first}");
    let token = first["page"]["next_token"].as_str().unwrap().to_string();
    let text = decode(&token);
    let (revision, mac) = {
        let parts: Vec<&str> = text.split(':').collect();
        assert_eq!(parts.len(), 5, "{text}");
        (parts[3].to_string(), parts[4].to_string())
    };
    let flipped: String = mac
        .chars()
        .enumerate()
        .map(|(i, c)| {
            if i == 0 {
                if c == '0' { '1' } else { '0' }
            } else {
                c
            }
        })
        .collect();
    let bad = [
        (
            "an offset moved",
            encode(&text.replacen(":10:", ":9990:", 1)),
        ),
        (
            "the MAC changed",
            encode(&format!("pg2:10:10:{revision}:{flipped}")),
        ),
        (
            "written by hand",
            encode(&format!("pg2:10:10:{revision}:{}", "0".repeat(32))),
        ),
        ("the old format", encode("pg1:10:10:0123456789abcdef")),
        ("garbled", "%%%".to_string()),
        ("long", "A".repeat(4096)),
    ];
    for (what, token) in &bad {
        let (status, answer) = authzen
            .post(SEARCH, &search("acme", json!({"token": token})))
            .await;
        assert_eq!(status, 400, "{what}: {answer}");
        assert!(
            answer
                .as_str()
                .unwrap()
                .contains("not a token this server gave out"),
            "{what}: {answer}"
        );
    }
    // A token given for another question (another subject's tenant).
    let (status, answer) = authzen
        .post(SEARCH, &search("globex", json!({"token": token})))
        .await;
    assert_eq!(status, 400, "{answer}");
    // A token another server process gave for the same question.
    let other_dir = TempDir::new("reverse-tokens-other");
    let other = wide_server(&other_dir, &["--decision-log", "off"]);
    let (status, answer) = AuthZenClient::new(&other.authzen_url())
        .post(SEARCH, &search("acme", json!({"token": token})))
        .await;
    assert_eq!(status, 400, "{answer}");
    // Refused before the question is asked: the log holds the first
    // page's line for `acme` and no other, once a later answer is in it.
    let (status, _) = authzen
        .post(SEARCH, &search("marker", json!({"limit": 10})))
        .await;
    assert_eq!(status, 200);
    let (lines, _) = eventually("the marker's line is written", || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let ready = text.contains("\"tenant\":\"marker\"");
        async move { ready.then_some(text) }
    })
    .await;
    let asked: Vec<&str> = lines
        .lines()
        .filter(|l| {
            l.contains("\"via\":\"authzen.search.action\"") && l.contains("\"tenant\":\"acme\"")
        })
        .collect();
    assert_eq!(asked.len(), 1, "{asked:#?}");
}

#[tokio::test]
async fn a_new_revision_ends_the_tokens_of_the_one_before() {
    let dir = TempDir::new("reverse-revision");
    let server = wide_server(&dir, &["--decision-log", "off"]);
    let mut client = DecisionServiceClient::new(channel(&server.url()).await);
    let before = get_policy(&mut client).await.revision;
    let authzen = AuthZenClient::new(&server.authzen_url());
    let (_, first) = authzen
        .post(SEARCH, &search("acme", json!({"limit": 10})))
        .await;
    let token = first["page"]["next_token"].as_str().unwrap().to_string();
    write_wide_policy(&dir, "  p0.new: A purpose added\n");
    purposegate_tests::eventually("the new revision", || {
        let url = server.url();
        let before = before.clone();
        async move {
            let mut client = DecisionServiceClient::new(channel(&url).await);
            (get_policy(&mut client).await.revision != before).then_some(())
        }
    })
    .await;
    let (status, answer) = authzen
        .post(SEARCH, &search("acme", json!({"token": token})))
        .await;
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer
            .as_str()
            .unwrap()
            .contains("ask again from the first page"),
        "{answer}"
    );
    let (status, again) = authzen
        .post(SEARCH, &search("acme", json!({"limit": 10})))
        .await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["page"]["total"], 10_001);
}
