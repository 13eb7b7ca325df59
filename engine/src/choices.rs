//! Choices: what each customer configured and what each data subject said
//! (docs/choices.md). The policy says which purposes depend on which
//! choices ([`ChoicesPolicy`]); the caller hands the choices it looked up
//! to `evaluate` as facts ([`ChoiceFacts`]): the engine stays pure.
//!
//! The semantics, each with a test:
//! - A choice on purpose P covers P and its descendants.
//! - `withdrawn` or `objected` on the asked purpose or any ancestor denies
//!   (like a prohibition), the tenant's as well as the data subject's, for
//!   every purpose that depends on choices (whoever's a requirement reads:
//!   a data subject's objection to a purpose the tenant configures still
//!   denies it for their data); a data subject's choice never widens what
//!   the tenant configured.
//! - An opt-in requirement (a tenant's `default: withdrawn`, a data
//!   subject's `basis: consent`) needs `granted` on the asked purpose or
//!   an ancestor, unexpired; an opt-out one (`default: granted`,
//!   `basis: legitimate-interest`) needs nothing but the absence of a
//!   withdrawal or objection.
//! - A restricted data subject's data serves only `restriction.allows`
//!   (and their descendants).
//! - An expired choice is as if it were not there.
//! - Choices narrow: they apply only to what the rules permit. A decision
//!   that needs choices it was not given (no owner tenant, no data
//!   subject, or choices not looked up) is `INDETERMINATE`, naming what is
//!   missing; a denial by the choices it was given outranks that.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::model::{NodeIdx, Taxonomy};
use crate::request::DecisionRequest;

/// How long a decision that read choices may be cached, in seconds: a
/// withdrawal is enforced by every cache within it.
pub const CHOICE_TTL_SECONDS: u32 = 1;

/// Whose choices a requirement reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ChoiceScope {
    /// The customer's configuration: the data's owner tenant's own choices.
    Tenant,
    /// Each data subject's, within the owner tenant.
    DataSubject,
}

/// A purpose that depends on choices, as the policy says.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct ChoiceRequirement {
    pub purposes: Vec<Arc<str>>,
    #[serde(skip)]
    pub purpose_idx: Vec<NodeIdx>,
    pub by: ChoiceScope,
    /// Opt-in: a `granted` choice is needed (`default: withdrawn`,
    /// `basis: consent`); otherwise only a withdrawal or objection denies.
    pub opt_in: bool,
}

/// The policy's `choices` and `restriction`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize)]
pub struct ChoicesPolicy {
    pub requirements: Vec<ChoiceRequirement>,
    /// Whether the policy has a `restriction` section.
    pub restriction: bool,
    /// What a restricted data subject's data may still serve.
    pub restriction_allows: Vec<Arc<str>>,
    #[serde(skip)]
    pub restriction_idx: Vec<NodeIdx>,
}

/// What a choice says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChoiceState {
    Granted,
    Withdrawn,
    Objected,
    /// Restriction of processing (Art. 18): names no purpose.
    Restricted,
}

impl ChoiceState {
    pub fn as_str(self) -> &'static str {
        match self {
            ChoiceState::Granted => "granted",
            ChoiceState::Withdrawn => "withdrawn",
            ChoiceState::Objected => "objected",
            ChoiceState::Restricted => "restricted",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "granted" => Some(ChoiceState::Granted),
            "withdrawn" => Some(ChoiceState::Withdrawn),
            "objected" => Some(ChoiceState::Objected),
            "restricted" => Some(ChoiceState::Restricted),
            _ => None,
        }
    }
}

/// One current choice: the latest event for its purpose.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Choice {
    /// Empty for a restriction.
    pub purpose: String,
    pub state: ChoiceState,
    /// When it was recorded, in seconds since the Unix epoch.
    pub at: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<i64>,
}

impl Choice {
    fn live(&self, now: i64) -> bool {
        self.expires_at.is_none_or(|e| e > now)
    }
}

/// The choices a decision may read, looked up by the caller for the
/// request's owner tenant and data subject: `None` where they were not
/// looked up (a decision that needs them is then `INDETERMINATE`), an
/// empty list where none are recorded.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ChoiceFacts {
    /// The time choices are judged at (expiry), in seconds since the epoch.
    pub now: i64,
    /// The store revision they were read at.
    pub revision: u64,
    /// The owner tenant's own choices.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant: Option<Vec<Choice>>,
    /// The data subject's choices.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<Vec<Choice>>,
}

impl ChoiceFacts {
    /// No choices looked up.
    pub fn none() -> Self {
        ChoiceFacts::default()
    }
}

/// `req` as the diff asks it of two policies: as it is, with no choices
/// looked up; and, where either policy reads choices (`reads`), for a
/// tenant and a data subject with nothing recorded, with the asked purpose
/// granted, with it withdrawn, and restricted: each way a choice can decide.
pub fn variants(req: &DecisionRequest, reads: bool) -> Vec<(DecisionRequest, ChoiceFacts)> {
    let mut out = vec![(req.clone(), ChoiceFacts::none())];
    if !reads {
        return out;
    }
    let mut named = req.clone();
    if named.resource.owner_tenant.is_empty() {
        named.resource.owner_tenant = "a-tenant".into();
    }
    if named.resource.data_subject.is_empty() {
        named.resource.data_subject = "a-data-subject".into();
    }
    let one = |purpose: &str, state: ChoiceState| Choice {
        purpose: purpose.to_string(),
        state,
        at: 0,
        expires_at: None,
    };
    let facts = |tenant: Vec<Choice>, subject: Vec<Choice>| ChoiceFacts {
        now: 1,
        revision: 0,
        tenant: Some(tenant),
        subject: Some(subject),
    };
    let asked = named.purpose.clone();
    out.push((named.clone(), facts(Vec::new(), Vec::new())));
    for (tenant, subject) in [
        (ChoiceState::Granted, ChoiceState::Granted),
        (ChoiceState::Withdrawn, ChoiceState::Withdrawn),
        (ChoiceState::Granted, ChoiceState::Withdrawn),
        (ChoiceState::Withdrawn, ChoiceState::Granted),
    ] {
        out.push((
            named.clone(),
            facts(vec![one(&asked, tenant)], vec![one(&asked, subject)]),
        ));
    }
    out.push((
        named,
        facts(
            vec![one(&asked, ChoiceState::Granted)],
            vec![
                one(&asked, ChoiceState::Granted),
                one("", ChoiceState::Restricted),
            ],
        ),
    ));
    out
}

/// What the choices say of a permitted request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Judged {
    Allowed,
    Denied(String),
    Missing(String),
}

impl ChoicesPolicy {
    /// Whether the policy says anything about choices.
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty() && !self.restriction
    }

    /// Whether `purpose` depends on choices (a requirement covers it).
    pub fn governs(&self, purposes: &Taxonomy, purpose: NodeIdx) -> bool {
        self.requirements
            .iter()
            .any(|r| r.purpose_idx.iter().any(|&p| purposes.covers(p, purpose)))
    }

    /// Whose choices `purpose` depends on, in words, for the explorer and
    /// `diff` (e.g. "the tenant's configuration (on unless switched off)").
    pub fn describe(&self, purposes: &Taxonomy, purpose: NodeIdx) -> String {
        let mut said: Vec<&str> = self
            .requirements
            .iter()
            .filter(|r| r.purpose_idx.iter().any(|&p| purposes.covers(p, purpose)))
            .map(|r| match (r.by, r.opt_in) {
                (ChoiceScope::Tenant, false) => {
                    "the tenant's configuration (on unless switched off)"
                }
                (ChoiceScope::Tenant, true) => {
                    "the tenant's configuration (off unless switched on)"
                }
                (ChoiceScope::DataSubject, true) => "the data subject's consent",
                (ChoiceScope::DataSubject, false) => "the data subject's objection",
            })
            .collect();
        said.dedup();
        said.join(" and ")
    }

    /// What the choices in `facts` say of `req` asking `purpose`.
    pub fn judge(
        &self,
        purposes: &Taxonomy,
        purpose: NodeIdx,
        req: &DecisionRequest,
        facts: &ChoiceFacts,
    ) -> Judged {
        if self.is_empty() {
            return Judged::Allowed;
        }
        let asked = purposes.id(purpose);
        let tenant = req.resource.owner_tenant.as_str();
        let subject = req.resource.data_subject.as_str();
        let path: Vec<&str> = purposes
            .self_and_ancestors(purpose)
            .map(|i| purposes.id(i))
            .collect();
        let on_path = |c: &&Choice| c.live(facts.now) && path.contains(&c.purpose.as_str());
        let mut missing = None;
        // Restriction: any request naming a data subject.
        if !subject.is_empty() {
            match &facts.subject {
                None => missing = Some(not_looked_up_subject(subject, tenant)),
                Some(choices) => {
                    let restricted = choices
                        .iter()
                        .find(|c| c.state == ChoiceState::Restricted && c.live(facts.now));
                    let allowed = self
                        .restriction_idx
                        .iter()
                        .any(|&a| purposes.covers(a, purpose));
                    if let (Some(r), false) = (restricted, allowed) {
                        return Judged::Denied(format!(
                            "data subject `{subject}` of `{tenant}` restricted processing {}; `{asked}` is not among what restriction allows{}",
                            rfc3339(r.at),
                            list(&self.restriction_allows)
                        ));
                    }
                }
            }
        }
        for r in &self.requirements {
            if !r.purpose_idx.iter().any(|&p| purposes.covers(p, purpose)) {
                continue;
            }
            if tenant.is_empty() {
                missing.get_or_insert_with(|| {
                    format!(
                        "`{asked}` depends on the choices of the data's tenant, and the request names no owner tenant"
                    )
                });
                continue;
            }
            let Some(tenant_choices) = &facts.tenant else {
                missing.get_or_insert_with(|| {
                    format!("`{asked}` depends on the choices of tenant `{tenant}`, which were not looked up")
                });
                continue;
            };
            // The tenant's configuration narrows every requirement.
            if let Some(c) = tenant_choices.iter().filter(on_path).find(refuses) {
                return Judged::Denied(format!(
                    "`{asked}` is switched off by tenant `{tenant}`: {}{} {}",
                    c.state.as_str(),
                    on(c, asked),
                    rfc3339(c.at)
                ));
            }
            // The data subject's refusal narrows every requirement too:
            // an objection to a purpose the tenant configured is still an
            // objection.
            let subject_choices = if subject.is_empty() {
                None
            } else {
                match &facts.subject {
                    Some(choices) => Some(choices),
                    None => {
                        missing.get_or_insert_with(|| not_looked_up_subject(subject, tenant));
                        continue;
                    }
                }
            };
            if let Some(c) = subject_choices.and_then(|cs| cs.iter().filter(on_path).find(refuses))
            {
                let needs = match (r.by, r.opt_in) {
                    (ChoiceScope::DataSubject, true) => "needs the consent of",
                    (ChoiceScope::DataSubject, false) => {
                        "is processed on legitimate interest, and was refused by"
                    }
                    (ChoiceScope::Tenant, _) => "was refused by",
                };
                return Judged::Denied(format!(
                    "`{asked}` {needs} data subject `{subject}` of `{tenant}`, {}{} {}",
                    c.state.as_str(),
                    on(c, asked),
                    rfc3339(c.at)
                ));
            }
            let (own, whose) = match (r.by, subject_choices) {
                (ChoiceScope::Tenant, _) => (tenant_choices, format!("tenant `{tenant}`")),
                (ChoiceScope::DataSubject, Some(choices)) => {
                    (choices, format!("data subject `{subject}` of `{tenant}`"))
                }
                (ChoiceScope::DataSubject, None) => {
                    missing.get_or_insert_with(|| {
                        format!(
                            "`{asked}` depends on the choices of each data subject, and the request names none"
                        )
                    });
                    continue;
                }
            };
            if r.opt_in
                && !own
                    .iter()
                    .filter(on_path)
                    .any(|c| c.state == ChoiceState::Granted)
            {
                let expired = own.iter().find(|c| {
                    c.state == ChoiceState::Granted
                        && !c.live(facts.now)
                        && path.contains(&c.purpose.as_str())
                });
                let why = match expired {
                    Some(c) => format!(
                        "granted {} and expired {}",
                        rfc3339(c.at),
                        rfc3339(c.expires_at.unwrap_or(c.at))
                    ),
                    None => "and none is recorded".to_string(),
                };
                return Judged::Denied(format!("`{asked}` needs the consent of {whose}, {why}"));
            }
        }
        match missing {
            Some(why) => Judged::Missing(why),
            None => Judged::Allowed,
        }
    }
}

fn refuses(c: &&Choice) -> bool {
    matches!(c.state, ChoiceState::Withdrawn | ChoiceState::Objected)
}

/// ` on `P`` when the choice is on an ancestor of the asked purpose.
fn on(c: &Choice, asked: &str) -> String {
    if c.purpose == asked {
        String::new()
    } else {
        format!(" on `{}`", c.purpose)
    }
}

fn not_looked_up_subject(subject: &str, tenant: &str) -> String {
    format!("the choices of data subject `{subject}` of `{tenant}` were not looked up")
}

fn list(ids: &[Arc<str>]) -> String {
    if ids.is_empty() {
        return " (it allows nothing)".to_string();
    }
    let named: Vec<String> = ids.iter().map(|i| format!("`{i}`")).collect();
    format!(" ({})", named.join(", "))
}

/// `2026-12-07T10:00:00Z` for seconds since the Unix epoch.
pub fn rfc3339(unix: i64) -> String {
    let (year, month, day) = civil_date(unix.div_euclid(86_400));
    let rem = unix.rem_euclid(86_400);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// The (year, month, day) of a count of days since 1970-01-01 (Howard
/// Hinnant's algorithm).
pub fn civil_date(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

#[cfg(test)]
mod tests;
