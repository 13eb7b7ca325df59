//! A decision is a value: what was decided, by which rules, why, and under
//! which policy revision. Evaluation never fails; problems become
//! `INDETERMINATE` with the reason.

use std::fmt;
use std::sync::Arc;

use serde::Serialize;

use super::model::Obligation;
use super::reason::Reason;

/// What was decided. Only `Permit` lets data through (semantic 6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Decision {
    Permit,
    Deny,
    NotApplicable,
    Indeterminate,
}

impl Decision {
    pub const ALL: [Decision; 4] = [
        Decision::Permit,
        Decision::Deny,
        Decision::NotApplicable,
        Decision::Indeterminate,
    ];

    /// The API spelling: `NOT_APPLICABLE`.
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Permit => "PERMIT",
            Decision::Deny => "DENY",
            Decision::NotApplicable => "NOT_APPLICABLE",
            Decision::Indeterminate => "INDETERMINATE",
        }
    }

    /// Accepts the API spelling, case-insensitively.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|d| d.as_str().eq_ignore_ascii_case(s))
    }

    /// Whether a PEP lets data through on this decision.
    pub fn is_permit(self) -> bool {
        self == Decision::Permit
    }
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The answer to one request, shaped like the API's `CheckResponse` (its
/// JSON form is the protobuf JSON of `CheckResponse`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Evaluation {
    pub decision: Decision,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub obligations: Vec<Obligation>,
    /// The rules that determined the decision, in policy order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rule_ids: Vec<Arc<str>>,
    pub reason: Reason,
    pub policy_revision: Arc<str>,
    pub ttl_seconds: u32,
    /// On a decision that read choices: how long a PEP that follows the
    /// changes of choices may keep it (`ttl_seconds` is for one that
    /// does not); 0 otherwise.
    #[serde(skip_serializing_if = "is_zero")]
    pub watched_ttl_seconds: u32,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub request_id: String,
    /// Present only when monitor-mode rules would have changed `decision`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub monitor: Option<MonitorEvaluation>,
    /// The choices the decision read (`choices.rs`), when it read any: the
    /// decision log keeps them, so `replay` decides the same without the
    /// store; their revision is the answer's `choicesRevision`.
    #[serde(skip)]
    pub choices: Option<Arc<crate::choices::ChoiceFacts>>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl Evaluation {
    /// The revision of the choices the decision read, if it read any.
    pub fn choices_revision(&self) -> Option<u64> {
        self.choices.as_ref().map(|c| c.revision)
    }
}

/// The decision with monitor-mode rules enforced (semantic 9).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MonitorEvaluation {
    pub decision: Decision,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rule_ids: Vec<Arc<str>>,
}
