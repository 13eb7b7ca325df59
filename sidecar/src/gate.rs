//! `Gate`: one decision for one intercepted call, the same for every face
//! of the sidecar (proxy, ext_authz, local API): the cache, then the PDP.
//! Every decision is a `purposegate.decision` span, a child of the
//! intercepted call's trace; the PDP call carries that trace on.

use std::sync::Arc;

use opentelemetry::trace::{Status as SpanStatus, TraceContextExt};
use opentelemetry::{Context, KeyValue, StringValue, Value};
use purposegate_proto::v1 as pb;
use purposegate_runtime::telemetry::{Telemetry, inject_context};

use crate::cache::{Answer, DecisionCache, Source};
use crate::pdp::DecisionPoint;

#[derive(Debug, Clone)]
pub struct Gate {
    pub cache: Arc<DecisionCache>,
    /// Answers of the reverse question (`PermittedPurposes`), apart.
    pub purposes: Arc<DecisionCache<pb::PermittedPurposesResponse>>,
    /// The decision point: the server, or a fake in tests.
    pub pdp: Arc<dyn DecisionPoint>,
    pub telemetry: Option<Telemetry>,
    /// `--dry-run`: decisions are recorded but not enforced.
    pub dry_run: bool,
    /// The purpose contexts calls inherit, and the keys that verify them.
    pub inheritance: Arc<crate::inherit::Inheritance>,
}

/// What the gate found, for the caller to enforce.
#[derive(Debug, Clone)]
pub struct Lookup {
    /// The PDP's answer (fresh, cached or stale), or why there is none.
    /// Shared with the cache: the request id of the call is not in it.
    pub answer: Result<Answer, tonic::Status>,
    pub source: Source,
}

/// Why a call without an answer is denied, without the PDP's internals.
pub fn unanswered(status: &tonic::Status) -> String {
    format!(
        "the decision point could not answer ({:?}); nothing is permitted without it",
        status.code()
    )
}

impl Gate {
    /// The intercepted call's trace context, read only when decisions are
    /// traced: `extract` reads it from the call's headers.
    pub fn parent(&self, extract: impl FnOnce() -> Context) -> Context {
        if self.telemetry.is_some() {
            extract()
        } else {
            Context::new()
        }
    }

    /// Decides `request` for a call whose trace context is `parent`.
    pub async fn ask(&self, request: &pb::CheckRequest, parent: &Context) -> Lookup {
        let cx = self.start_span(parent);
        let ask = || {
            let mut outgoing = tonic::Request::new(request.clone());
            if let Some(cx) = &cx {
                inject_context(cx, outgoing.metadata_mut().as_mut());
            }
            self.pdp.check(outgoing)
        };
        let lookup = match self.cache.get_or_ask(request, ask).await {
            Ok((answer, source)) => Lookup {
                answer: Ok(answer),
                source,
            },
            Err(status) => Lookup {
                answer: Err(status),
                source: Source::Miss,
            },
        };
        if let Some(cx) = cx {
            self.end_span(&cx, request, &lookup);
        }
        tracing::debug!(
            decision = lookup.answer.as_ref().map_or("UNAVAILABLE", |a| a.decision().as_str_name()),
            cache = lookup.source.as_str(),
            purpose = %request.purpose,
            "decided"
        );
        lookup
    }

    /// The reverse question for `request` (its purpose left empty): from
    /// the cache, or asked of the PDP once for all concurrent askers. A
    /// `purposegate.permitted_purposes` span, a child of `parent`.
    pub async fn permitted_purposes(
        &self,
        request: &pb::CheckRequest,
        parent: &Context,
    ) -> (
        Result<Arc<pb::PermittedPurposesResponse>, tonic::Status>,
        Source,
    ) {
        let cx = self
            .telemetry
            .as_ref()
            .map(|t| parent.with_span(t.span("purposegate.permitted_purposes", parent)));
        let ask = || {
            let mut outgoing = tonic::Request::new(request.clone());
            if let Some(cx) = &cx {
                inject_context(cx, outgoing.metadata_mut().as_mut());
            }
            self.pdp.permitted_purposes(outgoing)
        };
        let (answer, source) = match self.purposes.get_or_ask(request, ask).await {
            Ok((answer, source)) => (Ok(answer), source),
            Err(status) => (Err(status), Source::Miss),
        };
        if let Some(cx) = cx {
            let span = cx.span();
            span.set_attribute(KeyValue::new("purposegate.cache", source.as_str()));
            match &answer {
                Ok(answer) => {
                    let purposes: Vec<StringValue> = answer
                        .purposes
                        .iter()
                        .map(|p| p.purpose.clone().into())
                        .collect();
                    span.set_attributes([
                        KeyValue::new(
                            "purposegate.permitted_purposes",
                            Value::Array(purposes.into()),
                        ),
                        KeyValue::new(
                            "purposegate.policy_revision",
                            answer.policy_revision.clone(),
                        ),
                    ]);
                }
                Err(status) => span.set_status(SpanStatus::error(format!(
                    "the decision point could not answer: {}",
                    status.message()
                ))),
            }
            span.end();
        }
        (answer, source)
    }

    /// Records a call refused before any decision could be asked (no
    /// purpose, no route, unreadable headers).
    pub fn refused(&self, parent: &Context, purpose: &str, reason: &str) {
        if let Some(cx) = self.start_span(parent) {
            let span = cx.span();
            span.set_attributes([
                KeyValue::new("purposegate.decision", "DENY"),
                KeyValue::new("purposegate.purpose", purpose.to_string()),
                KeyValue::new("purposegate.reason", reason.to_string()),
                KeyValue::new("purposegate.enforced", !self.dry_run),
            ]);
            span.end();
        }
    }

    fn start_span(&self, parent: &Context) -> Option<Context> {
        self.telemetry
            .as_ref()
            .map(|t| parent.with_span(t.span("purposegate.decision", parent)))
    }

    fn end_span(&self, cx: &Context, request: &pb::CheckRequest, lookup: &Lookup) {
        let span = cx.span();
        let category = request
            .resource
            .as_ref()
            .map(|r| r.category.clone())
            .unwrap_or_default();
        if !request.inherited_purpose.is_empty() {
            span.set_attribute(KeyValue::new(
                "purposegate.inherited_purpose",
                request.inherited_purpose.clone(),
            ));
        }
        span.set_attributes([
            KeyValue::new("purposegate.purpose", request.purpose.clone()),
            KeyValue::new("purposegate.data_category", category),
            KeyValue::new("purposegate.cache", lookup.source.as_str()),
            KeyValue::new("purposegate.enforced", !self.dry_run),
        ]);
        match &lookup.answer {
            Ok(answer) => {
                let rule_ids: Vec<StringValue> =
                    answer.rule_ids.iter().map(|r| r.clone().into()).collect();
                span.set_attributes([
                    KeyValue::new("purposegate.decision", answer.decision().as_str_name()),
                    KeyValue::new("purposegate.rule_ids", Value::Array(rule_ids.into())),
                    KeyValue::new(
                        "purposegate.policy_revision",
                        answer.policy_revision.clone(),
                    ),
                ]);
            }
            Err(status) => {
                span.set_attribute(KeyValue::new("purposegate.decision", "DENY"));
                span.set_status(SpanStatus::error(format!(
                    "the decision point could not answer: {}",
                    status.message()
                )));
            }
        }
        span.end();
    }
}
