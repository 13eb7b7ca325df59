//! The purposes × data categories matrix of the policy explorer, computed
//! by evaluating requests, never by a second reading of the rules.
//!
//! For each cell the rules that could apply (the same index a decision
//! uses) name the facts their conditions read: tenancy, de-identification,
//! group size, origins, subject, roles, context and data attributes, the
//! customer's instruction, supported obligations. The cell evaluates every
//! combination of those facts (each with "not given" among its values) with
//! [`Policy::evaluate`] itself, and is
//! - **permit** when every combination is permitted,
//! - **conditional** when some are and some are not (the rules' conditions
//!   say when, in words, with an example of each),
//! - **deny** when none is although rules speak,
//! - **not applicable** when no rule speaks.
//!
//! With `claims`, every request names a subject that may claim the purpose
//! (the first one the claims allow, its globs filled in), so the cell shows
//! what the rules allow such a caller and `Check` answers the same; a
//! purpose nobody may claim is denied everywhere. Past
//! [`MAX_COMBINATIONS`] a cell varies each fact on its own and says so
//! (`exhaustive: false`): a permit needing two facts at once may then be
//! missed.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde::Serialize;

use super::decision::Decision;
use super::diagnostic::plural;
use super::model::{Condition, Deidentification, Effect, Mode, NodeIdx, Rule};
use super::policy::Policy;
use super::request::{DecisionRequest, Resource, Subject};

/// Most fact combinations evaluated for one cell; past it, each fact is
/// varied on its own instead.
pub const MAX_COMBINATIONS: usize = 4096;
/// Most cells (purposes × categories) a matrix is drawn for; a larger
/// policy still serves decisions, its matrix is left out and says why.
pub const MAX_CELLS: usize = 2_500;
/// Most evaluations one matrix makes in all; once spent, the remaining
/// cells vary each fact on its own.
pub const MAX_EVALUATIONS: usize = 250_000;
/// Most values tried for one fact (the ids a condition lists, say).
const MAX_FACT_VALUES: usize = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CellKind {
    Permit,
    Deny,
    Conditional,
    NotApplicable,
}

impl CellKind {
    pub fn as_str(self) -> &'static str {
        match self {
            CellKind::Permit => "permit",
            CellKind::Deny => "deny",
            CellKind::Conditional => "conditional",
            CellKind::NotApplicable => "not-applicable",
        }
    }
}

/// One purpose on one data category.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Cell {
    pub purpose: Arc<str>,
    pub category: Arc<str>,
    pub kind: CellKind,
    /// What `Check` answers for a request naming only this purpose and
    /// category.
    pub decision: Decision,
    pub rule_ids: Vec<Arc<str>>,
    pub reason: String,
    /// The enforced rules that could apply here, as their places in the
    /// policy's rules (the rules carry their text once, not per cell).
    pub rules: Vec<usize>,
    /// For a conditional cell: a request that is permitted…
    #[serde(skip_serializing_if = "Option::is_none")]
    pub permitted_example: Option<DecisionRequest>,
    /// …and one that is not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refused_example: Option<DecisionRequest>,
    /// For a deny cell: a request no rule speaks on (a prohibition's
    /// `unless` holds, say), so it is `NOT_APPLICABLE`: lifting the
    /// prohibition permits nothing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lifted_example: Option<DecisionRequest>,
    /// Fact combinations evaluated.
    pub evaluated: usize,
    /// Whether every combination was evaluated (see [`MAX_COMBINATIONS`]).
    pub exhaustive: bool,
    /// When the purpose depends on choices (the policy's `choices`): by
    /// whom, in words. `kind` and the examples are then what the rules
    /// decide where the choices allow it; `decision` is what a request
    /// naming only the purpose and category gets (`INDETERMINATE`: whose
    /// choices to read is not said).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub choices: Option<String>,
}

/// Rows are purposes, columns data categories, both in declaration order.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Matrix {
    pub purposes: Vec<Arc<str>>,
    pub categories: Vec<Arc<str>>,
    /// `cells[p][c]`; empty when the matrix is left out.
    pub cells: Vec<Vec<Cell>>,
    /// Why the matrix is left out ([`MAX_CELLS`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub omitted: Option<String>,
    /// Evaluations made in all.
    pub evaluated: usize,
    /// Whether [`MAX_EVALUATIONS`] ran out, so later cells were tried fact
    /// by fact.
    pub budget_spent: bool,
}

/// One way a request can differ: the values a fact takes, each a change
/// to the bare request. The first value is always "not given".
type Edit = Box<dyn Fn(&mut DecisionRequest)>;

struct Dimension {
    values: Vec<Edit>,
}

impl Policy {
    /// The whole matrix. Deterministic for a revision: compute once per
    /// revision.
    pub fn matrix(&self) -> Matrix {
        let purposes: Vec<(NodeIdx, Arc<str>)> = self
            .purposes()
            .nodes()
            .map(|(i, n)| (i, n.id.clone()))
            .collect();
        let categories: Vec<(NodeIdx, Arc<str>)> = self
            .categories()
            .nodes()
            .map(|(i, n)| (i, n.id.clone()))
            .collect();
        let ids = |list: &[(NodeIdx, Arc<str>)]| list.iter().map(|(_, id)| id.clone()).collect();
        let size = purposes.len().saturating_mul(categories.len());
        if size > MAX_CELLS {
            return Matrix {
                purposes: ids(&purposes),
                categories: ids(&categories),
                cells: Vec::new(),
                omitted: Some(format!(
                    "the policy has {} and {}, {size} cells; the matrix is drawn for at most {MAX_CELLS}",
                    plural(purposes.len(), "purpose", "purposes"),
                    plural(categories.len(), "data category", "data categories")
                )),
                evaluated: 0,
                budget_spent: false,
            };
        }
        let mut left = MAX_EVALUATIONS;
        let cells = purposes
            .iter()
            .map(|(p, purpose)| {
                categories
                    .iter()
                    .map(|(c, category)| self.cell(*p, purpose, *c, category, &mut left))
                    .collect()
            })
            .collect();
        Matrix {
            purposes: ids(&purposes),
            categories: ids(&categories),
            cells,
            omitted: None,
            evaluated: MAX_EVALUATIONS.saturating_sub(left),
            budget_spent: left == 0,
        }
    }

    pub(crate) fn cell(
        &self,
        p: NodeIdx,
        purpose: &Arc<str>,
        c: NodeIdx,
        category: &Arc<str>,
        left: &mut usize,
    ) -> Cell {
        let rules: Vec<(usize, &Rule)> = self
            .candidates(p, c)
            .filter_map(|r| self.rule(r).map(|rule| (r as usize, rule)))
            .filter(|(_, r)| r.mode == Mode::Enforce)
            .collect();
        let rule_indexes: Vec<usize> = rules.iter().map(|(i, _)| *i).collect();
        let rules: Vec<&Rule> = rules.into_iter().map(|(_, r)| r).collect();
        let bare = DecisionRequest {
            purpose: purpose.to_string(),
            subject: Subject {
                id: self.claimant(p).unwrap_or_default(),
                ..Subject::default()
            },
            resource: Resource {
                category: category.to_string(),
                ..Resource::default()
            },
            ..DecisionRequest::default()
        };
        let (dimensions, cut) = self.dimensions(&rules, c);
        // A purpose that depends on choices: each request is decided with
        // an owner tenant and a data subject whose choices allow it, so the
        // cell shows what the rules permit; the choices can only narrow it.
        let choices = self
            .choices()
            .governs(self.purposes(), p)
            .then(|| self.choices().describe(self.purposes(), p));
        let decide = |req: &DecisionRequest| match &choices {
            None => self.evaluate(req).decision,
            Some(_) => {
                let (req, facts) = allowing_choices(req);
                self.evaluate_with(&req, &facts).decision
            }
        };
        let mut permitted_example = None;
        let mut refused_example = None;
        let mut lifted_example = None;
        let mut decisions = BTreeSet::new();
        let mut evaluated = 0;
        let exhaustive = for_each_request(&bare, &dimensions, *left, |req| {
            evaluated += 1;
            let decision = decide(req);
            decisions.insert(decision.as_str());
            if decision == Decision::Permit {
                permitted_example.get_or_insert_with(|| req.clone());
            } else {
                refused_example.get_or_insert_with(|| req.clone());
                if decision == Decision::NotApplicable {
                    lifted_example.get_or_insert_with(|| req.clone());
                }
            }
        });
        let kind = match (permitted_example.is_some(), refused_example.is_some()) {
            (true, false) => CellKind::Permit,
            (true, true) => CellKind::Conditional,
            _ if rules.is_empty() && !decisions.contains(Decision::Deny.as_str()) => {
                CellKind::NotApplicable
            }
            _ => CellKind::Deny,
        };
        *left = left.saturating_sub(evaluated);
        let answer = self.evaluate(&bare);
        let conditional = kind == CellKind::Conditional;
        Cell {
            purpose: purpose.clone(),
            category: category.clone(),
            kind,
            decision: answer.decision,
            rule_ids: answer.rule_ids,
            reason: answer.reason.to_string(),
            rules: rule_indexes,
            permitted_example: permitted_example.filter(|_| conditional),
            refused_example: refused_example.filter(|_| conditional),
            lifted_example: lifted_example.filter(|_| kind == CellKind::Deny),
            evaluated,
            exhaustive: exhaustive && !cut,
            choices,
        }
    }

    /// With `claims`, a subject that may claim `purpose`: the first subject
    /// pattern of the first claim covering it, globs filled in.
    fn claimant(&self, purpose: NodeIdx) -> Option<String> {
        self.claims()?
            .iter()
            .filter(|c| {
                c.purpose_idx
                    .iter()
                    .any(|&listed| self.purposes().covers(listed, purpose))
            })
            .flat_map(|c| c.subjects.iter())
            .map(|pattern| pattern.replace(['*', '?'], "x"))
            .find(|subject| !subject.is_empty())
    }

    /// The facts the rules' conditions read, and the values worth trying;
    /// whether some values were left out.
    fn dimensions(&self, rules: &[&Rule], category: NodeIdx) -> (Vec<Dimension>, bool) {
        let mut facts = Facts::default();
        for rule in rules {
            for condition in rule.when.iter().chain(&rule.unless) {
                facts.collect(condition);
            }
            if rule.effect == Effect::Permit {
                facts
                    .obligations
                    .extend(rule.obligations.iter().map(|o| o.id.to_string()));
            }
        }
        facts.into_dimensions(self, category)
    }
}

/// Everything the conditions of a cell's rules read.
#[derive(Default)]
struct Facts {
    tenancy: bool,
    deidentification: bool,
    group_sizes: BTreeSet<u64>,
    origins: BTreeSet<Arc<str>>,
    subjects: BTreeSet<String>,
    roles: BTreeSet<String>,
    context: BTreeMap<String, BTreeSet<String>>,
    attributes: BTreeMap<String, BTreeSet<String>>,
    instruction: bool,
    obligations: BTreeSet<String>,
}

impl Facts {
    fn collect(&mut self, condition: &Condition) {
        match condition {
            Condition::SameTenant(_) => self.tenancy = true,
            Condition::Deidentification(_) => self.deidentification = true,
            Condition::GroupSizeAtLeast { min, .. } => {
                self.group_sizes.insert(*min);
                self.group_sizes.insert(min.saturating_sub(1));
            }
            Condition::OriginWithin { categories, .. } => {
                self.origins.extend(categories.iter().cloned());
            }
            Condition::SubjectId(ids) => self.subjects.extend(ids.iter().cloned()),
            Condition::SubjectRole(roles) => self.roles.extend(roles.iter().cloned()),
            Condition::Context { key, values } => self
                .context
                .entry(key.clone())
                .or_default()
                .extend(values.iter().cloned()),
            Condition::Resource { key, values } => self
                .attributes
                .entry(key.clone())
                .or_default()
                .extend(values.iter().cloned()),
            Condition::CustomerInstruction(_) => self.instruction = true,
            Condition::All(parts) | Condition::Any(parts) => {
                parts.iter().for_each(|p| self.collect(p));
            }
            Condition::Not(inner) => self.collect(inner),
        }
    }

    fn into_dimensions(self, policy: &Policy, category: NodeIdx) -> (Vec<Dimension>, bool) {
        let mut dims = Vec::new();
        let none = || -> Edit { Box::new(|_: &mut DecisionRequest| {}) };
        if self.tenancy {
            dims.push(Dimension {
                values: vec![
                    none(),
                    Box::new(|r: &mut DecisionRequest| {
                        r.subject.tenant = "tenant-a".into();
                        r.resource.owner_tenant = "tenant-a".into();
                    }),
                    Box::new(|r: &mut DecisionRequest| {
                        r.subject.tenant = "tenant-a".into();
                        r.resource.owner_tenant = "tenant-b".into();
                    }),
                ],
            });
        }
        if self.deidentification {
            let mut values = vec![none()];
            for state in Deidentification::ALL {
                values.push(Box::new(move |r: &mut DecisionRequest| {
                    r.resource.deidentification = Some(state);
                }));
            }
            dims.push(Dimension { values });
        }
        if !self.group_sizes.is_empty() {
            let mut values = vec![none()];
            for k in self.group_sizes.into_iter().filter(|&k| k > 0) {
                values.push(Box::new(move |r: &mut DecisionRequest| {
                    r.resource.group_size = Some(k);
                }));
            }
            dims.push(Dimension { values });
        }
        if !self.origins.is_empty() {
            let mut values = vec![none()];
            // A category outside every list, to see the condition fail.
            let outside = policy
                .categories()
                .nodes()
                .map(|(i, n)| (i, n.id.clone()))
                .find(|(i, id)| *i != category && !self.origins.contains(id));
            for origin in self.origins.into_iter().chain(outside.map(|(_, id)| id)) {
                values.push(Box::new(move |r: &mut DecisionRequest| {
                    r.resource.origin = vec![origin.to_string()];
                }));
            }
            dims.push(Dimension { values });
        }
        dims.extend(text_dimension(self.subjects, |r, v| r.subject.id = v));
        if !self.roles.is_empty() {
            // Each role alone, and all of them (a condition may need two).
            let all: Vec<String> = self.roles.iter().cloned().collect();
            let mut values: Vec<Edit> = vec![none()];
            for role in self.roles.into_iter().chain(["something-else".to_string()]) {
                values.push(Box::new(move |r: &mut DecisionRequest| {
                    r.subject.roles = vec![role.clone()];
                }));
            }
            if all.len() > 1 {
                values.push(Box::new(move |r: &mut DecisionRequest| {
                    r.subject.roles.clone_from(&all);
                }));
            }
            dims.push(Dimension { values });
        }
        for (key, values) in self.context {
            dims.extend(text_dimension(values, move |r, v| {
                r.context.attributes.insert(key.clone(), v);
            }));
        }
        for (key, values) in self.attributes {
            dims.extend(text_dimension(values, move |r, v| {
                r.resource.attributes.insert(key.clone(), v);
            }));
        }
        if self.instruction {
            dims.push(Dimension {
                values: vec![
                    none(),
                    Box::new(|r: &mut DecisionRequest| {
                        r.context.customer_instruction = "documented instruction".into();
                    }),
                ],
            });
        }
        if !self.obligations.is_empty() {
            let all: Vec<String> = self.obligations.into_iter().collect();
            dims.push(Dimension {
                values: vec![
                    none(),
                    Box::new(move |r: &mut DecisionRequest| {
                        r.supported_obligations.clone_from(&all);
                    }),
                ],
            });
        }
        // A condition listing thousands of ids is tried with the first
        // few: the work stays bounded, and the cell says it may miss.
        let mut cut = false;
        for dim in &mut dims {
            cut |= dim.values.len() > MAX_FACT_VALUES;
            dim.values.truncate(MAX_FACT_VALUES);
        }
        (dims, cut)
    }
}

/// Not given, each value a condition names, and one it does not.
fn text_dimension(
    values: BTreeSet<String>,
    set: impl Fn(&mut DecisionRequest, String) + Clone + 'static,
) -> Option<Dimension> {
    if values.is_empty() {
        return None;
    }
    let mut edits: Vec<Edit> = vec![Box::new(|_: &mut DecisionRequest| {})];
    for value in values.into_iter().chain(["something-else".to_string()]) {
        let set = set.clone();
        edits.push(Box::new(move |r: &mut DecisionRequest| {
            set(r, value.clone())
        }));
    }
    Some(Dimension { values: edits })
}

/// Calls `visit` with every combination of the dimensions' values applied
/// to `bare` (the bare request first), or, past [`MAX_COMBINATIONS`] or
/// the `left` evaluations of the matrix's budget, with each value of each
/// dimension on its own; whether it was every one.
fn for_each_request(
    bare: &DecisionRequest,
    dimensions: &[Dimension],
    left: usize,
    mut visit: impl FnMut(&DecisionRequest),
) -> bool {
    let total = dimensions
        .iter()
        .try_fold(1usize, |n, d| n.checked_mul(d.values.len()))
        .filter(|&n| n <= MAX_COMBINATIONS && n <= left);
    match total {
        Some(total) => {
            for mut n in 0..total {
                let mut req = bare.clone();
                for dim in dimensions {
                    let len = dim.values.len().max(1);
                    if let Some(edit) = dim.values.get(n % len) {
                        edit(&mut req);
                    }
                    n /= len;
                }
                visit(&req);
            }
            true
        }
        None => {
            visit(bare);
            for dim in dimensions {
                for edit in dim.values.iter().skip(1) {
                    let mut req = bare.clone();
                    edit(&mut req);
                    visit(&req);
                }
            }
            false
        }
    }
}

/// "permitted when …" / "denied unless …" for one rule: what a
/// conditional cell depends on.
pub fn when_in_words(rule: &Rule) -> String {
    let verb = match rule.effect {
        Effect::Permit => "permitted",
        Effect::Deny => "denied",
    };
    let mut out = format!("{verb} by `{}`", rule.id);
    match (&rule.when, &rule.unless) {
        (None, None) => out.push_str(" always"),
        (when, unless) => {
            if let Some(when) = when {
                out.push_str(" when ");
                out.push_str(&when.describe());
            }
            if let Some(unless) = unless {
                out.push_str(" unless ");
                out.push_str(&unless.describe());
            }
        }
    }
    if rule.effect == Effect::Permit && !rule.obligations.is_empty() {
        let ids: Vec<String> = rule
            .obligations
            .iter()
            .map(|o| format!("`{}`", o.id))
            .collect();
        out.push_str(&format!(", if the caller fulfils {}", ids.join(", ")));
    }
    out
}

/// `req` with an owner tenant and a data subject (when it names none) and
/// choices of theirs granting its purpose: decided as the rules alone
/// would, for a cell of a purpose that depends on choices.
fn allowing_choices(req: &DecisionRequest) -> (DecisionRequest, crate::choices::ChoiceFacts) {
    let mut req = req.clone();
    if req.resource.owner_tenant.is_empty() {
        req.resource.owner_tenant = if req.subject.tenant.is_empty() {
            "a-tenant".into()
        } else {
            req.subject.tenant.clone()
        };
    }
    if req.resource.data_subject.is_empty() {
        req.resource.data_subject = "a-data-subject".into();
    }
    let granted = vec![crate::choices::Choice {
        purpose: req.purpose.clone(),
        state: crate::choices::ChoiceState::Granted,
        at: 0,
        expires_at: None,
    }];
    let facts = crate::choices::ChoiceFacts {
        now: 1,
        revision: 0,
        tenant: Some(granted.clone()),
        subject: Some(granted),
    };
    (req, facts)
}
