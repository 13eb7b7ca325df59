//! Accountability with the real binaries: `diff` on policy changes whose
//! effect is known and `replay` of a log the real server wrote
//! (`verify-log` is in decision_log.rs and decision_log_attacks.rs).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test helpers: a failed setup must fail the test"
)]

use purposegate_tests::decision_log::{known_requests, logged_run};
use purposegate_tests::diffs::{confirm_examples, diff_json, widened};
use purposegate_tests::{
    TempDir, default_policy_text, default_policy_without_prohibition, server_cli,
};
use serde_json::Value;

const POLICY: &str = "engine/policies/online-services-dpa.yaml";

#[test]
fn diff_finds_a_permit_widened_by_a_new_rule() {
    let dir = TempDir::new("diff-new-rule");
    let new = dir.write(
        "new.yaml",
        &format!(
            "{}\n  - id: billing-anything\n    effect: permit\n    dataCategories: [customer-data]\n    purposes: [lbo.billing]\n",
            default_policy_text().trim_end()
        ),
    );
    let (run, report) = diff_json(POLICY, &new);
    assert_eq!(run.code, Some(1), "{run:?}");
    // Customer data for billing, and (semantic 4) anonymised diagnostic
    // data derived from it, which customer data's own rule held back.
    assert_eq!(
        widened(&report),
        [
            "lbo.billing x customer-data",
            "lbo.billing x diagnostic-data"
        ]
    );
    assert_eq!(report["widened"], 2);
    assert_eq!(report["narrowed"], 0);
    let cell = &report["cells"][0];
    assert_eq!(cell["old"], "conditional");
    assert_eq!(cell["new"], "permit");
    assert_eq!(
        cell["newlyPermitted"]["newRuleIds"],
        serde_json::json!(["billing-anything"])
    );
    assert_eq!(report["rules"][0]["id"], "billing-anything");
    assert_eq!(report["rules"][0]["change"], "added");
    confirm_examples(&report, POLICY, &new);

    // The text and the Markdown say the same.
    let text = server_cli(&["diff", POLICY, &new], None);
    assert_eq!(text.code, Some(1));
    assert!(
        text.stdout
            .contains("  lbo.billing x customer-data: conditional -> permit, widens"),
        "{text:?}"
    );
    assert!(
        text.stdout.contains(
            "result: this change widens what data may be used for: 2 cells newly permit requests"
        ),
        "{text:?}"
    );
    let md = server_cli(&["diff", "--format", "markdown", POLICY, &new], None);
    assert_eq!(md.code, Some(1));
    assert!(
        md.stdout
            .contains("| `lbo.billing` | `customer-data` | conditional | permit | widens |"),
        "{md:?}"
    );
}

#[test]
fn diff_finds_a_prohibition_removed() {
    let dir = TempDir::new("diff-no-prohibition");
    let new = dir.write(
        "new.yaml",
        &default_policy_text().replace(
            "    purposes: [professional-services]\n    when: { sameTenant: false }\n",
            "    purposes: [professional-services]\n    when: { sameTenant: false }\n    mode: monitor\n",
        ),
    );
    let (run, report) = diff_json(POLICY, &new);
    assert_eq!(run.code, Some(1), "{run:?}");
    let mut want: Vec<String> = [
        "professional-services",
        "professional-services.technical-support",
        "professional-services.planning",
        "professional-services.consulting",
        "professional-services.guidance",
        "professional-services.data-migration",
        "professional-services.deployment",
        "professional-services.solution-development",
    ]
    .iter()
    .map(|p| format!("{p} x professional-services-data"))
    .collect();
    want.sort();
    assert_eq!(widened(&report), want);
    // The rule that refused it before is the one set to monitor.
    for cell in report["cells"].as_array().unwrap() {
        assert_eq!(
            cell["newlyPermitted"]["oldRuleIds"],
            serde_json::json!(["no-cross-customer-delivery"]),
            "{cell}"
        );
    }
    confirm_examples(&report, POLICY, &new);

    // Removing a prohibition that no permit stands behind newly permits
    // nothing: advertising becomes not applicable, still refused.
    let lifted = dir.write("lifted.yaml", &default_policy_without_prohibition());
    let (run, report) = diff_json(POLICY, &lifted);
    assert_eq!(run.code, Some(0), "{run:?}");
    assert_eq!(report["widened"], 0);
    assert!(
        report["cells"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["purpose"] == "advertising"
                && c["old"] == "deny"
                && c["new"] == "not-applicable"),
        "{report}"
    );
    assert_eq!(report["rules"][0]["change"], "removed");
}

#[test]
fn diff_finds_a_condition_loosened() {
    let dir = TempDir::new("diff-loosened");
    let new = dir.write(
        "new.yaml",
        &default_policy_text()
            .replace("minAggregationGroupSize: 50", "minAggregationGroupSize: 10"),
    );
    let (run, report) = diff_json(POLICY, &new);
    assert_eq!(run.code, Some(1), "{run:?}");
    // Every LBO on every category: diagnostic data too, where it is
    // derived from another category (anonymised is enough for diagnostic
    // data itself, not for its origin).
    let mut want = Vec::new();
    for p in [
        "lbo",
        "lbo.billing",
        "lbo.compensation",
        "lbo.internal-reporting",
        "lbo.fraud-defense",
        "lbo.core-functionality",
        "lbo.financial-reporting",
    ] {
        for c in [
            "customer-data",
            "diagnostic-data",
            "service-generated-data",
            "professional-services-data",
        ] {
            want.push(format!("{p} x {c}"));
        }
    }
    want.sort();
    assert_eq!(widened(&report), want);
    for cell in report["cells"].as_array().unwrap() {
        assert_eq!(
            (&cell["old"], &cell["new"]),
            (&"conditional".into(), &"conditional".into())
        );
        let k = cell["newlyPermitted"]["request"]["resource"]["groupSize"]
            .as_u64()
            .unwrap();
        assert!((10..50).contains(&k), "{cell}");
    }
    assert_eq!(
        report["other"],
        serde_json::json!(["setting `minAggregationGroupSize`: 50 -> 10"])
    );
    confirm_examples(&report, POLICY, &new);
}

#[test]
fn diff_of_a_rename_changes_no_flow_and_exits_0() {
    let dir = TempDir::new("diff-rename");
    let new = dir.write(
        "new.yaml",
        &default_policy_text().replace("  - id: online-services\n", "  - id: online-services-v2\n"),
    );
    let (run, report) = diff_json(POLICY, &new);
    assert_eq!(run.code, Some(0), "{run:?}");
    assert_eq!(report["cells"], serde_json::json!([]));
    assert_eq!(report["widened"], 0);
    let changes: Vec<(String, String)> = report["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["id"].as_str().unwrap().into(),
                r["change"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        changes,
        [
            ("online-services-v2".to_string(), "added".to_string()),
            ("online-services".to_string(), "removed".to_string())
        ]
    );
    let text = server_cli(&["diff", POLICY, &new], None);
    assert!(
        text.stdout.contains("result: nothing is newly permitted"),
        "{text:?}"
    );

    // The same policy: no change at all.
    let same = server_cli(&["diff", POLICY, POLICY], None);
    assert_eq!(same.code, Some(0), "{same:?}");
    assert!(same.stdout.contains("no change"), "{same:?}");
}

#[test]
fn diff_of_an_invalid_policy_exits_2_with_its_diagnostics() {
    let dir = TempDir::new("diff-invalid");
    let bad = dir.write(
        "bad.yaml",
        &default_policy_text().replace("purposes: [lbo]\n", "purposes: [lbo.biling]\n"),
    );
    let run = server_cli(&["diff", POLICY, &bad], None);
    assert_eq!(run.code, Some(2), "{run:?}");
    assert!(
        run.stderr.contains("did you mean `lbo.billing`?"),
        "{run:?}"
    );
    assert!(run.stdout.is_empty(), "{run:?}");
}

#[tokio::test]
async fn replay_counts_what_a_changed_policy_would_flip_in_a_real_log() {
    let dir = TempDir::new("replay");
    let log = dir.path().join("decisions.log");
    logged_run(&log, &[], known_requests()).await;
    let text = std::fs::read_to_string(&log).unwrap();
    let line = text.lines().find(|l| l.contains("\"cross-1\"")).unwrap();
    let line: Value = serde_json::from_str(line).unwrap();
    // The whole question is in the line.
    assert_eq!(line["tenant"], "contoso");
    assert_eq!(line["owner_tenant"], "fabrikam");
    assert_eq!(line["purpose"], "professional-services.technical-support");

    // Without the cross-customer rule the three denials become permits.
    let new = dir.write(
        "new.yaml",
        &default_policy_text().replace(
            "    purposes: [professional-services]\n    when: { sameTenant: false }\n",
            "    purposes: [professional-services]\n    when: { sameTenant: false }\n    mode: monitor\n",
        ),
    );
    let logs = log.display().to_string();
    let run = server_cli(
        &["replay", "--policy", &new, "--format", "json", &logs],
        None,
    );
    assert_eq!(run.code, Some(1), "{run:?}");
    let report: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(report["decisions"], 7);
    assert_eq!(report["flipped"], 3);
    assert_eq!(report["newly_permitted"], 3);
    assert_eq!(report["unreplayed"], 0);
    assert_eq!(report["flips"][0]["from"], "DENY");
    assert_eq!(report["flips"][0]["to"], "PERMIT");
    assert_eq!(report["flips"][0]["decisions"], 3);
    assert_eq!(
        report["flips"][0]["examples"][0]["request"]["requestId"],
        "cross-1"
    );
    assert_eq!(
        report["cells"],
        serde_json::json!([{
            "purpose": "professional-services.technical-support",
            "category": "professional-services-data",
            "from": "DENY", "to": "PERMIT", "decisions": 3
        }])
    );
    let text = server_cli(&["replay", "--policy", &new, &logs], None);
    assert!(
        text.stdout
            .contains("flipped: 3 decisions, 3 of them newly permitted"),
        "{text:?}"
    );
    assert!(
        text.stdout.contains("  DENY -> PERMIT: 3 decisions"),
        "{text:?}"
    );

    // Under the policy that wrote it, nothing flips.
    let same = server_cli(&["replay", "--policy", POLICY, &logs], None);
    assert_eq!(same.code, Some(0), "{same:?}");
    assert!(
        same.stdout.contains("replayed 7 decisions (7 lines)"),
        "{same:?}"
    );
    assert!(same.stdout.contains("no decision flips"), "{same:?}");
}

#[tokio::test]
async fn replay_says_which_redacted_fields_it_lacked() {
    let dir = TempDir::new("replay-redacted");
    // Subjects hashed (no rule reads them) and both tenants hashed (equal
    // stays equal): every line replays.
    let hashed = dir.path().join("hashed.log");
    logged_run(
        &hashed,
        &[
            "--decision-log-redact",
            "subject=hash,tenant=hash,owner_tenant=hash",
        ],
        known_requests(),
    )
    .await;
    let text = std::fs::read_to_string(&hashed).unwrap();
    assert!(
        !text.contains("contoso") && !text.contains("\"crm\""),
        "{text}"
    );
    let run = server_cli(
        &["replay", "--policy", POLICY, &hashed.display().to_string()],
        None,
    );
    assert_eq!(run.code, Some(0), "{run:?}");
    assert!(run.stdout.contains("replayed 7 decisions"), "{run:?}");

    // The owner dropped: the tenancy rule cannot be decided again.
    let dropped = dir.path().join("dropped.log");
    logged_run(
        &dropped,
        &["--decision-log-redact", "owner_tenant"],
        known_requests(),
    )
    .await;
    let run = server_cli(
        &["replay", "--policy", POLICY, &dropped.display().to_string()],
        None,
    );
    assert_eq!(run.code, Some(0), "{run:?}");
    assert!(run.stdout.contains("not replayed: 7 lines"), "{run:?}");
    assert!(
        run.stdout
            .contains("lacks `owner_tenant` (redacted by the log), which the policy reads"),
        "{run:?}"
    );
    // A field that cannot be hashed is refused at start.
    let bad = server_cli(&["--decision-log-redact", "group_size=hash"], None);
    assert_eq!(bad.code, Some(2), "{bad:?}");
    assert!(
        bad.stderr.contains("`group_size` can only be dropped"),
        "{bad:?}"
    );
}
