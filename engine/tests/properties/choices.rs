//! Choices against a brute-force reading of their semantics: random
//! requirements over the purpose tree, random current choices of a tenant
//! and a data subject (live or expired), a random restriction; the
//! engine's decision compared with the rules written out over purpose ids
//! as strings (a choice on P covers P and every id below it).

use proptest::prelude::*;
use purposegate_engine::{
    Choice, ChoiceFacts, ChoiceState, Decision, DecisionRequest, Policy, Resource,
};

use super::PURPOSES;

/// Judged at this time; expired choices lapsed before it.
const NOW: i64 = 1_800_000_000;

#[derive(Debug, Clone)]
struct Requirement {
    purpose: &'static str,
    by_tenant: bool,
    opt_in: bool,
}

fn requirement() -> impl Strategy<Value = Requirement> {
    (prop::sample::select(PURPOSES), any::<bool>(), any::<bool>()).prop_map(
        |(purpose, by_tenant, opt_in)| Requirement {
            purpose,
            by_tenant,
            opt_in,
        },
    )
}

fn choice() -> impl Strategy<Value = Choice> {
    (
        prop::sample::select(PURPOSES),
        prop::sample::select(
            &[
                ChoiceState::Granted,
                ChoiceState::Withdrawn,
                ChoiceState::Objected,
            ][..],
        ),
        any::<bool>(),
    )
        .prop_map(|(purpose, state, expired)| Choice {
            purpose: purpose.to_string(),
            state,
            at: NOW - 100,
            expires_at: expired.then_some(NOW - 1),
        })
}

/// The current choices: one per purpose at most, as a store keeps them.
fn current(choices: Vec<Choice>) -> Vec<Choice> {
    let mut by_purpose = std::collections::BTreeMap::new();
    for c in choices {
        by_purpose.insert(c.purpose.clone(), c);
    }
    by_purpose.into_values().collect()
}

fn policy(requirements: &[Requirement], restriction: Option<&[&str]>) -> Policy {
    let mut yaml = String::from("version: 1\nname: choices\npurposes:\n");
    for p in PURPOSES {
        yaml.push_str(&format!("  {p}: {p}\n"));
    }
    yaml.push_str(
        "dataCategories:\n  c: C\nrules:\n  - id: all\n    effect: permit\n    purposes: [p0, p1, p2]\n    dataCategories: [c]\n",
    );
    if !requirements.is_empty() {
        yaml.push_str("choices:\n");
        for r in requirements {
            let (by, how) = match (r.by_tenant, r.opt_in) {
                (true, false) => ("tenant", "default: granted"),
                (true, true) => ("tenant", "default: withdrawn"),
                (false, true) => ("data-subject", "basis: consent"),
                (false, false) => ("data-subject", "basis: legitimate-interest"),
            };
            yaml.push_str(&format!(
                "  - purposes: [{}]\n    by: {by}\n    {how}\n",
                r.purpose
            ));
        }
    }
    if let Some(allows) = restriction {
        yaml.push_str(&format!(
            "restriction:\n  allows: [{}]\n",
            allows.join(", ")
        ));
    }
    Policy::parse("choices.yaml", &yaml).unwrap_or_else(|d| panic!("{d}\n{yaml}"))
}

/// Whether `purpose` is `under` or below it.
fn within(purpose: &str, under: &str) -> bool {
    purpose == under || purpose.starts_with(&format!("{under}."))
}

/// The semantics, written out: the rules permit every purpose; choices
/// only narrow.
fn brute_force(
    asked: &str,
    requirements: &[Requirement],
    restriction: Option<&[&str]>,
    tenant: &[Choice],
    subject: &[Choice],
    restricted: bool,
) -> Decision {
    let live = |c: &&Choice| c.expires_at.is_none_or(|e| e > NOW);
    // The choices that reach the asked purpose: on it or above it.
    let reaching = |choices: &[Choice]| -> Vec<Choice> {
        choices
            .iter()
            .filter(live)
            .filter(|c| within(asked, &c.purpose))
            .cloned()
            .collect()
    };
    let refused = |cs: &[Choice]| {
        cs.iter()
            .any(|c| matches!(c.state, ChoiceState::Withdrawn | ChoiceState::Objected))
    };
    let granted = |cs: &[Choice]| cs.iter().any(|c| c.state == ChoiceState::Granted);
    // A policy that says nothing of choices reads none.
    if requirements.is_empty() && restriction.is_none() {
        return Decision::Permit;
    }
    if restricted && !restriction.unwrap_or(&[]).iter().any(|a| within(asked, a)) {
        return Decision::Deny;
    }
    let (tenant, subject) = (reaching(tenant), reaching(subject));
    for r in requirements.iter().filter(|r| within(asked, r.purpose)) {
        // Anyone's refusal, whoever's choice the purpose depends on.
        if refused(&tenant) || refused(&subject) {
            return Decision::Deny;
        }
        let own = if r.by_tenant { &tenant } else { &subject };
        if r.opt_in && !granted(own) {
            return Decision::Deny;
        }
    }
    Decision::Permit
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 512,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// The engine decides choices as the semantics read literally do.
    #[test]
    fn choices_decide_as_their_semantics_say(
        requirements in prop::collection::vec(requirement(), 0..4),
        allows in prop::option::of(prop::collection::vec(prop::sample::select(PURPOSES), 1..3)),
        tenant in prop::collection::vec(choice(), 0..5),
        subject in prop::collection::vec(choice(), 0..5),
        restricted in any::<bool>(),
        restriction_expired in any::<bool>(),
        asked in prop::sample::select(PURPOSES),
    ) {
        let allows: Option<Vec<&str>> = allows.map(|mut a| { a.sort_unstable(); a.dedup(); a });
        let policy = policy(&requirements, allows.as_deref());
        let (tenant, mut subject) = (current(tenant), current(subject));
        if restricted {
            subject.push(Choice {
                purpose: String::new(),
                state: ChoiceState::Restricted,
                at: NOW - 100,
                expires_at: restriction_expired.then_some(NOW - 1),
            });
        }
        let req = DecisionRequest {
            purpose: asked.to_string(),
            resource: Resource {
                category: "c".into(),
                owner_tenant: "acme".into(),
                data_subject: "u-1".into(),
                ..Resource::default()
            },
            ..DecisionRequest::default()
        };
        let facts = ChoiceFacts {
            now: NOW,
            revision: 1,
            tenant: Some(tenant.clone()),
            subject: Some(subject.clone()),
        };
        let got = policy.evaluate_with(&req, &facts);
        let want = brute_force(
            asked,
            &requirements,
            allows.as_deref(),
            &tenant,
            &subject,
            restricted && !restriction_expired,
        );
        prop_assert_eq!(got.decision, want, "{}", got.reason);
        // Not given the choices: where the policy has any, a request that
        // names a data subject depends on them (a restriction covers every
        // purpose) and is INDETERMINATE, never the default.
        let blind = policy.evaluate_with(&req, &ChoiceFacts::none());
        let depends = !requirements.is_empty() || allows.is_some();
        let expected = if depends { Decision::Indeterminate } else { Decision::Permit };
        prop_assert_eq!(blind.decision, expected, "{}", blind.reason);
    }
}
