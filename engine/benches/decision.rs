//! One decision on the embedded default policy: a permit, a deny and a
//! not-applicable; and the policy explorer's whole matrix, computed once
//! per revision. Run: `cargo bench -p purposegate-engine --bench decision`.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use purposegate_engine::{
    Context, DecisionRequest, Deidentification, Resource, Subject, default_policy,
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

criterion_group!(benches, decision, matrix);
criterion_main!(benches);
