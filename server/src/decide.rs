//! `Decider`: the one path a question takes through the server, whichever
//! face it arrives on (gRPC `Check`, `CheckBatch`, AuthZEN over HTTP):
//! the serving policy decides it, and the decision is counted, traced
//! into the call's span and written to the decision log, the same way
//! for every face.

use std::sync::Arc;
use std::time::Instant;

use opentelemetry::KeyValue;
use opentelemetry::trace::Span as _;
use opentelemetry_sdk::trace::Span;

use crate::audit::{DecisionLog, Via};
use crate::engine::{ChoiceFacts, DecisionRequest, Evaluation, PermittedPurposes, Policy};
use crate::metrics::Metrics;
use crate::store::PolicyStore;
use purposegate_runtime::telemetry::Telemetry;

/// A decision and its reason in words (written once, for the answer and
/// the log).
#[derive(Debug)]
pub struct Decided {
    pub evaluation: Evaluation,
    pub reason: String,
}

/// How a decision is written to the decision log.
#[derive(Debug)]
pub enum Logged<'a> {
    /// A line of its own, within a budget of its request's bytes when
    /// they are known (not 0).
    Line { request_bytes: usize },
    /// Into its batch's lines.
    In(&'a mut crate::audit::Batch),
}

/// A request to decide, and the choices found for it before, if any
/// (`None`: read where it is decided).
#[derive(Debug)]
pub struct Question {
    pub req: DecisionRequest,
    pub facts: Option<ChoiceFacts>,
}

impl From<DecisionRequest> for Question {
    fn from(req: DecisionRequest) -> Self {
        Question { req, facts: None }
    }
}

#[derive(Debug, Clone)]
pub struct Decider {
    store: Arc<PolicyStore>,
    /// What tenants configured and data subjects said.
    choices: Arc<dyn crate::choices::ChoicesStore>,
    decision_log: DecisionLog,
    metrics: Metrics,
    telemetry: Option<Telemetry>,
    /// Places for store reads off the async workers, so a store that does
    /// not answer holds at most this many blocking threads.
    reads: Arc<tokio::sync::Semaphore>,
}

/// Store reads in flight at once for the async faces.
const STORE_READS: usize = 16;

impl Decider {
    pub fn new(
        store: Arc<PolicyStore>,
        decision_log: DecisionLog,
        metrics: Metrics,
        telemetry: Option<Telemetry>,
    ) -> Self {
        Decider {
            store,
            choices: Arc::new(crate::choices::MemoryChoices::new()),
            decision_log,
            metrics,
            telemetry,
            reads: Arc::new(tokio::sync::Semaphore::new(STORE_READS)),
        }
    }

    /// The serving policy: one for a whole batch, so every answer has the
    /// same revision.
    pub fn policy(&self) -> Arc<Policy> {
        self.store.current()
    }

    /// The same decider reading choices from `choices`.
    pub fn with_choices(mut self, choices: Arc<dyn crate::choices::ChoicesStore>) -> Self {
        self.choices = choices;
        self
    }

    pub fn choices(&self) -> &Arc<dyn crate::choices::ChoicesStore> {
        &self.choices
    }

    pub fn decision_log(&self) -> &DecisionLog {
        &self.decision_log
    }

    pub fn store(&self) -> &Arc<PolicyStore> {
        &self.store
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    pub fn telemetry(&self) -> Option<&Telemetry> {
        self.telemetry.as_ref()
    }

    /// The choices `req` needs under `policy`, found without blocking an
    /// async worker: `None` when the policy reads none; from the cache when
    /// it holds them; else read from the store on a blocking thread, within
    /// [`crate::choices::CHOICES_WITHIN`] and [`STORE_READS`] at once. A store that does not
    /// answer in time gives no choices: the decision is `INDETERMINATE`
    /// where it needs them, never a default.
    pub async fn facts(&self, policy: &Policy, req: &DecisionRequest) -> Option<ChoiceFacts> {
        if policy.choices().is_empty() {
            return None;
        }
        let read = crate::choices::facts_off_worker(
            &self.choices,
            &self.reads,
            req,
            crate::choices::CHOICES_WITHIN,
        )
        .await;
        if read.is_err() {
            self.metrics.choices_unread();
        }
        Some(read.unwrap_or_else(|unread| unread))
    }

    /// Decides one request; counts it, traces it into `span` and hands it
    /// to the decision log: as a line of its own, or into its batch's.
    /// The choices of a [`Question`] are found before ([`Decider::facts`])
    /// or read here, from the cache or the store (on a blocking thread).
    pub fn decide(
        &self,
        policy: &Policy,
        question: impl Into<Question>,
        start: Instant,
        span: Option<&mut Span>,
        via: Via,
        log: Logged<'_>,
    ) -> Decided {
        let Question { req, facts } = question.into();
        // Choices are looked up only where the policy reads them.
        let evaluation = if policy.choices().is_empty() {
            policy.evaluate(&req)
        } else {
            let facts = facts.unwrap_or_else(|| {
                crate::choices::facts(&*self.choices, &req, crate::choices::now())
            });
            policy.evaluate_with(&req, &facts)
        };
        let reason = evaluation.reason.to_string();
        self.metrics.decided(evaluation.decision);
        if let Some(span) = span {
            record_decision(span, &req, &evaluation);
        }
        match log {
            Logged::Line { request_bytes } => self.decision_log.record(
                via,
                req,
                &evaluation,
                reason.clone(),
                start.elapsed(),
                request_bytes,
            ),
            Logged::In(batch) => batch.add(via, req, &evaluation, reason.clone()),
        }
        Decided { evaluation, reason }
    }

    /// The reverse question for a valid request (checked with
    /// `validate_without_purpose`), traced into `span` and written to the
    /// decision log.
    pub fn permitted_purposes(
        &self,
        req: &DecisionRequest,
        span: Option<&mut Span>,
        via: Via,
    ) -> Result<PermittedPurposes, crate::engine::InvalidRequest> {
        self.permitted_purposes_with(req, span, via, || self.policy().permitted_purposes(req))
    }

    /// The reverse question's answer found by `find` (computed now, or
    /// kept from an earlier call with the same question and revision),
    /// traced into `span` and written to the decision log as this call's.
    pub fn permitted_purposes_with<A: std::borrow::Borrow<PermittedPurposes>>(
        &self,
        req: &DecisionRequest,
        span: Option<&mut Span>,
        via: Via,
        find: impl FnOnce() -> Result<A, crate::engine::InvalidRequest>,
    ) -> Result<A, crate::engine::InvalidRequest> {
        let start = Instant::now();
        let found = find()?;
        let answer: &PermittedPurposes = found.borrow();
        self.decision_log
            .record_permitted(via, req.clone(), answer, start.elapsed());
        if let Some(span) = span {
            let purposes: Vec<opentelemetry::StringValue> = answer
                .purposes
                .iter()
                .map(|p| p.purpose.to_string().into())
                .collect();
            span.set_attributes([
                KeyValue::new(
                    "purposegate.permitted_purposes",
                    opentelemetry::Value::Array(purposes.into()),
                ),
                KeyValue::new("purposegate.data_category", req.resource.category.clone()),
                KeyValue::new(
                    "purposegate.policy_revision",
                    answer.policy_revision.to_string(),
                ),
                KeyValue::new("purposegate.subject", req.subject.id.clone()),
            ]);
        }
        Ok(found)
    }
}

/// The decision's attributes on its span.
fn record_decision(span: &mut Span, req: &DecisionRequest, answer: &Evaluation) {
    let rule_ids: Vec<opentelemetry::StringValue> = answer
        .rule_ids
        .iter()
        .map(|r| r.to_string().into())
        .collect();
    span.set_attributes([
        KeyValue::new("purposegate.decision", answer.decision.as_str()),
        KeyValue::new("purposegate.purpose", req.purpose.clone()),
        KeyValue::new("purposegate.data_category", req.resource.category.clone()),
        KeyValue::new(
            "purposegate.rule_ids",
            opentelemetry::Value::Array(rule_ids.into()),
        ),
        KeyValue::new(
            "purposegate.policy_revision",
            answer.policy_revision.to_string(),
        ),
        KeyValue::new("purposegate.subject", req.subject.id.clone()),
    ]);
    if let Some(monitor) = &answer.monitor {
        span.set_attribute(KeyValue::new(
            "purposegate.monitor.decision",
            monitor.decision.as_str(),
        ));
    }
}
