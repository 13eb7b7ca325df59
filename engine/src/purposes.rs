//! The reverse question: for which purposes may this data be used?
//!
//! Every PDP answers "may X do Y?"; a privacy officer or a data pipeline
//! asks "what may this data serve?". [`Policy::permitted_purposes`]
//! answers it with [`Policy::evaluate`]'s own code, asked once per purpose
//! of the tree: never a second reading of the rules, so the answer is
//! exactly the purposes for which `Check` would answer `PERMIT`, with
//! denied ancestors and descendants, claims, derived data and obligations
//! handled as `Check` handles them.

use std::sync::Arc;

use serde::Serialize;

use super::decision::Decision;
use super::eval::{Facts, Truth};
use super::model::{Effect, Mode, NodeIdx, Obligation};
use super::policy::Policy;
use super::request::{DecisionRequest, InvalidRequest};

/// A purpose `Check` would permit, and what decided it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PermittedPurpose {
    pub purpose: Arc<str>,
    /// The rules that permit it, in policy order.
    pub rule_ids: Vec<Arc<str>>,
    /// What the caller must do when it acts on the permit.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub obligations: Vec<Obligation>,
}

/// The answer to the reverse question.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PermittedPurposes {
    /// In tree order: each root in declaration order, then its subtree.
    pub purposes: Vec<PermittedPurpose>,
    pub policy_revision: Arc<str>,
    pub ttl_seconds: u32,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub request_id: String,
}

/// A permit's rules and obligations; `None` for any other decision.
type Permit = Option<(Vec<Arc<str>>, Vec<Obligation>)>;

impl Policy {
    /// The purposes for which [`Policy::evaluate`] answers `PERMIT` for the
    /// facts of `req`, in tree order. `req` must leave the purpose empty
    /// (the question is about every purpose); otherwise, and for every fact
    /// `evaluate` would refuse, the request is invalid.
    ///
    /// What does not depend on the purpose is worked out once
    /// ([`Policy::facts`]: the categories in play, each rule's truth, the
    /// claims naming the subject). A purpose can be permitted only if an
    /// enforced permit rule that holds for these facts applies to it on
    /// the resource's own category (semantic 5: without one the category
    /// is not permitted, semantic 4: so neither is the request); such a
    /// rule applies to the purposes it lists and their descendants
    /// (semantic 1), so one walk of the tree in order marks them. Only
    /// those are asked, each through `evaluate`'s own checks and pass
    /// ([`Policy::permit_for`]), so every purpose returned, with its rules
    /// and obligations, is `evaluate`'s answer. Purposes with the same
    /// candidate rules (one class of the index) get the same pass, so it
    /// runs once per class.
    pub fn permitted_purposes(
        &self,
        req: &DecisionRequest,
    ) -> Result<PermittedPurposes, InvalidRequest> {
        req.validate_without_purpose()?;
        let mut purposes = Vec::new();
        if let Some(category) = self.categories().lookup(&req.resource.category) {
            let facts = self.facts(req);
            if let Some(listed) = self.listed_by_live_permits(category, &facts) {
                let mut reached = vec![false; self.purposes().len()];
                // The pass of each class of purposes asked so far.
                let mut passes: Vec<Option<Permit>> = Vec::new();
                for &purpose in self.purpose_order() {
                    let inherited = self
                        .purposes()
                        .node(purpose)
                        .and_then(|n| n.parent)
                        .and_then(|p| reached.get(p as usize).copied())
                        .unwrap_or(false);
                    let reach = inherited || listed.get(purpose as usize).copied().unwrap_or(false);
                    if let Some(r) = reached.get_mut(purpose as usize) {
                        *r = reach;
                    }
                    if !reach {
                        continue;
                    }
                    if self.refused_before_rules(purpose, req, &facts) {
                        continue;
                    }
                    // A purpose that depends on choices is not listed: the
                    // reverse question is asked without them.
                    if self.choices().governs(self.purposes(), purpose)
                        || !(self.choices().is_empty() || req.resource.data_subject.is_empty())
                    {
                        continue;
                    }
                    let (class, classes) = self.purpose_class(purpose);
                    let known = passes.get(class).and_then(Option::as_ref);
                    let permit = match known {
                        Some(permit) => permit.clone(),
                        None => {
                            let permit = self.permit(purpose, req, &facts);
                            if class < classes {
                                if passes.is_empty() {
                                    passes.resize(classes, None);
                                }
                                if let Some(slot) = passes.get_mut(class) {
                                    *slot = Some(permit.clone());
                                }
                            }
                            permit
                        }
                    };
                    if let Some((rule_ids, obligations)) = permit {
                        purposes.push(PermittedPurpose {
                            purpose: self.purpose_id(purpose),
                            rule_ids,
                            obligations,
                        });
                    }
                }
            }
        }
        Ok(PermittedPurposes {
            purposes,
            policy_revision: self.revision().clone(),
            ttl_seconds: self.settings().decision_ttl_seconds,
            request_id: req.request_id.clone(),
        })
    }

    /// The purposes listed by an enforced permit rule that holds for the
    /// facts and applies on `category`, marked by index; `None` when there
    /// is none (or the claims let the subject claim nothing): no purpose
    /// can be permitted.
    fn listed_by_live_permits(&self, category: NodeIdx, facts: &Facts<'_>) -> Option<Vec<bool>> {
        if !self.any_claimable(facts) {
            return None;
        }
        let mut listed: Option<Vec<bool>> = None;
        for ((r, rule), truth) in (0..).zip(self.rules()).zip(&facts.truths) {
            if rule.effect != Effect::Permit
                || rule.mode != Mode::Enforce
                || *truth != Truth::True
                || !self.rule_on_category(r, category)
            {
                continue;
            }
            let marks = listed.get_or_insert_with(|| vec![false; self.purposes().len()]);
            for &p in &rule.purpose_idx {
                if let Some(m) = marks.get_mut(p as usize) {
                    *m = true;
                }
            }
        }
        listed
    }

    /// `evaluate`'s enforced pass for `purpose`: its rules and
    /// obligations if it permits.
    fn permit(&self, purpose: NodeIdx, req: &DecisionRequest, facts: &Facts<'_>) -> Permit {
        let pass = self.enforced_pass(purpose, req, facts);
        (pass.decision == Decision::Permit).then(|| {
            let rule_ids = pass
                .rules
                .iter()
                .filter_map(|&r| self.rule(r).map(|rule| rule.id.clone()))
                .collect();
            (rule_ids, pass.obligations)
        })
    }

    fn purpose_id(&self, purpose: NodeIdx) -> Arc<str> {
        self.purposes()
            .node(purpose)
            .map_or_else(|| Arc::from(""), |n| n.id.clone())
    }
}
