//! One decision on the embedded default policy: a permit, a deny and a
//! not-applicable; and the policy explorer's whole matrix, computed once
//! per revision. Run: `cargo bench -p purposegate-engine --bench decision`.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};

/// How large one generated policy file is kept.
const PART_BYTES: usize = 128 * 1024;
use purposegate_engine::{
    Context, Decision, DecisionRequest, Deidentification, Policy, PolicySource, Resource, Subject,
    default_policy,
};

fn request(purpose: &str, category: &str) -> DecisionRequest {
    DecisionRequest {
        subject: Subject {
            id: "crm".into(),
            tenant: "contoso".into(),
            roles: Vec::new(),
        },
        resource: Resource {
            category: category.into(),
            owner_tenant: "contoso".into(),
            ..Resource::default()
        },
        purpose: purpose.into(),
        context: Context::default(),
        ..DecisionRequest::default()
    }
}

fn decision(c: &mut Criterion) {
    let Ok(policy) = default_policy::load() else {
        return;
    };
    let permit = request("provide.personalization", "customer-data");
    let deny = request("advertising", "customer-data");
    let not_applicable = request("lbo.billing", "customer-data");
    let mut aggregated = request("lbo.internal-reporting", "service-generated-data");
    aggregated.resource.deidentification = Some(Deidentification::Aggregated);
    aggregated.resource.group_size = Some(80);
    aggregated.resource.origin = vec!["customer-data".into(), "diagnostic-data".into()];

    let mut group = c.benchmark_group("decision");
    group.bench_function("permit", |b| b.iter(|| policy.evaluate(black_box(&permit))));
    group.bench_function("deny", |b| b.iter(|| policy.evaluate(black_box(&deny))));
    group.bench_function("not_applicable", |b| {
        b.iter(|| policy.evaluate(black_box(&not_applicable)))
    });
    group.bench_function("derived_aggregate_permit", |b| {
        b.iter(|| policy.evaluate(black_box(&aggregated)))
    });
    group.finish();
}

fn matrix(c: &mut Criterion) {
    let Ok(policy) = default_policy::load() else {
        return;
    };
    c.bench_function("matrix/default_policy", |b| {
        b.iter(|| black_box(&policy).matrix())
    });
}

/// A policy of `roots` roots with nine children each (`roots * 10`
/// purposes), in files each within the size a policy file may have:
/// permits over every root on two of four categories (one with an
/// obligation), a conditional prohibition on every seventh root, and a
/// permit on aggregated data for every purpose.
#[allow(clippy::print_stderr, reason = "a bench that cannot set up says why")]
fn wide_policy(roots: usize) -> Option<Policy> {
    let mut parts = Vec::new();
    let mut text = String::from("version: 1\nname: wide\npurposes:\n");
    let mut root_ids = Vec::with_capacity(roots);
    for r in 0..roots {
        if text.len() > PART_BYTES - 1024 {
            parts.push(std::mem::replace(
                &mut text,
                String::from("version: 1\npurposes:\n"),
            ));
        }
        text.push_str(&format!("  p{r}: P\n"));
        for c in 0..9 {
            text.push_str(&format!("  p{r}.{c}: P\n"));
        }
        root_ids.push(format!("p{r}"));
    }
    parts.push(std::mem::replace(&mut text, String::from("version: 1\n")));
    text.push_str("dataCategories:\n  c0: C\n  c1: C\n  c2: C\n  c3: C\n");
    text.push_str("rules:\n");
    for (i, chunk) in root_ids.chunks(100).enumerate() {
        text.push_str(&format!(
            "  - id: permit{i}\n    effect: permit\n    purposes: [{}]\n    dataCategories: [c0, c1]\n",
            chunk.join(", ")
        ));
    }
    let denied: Vec<String> = root_ids.iter().step_by(7).cloned().collect();
    for (i, chunk) in denied.chunks(100).enumerate() {
        text.push_str(&format!(
            "  - id: deny{i}\n    effect: deny\n    purposes: [{}]\n    when: {{ sameTenant: false }}\n",
            chunk.join(", ")
        ));
    }
    text.push_str(&format!(
        "  - id: aggregated\n    effect: permit\n    purposes: [{}]\n    when: {{ deidentification: aggregated }}\n    obligations: [{{ id: log }}]\n",
        root_ids.join(", ")
    ));
    parts.push(text);
    let names: Vec<String> = (0..parts.len()).map(|i| format!("wide-{i}.yaml")).collect();
    let sources: Vec<PolicySource<'_>> = names
        .iter()
        .zip(&parts)
        .map(|(name, text)| PolicySource { name, text })
        .collect();
    match Policy::load(&sources) {
        Ok(policy) => Some(policy),
        Err(d) => {
            eprintln!("wide policy: {d}");
            None
        }
    }
}

/// The reverse question on 10,000 purposes: every purpose reachable.
fn reverse(c: &mut Criterion) {
    let Some(policy) = wide_policy(1_000) else {
        return;
    };
    let mut facts = request("", "c0");
    facts.supported_obligations = vec!["log".into()];
    let mut group = c.benchmark_group("permitted_purposes");
    group.sample_size(10);
    group.bench_function("10k_purposes", |b| {
        b.iter(|| policy.permitted_purposes(black_box(&facts)))
    });
    let mut foreign = facts.clone();
    foreign.subject.tenant = "fabrikam".into();
    group.bench_function("10k_purposes_foreign_tenant", |b| {
        b.iter(|| policy.permitted_purposes(black_box(&foreign)))
    });
    // What the answer is defined as: `evaluate` asked of every purpose.
    let ids: Vec<String> = policy.purposes().ids().map(str::to_string).collect();
    group.bench_function("10k_purposes_evaluate_each", |b| {
        b.iter(|| {
            let mut one = facts.clone();
            ids.iter()
                .filter(|id| {
                    one.purpose.clone_from(id);
                    policy.evaluate(black_box(&one)).decision == Decision::Permit
                })
                .count()
        })
    });
    let nothing = request("", "c3");
    group.bench_function("10k_purposes_nothing_permitted", |b| {
        b.iter(|| policy.permitted_purposes(black_box(&nothing)))
    });
    group.finish();
}

criterion_group!(benches, decision, matrix, reverse);
criterion_main!(benches);
