//! Three-valued truth and how a rule's conditions are matched against a
//! request with it: a condition reading an attribute the request leaves
//! empty is unknown, remembering what was missing.

use super::super::model::{Condition, Presence, Rule, StateTest};
use super::super::policy::Policy;
use super::super::reason::Missing;
use super::super::request::DecisionRequest;

/// Three-valued truth (Kleene): unknown remembers what was missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Truth {
    True,
    False,
    Unknown(Missing),
}

impl Truth {
    pub(super) fn from_bool(b: bool) -> Self {
        if b { Truth::True } else { Truth::False }
    }

    pub(super) fn not(self) -> Self {
        match self {
            Truth::True => Truth::False,
            Truth::False => Truth::True,
            unknown => unknown,
        }
    }

    pub(super) fn and(self, other: impl FnOnce() -> Truth) -> Self {
        match self {
            Truth::False => Truth::False,
            Truth::True => other(),
            Truth::Unknown(m) => match other() {
                Truth::False => Truth::False,
                _ => Truth::Unknown(m),
            },
        }
    }
}

impl Policy {
    /// Whether a rule applies: `when` holds and `unless` does not.
    pub(super) fn applies(&self, rule: &Rule, req: &DecisionRequest) -> Truth {
        let when = rule
            .when
            .as_ref()
            .map_or(Truth::True, |c| self.holds(c, req));
        when.and(|| {
            rule.unless
                .as_ref()
                .map_or(Truth::True, |c| self.holds(c, req).not())
        })
    }

    fn holds(&self, condition: &Condition, req: &DecisionRequest) -> Truth {
        let subject = &req.subject;
        let resource = &req.resource;
        match condition {
            Condition::SameTenant(expected) => {
                if subject.tenant.is_empty() {
                    Truth::Unknown(Missing::SubjectTenant)
                } else if resource.owner_tenant.is_empty() {
                    Truth::Unknown(Missing::OwnerTenant)
                } else {
                    Truth::from_bool((subject.tenant == resource.owner_tenant) == *expected)
                }
            }
            Condition::Deidentification(test) => match resource.deidentification {
                None => Truth::Unknown(Missing::Deidentification),
                Some(state) => Truth::from_bool(match test {
                    StateTest::Exactly(s) => state == *s,
                    StateTest::AtLeast(s) => state >= *s,
                }),
            },
            Condition::GroupSizeAtLeast { min, .. } => match resource.group_size {
                None => Truth::Unknown(Missing::GroupSize),
                Some(k) => Truth::from_bool(k >= *min),
            },
            Condition::OriginWithin { category_idx, .. } => {
                Truth::from_bool(resource.origin.iter().all(|o| {
                    self.categories().lookup(o).is_some_and(|idx| {
                        category_idx
                            .iter()
                            .any(|&within| self.categories().covers(within, idx))
                    })
                }))
            }
            Condition::SubjectId(ids) => Truth::from_bool(ids.contains(&subject.id)),
            Condition::SubjectRole(roles) => {
                Truth::from_bool(subject.roles.iter().any(|r| roles.contains(r)))
            }
            Condition::Context { key, values } => Truth::from_bool(
                req.context
                    .attributes
                    .get(key)
                    .is_some_and(|v| values.contains(v)),
            ),
            Condition::Resource { key, values } => Truth::from_bool(
                resource
                    .attributes
                    .get(key)
                    .is_some_and(|v| values.contains(v)),
            ),
            Condition::CustomerInstruction(presence) => Truth::from_bool(
                req.context.customer_instruction.is_empty() == (*presence == Presence::Absent),
            ),
            Condition::All(parts) => {
                let mut acc = Truth::True;
                for part in parts {
                    acc = acc.and(|| self.holds(part, req));
                    if acc == Truth::False {
                        break;
                    }
                }
                acc
            }
            Condition::Any(parts) => {
                // any = not(all(not ..)), keeping the first unknown.
                let mut acc = Truth::True;
                for part in parts {
                    acc = acc.and(|| self.holds(part, req).not());
                    if acc == Truth::False {
                        break;
                    }
                }
                acc.not()
            }
            Condition::Not(inner) => self.holds(inner, req).not(),
        }
    }
}
