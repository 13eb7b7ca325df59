//! The reason of an answer in words: one line that says why the decision
//! came out as it did and names the rules that made it (semantic 10).

use std::fmt::Write as _;

use super::model::NodeIdx;
use super::policy::{Policy, RuleIdx};
use super::request::DecisionRequest;
use super::suggest;

/// An attribute a condition needed but the request left empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Missing {
    SubjectTenant,
    OwnerTenant,
    Deidentification,
    GroupSize,
}

impl Missing {
    pub(crate) fn describe(self) -> &'static str {
        match self {
            Missing::SubjectTenant => "the subject's tenant (`subject.tenant`)",
            Missing::OwnerTenant => "the data's owner tenant (`resource.owner_tenant`)",
            Missing::Deidentification => {
                "the data's de-identification (`resource.deidentification`)"
            }
            Missing::GroupSize => "the data's group size (`resource.group_size`)",
        }
    }
}

/// Why a decision came out as it did, enough to write its reason.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Explain<'r> {
    UnknownCategory {
        id: &'r str,
        origin: bool,
    },
    /// `near`: a permit rule for this purpose and category whose
    /// condition did not hold, to say what would have permitted it.
    NoPermit {
        category: NodeIdx,
        origin: bool,
        near: Option<RuleIdx>,
    },
    Denied {
        category: NodeIdx,
        origin: bool,
        rule: RuleIdx,
    },
    Undecidable {
        rule: RuleIdx,
        missing: Missing,
    },
    Permitted,
    UnsupportedObligation {
        rule: RuleIdx,
    },
}

impl Policy {
    /// The one-line reason of an answer: why `explain` came out as it did,
    /// naming the rules that made it.
    pub(crate) fn reason(
        &self,
        purpose: NodeIdx,
        req: &DecisionRequest,
        explain: &Explain<'_>,
        rules: &[RuleIdx],
        obligation: Option<&str>,
    ) -> String {
        let p = &req.purpose;
        let label = |category: NodeIdx, origin: bool| -> String {
            let id = self.categories().id(category);
            if origin {
                format!("`{id}` (an origin of `{}`)", req.resource.category)
            } else {
                format!("`{id}`")
            }
        };
        let rule_id = |r: RuleIdx| self.rule(r).map_or("", |rule| &*rule.id);
        match *explain {
            Explain::UnknownCategory { id, origin } => {
                let hint = suggest::did_you_mean(id, self.categories().ids());
                let place = if origin { "origin " } else { "" };
                format!("unknown {place}data category `{id}`{hint}")
            }
            Explain::NoPermit {
                category,
                origin,
                near,
            } => {
                let mut out = format!("no rule permits `{p}` on {}", label(category, origin));
                if let Some(rule) = near.and_then(|r| self.rule(r)) {
                    let mut needs = Vec::new();
                    if let Some(when) = &rule.when {
                        needs.push(when.describe());
                    }
                    if let Some(unless) = &rule.unless {
                        needs.push(format!("not ({})", unless.describe()));
                    }
                    let _ = write!(
                        out,
                        "; rule `{}` would permit it if {}",
                        rule.id,
                        needs.join(" and ")
                    );
                }
                out
            }
            Explain::Denied {
                category,
                origin,
                rule,
            } => {
                let mut out = format!(
                    "rule `{}` denies `{p}` on {}",
                    rule_id(rule),
                    label(category, origin)
                );
                // Semantic 2: name the narrower prohibited purpose when the
                // request asked for a broader one.
                if let Some(rule) = self.rule(rule) {
                    let direct = rule
                        .purpose_idx
                        .iter()
                        .any(|&listed| self.purposes().covers(listed, purpose));
                    if !direct {
                        if let Some(&narrower) = rule
                            .purpose_idx
                            .iter()
                            .find(|&&listed| self.purposes().covers(purpose, listed))
                        {
                            let _ = write!(
                                out,
                                ": it includes `{}`, which the rule prohibits",
                                self.purposes().id(narrower)
                            );
                        }
                    }
                }
                out
            }
            Explain::Undecidable { rule, missing } => format!(
                "rule `{}` cannot be decided for `{p}`: the request does not give {}",
                rule_id(rule),
                missing.describe()
            ),
            Explain::Permitted => {
                let rules: Vec<String> =
                    rules.iter().map(|&r| format!("`{}`", rule_id(r))).collect();
                let noun = if rules.len() == 1 { "rule" } else { "rules" };
                let mut on = format!("`{}`", req.resource.category);
                if !req.resource.origin.is_empty() {
                    let origins: Vec<String> = req
                        .resource
                        .origin
                        .iter()
                        .map(|o| format!("`{o}`"))
                        .collect();
                    let _ = write!(on, " and its origin {}", origins.join(", "));
                }
                format!("`{p}` on {on} is permitted by {noun} {}", rules.join(", "))
            }
            Explain::UnsupportedObligation { rule } => format!(
                "rule `{}` permits only with obligation `{}`, which the caller does not support",
                rule_id(rule),
                obligation.unwrap_or("")
            ),
        }
    }
}
