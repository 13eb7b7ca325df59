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

impl Policy {
    /// The purposes for which [`Policy::evaluate`] answers `PERMIT` for the
    /// facts of `req`, in tree order. `req` must leave the purpose empty
    /// (the question is about every purpose); otherwise, and for every fact
    /// `evaluate` would refuse, the request is invalid.
    ///
    /// A purpose is asked only if an enforced permit rule of the index
    /// could apply to it on the resource's own category: without one, the
    /// category cannot be permitted (semantic 5), so neither can the
    /// request. Every purpose returned is `evaluate`'s answer.
    pub fn permitted_purposes(
        &self,
        req: &DecisionRequest,
    ) -> Result<PermittedPurposes, InvalidRequest> {
        req.validate_without_purpose()?;
        let mut purposes = Vec::new();
        if let Some(category) = self.categories().lookup(&req.resource.category) {
            for purpose in self.purposes().tree_order() {
                if !self.may_permit(purpose, category) {
                    continue;
                }
                let answer = self.evaluate_purpose(purpose, req);
                if answer.decision == Decision::Permit {
                    purposes.push(PermittedPurpose {
                        purpose: self.purpose_id(purpose),
                        rule_ids: answer.rule_ids,
                        obligations: answer.obligations,
                    });
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

    /// Whether an enforced permit rule could apply to `purpose` on
    /// `category`.
    fn may_permit(&self, purpose: NodeIdx, category: NodeIdx) -> bool {
        self.candidates(purpose, category).any(|r| {
            self.rule(r)
                .is_some_and(|rule| rule.effect == Effect::Permit && rule.mode == Mode::Enforce)
        })
    }

    fn purpose_id(&self, purpose: NodeIdx) -> Arc<str> {
        self.purposes()
            .node(purpose)
            .map_or_else(|| Arc::from(""), |n| n.id.clone())
    }
}
