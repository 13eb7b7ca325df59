//! The semantics of choices, one case each, on a small policy whose rules
//! permit everything: what is left is what the choices say.

#![allow(clippy::unwrap_used, clippy::panic)]

use crate::{Choice, ChoiceFacts, ChoiceState, Decision, DecisionRequest, Policy};

const POLICY: &str = r#"
version: 1
name: choices
purposes:
  provide: Provide the service
  provide.personalization: Personalised experiences
  marketing: Marketing
  marketing.email: Marketing by email
  improve: Improve the service
  improve.analytics: Analytics
  legal: Legal obligations
dataCategories:
  customer-data: Customer data
rules:
  - id: everything
    effect: permit
    purposes: [provide, marketing, improve, legal]
    dataCategories: [customer-data]
choices:
  - purposes: [provide.personalization]
    by: tenant
    default: granted
  - purposes: [marketing]
    by: data-subject
    basis: consent
  - purposes: [improve.analytics]
    by: data-subject
    basis: legitimate-interest
restriction:
  allows: [legal]
"#;

/// 2026-12-07T10:00:00Z
const T: i64 = 1_796_637_600;

fn policy() -> Policy {
    Policy::parse("choices.yaml", POLICY).unwrap_or_else(|d| panic!("{d}"))
}

fn ask(purpose: &str, tenant: &str, subject: &str) -> DecisionRequest {
    let mut r = DecisionRequest {
        purpose: purpose.into(),
        ..Default::default()
    };
    r.resource.category = "customer-data".into();
    r.resource.owner_tenant = tenant.into();
    r.resource.data_subject = subject.into();
    r
}

fn choice(purpose: &str, state: ChoiceState) -> Choice {
    Choice {
        purpose: purpose.into(),
        state,
        at: T,
        expires_at: None,
    }
}

fn facts(tenant: Option<Vec<Choice>>, subject: Option<Vec<Choice>>) -> ChoiceFacts {
    ChoiceFacts {
        now: T + 60,
        revision: 7,
        tenant,
        subject,
    }
}

/// The decision and reason for `req` with `facts`.
fn decide(req: &DecisionRequest, facts: &ChoiceFacts) -> (Decision, String) {
    let e = policy().evaluate_with(req, facts);
    (e.decision, e.reason.to_string())
}

#[test]
fn the_rfc3339_time_of_a_choice() {
    assert_eq!(super::rfc3339(T), "2026-12-07T10:00:00Z");
    assert_eq!(super::rfc3339(0), "1970-01-01T00:00:00Z");
}

#[test]
fn a_purpose_no_choice_governs_is_decided_by_the_rules_alone() {
    let none = ChoiceFacts::none();
    assert_eq!(decide(&ask("provide", "", ""), &none).0, Decision::Permit);
    assert_eq!(
        decide(&ask("improve", "contoso", ""), &none).0,
        Decision::Permit
    );
}

#[test]
fn a_tenant_configuration_is_on_by_default_and_switched_off_by_a_withdrawal() {
    let req = ask("provide.personalization", "contoso", "");
    assert_eq!(decide(&req, &facts(Some(vec![]), None)).0, Decision::Permit);
    let off = facts(
        Some(vec![choice(
            "provide.personalization",
            ChoiceState::Withdrawn,
        )]),
        None,
    );
    assert_eq!(
        decide(&req, &off),
        (
            Decision::Deny,
            "`provide.personalization` is switched off by tenant `contoso`: withdrawn 2026-12-07T10:00:00Z".into()
        )
    );
    // On an ancestor: it covers the descendants.
    let all_off = facts(Some(vec![choice("provide", ChoiceState::Withdrawn)]), None);
    let (decision, reason) = decide(&req, &all_off);
    assert_eq!(decision, Decision::Deny);
    assert!(reason.contains("withdrawn on `provide`"), "{reason}");
}

#[test]
fn without_the_tenant_or_its_choices_the_decision_is_indeterminate() {
    let (decision, reason) = decide(
        &ask("provide.personalization", "", ""),
        &facts(Some(vec![]), None),
    );
    assert_eq!(decision, Decision::Indeterminate);
    assert!(reason.contains("names no owner tenant"), "{reason}");
    let (decision, reason) = decide(
        &ask("provide.personalization", "contoso", ""),
        &ChoiceFacts::none(),
    );
    assert_eq!(decision, Decision::Indeterminate);
    assert!(
        reason.contains("tenant `contoso`, which were not looked up"),
        "{reason}"
    );
}

#[test]
fn consent_is_needed_given_on_the_purpose_or_an_ancestor_and_unexpired() {
    let req = ask("marketing.email", "contoso", "u-42");
    assert_eq!(
        decide(&req, &facts(Some(vec![]), Some(vec![]))),
        (
            Decision::Deny,
            "`marketing.email` needs the consent of data subject `u-42` of `contoso`, and none is recorded".into()
        )
    );
    let granted = facts(
        Some(vec![]),
        Some(vec![choice("marketing", ChoiceState::Granted)]),
    );
    assert_eq!(decide(&req, &granted).0, Decision::Permit);
    // A withdrawal nearer the asked purpose wins over the ancestor's grant.
    let withdrawn = facts(
        Some(vec![]),
        Some(vec![
            choice("marketing", ChoiceState::Granted),
            choice("marketing.email", ChoiceState::Withdrawn),
        ]),
    );
    assert_eq!(
        decide(&req, &withdrawn),
        (
            Decision::Deny,
            "`marketing.email` needs the consent of data subject `u-42` of `contoso`, withdrawn 2026-12-07T10:00:00Z".into()
        )
    );
    // An expired grant is none; an expired withdrawal is none either.
    let expired = facts(
        Some(vec![]),
        Some(vec![Choice {
            expires_at: Some(T + 30),
            ..choice("marketing", ChoiceState::Granted)
        }]),
    );
    let (decision, reason) = decide(&req, &expired);
    assert_eq!(decision, Decision::Deny);
    assert!(reason.contains("expired 2026-12-07T10:00:30Z"), "{reason}");
    let lapsed_withdrawal = facts(
        Some(vec![]),
        Some(vec![
            choice("marketing", ChoiceState::Granted),
            Choice {
                expires_at: Some(T),
                ..choice("marketing.email", ChoiceState::Withdrawn)
            },
        ]),
    );
    assert_eq!(decide(&req, &lapsed_withdrawal).0, Decision::Permit);
}

#[test]
fn legitimate_interest_stands_until_the_data_subject_objects() {
    let req = ask("improve.analytics", "contoso", "u-42");
    assert_eq!(
        decide(&req, &facts(Some(vec![]), Some(vec![]))).0,
        Decision::Permit
    );
    let objected = facts(
        Some(vec![]),
        Some(vec![choice("improve", ChoiceState::Objected)]),
    );
    let (decision, reason) = decide(&req, &objected);
    assert_eq!(decision, Decision::Deny);
    assert!(reason.contains("objected on `improve`"), "{reason}");
}

#[test]
fn a_data_subject_never_widens_what_the_tenant_configured() {
    let req = ask("marketing.email", "contoso", "u-42");
    let tenant_off = facts(
        Some(vec![choice("marketing", ChoiceState::Withdrawn)]),
        Some(vec![choice("marketing", ChoiceState::Granted)]),
    );
    let (decision, reason) = decide(&req, &tenant_off);
    assert_eq!(decision, Decision::Deny);
    assert!(reason.contains("tenant `contoso`"), "{reason}");
}

#[test]
fn a_data_subject_objection_narrows_a_purpose_the_tenant_configures() {
    // The tenant has personalisation on; u-42 objected to it. Their data
    // is not personalised; everyone else's is.
    let objected = facts(
        Some(vec![]),
        Some(vec![choice(
            "provide.personalization",
            ChoiceState::Objected,
        )]),
    );
    assert_eq!(
        decide(&ask("provide.personalization", "contoso", "u-42"), &objected),
        (
            Decision::Deny,
            "`provide.personalization` was refused by data subject `u-42` of `contoso`, objected 2026-12-07T10:00:00Z".into()
        )
    );
    let (decision, _) = decide(
        &ask("provide.personalization", "contoso", "u-7"),
        &facts(Some(vec![]), Some(vec![])),
    );
    assert_eq!(decision, Decision::Permit);
    // Named, a data subject's choices are needed for it; not named, the
    // tenant's configuration alone decides.
    let (decision, reason) = decide(
        &ask("provide.personalization", "contoso", "u-42"),
        &facts(Some(vec![]), None),
    );
    assert_eq!(decision, Decision::Indeterminate, "{reason}");
    assert_eq!(
        decide(&ask("provide.personalization", "contoso", ""), &objected).0,
        Decision::Permit
    );
    // A purpose no choice governs reads no objection: the policy says
    // that purpose does not depend on choices.
    let improve = facts(
        Some(vec![]),
        Some(vec![choice("improve", ChoiceState::Objected)]),
    );
    assert_eq!(
        decide(&ask("improve", "contoso", "u-42"), &improve).0,
        Decision::Permit
    );
}

#[test]
fn a_restricted_data_subject_serves_only_what_restriction_allows() {
    let restricted = facts(
        Some(vec![]),
        Some(vec![choice("", ChoiceState::Restricted)]),
    );
    let (decision, reason) = decide(&ask("provide", "contoso", "u-42"), &restricted);
    assert_eq!(decision, Decision::Deny);
    assert_eq!(
        reason,
        "data subject `u-42` of `contoso` restricted processing 2026-12-07T10:00:00Z; `provide` is not among what restriction allows (`legal`)"
    );
    assert_eq!(
        decide(&ask("legal", "contoso", "u-42"), &restricted).0,
        Decision::Permit
    );
    // Naming a data subject whose choices were not looked up: unknown.
    let (decision, reason) = decide(&ask("provide", "contoso", "u-42"), &ChoiceFacts::none());
    assert_eq!(decision, Decision::Indeterminate);
    assert!(reason.contains("were not looked up"), "{reason}");
}

#[test]
fn a_denial_by_choices_given_outranks_choices_missing() {
    // The tenant switched personalisation off; the subject's choices were
    // not looked up: DENY, not INDETERMINATE.
    let req = ask("provide.personalization", "contoso", "u-42");
    let off = facts(
        Some(vec![choice(
            "provide.personalization",
            ChoiceState::Withdrawn,
        )]),
        None,
    );
    assert_eq!(decide(&req, &off).0, Decision::Deny);
}

#[test]
fn choices_never_permit_what_the_rules_do_not() {
    let req = ask("marketing", "contoso", "u-42");
    let granted = facts(
        Some(vec![]),
        Some(vec![choice("marketing", ChoiceState::Granted)]),
    );
    let mut other = req.clone();
    other.resource.category = "unknown-data".into();
    assert_ne!(decide(&other, &granted).0, Decision::Permit);
}

#[test]
fn the_reverse_question_lists_no_purpose_that_depends_on_choices() {
    let p = policy();
    let listed: Vec<String> = p
        .permitted_purposes(&ask("", "contoso", ""))
        .unwrap()
        .purposes
        .iter()
        .map(|p| p.purpose.to_string())
        .collect();
    assert!(listed.contains(&"provide".to_string()), "{listed:?}");
    for governed in [
        "provide.personalization",
        "marketing",
        "marketing.email",
        "improve.analytics",
    ] {
        assert!(!listed.contains(&governed.to_string()), "{listed:?}");
    }
}

#[test]
fn a_policy_without_choices_keeps_its_revision() {
    let with = policy();
    let without = Policy::parse(
        "choices.yaml",
        &POLICY[..POLICY.find("choices:\n  -").unwrap()],
    )
    .unwrap();
    assert_ne!(with.revision(), without.revision());
    // The default policy without its `choices` block is the policy it was
    // before choices existed, revision and all.
    let text = crate::default_policy::TEXT;
    let from = text.find("# What the customer configured").unwrap();
    let to = text.find("rules:\n").unwrap();
    let before = format!("{}{}", &text[..from], &text[to..]);
    assert_eq!(
        Policy::parse("online-services-dpa.yaml", &before)
            .unwrap()
            .revision()
            .as_ref(),
        "700985de9b1f6f02"
    );
}

#[test]
fn mistakes_in_choices_are_named() {
    let wrong = POLICY
        .replace(
            "purposes: [marketing]\n    by: data-subject",
            "purposes: [marketting]\n    by: data-subject",
        )
        .replace("default: granted", "default: granted\n    basis: consent")
        .replace("basis: legitimate-interest", "basis: interest");
    let errors = Policy::parse("choices.yaml", &wrong)
        .unwrap_err()
        .to_string();
    for expected in [
        "choice #2: unknown purpose `marketting` (did you mean `marketing`?)",
        "choice #1: `basis` does not apply; a tenant's configuration has a `default`",
        "choice #3: unknown `basis` `interest`; expected `consent` or `legitimate-interest`",
    ] {
        assert!(errors.contains(expected), "{expected}\n{errors}");
    }
}

#[test]
fn a_decision_that_read_choices_is_cached_for_a_second_only() {
    let p = policy();
    let granted = facts(
        Some(vec![]),
        Some(vec![choice("marketing", ChoiceState::Granted)]),
    );
    let read = p.evaluate_with(&ask("marketing", "contoso", "u-42"), &granted);
    assert_eq!((read.decision, read.ttl_seconds), (Decision::Permit, 1));
    let denied = p.evaluate_with(
        &ask("marketing", "contoso", "u-42"),
        &facts(Some(vec![]), Some(vec![])),
    );
    assert_eq!((denied.decision, denied.ttl_seconds), (Decision::Deny, 1));
    let unread = p.evaluate_with(&ask("provide", "contoso", ""), &ChoiceFacts::none());
    assert_eq!(
        (unread.decision, unread.ttl_seconds),
        (Decision::Permit, 300)
    );
}
