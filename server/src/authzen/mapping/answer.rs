//! The engine's answers as AuthZEN JSON: an evaluation's Decision (with
//! what `Check` would say in its context), the Decision of an evaluation
//! that could not be made, and an action search's Actions.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;

use crate::engine::{self, Evaluation, Obligation, PermittedPurpose};

// The answers are structs, not `serde_json` maps: their keys come out in
// the order written here whichever features `serde_json` is built with.

/// An AuthZEN Decision.
#[derive(Debug, Serialize)]
pub struct Answer {
    pub decision: bool,
    pub context: AnswerContext,
}

/// What an answer says besides `decision`.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum AnswerContext {
    Decided(Box<Decided>),
    Failed { error: ItemError },
}

/// What `Check` would answer.
#[derive(Debug, Serialize)]
pub struct Decided {
    decision: &'static str,
    reason: String,
    rule_ids: Vec<Arc<str>>,
    policy_revision: Arc<str>,
    ttl_seconds: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    choices_revision: Option<u64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    obligations: Vec<AuthZenObligation>,
    #[serde(skip_serializing_if = "Option::is_none")]
    monitor: Option<Monitor>,
}

/// What monitor rules would have decided.
#[derive(Debug, Serialize)]
struct Monitor {
    decision: &'static str,
    rule_ids: Vec<Arc<str>>,
}

/// The error of an evaluation that could not be made.
#[derive(Debug, Serialize)]
pub struct ItemError {
    status: u16,
    message: String,
}

/// A purposegate obligation as the AuthZEN obligations profile shapes
/// it: type `custom` (the profile's type for bilaterally agreed
/// obligations), its id, its parameters as properties.
#[derive(Debug, Serialize)]
struct AuthZenObligation {
    id: Arc<str>,
    #[serde(rename = "type")]
    kind: &'static str,
    properties: BTreeMap<String, String>,
}

fn obligations(of: &[Obligation]) -> Vec<AuthZenObligation> {
    of.iter()
        .map(|o| AuthZenObligation {
            id: o.id.clone(),
            kind: "custom",
            properties: o.params.clone(),
        })
        .collect()
}

/// The Decision of one evaluation: `decision` is true exactly when the
/// engine answered PERMIT; `context` says what `Check` would.
pub fn decision(evaluation: &Evaluation, reason: &str) -> Answer {
    Answer {
        decision: evaluation.decision == engine::Decision::Permit,
        context: AnswerContext::Decided(Box::new(Decided {
            decision: evaluation.decision.as_str(),
            reason: reason.to_string(),
            rule_ids: evaluation.rule_ids.clone(),
            policy_revision: evaluation.policy_revision.clone(),
            ttl_seconds: evaluation.ttl_seconds,
            choices_revision: evaluation.choices_revision(),
            obligations: obligations(&evaluation.obligations),
            monitor: evaluation.monitor.as_ref().map(|m| Monitor {
                decision: m.decision.as_str(),
                rule_ids: m.rule_ids.clone(),
            }),
        })),
    }
}

/// The Decision of an evaluation that could not be made: `false`, with the
/// error in its context.
pub fn failed(problem: &str) -> Answer {
    Answer {
        decision: false,
        context: AnswerContext::Failed {
            error: ItemError {
                status: 400,
                message: problem.to_string(),
            },
        },
    }
}

/// One result of an action search: the purpose as an Action, its rules as
/// properties, its obligations where the obligations profile places them.
#[derive(Debug, Serialize)]
pub struct Action {
    name: Arc<str>,
    properties: ActionProperties,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    obligations: Vec<AuthZenObligation>,
}

#[derive(Debug, Serialize)]
struct ActionProperties {
    rule_ids: Vec<Arc<str>>,
}

pub fn action(permitted: &PermittedPurpose) -> Action {
    Action {
        name: permitted.purpose.clone(),
        properties: ActionProperties {
            rule_ids: permitted.rule_ids.clone(),
        },
        obligations: obligations(&permitted.obligations),
    }
}
