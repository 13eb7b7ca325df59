//! `Policy::diff` is exact: over a small vocabulary, every request either
//! policy can be asked is decided by both, and every request the new
//! policy permits and the old does not (or the other way round) has its
//! cell reported as widened (narrowed), or as one the diff cannot tell.

use std::collections::BTreeSet;

use proptest::prelude::*;

use purposegate_engine::{Decision, DecisionRequest, Deidentification, Policy, PolicyDiff};

const PURPOSES: &[&str] = &["p0", "p0.a", "p1"];
const CATEGORIES: &[&str] = &["c0", "c0.a", "c1"];
const ROLES: &[&str] = &["admin", "auditor", "ops"];
const OBLIGATIONS: &[&str] = &["log", "notify"];
/// Claims' subject patterns and the ids conditions list.
const PATTERNS: &[&str] = &["alice", "a*", "b?b", "svc-*", "*"];
const IDS: &[&str] = &["alice", "bob", "svc-1"];
/// The subject ids the brute force asks with.
const SUBJECTS: &[&str] = &["", "alice", "bob", "bab", "svc-1", "ax", "zed"];
const STATES: &[&str] = &["pseudonymized", "anonymized", "aggregated"];
/// The kinds of fact a case's conditions read (and its brute force
/// varies): two at most, so every request can be asked.
const TENANCY: u8 = 0;
const DEIDENTIFICATION: u8 = 1;
const GROUP_SIZE: u8 = 2;
const ORIGIN: u8 = 3;
const ROLES_READ: u8 = 4;
const SUBJECT: u8 = 5;
const ATTRIBUTES: u8 = 6;
const INSTRUCTION: u8 = 7;

fn kinds() -> impl Strategy<Value = Vec<u8>> {
    prop::sample::subsequence((0..8u8).collect::<Vec<_>>(), 1..=2)
}

/// A condition on one of `kinds`, as YAML flow text.
fn leaf(kinds: &[u8]) -> BoxedStrategy<String> {
    let some = |list: &'static [&'static str]| {
        prop::sample::subsequence(list.to_vec(), 1..=2).prop_map(|v| v.join(", "))
    };
    let mut all: Vec<BoxedStrategy<String>> = Vec::new();
    for &kind in kinds {
        all.push(match kind {
            TENANCY => any::<bool>()
                .prop_map(|b| format!("{{ sameTenant: {b} }}"))
                .boxed(),
            DEIDENTIFICATION => (prop::sample::select(STATES.to_vec()), any::<bool>())
                .prop_map(|(s, at_least)| {
                    if at_least {
                        format!("{{ deidentification: {{ atLeast: {s} }} }}")
                    } else {
                        format!("{{ deidentification: {s} }}")
                    }
                })
                .boxed(),
            GROUP_SIZE => prop::sample::select(vec![10u64, 50])
                .prop_map(|k| format!("{{ groupSize: {{ atLeast: {k} }} }}"))
                .boxed(),
            ORIGIN => prop::sample::subsequence(CATEGORIES.to_vec(), 1..=2)
                .prop_map(|c| format!("{{ origin: {{ within: [{}] }} }}", c.join(", ")))
                .boxed(),
            ROLES_READ => some(ROLES)
                .prop_map(|r| format!("{{ subject: {{ roles: [{r}] }} }}"))
                .boxed(),
            SUBJECT => some(IDS)
                .prop_map(|i| format!("{{ subject: {{ id: [{i}] }} }}"))
                .boxed(),
            ATTRIBUTES => prop_oneof![
                prop::sample::select(vec!["ps", "os"])
                    .prop_map(|v| format!("{{ context: {{ processing: {v} }} }}")),
                prop::sample::select(vec!["eu", "us"])
                    .prop_map(|v| format!("{{ resource: {{ region: [{v}, ch] }} }}")),
            ]
            .boxed(),
            _ => any::<bool>()
                .prop_map(|p| {
                    format!(
                        "{{ customerInstruction: {} }}",
                        if p { "present" } else { "absent" }
                    )
                })
                .boxed(),
        });
    }
    proptest::strategy::Union::new(all).boxed()
}

fn condition(kinds: &[u8]) -> BoxedStrategy<String> {
    leaf(kinds)
        .prop_recursive(1, 4, 2, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 2)
                    .prop_map(|v| format!("{{ all: [{}] }}", v.join(", "))),
                prop::collection::vec(inner.clone(), 2)
                    .prop_map(|v| format!("{{ any: [{}] }}", v.join(", "))),
                inner.prop_map(|c| format!("{{ not: {c} }}")),
            ]
        })
        .boxed()
}

/// A rule's text after its id.
fn rule(kinds: &[u8]) -> BoxedStrategy<String> {
    (
        any::<bool>(),
        prop::sample::subsequence(PURPOSES.to_vec(), 1..=2),
        prop::sample::subsequence(CATEGORIES.to_vec(), 0..=2),
        prop::option::of(condition(kinds)),
        prop::option::of(condition(kinds)),
        prop::sample::subsequence(OBLIGATIONS.to_vec(), 0..=2),
        prop::bool::weighted(0.1),
    )
        .prop_map(
            |(permit, purposes, categories, when, unless, obligations, monitor)| {
                let mut out = format!(
                    "    effect: {}\n    purposes: [{}]\n",
                    if permit { "permit" } else { "deny" },
                    purposes.join(", ")
                );
                if !categories.is_empty() {
                    out.push_str(&format!(
                        "    dataCategories: [{}]\n",
                        categories.join(", ")
                    ));
                }
                for (key, c) in [("when", when), ("unless", unless)] {
                    if let Some(c) = c {
                        out.push_str(&format!("    {key}: {c}\n"));
                    }
                }
                if permit && !obligations.is_empty() {
                    out.push_str("    obligations:\n");
                    for o in obligations {
                        out.push_str(&format!("      - id: {o}\n"));
                    }
                }
                if monitor {
                    out.push_str("    mode: monitor\n");
                }
                out
            },
        )
        .boxed()
}

/// A claims entry's text after its id.
fn claim() -> impl Strategy<Value = String> {
    (
        prop::sample::subsequence(PATTERNS.to_vec(), 1..=2),
        prop::sample::subsequence(PURPOSES.to_vec(), 1..=2),
    )
        .prop_map(|(subjects, purposes)| {
            let quoted: Vec<String> = subjects.iter().map(|s| format!("\"{s}\"")).collect();
            format!(
                "    subjects: [{}]\n    purposes: [{}]\n",
                quoted.join(", "),
                purposes.join(", ")
            )
        })
}

/// Rules and claims (`None`: no claims section).
type Side = (Vec<String>, Option<Vec<String>>);

fn side(kinds: &[u8]) -> BoxedStrategy<Side> {
    let claims = if kinds.contains(&SUBJECT) {
        prop::option::weighted(0.6, prop::collection::vec(claim(), 1..3)).boxed()
    } else {
        Just(None).boxed()
    };
    (prop::collection::vec(rule(kinds), 0..4), claims).boxed()
}

/// The kinds, the rules both policies share, the old and the new side.
fn pair() -> impl Strategy<Value = (Vec<u8>, Vec<String>, Side, Side)> {
    kinds().prop_flat_map(|kinds| {
        (
            Just(kinds.clone()),
            prop::collection::vec(rule(&kinds), 0..4),
            side(&kinds),
            side(&kinds),
        )
    })
}

fn render(shared: &[String], side: &Side) -> String {
    let mut out = String::from("version: 1\nname: generated\npurposes:\n");
    for p in PURPOSES {
        out.push_str(&format!("  {p}: Purpose {p}\n"));
    }
    out.push_str("dataCategories:\n");
    for c in CATEGORIES {
        out.push_str(&format!("  {c}: Category {c}\n"));
    }
    let rules: Vec<&String> = shared.iter().chain(&side.0).collect();
    out.push_str(if rules.is_empty() {
        "rules: []\n"
    } else {
        "rules:\n"
    });
    for (i, r) in rules.iter().enumerate() {
        out.push_str(&format!("  - id: r{i}\n{r}"));
    }
    if let Some(claims) = &side.1 {
        out.push_str("claims:\n");
        for (i, c) in claims.iter().enumerate() {
            out.push_str(&format!("  - id: k{i}\n{c}"));
        }
    }
    out
}

fn load(text: &str) -> Policy {
    Policy::parse("generated.yaml", text).unwrap_or_else(|d| panic!("{d}\n{text}"))
}

fn subsets<'a>(of: &[&'a str]) -> Vec<Vec<&'a str>> {
    (0..1usize << of.len())
        .map(|n| {
            of.iter()
                .enumerate()
                .filter(|(i, _)| (n >> i) & 1 == 1)
                .map(|(_, v)| *v)
                .collect()
        })
        .collect()
}

/// One way to vary a request.
type Edit = Box<dyn Fn(&mut DecisionRequest)>;

/// Every value of one kind of fact over the vocabulary.
fn values(kind: u8) -> Vec<Edit> {
    let mut out: Vec<Edit> = Vec::new();
    match kind {
        TENANCY => {
            for (t, o) in [("", ""), ("t1", ""), ("", "t1"), ("t1", "t1"), ("t1", "t2")] {
                out.push(Box::new(move |r: &mut DecisionRequest| {
                    r.subject.tenant = t.into();
                    r.resource.owner_tenant = o.into();
                }));
            }
        }
        DEIDENTIFICATION => {
            for state in std::iter::once(None).chain(Deidentification::ALL.map(Some)) {
                out.push(Box::new(move |r: &mut DecisionRequest| {
                    r.resource.deidentification = state;
                }));
            }
        }
        GROUP_SIZE => {
            for k in [
                None,
                Some(0),
                Some(9),
                Some(10),
                Some(49),
                Some(50),
                Some(1000),
            ] {
                out.push(Box::new(move |r: &mut DecisionRequest| {
                    r.resource.group_size = k
                }));
            }
        }
        ROLES_READ => {
            for roles in subsets(&["admin", "auditor", "ops", "clerk"]) {
                out.push(Box::new(move |r: &mut DecisionRequest| {
                    r.subject.roles = roles.iter().map(|r| (*r).to_string()).collect();
                }));
            }
        }
        SUBJECT => {
            for id in SUBJECTS {
                out.push(Box::new(move |r: &mut DecisionRequest| {
                    r.subject.id = (*id).into()
                }));
            }
        }
        ATTRIBUTES => {
            for (c, a) in [
                ("", ""),
                ("ps", ""),
                ("os", "eu"),
                ("", "us"),
                ("ps", "ch"),
                ("x", "x"),
            ] {
                out.push(Box::new(move |r: &mut DecisionRequest| {
                    r.context.attributes.clear();
                    r.resource.attributes.clear();
                    if !c.is_empty() {
                        r.context.attributes.insert("processing".into(), c.into());
                    }
                    if !a.is_empty() {
                        r.resource.attributes.insert("region".into(), a.into());
                    }
                }));
            }
        }
        INSTRUCTION => {
            for given in ["", "doc"] {
                out.push(Box::new(move |r: &mut DecisionRequest| {
                    r.context.customer_instruction = given.into();
                }));
            }
        }
        // Origins are always varied.
        _ => out.push(Box::new(|_: &mut DecisionRequest| {})),
    }
    out
}

/// Calls `visit` with every request over the vocabulary: each purpose,
/// category, set of origins and set of supported obligations, with every
/// value of the `kinds` of fact the case's conditions read.
fn every_request(kinds: &[u8], mut visit: impl FnMut(&DecisionRequest)) {
    let mut dims: Vec<Vec<Edit>> = kinds.iter().map(|&k| values(k)).collect();
    let mut fixed: Vec<Edit> = Vec::new();
    for origin in subsets(CATEGORIES) {
        fixed.push(Box::new(move |r: &mut DecisionRequest| {
            r.resource.origin = origin.iter().map(|o| (*o).to_string()).collect();
        }));
    }
    dims.push(fixed);
    let mut supported: Vec<Edit> = Vec::new();
    for obligations in subsets(OBLIGATIONS) {
        supported.push(Box::new(move |r: &mut DecisionRequest| {
            r.supported_obligations = obligations.iter().map(|o| (*o).to_string()).collect();
        }));
    }
    dims.push(supported);
    let total: usize = dims.iter().map(Vec::len).product();
    for purpose in PURPOSES {
        for category in CATEGORIES {
            for n in 0..total {
                let mut req = DecisionRequest {
                    purpose: (*purpose).to_string(),
                    ..DecisionRequest::default()
                };
                req.resource.category = (*category).to_string();
                let mut rest = n;
                for dim in &dims {
                    dim[rest % dim.len()](&mut req);
                    rest /= dim.len();
                }
                visit(&req);
            }
        }
    }
}

/// The cells the diff reports as `newly` (permitted or refused), or as
/// untried.
fn reported(diff: &PolicyDiff, permitted: bool) -> BTreeSet<(String, String)> {
    diff.cells
        .iter()
        .filter(|c| {
            c.cannot_tell()
                || if permitted {
                    c.newly_permitted.is_some()
                } else {
                    c.newly_refused.is_some()
                }
        })
        .map(|c| (c.purpose.to_string(), c.category.to_string()))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 64,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// Every request the brute force finds decided otherwise is in a cell
    /// the diff reports so (or cannot tell), and each example the diff
    /// gives is decided as it says.
    #[test]
    fn diff_finds_every_request_newly_permitted_or_refused(
        (kinds, shared, old, new) in pair(),
    ) {
        let (old_text, new_text) = (render(&shared, &old), render(&shared, &new));
        let (old, new) = (load(&old_text), load(&new_text));
        let diff = old.diff(&new);
        let widened = reported(&diff, true);
        let narrowed = reported(&diff, false);
        let mut missed: Option<String> = None;
        every_request(&kinds, |req| {
            if missed.is_some() {
                return;
            }
            let (o, n) = (old.evaluate(req).decision, new.evaluate(req).decision);
            let cell = (req.purpose.clone(), req.resource.category.clone());
            let (permit, refuse) = (n == Decision::Permit, o == Decision::Permit);
            if permit && !refuse && !widened.contains(&cell) {
                missed = Some(format!("newly permitted, not reported: {req:?}"));
            }
            if refuse && !permit && !narrowed.contains(&cell) {
                missed = Some(format!("newly refused, not reported: {req:?}"));
            }
        });
        prop_assert!(missed.is_none(), "{}\nold:\n{old_text}\nnew:\n{new_text}", missed.unwrap_or_default());
        for cell in &diff.cells {
            if let Some(e) = &cell.newly_permitted {
                prop_assert_eq!(new.evaluate(&e.request).decision, Decision::Permit);
                prop_assert_ne!(old.evaluate(&e.request).decision, Decision::Permit);
            }
            if let Some(e) = &cell.newly_refused {
                prop_assert_eq!(old.evaluate(&e.request).decision, Decision::Permit);
                prop_assert_ne!(new.evaluate(&e.request).decision, Decision::Permit);
            }
        }
    }
}
