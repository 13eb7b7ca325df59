//! The reverse question against `evaluate` on larger random trees: random
//! shapes declared out of tree order, monitor rules, obligations, claims,
//! inherited purposes and derived data. `permitted_purposes` must list
//! exactly the purposes `evaluate` permits, in tree order, with the same
//! rules and obligations.

use proptest::prelude::*;

use purposegate_engine::{
    Context, Decision, DecisionRequest, Deidentification, Effect, Obligation, Policy, Resource,
    Subject,
};

use super::{CATEGORIES, Cond, cond};

/// A purpose tree: each node's parent is an earlier node or none.
fn tree(max: usize) -> impl Strategy<Value = Vec<String>> {
    prop::collection::vec(prop::option::of(any::<prop::sample::Index>()), 1..max).prop_map(
        |parents| {
            let mut ids: Vec<String> = Vec::with_capacity(parents.len());
            for (i, parent) in parents.iter().enumerate() {
                let id = match parent {
                    Some(p) if i > 0 => format!("{}.n{i}", ids[p.index(i)]),
                    _ => format!("r{i}"),
                };
                ids.push(id);
            }
            ids
        },
    )
}

#[derive(Debug, Clone)]
struct Rule {
    effect: Effect,
    monitor: bool,
    purposes: Vec<prop::sample::Index>,
    categories: Vec<usize>,
    when: Option<Cond>,
    unless: Option<Cond>,
    obligation: Option<&'static str>,
}

fn rule() -> impl Strategy<Value = Rule> {
    (
        prop_oneof![3 => Just(Effect::Permit), 2 => Just(Effect::Deny)],
        prop::bool::weighted(0.15),
        prop::collection::vec(any::<prop::sample::Index>(), 1..4),
        prop::sample::subsequence((0..CATEGORIES.len()).collect::<Vec<_>>(), 0..=2),
        prop::option::of(cond()),
        prop::option::of(cond()),
        prop::option::weighted(0.2, prop::sample::select(vec!["log", "notify"])),
    )
        .prop_map(
            |(effect, monitor, purposes, categories, when, unless, obligation)| Rule {
                effect,
                monitor,
                purposes,
                categories,
                when,
                unless,
                obligation,
            },
        )
}

/// Claims: `None` for no section, else each claim's subject and purposes.
type Claims = Option<Vec<(&'static str, Vec<prop::sample::Index>)>>;

fn claims() -> impl Strategy<Value = Claims> {
    prop::option::weighted(
        0.3,
        prop::collection::vec(
            (
                prop::sample::select(vec!["s", "s*", "other"]),
                prop::collection::vec(any::<prop::sample::Index>(), 1..3),
            ),
            1..3,
        ),
    )
}

fn render(purposes: &[String], rules: &[Rule], claims: &Claims, reversed: bool) -> String {
    let mut out = String::from("version: 1\nname: reverse\npurposes:\n");
    // Declared out of tree order: children may come before their parents.
    let mut declared: Vec<&String> = purposes.iter().collect();
    if reversed {
        declared.reverse();
    }
    for p in declared {
        out.push_str(&format!("  {p}: P\n"));
    }
    out.push_str("dataCategories:\n");
    for c in CATEGORIES {
        out.push_str(&format!("  {c}: C\n"));
    }
    out.push_str(if rules.is_empty() {
        "rules: []\n"
    } else {
        "rules:\n"
    });
    let pick = |list: &[prop::sample::Index]| -> String {
        let mut ids: Vec<&str> = list
            .iter()
            .map(|i| purposes[i.index(purposes.len())].as_str())
            .collect();
        ids.sort_unstable();
        ids.dedup();
        ids.join(", ")
    };
    for (i, r) in rules.iter().enumerate() {
        out.push_str(&format!(
            "  - id: r{i}\n    effect: {}\n    purposes: [{}]\n",
            r.effect.as_str(),
            pick(&r.purposes)
        ));
        if !r.categories.is_empty() {
            let c: Vec<&str> = r.categories.iter().map(|&c| CATEGORIES[c]).collect();
            out.push_str(&format!("    dataCategories: [{}]\n", c.join(", ")));
        }
        if r.monitor {
            out.push_str("    mode: monitor\n");
        }
        if let Some(c) = &r.when {
            out.push_str(&format!("    when: {}\n", c.yaml()));
        }
        if let Some(c) = &r.unless {
            out.push_str(&format!("    unless: {}\n", c.yaml()));
        }
        if let (Effect::Permit, Some(o)) = (r.effect, r.obligation) {
            out.push_str(&format!("    obligations: [{{ id: {o} }}]\n"));
        }
    }
    if let Some(claims) = claims {
        out.push_str("claims:\n");
        for (i, (subject, listed)) in claims.iter().enumerate() {
            out.push_str(&format!(
                "  - id: k{i}\n    subjects: [\"{subject}\"]\n    purposes: [{}]\n",
                pick(listed)
            ));
        }
    }
    out
}

/// The facts of a request; the purpose is left empty.
fn facts() -> impl Strategy<Value = (DecisionRequest, Option<prop::sample::Index>)> {
    let tenant = prop::option::of(prop::sample::select(vec!["t1", "t2"]));
    (
        (0..CATEGORIES.len(), tenant.clone(), tenant),
        prop::option::of(0..Deidentification::ALL.len()),
        prop::option::of(1u64..120),
        prop::sample::subsequence((0..CATEGORIES.len()).collect::<Vec<_>>(), 0..=2),
        (
            any::<bool>(),
            prop::option::of(prop::sample::select(vec!["admin", "clerk"])),
        ),
        (
            prop::sample::select(vec!["s", "sx", "other", ""]),
            prop::sample::subsequence(vec!["log", "notify"], 0..=2),
            prop::option::weighted(0.2, any::<prop::sample::Index>()),
        ),
    )
        .prop_map(
            |(
                (c, tenant, owner),
                deid,
                group,
                origin,
                (instruction, role),
                (id, supported, ceiling),
            )| {
                let req = DecisionRequest {
                    subject: Subject {
                        id: id.into(),
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
                    context: Context {
                        customer_instruction: if instruction {
                            "doc-1".into()
                        } else {
                            String::new()
                        },
                        ..Context::default()
                    },
                    supported_obligations: supported.into_iter().map(String::from).collect(),
                    ..DecisionRequest::default()
                };
                (req, ceiling)
            },
        )
}

type Listed = Vec<(String, Vec<std::sync::Arc<str>>, Vec<Obligation>)>;

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn permitted_purposes_equal_evaluate_on_every_purpose_of_larger_trees(
        purposes in tree(80),
        rules in prop::collection::vec(rule(), 0..16),
        claims in claims(),
        reversed in any::<bool>(),
        asked in prop::collection::vec(facts(), 1..6),
    ) {
        let text = render(&purposes, &rules, &claims, reversed);
        let policy = Policy::parse("reverse.yaml", &text).unwrap_or_else(|d| panic!("{d}\n{text}"));
        for (mut req, ceiling) in asked {
            if let Some(c) = ceiling {
                req.inherited_purpose = purposes[c.index(purposes.len())].clone();
            }
            let answer = policy.permitted_purposes(&req).unwrap_or_else(|e| panic!("{e}"));
            let got: Listed = answer
                .purposes
                .iter()
                .map(|p| (p.purpose.to_string(), p.rule_ids.clone(), p.obligations.clone()))
                .collect();
            let expected: Listed = policy
                .purposes()
                .tree_order()
                .into_iter()
                .filter_map(|p| {
                    let mut one = req.clone();
                    one.purpose = policy.purposes().id(p).to_string();
                    let e = policy.evaluate(&one);
                    (e.decision == Decision::Permit)
                        .then_some((one.purpose, e.rule_ids, e.obligations))
                })
                .collect();
            prop_assert_eq!(got, expected, "{}\n{:?}", text, req);
        }
    }
}
