//! Deterministic requests over the default policy's ids, with the edges
//! that decide its rules: tenants equal, different and missing; every
//! de-identification state and none; group sizes below, at and above K;
//! derived data; and unknown ids.

use purposegate_engine::{Context, DecisionRequest, Deidentification, Resource, Subject};

// Not `provide.personalization`: it depends on the tenant's choices,
// which the Cedar and Rego translations cannot read (and a request that
// names no owner tenant is INDETERMINATE there, by design).
const PURPOSES: &[&str] = &[
    "provide",
    "troubleshoot",
    "troubleshoot.security-incident",
    "improve",
    "improve.product-fixes",
    "professional-services",
    "professional-services.technical-support",
    "professional-services.data-migration",
    "lbo",
    "lbo.billing",
    "lbo.internal-reporting",
    "lbo.fraud-defense",
    "profiling",
    "advertising",
    "market-research",
    "marketing",
    "lbo.biling",
];

const CATEGORIES: &[&str] = &[
    "customer-data",
    "diagnostic-data",
    "service-generated-data",
    "professional-services-data",
    "feature-table",
];

const TENANTS: &[Option<&str>] = &[Some("contoso"), Some("fabrikam"), None];

/// A small linear congruential generator: the same requests every run.
#[derive(Debug, Clone)]
pub struct Lcg(u64);

impl Lcg {
    pub fn new(seed: u64) -> Self {
        Lcg(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }

    fn pick<T: Copy + Default>(&mut self, items: &[T]) -> T {
        let i = self.below(items.len());
        items.get(i).copied().unwrap_or_default()
    }
}

/// `n` requests from `seed`.
pub fn generate(n: usize, seed: u64) -> Vec<DecisionRequest> {
    let mut rng = Lcg::new(seed);
    (0..n)
        .map(|_| {
            let category = rng.pick(CATEGORIES).to_string();
            let origin = match rng.below(4) {
                0 => vec![rng.pick(CATEGORIES).to_string()],
                1 => vec![
                    rng.pick(CATEGORIES).to_string(),
                    rng.pick(CATEGORIES).to_string(),
                ],
                _ => Vec::new(),
            };
            let deidentification = match rng.below(6) {
                0 => None,
                i => Deidentification::ALL.get(i - 1).copied(),
            };
            let group_size = match rng.below(4) {
                0 => None,
                1 => Some(49),
                2 => Some(50),
                _ => Some(500),
            };
            DecisionRequest {
                subject: Subject {
                    id: "workload".into(),
                    tenant: rng.pick(TENANTS).unwrap_or("").to_string(),
                    roles: Vec::new(),
                },
                resource: Resource {
                    category,
                    owner_tenant: rng.pick(TENANTS).unwrap_or("").to_string(),
                    deidentification,
                    group_size,
                    origin,
                    ..Resource::default()
                },
                purpose: rng.pick(PURPOSES).to_string(),
                context: Context {
                    customer_instruction: if rng.below(5) == 0 {
                        "contract-7".into()
                    } else {
                        String::new()
                    },
                    ..Context::default()
                },
                ..DecisionRequest::default()
            }
        })
        .collect()
}
