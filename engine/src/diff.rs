//! What a policy change does to data flows: the two policies' matrices
//! cell by cell, and for each cell the requests one permits and the other
//! does not, found by asking every question either policy could decide
//! otherwise (`questions`: every combination of the values the rules of
//! either policy tell apart) and decided by [`Policy::evaluate`] of both —
//! never by comparing rule text. The search is exact or says it could not
//! tell: a cell with more questions than
//! [`MAX_CELL_QUESTIONS`](crate::MAX_CELL_QUESTIONS), or than
//! what is left of [`MAX_EVALUATIONS`] for the whole diff, is not tried
//! and names what it would have taken ([`Untried`]).
//!
//! Then what changed in the text: rules, purposes, data categories,
//! settings and claims added, removed or changed.

use std::collections::BTreeSet;
use std::ops::ControlFlow;
use std::sync::Arc;

use serde::Serialize;

use super::decision::Decision;
use super::diagnostic::plural;
use super::matrix::{CellKind, MAX_CELLS, MAX_EVALUATIONS, when_in_words};
use super::model::Taxonomy;
use super::policy::Policy;
use super::questions::{Untried, questions};
use super::request::DecisionRequest;

/// A policy of the comparison.
#[derive(Debug, Clone, Serialize)]
pub struct Side {
    pub name: Arc<str>,
    pub revision: Arc<str>,
}

/// A request decided by both policies.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Example {
    pub request: DecisionRequest,
    pub old: Decision,
    pub old_rule_ids: Vec<Arc<str>>,
    pub new: Decision,
    pub new_rule_ids: Vec<Arc<str>>,
    /// The new policy's reason.
    pub reason: String,
    /// The choices the request was decided with, where either policy
    /// reads choices: what the tenant configured and the data subject
    /// said (`None` inside: not looked up).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub choices: Option<crate::choices::ChoiceFacts>,
}

/// One purpose × category cell that changed.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CellChange {
    pub purpose: Arc<str>,
    pub category: Arc<str>,
    /// The old matrix's cell, `None` where the old policy does not
    /// declare the purpose or the category.
    pub old: Option<CellKind>,
    pub new: Option<CellKind>,
    /// A request the new policy permits and the old does not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub newly_permitted: Option<Example>,
    /// A request the old policy permits and the new does not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub newly_refused: Option<Example>,
    /// Requests decided by both.
    pub evaluated: usize,
    /// Whether every request either policy could decide otherwise was
    /// asked (or a widening and a narrowing were both found): when not,
    /// `untried` says why.
    pub exhaustive: bool,
    /// Why the cell was not tried: the diff cannot tell what it does.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub untried: Option<Untried>,
}

impl CellChange {
    pub fn widens(&self) -> bool {
        self.newly_permitted.is_some()
    }

    /// Whether the diff cannot tell what the change does on this cell.
    pub fn cannot_tell(&self) -> bool {
        self.untried.is_some()
    }
}

/// Ids added, removed and changed.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Changes {
    pub added: Vec<Arc<str>>,
    pub removed: Vec<Arc<str>>,
    pub changed: Vec<Arc<str>>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty()
    }
}

/// A rule added, removed or changed, in words ("permitted by `x` when
/// …", as the explorer says it, with its purposes and categories).
#[derive(Debug, Clone, Serialize)]
pub struct RuleChange {
    pub id: Arc<str>,
    /// `added`, `removed` or `changed`.
    pub change: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub old: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub new: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyDiff {
    pub old: Side,
    pub new: Side,
    /// Changed cells, widened ones first.
    pub cells: Vec<CellChange>,
    /// Cells compared in all.
    pub compared: usize,
    /// Cells where the new policy permits a request the old did not.
    pub widened: usize,
    /// Cells where the old policy permits a request the new does not.
    pub narrowed: usize,
    /// Cells not tried, too many questions ([`CellChange::untried`]): the
    /// diff cannot tell what the change does there.
    pub untried: usize,
    /// Why cells were not compared ([`MAX_CELLS`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub omitted: Option<String>,
    /// Whether every cell was tried (no `omitted`, no `untried`).
    pub exhaustive: bool,
    /// When not: that the diff cannot tell whether the change widens, and
    /// what it did not try.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cannot_tell: Option<String>,
    /// Rules added, changed, then removed.
    pub rules: Vec<RuleChange>,
    pub purposes: Changes,
    pub categories: Changes,
    /// Settings and claims, in words.
    pub other: Vec<String>,
}

impl PolicyDiff {
    /// Whether the new policy permits anything the old did not, or the
    /// comparison could not show it does not (cells left out, or cells
    /// with more questions than the budget): both are treated as
    /// widening.
    pub fn widens(&self) -> bool {
        self.widened > 0 || self.omitted.is_some() || !self.exhaustive
    }

    /// Whether nothing at all changed.
    pub fn is_empty(&self) -> bool {
        self.cells.is_empty()
            && self.omitted.is_none()
            && self.rules.is_empty()
            && self.purposes.is_empty()
            && self.categories.is_empty()
            && self.other.is_empty()
    }
}

const CANNOT_TELL: &str = "cannot tell whether this change widens what data may be used for";

/// Ids of both trees, the new one's order first, then those only the old
/// declares.
fn union(old: &Taxonomy, new: &Taxonomy) -> Vec<Arc<str>> {
    let mut ids: Vec<Arc<str>> = new.nodes().map(|(_, n)| n.id.clone()).collect();
    ids.extend(
        old.nodes()
            .filter(|(_, n)| new.lookup(&n.id).is_none())
            .map(|(_, n)| n.id.clone()),
    );
    ids
}

fn tree_changes(old: &Taxonomy, new: &Taxonomy) -> Changes {
    let mut changes = Changes::default();
    for (_, n) in new.nodes() {
        match old.lookup(&n.id).and_then(|i| old.node(i)) {
            None => changes.added.push(n.id.clone()),
            Some(o) if o.description != n.description => changes.changed.push(n.id.clone()),
            Some(_) => {}
        }
    }
    changes.removed = old
        .nodes()
        .filter(|(_, n)| new.lookup(&n.id).is_none())
        .map(|(_, n)| n.id.clone())
        .collect();
    changes
}

impl Policy {
    /// What changes from `self` (the old policy) to `new`.
    pub fn diff(&self, new: &Policy) -> PolicyDiff {
        let old = self;
        let purposes = union(old.purposes(), new.purposes());
        let categories = union(old.categories(), new.categories());
        let size = purposes.len().saturating_mul(categories.len());
        let mut out = PolicyDiff {
            old: Side {
                name: old.name().clone(),
                revision: old.revision().clone(),
            },
            new: Side {
                name: new.name().clone(),
                revision: new.revision().clone(),
            },
            cells: Vec::new(),
            compared: 0,
            widened: 0,
            narrowed: 0,
            untried: 0,
            omitted: None,
            exhaustive: true,
            cannot_tell: None,
            rules: Vec::new(),
            purposes: tree_changes(old.purposes(), new.purposes()),
            categories: tree_changes(old.categories(), new.categories()),
            other: other_changes(old, new),
        };
        rule_changes(old, new, &mut out);
        if size > MAX_CELLS {
            out.omitted = Some(format!(
                "the policies have {} and {} together, {size} cells; data flows are compared \
                 for at most {MAX_CELLS}",
                plural(purposes.len(), "purpose", "purposes"),
                plural(categories.len(), "data category", "data categories")
            ));
            out.exhaustive = false;
            out.cannot_tell = out
                .omitted
                .as_ref()
                .map(|why| format!("{CANNOT_TELL}: {why}"));
            return out;
        }
        // Each request is decided twice; the cells' kinds (each policy's
        // own matrix cell) share a budget of their own.
        let mut left = MAX_EVALUATIONS / 2;
        let mut kinds_left = MAX_EVALUATIONS;
        for purpose in &purposes {
            for category in &categories {
                out.compared += 1;
                let change = compare_cell(old, new, purpose, category, &mut left, &mut kinds_left);
                out.exhaustive &= change.exhaustive;
                let kinds_differ = change.old != change.new;
                if change.newly_permitted.is_some() {
                    out.widened += 1;
                }
                if change.newly_refused.is_some() {
                    out.narrowed += 1;
                }
                if change.cannot_tell() {
                    out.untried += 1;
                }
                if kinds_differ
                    || change.newly_permitted.is_some()
                    || change.newly_refused.is_some()
                    || change.cannot_tell()
                {
                    out.cells.push(change);
                }
            }
        }
        // Widened cells first, then those it cannot tell; otherwise in
        // matrix order.
        out.cells.sort_by_key(|c| (!c.widens(), !c.cannot_tell()));
        out.cannot_tell = out.cells.iter().find(|c| c.cannot_tell()).map(|first| {
            format!(
                "{CANNOT_TELL}: {} not tried, too many questions (the first: `{}` x `{}`, {})",
                plural(out.untried, "cell", "cells"),
                first.purpose,
                first.category,
                first.untried.as_ref().map_or("", |u| u.why.as_str())
            )
        });
        out
    }
}

/// The cell's kind in `policy`'s own matrix (so the kinds are the
/// explorer's), within the `left` evaluations of the comparison's budget.
fn kind_of(
    policy: &Policy,
    purpose: &Arc<str>,
    category: &Arc<str>,
    left: &mut usize,
) -> Option<CellKind> {
    let p = policy.purposes().lookup(purpose)?;
    let c = policy.categories().lookup(category)?;
    Some(policy.cell(p, purpose, c, category, left).kind)
}

fn compare_cell(
    old: &Policy,
    new: &Policy,
    purpose: &Arc<str>,
    category: &Arc<str>,
    left: &mut usize,
    kinds_left: &mut usize,
) -> CellChange {
    let mut newly_permitted = None;
    let mut newly_refused = None;
    let mut evaluated = 0;
    let reads_choices = !(old.choices().is_empty() && new.choices().is_empty());
    let asked = questions([old, new], purpose, category, *left).map(|questions| {
        questions.for_each(|req| {
            // Where either policy reads choices, each request is also
            // decided for a tenant and data subject with each kind of
            // choice, so a change under a purpose that depends on them
            // (or of the choices section itself) is seen.
            evaluated += 1;
            for (req, facts) in crate::choices::variants(req, reads_choices) {
                let (o, n) = (
                    old.evaluate_with(&req, &facts),
                    new.evaluate_with(&req, &facts),
                );
                let widened = n.decision == Decision::Permit && o.decision != Decision::Permit;
                let narrowed = o.decision == Decision::Permit && n.decision != Decision::Permit;
                let slot = match (widened, narrowed) {
                    (true, _) => &mut newly_permitted,
                    (_, true) => &mut newly_refused,
                    _ => continue,
                };
                slot.get_or_insert_with(|| Example {
                    request: req.clone(),
                    old: o.decision,
                    old_rule_ids: o.rule_ids,
                    new: n.decision,
                    new_rule_ids: n.rule_ids,
                    reason: n.reason.to_string(),
                    choices: reads_choices.then(|| facts.clone()),
                });
                // Both found: no other request can tell more.
                if newly_permitted.is_some() && newly_refused.is_some() {
                    return ControlFlow::Break(());
                }
            }
            ControlFlow::Continue(())
        });
    });
    *left = left.saturating_sub(evaluated);
    let untried = asked.err();
    CellChange {
        purpose: purpose.clone(),
        category: category.clone(),
        old: kind_of(old, purpose, category, kinds_left),
        new: kind_of(new, purpose, category, kinds_left),
        newly_permitted,
        newly_refused,
        evaluated,
        exhaustive: untried.is_none(),
        untried,
    }
}

fn rule_words(rule: &super::model::Rule) -> String {
    let categories = if rule.data_categories.is_empty() {
        "every category".to_string()
    } else {
        rule.data_categories.join(", ")
    };
    let mode = if rule.mode == super::model::Mode::Monitor {
        " (monitor)"
    } else {
        ""
    };
    format!(
        "{}{mode}; purposes {} on {categories}",
        when_in_words(rule),
        rule.purposes.join(", ")
    )
}

fn rule_changes(old: &Policy, new: &Policy, out: &mut PolicyDiff) {
    let text = |r: &super::model::Rule| serde_json::to_string(r).unwrap_or_default();
    for rule in new.rules() {
        let (change, was) = match old.rules().iter().find(|o| o.id == rule.id) {
            None => ("added", None),
            Some(o) if text(o) != text(rule) => ("changed", Some(rule_words(o))),
            Some(_) => continue,
        };
        out.rules.push(RuleChange {
            id: rule.id.clone(),
            change,
            old: was,
            new: Some(rule_words(rule)),
        });
    }
    let kept: BTreeSet<&str> = new.rules().iter().map(|r| &*r.id).collect();
    for rule in old.rules().iter().filter(|r| !kept.contains(&*r.id)) {
        out.rules.push(RuleChange {
            id: rule.id.clone(),
            change: "removed",
            old: Some(rule_words(rule)),
            new: None,
        });
    }
}

fn other_changes(old: &Policy, new: &Policy) -> Vec<String> {
    let mut out = Vec::new();
    let (a, b) = (old.settings(), new.settings());
    if a.min_aggregation_group_size != b.min_aggregation_group_size {
        out.push(format!(
            "setting `minAggregationGroupSize`: {} -> {}",
            a.min_aggregation_group_size, b.min_aggregation_group_size
        ));
    }
    if a.decision_ttl_seconds != b.decision_ttl_seconds {
        out.push(format!(
            "setting `decisionTtlSeconds`: {} -> {}",
            a.decision_ttl_seconds, b.decision_ttl_seconds
        ));
    }
    let claims = |p: &Policy| {
        p.claims()
            .map(|c| serde_json::to_string(c).unwrap_or_default())
    };
    if claims(old) != claims(new) {
        out.push(match (old.claims(), new.claims()) {
            (None, Some(_)) => "claims added: only subjects they name may ask for purposes".into(),
            (Some(_), None) => "claims removed: any subject may ask for any purpose".into(),
            _ => "claims changed".into(),
        });
    }
    if old.name() != new.name() {
        out.push(format!("name: `{}` -> `{}`", old.name(), new.name()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(text: &str) -> Policy {
        Policy::parse("p.yaml", text).unwrap()
    }

    #[test]
    fn a_new_purpose_widens_and_a_removed_permit_narrows() {
        let old = policy(
            "version: 1\nname: a\npurposes:\n  p: P\ndataCategories:\n  c: C\nrules:\n  - id: p-on-c\n    effect: permit\n    purposes: [p]\n",
        );
        let new = policy(
            "version: 1\nname: a\npurposes:\n  p: P\n  q: Q\ndataCategories:\n  c: C\nrules:\n  - id: q-on-c\n    effect: permit\n    purposes: [q]\n",
        );
        let diff = old.diff(&new);
        assert_eq!((diff.widened, diff.narrowed, diff.compared), (1, 1, 2));
        assert!(diff.widens());
        // Widened cells first.
        let q = &diff.cells[0];
        assert_eq!(
            (&*q.purpose, q.old, q.new),
            ("q", None, Some(CellKind::Permit))
        );
        let example = q.newly_permitted.as_ref().unwrap();
        assert_eq!(example.old, Decision::NotApplicable);
        assert_eq!(example.new, Decision::Permit);
        let p = &diff.cells[1];
        assert_eq!(
            (&*p.purpose, p.old, p.new),
            ("p", Some(CellKind::Permit), Some(CellKind::NotApplicable))
        );
        assert!(p.newly_refused.is_some() && p.newly_permitted.is_none());
        assert_eq!(diff.purposes.added, vec![Arc::<str>::from("q")]);
        let changes: Vec<(&str, &str)> = diff.rules.iter().map(|r| (&*r.id, r.change)).collect();
        assert_eq!(changes, [("q-on-c", "added"), ("p-on-c", "removed")]);
        // Nothing changes against itself.
        assert!(new.diff(&new).is_empty());
        assert!(!new.diff(&new).widens());
    }
}
