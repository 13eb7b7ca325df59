//! Which facts of a request a policy reads at all: a question asked of
//! the rules as loaded, for tools that hold requests with fields left out
//! (a decision log with fields redacted, say) and must know whether the
//! answer could depend on them.

use super::model::{Condition, Effect};
use super::policy::Policy;

/// A fact of a request that conditions (or claims) can read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Fact {
    /// `subject.id`: read by `subject: {id}` and by claims.
    SubjectId,
    SubjectRoles,
    /// The subject's tenant and the data's owner (`sameTenant`).
    Tenancy,
    Deidentification,
    GroupSize,
    /// `resource.origin`: always read, since each origin is decided too.
    Origin,
    ResourceAttributes,
    CustomerInstruction,
    ContextAttributes,
    /// What the caller can fulfil: read by every permit with obligations.
    SupportedObligations,
}

impl Policy {
    /// Whether some rule (enforced or monitored) or claim of the policy
    /// can read `fact`, so a request lacking it may be decided otherwise
    /// than one giving it.
    pub fn reads(&self, fact: Fact) -> bool {
        match fact {
            Fact::Origin => true,
            Fact::SubjectId if self.claims().is_some() => true,
            Fact::SupportedObligations => self
                .rules()
                .iter()
                .any(|r| r.effect == Effect::Permit && !r.obligations.is_empty()),
            _ => self.rules().iter().any(|r| {
                r.when
                    .iter()
                    .chain(&r.unless)
                    .any(|c| condition_reads(c, fact))
            }),
        }
    }
}

fn condition_reads(condition: &Condition, fact: Fact) -> bool {
    match condition {
        Condition::SameTenant(_) => fact == Fact::Tenancy,
        Condition::Deidentification(_) => fact == Fact::Deidentification,
        Condition::GroupSizeAtLeast { .. } => fact == Fact::GroupSize,
        Condition::OriginWithin { .. } => fact == Fact::Origin,
        Condition::SubjectId(_) => fact == Fact::SubjectId,
        Condition::SubjectRole(_) => fact == Fact::SubjectRoles,
        Condition::Context { .. } => fact == Fact::ContextAttributes,
        Condition::Resource { .. } => fact == Fact::ResourceAttributes,
        Condition::CustomerInstruction(_) => fact == Fact::CustomerInstruction,
        Condition::All(parts) | Condition::Any(parts) => {
            parts.iter().any(|p| condition_reads(p, fact))
        }
        Condition::Not(inner) => condition_reads(inner, fact),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_policy_reads_what_its_conditions_name() {
        let policy = crate::default_policy::load().unwrap();
        assert!(policy.reads(Fact::Tenancy));
        assert!(policy.reads(Fact::Deidentification));
        assert!(policy.reads(Fact::GroupSize));
        assert!(policy.reads(Fact::CustomerInstruction));
        assert!(policy.reads(Fact::Origin));
        assert!(!policy.reads(Fact::SubjectId));
        assert!(!policy.reads(Fact::SubjectRoles));
        assert!(!policy.reads(Fact::ContextAttributes));
        assert!(!policy.reads(Fact::ResourceAttributes));
        assert!(!policy.reads(Fact::SupportedObligations));
    }
}
