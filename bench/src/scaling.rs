//! Decision time as the policy grows: up to 1,000 rules and 10,000
//! purposes. The index should keep it near flat.

use serde::Serialize;

use purposegate_bench::requests::Lcg;
use purposegate_bench::timing::{Sample, per_op};
use purposegate_engine::{DecisionRequest, Policy, PolicySource, Resource};

#[derive(Debug, Clone, Serialize)]
pub struct Point {
    pub rules: usize,
    pub purposes: usize,
    pub median_ns: f64,
    pub p99_ns: f64,
    pub runs: usize,
}

const CATEGORIES: usize = 20;
/// The size of one part: large policies are written in files of about
/// this size (far below a policy file's limit).
const PART_BYTES: usize = 128 * 1024;

/// A policy with `purposes` purposes (ten children per root), `CATEGORIES`
/// categories and `rules` rules: permits and conditional denies on random
/// purposes and categories. In parts of about [`PART_BYTES`], as a large
/// policy is written.
fn synthetic(rules: usize, purposes: usize, rng: &mut Lcg) -> Vec<String> {
    let mut parts = Vec::new();
    let mut text = String::from("version: 1\nname: synthetic\npurposes:\n");
    let roots = purposes.div_ceil(10);
    let mut ids = Vec::with_capacity(purposes);
    for r in 0..roots {
        let root = format!("p{r}");
        // A new part before this one would outgrow a file.
        if text.len() > PART_BYTES - 4096 {
            parts.push(std::mem::replace(
                &mut text,
                String::from("version: 1\npurposes:\n"),
            ));
        }
        text.push_str(&format!("  {root}: Purpose {root}\n"));
        ids.push(root.clone());
        for c in 0..9 {
            if ids.len() >= purposes {
                break;
            }
            let child = format!("{root}.c{c}");
            text.push_str(&format!("  {child}: Purpose {child}\n"));
            ids.push(child);
        }
    }
    parts.push(std::mem::replace(&mut text, String::from("version: 1\n")));
    text.push_str("dataCategories:\n");
    for c in 0..CATEGORIES {
        text.push_str(&format!("  cat{c}: Category {c}\n"));
    }
    text.push_str("rules:\n");
    for i in 0..rules {
        let purpose = ids.get(rng.below(ids.len())).cloned().unwrap_or_default();
        let category = rng.below(CATEGORIES);
        if i % 4 == 3 {
            text.push_str(&format!(
                "  - id: r{i}\n    effect: deny\n    purposes: [{purpose}]\n    dataCategories: [cat{category}]\n    when: {{ sameTenant: false }}\n"
            ));
        } else {
            text.push_str(&format!(
                "  - id: r{i}\n    effect: permit\n    purposes: [{purpose}]\n    dataCategories: [cat{category}]\n"
            ));
        }
    }
    parts.push(text);
    parts
}

pub fn run() -> Result<Vec<Point>, String> {
    let mut points = Vec::new();
    let grid: &[(usize, usize)] = &[
        (10, 100),
        (100, 100),
        (1000, 100),
        (10, 1000),
        (100, 1000),
        (1000, 1000),
        (10, 10_000),
        (100, 10_000),
        (1000, 10_000),
    ];
    for &(rules, purposes) in grid {
        let mut rng = Lcg::new((rules * 31 + purposes) as u64);
        let parts = synthetic(rules, purposes, &mut rng);
        let names: Vec<String> = (0..parts.len())
            .map(|i| format!("synthetic-{i}.yaml"))
            .collect();
        let sources: Vec<PolicySource<'_>> = names
            .iter()
            .zip(&parts)
            .map(|(name, text)| PolicySource { name, text })
            .collect();
        let policy = Policy::load(&sources).map_err(|d| d.to_string())?;
        let ids: Vec<String> = policy.purposes().ids().map(str::to_string).collect();
        let mut requests: Vec<DecisionRequest> = (0..200)
            .map(|_| DecisionRequest {
                purpose: ids.get(rng.below(ids.len())).cloned().unwrap_or_default(),
                resource: Resource {
                    category: format!("cat{}", rng.below(CATEGORIES)),
                    owner_tenant: "a".into(),
                    ..Resource::default()
                },
                subject: purposegate_engine::Subject {
                    id: "s".into(),
                    tenant: if rng.below(2) == 0 {
                        "a".into()
                    } else {
                        "b".into()
                    },
                    roles: Vec::new(),
                },
                ..DecisionRequest::default()
            })
            .collect();
        let sample = Sample::new(
            "scaling",
            per_op(&mut requests, 10, 64, |r| {
                std::hint::black_box(policy.evaluate(std::hint::black_box(r)));
            }),
        );
        println!(
            "scaling: {rules:>5} rules, {purposes:>6} purposes: median {:>6.0} ns, p99 {:>6.0} ns",
            sample.median_ns, sample.p99_ns
        );
        points.push(Point {
            rules,
            purposes,
            median_ns: sample.median_ns,
            p99_ns: sample.p99_ns,
            runs: sample.runs,
        });
    }
    Ok(points)
}
