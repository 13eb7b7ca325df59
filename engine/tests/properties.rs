//! Property tests over generated policies and requests.

#![allow(
    clippy::panic,
    clippy::indexing_slicing,
    reason = "generators and helpers of tests: a failed setup must fail the test"
)]

use proptest::prelude::*;

#[path = "properties/choices.rs"]
mod choices;
#[path = "properties/diff.rs"]
mod diff;
#[path = "properties/reverse.rs"]
mod reverse;

use purposegate_engine::{
    Context, Decision, DecisionRequest, Deidentification, Effect, Evaluation, Policy, Resource,
    Subject,
};

/// The purpose tree every generated policy declares.
const PURPOSES: &[&str] = &["p0", "p0.a", "p0.a.x", "p0.b", "p1", "p1.a", "p2"];
/// The category tree every generated policy declares.
const CATEGORIES: &[&str] = &["c0", "c0.a", "c0.b", "c1"];
const STATES: &[&str] = &[
    "identified",
    "pseudonymized",
    "unlinked-pseudonymized",
    "anonymized",
    "aggregated",
];

#[derive(Debug, Clone)]
enum Cond {
    SameTenant(bool),
    AtLeast(usize),
    Exactly(usize),
    GroupSize(u64),
    Instruction(bool),
    Role(&'static str),
}

impl Cond {
    fn yaml(&self) -> String {
        match self {
            Cond::SameTenant(b) => format!("{{ sameTenant: {b} }}"),
            Cond::AtLeast(s) => format!("{{ deidentification: {{ atLeast: {} }} }}", STATES[*s]),
            Cond::Exactly(s) => format!("{{ deidentification: {} }}", STATES[*s]),
            Cond::GroupSize(n) => format!("{{ groupSize: {{ atLeast: {n} }} }}"),
            Cond::Instruction(p) => format!(
                "{{ customerInstruction: {} }}",
                if *p { "present" } else { "absent" }
            ),
            Cond::Role(r) => format!("{{ subject: {{ roles: [{r}] }} }}"),
        }
    }
}

#[derive(Debug, Clone)]
struct GenRule {
    effect: Effect,
    purposes: Vec<usize>,
    categories: Vec<usize>,
    when: Option<Cond>,
    unless: Option<Cond>,
}

fn cond() -> impl Strategy<Value = Cond> {
    prop_oneof![
        any::<bool>().prop_map(Cond::SameTenant),
        (0..STATES.len()).prop_map(Cond::AtLeast),
        (0..STATES.len()).prop_map(Cond::Exactly),
        (1u64..100).prop_map(Cond::GroupSize),
        any::<bool>().prop_map(Cond::Instruction),
        prop::sample::select(vec!["admin", "auditor"]).prop_map(Cond::Role),
    ]
}

fn subset(len: usize, min: usize) -> impl Strategy<Value = Vec<usize>> {
    prop::sample::subsequence((0..len).collect::<Vec<_>>(), min..=3.min(len))
}

fn rule() -> impl Strategy<Value = GenRule> {
    (
        prop_oneof![Just(Effect::Permit), Just(Effect::Deny)],
        subset(PURPOSES.len(), 1),
        subset(CATEGORIES.len(), 0),
        prop::option::of(cond()),
        prop::option::of(cond()),
    )
        .prop_map(|(effect, purposes, categories, when, unless)| GenRule {
            effect,
            purposes,
            categories,
            when,
            unless,
        })
}

/// Renders a policy; `style` varies formatting and map order, not content.
fn render(rules: &[GenRule], style: bool) -> String {
    let mut out = String::new();
    if style {
        out.push_str("# generated\nname: generated\nversion: 1\n");
    } else {
        out.push_str("version: 1\nname: generated\n");
    }
    let mut purposes: Vec<&str> = PURPOSES.to_vec();
    let mut categories: Vec<&str> = CATEGORIES.to_vec();
    if style {
        purposes.reverse();
        categories.reverse();
    }
    out.push_str("purposes:\n");
    for p in purposes {
        out.push_str(&format!("  {p}: Purpose {p}\n"));
    }
    out.push_str("dataCategories:\n");
    for c in categories {
        out.push_str(&format!("  {c}: \"Category {c}\"\n"));
    }
    out.push_str(if rules.is_empty() {
        "rules: []\n"
    } else {
        "rules:\n"
    });
    for (i, r) in rules.iter().enumerate() {
        let purposes: Vec<&str> = r.purposes.iter().map(|&p| PURPOSES[p]).collect();
        out.push_str(&format!(
            "  - id: r{i}\n    effect: {}\n    purposes: [{}]\n",
            r.effect.as_str(),
            purposes.join(", ")
        ));
        if !r.categories.is_empty() {
            let c: Vec<&str> = r.categories.iter().map(|&c| CATEGORIES[c]).collect();
            if style {
                out.push_str("    dataCategories:\n");
                for c in c {
                    out.push_str(&format!("      - {c}\n"));
                }
            } else {
                out.push_str(&format!("    dataCategories: [{}]\n", c.join(", ")));
            }
        }
        if let Some(c) = &r.when {
            out.push_str(&format!("    when: {}\n", c.yaml()));
        }
        if let Some(c) = &r.unless {
            out.push_str(&format!("    unless: {}\n", c.yaml()));
        }
    }
    out
}

fn load(rules: &[GenRule]) -> Policy {
    let text = render(rules, false);
    Policy::parse("generated.yaml", &text).unwrap_or_else(|d| panic!("{d}\n{text}"))
}

fn request() -> impl Strategy<Value = DecisionRequest> {
    let tenant = prop::option::of(prop::sample::select(vec!["t1", "t2"]));
    (
        (0..PURPOSES.len(), 0..CATEGORIES.len()),
        (tenant.clone(), tenant),
        prop::option::of(0..STATES.len()),
        prop::option::of(1u64..120),
        subset(CATEGORIES.len(), 0),
        any::<bool>(),
        prop::option::of(prop::sample::select(vec!["admin", "auditor", "clerk"])),
    )
        .prop_map(
            |((p, c), (tenant, owner), deid, group, origin, instruction, role)| DecisionRequest {
                subject: Subject {
                    id: "s".into(),
                    tenant: tenant.unwrap_or_default().into(),
                    roles: role.into_iter().map(String::from).collect(),
                },
                resource: Resource {
                    category: CATEGORIES[c].into(),
                    owner_tenant: owner.unwrap_or_default().into(),
                    deidentification: deid.map(|s| Deidentification::ALL[s]),
                    group_size: group,
                    origin: origin.iter().map(|&o| CATEGORIES[o].to_string()).collect(),
                    ..Resource::default()
                },
                purpose: PURPOSES[p].into(),
                context: Context {
                    customer_instruction: if instruction {
                        "doc-1".into()
                    } else {
                        String::new()
                    },
                    ..Context::default()
                },
                ..DecisionRequest::default()
            },
        )
}

fn determined_only_by_denies(policy: &Policy, answer: &Evaluation) -> bool {
    !answer.rule_ids.is_empty()
        && answer.rule_ids.iter().all(|id| {
            policy
                .rules()
                .iter()
                .any(|r| r.id == *id && r.effect == Effect::Deny)
        })
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 512,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// The reverse question is `evaluate` asked for every purpose: the
    /// purposes it lists, in tree order, are exactly those whose answer is
    /// PERMIT, each with that answer's rules and obligations.
    #[test]
    fn permitted_purposes_are_exactly_the_permits_of_evaluate(
        rules in prop::collection::vec(rule(), 0..8),
        req in request(),
    ) {
        let policy = load(&rules);
        let mut facts = req.clone();
        facts.purpose.clear();
        let answer = policy.permitted_purposes(&facts).unwrap_or_else(|e| panic!("{e}"));
        let expected: Vec<(String, Vec<std::sync::Arc<str>>)> = PURPOSES
            .iter()
            .filter_map(|p| {
                let mut asked = req.clone();
                asked.purpose = (*p).to_string();
                let e = policy.evaluate(&asked);
                (e.decision == Decision::Permit).then(|| ((*p).to_string(), e.rule_ids))
            })
            .collect();
        let got: Vec<(String, Vec<std::sync::Arc<str>>)> = answer
            .purposes
            .iter()
            .map(|p| (p.purpose.to_string(), p.rule_ids.clone()))
            .collect();
        prop_assert_eq!(got, expected);
        prop_assert_eq!(&answer.policy_revision, policy.revision());
    }

    /// Adding a deny rule never turns a non-permit into a permit.
    #[test]
    fn adding_a_deny_never_creates_a_permit(
        rules in prop::collection::vec(rule(), 0..8),
        mut extra in rule(),
        requests in prop::collection::vec(request(), 1..16),
    ) {
        extra.effect = Effect::Deny;
        let before = load(&rules);
        let mut with_deny = rules.clone();
        with_deny.push(extra);
        let after = load(&with_deny);
        for req in &requests {
            let b = before.evaluate(req);
            let a = after.evaluate(req);
            if b.decision != Decision::Permit {
                prop_assert_ne!(a.decision, Decision::Permit, "{:?}\nbefore {:?}\nafter {:?}", req, b, a);
            }
        }
    }

    /// A permit for P covers every descendant of P unless a deny applies.
    #[test]
    fn permits_cover_descendants_unless_denied(
        rules in prop::collection::vec(rule(), 1..8),
        requests in prop::collection::vec(request(), 1..16),
    ) {
        let policy = load(&rules);
        for req in &requests {
            if policy.evaluate(req).decision != Decision::Permit {
                continue;
            }
            let p = policy.purposes().lookup(&req.purpose).unwrap_or_else(|| panic!("declared"));
            for d in policy.purposes().self_and_descendants(p) {
                let mut below = req.clone();
                below.purpose = policy.purposes().id(d).to_string();
                let answer = policy.evaluate(&below);
                prop_assert!(
                    answer.decision == Decision::Permit || determined_only_by_denies(&policy, &answer),
                    "{} permitted but {} got {:?}", req.purpose, below.purpose, answer
                );
            }
        }
    }

    /// The revision depends on content only: formatting, comments and map
    /// order do not change it; changing a rule does.
    #[test]
    fn revision_is_a_content_hash(
        rules in prop::collection::vec(rule(), 1..8),
        pick in any::<prop::sample::Index>(),
        change in 0..3usize,
    ) {
        let a = load(&rules);
        let b = Policy::parse("other-name.yaml", &render(&rules, true))
            .unwrap_or_else(|d| panic!("{d}"));
        prop_assert_eq!(a.revision(), b.revision());

        let mut changed = rules.clone();
        let i = pick.index(changed.len());
        let r = &mut changed[i];
        match change {
            0 => r.effect = if r.effect == Effect::Permit { Effect::Deny } else { Effect::Permit },
            1 => {
                if r.purposes.len() > 1 { r.purposes.pop(); } else { r.purposes = vec![(r.purposes[0] + 1) % PURPOSES.len()]; }
            }
            _ => r.when = match r.when { Some(_) => None, None => Some(Cond::SameTenant(true)) },
        }
        let c = load(&changed);
        prop_assert_ne!(a.revision(), c.revision());
    }
}
