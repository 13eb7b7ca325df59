//! From an intercepted call to a judgement, the same for the proxy and for
//! Envoy's ext_authz: match the call to a route, build the `CheckRequest`
//! from the route, the sidecar's obligations and the decided headers, ask
//! the gate, and decide whether the call goes through. Only an enforced
//! PERMIT does, unless `--dry-run`.

use opentelemetry::Context;
use purposegate_proto::v1 as pb;
use tracing::info;

use crate::cache::Answer;
use crate::gate::{Gate, Lookup};
use crate::headers;
use crate::reading::Reading;
use crate::refusal::Refusal;
use crate::routes::Table;
use crate::subject::{self, FirstMessage, SubjectFrom};

/// A call read as one thing ([`crate::reading`]), and who certified its
/// caller.
#[derive(Debug)]
pub struct Call<'c, 'a, 'r> {
    pub reading: &'c Reading<'a, 'r>,
    /// The caller's subject as its verified certificate names it (empty
    /// if it names none), when the call came over mutual TLS: then
    /// `x-subject` is not believed.
    pub certified_subject: Option<&'c str>,
    /// Whether a permit should carry a purpose context for the call to
    /// pass on (the proxy forwards it; ext_authz does not).
    pub issue_context: bool,
    /// The call's body as far as it was read, for a route that reads the
    /// data subject from the first request message.
    pub first_message: FirstMessage<'c>,
    /// The most bytes of a first request message read
    /// (`--max-first-message-bytes`).
    pub max_first_message: usize,
}

/// A call that goes through.
#[derive(Debug, Clone, Default)]
pub struct Permit {
    /// The question asked; `None` when the call was refused before asking
    /// and goes through only because of `--dry-run`.
    pub request: Option<pb::CheckRequest>,
    /// The enforced PERMIT; `None` under `--dry-run` for a call that was
    /// not permitted.
    pub answer: Option<Answer>,
    /// When the purpose context the call inherited expires (Unix seconds):
    /// the permit holds no longer than its ceiling.
    pub inherited_until: Option<u64>,
}

impl Permit {
    /// The decided headers the app receives (see [`headers::decided`]).
    pub fn decided_headers(&self) -> headers::Decided<'_> {
        match &self.request {
            Some(request) => headers::decided(
                request,
                self.answer
                    .as_ref()
                    .map_or(&[][..], |a| a.obligations.as_slice()),
            ),
            None => headers::Decided::default(),
        }
    }
}

#[derive(Debug)]
pub enum Enforcement {
    LetThrough(Box<Permit>),
    Deny(Refusal),
}

/// Judges one call: refused before asking, denied, permitted, or let
/// through under `--dry-run`. Logs every call that is not permitted.
pub async fn judge(gate: &Gate, call: &Call<'_, '_, '_>, parent: &Context) -> Enforcement {
    let reading = call.reading;
    let purpose = reading.stated.get(headers::PURPOSE);
    let inherited = match gate.inheritance.read(&reading.baggage) {
        Ok(inherited) => inherited,
        Err(reason) => {
            return refused_before_asking(
                gate,
                parent,
                purpose,
                &reading.path,
                Refusal::refused(reason),
            );
        }
    };
    match check_request(call, inherited.as_deref(), &gate.inheritance) {
        Ok(check) => {
            let lookup = gate.ask(&check, parent).await;
            let outcome = permitted(lookup).and_then(|answer| {
                // A hop that passes contexts on and inherited one must pass
                // on its own, no wider than its permit: without one, the
                // next hop would get the wider ceiling, or none.
                if call.issue_context && inherited.is_some() && answer.purpose_context.is_empty() {
                    Err(Refusal::refused(
                        "the call inherited a purpose context, and the decision point signed none for this hop (not among its issuers, or no key); a ceiling is never passed on wider than a hop's permit, so the call is denied"
                            .to_string(),
                    ))
                } else {
                    Ok(answer)
                }
            });
            let mut enforcement = enforce(gate, &reading.path, Some(check), outcome);
            if let Enforcement::LetThrough(permit) = &mut enforcement {
                permit.inherited_until = inherited.map(|claims| claims.expires);
            }
            enforcement
        }
        Err(refusal) => refused_before_asking(gate, parent, purpose, &reading.path, refusal),
    }
}

/// A call refused before any question could be asked (an ambiguous path,
/// unreadable headers, no route, no purpose): recorded like a decision,
/// and let through only under `--dry-run`.
pub fn refused_before_asking(
    gate: &Gate,
    parent: &Context,
    purpose: &str,
    path: &str,
    refusal: Refusal,
) -> Enforcement {
    gate.refused(parent, purpose, &refusal.reason);
    enforce(gate, path, None, Err(refusal))
}

fn enforce(
    gate: &Gate,
    path: &str,
    request: Option<pb::CheckRequest>,
    outcome: Result<Answer, Refusal>,
) -> Enforcement {
    match outcome {
        Ok(answer) => Enforcement::LetThrough(Box::new(Permit {
            request,
            answer: Some(answer),
            inherited_until: None,
        })),
        Err(refusal) if gate.dry_run && refusal.dry_run_may_pass() => {
            info!(
                path,
                decision = refusal.decision,
                reason = %refusal.reason,
                enforced = false,
                "dry run: a call that would be denied goes through"
            );
            Enforcement::LetThrough(Box::new(Permit {
                request,
                answer: None,
                inherited_until: None,
            }))
        }
        Err(refusal) => {
            info!(path, decision = refusal.decision, reason = %refusal.reason, "denied");
            Enforcement::Deny(refusal)
        }
    }
}

/// Asks again for a call that is open: the refusal, if `request` is no
/// longer permitted (or cannot be decided).
pub async fn judge_again(gate: &Gate, request: &pb::CheckRequest) -> Result<Answer, Refusal> {
    permitted(gate.ask(request, &Context::new()).await)
}

/// The question the call asks, from its route and headers, and the purpose
/// it inherited: with none stated, the call's purpose is the inherited one.
fn check_request(
    call: &Call<'_, '_, '_>,
    inherited: Option<&purposegate_proto::context::Claims>,
    inheritance: &crate::inherit::Inheritance,
) -> Result<pb::CheckRequest, Refusal> {
    let reading = call.reading;
    let (path, method, stated) = (reading.path.as_ref(), reading.method, &reading.stated);
    let refuse = Refusal::refused;
    let Some(route) = reading.route else {
        return Err(refuse(format!(
            "no route covers {} `{path}`; calls on no route are denied",
            match reading.table {
                Table::Grpc => "gRPC method",
                Table::Http => method,
            }
        )));
    };
    if inherited.is_none() && (inheritance.require || route.require_purpose_context) {
        return Err(refuse(inheritance.missing()));
    }
    let inherited_purpose = inherited.map_or("", |c| c.purpose.as_str());
    let purpose = match stated.get(headers::PURPOSE) {
        "" => inherited_purpose,
        stated => stated,
    };
    if purpose.is_empty() {
        return Err(refuse(
            "the call states no purpose (header `x-purpose`); it is denied".to_string(),
        ));
    }
    let deidentification = match route.deidentification {
        Some(fixed) => fixed,
        None => match stated.get(headers::DEIDENTIFICATION) {
            "" => 0,
            name => match purposegate_engine::Deidentification::parse(name) {
                Some(state) => purposegate_proto::convert::deidentification_number(state),
                None => {
                    return Err(refuse(format!(
                        "header `x-data-deidentification`: unknown state `{name}`"
                    )));
                }
            },
        },
    };
    let group_size = match stated.get(headers::GROUP_SIZE) {
        "" => 0,
        k => k.parse::<u64>().map_err(|_| {
            refuse(format!(
                "header `x-data-group-size`: `{k}` is not a whole number"
            ))
        })?,
    };
    Ok(pb::CheckRequest {
        subject: Some(pb::Subject {
            id: match call.certified_subject {
                Some(certified) => certified.to_string(),
                None => stated.get(headers::SUBJECT).to_string(),
            },
            tenant: stated.get(headers::TENANT).to_string(),
            roles: stated.list(headers::ROLES),
        }),
        resource: Some(pb::Resource {
            category: route.category.clone(),
            owner_tenant: route
                .owner_tenant
                .clone()
                .unwrap_or_else(|| stated.get(headers::DATA_TENANT).to_string()),
            data_subject: match &route.data_subject {
                Some(SubjectFrom::PathSegment(n)) => subject::in_path(path, *n).map_err(refuse)?,
                Some(SubjectFrom::GrpcField(field)) => match call.first_message {
                    FirstMessage::Read(body) => {
                        subject::in_first_message(body, field, call.max_first_message)
                            .map_err(refuse)?
                    }
                    FirstMessage::Unread(why) => return Err(refuse(why.to_string())),
                },
                None => stated.get(headers::DATA_SUBJECT).to_string(),
            },
            deidentification,
            group_size,
            origin: stated.list(headers::ORIGIN),
            attributes: route
                .attributes
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        }),
        purpose: purpose.to_string(),
        action: match reading.table {
            Table::Grpc => path.rsplit('/').next().unwrap_or("").to_string(),
            Table::Http => method.to_string(),
        },
        context: Some(pb::Context {
            customer_instruction: stated.get(headers::CUSTOMER_INSTRUCTION).to_string(),
            attributes: Default::default(),
        }),
        // What the app fulfils is the sidecar's configuration, never the
        // caller's claim.
        supported_obligations: route.obligations.clone(),
        request_id: stated.get(headers::REQUEST_ID).to_string(),
        issue_purpose_context: call.issue_context,
        inherited_purpose: inherited_purpose.to_string(),
    })
}

/// The enforced PERMIT a lookup found, or the refusal.
fn permitted(lookup: Lookup) -> Result<Answer, Refusal> {
    match lookup.answer {
        Ok(answer) if answer.decision() == pb::Decision::Permit => Ok(answer),
        Ok(answer) => Err(Refusal {
            kind: crate::refusal::RefusalKind::Denied,
            decision: answer.decision().as_str_name(),
            reason: answer.reason.clone(),
            rule_ids: answer.rule_ids.clone(),
            revision: answer.policy_revision.clone(),
        }),
        Err(status) => Err(Refusal::refused(crate::gate::unanswered(&status))),
    }
}
