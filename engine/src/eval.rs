//! Evaluation: the semantics of docs/semantics.md.
//!
//! For each data category in play (the resource's own and each origin,
//! semantic 4) the rules that could apply come from the index; each is
//! matched against the request with three-valued logic (a condition reading
//! an attribute the request leaves empty is unknown), and the results combine
//! deny-overrides (semantic 5). The categories then combine: any `DENY`, else
//! any `INDETERMINATE`, else any `NOT_APPLICABLE`, else `PERMIT`.

use std::sync::Arc;

use super::choices::{CHOICE_TTL_SECONDS, ChoiceFacts, Judged};
use super::decision::{Decision, Evaluation, MonitorEvaluation};
use super::glob::glob;
use super::model::{Claim, Effect, Mode, NodeIdx, Obligation};
use super::policy::{Policy, RuleIdx};
use super::reason::{Explained, Named, Reason, Why};
use super::request::DecisionRequest;

mod truth;
pub(crate) use truth::Truth;

/// A data category in play for one request.
#[derive(Debug, Clone, Copy)]
pub(crate) enum InPlay<'r> {
    Known { idx: NodeIdx, origin: bool },
    Unknown { id: &'r str, origin: bool },
}

/// The decision of one pass (enforced rules, or with monitor rules too).
#[derive(Debug)]
pub(crate) struct Pass {
    pub(crate) decision: Decision,
    pub(crate) rules: Vec<RuleIdx>,
    pub(crate) obligations: Vec<Obligation>,
    why: Why,
}

/// What a request's facts say whatever the purpose, worked out once for
/// the reverse question, which asks them of every purpose: the
/// categories in play, each rule's truth, and the claims naming the
/// subject. The same code as one decision's, asked once instead of once
/// per purpose.
#[derive(Debug)]
pub(crate) struct Facts<'r> {
    pub(crate) in_play: Vec<InPlay<'r>>,
    /// Each rule's truth for the request, by rule index.
    pub(crate) truths: Vec<Truth>,
    /// The claims naming the subject (indices into `claims`), or `None`
    /// when the policy binds purposes to subjects and names this one
    /// nowhere (or the request names no subject): no purpose is claimable.
    claimants: Option<Vec<usize>>,
}

impl Policy {
    /// Decides one request. Never fails: an invalid request is
    /// `INDETERMINATE` with the reason (the gRPC edge rejects it before).
    pub fn evaluate(&self, req: &DecisionRequest) -> Evaluation {
        self.evaluate_with(req, &ChoiceFacts::none())
    }

    /// Decides one request with the choices the caller looked up for its
    /// owner tenant and data subject (`choices.rs`): a permit the rules
    /// give stands only if those choices allow it.
    pub fn evaluate_with(&self, req: &DecisionRequest, choices: &ChoiceFacts) -> Evaluation {
        if let Err(invalid) = req.validate() {
            return self.answer(
                req,
                Decision::Indeterminate,
                Vec::new(),
                Reason::words(format!("invalid request: {invalid}")),
            );
        }
        // Semantic 8: an undeclared purpose is not applicable, named.
        let Some(purpose) = self.purposes().lookup(&req.purpose) else {
            return self.answer(
                req,
                Decision::NotApplicable,
                Vec::new(),
                Reason::unknown_purpose(self, &req.purpose),
            );
        };
        self.evaluate_purpose(purpose, req, choices)
    }

    /// Decides a valid request for the declared `purpose` (the request's
    /// own purpose field is not read): what [`Policy::evaluate`] answers
    /// once the purpose is found. The reverse question asks the same
    /// checks and pass of every purpose ([`Policy::refused_before_rules`],
    /// [`Policy::enforced_pass`]).
    pub(crate) fn evaluate_purpose(
        &self,
        purpose: NodeIdx,
        req: &DecisionRequest,
        choices: &ChoiceFacts,
    ) -> Evaluation {
        // A purpose inherited from upstream is the ceiling: a wider or
        // unrelated purpose is denied before any rule is looked at.
        if !self.within_ceiling(purpose, req) {
            let asked = self.purposes().id(purpose);
            let reason = format!(
                "`{asked}` is not within the inherited purpose `{}`",
                req.inherited_purpose
            );
            return self.answer(req, Decision::Deny, Vec::new(), Reason::words(reason));
        }
        // Purposes bound to identity: a claim outside the policy's `claims`
        // is denied before any rule is looked at.
        if let Some(claims) = self.claims() {
            if let Err((rule_ids, reason)) = self.may_claim(claims, purpose, req) {
                return self.answer(req, Decision::Deny, rule_ids, Reason::words(reason));
            }
        }
        let in_play = self.categories_in_play(req);
        let enforced = self.evaluate_pass(purpose, &in_play, req, false, None);
        // Choices narrow what the rules permit, never more.
        let read_choices = !self.choices().is_empty()
            && (self.choices().governs(self.purposes(), purpose)
                || !req.resource.data_subject.is_empty());
        if enforced.decision == Decision::Permit && read_choices {
            let (decision, reason) =
                match self.choices().judge(self.purposes(), purpose, req, choices) {
                    Judged::Allowed => (Decision::Permit, None),
                    Judged::Denied(reason) => (Decision::Deny, Some(reason)),
                    Judged::Missing(reason) => (Decision::Indeterminate, Some(reason)),
                };
            if let Some(reason) = reason {
                let mut answer = self.answer(req, decision, Vec::new(), Reason::words(reason));
                answer.watched_ttl_seconds = answer.ttl_seconds;
                answer.ttl_seconds = CHOICE_TTL_SECONDS.min(answer.ttl_seconds);
                answer.choices = Some(std::sync::Arc::new(choices.clone()));
                return answer;
            }
        }
        let monitor = if self.has_monitor_rules() {
            let with_monitor = self.evaluate_pass(purpose, &in_play, req, true, None);
            (with_monitor.decision != enforced.decision).then_some(with_monitor)
        } else {
            None
        };
        let monitor = monitor.map(|m| MonitorEvaluation {
            decision: m.decision,
            rule_ids: self.rule_ids(&m.rules),
        });
        let category = match in_play.first() {
            Some(InPlay::Known { idx, .. }) => Named::Known(*idx),
            _ => Named::Unknown(req.resource.category.as_str().into()),
        };
        // A permit's reason lists the origins (each one the policy's).
        let origins = if matches!(enforced.why, Why::Permitted) {
            req.resource
                .origin
                .iter()
                .map(|o| match self.categories().lookup(o) {
                    Some(idx) => Named::Known(idx),
                    None => Named::Unknown(o.as_str().into()),
                })
                .collect()
        } else {
            Vec::new()
        };
        let rule_ids = self.rule_ids(&enforced.rules);
        let reason = Reason::explained(Explained::new(
            self.clone(),
            purpose,
            category,
            origins,
            enforced.why,
            enforced.rules,
            monitor
                .as_ref()
                .map(|m| (m.decision.as_str(), m.rule_ids.clone())),
        ));
        Evaluation {
            decision: enforced.decision,
            obligations: enforced.obligations,
            rule_ids,
            reason,
            policy_revision: self.revision().clone(),
            // A choice can change any second: a decision that read
            // choices is cached no longer than one.
            ttl_seconds: if read_choices {
                CHOICE_TTL_SECONDS.min(self.settings().decision_ttl_seconds)
            } else {
                self.settings().decision_ttl_seconds
            },
            watched_ttl_seconds: if read_choices {
                self.settings().decision_ttl_seconds
            } else {
                0
            },
            request_id: req.request_id.clone(),
            monitor,
            choices: read_choices.then(|| std::sync::Arc::new(choices.clone())),
        }
    }

    /// Whether `purpose` is within the request's inherited purpose (any
    /// purpose is when none is inherited).
    fn within_ceiling(&self, purpose: NodeIdx, req: &DecisionRequest) -> bool {
        req.inherited_purpose.is_empty()
            || super::model::purpose_within(self.purposes().id(purpose), &req.inherited_purpose)
    }

    /// The claims whose subject patterns match the request's subject,
    /// with their indices.
    fn claims_naming<'c>(
        claims: &'c [Claim],
        subject: &'c str,
    ) -> impl Iterator<Item = (usize, &'c Claim)> + 'c {
        claims
            .iter()
            .enumerate()
            .filter(move |(_, c)| c.subjects.iter().any(|pattern| glob(pattern, subject)))
    }

    /// Whether one of `mine` lets its subject claim `purpose`.
    fn claimable(&self, mine: &[&Claim], purpose: NodeIdx) -> bool {
        mine.iter().any(|c| {
            c.purpose_idx
                .iter()
                .any(|&listed| self.purposes().covers(listed, purpose))
        })
    }

    /// The facts of `req` (valid) worked out once, for asking them of
    /// many purposes ([`Policy::refused_before_rules`],
    /// [`Policy::enforced_pass`]).
    pub(crate) fn facts<'r>(&self, req: &'r DecisionRequest) -> Facts<'r> {
        let in_play = self.categories_in_play(req);
        let truths = self.rules().iter().map(|r| self.applies(r, req)).collect();
        let claimants = match self.claims() {
            None => Some(Vec::new()),
            Some(_) if req.subject.id.is_empty() => None,
            Some(claims) => {
                let mine: Vec<usize> = Self::claims_naming(claims, &req.subject.id)
                    .map(|(i, _)| i)
                    .collect();
                (!mine.is_empty()).then_some(mine)
            }
        };
        Facts {
            in_play,
            truths,
            claimants,
        }
    }

    /// Whether the facts may be asked of any purpose at all: `false` when
    /// the policy's claims name the subject nowhere, so every purpose is
    /// denied before any rule.
    pub(crate) fn any_claimable(&self, facts: &Facts<'_>) -> bool {
        facts.claimants.is_some()
    }

    /// Whether [`Policy::evaluate`] denies `purpose` before any rule
    /// for these facts (outside the inherited ceiling, or a purpose the
    /// subject may not claim), as `evaluate_purpose` checks it.
    pub(crate) fn refused_before_rules(
        &self,
        purpose: NodeIdx,
        req: &DecisionRequest,
        facts: &Facts<'_>,
    ) -> bool {
        if !self.within_ceiling(purpose, req) {
            return true;
        }
        let Some(claims) = self.claims() else {
            return false;
        };
        let Some(claimants) = facts.claimants.as_deref() else {
            return true;
        };
        let mine: Vec<&Claim> = claimants.iter().filter_map(|&i| claims.get(i)).collect();
        !self.claimable(&mine, purpose)
    }

    /// The enforced pass of [`Policy::evaluate`] for `purpose` on facts
    /// worked out once: its decision, rules and obligations are
    /// `evaluate`'s for a purpose not refused before any rule.
    pub(crate) fn enforced_pass(
        &self,
        purpose: NodeIdx,
        req: &DecisionRequest,
        facts: &Facts<'_>,
    ) -> Pass {
        self.evaluate_pass(purpose, &facts.in_play, req, false, Some(&facts.truths))
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
        let mine: Vec<&Claim> = Self::claims_naming(claims, subject)
            .map(|(_, c)| c)
            .collect();
        if mine.is_empty() {
            return Err((
                Vec::new(),
                format!("subject `{subject}` may claim no purpose: no entry of `claims` names it"),
            ));
        }
        if self.claimable(&mine, purpose) {
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
                self.purposes().id(purpose),
                may.join(", ")
            ),
        ))
    }

    fn answer(
        &self,
        req: &DecisionRequest,
        decision: Decision,
        rule_ids: Vec<Arc<str>>,
        reason: Reason,
    ) -> Evaluation {
        Evaluation {
            decision,
            obligations: Vec::new(),
            rule_ids,
            reason,
            policy_revision: self.revision().clone(),
            ttl_seconds: self.settings().decision_ttl_seconds,
            watched_ttl_seconds: 0,
            request_id: req.request_id.clone(),
            monitor: None,
            choices: None,
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

    /// One pass over the categories in play; `truths`, when given, are
    /// the rules' truths for `req` worked out before ([`Policy::facts`]).
    fn evaluate_pass<'r>(
        &self,
        purpose: NodeIdx,
        in_play: &[InPlay<'r>],
        req: &DecisionRequest,
        include_monitor: bool,
        truths: Option<&[Truth]>,
    ) -> Pass {
        // Semantic 4: every category must be permitted. The decision that
        // ranks highest (deny, indeterminate, not applicable, permit) wins;
        // its rules are those of every category that decided it, its
        // explanation the first such category's.
        let rank = |d: Decision| match d {
            Decision::Permit => 0,
            Decision::NotApplicable => 1,
            Decision::Indeterminate => 2,
            Decision::Deny => 3,
        };
        let mut decision = Decision::Permit;
        let mut rules: Vec<RuleIdx> = Vec::new();
        let mut why: Option<Why> = None;
        for category in in_play {
            let (d, r, e) = match *category {
                InPlay::Unknown { id, origin } => (
                    Decision::NotApplicable,
                    Vec::new(),
                    Why::UnknownCategory {
                        id: id.into(),
                        origin,
                    },
                ),
                InPlay::Known { idx, origin } => {
                    self.evaluate_category(purpose, idx, origin, req, include_monitor, truths)
                }
            };
            if why.is_none() || rank(d) > rank(decision) {
                decision = d;
                rules = r;
                why = Some(e);
            } else if d == decision {
                rules.extend(r);
            }
        }
        rules.sort_unstable();
        rules.dedup();
        let why = why.unwrap_or(Why::Permitted);
        if decision != Decision::Permit {
            return Pass {
                decision,
                rules,
                obligations: Vec::new(),
                why,
            };
        }
        self.with_obligations(rules, req)
    }

    /// Semantic 7: a permit's obligations must all be ones the caller can
    /// fulfil; otherwise the permit becomes a deny naming the obligation.
    fn with_obligations(&self, rules: Vec<RuleIdx>, req: &DecisionRequest) -> Pass {
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
                why: Why::Permitted,
            },
            Some((rule, id)) => Pass {
                decision: Decision::Deny,
                rules: carriers,
                obligations: Vec::new(),
                why: Why::UnsupportedObligation {
                    rule,
                    obligation: id,
                },
            },
        }
    }

    /// Semantic 5 for one category: deny-overrides. One pass over the
    /// candidate rules sorts them by effect and truth; only the lists that
    /// get a rule allocate.
    fn evaluate_category(
        &self,
        purpose: NodeIdx,
        category: NodeIdx,
        origin: bool,
        req: &DecisionRequest,
        include_monitor: bool,
        truths: Option<&[Truth]>,
    ) -> (Decision, Vec<RuleIdx>, Why) {
        let (mut denies, mut undecided_denies, mut permits, mut undecided_permits) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        // The first undecidable rule of each effect, and what it missed.
        let (mut deny_missing, mut permit_missing) = (None, None);
        let mut near = None;
        for r in self.candidates(purpose, category) {
            let Some(rule) = self.rule(r) else { continue };
            if rule.mode == Mode::Monitor && !include_monitor {
                continue;
            }
            let truth = match truths.and_then(|t| t.get(r as usize)) {
                Some(&truth) => truth,
                None => self.applies(rule, req),
            };
            match (rule.effect, truth) {
                (Effect::Permit, Truth::False) => {
                    near.get_or_insert(r);
                }
                (Effect::Deny, Truth::False) => {}
                (Effect::Deny, Truth::True) => denies.push(r),
                (Effect::Deny, Truth::Unknown(missing)) => {
                    undecided_denies.push(r);
                    deny_missing.get_or_insert((r, missing));
                }
                (Effect::Permit, Truth::True) => permits.push(r),
                (Effect::Permit, Truth::Unknown(missing)) => {
                    undecided_permits.push(r);
                    permit_missing.get_or_insert((r, missing));
                }
            }
        }
        if let Some(&rule) = denies.first() {
            return (
                Decision::Deny,
                denies,
                Why::Denied {
                    category,
                    origin,
                    rule,
                },
            );
        }
        // An undecidable deny blocks any permit: the deny might have applied.
        if let Some((rule, missing)) = deny_missing {
            return (
                Decision::Indeterminate,
                undecided_denies,
                Why::Undecidable { rule, missing },
            );
        }
        if !permits.is_empty() {
            return (Decision::Permit, permits, Why::Permitted);
        }
        if let Some((rule, missing)) = permit_missing {
            return (
                Decision::Indeterminate,
                undecided_permits,
                Why::Undecidable { rule, missing },
            );
        }
        (
            Decision::NotApplicable,
            Vec::new(),
            Why::NoPermit {
                category,
                origin,
                near,
            },
        )
    }
}
