//! A batch's lines: every item comes back, within its budget.

#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use super::*;
use crate::engine::Reason;

fn answer(decision: Decision, reason: &str) -> Evaluation {
    Evaluation {
        decision,
        rule_ids: vec![Arc::from("rule-with-a-long-name")],
        reason: Reason::words(reason),
        policy_revision: "r1".into(),
        ttl_seconds: 300,
        watched_ttl_seconds: 0,
        obligations: Vec::new(),
        monitor: None,
        request_id: String::new(),
        choices: None,
    }
}

fn item(purpose: &str, id: &str) -> DecisionRequest {
    let mut r = DecisionRequest {
        purpose: purpose.into(),
        ..Default::default()
    };
    r.subject.id = "alice".into();
    r.resource.category = "customer-data".into();
    r.resource.attributes.insert("id".into(), id.into());
    r
}

/// Adds `n` items: purposes alternating, ids distinct, each with a
/// long reason.
fn filled(log: &DecisionLog, request_bytes: usize, n: usize) -> Batch {
    let mut batch = log.batch("test.batch", request_bytes);
    for i in 0..n {
        let (purpose, decision) = if i % 2 == 0 {
            ("provide", Decision::Permit)
        } else {
            ("advertising", Decision::Deny)
        };
        let reason = format!("{purpose} is decided so, for reasons of some length {i}");
        batch.add(
            Via::face("test.batch"),
            item(purpose, &format!("r-{i}")),
            &answer(decision, &reason),
            reason,
        );
    }
    batch
}

fn lines_of(records: &[Record]) -> Vec<Map<String, Value>> {
    records
        .iter()
        .flat_map(|r| r.batch.as_ref().unwrap().lines.iter())
        .map(|l| serde_json::from_slice(l).unwrap())
        .collect()
}

#[test]
fn every_item_comes_back_from_its_lines() {
    let (log, shared) = super::super::tests::unwritten(1 << 30);
    filled(&log, 1 << 30, 3000).finish();
    let (dropped, records) = super::super::take(&shared);
    assert!(dropped.is_none());
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].count, 3000);
    assert_eq!(records[0].denied(), 1500);
    let lines = lines_of(&records);
    assert!(lines.len() > 1, "3,000 distinct ids pass one line's tables");
    let mut seen = 0;
    for line in &lines {
        assert!(serde_json::to_vec(line).unwrap().len() < super::super::bound::MAX_LINE_BYTES);
        assert_eq!(line["batch"]["first"], seen);
        let items = expand(line).unwrap();
        for item in &items {
            assert_eq!(item["subject"], "alice");
            assert_eq!(item["revision"], "r1");
            assert_eq!(item["via"], "test.batch");
            let i: u64 = item["resource_id"].as_str().unwrap()[2..].parse().unwrap();
            let even = i.is_multiple_of(2);
            assert_eq!(
                item["purpose"],
                if even { "provide" } else { "advertising" }
            );
            assert_eq!(item["decision"], if even { "PERMIT" } else { "DENY" });
            assert!(item["reason"].as_str().unwrap().ends_with(&format!(" {i}")));
            assert_eq!(item["count"], 1);
        }
        seen += items.len() as u64;
    }
    assert_eq!(seen, 3000);
}

#[test]
fn a_tight_budget_leaves_the_reasons_out_then_the_rule_ids_and_never_the_questions() {
    let (log, shared) = super::super::tests::unwritten(1 << 30);
    // Without reasons the tables are far smaller: 60 bytes an item fit.
    filled(&log, 60 * 100 / BATCH_LOG_BYTES_PER_REQUEST_BYTE, 100).finish();
    let (_, records) = super::super::take(&shared);
    let lines = lines_of(&records);
    assert_eq!(lines[0]["left_out"], serde_json::json!(["reason"]));
    let items = expand(&lines[0]).unwrap();
    assert!(items.iter().all(|i| i.get("reason").is_none()));
    assert_eq!(items.len(), 100);
    // A budget nothing fits: the smallest form, every question in it.
    filled(&log, 10, 100).finish();
    let (dropped, records) = super::super::take(&shared);
    assert!(dropped.is_none());
    let lines = lines_of(&records);
    assert_eq!(
        lines[0]["left_out"],
        serde_json::json!(["reason", "rule_ids"])
    );
    let items: Vec<_> = lines.iter().flat_map(|l| expand(l).unwrap()).collect();
    assert_eq!(items.len(), 100);
    assert!(items.iter().all(|i| i.get("purpose").is_some()));
    // Mostly permits: queued with the permits, not ahead of denials.
    assert_eq!(records[0].decision, Decision::Deny, "half of them are");
    let mut batch = log.batch("test.batch", 1 << 20);
    for i in 0..10 {
        let decision = if i == 0 {
            Decision::Deny
        } else {
            Decision::Permit
        };
        batch.add(
            Via::face("test.batch"),
            item("provide", "r"),
            &answer(decision, "why"),
            "why".into(),
        );
    }
    batch.finish();
    let (_, records) = super::super::take(&shared);
    assert_eq!(records[0].decision, Decision::Permit);
    assert_eq!(records[0].denied(), 1);
}

#[test]
fn a_one_item_batch_is_one_small_line() {
    let (log, shared) = super::super::tests::unwritten(1 << 30);
    let mut batch = log.batch("test.batch", 107);
    batch.add(
        Via::face("test.batch"),
        item("p", "d"),
        &answer(Decision::NotApplicable, "unknown purpose `p`"),
        "unknown purpose `p`".into(),
    );
    batch.finish();
    let lines = lines_of(&super::super::take(&shared).1);
    assert_eq!(lines.len(), 1);
    let text = serde_json::to_string(&lines[0]).unwrap();
    // Nothing written for what does not vary: no tables, no order.
    for absent in ["first", "of", "varying", "values", "kinds", "order"] {
        assert!(lines[0]["batch"].get(absent).is_none(), "{absent}: {text}");
    }
    assert!(
        text.len() + SEAL_BYTES < 4 * 107,
        "{} bytes: {text}",
        text.len()
    );
    let items = expand(&lines[0]).unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["count"], 1);
    assert_eq!(items[0]["purpose"], "p");
}

#[test]
fn no_line_passes_its_bound_however_the_items_are_sized() {
    let (log, shared) = super::super::tests::unwritten(1 << 30);
    let mut batch = log.batch("test.batch", 1 << 30);
    // 45 items of distinct 1 KB ids, then one of 32 KB of context: the
    // estimate stops before the big one, not after.
    for i in 0..46 {
        let mut request = item("provide", &format!("{i}-{}", "w".repeat(1000)));
        if i == 45 {
            for a in 0..32 {
                request
                    .context
                    .attributes
                    .insert(format!("a{a}"), "v".repeat(1000));
            }
        }
        batch.add(
            Via::face("test.batch"),
            request,
            &answer(Decision::Permit, "why"),
            "why".into(),
        );
    }
    batch.finish();
    let lines = lines_of(&super::super::take(&shared).1);
    let mut items = 0;
    for line in &lines {
        let len = serde_json::to_vec(line).unwrap().len();
        assert!(len <= MAX_BATCH_LINE, "{len} bytes");
        items += expand(line).unwrap().len();
    }
    assert_eq!(items, 46);
}

#[test]
fn a_line_the_writer_did_not_write_is_refused_not_expanded() {
    let (log, shared) = super::super::tests::unwritten(1 << 30);
    filled(&log, 1 << 20, 4).finish();
    let line = lines_of(&super::super::take(&shared).1).remove(0);
    let edit = |f: &dyn Fn(&mut Map<String, Value>)| {
        let mut l = line.clone();
        f(l["batch"].as_object_mut().unwrap());
        expand(&l)
    };
    assert!(
        edit(&|b| {
            b.insert("order".into(), serde_json::json!([0, 9]));
        })
        .is_err()
    );
    assert!(
        edit(&|b| {
            b.insert("items".into(), 5.into());
        })
        .is_err()
    );
    assert!(
        edit(&|b| {
            b.insert("kinds".into(), serde_json::json!([[0]]));
        })
        .is_err()
    );
    assert!(
        edit(&|b| {
            b.remove("shared");
        })
        .is_err()
    );
}
