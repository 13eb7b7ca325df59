//! The reason of an answer in words: one line that says why the decision
//! came out as it did and names the rules that made it (semantic 10).
//!
//! A decision keeps its reason as the facts that decide it ([`Reason`]):
//! the policy (shared), rule and node indices, and only the request's words
//! the policy does not hold. They are put into words when the reason is
//! shown, so deciding formats nothing and looks up no near-miss spelling.

use std::fmt;
use std::sync::Arc;

use serde::{Serialize, Serializer};

use super::model::NodeIdx;
use super::policy::{Policy, RuleIdx};
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

/// A data category as the request named it: one of the policy's, or not.
#[derive(Debug, Clone)]
pub(crate) enum Named {
    Known(NodeIdx),
    Unknown(Box<str>),
}

/// Why a decision came out as it did, enough to write its reason.
#[derive(Debug, Clone)]
pub(crate) enum Why {
    UnknownCategory {
        id: Box<str>,
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
        obligation: Arc<str>,
    },
}

/// The facts of a reason the policy's rules gave.
#[derive(Debug, Clone)]
pub(crate) struct Explained {
    pub policy: Policy,
    pub purpose: NodeIdx,
    /// The resource's own category.
    pub category: Named,
    /// The resource's origins as the request listed them, when the reason
    /// names them (a permit); empty otherwise.
    pub origins: Vec<Named>,
    why: Why,
    /// The rules that made the decision, in policy order.
    pub rules: Vec<RuleIdx>,
    /// The decision with monitor rules enforced (its API spelling), when
    /// it would differ, and the rules that would make it.
    pub monitor: Option<(&'static str, Vec<Arc<str>>)>,
}

impl Explained {
    pub(crate) fn new(
        policy: Policy,
        purpose: NodeIdx,
        category: Named,
        origins: Vec<Named>,
        why: Why,
        rules: Vec<RuleIdx>,
        monitor: Option<(&'static str, Vec<Arc<str>>)>,
    ) -> Self {
        Explained {
            policy,
            purpose,
            category,
            origins,
            why,
            rules,
            monitor,
        }
    }
}

#[derive(Debug, Clone)]
enum Kind {
    /// Already in words (an invalid request, a claim refused).
    Words(String),
    /// A purpose the policy does not declare; the spelling it may have
    /// meant is looked for when shown.
    UnknownPurpose {
        policy: Policy,
        id: Box<str>,
    },
    Explained(Explained),
}

/// Why a decision came out as it did: shown (`Display`) as one line that
/// names the rules that made it. Equal when the words are.
#[derive(Debug, Clone)]
pub struct Reason(Kind);

impl Reason {
    /// A reason already in words.
    pub fn words(text: impl Into<String>) -> Self {
        Reason(Kind::Words(text.into()))
    }

    pub(crate) fn unknown_purpose(policy: &Policy, id: &str) -> Self {
        Reason(Kind::UnknownPurpose {
            policy: policy.clone(),
            id: id.into(),
        })
    }

    pub(crate) fn explained(facts: Explained) -> Self {
        Reason(Kind::Explained(facts))
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Kind::Words(text) => f.write_str(text),
            Kind::UnknownPurpose { policy, id } => {
                let hint = suggest::did_you_mean(id, policy.purposes().ids());
                write!(f, "unknown purpose `{id}`{hint}")
            }
            Kind::Explained(facts) => facts.fmt(f),
        }
    }
}

impl PartialEq for Reason {
    fn eq(&self, other: &Self) -> bool {
        self.to_string() == other.to_string()
    }
}

impl Eq for Reason {}

impl Serialize for Reason {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl Explained {
    fn category_id<'a>(&'a self, named: &'a Named) -> &'a str {
        match named {
            Named::Known(idx) => self.policy.categories().id(*idx),
            Named::Unknown(id) => id,
        }
    }

    fn rule_id(&self, r: RuleIdx) -> &str {
        self.policy.rule(r).map_or("", |rule| &*rule.id)
    }

    /// `` `id` ``, or `` `id` (an origin of `category`) ``.
    fn label(&self, f: &mut fmt::Formatter<'_>, category: NodeIdx, origin: bool) -> fmt::Result {
        let id = self.policy.categories().id(category);
        if origin {
            write!(
                f,
                "`{id}` (an origin of `{}`)",
                self.category_id(&self.category)
            )
        } else {
            write!(f, "`{id}`")
        }
    }

    /// `` `a`, `b` `` for a list of ids.
    fn ticked<'a>(f: &mut fmt::Formatter<'_>, ids: impl Iterator<Item = &'a str>) -> fmt::Result {
        for (i, id) in ids.enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "`{id}`")?;
        }
        Ok(())
    }
}

impl fmt::Display for Explained {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let policy = &self.policy;
        let p = policy.purposes().id(self.purpose);
        match &self.why {
            Why::UnknownCategory { id, origin } => {
                let hint = suggest::did_you_mean(id, policy.categories().ids());
                let place = if *origin { "origin " } else { "" };
                write!(f, "unknown {place}data category `{id}`{hint}")?;
            }
            Why::NoPermit {
                category,
                origin,
                near,
            } => {
                write!(f, "no rule permits `{p}` on ")?;
                self.label(f, *category, *origin)?;
                if let Some(rule) = near.and_then(|r| policy.rule(r)) {
                    write!(f, "; rule `{}` would permit it if ", rule.id)?;
                    if let Some(when) = &rule.when {
                        f.write_str(&when.describe())?;
                    }
                    if let Some(unless) = &rule.unless {
                        if rule.when.is_some() {
                            f.write_str(" and ")?;
                        }
                        write!(f, "not ({})", unless.describe())?;
                    }
                }
            }
            Why::Denied {
                category,
                origin,
                rule,
            } => {
                write!(f, "rule `{}` denies `{p}` on ", self.rule_id(*rule))?;
                self.label(f, *category, *origin)?;
                // Semantic 2: name the narrower prohibited purpose when the
                // request asked for a broader one.
                if let Some(rule) = policy.rule(*rule) {
                    let purposes = policy.purposes();
                    let direct = rule
                        .purpose_idx
                        .iter()
                        .any(|&listed| purposes.covers(listed, self.purpose));
                    if !direct {
                        if let Some(&narrower) = rule
                            .purpose_idx
                            .iter()
                            .find(|&&listed| purposes.covers(self.purpose, listed))
                        {
                            write!(
                                f,
                                ": it includes `{}`, which the rule prohibits",
                                purposes.id(narrower)
                            )?;
                        }
                    }
                }
            }
            Why::Undecidable { rule, missing } => write!(
                f,
                "rule `{}` cannot be decided for `{p}`: the request does not give {}",
                self.rule_id(*rule),
                missing.describe()
            )?,
            Why::Permitted => {
                write!(f, "`{p}` on `{}`", self.category_id(&self.category))?;
                if !self.origins.is_empty() {
                    f.write_str(" and its origin ")?;
                    Self::ticked(f, self.origins.iter().map(|o| self.category_id(o)))?;
                }
                let noun = if self.rules.len() == 1 {
                    "rule"
                } else {
                    "rules"
                };
                write!(f, " is permitted by {noun} ")?;
                Self::ticked(f, self.rules.iter().map(|&r| self.rule_id(r)))?;
            }
            Why::UnsupportedObligation { rule, obligation } => write!(
                f,
                "rule `{}` permits only with obligation `{obligation}`, which the caller does not support",
                self.rule_id(*rule)
            )?,
        }
        if let Some((decision, ids)) = &self.monitor {
            write!(f, "; with monitor rules enforced it would be {decision} (")?;
            Self::ticked(f, ids.iter().map(|id| &**id))?;
            f.write_str(")")?;
        }
        Ok(())
    }
}
