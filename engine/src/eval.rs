//! Evaluation: the semantics of docs/semantics.md.
//!
//! For each data category in play (the resource's own and each origin,
//! semantic 4) the rules that could apply come from the index; each is
//! matched against the request with three-valued logic (a condition reading
//! an attribute the request leaves empty is unknown), and the results combine
//! deny-overrides (semantic 5). The categories then combine: any `DENY`, else
//! any `INDETERMINATE`, else any `NOT_APPLICABLE`, else `PERMIT`.

use std::fmt::Write as _;
use std::sync::Arc;

use super::decision::{Decision, Evaluation, MonitorEvaluation};
use super::glob::glob;
use super::model::{
    Claim, Condition, Effect, Mode, NodeIdx, Obligation, Presence, Rule, StateTest,
};
use super::policy::{Policy, RuleIdx};
use super::reason::{Explain, Missing};
use super::request::DecisionRequest;
use super::suggest;

/// Three-valued truth (Kleene): unknown remembers what was missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Truth {
    True,
    False,
    Unknown(Missing),
}

impl Truth {
    fn from_bool(b: bool) -> Self {
        if b { Truth::True } else { Truth::False }
    }

    fn not(self) -> Self {
        match self {
            Truth::True => Truth::False,
            Truth::False => Truth::True,
            unknown => unknown,
        }
    }

    fn and(self, other: impl FnOnce() -> Truth) -> Self {
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

/// A data category in play for one request.
#[derive(Debug, Clone, Copy)]
enum InPlay<'r> {
    Known { idx: NodeIdx, origin: bool },
    Unknown { id: &'r str, origin: bool },
}

/// The decision of one pass (enforced rules, or with monitor rules too).
#[derive(Debug)]
struct Pass<'r> {
    decision: Decision,
    rules: Vec<RuleIdx>,
    obligations: Vec<Obligation>,
    explain: Explain<'r>,
    /// The unsupported obligation's id, for `UnsupportedObligation`.
    obligation: Option<Arc<str>>,
}

impl Policy {
    /// Decides one request. Never fails: an invalid request is
    /// `INDETERMINATE` with the reason (the gRPC edge rejects it before).
    pub fn evaluate(&self, req: &DecisionRequest) -> Evaluation {
        if let Err(invalid) = req.validate() {
            return self.answer(
                req,
                Decision::Indeterminate,
                Vec::new(),
                format!("invalid request: {invalid}"),
            );
        }
        // Semantic 8: an undeclared purpose is not applicable, named.
        let Some(purpose) = self.purposes().lookup(&req.purpose) else {
            let hint = suggest::did_you_mean(&req.purpose, self.purposes().ids());
            return self.answer(
                req,
                Decision::NotApplicable,
                Vec::new(),
                format!("unknown purpose `{}`{hint}", req.purpose),
            );
        };
        // Purposes bound to identity: a claim outside the policy's `claims`
        // is denied before any rule is looked at.
        if let Some(claims) = self.claims() {
            if let Err((rule_ids, reason)) = self.may_claim(claims, purpose, req) {
                return self.answer(req, Decision::Deny, rule_ids, reason);
            }
        }
        let in_play = self.categories_in_play(req);
        let enforced = self.evaluate_pass(purpose, &in_play, req, false);
        let monitor = if self.has_monitor_rules() {
            let with_monitor = self.evaluate_pass(purpose, &in_play, req, true);
            (with_monitor.decision != enforced.decision).then_some(with_monitor)
        } else {
            None
        };
        let mut reason = self.reason(
            purpose,
            req,
            &enforced.explain,
            &enforced.rules,
            enforced.obligation.as_deref(),
        );
        let monitor = monitor.map(|m| {
            let ids = self.rule_ids(&m.rules);
            let _ = write!(
                reason,
                "; with monitor rules enforced it would be {} ({})",
                m.decision,
                ids.iter()
                    .map(|id| format!("`{id}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            MonitorEvaluation {
                decision: m.decision,
                rule_ids: ids,
            }
        });
        Evaluation {
            decision: enforced.decision,
            obligations: enforced.obligations,
            rule_ids: self.rule_ids(&enforced.rules),
            reason,
            policy_revision: self.revision().clone(),
            ttl_seconds: self.settings().decision_ttl_seconds,
            request_id: req.request_id.clone(),
            monitor,
        }
    }

    /// Whether the request's subject may claim `purpose`; if not, the
    /// claims that named the subject and why.
    fn may_claim(
        &self,
        claims: &[Claim],
        purpose: NodeIdx,
        req: &DecisionRequest,
    ) -> Result<(), (Vec<Arc<str>>, String)> {
        let subject = &req.subject.id;
        if subject.is_empty() {
            return Err((
                Vec::new(),
                "the request names no subject, and this policy binds purposes to subjects (`claims`)"
                    .to_string(),
            ));
        }
        let mine: Vec<&Claim> = claims
            .iter()
            .filter(|c| c.subjects.iter().any(|pattern| glob(pattern, subject)))
            .collect();
        if mine.is_empty() {
            return Err((
                Vec::new(),
                format!("subject `{subject}` may claim no purpose: no entry of `claims` names it"),
            ));
        }
        let allowed = mine.iter().any(|c| {
            c.purpose_idx
                .iter()
                .any(|&listed| self.purposes().covers(listed, purpose))
        });
        if allowed {
            return Ok(());
        }
        let may: Vec<String> = mine
            .iter()
            .flat_map(|c| c.purposes.iter().map(|p| format!("`{p}`")))
            .collect();
        Err((
            mine.iter().map(|c| c.id.clone()).collect(),
            format!(
                "subject `{subject}` may not claim purpose `{}`; it may claim {}",
                req.purpose,
                may.join(", ")
            ),
        ))
    }

    fn answer(
        &self,
        req: &DecisionRequest,
        decision: Decision,
        rule_ids: Vec<Arc<str>>,
        reason: String,
    ) -> Evaluation {
        Evaluation {
            decision,
            obligations: Vec::new(),
            rule_ids,
            reason,
            policy_revision: self.revision().clone(),
            ttl_seconds: self.settings().decision_ttl_seconds,
            request_id: req.request_id.clone(),
            monitor: None,
        }
    }

    fn rule_ids(&self, rules: &[RuleIdx]) -> Vec<Arc<str>> {
        rules
            .iter()
            .filter_map(|&r| self.rule(r).map(|rule| rule.id.clone()))
            .collect()
    }

    /// The resource's own category, then each origin not already in play.
    fn categories_in_play<'r>(&self, req: &'r DecisionRequest) -> Vec<InPlay<'r>> {
        let mut out: Vec<InPlay<'r>> = Vec::with_capacity(1 + req.resource.origin.len());
        for (i, id) in std::iter::once(&req.resource.category)
            .chain(&req.resource.origin)
            .enumerate()
        {
            let origin = i > 0;
            let earlier = req
                .resource
                .origin
                .get(..i.saturating_sub(1))
                .unwrap_or(&[]);
            if origin && (*id == req.resource.category || earlier.contains(id)) {
                continue;
            }
            out.push(match self.categories().lookup(id) {
                Some(idx) => InPlay::Known { idx, origin },
                None => InPlay::Unknown { id, origin },
            });
        }
        out
    }

    /// One pass over the categories in play.
    fn evaluate_pass<'r>(
        &self,
        purpose: NodeIdx,
        in_play: &[InPlay<'r>],
        req: &DecisionRequest,
        include_monitor: bool,
    ) -> Pass<'r> {
        // Per category: (decision, determining rules, explanation).
        let mut decided: Vec<(Decision, Vec<RuleIdx>, Explain<'r>)> =
            Vec::with_capacity(in_play.len());
        for category in in_play {
            decided.push(match *category {
                InPlay::Unknown { id, origin } => (
                    Decision::NotApplicable,
                    Vec::new(),
                    Explain::UnknownCategory { id, origin },
                ),
                InPlay::Known { idx, origin } => {
                    self.evaluate_category(purpose, idx, origin, req, include_monitor)
                }
            });
        }
        // Semantic 4: every category must be permitted.
        let decision = [
            Decision::Deny,
            Decision::Indeterminate,
            Decision::NotApplicable,
        ]
        .into_iter()
        .find(|d| decided.iter().any(|(x, _, _)| x == d))
        .unwrap_or(Decision::Permit);
        let mut rules: Vec<RuleIdx> = Vec::new();
        let mut explain = None;
        for (d, r, e) in decided {
            if d == decision {
                rules.extend(r);
                explain.get_or_insert(e);
            }
        }
        rules.sort_unstable();
        rules.dedup();
        let explain = explain.unwrap_or(Explain::Permitted);
        if decision != Decision::Permit {
            return Pass {
                decision,
                rules,
                obligations: Vec::new(),
                explain,
                obligation: None,
            };
        }
        self.with_obligations(rules, req)
    }

    /// Semantic 7: a permit's obligations must all be ones the caller can
    /// fulfil; otherwise the permit becomes a deny naming the obligation.
    fn with_obligations<'r>(&self, rules: Vec<RuleIdx>, req: &DecisionRequest) -> Pass<'r> {
        let mut obligations: Vec<Obligation> = Vec::new();
        let mut unsupported: Option<(RuleIdx, Arc<str>)> = None;
        let mut carriers: Vec<RuleIdx> = Vec::new();
        for &r in &rules {
            let Some(rule) = self.rule(r) else { continue };
            for obligation in &rule.obligations {
                if !req
                    .supported_obligations
                    .iter()
                    .any(|s| *s == *obligation.id)
                {
                    unsupported.get_or_insert((r, obligation.id.clone()));
                    if !carriers.contains(&r) {
                        carriers.push(r);
                    }
                } else if !obligations.contains(obligation) {
                    obligations.push(obligation.clone());
                }
            }
        }
        match unsupported {
            None => Pass {
                decision: Decision::Permit,
                rules,
                obligations,
                explain: Explain::Permitted,
                obligation: None,
            },
            Some((rule, id)) => Pass {
                decision: Decision::Deny,
                rules: carriers,
                obligations: Vec::new(),
                explain: Explain::UnsupportedObligation { rule },
                obligation: Some(id),
            },
        }
    }

    /// Semantic 5 for one category: deny-overrides.
    fn evaluate_category<'r>(
        &self,
        purpose: NodeIdx,
        category: NodeIdx,
        origin: bool,
        req: &DecisionRequest,
        include_monitor: bool,
    ) -> (Decision, Vec<RuleIdx>, Explain<'r>) {
        let mut applicable: Vec<(RuleIdx, Effect, Truth)> = Vec::new();
        let mut near = None;
        for r in self.candidates(purpose, category) {
            let Some(rule) = self.rule(r) else { continue };
            if rule.mode == Mode::Monitor && !include_monitor {
                continue;
            }
            let truth = self.applies(rule, req);
            if truth != Truth::False {
                applicable.push((r, rule.effect, truth));
            } else if rule.effect == Effect::Permit {
                near.get_or_insert(r);
            }
        }
        let pick = |effect: Effect, matched: bool| -> Vec<RuleIdx> {
            applicable
                .iter()
                .filter(|(_, e, t)| *e == effect && (*t == Truth::True) == matched)
                .map(|(r, _, _)| *r)
                .collect()
        };
        let first = |effect: Effect, matched: bool| {
            applicable
                .iter()
                .find(|(_, e, t)| *e == effect && (*t == Truth::True) == matched)
        };
        if let Some(&(rule, _, _)) = first(Effect::Deny, true) {
            return (
                Decision::Deny,
                pick(Effect::Deny, true),
                Explain::Denied {
                    category,
                    origin,
                    rule,
                },
            );
        }
        // An undecidable deny blocks any permit: the deny might have applied.
        if let Some(&(rule, _, Truth::Unknown(missing))) = first(Effect::Deny, false) {
            return (
                Decision::Indeterminate,
                pick(Effect::Deny, false),
                Explain::Undecidable { rule, missing },
            );
        }
        if first(Effect::Permit, true).is_some() {
            return (
                Decision::Permit,
                pick(Effect::Permit, true),
                Explain::Permitted,
            );
        }
        if let Some(&(rule, _, Truth::Unknown(missing))) = first(Effect::Permit, false) {
            return (
                Decision::Indeterminate,
                pick(Effect::Permit, false),
                Explain::Undecidable { rule, missing },
            );
        }
        (
            Decision::NotApplicable,
            Vec::new(),
            Explain::NoPermit {
                category,
                origin,
                near,
            },
        )
    }

    /// Whether a rule applies: `when` holds and `unless` does not.
    fn applies(&self, rule: &Rule, req: &DecisionRequest) -> Truth {
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
