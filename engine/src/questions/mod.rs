//! The questions `diff` asks both policies on one purpose × category cell:
//! every request either policy could decide otherwise than another,
//! up to requests no rule of either policy can tell apart.
//!
//! The facts are those the enforced rules of both policies read, on the
//! cell and on each category a resource of the cell may be derived from
//! (semantic 4: each origin's rules decide too). Each fact takes one value
//! for each group of values the rules tell apart, never fewer:
//! - tenancy: not given, the same tenant, different tenants (one of the
//!   two given is as undecidable as neither);
//! - de-identification: not given and each state;
//! - group size: not given, each threshold and the size just below it;
//! - origin: every set of the categories a permit rule of either policy
//!   reaches on the purpose (derived from any other category, the data is
//!   permitted by neither), one category for each group the same rules
//!   reach and the same `origin` conditions list; the cell's own category
//!   too where an `origin` condition reads it;
//! - subject id: with `claims` or `subject.id` conditions, one id for each
//!   way the claims' patterns for the purpose and the listed ids can match
//!   together (`subjects.rs`), and none;
//! - roles: every set of the roles conditions name, one role for each
//!   group named by the same conditions;
//! - context and data attributes: per key, not given and one value for
//!   each group listed by the same conditions (an unlisted value matches
//!   nothing, as not given);
//! - customer instruction: absent, present;
//! - supported obligations: every set of the permit rules' obligations,
//!   those the same rules carry taken together.
//!
//! What no rule reads is left out: the action, the request id, monitor
//! rules (they never change a decision), an inherited purpose (it only
//! denies, the same in both). A cell where neither policy has a permit
//! rule is one question. Past [`MAX_CELL_QUESTIONS`], or what is left of
//! the diff's budget, the cell is not tried at all and says what it
//! would have taken ([`Untried`]): the diff never says "nothing newly
//! permitted" on a sample.

mod subjects;

use std::collections::{BTreeMap, BTreeSet};
use std::ops::ControlFlow;

use serde::Serialize;

use super::diagnostic::plural;
use super::model::{Condition, Deidentification, Effect, Mode, NodeIdx, Rule};
use super::policy::{Policy, RuleIdx};
use super::request::{DecisionRequest, Resource};
use subjects::{MAX_STATES, Pattern, witnesses};

/// Most requests one cell of a diff asks (each decided by both policies).
pub const MAX_CELL_QUESTIONS: usize = 65_536;

/// One fact of an untried cell and how many values it would take.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FactValues {
    pub fact: String,
    /// Values (for roles, origins and obligations: sets), saturating.
    pub values: u64,
}

/// Why a cell was not tried: what every combination would have taken.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Untried {
    /// Requests every combination takes (saturating).
    pub combinations: u64,
    /// Most the cell could ask: [`MAX_CELL_QUESTIONS`], or less where the
    /// diff's budget was spent on earlier cells.
    pub budget: usize,
    /// Each fact with its values, the most first.
    pub facts: Vec<FactValues>,
    /// The same in words.
    pub why: String,
}

/// Where a set of values goes in the request.
#[derive(Debug, Clone, Copy)]
enum Target {
    Origin,
    Roles,
    Obligations,
}

/// One value of a fact, set on the bare request.
#[derive(Debug, Clone)]
enum Set {
    /// The subject's tenant and the data's owner: the same or not.
    Tenancy(bool),
    Deidentification(Deidentification),
    GroupSize(u64),
    Subject(String),
    Context(String, String),
    Attribute(String, String),
    Instruction,
}

#[derive(Debug)]
enum Dimension {
    /// Not given, then each value.
    Values { fact: String, values: Vec<Set> },
    /// Every set of the groups (the empty set: not given).
    Subsets {
        fact: &'static str,
        groups: Vec<Vec<String>>,
        target: Target,
    },
}

impl Dimension {
    fn len(&self) -> u64 {
        match self {
            Dimension::Values { values, .. } => values.len() as u64 + 1,
            Dimension::Subsets { groups, .. } => u32::try_from(groups.len())
                .ok()
                .and_then(|n| 1u64.checked_shl(n))
                .filter(|&n| n > 0 && groups.len() < 64)
                .unwrap_or(u64::MAX),
        }
    }

    fn fact(&self) -> String {
        match self {
            Dimension::Values { fact, .. } => fact.clone(),
            Dimension::Subsets { fact, .. } => (*fact).to_string(),
        }
    }

    /// Sets value `n` (0: not given) on `req`.
    fn apply(&self, n: u64, req: &mut DecisionRequest) {
        match self {
            Dimension::Values { values, .. } => {
                let Some(set) = n
                    .checked_sub(1)
                    .and_then(|i| values.get(usize::try_from(i).ok()?))
                else {
                    return;
                };
                match set {
                    Set::Tenancy(same) => {
                        req.subject.tenant = "tenant-a".into();
                        req.resource.owner_tenant =
                            if *same { "tenant-a" } else { "tenant-b" }.into();
                    }
                    Set::Deidentification(s) => req.resource.deidentification = Some(*s),
                    Set::GroupSize(k) => req.resource.group_size = Some(*k),
                    Set::Subject(id) => req.subject.id.clone_from(id),
                    Set::Context(k, v) => {
                        req.context.attributes.insert(k.clone(), v.clone());
                    }
                    Set::Attribute(k, v) => {
                        req.resource.attributes.insert(k.clone(), v.clone());
                    }
                    Set::Instruction => {
                        req.context.customer_instruction = "documented instruction".into();
                    }
                }
            }
            Dimension::Subsets { groups, target, .. } => {
                let chosen: Vec<String> = groups
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| (n >> i) & 1 == 1)
                    .flat_map(|(_, g)| g.iter().cloned())
                    .collect();
                match target {
                    Target::Origin => req.resource.origin = chosen,
                    Target::Roles => req.subject.roles = chosen,
                    Target::Obligations => req.supported_obligations = chosen,
                }
            }
        }
    }
}

/// The requests of one cell.
#[derive(Debug)]
pub(crate) struct Questions {
    bare: DecisionRequest,
    dimensions: Vec<Dimension>,
}

impl Questions {
    /// How many requests [`Questions::for_each`] asks at most.
    pub(crate) fn len(&self) -> u64 {
        self.dimensions
            .iter()
            .fold(1u64, |n, d| n.saturating_mul(d.len()))
    }

    /// Calls `visit` with each request, the bare one first, until it
    /// breaks.
    pub(crate) fn for_each(&self, mut visit: impl FnMut(&DecisionRequest) -> ControlFlow<()>) {
        for n in 0..self.len() {
            let mut req = self.bare.clone();
            let mut rest = n;
            for dim in &self.dimensions {
                let len = dim.len().max(1);
                dim.apply(rest % len, &mut req);
                rest /= len;
            }
            if visit(&req).is_break() {
                return;
            }
        }
    }
}

/// Everything the rules in play read.
#[derive(Default)]
struct Facts {
    tenancy: bool,
    deidentification: bool,
    group_sizes: BTreeSet<u64>,
    /// Each `origin` condition: its policy and the categories it lists.
    origin_lists: Vec<(usize, Vec<NodeIdx>)>,
    /// Each `subject.id` condition's ids.
    subject_lists: Vec<Vec<String>>,
    role_lists: Vec<Vec<String>>,
    context: BTreeMap<String, Vec<Vec<String>>>,
    attributes: BTreeMap<String, Vec<Vec<String>>>,
    instruction: bool,
    /// Each obligation of a permit rule, and the rules (policy, index)
    /// that carry it.
    obligations: BTreeMap<String, BTreeSet<(usize, RuleIdx)>>,
}

impl Facts {
    fn rule(&mut self, side: usize, r: RuleIdx, rule: &Rule) {
        for condition in rule.when.iter().chain(&rule.unless) {
            self.condition(side, condition);
        }
        if rule.effect == Effect::Permit {
            for o in &rule.obligations {
                self.obligations
                    .entry(o.id.to_string())
                    .or_default()
                    .insert((side, r));
            }
        }
    }

    fn condition(&mut self, side: usize, condition: &Condition) {
        match condition {
            Condition::SameTenant(_) => self.tenancy = true,
            Condition::Deidentification(_) => self.deidentification = true,
            Condition::GroupSizeAtLeast { min, .. } => {
                self.group_sizes.insert(*min);
                self.group_sizes.insert(min.saturating_sub(1));
            }
            Condition::OriginWithin { category_idx, .. } => {
                self.origin_lists.push((side, category_idx.clone()));
            }
            Condition::SubjectId(ids) => self.subject_lists.push(ids.clone()),
            Condition::SubjectRole(roles) => self.role_lists.push(roles.clone()),
            Condition::Context { key, values } => self
                .context
                .entry(key.clone())
                .or_default()
                .push(values.clone()),
            Condition::Resource { key, values } => self
                .attributes
                .entry(key.clone())
                .or_default()
                .push(values.clone()),
            Condition::CustomerInstruction(_) => self.instruction = true,
            Condition::All(parts) | Condition::Any(parts) => {
                parts.iter().for_each(|p| self.condition(side, p));
            }
            Condition::Not(inner) => self.condition(side, inner),
        }
    }
}

/// One value for each group of `lists`' values listed by the same lists,
/// in the order they first appear.
fn one_per_group(lists: &[Vec<String>]) -> Vec<String> {
    let mut seen: BTreeSet<BTreeSet<usize>> = BTreeSet::new();
    let mut out = Vec::new();
    for value in lists.iter().flatten() {
        let listed_by: BTreeSet<usize> = lists
            .iter()
            .enumerate()
            .filter(|(_, l)| l.contains(value))
            .map(|(i, _)| i)
            .collect();
        if seen.insert(listed_by) {
            out.push(value.clone());
        }
    }
    out
}

/// Whether `policy` has an enforced permit rule that could apply to
/// `purpose` on the category `category`.
fn permits(policy: &Policy, purpose: NodeIdx, category: &str) -> bool {
    policy.categories().lookup(category).is_some_and(|c| {
        policy
            .candidates(purpose, c)
            .filter_map(|r| policy.rule(r))
            .any(|r| r.mode == Mode::Enforce && r.effect == Effect::Permit)
    })
}

/// The enforced rules of `policy` that could apply to `purpose` on
/// `category`, `None` where it does not declare the category.
fn enforced(policy: &Policy, purpose: NodeIdx, category: &str) -> Option<Vec<RuleIdx>> {
    let c = policy.categories().lookup(category)?;
    Some(
        policy
            .candidates(purpose, c)
            .filter(|&r| {
                policy
                    .rule(r)
                    .is_some_and(|rule| rule.mode == Mode::Enforce)
            })
            .collect(),
    )
}

/// The questions of `purpose` × `category` for `policies` (old, new), or
/// why there are too many to ask within `budget` (at most
/// [`MAX_CELL_QUESTIONS`]).
pub(crate) fn questions(
    policies: [&Policy; 2],
    purpose: &str,
    category: &str,
    budget: usize,
) -> Result<Questions, Untried> {
    let bare = DecisionRequest {
        purpose: purpose.to_string(),
        resource: Resource {
            category: category.to_string(),
            ..Resource::default()
        },
        ..DecisionRequest::default()
    };
    // Each policy's index of the purpose, where it declares it.
    let sides: Vec<Option<NodeIdx>> = policies
        .iter()
        .map(|p| p.purposes().lookup(purpose))
        .collect();
    let permitting = |id: &str| {
        policies
            .iter()
            .zip(&sides)
            .any(|(policy, p)| p.is_some_and(|p| permits(policy, p, id)))
    };
    if !permitting(category) {
        return Ok(Questions {
            bare,
            dimensions: Vec::new(),
        });
    }
    let mut origins: Vec<String> = Vec::new();
    let mut named: BTreeSet<&str> = BTreeSet::from([category]);
    for policy in policies {
        for (_, node) in policy.categories().nodes() {
            if named.insert(&node.id) && permitting(&node.id) {
                origins.push(node.id.to_string());
            }
        }
    }
    let mut facts = Facts::default();
    for (side, (policy, p)) in policies.iter().zip(&sides).enumerate() {
        let Some(p) = *p else { continue };
        let mut read = BTreeSet::new();
        for id in std::iter::once(category).chain(origins.iter().map(String::as_str)) {
            for r in enforced(policy, p, id).unwrap_or_default() {
                if read.insert(r) {
                    if let Some(rule) = policy.rule(r) {
                        facts.rule(side, r, rule);
                    }
                }
            }
        }
    }
    let dimensions = dimensions(policies, &sides, category, origins, facts)?;
    let questions = Questions { bare, dimensions };
    let budget = budget.min(MAX_CELL_QUESTIONS);
    if questions.len() > budget as u64 {
        return Err(untried(&questions.dimensions, questions.len(), budget));
    }
    Ok(questions)
}

fn untried(dimensions: &[Dimension], combinations: u64, budget: usize) -> Untried {
    let mut facts: Vec<FactValues> = dimensions
        .iter()
        .map(|d| FactValues {
            fact: d.fact(),
            values: d.len(),
        })
        .collect();
    facts.sort_by_key(|f| std::cmp::Reverse(f.values));
    let listed: Vec<String> = facts
        .iter()
        .map(|f| format!("{}: {}", f.fact, f.values))
        .collect();
    Untried {
        combinations,
        budget,
        why: format!(
            "not tried: {} combinations of facts ({}), more than the {budget} this cell may ask",
            if combinations == u64::MAX {
                "more than 18446744073709551615".to_string()
            } else {
                combinations.to_string()
            },
            listed.join(", ")
        ),
        facts,
    }
}

/// The values worth asking of each fact (see the module's words).
fn dimensions(
    policies: [&Policy; 2],
    sides: &[Option<NodeIdx>],
    category: &str,
    origins: Vec<String>,
    facts: Facts,
) -> Result<Vec<Dimension>, Untried> {
    let mut dims = Vec::new();
    let values = |fact: &str, values: Vec<Set>| Dimension::Values {
        fact: fact.to_string(),
        values,
    };
    if facts.tenancy {
        dims.push(values(
            "tenancy",
            vec![Set::Tenancy(true), Set::Tenancy(false)],
        ));
    }
    if facts.deidentification {
        let states = Deidentification::ALL.map(Set::Deidentification);
        dims.push(values("de-identification", states.to_vec()));
    }
    if !facts.group_sizes.is_empty() {
        let sizes = facts.group_sizes.iter().map(|&k| Set::GroupSize(k));
        dims.push(values("group size", sizes.collect()));
    }
    let origin_groups = origin_groups(policies, sides, category, origins, &facts.origin_lists);
    if !origin_groups.is_empty() {
        dims.push(Dimension::Subsets {
            fact: "origin",
            groups: origin_groups.into_iter().map(|o| vec![o]).collect(),
            target: Target::Origin,
        });
    }
    if let Some(subjects) = subject_ids(policies, sides, &facts.subject_lists)? {
        dims.push(values(
            "subject id",
            subjects.into_iter().map(Set::Subject).collect(),
        ));
    }
    let roles = one_per_group(&facts.role_lists);
    if !roles.is_empty() {
        dims.push(Dimension::Subsets {
            fact: "roles",
            groups: roles.into_iter().map(|r| vec![r]).collect(),
            target: Target::Roles,
        });
    }
    for (key, lists) in &facts.context {
        let set = one_per_group(lists)
            .into_iter()
            .map(|v| Set::Context(key.clone(), v));
        dims.push(values(&format!("context `{key}`"), set.collect()));
    }
    for (key, lists) in &facts.attributes {
        let set = one_per_group(lists)
            .into_iter()
            .map(|v| Set::Attribute(key.clone(), v));
        dims.push(values(&format!("data attribute `{key}`"), set.collect()));
    }
    if facts.instruction {
        dims.push(values("customer instruction", vec![Set::Instruction]));
    }
    // Obligations the same rules carry are only ever needed together.
    let mut carried: BTreeMap<BTreeSet<(usize, RuleIdx)>, Vec<String>> = BTreeMap::new();
    for (id, carriers) in facts.obligations {
        carried.entry(carriers).or_default().push(id);
    }
    if !carried.is_empty() {
        dims.push(Dimension::Subsets {
            fact: "supported obligations",
            groups: carried.into_values().collect(),
            target: Target::Obligations,
        });
    }
    dims.retain(|d| d.len() > 1);
    Ok(dims)
}

/// One origin for each group of categories that the same rules reach and
/// the same `origin` conditions list; the cell's own category where such
/// a condition reads it.
fn origin_groups(
    policies: [&Policy; 2],
    sides: &[Option<NodeIdx>],
    category: &str,
    origins: Vec<String>,
    lists: &[(usize, Vec<NodeIdx>)],
) -> Vec<String> {
    let own = (!lists.is_empty()).then(|| category.to_string());
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for id in own.into_iter().chain(origins) {
        let rules: Vec<Option<Vec<RuleIdx>>> = policies
            .iter()
            .zip(sides)
            .map(|(policy, p)| p.and_then(|p| enforced(policy, p, &id)))
            .collect();
        let within: Vec<bool> = lists
            .iter()
            .map(|(side, listed)| {
                policies.get(*side).is_some_and(|policy| {
                    policy
                        .categories()
                        .lookup(&id)
                        .is_some_and(|c| listed.iter().any(|&l| policy.categories().covers(l, c)))
                })
            })
            .collect();
        if seen.insert((id == category, rules, within)) {
            out.push(id);
        }
    }
    out
}

/// With `claims` or `subject.id` conditions: the non-empty subject ids
/// worth asking (none is the bare request's).
fn subject_ids(
    policies: [&Policy; 2],
    sides: &[Option<NodeIdx>],
    lists: &[Vec<String>],
) -> Result<Option<Vec<String>>, Untried> {
    let mut groups: Vec<Vec<Pattern>> = Vec::new();
    let mut claims = false;
    for (policy, p) in policies.iter().zip(sides) {
        let (Some(p), Some(all)) = (p, policy.claims()) else {
            continue;
        };
        claims = true;
        groups.push(
            all.iter()
                .filter(|c| {
                    c.purpose_idx
                        .iter()
                        .any(|&listed| policy.purposes().covers(listed, *p))
                })
                .flat_map(|c| c.subjects.iter().map(|s| Pattern::glob(s)))
                .collect(),
        );
    }
    groups.extend(
        lists
            .iter()
            .map(|ids| ids.iter().map(|id| Pattern::literal(id)).collect()),
    );
    if !claims && lists.is_empty() {
        return Ok(None);
    }
    match witnesses(&groups) {
        Ok(ids) => Ok(Some(ids)),
        Err(states) => Err(Untried {
            combinations: u64::MAX,
            budget: MAX_STATES,
            facts: vec![FactValues {
                fact: "subject id".to_string(),
                values: u64::MAX,
            }],
            why: format!(
                "not tried: the subject ids the claims' patterns and the listed ids can \
                 match take more than {} of their states to find",
                plural(states.saturating_sub(1), "state", "states")
            ),
        }),
    }
}
