//! `diff` is exact or says it cannot tell: the widenings a sampled search
//! of the facts missed (a permit for a combination of roles, a claim entry
//! for a second subject, a dropped obligation), each named by the real
//! binary with the request it newly permits; a pair of policies with more
//! questions than the budget exits 1 saying "cannot tell", and the
//! explorer's `/api/diff` says the same.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test helpers: a failed setup must fail the test"
)]

use purposegate_tests::diffs::{confirm_examples, diff_json, widened};
use purposegate_tests::{ServerProcess, TempDir, curl, server_cli};
use serde_json::{Value, json};

/// A policy of one purpose on one category, with `rules` and `tail`
/// (claims) as YAML.
fn policy(rules: &str, tail: &str) -> String {
    format!(
        "version: 1\nname: exact\npurposes:\n  support: Help customers\ndataCategories:\n  tickets: Support tickets\nrules:\n{rules}{tail}"
    )
}

/// The old and new policy written to a directory: their paths.
fn pair(tag: &str, old: &str, new: &str) -> (TempDir, String, String) {
    let dir = TempDir::new(tag);
    let old = dir.write("old.yaml", old);
    let new = dir.write("new.yaml", new);
    (dir, old, new)
}

/// `diff` finds the one widened cell, exits 1, its example is confirmed
/// by `check` under both policies and sets `field` to `value`; the text
/// names the request.
fn assert_widens(old: &str, new: &str, field: &str, value: &Value) {
    let (run, report) = diff_json(old, new);
    assert_eq!(run.code, Some(1), "{run:?}");
    assert_eq!(widened(&report), ["support x tickets"], "{report}");
    assert_eq!(report["exhaustive"], true, "{report}");
    let request = &report["cells"][0]["newlyPermitted"]["request"];
    assert_eq!(request.pointer(field), Some(value), "{report}");
    confirm_examples(&report, old, new);
    let text = server_cli(&["diff", old, new], None);
    assert_eq!(text.code, Some(1), "{text:?}");
    assert!(
        text.stdout
            .contains(&format!("    newly permitted: {request}")),
        "{text:?}"
    );
    assert!(
        text.stdout
            .contains("result: this change widens what data may be used for"),
        "{text:?}"
    );
}

#[test]
fn a_permit_for_a_combination_of_roles_widens() {
    // Before, an agent who is also a lead was held back; a contractor
    // always is. Each role alone and all three together are decided
    // alike by both: only agent and lead together are newly permitted.
    let deny_contractors = "  - id: no-contractors\n    effect: deny\n    purposes: [support]\n    when: { subject: { roles: [contractor] } }\n";
    let old = policy(
        &format!(
            "  - id: agents\n    effect: permit\n    purposes: [support]\n    dataCategories: [tickets]\n    when: {{ subject: {{ roles: [agent] }} }}\n    unless: {{ subject: {{ roles: [lead] }} }}\n{deny_contractors}"
        ),
        "",
    );
    let new = policy(
        &format!(
            "  - id: agents\n    effect: permit\n    purposes: [support]\n    dataCategories: [tickets]\n    when: {{ subject: {{ roles: [agent] }} }}\n{deny_contractors}"
        ),
        "",
    );
    let (_dir, old, new) = pair("diff-roles", &old, &new);
    assert_widens(&old, &new, "/subject/roles", &json!(["agent", "lead"]));
}

#[test]
fn a_claim_entry_for_a_second_subject_widens() {
    let rules = "  - id: support-on-tickets\n    effect: permit\n    purposes: [support]\n    dataCategories: [tickets]\n";
    let first = "claims:\n  - id: desk\n    subjects: [spiffe://example.org/ns/desk/sa/*]\n    purposes: [support]\n";
    let old = policy(rules, first);
    let new = policy(
        rules,
        &format!(
            "{first}  - id: partner\n    subjects: [partner-portal]\n    purposes: [support]\n"
        ),
    );
    let (_dir, old, new) = pair("diff-claims", &old, &new);
    assert_widens(&old, &new, "/subject/id", &json!("partner-portal"));
}

#[test]
fn a_dropped_obligation_widens() {
    let rule = |obligations: &str| {
        policy(
            &format!(
                "  - id: support-on-tickets\n    effect: permit\n    purposes: [support]\n    dataCategories: [tickets]\n    obligations:\n{obligations}"
            ),
            "",
        )
    };
    let log = "      - id: log-access\n";
    let notify = "      - id: notify-owner\n";
    let old = rule(&format!("{log}{notify}"));
    let new = rule(log);
    let (_dir, old, new) = pair("diff-obligations", &old, &new);
    // A caller that can log but not notify: refused before, permitted now.
    assert_widens(&old, &new, "/supportedObligations", &json!(["log-access"]));
}

/// Seventeen roles each permitted by a rule of its own: 2^17 sets of
/// roles to ask, more than a cell may.
fn too_many_roles() -> String {
    let rules: String = (0..17)
        .map(|i| {
            format!(
                "  - id: role-{i}\n    effect: permit\n    purposes: [support]\n    dataCategories: [tickets]\n    when: {{ subject: {{ roles: [role-{i}] }} }}\n"
            )
        })
        .collect();
    policy(&rules, "")
}

/// The words a report of [`too_many_roles`] against a policy permitting
/// nothing must hold.
fn assert_cannot_tell(report: &Value) {
    assert_eq!(report["widened"], 0, "{report}");
    assert_eq!(report["untried"], 1, "{report}");
    assert_eq!(report["exhaustive"], false, "{report}");
    let cell = &report["cells"][0];
    assert_eq!(
        (&cell["purpose"], &cell["category"]),
        (&json!("support"), &json!("tickets"))
    );
    let untried = &cell["untried"];
    assert_eq!(untried["combinations"], 131_072, "{report}");
    assert_eq!(untried["budget"], 65_536, "{report}");
    assert_eq!(
        untried["facts"],
        json!([{"fact": "roles", "values": 131_072}]),
        "{report}"
    );
    let words = report["cannotTell"].as_str().unwrap();
    assert!(
        words.starts_with("cannot tell whether this change widens")
            && words.contains("`support` x `tickets`")
            && words.contains("131072 combinations of facts (roles: 131072)"),
        "{words}"
    );
}

#[test]
fn more_questions_than_the_budget_cannot_tell_and_exit_1() {
    let nothing = policy(
        "  - id: nobody\n    effect: deny\n    purposes: [support]\n",
        "",
    );
    let (_dir, old, new) = pair("diff-budget", &nothing, &too_many_roles());
    let (run, report) = diff_json(&old, &new);
    assert_eq!(run.code, Some(1), "{run:?}");
    assert_cannot_tell(&report);
    let text = server_cli(&["diff", &old, &new], None);
    assert_eq!(text.code, Some(1), "{text:?}");
    assert!(
        text.stdout.contains(
            "  support x tickets: deny -> conditional, cannot tell: not tried: 131072 combinations of facts (roles: 131072), more than the 65536 this cell may ask"
        ),
        "{text:?}"
    );
    assert!(
        text.stdout
            .contains("result: cannot tell whether this change widens what data may be used for: 1 cell not tried"),
        "{text:?}"
    );
    let md = server_cli(&["diff", "--format", "markdown", &old, &new], None);
    assert_eq!(md.code, Some(1), "{md:?}");
    assert!(md.stdout.contains("**Cannot tell whether"), "{md:?}");
    assert!(
        md.stdout
            .contains("| `support` | `tickets` | deny | conditional | cannot tell: not tried"),
        "{md:?}"
    );
}

#[test]
fn the_explorer_says_the_same() {
    let dir = TempDir::new("diff-explorer");
    let serving = dir.write(
        "serving.yaml",
        &policy(
            "  - id: nobody\n    effect: deny\n    purposes: [support]\n",
            "",
        ),
    );
    let server = ServerProcess::start(&["--policy", &serving, "--decision-log", "off"]);
    let admin = server.admin_addr.unwrap();
    let post = |path: &str, content_type: &str, body: &str| {
        let url = format!("http://{admin}{path}");
        let header = format!("Content-Type: {content_type}");
        curl(&["-X", "POST", "-H", &header, "--data-binary", body, &url])
    };
    let yaml = "application/yaml";
    let got = post("/api/diff", yaml, &too_many_roles());
    assert_eq!(got.status, 200, "{got:?}");
    assert_cannot_tell(&serde_json::from_str(&got.body).unwrap());

    // A widening the sample missed (a dropped obligation), found by the
    // explorer too.
    let obligations = "  - id: support-on-tickets\n    effect: permit\n    purposes: [support]\n    dataCategories: [tickets]\n    obligations:\n      - id: log-access\n";
    let got = post("/api/diff", yaml, &policy(obligations, ""));
    assert_eq!(got.status, 200, "{got:?}");
    let report: Value = serde_json::from_str(&got.body).unwrap();
    assert_eq!(widened(&report), ["support x tickets"], "{report}");
    assert_eq!(
        report["cells"][0]["newlyPermitted"]["request"]["supportedObligations"],
        json!(["log-access"]),
        "{report}"
    );

    // The compare page marks the cell and says it cannot tell.
    let form: String = url_encode(&too_many_roles());
    let url = format!("http://{admin}/compare");
    let page = curl(&[
        "-X",
        "POST",
        "-H",
        "Content-Type: application/x-www-form-urlencoded",
        "--data-binary",
        &format!("policy={form}"),
        &url,
    ]);
    assert_eq!(page.status, 200, "{page:?}");
    assert!(
        page.body.contains(r#"data-result="cannot-tell""#),
        "{}",
        page.body
    );
    assert!(page.body.contains(r#"data-untried="1""#), "{}", page.body);
    assert!(
        page.body.contains(r#"data-change="cannot-tell""#),
        "{}",
        page.body
    );
    assert!(
        page.body.contains(
            "<strong>cannot tell</strong>: not tried: 131072 combinations of facts (roles: 131072)"
        ),
        "{}",
        page.body
    );
    assert!(
        page.body.contains("Cannot tell whether this change widens")
            || page.body.contains("cannot tell whether this change widens"),
        "{}",
        page.body
    );
}

/// `application/x-www-form-urlencoded`: everything but unreserved
/// characters percent-encoded.
fn url_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A consent-based purpose under each change a policy can make to it.
fn with_choices(rules: &str, choices: &str) -> String {
    format!(
        "version: 1\nname: exact\npurposes:\n  marketing: Marketing\n  marketing.email: Email\ndataCategories:\n  contacts: Contacts\n  orders: Orders\n{choices}rules:\n{rules}"
    )
}

const CONSENT: &str =
    "choices:\n  - purposes: [marketing]\n    by: data-subject\n    basis: consent\n";
const CONTACTS: &str =
    "  - id: m\n    effect: permit\n    purposes: [marketing]\n    dataCategories: [contacts]\n";

#[test]
fn diff_sees_changes_under_purposes_that_depend_on_choices() {
    let base = with_choices(CONTACTS, CONSENT);
    // The rules widen under a consent-based purpose: decided with consent
    // given, the new category is newly permitted.
    let wider = with_choices(
        "  - id: m\n    effect: permit\n    purposes: [marketing]\n    dataCategories: [contacts, orders]\n",
        CONSENT,
    );
    // Consent no longer asked: a data subject with none recorded (or who
    // withdrew it) is newly permitted.
    let no_consent = with_choices(CONTACTS, "");
    let opt_out = with_choices(
        CONTACTS,
        "choices:\n  - purposes: [marketing]\n    by: data-subject\n    basis: legitimate-interest\n",
    );
    for (tag, new, cell) in [
        ("diff-choices-rules", &wider, "marketing x orders"),
        ("diff-choices-gone", &no_consent, "marketing x contacts"),
        ("diff-choices-opt-out", &opt_out, "marketing x contacts"),
    ] {
        let (_dir, old, new) = pair(tag, &base, new);
        let (run, report) = diff_json(&old, &new);
        assert_eq!(run.code, Some(1), "{tag}: {run:?}");
        let cells = widened(&report);
        assert!(
            cells.contains(&cell.to_string()),
            "{tag}: {cells:?} {report}"
        );
    }
    // Consent asked where it was not: only narrower, exit 0.
    let (_dir, old, new) = pair("diff-choices-added", &no_consent, &base);
    let (run, report) = diff_json(&old, &new);
    assert_eq!(run.code, Some(0), "{run:?} {report}");
    assert!(widened(&report).is_empty(), "{report}");
}
